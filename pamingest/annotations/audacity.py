"""Audacity label tracks: ``start<TAB>end<TAB>label`` lines, no header.

A label made on a spectral selection is followed by a line
``\\<TAB>low_f<TAB>high_f`` giving its frequency band. Times are seconds from
the start of the recording the track was made on (the caller names it).
"""

from __future__ import annotations

import math

from ..errors import AnnotationError, ConfigError
from .base import Annotations, ReadContext, ReaderBase, decode_text, s_to_ns, seconds


class AudacityLabels(ReaderBase):
    """Read an Audacity label track.

    Parameters
    ----------
    effort : {"file", "none"}
        ``"file"`` (default): the track annotates its whole recording, so
        unlabelled time is a reviewed negative; ``"none"``: no effort.
    effort_labels : sequence of str
        Labels the review covered (normalised); empty: every label.
    label_map : dict, optional
        Label as written (or normalised) -> normalised label.
    source : str
        Written into each record (default ``"audacity"``).
    """

    format = "audacity"

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
        last: dict | None = None
        for line, text in enumerate(decode_text(data).splitlines(), start=1):
            if not text.strip():
                continue
            parts = text.split("\t")
            if parts[0].strip() == "\\":
                if last is None or not math.isnan(last["low_hz"]):
                    raise AnnotationError("frequency line without a label line before it", name, line)
                if len(parts) < 3:
                    raise AnnotationError("frequency line needs '\\<TAB>low<TAB>high'", name, line)
                low = seconds(parts[1].strip(), "low frequency", name, line)
                high = seconds(parts[2].strip(), "high frequency", name, line)
                last["low_hz"], last["high_hz"] = min(low, high), max(low, high)
                continue
            if len(parts) < 2:
                raise AnnotationError(f"expected 'start<TAB>end<TAB>label', got {text[:60]!r}", name, line)
            b = seconds(parts[0].strip(), "start time", name, line)
            e = seconds(parts[1].strip(), "end time", name, line)
            label = parts[2].strip() if len(parts) > 2 else ""
            out.event(line, rec.start_ns + s_to_ns(b), rec.start_ns + s_to_ns(e), label, self.norm(label),
                      recording=rec.url, stream=rec.stream)
            last = out.events[-1]
        if self.effort == "file":
            out.whole_file_effort(rec, self.effort_labels, None)
        return out.build()
