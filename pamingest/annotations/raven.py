"""Raven Pro selection tables (tab-separated; BirdNET writes them too).

Columns ``Selection, View, Channel, Begin Time (s), End Time (s), Low Freq
(Hz), High Freq (Hz)`` plus free label columns, optionally ``Begin File,
File Offset (s), Begin Path`` and (BirdNET) ``Confidence``. Raven repeats a
selection once per view (``Waveform 1``, ``Spectrogram 1``): one event per
selection number. Trailing tabs make empty columns; header-only tables mean
"reviewed, nothing found".
"""

from __future__ import annotations

import math

from ..errors import AnnotationError, ConfigError
from .base import Annotations, Collector, ReadContext, ReaderBase, Table, cell, file_name, s_to_ns, seconds

# Tried in this order when no label column is named.
LABEL_COLUMNS = ("Annotation", "Species", "Common Name", "Species Code", "Label", "Class", "Call Type", "Type")
# Review tables (``pamingest review``): a clip row left unanswered, and answers meaning "nothing heard".
UNANSWERED = "?"
ABSENT = frozenset({"", "none", "absent", "no", "0", "-"})


class RavenTable(ReaderBase):
    """Read a Raven selection table.

    Parameters
    ----------
    label_column : str, optional
        Column holding the label; default: the first of ``LABEL_COLUMNS``.
    effort : {"file", "none"}
        ``"file"`` (default): the table covers its whole recording(s), so
        every unselected second is a reviewed negative; ``"none"``: no effort.
        A table with a ``Confidence`` column (BirdNET) is machine output:
        its events are unreviewed and it claims no effort.
    effort_labels : sequence of str
        Labels the review covered (normalised); empty: every label.
    label_map : dict, optional
        Label as written (or normalised) -> normalised label.
    source : str
        Written into each record (default ``"raven"``).

    Times are seconds from the recording's start: the file named by ``Begin
    File``/``Begin Path`` with ``File Offset (s)`` when the table has them,
    else the recording the caller names.
    """

    format = "raven"

    def __init__(self, label_column: str | None = None, *, effort: str = "file", effort_labels=(),
                 label_map: dict | None = None, source: str | None = None) -> None:
        super().__init__(label_map=label_map, source=source)
        if effort not in ("file", "none"):
            raise ConfigError(f"effort must be 'file' or 'none', not {effort!r}")
        self.label_column = label_column
        self.effort = effort
        self.effort_labels = tuple(effort_labels)

    def __call__(self, data: bytes, name: str, context: ReadContext | None = None) -> Annotations:
        context = context or ReadContext()
        table = Table(data, name, "\t")
        begin = table.need("Begin Time (s)")
        end = table.need("End Time (s)")
        sel, view = table.col("Selection"), table.col("View")
        low, high = table.col("Low Freq (Hz)"), table.col("High Freq (Hz)")
        bfile, bpath, offset = table.col("Begin File"), table.col("Begin Path"), table.col("File Offset (s)")
        conf = table.col("Confidence")
        clip_col, asked_col = table.col("Review Clip"), table.col("Reviewed For")
        if self.label_column:
            label = table.need(self.label_column)
        else:
            label = table.col(*LABEL_COLUMNS)
            if label is None and len(table):
                table.need(*LABEL_COLUMNS)  # raises, naming the columns tried
        out = self.collector(name)

        # One row per selection: Raven writes each once per view.
        rows: dict[str, tuple[int, list[str]]] = {}
        for line, cells in table:
            key = cell(cells, sel) or f"line {line}"
            if key in rows:
                kept_line, kept = rows[key]
                if (cell(kept, begin), cell(kept, end)) != (cell(cells, begin), cell(cells, end)):
                    raise AnnotationError(f"selection {key} is repeated (line {kept_line}) with other times",
                                          name, line)
                # The spectrogram view carries the meaningful frequency bounds.
                if cell(cells, view).lower().startswith("spectrogram") and \
                        not cell(kept, view).lower().startswith("spectrogram"):
                    rows[key] = (kept_line, cells)
            else:
                rows[key] = (line, cells)

        # Review clips -> (the recording they were cut from, the clip's offset in it).
        clips: dict[str, tuple[str, float]] = {}
        if clip_col is not None:
            for line, cells in rows.values():
                if cell(cells, clip_col) and offset is not None and cell(cells, offset):
                    origin = file_name(cell(cells, bpath)) or cell(cells, bfile)
                    clips[file_name(cell(cells, clip_col))] = (
                        origin, seconds(cell(cells, offset), "File Offset (s)", name, line))

        resolved = {}
        for line, cells in rows.values():
            b = seconds(cell(cells, begin), "Begin Time (s)", name, line)
            e = seconds(cell(cells, end), "End Time (s)", name, line)
            out.check_span(s_to_ns(b), s_to_ns(e), line)
            named = file_name(cell(cells, bpath)) or cell(cells, bfile)
            is_clip = clip_col is not None and bool(cell(cells, clip_col))
            written = cell(cells, label)
            if is_clip and written == UNANSWERED:
                continue  # nobody answered: neither effort nor event
            if named and offset is not None and cell(cells, offset):
                at = seconds(cell(cells, offset), "File Offset (s)", name, line)
                if not is_clip and named in clips:  # drawn by the reviewer inside a review clip
                    named, at = clips[named][0], clips[named][1] + at
                rec = context.resolve(named, name, line)
                t0 = rec.start_ns + s_to_ns(at)
                t1 = t0 + s_to_ns(e - b)
            else:
                rec = context.resolve(None, name, line)
                t0, t1 = rec.start_ns + s_to_ns(b), rec.start_ns + s_to_ns(e)
            resolved.setdefault(rec.url, (rec, line))
            out.recording(rec)
            confidence = seconds(cell(cells, conf), "Confidence", name, line, allow_empty=True)
            machine = not math.isnan(confidence)
            if is_clip:
                asked = [self.norm(x) for x in cell(cells, asked_col).split(";") if x.strip()]
                for lab in (asked or [""]) if self.effort != "none" else ():
                    out.effort_span(line, t0, t1, lab, recording=rec.url, stream=rec.stream)
                heard = [x.strip() for x in written.split(";") if x.strip().lower() not in ABSENT]
                for x in heard:
                    out.event(line, t0, t1, x, self.norm(x), confidence=math.nan, annotator="human",
                              reviewed=True, recording=rec.url, stream=rec.stream)
                continue
            out.event(line, t0, t1, written, self.norm(written),
                      low_hz=seconds(cell(cells, low), "Low Freq (Hz)", name, line, allow_empty=True),
                      high_hz=seconds(cell(cells, high), "High Freq (Hz)", name, line, allow_empty=True),
                      confidence=confidence, annotator="machine" if machine else "human", reviewed=not machine,
                      recording=rec.url, stream=rec.stream)
        # A table with confidences is a detector's output (BirdNET): nobody reviewed it.
        if self.effort == "file" and conf is None and clip_col is None:
            if not resolved:
                # A header-only table: reviewed, nothing found, in the recording the caller names.
                rec = context.resolve(None, name, getattr(table, "header_line", 1))
                out.recording(rec)
                resolved[rec.url] = (rec, getattr(table, "header_line", 1))
            for rec, line in resolved.values():
                out.whole_file_effort(rec, self.effort_labels, line)
        return out.build()
