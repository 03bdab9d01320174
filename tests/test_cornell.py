"""Cornell fully annotated soundscapes on Zenodo: records API, zip members by range requests, annotations.csv.

A local HTTP server answers as Zenodo does (tests/zenodo_server.py); the audio members are the
fixture SoundTrap FLACs (real recordings) under Cornell names, the annotations the real rows of
the collections' tables (fixtures/annotated/cornell).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import pamingest as pi
from pamingest.cli import main
from pamingest.sources.zenodo import CornellSoundscapes
from pamingest.timing import to_ns
from zenodo_server import ZenodoServer, zip_of

SSW_FILES = ["SSW_001_20170225_010000Z.flac", "SSW_004_20170225_050004Z.flac", "SSW_007_20170225_110009Z.flac",
             "SSW_010_20170226_010000Z.flac"]  # the first three named by the table; the last has no row
UNKNOWN_ROW = "SSW_001_20170225_010000Z.flac,100.0,102.5,0,5000,????\n"


@pytest.fixture(scope="module")
def zenodo():
    server = ZenodoServer()
    yield server
    server.stop()


def _members(fixtures: Path, names: list[str]) -> dict[str, Path]:
    audio = sorted((fixtures / "soundtrap").glob("*.flac"))
    return {name: audio[i % len(audio)] for i, name in enumerate(names)}


@pytest.fixture(scope="module")
def ssw(zenodo, fixtures):
    table = (fixtures / "annotated" / "cornell" / "ssw.csv").read_bytes() + UNKNOWN_ROW.encode()
    members = _members(fixtures, SSW_FILES)
    zenodo.publish("7079380", {"annotations.csv": table, "soundscape_data.zip": zip_of(members)})
    return members


def test_zip_members_are_ingested_by_range_requests_and_the_table_attached(zenodo, ssw, tmp_path, capsys):
    store = str(tmp_path / "store")
    zenodo.requests.clear()
    code = main(["ingest", "cornell", "ssw", "--zenodo-api", zenodo.api, "--store", store, "--serial", "--json"])
    out = capsys.readouterr().out
    report = json.loads(out)
    assert code == 0 and report["ingested"] == 4 and not report["failed"], out
    # The archive was read by ranges: never one GET of the whole zip.
    zip_path = "/api/records/7079380/files/soundscape_data.zip/content"
    gets = [r for m, p, r in zenodo.requests if m == "GET" and p == zip_path]
    assert gets and all(r is not None for r in gets)

    tree = pi.open_store(store)
    (stream,) = pi.streams(tree)
    assert stream == "cornell/SSW/8000Hz_1ch_pcm16"
    ds = tree[stream].to_dataset()
    for i, url in enumerate(ds["file_url"].values):
        name = str(url).split("::", 1)[0].rsplit("/", 1)[-1]
        rows = np.flatnonzero(ds["file_index"].values == i)
        got = np.concatenate([ds["audio"].values[r, : ds["n_valid"].values[r], 0] for r in rows])
        np.testing.assert_array_equal(got, sf.read(str(ssw[name]), dtype="int16")[0])
        # Names ending in Z are UTC.
        stamp = name.split("_")[2] + name.split("_")[3][:6]
        assert int(ds["file_start"].values[i].astype("datetime64[ns]").astype(np.int64)) == \
            to_ns(f"{stamp[:4]}-{stamp[4:6]}-{stamp[6:8]}T{stamp[8:10]}:{stamp[10:12]}:{stamp[12:14]}")
        assert str(url).startswith("zip://soundscape_data/") and "::http://127.0.0.1" in str(url)

    # annotations.csv attached after the audio: events on their recordings, effort on all four.
    ns = lambda col: col.values.astype("datetime64[ns]").astype(np.int64)  # noqa: E731
    events = ds.pam.events()
    first = to_ns("2017-02-25T01:00:00")
    assert ns(events[events["label_norm"] == "cangoo"]["start"]).min() == first + 47_400_000_000
    assert set(events["label_norm"]) == {"cangoo", "blujay", "rewbla", "unknown"}
    effort = ds.pam.effort()
    starts = ns(ds["file_start"])
    for label in ("cangoo", "blujay", "rewbla"):
        spans = effort[effort["label_norm"] == label]
        # every recording is reviewed for every label, the one without a row too (fully annotated)
        assert set(starts) <= set(ns(spans["start"])), label
        # ... except where an unknown species was heard: no absence is claimed there
        lo, hi = first + 100_000_000_000, first + 102_500_000_000
        assert not ((ns(spans["start"]) < hi) & (ns(spans["end"]) > lo)).any()
    assert "unknown" not in set(effort["label_norm"])
    # Chunk labels: the row holding the goose is positive; the unannotated hour's rows are reviewed negatives.
    labels = ds.pam.labels()
    chunk_start = ns(ds["chunk_start"])

    def row_at(t: int) -> int:
        return int(np.flatnonzero((chunk_start <= t) & (chunk_start + 10 * 10**9 > t))[0])

    assert int(labels.sel(label="cangoo").values[row_at(first + 47_400_000_000)]) == 1
    assert int(labels.sel(label="cangoo").values[row_at(to_ns("2017-02-26T01:00:30"))]) == 0
    assert int(labels.sel(label="cangoo").values[row_at(first + 101_000_000_000)]) == -1  # the unknown's row

    # A second run: nothing new, the table not attached twice.
    code = main(["ingest", "cornell", "ssw", "--zenodo-api", zenodo.api, "--store", store, "--serial", "--json"])
    again = json.loads(capsys.readouterr().out)
    assert code == 0 and again["ingested"] == 0 and again["detections"]["attached"] == []
    assert len(pi.open_store(store)[stream].to_dataset().pam.events()) == len(events)


def _listed(source) -> list:
    return [r for p in source.partitions() for r in source.list_partition(p)]


def test_names_without_z_are_local_time_of_the_collection(zenodo, fixtures):
    members = _members(fixtures, ["UHH_001_S01_20161121_150000.flac"])
    zenodo.publish("7078499", {"annotations.csv": (fixtures / "annotated" / "cornell" / "hawaii.csv").read_bytes(),
                               "soundscape_data.zip": zip_of(members)})
    src = CornellSoundscapes("uhh", api=zenodo.api)
    (rec,) = _listed(src)
    assert rec.site == "UHH_S01"
    assert rec.start_ns == to_ns("2016-11-22T01:00:00")  # 15:00 in Hawai'i (UTC-10)
    assert src.stream_attributes(rec)["file_name_time_zone"] == "Pacific/Honolulu"
    (rec,) = _listed(CornellSoundscapes("uhh", api=zenodo.api, timezone="UTC"))
    assert rec.start_ns == to_ns("2016-11-21T15:00:00")


def test_unknown_record_and_bad_member_names_say_what_is_wrong(zenodo, fixtures):
    from pamingest.errors import ConfigError

    with pytest.raises(ConfigError, match="Zenodo record 999"):
        CornellSoundscapes("ssw", api=zenodo.api, record="999").partitions()
    zenodo.publish("7050014", {"soundscape_data.zip": zip_of({"notes.flac": b"fLaC", "SNE_001_20180509_050002.flac":
                                                               (fixtures / "soundtrap").glob("*.flac").__next__()})})
    records = _listed(CornellSoundscapes("sne", api=zenodo.api))
    rejected = [r for r in records if hasattr(r, "reason")]
    assert [r.url.split("::")[0].rsplit("/", 1)[-1] for r in rejected] == ["notes.flac"]
    assert "notes.flac" in rejected[0].reason


def test_table_is_read_again_when_the_store_gains_recordings_it_names(zenodo, fixtures, tmp_path, capsys):
    """A collection ingested in two runs: rows naming recordings not yet ingested wait (counted in the
    notes), and the run that ingests them attaches the table again in place of its first version."""
    table = (fixtures / "annotated" / "cornell" / "high_sierras.csv").read_bytes()
    named, other = "HSN_001_20150708_061805.flac", "HSN_002_20150709_061805.flac"
    store = str(tmp_path / "store")
    argv = ["ingest", "cornell", "hsn", "--zenodo-api", zenodo.api, "--store", store, "--serial", "--json"]

    zenodo.publish("7525805", {"annotations.csv": table, "soundscape_data.zip": zip_of(_members(fixtures, [other]))})
    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out)["detections"]
    (attached,) = first["attached"]
    assert attached["events"] == 0 and any("were not attached" in n for n in attached["notes"])

    zenodo.publish("7525805", {"annotations.csv": table,
                               "soundscape_data.zip": zip_of(_members(fixtures, [other, named]))})
    assert main(argv) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["ingested"] == 1 and second["detections"]["replaced"]
    ds = pi.open_store(store)[pi.streams(pi.open_store(store))[0]].to_dataset()
    events = ds.pam.events()
    assert len(events) == table.count(b"\n") - 1 and set(events["label_norm"]) == {"gcrfin"} | set(
        line.split(b",")[-1].strip().decode() for line in table.splitlines()[1:])
    effort = ds.pam.effort()
    assert len(set(effort["start"])) == 2  # both recordings reviewed, each once (the first version detached)
