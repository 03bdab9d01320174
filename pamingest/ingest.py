"""Plan on the client, decode and write on Dask, commit once.

1. list the source (partition by partition, in parallel);
2. keep only objects the store has not seen (URL + ETag/size), report
   changed ETags instead of ingesting them twice;
3. probe headers on the executor (sample rate, channels, frames);
4. allocate rows per stream, deterministically (start time, then URL), and
   commit the grown arrays on a private run branch;
5. decode + encode + write row ranges on the executor, each task in its own
   Icechunk fork session, streaming its file (memory is one row);
6. merge the forks of the files that decoded completely, write the row and
   file tables, commit, and move ``main`` to that commit in one step.

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

from .decode.sndfile import AudioInfo, probe, read_rows
from .errors import ConcurrentIngestError, DecodeError
from .executor import executor_for
from .fsutil import describe_read_error
from .sources.base import RejectedFile, Source, SourceFile, list_source
from .store import layout
from .store.catalog import KnownFile, read_catalog
from .store.repo import StoreLocation, open_repository
from .timing import NAT, offset_ns, rows_for, row_valid, samples_per_row

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

def probe_file(file: SourceFile, storage_options: dict) -> AudioInfo | str:
    """Header of one object, or the reason it cannot be read."""
    try:
        return probe(file.url, file.size, storage_options)
    except DecodeError as exc:
        return str(exc)
    except Exception as exc:  # noqa: BLE001 - a bad file must never stop the run
        return f"cannot read: {describe_read_error(exc)}"


@dataclass(frozen=True)
class WriteTask:
    """Rows ``first_row .. first_row + n_rows`` of one file -> store rows from ``store_row``."""

    file: SourceFile
    info: AudioInfo
    array_path: str
    row_samples: int
    first_row: int
    n_rows: int
    store_row: int


def write_rows(task: WriteTask, fork, storage_options: dict):
    """Decode the task's rows and write them through ``fork``; returns (fork, frames, error)."""
    try:
        audio = zarr.open_array(fork.store, path=task.array_path, mode="r+")
        row = task.store_row
        frames = 0
        for block in read_rows(task.file.url, task.info, task.row_samples, task.first_row,
                               task.n_rows, storage_options):
            if len(block) < task.row_samples:
                padded = np.zeros((task.row_samples, block.shape[1]), dtype=audio.dtype)
                padded[: len(block)] = block
                block = padded
            audio[row : row + 1] = block[None, ...]
            row += 1
            frames += len(block)
        return fork, frames, None
    except DecodeError as exc:
        return None, 0, str(exc)
    except Exception as exc:  # noqa: BLE001 - recorded with the file, the run goes on
        return None, 0, f"write failed: {describe_read_error(exc)}"


# ---------------------------------------------------------------- planning

@dataclass
class PlannedFile:
    file: SourceFile
    info: AudioInfo
    stream: str
    store_row: int
    n_rows: int
    file_index: int
    status: str = "pending"
    error: str = ""
    tasks_left: int = 0
    forks: list = field(default_factory=list)


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
        Lists the recordings (e.g. ``TimestampedFiles``).
    store : str or StoreLocation
        Store URL: a path, ``s3://bucket/prefix``, ``gs://...`` or ``memory://name``.
    row_seconds : float, optional
        Row length of new streams (default 10 s). Existing streams keep theirs;
        asking for another length for an existing stream is a ConfigError.
    client : distributed.Client, str, "serial" or None
        Where decode+write runs: a client, a scheduler address, in-process
        (``"serial"``) or a new LocalCluster (None).
    rows_per_task : int
        Rows one task decodes; long files are split into several tasks.
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
    with executor_for(client, n_workers) as executor:
        report.dashboard_link = executor.dashboard_link
        limit = 4 * executor.n_threads + 8
        # 3. probe headers
        infos: list[tuple[SourceFile, AudioInfo]] = []
        for file, future in executor.map_unordered(probe_file, new, limit, storage_options=options):
            result = future.result()
            if isinstance(result, str):
                rejected.append(RejectedFile(file.source, file.url, file.size, file.etag, result))
            else:
                infos.append((file, result))
        # 4. allocate rows on a private branch
        branch = RUN_BRANCH_PREFIX + report.run_id
        repo.create_branch(branch, base)
        session = repo.writable_session(branch)
        root = zarr.open_group(session.store, mode="a")
        planned = _allocate(root, infos, row_seconds, known, source)
        layout.ensure_rejected(root)
        schema_snapshot = session.commit(f"pamingest run {report.run_id}: allocate rows")
        session = repo.writable_session(branch)
        # 5. decode + write
        tasks = []
        for pf in planned:
            spr = int(root[pf.stream].attrs["row_samples"])
            for first in range(0, pf.n_rows, rows_per_task):
                n = min(rows_per_task, pf.n_rows - first)
                tasks.append((pf, WriteTask(pf.file, pf.info, f"{pf.stream}/audio", spr, first, n,
                                            pf.store_row + first)))
                pf.tasks_left += 1
        bar = _progress_bar(progress, sum(pf.info.frames / pf.info.sample_rate for pf in planned))
        # One fork, pickled once: every task unpickles its own copy and returns it
        # with its writes; a session cannot fork again once forks are merged.
        fork_bytes = pickle.dumps(session.fork())
        for (pf, _), future in executor.map_unordered(
            _write_task, tasks, limit, fork_bytes=fork_bytes, storage_options=options
        ):
            fork, frames, error = future.result()
            pf.tasks_left -= 1
            if error:
                pf.error = pf.error or error
            else:
                pf.forks.append(fork)
            if bar is not None:
                bar.update(frames / pf.info.sample_rate)
            if pf.tasks_left == 0:
                if pf.error:
                    pf.status, pf.forks = "failed", []
                    log.warning("%s: %s", pf.file.url, pf.error)
                else:
                    session.merge(*pf.forks)
                    pf.status, pf.forks = "ok", []
        if bar is not None:
            bar.close()
    # 6. tables, commit, move main
    root = zarr.open_group(session.store, mode="a")
    _write_tables(root, planned, rejected, known)
    for pf in planned:
        if pf.status == "ok":
            report.ingested += 1
            report.rows += pf.n_rows
            report.audio_seconds += pf.info.frames / pf.info.sample_rate
            report.bytes_read += pf.file.size
        else:
            report.failed.append(FailedFile(pf.file.url, pf.error))
    report.failed += [FailedFile(r.url, r.reason) for r in rejected]
    report.streams = sorted({pf.stream for pf in planned})
    with warnings.catch_warnings():
        # The forks of failed files are deliberately not merged: their writes are discarded.
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


def _write_task(item, fork_bytes: bytes, storage_options: dict):
    _, task = item
    return write_rows(task, pickle.loads(fork_bytes), storage_options)


def _progress_bar(enabled: bool, total_seconds: float):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=round(total_seconds, 1), unit="s", unit_scale=True, desc="audio written",
                bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}, {rate_fmt}]")


def _allocate(root: zarr.Group, infos, row_seconds: float | None, known: dict[str, KnownFile],
              source: Source | None = None) -> list[PlannedFile]:
    """Create or grow each stream's arrays; give each file its rows and table index.

    A source may describe its streams (deployment position, instrument...)
    through an optional ``stream_attributes(file) -> dict``; those are merged
    into the stream group's attributes.
    """
    describe = getattr(source, "stream_attributes", None)
    by_stream: dict[str, list[tuple[SourceFile, AudioInfo]]] = defaultdict(list)
    for file, info in infos:
        by_stream[layout.stream_path(file.source, file.site, info)].append((file, info))
    planned: list[PlannedFile] = []
    for path in sorted(by_stream):
        files = sorted(by_stream[path], key=lambda fi: (fi[0].start_ns, fi[0].url))
        file0, info0 = files[0]
        spec = layout.StreamSpec(path, file0.source, file0.site, info0.sample_rate, info0.channels,
                                 info0.store_dtype, info0.bits,
                                 samples_per_row(info0.sample_rate, row_seconds or DEFAULT_ROW_SECONDS))
        if path in root:
            group = root[path]
            if row_seconds is not None:
                layout.check_stream(group, spec)
            spec = layout.StreamSpec(**{**spec.__dict__, "row_samples": int(group.attrs["row_samples"])})
        else:
            group = layout.create_stream(root, spec, info0)
        if describe is not None:
            extra = describe(file0) or {}
            if extra:
                group.attrs.update({k: v for k, v in extra.items() if k not in layout.RESERVED_ATTRS})
        row = group["audio"].shape[0]
        n_files = group["file_url"].shape[0]
        for file, info in files:
            n_rows = rows_for(info.frames, spec.row_samples)
            prior = known.get(file.url)
            index = prior.file_index if (prior and prior.stream == path) else n_files
            if index == n_files:
                n_files += 1
            planned.append(PlannedFile(file, info, path, row, n_rows, index))
            row += n_rows
        group["audio"].resize((row, spec.row_samples, spec.channels))
    return planned


def _write_tables(root: zarr.Group, planned: list[PlannedFile], rejected: list[RejectedFile],
                  known: dict[str, KnownFile]) -> None:
    by_stream: dict[str, list[PlannedFile]] = defaultdict(list)
    for pf in planned:
        by_stream[pf.stream].append(pf)
    for path, pfs in by_stream.items():
        group = root[path]
        spr = int(group.attrs["row_samples"])
        sr = int(group.attrs["sample_rate"])
        first = min(pf.store_row for pf in pfs)
        n_total = max(pf.store_row + pf.n_rows for pf in pfs)
        starts = np.full(n_total - first, NAT, dtype=np.int64)
        n_valid = np.zeros(n_total - first, dtype=np.int32)
        index = np.full(n_total - first, -1, dtype=np.int32)
        offsets = np.zeros(n_total - first, dtype=np.int64)
        for pf in pfs:
            sl = slice(pf.store_row - first, pf.store_row - first + pf.n_rows)
            file_offsets = np.arange(pf.n_rows, dtype=np.int64) * spr
            offsets[sl] = file_offsets
            index[sl] = pf.file_index
            if pf.status == "ok":
                starts[sl] = pf.file.start_ns + offset_ns(file_offsets, sr)
                n_valid[sl] = [row_valid(pf.info.frames, spr, r) for r in range(pf.n_rows)]
        for name, values in (("chunk_start", starts), ("n_valid", n_valid),
                             ("file_index", index), ("file_offset", offsets)):
            arr = group[name]
            if arr.shape[0] < n_total:
                arr.resize((n_total,))
            arr[first:n_total] = values
        n_files = max(group["file_url"].shape[0], max(pf.file_index for pf in pfs) + 1)
        columns = {
            "file_url": [pf.file.url for pf in pfs],
            "file_etag": [pf.file.etag for pf in pfs],
            "file_size": [pf.file.size for pf in pfs],
            "file_start": [pf.file.start_ns for pf in pfs],
            "file_frames": [pf.info.frames if pf.status == "ok" else 0 for pf in pfs],
            "file_status": [pf.status for pf in pfs],
            "file_error": [pf.error for pf in pfs],
        }
        idx = np.array([pf.file_index for pf in pfs])
        for name, values in columns.items():
            arr = group[name]
            if arr.shape[0] < n_files:
                arr.resize((n_files,))
            data = layout.as_object(values) if arr.dtype.kind in "OTU" else np.asarray(values, dtype=arr.dtype)
            # Indices are contiguous except for retried files, which overwrite their old entry.
            if np.array_equal(idx, np.arange(idx[0], idx[0] + len(idx))):
                arr[idx[0] : idx[0] + len(idx)] = data
            else:
                for i, v in zip(idx, data):
                    arr[int(i)] = v
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
