"""Audacity label tracks: ``start<TAB>end<TAB>label`` lines, no header.

A label made on a spectral selection is followed by a line
``\\<TAB>low_f<TAB>high_f`` giving its frequency band. Times are seconds from
the start of the recording the track was made on (the caller names it).
A line that cannot be read is rejected (file, line, reason) and the others
are kept; a frequency line belongs to the label line just before it.

Effort: the track covers its recording whole, for ``effort_labels`` or,
when none are given, every label. An empty track (no label lines at all)
means "reviewed, nothing found" only for the labels named in
``effort_labels``; without them it records no effort and says so in the
notes.
"""

from __future__ import annotations

from ..errors import AnnotationError, ConfigError
from .base import Annotations, ReadContext, ReaderBase, decode_text, number, s_to_ns, seconds, text_lines


class AudacityLabels(ReaderBase):
    """Read an Audacity label track.

    Parameters
    ----------
    effort : {"file", "none"}
        ``"file"`` (default): the track annotates its whole recording, so
        unlabelled time is a reviewed negative; ``"none"``: no effort.
    effort_labels : sequence of str
        Labels the review covered; empty: every label, except in an empty
        track, which then records no effort.
    label_map : dict, optional
        Label as written (or normalised) -> normalised label.
    source : str
        Written into each record (default ``"audacity"``).
    """

    format = "audacity"
    suffixes = (".txt",)

    def __init__(self, *, effort: str = "file", effort_labels=(), label_map: dict | None = None,
                 source: str | None = None) -> None:
        super().__init__(label_map=label_map, source=source)
        if effort not in ("file", "none"):
            raise ConfigError(f"effort must be 'file' or 'none', not {effort!r}")
        self.effort = effort
        self.effort_labels = tuple(effort_labels)

    def __call__(self, data: bytes, name: str, context: ReadContext | None = None) -> Annotations:
        context = context or ReadContext()
        rec = context.resolve(None, name, None)
        out = self.collector(name)
        out.recording(rec)
        last: int | None = None  # the event a frequency line may give a band to
        after_label = False  # the line before was a label line (kept or rejected)
        labelled = False
        for line, text in text_lines(decode_text(data)):
            if not text.strip():
                continue
            parts = text.split("\t")
            with out.row(line):
                if parts[0].strip() == "\\":
                    if after_label and last is None:
                        after_label = False
                        continue  # the band of a rejected label line: rejected with it
                    if last is None:
                        raise AnnotationError("frequency line without a label line before it", name, line)
                    index, last, after_label = last, None, False
                    if len(parts) < 3:
                        raise AnnotationError("frequency line needs '\\<TAB>low<TAB>high'", name, line)
                    low = number(parts[1].strip(), "low frequency", name, line)
                    high = number(parts[2].strip(), "high frequency", name, line)
                    out.set_band(index, low, high)
                    continue
                labelled, last, after_label = True, None, True
                if len(parts) < 2:
                    raise AnnotationError(f"expected 'start<TAB>end<TAB>label', got {text[:60]!r}", name, line)
                b = seconds(parts[0].strip(), "start time", name, line)
                e = seconds(parts[1].strip(), "end time", name, line)
                label = parts[2].strip() if len(parts) > 2 else ""
                out.event(line, rec.start_ns + s_to_ns(b), rec.start_ns + s_to_ns(e), label, self.norm(label),
                          recording=rec.url, stream=rec.stream)
                last = len(out.events) - 1
        if self.effort == "file":
            if not labelled and not self.effort_labels:
                out.notes.append(f"{rec.url}: the track has no labels and no effort_labels were given: no effort "
                                 "recorded (give effort_labels, the labels that were looked for, to record that "
                                 "none was found)")
            else:
                out.whole_file_effort(rec, self.effort_labels, None)
        return out.build()
