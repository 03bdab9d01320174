"""OrcaHello model predictions: ``wav_filename, start_time_s, duration_s, confidence`` (TSV).

Machine labels: each row is an unreviewed event with the model's confidence.
Predictions are not a review, so they claim no effort.

Read without quote processing (tab-separated, no quotes written): every line
is one row. A row that cannot be read is rejected (file, line, reason) and
the others are kept.
"""

from __future__ import annotations

from ..errors import AnnotationError
from .base import Annotations, ReadContext, ReaderBase, Table, cell, number, s_to_ns, seconds


class OrcaHelloPredictions(ReaderBase):
    """Read an OrcaHello prediction TSV.

    Parameters
    ----------
    label : str
        What the model detects (default ``"orca"``).
    threshold : float, optional
        Keep only rows whose confidence is at least this; default: all rows.
    label_map, source
        As for every reader (default source ``"orcahello"``).

    Each ``wav_filename`` is placed in time through the recordings the caller
    names or the store's files table.
    """

    format = "orcahello"
    suffixes = (".tsv",)

    def __init__(self, *, label: str = "orca", threshold: float | None = None, label_map: dict | None = None,
                 source: str | None = None) -> None:
        super().__init__(label_map=label_map, source=source)
        self.label, self.threshold = label, threshold

    def __call__(self, data: bytes, name: str, context: ReadContext | None = None) -> Annotations:
        context = context or ReadContext()
        table = Table(data, name, "\t")
        wav, st = table.need("wav_filename"), table.need("start_time_s")
        dur, conf = table.need("duration_s"), table.need("confidence")
        label_norm = self.norm(self.label)
        out = self.collector(name)
        recs = {}
        for line, cells in table.rows():
            with out.row(line):
                c = number(cell(cells, conf), "confidence", name, line)
                if not 0.0 <= c <= 1.0:
                    raise AnnotationError(f"confidence {c:g} is outside 0..1", name, line)
                if self.threshold is not None and c < self.threshold:
                    continue
                b = seconds(cell(cells, st), "start_time_s", name, line)
                d = seconds(cell(cells, dur), "duration_s", name, line)
                wav_name = cell(cells, wav)
                if not wav_name:
                    raise AnnotationError("empty wav_filename", name, line)
                if wav_name not in recs:
                    recs[wav_name] = context.resolve(wav_name, name, line)
                    out.recording(recs[wav_name])
                rec = recs[wav_name]
                t0 = rec.start_ns + s_to_ns(b)
                out.event(line, t0, t0 + s_to_ns(d), self.label, label_norm, confidence=c, annotator="machine",
                          reviewed=False, recording=rec.url, stream=rec.stream)
        return out.build()
