"""The store's Zarr layout: one group per stream, a files table per stream.

::

    <source>/<site>/<stream>/          stream = "<rate>Hz_<channels>ch_<kind>"
        audio        (chunk, sample, channel)  int16 | int32 | float*, one row a chunk
        chunk_start  (chunk,)  int64 ns UTC (CF-encoded: xarray gives datetime64[ns])
        n_valid      (chunk,)  valid samples in the row; 0 marks a dead row
        file_index   (chunk,)  row -> file table index
        file_offset  (chunk,)  sample offset of the row's first sample in its file
        file_url, file_etag, file_size, file_start, file_frames,
        file_status, file_error        (file,)  the files table
    rejected/                          objects that never reached a stream
        url, etag, size, source, reason  (rejected,)

A dead row (``n_valid == 0``) belongs to a file whose decode failed after its
rows were allocated; it holds no audio and readers skip it.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass

import numpy as np
import zarr
from zarr.codecs.numcodecs import PCodec

from ..decode.sndfile import AudioInfo
from ..errors import ConfigError
from ..timing import NAT
from .codec import FLAC_MAX_CHANNELS, FlacCodec

LAYOUT_VERSION = 1
META_CHUNK = 8192
TABLE_CHUNK = 4096
TIME_ATTRS = {"units": "nanoseconds since 1970-01-01", "calendar": "proleptic_gregorian"}

ROW_ARRAYS = {
    "chunk_start": ("int64", NAT),
    "n_valid": ("int32", 0),
    "file_index": ("int32", -1),
    "file_offset": ("int64", 0),
}
FILE_ARRAYS = {
    "file_url": (str, ""),
    "file_etag": (str, ""),
    "file_size": ("int64", -1),
    "file_start": ("int64", NAT),
    "file_frames": ("int64", 0),
    "file_status": (str, ""),
    "file_error": (str, ""),
}
REJECTED_ARRAYS = {
    "url": (str, ""),
    "etag": (str, ""),
    "size": ("int64", -1),
    "source": (str, ""),
    "reason": (str, ""),
}
REJECTED_GROUP = "rejected"
# HLS streams: one entry per run of contiguous segments (see pamingest.sessions).
RUNS_GROUP = "runs"
RUN_ARRAYS = {
    "run_session": (str, ""),
    "run_t0": ("int64", NAT),
    "run_first_pts": ("float64", float("nan")),
    "run_samples": ("int64", 0),
    "run_first_segment": ("int64", -1),
    "run_last_segment": ("int64", -1),
    "run_first_row": ("int64", -1),
    "run_last_row": ("int64", -1),
}
# Stream attributes that sources may not override through stream_attributes().
RESERVED_ATTRS = frozenset({"pamingest_stream", "source", "site", "sample_rate", "channels", "dtype",
                            "bits_per_sample", "row_samples", "row_seconds", "time_reference"})


def stream_name(info: AudioInfo) -> str:
    kind = f"pcm{info.bits}" if info.store_dtype.startswith("int") else info.store_dtype
    return f"{info.sample_rate}Hz_{info.channels}ch_{kind}"


def safe_segment(text: str) -> str:
    """A group-name segment: no slashes, no leading dots or underscores."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip(".-_")
    return cleaned or "unknown"


def stream_path(source: str, site: str, info: AudioInfo) -> str:
    return f"{safe_segment(source)}/{safe_segment(site)}/{stream_name(info)}"


def _serializer(info: AudioInfo):
    """FLAC for integer PCM up to 24 bits and 8 channels; PCodec (lossless) otherwise."""
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

    @property
    def row_seconds(self) -> float:
        return self.row_samples / self.sample_rate


def _table(group: zarr.Group, arrays: dict, dim: str, chunk: int) -> None:
    for name, (dtype, fill) in arrays.items():
        attrs = TIME_ATTRS if name in ("chunk_start", "file_start", "run_t0") else {}
        group.create_array(
            name, shape=(0,), chunks=(chunk,), dtype=dtype, fill_value=fill,
            dimension_names=(dim,), attributes=dict(attrs),
        )


def create_stream(root: zarr.Group, spec: StreamSpec, info: AudioInfo) -> zarr.Group:
    group = root.require_group(spec.path)
    serializer = _serializer(info)
    group.create_array(
        "audio",
        shape=(0, spec.row_samples, spec.channels),
        chunks=(1, spec.row_samples, spec.channels),
        dtype=spec.dtype,
        fill_value=0,
        serializer=serializer,
        compressors=None,
        dimension_names=("chunk", "sample", "channel"),
        attributes={"sample_rate": spec.sample_rate, "bits_per_sample": spec.bits,
                    "long_name": "audio samples as recorded (not scaled)"},
    )
    _table(group, ROW_ARRAYS, "chunk", META_CHUNK)
    _table(group, FILE_ARRAYS, "file", TABLE_CHUNK)
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
            "time_reference": "UTC; row time = file start (from its name) + file_offset / sample_rate",
        }
    )
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
    _table(group, REJECTED_ARRAYS, "rejected", TABLE_CHUNK)
    return group


def grow_row_arrays(stream: zarr.Group, n_rows: int) -> None:
    """Grow every array of a stream whose first dimension is ``chunk`` to ``n_rows``.

    Per-row arrays added by later stages (scores, labels) grow with the rows,
    holding their fill value ("not computed yet"), so the group stays openable
    as one Dataset after every ingest.
    """
    for name, array in stream.arrays():
        dims = array.metadata.dimension_names or ()
        if dims and dims[0] == "chunk" and array.shape[0] < n_rows:
            array.resize((n_rows, *array.shape[1:]))


def ensure_runs(stream: zarr.Group) -> zarr.Group:
    if RUNS_GROUP in stream:
        return stream[RUNS_GROUP]
    group = stream.create_group(RUNS_GROUP)
    _table(group, RUN_ARRAYS, "run", TABLE_CHUNK)
    return group


def iter_streams(root: zarr.Group):
    """``(path, group)`` for every stream group in the store, sorted by path."""
    found = []
    for path, node in root.members(max_depth=None):
        if isinstance(node, zarr.Group) and "pamingest_stream" in node.attrs:
            found.append((path, node))
    return sorted(found, key=lambda item: item[0])


def append(array: zarr.Array, values) -> int:
    """Append along the first axis; returns the index of the first new element."""
    values = np.asarray(values)
    n0 = array.shape[0]
    if len(values):
        array.resize((n0 + len(values), *array.shape[1:]))
        array[n0:] = values
    return n0


def as_object(strings) -> np.ndarray:
    return np.array(list(strings), dtype=object)
