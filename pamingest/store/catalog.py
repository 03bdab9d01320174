"""What a store already holds: every object it has seen, by URL."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from . import layout

if TYPE_CHECKING:  # zarr is only in type hints here: `import pamingest` stays light (benchmarks/startup.py)
    import zarr


@dataclass(frozen=True)
class KnownFile:
    url: str
    etag: str
    size: int
    status: str  # "ok", "partial" (stored up to where it ends), "failed" (decode failed in a stream) or "rejected"
    stream: str  # stream path, or "rejected"
    file_index: int

    @property
    def stored(self) -> bool:
        """Its rows are in the store: ingest never takes it again (``retry_failed`` neither: a partial
        file's rows would be stored twice); a changed object is reported instead."""
        return self.status in ("ok", "partial")


def read_catalog(root: zarr.Group) -> dict[str, KnownFile]:
    """URL -> KnownFile for every object recorded in the store (a root group, read-only)."""
    known: dict[str, KnownFile] = {}
    if layout.REJECTED_GROUP in root:
        t = layout.REJECTED.read(root[layout.REJECTED_GROUP])
        for i, (url, etag, size) in enumerate(zip(t["url"], t["etag"], t["size"])):
            known[str(url)] = KnownFile(str(url), str(etag), int(size), "rejected", layout.REJECTED_GROUP, i)
    for path, g in layout.iter_streams(root):
        urls, etags, sizes, status = (np.asarray(g[n][:]) for n in ("file_url", "file_etag", "file_size", "file_status"))
        for i in range(len(urls)):
            known[str(urls[i])] = KnownFile(str(urls[i]), str(etags[i]), int(sizes[i]), str(status[i]), path, i)
    return known
