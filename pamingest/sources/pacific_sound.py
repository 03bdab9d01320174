"""MBARI Pacific Sound: the MARS cabled hydrophone and the ``ch01`` SoundTrap, on AWS (public).

Products (docs/sources.md), each a bucket URL and a key layout; every bucket
name is a default that can be replaced (a mirror, a test server)::

    256khz  s3://pacific-sound-256khz-YYYY/MM/MARS_YYYYMMDD_HHMMSS.wav       10 min, 24-bit
    16khz   s3://pacific-sound-16khz/YYYY/MM/MARS-YYYYMMDDT000000Z-16kHz.wav  1 day, 24-bit
    2khz    s3://pacific-sound-2khz/YYYY/MM/MARS-YYYYMMDDT000000Z-2kHz.wav    1 day, 24-bit
    ch01    s3://pacific-sound-ch01/6716.YYMMDDHHMMSS.wav (+ .log.xml)        6 h SoundTrap

Listing is partitioned by month: ``YYYY/MM`` folders, or for the flat ch01
bucket the key prefix ``<serial>.<YYMM>``. Given a time range, the
partitions are computed from it (no listing of the bucket at all); the
month before the range is included when a file starting in it may run into
the range.

The daily metadata of the 256 kHz product
(``s3://pacific-sound-metadata/256khz/YYYY/YYYYMMDD.json``: a list of
``{uri, start, end, duration_secs, channels[, jitter_secs]}``) is used
where present: its start is the file's start (the archive's own record; the
name's time is kept as ``name_start`` when they differ), its duration decides
time-range selection, and its values are kept with the file. Where a day has
no metadata file, names and the nominal file length are used.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
from dataclasses import dataclass, replace
from typing import Any

from ..errors import ConfigError, MetadataError
from ..fsutil import filesystem
from ..timing import NS_PER_S, ns_to_iso, to_ns
from ._select import as_list, list_folders, list_objects, months, select_time, time_range, utc_day
from .base import RejectedFile, SourceFile
from .deployment_metadata import read_deployment_metadata
from .files import records_from_listing
from .templates import get_templates

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Product:
    """Where one Pacific Sound product lives and how it is named.

    ``url`` is the bucket (a ``{year}`` field makes one bucket per year);
    ``layout`` is ``"month"`` (``MM/`` in a year bucket), ``"year/month"``
    (``YYYY/MM/``) or ``"flat"`` (all objects at the top, partitioned by key
    prefix).
    """

    key: str
    url: str
    layout: str
    template: str
    file_seconds: float
    site: str | None
    metadata_url: str | None = None
    first_year: int = 2015
    attributes: tuple[tuple[str, Any], ...] = ()


# The MARS hydrophone digitises 3 V peak full scale (docs/sources.md).
_MARS = (("full_scale_peak_volts", 3.0), ("instrument", "MARS hydrophone (Ocean Sonics icListen HF)"))
PRODUCTS: dict[str, Product] = {
    "256khz": Product("256khz", "s3://pacific-sound-256khz-{year}", "month", "mars", 600.0, "mars",
                      "s3://pacific-sound-metadata/256khz", 2015, _MARS),
    "16khz": Product("16khz", "s3://pacific-sound-16khz", "year/month", "mars-daily", 86400.0, "mars",
                     None, 2015, _MARS),
    "2khz": Product("2khz", "s3://pacific-sound-2khz", "year/month", "mars-daily", 86400.0, "mars",
                    None, 2015, _MARS),
    "ch01": Product("ch01", "s3://pacific-sound-ch01", "flat", "soundtrap", 6 * 3600.0, None, None, 2022),
}
# The SoundTrap serials found in pacific-sound-ch01 (fixture mbari/pacific-sound-ch01.listing.txt).
CH01_SERIALS = ("6716", "6998")


def _object_key(url: str) -> str:
    """``bucket/key`` of a URL, whatever its protocol: how metadata URIs are matched."""
    return url.split("://", 1)[-1].lstrip("/")


@dataclass
class PacificSound:
    """One Pacific Sound product over a UTC time range.

    Parameters
    ----------
    product : str
        ``256khz``, ``16khz``, ``2khz`` or ``ch01`` (see ``PRODUCTS``).
    start, end : time-like, optional
        UTC range ``[start, end)``; naive times are UTC. With a range the
        partitions are the months it covers, computed without listing.
    url : str, optional
        The product's bucket URL, replacing the default (keep ``{year}`` for
        the 256 kHz product).
    metadata_url : str, optional
        Daily metadata prefix (256 kHz product); ``""`` disables it.
    deployment_metadata_url : str, optional
        A deployment JSON (e.g. MBARI's ``MBARI_MARS_Hydrophone_Deployment02.json``)
        whose position, instrument and calibration become stream attributes.
    serials : str or list of str, optional
        ch01 recorder serials, used to partition the flat bucket by key prefix;
        None lists the whole bucket as one partition.
    storage_options : dict, optional
        fsspec options; anonymous access when not given (public buckets).
    name : str
        The source's name: the first level of the store's groups.
    first_year, last_year : int, optional
        Years of year-named buckets to look at when no range is given.
    """

    product: str = "256khz"
    start: Any = None
    end: Any = None
    url: str | None = None
    metadata_url: str | None = None
    deployment_metadata_url: str | None = None
    serials: Any = CH01_SERIALS
    storage_options: dict | None = None
    name: str = "pacific-sound"
    first_year: int | None = None
    last_year: int | None = None

    def __post_init__(self) -> None:
        key = str(self.product).lower()
        if key not in PRODUCTS:
            raise ConfigError(f"unknown Pacific Sound product {self.product!r}: one of {', '.join(PRODUCTS)}")
        self.spec = PRODUCTS[key]
        self.product = key
        self.url = (self.url or self.spec.url).rstrip("/")
        if self.spec.layout == "month" and "{year}" not in self.url:
            raise ConfigError(f"{self.url}: the {key} product has one bucket per year; the URL needs a {{year}} field")
        self.metadata_url = (self.spec.metadata_url or "") if self.metadata_url is None else self.metadata_url
        self.metadata_url = self.metadata_url.rstrip("/")
        self.serials = as_list(self.serials)
        self._lo, self._hi = time_range(self.start, self.end)
        if self.storage_options is None:
            self.storage_options = {"anon": True}
        self._templates = get_templates(self.spec.template)
        self._daily: dict[_dt.date, dict[str, dict]] = {}
        self._deployment: dict[str, Any] | None = None

    # ------------------------------------------------------------ partitions
    def _bucket(self, year: int | None = None) -> str:
        return self.url.format(year=year) if "{year}" in self.url else self.url

    def _fs(self, url: str | None = None):
        return filesystem(url or self._bucket(self.spec.first_year), self.storage_options)

    def _years(self) -> range:
        last = self.last_year or _dt.datetime.now(_dt.timezone.utc).year
        return range(self.first_year or self.spec.first_year, last + 1)

    def partitions(self) -> list[str]:
        """Month partitions: ``YYYY/MM``, or ``<serial>.<YYMM>`` for the flat ch01 bucket.

        With a time range no listing is done; without one the bucket's month
        folders (or the ch01 serials) are the partitions.
        """
        if self._lo is not None or self._hi is not None:
            lo = self._lo if self._lo is not None else to_ns(f"{self.first_year or self.spec.first_year}-01-01")
            hi = self._hi if self._hi is not None else to_ns(_dt.datetime.now(_dt.timezone.utc)) + 86400 * NS_PER_S
            # A file that starts before the range may run into it.
            span = months(lo - int(self.spec.file_seconds * NS_PER_S), hi)
            return self._month_partitions(span)
        if self.spec.layout == "flat":
            return [f"{s}." for s in self.serials] if self.serials else [""]
        found: list[str] = []
        if self.spec.layout == "month":
            for year in self._years():
                fs, path = self._fs(self._bucket(year))
                found += [f"{year:04d}/{m}" for m in list_folders(fs, path) if m.isdigit()]
        else:
            fs, path = self._fs()
            for year in (y for y in list_folders(fs, path) if y.isdigit()):
                found += [f"{year}/{m}" for m in list_folders(fs, f"{path}/{year}") if m.isdigit()]
        return sorted(found)

    def _month_partitions(self, span: list[tuple[int, int]]) -> list[str]:
        if self.spec.layout != "flat":
            return [f"{y:04d}/{m:02d}" for y, m in span]
        if not self.serials:
            return [""]
        return sorted(f"{s}.{y % 100:02d}{m:02d}" for s in self.serials for y, m in span)

    def _partition_path(self, partition: str) -> tuple[Any, str, str]:
        """(fs, folder, key prefix) to list for a partition."""
        if self.spec.layout == "flat":
            fs, path = self._fs()
            return fs, path, partition
        year, _, month = partition.partition("/")
        if self.spec.layout == "month":
            fs, path = self._fs(self._bucket(int(year)))
            return fs, f"{path}/{month}", ""
        fs, path = self._fs()
        return fs, f"{path}/{year}/{month}", ""

    def list_partition(self, partition: str) -> list[SourceFile | RejectedFile]:
        """The partition's recordings (``.wav``/``.flac``; logs ignored), in URL order."""
        fs, folder, prefix = self._partition_path(partition)
        return self.records(list_objects(fs, folder, prefix=prefix), fs)

    def records(self, entries: list[dict], fs=None, *, metadata: bool = True) -> list[SourceFile | RejectedFile]:
        """Records for listed objects (fsspec info dicts), time-selected, in URL order.

        The listing step of ``list_partition`` without the listing: a saved
        bucket listing gives the same records as a live one.
        """
        fs = fs if fs is not None else self._fs()[0]
        records = records_from_listing(fs, entries, self._templates, self.name, site=self.spec.site,
                                       suffixes=(".wav", ".flac"))
        if self.spec.site is None:
            # ch01: one store site per recorder, named after the bucket's product.
            records = [replace(r, site=f"{self.product}_{r.site}") if isinstance(r, SourceFile) else r
                       for r in records]
        if metadata and self.metadata_url:
            records = self._with_daily_metadata(records)
        return select_time(records, self._lo, self._hi, self._duration_ns)

    def _duration_ns(self, rec: SourceFile) -> int:
        recorded = dict(rec.fields).get("duration_secs")
        seconds = float(recorded) if recorded else self.spec.file_seconds
        return int(round(seconds * NS_PER_S))

    # ------------------------------------------------------------ daily metadata
    def daily_metadata(self, day: _dt.date) -> dict[str, dict]:
        """The day's metadata entries by ``bucket/key`` (``{}`` if the day has no file)."""
        if day in self._daily:
            return self._daily[day]
        url = f"{self.metadata_url}/{day:%Y}/{day:%Y%m%d}.json"
        fs, path = filesystem(url, self.storage_options)
        index: dict[str, dict] = {}
        try:
            with fs.open(path, "rb") as fh:
                entries = json.loads(fh.read().decode("utf-8-sig"))
            if not isinstance(entries, list):
                raise MetadataError(f"{url}: expected a list of {{uri, start, ...}} entries")
            for entry in entries:
                if isinstance(entry, dict) and entry.get("uri"):
                    index[_object_key(str(entry["uri"]))] = entry
        except FileNotFoundError:
            log.debug("%s: no daily metadata", url)
        except (MetadataError, ValueError) as exc:
            log.warning("%s: daily metadata not used (%s)", url, exc)
        self._daily[day] = index
        return index

    def _with_daily_metadata(self, records: list[SourceFile | RejectedFile]) -> list[SourceFile | RejectedFile]:
        out: list[SourceFile | RejectedFile] = []
        for rec in records:
            if isinstance(rec, SourceFile):
                entry = self.daily_metadata(utc_day(rec.start_ns)).get(_object_key(rec.url))
                if entry is not None:
                    rec = self._apply(rec, entry)
            out.append(rec)
        return out

    @staticmethod
    def _apply(rec: SourceFile, entry: dict) -> SourceFile:
        try:
            start_ns = to_ns(entry["start"])
            duration = float(entry.get("duration_secs", "nan"))
        except (KeyError, ValueError, TypeError) as exc:
            log.warning("%s: daily metadata entry not used (%s)", rec.url, exc)
            return rec
        fields = dict(rec.fields)
        fields["time_source"] = "metadata"
        if start_ns != rec.start_ns:
            fields["name_start"] = ns_to_iso(rec.start_ns)
        if duration == duration and duration > 0:
            fields["duration_secs"] = repr(duration)
        for key, name in (("channels", "metadata_channels"), ("end", "metadata_end"), ("jitter_secs", "jitter_secs")):
            if entry.get(key) is not None:
                fields[name] = str(entry[key])
        return replace(rec, start_ns=start_ns, fields=tuple(sorted(fields.items())))

    # ------------------------------------------------------------ stream attributes
    def stream_attributes(self, file: SourceFile) -> dict[str, Any]:
        """The product (bucket, metadata prefix, scale) and the deployment JSON if one was given."""
        attrs: dict[str, Any] = {"product": self.product, "product_url": self.url,
                                 "nominal_file_seconds": self.spec.file_seconds}
        attrs.update(dict(self.spec.attributes))
        if self.metadata_url:
            attrs["daily_metadata_url"] = self.metadata_url
        if self.deployment_metadata_url:
            if self._deployment is None:
                fs, path = filesystem(self.deployment_metadata_url, self.storage_options)
                try:
                    self._deployment = read_deployment_metadata(fs, path, self.deployment_metadata_url)
                except MetadataError as exc:
                    log.warning("%s", exc)
                    self._deployment = {"metadata_url": self.deployment_metadata_url, "metadata_error": str(exc)}
            attrs.update(self._deployment)
        return attrs


def listing_entries(text: str, bucket: str) -> list[dict[str, Any]]:
    """fsspec-like info dicts from a saved ``aws s3 ls`` listing (date, time, size, key per line).

    Lets planning and name parsing be checked against a real bucket's
    listing without reaching the bucket.
    """
    entries = []
    for line in text.splitlines():
        parts = line.split(None, 3)
        if len(parts) == 4 and parts[2].isdigit():
            entries.append({"name": f"{bucket}/{parts[3]}", "size": int(parts[2]), "type": "file"})
        elif line.strip() and not line.strip().startswith("PRE "):
            raise MetadataError(f"{bucket}: not an 'aws s3 ls' line: {line!r}")
    return entries


__all__ = ["CH01_SERIALS", "PRODUCTS", "PacificSound", "Product", "listing_entries"]
