"""The labelling queue: exactly-once scores, resume after a kill, rows ingested later, review round trip."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import pamingest as pi
from pamingest.errors import ConfigError, LabelerNotFoundError
from pamingest.labeling import QUEUED, SCORED, get_labeler, pseudolabel, queue, review
from pamingest.labeling import run as run_module
from pamingest.labeling.queue import LabelerInfo, status_name
from pamingest.labeling.run import Batch, commit_results, label_batch, read_rows
from pamingest.store.repo import Store, StoreLocation, open_repository

PAMINGEST = [sys.executable, "-m", "pamingest.cli"]
STREAM = "files/67416073/8000Hz_1ch_pcm16"
SOUNDTRAP = ["67416073.210610033655.flac", "67416073.210610034155.flac", "67416073.210610034655.flac"]


def soundtrap_store(tmp_path, fixtures, files=SOUNDTRAP) -> str:
    folder = tmp_path / "recordings"
    folder.mkdir(exist_ok=True)
    for name in files:
        shutil.copy(fixtures / "soundtrap" / name, folder / name)
    store = str(tmp_path / "store")
    report = pi.ingest(pi.TimestampedFiles(str(folder), "soundtrap"), store, client="serial")
    assert not report.failed
    return store


def dataset(store, stream=STREAM):
    return pi.open_store(store)[stream].to_dataset()


def labelling_commits(store: str, key: str) -> list[dict]:
    repo = open_repository(StoreLocation.from_url(store))
    return [dict(c.metadata) for c in repo.ancestry(branch="main")
            if c.metadata.get("pamingest") == "pseudolabel" and c.metadata.get("key") == key]


def bare_scores(store: str, spec: str, stream: str = STREAM) -> np.ndarray:
    """The labeller run directly on every live row, no queue and no store writes: the reference."""
    labeler = get_labeler(spec)
    labeler.load()
    session = open_repository(StoreLocation.from_url(store)).readonly_session("main")
    ds = dataset(store, stream)
    rows = np.flatnonzero(ds["n_valid"].values > 0)
    audio, n_valid, rate = read_rows(session, stream, rows)
    return labeler(audio, n_valid, rate).scores


# ---------------------------------------------------------------- queue and exactly once

def test_queue_scores_each_chunk_once_across_partial_runs(tmp_path, fixtures):
    store = soundtrap_store(tmp_path, fixtures)
    [q] = queue(store, "energy:humpback")
    assert (q.stream, q.live, q.queued, q.scored, q.annotated) == (STREAM, 93, 93, 0, 0)
    first = pseudolabel(store, "energy:humpback", client="serial", batch_rows=8, max_chunks=20, commit_seconds=0)
    assert (first.queued, first.scored, first.commits) == (20, 20, 3)
    [q] = queue(store, "energy:humpback")
    assert (q.scored, q.queued) == (20, 73)
    np.testing.assert_array_equal(q.queued_rows, np.arange(20, 93))  # the rest, in row order
    rest = pseudolabel(store, "energy:humpback", client="serial", batch_rows=8)
    assert rest.scored == 73 and rest.failed == 0
    again = pseudolabel(store, "energy:humpback", client="serial")
    assert again.queued == 0 and again.commits == 0 and again.snapshot_id == rest.snapshot_id

    key = first.key
    assert key == "energy_humpback_v1"
    commits = labelling_commits(store, key)
    assert sum(c["scored"] for c in commits) == 93  # every chunk written by exactly one commit
    ds = dataset(store)
    scores = ds.pam.scores("energy:humpback")
    assert scores.dims == ("chunk", "class") and list(scores["class"].values) == ["humpback"]
    assert (scores["status"].values == SCORED).all()
    assert scores.attrs["labeler"] == "energy:humpback" and scores.attrs["version"] == "1"
    assert json.loads(scores.attrs["params"])["low_hz"] == 100
    # The scores in the store are the labeller's own on those rows, row for row.
    np.testing.assert_array_equal(scores.values, bare_scores(store, "energy:humpback"))
    det = ds.pam.detections("energy:humpback")
    assert len(det) == first.detections + rest.detections > 0
    start = ds["chunk_start"].values[det.chunk.to_numpy()]
    assert (det.start.to_numpy() >= start).all() and (det.end > det.start).all()
    assert ((det.low_hz >= 100) & (det.high_hz <= 4000)).all()


def test_another_version_or_tag_is_another_queue_and_params_are_checked(tmp_path, fixtures):
    store = soundtrap_store(tmp_path, fixtures, SOUNDTRAP[:1])
    pseudolabel(store, "energy:humpback", client="serial")
    with pytest.raises(ConfigError, match="already scored chunks with parameters"):
        pseudolabel(store, "energy:humpback", params={"threshold_db": 3}, client="serial")
    tagged = pseudolabel(store, "energy:humpback", params={"threshold_db": 3}, tag="low", client="serial")
    assert tagged.scored == 31 and tagged.key == "energy_humpback_low_v1"
    ds = dataset(store)
    low, default = ds.pam.scores("energy:humpback+low"), ds.pam.scores("energy:humpback")
    assert (low.values[:30] >= default.values[:30]).all()  # a lower threshold scores higher
    with pytest.raises(LabelerNotFoundError, match="unknown labeler 'nosuch'"):
        pseudolabel(store, "nosuch", client="serial")
    with pytest.raises(ConfigError, match="unknown preset"):
        pseudolabel(store, "energy:dolphin", client="serial")


def test_rows_ingested_later_are_queued(tmp_path, fixtures):
    store = soundtrap_store(tmp_path, fixtures, SOUNDTRAP[:2])
    assert pseudolabel(store, "energy:humpback", client="serial").scored == 62
    # The third file arrives: ingest grows the score and status arrays with their fill values.
    shutil.copy(fixtures / "soundtrap" / SOUNDTRAP[2], tmp_path / "recordings" / SOUNDTRAP[2])
    assert pi.ingest(pi.TimestampedFiles(str(tmp_path / "recordings"), "soundtrap"), store,
                     client="serial").rows == 31
    ds = dataset(store)
    assert ds.sizes["chunk"] == 93 and ds[status_name("energy_humpback_v1")].shape == (93,)
    scores = ds.pam.scores("energy:humpback")
    assert np.isnan(scores.values[62:]).all() and (scores["status"].values[62:] == QUEUED).all()
    [q] = queue(store, "energy:humpback")
    np.testing.assert_array_equal(q.queued_rows, np.arange(62, 93))
    # Finished batches are committed together every commit_seconds: here all 8 in one commit.
    report = pseudolabel(store, "energy:humpback", client="serial", batch_rows=4, commit_seconds=3600)
    assert (report.scored, report.batches, report.commits) == (31, 8, 1)
    assert sum(c["scored"] for c in labelling_commits(store, report.key)) == 93
    np.testing.assert_array_equal(dataset(store).pam.scores("energy:humpback").values,
                                  bare_scores(store, "energy:humpback"))


def test_a_commit_that_loses_the_race_is_reapplied_on_the_new_main(tmp_path, fixtures, monkeypatch):
    store = soundtrap_store(tmp_path, fixtures, SOUNDTRAP[:1])
    spec = run_module.LabelerSpec.parse("energy:humpback")
    info = LabelerInfo.of(spec.build())
    st = Store.open(store)
    session_bytes = __import__("pickle").dumps(st.session())
    mine = label_batch(Batch(STREAM, tuple(range(0, 8))), session_bytes, spec)
    theirs = label_batch(Batch(STREAM, tuple(range(4, 12))), session_bytes, spec)
    real_apply = run_module._apply
    calls = []

    def apply_then_someone_else_commits(root, info_, results):
        counts = real_apply(root, info_, results)
        calls.append(counts)
        if len(calls) == 1:
            # Another run commits rows 4..11 between this session's start and its commit.
            assert commit_results(st, info, [theirs], "other")[0].snapshot_id is not None
        return counts

    monkeypatch.setattr(run_module, "_apply", apply_then_someone_else_commits)
    commit, (scored, failed, skipped, _) = commit_results(st, info, [mine], "mine")
    # mine, theirs (nested), mine again on the new tip: both wrote the same status chunk, so the
    # rebase refused and the scores were re-applied on top of theirs.
    assert commit.snapshot_id is not None and len(calls) == 3 and commit.rebuilds == 1
    assert (scored, failed, skipped) == (4, 0, 4)  # rows 4..7 were theirs: not written twice
    commits = labelling_commits(store, info.key)
    assert sorted(c["scored"] for c in commits) == [4, 8]
    status = dataset(store)[status_name(info.key)].values
    assert (status[:12] == SCORED).all() and (status[12:] == QUEUED).all()


def test_failures_are_recorded_and_retried_on_request(tmp_path, fixtures, labeler_plugin):
    store = soundtrap_store(tmp_path, fixtures, SOUNDTRAP[:1])  # 31 rows: batches of 4 end with 3
    report = pseudolabel(store, "broken", client="serial", batch_rows=4)
    assert (report.scored, report.failed) == (28, 3)
    assert "odd batch" in report.errors[0] and STREAM in report.errors[0]
    ds = dataset(store)
    assert list(ds["labeling_failure_chunk"].values) == [28, 29, 30]
    assert queue(store, "broken")[0].queued == 0 and queue(store, "broken")[0].failed == 3
    again = pseudolabel(store, "broken", client="serial", batch_rows=2, retry_failed=True)
    assert (again.scored, again.failed) == (2, 1)


# ---------------------------------------------------------------- plugins and workers

def test_a_user_labeler_from_the_entry_point_loads_once_per_worker(tmp_path, fixtures, labeler_plugin):
    from distributed import Client, LocalCluster

    store = soundtrap_store(tmp_path, fixtures)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster, set_as_default=False) as client:
        pids = set(client.run(os.getpid).values())
        report = pseudolabel(store, "loudness", client=client, batch_rows=4)
    assert report.scored == 93 and report.batches == 24
    loads = labeler_plugin.read_text().split()
    # One load on the client (building it checks the settings, without loading) is not counted:
    # every load happened in a worker, at most once per worker, for 24 batches.
    assert set(map(int, loads)) <= pids and len(loads) == len(set(loads)) <= 2
    scores = dataset(store).pam.scores("loudness")
    assert list(scores["class"].values) == ["loud", "quiet"]
    np.testing.assert_allclose(scores.values.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(scores.values, bare_scores(store, "loudness"))


def test_killed_run_resumes_exactly_once(tmp_path, fixtures, labeler_plugin):
    """SIGKILL the CLI (and its Dask workers) after its first commit; the rerun scores exactly the rest."""
    store = soundtrap_store(tmp_path, fixtures)
    env = {**os.environ, "PAMINGEST_TEST_DELAY": "0.4"}
    proc = subprocess.Popen([*PAMINGEST, "pseudolabel", store, "--labeler", "loudness", "--batch-rows", "4",
                             "--workers", "1"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    key = "loudness_v1"
    deadline = time.monotonic() + 120
    try:
        while not labelling_commits(store, key):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no batch was committed in 120 s"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the CLI, its LocalCluster's nanny and worker: one group
        proc.wait(timeout=30)
    done = sum(c["scored"] for c in labelling_commits(store, key))
    [q] = queue(store, "loudness")
    assert 0 < done < 93 and q.scored == done and q.queued == 93 - done, (done, q)

    out = subprocess.run([*PAMINGEST, "pseudolabel", store, "--labeler", "loudness", "--batch-rows", "4",
                          "--serial", "--json"], capture_output=True, text=True, env=os.environ, timeout=300)
    assert out.returncode == 0, out.stderr
    rerun = json.loads(out.stdout)
    assert rerun["queued"] == rerun["scored"] == 93 - done
    commits = labelling_commits(store, key)
    assert sum(c["scored"] for c in commits) == 93  # no chunk scored twice, none skipped
    scores = dataset(store).pam.scores("loudness")
    assert (scores["status"].values == SCORED).all()
    np.testing.assert_array_equal(scores.values, bare_scores(store, "loudness"))


# ---------------------------------------------------------------- review round trip

def _edit_table(path: Path, answers: dict[int, str], extra: list[dict[str, str]] = ()) -> None:
    """Answer a review table as a reviewer in Raven would: ``Annotation`` of row i, and selections drawn
    (``extra``: cells by column name, the others empty)."""
    lines = path.read_text().splitlines()
    header = lines[0].split("\t")
    col = header.index("Annotation")
    out = [lines[0]]
    for i, line in enumerate(lines[1:]):
        cells = line.split("\t")
        cells[col] = answers.get(i, cells[col])
        out.append("\t".join(cells))
    for cells in extra:
        out.append("\t".join(cells.get(h, "") for h in header))
    path.write_text("\n".join(out) + "\n")


def batch_table(path):
    """A review table as text cells (Raven writes no quotes)."""
    import csv

    import pandas as pd

    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, quoting=csv.QUOTE_NONE)


def test_review_batch_round_trip(tmp_path, fixtures):
    store = soundtrap_store(tmp_path, fixtures)
    pseudolabel(store, "energy:humpback", client="serial")
    out = tmp_path / "review"
    result = subprocess.run([*PAMINGEST, "review", store, "--labeler", "energy:humpback", "--n", "6",
                             "--strategy", "uncertainty", "--out", out, "--json"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    batch = json.loads(result.stdout)
    assert len(batch["chunks"]) == 6 and len(batch["clips"]) == 6 and batch["pool"] == 93
    ds = dataset(store)
    scores = ds.pam.scores("energy:humpback").values[:, 0]
    rows = [r for _, r in batch["chunks"]]
    # Uncertainty: the six scores closest to 0.5.
    closest = np.sort(np.abs(scores - 0.5))[:6]
    np.testing.assert_allclose(np.sort(np.abs(scores[rows] - 0.5)), closest)
    # Clips are the chunks' samples, bit for bit, at the stream's rate.
    audio = ds["audio"].values
    for (_, row), clip in zip(sorted(batch["chunks"], key=lambda c: c[1]), batch["clips"]):
        data, rate = sf.read(clip, dtype="int16")
        assert rate == 8000 and clip.endswith(".flac")
        np.testing.assert_array_equal(data, audio[row, : ds["n_valid"].values[row], 0])
    [table] = batch["tables"]
    header = Path(table).read_text().splitlines()[0].split("\t")
    assert header[:7] == ["Selection", "View", "Channel", "Begin Time (s)", "End Time (s)", "Low Freq (Hz)",
                          "High Freq (Hz)"] and "Annotation" in header

    # The reviewer answers five clips (one humpback, the others nothing) and leaves one unanswered;
    # on the second clip they draw a humpback call of their own (Raven writes Begin File = the clip and
    # File Offset = the time in it); and one more on the sixth clip, in a table without Begin File for
    # it (placed by its Begin Time in the sequence); one more runs off the end of a clip (rejected).
    ordered = sorted(rows)
    clip2 = Path(batch["clips"][1]).name
    clip6_begin = float(batch_table(table)["Begin Time (s)"][5])
    drawn = {"Selection": "99", "View": "Spectrogram 1", "Channel": "1", "Begin Time (s)": "11.0",
             "End Time (s)": "12.0", "Low Freq (Hz)": "200", "High Freq (Hz)": "900", "Begin File": clip2,
             "File Offset (s)": "1.0", "Annotation": "humpback"}
    by_time = {"Selection": "100", "View": "Spectrogram 1", "Channel": "1", "Begin Time (s)": f"{clip6_begin + 2.5}",
               "End Time (s)": f"{clip6_begin + 3.0}", "Annotation": "humpback"}
    across = {**drawn, "Selection": "101", "File Offset (s)": "9.5", "Begin Time (s)": "19.5", "End Time (s)": "21"}
    # A second batch of the same store, sent back unanswered: the report says so and nothing of it lands.
    idle = review(store, "energy:humpback", tmp_path / "idle", n=2, strategy="top")
    _edit_table(Path(table), {0: "humpback", 1: "none", 2: "none", 3: "?", 4: "", 5: "none"},
                [drawn, by_time, across])
    result = subprocess.run([*PAMINGEST, "annotate", store, table, idle.tables[0], "--format", "raven", "--json"],
                            capture_output=True, text=True)
    assert result.returncode == 1, result.stdout + result.stderr  # 1: a table came back unanswered, a row rejected
    attached = json.loads(result.stdout)
    answered, unanswered = attached["files"]
    assert answered["effort"] == 5 and answered["events"] == 3
    assert answered["review"] == {"answered": 5, "unanswered": 1, "unanswered_selections": ["4"]}
    assert [r["line"] for r in answered["rejected"]] == [10] and "past the end of review clip" in str(answered)
    assert unanswered["review"]["answered"] == 0 and not unanswered["streams"]
    assert attached["unanswered_tables"] == [idle.tables[0]]
    assert "UnansweredReviewWarning" in result.stderr and idle.tables[0] in result.stderr

    ds = dataset(store)
    labels = ds.pam.labels().sel(label="humpback").values
    assert labels[ordered[0]] == 1 and labels[ordered[1]] == 1  # answered / drawn by the reviewer
    # Reviewed nothing; unanswered stays unknown; the last one answered "none" but a call was drawn on it.
    assert [labels[r] for r in ordered[2:]] == [0, -1, 0, 1]
    ev = ds.pam.events()
    drawn_event = ev[ev.line == 8].iloc[0]
    assert drawn_event.start == ds["chunk_start"].values[ordered[1]] + np.timedelta64(1, "s")
    assert drawn_event.end - drawn_event.start == np.timedelta64(1, "s")
    by_time_event = ev[ev.line == 9].iloc[0]
    assert by_time_event.start == ds["chunk_start"].values[ordered[5]] + np.timedelta64(2500, "ms")
    # Answered chunks leave every queue and the review pool; the unanswered one stays. Effort is
    # time: a row recorded during an answered clip (the next file starts before this one ends: the
    # tiny last row of a file) is covered too.
    answered = ordered[:3] + ordered[4:]
    rows_table = ds.pam.rows.set_index("row")
    spans = [(rows_table.start[r], rows_table.end[r]) for r in answered]
    inside = {r for r, (s, e) in zip(rows_table.index, zip(rows_table.start, rows_table.end))
              if any(a <= s and e <= b for a, b in spans)}
    assert set(answered) <= inside and ordered[3] not in inside
    [q] = queue(store, "energy:killer-whale")
    assert q.annotated == len(inside) and q.queued == 93 - len(inside) and ordered[3] in q.queued_rows
    assert not inside & set(q.queued_rows)
    again = review(store, "energy:humpback", tmp_path / "review2", n=93, strategy="top")
    assert again.pool == 93 - len(inside) and not inside & {r for _, r in again.chunks}
    # The same table again changes nothing.
    assert pi.open_store(store) is not None
    from pamingest.annotations import attach

    assert attach(store, [table], "raven").snapshot_id is None


def test_review_strategies(tmp_path, fixtures):
    store = soundtrap_store(tmp_path, fixtures, SOUNDTRAP[:1])
    pseudolabel(store, "energy:humpback", client="serial")
    scores = dataset(store).pam.scores("energy:humpback").values[:, 0]
    top = review(store, "energy:humpback", tmp_path / "top", n=3, strategy="top")
    want = np.argsort(-np.nan_to_num(scores, nan=-1), kind="stable")[:3]
    assert sorted(r for _, r in top.chunks) == sorted(want.tolist())
    a = review(store, "energy:humpback", tmp_path / "r1", n=5, strategy="random", seed=3)
    b = review(store, "energy:humpback", tmp_path / "r2", n=5, strategy="random", seed=3)
    c = review(store, "energy:humpback", tmp_path / "r3", n=5, strategy="random", seed=4)
    assert a.chunks == b.chunks != c.chunks
    with pytest.raises(ConfigError, match="unknown strategy"):
        review(store, "energy:humpback", tmp_path / "x", strategy="best")
    from pamingest.errors import LabelingError

    with pytest.raises(LabelingError, match="no scores of energy:vessel"):
        review(store, "energy:vessel", tmp_path / "x")


def test_cli_pseudolabel_and_queue(tmp_path, fixtures):
    store = soundtrap_store(tmp_path, fixtures, SOUNDTRAP[:1])
    out = subprocess.run([*PAMINGEST, "pseudolabel", store, "--labeler", "energy:killer-whale", "--serial"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "scored     31 chunks" in out.stdout and "energy:killer-whale v1" in out.stdout
    q = subprocess.run([*PAMINGEST, "queue", store, "--labeler", "energy:killer-whale", "--json"],
                       capture_output=True, text=True, check=True)
    assert json.loads(q.stdout) == [{"stream": STREAM, "rows": 31, "live": 31, "annotated": 0, "scored": 31,
                                     "failed": 0, "queued": 0}]
    bad = subprocess.run([*PAMINGEST, "pseudolabel", store, "--labeler", "energy:dolphin", "--serial"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown preset 'dolphin'" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.parametrize("subtype,ext", [("PCM_24", ".flac"), ("PCM_32", ".wav")])
def test_review_clips_keep_the_stored_samples_of_wide_streams(tmp_path, subtype, ext):
    """24-bit streams go out as 24-bit FLAC; 32-bit ones (beyond FLAC) as 32-bit WAV; both bit for bit."""
    folder = tmp_path / "rec"
    folder.mkdir()
    rng = np.random.default_rng(0)
    data = (rng.standard_normal(8000 * 25) * 0.1 * 2**31).astype(np.int32)
    if subtype == "PCM_24":
        data = (data >> 8) << 8  # what a 24-bit file holds, left-aligned in an int32
    sf.write(folder / "site_20240101_000000.wav", data, 8000, subtype=subtype)
    store = str(tmp_path / "store")
    pi.ingest(pi.TimestampedFiles(str(folder), "{site}_%Y%m%d_%H%M%S.wav"), store, client="serial")
    pseudolabel(store, "energy:humpback", client="serial")
    batch = review(store, "energy:humpback", tmp_path / "review", n=3, strategy="random")
    [path] = pi.streams(pi.open_store(store))
    ds = dataset(store, path)
    for (_, row), clip in zip(batch.chunks, batch.clips):
        assert clip.endswith(ext)
        got, rate = sf.read(clip, dtype="int32")
        stored = ds["audio"].values[row, : ds["n_valid"].values[row], 0]
        want = stored << 8 if subtype == "PCM_24" else stored  # the store keeps 24-bit right-aligned
        assert rate == 8000
        np.testing.assert_array_equal(got, want)
