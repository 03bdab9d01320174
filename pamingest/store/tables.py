"""One table spec for every table a store keeps.

A table is a set of 1-d Zarr arrays sharing one dimension (``file``,
``event``, ``detection``, ...; or ``chunk`` for the per-row arrays, which
grow with the audio). Files and rows (ingest), events, effort and
annotation files (annotations), detections and labelling failures
(pseudo-labels), rejected objects and HLS runs are all declared as a
``Table`` and created, appended, read and scattered by the same code, so a
column's dtype, fill value and time encoding are written down once.

Time columns hold integer nanoseconds since the epoch, UTC, with CF
attributes so that xarray decodes them to ``datetime64[ns]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Mapping

import numpy as np

if TYPE_CHECKING:  # zarr is only in type hints here: `import pamingest` stays light (benchmarks/startup.py)
    import zarr

TABLE_CHUNK = 4096
ROW_CHUNK = 8192
TIME_ATTRS = {"units": "nanoseconds since 1970-01-01", "calendar": "proleptic_gregorian"}


@dataclass(frozen=True)
class Column:
    """One array of a table.

    Parameters
    ----------
    dtype : str or type
        A numpy dtype name, or ``str`` for variable-length text.
    fill : object
        Fill value: what a grown, unwritten element reads as.
    time : bool
        Integer nanoseconds UTC, decoded by xarray as datetimes.
    key : str, optional
        The name of the column in the records a module hands over (``start``
        for ``event_start``); default: the array name.
    """

    dtype: Any
    fill: Any
    time: bool = False
    key: str | None = None

    @property
    def is_text(self) -> bool:
        return self.dtype is str

    def empty(self) -> np.ndarray:
        return np.zeros(0, dtype=object if self.is_text else self.dtype)

    def coerce(self, values: Iterable) -> np.ndarray:
        if self.is_text:
            return np.array([str(v) for v in values], dtype=object)
        return np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=self.dtype)


@dataclass(frozen=True)
class Table:
    """Arrays sharing the dimension ``dim``; ``columns`` maps array names to ``Column``."""

    dim: str
    columns: Mapping[str, Column] = field(hash=False)
    chunk: int = TABLE_CHUNK

    def keys(self) -> dict[str, str]:
        """Array name -> record key."""
        return {name: col.key or name for name, col in self.columns.items()}

    # ------------------------------------------------------------ layout
    def exists(self, group: zarr.Group) -> bool:
        return all(name in group for name in self.columns)

    def create(self, group: zarr.Group) -> None:
        """Create the table's missing arrays, empty (``chunk`` tables: sized to the group's rows)."""
        n = group["audio"].shape[0] if self.dim == "chunk" and "audio" in group else 0
        for name, col in self.columns.items():
            if name not in group:
                group.create_array(name, shape=(n,), chunks=(self.chunk,), dtype=col.dtype, fill_value=col.fill,
                                   dimension_names=(self.dim,), attributes=dict(TIME_ATTRS) if col.time else {})

    def length(self, group: zarr.Group) -> int:
        first = next(iter(self.columns))
        return int(group[first].shape[0]) if first in group else 0

    # ------------------------------------------------------------ reading
    def read(self, group: zarr.Group, by_key: bool = False) -> dict[str, np.ndarray]:
        """Every column as a numpy array (empty arrays when the table does not exist)."""
        out = {}
        for name, col in self.columns.items():
            key = (col.key or name) if by_key else name
            if name not in group:
                out[key] = col.empty()
            else:
                values = group[name][:]
                out[key] = np.asarray(values, dtype=object) if col.is_text else np.asarray(values)
        return out

    # ------------------------------------------------------------ writing
    def append(self, group: zarr.Group, values: Mapping[str, Iterable], by_key: bool = False) -> int:
        """Append records (column -> values, all the same length); returns the first new index."""
        self.create(group)
        first = self.length(group)
        for name, col in self.columns.items():
            data = col.coerce(values[(col.key or name) if by_key else name])
            if len(data):
                arr = group[name]
                arr.resize((first + len(data),))
                arr[first:] = data
        return first

    def keep(self, group: zarr.Group, mask: np.ndarray) -> int:
        """Keep only the records where ``mask`` is true (in order); returns how many were dropped.

        Every column is read, filtered and written back at its new length:
        tables this is used on (events, effort, annotation files) are small
        next to the audio, and a removal is rare (a corrected file replaces
        its earlier version).
        """
        mask = np.asarray(mask, dtype=bool)
        if mask.all():
            return 0
        for name in self.columns:
            if name not in group:
                continue
            arr = group[name]
            kept = arr[:][mask]
            arr.resize((len(kept),))
            if len(kept):
                arr[:] = kept
        return int((~mask).sum())

    def write(self, group: zarr.Group, index: Iterable[int], values: Mapping[str, Iterable],
              length: int | None = None) -> None:
        """``column[index] = values`` for the columns given, growing the table to ``length`` (or past
        the largest index) first. Contiguous indices are written as one slice."""
        self.create(group)
        index = np.asarray(list(index) if not isinstance(index, np.ndarray) else index, dtype=np.int64)
        need = max(length or 0, int(index.max()) + 1 if len(index) else 0)
        for name, data in values.items():
            arr = group[name]
            if arr.shape[0] < need:
                arr.resize((need, *arr.shape[1:]))
            scatter(arr, index, self.columns[name].coerce(data))


def _contiguous(index: np.ndarray) -> bool:
    return bool(len(index)) and int(index[-1]) - int(index[0]) == len(index) - 1 and bool((np.diff(index) == 1).all())


def scatter(arr: zarr.Array, index: np.ndarray, values: np.ndarray) -> None:
    """``arr[index] = values`` along the first axis: one slice write when the indices are contiguous."""
    index = np.asarray(index, dtype=np.int64)
    if not len(index):
        return
    if _contiguous(index):
        arr[int(index[0]) : int(index[-1]) + 1] = values
    else:
        arr.set_orthogonal_selection((index,) + (slice(None),) * (arr.ndim - 1), values)


def gather(arr: zarr.Array, index: np.ndarray) -> np.ndarray:
    """``arr[index]`` along the first axis; one slice read when the indices are contiguous."""
    index = np.asarray(index, dtype=np.int64)
    if _contiguous(index):
        return arr[int(index[0]) : int(index[-1]) + 1]
    return arr.get_orthogonal_selection((index,) + (slice(None),) * (arr.ndim - 1))
