"""Plan on the client, decode and write on Dask, commit once.

1. list the source (partition by partition, in parallel);
2. keep only objects the store has not seen (URL + ETag/size), report
   changed ETags instead of ingesting them twice;
3. probe headers on the executor (sample rate, channels, frames; for HLS
   segments: frames and first PTS, short/silent/broken segments flagged);
4. plan units (a file, or a run of HLS segments: ``plan.py``, ``sessions.py``),
   allocate their rows per stream deterministically (start time, then URL),
   and commit the grown arrays on a private run branch;
5. decode + encode + write row ranges on the executor, each task in its own
   Icechunk fork session, streaming its input (memory is one row);
6. merge the forks of the units that decoded completely, write the row,
   file and run tables, commit, and move ``main`` to that commit in one step.

Readers of ``main`` never see a half-written run; a crash leaves ``main``
where it was, and the next run converges to the same store.
"""

from __future__ import annotations

import logging
import pickle
import time
import uuid
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import zarr

from .decode import hls, sndfile
from .errors import ConcurrentIngestError, DecodeError
from .executor import executor_for
from .fsutil import describe_read_error
from .plan import Unit, file_unit
from .sessions import plan_runs, segment_audio_info
from .sources.base import RejectedFile, Source, SourceFile, list_source
from .store import layout
from .store.catalog import KnownFile, read_catalog
from .store.repo import StoreLocation, open_repository
from .timing import NAT, samples_per_row

log = logging.getLogger(__name__)
RUN_BRANCH_PREFIX = "pamingest-run-"
DEFAULT_ROW_SECONDS = 10.0


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
    changed: list[FailedFile] = field(default_factory=list)
    streams: list[str] = field(default_factory=list)
    elapsed_seconds: float = 0.0
    dashboard_link: str | None = None

    @property
    def committed(self) -> bool:
        return self.snapshot_id is not None and (self.ingested > 0 or bool(self.failed))

    def summary(self) -> str:
        lines = [
            f"store      {self.store}",
            f"listed     {self.listed} objects; {self.skipped} already in the store",
            f"ingested   {self.ingested} files, {self.rows} rows, "
            f"{self.audio_seconds / 3600:.3f} h of audio, {self.bytes_read / 1e6:.1f} MB read",
            f"failed     {len(self.failed)} files",
        ]
        lines += [f"  - {f.url}: {f.reason}" for f in self.failed]
        if self.changed:
            lines.append(f"changed    {len(self.changed)} objects differ from the ingested version (not re-ingested)")
            lines += [f"  - {f.url}: {f.reason}" for f in self.changed]
        lines.append(f"streams    {', '.join(self.streams) or '-'}")
        lines.append(f"snapshot   {self.snapshot_id or '-'}" + ("" if self.committed else " (nothing new: no commit)"))
        lines.append(f"elapsed    {self.elapsed_seconds:.1f} s")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {
            "store": self.store, "run_id": self.run_id, "snapshot_id": self.snapshot_id,
            "listed": self.listed, "skipped": self.skipped, "ingested": self.ingested,
            "rows": self.rows, "audio_hours": self.audio_seconds / 3600, "bytes_read": self.bytes_read,
            "failed": [{"url": f.url, "reason": f.reason} for f in self.failed],
            "changed": [{"url": f.url, "reason": f.reason} for f in self.changed],
            "streams": self.streams, "elapsed_seconds": self.elapsed_seconds,
        }


# ---------------------------------------------------------------- worker tasks
# Plain top-level functions: they are pickled to Dask workers.

PROBES = {"sndfile": sndfile.probe, "hls": hls.probe_segment}
# Bugs, not bad input: these propagate instead of being recorded as a file's failure.
PROGRAMMING_ERRORS = (NameError, TypeError, AttributeError, ImportError, AssertionError)


def probe_file(file: SourceFile, storage_options: dict, decoder: str = "sndfile"):
    """Header of one object (AudioInfo / SegmentInfo), or the reason it cannot be read."""
    try:
        return PROBES[decoder](file.url, file.size, storage_options)
    except DecodeError as exc:
        return str(exc)
    except PROGRAMMING_ERRORS:
        raise
    except Exception as exc:  # noqa: BLE001 - a bad file must never stop the run
        return f"cannot read: {describe_read_error(exc)}"


@dataclass(frozen=True)
class WriteTask:
    """Unit samples ``[first_sample, stop)`` -> the store rows ``rows`` (one per row)."""

    decode: tuple
    array_path: str
    row_samples: int
    first_sample: int
    stop: int
    rows: tuple[int, ...]


def _samples(task: WriteTask, storage_options: dict):
    kind = task.decode[0]
    if kind == "sndfile":
        _, url, info = task.decode
        first_row = task.first_sample // task.row_samples
        return sndfile.read_rows(url, info, task.row_samples, first_row, len(task.rows), storage_options)
    if kind == "hls":
        _, segments, block = task.decode
        return hls.decode_run(segments, task.first_sample, task.stop, storage_options, block_segments=block)
    raise ValueError(f"unknown decoder {kind!r}")


WRITE_BATCH_BYTES = 8 * 2**20  # rows written together: ~8 MB of samples at most


def write_rows(task: WriteTask, fork, storage_options: dict):
    """Decode the task's samples, cut them into rows, write them through ``fork``.

    Returns (fork, samples written, error). Input blocks of any length are
    re-cut into rows, so a decoder may yield segments or rows alike. Rows
    that land on consecutive store rows are written several at a time (up to
    ``WRITE_BATCH_BYTES``): zarr then encodes their chunks concurrently. A
    256 kHz 24-bit row is 10 MB, so such rows go one by one and memory stays
    bounded whatever the rate.
    """
    try:
        audio = zarr.open_array(fork.store, path=task.array_path, mode="r+")
        spr = task.row_samples
        row_bytes = spr * audio.shape[2] * audio.dtype.itemsize
        batch_rows = max(1, min(8, WRITE_BATCH_BYTES // row_bytes))
        buf = np.zeros((batch_rows, spr, audio.shape[2]), dtype=audio.dtype)
        held: list[int] = []  # store rows of the rows filled in buf
        filled = written = 0

        def flush() -> None:
            k = 0
            while k < len(held):
                j = k + 1
                while j < len(held) and held[j] == held[j - 1] + 1:
                    j += 1
                audio[held[k] : held[k] + (j - k)] = buf[k:j]
                k = j
            held.clear()

        for block in _samples(task, storage_options):
            pos = 0
            while pos < len(block):
                take = min(spr - filled, len(block) - pos)
                buf[len(held), filled : filled + take] = block[pos : pos + take]
                filled += take
                pos += take
                if filled == spr:
                    held.append(task.rows[written // spr])
                    written += spr
                    filled = 0
                    if len(held) == batch_rows:
                        flush()
        if filled:
            buf[len(held), filled:] = 0
            held.append(task.rows[written // spr])
            written += filled
        flush()
        expected = task.stop - task.first_sample
        if written != expected:
            raise DecodeError(f"decoded {written} samples where {expected} were expected")
        return fork, written, None
    except DecodeError as exc:
        return None, 0, str(exc)
    except PROGRAMMING_ERRORS:
        raise
    except Exception as exc:  # noqa: BLE001 - recorded with the file, the run goes on
        return None, 0, f"write failed: {describe_read_error(exc)}"


def _write_task(item, fork_bytes: bytes, storage_options: dict):
    _, task = item
    return write_rows(task, pickle.loads(fork_bytes), storage_options)


# ---------------------------------------------------------------- planning

def classify(records: Iterable[SourceFile | RejectedFile], known: dict[str, KnownFile], retry_failed: bool):
    """Split a listing into new files, new rejections, skipped and changed objects."""
    new: list[SourceFile] = []
    rejected: list[RejectedFile] = []
    skipped, changed, listed = 0, [], 0
    for rec in records:
        listed += 1
        seen = known.get(rec.url)
        if seen is not None:
            same = (seen.etag == rec.etag) if (seen.etag and rec.etag) else (seen.size == rec.size)
            if not same:
                changed.append(FailedFile(rec.url, f"ETag/size changed since ingest "
                                                   f"(was {seen.etag or seen.size}, now {rec.etag or rec.size})"))
                continue
            if not (retry_failed and seen.status != "ok"):
                skipped += 1
                continue
        if isinstance(rec, RejectedFile):
            rejected.append(rec)
        else:
            new.append(rec)
    return new, rejected, skipped, changed, listed


def ingest(
    source: Source,
    store: str | StoreLocation,
    *,
    row_seconds: float | None = None,
    client: Any = None,
    n_workers: int | None = None,
    store_options: dict | None = None,
    rows_per_task: int = 90,
    retry_failed: bool = False,
    progress: bool = False,
) -> IngestReport:
    """Ingest every new recording of ``source`` into ``store``; one commit per run.

    Parameters
    ----------
    source : Source
        Lists the recordings (``TimestampedFiles``, ``OrcasoundHLS``, ...).
    store : str or StoreLocation
        Store URL: a path, ``s3://bucket/prefix``, ``gs://...`` or ``memory://name``.
    row_seconds : float, optional
        Row length of new streams (default 10 s). Existing streams keep theirs;
        asking for another length for an existing stream is a ConfigError.
    client : distributed.Client, str, "serial" or None
        Where decode+write runs: a client, a scheduler address, in-process
        (``"serial"``) or a new LocalCluster (None).
    rows_per_task : int
        Rows one task writes at most; long files and sessions are split.
    retry_failed : bool
        Ingest again objects that failed in an earlier run.
    progress : bool
        Show a progress bar (audio seconds written).
    """
    t0 = time.perf_counter()
    location = StoreLocation.from_url(store, store_options)
    repo = open_repository(location, create=True)
    base = repo.lookup_branch("main")
    report = IngestReport(store=location.url, run_id=uuid.uuid4().hex[:12], snapshot_id=base)
    known = read_catalog(repo.readonly_session(snapshot_id=base).store)
    new, rejected, report.skipped, report.changed, report.listed = classify(
        list_source(source), known, retry_failed
    )
    for rec in report.changed:
        log.warning("%s: %s", rec.url, rec.reason)
    if not new and not rejected:
        report.elapsed_seconds = time.perf_counter() - t0
        return report

    options = dict(getattr(source, "storage_options", {}) or {})
    decoder = getattr(source, "decoder", "sndfile")
    with executor_for(client, n_workers) as executor:
        report.dashboard_link = executor.dashboard_link
        limit = 4 * executor.n_threads + 8
        probed = []
        for file, future in executor.map_unordered(probe_file, new, limit, storage_options=options,
                                                   decoder=decoder):
            result = future.result()
            if isinstance(result, str):
                rejected.append(RejectedFile(file.source, file.url, file.size, file.etag, result))
            else:
                probed.append((file, result))
        probed.sort(key=lambda fi: fi[0])
        branch = RUN_BRANCH_PREFIX + report.run_id
        repo.create_branch(branch, base)
        session = repo.writable_session(branch)
        root = zarr.open_group(session.store, mode="a")
        units = _plan_units(root, source, decoder, probed, known, row_seconds)
        _allocate(root, units, row_seconds, source, known)
        layout.ensure_rejected(root)
        schema_snapshot = session.commit(f"pamingest run {report.run_id}: allocate rows")
        session = repo.writable_session(branch)
        tasks = []
        for unit in units:
            spr = int(root[unit.stream].attrs["row_samples"])
            for k in range(0, len(unit.rows), rows_per_task):
                first = unit.write_from + k * spr
                stop = min(unit.n_samples, first + rows_per_task * spr)
                tasks.append((unit, WriteTask(unit.decode, f"{unit.stream}/audio", spr, first, stop,
                                              tuple(unit.rows[k : k + rows_per_task]))))
                unit.tasks_left += 1
        bar = _progress_bar(progress, sum((u.n_samples - u.write_from) / u.info.sample_rate for u in units))
        # One fork, pickled once: every task unpickles its own copy and returns it
        # with its writes; a session cannot fork again once forks are merged.
        fork_bytes = pickle.dumps(session.fork())
        for (unit, _), future in executor.map_unordered(
            _write_task, tasks, limit, fork_bytes=fork_bytes, storage_options=options
        ):
            fork, samples, error = future.result()
            unit.tasks_left -= 1
            if error:
                unit.error = unit.error or error
            else:
                unit.forks.append(fork)
            if bar is not None:
                bar.update(samples / unit.info.sample_rate)
            if unit.tasks_left == 0:
                if unit.error:
                    unit.status, unit.forks = "failed", []
                    log.warning("%s: %s", unit.files[-1].file.url, unit.error)
                else:
                    session.merge(*unit.forks)
                    unit.status, unit.forks = "ok", []
        if bar is not None:
            bar.close()
    root = zarr.open_group(session.store, mode="a")
    _write_tables(root, units, rejected, known)
    for unit in units:
        new_files = unit.new_files
        if unit.status == "ok":
            report.ingested += len(new_files)
            report.rows += len(unit.rows)
            report.audio_seconds += sum(f.samples for f in new_files) / unit.info.sample_rate
            report.bytes_read += sum(f.file.size for f in new_files)
        else:
            report.failed += [FailedFile(f.file.url, unit.error) for f in new_files]
    report.failed += [FailedFile(r.url, r.reason) for r in rejected]
    report.streams = sorted({u.stream for u in units})
    with warnings.catch_warnings():
        # The forks of failed units are deliberately not merged: their writes are discarded.
        warnings.filterwarnings("ignore", message="Committing a session after forking")
        snapshot = session.commit(
            f"pamingest run {report.run_id}: {report.ingested} files, {len(report.failed)} failed",
            metadata={"run_id": report.run_id, "ingested": report.ingested, "failed": len(report.failed),
                      "rows": report.rows, "allocated_in": schema_snapshot},
        )
    try:
        repo.reset_branch("main", snapshot, from_snapshot_id=base)
    except Exception as exc:
        raise ConcurrentIngestError(
            f"main moved while run {report.run_id} was writing; its result is kept on branch {branch} "
            f"(snapshot {snapshot}). Run the ingest again to add the files on top of the new main."
        ) from exc
    repo.delete_branch(branch)
    report.snapshot_id = snapshot
    report.elapsed_seconds = time.perf_counter() - t0
    return report


def _progress_bar(enabled: bool, total_seconds: float):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=round(total_seconds, 1), unit="s", unit_scale=True, desc="audio written",
                bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}, {rate_fmt}]")


def _row_samples_for(root: zarr.Group, row_seconds: float | None):
    def row_samples(stream: str, sample_rate: int) -> int:
        if stream in root:
            return int(root[stream].attrs["row_samples"])
        return samples_per_row(sample_rate, row_seconds or DEFAULT_ROW_SECONDS)

    return row_samples


def _plan_units(root, source, decoder: str, probed, known, row_seconds) -> list[Unit]:
    if decoder == "hls":
        return plan_runs(root, probed, known, _row_samples_for(root, row_seconds),
                         getattr(source, "capture_delay_s", 0.0),
                         getattr(source, "block_segments", hls.DEFAULT_BLOCK_SEGMENTS))
    return [file_unit(layout.stream_path(f.source, f.site, info), f, info) for f, info in probed]


def _allocate(root: zarr.Group, units: list[Unit], row_seconds: float | None, source: Source | None,
              known: dict[str, KnownFile]) -> None:
    """Create or grow each stream's arrays; give each unit its rows and its new files their index.

    A source may describe its streams (deployment position, instrument...)
    through an optional ``stream_attributes(file) -> dict``; those are merged
    into the stream group's attributes.
    """
    describe = getattr(source, "stream_attributes", None)
    by_stream: dict[str, list[Unit]] = defaultdict(list)
    for unit in units:
        by_stream[unit.stream].append(unit)
    for path in sorted(by_stream):
        group_units = sorted(by_stream[path], key=lambda u: (u.t0_ns, u.files[0].file.url))
        u0 = group_units[0]
        first_file = u0.new_files[0].file if u0.new_files else u0.files[0].file
        spec = layout.StreamSpec(path, first_file.source or source.name, first_file.site or path.split("/")[1],
                                 u0.info.sample_rate, u0.info.channels, u0.info.store_dtype, u0.info.bits,
                                 samples_per_row(u0.info.sample_rate, row_seconds or DEFAULT_ROW_SECONDS))
        if path in root:
            group = root[path]
            if row_seconds is not None:
                layout.check_stream(group, spec)
        else:
            group = layout.create_stream(root, spec, u0.info)
        if describe is not None:
            extra = describe(first_file) or {}
            if extra:
                group.attrs.update({k: v for k, v in extra.items() if k not in layout.RESERVED_ATTRS})
        spr = int(group.attrs["row_samples"])
        row = group["audio"].shape[0]
        n_files = group["file_url"].shape[0]
        for unit in group_units:
            for uf in unit.new_files:
                prior = known.get(uf.file.url)
                if prior and prior.stream == path:
                    uf.file_index = prior.file_index  # a retried file keeps its table entry
                else:
                    uf.file_index, n_files = n_files, n_files + 1
            n = unit.n_rows(spr)
            fresh = n - (1 if unit.rewrite_row is not None else 0)
            unit.rows = ([unit.rewrite_row] if unit.rewrite_row is not None else []) + list(range(row, row + fresh))
            row += fresh
        group["audio"].resize((row, spr, int(group.attrs["channels"])))


def _write_tables(root: zarr.Group, units: list[Unit], rejected: list[RejectedFile],
                  known: dict[str, KnownFile]) -> None:
    by_stream: dict[str, list[Unit]] = defaultdict(list)
    for unit in units:
        by_stream[unit.stream].append(unit)
    for path, group_units in by_stream.items():
        group = root[path]
        spr = int(group.attrs["row_samples"])
        n_rows = group["audio"].shape[0]
        layout.grow_row_arrays(group, n_rows)
        for unit in group_units:
            table = unit.row_table(spr)
            rows = np.asarray(unit.rows, dtype=np.int64)
            if unit.status != "ok":
                # Dead rows: allocated, never written. A rewrite row keeps its earlier content.
                keep = rows != (unit.rewrite_row if unit.rewrite_row is not None else -1)
                rows = rows[keep]
                table = {"chunk_start": np.full(len(rows), NAT, dtype=np.int64),
                         "n_valid": np.zeros(len(rows), dtype=np.int32),
                         "file_index": table["file_index"][keep], "file_offset": table["file_offset"][keep]}
            _scatter(group, rows, table)
        entries = [(uf, u) for u in group_units for uf in u.new_files]
        n_files = max(group["file_url"].shape[0], max((uf.file_index for uf, _ in entries), default=-1) + 1)
        columns = {
            "file_url": [uf.file.url for uf, _ in entries],
            "file_etag": [uf.file.etag for uf, _ in entries],
            "file_size": [uf.file.size for uf, _ in entries],
            "file_start": [uf.file.start_ns for uf, _ in entries],
            "file_frames": [uf.samples if u.status == "ok" else 0 for uf, u in entries],
            "file_status": [u.status for _, u in entries],
            "file_error": [u.error for _, u in entries],
        }
        index = np.array([uf.file_index for uf, _ in entries], dtype=np.int64)
        for name, values in columns.items():
            arr = group[name]
            if arr.shape[0] < n_files:
                arr.resize((n_files,))
            data = layout.as_object(values) if arr.dtype.kind in "OTU" else np.asarray(values, dtype=arr.dtype)
            _scatter_1d(arr, index, data)
        runs = [u for u in group_units if u.run is not None and u.status == "ok"]
        if runs:
            _write_runs(group, runs)
    if rejected:
        group = layout.ensure_rejected(root)
        retried = {r.url: k for r in rejected if (k := known.get(r.url)) and k.stream == layout.REJECTED_GROUP}
        fresh = [r for r in rejected if r.url not in retried]
        for r in rejected:
            if r.url in retried:
                group["reason"][retried[r.url].file_index] = r.reason
        layout.append(group["url"], layout.as_object(r.url for r in fresh))
        layout.append(group["etag"], layout.as_object(r.etag for r in fresh))
        layout.append(group["size"], np.array([r.size for r in fresh], dtype=np.int64))
        layout.append(group["source"], layout.as_object(r.source for r in fresh))
        layout.append(group["reason"], layout.as_object(r.reason for r in fresh))


def _scatter(group: zarr.Group, rows: np.ndarray, table: dict[str, np.ndarray]) -> None:
    for name, values in table.items():
        _scatter_1d(group[name], rows, np.asarray(values))


def _scatter_1d(arr: zarr.Array, index: np.ndarray, values: np.ndarray) -> None:
    """``arr[index] = values``, as one slice write when the indices are contiguous."""
    if not len(index):
        return
    if np.array_equal(index, np.arange(index[0], index[0] + len(index))):
        arr[int(index[0]) : int(index[0]) + len(index)] = values
    else:
        for i, v in zip(index, values):
            arr[int(i)] = v


def _write_runs(group: zarr.Group, units: list[Unit]) -> None:
    runs = layout.ensure_runs(group)
    for unit in units:
        r = unit.run
        values = {
            "run_session": r["session"], "run_t0": r["t0_ns"], "run_first_pts": r["first_pts_s"],
            "run_samples": r["samples"], "run_first_segment": r["first_segment"],
            "run_last_segment": r["last_segment"],
            "run_first_row": r["first_row"] if r["first_row"] >= 0 else unit.rows[0],
            "run_last_row": unit.rows[-1],
        }
        if r["index"] is None:
            i = runs["run_session"].shape[0]
            for name in values:
                runs[name].resize((i + 1,))
        else:
            i = r["index"]
        for name, v in values.items():
            runs[name][i] = v
