"""Other NOAA NCEI passive acoustic collections in ``gs://noaa-passive-bioacoustic``.

* NRS, the Noise Reference Stations::

      nrs/audio/<NN>/nrs_<NN>_<years>/audio/NRS11_20191231_230836.flac

  4 h mono FLAC at 5 kHz; some names carry seconds = 60, which the name
  templates roll over to the next minute.

* PIFSC, the Pacific Islands Fisheries Science Center HARP recordings::

      pifsc/audio/<project>/<region>/<project>_<region>_<NN>/audio/Hawaii_K_14_121216_190000.df20.x.flac

  FLAC-compressed XWAV (``.x.flac``; ``.dfNN`` = decimated by NN). An XWAV
  holds a directory of "raw files" (subchunks, 75 s each) in its ``harp``
  RIFF chunk, kept by ``flac --keep-foreign-metadata`` in APPLICATION
  metadata blocks. Duty-cycled deployments leave gaps between subchunks,
  so the file is NOT one continuous signal: ingest stores a file as one
  (file start + offset / rate), which would mistime every subchunk after
  the first. The source therefore reads each file's directory while
  listing: a file whose subchunks are contiguous is ingested, timed by its
  first subchunk (millisecond precision, better than the name); a
  duty-cycled file is reported as rejected, with the reason, until ingest
  can store sub-file segments.

One partition per deployment folder; the deployment folder is the store
site, so deployments never share a stream.
"""

from __future__ import annotations

import datetime as _dt
import logging
import re
import struct
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, BinaryIO

from ..errors import ConfigError, DecodeError, SourceNotFoundError
from ..fsutil import describe_read_error, filesystem, open_for_read
from ..timing import NS_PER_S, ns_to_iso, to_ns, utc_datetime_to_ns
from ._select import as_list, list_folders, list_objects, overlaps, select_time, time_range
from .base import RejectedFile, SourceFile
from .files import records_from_listing
from .templates import get_templates

log = logging.getLogger(__name__)

DEFAULT_ROOT = "gs://noaa-passive-bioacoustic"


@dataclass(frozen=True)
class Collection:
    """Where an NCEI collection's deployment folders are and how its files are named.

    ``depth`` folder levels under ``audio`` lead to a deployment folder, which
    holds an ``audio/`` folder; the first level is what ``stations`` selects.
    """

    key: str
    audio: str
    depth: int
    template: str
    file_seconds: float | None
    suffixes: tuple[str, ...]


COLLECTIONS = {
    "nrs": Collection("nrs", "nrs/audio", 2, "nrs", 4 * 3600.0, (".flac", ".wav")),
    "pifsc": Collection("pifsc", "pifsc/audio", 3, "pifsc", None, (".x.flac", ".x.wav")),
}
_NRS_YEARS = re.compile(r"nrs_\d+_(?P<first>\d{4})(?:[-_](?P<last>\d{4}))?\Z", re.IGNORECASE)


# ---------------------------------------------------------------- XWAV directory

@dataclass(frozen=True)
class Subchunk:
    """One raw file of an XWAV: when it starts and how many frames it holds."""

    start_ns: int
    frames: int


def _riff_chunks(data: bytes):
    """(id, payload) of the RIFF chunks in ``data``; the ``data`` chunk ends the walk."""
    pos = 12 if data[:4] in (b"RIFF", b"RIFX") else 0
    while pos + 8 <= len(data):
        cid, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        if cid == b"data":
            return
        yield cid, data[pos + 8 : pos + 8 + size]
        pos += 8 + size + (size & 1)


def _flac_riff_metadata(fh: BinaryIO) -> bytes:
    """The RIFF header chunks kept in a FLAC's ``riff`` APPLICATION blocks, concatenated."""
    out = bytearray()
    if fh.read(4) != b"fLaC":
        raise DecodeError("not a FLAC file")
    last = False
    while not last:
        head = fh.read(4)
        if len(head) < 4:
            raise DecodeError("FLAC metadata ends early")
        last, kind, size = bool(head[0] & 0x80), head[0] & 0x7F, int.from_bytes(head[1:4], "big")
        if kind == 2:  # APPLICATION
            block = fh.read(size)
            if block[:4] == b"riff":
                out += block[4:]
        else:
            fh.seek(size, 1)  # PADDING and SEEKTABLE can be large: skip, never read
    return bytes(out)


def _wav_header(fh: BinaryIO, limit: int = 1 << 20) -> bytes:
    """The chunks of a WAV before its ``data`` chunk (the whole header, up to ``limit`` bytes)."""
    head = fh.read(12)
    out = bytearray(head)
    while len(out) < limit:
        hdr = fh.read(8)
        if len(hdr) < 8:
            break
        out += hdr
        if hdr[:4] == b"data":
            break
        size = struct.unpack("<I", hdr[4:])[0]
        out += fh.read(size + (size & 1))
    return bytes(out)


def parse_xwav_directory(header: bytes) -> tuple[list[Subchunk], int] | None:
    """``(subchunks, sample_rate)`` from an XWAV's RIFF header chunks; None if it has no ``harp`` chunk.

    The ``harp`` chunk layout follows Triton (MarineBioAcousticsRC): a 56-byte
    header whose bytes 36-37 count the raw files, then 32 bytes per raw file:
    year-2000, month, day, hour, minute, second (u8), milliseconds (u16),
    byte offset, byte length, write length, sample rate (u32), gain (u8).
    """
    chunks = dict(_riff_chunks(header))
    harp, fmt = chunks.get(b"harp"), chunks.get(b"fmt ")
    if harp is None:
        return None
    if fmt is None or len(fmt) < 16:
        raise DecodeError("XWAV header has a harp chunk but no fmt chunk")
    rate, block_align = struct.unpack("<I", fmt[4:8])[0], struct.unpack("<H", fmt[12:14])[0]
    if len(harp) < 56 or not rate or not block_align:
        raise DecodeError("XWAV harp chunk is too short or its format is empty")
    n = struct.unpack("<H", harp[36:38])[0]
    if len(harp) < 56 + 32 * n:
        raise DecodeError(f"XWAV harp chunk announces {n} raw files but holds {(len(harp) - 56) // 32}")
    out = []
    for i in range(n):
        rec = harp[56 + 32 * i : 88 + 32 * i]
        y, mo, d, h, mi, s = rec[:6]
        ms, _, length = struct.unpack("<HII", rec[6:16])
        try:
            start = _dt.datetime(2000 + y, mo, d, h, mi, s, ms * 1000)
        except ValueError as exc:
            raise DecodeError(f"XWAV raw file {i} has an impossible time ({exc})") from exc
        out.append(Subchunk(utc_datetime_to_ns(start), length // block_align))
    return out, rate


def read_xwav_directory(url: str, storage_options: dict | None = None) -> tuple[list[Subchunk], int] | None:
    """``(subchunks, sample_rate)`` of an ``.x.flac`` / ``.x.wav`` object, or None if it has no ``harp`` chunk.

    Reads only the object's header (FLAC metadata blocks or WAV chunks before ``data``).
    """
    fs, path = filesystem(url, storage_options)
    with open_for_read(fs, path, block_size=256 * 1024) as fh:
        magic = fh.read(4)
        fh.seek(0)
        try:
            header = _flac_riff_metadata(fh) if magic == b"fLaC" else _wav_header(fh)
        except DecodeError:
            raise
        except Exception as exc:  # noqa: BLE001 - named with the file by the caller
            raise DecodeError(describe_read_error(exc)) from exc
    return parse_xwav_directory(header)


def check_xwav(rec: SourceFile, directory, max_gap_seconds: float) -> SourceFile | RejectedFile:
    """The record timed by its first subchunk, or rejected if its subchunks are not contiguous."""
    if directory is None:
        return rec
    subchunks, rate = directory
    if not subchunks:
        return RejectedFile(rec.source, rec.url, rec.size, rec.etag, f"{rec.name}: XWAV directory lists no raw files")
    worst = 0.0
    for a, b in zip(subchunks, subchunks[1:]):
        expected = a.start_ns + a.frames * NS_PER_S // rate
        worst = max(worst, abs(b.start_ns - expected) / NS_PER_S)
    if worst > max_gap_seconds:
        return RejectedFile(
            rec.source, rec.url, rec.size, rec.etag,
            f"{rec.name}: duty-cycled XWAV ({len(subchunks)} raw files, gaps up to {worst:g} s): ingest stores "
            "a file as one continuous signal, so every raw file after the first would be mistimed; not ingested",
        )
    fields = dict(rec.fields)
    fields.update({"time_source": "xwav", "subchunks": str(len(subchunks))})
    if subchunks[0].start_ns != rec.start_ns:
        fields["name_start"] = ns_to_iso(rec.start_ns)
    return replace(rec, start_ns=subchunks[0].start_ns, fields=tuple(sorted(fields.items())))


# ---------------------------------------------------------------- the source

@dataclass
class Ncei:
    """NRS or PIFSC recordings of chosen stations, deployments and time range.

    Parameters
    ----------
    collection : str
        ``nrs`` or ``pifsc``.
    root : str
        The archive's root: ``gs://noaa-passive-bioacoustic`` (public, read
        anonymously) or any fsspec URL with the same layout.
    stations : str or list, optional
        First folder level under the collection's ``audio/``: NRS station
        numbers (``11``), PIFSC projects (``pipan``); all if None.
    deployments : str or list, optional
        Deployment folder names (``nrs_11_2019-2021``, ``pipan_hawaii_14``) or
        their trailing numbers (``14``); all if None.
    start, end : time-like, optional
        UTC range ``[start, end)``. NRS deployments whose folder years miss the
        range are not listed; files are selected by their span (4 h for NRS,
        the XWAV directory for PIFSC).
    storage_options : dict, optional
        fsspec options; anonymous access for a ``gs://`` root when not given.
    name : str
        The source's name: the first level of the store's groups.
    check_subchunks : bool
        PIFSC: read each file's XWAV directory while listing (one small read
        per file) to time it exactly and reject duty-cycled files. Without
        it, files are timed by their names and duty-cycled files are mistimed.
    max_gap_seconds : float
        PIFSC: largest gap or overlap between consecutive raw files still
        taken as one continuous signal.
    max_parallel : int
        Header reads in flight per partition.
    """

    collection: str = "nrs"
    root: str = DEFAULT_ROOT
    stations: Any = None
    deployments: Any = None
    start: Any = None
    end: Any = None
    storage_options: dict | None = None
    name: str = "ncei"
    check_subchunks: bool = True
    max_gap_seconds: float = 0.01
    max_parallel: int = 8

    def __post_init__(self) -> None:
        key = str(self.collection).lower()
        if key not in COLLECTIONS:
            raise ConfigError(f"unknown NCEI collection {self.collection!r}: one of {', '.join(COLLECTIONS)}")
        self.collection, self.spec = key, COLLECTIONS[key]
        self.root = self.root.rstrip("/")
        stations = as_list(self.stations)
        self.stations = [s.lower() for s in stations] if stations else None
        deployments = as_list(self.deployments)
        self.deployments = [d.lower() for d in deployments] if deployments else None
        self._lo, self._hi = time_range(self.start, self.end)
        if self.storage_options is None:
            self.storage_options = {"token": "anon"} if self.root.startswith(("gs://", "gcs://")) else {}
        self._templates = get_templates(self.spec.template)

    def _fs(self):
        return filesystem(self.root, self.storage_options)

    def _wants(self, folder: str) -> bool:
        if not self.deployments:
            return True
        folder = folder.lower()
        number = folder.rsplit("_", 1)[-1]
        return any(d == folder or (d.isdigit() and number.isdigit() and int(d) == int(number))
                   for d in self.deployments)

    def _may_overlap(self, folder: str) -> bool:
        """NRS folder names carry their years (``nrs_11_2019-2021``): prune by them."""
        m = _NRS_YEARS.match(folder) if self.collection == "nrs" else None
        if not m or (self._lo is None and self._hi is None):
            return True
        first, last = int(m["first"]), int(m["last"] or m["first"])
        lo = to_ns(f"{first}-01-01")
        return overlaps(lo, to_ns(f"{last + 1}-01-01") - lo, self._lo, self._hi)

    def partitions(self) -> list[str]:
        """One partition per selected deployment folder (path under the collection's ``audio/``)."""
        fs, root = self._fs()
        base = f"{root}/{self.spec.audio}"
        level = self.stations or [s.lower() for s in list_folders(fs, base)]
        if not level:
            raise SourceNotFoundError(f"{self.root}/{self.spec.audio}: no folders; is {self.root} the NCEI archive root?")
        if self.stations:
            missing = [s for s in self.stations if not list_folders(fs, f"{base}/{s}")]
            if missing:
                raise SourceNotFoundError(f"{self.root}/{self.spec.audio}/{missing[0]}: no such {self.collection} folder")
        for _ in range(self.spec.depth - 1):
            level = [f"{p}/{f}" for p in level for f in list_folders(fs, f"{base}/{p}")]
        found = [p for p in level if self._wants(p.rsplit("/", 1)[-1])]
        if not found and self.deployments:
            raise SourceNotFoundError(
                f"{self.root}/{self.spec.audio}: no deployment folder matches {', '.join(self.deployments)}")
        return sorted(p for p in found if self._may_overlap(p.rsplit("/", 1)[-1]))

    def list_partition(self, partition: str) -> list[SourceFile | RejectedFile]:
        """The deployment's recordings, site = deployment folder, in URL order."""
        fs, root = self._fs()
        entries = list_objects(fs, f"{root}/{self.spec.audio}/{partition}/audio", recursive=True)
        records = records_from_listing(fs, entries, self._templates, self.name,
                                       site=partition.rsplit("/", 1)[-1], suffixes=self.spec.suffixes)
        if self.collection == "pifsc" and self.check_subchunks:
            records = self._check_xwavs(records)
        return select_time(records, self._lo, self._hi, self._duration_ns)

    def _duration_ns(self, rec: SourceFile) -> int | None:
        if self.spec.file_seconds is not None:
            return int(self.spec.file_seconds * NS_PER_S)
        span = dict(rec.fields).get("span_seconds")
        return int(float(span) * NS_PER_S) if span else None

    def _check_xwavs(self, records: list[SourceFile | RejectedFile]) -> list[SourceFile | RejectedFile]:
        def check(rec):
            if not isinstance(rec, SourceFile):
                return rec
            try:
                directory = read_xwav_directory(rec.url, self.storage_options)
            except DecodeError as exc:
                return RejectedFile(rec.source, rec.url, rec.size, rec.etag, f"{rec.name}: cannot read XWAV header: {exc}")
            checked = check_xwav(rec, directory, self.max_gap_seconds)
            if isinstance(checked, SourceFile) and directory is not None:
                subchunks, rate = directory
                end = subchunks[-1].start_ns + subchunks[-1].frames * NS_PER_S // rate
                fields = dict(checked.fields)
                fields["span_seconds"] = repr((end - subchunks[0].start_ns) / NS_PER_S)
                checked = replace(checked, fields=tuple(sorted(fields.items())))
            return checked

        with ThreadPoolExecutor(max_workers=max(1, self.max_parallel)) as pool:
            return list(pool.map(check, records))

    def stream_attributes(self, file: SourceFile) -> dict[str, Any]:
        """The collection and deployment folder of the stream."""
        attrs: dict[str, Any] = {"collection": self.collection, "deployment": file.site}
        if self.collection == "pifsc":
            attrs["time_reference_note"] = (
                "files timed by the first raw file of their XWAV directory; duty-cycled files are rejected"
                if self.check_subchunks else "files timed by their names; duty-cycled XWAV files are mistimed")
        return attrs
