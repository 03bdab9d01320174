"""SanctSound (NOAA NCEI) detection products.

``sanctsound/products/detections/<site>/sanctsound_<site>_<dep>_<category>[_1d|_1h|_1min]/data/
SanctSound_<SITE>_<DEP>_<category>_<res>.csv``. Column variants, all UTC:

- ``ISOStartTime, ISOEndTime, Presence``: events or spans;
- ``ISOStartTime, Presence``: hourly/daily presence bins (length from the
  name's ``_1h``/``_1d``/``_1min`` or the ``resolution`` setting);
- ``ISOStartTime, ISOEndTime, Label``: ships, ``Ship``/``NoShip``;
- older ``Begin_datetime_ISO6801, End_datetime_ISO6801, Presence``; some
  ``ISO_Date`` (a date: a one-day bin); some add ``Effort``/``Count``.

Quirks handled: UTF-8 BOM, CRLF, header casing (``IsoStartTime``). Every row
is reviewed time: a presence of 1 is an event, a presence of 0 (or
``NoShip``) is effort without an event, a reviewed absence. A row whose
``Effort`` is 0 or whose presence is empty/``NA`` was not reviewed.

A row that cannot be read is rejected (file, line, reason) and the others are
kept. The products hold times and numbers, never quoted line breaks: a quote
left open rejects its line only. A table with a header and no rows records
nothing, effort included (effort is per row).
"""

from __future__ import annotations

import re

from ..errors import AnnotationError, ConfigError
from ..timing import NS_PER_S
from .base import Annotations, ReadContext, ReaderBase, Table, cell, check_text, file_name, number, parse_utc

NAME = re.compile(r"^SanctSound_(?P<site>[A-Za-z]{2}\d{2})_(?P<deployment>\d+)_(?P<category>.+?)"
                  r"(?:_(?P<res>1d|1h|1min))?\.csv$", re.IGNORECASE)
RESOLUTIONS = {"1d": 86400.0, "1h": 3600.0, "1min": 60.0}
START = ("ISOStartTime", "Begin_datetime_ISO6801", "ISO_Date")
END = ("ISOEndTime", "End_datetime_ISO6801")
_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_MISSING = {"", "na", "nan", "null"}


class SanctSoundDetections(ReaderBase):
    """Read a SanctSound detection CSV.

    Parameters
    ----------
    label : str, optional
        The category (e.g. ``humpbackwhale``); default: from the file name.
        ``_manual`` products share the label of their automatic twin.
    site : str, optional
        Site code (``CI01``) the rows belong to; default: from the file name.
        Rows are attached to every stream of that site.
    resolution : str or float, optional
        Bin length for files without end times: ``"1h"``, ``"1d"``,
        ``"1min"`` or seconds; default: from the file name.
    label_map : dict, optional
        Label as written (or normalised) -> normalised label.
    source : str
        Written into each record (default ``"sanctsound"``).
    """

    format = "sanctsound"
    suffixes = (".csv",)

    def __init__(self, *, label: str | None = None, site: str | None = None, resolution=None,
                 label_map: dict | None = None, source: str | None = None) -> None:
        super().__init__(label_map=label_map, source=source)
        self.label, self.site = label, site
        if isinstance(resolution, str) and resolution not in RESOLUTIONS:
            try:
                resolution = float(resolution)
            except ValueError:
                raise ConfigError(f"resolution must be 1h, 1d, 1min or seconds, not {resolution!r}") from None
        self.resolution = RESOLUTIONS[resolution] if isinstance(resolution, str) else resolution

    def __call__(self, data: bytes, name: str, context: ReadContext | None = None) -> Annotations:
        context = context or ReadContext()
        m = NAME.match(file_name(name))
        category = self.label or (m and m["category"])
        # A product is one deployment's: site_deployment is the SanctSound source's stream site
        # (ci01_01); a stream of a whole site (the exemplar clips' CI01) takes it too (store._route).
        site = self.site or (m and f"{m['site'].upper()}_{m['deployment']}")
        if not category or not site:
            raise AnnotationError("cannot tell the category and site: name the file "
                                  "SanctSound_<SITE>_<DEP>_<category>_<res>.csv or give label= and site=", name)
        manual = category.lower().endswith("_manual")
        label_norm = self.norm(re.sub(r"_manual$", "", category, flags=re.IGNORECASE))
        resolution = self.resolution or (RESOLUTIONS[m["res"].lower()] if m and m["res"] else None)

        table = Table(data, name, ",", quoting=True)
        start = table.need(*START)
        end = table.col(*END)
        presence, verdict_label = table.col("Presence"), table.col("Label")
        if presence is None and verdict_label is None:
            table.need("Presence", "Label")
        effort_col = table.col("Effort")
        binned = end is None
        out = self.collector(name)
        common = dict(site=site, stream=context.stream)
        for line, cells in table.rows(out.reject):
            if binned and not resolution and not _DATE_ONLY.match(cell(cells, start)):
                # The file's name or settings lack the bin length: every row would fail alike.
                raise AnnotationError("no end time and no bin length: name the file ..._1h.csv/_1d.csv "
                                      "or give resolution=", name, line)
            with out.row(line):
                t0 = parse_utc(cell(cells, start), table.header[start], name, line)
                if end is not None:
                    t1 = parse_utc(cell(cells, end), table.header[end], name, line)
                elif resolution:
                    t1 = t0 + int(round(resolution * NS_PER_S))
                else:
                    t1 = t0 + 86400 * NS_PER_S  # a date: a one-day bin
                out.check_span(t0, t1, line)
                if verdict_label is not None:
                    written = cell(cells, verdict_label)
                    if not written:
                        # Not "NoShip": an empty cell says nothing, so it is no reviewed absence either.
                        raise AnnotationError(f"empty {table.header[verdict_label]}", name, line)
                    check_text(written, table.header[verdict_label], name, line)
                    present = not written.lower().startswith("no")
                else:
                    value = cell(cells, presence)
                    if value.lower() in _MISSING:
                        continue  # a bin with no data: not reviewed, stays unknown
                    p = number(value, "Presence", name, line)
                    if p < 0:
                        raise AnnotationError(f"Presence {value!r} is negative", name, line)
                    present, written = p > 0, category
                reviewed = cell(cells, effort_col).lower() not in ("0", "0.0", "false")
                if present:
                    out.event(line, t0, t1, written, label_norm, annotator="human" if manual else "machine",
                              reviewed=True, kind="presence" if binned else "event", **common)
                if reviewed:
                    out.effort_span(line, t0, t1, label_norm, **common)
        return out.build()
