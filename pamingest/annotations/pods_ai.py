"""The Orcasound pods-ai detections export (human and machine verdicts on live detections).

Columns ``Category, NodeName, Timestamp, URI, Description, Notes,
Confidence``. ``Timestamp`` is ``YYYY_MM_DD_HH_MM_SS_PST`` but is local
Pacific time *with* daylight saving despite the suffix; the ``time=`` of the
URI is the same moment in UTC, to the millisecond, so it is preferred and the
two are checked against each other. ``Notes`` is the verdict:

- ``tp_human_only``: a listener reported it, the model missed it;
- ``tp_both``: both did; ``tp_machine_only``: the model did and a person
  confirmed it;
- ``fp_machine_only``: the model fired, a person heard ``Category`` instead
  (vessel, water, jingle, human): an event of that category, and reviewed
  absence of the whale labels over its window.

``Confidence`` is the model's, in percent (stored as a fraction).
A detection is an instant; its event spans ``before_seconds`` before to
``after_seconds`` after it.

The export is CSV with quoted fields; only ``Description`` holds line breaks.
A quote left open anywhere else rejects its line, and the lines it would have
swallowed are read as rows. A row that cannot be read (a time, an empty
``Category``, a control character) is rejected (file, line, reason) and the
others are kept.
"""

from __future__ import annotations

import datetime as _dt
import urllib.parse

from ..errors import AnnotationError
from ..timing import NS_PER_S
from .base import PACIFIC, Annotations, ReadContext, ReaderBase, Table, cell, local_to_utc, number, parse_utc

VERDICTS = {
    "tp_human_only": ("human", True),
    "tp_both": ("human+machine", True),
    "tp_machine_only": ("machine", True),
    "fp_machine_only": ("machine", True),
}


class PodsAiDetections(ReaderBase):
    """Read a pods-ai detections CSV.

    Parameters
    ----------
    before_seconds, after_seconds : float
        The event window around each detection time (default 30 s each
        side: a listener reports after hearing; the model scores one-minute
        windows).
    fp_negative_labels : sequence of str
        Labels a false positive is reviewed absence of (default ``resident``,
        ``transient``, ``humpback``: what the model is meant to detect).
    time_zone : str
        Zone of ``Timestamp`` (US/Pacific).
    tolerance_seconds : float
        Largest allowed gap between ``Timestamp`` and the URI time (the
        ``Timestamp`` drops the milliseconds).
    label_map, source
        As for every reader (default source ``"pods-ai"``).

    Rows belong to the site named by ``NodeName`` (``rpi_orcasound_lab``);
    identical rows (the export repeats some) count once.
    """

    format = "pods-ai"
    suffixes = (".csv",)

    def __init__(self, *, before_seconds: float = 30.0, after_seconds: float = 30.0,
                 fp_negative_labels=("resident", "transient", "humpback"), time_zone: str = PACIFIC,
                 tolerance_seconds: float = 1.0, label_map: dict | None = None, source: str | None = None) -> None:
        super().__init__(label_map=label_map, source=source)
        self.before_seconds, self.after_seconds = float(before_seconds), float(after_seconds)
        self.fp_negative_labels = tuple(fp_negative_labels)
        self.time_zone, self.tolerance_seconds = time_zone, float(tolerance_seconds)

    def _time(self, cells, ts: int | None, uri: int | None, name: str, line: int) -> int:
        local, utc = cell(cells, ts), None
        if uri is not None and cell(cells, uri):
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(cell(cells, uri)).query)
            if "time" in query:
                utc = parse_utc(query["time"][0], "URI time", name, line)
        if local:
            try:
                naive = _dt.datetime.strptime(local[:19], "%Y_%m_%d_%H_%M_%S")
            except ValueError:
                raise AnnotationError(f"Timestamp {local!r} is not YYYY_MM_DD_HH_MM_SS_PST", name, line) from None
            try:
                from_local = local_to_utc(naive, self.time_zone, name, line)
            except AnnotationError:
                if utc is None:
                    raise
                from_local = None  # the clock-change hour: the URI's UTC time settles it
            if utc is None:
                return from_local
            if from_local is not None and abs(from_local - utc) > self.tolerance_seconds * NS_PER_S:
                raise AnnotationError(f"Timestamp {local!r} (Pacific) and the URI time "
                                      f"{query['time'][0]!r} (UTC) disagree", name, line)
        if utc is None:
            raise AnnotationError("no time: neither a Timestamp nor a URI with time=", name, line)
        return utc

    def __call__(self, data: bytes, name: str, context: ReadContext | None = None) -> Annotations:
        context = context or ReadContext()
        table = Table(data, name, ",", quoting=True, multiline=("Description",))
        category, node = table.need("Category"), table.need("NodeName")
        ts, uri = table.col("Timestamp"), table.col("URI")
        if ts is None and uri is None:
            table.need("Timestamp", "URI")
        notes, conf = table.col("Notes"), table.col("Confidence")
        before, after = int(round(self.before_seconds * NS_PER_S)), int(round(self.after_seconds * NS_PER_S))
        negatives = tuple(self.norm(x) for x in self.fp_negative_labels)
        out = self.collector(name)
        seen = set()
        for line, cells in table.rows(out.reject):
            key = tuple(c.strip() for c in cells)
            if key in seen:
                continue
            seen.add(key)
            with out.row(line):
                site = cell(cells, node)
                if not site:
                    raise AnnotationError("empty NodeName", name, line)
                t = self._time(cells, ts, uri, name, line)
                verdict = cell(cells, notes)
                annotator, reviewed = VERDICTS.get(verdict, ("", False))
                c = number(cell(cells, conf), "Confidence", name, line, allow_empty=True)
                written = cell(cells, category)
                common = dict(site=site, stream=context.stream)
                out.event(line, t - before, t + after, written, self.norm(written), confidence=c / 100.0,
                          annotator=annotator, reviewed=reviewed, verdict=verdict, **common)
                if verdict == "fp_machine_only":
                    for lab in negatives:
                        out.effort_span(line, t - before, t + after, lab, **common)
        return out.build()
