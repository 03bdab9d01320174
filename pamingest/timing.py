"""Row, offset and time arithmetic, in integers.

Every timestamp is an integer number of nanoseconds since the Unix epoch,
UTC. A sample's time is computed from its row's file start and its offset in
the file (never accumulated row by row), so that a 4 h file at 256 kHz has no
drift from rounding: ``t = file_start + round(offset * 1e9 / sample_rate)``.
"""

from __future__ import annotations

import datetime as _dt
import math
from typing import Any

import numpy as np

from .errors import ConfigError

# pandas is imported lazily, in the functions that parse and format times: `import pamingest`
# stays under 0.4 s (benchmarks/startup.py).

NS_PER_S = 1_000_000_000
NAT = np.iinfo(np.int64).min
# The times a store can hold: int64 nanoseconds since 1970 reach 1677-09-21 to 2262-04-11
# (NaT, the int64 minimum, marks a missing time). Starts are kept to whole years inside that,
# so that a file's span, added to its start, stays inside too (100 days of margin at the end).
SUPPORTED_YEARS = (1678, 2261)
SUPPORTED_START_NS, SUPPORTED_END_NS = (  # 1678-01-01T00:00:00Z and 2262-01-01T00:00:00Z (excluded)
    (_dt.datetime(year, 1, 1) - _dt.datetime(1970, 1, 1)) // _dt.timedelta(seconds=1) * NS_PER_S
    for year in (SUPPORTED_YEARS[0], SUPPORTED_YEARS[1] + 1))
SUPPORTED_RANGE = "1678-01-01 to 2262-01-01 UTC (what the store's int64 nanosecond times hold)"


def samples_per_row(sample_rate: int, row_seconds: float) -> int:
    """Samples in one store row: ``row_seconds`` at ``sample_rate``, rounded."""
    if sample_rate <= 0:
        raise ConfigError(f"sample rate must be positive, got {sample_rate}")
    if row_seconds <= 0:
        raise ConfigError(f"row length must be positive, got {row_seconds} s")
    # Half up, not Python's half-to-even: 0.5 s at 1 Hz is one sample, not none.
    n = int(math.floor(row_seconds * sample_rate + 0.5))
    if n < 1:
        raise ConfigError(f"a {row_seconds} s row at {sample_rate} Hz holds no sample")
    return n


def rows_for(n_frames: int, row_samples: int) -> int:
    """Rows needed for ``n_frames`` samples: a file's last row may be partial."""
    if n_frames < 0:
        raise ConfigError(f"negative frame count {n_frames}")
    return -(-n_frames // row_samples)


def row_valid(n_frames: int, row_samples: int, row: int) -> int:
    """Valid samples in row ``row`` (0-based, within one file) of a file."""
    return max(0, min(row_samples, n_frames - row * row_samples))


def offset_ns(offset: int | np.ndarray, sample_rate: int) -> int | np.ndarray:
    """Nanoseconds from a file's first sample to sample ``offset``, rounded half up."""
    if isinstance(offset, np.ndarray):
        o = offset.astype(np.int64)
        # Split to stay inside int64: offsets up to ~9e9 samples (a year at 256 kHz).
        whole, rem = np.divmod(o, sample_rate)
        return whole * NS_PER_S + (2 * rem * NS_PER_S + sample_rate) // (2 * sample_rate)
    return (2 * int(offset) * NS_PER_S + sample_rate) // (2 * sample_rate)


_SECOND_OFFSETS: dict[int, np.ndarray] = {}


def offset_range_ns(start: int, stop: int, sample_rate: int) -> np.ndarray:
    """``offset_ns(np.arange(start, stop), sample_rate)``, the same integers, without a division
    per sample: whole seconds plus the offsets within a second (kept per sample rate)."""
    start, stop = int(start), int(stop)
    if stop - start < sample_rate:
        return offset_ns(np.arange(start, max(start, stop), dtype=np.int64), sample_rate)
    within = _SECOND_OFFSETS.get(sample_rate)
    if within is None:
        within = _SECOND_OFFSETS.setdefault(sample_rate, offset_ns(np.arange(sample_rate, dtype=np.int64), sample_rate))
    q0, q1 = start // sample_rate, (stop - 1) // sample_rate
    seconds = np.arange(q0, q1 + 1, dtype=np.int64) * NS_PER_S
    out = (seconds[:, None] + within[None, :]).ravel()
    return out[start - q0 * sample_rate : stop - q0 * sample_rate]


def sample_time_ns(start_ns: int, offset: int, sample_rate: int) -> int:
    """UTC nanoseconds of sample ``offset`` of a file starting at ``start_ns``."""
    return int(start_ns) + offset_ns(int(offset), sample_rate)


def to_ns(value: Any) -> int:
    """Any time-like (str, datetime, numpy, pandas) -> int ns UTC.

    Naive values are taken as UTC; aware values are converted to UTC.
    """
    import pandas as pd

    ts = pd.Timestamp(value)
    if ts is pd.NaT:
        raise ConfigError(f"not a time: {value!r}")
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return int(ts.value)


def ns_to_datetime64(ns: int | np.ndarray) -> np.datetime64 | np.ndarray:
    return np.asarray(ns, dtype=np.int64).astype("datetime64[ns]")


def ns_to_iso(ns: int) -> str:
    if ns == NAT:
        return "NaT"
    import pandas as pd

    return pd.Timestamp(ns, unit="ns").isoformat() + "Z"


def unsupported_time(ns: int) -> str | None:
    """Why a start time cannot be stored (outside ``SUPPORTED_RANGE``), or None when it can."""
    if SUPPORTED_START_NS <= ns < SUPPORTED_END_NS:
        return None
    # Python's datetime reaches years 1-9999 where pandas (ns_to_iso) stops at the int64 range.
    epoch = _dt.datetime(1970, 1, 1)
    try:
        shown = (epoch + _dt.timedelta(microseconds=ns // 1000)).isoformat() + "Z"
    except OverflowError:
        shown = f"{ns} ns since 1970"
    return f"time {shown} is outside the supported range {SUPPORTED_RANGE}"


def utc_datetime_to_ns(dt: _dt.datetime) -> int:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=_dt.timezone.utc)
    delta = dt - _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * NS_PER_S + delta.microseconds * 1_000
