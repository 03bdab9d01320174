"""Clip tables: fixed-length clips of a stream, with where they come from, their labels and scores.

``ds.pam.clips(10)`` and ``pamingest.clips(tree, 10)`` give a pandas
DataFrame with one line per clip (``CLIP_COLUMNS``, then one column per
label and per labeller class):

- ``stream``, ``source``, ``site``, ``deployment`` (the stream's, where its
  source names one: SanctSound, NCEI), ``sample_rate``, ``channels``,
  ``bits_per_sample``: what the clip is cut from;
- ``start``, ``end`` (UTC): the clip's span, ``end - start = seconds``;
- ``file``, ``file_offset``, ``file_offset_s``: the recording holding the
  clip's first sample, and that sample's index (and seconds) in it;
- ``valid``: the fraction of the clip's span holding recorded audio;
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

**The clip grid.** Clips are laid from the start of each stretch of audio
(gaps shorter than a clip are bridged, and show in ``valid``), every
``hop`` seconds (default: ``seconds``, no overlap), up to the stretch's end;
clips whose ``valid`` is below ``min_valid`` are left out. Duty-cycled
recordings (10 s every 15 min) thus get clips aligned to each recording's
start, never spanning the silence between them.
"""

from __future__ import annotations

import json
from typing import Iterable

import numpy as np
import pandas as pd

from .annotations.labels import OverlapRule, chunk_labels, label_names, overlapping_pairs, positive_pairs
from .errors import ConfigError
from .timing import NS_PER_S, offset_ns

CLIP_COLUMNS = ["stream", "source", "site", "deployment", "sample_rate", "channels", "bits_per_sample", "start", "end", "file",
                "file_offset", "file_offset_s", "valid"]
LABEL_PREFIX, SCORE_PREFIX = "label:", "score:"
# Where stored rows of one recording meet, their times may differ from one period by rounding.
_SEAM_SAMPLES = 1.5


def label_columns(frame: pd.DataFrame) -> list[str]:
    """The label names of a clip table (its ``label:<name>`` columns)."""
    return [c[len(LABEL_PREFIX):] for c in frame.columns if c.startswith(LABEL_PREFIX)]


def score_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c.startswith(SCORE_PREFIX)]


def _merge(start: np.ndarray, end: np.ndarray, tolerance_ns: float) -> tuple[np.ndarray, np.ndarray]:
    """Spans of sorted ``[start, end)`` intervals, joined across gaps up to ``tolerance_ns``."""
    if not len(start):
        return start, end
    reach = np.maximum.accumulate(end)
    breaks = np.flatnonzero(start[1:] - reach[:-1] > tolerance_ns) + 1
    firsts = np.r_[0, breaks]
    lasts = np.r_[breaks - 1, len(start) - 1]
    return start[firsts], reach[lasts]


def _covered_before(t: np.ndarray, span_start: np.ndarray, span_end: np.ndarray) -> np.ndarray:
    """Nanoseconds of the (disjoint, sorted) spans lying before each time ``t``."""
    before = np.r_[0, np.cumsum(span_end - span_start)]
    i = np.searchsorted(span_start, t, side="right") - 1
    inside = np.where(i >= 0, np.minimum(t, span_end[np.maximum(i, 0)]) - span_start[np.maximum(i, 0)], 0)
    return before[np.maximum(i, 0)] * (i >= 0) + inside


def _first_sample_at_or_after(delta_ns: np.ndarray, sample_rate: int) -> np.ndarray:
    """Per row, the smallest sample index whose (rounded) offset is >= ``delta_ns`` (vectorised)."""
    delta = np.maximum(delta_ns, 0)
    k = delta * sample_rate // NS_PER_S
    for _ in range(2):
        k += offset_ns(k, sample_rate) < delta
    k -= (k > 0) & (offset_ns(np.maximum(k - 1, 0), sample_rate) >= delta)
    return k


def stream_clips(ds, seconds: float, hop: float | None = None, labels: Iterable[str] | None = None,
                 min_valid: float = 0.9, rule: OverlapRule | None = None, stream: str = "") -> pd.DataFrame:
    """The clip table of one stream Dataset (see the module docstring); ``ds.pam.clips`` calls it."""
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
    grid_s, grid_e = _merge(row_start, row_end, length)
    counts = np.maximum(0, -(-(grid_e - grid_s) // step)).astype(np.int64)
    first = np.repeat(grid_s, counts)
    k = np.arange(counts.sum(), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
    clip_s = first + k * step
    clip_e = clip_s + length
    audio_s, audio_e = _merge(row_start, row_end, _SEAM_SAMPLES * NS_PER_S / sr)
    got = _covered_before(clip_e, audio_s, audio_e) - _covered_before(clip_s, audio_s, audio_e)
    frac = np.minimum(got / length, 1.0)
    keep = frac >= min_valid - 1e-12
    clip_s, clip_e, frac = clip_s[keep], clip_e[keep], frac[keep]
    n = len(clip_s)

    # The recording holding each clip's first sample (the next one, if the clip starts in a gap).
    at = np.searchsorted(row_start, clip_s, side="right") - 1
    in_gap = (at < 0) | (row_end[np.maximum(at, 0)] <= clip_s)
    at = np.where(in_gap, at + 1, at)
    rows = order[at] if n else np.zeros(0, np.int64)
    into = _first_sample_at_or_after(clip_s - row_start[at], sr) if n else np.zeros(0, np.int64)
    file_offset = np.asarray(ds["file_offset"].values, np.int64)[rows] + into
    urls = np.asarray(ds["file_url"].values, dtype=object)
    file_index = np.asarray(ds["file_index"].values, np.int64)[rows]
    frame = pd.DataFrame({
        "stream": stream, "source": ds.attrs.get("source", ""), "site": ds.attrs.get("site", ""),
        "deployment": str(ds.attrs.get("deployment", "")),
        "sample_rate": sr, "channels": int(ds.attrs.get("channels", ds["audio"].shape[2])),
        "bits_per_sample": int(ds.attrs.get("bits_per_sample") or 0),
        "start": clip_s.astype("datetime64[ns]"), "end": clip_e.astype("datetime64[ns]"),
        "file": urls[file_index] if n else np.zeros(0, dtype=object), "file_offset": file_offset,
        "file_offset_s": file_offset / sr, "valid": frac,
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
    return frame


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
          streams: Iterable[str] | None = None) -> pd.DataFrame:
    """The clip table of every stream of an opened store (``open_store``), or of ``streams``.

    Label columns are the union over streams: a label a stream has never
    seen is unknown (-1) there. See the module docstring for the columns.
    """
    from .query import streams as all_streams

    paths = list(streams) if streams is not None else all_streams(tree)
    frames = [stream_clips(tree[p].to_dataset(), seconds, hop, labels, min_valid, rule, stream=p) for p in paths]
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
