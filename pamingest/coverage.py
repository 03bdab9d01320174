"""Coverage of a stream in numbers and words: continuous spans, gaps, duty cycle.

Shared by ``ds.pam.coverage()``, ``pamingest info`` and the store report, so
that a gap and a duty cycle mean the same everywhere.
"""

from __future__ import annotations

import numpy as np

from .timing import NS_PER_S


def max_gap_ns(sample_rate: int) -> int:
    """The default gap: more than 1.5 samples between one row's end and the next row's start."""
    return int(1.5 / sample_rate * NS_PER_S)


def spans(start: np.ndarray, end: np.ndarray, max_gap_ns: int) -> tuple[np.ndarray, np.ndarray]:
    """Continuous spans ``(starts, ends)`` (int ns) of rows sorted by start: gaps over ``max_gap_ns`` split them.

    Rows may overlap (SoundTrap files do by a few ms): a span runs to the
    latest end seen so far.
    """
    start, end = np.asarray(start, dtype=np.int64), np.asarray(end, dtype=np.int64)
    if not len(start):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    reach = np.maximum.accumulate(end)
    breaks = np.flatnonzero(start[1:] - reach[:-1] > max_gap_ns) + 1
    first = np.concatenate([[0], breaks])
    last = np.concatenate([breaks - 1, [len(start) - 1]])
    return start[first], reach[last]


def duration_words(seconds: float) -> str:
    """``10 s``, ``15 min``, ``1 h 30 min``, ``3 d 4 h``: two units at most, the second dropped when 0."""
    s = float(seconds)
    if s < 60:
        return f"{s:.3g} s" if s != int(s) else f"{int(s)} s"
    units = (("d", 86_400), ("h", 3600), ("min", 60), ("s", 1))
    total = int(round(s))
    for i, (name, size) in enumerate(units):
        if total >= size:
            big, rest = divmod(total, size)
            if i + 1 < len(units):
                small_name, small_size = units[i + 1]
                small = rest // small_size
                if small:
                    return f"{big} {name} {small} {small_name}"
            return f"{big} {name}"
    return f"{total} s"


def duty_cycle(starts: np.ndarray, ends: np.ndarray) -> str:
    """A stream's coverage in words: ``10 s every 15 min (48 spans); 8 min of audio over 11 h 45 min (1.13%)``.

    ``starts``/``ends``: the continuous spans (int ns, sorted, disjoint), as ``ds.pam.coverage()`` gives them.
    """
    n = len(starts)
    if not n:
        return "no audio"
    lengths = (ends - starts) / NS_PER_S
    whole = (ends[-1] - starts[0]) / NS_PER_S
    audio = float(lengths.sum())
    share = f"{duration_words(audio)} of audio over {duration_words(whole)} ({100 * audio / whole:.3g}%)" if whole else ""
    if n == 1:
        return f"continuous: one span of {duration_words(audio)}"
    periods = np.diff(starts) / NS_PER_S
    p, d = float(np.median(periods)), float(np.median(lengths))

    def regular(x: np.ndarray, m: float) -> bool:
        # Recorders start on the clock, but file lengths and starts wander by a few samples or ms.
        return bool(np.mean(np.abs(x - m) <= max(1.0, 0.01 * m)) >= 0.9)

    if n >= 3 and regular(periods, p) and regular(lengths, d):
        return f"{duration_words(d)} every {duration_words(p)} ({n} spans); {share}"
    gaps = (starts[1:] - ends[:-1]) / NS_PER_S
    return (f"{n} spans, median {duration_words(d)} long, median gap {duration_words(float(np.median(gaps)))}, "
            f"longest gap {duration_words(float(gaps.max()))}; {share}")
