"""fsspec filesystems from URLs, and cloud error translation in one table."""

from __future__ import annotations

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
    fs, path = fsspec.core.url_to_fs(url, **options)
    return fs, path


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
    """Open an object for streaming reads with bounded read-ahead."""
    try:
        if fs.protocol in ("file", ("file", "local")):
            return fs.open(path, "rb")
        return fs.open(path, "rb", block_size=block_size, cache_type="readahead")
    except Exception as exc:  # noqa: BLE001 - every read failure becomes a recorded reason
        raise DecodeError(describe_read_error(exc)) from exc
