"""Attaching what is new under a folder or prefix (``annotations.sync``, ``pamingest annotate --new``).

A real recording is ingested, Raven tables are saved beside each other as
Raven names them, and the folder is attached again and again as a schedule
would: each table once, a table of audio not yet ingested failing until its
audio arrives, a table changed after it was attached reported and not
attached twice.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

import pamingest as pi
from pamingest.annotations.raven import sound_of_table
from pamingest.annotations.sync import attach_new, list_annotation_files

TABLE = "MSD-0003_20180427_2minstart00.Table.1.selections.txt"
STREAM = "birds/MSD/32000Hz_1ch_pcm16"


def ingest_birds(fixtures, folder, store, *days):
    for day in days:
        shutil.copy(fixtures / "annotated" / "birds_10s.wav", folder / f"MSD_{day}_000000.wav")
    report = pi.ingest(pi.TimestampedFiles(str(folder), "{site}_%Y%m%d_%H%M%S.wav", name="birds"), store,
                       client="serial", row_seconds=2)
    assert not report.failed, report.summary()


def save_table(fixtures, folder, day, extra=""):
    path = folder / f"MSD_{day}_000000.Table.1.selections.txt"
    path.write_text((fixtures / "annotated" / "raven" / TABLE).read_text() + extra)
    return path


def events(store):
    ds = pi.open_store(store)[STREAM].to_dataset()
    return ds.pam.events()


@pytest.fixture
def birds(tmp_path, fixtures):
    audio, tables = tmp_path / "audio", tmp_path / "tables"
    audio.mkdir()
    (tables / "later").mkdir(parents=True)
    store = str(tmp_path / "store")
    ingest_birds(fixtures, audio, store, "20180427")
    return store, audio, tables


def test_raven_default_table_names_give_the_recording():
    assert sound_of_table("s3://b/x/MSD_20180427_000000.Table.1.selections.txt") == "MSD_20180427_000000"
    assert sound_of_table("a.b.Table.12.selections.txt") == "a.b"
    assert sound_of_table("XC1234.BirdNET.selection.table.txt") == "XC1234"
    assert sound_of_table("MSD_20180427_000000.txt") is None


def test_a_folder_attached_on_a_schedule_attaches_each_table_once(birds, fixtures):
    store, audio, tables = birds
    first = save_table(fixtures, tables, "20180427")
    waiting = save_table(fixtures, tables / "later", "20180428")  # its recording is not ingested yet
    (tables / "README.md").write_text("not a table")

    report = attach_new(store, str(tables), "raven")
    assert report.plan.listed == 2 and len(report.plan.new) == 2
    [attached] = report.attached
    assert attached.name == str(first) and attached.streams == [STREAM] and attached.events == 9
    # The fixture table covers 2 minutes; the recording is 10 s long.
    assert report.outside_audio == attached.outside_audio > 0
    [(name, reason)] = report.failed
    assert name == str(waiting) and str(waiting) in reason and "MSD_20180428_000000" in reason
    assert "not in the store" in reason
    assert len(events(store)) == 9

    again = attach_new(store, str(tables), "raven")
    assert again.plan.already == [str(first)] and not again.attached and again.snapshot_id is None
    assert [n for n, _ in again.failed] == [str(waiting)]  # tried again, still no audio
    assert len(events(store)) == 9

    # Its audio arrives: the next run attaches it, and only it.
    ingest_birds(fixtures, audio, store, "20180428")
    third = attach_new(store, str(tables), "raven")
    assert [f.name for f in third.attached] == [str(waiting)] and not third.failed
    assert sorted(third.plan.already) == [str(first)]
    ev = events(store)
    assert len(ev) == 18
    assert set(ev["recording"]) == {str(audio / "MSD_20180427_000000.wav"), str(audio / "MSD_20180428_000000.wav")}


def test_a_table_changed_after_it_was_attached_is_reported_and_not_attached_twice(birds, fixtures):
    store, _, tables = birds
    path = save_table(fixtures, tables, "20180427")
    attach_new(store, str(tables), "raven")
    save_table(fixtures, tables, "20180427", extra="9\tSpectrogram 1\t1\t5\t6\t100\t200\tWOTH\n")
    report = attach_new(store, str(tables), "raven")
    [(name, reason)] = report.plan.changed
    assert name == str(path) and "changed since it was attached" in reason
    assert not report.attached and len(events(store)) == 9
    # The same content under another name is new to the listing, and attach knows its content.
    shutil.copy(fixtures / "annotated" / "raven" / TABLE, tables / "copy.Table.1.selections.txt")
    report = attach_new(store, str(tables), "raven", options={})
    assert report.plan.new == [str(tables / "copy.Table.1.selections.txt")]


def test_an_s3_prefix_of_orcasound_detections(s3, fixtures, tmp_path):
    """A pods-ai export under an s3:// prefix, against a store with one Orcasound node: rows for the
    six other nodes are skipped and counted, not failed; run again, nothing new."""
    s3.bucket("annotations")
    export = fixtures / "orcasound" / "annotations" / "pods-ai-detections.csv"
    url = s3.put("annotations", "orcasound/2024/pods-ai-detections.csv", export)
    s3.put("annotations", "orcasound/2024/notes.txt", b"x")
    folder = tmp_path / "rec"
    folder.mkdir()
    # A real recording filed as lab audio at the time of the export's line 2 (07:59:53Z).
    shutil.copy(sorted((fixtures / "soundtrap").glob("*.flac"))[0], folder / "rpi_orcasound_lab_20230818_075800.flac")
    store = str(tmp_path / "store")
    pi.ingest(pi.TimestampedFiles(str(folder), "{site}_%Y%m%d_%H%M%S.flac", name="orcasound"), store, client="serial")

    report = attach_new(store, "s3://annotations/orcasound/", "pods-ai", storage_options=s3.storage_options)
    assert report.plan.listed == 1 and not report.failed, report.summary()
    [f] = report.attached
    assert f.name == url and f.streams == ["orcasound/rpi_orcasound_lab/8000Hz_1ch_pcm16"]
    assert sum(f.skipped_rows.values()) > 0 and "rpi_orcasound_lab" not in f.skipped_rows
    assert f.events - f.outside_audio == 1  # line 2 falls in the recording
    again = attach_new(store, "s3://annotations/orcasound/", "pods-ai", storage_options=s3.storage_options)
    assert again.plan.already == [url] and not again.attached and again.snapshot_id is None


def test_listing_names_what_is_missing(tmp_path):
    urls, missing = list_annotation_files([str(tmp_path / "nothing"), str(tmp_path)], "raven")
    assert urls == [] and missing == [(str(tmp_path / "nothing"), f"{tmp_path / 'nothing'}: no such file or folder")]
    (tmp_path / "a.tsv").write_text("x")
    (tmp_path / "b.csv").write_text("x")
    assert list_annotation_files(str(tmp_path), "podcast-tsv")[0] == [str(tmp_path / "a.tsv")]
    assert list_annotation_files(str(tmp_path), "raven", pattern="*.CSV")[0] == [str(tmp_path / "b.csv")]
    assert list_annotation_files(str(tmp_path / "*.csv"), "raven")[0] == [str(tmp_path / "b.csv")]


def test_cli_annotate_new_exits_1_on_a_changed_table(birds, fixtures):
    store, _, tables = birds
    save_table(fixtures, tables, "20180427")
    cmd = [sys.executable, "-m", "pamingest.cli", "annotate", store, str(tables), "--format", "raven", "--new", "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True)
    report = json.loads(out.stdout)
    assert report["new"] == 1 and report["events"] == 9 and report["attached"][0]["streams"] == [STREAM]
    assert out.returncode == 1 and report["rejected_rows"] == 1  # the fixture's line 11 has no label
    assert subprocess.run(cmd, capture_output=True, text=True).returncode == 0  # nothing new, nothing wrong
    save_table(fixtures, tables, "20180427", extra="9\tSpectrogram 1\t1\t5\t6\t100\t200\tWOTH\n")
    changed = subprocess.run(cmd[:-1], capture_output=True, text=True)
    assert changed.returncode == 1 and "changed since it was attached" in changed.stdout, changed.stderr


def two_days_attached(birds, fixtures):
    """Both recordings ingested, each with its table attached: (store, audio, tables, first, second)."""
    store, audio, tables = birds
    ingest_birds(fixtures, audio, store, "20180428")
    first = save_table(fixtures, tables, "20180427")
    second = save_table(fixtures, tables, "20180428")
    attach_new(store, str(tables), "raven")
    assert len(events(store)) == 18
    return store, audio, tables, first, second


def test_a_changed_table_replaces_its_earlier_version_when_asked(birds, fixtures):
    store, audio, tables, first, other = two_days_attached(birds, fixtures)
    # The analyst corrects the first table: one more selection, inside the audio.
    save_table(fixtures, tables, "20180427", extra="99\tSpectrogram 1\t1\t5\t6\t100\t200\tLOWA\n")
    report = attach_new(store, str(tables), "raven", replace_changed=True)
    assert report.plan.replaced == [str(first)] and not report.plan.changed
    assert report.plan.already == [str(other)]
    ev = events(store)
    assert len(ev) == 19  # 9 + 10: the earlier version's 9 are gone
    ds = pi.open_store(store)[STREAM].to_dataset()
    names = ds["annotation_file_name"].values.tolist()
    assert sorted(names) == sorted([str(first), str(other)])
    # Each event points at its own file's record after the renumbering.
    per_file = ev.groupby("recording").size().to_dict()
    assert per_file == {str(audio / "MSD_20180427_000000.wav"): 10, str(audio / "MSD_20180428_000000.wav"): 9}
    labels = ds.pam.labels()
    assert (labels.sel(label="lowa").values == 1).sum() >= 1  # the new selection labels its rows


def test_detach_removes_a_file_and_moves_the_later_files_down(birds, fixtures):
    from pamingest.annotations import detach

    store, audio, tables, first, second = two_days_attached(birds, fixtures)
    assert detach(store, [str(first)]) == {STREAM: 9}
    ds = pi.open_store(store)[STREAM].to_dataset()
    assert ds["annotation_file_name"].values.tolist() == [str(second)]
    assert set(ds["event_file"].values.tolist()) == {0} and set(ds["effort_file"].values.tolist()) == {0}
    ev = ds.pam.events()
    assert len(ev) == 9 and set(ev["recording"]) == {str(audio / "MSD_20180428_000000.wav")}
    # The first recording's rows lost their labels: unknown again (its effort went with the table).
    start = ds.pam.rows["start"]
    first_rows = ds.pam.rows["row"][start < np.datetime64("2018-04-28")].to_numpy()
    assert (ds.pam.labels().values[first_rows] == -1).all()
