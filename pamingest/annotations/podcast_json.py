"""Orcasound Pod.Cast annotation JSON.

``{uri, absolute_time, source_guid, annotations: [{start_time_s, duration_s,
confidence}]}``; the submit form writes ``start_s`` and no confidence. A file
may hold one such object or a list of them. With confidences the regions are
the model's proposals (unreviewed machine labels, no effort); without, they
are a person's submission for the whole clip, whose unmarked rest is a
reviewed negative.

JSON has no row lines: a region that cannot be read is rejected naming its
place (``item 2, annotation 5``) and the reason, and the others are kept.
A submission with no regions is recorded as reviewed, nothing found, for its
one label, with a note: it cannot be told from a model's empty proposal list.
"""

from __future__ import annotations

import json
import math

from ..errors import AnnotationError
from .base import MAX_SECONDS, Annotations, ReadContext, ReaderBase, decode_text, s_to_ns


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


def _seconds(item: dict, keys: tuple[str, ...], what: str, name: str, where: str) -> float:
    x = _number(item, keys, what, name, where)
    if x < 0:
        raise AnnotationError(f"{where}: {what} {x:g} is negative", name)
    if x > MAX_SECONDS:
        raise AnnotationError(f"{where}: time out of range: {what} {x:g} is more than {MAX_SECONDS:.3g} s", name)
    return x


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
    suffixes = (".json",)
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
            site = str(item.get("source_guid") or "")
            for j, a in enumerate(item["annotations"]):
                at = f"{where}, annotation {j}"
                with out.row(None):
                    if not isinstance(a, dict):
                        raise AnnotationError(f"{at}: not an object", name)
                    b = _seconds(a, ("start_time_s", "start_s"), "start", name, at)
                    d = _seconds(a, ("duration_s",), "duration_s", name, at)
                    c = _number(a, ("confidence",), "confidence", name, at) if "confidence" in a else math.nan
                    t0 = rec.start_ns + s_to_ns(b)
                    try:
                        out.event(None, t0, t0 + s_to_ns(d), self.label, label_norm, confidence=c,
                                  annotator="machine" if machine else "human", reviewed=not machine,
                                  site=site, recording=rec.url, stream=rec.stream)
                    except AnnotationError as exc:
                        exc.reason = f"{at}: {exc.reason}"
                        raise
            if not machine:
                if not item["annotations"]:
                    out.notes.append(f"{where}: no regions: {rec.url} recorded as reviewed for {label_norm!r} "
                                     "with nothing found (a model's empty proposal list would look the same)")
                out.whole_file_effort(rec, (label_norm,), None, site=site)
        return out.build()
