"""Ingest a source into a store: list -> probe -> plan -> allocate -> write -> land.

Each stage is a small function over plain records; ``ingest`` runs them in
rounds:

1. ``list_new``: list the source (partition by partition, in parallel) and
   keep only objects the store has not seen (URL + ETag/size); changed ETags
   are reported instead of ingested twice;
2. ``probe`` (executor): each new object's header, through the source's
   decoder (``pamingest.decode``); unreadable objects become ``rejected``;
3. ``plan`` (client): the decoder turns probed files into units (a file, or
   a run of HLS segments) against the store at the run's base snapshot;
   missing streams are created empty in a small commit of their own
   (``store.rows.prepare_streams``);
4. ``allocate`` (client, ``store.rows``): rows per stream, deterministic
   (start time, then URL), and a fork per stream for the workers;
5. ``write`` (executor): decode + encode + write row ranges, each task in
   its own fork, streaming its input (memory is one row batch);
6. ``land`` (client, ``store.rows``): merge the forks of the units that
   decoded completely, write the tables and commit on ``main``, rebased onto
   other writers' commits. In a stream another run appended to meanwhile,
   files that run ingested are dropped, file units are moved after its rows
   (their encoded rows copied), and units continuing stored rows (growing
   HLS sessions) are *deferred* to another round on top of that run's rows.

Readers of ``main`` never see a half-written run; a crash leaves ``main``
where it was (plus, at most, the empty groups of new streams), and the next
run converges to the same store.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import functools
import logging
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np

from .decode.base import AudioInfo, Decoder, PlanContext, Unit, UnitFile
from .errors import PROGRAMMING_ERRORS, ConfigError, DecodeError, StoreUnavailableError, first_line
from .executor import executor_for
from .fsutil import describe_read_error, fetch_pool, prefetch_members
from .registry import build
from .sources.base import RejectedFile, Source, SourceFile, list_source
from .store import layout
from .store.catalog import KnownFile, read_catalog
from .store.repo import Store, StoreLocation, load_session
from .store.rows import Landing, allocate, land, prepare_streams, row_writer
from .store import virtual as virtual_refs
from . import quality
from .resample import full_scale
from .timing import samples_per_row, unsupported_time

if TYPE_CHECKING:
    import zarr

log = logging.getLogger(__name__)
DEFAULT_ROW_SECONDS = 10.0
# Rounds a run takes at most when other runs keep writing to its streams.
MAX_ROUNDS = 5


@dataclass
class FailedFile:
    url: str
    reason: str


@dataclass
class IngestReport:
    """What one run did. ``summary()`` is what the CLI prints."""

    store: str
    run_id: str
    snapshot_id: str | None = None
    listed: int = 0
    skipped: int = 0
    ingested: int = 0
    rows: int = 0
    audio_seconds: float = 0.0
    bytes_read: int = 0
    failed: list[FailedFile] = field(default_factory=list)
    partial: list[FailedFile] = field(default_factory=list)  # ingested up to where they end (cut short)
    changed: list[FailedFile] = field(default_factory=list)
    deferred: list[FailedFile] = field(default_factory=list)
    copied: list[FailedFile] = field(default_factory=list)  # a virtual run's files that could not be referenced
    outside_range: int = 0
    streams: list[str] = field(default_factory=list)
    commits: int = 0
    rebases: int = 0
    rebuilds: int = 0
    moved: int = 0
    rounds: int = 0
    elapsed_seconds: float = 0.0
    dashboard_link: str | None = None

    @property
    def committed(self) -> bool:
        return self.commits > 0

    def summary(self) -> str:
        lines = [
            f"store      {self.store}",
            f"listed     {self.listed} objects; {self.skipped} already in the store"
            + (f"; {self.outside_range} outside the time range" if self.outside_range else ""),
            f"ingested   {self.ingested} files, {self.rows} rows, "
            f"{self.audio_seconds / 3600:.3f} h of audio, {self.bytes_read / 1e6:.1f} MB read",
            f"failed     {len(self.failed)} files",
        ]
        lines += [f"  - {f.url}: {f.reason}" for f in self.failed]
        if self.partial:
            lines.append(f"partial    {len(self.partial)} of the ingested files end before their headers say: "
                         "stored up to there")
            lines += [f"  - {f.url}: {f.reason}" for f in self.partial]
        if self.changed:
            lines.append(f"changed    {len(self.changed)} objects differ from the ingested version (not re-ingested)")
            lines += [f"  - {f.url}: {f.reason}" for f in self.changed]
        if self.copied:
            lines.append(f"copied     {len(self.copied)} files could not be ingested by reference (--virtual): "
                         "their samples were copied")
            lines += [f"  - {f.url}: {f.reason}" for f in self.copied[:20]]
        if self.deferred:
            lines.append(f"deferred   {len(self.deferred)} files not ingested: other runs kept writing their "
                         "streams; the next run takes them")
            lines += [f"  - {f.url}: {f.reason}" for f in self.deferred[:20]]
        lines.append(f"streams    {', '.join(self.streams) or '-'}")
        landed = "" if self.committed else " (nothing new: no commit)"
        if self.rebases or self.rebuilds:
            landed += (f" ({self.rebases} rebases and {self.rebuilds} rebuilds onto other writers' commits"
                       + (f"; {self.moved} files' rows moved after another run's" if self.moved else "") + ")")
        lines.append(f"snapshot   {self.snapshot_id or '-'}{landed}")
        lines.append(f"elapsed    {self.elapsed_seconds:.1f} s")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {
            "store": self.store, "run_id": self.run_id, "snapshot_id": self.snapshot_id,
            "listed": self.listed, "skipped": self.skipped, "ingested": self.ingested,
            "rows": self.rows, "audio_hours": self.audio_seconds / 3600, "bytes_read": self.bytes_read,
            "failed": [{"url": f.url, "reason": f.reason} for f in self.failed],
            "partial": [{"url": f.url, "reason": f.reason} for f in self.partial],
            "changed": [{"url": f.url, "reason": f.reason} for f in self.changed],
            "deferred": [{"url": f.url, "reason": f.reason} for f in self.deferred],
            "copied": [{"url": f.url, "reason": f.reason} for f in self.copied],
            "outside_range": self.outside_range, "streams": self.streams, "commits": self.commits,
            "rebases": self.rebases, "rebuilds": self.rebuilds, "moved": self.moved, "rounds": self.rounds,
            "elapsed_seconds": self.elapsed_seconds,
        }


# ---------------------------------------------------------------- worker tasks
# Plain top-level functions: they are pickled to Dask workers.

def probe_file(file: SourceFile, decoder: Decoder, storage_options: dict) -> AudioInfo | str:
    """Header of one object, or the reason it cannot be read."""
    try:
        return decoder.probe(file, storage_options)
    except DecodeError as exc:
        return str(exc)
    except PROGRAMMING_ERRORS:
        raise
    except Exception as exc:  # noqa: BLE001 - a bad file must never stop the run
        return f"cannot read: {describe_read_error(exc)}"


# Files one probe task takes at most: a task per file costs the scheduler more than
# an HLS segment's probe, and a batch lets a decoder fetch its files concurrently.
PROBE_BATCH = 32


def probe_files(files: list[SourceFile], decoder: Decoder, storage_options: dict) -> list[AudioInfo | str]:
    """``probe_file`` for a batch of files, in order: the decoder's ``probe_many`` when it has one
    (results are AudioInfo or DecodeError), else the files probed in the process's read threads
    (``fsutil.fetch_pool``: probes mostly wait on header reads)."""
    many = getattr(decoder, "probe_many", None)
    if many is None:
        if len(files) == 1:
            return [probe_file(files[0], decoder, storage_options)]
        return list(fetch_pool().map(lambda f: probe_file(f, decoder, storage_options), files))
    try:
        results = many(files, storage_options)
    except PROGRAMMING_ERRORS:
        raise
    except Exception as exc:  # noqa: BLE001 - the batch failed as a whole: probe its files one by one
        log.debug("probe_many failed (%s); probing one by one", exc)
        return [probe_file(f, decoder, storage_options) for f in files]
    return [str(r) if isinstance(r, DecodeError) else r for r in results]


def _probe_task(batch: list[SourceFile], decoder: Decoder, storage_options: dict) -> list[AudioInfo | str]:
    return probe_files(batch, decoder, storage_options)


@dataclass(frozen=True)
class WriteTask:
    """Unit samples ``[first_sample, stop)`` -> the store rows ``rows`` (one per row)."""

    decoder: Decoder
    source: Any
    array_path: str
    row_samples: int
    first_sample: int
    stop: int
    rows: tuple[int, ...]
    quality: bool = True  # compute each row's quality statistics (pamingest.quality)
    # A virtual stream's unit: its rows are set as references to these byte ranges, not written
    # (store/virtual.py); the samples are still read when their quality statistics are wanted.
    ref: virtual_refs.ObjectRef | None = None
    # Further one-row units written by the same task, ``(source, first_sample, stop, rows)`` each (see
    # ``SMALL_UNITS_PER_TASK``); their rows follow the first unit's in ``stats``.
    more: tuple[tuple[Any, int, int, tuple[int, ...]], ...] = ()

    def segments(self):
        yield self.source, self.first_sample, self.stop, self.rows
        yield from self.more

    @property
    def n_rows(self) -> int:
        return len(self.rows) + sum(len(m[3]) for m in self.more)


# One-row units (a call, a clip) are written up to this many to a task: a task per 0.1 s file spent
# more on its fork, its array and its writes' thread hops than on the audio (benchmarks/small_objects.py).
SMALL_UNITS_PER_TASK = 64

WRITE_BATCH_BYTES = 8 * 2**20  # rows written together: ~8 MB of samples at most


def write_rows(task: WriteTask, fork, storage_options: dict):
    """Decode the task's samples, cut them into rows, write them through ``fork``.

    Returns (fork, samples written, error, stats): ``stats`` holds the quality
    statistics of the task's rows (``quality.QUALITY`` columns, in the order of
    ``task.rows``), computed on each row buffer while its chunks are encoded,
    or None when ``task.quality`` is off. Input blocks of any length are
    re-cut into rows, so a decoder may yield segments or rows alike. Rows
    that land on consecutive store rows are written several at a time (up to
    ``WRITE_BATCH_BYTES``): their chunks are encoded concurrently, in other
    threads, while this one decodes the next batch into a second buffer (two
    buffers, so at most 2 x ``WRITE_BATCH_BYTES`` of rows per task). A
    256 kHz 24-bit row is 10 MB: such rows go one by one, one buffer, and
    the decoding waits for each, so that memory stays bounded whatever the
    rate (benchmarks/pacific_sound_memory.py).
    """
    writes: list = []  # per buffer: the futures of its rows' writes in flight
    try:
        if task.more:  # several small files: their bytes fetched concurrently, not one wait each
            prefetch_members([src[0] for src, *_ in task.segments() if isinstance(src, tuple) and src],
                             storage_options)
        audio = _open_audio(fork, task.array_path)
        if task.ref is not None:
            virtual_refs.set_refs(fork, task.array_path, task.ref, task.rows, task.first_sample, task.stop,
                                  task.row_samples)
            if not task.quality:
                return fork, task.stop - task.first_sample, None, None
            put = _referenced
        else:
            put = row_writer(fork, task.array_path, audio)
        spr = task.row_samples
        row_bytes = spr * audio.shape[2] * audio.dtype.itemsize
        batch_rows = max(1, min(8, WRITE_BATCH_BYTES // row_bytes))
        if batch_rows == 1:
            return_large_buffers()
        buffers = [np.zeros((batch_rows, spr, audio.shape[2]), dtype=audio.dtype)
                   for _ in range(2 if batch_rows > 1 else 1)]
        writes = [[] for _ in buffers]
        current = 0
        buf = buffers[current]
        held: list[int] = []  # store rows of the rows filled in buf
        valid: list[int] = []  # their valid samples (the last row of the task may be partial)
        filled = written = 0
        stats = quality.empty_stats(task.n_rows) if task.quality else None
        done_rows = 0  # rows whose statistics are in `stats`
        scale = full_scale(audio.dtype, audio.attrs.get("bits_per_sample"))
        levels = quality.clip_levels(audio.dtype, scale)

        def flush() -> None:
            nonlocal current, buf, done_rows
            k = 0
            while k < len(held):
                j = k + 1
                while j < len(held) and held[j] == held[j - 1] + 1:
                    j += 1
                writes[current].append(put(held[k], buf[k:j]))
                k = j
            if stats is not None:
                # In a thread of their own, beside the encoder threads, while this one decodes the
                # next rows: the buffer is not refilled before its writes and these are done.
                writes[current].append(_stats_pool().submit(
                    _fill_stats, stats, buf, list(enumerate(valid, start=done_rows)), scale, levels))
                done_rows += len(valid)
            held.clear()
            valid.clear()
            current = (current + 1) % len(buffers)
            buf = buffers[current]
            _finish(writes[current])  # its rows are written before it is filled again

        def keep(rows: tuple[int, ...], written: int, n: int) -> int:
            """The row being filled is complete with ``n`` samples: hold it for the next flush."""
            held.append(rows[written // spr])
            valid.append(n)
            if len(held) == batch_rows:
                flush()
            return written + n

        total = 0
        for source, first_sample, stop, rows in task.segments():
            written = 0
            for block in task.decoder.read(source, first_sample, stop, storage_options):
                pos = 0
                while pos < len(block):
                    take = min(spr - filled, len(block) - pos)
                    buf[len(held), filled : filled + take] = block[pos : pos + take]
                    filled += take
                    pos += take
                    if filled == spr:
                        written = keep(rows, written, filled)
                        filled = 0
            if filled:  # the segment's last row, zero-padded past its samples
                buf[len(held), filled:] = 0
                written = keep(rows, written, filled)
                filled = 0
            if written != stop - first_sample:
                raise DecodeError(f"decoded {written} samples where {stop - first_sample} were expected")
            total += written
        flush()
        for pending in writes:
            _finish(pending)
        return fork, total, None, stats
    except DecodeError as exc:
        return None, 0, str(exc), None
    except (StoreUnavailableError, *PROGRAMMING_ERRORS):
        raise  # not the recording's fault: the run stops uncommitted rather than fail the file
    except Exception as exc:  # noqa: BLE001 - recorded with the file, the run goes on
        return None, 0, f"write failed: {describe_read_error(exc)}", None
    finally:
        # A failed task's fork is dropped, but no write of it may outlive the task. Its writes are
        # waited for, not cancelled: cancelling a write's future ends the wait at once, while the
        # store goes on writing its chunks.
        for pending in writes:
            cf.wait(pending)


def _referenced(first: int, rows: np.ndarray) -> cf.Future:
    """The row writer of a virtual unit: its rows are references set already; nothing to write."""
    done: cf.Future = cf.Future()
    done.set_result(None)
    return done


LARGE_BUFFER_BYTES = 4 * 2**20
_large_buffers_returned = False


def return_large_buffers() -> None:
    """Have this process's allocator give buffers of ``LARGE_BUFFER_BYTES`` or more back to the
    system when they are freed (glibc: a fixed mmap threshold).

    Called by tasks that write rows too large to batch (a 256 kHz 24-bit row is 10 MB, its
    reads 8 MB). glibc raises its mmap threshold to the size of each such buffer freed, so
    that later ones come from per-thread heaps, which keep them: the worker's peak grew
    ~25 MB (benchmarks/pacific_sound_memory.py). It is process-wide and kept: HLS and most
    file rows (<= 2 MB) never allocate buffers this large per row, so only such streams are
    affected.
    """
    global _large_buffers_returned
    if _large_buffers_returned:
        return
    _large_buffers_returned = True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: nothing to tune
        return
    M_MMAP_THRESHOLD = -3
    libc.mallopt(M_MMAP_THRESHOLD, LARGE_BUFFER_BYTES)


STORE_READ_ATTEMPTS = 3


def _open_audio(fork, array_path: str):
    """The stream's audio array in the task's fork, read again after a failed read.

    The array exists (the run made it): not finding it means a read of the store
    failed (a dropped or cut-short response Icechunk does not retry), which must
    not be recorded as the recording's failure (tests/test_faults.py).
    """
    # imported lazily (here and by the store modules): `import pamingest` stays under 0.4 s
    # (benchmarks/startup.py)
    import zarr

    for attempt in range(STORE_READ_ATTEMPTS):
        try:
            return zarr.open_array(fork.store, path=array_path, mode="r+")
        except Exception as exc:  # noqa: BLE001
            if attempt + 1 == STORE_READ_ATTEMPTS:
                raise StoreUnavailableError(f"{array_path}: the store could not be read "
                                            f"({type(exc).__name__}: {first_line(str(exc))})") from exc
            time.sleep(0.2 * 2**attempt)


_STATS_POOL: cf.ThreadPoolExecutor | None = None
_STATS_LOCK = threading.Lock()


def _stats_pool() -> cf.ThreadPoolExecutor:
    """Two threads per process for rows' quality statistics (numpy releases the GIL in them)."""
    global _STATS_POOL
    with _STATS_LOCK:
        if _STATS_POOL is None:
            _STATS_POOL = cf.ThreadPoolExecutor(2, thread_name_prefix="pamingest-quality")
        return _STATS_POOL


def _fill_stats(stats: dict[str, np.ndarray], buf: np.ndarray, rows: list[tuple[int, int]], scale: float,
                levels: tuple[float, float]) -> None:
    """``stats[...][i]`` for each ``(i, valid samples)`` of ``rows``, the rows of ``buf`` in order."""
    for k, (i, n) in enumerate(rows):
        for column, value in zip(stats.values(), quality.row_stats(buf[k, :n], scale, levels)):
            column[i] = value


def _finish(pending: list) -> None:
    """Wait for row writes in flight; the first failure raises (leaving the rest in ``pending``)."""
    while pending:
        pending[0].result()
        pending.pop(0)


def _write_task(item, storage_options: dict):
    _, task, fork_bytes = item
    return write_rows(task, load_session(fork_bytes), storage_options)


# ---------------------------------------------------------------- stages

@dataclass
class Listing:
    """A listing split against what the store knows."""

    new: list[SourceFile]
    rejected: list[RejectedFile]
    skipped: int
    changed: list[FailedFile]
    listed: int


def list_new(records: Iterable[SourceFile | RejectedFile], known: dict[str, KnownFile],
             retry_failed: bool) -> Listing:
    """Split a listing into new files, new rejections, skipped and changed objects."""
    new: list[SourceFile] = []
    rejected: list[RejectedFile] = []
    skipped, changed, listed = 0, [], 0
    for rec in records:
        listed += 1
        seen = known.get(rec.url)
        if seen is not None:
            same = (seen.etag == rec.etag) if (seen.etag and rec.etag) else (seen.size == rec.size)
            if not same and not seen.stored:
                pass  # a failed or rejected object replaced (re-uploaded): none of it is stored, take the new one
            elif not same:
                changed.append(FailedFile(rec.url, f"ETag/size changed since ingest "
                                                   f"(was {seen.etag or seen.size}, now {rec.etag or rec.size})"))
                continue
            elif not (retry_failed and not seen.stored):
                skipped += 1
                continue
        if isinstance(rec, RejectedFile):
            rejected.append(rec)
        elif problem := unstorable(rec):
            rejected.append(RejectedFile(rec.source, rec.url, rec.size, rec.etag, problem))
        else:
            new.append(rec)
    return Listing(new, rejected, skipped, changed, listed)


def unstorable(file: SourceFile) -> str | None:
    """Why a listed file can never have rows in a store, whatever it holds; None if it can.

    Checked for every source (sources are plug-ins): a start the store's times
    cannot hold would overflow only when its rows are timed, after the whole
    run's decoding, and fail every later run again.
    """
    if not file.site:
        return f"{file.name}: the source gives no site for it"
    problem = unsupported_time(file.start_ns)
    return f"{file.name}: start {problem}" if problem else None


# The name this stage had before ingest was cut into stages.
classify = list_new


def probe(executor, decoder: Decoder, files: list[SourceFile], storage_options: dict, limit: int,
          cache: dict[str, AudioInfo | str] | None = None,
          placed: dict[str, str] | None = None) -> tuple[list[tuple[SourceFile, AudioInfo]], list[RejectedFile]]:
    """Probe files on the executor (each once per run: ``cache``); (probed, rejected) by file order.

    ``placed`` records the worker that probed each file, for decoders that
    keep what they probed for the decode (``keeps_probed_data``).
    """
    cache = {} if cache is None else cache
    todo = [f for f in files if f.url not in cache]
    # Enough batches to keep every worker busy, at most PROBE_BATCH files each; a decoder may
    # ask for batches that match its decode (HLS: a decode block's segments).
    size = max(1, min(getattr(decoder, "probe_batch", PROBE_BATCH), -(-len(todo) // (4 * executor.n_threads))))
    batches = [todo[k : k + size] for k in range(0, len(todo), size)]
    keeps = placed is not None and getattr(decoder, "keeps_probed_data", False)
    retry: list[list[SourceFile]] = []
    for batch, future in executor.map_unordered(_probe_task, batches, limit, decoder=decoder,
                                                storage_options=storage_options):
        killed = _killed_workers(future)
        if killed:
            # One of the batch's files may crash whatever reads it: each is probed alone, and
            # only a file that kills the workers on its own is rejected.
            retry += [[f] for f in batch] if len(batch) > 1 else []
            if len(batch) == 1:
                cache[batch[0].url] = killed
            continue
        where = executor.where(future) if keeps else None
        for file, result in zip(batch, future.result()):
            cache[file.url] = result
            if where:
                placed[file.url] = where
    for batch, future in executor.map_unordered(_probe_task, retry, limit, decoder=decoder,
                                                storage_options=storage_options):
        killed = _killed_workers(future)
        cache[batch[0].url] = killed or future.result()[0]
    probed, rejected = [], []
    for file in sorted(files):
        result = cache[file.url]
        if isinstance(result, str):
            rejected.append(RejectedFile(file.source, file.url, file.size, file.etag, result))
        else:
            probed.append((file, result))
    return probed, rejected


def within(probed: list[tuple[SourceFile, AudioInfo]], time_range: tuple[int | None, int | None] | None):
    """Probed files whose exact span meets ``[start, end)``; and how many were dropped."""
    if time_range is None or time_range == (None, None):
        return probed, 0
    lo, hi = time_range
    keep = []
    for file, info in probed:
        start, _ = info.start_of(file)
        end = info.end_of(file)  # a duty-cycled XWAV's last piece starts after its frames' span
        if (hi is None or start < hi) and (lo is None or end > lo):
            keep.append((file, info))
    return keep, len(probed) - len(keep)


def stream_path(file: SourceFile, info: AudioInfo) -> str:
    return layout.stream_path(file.source, file.site, info)


def virtual_stream_path(file: SourceFile, info: AudioInfo) -> str:
    """A virtual run's stream of ``file``: a virtual stream when its samples can be referenced, else
    the copied stream it would have without --virtual."""
    return layout.stream_path(file.source, file.site, info,
                              virtual=virtual_refs.referenceable(file, info) is None)


def plan(decoder: Decoder, probed: list[tuple[SourceFile, AudioInfo]], root: zarr.Group,
         known: dict[str, KnownFile], row_seconds: float | None, virtual: bool = False) -> list[Unit]:
    """Units of the probed files, planned against the store at ``root`` (``virtual``: PCM WAV files
    into virtual streams, store/virtual.py)."""

    @functools.lru_cache(maxsize=None)  # asked per unit; a stream's group is read once
    def row_samples(stream: str, sample_rate: int) -> int:
        if stream in root:
            return int(root[stream].attrs["row_samples"])
        return samples_per_row(sample_rate, row_seconds or DEFAULT_ROW_SECONDS)

    return decoder.plan(probed, PlanContext(root, known, row_samples,
                                            virtual_stream_path if virtual else stream_path))


def stream_specs(units: list[Unit], root: zarr.Group, row_seconds: float | None, source: Source):
    """What the units' streams are (spec + audio info), and the attributes their source gives them."""
    specs: dict[str, tuple[layout.StreamSpec, AudioInfo]] = {}
    attributes: dict[str, dict] = {}
    describe = getattr(source, "stream_attributes", None)
    for unit in sorted(units, key=lambda u: (u.t0_ns, u.files[0].file.url)):
        if unit.stream in specs:
            continue
        info = unit.info
        first = unit.new_files[0].file if unit.new_files else unit.files[0].file
        specs[unit.stream] = (layout.StreamSpec(
            unit.stream, first.source or source.name, first.site or unit.stream.split("/")[1],
            info.sample_rate, info.channels, info.store_dtype, info.bits,
            samples_per_row(info.sample_rate, row_seconds or DEFAULT_ROW_SECONDS),
            virtual=layout.is_virtual_path(unit.stream)), info)
        if describe is not None:
            attributes[unit.stream] = dict(describe(first) or {})
    return specs, attributes


def task_rows(unit: Unit, row_samples: int, rows_per_task: int) -> list[tuple[int, int]]:
    """The unit's rows cut into tasks ``(first, stop)`` (indices into ``unit.rows``).

    Tasks hold at most ``rows_per_task`` rows and, where the decoder names
    restart points (``restarts``), begin at the first row starting at or after
    one: a task starting mid-block would decode the block's head again only
    to reach its first row.
    """
    write_from = unit.write_from(row_samples)
    n = len(unit.rows)
    restarts = getattr(unit.decoder, "restarts", None)
    cuts = {0, n}
    if restarts is not None:
        for sample in restarts(unit):
            k = -(-(sample - write_from) // row_samples)  # first row starting at or after the restart
            if 0 < k < n:
                cuts.add(k)
    bounds = sorted(cuts)
    tasks = []
    for lo, hi in zip(bounds, bounds[1:]):
        pieces = -(-(hi - lo) // rows_per_task)
        edges = [lo + (hi - lo) * i // pieces for i in range(pieces + 1)]
        tasks += list(zip(edges, edges[1:]))
    return tasks


def _preferred_worker(unit: Unit, first: int, stop: int, placed: dict[str, str]) -> str | None:
    """The worker that probed most of the files holding the unit's samples ``[first, stop)``."""
    votes = Counter(placed[f.file.url] for f in unit.files
                    if f.file.url in placed and f.start < stop and f.start + f.samples > first)
    return votes.most_common(1)[0][0] if votes else None


def _killed_workers(future) -> str:
    """The reason to record when a task's workers all died running it (distributed's KilledWorker:
    the decoder crashed the process, or it ran out of memory), else ''. The recording is what is
    bad, not the run: it is recorded and the rest goes on (``--retry-failed`` takes it again)."""
    exc = future.exception()
    if exc is None or type(exc).__name__ != "KilledWorker" or type(exc).__module__.split(".")[0] != "distributed":
        return ""
    return ("reading it killed every Dask worker that tried (the decoder crashed its process or ran out of "
            "memory); if the workers died for another reason, run again with --retry-failed")


def write(executor, units: list[Unit], forks: dict[str, bytes], storage_options: dict, rows_per_task: int,
          limit: int, root: zarr.Group, bar=None, placed: dict[str, str] | None = None,
          quality_stats: bool = True) -> None:
    """Decode and write every unit's rows; each unit ends ``ok`` (its forks kept) or ``failed``.

    With ``placed`` (worker per probed file), a task preferably runs on the
    worker that probed its files: that worker still holds them (HLS). With
    ``quality_stats``, an ``ok`` unit's ``quality`` holds its rows' quality
    statistics, in the order of ``unit.rows`` (written with the row table).
    One-row units of a file decoder go up to ``SMALL_UNITS_PER_TASK`` to a
    task; a task of several units that fails is split and its units written
    again one per task, so that a damaged file fails alone.
    """
    tasks = []  # (units of the task, task, fork bytes)
    first_row: dict[int, int] = {}  # id(task) -> index of its first row in its (first) unit's rows
    small: dict[tuple[str, Any], list[Unit]] = {}  # one-row units by (stream, decoder), in order
    # Each stream's group read once, not per unit (a run of 800k one-call files has 800k units).
    row_samples = {path: int(root[path].attrs["row_samples"]) for path in {u.stream for u in units}}
    virtual = {path: virtual_refs.is_virtual(root[path]) for path in row_samples}
    for unit in units:
        spr = row_samples[unit.stream]
        write_from = unit.write_from(spr)
        ref = virtual_refs.object_ref(unit) if virtual[unit.stream] else None
        if (ref is None and unit.continues is None and len(unit.rows) == 1
                and getattr(unit.decoder, "restarts", None) is None):
            small.setdefault((unit.stream, unit.decoder), []).append(unit)
            continue
        for lo, hi in task_rows(unit, spr, rows_per_task):
            first = write_from + lo * spr
            stop = min(unit.n_samples, write_from + hi * spr)
            task = WriteTask(unit.decoder, unit.source, f"{unit.stream}/audio", spr, first, stop,
                             tuple(unit.rows[lo:hi]), quality_stats, ref)
            first_row[id(task)] = lo
            tasks.append(([unit], task, forks[unit.stream]))
    for (stream, decoder), group in small.items():
        spr = row_samples[stream]
        for k in range(0, len(group), SMALL_UNITS_PER_TASK):
            batch = group[k:k + SMALL_UNITS_PER_TASK]
            head, *rest = batch
            task = WriteTask(decoder, head.source, f"{stream}/audio", spr, 0, head.n_samples, tuple(head.rows),
                             quality_stats, None, tuple((u.source, 0, u.n_samples, tuple(u.rows)) for u in rest))
            first_row[id(task)] = 0
            tasks.append((batch, task, forks[stream]))
    for batch, _, _ in tasks:
        for unit in batch:
            unit.tasks_left += 1
    # Kept here, not on the units, until each unit is done: a unit goes to the workers with its tasks.
    stats: dict[int, dict[str, np.ndarray]] = {}
    split: list[Unit] = []
    while tasks:
        where = ({id(t[1]): _preferred_worker(t[0][0], t[1].first_sample, t[1].stop, placed) for t in tasks}
                 if placed else {})
        for (batch, task, _), future in executor.map_unordered(
                _write_task, tasks, limit, storage_options=storage_options,
                placement=lambda t: where.get(id(t[1]))):
            killed = _killed_workers(future)
            fork, samples, error, task_stats = (None, 0, killed, None) if killed else future.result()
            if error and len(batch) > 1:
                split += batch  # written again one per task: the damaged one fails alone
                continue
            if not error and len(batch) > 1:
                batch[0].forks.append(fork)  # one fork for the task's units: merged once
            for i, unit in enumerate(batch):
                unit.tasks_left -= 1
                if error:
                    unit.error = unit.error or error
                elif len(batch) == 1:
                    unit.forks.append(fork)
                if task_stats is not None and not error:
                    lo = first_row[id(task)] if len(batch) == 1 else 0
                    offset = sum(len(u.rows) for u in batch[:i])
                    into = stats.setdefault(id(unit), quality.empty_stats(len(unit.rows)))
                    n = len(unit.rows) if len(batch) > 1 else task.n_rows
                    for name, values in task_stats.items():
                        into[name][lo : lo + n] = values[offset : offset + n]
                if bar is not None and not error:
                    bar.update(unit.n_samples / unit.info.sample_rate if len(batch) > 1
                               else samples / unit.info.sample_rate)
                if unit.tasks_left == 0:
                    if unit.error:
                        unit.status, unit.forks = "failed", []
                        log.warning("%s: %s", unit.files[-1].file.url, unit.error)
                    else:
                        unit.status = "ok"
                    unit.quality = stats.pop(id(unit), None) if unit.status == "ok" else None
        tasks = []
        for unit in split:
            task = WriteTask(unit.decoder, unit.source, f"{unit.stream}/audio", row_samples[unit.stream], 0,
                             unit.n_samples, tuple(unit.rows), quality_stats)
            first_row[id(task)] = 0
            tasks.append(([unit], task, forks[unit.stream]))
        split = []


def ingest(
    source: Source,
    store: str | StoreLocation | Store,
    *,
    row_seconds: float | None = None,
    client: Any = None,
    n_workers: int | None = None,
    store_options: dict | None = None,
    rows_per_task: int = 90,
    retry_failed: bool = False,
    progress: bool = False,
    quality: bool = True,
    virtual: bool = False,
) -> IngestReport:
    """Ingest every new recording of ``source`` into ``store``; one commit per run.

    Parameters
    ----------
    source : Source
        Lists the recordings (``TimestampedFiles``, ``OrcasoundHLS``, ...).
    store : str or StoreLocation
        Store URL: a path, ``s3://bucket/prefix`` or ``gs://...``.
    row_seconds : float, optional
        Row length of new streams (default 10 s). Existing streams keep theirs;
        asking for another length for an existing stream is a ConfigError.
    client : distributed.Client, str, "serial", "threads" or None
        Where decode+write runs: a client, a scheduler address, in-process
        (``"serial"``: one task at a time; ``"threads"``: a thread pool), or
        None: a new LocalCluster of ``n_workers``, or threads when
        ``n_workers`` is not given and the new files total less than
        ``pamingest.executor.LOCAL_WORK_BYTES``.
    rows_per_task : int
        Rows one task writes at most; long files and sessions are split.
    retry_failed : bool
        Ingest again objects that failed in an earlier run.
    progress : bool
        Show a progress bar (audio seconds written).
    quality : bool
        Compute each row's quality statistics as it is written
        (``pamingest.quality``; ``.pam.quality()`` reads them). Off, rows are
        stored without them (their statistics read as "not computed"); the
        switch exists to measure their cost (benchmarks/ingest_throughput.py). With
        ``virtual``, off means the audio of referenced files is never read.
    virtual : bool
        Zero-copy: packed little-endian PCM WAV files (16/24/32-bit) on S3 or
        a local disk become virtual streams, whose rows are references to byte
        ranges of the recordings (``store/virtual.py``); other files are
        copied as usual and listed in ``IngestReport.copied`` with the reason.

    Returns
    -------
    IngestReport
        Other writers (ingests of other sources, annotate, pseudolabel) may
        commit to the store meanwhile: the run lands on top of them. Files
        another run ingested meanwhile are skipped; files whose streams kept
        moving for ``MAX_ROUNDS`` rounds are reported as ``deferred``.
    """
    t0 = time.perf_counter()
    st = Store.open(store, store_options, create=True)
    if not st.can_fork:
        raise ConfigError(f"{st.url}: ingest writes through Icechunk sessions forked to its tasks, which "
                          "in-memory storage cannot serve; ingest into a folder or a bucket")
    report = IngestReport(store=st.url, run_id=uuid.uuid4().hex[:12], snapshot_id=st.tip())
    with contextlib.ExitStack() as stack:
        run = _Run(st, source, report, row_seconds, retry_failed, rows_per_task, progress,
                   lambda work_bytes: stack.enter_context(executor_for(client, n_workers, work_bytes)), quality,
                   virtual)
        wanted: set[str] | None = None  # after the first round: URLs still to ingest
        try:
            for _ in range(MAX_ROUNDS):
                wanted = run.round(wanted)
                if not wanted:
                    break
            else:
                report.deferred = [FailedFile(url, f"its stream kept changing under concurrent runs for "
                                                   f"{MAX_ROUNDS} rounds; not ingested") for url in sorted(wanted)]
        except StoreUnavailableError:
            _let_store_threads_leave()
            raise
    report.elapsed_seconds = time.perf_counter() - t0
    return report


class _Run:
    """One ``ingest`` call: the source's listing and probes, kept across rounds."""

    def __init__(self, store: Store, source: Source, report: IngestReport, row_seconds: float | None,
                 retry_failed: bool, rows_per_task: int, progress: bool, start_executor,
                 quality_stats: bool = True, virtual: bool = False) -> None:
        self.store, self.source, self.report = store, source, report
        self.row_seconds, self.retry_failed, self.rows_per_task, self.progress = (
            row_seconds, retry_failed, rows_per_task, progress)
        self.decoder = build("decoders", getattr(source, "decoder", "sndfile"))
        if virtual and getattr(self.decoder, "name", "") != "sndfile":
            raise ConfigError(f"--virtual refers to PCM WAV files, which the sndfile decoder reads; source "
                              f"{source.name!r} is read by {getattr(self.decoder, 'name', self.decoder)!r}")
        self.options = dict(getattr(source, "storage_options", {}) or {})
        self.time_range = source.time_range() if hasattr(source, "time_range") else None
        self.records: list[SourceFile | RejectedFile] = list(list_source(source))
        self.probes: dict[str, AudioInfo | str] = {}
        self.placed: dict[str, str] = {}  # URL -> the Dask worker that probed it
        self._start_executor = start_executor
        self.quality_stats = quality_stats
        self.virtual = virtual
        if virtual:
            # Before any session of the run: its sessions (and the tasks' forks) must know where
            # references may point.
            virtual_refs.ensure_containers(store, [r.url for r in self.records if isinstance(r, SourceFile)],
                                           self.options)
        self._executor = None

    def executor(self, work_bytes: int):
        # Started only when there is something to probe: a scheduled run that finds nothing new
        # costs a listing, not a cluster; a small job runs in threads (executor.choose).
        if self._executor is None:
            self._executor = self._start_executor(work_bytes)
            self.report.dashboard_link = self._executor.dashboard_link
        return self._executor

    def round(self, wanted: set[str] | None) -> set[str]:
        """List (the URLs ``wanted``, or all) -> probe -> plan -> allocate -> write -> land;
        returns the URLs to take again in another round."""
        st, report = self.store, self.report
        session = st.writable()
        base = session.snapshot_id
        root = st.root(base)
        known = read_catalog(root)
        listing = list_new([r for r in self.records if wanted is None or r.url in wanted], known, self.retry_failed)
        if wanted is None:
            report.listed, report.skipped, report.changed = listing.listed, listing.skipped, listing.changed
            for rec in report.changed:
                log.warning("%s: %s", rec.url, rec.reason)
        else:
            report.skipped += listing.skipped  # ingested by another run meanwhile
        if not listing.new and not listing.rejected:
            return set()
        executor = self.executor(sum(f.size for f in listing.new))
        limit = 4 * executor.n_threads + 8
        probed, rejected = probe(executor, self.decoder, listing.new, self.options, limit, self.probes, self.placed)
        rejected = listing.rejected + rejected
        refuse = getattr(self.source, "refuse", None)  # a source's own rule on what it probed (Source docs)
        if refuse is not None:
            refused = {f.url: why for f, info in probed if (why := refuse(f, info))}
            rejected += [RejectedFile(f.source, f.url, f.size, f.etag, refused[f.url]) for f, _ in probed
                         if f.url in refused]
            probed = [(f, info) for f, info in probed if f.url not in refused]
        probed, outside = within(probed, self.time_range)
        report.outside_range += outside
        if self.virtual:
            seen = {f.url for f in report.copied}
            report.copied += [FailedFile(file.url, why) for file, info in probed
                              if file.url not in seen and (why := virtual_refs.referenceable(file, info))]
        units = plan(self.decoder, probed, root, known, self.row_seconds, self.virtual)
        specs, attributes = stream_specs(units, root, self.row_seconds, self.source)
        if prepare_streams(st, specs, self.row_seconds is not None, attributes).snapshot_id is not None:
            # New streams exist now (empty), or their attributes changed: plan again at the new tip.
            return {r.url for r in listing.new} | {r.url for r in listing.rejected}
        report.rounds += 1
        forks = allocate(st, session, units, known)
        report.streams = sorted(set(report.streams) | {u.stream for u in units})
        spr = {path: int(root[path].attrs["row_samples"]) for path in {u.stream for u in units}}
        seconds = sum((u.n_samples - u.write_from(spr[u.stream])) / u.info.sample_rate
                      for u in units)
        bar = _progress_bar(self.progress, seconds)
        try:
            write(executor, units, forks, self.options, self.rows_per_task, limit, root, bar, self.placed,
                  self.quality_stats)
        except StoreUnavailableError as exc:
            # A task's message names the array and row; the user needs the store, and what became of the run.
            raise StoreUnavailableError(f"{st.url}: {exc}; the store stays at its last snapshot: run again once "
                                        "it can be written") from exc
        finally:
            if bar is not None:
                bar.close()
        landing = land(st, session, base, units, rejected, known, forks,
                       lambda us, rs: _message(report.run_id, us, rs),
                       lambda us, rs: _metadata(report.run_id, us, rs))
        _count(report, landing)
        return {uf.file.url for u in landing.deferred for uf in u.new_files}


# Long enough for a thread waiting on the GIL to be scheduled, even on a loaded machine.
STORE_THREADS_SETTLE_SECONDS = 0.05


def _let_store_threads_leave() -> None:
    """Release the GIL for a moment after the store refused a write, before the failure ends the process.

    Icechunk's threads hand each write's outcome to zarr's event loop by calling into Python,
    and need the GIL once more to return. The last one may still wait for it when the failure
    reaches the command line, which then exits at once; CPython before 3.14 ends a thread
    that takes the GIL during finalization with pthread_exit, which aborts the process
    (SIGABRT) from a Rust thread (tests/test_full_disk.py met it in a few runs in a hundred).
    """
    time.sleep(STORE_THREADS_SETTLE_SECONDS)


def _message(run_id: str, units: list[Unit], rejected: list[RejectedFile]) -> str:
    ok = len(_new_files(units, "ok"))
    failed = len(_new_files(units, "failed")) + len(rejected)
    partial = _partial(units)
    return f"pamingest run {run_id}: {ok} files" + (f" ({partial} partial)" if partial else "") + f", {failed} failed"


def _metadata(run_id: str, units: list[Unit], rejected: list[RejectedFile]) -> dict:
    ok = [u for u in units if u.status == "ok"]
    return {"pamingest": "ingest", "run_id": run_id, "ingested": len(_new_files(units, "ok")),
            "failed": len(_new_files(units, "failed")) + len(rejected),
            "partial": _partial(units), "rows": sum(len(u.rows) for u in ok)}


def _new_files(units: list[Unit], status: str) -> dict[str, UnitFile]:
    """The new files of the units ``ok`` (or not), by URL: a file in several units (the pieces of a
    duty-cycled XWAV) counts once."""
    return {f.file.url: f for u in units if (u.status == "ok") == (status == "ok") for f in u.new_files}


def _partial(units: list[Unit]) -> int:
    return sum(1 for f in _new_files(units, "ok").values() if f.incomplete)


def _count(report: IngestReport, landing: Landing) -> None:
    commit = landing.commit
    report.rebases += commit.rebases
    report.rebuilds += commit.rebuilds
    report.moved += landing.moved
    # Files another run ingested while this one was writing them: stored once, by that run.
    report.skipped += len({f.file.url for u in landing.dropped for f in u.new_files})
    if commit.snapshot_id is None:
        return
    report.commits += 1
    report.snapshot_id = commit.snapshot_id
    counted: set[str] = set()  # a file in several units (a duty-cycled XWAV's pieces) counts once
    for unit in landing.units:
        new_files = [f for f in unit.new_files if f.file.url not in counted]
        counted.update(f.file.url for f in new_files)
        if unit.status == "ok":
            report.ingested += len(new_files)
            report.rows += len(unit.rows)
            report.audio_seconds += sum(f.samples for f in unit.new_files) / unit.info.sample_rate
            report.bytes_read += sum(f.file.size for f in new_files)
            report.partial += [FailedFile(f.file.url, f.incomplete) for f in new_files if f.incomplete]
        else:
            report.failed += [FailedFile(f.file.url, unit.error) for f in new_files]
    report.failed += [FailedFile(r.url, r.reason) for r in landing.rejected]


def _progress_bar(enabled: bool, total_seconds: float):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=round(total_seconds, 1), unit="s", unit_scale=True, desc="audio written",
                bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}, {rate_fmt}]")
