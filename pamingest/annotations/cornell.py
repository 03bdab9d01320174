"""The Cornell Lab's fully annotated soundscapes: ``annotations.csv`` of each Zenodo collection.

Columns ``Filename, Start Time (s), End Time (s), Low Freq (Hz), High Freq
(Hz), Species eBird Code``; times are seconds from the start of the named
file (an hour-long FLAC of the collection's ``soundscape_data.zip``). Low
and High Freq are swapped in places: the band is what matters (the
collector orders them).

Fully annotated: every sound a person could attribute was boxed, in every
recording of the collection, so every recording of the collection in the
store (the file names starting with the collection's code, ``SSW_``) is
effort for every label the table uses, whether or not the table has a row
for it: unboxed seconds are reviewed negatives. ``????`` (the annotators'
"unknown species") is kept as an event labelled ``unknown``, and its span
is left out of every label's effort: an unidentified sound may be any of
them, so no absence is claimed there.

Rows whose recording the store does not hold (yet) are not attached and
are counted in the file's notes: attach the table again with ``replace``
after ingesting them (the ingest of the collection does, ``pamingest
ingest cornell``).
"""

from __future__ import annotations

from collections import defaultdict

from ..errors import AnnotationError
from .base import (Annotations, ReadContext, ReaderBase, ResolvedRecording, Table, _subtract, cell, file_name,
                   number, s_to_ns, seconds)

UNKNOWN_SPECIES = "????"


class CornellAnnotations(ReaderBase):
    """Read a Cornell soundscape collection's ``annotations.csv``.

    Parameters
    ----------
    unknown_label : str
        Label of ``????`` rows (default ``unknown``).
    label_map, source
        As for every reader (default source ``cornell``).
    """

    format = "cornell"
    suffixes = (".csv",)
    default_source = "cornell"

    def __init__(self, *, unknown_label: str = "unknown", label_map: dict | None = None,
                 source: str | None = None) -> None:
        super().__init__(label_map=label_map, source=source)
        self.unknown_label = unknown_label

    def __call__(self, data: bytes, name: str, context: ReadContext | None = None) -> Annotations:
        context = context or ReadContext()
        table = Table(data, name, ",", quoting=True)
        fn, st, en = table.need("Filename"), table.need("Start Time (s)"), table.need("End Time (s)")
        low, high = table.col("Low Freq (Hz)"), table.col("High Freq (Hz)")
        species = table.need("Species eBird Code", "Species")
        out = self.collector(name)
        recordings: dict[str, ResolvedRecording | None] = {}
        missing: dict[str, int] = defaultdict(int)
        codes: set[str] = set()
        labels: set[str] = set()
        unsure: list[tuple[int, int]] = []
        first_line = None
        for line, cells in table.rows():
            first_line = first_line or line
            with out.row(line):
                file = cell(cells, fn)
                if not file:
                    raise AnnotationError("empty Filename", name, line)
                codes.add(file_name(file).split("_", 1)[0])
                if file not in recordings:
                    recordings[file] = context.resolve(file, name, line, required=False)
                rec = recordings[file]
                b = seconds(cell(cells, st), "Start Time (s)", name, line)
                e = seconds(cell(cells, en), "End Time (s)", name, line)
                code = cell(cells, species).strip()
                label = self.unknown_label if code == UNKNOWN_SPECIES else code
                norm = self.norm(label)
                if code != UNKNOWN_SPECIES and norm:
                    labels.add(norm)  # the collection's labels: every recording is reviewed for each
                if rec is None:
                    missing[file] += 1
                    continue
                out.recording(rec)
                t0, t1 = rec.start_ns + s_to_ns(b), rec.start_ns + s_to_ns(e)
                out.event(line, t0, t1, label, norm, recording=rec.url, stream=rec.stream,
                          low_hz=number(cell(cells, low), "Low Freq (Hz)", name, line, allow_empty=True),
                          high_hz=number(cell(cells, high), "High Freq (Hz)", name, line, allow_empty=True))
                if code == UNKNOWN_SPECIES:
                    unsure.append((t0, t1))
        if missing:
            out.notes.append(f"{sum(missing.values())} rows of {len(missing)} recordings the store does not hold "
                             f"(e.g. {sorted(missing)[0]}) were not attached: ingest them, then attach this table "
                             "again with replace")
        if out.rejected:
            out.notes.append("rows were rejected: no effort is recorded (a rejected row may be the sound that "
                             "makes part of a recording positive)")
            return out.build()
        # Every stored recording of the collection is effort for every label, rows or none.
        for rec in self._collection(context, codes):
            out.recording(rec)
            if rec.end_ns is None:
                continue
            for s, e in _subtract(rec.start_ns, rec.end_ns, unsure):
                for label in sorted(labels):
                    out.effort_span(first_line, s, e, label, recording=rec.url, stream=rec.stream)
        return out.build()

    @staticmethod
    def _collection(context: ReadContext, codes: set[str]) -> list[ResolvedRecording]:
        """The stored recordings whose file names start with one of the collection ``codes``."""
        every = getattr(context.lookup, "every", None)
        if every is None:
            return []
        return [r for r in every(context.stream) if file_name(r.url).split("_", 1)[0] in codes]
