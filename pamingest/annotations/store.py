"""Annotations in a store: the tables in each stream group, attaching files, refreshing labels.

Layout (in the stream group itself, next to the files table, so that
``tree[stream].to_dataset()`` and the ``.pam`` accessor see it)::

    event_start, event_end           (event,)  int64 ns UTC (CF-encoded)
    event_low_hz, event_high_hz      (event,)  float64, NaN when unknown
    event_label, event_label_norm, event_source, event_annotator,
    event_kind, event_verdict, event_recording   (event,)  str
    event_confidence                 (event,)  float64, NaN for people
    event_reviewed                   (event,)  bool
    event_file, event_line           (event,)  -> annotation_file table, line in it
    effort_start, effort_end         (effort,) int64 ns UTC
    effort_label_norm ("" = every label), effort_source, effort_recording  (effort,) str
    effort_file, effort_line         (effort,)
    annotation_file_sha256, annotation_file_name, annotation_file_format,
    annotation_file_context, annotation_file_reader,
    annotation_file_events, annotation_file_effort   (annotation_file,)
    labels   (labelled_chunk, label)  int8: 1 positive, 0 negative, -1 unknown
    label    (label,)  str

Events and effort are the truth; ``labels`` is derived from them for rows
``0 .. labelled_chunk - 1`` (the rows the stream had when labels were last
computed) with the rule in the group's ``annotation_rule`` attribute. Its
first dimension is not ``chunk`` because ingest appends rows without knowing
about labels, and xarray refuses a group whose arrays disagree on a
dimension's length: rows added later are labelled by :func:`refresh_labels`
or on the fly by ``ds.pam.labels()``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import pandas as pd
import zarr

from ..errors import AnnotationError, AnnotationTargetError, ConfigError
from ..fsutil import filesystem
from ..progress import progress_bar
from ..registry import registry
from ..store import layout
from ..store.repo import Store, StoreLocation
from ..store.tables import Column, Table
from ..timing import NAT, offset_ns
from .base import (Annotations, AnnotationReader, ReadContext, Recording, RejectedRow, ResolvedRecording, ReviewCounts,
                   file_name)
from .labels import OverlapRule, chunk_labels, events_in_audio, row_spans

log = logging.getLogger(__name__)

ANNOTATIONS_ATTR = "pamingest_annotations"
RULE_ATTR = "annotation_rule"
LAYOUT_VERSION = 1

EVENTS = Table("event", {
    "event_start": Column("int64", NAT, time=True, key="start"),
    "event_end": Column("int64", NAT, time=True, key="end"),
    "event_low_hz": Column("float64", np.nan, key="low_hz"),
    "event_high_hz": Column("float64", np.nan, key="high_hz"),
    "event_label": Column(str, "", key="label"),
    "event_label_norm": Column(str, "", key="label_norm"),
    "event_source": Column(str, "", key="source"),
    "event_confidence": Column("float64", np.nan, key="confidence"),
    "event_annotator": Column(str, "", key="annotator"),
    "event_reviewed": Column("bool", False, key="reviewed"),
    "event_kind": Column(str, "", key="kind"),
    "event_verdict": Column(str, "", key="verdict"),
    "event_recording": Column(str, "", key="recording"),
    "event_file": Column("int32", -1, key="file"),
    "event_line": Column("int32", 0, key="line"),
})
EFFORT = Table("effort", {
    "effort_start": Column("int64", NAT, time=True, key="start"),
    "effort_end": Column("int64", NAT, time=True, key="end"),
    "effort_label_norm": Column(str, "", key="label_norm"),
    "effort_source": Column(str, "", key="source"),
    "effort_recording": Column(str, "", key="recording"),
    "effort_file": Column("int32", -1, key="file"),
    "effort_line": Column("int32", 0, key="line"),
})
ANNOTATION_FILES = Table("annotation_file", {
    "annotation_file_sha256": Column(str, "", key="sha256"),
    "annotation_file_name": Column(str, "", key="name"),
    "annotation_file_format": Column(str, "", key="format"),
    "annotation_file_context": Column(str, "", key="context"),
    "annotation_file_reader": Column(str, "", key="reader"),
    "annotation_file_events": Column("int64", 0, key="events"),
    "annotation_file_effort": Column("int64", 0, key="effort"),
})
TABLES = {"event": EVENTS, "effort": EFFORT, "annotation_file": ANNOTATION_FILES}
LABELS, LABEL_NAMES, LABELLED_DIM = "labels", "label", "labelled_chunk"


# ---------------------------------------------------------------- layout

def ensure_tables(group: zarr.Group) -> None:
    """Create the (empty) annotation tables of a stream group if it has none."""
    if ANNOTATIONS_ATTR in group.attrs:
        return
    for table in TABLES.values():
        table.create(group)
    group.attrs.update({ANNOTATIONS_ATTR: LAYOUT_VERSION})


def _append_table(group: zarr.Group, table: Table, frame: pd.DataFrame) -> int:
    # Columns as numpy arrays, not lists: a list of 300k Python ints or floats is ~10x the array.
    return table.append(group, {key: frame[key].to_numpy() for key in table.keys().values()}, by_key=True)


def read_table(group: zarr.Group, dim: str, keys: Iterable[str] | None = None) -> dict[str, np.ndarray]:
    """A stream's event, effort or annotation_file table as column -> numpy array (empty if none).

    ``keys``: only these columns (record keys, e.g. ``start``); default all.
    """
    table = TABLES[dim]
    if keys is not None:
        wanted = set(keys)
        table = Table(table.dim, {n: c for n, c in table.columns.items() if (c.key or n) in wanted}, table.chunk)
    if ANNOTATIONS_ATTR not in group.attrs:
        return {col.key: col.empty() for col in table.columns.values()}
    return table.read(group, by_key=True)


def stored_rule(group: zarr.Group) -> OverlapRule:
    return OverlapRule.from_attrs(group.attrs.get(RULE_ATTR))


def _rows(group: zarr.Group) -> tuple[np.ndarray, np.ndarray]:
    return row_spans(group["chunk_start"][:], group["n_valid"][:], int(group.attrs["sample_rate"]))


def stream_labels(group: zarr.Group, rule: OverlapRule | None = None) -> tuple[np.ndarray, list[str]]:
    """Recompute a stream's ``(chunk, label)`` labels for all its rows from its events and effort.

    Parameters
    ----------
    group : zarr.Group
        A stream group (read-only is enough).
    rule : OverlapRule, optional
        Default: the rule stored with the stream's annotations.

    Returns
    -------
    (numpy.ndarray, list of str)
        int8 matrix (1 positive, 0 negative, -1 unknown) and the label names.
    """
    start, end = _rows(group)
    # Only the columns the rule reads: a table's text columns are one Python str per row each.
    return chunk_labels(start, end, read_table(group, "event", ("start", "end", "label_norm", "reviewed")),
                        read_table(group, "effort", ("start", "end", "label_norm")), rule or stored_rule(group))


def write_labels(group: zarr.Group, labels: np.ndarray, names: list[str], rule: OverlapRule) -> None:
    """Replace a stream's ``labels``/``label`` arrays (shape may change, hence recreate)."""
    for name in (LABELS, LABEL_NAMES):
        if name in group:
            del group[name]
    group.create_array(LABEL_NAMES, shape=(len(names),), chunks=(max(len(names), 1),), dtype=str,
                       fill_value="", dimension_names=(LABEL_NAMES,))
    if names:
        group[LABEL_NAMES][:] = np.array(names, dtype=object)
    arr = group.create_array(LABELS, shape=labels.shape, chunks=(layout.META_CHUNK, max(len(names), 1)),
                             dtype="int8", fill_value=-1, dimension_names=(LABELLED_DIM, LABEL_NAMES),
                             attributes={"flag_values": [1, 0, -1], "flag_meanings": "positive negative unknown",
                                         "long_name": "chunk labels from events and effort"})
    if labels.size:
        arr[:] = labels
    group.attrs.update({RULE_ATTR: rule.as_attrs()})


# ---------------------------------------------------------------- store files as a lookup

class StoreFiles:
    """Recordings in a store's files tables, found by URL or file name (a ``RecordingLookup``)."""

    def __init__(self, root: zarr.Group) -> None:
        self.by_url: dict[str, list[ResolvedRecording]] = defaultdict(list)
        self.by_name: dict[str, list[ResolvedRecording]] = defaultdict(list)
        self.by_stem: dict[str, list[ResolvedRecording]] = defaultdict(list)
        for path, g in layout.iter_streams(root):
            sr = int(g.attrs["sample_rate"])
            urls, starts, frames = g["file_url"][:], g["file_start"][:], g["file_frames"][:]
            for url, start, n in zip(urls, starts, frames):
                start, n = int(start), int(n)
                if start == NAT:
                    continue
                rec = ResolvedRecording(str(url), start, start + int(offset_ns(n, sr)) if n > 0 else None, path)
                self.by_url[rec.url].append(rec)
                self.by_name[file_name(rec.url)].append(rec)
                self.by_stem[file_name(rec.url).rsplit(".", 1)[0]].append(rec)

    def find(self, name: str, stream: str = "") -> list[ResolvedRecording]:
        found = self.by_url.get(name)
        if not found:
            found = self.by_name.get(file_name(name), [])
            if "/" in name and "://" not in name and not name.startswith("/"):
                # A relative path (MarmAudio's parent/file, names repeated across parents): the recordings
                # whose path ends with it, when any; else by file name, as before.
                tail = "/" + name.strip("/")
                found = [r for r in found if r.url.split("::", 1)[0].endswith(tail)] or found
        return [r for r in found if layout.under(r.stream, stream)]

    def find_stem(self, stem: str, stream: str = "") -> list[ResolvedRecording]:
        """Recordings whose file name without its extension is ``stem`` (Raven names tables so)."""
        return [r for r in self.by_stem.get(stem, []) if layout.under(r.stream, stream)]

    def every(self, stream: str = "") -> list[ResolvedRecording]:
        """Every stored recording under ``stream`` (a fully annotated collection's effort), by URL."""
        return sorted((r for recs in self.by_url.values() for r in recs if layout.under(r.stream, stream)),
                      key=lambda r: (r.url, r.stream))


# ---------------------------------------------------------------- attach

@dataclass
class AttachedFile:
    """What attaching one annotation file did."""

    name: str
    format: str
    streams: list[str] = field(default_factory=list)
    events: int = 0
    effort: int = 0
    unchanged: list[str] = field(default_factory=list)
    outside_audio: int = 0
    skipped_rows: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    rejected: list[RejectedRow] = field(default_factory=list)
    review: ReviewCounts | None = None  # a review table's clip rows, answered and still "?"

    def as_dict(self) -> dict[str, Any]:
        return {**vars(self), "rejected": [{"line": r.line, "reason": r.reason} for r in self.rejected],
                "review": self.review.as_dict() if self.review is not None else None}


# Rejected rows listed per file by ``AttachReport.summary``; ``as_dict`` (``--json``) lists them all.
SUMMARY_REJECTED = 20


@dataclass
class AttachReport:
    """What one ``attach`` did: per file (rows rejected included), failures, the labels of each touched stream."""

    store: str
    snapshot_id: str | None = None
    files: list[AttachedFile] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    labels: dict[str, list[str]] = field(default_factory=dict)
    rebases: int = 0
    rebuilds: int = 0
    replaced: dict[str, int] = field(default_factory=dict)  # stream -> events of earlier versions removed

    @property
    def committed(self) -> bool:
        return self.snapshot_id is not None

    @property
    def unanswered_tables(self) -> list[str]:
        """Review tables read back without a single answer: nothing of them was attached."""
        return [f.name for f in self.files if f.review is not None and not f.review.answered]

    @property
    def rejected_rows(self) -> int:
        """Rows left out of the files read (each listed with its file, line and reason)."""
        return sum(len(f.rejected) for f in self.files)

    def summary(self) -> str:
        lines = [f"store      {self.store}"]
        for f in self.files:
            if f.streams:
                lines.append(f"attached   {f.name}: {f.events} events, {f.effort} effort spans -> "
                             f"{', '.join(f.streams)}")
            if f.unchanged:
                lines.append(f"unchanged  {f.name}: already attached to {', '.join(f.unchanged)}")
            if f.outside_audio:
                lines.append(f"  {f.outside_audio} events fall outside the ingested audio (kept)")
            if f.review is not None:
                a, u = f.review.answered, f.review.unanswered
                lines.append(f"review     {f.name}: " + (
                    f"no clip answered (all {u} still '?'): nothing attached from it" if not a
                    else f"{a} of {a + u} clips answered, {u} still '?' (left queued)" if u
                    else f"all {a} clips answered"))
            for site, n in f.skipped_rows.items():
                lines.append(f"  {n} lines for {site!r} skipped: no such stream in the store")
            lines += [f"  note: {n}" for n in f.notes]
            lines += [f"  rejected {r}" for r in f.rejected[:SUMMARY_REJECTED]]
            if len(f.rejected) > SUMMARY_REJECTED:
                lines.append(f"  ... and {len(f.rejected) - SUMMARY_REJECTED} more rejected rows (--json lists all)")
        lines.append(f"rejected   {self.rejected_rows} rows")
        lines.append(f"failed     {len(self.failed)} files")
        lines += [f"  - {msg}" for _, msg in self.failed]
        for path, names in self.labels.items():
            lines.append(f"labels     {path}: {', '.join(names) or '-'}")
        lines.append(f"snapshot   {self.snapshot_id or '-'}" + ("" if self.committed else " (nothing new: no commit)"))
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {"store": self.store, "snapshot_id": self.snapshot_id, "committed": self.committed,
                "rebases": self.rebases, "rebuilds": self.rebuilds,
                "files": [f.as_dict() for f in self.files], "rejected_rows": self.rejected_rows,
                "unanswered_tables": self.unanswered_tables,
                "failed": [{"file": n, "reason": m} for n, m in self.failed], "labels": self.labels,
                "replaced": self.replaced}


def read_bytes(url: str, storage_options: dict | None = None) -> bytes:
    fs, path = filesystem(str(url), storage_options)
    with fs.open(path, "rb") as f:
        return f.read()


def _route(ann: Annotations, streams: dict[str, zarr.Group], skip_unknown: bool):
    """stream path -> (event row indices, effort row indices); and site -> lines skipped (unknown sites).

    Rows are grouped by their (stream, site) pair, so the work is per pair, not per row.
    """
    targets: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = defaultdict(lambda: ([], []))
    skipped: dict[str, set] = defaultdict(set)  # site -> lines of the file skipped
    site_of = {p: str(g.attrs.get("site", "")) for p, g in streams.items()}
    for which, frame in ((0, ann.events), (1, ann.effort)):
        if not len(frame):
            continue
        pairs = frame.groupby(["stream", "site"], sort=False).indices
        for (stream, site), index in sorted(pairs.items(), key=lambda kv: int(kv[1][0])):
            paths = [p for p in streams if layout.under(p, stream)]
            if site and stream.strip("/") not in streams:
                # A row placed through the files table names its stream exactly; a site narrows the rest.
                wanted = {site.lower(), layout.safe_segment(site).lower()}
                # A stream of a whole site takes rows named for a part of it (a SanctSound product of
                # deployment CI01_01 goes to a stream of site CI01, and to the source's ci01_01).
                paths = [p for p in paths if site_of[p].lower() in wanted
                         or (site_of[p] and any(w.startswith(site_of[p].lower() + "_") for w in wanted))]
            if not paths and not (site and skip_unknown):
                line = int(frame["line"].iat[int(index[0])]) or None
                if not stream and not site:
                    raise AnnotationTargetError("cannot tell which stream the annotations belong to "
                                                "(the recording is not in the store): give the stream",
                                                ann.file, line)
                what = f"site {site!r}" + (f" under {stream!r}" if stream else "") if site else f"stream {stream!r}"
                raise AnnotationTargetError(f"unknown stream: the store has no {what}; it has "
                                            f"{', '.join(sorted(streams)) or 'no streams'}", ann.file, line)
            if not paths:
                skipped[site].update(frame["line"].to_numpy()[index].tolist())
            for p in paths:
                targets[p][which].append(np.asarray(index, dtype=np.int64))
    routed = {p: tuple(np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.int64) for parts in both)
              for p, both in targets.items()}
    return routed, {site: len(lines) for site, lines in skipped.items()}


def _context_key(ann: Annotations) -> str:
    return json.dumps([[u, int(s)] for u, s in ann.recordings])


def _attached(group: zarr.Group, sha: str, context: str) -> bool:
    if ANNOTATIONS_ATTR not in group.attrs:
        return False
    shas = np.asarray(group["annotation_file_sha256"][:], dtype=object)
    ctxs = np.asarray(group["annotation_file_context"][:], dtype=object)
    return bool(((shas == sha) & (ctxs == context)).any())


def get_reader(format: str | AnnotationReader, **options) -> AnnotationReader:
    """The reader for a format name (``raven``, ``audacity``, ``sanctsound``, ``podcast-tsv``,
    ``orcahello``, ``pods-ai``, ``podcast-json``), built with ``options``; a reader passes through."""
    if not isinstance(format, str):
        if options:
            raise ConfigError("reader options go to the reader's constructor, not with a reader instance")
        return format
    factory = registry("annotation_readers").get(format)
    try:
        return factory(**options)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"bad option for the {format} reader: {exc}") from None


def attach(
    store: str | StoreLocation,
    files: Iterable[str],
    format: str | AnnotationReader,
    *,
    options: dict | None = None,
    recording: Recording | None = None,
    recordings: Iterable[Recording] = (),
    stream: str | None = None,
    rule: OverlapRule | None = None,
    skip_unknown_streams: bool = False,
    store_options: dict | None = None,
    storage_options: dict | None = None,
    progress: bool = False,
    replace: bool = False,
) -> AttachReport:
    """Attach annotation files to a store's streams; events, effort and labels in one commit.

    Parameters
    ----------
    store : str or StoreLocation
        Store URL (path, ``s3://``, ``gs://``, ``memory://``).
    files : iterable of str
        Annotation files (paths or fsspec URLs).
    format : str or AnnotationReader
        The format, named explicitly (never guessed): ``raven``, ``audacity``,
        ``sanctsound``, ``podcast-tsv``, ``orcahello``, ``pods-ai``,
        ``podcast-json``; or a reader instance.
    options : dict, optional
        Settings for the reader's constructor (e.g. ``label_column``).
    recording, recordings : Recording
        The recording(s) file-relative annotations belong to (URL, or stream
        + file name, and UTC start); without a start it is looked up in the
        store's files tables.
    stream : str, optional
        Stream path (or prefix, e.g. ``sanctsound/CI01``) the annotations
        belong to; an unknown stream is an error.
    rule : OverlapRule, optional
        Overlap rule for the labels; default: the stream's stored rule, else
        ``OverlapRule()``. It is stored and reused for later refreshes.
    skip_unknown_streams : bool
        Skip (and count) rows for sites the store has no stream of, instead
        of failing the file (for exports covering more sites than the store).
    store_options, storage_options : dict, optional
        Options for the store and for reading the annotation files.
    progress : bool
        Show a progress bar (files attached) on stderr.
    replace : bool
        A file already attached under the same name (an earlier version of
        it) is detached first, in the same commit: its events and effort are
        replaced, not added to.

    Returns
    -------
    AttachReport
        A file that cannot be read or placed is listed in ``failed`` (with
        file and line) and the others are attached. A row that cannot be
        read is listed in its file's ``rejected`` (line and reason) and the
        file's other rows are attached; attaching a corrected file later
        adds its rows again (detaching is future work), so fix a file
        before its first attach where you can. Attaching a file whose
        content was already attached (against the same recordings) changes
        nothing. Events outside any ingested audio are kept and counted.
    """
    reader = get_reader(format, **(options or {}))
    st = Store.open(store, store_options)
    given = tuple(recordings) + ((recording,) if recording is not None else ())
    contents: list[tuple[str, bytes | None, str]] = []  # name, bytes, why they could not be read
    for f in files:
        name = str(f)
        try:
            contents.append((name, read_bytes(name, storage_options), ""))
        except (OSError, ValueError) as exc:
            contents.append((name, None, f"{name}: cannot read: {exc}"))

    bar = progress_bar(progress, len(contents), "files attached", "file")

    def ticking():
        for item in contents:
            yield item
            bar.update(1)

    def apply(root: zarr.Group) -> AttachReport:
        # Everything that depends on the store is read here, so that a re-application on a
        # newer tip (another writer committed meanwhile) places the files against that tip.
        bar.reset()
        replaced = _detach(root, [name for name, data, _ in contents if data is not None]) if replace else {}
        report = _attach(root, st.url, ticking(), reader, given, stream, rule, skip_unknown_streams,
                         relabel=set(replaced))
        report.replaced = {path: n for path, n in replaced.items()}
        return report

    def message(report: AttachReport) -> str:
        attached = [f for f in report.files if f.streams]
        return (f"pamingest annotate ({reader.format}): {len(attached)} files, "
                f"{sum(f.events for f in report.files)} events")

    def metadata(report: AttachReport) -> dict:
        return {"pamingest": "annotate", "format": reader.format,
                "files": [f.name for f in report.files if f.streams],
                "events": sum(f.events for f in report.files)}

    try:
        commit = st.update(apply, message, metadata)
    finally:
        bar.close()
    report = commit.value
    report.snapshot_id = commit.snapshot_id
    report.rebases, report.rebuilds = commit.rebases, commit.rebuilds
    return report


def _detach(root: zarr.Group, names: Iterable[str]) -> dict[str, int]:
    """Remove what the annotation files ``names`` (as attached) added to every stream: their events,
    effort and file records; later files' indices move down. Returns stream -> events removed.

    Labels are not recomputed here: the caller does, with whatever it attaches in the same commit.
    """
    names = set(names)
    removed: dict[str, int] = {}
    for path, group in layout.iter_streams(root):
        if ANNOTATIONS_ATTR not in group.attrs:
            continue
        files = np.asarray(group["annotation_file_name"][:], dtype=object)
        gone = np.flatnonzero(np.isin(files, list(names)))
        if not len(gone):
            continue
        for table, column in ((EVENTS, "event_file"), (EFFORT, "effort_file")):
            index = group[column][:]
            n_before = len(index)
            table.keep(group, ~np.isin(index, gone))
            kept = group[column][:]
            # A file's index is its place in the annotation_file table: later files move down.
            if len(kept):
                group[column][:] = (kept - np.searchsorted(gone, kept)).astype(kept.dtype)
            if column == "event_file":
                removed[path] = n_before - len(kept)
        ANNOTATION_FILES.keep(group, ~np.isin(np.arange(len(files)), gone))
    return removed


def detach(store: str | StoreLocation, files: Iterable[str], *, rule: OverlapRule | None = None,
           store_options: dict | None = None) -> dict[str, int]:
    """Remove what attached annotation files (by the name they were attached under) added; one commit.

    Returns stream -> events removed (streams the files never reached are
    not listed). The streams' labels are recomputed.
    """
    names = [str(f) for f in files]
    st = Store.open(store, store_options)

    def apply(root: zarr.Group) -> dict[str, int]:
        removed = _detach(root, names)
        streams = dict(layout.iter_streams(root))
        for path in removed:
            use = rule or stored_rule(streams[path])
            labels, label_names = stream_labels(streams[path], use)
            write_labels(streams[path], labels, label_names, use)
        return removed

    return st.update(apply, lambda removed: f"pamingest detach: {len(names)} files from {len(removed)} streams",
                     lambda removed: {"pamingest": "detach", "files": names}).value


def _attach(root: zarr.Group, url: str, contents, reader: AnnotationReader, given, stream: str | None,
            rule: OverlapRule | None, skip_unknown_streams: bool, relabel: set[str] = frozenset()) -> AttachReport:
    streams = dict(layout.iter_streams(root))
    if stream and not any(layout.under(p, stream) for p in streams):
        raise AnnotationTargetError(f"unknown stream {stream!r}: the store has "
                                    f"{', '.join(sorted(streams)) or 'no streams'}")
    context = ReadContext(given, StoreFiles(root), (stream or "").strip("/"))
    report = AttachReport(url)
    touched: set[str] = set(relabel)  # streams whose labels change (relabel: a detach before this attach)
    seen: set[tuple[str, str, str]] = set()
    for name, data, unreadable in contents:
        if data is None:
            report.failed.append((name, unreadable))
            continue
        sha = hashlib.sha256(data).hexdigest()
        try:
            ann = reader(data, name, context)
            targets, skipped = _route(ann, streams, skip_unknown_streams)
        except AnnotationError as exc:
            report.failed.append((name, str(exc)))
            continue
        except csv.Error as exc:  # e.g. a field larger than csv's limit: a broken file, not a crash
            report.failed.append((name, f"{name}: not a readable table: {exc}"))
            continue
        entry = AttachedFile(name, reader.format, skipped_rows=skipped, notes=list(ann.notes),
                             rejected=list(ann.rejected), review=ann.review)
        ctx = _context_key(ann)
        outside = np.ones(len(ann.events), dtype=bool)
        for path in sorted(targets):
            ev_idx, ef_idx = targets[path]
            group = streams[path]
            if (path, sha, ctx) in seen or _attached(group, sha, ctx):
                entry.unchanged.append(path)
                continue
            seen.add((path, sha, ctx))
            ensure_tables(group)
            file_index = _append_table(group, ANNOTATION_FILES, pd.DataFrame({
                "sha256": [sha], "name": [name], "format": [reader.format], "context": [ctx],
                "reader": [repr(reader)], "events": [len(ev_idx)], "effort": [len(ef_idx)]}))
            events = ann.events.iloc[ev_idx].assign(file=file_index)
            effort = ann.effort.iloc[ef_idx].assign(file=file_index)
            _append_table(group, EVENTS, events)
            _append_table(group, EFFORT, effort)
            start, end = _rows(group)
            inside = events_in_audio(start, end, events["start"].to_numpy(np.int64), events["end"].to_numpy(np.int64))
            outside[np.asarray(ev_idx, dtype=np.int64)[inside]] = False
            entry.streams.append(path)
            entry.events += len(ev_idx)
            entry.effort += len(ef_idx)
            touched.add(path)
        if entry.streams:
            # An event counts as outside when no stream it went to has audio at its time.
            placed = np.zeros(len(ann.events), dtype=bool)
            for path in entry.streams:
                placed[targets[path][0]] = True
            entry.outside_audio = int((outside & placed).sum())
        report.files.append(entry)
    for path in sorted(touched):
        group = streams[path]
        use = rule or stored_rule(group)
        labels, names = stream_labels(group, use)
        write_labels(group, labels, names, use)
        report.labels[path] = names
    return report


def refresh_labels(store: str | StoreLocation, streams: Iterable[str] | None = None, *,
                   rule: OverlapRule | None = None, store_options: dict | None = None) -> dict[str, list[str]]:
    """Recompute the labels of annotated streams for all their rows (e.g. after an ingest added rows).

    Parameters
    ----------
    store : str or StoreLocation
        Store URL.
    streams : iterable of str, optional
        Stream paths (or prefixes); default: every annotated stream.
    rule : OverlapRule, optional
        A new rule (stored); default: each stream's stored rule.

    Returns
    -------
    dict
        Stream path -> label names, for the streams whose labels changed
        (all in one commit; nothing is committed when none changed).
    """
    prefixes = list(streams) if streams is not None else [""]

    def apply(root: zarr.Group) -> dict[str, list[str]]:
        changed: dict[str, list[str]] = {}
        for path, group in layout.iter_streams(root, prefixes):
            if ANNOTATIONS_ATTR not in group.attrs:
                continue
            use = rule or stored_rule(group)
            labels, names = stream_labels(group, use)
            same = (LABELS in group and group[LABELS].shape == labels.shape
                    and list(group[LABEL_NAMES][:]) == names and np.array_equal(group[LABELS][:], labels)
                    and stored_rule(group) == use and RULE_ATTR in group.attrs)
            if not same:
                write_labels(group, labels, names, use)
                changed[path] = names
        return changed

    commit = Store.open(store, store_options).update(
        apply, lambda changed: f"pamingest labels: refresh {len(changed)} streams",
        lambda changed: {"pamingest": "labels", "streams": sorted(changed)})
    return commit.value


# ---------------------------------------------------------------- reading back (the .pam accessor)

def _ns(values) -> np.ndarray:
    arr = np.asarray(values)
    if arr.dtype.kind == "M":
        return arr.astype("datetime64[ns]").astype(np.int64)
    return arr.astype(np.int64)


def _dataset_table(ds, table: Table) -> dict[str, np.ndarray]:
    out = {}
    for name, col in table.columns.items():
        if name not in ds:
            return {c.key: c.empty() for c in table.columns.values()}
        v = ds[name].values
        out[col.key] = _ns(v) if col.time else (np.asarray(v, dtype=object) if col.is_text else np.asarray(v))
    return out


def events_frame(ds) -> pd.DataFrame:
    """A stream Dataset's events as a DataFrame (see ``PamAccessor.events``)."""
    ev = _dataset_table(ds, EVENTS)
    files = _dataset_table(ds, ANNOTATION_FILES)["name"]
    start, end = row_spans(_ns(ds["chunk_start"].values), ds["n_valid"].values, int(ds.attrs["sample_rate"]))
    frame = pd.DataFrame({
        "start": ev["start"].astype("datetime64[ns]"), "end": ev["end"].astype("datetime64[ns]"),
        **{k: ev[k] for k in ("low_hz", "high_hz", "label", "label_norm", "source", "confidence", "annotator",
                              "reviewed", "kind", "verdict", "recording")},
        "file": files[ev["file"]] if len(files) else np.zeros(0, dtype=object),
        "line": ev["line"],
        "in_audio": events_in_audio(start, end, ev["start"], ev["end"]),
    })
    return frame


def effort_frame(ds) -> pd.DataFrame:
    """A stream Dataset's effort spans as a DataFrame (``label_norm`` ``""`` = every label)."""
    ef = _dataset_table(ds, EFFORT)
    files = _dataset_table(ds, ANNOTATION_FILES)["name"]
    return pd.DataFrame({
        "start": ef["start"].astype("datetime64[ns]"), "end": ef["end"].astype("datetime64[ns]"),
        "label_norm": ef["label_norm"], "source": ef["source"], "recording": ef["recording"],
        "file": files[ef["file"]] if len(files) else np.zeros(0, dtype=object), "line": ef["line"],
    })


def labels_array(ds, rule: OverlapRule | None = None):
    """``(chunk, label)`` labels of a stream Dataset as an int8 DataArray.

    The stored labels are used for the rows they cover; rows appended since
    (or all rows, when ``rule`` differs from the stored one) are computed from
    the stored events and effort.
    """
    import xarray as xr

    stored = OverlapRule.from_attrs(ds.attrs.get(RULE_ATTR))
    use = rule or stored
    start, end = row_spans(_ns(ds["chunk_start"].values), ds["n_valid"].values, int(ds.attrs["sample_rate"]))
    n = len(start)
    have = LABELS in ds and use == stored
    names = [str(x) for x in ds[LABEL_NAMES].values] if LABELS in ds else None
    if have and ds[LABELS].shape[0] >= n:
        values = np.asarray(ds[LABELS].values[:n], dtype=np.int8)
    else:
        values, names = chunk_labels(start, end, _dataset_table(ds, EVENTS),
                                     _dataset_table(ds, EFFORT), use, names if have else None)
        if have:
            k = ds[LABELS].shape[0]
            values[:k] = np.asarray(ds[LABELS].values, dtype=np.int8)
    return xr.DataArray(values, dims=("chunk", "label"),
                        coords={"label": np.asarray(names, dtype=object),
                                "chunk_start": ("chunk", ds["chunk_start"].values)},
                        name="labels", attrs={"flag_values": [1, 0, -1],
                                              "flag_meanings": "positive negative unknown", **use.as_attrs()})
