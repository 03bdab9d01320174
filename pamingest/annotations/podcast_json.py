"""Orcasound Pod.Cast annotation JSON.

``{uri, absolute_time, source_guid, annotations: [{start_time_s, duration_s,
confidence}]}``; the submit form writes ``start_s`` and no confidence. A file
may hold one such object or a list of them. With confidences the regions are
the model's proposals (unreviewed machine labels, no effort); without, they
are a person's submission for the whole clip, whose unmarked rest is a
reviewed negative.
"""

from __future__ import annotations

import json
import math

from ..errors import AnnotationError
from .base import Annotations, ReadContext, ReaderBase, decode_text, s_to_ns


def _number(item: dict, keys: tuple[str, ...], what: str, name: str, where: str) -> float:
    for k in keys:
        if k in item:
            try:
                x = float(item[k])
            except (TypeError, ValueError):
                raise AnnotationError(f"{where}: {what} {item[k]!r} is not a number", name) from None
            if not math.isfinite(x):
                raise AnnotationError(f"{where}: {what} {item[k]!r} is not a finite number", name)
            return x
    raise AnnotationError(f"{where}: missing required field {keys[0]!r}", name)


class PodcastJson(ReaderBase):
    """Read Pod.Cast annotation JSON.

    Parameters
    ----------
    label : str
        Label of the marked regions (default ``"orca"``).
    label_map, source
        As for every reader (default source ``"podcast"``).

    The clip (``uri``) is placed in time through the recordings the caller
    names or the store's files table; ``absolute_time`` is not used because
    the offset of a chunked clip within it is not recorded.
    """

    format = "podcast-json"
    default_source = "podcast"

    def __init__(self, *, label: str = "orca", label_map: dict | None = None, source: str | None = None) -> None:
        super().__init__(label_map=label_map, source=source)
        self.label = label

    def __call__(self, data: bytes, name: str, context: ReadContext | None = None) -> Annotations:
        context = context or ReadContext()
        try:
            doc = json.loads(decode_text(data))
        except json.JSONDecodeError as exc:
            raise AnnotationError(f"not JSON: {exc.msg}", name, exc.lineno) from None
        items = doc if isinstance(doc, list) else [doc]
        label_norm = self.norm(self.label)
        out = self.collector(name)
        for k, item in enumerate(items):
            where = f"item {k}" if isinstance(doc, list) else "document"
            if not isinstance(item, dict) or not isinstance(item.get("annotations"), list):
                raise AnnotationError(f"{where}: missing required field 'annotations'", name)
            uri = str(item.get("uri") or "")
            rec = context.resolve(uri or None, name, None)
            out.recording(rec)
            machine = any("confidence" in a for a in item["annotations"] if isinstance(a, dict))
            for j, a in enumerate(item["annotations"]):
                at = f"{where}, annotation {j}"
                if not isinstance(a, dict):
                    raise AnnotationError(f"{at}: not an object", name)
                b = _number(a, ("start_time_s", "start_s"), "start", name, at)
                d = _number(a, ("duration_s",), "duration_s", name, at)
                if d < 0:
                    raise AnnotationError(f"{at}: negative duration: duration_s is {d:g}", name)
                c = _number(a, ("confidence",), "confidence", name, at) if "confidence" in a else math.nan
                t0 = rec.start_ns + s_to_ns(b)
                out.event(None, t0, t0 + s_to_ns(d), self.label, label_norm, confidence=c,
                          annotator="machine" if machine else "human", reviewed=not machine,
                          site=str(item.get("source_guid") or ""), recording=rec.url, stream=rec.stream)
            if not machine:
                out.whole_file_effort(rec, (label_norm,), None, site=str(item.get("source_guid") or ""))
        return out.build()
