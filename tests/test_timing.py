"""Row/offset/time arithmetic: where off-by-one bugs live (hypothesis)."""

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import assume, given, strategies as st

from pamingest.query import _first_sample_at_or_after
from pamingest.timing import (
    NS_PER_S, offset_ns, offset_range_ns, row_valid, rows_for, sample_time_ns, samples_per_row, to_ns,
)

rates = st.sampled_from([2000, 4000, 8000, 10000, 22050, 32000, 44100, 48000, 96000, 192000, 256000, 300000]) | st.integers(1, 2_000_000)


@given(rate=st.sampled_from([1, 7, 8000, 22050, 44100, 48000, 96000, 256000]) | st.integers(1, 5000),
       start=st.integers(0, 10**12), seconds=st.floats(0, 3.2))
def test_offset_range_is_offset_ns_of_the_range(rate, start, seconds):
    stop = start + int(seconds * rate)
    np.testing.assert_array_equal(offset_range_ns(start, stop, rate),
                                  offset_ns(np.arange(start, stop, dtype=np.int64), rate))


@given(rate=rates, seconds=st.floats(0.01, 3600), frames=st.integers(0, 10**10))
def test_rows_cover_every_frame_exactly_once(rate, seconds, frames):
    spr = samples_per_row(rate, seconds) if rate * seconds >= 0.5 else 1
    n = rows_for(frames, spr)
    valid = [row_valid(frames, spr, r) for r in (0, max(0, n - 1), n)]
    if n:
        assert (n - 1) * spr < frames <= n * spr
        assert valid[1] == frames - (n - 1) * spr
        assert 0 < valid[1] <= spr
    assert valid[2] == 0  # one past the end holds nothing
    assert sum(row_valid(frames, spr, r) for r in range(min(n, 5))) == min(frames, 5 * spr)


@given(rate=rates, offset=st.integers(0, 10**11), start=st.integers(-(10**18), 10**18))
def test_sample_time_is_exact_rounding_of_the_rational_time(rate, offset, start):
    assume(offset // rate < 100 * 365 * 86400)  # datetime64[ns] spans +-292 years
    exact = Fraction(offset * NS_PER_S, rate)
    t = sample_time_ns(start, offset, rate) - start
    assert abs(Fraction(t) - exact) <= Fraction(1, 2)
    # vectorised form agrees with the scalar one
    assert int(offset_ns(np.array([offset]), rate)[0]) == t


@given(rate=rates, offset=st.integers(0, 10**9), rows=st.integers(1, 5000))
def test_time_of_row_starts_never_drifts(rate, offset, rows):
    """Row k's start computed from the file start equals k*spr samples' exact time."""
    spr = max(1, rate * 10)
    k = offset % rows
    t = offset_ns(k * spr, rate)
    assert t == k * 10 * NS_PER_S  # whole seconds: no rounding at all


@given(rate=rates, delta=st.integers(-(10**12), 10**13))
def test_first_sample_at_or_after(rate, delta):
    k = _first_sample_at_or_after(delta, rate)
    if delta <= 0:
        assert k == 0
    else:
        assert offset_ns(k, rate) >= delta
        assert k == 0 or offset_ns(k - 1, rate) < delta


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError):
        samples_per_row(0, 10)
    with pytest.raises(ValueError):
        samples_per_row(48000, 0)
    with pytest.raises(ValueError):
        rows_for(-1, 10)


def test_to_ns_takes_aware_and_naive_times():
    assert to_ns("2021-06-10T03:36:55Z") == to_ns("2021-06-10T03:36:55")
    assert to_ns("2021-06-09T20:36:55-07:00") == to_ns("2021-06-10T03:36:55")
    with pytest.raises(ValueError):
        to_ns("NaT")
