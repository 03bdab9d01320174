"""The labelling queue, held in the store: what is queued and what is done, per labeller version.

For each labeller (name + version) a stream group gets, next to its audio::

    score__<key>     (chunk, class__<key>)  float32, NaN until scored (or not assessable)
    status__<key>    (chunk,)  int8: 0 queued (fill value), 1 scored, 2 failed
    class__<key>     (class__<key>,)  str: the labeller's classes
    detection_*      (detection,)  event boxes of every labeller: chunk, start, end (ns UTC),
                     low_hz, high_hz, score, class, labeler (key)
    labeling_failure_chunk, _labeler, _reason   (labeling_failure,)

with ``<key> = labeler_key(name, version)`` (``energy_killer_whale_v1``), and
the labeller's name, version, parameters and classes in the group attribute
``pamingest_labelers`` and on the score array. ``score`` and ``status`` have
``chunk`` as first dimension, so ingest grows them with the rows
(``layout.grow_row_arrays``) and every row added later is queued by the
fill value alone, with no step of its own.

A row is **queued** for a labeller when it holds audio (``n_valid > 0``),
no annotation effort covers it (design invariant 4: effort is what people
reviewed; a chunk inside effort is annotated, whatever the label), and its
status for that labeller is 0. Everything is read from one snapshot of the
store, so the queue survives any crash: it is the store.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import zarr

from ..annotations.labels import covered, row_spans
from ..annotations.store import read_table
from .. import quality
from ..errors import ConfigError, StreamNotFoundError
from ..store import layout
from ..store.repo import Store, StoreLocation
from ..store.tables import Column, Table
from ..timing import NAT
from .base import Labeler, LabelerSpec, labeler_key

LABELERS_ATTR = "pamingest_labelers"
LAYOUT_VERSION = 1
QUEUED, SCORED, FAILED = 0, 1, 2
DETECTIONS = Table("detection", {
    "detection_chunk": Column("int64", -1), "detection_start": Column("int64", NAT, time=True),
    "detection_end": Column("int64", NAT, time=True), "detection_low_hz": Column("float64", np.nan),
    "detection_high_hz": Column("float64", np.nan), "detection_score": Column("float32", np.nan),
    "detection_class": Column(str, ""), "detection_labeler": Column(str, ""),
})
FAILURES = Table("labeling_failure", {
    "labeling_failure_chunk": Column("int64", -1), "labeling_failure_labeler": Column(str, ""),
    "labeling_failure_reason": Column(str, ""),
})
# Score chunks hold at most this many values: every batch commit rewrites the
# chunks it touches, so they stay small (4 KiB for a one-class labeller).
SCORE_CHUNK_VALUES = 1 << 16
STATUS_CHUNK_ROWS = 4096


def score_name(key: str) -> str:
    return f"score__{key}"


def status_name(key: str) -> str:
    return f"status__{key}"


def class_name(key: str) -> str:
    return f"class__{key}"


@dataclass(frozen=True)
class LabelerInfo:
    """What the store records about a labeller: its key, name, version, parameters, classes."""

    key: str
    name: str
    version: str
    params: dict[str, Any]
    classes: tuple[str, ...]

    @classmethod
    def of(cls, labeler: Labeler) -> "LabelerInfo":
        params = json.loads(json.dumps(labeler.params(), sort_keys=True, default=str))
        return cls(labeler_key(labeler.name, labeler.version), str(labeler.name), str(labeler.version), params,
                   tuple(str(c) for c in labeler.classes))

    def as_attrs(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "params": self.params, "classes": list(self.classes),
                "score": score_name(self.key), "status": status_name(self.key)}


def labelers_in(group: zarr.Group) -> dict[str, dict[str, Any]]:
    """Labellers recorded in a stream group: key -> name, version, params, classes."""
    return dict(group.attrs.get(LABELERS_ATTR) or {})


def ensure_labeler(group: zarr.Group, info: LabelerInfo, path: str = "") -> bool:
    """Create a labeller's arrays in a stream group (sized to its rows); True if created.

    Raises ConfigError when the same name and version were stored with other
    parameters or classes: their scores would not be the same thing.
    """
    known = labelers_in(group)
    if info.key in known:
        have = known[info.key]
        if have.get("params") != info.params or tuple(have.get("classes", ())) != info.classes:
            raise ConfigError(
                f"stream {path or group.path}: labeler {info.name} v{info.version} already scored chunks with "
                f"parameters {json.dumps(have.get('params'), sort_keys=True)}; this run has "
                f"{json.dumps(info.params, sort_keys=True)}. Use the same parameters, or give this variant a "
                "tag (--tag) so that it is queued as another labeler")
        if status_name(info.key) in group:
            return False
    n_rows = group["n_valid"].shape[0]
    n_classes = len(info.classes)
    rows_per_chunk = int(max(1, min(STATUS_CHUNK_ROWS, SCORE_CHUNK_VALUES // max(n_classes, 1))))
    attrs = {"labeler": info.name, "version": info.version, "params": info.params}
    group.create_array(class_name(info.key), shape=(n_classes,), chunks=(max(n_classes, 1),), dtype=str,
                       fill_value="", dimension_names=(class_name(info.key),))
    group[class_name(info.key)][:] = np.array(info.classes, dtype=object)
    group.create_array(score_name(info.key), shape=(n_rows, n_classes), chunks=(rows_per_chunk, max(n_classes, 1)),
                       dtype="float32", fill_value=np.nan, dimension_names=("chunk", class_name(info.key)),
                       attributes={**attrs, "long_name": f"{info.name} v{info.version} score per chunk and class",
                                   "missing": "NaN: not scored yet, or not assessable"})
    group.create_array(status_name(info.key), shape=(n_rows,), chunks=(STATUS_CHUNK_ROWS,), dtype="int8",
                       fill_value=QUEUED, dimension_names=("chunk",),
                       attributes={**attrs, "flag_values": [QUEUED, SCORED, FAILED],
                                   "flag_meanings": "queued scored failed"})
    group.attrs.update({LABELERS_ATTR: {**known, info.key: info.as_attrs()}})
    return True


def annotated_rows(group: zarr.Group) -> np.ndarray:
    """Rows that annotation effort covers entirely (any label): people reviewed them."""
    start, end = row_spans(group["chunk_start"][:], group["n_valid"][:], int(group.attrs["sample_rate"]))
    effort = read_table(group, "effort")
    if not len(effort["start"]):
        return np.zeros(len(start), dtype=bool)
    return covered(start, end, effort["start"], effort["end"])


def row_status(group: zarr.Group, key: str) -> np.ndarray:
    """The labeller's status per row (all QUEUED when it never ran on this stream)."""
    n = group["n_valid"].shape[0]
    if status_name(key) not in group:
        return np.full(n, QUEUED, dtype=np.int8)
    status = np.asarray(group[status_name(key)][:], dtype=np.int8)
    if len(status) < n:  # rows appended by a writer that did not grow this array
        status = np.concatenate([status, np.full(n - len(status), QUEUED, dtype=np.int8)])
    return status


@dataclass
class StreamQueue:
    """One stream's queue for one labeller."""

    stream: str
    rows: int
    live: int
    annotated: int
    scored: int
    failed: int
    queued_rows: np.ndarray = field(repr=False)
    flagged: int = 0  # live rows left out for their quality flags (skip_flagged)

    @property
    def queued(self) -> int:
        return int(len(self.queued_rows))


def stream_queue(group: zarr.Group, key: str, path: str = "", retry_failed: bool = False,
                 skip_flagged=None, thresholds=None) -> StreamQueue:
    """Which rows of a stream wait for the labeller ``key``, and the counts of the others.

    ``skip_flagged`` (quality flag names, ``"all"``, or a flag set) leaves out
    rows with one of those flags by ``thresholds`` (``pamingest.quality``);
    rows without statistics stay queued.
    """
    n_valid = np.asarray(group["n_valid"][:])
    live = n_valid > 0
    annotated = annotated_rows(group) & live
    status = row_status(group, key)
    waiting = status == QUEUED
    if retry_failed:
        waiting |= status == FAILED
    wanted = live & ~annotated & waiting
    flagged = 0
    skip = quality.parse_flags(skip_flagged)
    if skip and quality.has_stats(group):
        stats = {name: np.asarray(group[name][: len(n_valid)]) for name in quality.QUALITY.columns}
        bad = (quality.flags(stats, n_valid, int(group.attrs["channels"]), int(group.attrs["sample_rate"]),
                             thresholds) & skip) != 0
        flagged = int((bad & live).sum())
        wanted &= ~bad
    queued = np.flatnonzero(wanted)
    return StreamQueue(path or group.path, int(len(live)), int(live.sum()), int(annotated.sum()),
                       int(((status == SCORED) & live).sum()), int(((status == FAILED) & live).sum()), queued,
                       flagged)


def store_queue(root: zarr.Group, key: str, streams: Iterable[str] | None = None,
                retry_failed: bool = False, skip_flagged=None, thresholds=None) -> list[StreamQueue]:
    """The queue of every stream (under ``streams`` prefixes) of an opened store."""
    prefixes = list(streams) if streams is not None else None
    found = layout.iter_streams(root, prefixes)
    if prefixes and not found:
        raise StreamNotFoundError(f"no stream under {', '.join(prefixes)}")
    return [stream_queue(g, key, p, retry_failed, skip_flagged, thresholds) for p, g in found]


def queue(store: str | StoreLocation, labeler: str | LabelerSpec, *, params: dict | None = None,
          streams: Iterable[str] | None = None, snapshot: str | None = None,
          store_options: dict | None = None, skip_flagged=None, thresholds=None) -> list[StreamQueue]:
    """What a labeller still has to score in a store, per stream.

    Parameters
    ----------
    store : str or StoreLocation
        Store URL.
    labeler : str
        ``NAME[:VARIANT]``, e.g. ``energy:killer-whale``; its version is the
        installed one.
    params : dict, optional
        Labeller parameters (they do not change the queue, only the check
        that the stored scores were made with the same ones).
    streams : iterable of str, optional
        Stream paths or prefixes; default every stream.
    snapshot : str, optional
        Read the queue as of this snapshot (default: ``main``).
    skip_flagged : str or list of str, optional
        Leave out rows with these quality flags (``"all"``, or names:
        ``clipped``, ``dropout``, ``silent``, ``dc_offset``), by
        ``thresholds`` (``pamingest.quality.QualityThresholds``).

    Returns
    -------
    list of StreamQueue
        Per stream: rows, live rows, annotated, scored, failed and the
        queued row indices.
    """
    info = LabelerInfo.of(LabelerSpec.parse(labeler, params).build())
    return store_queue(Store.open(store, store_options).root(snapshot), info.key, streams,
                       skip_flagged=skip_flagged, thresholds=thresholds)


__all__ = ["DETECTIONS", "FAILED", "FAILURES", "LABELERS_ATTR", "LabelerInfo", "QUEUED", "SCORED",
           "StreamQueue", "annotated_rows", "class_name", "ensure_labeler", "labelers_in", "queue", "row_status",
           "score_name", "status_name", "store_queue", "stream_queue"]


# ---------------------------------------------------------------- reading back (the .pam accessor)

def _key_in_dataset(ds, labeler: str | None, version: str | None) -> str:
    known = dict(ds.attrs.get(LABELERS_ATTR) or {})
    if not known:
        raise StreamNotFoundError("this stream has no labeller scores (run `pamingest pseudolabel`)")
    if labeler is None:
        if len(known) == 1:
            return next(iter(known))
        raise ConfigError(f"several labellers scored this stream: name one of "
                          f"{', '.join(sorted(m['name'] + ' v' + str(m['version']) for m in known.values()))}")
    if labeler in known:
        return labeler
    matches = {k: m for k, m in known.items() if m.get("name") == labeler
               and (version is None or str(m.get("version")) == str(version))}
    if len(matches) == 1:
        return next(iter(matches))
    if not matches:
        raise StreamNotFoundError(f"no scores of {labeler}{' v' + version if version else ''} in this stream; it has "
                                  f"{', '.join(sorted(m['name'] + ' v' + str(m['version']) for m in known.values()))}")
    raise ConfigError(f"{labeler} has several versions here ({', '.join(sorted(str(m['version']) for m in matches.values()))}): "
                      "give version=")


def scores_array(ds, labeler: str | None = None, version: str | None = None):
    """``(chunk, class)`` float32 scores of one labeller in a stream Dataset (NaN: not scored).

    The DataArray carries the labeller's name, version and parameters as
    attributes, and ``status`` (0 queued, 1 scored, 2 failed) as a coordinate.
    """
    import xarray as xr

    key = _key_in_dataset(ds, labeler, version)
    meta = ds.attrs[LABELERS_ATTR][key]
    n = ds.sizes["chunk"]
    values = np.asarray(ds[score_name(key)].values, dtype=np.float32)
    status = np.asarray(ds[status_name(key)].values, dtype=np.int8)
    if len(values) < n:
        values = np.concatenate([values, np.full((n - len(values), values.shape[1]), np.nan, np.float32)])
        status = np.concatenate([status, np.full(n - len(status), QUEUED, np.int8)])
    return xr.DataArray(values, dims=("chunk", "class"),
                        coords={"class": np.asarray(meta["classes"], dtype=object),
                                "chunk_start": ("chunk", ds["chunk_start"].values), "status": ("chunk", status)},
                        name="scores", attrs={"labeler": meta["name"], "version": str(meta["version"]),
                                              "params": json.dumps(meta["params"], sort_keys=True), "key": key})


def detections_frame(ds, labeler: str | None = None, version: str | None = None):
    """Event boxes found by labellers in a stream Dataset (all labellers, or one) as a DataFrame."""
    import pandas as pd

    cols = ["chunk", "start", "end", "low_hz", "high_hz", "score", "label", "labeler"]
    if "detection_chunk" not in ds:
        return pd.DataFrame({c: [] for c in cols})
    frame = pd.DataFrame({
        "chunk": ds["detection_chunk"].values, "start": ds["detection_start"].values,
        "end": ds["detection_end"].values, "low_hz": ds["detection_low_hz"].values,
        "high_hz": ds["detection_high_hz"].values, "score": ds["detection_score"].values,
        "label": np.asarray(ds["detection_class"].values, dtype=object),
        "labeler": np.asarray(ds["detection_labeler"].values, dtype=object)})
    if labeler is not None:
        frame = frame[frame.labeler == _key_in_dataset(ds, labeler, version)].reset_index(drop=True)
    return frame
