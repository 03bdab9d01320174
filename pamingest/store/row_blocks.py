"""The row-block summary: where in time each block of a stream's rows lies.

Rows are appended in the order ingest runs allocate them (a backfill appends
older audio after newer audio), so ``chunk_start`` is not sorted, and finding
the rows of a time window meant reading every row's start and sorting them:
0.3 s for a year of 10 s rows (3.2 million), paid by the first window of
every opened stream and growing with the stream. For each block of
``layout.ROW_BLOCK`` consecutive rows (the per-row arrays' chunks) the
stream keeps the earliest start and the latest end of the block's live rows
(NaT for a block without any) and the number of rows the block had when it
was summarised (``row_block_start``, ``row_block_end``, ``row_block_rows``,
dimension ``row_block``). A reader picks the blocks whose span meets its
window and reads only their rows (``query.PamAccessor.window``).

Kept with the rows: rows are only written by ``store.rows.write_tables``,
which calls :func:`update` in the same session (the same commit) for the
blocks it wrote; a landing rebuilt on another writer's tip writes its tables,
and so the summary, again there. Two commits that both write rows of one
stream always conflict (both grow its arrays, or both write one summary
chunk), so no rebase can combine two summaries. What a writer that does not
know the summary leaves (stores written before it; rows appended by an older
pamingest) is visible: a block whose row count is not its stored count, and
a block past the summary's end, are *unknown*, scanned by readers and
summarised again by the next :func:`update`. Readers also check every block
they read against its summary and fall back to reading all rows if one
disagrees.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import zarr

from ..timing import NAT, offset_ns
from . import layout

_NEVER = np.iinfo(np.int64).max


def block_rows(n_rows: int) -> np.ndarray:
    """Rows in each block of a stream of ``n_rows`` rows (the last block may be partial)."""
    size = layout.ROW_BLOCK
    n_blocks = -(-int(n_rows) // size)
    counts = np.full(n_blocks, size, dtype=np.int32)
    if n_blocks:
        counts[-1] = n_rows - (n_blocks - 1) * size
    return counts


def summarise(start_ns: np.ndarray, n_valid: np.ndarray, sample_rate: int) -> tuple[np.ndarray, ...]:
    """``(first start, last end, rows)`` of each block of rows given from a block boundary on.

    ``start_ns`` and ``n_valid`` are the rows of consecutive blocks (the last
    one may be partial); a block without live rows gets NaT for both times.
    """
    start = np.asarray(start_ns, dtype=np.int64)
    valid = np.asarray(n_valid, dtype=np.int64)
    if not len(start):
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int32)
    bounds = np.arange(0, len(start), layout.ROW_BLOCK)
    live = valid > 0
    # Dead rows (NaT start, 0 samples) count for neither end.
    first = np.minimum.reduceat(np.where(live, start, _NEVER), bounds)
    last = np.maximum.reduceat(np.where(live, start + offset_ns(np.where(live, valid, 0), sample_rate), NAT), bounds)
    first[first == _NEVER] = NAT
    rows = np.diff(np.append(bounds, len(start))).astype(np.int32)
    return first, last, rows


def _runs(blocks: np.ndarray) -> list[tuple[int, int]]:
    """Sorted block numbers as ``[first, stop)`` runs of consecutive blocks."""
    cuts = np.flatnonzero(np.diff(blocks) != 1) + 1
    return [(int(run[0]), int(run[-1]) + 1) for run in np.split(blocks, cuts) if len(run)]


def update(group: zarr.Group, rows: Iterable[int] = ()) -> np.ndarray:
    """Summarise again the blocks holding ``rows`` (rows just written in this session) and every
    unknown block (missing, or made for another row count); returns the blocks written.

    A stream made before the summary existed gets it whole at its first
    update (one read of its ``chunk_start`` and ``n_valid``).
    """
    layout.ROW_BLOCKS.create(group)
    n_rows = int(group["chunk_start"].shape[0])
    want = block_rows(n_rows)
    have = np.asarray(group["row_block_rows"][:])
    dirty = np.ones(len(want), dtype=bool)
    known = min(len(have), len(want))
    dirty[:known] = have[:known] != want[:known]
    rows = np.asarray(rows if isinstance(rows, np.ndarray) else list(rows), dtype=np.int64)
    if len(rows):
        dirty[np.unique(rows[(rows >= 0) & (rows < n_rows)] // layout.ROW_BLOCK)] = True
    blocks = np.flatnonzero(dirty)
    if not len(blocks):
        return blocks
    sample_rate = int(group.attrs["sample_rate"])
    parts = []
    for b0, b1 in _runs(blocks):
        a, z = b0 * layout.ROW_BLOCK, min(b1 * layout.ROW_BLOCK, n_rows)
        parts.append(summarise(group["chunk_start"][a:z], group["n_valid"][a:z], sample_rate))
    first, last, count = (np.concatenate(col) for col in zip(*parts))
    values = {"row_block_start": first, "row_block_end": last, "row_block_rows": count}
    layout.ROW_BLOCKS.write(group, blocks, values, length=len(want))
    return blocks


__all__ = ["block_rows", "summarise", "update"]
