"""Take the queue in batches, score them on Dask workers, commit each batch.

1. read the queue from one snapshot of ``main`` (``queue.py``);
2. cut each stream's queued rows into batches (rows of one stream, bounded
   in samples so a worker's memory does not depend on the rate);
3. on the executor, each batch reads its rows from that snapshot (a pickled
   read-only Icechunk session) and runs the labeller, built from its spec and
   loaded once per worker process (``_labeler_for``);
4. the client writes the scores, the status and the detections of the
   finished batches in one commit on ``main`` (every ``commit_seconds``, or
   each batch with 0), writing only rows still queued there, through
   ``Store.update``: if ``main`` moved meanwhile, the commit is rebased when
   the other commit touched other arrays (an annotate, another stream's
   ingest), and otherwise re-applied on the new tip, again only to rows still
   queued (an ingest that grew this stream, another labelling run).

So a run killed at any point leaves every committed batch scored and the
rest queued; running again scores the rest, and a row is never written twice
for the same labeller version. A batch computed but not committed before a
kill is computed again: work can be repeated, results cannot.
"""

from __future__ import annotations

import logging
import pickle
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import zarr

from ..errors import PROGRAMMING_ERRORS, LabelingError
from ..executor import executor_for
from ..progress import progress_bar
from ..store import layout
from ..store.repo import Commit, Store, StoreLocation, load_session
from ..store.tables import gather, scatter
from ..timing import NS_PER_S
from .base import ChunkContext, Detection, Labeler, LabelerSpec, full_scale
from .queue import (DETECTIONS, FAILED, FAILURES, QUEUED, SCORED, LabelerInfo, ensure_labeler, score_name,
                    status_name, store_queue)

log = logging.getLogger(__name__)

DEFAULT_BATCH_ROWS = 32
# Finished batches are committed together at most this often: a commit costs ~15 ms
# on a local store, and a fast labeller finishes a batch in a fraction of a second.
DEFAULT_COMMIT_SECONDS = 2.0
# A batch holds at most this many samples (x channels) of audio: 128 MiB as float32.
MAX_BATCH_SAMPLES = 32 * 1024 * 1024


# ---------------------------------------------------------------- worker side

_LOADED: dict[LabelerSpec, Labeler] = {}
_LOCK = threading.Lock()


def _labeler_for(spec: LabelerSpec) -> Labeler:
    """The labeller of ``spec``, built and loaded once per process, then reused by every task.

    A module-level cache is what a Dask worker keeps between tasks (the
    worker process imports this module once), so a model file is read once
    per worker, not per batch; the lock covers workers with several threads.
    """
    labeler = _LOADED.get(spec)
    if labeler is None:
        with _LOCK:
            labeler = _LOADED.get(spec)
            if labeler is None:
                labeler = spec.build()
                labeler.load()
                _LOADED[spec] = labeler
    return labeler


@dataclass(frozen=True)
class Batch:
    """Rows of one stream to score together, with what the client already knows of them."""

    stream: str
    rows: tuple[int, ...]
    n_valid: tuple[int, ...] = ()
    sample_rate: int = 0
    full_scale: float = 0.0


@dataclass
class BatchResult:
    """Scores for a batch, or the reason it failed (the batch is carried with its result)."""

    batch: Batch
    scores: np.ndarray | None = None
    detections: list[Detection] = field(default_factory=list)
    error: str | None = None
    audio_seconds: float = 0.0
    compute_seconds: float = 0.0
    read_seconds: float = 0.0


def _read_audio(audio: zarr.Array, rows: np.ndarray) -> np.ndarray:
    """Rows of the audio array; one slice read when they are contiguous (the usual case)."""
    return gather(audio, rows)


def read_rows(session, stream: str, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """(audio float32 ``(n, samples, channels)`` scaled to [-1, 1), n_valid, sample rate) of rows."""
    group = zarr.open_group(session.store, path=stream, mode="r")
    audio = group["audio"]
    n_valid = np.asarray(group["n_valid"].get_orthogonal_selection((rows,)), dtype=np.int64)
    scale = full_scale(audio.dtype, group.attrs.get("bits_per_sample"))
    return _scaled(_read_audio(audio, rows), scale), n_valid, int(group.attrs["sample_rate"])


def _scaled(data: np.ndarray, scale: float) -> np.ndarray:
    x = data.astype(np.float32)
    if scale != 1.0:
        x *= np.float32(1.0 / scale)
    return x


_SESSIONS: dict[bytes, Any] = {}


def _session_for(session_bytes: bytes):
    """The pinned read-only session, unpickled once per process and run: later batches reuse its
    cached manifests instead of reading them again."""
    session = _SESSIONS.get(session_bytes)
    if session is None:
        with _LOCK:
            if len(_SESSIONS) >= 4:  # runs come and go; keep the last few
                _SESSIONS.pop(next(iter(_SESSIONS)))
            session = _SESSIONS[session_bytes] = load_session(session_bytes)
    return session


def label_batch(batch: Batch, session_bytes: bytes, spec: LabelerSpec) -> BatchResult:
    """Worker task: read a batch's rows from the pinned snapshot and score them."""
    try:
        labeler = _labeler_for(spec)
        session = _session_for(session_bytes)
        rows = np.asarray(batch.rows, dtype=np.int64)
        t_read = time.perf_counter()
        if batch.sample_rate:
            audio = _scaled(_read_audio(zarr.open_array(session.store, path=f"{batch.stream}/audio", mode="r"),
                                        rows), batch.full_scale)
            n_valid, rate = np.asarray(batch.n_valid, dtype=np.int64), batch.sample_rate
        else:
            audio, n_valid, rate = read_rows(session, batch.stream, rows)
        if getattr(labeler, "uses_context", False):
            group = zarr.open_group(session.store, path=batch.stream, mode="r")
            starts = np.asarray(gather(group["chunk_start"], rows), dtype=np.int64)
            context = ChunkContext(batch.stream, starts, dict(group.attrs))
            t0 = time.perf_counter()
            out = labeler(audio, n_valid, rate, context=context)
        else:
            t0 = time.perf_counter()
            out = labeler(audio, n_valid, rate)
        elapsed = time.perf_counter() - t0
        read = t0 - t_read
        scores = np.asarray(out.scores, dtype=np.float32)
        if scores.shape != (len(rows), len(labeler.classes)):
            raise LabelingError(f"labeler {labeler.name} returned scores of shape {scores.shape} for "
                                f"{len(rows)} chunks and {len(labeler.classes)} classes")
        for d in out.detections:
            if not 0 <= d.chunk < len(rows):
                raise LabelingError(f"labeler {labeler.name} returned a detection for chunk {d.chunk} "
                                    f"of a batch of {len(rows)}")
        return BatchResult(batch, scores, list(out.detections), None, float(n_valid.sum()) / rate, elapsed, read)
    except PROGRAMMING_ERRORS:
        raise  # a bug (pamingest's or the labeller's) stops the run instead of marking chunks failed
    except Exception as exc:  # noqa: BLE001 - recorded with the rows, the run goes on
        where = f"{batch.stream} rows {batch.rows[0]}..{batch.rows[-1]}"
        return BatchResult(batch, error=f"{where}: {type(exc).__name__}: {exc}")


# ---------------------------------------------------------------- report

@dataclass
class PseudolabelReport:
    """What one ``pseudolabel`` run did. ``summary()`` is what the CLI prints."""

    store: str
    labeler: str
    version: str
    key: str
    params: dict[str, Any]
    run_id: str = ""
    queued: int = 0
    scored: int = 0
    failed: int = 0
    unfinished: int = 0
    skipped_done: int = 0
    batches: int = 0
    commits: int = 0
    rebases: int = 0
    rebuilds: int = 0
    detections: int = 0
    audio_seconds: float = 0.0
    compute_seconds: float = 0.0
    read_seconds: float = 0.0
    commit_seconds: float = 0.0
    elapsed_seconds: float = 0.0
    streams: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    snapshot_id: str | None = None
    dashboard_link: str | None = None

    def summary(self) -> str:
        lines = [
            f"store      {self.store}",
            f"labeler    {self.labeler} v{self.version} (scores: {score_name(self.key)})",
            f"queued     {self.queued} chunks in {len(self.streams)} streams",
            f"scored     {self.scored} chunks ({self.audio_seconds / 3600:.3f} h of audio) in {self.commits} commits"
            + (f"; {self.skipped_done} already scored by another run" if self.skipped_done else ""),
            f"detections {self.detections}",
            f"failed     {self.failed} chunks",
        ]
        lines += [f"  - {e}" for e in self.errors[:20]]
        if self.unfinished:
            lines.append(f"unfinished {self.unfinished} chunks stay queued (a worker was lost): run again")
        landed = (f" ({self.rebases} rebases and {self.rebuilds} re-applications onto other writers' commits)"
                  if self.rebases or self.rebuilds else "")
        lines.append(f"snapshot   {self.snapshot_id or '-'}{landed}")
        lines.append(f"elapsed    {self.elapsed_seconds:.1f} s")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in (
            "store", "labeler", "version", "key", "params", "run_id", "queued", "scored", "failed", "unfinished",
            "skipped_done", "batches", "commits", "rebases", "rebuilds", "detections", "audio_seconds", "compute_seconds",
            "read_seconds", "commit_seconds", "elapsed_seconds", "streams", "errors", "snapshot_id")}


# ---------------------------------------------------------------- client side

def make_batches(root: zarr.Group, queued: dict[str, np.ndarray], batch_rows: int) -> list[Batch]:
    """Each stream's queued rows in row order, cut into batches of at most ``batch_rows`` rows
    and ``MAX_BATCH_SAMPLES`` samples."""
    batches = []
    for path in sorted(queued):
        rows = queued[path]
        if not len(rows):
            continue
        group = root[path]
        audio = group["audio"]
        per_row = max(1, audio.shape[1] * audio.shape[2])
        size = max(1, min(batch_rows, MAX_BATCH_SAMPLES // per_row))
        n_valid = np.asarray(group["n_valid"][:], dtype=np.int64)
        rate = int(group.attrs["sample_rate"])
        scale = full_scale(audio.dtype, group.attrs.get("bits_per_sample"))
        for k in range(0, len(rows), size):
            part = rows[k : k + size]
            batches.append(Batch(path, tuple(int(r) for r in part), tuple(int(v) for v in n_valid[part]), rate,
                                 scale))
    return batches


def _apply(root: zarr.Group, info: LabelerInfo, results: list[BatchResult]) -> tuple[int, int, int, int]:
    """Write results into a writable session's groups; only rows still queued there.

    Returns (rows scored, rows failed, rows skipped as already done, detections).
    """
    scored = failed = skipped = n_det = 0
    by_stream: dict[str, list[BatchResult]] = defaultdict(list)
    for r in results:
        by_stream[r.batch.stream].append(r)
    for path, items in sorted(by_stream.items()):
        group = root[path]
        ensure_labeler(group, info, path)
        n_rows = group["n_valid"].shape[0]
        status_arr, score_arr = group[status_name(info.key)], group[score_name(info.key)]
        if status_arr.shape[0] < n_rows or score_arr.shape[0] < n_rows:
            # Rows appended by a writer that did not know about per-row arrays.
            layout.grow_row_arrays(group, n_rows)
            status_arr, score_arr = group[status_name(info.key)], group[score_name(info.key)]
        rows = np.concatenate([np.asarray(r.batch.rows, dtype=np.int64) for r in items])
        status = np.asarray(gather(status_arr, rows))
        # Row start times only matter for detection boxes.
        starts = (np.asarray(gather(group["chunk_start"], rows), dtype=np.int64)
                  if any(r.detections for r in items) else np.zeros(len(rows), dtype=np.int64))
        pos = 0
        det = {name: [] for name in DETECTIONS.columns}
        fail = {name: [] for name in FAILURES.columns}
        ok_rows, ok_scores, bad_rows = [], [], []
        for r in items:
            n = len(r.batch.rows)
            fresh = (status[pos : pos + n] == QUEUED) | (status[pos : pos + n] == FAILED)
            batch_rows = rows[pos : pos + n]
            batch_starts = starts[pos : pos + n]
            skipped += int((~fresh).sum())
            if r.error is None:
                ok_rows.append(batch_rows[fresh])
                ok_scores.append(r.scores[fresh])
                for d in r.detections:
                    if not fresh[d.chunk]:
                        continue
                    t0 = int(batch_starts[d.chunk])
                    det["detection_chunk"].append(int(batch_rows[d.chunk]))
                    det["detection_start"].append(t0 + int(round(d.start * NS_PER_S)))
                    det["detection_end"].append(t0 + int(round(d.end * NS_PER_S)))
                    det["detection_low_hz"].append(d.low_hz)
                    det["detection_high_hz"].append(d.high_hz)
                    det["detection_score"].append(d.score)
                    det["detection_class"].append(d.label)
                    det["detection_labeler"].append(info.key)
            else:
                bad = batch_rows[fresh]
                bad_rows.append(bad)
                fail["labeling_failure_chunk"] += bad.tolist()
                fail["labeling_failure_labeler"] += [info.key] * len(bad)
                fail["labeling_failure_reason"] += [r.error] * len(bad)
            pos += n
        if ok_rows:
            good = np.concatenate(ok_rows)
            if len(good):
                scatter(score_arr, good, np.concatenate(ok_scores))
                scatter(status_arr, good, np.full(len(good), SCORED, dtype=np.int8))
                scored += len(good)
        if bad_rows:
            bad = np.concatenate(bad_rows)
            if len(bad):
                status_arr.set_orthogonal_selection((bad,), np.full(len(bad), FAILED, dtype=np.int8))
                failed += len(bad)
        if det["detection_chunk"]:
            DETECTIONS.append(group, det)
            n_det += len(det["detection_chunk"])
        if fail["labeling_failure_chunk"]:
            FAILURES.append(group, fail)
    return scored, failed, skipped, n_det


def commit_results(store: Store, info: LabelerInfo, results: list[BatchResult],
                   run_id: str) -> tuple[Commit, tuple[int, int, int, int]]:
    """Write finished batches to ``main`` in one commit, landing on top of other writers' commits.

    Returns the commit (``snapshot_id`` None when nothing was left to write)
    and the counts of ``_apply`` from its last application.
    """
    rows = sorted({(r.batch.stream, r.batch.rows[0]) for r in results})

    def message(counts) -> str:
        scored, failed, _, _ = counts
        return (f"pamingest pseudolabel {info.name} v{info.version}: {scored} chunks"
                + (f", {failed} failed" if failed else ""))

    def metadata(counts) -> dict:
        scored, failed, _, _ = counts
        return {"pamingest": "pseudolabel", "labeler": info.name, "version": info.version, "key": info.key,
                "run_id": run_id, "scored": scored, "failed": failed,
                "first_rows": [[s, int(r)] for s, r in rows[:8]]}

    commit = store.update(lambda root: _apply(root, info, results), message, metadata)
    return commit, commit.value


def pseudolabel(
    store: str | StoreLocation,
    labeler: str | LabelerSpec,
    *,
    params: dict[str, Any] | None = None,
    tag: str = "",
    streams: Iterable[str] | None = None,
    client: Any = None,
    n_workers: int | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    max_chunks: int | None = None,
    retry_failed: bool = False,
    skip_flagged=None,
    commit_seconds: float = DEFAULT_COMMIT_SECONDS,
    store_options: dict | None = None,
    progress: bool = False,
) -> PseudolabelReport:
    """Score every queued chunk of a store with a labeller, committing finished batches as it goes.

    Parameters
    ----------
    store : str or StoreLocation
        Store URL.
    labeler : str
        ``NAME[:VARIANT]``: ``energy:killer-whale``, ``energy:humpback``,
        ``birdnet``, or a name from the ``pamingest.labelers`` entry points.
    params : dict, optional
        Labeller settings (e.g. ``{"threshold_db": 8}``); stored with the scores.
    tag : str
        Name for a variant with other parameters (scored as another labeller).
    streams : iterable of str, optional
        Stream paths or prefixes (default: every stream).
    client : distributed.Client, str, "serial" or None
        Where labelling runs (as for ``ingest``); None starts a LocalCluster, unless the queued
        audio is small (below ``executor.LOCAL_WORK_BYTES`` decoded): then threads of this process.
    batch_rows : int
        Chunks per task.
    max_chunks : int, optional
        Score at most this many chunks in this run (the rest stays queued).
    retry_failed : bool
        Queue again chunks whose labelling failed before.
    skip_flagged : str or list of str, optional
        Leave out chunks with these quality flags (``"all"`` or names:
        ``clipped``, ``dropout``, ``silent``, ``dc_offset``; default thresholds,
        ``pamingest.quality``): they stay queued for a later run without it.
    commit_seconds : float
        Finished batches are committed together once this long has passed
        since the last commit (and at the end); 0 commits every batch on its
        own. A kill loses at most this much finished work, plus the batches
        in flight.
    progress : bool
        Show a progress bar (chunks scored) on stderr.

    Returns
    -------
    PseudolabelReport
    """
    t0 = time.perf_counter()
    spec = LabelerSpec.parse(labeler, params, tag)
    info = LabelerInfo.of(spec.build())  # on the client: bad settings fail before any work
    st = Store.open(store, store_options)
    base = st.tip()
    session = st.session(base)
    root = zarr.open_group(session.store, mode="r")
    report = PseudolabelReport(st.url, info.name, info.version, info.key, info.params,
                               run_id=uuid.uuid4().hex[:12], snapshot_id=base)
    queues = store_queue(root, info.key, streams, retry_failed, skip_flagged)
    for q in queues:
        known = root[q.stream].attrs.get("pamingest_labelers") or {}
        if info.key in known:
            ensure_labeler_check(root[q.stream], info, q.stream)
    queued = {q.stream: q.queued_rows for q in queues if q.queued}
    if max_chunks is not None:
        left, capped = max(0, int(max_chunks)), {}
        for path in sorted(queued):
            capped[path], left = queued[path][:left], left - min(left, len(queued[path]))
        queued = {p: r for p, r in capped.items() if len(r)}
    report.queued = int(sum(len(r) for r in queued.values()))
    report.streams = sorted(queued)
    batches = make_batches(root, queued, batch_rows)
    report.batches = len(batches)
    if not batches:
        report.elapsed_seconds = time.perf_counter() - t0
        return report
    session_bytes = pickle.dumps(session)
    # The decoded audio to score: a few new rows (a live poll's) are scored in threads here, as
    # ingest runs a small job, instead of waiting seconds for a LocalCluster to start.
    work_bytes = sum(len(rows) * int(np.prod(root[path]["audio"].shape[1:])) * root[path]["audio"].dtype.itemsize
                     for path, rows in queued.items())
    with executor_for(client, n_workers, work_bytes=work_bytes) as executor, \
            progress_bar(progress, report.queued, "chunks scored", "chunk") as bar:
        report.dashboard_link = executor.dashboard_link
        limit = 2 * executor.n_threads + 1
        pending: list[BatchResult] = []
        last_commit = time.perf_counter()
        left = len(batches)
        for batch, future in executor.map_unordered(label_batch, batches, limit, session_bytes=session_bytes,
                                                    spec=spec):
            left -= 1
            bar.update(len(batch.rows))
            try:
                pending.append(future.result())
            except PROGRAMMING_ERRORS:
                raise
            except Exception as exc:  # noqa: BLE001 - a lost worker: the rows stay queued
                report.unfinished += len(batch.rows)
                report.errors.append(f"{batch.stream} rows {batch.rows[0]}..{batch.rows[-1]}: not scored "
                                     f"({type(exc).__name__}: {exc}); still queued")
            if pending and (left == 0 or time.perf_counter() - last_commit >= commit_seconds):
                _commit_pending(st, info, pending, report)
                pending, last_commit = [], time.perf_counter()
        if pending:
            _commit_pending(st, info, pending, report)
    report.elapsed_seconds = time.perf_counter() - t0
    return report


def _commit_pending(store: Store, info: LabelerInfo, pending: list[BatchResult], report: PseudolabelReport) -> None:
    t_commit = time.perf_counter()
    commit, (scored, failed, skipped, n_det) = commit_results(store, info, pending, report.run_id)
    report.commit_seconds += time.perf_counter() - t_commit
    report.rebases += commit.rebases
    report.rebuilds += commit.rebuilds
    if commit.snapshot_id is not None:
        report.snapshot_id = commit.snapshot_id
        report.commits += 1
    report.scored += scored
    report.failed += failed
    report.skipped_done += skipped
    report.detections += n_det
    for result in pending:
        if result.error is None:
            report.audio_seconds += result.audio_seconds
            report.compute_seconds += result.compute_seconds
            report.read_seconds += result.read_seconds
        else:
            report.errors.append(result.error)
            log.warning("%s", result.error)


def ensure_labeler_check(group: zarr.Group, info: LabelerInfo, path: str) -> None:
    """Raise ConfigError now (before any work) if the stored labeller has other parameters."""
    from .queue import labelers_in

    have = labelers_in(group).get(info.key)
    if have is not None and (have.get("params") != info.params or tuple(have.get("classes", ())) != info.classes):
        # ensure_labeler raises the detailed message; it is only reached on mismatch.
        ensure_labeler(group, info, path)


__all__ = ["Batch", "BatchResult", "DEFAULT_BATCH_ROWS", "PseudolabelReport", "commit_results", "label_batch",
           "make_batches", "pseudolabel", "read_rows"]
