"""The store layer: Icechunk behaviour pamingest relies on, commits that land under concurrent writers,
and ingest runs that race each other on one stream."""

from __future__ import annotations

import multiprocessing
import pickle
import shutil

import numpy as np
import pytest
import zarr

import pamingest as pi
from pamingest.decode.sndfile import SndfileDecoder
from pamingest.errors import ConcurrentWriteError
from pamingest.store.repo import RetryPolicy, Store

from helpers import HeldRun, assert_stream_matches, by_name

STREAM = "files/67416073/8000Hz_1ch_pcm16"
SOUNDTRAP = ["67416073.210610033655.flac", "67416073.210610034155.flac", "67416073.210610034655.flac"]


def small_store(path) -> Store:
    st = Store.open(str(path), create=True)
    session = st.writable()
    root = st.open_root(session)
    for name in ("a", "b"):
        g = root.require_group(name)
        g.create_array("audio", shape=(0, 4), chunks=(1, 4), dtype="int16", fill_value=0)
        g.create_array("n", shape=(8,), chunks=(4,), dtype="int32", fill_value=0)
    st.commit(session, "schema")
    return st


# ---------------------------------------------------------------- Icechunk behaviour we rely on

def test_forks_taken_with_uncommitted_growth_merge_back(tmp_path):
    """Store.fork copies a session with its uncommitted array growth (Icechunk 1.x's own fork()
    refuses that); workers write past the old end through pickled forks; merging the forks back
    repeats the growth harmlessly and the commit holds every row."""
    st = small_store(tmp_path / "s")
    session = st.writable()
    st.open_root(session)["a/audio"].resize((3, 4))
    fork_bytes = pickle.dumps(Store.fork(session))
    forks = []
    for row in range(3):
        fork = pickle.loads(fork_bytes)
        zarr.open_array(fork.store, path="a/audio", mode="r+")[row] = np.full(4, row + 1, dtype="int16")
        forks.append(pickle.loads(pickle.dumps(fork)))
    session.merge(*forks)
    st.open_root(session)["a/n"][0] = 3
    assert st.commit(session, "rows").snapshot_id
    root = st.root()
    assert root["a/audio"][:].tolist() == [[1] * 4, [2] * 4, [3] * 4]
    assert root["a/n"][0] == 3


def test_disjoint_writers_rebase_and_conflicting_ones_reapply(tmp_path):
    st = small_store(tmp_path / "s")
    # Two sessions from one tip changing different arrays: the second rebases, nothing is redone.
    first, second = st.writable(), st.writable()
    st.open_root(first)["a/n"][0:4] = 1
    st.open_root(second)["b/n"][0:4] = 2
    st.commit(first, "first")
    landed = st.commit(second, "second")
    assert (landed.rebases, landed.rebuilds) == (1, 0)
    assert st.root()["a/n"][:4].tolist() == [1] * 4 and st.root()["b/n"][:4].tolist() == [2] * 4

    # One chunk written by both: the rebase refuses; without a rebuild the write fails cleanly...
    first, second = st.writable(), st.writable()
    st.open_root(first)["a/n"][0] = 10
    st.open_root(second)["a/n"][1] = 20
    st.commit(first, "first")
    with pytest.raises(ConcurrentWriteError, match="Chunk double update at /a/n"):
        st.commit(second, "second")
    assert st.root()["a/n"][:2].tolist() == [10, 1]

    # ... and Store.update re-applies its intent on the new tip, reading what the other wrote.
    calls = []

    def add_one(root):
        calls.append(1)
        if len(calls) == 1:  # another writer commits between this one's start and its commit
            st.update(lambda r: r["a/n"].__setitem__(0, int(r["a/n"][0]) + 100), "other")
        root["a/n"][0] = int(root["a/n"][0]) + 1
        return int(root["a/n"][0])

    commit = st.update(add_one, "add one")
    assert commit.rebuilds == 1 and commit.value == 111 and st.root()["a/n"][0] == 111


def _commit_many(url: str, options: dict, name: str, n: int, queue) -> None:
    st = Store.open(url, options)
    landed = []
    for k in range(n):
        commit = st.update(lambda root: root[name].__setitem__(k, k + 1), f"{name} {k}")
        landed.append(commit.snapshot_id)
    queue.put(landed)


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_concurrent_commits_from_processes_all_land(tmp_path, s3, kind):
    """Local folders have no conditional writes: without the commit lock two processes can both
    move main from the same parent and one commit vanishes. On S3 the branch moves by a conditional
    write. Either way every commit must be in main's history."""
    if kind == "local":
        url, options = str(tmp_path / "s"), {}
    else:
        url, options = f"{s3.bucket('stores')}/commits", {"endpoint_url": s3.endpoint}
    st = Store.open(url, options, create=True)
    session = st.writable()
    for k in range(4):
        st.open_root(session).create_array(f"w{k}", shape=(12,), chunks=(12,), dtype="int32", fill_value=0)
    st.commit(session, "writers' arrays")
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_commit_many, args=(url, options, f"w{k}", 12, queue)) for k in range(4)]
    for p in procs:
        p.start()
    landed = [s for _ in procs for s in queue.get(timeout=120)]
    for p in procs:
        p.join(60)
    assert all(p.exitcode == 0 for p in procs)
    history = {snap.id for snap in st.history(st.tip(), 10_000)}
    assert len(landed) == 48 and set(landed) <= history
    root = st.root()
    for k in range(4):  # one chunk per writer, each rewritten 12 times: last value wins, none lost
        assert root[f"w{k}"][:].tolist() == list(range(1, 13))


def test_a_writer_that_keeps_losing_gives_up_without_writing(tmp_path):
    st = small_store(tmp_path / "s")
    st.retry = RetryPolicy(timeout=0.5, first_delay=0.001)

    def always_raced(root):
        st2 = Store.open(st.url)
        st2.update(lambda r: r["a/n"].__setitem__(0, int(r["a/n"][0]) + 1), "other")
        root["a/n"][0] = -1

    with pytest.raises(ConcurrentWriteError, match="kept moving"):
        st.update(always_raced, "loser")
    assert st.root()["a/n"][0] > 0


# ---------------------------------------------------------------- ingest runs racing on one stream

def folder_of(tmp_path, fixtures, names, sub):
    folder = tmp_path / sub
    folder.mkdir()
    for n in names:
        shutil.copy(fixtures / "soundtrap" / n, folder / n)
    return folder


@pytest.mark.parametrize("same_objects", [False, True], ids=["other-files", "same-files"])
def test_a_run_that_raced_another_on_its_stream_reallocates_after_its_rows(tmp_path, fixtures, same_objects):
    """Run A plans, allocates and writes rows for two files, then run B lands in the same stream
    first (another file of the stream, or the very same two objects). A's commit conflicts (both
    grew the stream): its rows are moved after B's, copied as encoded (nothing decoded twice), or,
    for objects B ingested, dropped. Each object is in the store once, with exact rows, and no row
    is left dead."""
    store = str(tmp_path / "store")
    a_folder = folder_of(tmp_path, fixtures, SOUNDTRAP[1:], "a")
    b_folder = a_folder if same_objects else folder_of(tmp_path, fixtures, SOUNDTRAP[:1], "b")
    run_a = HeldRun(pi.TimestampedFiles(str(a_folder), "soundtrap"), store, SndfileDecoder())
    b = pi.ingest(pi.TimestampedFiles(str(b_folder), "soundtrap"), store, client="serial")
    a = run_a.release()
    assert b.ingested == (2 if same_objects else 1) and b.rounds == 1, b.summary()
    assert a.rebuilds >= 1 and a.rounds == 1 and not a.failed and not a.deferred, a.summary()
    assert run_a.decoder.reads == 2  # one task per file, never decoded again
    if same_objects:  # a genuine conflict: exactly one copy, B's
        assert (a.ingested, a.skipped, a.commits, a.moved) == (0, 2, 0, 0), a.summary()
    else:
        assert (a.ingested, a.skipped, a.commits, a.moved) == (2, 0, 1, 2), a.summary()
    ds = pi.open_store(store)[STREAM].to_dataset()
    urls = [str(u).rsplit("/", 1)[-1] for u in ds["file_url"].values]
    assert sorted(urls) == sorted(SOUNDTRAP[1:] if same_objects else SOUNDTRAP)
    assert len(set(ds["file_url"].values.tolist())) == len(urls)
    assert (ds["n_valid"].values > 0).all() and ds.sizes["chunk"] == 31 * len(urls)
    assert assert_stream_matches(ds, by_name(fixtures / "soundtrap")) == len(urls)


def test_disjoint_runs_and_labelling_rebase_without_rewriting(tmp_path, fixtures):
    """Run A writes one stream while a pseudolabel run and run B (another stream) commit: A's
    commit rebases onto both (nothing decoded twice), and the rows B's labeller did not know of
    are queued."""
    store = str(tmp_path / "store")
    first = folder_of(tmp_path, fixtures, SOUNDTRAP[:1], "first")
    pi.ingest(pi.TimestampedFiles(str(first), "soundtrap"), store, client="serial")  # the stream exists
    run_a = HeldRun(pi.TimestampedFiles(str(folder_of(tmp_path, fixtures, SOUNDTRAP[1:], "a")), "soundtrap"),
                    store, SndfileDecoder())
    from pamingest.labeling import pseudolabel, queue

    labelled = pseudolabel(store, "energy:humpback", client="serial")  # creates its arrays on A's stream
    other = pi.ingest(pi.TimestampedFiles(str(fixtures / "songmeter" / "S4A03895"), "songmeter"), store,
                      client="serial")
    a = run_a.release()
    assert labelled.scored == 31 and other.ingested == 48
    assert a.ingested == 2 and a.rebases >= 1 and a.rebuilds == 0 and a.rounds == 1, a.summary()
    [q] = queue(store, "energy:humpback", streams=[STREAM])
    assert (q.scored, q.queued) == (31, 62)  # A's rows grew the labeller's arrays: queued, not lost
    tree = pi.open_store(store)
    ds = tree[STREAM].to_dataset()  # one consistent Dataset: every per-row array has every row
    assert ds.sizes["chunk"] == 93 and ds.pam.scores("energy:humpback").shape == (93, 1)


def test_stream_preparation_commits_only_what_changed(tmp_path, fixtures):
    """Streams are created, and sources' attributes written, in a commit of their own, once: the
    same attributes again (nested ones included, as JSON gives them back) make no commit."""
    from pamingest.decode.sndfile import probe
    from pamingest.store import layout
    from pamingest.store.rows import prepare_streams

    st = Store.open(str(tmp_path / "s"), create=True)
    info = probe(str(fixtures / "soundtrap" / SOUNDTRAP[0]))
    spec = layout.StreamSpec(STREAM, "files", "67416073", 8000, 1, "int16", 16, 80000)
    attrs = {STREAM: {"latitude": 36.7, "depth_m": None, "instrument": {"model": "ST500", "gain": [1, 2]}}}
    first = prepare_streams(st, {STREAM: (spec, info)}, False, attrs)
    assert first.snapshot_id and first.value == [STREAM]
    again = prepare_streams(st, {STREAM: (spec, info)}, False, attrs)
    assert again.snapshot_id is None and again.value == []
    changed = prepare_streams(st, {STREAM: (spec, info)}, False, {STREAM: {"latitude": 36.8}})
    assert changed.snapshot_id and st.root()[STREAM].attrs["latitude"] == 36.8
    with pytest.raises(pi.ConfigError, match="use --row-seconds 10"):
        prepare_streams(st, {STREAM: (layout.StreamSpec(STREAM, "files", "67416073", 8000, 1, "int16", 16, 8000),
                                      info)}, True, {})


# ---------------------------------------------------------------- garbage collection

def _ingest_with_a_failed_file(folder, store, monkeypatch):
    """Ingest the SoundTrap folder; the first file's 5th row fails to encode after 4 of its rows
    were stored in the run's fork: data no snapshot will reference. (The failure is injected:
    a FLAC encoder that fails cannot be produced with real input.)"""
    from pamingest.store.codec import FlacCodec

    real, calls = FlacCodec.encode_samples, []

    def encode(self, samples):
        calls.append(1)
        if len(calls) == 5:
            raise OSError("disk full (injected)")
        return real(self, samples)

    with monkeypatch.context() as m:
        m.setattr(FlacCodec, "encode_samples", encode)
        report = pi.ingest(pi.TimestampedFiles(str(folder), "soundtrap"), store, client="serial", row_seconds=10)
    assert report.ingested == 2 and len(report.failed) == 1
    return report


def test_gc_deletes_the_rows_of_failed_files_and_nothing_readers_need(tmp_path, fixtures, monkeypatch):
    folder = fixtures / "soundtrap"
    store = str(tmp_path / "store")
    _ingest_with_a_failed_file(folder, store, monkeypatch)
    st = Store.open(store)
    tip = st.tip()
    kept = st.collect_garbage()  # default grace: everything here is minutes old
    assert kept.chunks == 0 and kept.bytes == 0
    dry = st.collect_garbage(grace_seconds=0, dry_run=True)
    assert dry.chunks >= 4 and dry.bytes > 0  # the failed file's rows stored before it failed
    done = st.collect_garbage(grace_seconds=0)
    assert (done.chunks, done.bytes) == (dry.chunks, dry.bytes) and not done.dry_run
    assert st.collect_garbage(grace_seconds=0).chunks == 0
    assert Store.open(store).tip() == tip  # gc commits nothing
    ds = pi.open_store(store)[STREAM].to_dataset()
    assert assert_stream_matches(ds, by_name(folder)) == 2  # every stored row reads bit for bit


def test_gc_expires_old_history_on_request_and_removes_legacy_run_branches(tmp_path, fixtures):
    import datetime as dt

    folder = fixtures / "soundtrap"
    store = str(tmp_path / "store")
    first = tmp_path / "first"
    first.mkdir()
    shutil.copy(folder / SOUNDTRAP[0], first)
    pi.ingest(pi.TimestampedFiles(str(first), "soundtrap"), store, client="serial")
    st = Store.open(store)
    old = st.tip()
    st.create_branch("pamingest-run-0123456789ab", old)  # left by a killed run of an older version
    st.create_branch("review-2026", old)  # a user's own: never touched
    pi.ingest(pi.TimestampedFiles(str(folder), "soundtrap"), store, client="serial")
    now = dt.datetime.now(dt.timezone.utc)
    dry = st.collect_garbage(grace_seconds=0, expire_before=now, dry_run=True)
    assert dry.snapshots_expired >= 1 and dry.branches == ["pamingest-run-0123456789ab"]
    st.session(old)  # still there after a dry run
    done = st.collect_garbage(grace_seconds=0, expire_before=now)
    assert done.snapshots_expired >= 1 and done.branches == ["pamingest-run-0123456789ab"]
    assert sorted(st.repo.list_branches()) == ["main", "review-2026"]
    ds = pi.open_store(store)[STREAM].to_dataset()
    assert assert_stream_matches(ds, by_name(folder)) == 4  # the copy in first/ and the three


def test_gc_command_line(tmp_path, fixtures, monkeypatch, capsys):
    import json

    from pamingest.cli import main

    folder = fixtures / "soundtrap"
    store = str(tmp_path / "store")
    _ingest_with_a_failed_file(folder, store, monkeypatch)

    def gc(*flags):
        assert main(["gc", store, *flags]) == 0
        return capsys.readouterr().out

    assert json.loads(gc("--json"))["chunks"] == 0  # a week of grace by default
    dry = json.loads(gc("--grace-hours", "0", "--dry-run", "--json"))
    assert dry["dry_run"] and dry["chunks"] >= 4
    assert gc("--grace-hours", "0").startswith(f"deleted {dry['chunks']} chunks")
    assert json.loads(gc("--grace-hours", "0", "--json"))["chunks"] == 0


def _rows(store: str) -> dict:
    """Everything a reader sees of the SoundTrap stream, rows in time order."""
    ds = pi.open_store(store)[STREAM].to_dataset()
    order = np.argsort(ds["chunk_start"].values, kind="stable")
    urls = ds["file_url"].values
    return {"audio": ds["audio"].values[order], "n_valid": ds["n_valid"].values[order],
            "chunk_start": ds["chunk_start"].values[order],
            "files": [urls[i] for i in ds["file_index"].values[order]]}


def test_an_ingest_killed_at_any_moment_leaves_main_whole_and_the_next_run_completes(tmp_path, fixtures):
    """SIGKILL of the ingest command (the client, serial) at moments spread over its run (it
    takes ~0.8 s: imports, listing, probes, writes, commit): main holds a whole run or none,
    never part of one; the next run completes, and the store reads exactly as a run that was
    never killed."""
    import signal
    import subprocess
    import sys
    import time

    folder = fixtures / "soundtrap"
    clean = str(tmp_path / "clean")
    pi.ingest(pi.TimestampedFiles(str(folder), "soundtrap"), clean, client="serial", row_seconds=2)
    want = _rows(clean)

    def command(store):
        return [sys.executable, "-c", "import sys; from pamingest.cli import main; sys.exit(main(sys.argv[1:]))",
                "ingest", "files", str(folder), "--template", "soundtrap", "--store", store, "--serial",
                "--row-seconds", "2", "--no-progress"]

    landed = []
    for k, delay in enumerate((0.3, 0.5, 0.7, 0.9, 1.1, 1.4)):
        store = str(tmp_path / f"store-{k}")
        proc = subprocess.Popen(command(store), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        try:
            seen = _rows(store)
        except (FileNotFoundError, KeyError, pi.PamIngestError):
            seen = None  # killed before the store or its stream existed
        whole = seen is not None and len(seen["audio"]) > 0
        landed.append(whole)
        if whole:  # a run is in main whole, or none is
            for key in want:
                np.testing.assert_array_equal(seen[key], want[key], err_msg=f"{key}, killed at {delay} s")
        finished = subprocess.run(command(store), capture_output=True, text=True)
        assert finished.returncode == 0, finished.stderr
        got = _rows(store)
        for key in want:
            np.testing.assert_array_equal(got[key], want[key], err_msg=f"{key} after a kill at {delay} s")
    assert not all(landed)  # some kills came before the commit
