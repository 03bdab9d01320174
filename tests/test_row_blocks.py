"""The row-block summary ``ds.pam.window`` finds rows by (``store/row_blocks.py``): every ingest
path keeps it exact, and a window never depends on it being there or right (stores written
before it, rows written by a writer that does not keep it, a summary that disagrees).

Blocks are 8 rows here (1 for the HLS session) instead of 8192, so that the fixtures' streams
(31 rows per 5 min SoundTrap file) span many blocks."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import pamingest as pi
from pamingest.decode.sndfile import SndfileDecoder
from pamingest.store import layout, row_blocks
from pamingest.store.repo import Store

from helpers import HeldRun, assert_stream_matches, by_name, source_samples

STREAM = "files/67416073/8000Hz_1ch_pcm16"
SOUNDTRAP = ["67416073.210610033655.flac", "67416073.210610034155.flac", "67416073.210610034655.flac"]
SUMMARY = ("row_block_start", "row_block_end", "row_block_rows")


@pytest.fixture
def small_blocks(monkeypatch):
    monkeypatch.setattr(layout, "ROW_BLOCK", 8)
    return 8


def add_files(folder, fixtures, names):
    folder.mkdir(exist_ok=True)
    for n in names:
        shutil.copy(fixtures / "soundtrap" / n, folder / n)
    return folder


def ingest(folder, store):
    report = pi.ingest(pi.TimestampedFiles(str(folder), "soundtrap"), store, client="serial")
    assert report.ingested and not report.failed, report.summary()
    return report


def stream(store, path=STREAM, **kwargs):
    return pi.open_store(store, **kwargs)[path].to_dataset()


def assert_summary_exact(store) -> int:
    """Every stream's summary is what its rows give, block for block; returns the blocks checked."""
    checked = 0
    for _, group in layout.iter_streams(Store.open(store).root()):
        first, last, rows = row_blocks.summarise(group["chunk_start"][:], group["n_valid"][:],
                                                 int(group.attrs["sample_rate"]))
        np.testing.assert_array_equal(group["row_block_rows"][:], rows)
        np.testing.assert_array_equal(group["row_block_start"][:], first)
        np.testing.assert_array_equal(group["row_block_end"][:], last)
        assert len(rows) == -(-group["chunk_start"].shape[0] // layout.ROW_BLOCK)
        checked += len(rows)
    return checked


def windows_for(ds, seed: int = 0) -> list[tuple[np.datetime64, np.datetime64]]:
    """Windows straddling every row start, random ones of 0.1-90 s (gaps and the stream's edges
    included), and one over everything."""
    rows = ds.drop_vars(SUMMARY, errors="ignore").pam.rows
    t0, t1 = rows["start"].min(), rows["end"].max()
    out = [(t0 - pd.Timedelta(seconds=30), t1 + pd.Timedelta(seconds=30))]
    for t in rows["start"]:
        out.append((t - pd.Timedelta(seconds=3), t + pd.Timedelta(seconds=7)))
    rng = np.random.default_rng(seed)
    span = (t1 - t0).value + 60 * 10**9
    for a, length in zip(rng.integers(0, span, 30), rng.uniform(0.1, 90, 30)):
        start = t0 - pd.Timedelta(seconds=30) + pd.Timedelta(int(a), "ns")
        out.append((start, start + pd.Timedelta(seconds=float(length))))
    return [(np.datetime64(a.value, "ns"), np.datetime64(b.value, "ns")) for a, b in out]


def assert_windows_agree(store, path=STREAM, summary_used=True) -> int:
    """Windows through the summary equal windows through the whole row index (the path of stores
    without one) and through Dask-backed arrays; returns the windows that held samples."""
    ds = stream(store, path)
    whole = stream(store, path).drop_vars(SUMMARY, errors="ignore")
    dask = stream(store, path, chunks={})
    full = 0
    for k, (a, b) in enumerate(windows_for(ds)):
        got = ds.pam.window(a, b)
        xr.testing.assert_identical(got, whole.pam.window(a, b))
        if k % 10 == 0:
            xr.testing.assert_identical(got, dask.pam.window(a, b))
            # A fresh accessor: its first window reads the summary, then the blocks it points at.
            xr.testing.assert_identical(got, stream(store, path).pam.window(a, b))
        full += got.sizes["time"] > 0
    if summary_used:
        assert ds.pam._index is None and ds.pam._summary, "the windows did not go through the summary"
    assert full > 0
    return full


def test_ingest_keeps_it_exact_through_appends_and_backfills(tmp_path, fixtures, small_blocks):
    store, folder = str(tmp_path / "store"), tmp_path / "rec"
    ingest(add_files(folder, fixtures, SOUNDTRAP[2:]), store)
    assert assert_summary_exact(store) == 4  # 31 rows
    assert_windows_agree(store)
    # A backfill: two earlier files appended after the later one, so rows are not in time order.
    ingest(add_files(folder, fixtures, SOUNDTRAP[:2]), store)
    assert assert_summary_exact(store) == 12
    ds = stream(store)
    starts = ds["chunk_start"].values
    assert starts[31] < starts[30]
    assert_windows_agree(store)
    assert assert_stream_matches(ds, by_name(fixtures / "soundtrap")) == 3
    # Across the seam of files 2 and 3: file 2's last row (292 samples, row 61) starts with file
    # 3's first (row 0), at 03:46:55; both are kept, in start then row order, as the sources hold them.
    w = ds.pam.window("2021-06-10T03:46:50", "2021-06-10T03:47:00")
    a, b = (source_samples(fixtures / "soundtrap" / n) for n in SOUNDTRAP[1:])
    assert len(a) == 300 * 8000 + 292
    np.testing.assert_array_equal(w.values, np.concatenate([a[295 * 8000 : 300 * 8000], b[: 5 * 8000],
                                                            a[300 * 8000 :]]))


def test_dead_rows_of_failed_files_and_retries(tmp_path, fixtures, small_blocks):
    store, folder = str(tmp_path / "store"), add_files(tmp_path / "rec", fixtures, SOUNDTRAP[:1])
    flac = (fixtures / "soundtrap" / SOUNDTRAP[1]).read_bytes()
    damaged = bytearray(flac)  # frames damaged in the middle, the end whole: found only by the decode
    damaged[len(flac) // 2 : len(flac) // 2 + 4096] = bytes(4096)
    (folder / "67416073.210610034155.flac").write_bytes(bytes(damaged))  # header: 31 rows
    report = pi.ingest(pi.TimestampedFiles(str(folder), "soundtrap"), store, client="serial")
    assert report.ingested == 1 and len(report.failed) == 1
    assert assert_summary_exact(store) == 8
    ds = stream(store)
    dead = ds["n_valid"].values == 0
    assert dead.sum() == 31 and np.isnat(ds["row_block_start"].values).any()  # blocks of dead rows only
    assert ds.pam.window("2021-06-10T03:42:00", "2021-06-10T03:46:55").sizes["time"] == 0
    assert_windows_agree(store)
    n_rows = ds.sizes["chunk"]
    for _ in range(2):  # a file that keeps failing is retried into its own dead rows: the stream does not grow
        retry = pi.ingest(pi.TimestampedFiles(str(folder), "soundtrap"), store, client="serial", retry_failed=True)
        assert len(retry.failed) == 1
        assert stream(store).sizes["chunk"] == n_rows and (stream(store)["n_valid"].values == 0).sum() == 31
    assert assert_summary_exact(store) == 8
    assert_windows_agree(store)
    (folder / "67416073.210610034155.flac").write_bytes(flac)  # uploaded again, whole: into the same rows
    fixed = pi.ingest(pi.TimestampedFiles(str(folder), "soundtrap"), store, client="serial")
    assert fixed.ingested == 1 and not fixed.failed
    ds = stream(store)
    assert ds.sizes["chunk"] == n_rows and not (ds["n_valid"].values == 0).any()
    assert assert_summary_exact(store) == 8
    assert_stream_matches(ds, by_name(fixtures / "soundtrap"))
    assert_windows_agree(store)


@pytest.mark.parametrize("same_objects", [False, True], ids=["other-files", "same-files"])
def test_a_raced_run_moved_after_another_keeps_it_exact(tmp_path, fixtures, small_blocks, same_objects):
    """Run A is held after allocating rows; run B lands on the same stream first. A is rebuilt on
    B's commit (its rows moved after B's, or dropped): the summary is B's rows plus A's."""
    store = str(tmp_path / "store")
    a_folder = add_files(tmp_path / "a", fixtures, SOUNDTRAP[1:])
    b_folder = a_folder if same_objects else add_files(tmp_path / "b", fixtures, SOUNDTRAP[:1])
    run_a = HeldRun(pi.TimestampedFiles(str(a_folder), "soundtrap"), store, SndfileDecoder())
    ingest(b_folder, store)
    a = run_a.release()
    assert a.rebuilds >= 1 and not a.failed, a.summary()
    assert a.moved == (0 if same_objects else 2)
    assert assert_summary_exact(store) == (8 if same_objects else 12)
    assert_windows_agree(store)


def test_a_run_rebased_onto_a_labelling_commit_keeps_it_exact(tmp_path, fixtures, small_blocks):
    from pamingest.labeling import pseudolabel

    store = str(tmp_path / "store")
    ingest(add_files(tmp_path / "first", fixtures, SOUNDTRAP[:1]), store)
    run_a = HeldRun(pi.TimestampedFiles(str(add_files(tmp_path / "a", fixtures, SOUNDTRAP[1:])), "soundtrap"),
                    store, SndfileDecoder())
    assert pseudolabel(store, "energy:humpback", client="serial").scored == 31
    a = run_a.release()
    assert a.ingested == 2 and a.rebases >= 1 and a.rebuilds == 0, a.summary()
    assert assert_summary_exact(store) == 12
    assert_windows_agree(store)


def test_a_continued_hls_session_updates_the_rewritten_rows_block(s3, fixtures, tmp_path, monkeypatch):
    """A grown live session rewrites its stored partial last row: one row per block, so that only
    the rewrite (not an appended row) can update that row's block."""
    from pamingest.sources.orcasound import OrcasoundHLS

    monkeypatch.setattr(layout, "ROW_BLOCK", 1)
    bucket, lab, epoch = "audio-orcasound-net", "rpi_orcasound_lab", 1_622_000_000
    segments = [(fixtures / "orcasound" / "hls" / f"live00{i}.ts").read_bytes() for i in range(3)]
    s3.bucket(bucket)
    for n, data in zip((998, 999), segments):
        s3.put(bucket, f"{lab}/hls/{epoch}/live{n}.ts", data)
    src = OrcasoundHLS([lab], storage_options=s3.storage_options)
    store = str(tmp_path / "store")
    assert pi.ingest(src, store, client="serial").rows == 3  # the third row is partial
    path = f"orcasound/{lab}/48000Hz_2ch_pcm16"
    before = stream(store, path)["row_block_end"].values[2]
    assert assert_summary_exact(store) == 3
    s3.put(bucket, f"{lab}/hls/{epoch}/live1000.ts", segments[2])
    assert pi.ingest(src, store, client="serial").ingested == 1
    assert assert_summary_exact(store) == 4
    assert stream(store, path)["row_block_end"].values[2] > before  # row 2 was rewritten, longer
    assert_windows_agree(store, path)


def test_a_store_written_before_the_summary_reads_the_same_and_gets_one(tmp_path, fixtures, small_blocks):
    store, folder = str(tmp_path / "store"), add_files(tmp_path / "rec", fixtures, SOUNDTRAP[1:])
    ingest(folder, store)
    ds = stream(store)
    expected = [ds.pam.window(a, b) for a, b in windows_for(ds)]
    st = Store.open(store)
    session = st.writable()
    group = Store.open_root(session)[STREAM]
    for name in SUMMARY:
        del group[name]
    st.commit(session, "a store as pamingest wrote it before the row-block summary")
    old = stream(store)
    assert not set(SUMMARY) & set(old.variables)
    for (a, b), want in zip(windows_for(ds), expected):
        xr.testing.assert_identical(old.pam.window(a, b), want)
    assert old.pam._summary is False and old.pam._index is not None  # the whole row index, built once
    assert_windows_agree(store, summary_used=False)
    # The next ingest of the stream makes its summary, for every row.
    ingest(add_files(folder, fixtures, SOUNDTRAP[:1]), store)
    assert assert_summary_exact(store) == 12
    assert_windows_agree(store)


def test_rows_written_by_a_writer_that_does_not_keep_it_are_read(tmp_path, fixtures, small_blocks, monkeypatch):
    """Rows appended without updating the summary (an older pamingest) leave their blocks unknown:
    readers read them, and the next ingest summarises them."""
    store, folder = str(tmp_path / "store"), add_files(tmp_path / "rec", fixtures, SOUNDTRAP[:1])
    ingest(folder, store)
    with monkeypatch.context() as m:
        m.setattr(row_blocks, "update", lambda group, rows=(): np.zeros(0, np.int64))
        ingest(add_files(folder, fixtures, SOUNDTRAP[1:2]), store)
    ds = stream(store)
    assert ds.sizes["chunk"] == 62 and ds.sizes["row_block"] == 4  # blocks 3 (partial before) to 7: unknown
    assert_windows_agree(store)
    w = ds.pam.window("2021-06-10T03:42:00", "2021-06-10T03:42:10")  # in the unsummarised rows
    assert w.sizes["time"] == 80000
    ingest(add_files(folder, fixtures, SOUNDTRAP[2:]), store)
    assert assert_summary_exact(store) == 12
    assert_windows_agree(store)


def test_a_summary_that_disagrees_with_its_rows_is_dropped(tmp_path, fixtures, small_blocks):
    store = str(tmp_path / "store")
    ingest(add_files(tmp_path / "rec", fixtures, SOUNDTRAP[:1]), store)
    right = stream(store).pam.window("2021-06-10T03:38:20", "2021-06-10T03:38:30")
    st = Store.open(store)
    session = st.writable()
    group = Store.open_root(session)[STREAM]
    group["row_block_start"][1] = group["row_block_start"][1] - 10**9  # block 1: rows 8-15, 03:38:15 on
    st.commit(session, "a wrong summary")
    ds = stream(store)
    xr.testing.assert_identical(ds.pam.window("2021-06-10T03:38:20", "2021-06-10T03:38:30"), right)
    assert ds.pam._summary is False and ds.pam._index is not None
    assert_windows_agree(store, summary_used=False)


def test_a_dataset_cut_from_a_stream_reads_its_own_rows(tmp_path, fixtures, small_blocks):
    """``ds.isel(chunk=...)`` keeps the stream's summary, which does not describe the cut's rows:
    windows of the cut are its own rows (the summary is dropped, or its blocks disagree)."""
    store, folder = str(tmp_path / "store"), tmp_path / "rec"
    ingest(add_files(folder, fixtures, SOUNDTRAP[2:]), store)
    ingest(add_files(folder, fixtures, SOUNDTRAP[:2]), store)
    ds = stream(store)
    for cut in (slice(0, 40), slice(5, None), slice(1, None), np.arange(92, -1, -1)):
        part = ds.isel(chunk=cut)
        whole = part.drop_vars(SUMMARY)
        for a, b in windows_for(part):
            xr.testing.assert_identical(part.pam.window(a, b), whole.pam.window(a, b))
