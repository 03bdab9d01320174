"""Chunk labels from events and effort: positive, negative or unknown per (row, label).

Pure numpy over integer nanoseconds, no store: the attach step, the
``.pam`` accessor and the labelling queue all call :func:`chunk_labels`.

For each label and row (its valid span ``[start, start + n_valid / rate)``):

- **positive** (1) if an event of that label overlaps the row by the
  field's rule (OpenSoundscape's): overlap > 0 and (overlap >= ``min_seconds``
  or overlap / event duration >= ``min_fraction``); an instantaneous event
  labels the row holding it;
- else **negative** (0) if effort for that label (or for every label)
  covers the whole row;
- else **unknown** (-1), as are dead rows.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..errors import ConfigError
from ..timing import NAT, NS_PER_S

POSITIVE, NEGATIVE, UNKNOWN = 1, 0, -1
# Slack when checking that effort covers a row: a row's end is computed from its
# own start, a file's end from the file's start; the two roundings may differ by 1 ns.
COVER_SLACK_NS = 1_000


@dataclass(frozen=True)
class OverlapRule:
    """When an event labels a chunk.

    Parameters
    ----------
    min_seconds : float
        Overlap (s) that suffices on its own (default 0.25, OpenSoundscape's
        customary ``min_label_overlap``).
    min_fraction : float or None
        Fraction of the event inside the chunk that suffices on its own
        (default 0.5, so that a short call cut by a chunk boundary labels the
        chunk holding most of it); None disables it.
    include_unreviewed : bool
        Let unreviewed machine events (model predictions) make positives.
        Default False: the labels are what people said.
    """

    min_seconds: float = 0.25
    min_fraction: float | None = 0.5
    include_unreviewed: bool = False

    def __post_init__(self) -> None:
        if self.min_seconds < 0:
            raise ConfigError(f"min_seconds must be >= 0, got {self.min_seconds}")
        if self.min_fraction is not None and not 0 < self.min_fraction <= 1:
            raise ConfigError(f"min_fraction must be in (0, 1], got {self.min_fraction}")

    def as_attrs(self) -> dict:
        return asdict(self)

    @classmethod
    def from_attrs(cls, attrs: dict | None) -> "OverlapRule":
        return cls(**{k: v for k, v in (attrs or {}).items() if k in cls.__dataclass_fields__})

    def matches(self, overlap: np.ndarray, duration: np.ndarray) -> np.ndarray:
        ok = overlap >= int(round(self.min_seconds * NS_PER_S))
        if self.min_fraction is not None:
            with np.errstate(divide="ignore", invalid="ignore"):
                ok |= (duration > 0) & (overlap >= self.min_fraction * duration)
        return (overlap > 0) & ok


def _pairs(row_start: np.ndarray, row_end: np.ndarray, ev_start: np.ndarray, ev_end: np.ndarray):
    """(row, event) index pairs that intersect (or, for instants, hold the event); rows sorted internally."""
    live = np.flatnonzero(row_start != NAT)
    if not len(live) or not len(ev_start):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    order = live[np.argsort(row_start[live], kind="stable")]
    starts = row_start[order]
    longest = int((row_end[order] - starts).max())
    # Candidate rows start in (event start - longest row, event end]; then filter exactly.
    lo = np.searchsorted(starts, ev_start - longest, side="left")
    hi = np.searchsorted(starts, ev_end, side="right")
    counts = np.maximum(hi - lo, 0)
    ev = np.repeat(np.arange(len(ev_start)), counts)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    rows = order[np.repeat(lo, counts) + offsets]
    s, e = row_start[rows], row_end[rows]
    instant = ev_start[ev] == ev_end[ev]
    hit = np.where(instant, (s <= ev_start[ev]) & (ev_start[ev] < e),
                   (s < ev_end[ev]) & (e > ev_start[ev]))
    return rows[hit], ev[hit]


def _merge(starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if not len(starts):
        return starts, ends
    order = np.argsort(starts, kind="stable")
    s, e = starts[order], ends[order]
    out_s, out_e = [int(s[0])], [int(e[0])]
    for a, b in zip(s[1:], e[1:]):
        if a <= out_e[-1]:
            out_e[-1] = max(out_e[-1], int(b))
        else:
            out_s.append(int(a))
            out_e.append(int(b))
    return np.array(out_s, dtype=np.int64), np.array(out_e, dtype=np.int64)


def covered(row_start: np.ndarray, row_end: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Rows whose whole span lies inside the union of ``[starts, ends)``."""
    out = np.zeros(len(row_start), dtype=bool)
    ms, me = _merge(np.asarray(starts, np.int64), np.asarray(ends, np.int64))
    if not len(ms):
        return out
    live = row_start != NAT
    i = np.searchsorted(ms, row_start + COVER_SLACK_NS, side="right") - 1
    ok = live & (i >= 0)
    ii = np.clip(i, 0, None)
    return ok & (me[ii] >= row_end - COVER_SLACK_NS)


def row_spans(chunk_start: np.ndarray, n_valid: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows' ``[start, end)`` in ns; dead rows (``n_valid == 0``) get start NaT."""
    from ..timing import offset_ns

    start = np.asarray(chunk_start, dtype=np.int64).copy()
    valid = np.asarray(n_valid, dtype=np.int64)
    start[valid <= 0] = NAT
    end = np.where(start == NAT, NAT, start + offset_ns(np.maximum(valid, 0), sample_rate))
    return start, end


def events_in_audio(row_start: np.ndarray, row_end: np.ndarray, ev_start: np.ndarray,
                    ev_end: np.ndarray) -> np.ndarray:
    """Whether each event overlaps (or, for an instant, falls in) at least one live row."""
    inside = np.zeros(len(ev_start), dtype=bool)
    _, ev = _pairs(row_start, row_end, np.asarray(ev_start, np.int64), np.asarray(ev_end, np.int64))
    inside[ev] = True
    return inside


def label_names(ev_labels, ev_eligible, effort_labels) -> list[str]:
    names = {str(x) for x, ok in zip(ev_labels, ev_eligible) if ok and str(x)}
    names |= {str(x) for x in effort_labels if str(x)}
    return sorted(names)


def _eligible(events: dict, rule: OverlapRule) -> np.ndarray:
    n = len(events["start"])
    return np.ones(n, bool) if rule.include_unreviewed else np.asarray(events["reviewed"], bool)


def positive_pairs(row_start: np.ndarray, row_end: np.ndarray, events: dict,
                   rule: OverlapRule) -> tuple[np.ndarray, np.ndarray]:
    """(row, event) pairs where the event makes the row positive for its label under ``rule``."""
    ev_s = np.asarray(events["start"], np.int64)
    ev_e = np.asarray(events["end"], np.int64)
    rows, ev = _pairs(row_start, row_end, ev_s, ev_e)
    keep = _eligible(events, rule)[ev]
    rows, ev = rows[keep], ev[keep]
    overlap = np.minimum(ev_e[ev], row_end[rows]) - np.maximum(ev_s[ev], row_start[rows])
    duration = ev_e[ev] - ev_s[ev]
    hit = (duration == 0) | rule.matches(overlap, duration)
    return rows[hit], ev[hit]


def overlapping_pairs(row_start: np.ndarray, row_end: np.ndarray, starts: np.ndarray,
                      ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row, span) index pairs of rows and spans that intersect (an instant: the row holding it)."""
    return _pairs(row_start, row_end, np.asarray(starts, np.int64), np.asarray(ends, np.int64))


def chunk_labels(row_start: np.ndarray, row_end: np.ndarray, events: dict, effort: dict,
                 rule: OverlapRule | None = None, labels: list[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """The ``(row, label)`` int8 matrix of 1 / 0 / -1, and the label names.

    Parameters
    ----------
    row_start, row_end : numpy.ndarray
        int64 ns of each row's valid span (:func:`row_spans`); NaT start = dead row.
    events : dict
        Arrays ``start``, ``end``, ``label_norm``, ``reviewed``.
    effort : dict
        Arrays ``start``, ``end``, ``label_norm`` (``""`` = every label).
    rule : OverlapRule
        Overlap thresholds and whether unreviewed events count.
    labels : list of str, optional
        Label columns; default: every label with an eligible event or its own effort.
    """
    rule = rule or OverlapRule()
    ev_l = np.asarray(events["label_norm"], dtype=object)
    eligible = _eligible(events, rule)
    ef_s = np.asarray(effort["start"], np.int64)
    ef_e = np.asarray(effort["end"], np.int64)
    ef_l = np.asarray(effort["label_norm"], dtype=object)
    names = labels if labels is not None else label_names(ev_l, eligible, ef_l)
    out = np.full((len(row_start), len(names)), UNKNOWN, dtype=np.int8)
    if not names or not len(row_start):
        return out, list(names)
    all_labels = ef_l == ""
    rows, ev = positive_pairs(row_start, row_end, events, rule)
    for j, name in enumerate(names):
        mine = all_labels | (ef_l == name)
        out[covered(row_start, row_end, ef_s[mine], ef_e[mine]), j] = NEGATIVE
        out[rows[ev_l[ev] == name], j] = POSITIVE
    return out, list(names)
