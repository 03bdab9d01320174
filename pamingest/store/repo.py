"""Open the Icechunk repository behind a store URL.

``/path`` or ``file:///path``: a local folder. ``s3://bucket/prefix``: S3 or
any S3-compatible server (``endpoint_url``), credentials from explicit
options or the standard AWS variables. ``gs://bucket/prefix``: Google Cloud
Storage. ``memory://``: an in-process store, for tests and trials.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import icechunk

from ..errors import StoreNotFoundError

_MEMORY: dict[str, icechunk.Storage] = {}

# Icechunk warns on every local-filesystem open that concurrent commits are
# unsafe there; pamingest serialises its commits (one coordinator per run), so
# the warning is noise. ICECHUNK_LOG set by the user still wins.
if "ICECHUNK_LOG" not in os.environ:
    icechunk.set_logs_filter("error")


@dataclass(frozen=True)
class StoreLocation:
    """A store URL plus the options needed to reach it; picklable, no live handles."""

    url: str
    options: dict[str, Any] = field(default_factory=dict, hash=False)

    @classmethod
    def from_url(cls, url: "str | StoreLocation", options: dict[str, Any] | None = None) -> "StoreLocation":
        if isinstance(url, StoreLocation):
            return url
        return cls(str(url), dict(options or {}))

    def storage(self) -> icechunk.Storage:
        url, opts = self.url, dict(self.options)
        if url.startswith("memory://"):
            return _MEMORY.setdefault(url, icechunk.in_memory_storage())
        if "://" not in url or url.startswith("file://"):
            path = os.path.abspath(url.removeprefix("file://"))
            return icechunk.local_filesystem_storage(path)
        scheme, rest = url.split("://", 1)
        bucket, _, prefix = rest.partition("/")
        prefix = prefix.strip("/") or None
        if scheme in ("s3", "s3a"):
            endpoint = opts.get("endpoint_url") or (opts.get("client_kwargs") or {}).get("endpoint_url")
            key = opts.get("key") or opts.get("access_key_id")
            secret = opts.get("secret") or opts.get("secret_access_key")
            kwargs: dict[str, Any] = dict(
                bucket=bucket,
                prefix=prefix,
                region=opts.get("region") or os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION"),
                endpoint_url=endpoint,
                allow_http=bool(endpoint and endpoint.startswith("http://")),
                force_path_style=bool(endpoint),
            )
            if opts.get("anon"):
                kwargs["anonymous"] = True
            elif key and secret:
                kwargs.update(access_key_id=key, secret_access_key=secret, session_token=opts.get("token"))
            else:
                kwargs["from_env"] = True
            return icechunk.s3_storage(**kwargs)
        if scheme in ("gs", "gcs"):
            if opts.get("anon") or opts.get("token") == "anon":
                return icechunk.gcs_storage(bucket=bucket, prefix=prefix, anonymous=True)
            return icechunk.gcs_storage(bucket=bucket, prefix=prefix, from_env=True)
        raise ValueError(f"unsupported store URL {url!r}: use a path, s3://, gs:// or memory://")


def open_repository(location: StoreLocation, create: bool = False) -> icechunk.Repository:
    url = location.url
    if not create and ("://" not in url or url.startswith("file://")):
        # Checked first: opening local storage would leave an empty folder behind.
        if not os.path.isdir(os.path.abspath(url.removeprefix("file://"))):
            raise StoreNotFoundError(f"no pamingest store at {url}")
    storage = location.storage()
    if icechunk.Repository.exists(storage):
        return icechunk.Repository.open(storage)
    if not create:
        raise StoreNotFoundError(f"no pamingest store at {location.url}")
    return icechunk.Repository.create(storage)
