"""fsspec filesystems from URLs, and cloud error translation in one table."""

from __future__ import annotations

import json
import threading
from collections import OrderedDict

from typing import Any

from .errors import DecodeError

# Storage options that mean the same thing for every S3-compatible server.
_S3_ALIASES = {"endpoint_url": ("client_kwargs", "endpoint_url")}


def filesystem(url: str, storage_options: dict[str, Any] | None = None):
    """``(fs, path)`` for ``url``; ``endpoint_url`` may be given flat for S3.

    Listing caches are disabled: a long-lived process (a Prefect worker, a
    notebook) must see objects added to a bucket since its last listing.
    """
    # imported lazily: `import pamingest` stays under 0.4 s (benchmarks/startup.py)
    import fsspec

    options = dict(storage_options or {})
    protocol = url.split("://", 1)[0] if "://" in url else "file"
    if protocol in ("s3", "s3a"):
        endpoint = options.pop("endpoint_url", None)
        if endpoint:
            options.setdefault("client_kwargs", {})
            options["client_kwargs"] = {**options["client_kwargs"], "endpoint_url": endpoint}
        options.setdefault("use_listings_cache", False)
    elif protocol in ("gs", "gcs"):
        # gcsfs spells anonymous access token="anon"; accept the s3fs spelling too, so that
        # one ``--anon`` works for every public bucket.
        if options.pop("anon", False):
            options.setdefault("token", "anon")
        options.setdefault("use_listings_cache", False)
        if options.get("endpoint_url"):  # the library reads no environment variables (architecture.md)
            return _gcs_http_only(url, options)
    elif protocol == "zip" and "::" in url:
        member, archive = url[len("zip://"):].split("::", 1)
        return _archive(archive, json.dumps(options, sort_keys=True, default=str)), member
    fs, path = fsspec.core.url_to_fs(url, **options)
    return fs, path


# Opened archives, by (URL, options): (zip filesystem, archive size, when the size was last checked).
_ARCHIVES: dict[tuple[str, str], tuple[Any, int, float]] = {}
_ARCHIVES_LOCK = threading.Lock()
ARCHIVE_CHECK_SECONDS = 5.0
MAX_OPEN_ARCHIVES = 8


def fresh_archive(archive: str, storage_options: dict[str, Any] | None = None):
    """The zip filesystem of ``archive`` opened now (its directory read again), and kept for this
    process's member reads: a listing must see the archive as it is."""
    import time

    options = json.dumps(dict(storage_options or {}), sort_keys=True, default=str)
    fs = _open_archive(archive, options)
    with _ARCHIVES_LOCK:
        _ARCHIVES.pop((archive, options), None)
        if len(_ARCHIVES) >= MAX_OPEN_ARCHIVES:
            _ARCHIVES.pop(next(iter(_ARCHIVES)))
        _ARCHIVES[(archive, options)] = (fs, fs.pamingest_archive[0].size(archive), time.monotonic())
    return fs


def _archive(archive: str, options: str):
    """The zip filesystem of ``archive`` (a member URL's ``zip://member::<archive>``), kept per process.

    fsspec does not cache archive filesystems: each one reads the archive's central
    directory again (range requests), and a collection of 800k one-call files has a
    central directory of ~60 MB, so opening it per member made a run quadratic. A kept
    archive is checked against the object's size every few seconds, so that a long-lived
    process (a Prefect worker, a notebook) sees an archive published again under its
    URL; a member read in between is checked against the CRC-32 of the directory it
    was found in (``member_bytes``).
    """
    import time

    key = (archive, options)
    with _ARCHIVES_LOCK:
        kept = _ARCHIVES.get(key)
    now = time.monotonic()
    if kept is not None and now - kept[2] < ARCHIVE_CHECK_SECONDS:
        return kept[0]
    fs = kept[0] if kept is not None else None
    size = fs.pamingest_archive[0].size(archive) if fs is not None else None
    if fs is None or size != kept[1]:
        fs = _open_archive(archive, options)
        size = fs.pamingest_archive[0].size(archive)
    with _ARCHIVES_LOCK:
        if len(_ARCHIVES) >= MAX_OPEN_ARCHIVES and key not in _ARCHIVES:
            _ARCHIVES.pop(next(iter(_ARCHIVES)))
        _ARCHIVES[key] = (fs, size, now)
    return fs


def _open_archive(archive: str, options: str):
    import fsspec

    target_protocol = archive.split("://", 1)[0] if "://" in archive else "file"
    fs = fsspec.filesystem("zip", fo=archive, target_protocol=target_protocol, target_options=json.loads(options))
    # Where the archive lies, for reading a small member's bytes in one range request (member_bytes).
    fs.pamingest_archive = (fsspec.filesystem(target_protocol, **json.loads(options)), archive)
    return fs


# Members up to this size (compressed) are read in one range request and inflated in memory: through
# the zip filesystem, each read of a member goes through the archive's shared file, whose read-ahead
# (5 MB for HTTP) fetched megabytes for each call of a few kB once members were read out of archive
# order (measured: 2000 one-call files at 55 objects/s, 115 with 20 x fewer jumps).
SMALL_MEMBER_BYTES = 16 * 2**20
_LOCAL_HEADER = 30  # bytes of a zip local file header before its name and extra field


# Small members read lately, kept for the next read of the same member in this process (a probe's
# read, then its write task's: ingest reads every file twice), up to this many bytes in all.
MEMBER_CACHE_BYTES = 128 * 2**20
_MEMBERS: "OrderedDict[tuple, bytes]" = OrderedDict()
_MEMBERS_HELD = [0]  # bytes in _MEMBERS, kept as entries come and go (not summed per insert)
_MEMBERS_LOCK = threading.Lock()


def member_bytes(fs, path: str) -> bytes | None:
    """A small zip member's bytes (one range request, CRC checked), or None to stream it instead."""
    import zipfile

    where = getattr(fs, "pamingest_archive", None)
    if where is None:
        return None
    info = fs.info(path)
    size, method = int(info.get("compress_size", -1)), info.get("compress_type")
    if size < 0 or size > SMALL_MEMBER_BYTES or method not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        return None
    key = (where[1], path, int(info["CRC"]), int(info["header_offset"]))
    with _MEMBERS_LOCK:
        data = _MEMBERS.get(key)
        if data is not None:
            _MEMBERS.move_to_end(key)
            return data
    data = _fetch_member(where, path, info, size, method)
    with _MEMBERS_LOCK:
        if key not in _MEMBERS:
            _MEMBERS[key] = data
            _MEMBERS_HELD[0] += len(data)
        while _MEMBERS_HELD[0] > MEMBER_CACHE_BYTES and len(_MEMBERS) > 1:
            _MEMBERS_HELD[0] -= len(_MEMBERS.popitem(last=False)[1])
    return data


def prefetch_members(urls, storage_options: dict[str, Any] | None = None) -> None:
    """Read the small zip members among ``urls`` concurrently into this process's member cache, so
    that a task reading them one after the other does not wait on each request in turn (a task of
    64 one-call files). Failures are left for the read that follows to report."""
    zipped = [u for u in urls if isinstance(u, str) and u.startswith("zip://") and "::" in u]
    if len(zipped) < 2:
        return

    def one(url: str) -> None:
        try:
            fs, path = filesystem(url, storage_options)
            member_bytes(fs, path)
        except Exception:  # noqa: BLE001 - the task's own read of it reports the failure
            pass

    list(fetch_pool().map(one, zipped))


def _fetch_member(where, path: str, info: dict, size: int, method) -> bytes:
    import zipfile
    import zlib

    target, archive = where
    start = int(info["header_offset"])
    margin = _LOCAL_HEADER + len(info["filename"].encode()) + 1024  # the local extra field is rarely longer
    raw = target.cat_file(archive, start=start, end=start + margin + size)
    if raw[:4] != b"PK\x03\x04":
        raise DecodeError(f"zip member {path}: no local header at offset {start} (archive changed?)")
    begin = _LOCAL_HEADER + int.from_bytes(raw[26:28], "little") + int.from_bytes(raw[28:30], "little")
    if begin + size > len(raw):
        raw += target.cat_file(archive, start=start + len(raw), end=start + begin + size)
    data = raw[begin:begin + size]
    if method == zipfile.ZIP_DEFLATED:
        data = zlib.decompress(data, -15)
    if zlib.crc32(data) != int(info["CRC"]) or len(data) != int(info["file_size"]):
        raise DecodeError(f"zip member {path}: its bytes do not match the archive's CRC-32 and size")
    return data


def _gcs_http_only(url: str, options: dict[str, Any]):
    """gcsfs's plain JSON-API filesystem, for a GCS endpoint other than Google's own.

    gcsfs (>= 2025.x) registers ``ExtendedGcsFileSystem`` for ``gs://``: before each
    operation it asks the bucket's layout over gRPC (Storage Control API) at the same
    host. An emulator or other GCS-compatible server has no gRPC service, the lookup
    retries for 60 s, and its failure is not cached: every listing and read of a run
    waited a minute (measured on gcp-storage-emulator). The layout matters only for
    zonal and hierarchical buckets, which such servers do not have.
    """
    from gcsfs.core import GCSFileSystem

    fs = GCSFileSystem(**options)
    return fs, fs._strip_protocol(url)


def whole_object_options(fs) -> dict[str, Any]:
    """Keyword arguments for ``fs.cat``/``cat_file`` reads of whole small objects.

    s3fs (>= 2025.x) reads a whole object by first asking its size (a HEAD
    request) to decide whether to split the GET into concurrent ranges: for
    an HLS segment of ~200 kB that doubles the requests and, on a local
    server, made the probe fetches 1.75x slower (0.74 s vs 0.42 s for 180
    segments). ``max_concurrency=1`` skips the size request.
    """
    return {"max_concurrency": 1} if "s3" in _protocols(fs) else {}


def _protocols(fs) -> tuple[str, ...]:
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


def join_url(fs, path: str) -> str:
    """The canonical URL of ``path`` on ``fs`` (``s3://bucket/key``, ``/abs/path``)."""
    return fs.unstrip_protocol(path) if fs.protocol not in ("file", ("file", "local")) else path


# Cloud error codes and OS errors -> the reason recorded in the files table.
_REASONS: dict[str, str] = {
    "NoSuchKey": "object disappeared from the bucket between listing and reading",
    "AccessDenied": "access denied (credentials or bucket policy)",
    "SlowDown": "throttled by the object store",
    "InvalidRange": "object is shorter than its listing says",
}


# Query parameters that carry credentials (ONC's token=, signed URLs' signatures): an HTTP client's
# error names the whole URL it asked, and the text becomes a failed file's reason in the store.
_SECRET_QUERY = __import__("re").compile(
    r"(?i)([?&](?:token|access_token|api_key|apikey|x-amz-signature|x-amz-credential|signature|sig)=)[^&\s'\"<>)]+")


def mask_secrets(text: str) -> str:
    """``text`` with the values of credential query parameters replaced by ``***``."""
    return _SECRET_QUERY.sub(r"\1***", text)


def describe_read_error(exc: BaseException) -> str:
    text = mask_secrets(f"{type(exc).__name__}: {exc}")
    for code, reason in _REASONS.items():
        if code in text:
            return f"{reason} ({text})"
    if isinstance(exc, FileNotFoundError):
        return f"object not found ({mask_secrets(str(exc))})"
    if isinstance(exc, PermissionError):
        return f"access denied ({mask_secrets(str(exc))})"
    return text


_FETCH_POOL = None
_FETCH_POOL_LOCK = __import__("threading").Lock()


def fetch_pool():
    """The process's threads for reading ahead (the next range of a file, the next segments).

    One pool for the life of the process, not one per read: every new thread gets
    its own glibc malloc arena, and a worker that started threads per task kept
    the freed read buffers of each (its peak grew ~40 MB from a 1 h to a 2 h file,
    benchmarks/worker_memory.py).
    """
    global _FETCH_POOL
    with _FETCH_POOL_LOCK:
        if _FETCH_POOL is None:
            from concurrent.futures import ThreadPoolExecutor

            _FETCH_POOL = ThreadPoolExecutor(max_workers=8, thread_name_prefix="pamingest-fetch")
        return _FETCH_POOL


def open_for_read(fs, path: str, block_size: int = 4 * 2**20):
    """Open an object for streaming reads with bounded read-ahead (a small zip member: its bytes)."""
    try:
        if fs.protocol in ("file", ("file", "local")):
            return fs.open(path, "rb")
        small = member_bytes(fs, path) if fs.protocol == "zip" else None
        if small is not None:
            import io

            return io.BytesIO(small)
        return fs.open(path, "rb", block_size=block_size, cache_type="readahead")
    except Exception as exc:  # noqa: BLE001 - every read failure becomes a recorded reason
        raise DecodeError(describe_read_error(exc)) from exc
