"""Attaching annotations to stores built from the real fixture recordings."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import pamingest as pi
from pamingest.annotations import OverlapRule, Recording, attach, chunk_labels, refresh_labels
from pamingest.errors import AnnotationTargetError
from pamingest.query import open_session
from pamingest.timing import NAT, NS_PER_S, offset_ns, to_ns

NAMED = "{site}_%Y%m%d_%H%M%S.{ext}"


def ingest_copies(tmp_path, copies: dict, template=NAMED, **kwargs) -> str:
    """Copy recordings under the given names and ingest them (serially) into a fresh store."""
    folder = tmp_path / "recordings"
    folder.mkdir(exist_ok=True)
    for name, src in copies.items():
        shutil.copy(src, folder / name)
    store = str(tmp_path / "store")
    report = pi.ingest(pi.TimestampedFiles(str(folder), template, **kwargs.pop("source", {})), store,
                       client="serial", **kwargs)
    assert not report.failed, report.summary()
    return store


def stream(store, path=None, site=None, rate=None):
    tree = pi.open_store(store)
    names = [n for n in pi.streams(tree)
             if (path is None or n == path) and (site is None or tree[n].attrs["site"] == site)
             and (rate is None or tree[n].attrs["sample_rate"] == rate)]
    assert len(names) == 1, names
    return names[0], tree[names[0]].to_dataset()


def row_times(ds):
    start = ds["chunk_start"].values.astype("datetime64[ns]").astype(np.int64)
    end = start + offset_ns(ds["n_valid"].values.astype(np.int64), int(ds.attrs["sample_rate"]))
    return start, end


def oracle(ds, min_seconds=0.25, min_fraction=0.5):
    """The labelling rule written out row by row, event by event (no shared code with the library)."""
    ev, ef = ds.pam.events(), ds.pam.effort()
    ev = ev[ev.reviewed]
    names = sorted((set(ev.label_norm) | set(ef.label_norm)) - {""})
    start, end = row_times(ds)
    es, ee = ev.start.astype("int64").to_numpy(), ev.end.astype("int64").to_numpy()
    fs, fe = ef.start.astype("int64").to_numpy(), ef.end.astype("int64").to_numpy()
    out = np.full((len(start), len(names)), -1, dtype=np.int8)
    for i, (s, e) in enumerate(zip(start, end)):
        for j, name in enumerate(names):
            for k in np.flatnonzero(ev.label_norm.to_numpy() == name):
                overlap = min(e, ee[k]) - max(s, es[k])
                if overlap > 0 and (overlap >= min_seconds * NS_PER_S or overlap >= min_fraction * (ee[k] - es[k])):
                    out[i, j] = 1
            if out[i, j] != 1:
                for k in np.flatnonzero(np.isin(ef.label_norm.to_numpy(), [name, ""])):
                    if fs[k] <= s and fe[k] >= e:
                        out[i, j] = 0
    return out, names


def labels_of(ds, rule=None):
    da = ds.pam.labels(rule)
    return {str(n): da.sel(label=n).values.tolist() for n in da["label"].values}


# ---------------------------------------------------------------- Audacity: spinetail

def spinetail_store(tmp_path, fixtures, names=("spinetail_20200101_000000.wav",)):
    return ingest_copies(tmp_path, {n: fixtures / "annotated" / "spinetail.wav" for n in names}, row_seconds=5)


def test_spinetail_track_labels_its_recording(tmp_path, fixtures):
    store = spinetail_store(tmp_path, fixtures)
    track = fixtures / "annotated" / "spinetail.audacity.txt"
    # The recording named by its file name; its UTC start comes from the store's files table.
    report = attach(store, [track], "audacity", recording=Recording("spinetail_20200101_000000.wav"))
    assert not report.failed and report.committed, report.summary()
    path, ds = stream(store)
    assert report.files[0].streams == [path] and report.files[0].events == 18
    assert report.files[0].outside_audio == 0
    ev = ds.pam.events()
    first = [line.split("\t") for line in track.read_text().splitlines()][0]
    assert ev.start.iloc[0] == pd.Timestamp("2020-01-01") + pd.Timedelta(seconds=float(first[0]))
    assert (ev.label.iloc[0], ev.low_hz.iloc[0]) == ("SP", 6441.064453) and ev.in_audio.all()
    assert ev.file.iloc[0] == str(track) and ev.line.iloc[0] == 1
    labels = ds.pam.labels()
    want, names = oracle(ds)
    assert labels.dims == ("chunk", "label") and list(labels["label"].values) == names == ["crer", "sp"]
    np.testing.assert_array_equal(labels.values, want)
    np.testing.assert_array_equal(ds["labels"].values, want)  # stored by the attach
    # Other thresholds (here: 2.5 s of overlap, no fraction): short calls stop counting, and the
    # fully annotated recording turns those rows into reviewed negatives, not unknowns.
    assert labels_of(ds, OverlapRule(2.5, None)) == {"crer": [1, 1, 0, 0], "sp": [0, 0, 0, 0]}
    # Spinetail calls are shorter than 0.5 s: with 1 s required they count only through the fraction.
    assert labels_of(ds, OverlapRule(1.0, None))["sp"] == [0, 0, 0, 0]
    assert labels_of(ds, OverlapRule(1.0, 0.5))["sp"] == [1, 1, 1, 1]
    # The same file again changes nothing: no new commit.
    head = open_session(store).snapshot_id
    again = attach(store, [track], "audacity", recording=Recording("spinetail_20200101_000000.wav"))
    assert again.snapshot_id is None and again.files[0].unchanged == [path] and not again.files[0].streams
    assert open_session(store).snapshot_id == head
    assert stream(store)[1].sizes["event"] == 18


def test_rows_ingested_after_an_attach_get_labels(tmp_path, fixtures):
    store = spinetail_store(tmp_path, fixtures)
    track = fixtures / "annotated" / "spinetail.audacity.txt"
    attach(store, [track], "audacity", recording=Recording("spinetail_20200101_000000.wav"))
    # A second recording arrives later: ingest appends rows the labels array does not cover.
    folder = tmp_path / "recordings"
    shutil.copy(fixtures / "annotated" / "spinetail.wav", folder / "spinetail_20200101_010000.wav")
    assert pi.ingest(pi.TimestampedFiles(str(folder), NAMED), store, client="serial").ingested == 1
    path, ds = stream(store)
    assert ds.sizes["chunk"] == 8 and ds.sizes["labelled_chunk"] == 4  # the store still opens
    start, _ = row_times(ds)
    late = start >= to_ns("2020-01-01T01:00:00")
    labels = ds.pam.labels()
    assert labels.sizes["chunk"] == 8
    assert (labels.values[late] == -1).all()  # nobody reviewed the new recording
    np.testing.assert_array_equal(labels.values[~late], ds["labels"].values)
    assert refresh_labels(store) == {path: ["crer", "sp"]}
    assert stream(store)[1].sizes["labelled_chunk"] == 8
    assert refresh_labels(store) == {}  # nothing changed, nothing committed
    # The same track attached to the new recording is a different attach.
    report = attach(store, [track], "audacity", recording=Recording("spinetail_20200101_010000.wav"))
    assert report.files[0].streams == [path] and not report.files[0].unchanged
    _, ds = stream(store)
    np.testing.assert_array_equal(ds.pam.labels().values, oracle(ds)[0])
    assert (ds.pam.labels().values[late] == 1).all()


def test_rule_edges_instants_boundaries_and_dead_rows():
    s = NS_PER_S
    row_start = np.array([0, 10 * s, NAT, 20 * s], dtype=np.int64)
    row_end = np.array([10 * s, 20 * s, NAT, 25 * s], dtype=np.int64)
    events = {"start": np.array([10 * s, int(9.8 * s), 22 * s]), "end": np.array([10 * s, int(10.3 * s), 30 * s]),
              "label_norm": np.array(["instant", "straddle", "late"], dtype=object),
              "reviewed": np.array([True, True, True])}
    effort = {"start": np.array([0]), "end": np.array([20 * s]), "label_norm": np.array([""], dtype=object)}
    labels, names = chunk_labels(row_start, row_end, events, effort, OverlapRule(0.25, None))
    assert names == ["instant", "late", "straddle"]
    # An instant labels the row holding it (rows are [start, end)); 0.2 s in row 0 is below the
    # 0.25 s rule, 0.3 s in row 1 is above; a dead row stays unknown; row 3 has no effort.
    assert labels.T.tolist() == [[0, 1, -1, -1], [0, 0, -1, 1], [0, 1, -1, -1]]
    # With a fraction of 0.4 the straddling event (0.2 s of 0.5 s in row 0) labels row 0 as well.
    labels, _ = chunk_labels(row_start, row_end, events, effort, OverlapRule(0.25, 0.4))
    assert labels[:, 2].tolist() == [1, 1, -1, -1]


# ---------------------------------------------------------------- Raven: opensoundscape tables

def test_raven_tables_including_the_empty_one(tmp_path, fixtures):
    birds = fixtures / "annotated" / "birds_10s.wav"
    store = ingest_copies(tmp_path, {"MSD_20180427_000000.wav": birds, "MSD_20180427_010000.wav": birds})
    raven = fixtures / "annotated" / "raven"
    report = attach(store, [raven / "MSD-0003_20180427_2minstart00.Table.1.selections.txt"], "raven",
                    recording=Recording("MSD_20180427_000000.wav"))
    # The table describes two minutes; the ingested audio holds 10.1 s: later events are kept, reported.
    # Its unlabelled selection (line 11) is rejected, named in the report.
    assert report.files[0].events == 9 and report.files[0].outside_audio == 4
    assert [str(r) for r in report.files[0].rejected] == [
        f"{raven / 'MSD-0003_20180427_2minstart00.Table.1.selections.txt'}, line 11: empty label"]
    assert report.rejected_rows == 1 and "rejected   1 rows" in report.summary()
    empty = raven / "EmptyExample.Table.1.selections.txt"
    # A header-only table without the labels looked for claims nothing, and says so.
    report = attach(store, [empty], "raven", recording=Recording("MSD_20180427_010000.wav"))
    assert report.files[0].effort == 0 and not report.files[0].streams and not report.committed
    assert "no effort_labels were given: no effort recorded" in report.summary()
    looked_for = {"effort_labels": ["eato", "lowa", "woth"]}
    report = attach(store, [empty], "raven", options=looked_for, recording=Recording("MSD_20180427_010000.wav"))
    assert report.files[0].events == 0 and report.files[0].effort == 3
    # The same (header-only) content for another recording is another attach.
    report = attach(store, [empty], "raven", options=looked_for, recording=Recording("MSD_20180427_000000.wav"))
    assert report.files[0].effort == 3 and not report.files[0].unchanged
    _, ds = stream(store)
    ev = ds.pam.events()
    assert ev.in_audio.tolist() == [True] * 5 + [False] * 4
    assert sorted(set(ev.label_norm)) == ["eato", "lowa", "woth"]
    start, _ = row_times(ds)
    first = start < to_ns("2018-04-27T00:01:00")
    labels = labels_of(ds)
    np.testing.assert_array_equal(ds.pam.labels().values, oracle(ds)[0])
    rows_first = np.flatnonzero(first)
    # Row 0 of the annotated recording holds WOTH and EATO calls; LOWA only sings after 10 s.
    assert [labels[n][rows_first[0]] for n in ("eato", "lowa", "woth")] == [1, 0, 1]
    # The recording with the header-only table: reviewed, nothing found -> negatives for the labels looked for.
    assert all(labels[n][i] == 0 for n in labels for i in np.flatnonzero(~first))


# ---------------------------------------------------------------- SanctSound clips

CLIPS = ["SanctSound_CI01_01_bocaccio_20181101T100353Z.wav", "SanctSound_CI01_01_snappingshrimp_20181101T080448Z.wav",
         "SanctSound_CI01_03_dolphins_20190904T064203Z.wav", "SanctSound_CI01_03_smallboat_20190825T191712Z.wav",
         "SanctSound_MB01_05_ship_20200424T171317Z.wav"]


@pytest.fixture
def clips_store(tmp_path, fixtures):
    folder = fixtures / "sanctsound" / "clips"
    return ingest_copies(tmp_path, {n: folder / n for n in CLIPS}, "sanctsound-clips",
                         source={"name": "sanctsound"}, row_seconds=2)


def detection_csvs(folder):
    """SanctSound products as NCEI writes them, for the times in the clips' names."""
    folder.mkdir(exist_ok=True)
    files = {
        # Hourly presence, BOM + CRLF + "IsoStartTime" casing: 08 and 09 h reviewed, nothing; 10 h present.
        "SanctSound_CI01_01_bocaccio_1h.csv": "\ufeffIsoStartTime,Presence\r\n2018-11-01T08:00:00Z,0\r\n"
                                              "2018-11-01T09:00:00Z,0\r\n2018-11-01T10:00:00Z,1\r\n",
        # Event spans crossing the clip's 2 s rows (06:42:03, :05, :07), a reviewed empty hour at the
        # small-boat clip, and an event in 2017 when nothing was recorded.
        "SanctSound_CI01_03_dolphins.csv": "ISOStartTime,ISOEndTime,Presence\n"
                                           "2019-09-04T06:42:04.800Z,2019-09-04T06:42:05.900Z,1\n"
                                           "2019-09-04T06:42:06.500Z,2019-09-04T06:42:07.500Z,1\n"
                                           "2019-08-25T19:00:00Z,2019-08-25T20:00:00Z,0\n"
                                           "2017-01-01T00:00:00Z,2017-01-01T00:01:00Z,1\n",
        # Ships: NoShip up to 17:13:20, then a ship; the clip starts at 17:13:17.
        "SanctSound_MB01_05_ships.csv": "ISOStartTime,ISOEndTime,Label\n"
                                        "2020-04-24T17:13:00Z,2020-04-24T17:13:20Z,NoShip\n"
                                        "2020-04-24T17:13:20Z,2020-04-24T17:14:00Z,Ship\n",
    }
    paths = []
    for name, text in files.items():
        (folder / name).write_bytes(text.encode())
        paths.append(folder / name)
    return paths


def test_sanctsound_detections_on_the_clips(tmp_path, clips_store):
    store = clips_store
    report = attach(store, detection_csvs(tmp_path / "products"), "sanctsound")
    assert not report.failed, report.summary()
    by_name = {f.name.rsplit("/", 1)[-1]: f for f in report.files}
    dolphins = by_name["SanctSound_CI01_03_dolphins.csv"]
    assert len(dolphins.streams) == 3  # every CI01 stream (2, 32 and 48 kHz) gets the site's rows
    assert dolphins.outside_audio == 1  # the 2017 event: kept, reported

    _, boc = stream(store, site="CI01", rate=2000)        # bocaccio clip 10:03:53, 3 rows
    _, shrimp = stream(store, site="CI01", rate=32000)    # snapping shrimp clip 08:04:48, 4 rows
    _, d48 = stream(store, site="CI01", rate=48000)       # small boat (2019-08-25) + dolphins clips
    _, ship = stream(store, site="MB01", rate=48000)
    assert labels_of(boc) == {"bocaccio": [1, 1, 1], "dolphins": [-1, -1, -1]}
    # A presence-0 hour is reviewed absence: negatives, not unknowns.
    assert labels_of(shrimp) == {"bocaccio": [0, 0, 0, 0], "dolphins": [-1, -1, -1, -1]}
    start, _ = row_times(d48)
    order = np.argsort(start)
    got = {k: [v[i] for i in order] for k, v in labels_of(d48).items()}
    # Small boat rows: the empty reviewed hour -> dolphin negatives. Dolphin clip rows: the first
    # event puts 0.2 s (< 0.25 s, 18 %) in row 0 and 0.9 s in row 1; the second straddles rows 1-2.
    # Row 0 lies outside every reviewed span: unknown. No bocaccio effort in 2019: unknown.
    assert got == {"bocaccio": [-1] * 6, "dolphins": [0, 0, 0, -1, 1, 1]}
    assert labels_of(ship) == {"ships": [0, 1, 1]}
    for ds in (boc, shrimp, d48, ship):
        np.testing.assert_array_equal(ds.pam.labels().values, oracle(ds)[0])
    ev = d48.pam.events()
    # The 48 kHz stream holds the site's four events: the 2018 bocaccio hour and the 2017 dolphins
    # fall outside its audio and are kept all the same.
    assert ev[["label_norm", "in_audio"]].values.tolist() == [["bocaccio", False], ["dolphins", True],
                                                              ["dolphins", True], ["dolphins", False]]
    assert not ev[ev.start == pd.Timestamp("2017-01-01")].in_audio.any()
    # All three files came in with one commit.
    assert report.snapshot_id == open_session(store).snapshot_id


def test_bad_files_fail_alone_and_name_file_and_line(tmp_path, clips_store):
    store = clips_store
    folder = tmp_path / "bad"
    folder.mkdir()
    files = {
        "SanctSound_CI01_01_finwhale_1h.csv": "ISOStartTime,Count\n2018-11-01T08:00:00Z,3\n",
        "SanctSound_CI01_01_seiwhale_1h.csv": "ISOStartTime,Presence\n2018-11-01T08:00:00Z,0\nnot-a-time,1\n",
        "SanctSound_CI01_01_bluewhale.csv": "ISOStartTime,ISOEndTime,Presence\n"
                                            "2018-11-01T08:10:00Z,2018-11-01T08:00:00Z,1\n",
        "SanctSound_ZZ99_01_bocaccio_1h.csv": "ISOStartTime,Presence\n2018-11-01T08:00:00Z,1\n",
        "SanctSound_CI01_01_bocaccio_1h.csv": "ISOStartTime,Presence\n2018-11-01T10:00:00Z,1\n",
    }
    for name, text in files.items():
        (folder / name).write_text(text)
    paths = [folder / n for n in files] + [folder / "missing.csv"]
    report = attach(store, paths, "sanctsound")
    failed = dict(report.failed)
    # Files fail for what is wrong with the whole file: a column, a site, the file itself.
    assert set(failed) == {str(folder / n) for n in ("SanctSound_CI01_01_finwhale_1h.csv",
                                                      "SanctSound_ZZ99_01_bocaccio_1h.csv", "missing.csv")}
    assert "finwhale_1h.csv, line 1: missing required column 'Presence'" in failed[str(folder / "SanctSound_CI01_01_finwhale_1h.csv")]
    assert "ZZ99_01_bocaccio_1h.csv, line 2: unknown stream: the store has no site 'ZZ99_01'" in \
        failed[str(folder / "SanctSound_ZZ99_01_bocaccio_1h.csv")]
    assert "missing.csv" in failed[str(folder / "missing.csv")]
    # A bad row is rejected with its line; the file's other rows are attached.
    rejected = {f.name.rsplit("/", 1)[-1]: [str(r) for r in f.rejected] for f in report.files}
    assert rejected["SanctSound_CI01_01_seiwhale_1h.csv"] == [
        f"{folder / 'SanctSound_CI01_01_seiwhale_1h.csv'}, line 3: ISOStartTime 'not-a-time' is not a time "
        "(or is outside 1900-01-01 to 2200-01-01)"]
    assert rejected["SanctSound_CI01_01_bluewhale.csv"] == [
        f"{folder / 'SanctSound_CI01_01_bluewhale.csv'}, line 2: negative duration: ends 600 s before it starts"]
    assert [f.name for f in report.files if f.streams] == [str(folder / n) for n in (
        "SanctSound_CI01_01_seiwhale_1h.csv", "SanctSound_CI01_01_bocaccio_1h.csv")]
    _, boc = stream(store, site="CI01", rate=2000)
    assert labels_of(boc) == {"bocaccio": [1, 1, 1], "seiwhale": [-1, -1, -1]}
    # A stream the caller names that does not exist stops the attach before anything is read.
    with pytest.raises(AnnotationTargetError, match="unknown stream 'sanctsound/ZZ99'"):
        attach(store, paths[-2:-1], "sanctsound", stream="sanctsound/ZZ99")


# ---------------------------------------------------------------- Orcasound

ORCA = "rpi_orcasound_lab"


@pytest.fixture
def orcasound_store(tmp_path, fixtures):
    """Real recordings (SoundTrap, 300 s, 8 kHz) filed as Orcasound lab audio at chosen UTC times."""
    flac = sorted((fixtures / "soundtrap").glob("*.flac"))[0]
    starts = {
        "A": "20230818_075800",  # pods-ai line 2: resident, reported 00:59:53 PDT = 07:59:53Z
        "B": "20231215_110800",  # line 32: humpback, 03:10:10 PST = 11:10:10Z
        "C": "20250315_154000",  # line 393: vessel false positive, 08:41:47 PDT = 15:41:47Z
        "D": "20170927_152500",  # the Pod.Cast clip OS_9_27_2017_08_25_00 (PDT)
        "E": "20170927_160000",  # a Pod.Cast file listed as all-negative
    }
    store = ingest_copies(tmp_path, {f"{ORCA}_{t}.flac": flac for t in starts.values()},
                          source={"name": "orcasound"}, row_seconds=10)
    return store, {k: to_ns(pd.Timestamp(v.replace("_", "T"))) for k, v in starts.items()}


def rows_of(ds, labels, start_ns, n=30):
    """One recording's labels, row by row from its start (rows are 10 s)."""
    start, _ = row_times(ds)
    idx = [int(np.flatnonzero(start == start_ns + k * 10 * NS_PER_S)[0]) for k in range(n)]
    return {name: [labels[name][i] for i in idx] for name in labels}


def test_pods_ai_detections_on_an_orcasound_store(orcasound_store, fixtures):
    store, t = orcasound_store
    export = fixtures / "orcasound" / "annotations" / "pods-ai-detections.csv"
    # The export covers seven nodes, the store one: by default that is an error naming the first row.
    report = attach(store, [export], "pods-ai")
    assert report.failed and not report.committed
    assert "pods-ai-detections.csv, line 4: unknown stream: the store has no site 'rpi_sunset_bay'" in report.failed[0][1]
    report = attach(store, [export], "pods-ai", skip_unknown_streams=True)
    assert not report.failed, report.summary()
    f = report.files[0]
    raw = pd.read_csv(export)
    lab = raw[raw.NodeName == ORCA].drop_duplicates()
    assert f.events == len(lab) and f.outside_audio == len(lab) - 3
    assert sum(f.skipped_rows.values()) == len(raw.drop_duplicates()) - len(lab) and ORCA not in f.skipped_rows
    _, ds = stream(store)
    ev = ds.pam.events()
    assert sorted(ev[ev.in_audio].line.tolist()) == [2, 32, 393]
    labels = labels_of(ds)
    assert set(labels) == set(lab.Category) == {"resident", "transient", "humpback", "vessel", "jingle"}
    # A: window 07:59:23-08:00:23 -> rows 08 (07:59:20) to 14 (08:00:20) of the recording from 07:58:00.
    a = rows_of(ds, labels, t["A"])
    assert a["resident"] == [-1] * 8 + [1] * 7 + [-1] * 15  # a report is no review of the rest
    # B (winter, PST): window 11:09:40-11:10:40 -> rows 10 to 15 of the recording from 11:08:00.
    b = rows_of(ds, labels, t["B"])
    assert b["humpback"] == [-1] * 10 + [1] * 6 + [-1] * 14
    # C: a vessel where the model heard a whale: vessel positives over 15:41:17-15:42:17, and the
    # rows the window covers whole (15:41:20-15:42:10) are reviewed whale negatives.
    c = rows_of(ds, labels, t["C"])
    assert c["vessel"] == [-1] * 7 + [1] * 7 + [-1] * 16
    for whale in ("resident", "transient", "humpback"):
        assert c[whale] == [-1] * 8 + [0] * 5 + [-1] * 17
    np.testing.assert_array_equal(ds.pam.labels().values, oracle(ds)[0])
    assert ev[ev.line == 393].confidence.iloc[0] == pytest.approx(0.594115)


def test_podcast_tsv_and_json_on_an_orcasound_store(tmp_path, orcasound_store, fixtures):
    store, t = orcasound_store
    path, _ = stream(store)
    tsv = tmp_path / "train.tsv"
    tsv.write_text(
        "dataset\twav_filename\tstart_time_s\tduration_s\tlocation\tdate\tpst_or_master_tape_identifier\n"
        "podcast_round2\tOS_9_27_2017_08_25_00__0001.wav\t24.5\t2.45\torcasound_lab\t9/27/2017\t08:25:00\n"
        "podcast_round2\tOS_9_27_2017_08_25_00__0001.wav\t38.4\t2.45\torcasound_lab\t9/27/2017\t08:25:00\n"
        f"podcast_round2\t{ORCA}_20170927_160000.flac\t0.0\t0.01\torcasound_lab\t9/27/2017\t09:00:00\n")
    # The clip is not in the store: its Pacific date places it; the stream is named. The second file
    # is in the store: its start and length come from there.
    report = attach(store, [tsv], "podcast-tsv", options={"file_seconds": 60}, stream="orcasound")
    assert not report.failed, report.summary()
    assert report.files[0].events == 2 and report.files[0].effort == 2
    submit = fixtures / "orcasound" / "annotations" / "podcast-submit.json"
    uri = json.loads(submit.read_text())["uri"]
    report = attach(store, [submit], "podcast-json", recording=Recording(uri, start=t["D"], stream=path))
    assert report.files[0].events == 6 and report.files[0].notes  # length unknown: effort up to the last event
    _, ds = stream(store)
    labels = labels_of(ds)
    # D from 15:25:00Z (08:25 PDT): calls in rows 0, 2, 3, 4, 5; row 1 reviewed without a call;
    # the JSON's effort stops at its last event (58.8 s), the TSV's at 60 s: rows from 60 s unknown.
    assert rows_of(ds, labels, t["D"])["orca"] == [1, 0, 1, 1, 1, 1] + [-1] * 24
    assert rows_of(ds, labels, t["E"])["orca"] == [0] * 30  # the 0.01 s marker: all negative
    np.testing.assert_array_equal(ds.pam.labels().values, oracle(ds)[0])
    ev = ds.pam.events()
    assert set(ev.source) == {"podcast"} and ev.in_audio.all()


def test_model_predictions_only_label_when_asked(tmp_path, orcasound_store, fixtures):
    store, t = orcasound_store
    proposals = fixtures / "orcasound" / "annotations" / "podcast-annotation.json"
    report = attach(store, [proposals], "podcast-json", recording=Recording("", start=t["D"], stream="orcasound"))
    assert report.files[0].events == 2
    _, ds = stream(store)
    assert ds.pam.labels().sizes["label"] == 0  # unreviewed machine labels make no labels
    machine = ds.pam.labels(OverlapRule(include_unreviewed=True))
    d = rows_of(ds, {"orca": machine.sel(label="orca").values.tolist()}, t["D"])
    assert d["orca"] == [1, -1, 1] + [-1] * 27  # 4.9-7.35 s and 24.5-26.95 s; no effort at all


# ---------------------------------------------------------------- command line and accessor

def test_annotate_command(tmp_path, fixtures):
    store = spinetail_store(tmp_path, fixtures)
    bad = tmp_path / "bad.txt"
    bad.write_text("0.5\t1.5\tSP\n2.0\tlater\tSP\n")
    cmd = [sys.executable, "-m", "pamingest.cli", "annotate", store, str(fixtures / "annotated" / "spinetail.audacity.txt"),
           str(bad), "--format", "audacity", "--recording", "spinetail_20200101_000000.wav"]
    out = subprocess.run(cmd, capture_output=True, text=True)
    # The bad line is rejected, named with its file and line; the other lines are attached; exit 1.
    assert out.returncode == 1, out.stderr
    assert "18 events, 1 effort spans" in out.stdout and "bad.txt: 1 events, 0 effort spans" in out.stdout
    assert f"rejected {bad}, line 2: end time 'later' is not a number" in out.stdout
    again = subprocess.run(cmd[:6] + cmd[7:] + ["--json"], capture_output=True, text=True, check=True)
    result = json.loads(again.stdout)
    assert result["committed"] is False and result["files"][0]["unchanged"]
    out = subprocess.run(cmd[:6] + ["--format", "nosuch"], capture_output=True, text=True)
    assert out.returncode == 2 and "unknown annotation format 'nosuch'" in out.stderr and "Traceback" not in out.stderr
    _, ds = stream(store)
    assert ds.sizes["event"] == 19


def test_accessor_on_a_stream_without_annotations(tmp_path, fixtures):
    store = spinetail_store(tmp_path, fixtures)
    _, ds = stream(store)
    assert ds.pam.events().empty and ds.pam.effort().empty
    labels = ds.pam.labels()
    assert labels.shape == (4, 0) and str(labels.dims) == "('chunk', 'label')"
    assert NAT not in row_times(ds)[0]
