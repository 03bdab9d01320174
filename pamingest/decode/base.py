"""The decoder protocol: what ingest asks of every container/codec module.

A decoder is a small picklable object (settings in ``__init__``) that travels
to Dask workers inside the units it planned. It answers three questions:

``probe(file, storage_options) -> AudioInfo``
    On a worker: the recording's sample rate, channels, frames and sample
    format, and its true start when the file itself says when it starts
    (an XWAV directory, MPEG-TS timestamps); raises ``DecodeError`` with the
    reason for a file that cannot be ingested.
``plan(probed, context) -> list[Unit]``
    On the client: turn probed files into *units*, the continuous signals
    whose samples are cut into rows. File decoders make one unit per file
    (:class:`FileDecoder`); a decoder whose signal spans objects (HLS
    segments) joins them, and may continue a unit an earlier run stored.
``read(source, start, stop, storage_options) -> Iterator[ndarray]``
    On a worker: the unit's samples ``[start, stop)`` as ``(n, channels)``
    blocks of the stored dtype, streamed (memory does not grow with the
    unit's length). ``source`` is what ``plan`` put in ``Unit.source``.

Optionally ``records(unit) -> list[TableRecord]``: bookkeeping rows the
decoder keeps in a stream-level table (HLS runs), written by the store with
the unit's rows; and ``restarts(unit) -> list[int]``: the unit samples where
a decode can start without decoding anything before them (HLS decode
blocks). Ingest cuts a unit's tasks there, so that no task decodes what
another one writes.

Decoders are registered under the ``pamingest.decoders`` entry point group
(``pamingest.registry``); a source names its decoder (and settings) by
``Source.decoder``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Callable, Iterator, Protocol, Sequence, runtime_checkable

import numpy as np

from ..timing import offset_ns, rows_for

if TYPE_CHECKING:  # sources import decoders' constants; records only flow the other way at run time
    from ..sources.base import SourceFile


@dataclass(frozen=True)
class Piece:
    """A separately timed part of a file: its frames ``[offset, offset + frames)`` start at ``start_ns``."""

    start_ns: int
    offset: int
    frames: int


@dataclass(frozen=True)
class AudioInfo:
    """What a stream needs to know about a recording before decoding it.

    ``start_ns`` is the recording's start as the file itself tells it (None:
    the file does not say, and the source's start, from its name or the
    archive's metadata, stands); ``time_source`` names where it came from.
    ``incomplete`` says why the recording ends before its header says, and
    where (a file cut short): ``frames`` are those before that point, and
    the file is stored as ``partial``.
    ``pieces``, when the file is not one continuous signal (a duty-cycled
    XWAV), are its separately timed parts, in file order: each becomes a
    unit of its own (``FileDecoder.plan``); empty for a continuous file.
    """

    sample_rate: int
    channels: int
    frames: int
    format: str
    subtype: str
    store_dtype: str
    bits: int
    start_ns: int | None = None
    time_source: str = ""
    incomplete: str = ""
    pieces: tuple[Piece, ...] = ()

    @property
    def stream_key(self) -> tuple[int, int, str, int]:
        return (self.sample_rate, self.channels, self.store_dtype, self.bits)

    def start_of(self, file: SourceFile) -> tuple[int, str]:
        """The start a file is ingested at, and where that time comes from."""
        if self.start_ns is not None:
            return int(self.start_ns), self.time_source or "file"
        return file.start_ns, dict(file.fields).get("time_source", "name")

    def end_of(self, file: SourceFile) -> int:
        """When the recording ends: its last piece's end, or its start + its frames."""
        if self.pieces:
            last = self.pieces[-1]
            return last.start_ns + offset_ns(last.frames, self.sample_rate)
        return self.start_of(file)[0] + offset_ns(self.frames, self.sample_rate)


@dataclass
class UnitFile:
    """A file's place in a unit: its samples ``[offset, offset + samples)`` are unit samples
    ``[start, start + samples)``. ``offset`` is 0 but for a piece of a file (``AudioInfo.pieces``):
    the file then has a unit per piece, and one entry in the files table."""

    file: SourceFile
    start: int
    samples: int
    new: bool = True
    file_index: int = -1
    time_source: str = "name"
    incomplete: str = ""  # AudioInfo.incomplete: the file is stored up to where it ends
    offset: int = 0


@dataclass(frozen=True)
class Continuation:
    """A unit that extends rows an earlier run stored (a live HLS session that grew).

    ``stored_samples`` of the unit are in the store already; ``last_row`` is
    the store row holding its tail, rewritten in full when it was partial.
    """

    stored_samples: int
    last_row: int


@dataclass(frozen=True)
class TableRecord:
    """A row a decoder keeps in a stream-level table: appended (``index`` None) or updated."""

    table: Any  # store.tables.Table
    group: str  # group under the stream, e.g. "runs"
    index: int | None
    values: dict[str, Any]


@dataclass
class Unit:
    """A continuous signal ingest writes as rows; ``source`` is the decoder's own description of it."""

    stream: str
    info: AudioInfo
    t0_ns: int
    n_samples: int
    files: list[UnitFile]
    decoder: "Decoder"
    source: Any
    continues: Continuation | None = None
    # The decoder's own bookkeeping for ``records()``; stays on the client.
    state: Any = None
    # Filled by allocation and the write phase.
    rows: list[int] = field(default_factory=list)
    status: str = "pending"
    error: str = ""
    tasks_left: int = 0
    forks: list = field(default_factory=list)
    # Quality statistics of the rows written, in the order of ``rows`` (pamingest.quality), or None.
    quality: dict | None = None

    @property
    def new_files(self) -> list[UnitFile]:
        return [f for f in self.files if f.new]

    def write_from(self, row_samples: int) -> int:
        """First unit sample this run writes: the start of the row holding the stored tail."""
        stored = self.continues.stored_samples if self.continues else 0
        return (stored // row_samples) * row_samples

    def rewrite_row(self, row_samples: int) -> int | None:
        """The stored row this run rewrites (a partial tail), or None."""
        c = self.continues
        return c.last_row if c is not None and c.stored_samples % row_samples else None

    def n_rows(self, row_samples: int) -> int:
        """Rows this run writes: from the row at ``write_from`` to the unit's end."""
        return rows_for(self.n_samples, row_samples) - self.write_from(row_samples) // row_samples

    def new_rows(self, row_samples: int) -> int:
        """Rows this run adds to the stream (a rewritten row is not new)."""
        return self.n_rows(row_samples) - (1 if self.rewrite_row(row_samples) is not None else 0)

    def row_table(self, row_samples: int) -> dict[str, np.ndarray]:
        """chunk_start, n_valid, file_index, file_offset of the rows this run writes."""
        first = self.write_from(row_samples) // row_samples
        k = np.arange(first, first + self.n_rows(row_samples), dtype=np.int64)
        offsets = k * row_samples
        starts = np.array([f.start for f in self.files], dtype=np.int64)
        into = np.array([f.offset for f in self.files], dtype=np.int64)
        which = np.clip(np.searchsorted(starts, offsets, side="right") - 1, 0, len(self.files) - 1)
        return {
            "chunk_start": self.t0_ns + offset_ns(offsets, self.info.sample_rate),
            "n_valid": np.minimum(row_samples, self.n_samples - offsets).astype(np.int32),
            "file_index": np.array([self.files[w].file_index for w in which], dtype=np.int32),
            "file_offset": offsets - starts[which] + into[which],
        }


@dataclass
class PlanContext:
    """What planning may read of the store: its root group at the run's base snapshot, the
    objects it knows, and each stream's row length (``row_samples(stream, sample_rate)``)."""

    root: Any  # zarr.Group, read-only
    known: dict  # url -> store.catalog.KnownFile
    row_samples: Callable[[str, int], int]
    stream_path: Callable[[SourceFile, AudioInfo], str]


@runtime_checkable
class Decoder(Protocol):
    """See the module docstring."""

    name: str

    def probe(self, file: SourceFile, storage_options: dict) -> AudioInfo: ...

    def plan(self, probed: Sequence[tuple[SourceFile, AudioInfo]], context: PlanContext) -> list[Unit]: ...

    def read(self, source: Any, start: int, stop: int, storage_options: dict) -> Iterator[np.ndarray]: ...


class FileDecoder:
    """Base of decoders whose unit is one file: ``plan`` makes a unit per probed file, timed
    by the file's own start when it has one (``AudioInfo.start_ns``), else the source's."""

    name = "file"

    def plan(self, probed: Sequence[tuple[SourceFile, AudioInfo]], context: PlanContext) -> list[Unit]:
        units = []
        for file, info in probed:
            start, time_source = info.start_of(file)
            if start != file.start_ns:
                file = replace(file, start_ns=start)
            units.append(Unit(context.stream_path(file, info), info, start, info.frames,
                              [UnitFile(file, 0, info.frames, time_source=time_source, incomplete=info.incomplete)],
                              self,
                              self.unit_source(file, info)))
        return units

    def unit_source(self, file: SourceFile, info: AudioInfo) -> Any:
        return (file.url, info)

    def records(self, unit: Unit) -> list[TableRecord]:
        return []

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and vars(self) == vars(other)

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(sorted(vars(self).items()))))

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v!r}" for k, v in sorted(vars(self).items()))
        return f"{type(self).__name__}({settings})"
