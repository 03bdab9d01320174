"""Orcasound Pod.Cast training TSVs (``train.tsv``/``test.tsv``/``dev.tsv`` in acoustic-sandbox).

Columns ``dataset, wav_filename, start_time_s, duration_s, location, date,
pst_or_master_tape_identifier``. Only positive segments are listed, so every
listed file was reviewed whole: the rest of it is negative effort. A file
listed with a 0.01 s row holds no call at all (the row is a marker, not an
event). ``date`` and ``pst_or_master_tape_identifier`` are US/Pacific wall
time and their format changes between Pod.Cast rounds.

Read without quote processing (tab-separated, no quotes written): every line
is one row. A row that cannot be read is rejected (file, line, reason) and
the others are kept; then the listed files' effort is withheld (a rejected
row may be the call that makes part of a file positive). A header-only file
lists no file, so it records nothing.
"""

from __future__ import annotations

import datetime as _dt

from ..errors import AnnotationError
from ..timing import NS_PER_S
from .base import (PACIFIC, Annotations, ReadContext, ReaderBase, ResolvedRecording, Table, cell, local_to_utc,
                   s_to_ns, seconds)

# date + time formats seen across Pod.Cast rounds (tried in order).
LOCAL_FORMATS = ("%m/%d/%Y %H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y_%m_%d %H:%M:%S", "%m-%d-%Y %H:%M:%S",
                 "%m_%d_%Y %H:%M:%S", "%Y_%m_%d %H_%M_%S", "%m_%d_%Y %H_%M_%S")


def parse_local(date: str, time: str) -> _dt.datetime | None:
    """``date`` + ``time`` cells as a naive wall-clock time, or None if no known format fits."""
    text = f"{date.strip()} {time.strip()}"
    for fmt in LOCAL_FORMATS:
        try:
            return _dt.datetime.strptime(text, fmt)
        except ValueError:
            continue
    return None


class PodcastTsv(ReaderBase):
    """Read a Pod.Cast TSV.

    Parameters
    ----------
    label : str
        Label of the listed calls (default ``"orca"``: Pod.Cast marks
        killer whale calls); the effort covers this label only.
    marker_seconds : float
        Rows this short or shorter mark an all-negative file (default 0.01).
    file_seconds : float, optional
        Length of the wav files, used when the store does not hold them.
    time_zone : str
        Zone of ``date``/``pst_or_master_tape_identifier`` (US/Pacific).
    label_map, source
        As for every reader (default source ``"podcast"``).

    A file's UTC start comes from the recordings the caller names, else the
    store's files table (by file name), else the row's Pacific ``date`` and
    ``pst_or_master_tape_identifier``.
    """

    format = "podcast-tsv"
    suffixes = (".tsv",)
    default_source = "podcast"

    def __init__(self, *, label: str = "orca", marker_seconds: float = 0.01, file_seconds: float | None = None,
                 time_zone: str = PACIFIC, label_map: dict | None = None, source: str | None = None) -> None:
        super().__init__(label_map=label_map, source=source)
        self.label, self.marker_seconds, self.file_seconds = label, float(marker_seconds), file_seconds
        self.time_zone = time_zone

    def _recording(self, wav: str, cells, table: Table, context: ReadContext, name: str, line: int):
        rec = context.resolve(wav, name, line, required=False)
        if rec is not None:
            return rec
        date, tape = table.col("date"), table.col("pst_or_master_tape_identifier")
        local = parse_local(cell(cells, date), cell(cells, tape)) if date is not None and tape is not None else None
        if local is None:
            raise AnnotationError(
                f"recording {wav!r} is not in the store and its date/time "
                f"{cell(cells, date)!r} {cell(cells, tape)!r} is not a Pacific time: give its UTC start",
                name, line)
        start = local_to_utc(local, self.time_zone, name, line)
        end = start + int(round(self.file_seconds * NS_PER_S)) if self.file_seconds else None
        return ResolvedRecording(wav, start, end, context.stream)

    def __call__(self, data: bytes, name: str, context: ReadContext | None = None) -> Annotations:
        context = context or ReadContext()
        table = Table(data, name, "\t")
        wav, st, dur = table.need("wav_filename"), table.need("start_time_s"), table.need("duration_s")
        label_norm = self.norm(self.label)
        out = self.collector(name)
        files: dict[str, tuple[ResolvedRecording, int]] = {}
        for line, cells in table.rows():
            with out.row(line):
                wav_name = cell(cells, wav)
                if not wav_name:
                    raise AnnotationError("empty wav_filename", name, line)
                b = seconds(cell(cells, st), "start_time_s", name, line)
                d = seconds(cell(cells, dur), "duration_s", name, line)
                if wav_name not in files:
                    files[wav_name] = (self._recording(wav_name, cells, table, context, name, line), line)
                rec = files[wav_name][0]
                out.recording(rec)
                if d > self.marker_seconds:
                    t0 = rec.start_ns + s_to_ns(b)
                    out.event(line, t0, t0 + s_to_ns(d), self.label, label_norm, recording=rec.url,
                              stream=rec.stream)
        for rec, line in files.values():
            out.whole_file_effort(rec, (label_norm,), line)
        return out.build()
