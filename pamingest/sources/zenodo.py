"""Recordings published on Zenodo: a record's audio files and the members of its zip archives.

A Zenodo record lists its files through the records API
(``GET {api}/records/{id}``: ``files`` with ``key``, ``size``, ``checksum``
and a download link). Collections ship their audio as one large zip (the
Cornell soundscapes' ``soundscape_data.zip`` is tens of GB): the zip is
read where it lies, by HTTP range requests through fsspec's zip filesystem
(the central directory first, then each member's bytes when its rows are
decoded), never downloaded whole. A member's URL is fsspec's chained URL
``zip://<member>::<archive URL>``, which every worker opens the same way;
its ETag is the member's CRC-32 and size, so a re-published archive whose
member changed is seen as changed.

``CornellSoundscapes`` names the Cornell Lab's fully annotated soundscape
collections (docs/sources.md), their time zones, and their
``annotations.csv`` (read by ``annotations/cornell.py``).

Checked against Zenodo's documented layout only: no machine here reaches
zenodo.org. Tests serve the same JSON and a zip of fixture FLACs from a
local HTTP server that answers range requests (tests/zenodo_server.py).
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError, TemplateError
from .base import RejectedFile, SourceFile
from .templates import FilenameTemplate, get_templates, parse_name

ZENODO_API = "https://zenodo.org/api"
AUDIO = (".flac", ".wav")


def record_files(record: str, api: str = ZENODO_API, storage_options: dict | None = None) -> list[dict[str, Any]]:
    """``[{"key", "size", "checksum", "url"}]`` of a Zenodo record, from its records API JSON."""
    from ..fsutil import filesystem

    url = f"{api.rstrip('/')}/records/{record}"
    fs, path = filesystem(url, storage_options)
    try:
        data = json.loads(fs.cat_file(path))
    except FileNotFoundError as exc:
        raise ConfigError(f"Zenodo record {record}: {url} not found") from exc
    except ValueError as exc:
        raise ConfigError(f"Zenodo record {record}: {url} did not answer JSON ({exc})") from exc
    entries = data.get("files")
    if isinstance(entries, dict):  # the files endpoint's shape: {"entries": [...]}
        entries = entries.get("entries")
    if not isinstance(entries, list):
        raise ConfigError(f"Zenodo record {record}: {url} lists no files")
    out = []
    for entry in entries:
        key = entry.get("key") or entry.get("filename")
        if not key:
            continue
        links = entry.get("links") or {}
        link = links.get("content") or links.get("self") or links.get("download") or \
            f"{api.rstrip('/')}/records/{record}/files/{key}/content"
        out.append({"key": key, "size": int(entry.get("size") or entry.get("filesize") or 0),
                    "checksum": str(entry.get("checksum") or ""), "url": link})
    return sorted(out, key=lambda e: e["key"])


@dataclass
class ZenodoRecord:
    """Recordings in a Zenodo record: loose audio files and members of its zip archives.

    Parameters
    ----------
    record : str
        The record id (``7079380``).
    template : str, FilenameTemplate or list
        Name templates of the recordings (as ``TimestampedFiles``).
    name : str
        The source's name: the first level of the store's groups.
    site : str, optional
        Site of recordings whose template has no ``{site}``.
    archives : tuple of str
        Which of the record's files are archives to look inside (glob on the key).
    api : str
        The records API (a mirror, or a local server in tests).
    storage_options : dict
        fsspec HTTP options (headers, ...).
    """

    record: str
    template: Any
    name: str = "zenodo"
    site: str | None = None
    archives: tuple[str, ...] = ("*.zip",)
    api: str = ZENODO_API
    storage_options: dict = field(default_factory=dict)
    suffixes: tuple[str, ...] = AUDIO

    def __post_init__(self) -> None:
        self.record = str(self.record)
        self.templates: tuple[FilenameTemplate, ...] = get_templates(self.template)
        self._files: list[dict[str, Any]] | None = None

    def files(self) -> list[dict[str, Any]]:
        """The record's files (listed once per source object)."""
        if self._files is None:
            self._files = record_files(self.record, self.api, self.storage_options)
        return self._files

    def partitions(self) -> list[str]:
        """``""`` for the loose audio files, then each archive by key."""
        return [""] + [f["key"] for f in self.files() if self._is_archive(f["key"])]

    def _is_archive(self, key: str) -> bool:
        return any(fnmatch.fnmatch(key, pattern) for pattern in self.archives)

    def list_partition(self, partition: str) -> list[SourceFile | RejectedFile]:
        if not partition:
            return self._records([(f["url"], f["key"], f["size"], f["checksum"].removeprefix("md5:"))
                                  for f in self.files() if f["key"].lower().endswith(self.suffixes)])
        archive = next(f for f in self.files() if f["key"] == partition)
        return self._records(self._members(archive))

    def _members(self, archive: dict[str, Any]) -> list[tuple[str, str, int, str]]:
        """``(url, name, size, etag)`` of the audio members of one archive, read by range requests."""
        from ..fsutil import fresh_archive

        try:
            fs = fresh_archive(archive["url"], self.storage_options)
            found = fs.find("", detail=True)
        except Exception as exc:  # noqa: BLE001 - the archive's listing fails, the record's other files go on
            raise ConfigError(f"{archive['url']}: cannot read the zip's directory ({type(exc).__name__}: {exc})") \
                from exc
        out = []
        for member, info in sorted(found.items()):
            if info.get("type") == "directory" or not member.lower().endswith(self.suffixes):
                continue
            etag = f"crc32:{int(info.get('CRC', 0)):08x}:{int(info.get('file_size', info.get('size', 0)))}"
            out.append((f"zip://{member}::{archive['url']}", member, int(info.get("size") or 0), etag))
        return out

    def _records(self, entries: list[tuple[str, str, int, str]]) -> list[SourceFile | RejectedFile]:
        records: list[SourceFile | RejectedFile] = []
        for url, key, size, etag in entries:
            base = key.rsplit("/", 1)[-1]
            try:
                start_ns, fields = parse_name(base, self.templates)
            except TemplateError as exc:
                records.append(RejectedFile(self.name, url, size, etag, str(exc)))
                continue
            site = self._site(fields)
            if not site:
                records.append(RejectedFile(self.name, url, size, etag,
                                            f"{base}: the template gives no site and none was set"))
                continue
            records.append(SourceFile(self.name, site, start_ns, url, size, etag, tuple(sorted(fields.items()))))
        return sorted(records, key=lambda r: r.url)

    def _site(self, fields: dict[str, str]) -> str | None:
        return fields.get("site") or self.site

    def stream_attributes(self, file: SourceFile) -> dict[str, Any]:
        return {"zenodo_record": self.record, "zenodo_api": self.api}


@dataclass(frozen=True)
class CornellCollection:
    record: str
    code: str
    title: str
    # Zone of names without a trailing Z (local clock time: their hours cluster at each site's dawn).
    timezone: str


# docs/sources.md; Zenodo record ids as the Cornell Lab published them.
CORNELL_COLLECTIONS: dict[str, CornellCollection] = {
    "ssw": CornellCollection("7079380", "SSW", "Sapsucker Woods, New York", "America/New_York"),
    "uhh": CornellCollection("7078499", "UHH", "Hawai'i", "Pacific/Honolulu"),
    "per": CornellCollection("7079124", "PER", "Amazon, Peru", "America/Lima"),
    "nes": CornellCollection("7525349", "NES", "Colombia coffee farms", "America/Bogota"),
    "hsn": CornellCollection("7525805", "HSN", "High Sierras, California", "America/Los_Angeles"),
    "sne": CornellCollection("7050014", "SNE", "Sierra Nevada, California", "America/Los_Angeles"),
}
# SSW_001_20170225_010000Z.flac, PER_001_S01_20190116_100007Z.flac, UHH_001_S01_20161121_150000.flac
_CORNELL_NAME = r"{site:[A-Z]{3}}_{file_number:\d{3}}{station:(?:_S\d{2})?}_%Y%m%d_%H%M%S"


def cornell_templates(timezone: str) -> tuple[FilenameTemplate, ...]:
    """A trailing ``Z`` is UTC (ISO 8601); a name without it is read in ``timezone``."""
    return (FilenameTemplate(_CORNELL_NAME + "Z.{ext:flac|wav}"),
            FilenameTemplate(_CORNELL_NAME + ".{ext:flac|wav}", timezone=timezone))


class CornellSoundscapes(ZenodoRecord):
    """One of the Cornell Lab's fully annotated soundscape collections on Zenodo.

    Parameters
    ----------
    collection : str
        ``ssw``, ``uhh``, ``per``, ``nes``, ``hsn`` or ``sne`` (``CORNELL_COLLECTIONS``).
    timezone : str, optional
        Zone of file names without a trailing ``Z``; default the collection's
        own (names with ``Z`` are UTC whatever this says).
    name : str
        The source's name (default ``cornell``).
    api, storage_options
        As for ``ZenodoRecord``.

    The store's site is the collection code, with the recording station when
    the names carry one (``PER_S01``). ``annotation_files()`` is the
    collection's ``annotations.csv``; every recording of the collection is
    effort for every label (``annotations/cornell.py``).
    """

    annotation_format = "cornell"

    def __init__(self, collection: str = "ssw", *, timezone: str | None = None, name: str = "cornell",
                 api: str = ZENODO_API, storage_options: dict | None = None, record: str | None = None) -> None:
        key = str(collection).lower()
        if key not in CORNELL_COLLECTIONS:
            raise ConfigError(f"unknown Cornell collection {collection!r}: one of {', '.join(CORNELL_COLLECTIONS)}")
        self.collection = CORNELL_COLLECTIONS[key]
        self.timezone = timezone or self.collection.timezone
        super().__init__(record or self.collection.record, cornell_templates(self.timezone), name=name, api=api,
                         storage_options=dict(storage_options or {}))

    def _site(self, fields: dict[str, str]) -> str | None:
        station = (fields.get("station") or "").lstrip("_")
        return f"{fields['site']}_{station}" if station else fields.get("site")

    def annotation_files(self) -> list[str]:
        """The collection's annotation table(s): ``annotations.csv`` (and any other CSV the record holds)."""
        return [f["url"] for f in self.files() if f["key"].lower().endswith(".csv")]

    def stream_attributes(self, file: SourceFile) -> dict[str, Any]:
        named_utc = file.url.rsplit("/", 1)[-1].split(".")[0].endswith("Z")
        return {**super().stream_attributes(file), "collection": self.collection.title,
                "file_name_time_zone": "UTC" if named_utc else self.timezone}


# MarmAudio (Zenodo 15017207): one-call 96 kHz FLACs under Vocalizations/<parent>/<file>, labelled in
# Annotations.tsv (file_name, parent_name, label). The calls carry no absolute time.
MARMAUDIO_RECORD = "15017207"
MARMAUDIO_TABLE = "Annotations.tsv"
# Each call's place in the collection's relative time base: its line in Annotations.tsv x this many
# seconds. The table is the published list of every call, so the place of a call does not depend on
# which calls an ingest takes; a call longer than a slot is refused (it would overlap the next).
MARMAUDIO_SLOT_SECONDS = 60


class MarmAudio(ZenodoRecord):
    """MarmAudio: common marmoset calls, one call per file, on Zenodo (record 15017207).

    The calls have no absolute time. Each is placed in one relative time base
    (stream attributes ``time_base: relative``): the call on line *k* of
    ``Annotations.tsv`` starts at *k* x ``slot_seconds`` (default 60 s; calls
    last seconds), so every call has its own span, stable whatever subset is
    ingested. Members the table does not list have no place and are rejected
    with that reason. ``annotation_files()`` is the table (``marmaudio``
    reader: each call's label as a whole-file event).

    Parameters
    ----------
    record, api, storage_options, name
        As for ``ZenodoRecord`` (default record 15017207, name ``marmaudio``).
    site : str
        The store site of the collection (default ``colony``).
    slot_seconds : float
        Spacing of the calls in the relative time base.
    table : str
        The record's annotation table (``Annotations.tsv``).
    """

    annotation_format = "marmaudio"

    def __init__(self, record: str = MARMAUDIO_RECORD, *, site: str = "colony", name: str = "marmaudio",
                 api: str = ZENODO_API, storage_options: dict | None = None,
                 slot_seconds: float = MARMAUDIO_SLOT_SECONDS, table: str = MARMAUDIO_TABLE) -> None:
        super().__init__(record, (), name=name, site=site, api=api,  # no times in the names: the table places them
                         storage_options=dict(storage_options or {}))
        self.slot_seconds, self.table = float(slot_seconds), table
        self._places: dict[str, int] | None = None

    def places(self) -> dict[str, int]:
        """``"<parent>/<file_name>" -> line`` (0-based, header excluded) of every call the table lists."""
        if self._places is None:
            import csv
            import io

            from ..fsutil import filesystem

            entry = next((f for f in self.files() if f["key"] == self.table), None)
            if entry is None:
                raise ConfigError(f"Zenodo record {self.record} has no {self.table}: the calls have no place in "
                                  "the collection's time base")
            fs, path = filesystem(entry["url"], self.storage_options)
            text = fs.cat_file(path).decode("utf-8-sig")
            rows = csv.DictReader(io.StringIO(text), delimiter="\t")
            missing = {"file_name", "parent_name"} - set(rows.fieldnames or [])
            if missing:
                raise ConfigError(f"{entry['url']}: no column {', '.join(sorted(missing))}; the header has "
                                  f"{', '.join(rows.fieldnames or [])}")
            self._places = {}
            for k, row in enumerate(rows):
                self._places.setdefault(f"{row['parent_name'].strip()}/{row['file_name'].strip()}", k)
        return self._places

    def _records(self, entries: list[tuple[str, str, int, str]]) -> list[SourceFile | RejectedFile]:
        from ..timing import NS_PER_S

        places = self.places()
        records: list[SourceFile | RejectedFile] = []
        for url, key, size, etag in entries:
            parts = key.rstrip("/").split("/")
            call = "/".join(parts[-2:])
            line = places.get(call)
            if line is None or len(parts) < 2:
                records.append(RejectedFile(self.name, url, size, etag,
                                            f"{call}: not listed in {self.table} (parent/file_name): no place in "
                                            "the collection's relative time base"))
                continue
            start = int(round(line * self.slot_seconds * NS_PER_S))
            records.append(SourceFile(self.name, self.site, start, url, size, etag,
                                      (("parent", parts[-2]), ("table_line", str(line + 2)),
                                       ("time_base", "relative"), ("time_source", "table"))))
        return sorted(records, key=lambda r: r.url)

    def annotation_files(self) -> list[str]:
        return [f["url"] for f in self.files() if f["key"] == self.table]

    def refuse(self, file: SourceFile, info: Any) -> str | None:
        seconds = info.frames / info.sample_rate
        if seconds > self.slot_seconds:
            return (f"a call of {seconds:.1f} s is longer than its {self.slot_seconds:g} s slot in the collection's "
                    "relative time base: it would overlap the next call (give slot_seconds)")
        return None

    def stream_attributes(self, file: SourceFile) -> dict[str, Any]:
        return {**super().stream_attributes(file), "time_base": "relative",
                "time_base_note": (f"relative: the call on line k of {self.table} (after its header) starts at "
                                   f"k x {self.slot_seconds:g} s, stored as offsets from 1970-01-01T00:00:00Z; "
                                   "they order and space the calls, they are not dates"),
                "start_times_from": f"Zenodo record {self.record} {self.table}"}
