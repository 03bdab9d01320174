"""The Source protocol and the records sources produce."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Protocol, runtime_checkable

from ..timing import ns_to_iso


def url_file_name(url: str) -> str:
    """The file a URL names: its last path segment, or the ``filename`` query parameter of a
    download service's URL (ONC's ``.../archivefile/download?filename=a.wav`` names ``a.wav``); of a
    chained URL, its first part (``zip://folder/a.flac::https://...`` names the member ``a.flac``)."""
    path, _, query = url.split("::", 1)[0].partition("?")
    if query:
        from urllib.parse import parse_qs

        named = parse_qs(query).get("filename")
        if named and named[0]:
            return named[0]
    return path.rstrip("/").rsplit("/", 1)[-1]


@dataclass(frozen=True, order=True)
class SourceFile:
    """One object to ingest: where it is, what it is, when it starts.

    Sorting orders by (source, site, start, url): the same bucket listing always
    gives the same plan.
    """

    source: str
    site: str
    start_ns: int
    url: str
    size: int = field(compare=False)
    etag: str = field(default="", compare=False)
    fields: tuple[tuple[str, str], ...] = field(default=(), compare=False)

    @property
    def start_iso(self) -> str:
        return ns_to_iso(self.start_ns)

    @property
    def name(self) -> str:
        return url_file_name(self.url)


@dataclass(frozen=True, order=True)
class RejectedFile:
    """A listed object that cannot become a SourceFile (e.g. unparsable name)."""

    source: str
    url: str
    size: int = field(compare=False)
    etag: str = field(default="", compare=False)
    reason: str = field(default="", compare=False)


@runtime_checkable
class Source(Protocol):
    """Lists a collection of recordings as SourceFile records.

    ``partitions()`` names independent prefixes that can be listed in parallel;
    ``list_partition(p)`` returns that prefix's records in a deterministic order.
    A bucket is never listed in one call, so no single list holds all of it.
    """

    name: str
    storage_options: dict

    def partitions(self) -> list[str]: ...

    def list_partition(self, partition: str) -> list[SourceFile | RejectedFile]: ...

    # Optional:
    # - ``decoder``: the decoder of the source's files, a name registered under
    #   ``pamingest.decoders`` or ``(name, options)``; default ``"sndfile"``.
    # - ``stream_attributes(file: SourceFile) -> dict`` describes the stream a
    #   file lands in (deployment position, instrument, ...); ingest merges it
    #   into the stream group's attributes.
    # - ``refuse(file: SourceFile, info: AudioInfo) -> str | None``: after probing, why a file
    #   cannot be stored as this source places it (None: it can); it is then rejected with that
    #   reason (MarmAudio: a call longer than its slot in the relative time base).
    # - ``time_range() -> (start_ns | None, end_ns | None)``: for sources whose
    #   listing cannot know a file's span (no nominal length), the UTC range
    #   asked for; listing keeps every file that may reach into it, and after
    #   probing, ingest drops files whose exact span misses it.


def list_source(source: Source, max_parallel: int = 8) -> Iterator[SourceFile | RejectedFile]:
    """Every record of ``source``, partition by partition in order, listed in parallel."""
    from concurrent.futures import ThreadPoolExecutor

    partitions = sorted(source.partitions())
    if not partitions:
        return
    with ThreadPoolExecutor(max_workers=max(1, min(max_parallel, len(partitions)))) as pool:
        # map() keeps partition order while listing up to max_parallel prefixes at once.
        for records in pool.map(source.list_partition, partitions):
            yield from records
