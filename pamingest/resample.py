"""Model-ready samples: float scaling by bit depth and anti-aliased polyphase resampling (scipy).

A window of stored audio is a sequence of *continuous pieces*: runs of
samples one sample period apart. A gap (no audio recorded) or an overlap
(two recordings covering the same instant, kept both) ends a piece. Each
piece is resampled on its own with ``scipy.signal.resample_poly`` (a
Kaiser-windowed FIR low-pass at the lower of the two Nyquist rates), so no
filter ever smears one side of a gap into the other and no sample is
invented inside a gap: across a gap the output's ``time`` coordinate jumps
exactly as the stored samples' does, and the output samples next to a gap
are those of a signal that stops there (the filter sees zeros beyond it).

Inside a piece the output grid is anchored to the piece's first stored
sample in the window: output sample ``j`` is at that sample's time plus
``j / target_rate`` (rounded to the nanosecond, never accumulated). The
caller reads ``context_samples`` more on each side (``PamAccessor.window``
does), so that a window cut out of continuous audio is filtered as the
whole recording would be, not as a signal that starts and stops at the
window's edges.
"""

from __future__ import annotations

import math

import numpy as np

from .errors import ConfigError
from .timing import NS_PER_S

# scipy.signal.resample_poly's default filter: half-length 10 * max(up, down) taps at the
# upsampled rate (scipy's own `window=('kaiser', 5.0)` design).
_HALF_LEN_PER_FACTOR = 10


def full_scale(dtype: np.dtype, bits: int | None) -> float:
    """The value of full scale for samples stored as ``dtype`` with ``bits`` bits (1.0 for floats)."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return 1.0
    if dtype.itemsize == 2:
        return 32768.0  # 8-bit PCM is kept as libsndfile reads it: left-aligned in int16
    return float(2 ** ((bits or dtype.itemsize * 8) - 1))


def as_float(samples: np.ndarray, dtype, bits: int | None) -> np.ndarray:
    """Stored samples as ``dtype`` (float32 or float64) in [-1, 1): integers divided by full scale
    (2**15 for 16-bit, 2**23 for 24-bit kept in int32, 2**31 for 32-bit); floats as stored."""
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise ConfigError(f"model-ready samples are floating point: dtype must be float32 or float64, got {dtype}")
    out = samples.astype(dtype)
    scale = full_scale(samples.dtype, bits)
    if scale != 1.0:
        out *= dtype.type(1.0 / scale)
    return out


def rational(source_rate: int, target_rate: int) -> tuple[int, int]:
    """``(up, down)``, the resampling factors in lowest terms."""
    if target_rate <= 0:
        raise ConfigError(f"sample_rate must be a positive number of Hz, got {target_rate}")
    g = math.gcd(int(source_rate), int(target_rate))
    return int(target_rate) // g, int(source_rate) // g


def context_samples(source_rate: int, target_rate: int) -> int:
    """Stored samples to read beyond each edge of a window so that its edges are filtered as the
    rest is: the filter's half-length in input samples, plus ``down`` to align the output grid."""
    up, down = rational(source_rate, target_rate)
    return -(-_HALF_LEN_PER_FACTOR * max(up, down) // up) + down


def continuous_pieces(times_ns: np.ndarray, sample_rate: int) -> list[tuple[int, int]]:
    """``[lo, hi)`` index ranges of samples one period apart (times rounded to the ns, so steps
    differ by a nanosecond at most); a gap or a step back ends a piece."""
    if not len(times_ns):
        return []
    period = NS_PER_S / sample_rate
    step = np.diff(times_ns)
    breaks = np.flatnonzero((step < 0.5 * period) | (step > 1.5 * period)) + 1
    edges = [0, *breaks.tolist(), len(times_ns)]
    return list(zip(edges[:-1], edges[1:]))


def resample_window(samples: np.ndarray, times_ns: np.ndarray, sample_rate: int, target_rate: int,
                    t0: int, t1: int) -> tuple[np.ndarray, np.ndarray]:
    """The samples of ``[t0, t1)`` at ``target_rate``, and their times (int64 ns).

    ``samples`` (float, ``(n, channels)``) and ``times_ns`` cover the window
    and, where recorded, ``context_samples`` more on each side. Each
    continuous piece is resampled alone; the output keeps the samples whose
    time lies in ``[t0, t1)`` and inside the piece's recorded span.
    """
    from scipy.signal import resample_poly

    up, down = rational(sample_rate, target_rate)
    outs, times = [], []
    for lo, hi in continuous_pieces(times_ns, sample_rate):
        piece_times = times_ns[lo:hi]
        anchor = int(np.searchsorted(piece_times, t0, side="left"))  # first sample in the window
        if anchor >= len(piece_times) or piece_times[anchor] >= t1:
            continue  # context only
        skip = anchor % down  # start on a multiple of `down` before the anchor: the anchor is an output sample
        x = samples[lo + skip : hi]
        y = resample_poly(x, up, down, axis=0)
        first = (anchor - skip) // down * up  # output index of the anchor
        k = np.arange(len(y), dtype=np.int64) - first
        # Output times from the anchor by exact integer arithmetic (rounded half up, as offset_ns).
        t = int(piece_times[anchor]) + np.where(k >= 0, (2 * k * NS_PER_S + target_rate) // (2 * target_rate),
                                                -((2 * -k * NS_PER_S + target_rate) // (2 * target_rate)))
        end = int(piece_times[-1]) + (2 * NS_PER_S + sample_rate) // (2 * sample_rate)  # where the last sample ends
        keep = (t >= t0) & (t < t1) & (t < end)
        outs.append(y[keep].astype(samples.dtype, copy=False))
        times.append(t[keep])
    if not outs:
        return np.zeros((0, samples.shape[1]), dtype=samples.dtype), np.zeros(0, dtype=np.int64)
    return np.concatenate(outs), np.concatenate(times)
