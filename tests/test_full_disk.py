"""A local store on a full disk (issue #16 item 3).

The store lives on a small tmpfs mounted for the test (root only: without
the right to mount, the tests skip). A first run lands; a filler file then
leaves the second run too little room, so that it runs out of space while
writing its rows, or later, while writing its commit. What must hold: the
run stops with a one-line error naming the store and the full disk, not a
traceback; no recording is recorded as failed (the disk is the store's
fault); main still holds exactly the first run; and once the filler is
deleted, a re-run completes and the store equals a clean run's.

Recordings: the SoundTrap fixture files (FLAC rows, written by pamingest's
own chunk writer) and generated float WAVs (PCodec rows, written through
zarr). ``pytest -m slow tests/test_full_disk.py`` tries a spread of fill
levels across the rows and every page around the tables and the commit (~1.5 min).

What this found (icechunk 1.1, Python 3.11):
- rows written through zarr (PCodec streams) that the store refused were
  recorded as the file's failure ("write failed: ... No space left on
  device"): a run that could still commit would have marked them failed for good;
- the run's tables (written at landing) and its commit, refused, surfaced as
  Icechunk's own many-line error, which does not name the store; a refused
  row's StoreUnavailableError quoted that error whole;
- the command, stopped by a refused row, sometimes died of SIGABRT on its way
  out (a few runs in a hundred): failed row writes were cancelled, not waited for, and
  Icechunk's thread delivering the last outcome could still be in Python
  when the interpreter finalized (see ``ingest._let_store_threads_leave``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import pamingest as pi
from pamingest.errors import StoreUnavailableError
from pamingest.store.repo import Store

from helpers import tree_digest

SOUNDTRAP = ["67416073.210610033655.flac", "67416073.210610034155.flac", "67416073.210610034655.flac"]
FLOAT_WAVS = ["array_20240301_120000.wav", "array_20240301_120100.wav", "array_20240301_120200.wav"]
# The tmpfs's cap (memory is taken only as it fills): the first run, the rows a failed run
# left behind, and a complete re-run.
DISK_BYTES = 32 * 2**20
PAGE = os.sysconf("SC_PAGE_SIZE")  # tmpfs gives files whole pages


@pytest.fixture
def disk(tmp_path):
    """A tmpfs of ``DISK_BYTES``, mounted for the test and unmounted after it."""
    if os.geteuid() != 0:
        pytest.skip("a full disk needs a tmpfs mounted for the test: run as root")
    mountpoint = tmp_path / "disk"
    mountpoint.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES // 1024}k", "tmpfs", str(mountpoint)],
                             capture_output=True, text=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs to fill: {mounted.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        if subprocess.run(["umount", str(mountpoint)], capture_output=True).returncode:
            # Still busy (a handle left open on it): detached now, freed when the last one closes.
            subprocess.run(["umount", "-l", str(mountpoint)], check=True)


def free_bytes(path: Path) -> int:
    fs = os.statvfs(path)
    return fs.f_bavail * fs.f_frsize


def leave_free(disk: Path, n: int) -> Path:
    """Fill ``disk`` with a filler file up to ``n`` bytes free (whole pages); returns the filler."""
    filler = disk / "filler"
    with open(filler, "wb") as fh:
        os.posix_fallocate(fh.fileno(), 0, free_bytes(disk) - n)
    assert n <= free_bytes(disk) < n + PAGE
    return filler


def pages(files) -> int:
    """Bytes ``files`` take on a tmpfs."""
    return sum(-(-f.stat().st_size // PAGE) * PAGE for f in files)


def store_files(store: Path) -> dict[str, Path]:
    return {str(p.relative_to(store)): p for p in store.rglob("*") if p.is_file()}


@dataclass
class Recordings:
    """A first folder (one recording) and more (two), outside the tmpfs, and what a clean store of
    both holds: its digest, and the bytes the second run takes on a tmpfs, in chunks (its rows, and
    tables too large to inline) written before its commit, and in the commit (manifests, snapshot,
    transaction log)."""

    first: Path
    more: Path
    template: str
    both: dict
    chunk_bytes: int
    commit_bytes: int

    def source(self, folder: Path):
        return pi.TimestampedFiles(str(folder), self.template)

    def ingest(self, folder: Path, store, client="serial"):
        return pi.ingest(self.source(folder), str(store), client=client, row_seconds=2)


def make_recordings(kind: str, base: Path, fixtures: Path) -> Recordings:
    first, more = base / "first", base / "more"
    first.mkdir()
    more.mkdir()
    if kind == "flac":
        names, template = SOUNDTRAP, "soundtrap"
        for name in names:
            shutil.copy(fixtures / "soundtrap" / name, base / name)
    else:  # float samples: stored with PCodec, whose rows zarr writes
        import soundfile as sf

        names, template = FLOAT_WAVS, "{site}_%Y%m%d_%H%M%S.wav"
        rng = np.random.default_rng(5)
        for name in names:
            sf.write(base / name, (rng.standard_normal((60 * 8000, 1)) * 0.1).astype(np.float32), 8000,
                     subtype="FLOAT")
    (base / names[0]).rename(first / names[0])
    for name in names[1:]:
        (base / name).rename(more / name)
    rec = Recordings(first, more, template, {}, 0, 0)
    clean = base / "clean"
    rec.ingest(first, clean)
    before = store_files(clean)
    report = rec.ingest(more, clean)
    assert report.ingested == 2 and not report.failed, report.summary()
    added = [p for name, p in store_files(clean).items() if name not in before]
    rec.chunk_bytes = pages(p for p in added if p.parts[len(clean.parts)] == "chunks")
    rec.commit_bytes = pages(p for p in added if p.parts[len(clean.parts)] != "chunks")
    rec.both = tree_digest(pi.open_store(str(clean)))
    return rec


@pytest.fixture(scope="module")
def recordings(tmp_path_factory, fixtures):
    made: dict[str, Recordings] = {}

    def get(kind: str) -> Recordings:
        if kind not in made:
            made[kind] = make_recordings(kind, tmp_path_factory.mktemp(kind), fixtures)
        return made[kind]

    return get


def first_run(rec: Recordings, store: Path) -> tuple[str, dict, int]:
    """The first run on the tmpfs: its snapshot, its digest, the bytes it took."""
    free = free_bytes(store.parent)
    report = rec.ingest(rec.first, store)
    assert report.ingested == 1 and not report.failed, report.summary()
    return report.snapshot_id, tree_digest(pi.open_store(str(store))), free - free_bytes(store.parent)


def cli_ingest(rec: Recordings, folder: Path, store: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pamingest.cli", "ingest", "files", str(folder), "--template",
                           rec.template, "--store", str(store), "--serial", "--row-seconds", "2", "--no-progress"],
                          capture_output=True, text=True, timeout=120)


STAGES = {"refused the write": "rows", "refused the run's tables": "tables", "refused the commit": "commit"}


def stage_refused(message: str, store: Path) -> str:
    """Which of the run's writes the full disk refused, from the error message, after checking that
    it is one line naming the store and the full disk."""
    assert "\n" not in message.strip(), f"not one line:\n{message}"
    assert "No space left on device" in message and str(store) in message, message
    stages = [stage for text, stage in STAGES.items() if text in message]
    assert len(stages) == 1, message
    return stages[0]


def assert_at_first_run_then_completes(rec: Recordings, store: Path, filler: Path, snapshot: str,
                                       first: dict) -> None:
    """Main is where the first run left it; with room again, a re-run stores everything."""
    assert Store.open(str(store)).tip() == snapshot
    assert tree_digest(pi.open_store(str(store))) == first
    filler.unlink()
    report = rec.ingest(rec.more, store)
    assert report.ingested == 2 and not report.failed, report.summary()
    assert tree_digest(pi.open_store(str(store))) == rec.both


@pytest.mark.parametrize("kind,where,how", [
    ("flac", "rows", "cli"),
    ("flac", "commit", "api"),
    ("pcodec", "rows", "api"),
])
def test_a_full_disk_stops_the_run_and_the_store_stays_at_its_last_snapshot(disk, recordings, kind, where, how):
    rec = recordings(kind)
    store = disk / "store"
    snapshot, first, first_bytes = first_run(rec, store)
    if where == "rows":  # room for about half of the second run's rows
        assert first_bytes < rec.chunk_bytes
        filler = leave_free(disk, first_bytes)
    else:  # room for every row and table, not for the commit
        filler = leave_free(disk, rec.chunk_bytes + rec.commit_bytes // 2 // PAGE * PAGE)
    if how == "api":
        with pytest.raises(StoreUnavailableError) as raised:
            rec.ingest(rec.more, store)
        message = str(raised.value)
    else:
        done = cli_ingest(rec, rec.more, store)
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        message = done.stderr.strip()
        assert message.startswith("pamingest: error: "), message
    assert stage_refused(message, store) == where
    assert_at_first_run_then_completes(rec, store, filler, snapshot, first)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["flac", "pcodec"])
def test_a_full_disk_at_any_point_of_a_run(disk, recordings, kind):
    """Fill levels from none to enough, every page across the tables' and the commit's writes: each
    run lands whole or stops with the one-line error, main at the first run; a re-run completes."""
    rec = recordings(kind)
    store = disk / "store"
    levels = sorted({*range(0, rec.chunk_bytes, rec.chunk_bytes // 12 // PAGE * PAGE),
                     *range(rec.chunk_bytes - 2 * PAGE, rec.chunk_bytes + rec.commit_bytes + 3 * PAGE, PAGE)})
    outcomes = []
    for free in levels:
        shutil.rmtree(store, ignore_errors=True)
        snapshot, first, _ = first_run(rec, store)
        filler = leave_free(disk, free)
        try:
            report = rec.ingest(rec.more, store, client="threads")
        except StoreUnavailableError as exc:
            outcomes.append(stage_refused(str(exc), store))
            assert_at_first_run_then_completes(rec, store, filler, snapshot, first)
        else:
            outcomes.append("landed")
            assert report.ingested == 2 and not report.failed, f"{free} bytes free: {report.summary()}"
            assert tree_digest(pi.open_store(str(store))) == rec.both
            filler.unlink()
    # The levels reach every stage: rows refused, the commit refused, and enough room (tables: a page or two).
    assert {"rows", "commit", "landed"} <= set(outcomes), outcomes


def test_an_attach_on_a_full_disk_stops_with_one_line_and_main_stays(disk, recordings, fixtures):
    """Annotate (``Store.update``: its changes, then its commit) on a disk with no room at all: one
    error naming the store, main unchanged; with room again the same table attaches."""
    from pamingest.annotations import Recording, attach

    rec = recordings("flac")
    store = disk / "store"
    snapshot, first, _ = first_run(rec, store)
    # Enough selections that the event arrays are written to storage as they are set (Icechunk inlines
    # only small chunks): the full disk refuses the write's changes, before its commit.
    table = disk.parent / "calls.selections.txt"
    head = "Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tLow Freq (Hz)\tHigh Freq (Hz)\tAnnotation\n"
    table.write_text(head + "".join(f"{k + 1}\tSpectrogram 1\t1\t{k * 0.1:.1f}\t{k * 0.1 + 0.05:.2f}\t100\t900\tcall\n"
                                    for k in range(2000)))
    filler = leave_free(disk, 0)
    with pytest.raises(StoreUnavailableError) as raised:
        attach(str(store), [table], "raven", recording=Recording(SOUNDTRAP[0]))
    message = str(raised.value)
    assert "\n" not in message and "No space left on device" in message and str(store) in message, message
    assert Store.open(str(store)).tip() == snapshot and tree_digest(pi.open_store(str(store))) == first
    filler.unlink()
    report = attach(str(store), [table], "raven", recording=Recording(SOUNDTRAP[0]))
    assert report.snapshot_id and not report.failed, report.summary()

