"""Clip tables: fixed-length clips of a stream, with where they come from, their labels and scores.

``ds.pam.clips(10)`` and ``pamingest.clips(tree, 10)`` give a pandas
DataFrame with one line per clip (``CLIP_COLUMNS``, then one column per
label and per labeller class):

- ``stream``, ``source``, ``site``, ``deployment`` (the stream's, where its
  source names one: SanctSound, NCEI), ``latitude``, ``longitude`` (from the
  deployment metadata; NaN when unknown), ``sample_rate``, ``channels``,
  ``bits_per_sample``: what the clip is cut from;
- ``start``, ``end`` (UTC): the clip's span, ``end - start = seconds``;
- ``file``, ``file_offset``, ``file_offset_s``: the recording holding the
  clip's first sample, and that sample's index (and seconds) in it;
- ``valid``: the fraction of the clip's span inside its stretch of audio;
- ``row``: the stored row the clip is exactly (same start, length and a
  whole row of samples), else -1: such a clip's audio is that row's bytes;
- ``label:<name>``: 1 positive, 0 reviewed negative, -1 unknown, by the
  same overlap rule as the stored chunk labels (``annotations.labels``),
  applied to the clip's span;
- ``score:<labeller key>:<class>``: the highest score the labeller gave a
  row overlapping the clip (NaN: no row scored);
- ``provenance``: JSON (sorted keys) saying where each known label comes
  from: ``annotation`` (the annotation file, its format source and
  annotator), ``review`` (an answer to a ``pamingest review`` batch), and,
  for each labeller that scored the clip, ``pseudo-label`` with the
  labeller's name and version.

**The clip grid.** Clips are laid from the start of each stretch of
continuous audio (a recording, or an HLS run of segments: rows that follow
each other without a gap or an overlap), every ``hop`` seconds (default:
``seconds``, no overlap), while they start inside it. A clip never spans a
gap or the seam between two recordings: ``valid`` is the fraction of the
clip inside its stretch (below 1 only for a stretch's last clip), and clips
below ``min_valid`` are left out. Duty-cycled recordings (10 s every 15 min)
get clips aligned to each recording's start; clips as long as the stream's
rows are its rows (``row``: the row a clip is exactly, whole, else -1).
"""

from __future__ import annotations

import json
from typing import Iterable

import numpy as np
import pandas as pd

from .annotations.labels import OverlapRule, chunk_labels, label_names, overlapping_pairs, positive_pairs
from .errors import ConfigError
from .quality import dataset_flags, parse_flags
from .timing import NS_PER_S, offset_ns

CLIP_COLUMNS = ["stream", "source", "site", "deployment", "latitude", "longitude", "sample_rate", "channels", "bits_per_sample", "start", "end", "file",
                "file_offset", "file_offset_s", "valid", "row"]
LABEL_PREFIX, SCORE_PREFIX = "label:", "score:"
# Where stored rows of one recording meet, their times may differ from one period by rounding.
_SEAM_SAMPLES = 1.5


def label_columns(frame: pd.DataFrame) -> list[str]:
    """The label names of a clip table (its ``label:<name>`` columns)."""
    return [c[len(LABEL_PREFIX):] for c in frame.columns if c.startswith(LABEL_PREFIX)]


def score_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c.startswith(SCORE_PREFIX)]


def _stretches(start: np.ndarray, end: np.ndarray, file_index: np.ndarray, tolerance_ns: float) -> np.ndarray:
    """For rows sorted by start, the index (into these rows) of the first row of each row's stretch.

    A row continues the row that ends where it starts (within
    ``tolerance_ns``); a row that continues none starts a stretch. Rows of
    two recordings that overlap in time interleave in start order, so
    stretches follow these links, not the order. Where two rows would
    continue one, the one of the same recording does (else the earlier).
    """
    n = len(start)
    idx = np.arange(n)
    if not n:
        return idx
    by_end = np.argsort(end, kind="stable")
    ends = end[by_end]
    pos = np.minimum(np.searchsorted(ends, start - tolerance_ns, side="left"), n - 1)
    pred = np.where((ends[pos] >= start - tolerance_ns) & (ends[pos] <= start + tolerance_ns), by_end[pos], -1)
    pred[pred == idx] = -1
    # One successor per row: the claimant of the same recording first, then the earliest.
    claim = np.flatnonzero(pred >= 0)
    other_file = file_index[claim] != file_index[pred[claim]]
    ranked = claim[np.lexsort((claim, other_file, pred[claim]))]
    _, first = np.unique(pred[ranked], return_index=True)
    keep = np.zeros(n, bool)
    keep[ranked[first]] = True
    pred[(pred >= 0) & ~keep] = -1
    head = np.where(pred >= 0, pred, idx)
    while True:  # pointer doubling: every row points at its stretch's first row in O(log n) steps
        nxt = head[head]
        if np.array_equal(nxt, head):
            return head
        head = nxt


def _first_sample_at_or_after(delta_ns: np.ndarray, sample_rate: int) -> np.ndarray:
    """Per row, the smallest sample index whose (rounded) offset is >= ``delta_ns`` (vectorised)."""
    delta = np.maximum(delta_ns, 0)
    k = delta * sample_rate // NS_PER_S
    for _ in range(2):
        k += offset_ns(k, sample_rate) < delta
    k -= (k > 0) & (offset_ns(np.maximum(k - 1, 0), sample_rate) >= delta)
    return k


def stream_clips(ds, seconds: float, hop: float | None = None, labels: Iterable[str] | None = None,
                 min_valid: float = 0.9, rule: OverlapRule | None = None, stream: str = "",
                 skip_flagged=None, thresholds=None) -> pd.DataFrame:
    """The clip table of one stream Dataset (see the module docstring); ``ds.pam.clips`` calls it.

    ``skip_flagged`` (flag names, ``"all"``, or a ``pamingest.quality`` flag
    set) leaves out clips overlapping a row with one of those quality flags,
    by ``thresholds`` (``QualityThresholds``; default: its defaults). Rows
    without statistics are never skipped.
    """
    from .annotations.store import EFFORT, EVENTS, RULE_ATTR, _dataset_table
    from .labeling.queue import LABELERS_ATTR, score_name

    if seconds <= 0 or (hop is not None and hop <= 0):
        raise ConfigError(f"clip seconds and hop must be > 0, got {seconds} and {hop}")
    if not 0 <= min_valid <= 1:
        raise ConfigError(f"min_valid is a fraction of the clip, in [0, 1], got {min_valid}")
    sr = int(ds.attrs["sample_rate"])
    length = int(round(seconds * NS_PER_S))
    step = int(round((hop or seconds) * NS_PER_S))
    order, row_start, valid = ds.pam._rows()
    row_end = row_start + offset_ns(valid, sr)

    # Clips: from each stretch's start, every hop, while they start inside it.
    file_index = np.asarray(ds["file_index"].values, np.int64)
    head = _stretches(row_start, row_end, file_index[order], _SEAM_SAMPLES * NS_PER_S / sr)
    heads, stretch_of_row = np.unique(head, return_inverse=True)
    grid_s = row_start[heads]
    grid_e = np.full(len(heads), np.iinfo(np.int64).min)
    np.maximum.at(grid_e, stretch_of_row, row_end)
    counts = np.maximum(0, -(-(grid_e - grid_s) // step)).astype(np.int64)
    stretch = np.repeat(np.arange(len(grid_s)), counts)
    k = np.arange(counts.sum(), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
    clip_s = grid_s[stretch] + k * step
    clip_e = clip_s + length
    frac = np.minimum((np.minimum(clip_e, grid_e[stretch]) - clip_s) / length, 1.0)
    keep = frac >= min_valid - 1e-12
    clip_s, clip_e, frac, stretch = clip_s[keep], clip_e[keep], frac[keep], stretch[keep]
    n = len(clip_s)

    # The row holding each clip's first sample: the last row of its stretch starting at or before it.
    members = np.lexsort((row_start, stretch_of_row))  # rows by stretch, then start
    bounds = np.searchsorted(stretch_of_row[members], np.arange(len(heads) + 1))
    clip_bounds = np.searchsorted(stretch, np.arange(len(heads) + 1))  # clips come stretch by stretch
    at = np.zeros(n, np.int64)
    for j in np.flatnonzero(np.diff(clip_bounds)).tolist():
        mine = members[bounds[j] : bounds[j + 1]]
        pick = slice(clip_bounds[j], clip_bounds[j + 1])
        where = np.searchsorted(row_start[mine], clip_s[pick], side="right") - 1
        at[pick] = mine[np.maximum(where, 0)]
    rows = order[at] if n else np.zeros(0, np.int64)
    into = _first_sample_at_or_after(clip_s - row_start[at], sr) if n else np.zeros(0, np.int64)
    row_samples = int(ds["audio"].shape[1])
    whole = (into == 0) & (valid[at] == row_samples) & (clip_e == row_end[at]) if n else np.zeros(0, bool)
    file_offset = np.asarray(ds["file_offset"].values, np.int64)[rows] + into
    urls = np.asarray(ds["file_url"].values, dtype=object)
    file_index = file_index[rows]
    frame = pd.DataFrame({
        "stream": stream, "source": ds.attrs.get("source", ""), "site": ds.attrs.get("site", ""),
        "deployment": str(ds.attrs.get("deployment", "")),
        "latitude": _degrees(ds.attrs.get("latitude")), "longitude": _degrees(ds.attrs.get("longitude")),
        "sample_rate": sr, "channels": int(ds.attrs.get("channels", ds["audio"].shape[2])),
        "bits_per_sample": int(ds.attrs.get("bits_per_sample") or 0),
        "start": clip_s.astype("datetime64[ns]"), "end": clip_e.astype("datetime64[ns]"),
        "file": urls[file_index] if n else np.zeros(0, dtype=object), "file_offset": file_offset,
        "file_offset_s": file_offset / sr, "valid": frac, "row": np.where(whole, rows, -1),
    }, index=pd.RangeIndex(n))

    # Labels, by the stored rule unless another is given; their provenance.
    events, effort = _dataset_table(ds, EVENTS), _dataset_table(ds, EFFORT)
    files = np.asarray(_dataset_table(ds, _annotation_files())["name"], dtype=object)
    rule = rule or OverlapRule.from_attrs(ds.attrs.get(RULE_ATTR))
    names = list(labels) if labels is not None else label_names(
        events["label_norm"], events["reviewed"] if not rule.include_unreviewed else np.ones(len(events["start"]), bool),
        effort["label_norm"])
    values, names = chunk_labels(clip_s, clip_e, events, effort, rule, names)
    provenance: list[dict] = [{} for _ in range(n)]
    _label_provenance(provenance, values, names, clip_s, clip_e, events, effort, files, rule)
    columns = {f"{LABEL_PREFIX}{name}": values[:, j] for j, name in enumerate(names)}

    # Scores: each labeller's highest score over the rows a clip overlaps.
    for key, meta in sorted((ds.attrs.get(LABELERS_ATTR) or {}).items()):
        scores = np.asarray(ds[score_name(key)].values, dtype=np.float32)
        classes = [str(c) for c in meta.get("classes", [])]
        best = np.full((n, len(classes)), np.nan, dtype=np.float32)
        live = order[order < len(scores)]  # rows appended after the labeller's arrays were sized
        pos = np.flatnonzero(order < len(scores))
        c, r = overlapping_pairs(clip_s, clip_e, row_start[pos], row_end[pos])
        if len(c):
            np.fmax.at(best, c, scores[live[r]])
        for j, cls in enumerate(classes):
            columns[f"{SCORE_PREFIX}{key}:{cls}"] = best[:, j]
        for i in np.flatnonzero(~np.isnan(best).all(axis=1)):
            provenance[i].setdefault("pseudo-label", {})[key] = {"labeler": meta.get("name", key),
                                                                  "version": str(meta.get("version", ""))}
    frame = pd.concat([frame, pd.DataFrame(columns, index=frame.index)], axis=1)
    frame["provenance"] = [json.dumps(p, sort_keys=True) for p in provenance]
    skip = parse_flags(skip_flagged)
    if skip and n:
        bits = dataset_flags(ds, thresholds)
        c, r = overlapping_pairs(clip_s, clip_e, row_start, row_end)
        bad = np.zeros(n, bool)
        bad[c[(bits[order[r]] & skip) != 0]] = True
        frame = frame[~bad].reset_index(drop=True)
    return frame


def _degrees(value) -> float:
    try:
        return float(value) if value is not None else float("nan")
    except (TypeError, ValueError):
        return float("nan")


def _annotation_files():
    from .annotations.store import ANNOTATION_FILES

    return ANNOTATION_FILES


def _origin(source: str, annotator: str, file: str) -> dict:
    from .annotations.raven import REVIEW_SOURCE

    kind = "review" if source == REVIEW_SOURCE else "annotation"
    out = {"kind": kind, "source": source, "file": file}
    if annotator:
        out["annotator"] = annotator
    return out


def _label_provenance(provenance: list[dict], values: np.ndarray, names: list[str], clip_s: np.ndarray,
                      clip_e: np.ndarray, events: dict, effort: dict, files: np.ndarray, rule: OverlapRule) -> None:
    """Per clip and known label, the annotation files (or review batches) its value comes from."""
    if not names or not len(clip_s):
        return
    column = {name: j for j, name in enumerate(names)}

    def file_of(index: int) -> str:
        return str(files[index]) if 0 <= index < len(files) else ""

    clips, ev = positive_pairs(clip_s, clip_e, events, rule)
    for c, e in zip(clips.tolist(), ev.tolist()):
        j = column.get(str(events["label_norm"][e]))
        if j is None or values[c, j] != 1:
            continue
        origin = _origin(str(events["source"][e]), str(events["annotator"][e]), file_of(int(events["file"][e])))
        _add(provenance[c], names[j], 1, origin)
    clips, ef = overlapping_pairs(clip_s, clip_e, effort["start"], effort["end"])
    for c, f in zip(clips.tolist(), ef.tolist()):
        label = str(effort["label_norm"][f])
        for name in ([label] if label else names):
            j = column.get(name)
            if j is None or values[c, j] != 0:
                continue
            _add(provenance[c], name, 0, _origin(str(effort["source"][f]), "", file_of(int(effort["file"][f]))))


def _add(entry: dict, label: str, value: int, origin: dict) -> None:
    slot = entry.setdefault("labels", {}).setdefault(label, {"value": value, "from": []})
    if origin not in slot["from"]:
        slot["from"].append(origin)
        slot["from"].sort(key=lambda o: (o["kind"], o["source"], o["file"], o.get("annotator", "")))


def clips(tree, seconds: float, hop: float | None = None, labels: Iterable[str] | None = None,
          min_valid: float = 0.9, rule: OverlapRule | None = None,
          streams: Iterable[str] | None = None, skip_flagged=None, thresholds=None) -> pd.DataFrame:
    """The clip table of every stream of an opened store (``open_store``), or of ``streams``;
    ``skip_flagged`` leaves out clips over rows with those quality flags (``stream_clips``).

    Label columns are the union over streams: a label a stream has never
    seen is unknown (-1) there. See the module docstring for the columns.
    """
    from .query import streams as all_streams

    paths = list(streams) if streams is not None else all_streams(tree)
    frames = [stream_clips(tree[p].to_dataset(), seconds, hop, labels, min_valid, rule, stream=p,
                           skip_flagged=skip_flagged, thresholds=thresholds) for p in paths]
    if not frames:
        return pd.DataFrame(columns=CLIP_COLUMNS + ["provenance"])
    frame = pd.concat(frames, ignore_index=True)
    for col in frame.columns:
        if col.startswith(LABEL_PREFIX):
            frame[col] = frame[col].fillna(-1).astype(np.int8)
    rest = [c for c in frame.columns if c not in CLIP_COLUMNS and c != "provenance"]
    ordered = CLIP_COLUMNS + sorted(c for c in rest if c.startswith(LABEL_PREFIX)) + \
        sorted(c for c in rest if c.startswith(SCORE_PREFIX)) + ["provenance"]
    return frame[ordered]


__all__ = ["CLIP_COLUMNS", "clips", "label_columns", "score_columns", "stream_clips"]
