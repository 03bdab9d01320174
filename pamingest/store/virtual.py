"""Virtual streams: rows that are byte ranges of the original PCM WAV objects (``ingest --virtual``).

A year of a 256 kHz 24-bit hydrophone is ~24 TB of WAV; copying it into a
store doubles the bill. A packed little-endian PCM WAV holds each row's
samples as one contiguous byte range (a 10 s row at 256 kHz x 3 bytes is
7.68 MB from ``data_offset + first_frame x frame_bytes``), so a virtual
stream's ``audio`` chunks are Icechunk virtual references to those ranges,
decoded by the PCM codec (``codec.PcmCodec``, registered beside the FLAC
codec). Everything above the store (windows, clips, labels, queue, export)
reads them as it reads copied rows.

Where the references may point (Icechunk's *virtual chunk containers*):
``s3://<bucket>/`` for S3 and S3-compatible servers (the source's endpoint,
region and anonymity), and ``file://<folder>/`` for local files. GCS objects
are copied: their listing gives an MD5, not the generation or ETag a
reference could be checked against. Containers are saved in the
repository's configuration, and ``repo.open_repository`` authorises the
ones saved there for every reader (credentials: anonymous for an anonymous
container, the store's own key for a container on the store's endpoint,
else the standard AWS chain).

A reference keeps the object's ETag (S3) or modification time (local files,
rounded up to the second: Icechunk compares whole seconds); Icechunk refuses
to serve a range of an object changed since ("the checksum of the object
owning the virtual chunk has changed (<url>)"), which ``changed_object``
recognises and readers report naming the file. ``stale_objects`` checks
every referenced object against the files table without reading audio.
"""

from __future__ import annotations

import datetime
import math
import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable

from ..errors import ConfigError, SourceChangedError

if TYPE_CHECKING:
    import icechunk
    import zarr

    from ..decode.base import AudioInfo, Unit
    from ..sources.base import SourceFile
    from .repo import Store

# Appended to a virtual stream's name: its rows are references, a copied stream's are FLAC, and
# one array has one codec, so a site ingested both ways has two streams.
VIRTUAL_SUFFIX = "_virtual"
STORAGE_ATTR = "storage"  # stream attribute: "virtual" for a virtual stream (absent: copied)
VIRTUAL = "virtual"
# Bits a virtual stream can refer to (PcmCodec): packed little-endian integer PCM.
VIRTUAL_SUBTYPES = {"PCM_16": 16, "PCM_24": 24, "PCM_32": 32}
_CHANGED = re.compile(r"checksum of the object owning the virtual chunk has changed \(([^)]*)\)")


def is_virtual(group: zarr.Group) -> bool:
    return group.attrs.get(STORAGE_ATTR) == VIRTUAL


def _scheme(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else "file"


def referenceable(file: SourceFile, info: AudioInfo) -> str | None:
    """None when ``file`` can be a virtual stream's rows; otherwise why it is copied instead."""
    subtype = getattr(info, "subtype", "")
    if info.format != "WAV" or subtype not in VIRTUAL_SUBTYPES:
        return f"{info.format}/{subtype} is not packed integer PCM WAV: copied"
    if getattr(info, "pcm_offset", None) is None:
        return "its samples are not packed little-endian PCM in one data chunk: copied"
    scheme = _scheme(file.url)
    if scheme not in ("s3", "s3a", "file"):
        return (f"{scheme}:// objects cannot be referenced (no ETag or modification time to check a "
                "reference against): copied")
    if not _checksum(file):
        return "its listing gives no ETag or modification time to detect a later change: copied"
    return None


def location(url: str) -> str:
    """The URL a reference names: ``s3://bucket/key`` or ``file:///abs/path`` (as the path is spelt:
    Icechunk reads it as given, spaces and all)."""
    scheme = _scheme(url)
    if scheme in ("s3", "s3a"):
        return "s3://" + url.split("://", 1)[1]
    path = os.path.abspath(url.removeprefix("file://"))
    return "file://" + path


def container_prefix(url: str) -> str:
    """The container a reference to ``url`` is read through: its bucket, or its local folder."""
    loc = location(url)
    if loc.startswith("s3://"):
        return "s3://" + loc[5:].split("/", 1)[0] + "/"
    return "file://" + _plain_folder(loc.removeprefix("file://").rsplit("/", 1)[0]).rstrip("/") + "/"


def _local_path(prefix: str) -> str:
    return prefix.removeprefix("file://")


def _s3_endpoint(options: dict[str, Any]) -> str | None:
    return options.get("endpoint_url") or (options.get("client_kwargs") or {}).get("endpoint_url")


def container(prefix: str, storage_options: dict[str, Any]) -> icechunk.VirtualChunkContainer:
    """The container for ``prefix``, reached as the source reached it (``storage_options``)."""
    from .repo import _icechunk

    icechunk = _icechunk()
    if prefix.startswith("file://"):
        return icechunk.VirtualChunkContainer(prefix, icechunk.local_filesystem_store(_local_path(prefix)))
    endpoint = _s3_endpoint(storage_options)
    region = (storage_options.get("region") or (storage_options.get("client_kwargs") or {}).get("region_name")
              or "us-east-1")
    store = icechunk.s3_store(
        region=region, endpoint_url=endpoint, allow_http=bool(endpoint and endpoint.startswith("http://")),
        anonymous=bool(storage_options.get("anon")), s3_compatible=bool(endpoint), force_path_style=bool(endpoint))
    return icechunk.VirtualChunkContainer(prefix, store)


def credentials(found: icechunk.VirtualChunkContainer, store_options: dict[str, Any]):
    """What a reader authorises ``found`` with (see the module docstring)."""
    from .repo import _icechunk

    icechunk = _icechunk()
    options = getattr(found.store, "_0", None)
    if options is None or not hasattr(options, "anonymous"):
        return None  # a local folder: nothing to authorise with
    if options.anonymous:
        return icechunk.s3_anonymous_credentials()
    key = store_options.get("key") or store_options.get("access_key_id")
    secret = store_options.get("secret") or store_options.get("secret_access_key")
    if key and secret and _s3_endpoint(store_options) == options.endpoint_url:
        return icechunk.s3_static_credentials(access_key_id=key, secret_access_key=secret,
                                              session_token=store_options.get("token"))
    return icechunk.s3_from_env_credentials()


def authorization(config: icechunk.RepositoryConfig, store_options: dict[str, Any]) -> dict[str, Any]:
    """Credentials for every container ``config`` holds, keyed by prefix (empty: none)."""
    from .repo import _icechunk

    found = dict(config.virtual_chunk_containers or {})
    if not found:
        return {}
    return _icechunk().containers_credentials({p: credentials(c, store_options) for p, c in found.items()})


def _prefixes_for(urls: Iterable[str], have: set[str]) -> list[str]:
    """Container prefixes that cover ``urls``: each S3 bucket; for local files not under a container
    yet, their deepest common folder (one container for a deployment's folders, not one per day)."""
    buckets, folders = set(), []
    for url in urls:
        scheme = _scheme(url)
        if scheme in ("s3", "s3a"):
            buckets.add(container_prefix(url))
        elif scheme == "file" and not any(location(url).startswith(p) for p in have):
            folders.append(os.path.dirname(os.path.abspath(url.removeprefix("file://"))))
    wanted = set(buckets)
    if folders:
        wanted.add("file://" + _plain_folder(os.path.commonpath(folders)).rstrip("/") + "/")
    return sorted(wanted)


_PLAIN = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~/")


def _plain_folder(path: str) -> str:
    """``path`` or its nearest ancestor written in URL-plain characters: Icechunk matches a container
    prefix as a parsed URL, so a prefix with a space (``%20`` once parsed) matches no location, while a
    location may name any path under a plain prefix."""
    while path not in ("", "/") and not set(path) <= _PLAIN:
        path = os.path.dirname(path)
    return path or "/"


def ensure_containers(store: Store, urls: Iterable[str], storage_options: dict[str, Any]) -> list[str]:
    """Save a container for each of ``urls``' prefixes the repository lacks; returns those added.

    The configuration is one object beside the snapshots: two runs adding
    containers at once could each save its own, so the saved one is read
    back and the save repeated until it holds every prefix wanted.
    """
    from .repo import _icechunk

    icechunk = _icechunk()
    config = icechunk.Repository.fetch_config(store.repo.storage) or store.repo.config
    wanted = _prefixes_for(urls, set((config.virtual_chunk_containers or {}).keys()))
    added: list[str] = []
    for _ in range(5):
        config = icechunk.Repository.fetch_config(store.repo.storage) or store.repo.config
        have = set((config.virtual_chunk_containers or {}).keys())
        missing = [p for p in wanted if p not in have]
        if not missing:
            break
        for prefix in missing:
            config.set_virtual_chunk_container(container(prefix, storage_options))
        store.repo = store.repo.reopen(config=config)
        store.repo.save_config()
        added += [p for p in missing if p not in added]
    else:
        raise ConfigError(f"{store.url}: could not save virtual chunk containers {wanted} in the repository's "
                          "configuration (another writer kept replacing it)")
    config = icechunk.Repository.fetch_config(store.repo.storage) or store.repo.config
    store.repo = store.repo.reopen(config=config,
                                   authorize_virtual_chunk_access=authorization(config, store.location.options))
    return added


def _checksum(file: SourceFile) -> dict[str, Any]:
    """The reference's check against a later change: the ETag (S3) or modification time (local)."""
    etag = file.etag or ""
    if etag.startswith("mtime:"):
        # Icechunk compares whole seconds: rounded up, a change later in the same second passes as
        # unchanged, never an unchanged file as changed (ingest's own listing still sees it by mtime).
        seconds = math.ceil(float(etag.removeprefix("mtime:")))
        return {"last_updated_at_checksum": datetime.datetime.fromtimestamp(seconds, tz=datetime.timezone.utc)}
    if etag and _scheme(file.url) in ("s3", "s3a"):
        return {"etag_checksum": f'"{etag}"'}  # as S3 sends it: a quoted entity tag
    return {}


@dataclass(frozen=True)
class ObjectRef:
    """Where a file unit's samples are: frame ``n`` is at ``data_offset + n * frame_bytes``."""

    location: str
    data_offset: int
    frame_bytes: int
    checksum: tuple[tuple[str, Any], ...]

    def specs(self, rows: Iterable[int], first_sample: int, stop: int, row_samples: int) -> list:
        """One reference per row: row ``k`` holds unit samples ``first_sample + k * row_samples`` on."""
        from .repo import _icechunk

        icechunk = _icechunk()
        out = []
        for k, row in enumerate(rows):
            lo = first_sample + k * row_samples
            n = min(row_samples, stop - lo)
            if n <= 0:
                break
            out.append(icechunk.VirtualChunkSpec(index=[int(row), 0, 0], location=self.location,
                                                 offset=self.data_offset + lo * self.frame_bytes,
                                                 length=n * self.frame_bytes, **dict(self.checksum)))
        return out


def object_ref(unit: Unit) -> ObjectRef:
    """The reference source of a one-file unit of a virtual stream."""
    file = unit.files[0].file
    info = unit.info
    if len(unit.files) != 1 or referenceable(file, info) is not None:
        raise ConfigError(f"{file.url}: {referenceable(file, info) or 'a unit of several files'}; "
                          "cannot be a virtual stream's rows")
    width = VIRTUAL_SUBTYPES[info.subtype] // 8
    return ObjectRef(location(file.url), int(info.pcm_offset), width * info.channels,
                     tuple(sorted(_checksum(file).items())))


def set_refs(session, array_path: str, ref: ObjectRef, rows: Iterable[int], first_sample: int, stop: int,
             row_samples: int) -> None:
    """Point ``rows`` of ``array_path`` at their byte ranges, through ``session``."""
    specs = ref.specs(rows, first_sample, stop, row_samples)
    failed = session.store.set_virtual_refs(array_path, specs, validate_containers=True)
    if failed:
        raise ConfigError(f"{array_path}: references to {ref.location} name no container of the repository "
                          f"(chunks {failed[:3]}...); run the ingest again")


def changed_object(exc: BaseException) -> str | None:
    """The object URL when ``exc`` is Icechunk refusing a changed object's range; else None."""
    found = _CHANGED.search(str(exc))
    return found.group(1) if found else None


def explain_changed(exc: BaseException, what: str) -> SourceChangedError | None:
    """``SourceChangedError`` naming the object, for ``exc`` raised reading ``what``; None for others."""
    url = changed_object(exc)
    if url is None:
        return None
    return SourceChangedError(
        f"{what}: {url.removeprefix('file://') if url.startswith('file://') else url} "
        "changed after it was ingested by reference (--virtual): its ETag or modification time no longer "
        "match, so its rows are not read; `pamingest verify STORE` lists every changed object")


def stale_objects(root: zarr.Group, storage_options: dict[str, Any] | None = None,
                  prefixes: Iterable[str] | None = None) -> list[tuple[str, str, str]]:
    """``(stream, url, reason)`` for every object a virtual stream refers to that changed or went away.

    Compares each stored file's ETag (or modification time) and size with the
    object's now, one metadata request per file; reads no audio.
    """
    from ..fsutil import filesystem
    from ..sources.files import _etag
    from .layout import FILES, iter_streams

    out: list[tuple[str, str, str]] = []
    for path, group in iter_streams(root, list(prefixes or [])):
        if not is_virtual(group):
            continue
        table = FILES.read(group)
        for url, etag, size, status in zip(table["file_url"], table["file_etag"], table["file_size"],
                                           table["file_status"]):
            if status not in ("ok", "partial"):
                continue
            fs, key = filesystem(str(url), storage_options)
            try:
                info = fs.info(key)
            except FileNotFoundError:
                out.append((path, str(url), "object no longer exists"))
                continue
            now_etag, now_size = _etag(info), int(info.get("size") or 0)
            if now_etag != str(etag) or now_size != int(size):
                out.append((path, str(url), f"changed since ingested (ETag/mtime {etag} -> {now_etag}, "
                                             f"size {int(size)} -> {now_size})"))
    return out
