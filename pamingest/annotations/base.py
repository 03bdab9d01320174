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
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import math
import re
import unicodedata
import zoneinfo
from dataclasses import dataclass, field
from typing import Any, Iterator, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from ..errors import AnnotationError, AnnotationTargetError
from ..timing import NAT, NS_PER_S, to_ns

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


def normalize_label(text: Any) -> str:
    """Lower case, trimmed, runs of spaces/hyphens/slashes as one ``_``: ``"Common Loon" -> "common_loon"``."""
    s = unicodedata.normalize("NFKC", "" if text is None else str(text)).strip().lower()
    return re.sub(r"[\s\-/]+", "_", s)


def empty_events() -> pd.DataFrame:
    return pd.DataFrame({k: pd.Series([], dtype=v) for k, v in EVENT_COLUMNS.items()})


def empty_effort() -> pd.DataFrame:
    return pd.DataFrame({k: pd.Series([], dtype=v) for k, v in EFFORT_COLUMNS.items()})


def _frame(rows: list[dict], columns: dict[str, Any]) -> pd.DataFrame:
    if not rows:
        return empty_events() if columns is EVENT_COLUMNS else empty_effort()
    return pd.DataFrame({k: pd.Series([r[k] for r in rows], dtype=v) for k, v in columns.items()})


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
        recording's length is unknown).
    """

    file: str
    format: str
    events: pd.DataFrame = field(default_factory=empty_events)
    effort: pd.DataFrame = field(default_factory=empty_effort)
    recordings: tuple[tuple[str, int], ...] = ()
    notes: list[str] = field(default_factory=list)


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
        return None if self.start is None else (int(self.start) if isinstance(self.start, (int, np.integer))
                                                else to_ns(self.start))


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
    """Last path segment of a path or URL, without query string."""
    return url.split("?", 1)[0].rstrip("/").replace("\\", "/").rsplit("/", 1)[-1]


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
                end = start + int(round(rec.duration * NS_PER_S))
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


class Collector:
    """Accumulates normalised rows, checking what every format must satisfy."""

    def __init__(self, file: str, format: str, source: str) -> None:
        self.file, self.format, self.source = file, format, source
        self.events: list[dict] = []
        self.effort: list[dict] = []
        self.notes: list[str] = []
        self.recordings: dict[str, int] = {}

    def check_span(self, start: int, end: int, line: int | None) -> None:
        if end < start:
            raise AnnotationError(f"negative duration: ends {(start - end) / NS_PER_S:g} s before it starts",
                                  self.file, line)

    def event(self, line: int | None, start: int, end: int, label: str, label_norm: str, **fields) -> None:
        self.check_span(start, end, line)
        low, high = fields.get("low_hz", math.nan), fields.get("high_hz", math.nan)
        if not (math.isnan(low) or math.isnan(high)) and low > high:
            # Some tables swap the bounds (Powdermill); the band is what matters.
            fields["low_hz"], fields["high_hz"] = high, low
        row = {**_EVENT_DEFAULTS, "source": self.source, **fields, "start": int(start), "end": int(end),
               "label": str(label), "label_norm": label_norm, "line": int(line or 0)}
        self.events.append(row)

    def effort_span(self, line: int | None, start: int, end: int, label_norm: str = "", **fields) -> None:
        self.check_span(start, end, line)
        if end > start:
            self.effort.append({**_EFFORT_DEFAULTS, "source": self.source, **fields, "start": int(start),
                                "end": int(end), "label_norm": label_norm, "line": int(line or 0)})

    def recording(self, rec: ResolvedRecording) -> None:
        self.recordings.setdefault(rec.url, rec.start_ns)

    def whole_file_effort(self, rec: ResolvedRecording, labels: tuple[str, ...] | list[str], line: int | None,
                          **fields) -> None:
        """Effort over all of ``rec`` (for every label when ``labels`` is empty).

        A recording whose length is unknown (not in the store, no duration
        given) is covered up to its last event: nothing is claimed beyond.
        """
        end = rec.end_ns
        if end is None:
            ends = [e["end"] for e in self.events if e["recording"] == rec.url]
            end = max(ends, default=rec.start_ns)
            self.notes.append(f"{rec.url}: length unknown (not in the store, no duration given); "
                              "its effort ends at its last event")
        for lab in (labels or ("",)):
            self.effort_span(line, rec.start_ns, end, lab, recording=rec.url, stream=rec.stream, **fields)

    def build(self) -> Annotations:
        return Annotations(self.file, self.format, _frame(self.events, EVENT_COLUMNS),
                           _frame(self.effort, EFFORT_COLUMNS),
                           tuple(sorted(self.recordings.items())), list(dict.fromkeys(self.notes)))


# ---------------------------------------------------------------- tables

def decode_text(data: bytes) -> str:
    """UTF-8 (a BOM is dropped), else Latin-1: Raven on Windows writes cp1252."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _key(name: str) -> str:
    return re.sub(r"\s+", " ", name.replace("\ufeff", "")).strip().lower()


class Table:
    """A delimited table: header lookup ignoring case and spacing, rows with their line numbers."""

    def __init__(self, data: bytes, file: str, delimiter: str) -> None:
        self.file = file
        reader = csv.reader(io.StringIO(decode_text(data), newline=""), delimiter=delimiter)
        self._rows: list[tuple[int, list[str]]] = []
        self.header: list[str] = []
        last = 0
        for cells in reader:
            first, last = last + 1, reader.line_num
            if not any(c.strip() for c in cells):
                continue
            if not self.header:
                # Trailing delimiters (Raven) make empty column names: drop them.
                while cells and not cells[-1].strip():
                    cells = cells[:-1]
                self.header = [c.strip() for c in cells]
                self.header_line = first
                continue
            self._rows.append((first, cells))
        self._index = {}
        for i, name in enumerate(self.header):
            self._index.setdefault(_key(name), i)

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
                self.file, getattr(self, "header_line", 1))
        return i

    def __iter__(self) -> Iterator[tuple[int, list[str]]]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)


def cell(cells: list[str], i: int | None) -> str:
    return cells[i].strip() if i is not None and i < len(cells) else ""


def seconds(value: str, what: str, file: str, line: int | None, allow_empty: bool = False) -> float:
    """A number of seconds (or Hz) from a cell; NaN for an empty cell when allowed."""
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


def s_to_ns(x: float) -> int:
    return int(round(x * NS_PER_S))


def parse_utc(value: str, what: str, file: str, line: int | None) -> int:
    """An ISO 8601 time -> int ns UTC; an offset is honoured, a naive time is UTC."""
    try:
        if not value:
            raise ValueError
        return to_ns(value)
    except (TypeError, ValueError, OverflowError):
        raise AnnotationError(f"{what} {value!r} is not a time", file, line) from None


def local_to_utc(naive: _dt.datetime, tz: str, file: str, line: int | None) -> int:
    """A wall-clock time in ``tz`` -> int ns UTC; a time that does not exist or occurs twice is an error."""
    zone = zoneinfo.ZoneInfo(tz)
    a = naive.replace(tzinfo=zone, fold=0)
    b = naive.replace(tzinfo=zone, fold=1)
    if a.utcoffset() != b.utcoffset():
        kind = "occurs twice (clocks went back)" if a.utcoffset() > b.utcoffset() else \
            "does not exist (clocks went forward)"
        raise AnnotationError(f"local time {naive.isoformat()} in {tz} {kind}", file, line)
    return to_ns(pd.Timestamp(a).tz_convert("UTC"))


__all__ = [
    "EFFORT_COLUMNS", "EVENT_COLUMNS", "NAT", "PACIFIC", "AnnotationReader", "Annotations", "Collector",
    "ReadContext", "ReaderBase", "Recording", "RecordingLookup", "ResolvedRecording", "Table", "cell",
    "empty_effort", "empty_events", "file_name", "local_to_utc", "normalize_label", "parse_utc", "s_to_ns",
    "same_file", "seconds",
]
