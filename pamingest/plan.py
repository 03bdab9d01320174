"""Units: the continuous signals an ingest writes as rows.

A unit is one recording file, or a run of consecutive HLS segments that form
one signal. Rows are cut from a unit's sample axis (``row k`` = samples
``[k * row_samples, (k + 1) * row_samples)``) and timed from the unit's
first sample; a row never spans two units. A unit may continue one that an
earlier run wrote (a live HLS session that grew): then ``write_from`` is the
start of its last, partial row, which this run rewrites in full.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .decode.sndfile import AudioInfo
from .sources.base import SourceFile
from .timing import offset_ns, rows_for


@dataclass
class UnitFile:
    """A file's place in a unit: its samples are unit samples [start, start + samples)."""

    file: SourceFile
    start: int
    samples: int
    new: bool = True
    file_index: int = -1


@dataclass
class Unit:
    stream: str
    info: AudioInfo
    t0_ns: int
    n_samples: int
    files: list[UnitFile]
    decode: tuple
    write_from: int = 0
    rewrite_row: int | None = None
    run: dict | None = None  # HLS runs-table entry (session, pts, segments), see sessions.py
    # Filled by allocation and the write phase.
    rows: list[int] = field(default_factory=list)
    status: str = "pending"
    error: str = ""
    tasks_left: int = 0
    forks: list = field(default_factory=list)

    @property
    def new_files(self) -> list[UnitFile]:
        return [f for f in self.files if f.new]

    def n_rows(self, row_samples: int) -> int:
        """Rows this run writes: from the row at ``write_from`` to the unit's end."""
        return rows_for(self.n_samples, row_samples) - self.write_from // row_samples

    def row_table(self, row_samples: int) -> dict[str, np.ndarray]:
        """chunk_start, n_valid, file_index, file_offset of the rows this run writes."""
        first = self.write_from // row_samples
        k = np.arange(first, first + self.n_rows(row_samples), dtype=np.int64)
        offsets = k * row_samples
        starts = np.array([f.start for f in self.files], dtype=np.int64)
        which = np.searchsorted(starts, offsets, side="right") - 1
        which = np.clip(which, 0, len(self.files) - 1)
        return {
            "chunk_start": self.t0_ns + offset_ns(offsets, self.info.sample_rate),
            "n_valid": np.minimum(row_samples, self.n_samples - offsets).astype(np.int32),
            "file_index": np.array([self.files[w].file_index for w in which], dtype=np.int32),
            "file_offset": offsets - starts[which],
        }


def file_unit(stream: str, file: SourceFile, info: AudioInfo) -> Unit:
    """A recording file as its own unit, decoded by libsndfile."""
    return Unit(stream, info, file.start_ns, info.frames, [UnitFile(file, 0, info.frames)],
                ("sndfile", file.url, info))
