"""SanctSound: NOAA's sanctuary soundscape recordings on the NCEI passive acoustic archive.

Layout under the root (``gs://noaa-passive-bioacoustic/sanctsound`` by
default, or any fsspec URL with the same layout; docs/sources.md)::

    audio/<site>/sanctsound_<site>_<dep>/audio/*.flac      recordings, UTC names
    audio/<site>/sanctsound_<site>_<dep>/**.json           deployment metadata
    products/detections/<site>/sanctsound_<site>_<dep>_<category>[_1d|_1h|_1min]/data/*.csv

One listing partition per deployment folder; sites and deployments named
by the caller are used directly (no listing of the archive's site folders).
Each deployment is its own store site (``<site>_<dep>``, e.g. ``ci01_02``),
so deployments never share a stream even at the same sample rate; the
deployment's metadata JSON becomes the stream's attributes.
"""

from __future__ import annotations

import logging
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ..errors import MetadataError, SourceNotFoundError
from ..fsutil import describe_read_error, filesystem, join_url
from ..timing import to_ns
from ._select import as_list, list_folders, list_objects, overlaps, select_time, time_range, with_site
from .base import RejectedFile, SourceFile
from .deployment_metadata import read_deployment_metadata
from .files import records_from_listing
from .templates import get_templates

log = logging.getLogger(__name__)

DEFAULT_ROOT = "gs://noaa-passive-bioacoustic/sanctsound"
# The 30 sites of docs/sources.md (for help texts and checks; any site folder is accepted).
SITES = (
    "ci01", "ci02", "ci03", "ci04", "ci05", "fk01", "fk02", "fk03", "fk04", "gr01", "gr02", "gr03",
    "hi01", "hi03", "hi04", "hi05", "hi06", "mb01", "mb02", "mb03", "oc01", "oc02", "oc03", "oc04",
    "pm01", "pm02", "pm05", "sb01", "sb02", "sb03",
)
DETECTION_RESOLUTIONS = ("1d", "1h", "1min")

_DEPLOYMENT_FOLDER = re.compile(r"sanctsound_(?P<site>[a-z]{2}\d{2})_(?P<deployment>[a-z0-9]+)\Z", re.IGNORECASE)
_PRODUCT_FOLDER = re.compile(
    r"sanctsound_(?P<site>[a-z]{2}\d{2})_(?P<deployment>\d+[a-z]?)_(?P<category>[a-z0-9_]+?)"
    r"(?:_(?P<resolution>1d|1h|1min))?\Z",
    re.IGNORECASE,
)


def _dep_key(dep: str) -> str:
    """Deployment ids compare as numbers when they are numbers: ``1`` selects ``01``."""
    dep = dep.strip().lower()
    return str(int(dep)) if dep.isdigit() else dep


@dataclass(frozen=True)
class DetectionProduct:
    """One detection CSV of a SanctSound deployment (read by the annotations readers)."""

    url: str
    site: str
    deployment: str
    category: str
    resolution: str  # "1d", "1h", "1min" or "" (events/spans)


def parse_detection_product(url: str) -> DetectionProduct:
    """Site, deployment, category and resolution of a detection CSV from its folder names.

    Raises
    ------
    MetadataError
        If the URL is not ``.../sanctsound_<site>_<dep>_<category>[_<res>]/data/<name>.csv``.
    """
    parts = url.rstrip("/").split("/")
    if len(parts) < 3 or parts[-2] != "data":
        raise MetadataError(f"{url}: not a SanctSound detection product (no data/ folder)")
    m = _PRODUCT_FOLDER.match(parts[-3])
    if not m:
        raise MetadataError(f"{url}: folder {parts[-3]!r} is not sanctsound_<site>_<dep>_<category>[_1d|_1h|_1min]")
    return DetectionProduct(url, m["site"].lower(), m["deployment"], m["category"].lower(), m["resolution"] or "")


@dataclass
class SanctSound:
    """SanctSound recordings of chosen sites, deployments and time range.

    Parameters
    ----------
    root : str
        The collection's root: ``gs://noaa-passive-bioacoustic/sanctsound`` (public,
        read anonymously) or any fsspec URL holding the same layout.
    sites : str or list of str, optional
        Sites such as ``ci01`` (case-insensitive); all site folders if None.
    deployments : str, int or list, optional
        Deployment ids (``1`` and ``"01"`` are the same) applying to every
        selected site, or site-qualified ids such as ``"ci01_02"``; all if None.
    start, end : time-like, optional
        UTC range ``[start, end)`` (naive times are UTC). Files that may hold
        samples in it are selected (see ``pamingest.sources._select``); a
        deployment whose metadata puts its audio outside the range is not listed.
    storage_options : dict, optional
        fsspec options; anonymous access (``token="anon"``) for a ``gs://`` root
        when not given.
    name : str
        The source's name: the first level of the store's groups.
    suffixes : tuple of str
        Audio object endings to consider; other objects are ignored.
    """

    root: str = DEFAULT_ROOT
    sites: Any = None
    deployments: Any = None
    start: Any = None
    end: Any = None
    storage_options: dict | None = None
    name: str = "sanctsound"
    suffixes: tuple[str, ...] = (".flac", ".wav")

    def __post_init__(self) -> None:
        self.root = self.root.rstrip("/")
        sites = as_list(self.sites)
        self.sites = [s.lower() for s in sites] if sites else None
        self._deployments: set[tuple[str, str]] | None = None
        deps = as_list(self.deployments)
        self._deployment_names = ", ".join(deps or [])
        if deps:
            self._deployments = set()
            for dep in deps:
                site, _, rest = dep.rpartition("_")
                self._deployments.add((site.lower(), _dep_key(rest)))
        self._lo, self._hi = time_range(self.start, self.end)
        if self.storage_options is None:
            self.storage_options = {"token": "anon"} if self.root.startswith(("gs://", "gcs://")) else {}
        self._templates = get_templates("sanctsound")
        # Deployment metadata, read once per deployment folder (partitions, attributes).
        self._metadata: dict[str, dict[str, Any]] = {}

    # ------------------------------------------------------------ selection
    def _fs(self):
        return filesystem(self.root, self.storage_options)

    def _wants(self, site: str, deployment: str) -> bool:
        if self._deployments is None:
            return True
        key = _dep_key(deployment)
        return (site, key) in self._deployments or ("", key) in self._deployments

    def _site_folders(self, fs, base: str, what: str) -> list[str]:
        if self.sites:
            return self.sites
        found = list_folders(fs, base)
        if not found:
            raise SourceNotFoundError(f"{join_url(fs, base)}: no site folders ({what}); is {self.root} a SanctSound root?")
        return [s.lower() for s in found]

    # ------------------------------------------------------------ Source protocol
    def partitions(self) -> list[str]:
        """One partition per selected deployment folder: ``<site>/sanctsound_<site>_<dep>``."""
        fs, root = self._fs()
        found: list[str] = []
        for site in self._site_folders(fs, f"{root}/audio", "audio/"):
            folders = list_folders(fs, f"{root}/audio/{site}")
            if not folders and self.sites:
                raise SourceNotFoundError(
                    f"{self.root}/audio/{site}: no such site folder (SanctSound sites: {', '.join(SITES)})"
                )
            for folder in folders:
                m = _DEPLOYMENT_FOLDER.match(folder)
                if m and m["site"].lower() == site and self._wants(site, m["deployment"]):
                    found.append(f"{site}/{folder}")
        if not found and self._deployments:
            raise SourceNotFoundError(f"{self.root}/audio: no deployment folder matches {self._deployment_names}")
        if self._lo is not None or self._hi is not None:
            # One small metadata read per deployment decides whether it is listed: read them together.
            with ThreadPoolExecutor(max_workers=8) as pool:
                list(pool.map(self.deployment_metadata, found))
        return sorted(p for p in found if self._may_overlap(p))

    def list_partition(self, partition: str) -> list[SourceFile | RejectedFile]:
        """The deployment's audio files, each with site ``<site>_<dep>``, in URL order."""
        fs, root = self._fs()
        site, deployment = self._split(partition)
        entries = list_objects(fs, f"{root}/audio/{partition}/audio", recursive=True)
        records = records_from_listing(fs, entries, self._templates, self.name, suffixes=self.suffixes)
        return select_time(with_site(records, f"{site}_{deployment}"), self._lo, self._hi)

    def stream_attributes(self, file: SourceFile) -> dict[str, Any]:
        """The deployment of ``file``: its ids and its metadata JSON (position, instrument, quality)."""
        site, _, deployment = file.site.partition("_")
        partition = f"{site}/sanctsound_{site}_{deployment}"
        attrs: dict[str, Any] = {"sanctsound_site": site, "deployment": deployment}
        attrs.update(self.deployment_metadata(partition))
        return attrs

    # ------------------------------------------------------------ metadata and products
    @staticmethod
    def _split(partition: str) -> tuple[str, str]:
        site, _, folder = partition.partition("/")
        m = _DEPLOYMENT_FOLDER.match(folder)
        if not m:
            raise SourceNotFoundError(f"{partition!r} is not a SanctSound deployment partition <site>/sanctsound_<site>_<dep>")
        return site.lower(), m["deployment"]

    def deployment_metadata(self, partition: str) -> dict[str, Any]:
        """Normalised metadata of a deployment partition (``{}`` if it has no JSON file).

        A metadata file that cannot be read does not stop an ingest: its reason
        is returned as ``metadata_error`` (and lands in the stream attributes).
        """
        if partition in self._metadata:
            return self._metadata[partition]
        fs, root = self._fs()
        folder = f"{root}/audio/{partition}"
        try:
            path = self._find_metadata(fs, folder, partition.rsplit("/", 1)[-1])
        except Exception as exc:  # noqa: BLE001 - metadata must never stop an ingest
            reason = f"{join_url(fs, folder)}: cannot list the deployment folder ({describe_read_error(exc)})"
            log.warning("%s", reason)
            self._metadata[partition] = {"metadata_error": reason}
            return self._metadata[partition]
        if path is None:
            meta: dict[str, Any] = {}
        else:
            try:
                meta = read_deployment_metadata(fs, path, join_url(fs, path))
            except MetadataError as exc:
                log.warning("%s", exc)
                meta = {"metadata_url": join_url(fs, path), "metadata_error": str(exc)}
        self._metadata[partition] = meta
        return meta

    @staticmethod
    def _find_metadata(fs, folder: str, deployment_folder: str) -> str | None:
        """The deployment's JSON: in its folder, else in a sub-folder other than ``audio/``."""
        candidates = [e["name"] for e in list_objects(fs, folder) if e["name"].lower().endswith(".json")]
        if not candidates:
            for sub in list_folders(fs, folder):
                if sub.lower() != "audio":
                    candidates += [e["name"] for e in list_objects(fs, f"{folder}/{sub}")
                                   if e["name"].lower().endswith(".json")]
        if not candidates:
            return None
        # Prefer the file named after the deployment when a folder holds several.
        named = [c for c in candidates if deployment_folder.lower() in c.rsplit("/", 1)[-1].lower()]
        return sorted(named or candidates)[0]

    def _may_overlap(self, partition: str) -> bool:
        """False only when the deployment's metadata puts all its audio outside the range."""
        if self._lo is None and self._hi is None:
            return True
        meta = self.deployment_metadata(partition)
        start, end = meta.get("audio_start"), meta.get("audio_end")
        if not start:
            return True
        start_ns = to_ns(start)
        duration = (to_ns(end) - start_ns) if end else 2**62
        return overlaps(start_ns, duration, self._lo, self._hi)

    def detection_products(self, categories: Any = None, resolutions: Any = None) -> list[str]:
        """URLs of the detection CSVs of the selected sites and deployments, sorted.

        Parameters
        ----------
        categories : str or list of str, optional
            Categories such as ``humpbackwhale``, ``ships``, ``bluewhale_manual``; all if None.
        resolutions : str or list of str, optional
            ``1d``, ``1h``, ``1min``, or ``""`` for event/span products; all if None.

        Notes
        -----
        Only ``.csv`` objects in a product's ``data/`` folder count (the archive's
        layout requires that level). ``parse_detection_product(url)`` gives a URL's
        site, deployment, category and resolution. The time range does not apply:
        a product covers its whole deployment.
        """
        fs, root = self._fs()
        base = f"{root}/products/detections"
        wanted_categories = {c.lower() for c in as_list(categories) or []}
        wanted_res = None if resolutions is None else {str(r).lower() for r in (
            [resolutions] if isinstance(resolutions, str) else resolutions)}
        urls: list[str] = []
        for site in self._site_folders(fs, base, "products/detections/"):
            for folder in list_folders(fs, f"{base}/{site}"):
                m = _PRODUCT_FOLDER.match(folder)
                if not m or m["site"].lower() != site or not self._wants(site, m["deployment"]):
                    continue
                if wanted_categories and m["category"].lower() not in wanted_categories:
                    continue
                if wanted_res is not None and (m["resolution"] or "").lower() not in wanted_res:
                    continue
                urls += [join_url(fs, e["name"]) for e in list_objects(fs, f"{base}/{site}/{folder}/data")
                         if e["name"].lower().endswith(".csv")]
        return sorted(urls)
