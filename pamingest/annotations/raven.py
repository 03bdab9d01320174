"""Raven Pro selection tables (tab-separated; BirdNET writes them too).

Columns ``Selection, View, Channel, Begin Time (s), End Time (s), Low Freq
(Hz), High Freq (Hz)`` plus free label columns, optionally ``Begin File,
File Offset (s), Begin Path`` and (BirdNET) ``Confidence``. Raven repeats a
selection once per view (``Waveform 1``, ``Spectrogram 1``): one event per
selection number. Trailing tabs make empty columns.

Raven writes no quotes: every line is one selection, read without quote
processing (a label may begin with ``"``). A selection that cannot be read is
rejected (file, line, reason) and the others are kept.

Review tables (``pamingest review``, a ``Review Clip`` column): each clip row
is a chunk a labeller picked, on a clip of a file sequence (``Begin File``
is the clip, ``Begin Time`` runs on across the clips in list order); its
answer in ``Annotation`` is placed through ``Source File`` + ``Source Offset
(s)`` (the original recording; tables written before those columns named it
in ``Begin File``). A selection the reviewer drew is placed through the clip
it names (``Begin File`` + ``File Offset (s)``) or, naming none, through the
clip its ``Begin Time`` falls in. Rows still ``?`` are counted
(``Annotations.review``) and a table with no answer at all is noted and
warned about (``UnansweredReviewWarning``), naming the table.

Effort: a human table (no ``Confidence``, not a review batch) covers its
recordings whole, for ``effort_labels`` or, when none are given, every label.
A header-only table (no selections at all) means "reviewed, nothing found"
only for the labels the caller names in ``effort_labels``; without them it
records no effort and says so in the notes: a table without selections does
not tell which labels were looked for.
"""

from __future__ import annotations

import math
import re
import warnings

from ..errors import AnnotationError, AnnotationTargetError, ConfigError, UnansweredReviewWarning
from .base import (Annotations, ReadContext, ReaderBase, ReviewCounts, Table, cell, file_name, number, s_to_ns,
                   seconds)

# Tried in this order when no label column is named.
LABEL_COLUMNS = ("Annotation", "Species", "Common Name", "Species Code", "Label", "Class", "Call Type", "Type")
# Review tables (``pamingest review``): a clip row left unanswered, and answers meaning "nothing heard".
# The answers' events and effort are marked as such (``source``), so that clip tables and exports can
# tell a review answer (a person on a chunk a labeller picked) from an annotation.
REVIEW_SOURCE = "pamingest-review"
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
        Labels the review covered; empty: every label, except in a
        header-only table, which then records no effort.
    label_map : dict, optional
        Label as written (or normalised) -> normalised label.
    source : str
        Written into each record (default ``"raven"``).

    Times are seconds from the recording's start: the file named by ``Begin
    File``/``Begin Path`` with ``File Offset (s)`` when the table has them,
    else the recording the caller names.
    """

    format = "raven"
    suffixes = (".txt",)  # Raven names them <sound>.Table.1.selections.txt; BirdNET <sound>.BirdNET.selection.table.txt

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
        source_col, source_offset = table.col("Source File"), table.col("Source Offset (s)")
        has_rows = table.has_rows()
        if self.label_column:
            label = table.need(self.label_column)
        else:
            label = table.col(*LABEL_COLUMNS)
            if label is None and has_rows:
                table.need(*LABEL_COLUMNS)  # raises, naming the columns tried
        out = self.collector(name)

        # Review clips -> (the recording they were cut from, the clip's offset in it, the clip's span
        # in the file sequence). Review tables are small; this first pass is made only for them.
        clips: dict[str, tuple[str, float, float, float]] = {}
        if clip_col is not None:
            for line, cells in table.rows():
                clip = file_name(cell(cells, clip_col))
                if not clip:
                    continue
                try:
                    if source_col is not None:
                        origin = cell(cells, source_col)
                        at = seconds(cell(cells, source_offset), "Source Offset (s)", name, line)
                    else:  # written before the clips were the Begin File: Begin File is the recording
                        origin = file_name(cell(cells, bpath)) or cell(cells, bfile)
                        at = seconds(cell(cells, offset), "File Offset (s)", name, line)
                    b = seconds(cell(cells, begin), "Begin Time (s)", name, line)
                    e = seconds(cell(cells, end), "End Time (s)", name, line)
                except AnnotationError:
                    continue  # rejected with its line in the pass below
                clips[clip] = (origin, at, b, e)
        answered: set = set()
        unanswered: dict = {}

        # One event per selection: Raven writes each once per view. Selection -> its event index
        # (None: the selection was rejected, or made no event), and events whose band came from a
        # view other than the spectrogram.
        selections: dict[str | int, int | None] = {}
        band_from_waveform: set[int] = set()
        resolved = {}
        for line, cells in table.rows():
            with out.row(line):
                key = cell(cells, sel)
                if key.isdecimal():
                    key = int(key)  # 32 bytes a selection, not ~55 as text: tables of 300k selections exist
                repeat = key in selections if key != "" else False
                b = seconds(cell(cells, begin), "Begin Time (s)", name, line)
                e = seconds(cell(cells, end), "End Time (s)", name, line)
                out.check_span(s_to_ns(b), s_to_ns(e), line)
                clip = file_name(cell(cells, clip_col)) if clip_col is not None else ""
                written = cell(cells, label)
                if clip:
                    which = key if key != "" else f"line {line}"
                    if written == UNANSWERED:
                        unanswered.setdefault(which, None)
                        if key != "":
                            selections.setdefault(key, None)
                        continue  # nobody answered: neither effort nor event
                    answered.add(which)
                rec, t0, t1 = self._place(context, cells, clip, clips, b, e, bfile, bpath, offset, name, line)
                if repeat:
                    self._repeated(out, selections[key], key, t0, t1, cells, view, low, high,
                                   band_from_waveform, name, line)
                    continue
                if key != "":
                    selections[key] = None
                confidence = number(cell(cells, conf), "Confidence", name, line, allow_empty=True)
                machine = not math.isnan(confidence)
                if clip:
                    resolved.setdefault(rec.url, (rec, line))
                    out.recording(rec)
                    asked = [self.norm(x) for x in cell(cells, asked_col).split(";") if x.strip()]
                    for lab in (asked or [""]) if self.effort != "none" else ():
                        out.effort_span(line, t0, t1, lab, recording=rec.url, stream=rec.stream, source=REVIEW_SOURCE)
                    heard = [x.strip() for x in written.split(";") if x.strip().lower() not in ABSENT]
                    for x in heard:
                        out.event(line, t0, t1, x, self.norm(x), confidence=math.nan, annotator="human",
                                  reviewed=True, kind="presence", recording=rec.url, stream=rec.stream,
                                  source=REVIEW_SOURCE)
                    continue
                out.event(line, t0, t1, written, self.norm(written),
                          low_hz=number(cell(cells, low), "Low Freq (Hz)", name, line, allow_empty=True),
                          high_hz=number(cell(cells, high), "High Freq (Hz)", name, line, allow_empty=True),
                          confidence=confidence, annotator="machine" if machine else "human",
                          reviewed=not machine, recording=rec.url, stream=rec.stream)
                resolved.setdefault(rec.url, (rec, line))
                out.recording(rec)
                if key != "":
                    selections[key] = len(out.events) - 1
                    if not cell(cells, view).lower().startswith("spectrogram"):
                        band_from_waveform.add(len(out.events) - 1)
        if clip_col is not None:
            self._count_answers(out, name, answered, [k for k in unanswered if k not in answered])
        # A table with confidences is a detector's output (BirdNET): nobody reviewed it.
        if self.effort == "file" and conf is None and clip_col is None:
            if not has_rows:
                # Header-only: reviewed, nothing found, for the labels the caller says were looked for.
                line = table.header_line
                rec = table_recording(context, name, line)
                out.recording(rec)
                if not self.effort_labels:
                    out.notes.append(f"{rec.url}: the table has no selections and no effort_labels were given: "
                                     "no effort recorded (give effort_labels, the labels that were looked for, "
                                     "to record that none was found)")
                    return out.build()
                resolved[rec.url] = (rec, line)
            for rec, line in resolved.values():
                out.whole_file_effort(rec, self.effort_labels, line)
        return out.build()

    @staticmethod
    def _place(context, cells, clip, clips, b, e, bfile, bpath, offset, name, line):
        """(recording, UTC start ns, UTC end ns) of a selection.

        A review clip row through its source recording; a selection drawn in
        a review table through the clip it names (``Begin File`` + ``File
        Offset (s)``) or, naming no file, through the clip its ``Begin Time``
        falls in; any other row through the file it names, else the
        caller's recording.
        """
        if clip:
            if clip not in clips:
                raise AnnotationError(f"review clip {clip}: no source recording and offset to place it "
                                      "(Source File, Source Offset (s))", name, line)
            origin, at = clips[clip][:2]
        else:
            named = file_name(cell(cells, bpath)) or cell(cells, bfile)
            has_offset = offset is not None and cell(cells, offset) != ""
            inside = None  # (clip, seconds into it) of a selection drawn in a review table
            if clips and named in clips and has_offset:
                inside = named, seconds(cell(cells, offset), "File Offset (s)", name, line)
            elif clips and not named:
                hit = [c for c, (_, _, cb, ce) in clips.items() if cb <= b < ce]
                if hit:
                    inside = hit[0], b - clips[hit[0]][2]
            if inside is not None:
                c, into = inside
                origin, at0, cb, ce = clips[c]
                if into + (e - b) > (ce - cb) + 1e-6:
                    raise AnnotationError(f"the selection runs past the end of review clip {c} "
                                          f"({ce - cb:g} s long): draw it within one clip", name, line)
                at = at0 + into
            elif named and has_offset:
                origin, at = named, seconds(cell(cells, offset), "File Offset (s)", name, line)
            elif clips:
                raise AnnotationError(f"a selection drawn in a review table must lie on a clip: it names none "
                                      f"(Begin File) and its Begin Time {b:g} s is in none", name, line)
            else:
                rec = table_recording(context, name, line)
                return rec, rec.start_ns + s_to_ns(b), rec.start_ns + s_to_ns(e)
        rec = context.resolve(origin, name, line)
        t0 = rec.start_ns + s_to_ns(at)
        return rec, t0, t0 + s_to_ns(e - b)

    @staticmethod
    def _count_answers(out, name, answered, unanswered) -> None:
        """Count a review table's answered clips; say so when some, or all, are still ``?``."""
        out.review = ReviewCounts(len(answered), len(unanswered), tuple(str(k) for k in unanswered))
        total = len(answered) + len(unanswered)
        if not unanswered:
            return
        listed = ", ".join(str(k) for k in unanswered[:20]) + (", ..." if len(unanswered) > 20 else "")
        if not answered:
            message = (f"{name}: review table with no answered clip: all {total} Annotation cells are still "
                       f"{UNANSWERED!r}, so nothing was attached from it (answer them in Raven, save the table, "
                       "and annotate it again)")
            out.notes.append(message)
            warnings.warn(message, UnansweredReviewWarning, stacklevel=3)
        else:
            out.notes.append(f"{name}: {len(answered)} of {total} review clips answered; {len(unanswered)} still "
                             f"{UNANSWERED!r} (selections {listed}) are left out and stay queued")

    @staticmethod
    def _repeated(out, index, key, t0, t1, cells, view, low, high, band_from_waveform, name, line) -> None:
        """Another view's row of a selection already read: same times, maybe the spectrogram's band."""
        if index is None:
            return  # its first row was rejected, or made no event
        data = out.events.data
        if (data["start"][index], data["end"][index]) != (t0, t1):
            raise AnnotationError(f"selection {key} is repeated (line {data['line'][index]}) with other times",
                                  name, line)
        # The spectrogram view carries the meaningful frequency bounds.
        if index in band_from_waveform and cell(cells, view).lower().startswith("spectrogram"):
            band_from_waveform.discard(index)
            lo = number(cell(cells, low), "Low Freq (Hz)", name, line, allow_empty=True)
            hi = number(cell(cells, high), "High Freq (Hz)", name, line, allow_empty=True)
            out.set_band(index, lo, hi)


# Raven saves a table as ``<sound>.Table.<n>.selections.txt`` and BirdNET as
# ``<sound>.BirdNET.selection.table.txt``: a table without ``Begin File`` names its
# recording that way, which is how a folder of analysts' tables is attached.
_TABLE_NAME = re.compile(r"^(?P<sound>.+?)(?:\.Table\.\d+\.selections|\.BirdNET\.selection\.table)\.txt$", re.I)


def sound_of_table(name: str) -> str | None:
    """The sound file name (without extension) a Raven/BirdNET table's default name gives, else None."""
    m = _TABLE_NAME.match(file_name(name))
    return m["sound"] if m else None


def table_recording(context: ReadContext, name: str, line: int | None):
    """The recording a table without ``Begin File`` annotates: the caller's, else the one its name gives."""
    sound = None if context.recordings else sound_of_table(name)
    if sound:
        rec = context.resolve_stem(sound, name, line)
        if rec is not None:
            return rec
    try:
        return context.resolve(None, name, line)
    except AnnotationTargetError as exc:
        if sound:
            raise AnnotationTargetError(f"the file does not name its recording, and {sound!r} (from its "
                                        "name) is not in the store (yet): give the recording and its UTC start",
                                        name, line) from exc
        raise
