"""MarmAudio's ``Annotations.tsv``: one common marmoset call per file, and its call type.

Columns ``file_name``, ``parent_name`` (the session recording the call was
cut from: the file's folder under ``Vocalizations/``) and ``label`` (Phee,
Trill, Twitter, Tsik, Seep, Infant cry, ...). Each row becomes an event over
its whole file, found in the store by ``parent_name/file_name``
(file names repeat across parents).

Effort is each file's own label only: a file was cut around one call and
labelled with its type, which says nothing of another animal's faint call
behind it, so no other call type is claimed absent there (those stay
unknown, never false negatives). Rows whose file the store does not hold
(yet) are counted in the notes; attach again with ``replace`` after
ingesting them (``pamingest ingest marmaudio`` does).
"""

from __future__ import annotations

from ..errors import AnnotationError
from .base import Annotations, ReadContext, ReaderBase, Table, cell


class MarmAudioAnnotations(ReaderBase):
    """Read MarmAudio's ``Annotations.tsv`` (see the module docstring).

    Parameters
    ----------
    label_map, source
        As for every reader (default source ``marmaudio``).
    """

    format = "marmaudio"
    suffixes = (".tsv",)
    default_source = "marmaudio"

    def __call__(self, data: bytes, name: str, context: ReadContext | None = None) -> Annotations:
        context = context or ReadContext()
        table = Table(data, name, "\t")
        fn, parent, label_col = table.need("file_name"), table.need("parent_name"), table.need("label")
        out = self.collector(name)
        missing = 0
        for line, cells in table.rows():
            with out.row(line):
                file, folder, label = cell(cells, fn).strip(), cell(cells, parent).strip(), cell(cells, label_col)
                if not file:
                    raise AnnotationError("empty file_name", name, line)
                rec = context.resolve(f"{folder}/{file}" if folder else file, name, line, required=False)
                if rec is None:
                    missing += 1
                    continue
                if rec.end_ns is None:
                    raise AnnotationError(f"{folder}/{file}: its length is not known (not in the store)", name, line)
                out.recording(rec)
                norm = self.norm(label)
                out.event(line, rec.start_ns, rec.end_ns, label.strip(), norm, recording=rec.url, stream=rec.stream)
                out.effort_span(line, rec.start_ns, rec.end_ns, norm, recording=rec.url, stream=rec.stream)
        if missing:
            out.notes.append(f"{missing} rows name calls the store does not hold: not attached (ingest them, "
                             "then attach this table again with replace)")
        return out.build()
