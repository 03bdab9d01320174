"""Normalised annotation records, the reader protocol and the parsing helpers readers share.

Every reader turns one annotation file into an :class:`Annotations`: an
events table and an effort table with the same columns whatever the format.

Events (``EVENT_COLUMNS``): ``start``/``end`` int ns UTC, ``low_hz``/``high_hz``
(NaN when unknown), ``label`` as written and ``label_norm``, ``source`` (who
made the file: ``raven``, ``sanctsound``, ``pods-ai``...), ``confidence``
(machine labels; NaN for people), ``annotator`` (``human``, ``machine``,
``human+machine``), ``reviewed`` (a person checked it), ``kind`` (``event``:
the sound spans exactly this interval; ``presence``: it occurs somewhere in
this bin), ``verdict`` (as the format writes it, e.g. ``tp_machine_only``),
``recording`` (the audio file for file-relative formats), ``site`` (for
absolute-time formats: the site or node the rows belong to), ``stream``
(store stream path when the reader resolved it) and ``line`` (1-based line of
the annotation file, for messages).

Effort (``EFFORT_COLUMNS``): ``start``/``end``, ``label_norm`` (``""``: every
label) and the same ``source``/``recording``/``site``/``stream``/``line``.
Effort is what someone reviewed; a chunk inside effort without an event is a
negative, a chunk outside effort is unknown (design invariant 4).

Bad rows are rejected, one by one: a row that cannot be read (a time that is
not a number, negative, or outside ``TIME_RANGE``; an end before its start;
an empty label; a control character such as NUL in a text field; a quote
that swallows the lines after it) becomes a :class:`RejectedRow` naming the
file, the line and the reason, and the file's other rows are read. What
cannot be attributed to rows (a missing column, an unknown recording or
site) still fails the whole file (``AnnotationError``).

Effort and rejected rows: a format whose effort is the whole recording
(Raven, Audacity, Pod.Cast) claims "everything not marked is absent". A
rejected row may be exactly such a mark, so the effort leaves out the span of
a row rejected for its label, and no whole-recording effort at all is claimed
when a row was rejected before its time was known (noted in ``notes``):
unknown, never a false negative.

Empty tables: a table with no rows at all (a Raven header-only table, an
empty Audacity track) says "reviewed, nothing found" only for the labels the
caller says were looked for (``effort_labels``); without them it records no
effort, and says so in ``notes``. It never claims effort for every label.
"""

from __future__ import annotations

import csv
import datetime as _dt
import math
import re
import sys
import unicodedata
import zoneinfo
from array import array
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from ..errors import AnnotationError, AnnotationTargetError, ConfigError
from ..timing import NAT, NS_PER_S, to_ns
from .labels import COVER_SLACK_NS

EVENT_COLUMNS: dict[str, Any] = {
    "start": "int64", "end": "int64", "low_hz": "float64", "high_hz": "float64",
    "label": object, "label_norm": object, "source": object, "confidence": "float64",
    "annotator": object, "reviewed": "bool", "kind": object, "verdict": object,
    "recording": object, "site": object, "stream": object, "line": "int64",
}
EFFORT_COLUMNS: dict[str, Any] = {
    "start": "int64", "end": "int64", "label_norm": object, "source": object,
    "recording": object, "site": object, "stream": object, "line": "int64",
}
_EVENT_DEFAULTS = {"low_hz": math.nan, "high_hz": math.nan, "confidence": math.nan, "annotator": "human",
                   "reviewed": True, "kind": "event", "verdict": "", "recording": "", "site": "", "stream": ""}
_EFFORT_DEFAULTS = {"label_norm": "", "recording": "", "site": "", "stream": ""}
PACIFIC = "America/Los_Angeles"

# Times an annotation may have (UTC, [start, end)). Far inside what int64 nanoseconds hold
# (1677-2262), so that sums and differences of two times never overflow; no recording is older
# and none is so far ahead. A row outside is rejected, never stored.
TIME_RANGE = ("1900-01-01", "2200-01-01")
TIME_MIN_NS, TIME_MAX_NS = to_ns(TIME_RANGE[0]), to_ns(TIME_RANGE[1])
# The longest offset or duration, in seconds, that can stay inside TIME_RANGE.
MAX_SECONDS = (TIME_MAX_NS - TIME_MIN_NS) / NS_PER_S


def normalize_label(text: Any) -> str:
    """Lower case, trimmed, runs of spaces/hyphens/slashes as one ``_``: ``"Common Loon" -> "common_loon"``."""
    s = unicodedata.normalize("NFKC", "" if text is None else str(text)).strip().lower()
    return re.sub(r"[\s\-/]+", "_", s)


def empty_events() -> pd.DataFrame:
    return pd.DataFrame({k: pd.Series([], dtype=v) for k, v in EVENT_COLUMNS.items()})


def empty_effort() -> pd.DataFrame:
    return pd.DataFrame({k: pd.Series([], dtype=v) for k, v in EFFORT_COLUMNS.items()})


@dataclass(frozen=True)
class RejectedRow:
    """A row of an annotation file that was left out, and why; the file's other rows are read.

    ``str()`` reads like an ``AnnotationError``: ``"labels.txt, line 7: reason"``.
    """

    file: str
    line: int | None
    reason: str

    def __str__(self) -> str:
        return str(AnnotationError(self.reason, self.file, self.line))


@dataclass(frozen=True)
class ReviewCounts:
    """The clip rows of a review table (``pamingest review``): answered, and still ``?``.

    ``unanswered_selections`` are the selection numbers still ``?`` (or
    ``line N`` for a row without one).
    """

    answered: int = 0
    unanswered: int = 0
    unanswered_selections: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {"answered": self.answered, "unanswered": self.unanswered,
                "unanswered_selections": list(self.unanswered_selections)}


@dataclass
class Annotations:
    """One annotation file, normalised.

    Attributes
    ----------
    file : str
        The annotation file as the caller named it.
    format : str
        The reader's format name (``raven``, ``sanctsound``...).
    events, effort : pandas.DataFrame
        Columns ``EVENT_COLUMNS`` and ``EFFORT_COLUMNS`` (module docstring).
    recordings : tuple of (str, int)
        The recordings (URL, UTC start ns) that file-relative times were
        resolved against: part of what makes an attach unique, so the same
        header-only table attached to two recordings is two attaches.
    notes : list of str
        Things the caller should know (e.g. effort cut short because a
        recording's length is unknown, or none claimed for an empty table).
    rejected : list of RejectedRow
        Rows left out (file, line, reason), in line order.
    review : ReviewCounts or None
        For a review table: its clip rows answered and unanswered.
    """

    file: str
    format: str
    events: pd.DataFrame = field(default_factory=empty_events)
    effort: pd.DataFrame = field(default_factory=empty_effort)
    recordings: tuple[tuple[str, int], ...] = ()
    notes: list[str] = field(default_factory=list)
    rejected: list[RejectedRow] = field(default_factory=list)
    review: ReviewCounts | None = None


# ---------------------------------------------------------------- recordings

@dataclass(frozen=True)
class Recording:
    """The audio file a file-relative annotation belongs to, as the caller knows it.

    Parameters
    ----------
    url : str
        The recording's URL or path as ingested (``file_url`` in the store), or
        its bare file name. Empty: "the" recording of every row.
    start : str, datetime, numpy/pandas time or int ns, optional
        Its UTC start (naive values are UTC). Without it the start is looked
        up in the store's files table.
    stream : str
        Store stream path (or a prefix of it) holding the recording.
    duration : float, optional
        Length in seconds, when the store does not hold the recording; whole
        file effort ends there.
    """

    url: str = ""
    start: Any = None
    stream: str = ""
    duration: float | None = None

    @property
    def start_ns(self) -> int | None:
        if self.start is None:
            return None
        try:
            return int(self.start) if isinstance(self.start, (int, np.integer)) else to_ns(self.start)
        except (TypeError, ValueError, OverflowError):  # a --start the user typed: an option, not a crash
            raise ConfigError(f"recording start {self.start!r} is not a time (or is outside {TIME_RANGE[0]} "
                              f"to {TIME_RANGE[1]})") from None

    @property
    def duration_ns(self) -> int | None:
        if self.duration is None:
            return None
        if not 0 <= self.duration <= MAX_SECONDS:
            raise ConfigError(f"recording duration {self.duration!r} s is not between 0 and {MAX_SECONDS:.3g} s")
        return int(round(self.duration * NS_PER_S))


@dataclass(frozen=True)
class ResolvedRecording:
    """A recording with its UTC start (and end when known) and, when known, its store stream."""

    url: str
    start_ns: int
    end_ns: int | None = None
    stream: str = ""


@runtime_checkable
class RecordingLookup(Protocol):
    """Finds recordings by URL or file name (the store's files tables implement it)."""

    def find(self, name: str, stream: str = "") -> list[ResolvedRecording]: ...


def file_name(url: str) -> str:
    """Last path segment of a path or URL, without query string; of a chained URL's first part
    (``zip://folder/a.flac::https://...`` names ``a.flac``, a member of the archive); the
    ``filename`` of a download service's URL (ONC's ``.../archivefile/download?filename=a.wav``)."""
    from ..sources.base import url_file_name

    return url_file_name(url.split("::", 1)[0]).replace("\\", "/").rsplit("/", 1)[-1]


def same_file(a: str, b: str) -> bool:
    return a == b or file_name(a) == file_name(b)


@dataclass
class ReadContext:
    """What a reader knows beyond the file: recordings named by the caller, a store to look files up in.

    Parameters
    ----------
    recordings : tuple of Recording
        Recordings the caller names (with their starts, or to be looked up).
    lookup : RecordingLookup, optional
        Usually the store's files tables.
    stream : str
        Restrict lookups (and absolute-time rows) to streams under this path.
    """

    recordings: tuple[Recording, ...] = ()
    lookup: RecordingLookup | None = None
    stream: str = ""

    def _find(self, name: str, stream: str, file: str, line: int | None) -> ResolvedRecording | None:
        if self.lookup is None or not name:
            return None
        found = self.lookup.find(name, stream)
        if len(found) > 1:
            raise AnnotationTargetError(
                f"recording {name!r} matches several files in the store "
                f"({', '.join(sorted(f.url for f in found)[:5])}): give the stream or the full URL", file, line)
        return found[0] if found else None

    def resolve_stem(self, stem: str, file: str, line: int | None) -> ResolvedRecording | None:
        """The stored recording whose file name, without its extension, is ``stem`` (None: none)."""
        finder = getattr(self.lookup, "find_stem", None)
        found = finder(stem, self.stream) if finder is not None else []
        if len(found) > 1:
            raise AnnotationTargetError(
                f"recording {stem!r} matches several files in the store "
                f"({', '.join(sorted(f.url for f in found)[:5])}): give the stream or the recording", file, line)
        return found[0] if found else None

    def resolve(self, name: str | None, file: str, line: int | None, required: bool = True) -> ResolvedRecording | None:
        """The recording ``name`` (a file name or URL from the annotation; None: the file does not say).

        The caller's recordings win over the store; a caller's recording
        without a start is looked up. Raises AnnotationTargetError when the
        recording cannot be placed in time (unless ``required`` is False).
        """
        given = [r for r in self.recordings if r.url and name and same_file(r.url, name)]
        if not given:
            anonymous = [r for r in self.recordings if not r.url]
            if name is None and len(self.recordings) == 1:
                given = list(self.recordings)
            elif len(anonymous) == 1:
                given = anonymous
            elif name is None and len(self.recordings) > 1:
                raise AnnotationTargetError("several recordings were given and the file does not say which "
                                            "one it annotates", file, line)
        if given:
            rec = given[0]
            stream = rec.stream or self.stream
            stored = self._find(rec.url or name or "", stream, file, line)
            start = rec.start_ns
            if start is None:
                if stored is None:
                    raise AnnotationTargetError(
                        f"recording {rec.url or name!r} is not in the store"
                        f"{' under ' + stream if stream else ''}: give its UTC start", file, line)
                return stored
            end = None
            if rec.duration is not None:
                end = start + rec.duration_ns
            elif stored is not None and stored.end_ns is not None:
                end = start + (stored.end_ns - stored.start_ns)
            url = stored.url if stored is not None else (rec.url or name or "")
            return ResolvedRecording(url, start, end, (stored.stream if stored is not None else "") or stream)
        if name is None:
            if not required:
                return None
            raise AnnotationTargetError(
                "the file does not name its recording: give the recording (URL, or stream + file) "
                "and its UTC start", file, line)
        stored = self._find(name, self.stream, file, line)
        if stored is None and required:
            raise AnnotationTargetError(
                f"recording {name!r} is not in the store{' under ' + self.stream if self.stream else ''} "
                "and was not given: give its UTC start", file, line)
        return stored


# ---------------------------------------------------------------- readers

@runtime_checkable
class AnnotationReader(Protocol):
    """One annotation format: settings in ``__init__``, work in ``__call__``."""

    format: str

    def __call__(self, data: bytes, name: str, context: ReadContext | None = None) -> Annotations: ...


class ReaderBase:
    """Shared settings: label mapping and the ``source`` written into every record."""

    format = ""
    suffixes: tuple[str, ...] = ()  # file name endings of the format, for listing a prefix (annotations.sync)
    default_source = ""

    def __init__(self, *, label_map: dict[str, str] | None = None, source: str | None = None) -> None:
        self.label_map = dict(label_map or {})
        self.source = source or self.default_source or self.format

    def norm(self, label: str) -> str:
        """``label_map`` (as written, then normalised) or the normalised label."""
        if label in self.label_map:
            return normalize_label(self.label_map[label])
        n = normalize_label(label)
        return normalize_label(self.label_map.get(n, n))

    def collector(self, name: str) -> "Collector":
        return Collector(name, self.format, self.source)

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v!r}" for k, v in sorted(vars(self).items()))
        return f"{type(self).__name__}({settings})"


class _UnusableRow(AnnotationError):
    """A row placed in time that cannot be used (its label, a text field): its span is known."""

    def __init__(self, message: str, file: str, line: int | None, start: int, end: int) -> None:
        super().__init__(message, file, line)
        self.span = (start, end)


class _Columns:
    """A table built column by column: numbers in typed arrays, text as shared str objects.

    A 300k-row table held as one dict per row took ~0.5 GB; as columns it is ~16 bytes a cell.
    """

    _TYPECODES = {"int64": "q", "float64": "d", "bool": "b"}

    def __init__(self, columns: dict[str, Any]) -> None:
        self.dtypes = columns
        self.data: dict[str, Any] = {k: array(self._TYPECODES[v]) if v in self._TYPECODES else []
                                     for k, v in columns.items()}

    def append(self, row: dict[str, Any]) -> None:
        for k, v in row.items():
            # Labels, sources and recordings repeat: one str object for each distinct value.
            self.data[k].append(sys.intern(v) if type(v) is str else v)

    def __len__(self) -> int:
        return len(self.data["start"])

    def truncate(self, n: int) -> None:
        for values in self.data.values():
            del values[n:]

    def frame(self) -> pd.DataFrame:
        cols = {}
        for k, dtype in self.dtypes.items():
            values = self.data[k]
            if dtype == "bool":
                cols[k] = np.frombuffer(values, dtype=np.int8).astype(bool)
            elif isinstance(values, array):
                cols[k] = np.frombuffer(values, dtype=dtype)  # a view: the array is not copied
            else:
                cols[k] = np.array(values, dtype=object)
        self.data = {}
        # copy=False: one block per column, so pandas does not copy the columns into 2-d blocks.
        return pd.DataFrame(cols, copy=False)


def _control_character(text: str) -> str | None:
    """The first control character (NUL, ESC, DEL, ...) in ``text``, if any."""
    if text.isprintable():
        return None
    return next((c for c in text if unicodedata.category(c) == "Cc"), None)


def _text_problem(value: str, what: str) -> str | None:
    c = _control_character(value)
    return None if c is None else f"{what} {value[:40]!r} contains the control character U+{ord(c):04X}"


def _check_text(row: dict[str, Any]) -> str | None:
    for k, v in row.items():
        if type(v) is str and (problem := _text_problem(v, k)) is not None:
            return problem
    return None


def check_text(value: str, what: str, file: str, line: int | None) -> None:
    """A text cell that is not stored but decides something (a verdict) must hold no control character."""
    problem = _text_problem(value, what)
    if problem:
        raise AnnotationError(problem, file, line)


def _describe_ns(ns: int) -> str:
    if -(2 ** 63) < ns < 2 ** 63:
        return str(np.datetime64(int(ns), "ns")).split(".")[0]
    return f"year {1970 + ns / (365.2425 * 86400 * NS_PER_S):.4g}"


class Collector:
    """Accumulates normalised rows, checking what every format must satisfy, and the rows rejected.

    Readers wrap the work of each row in ``with out.row(line):`` so that an
    ``AnnotationError`` rejects that row only (an ``AnnotationTargetError``:
    an unknown recording or site, still fails the file).
    """

    def __init__(self, file: str, format: str, source: str) -> None:
        self.file, self.format, self.source = file, format, source
        self.events = _Columns(EVENT_COLUMNS)
        self.effort = _Columns(EFFORT_COLUMNS)
        self.notes: list[str] = []
        self.recordings: dict[str, int] = {}
        self.rejected: list[RejectedRow] = []
        self._holes: list[tuple[int, int]] = []  # spans of rows rejected for what they say, not when
        self._untimed = 0  # rows rejected before their time was known
        self.review: ReviewCounts | None = None

    # ------------------------------------------------------------ rejecting rows
    def reject(self, line: int | None, reason: str, span: tuple[int, int] | None = None) -> None:
        self.rejected.append(RejectedRow(self.file, line, reason))
        if span is None:
            self._untimed += 1
        else:
            self._holes.append(span)

    def row(self, line: int | None) -> "_Row":
        """Context for one row's work: an ``AnnotationError`` inside rejects the row, not the file."""
        return _Row(self, line)

    # ------------------------------------------------------------ checks
    def check_span(self, start: int, end: int, line: int | None) -> None:
        for t in (start, end):
            if not TIME_MIN_NS <= t < TIME_MAX_NS:
                raise AnnotationError(f"time out of range: {_describe_ns(t)} is outside {TIME_RANGE[0]} to "
                                      f"{TIME_RANGE[1]} UTC", self.file, line)
        if end < start:
            raise AnnotationError(f"negative duration: ends {(start - end) / NS_PER_S:g} s before it starts",
                                  self.file, line)

    def _check_label(self, label: str, label_norm: str, line: int | None, start: int, end: int) -> None:
        if not label.strip():
            raise _UnusableRow("empty label", self.file, line, start, end)
        if not label_norm:
            raise _UnusableRow(f"label {label!r} maps to an empty label", self.file, line, start, end)

    # ------------------------------------------------------------ records
    def event(self, line: int | None, start: int, end: int, label: str, label_norm: str, **fields) -> None:
        self.check_span(start, end, line)
        label = str(label)
        low, high = fields.get("low_hz", math.nan), fields.get("high_hz", math.nan)
        if not (math.isnan(low) or math.isnan(high)) and low > high:
            # Some tables swap the bounds (Powdermill); the band is what matters.
            fields["low_hz"], fields["high_hz"] = high, low
        row = {**_EVENT_DEFAULTS, "source": self.source, **fields, "start": int(start), "end": int(end),
               "label": label, "label_norm": label_norm, "line": int(line or 0)}
        problem = _check_text(row)
        if problem:
            raise _UnusableRow(problem, self.file, line, start, end)
        self._check_label(label, label_norm, line, start, end)
        self.events.append(row)

    def set_band(self, index: int, low: float, high: float) -> None:
        """The frequency band of event ``index`` (a later line or view gives it)."""
        self.events.data["low_hz"][index], self.events.data["high_hz"][index] = min(low, high), max(low, high)

    def effort_span(self, line: int | None, start: int, end: int, label_norm: str = "", **fields) -> None:
        self.check_span(start, end, line)
        if end > start:
            row = {**_EFFORT_DEFAULTS, "source": self.source, **fields, "start": int(start),
                   "end": int(end), "label_norm": label_norm, "line": int(line or 0)}
            problem = _check_text(row)
            if problem:
                raise AnnotationError(problem, self.file, line)
            self.effort.append(row)

    def recording(self, rec: ResolvedRecording) -> None:
        self.recordings.setdefault(rec.url, rec.start_ns)

    def whole_file_effort(self, rec: ResolvedRecording, labels: tuple[str, ...] | list[str], line: int | None,
                          **fields) -> None:
        """Effort over all of ``rec`` (for every label when ``labels`` is empty).

        A recording whose length is unknown (not in the store, no duration
        given) is covered up to its last event: nothing is claimed beyond.
        Rows rejected for their label are left out of it; after a row
        rejected before its time was known, nothing is claimed (see the
        module docstring).
        """
        if self._untimed:
            self.notes.append(f"{rec.url}: no effort recorded: rows rejected before their time was known "
                              f"({self._untimed}) may have marked sounds in it, so its unmarked time cannot be "
                              "called absence")
            return
        end = rec.end_ns
        if end is None:
            ends = [e for e, r in zip(self.events.data["end"], self.events.data["recording"]) if r == rec.url]
            end = max(ends, default=rec.start_ns)
            self.notes.append(f"{rec.url}: length unknown (not in the store, no duration given); "
                              "its effort ends at its last event")
        spans = _subtract(rec.start_ns, end, self._holes) if self._holes else [(rec.start_ns, end)]
        if spans != [(rec.start_ns, end)]:
            self.notes.append(f"{rec.url}: the spans of rows rejected for their label are left out of its effort")
        with self.row(line):
            for lab in (labels or ("",)):
                for s, e in spans:
                    self.effort_span(line, s, e, lab, recording=rec.url, stream=rec.stream, **fields)

    def build(self) -> Annotations:
        rejected = sorted(self.rejected, key=lambda r: r.line or 0)
        return Annotations(self.file, self.format, self.events.frame(), self.effort.frame(),
                           tuple(sorted(self.recordings.items())), list(dict.fromkeys(self.notes)), rejected,
                           self.review)


class _Row:
    """One row's work: all of it is kept, or none (a review row's effort without its rejected answer
    would be a false negative)."""

    __slots__ = ("collector", "line", "events", "effort")

    def __init__(self, collector: Collector, line: int | None) -> None:
        self.collector, self.line = collector, line

    def __enter__(self) -> None:
        self.events, self.effort = len(self.collector.events), len(self.collector.effort)

    def __exit__(self, kind, exc, tb) -> bool:
        if exc is None or not isinstance(exc, AnnotationError) or isinstance(exc, AnnotationTargetError):
            return False
        self.collector.events.truncate(self.events)
        self.collector.effort.truncate(self.effort)
        self.collector.reject(exc.line if exc.line is not None else self.line, exc.reason,
                              getattr(exc, "span", None))
        return True


def _subtract(start: int, end: int, holes: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """``[start, end)`` without the ``holes``.

    A hole narrower than the slack the labelling rule allows when it checks
    that effort covers a row (an instant) is widened to that slack, or it
    would not uncover anything.
    """
    out, at = [], start
    for a, b in sorted((a, max(b, a + 2 * COVER_SLACK_NS)) for a, b in holes):
        if b <= at or a >= end:
            continue
        if a > at:
            out.append((at, a))
        at = max(at, b)
    if at < end:
        out.append((at, end))
    return out


# ---------------------------------------------------------------- tables

def decode_text(data: bytes) -> str:
    """UTF-8 (a BOM is dropped), else Latin-1: Raven on Windows writes cp1252."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


_LINE_END = re.compile(r"\r\n|\r|\n")


def text_lines(text: str, first: int = 1, start: int = 0) -> Iterator[tuple[int, str]]:
    """``(line number, line)`` of ``text`` from offset ``start``, one at a time, split at CRLF, CR or LF.

    Not ``str.splitlines``: it also splits at form feeds, U+2028 and other
    characters a label may hold, which would shift every later line number.
    """
    at, number = start, first
    for m in _LINE_END.finditer(text, start):
        yield number, text[at:m.start()]
        at, number = m.end(), number + 1
    if at < len(text):
        yield number, text[at:]


def _key(name: str) -> str:
    return re.sub(r"\s+", " ", name.replace("\ufeff", "")).strip().lower()


def _blank(cells: list[str]) -> bool:
    return not any(c.strip() for c in cells)


class Table:
    """A delimited table: header lookup ignoring case and spacing, rows with their line numbers.

    Parameters
    ----------
    data : bytes
        The file.
    file : str
        Its name, for messages.
    delimiter : str
        ``"\t"`` or ``","``.
    quoting : bool
        False (tab-separated formats: Raven, Pod.Cast, OrcaHello): no quote
        processing, every line is one row, a ``"`` is text. Those formats
        are written without quotes, and with CSV quoting a label that begins
        with ``"`` would swallow the rows after it. True (CSV exports):
        ``"..."`` fields, which may span lines only in the ``multiline``
        columns; a quote that is not closed on its line anywhere else rejects
        that line and the lines after it are read again as rows.
    multiline : tuple of str
        Columns whose quoted cells may hold line breaks (pods-ai
        ``Description``).

    Rows are read one at a time from the text (:meth:`rows`), never all held.
    """

    def __init__(self, data: bytes, file: str, delimiter: str, *, quoting: bool = False,
                 multiline: tuple[str, ...] = ()) -> None:
        self.file, self.delimiter, self.quoting = file, delimiter, quoting
        self.text = decode_text(data)
        self.header: list[str] = []
        self.header_line = 1
        self._body = len(self.text)  # offset in the text where the rows start
        at, number = 0, 1
        while at < len(self.text):
            m = _LINE_END.search(self.text, at)
            stop, after = (m.start(), m.end()) if m else (len(self.text), len(self.text))
            cells = self._split_one(self.text[at:stop])
            if not _blank(cells):
                # Trailing delimiters (Raven) make empty column names: drop them.
                while cells and not cells[-1].strip():
                    cells = cells[:-1]
                self.header, self.header_line, self._body = [c.strip() for c in cells], number, after
                break
            at, number = after, number + 1
        self._index: dict[str, int] = {}
        for i, name in enumerate(self.header):
            self._index.setdefault(_key(name), i)
        self._multiline = {i for i, name in enumerate(self.header) if _key(name) in {_key(n) for n in multiline}}

    def _split_one(self, line: str) -> list[str]:
        if not self.quoting:
            return line.split(self.delimiter)
        try:
            return next(csv.reader([line], delimiter=self.delimiter), [])
        except csv.Error:
            return line.split(self.delimiter)

    def col(self, *names: str) -> int | None:
        """Index of the first of ``names`` present (case and spacing ignored)."""
        for n in names:
            i = self._index.get(_key(n))
            if i is not None:
                return i
        return None

    def need(self, *names: str) -> int:
        i = self.col(*names)
        if i is None:
            raise AnnotationError(
                f"missing required column {names[0]!r}"
                + (f" (or {', '.join(repr(n) for n in names[1:])})" if len(names) > 1 else "")
                + f"; the header has {', '.join(repr(h) for h in self.header) or 'no columns'}",
                self.file, self.header_line)
        return i

    def _lines(self) -> Iterator[tuple[int, str]]:
        return text_lines(self.text, self.header_line + 1, self._body) if self.header else iter(())

    def has_rows(self) -> bool:
        """Whether any non-blank line follows the header."""
        return any(line.strip() for _, line in self._lines())

    def rows(self, reject: Callable[[int, str], None] | None = None) -> Iterator[tuple[int, list[str]]]:
        """``(line, cells)`` of each non-blank row; ``reject(line, reason)`` is told of broken quoting."""
        if not self.quoting:
            split = self.delimiter
            for number, line in self._lines():
                cells = line.split(split)
                if not _blank(cells):
                    yield number, cells
            return
        yield from self._quoted_rows(reject or (lambda line, reason: None))

    def _quoted_rows(self, reject: Callable[[int, str], None]) -> Iterator[tuple[int, list[str]]]:
        source = self._lines()
        again: deque[tuple[int, str]] = deque()  # lines a broken record swallowed, to be read as rows
        taken: list[tuple[int, str]] = []  # the lines of the record being read

        def feed() -> Iterator[str]:
            while True:
                item = again.popleft() if again else next(source, None)
                if item is None:
                    return
                taken.append(item)
                yield item[1] + "\n"

        reader = csv.reader(feed(), delimiter=self.delimiter, strict=True)
        while True:
            taken.clear()
            try:
                cells = next(reader)
                broken = self._broken(cells, taken)
            except StopIteration:
                return
            except csv.Error as exc:
                if not taken:
                    return
                broken = self._unclosed(taken) if len(taken) > 1 else f"not a readable CSV row ({exc})"
            if broken is None:
                if not _blank(cells):
                    yield taken[0][0], cells
                continue
            reject(taken[0][0], broken)
            again.extendleft(reversed(taken[1:]))
            reader = csv.reader(feed(), delimiter=self.delimiter, strict=True)

    def _broken(self, cells: list[str], taken: list[tuple[int, str]]) -> str | None:
        """Why a record read over several lines is not one row (None: it is)."""
        if len(taken) <= 1:
            return None
        if len(cells) != len(self.header) or any("\n" in c for i, c in enumerate(cells) if i not in self._multiline):
            return self._unclosed(taken)
        return None

    @staticmethod
    def _unclosed(taken: list[tuple[int, str]]) -> str:
        first, last = taken[1][0], taken[-1][0]
        swallowed = f"line {first}" if first == last else f"lines {first}-{last}"
        return f"a quote opened on this line is not closed on it (it would swallow {swallowed})"


def cell(cells: list[str], i: int | None) -> str:
    return cells[i].strip() if i is not None and i < len(cells) else ""


def number(value: str, what: str, file: str, line: int | None, allow_empty: bool = False) -> float:
    """A finite number from a cell (Hz, a confidence, a presence); NaN for an empty cell when allowed."""
    if value == "" and allow_empty:
        return math.nan
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise AnnotationError(f"{what} {value!r} is not a number", file, line) from None
    if not math.isfinite(x):
        if allow_empty:
            return math.nan
        raise AnnotationError(f"{what} {value!r} is not a finite number", file, line)
    return x


def seconds(value: str, what: str, file: str, line: int | None) -> float:
    """Seconds from a recording's start, or a duration: a number from 0 to ``MAX_SECONDS``."""
    x = number(value, what, file, line)
    if x < 0:
        raise AnnotationError(f"{what} {value!r} is negative", file, line)
    if x > MAX_SECONDS:
        raise AnnotationError(f"time out of range: {what} {value!r} is more than {MAX_SECONDS:.3g} s", file, line)
    return x


def s_to_ns(x: float) -> int:
    return int(round(x * NS_PER_S))


def parse_utc(value: str, what: str, file: str, line: int | None) -> int:
    """An ISO 8601 time -> int ns UTC; an offset is honoured, a naive time is UTC."""
    try:
        if not value:
            raise ValueError
        return to_ns(value)
    except (TypeError, ValueError, OverflowError):
        raise AnnotationError(f"{what} {value!r} is not a time (or is outside {TIME_RANGE[0]} to "
                              f"{TIME_RANGE[1]})", file, line) from None


def local_to_utc(naive: _dt.datetime, tz: str, file: str, line: int | None) -> int:
    """A wall-clock time in ``tz`` -> int ns UTC; a time that does not exist or occurs twice is an error."""
    zone = zoneinfo.ZoneInfo(tz)
    a = naive.replace(tzinfo=zone, fold=0)
    b = naive.replace(tzinfo=zone, fold=1)
    if a.utcoffset() != b.utcoffset():
        kind = "occurs twice (clocks went back)" if a.utcoffset() > b.utcoffset() else \
            "does not exist (clocks went forward)"
        raise AnnotationError(f"local time {naive.isoformat()} in {tz} {kind}", file, line)
    try:
        return to_ns(pd.Timestamp(a).tz_convert("UTC"))
    except (ValueError, OverflowError):  # pandas' OutOfBoundsDatetime: years past 2262
        raise AnnotationError(f"time out of range: local time {naive.isoformat()} is outside {TIME_RANGE[0]} "
                              f"to {TIME_RANGE[1]}", file, line) from None


__all__ = [
    "EFFORT_COLUMNS", "EVENT_COLUMNS", "MAX_SECONDS", "NAT", "PACIFIC", "TIME_RANGE", "AnnotationReader",
    "Annotations", "Collector", "ReadContext", "ReaderBase", "Recording", "RecordingLookup", "RejectedRow",
    "ResolvedRecording", "ReviewCounts", "Table", "cell", "check_text", "decode_text", "empty_effort", "empty_events", "file_name",
    "local_to_utc", "normalize_label", "number", "parse_utc", "s_to_ns", "same_file", "seconds", "text_lines",
]
