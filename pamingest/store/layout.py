"""The store's Zarr layout: one group per stream, a files table per stream.

::

    <source>/<site>/<stream>/          stream = "<rate>Hz_<channels>ch_<kind>"; source and site
                                       percent-encoded where not plain (safe_segment)
        audio        (chunk, sample, channel)  int16 | int32 | float*, one row a chunk
        chunk_start  (chunk,)  int64 ns UTC (CF-encoded: xarray gives datetime64[ns])
        n_valid      (chunk,)  valid samples in the row; 0 marks a dead row
        file_index   (chunk,)  row -> file table index
        file_offset  (chunk,)  sample offset of the row's first sample in its file
        quality_clipped, quality_longest_run, quality_zeros, quality_dc_offset,
        quality_rms_dbfs  (chunk,)  each row's quality statistics, computed at ingest
                     (pamingest/quality.py; -1 / NaN: not computed)
        file_url, file_etag, file_size, file_start, file_frames,
        file_status, file_error, file_time_source   (file,)  the files table
        row_block_start, row_block_end, row_block_rows  (row_block,)  what each block of
                     ROW_BLOCK rows holds: earliest start and latest end of its live rows
                     (NaT: none), and its row count when summarised (store/row_blocks.py)
    rejected/                          objects that never reached a stream
        url, etag, size, source, reason  (rejected,)

A dead row (``n_valid == 0``) belongs to a file whose decode failed after its
rows were allocated; it holds no audio and readers skip it.

Rows are appended in the order runs allocate them, so ``chunk_start`` is not
sorted; the row-block summary lets a reader find the few blocks of rows a
time window can touch without reading every row's start.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..decode.base import AudioInfo
from ..errors import ConfigError
from ..quality import QUALITY  # noqa: F401 - a per-row table of the layout, declared with its statistics
from ..timing import NAT
from .tables import ROW_CHUNK, Column, Table
from .virtual import STORAGE_ATTR, VIRTUAL, VIRTUAL_SUFFIX

if TYPE_CHECKING:
    import zarr

# zarr (and the FLAC codec, a zarr codec) are imported lazily, where streams are created or
# listed: `import pamingest` stays under 0.4 s (benchmarks/startup.py).

LAYOUT_VERSION = 1
META_CHUNK = ROW_CHUNK

ROWS = Table("chunk", {
    "chunk_start": Column("int64", NAT, time=True),
    "n_valid": Column("int32", 0),
    "file_index": Column("int32", -1),
    "file_offset": Column("int64", 0),
}, chunk=ROW_CHUNK)
FILES = Table("file", {
    "file_url": Column(str, ""),
    "file_etag": Column(str, ""),
    "file_size": Column("int64", -1),
    "file_start": Column("int64", NAT, time=True),
    "file_frames": Column("int64", 0),
    "file_status": Column(str, ""),
    "file_error": Column(str, ""),
    # Where file_start comes from: "name", "metadata" (the archive's index), "xwav", "pts"; "" before it was kept.
    "file_time_source": Column(str, ""),
})
# Blocks of ROW_BLOCK consecutive rows (the per-row arrays' chunks): block b holds rows
# [b * ROW_BLOCK, (b + 1) * ROW_BLOCK). Kept by every write of rows (store/row_blocks.py).
ROW_BLOCK = ROW_CHUNK
ROW_BLOCKS = Table("row_block", {
    "row_block_start": Column("int64", NAT, time=True),
    "row_block_end": Column("int64", NAT, time=True),
    "row_block_rows": Column("int32", 0),
})
REJECTED_GROUP = "rejected"
REJECTED = Table("rejected", {
    "url": Column(str, ""),
    "etag": Column(str, ""),
    "size": Column("int64", -1),
    "source": Column(str, ""),
    "reason": Column(str, ""),
})
# Stream attributes that sources may not override through stream_attributes().
RESERVED_ATTRS = frozenset({"pamingest_stream", "source", "site", "sample_rate", "channels", "dtype",
                            "bits_per_sample", "row_samples", "row_seconds", "time_reference",
                            "storage", "storage_note"})


def stream_name(info: AudioInfo, virtual: bool = False) -> str:
    kind = f"pcm{info.bits}" if info.store_dtype.startswith("int") else info.store_dtype
    # A virtual stream's rows are references into the recordings (store/virtual.py), a copied one's are
    # FLAC: one array has one codec, so the two are streams apart.
    return f"{info.sample_rate}Hz_{info.channels}ch_{kind}" + (VIRTUAL_SUFFIX if virtual else "")


# Characters a site or source name keeps in its path segment: those zarr recommends for node names.
_SEGMENT_KEPT = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")


def is_virtual_path(path: str) -> bool:
    """Whether the stream at ``path`` is a virtual one, by its name (``stream_name``)."""
    return path.rsplit("/", 1)[-1].endswith(VIRTUAL_SUFFIX)


def safe_segment(text: str) -> str:
    """The group-name segment of a site or source name: distinct names, distinct segments.

    Letters, digits, ``-``, ``_`` and ``.`` are kept, so a plain name is its own
    segment (``rpi_orcasound_lab``, ``S4A03895``); every other character, and a
    leading ``.`` or ``_`` (zarr reserves names starting with ``__``; ``.`` and
    ``..`` are not names), is percent-encoded as its UTF-8 bytes (``%`` itself
    included): ``k25a b`` -> ``k25a%20b``, ``Møller`` -> ``M%C3%B8ller``.
    Percent-decoding gives the name back, so no two names share a segment.
    """
    if not text:
        # Listing rejects files without a site (ingest.unstorable): reaching here is a bug.
        raise ValueError("a site or source name is needed for a stream path; got an empty one")
    return "".join(
        ch if ch in _SEGMENT_KEPT and not (i == 0 and ch in "._")
        else "".join(f"%{b:02X}" for b in ch.encode("utf-8"))
        for i, ch in enumerate(text)
    )


def stream_path(source: str, site: str, info: AudioInfo, virtual: bool = False) -> str:
    """``<source>/<site>/<stream>``: the source and site names as ``safe_segment`` writes them
    (the stream group keeps both names as given in its ``source`` and ``site`` attributes)."""
    return f"{safe_segment(source)}/{safe_segment(site)}/{stream_name(info, virtual)}"


def under(path: str, prefix: str | None) -> bool:
    """Whether stream ``path`` is ``prefix`` or lies under it (an empty prefix matches every path)."""
    prefix = (prefix or "").strip("/")
    return not prefix or path == prefix or path.startswith(prefix + "/")


def _serializer(info: AudioInfo, virtual: bool = False):
    """FLAC for integer PCM up to 24 bits and 8 channels; PCodec (lossless) otherwise; the recording's
    own PCM for a virtual stream (its chunks are byte ranges of the recordings)."""
    from zarr.codecs.numcodecs import PCodec

    from .codec import FLAC_MAX_CHANNELS, FlacCodec, PcmCodec

    if virtual:
        return PcmCodec(bits=info.bits)

    if info.store_dtype in ("int16", "int32") and info.bits <= 24 and info.channels <= FLAC_MAX_CHANNELS:
        return FlacCodec(bits=16 if info.store_dtype == "int16" else 24, sample_rate=info.sample_rate)
    with warnings.catch_warnings():
        # zarr warns that numcodecs codecs are outside the v3 spec; PCodec ships with numcodecs.
        warnings.simplefilter("ignore")
        return PCodec(level=8)


@dataclass(frozen=True)
class StreamSpec:
    """What a stream group is: written as its attributes."""

    path: str
    source: str
    site: str
    sample_rate: int
    channels: int
    dtype: str
    bits: int
    row_samples: int
    virtual: bool = False  # rows are references into the recordings (store/virtual.py)

    @property
    def row_seconds(self) -> float:
        return self.row_samples / self.sample_rate


def create_stream(root: zarr.Group, spec: StreamSpec, info: AudioInfo) -> zarr.Group:
    group = root.require_group(spec.path)
    group.create_array(
        "audio",
        shape=(0, spec.row_samples, spec.channels),
        chunks=(1, spec.row_samples, spec.channels),
        dtype=spec.dtype,
        fill_value=0,
        serializer=_serializer(info, spec.virtual),
        compressors=None,
        dimension_names=("chunk", "sample", "channel"),
        attributes={"sample_rate": spec.sample_rate, "bits_per_sample": spec.bits,
                    "long_name": "audio samples as recorded (not scaled)",
                    # CF: plain xarray opens each row's UTC start as a coordinate of the audio
                    "coordinates": "chunk_start"},
    )
    ROWS.create(group)
    QUALITY.create(group)
    FILES.create(group)
    ROW_BLOCKS.create(group)
    group.attrs.update(
        {
            "pamingest_stream": LAYOUT_VERSION,
            "source": spec.source,
            "site": spec.site,
            "sample_rate": spec.sample_rate,
            "channels": spec.channels,
            "dtype": spec.dtype,
            "bits_per_sample": spec.bits,
            "row_samples": spec.row_samples,
            "row_seconds": spec.row_seconds,
            "time_reference": "UTC; row time = file start + file_offset / sample_rate",
        }
    )
    if spec.virtual:
        group.attrs.update({STORAGE_ATTR: VIRTUAL, "storage_note": (
            "rows are Icechunk virtual references to byte ranges of the original PCM WAV objects "
            "(file_url), checked against their ETag or modification time; not copies")})
    return group


def check_stream(group: zarr.Group, spec: StreamSpec) -> None:
    have = int(group.attrs["row_samples"])
    if have != spec.row_samples:
        raise ConfigError(
            f"stream {spec.path} has rows of {have} samples ({have / spec.sample_rate:g} s); "
            f"this run asks for {spec.row_samples}: use --row-seconds {have / spec.sample_rate:g}"
        )


def ensure_rejected(root: zarr.Group) -> zarr.Group:
    if REJECTED_GROUP in root:
        return root[REJECTED_GROUP]
    group = root.create_group(REJECTED_GROUP, attributes={"pamingest_rejected": LAYOUT_VERSION})
    REJECTED.create(group)
    return group


def grow_row_arrays(stream: zarr.Group, n_rows: int | None = None) -> list[str]:
    """Grow every array of a stream whose first dimension is ``chunk`` to ``n_rows`` (default: the
    audio's rows); returns the names of the arrays grown.

    Per-row arrays added by later stages (scores, labels) grow with the rows,
    holding their fill value ("not computed yet"), so the group stays openable
    as one Dataset after every ingest.
    """
    n_rows = stream["audio"].shape[0] if n_rows is None else n_rows
    grown = []
    for name, array in stream.arrays():
        dims = array.metadata.dimension_names or ()
        if dims and dims[0] == "chunk" and array.shape[0] < n_rows:
            array.resize((n_rows, *array.shape[1:]))
            grown.append(name)
    return grown


def iter_streams(root: zarr.Group, prefixes=None):
    """``(path, group)`` for every stream group in the store (under one of ``prefixes``), by path."""
    import zarr

    prefixes = [p for p in (prefixes or [])]
    found = []
    for path, node in root.members(max_depth=None):
        if isinstance(node, zarr.Group) and "pamingest_stream" in node.attrs:
            if not prefixes or any(under(path, p) for p in prefixes):
                found.append((path, node))
    return sorted(found, key=lambda item: item[0])
