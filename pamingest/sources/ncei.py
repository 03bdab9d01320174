"""Other NOAA NCEI passive acoustic collections in ``gs://noaa-passive-bioacoustic``.

* NRS, the Noise Reference Stations::

      nrs/audio/<NN>/nrs_<NN>_<years>/audio/NRS11_20191231_230836.flac

  4 h mono FLAC at 5 kHz; some names carry seconds = 60, which the name
  templates roll over to the next minute.

* PIFSC, the Pacific Islands Fisheries Science Center HARP recordings::

      pifsc/audio/<project>/<region>/<project>_<region>_<NN>/audio/Hawaii_K_14_121216_190000.df20.x.flac

  FLAC-compressed XWAV (``.x.flac``; ``.dfNN`` = decimated by NN), decoded
  by the ``xwav`` decoder (``pamingest.decode.xwav``): each file's directory
  of raw files is read when the file is probed, a contiguous file is timed
  by its first raw file and a duty-cycled one is stored as timed pieces
  (one per run of contiguous raw files, each timed by its first).
  Listing selects files by their names' times (their spans are only known
  once probed); ingest then drops probed files whose exact span misses the
  requested range.

One partition per deployment folder; the deployment folder is the store
site, so deployments never share a stream.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError, SourceNotFoundError
from ..fsutil import filesystem
from ..timing import NS_PER_S, to_ns
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
        PIFSC: decode with the ``xwav`` decoder, which reads each file's XWAV
        directory when probing it (one small read per file) to time it exactly,
        a duty-cycled file piece by piece. Without it, files are timed by their
        names and duty-cycled files are mistimed.
    max_gap_seconds : float
        PIFSC: largest gap or overlap between consecutive raw files still
        taken as one continuous signal.
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

    @property
    def decoder(self) -> str | tuple[str, dict]:
        if self.collection == "pifsc" and self.check_subchunks:
            return ("xwav", {"max_gap_seconds": self.max_gap_seconds})
        return "sndfile"

    def time_range(self) -> tuple[int | None, int | None]:
        """PIFSC files have no nominal length: the range is checked again on their probed spans."""
        if self.spec.file_seconds is None:
            return self._lo, self._hi
        return None, None

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
        return select_time(records, self._lo, self._hi, self._duration_ns)

    def _duration_ns(self, rec: SourceFile) -> int | None:
        if self.spec.file_seconds is not None:
            return int(self.spec.file_seconds * NS_PER_S)
        return None

    def stream_attributes(self, file: SourceFile) -> dict[str, Any]:
        """The collection and deployment folder of the stream."""
        attrs: dict[str, Any] = {"collection": self.collection, "deployment": file.site}
        if self.collection == "pifsc":
            attrs["time_reference_note"] = (
                "files timed by the first raw file of their XWAV directory; duty-cycled files in pieces, "
                "each timed by its first raw file"
                if self.check_subchunks else "files timed by their names; duty-cycled XWAV files are mistimed")
        return attrs
