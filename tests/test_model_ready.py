"""Model-ready reads (issue #12 item 1): ``window(start, end, sample_rate=, dtype=)`` on real recordings.

The reference for every resampled window is ``scipy.signal.resample_poly``
applied to the whole recording read with soundfile, with no pamingest code
in between: a window cut from continuous audio must equal the matching
samples of the whole recording's resampling (its edges filtered with the
audio around them), and at the same times.
"""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import xarray as xr
from scipy.signal import resample_poly

import pamingest as pi
from pamingest.errors import ConfigError
from pamingest.resample import continuous_pieces
from pamingest.timing import NS_PER_S, offset_ns

SOUNDTRAP_FIRST = "67416073.210610033655.flac"


@pytest.fixture(scope="module")
def stores(tmp_path_factory, fixtures):
    """A continuous 8 kHz SoundTrap stream (10 s rows) and a duty-cycled 22 kHz SongMeter one
    (10 s recorded every 15 min, 4 s rows)."""
    root = tmp_path_factory.mktemp("model-ready")
    soundtrap, songmeter = str(root / "soundtrap"), str(root / "songmeter")
    pi.ingest(pi.TimestampedFiles(str(fixtures / "soundtrap"), "soundtrap"), soundtrap, client="serial", row_seconds=10)
    pi.ingest(pi.TimestampedFiles(str(fixtures / "songmeter" / "S4A03895"), "songmeter"), songmeter,
              client="serial", row_seconds=4)
    return {name: pi.open_store(url)[pi.streams(pi.open_store(url))[0]].to_dataset()
            for name, url in (("soundtrap", soundtrap), ("songmeter", songmeter))}


def file_start_ns(ds, name: str) -> int:
    urls = [str(u) for u in ds["file_url"].values]
    i = next(k for k, u in enumerate(urls) if u.endswith(name))
    return int(ds["file_start"].values[i].astype("datetime64[ns]").astype(np.int64))


def whole_file(path, target: int) -> np.ndarray:
    x, rate = sf.read(str(path), dtype="int16", always_2d=True)
    up, down = target // np.gcd(rate, target), rate // np.gcd(rate, target)
    return resample_poly(x.astype(np.float32) / 32768, up, down, axis=0)


def ns(t) -> np.ndarray:
    return np.asarray(t).astype("datetime64[ns]").astype(np.int64)


def test_chunk_start_is_a_coordinate(stores):
    ds = stores["soundtrap"]
    assert "chunk_start" in ds.coords and "chunk_start" in ds["audio"].coords


def test_float_scaling_is_the_stored_integers_over_full_scale(stores):
    ds = stores["soundtrap"]
    t0 = file_start_ns(ds, SOUNDTRAP_FIRST) + 30 * NS_PER_S
    raw = ds.pam.window(t0, t0 + 2 * NS_PER_S)
    scaled = ds.pam.window(t0, t0 + 2 * NS_PER_S, dtype="float32")
    assert raw.dtype == np.int16 and scaled.dtype == np.float32 and scaled.attrs["units"] == "1 (full scale)"
    np.testing.assert_array_equal(scaled.values, raw.values.astype(np.float32) / 32768)
    np.testing.assert_array_equal(scaled["time"].values, raw["time"].values)
    # The stored rate asked for: the same samples, nothing filtered.
    same = ds.pam.window(t0, t0 + 2 * NS_PER_S, sample_rate=8000, dtype="float32")
    np.testing.assert_array_equal(same.values, scaled.values)


@pytest.mark.parametrize("target", [3000, 16000, 22050])
def test_a_window_equals_the_whole_recording_resampled(stores, fixtures, target):
    """Edges included: the window reads audio around itself, so it is filtered as the recording is."""
    ds = stores["soundtrap"]
    start = file_start_ns(ds, SOUNDTRAP_FIRST)
    ref = whole_file(fixtures / "soundtrap" / SOUNDTRAP_FIRST, target)
    g = np.gcd(8000, target)
    down = 8000 // g
    # A window starting on a stored sample that the whole recording's output grid also holds
    # (a multiple of `down`), 40 s into the file, crossing two 10 s row boundaries.
    first = 40 * 8000 // down * down
    t0 = start + offset_ns(first, 8000)
    t1 = t0 + 25 * NS_PER_S
    got = ds.pam.window(t0, t1, sample_rate=target)
    j0 = first * (target // g) // down
    n = got.sizes["time"]
    assert n == -(-25 * target // 1)  # ceil(25 s x target)
    assert got.dtype == np.float32 and got.attrs["sample_rate"] == target and got.attrs["stored_sample_rate"] == 8000
    np.testing.assert_allclose(got.values, ref[j0 : j0 + n], atol=2e-6)
    want_t = t0 + np.array([offset_ns(k, target) for k in range(n)])
    np.testing.assert_array_equal(ns(got["time"].values), want_t)


def test_a_window_off_the_grid_starts_at_its_first_stored_sample(stores):
    ds = stores["soundtrap"]
    t0 = file_start_ns(ds, SOUNDTRAP_FIRST) + 12_345_678_901  # between two stored samples
    got = ds.pam.window(t0, t0 + 3 * NS_PER_S, sample_rate=3000)
    times = ns(got["time"].values)
    assert t0 <= times[0] < t0 + NS_PER_S // 8000 + 1  # the first stored sample at or after t0
    assert times[-1] < t0 + 3 * NS_PER_S and got.sizes["time"] in (8999, 9000)
    assert np.all(np.diff(times) - NS_PER_S / 3000 <= 1)


def test_across_a_gap_each_recording_is_resampled_alone(stores, fixtures):
    """Two 10 s recordings 15 min apart: the output jumps in time as the stored samples do, and
    each side equals its own recording resampled on its own (no smearing across the gap)."""
    ds = stores["songmeter"]
    names = ["S4A03895_20190522_001500.wav", "S4A03895_20190522_003000.wav"]
    a, b = (file_start_ns(ds, n) for n in names)
    got = ds.pam.window(a - NS_PER_S, b + 11 * NS_PER_S, sample_rate=16000)
    times = ns(got["time"].values)
    pieces = continuous_pieces(times, 16000)
    assert len(pieces) == 2
    for (lo, hi), name, start in zip(pieces, names, (a, b)):
        ref = whole_file(fixtures / "songmeter" / "S4A03895" / name, 16000)
        assert hi - lo == len(ref) == 160000  # 220000 samples x 320 / 441, to the sample
        np.testing.assert_allclose(got.values[lo:hi], ref, atol=2e-6)
        assert times[lo] == start and times[hi - 1] == start + offset_ns(hi - lo - 1, 16000)
    # Stored samples over the same window: the same two pieces, the same edges.
    stored = continuous_pieces(ns(ds.pam.window(a - NS_PER_S, b + 11 * NS_PER_S)["time"].values), 22000)
    assert len(stored) == 2


def test_aliasing_is_filtered(tmp_path):
    """A 7 kHz tone at 22.05 kHz resampled to 8 kHz (Nyquist 4 kHz) is removed, not folded to 1 kHz;
    a 1 kHz tone passes."""
    rate = 22050
    t = np.arange(rate * 3) / rate
    folder = tmp_path / "tones"
    folder.mkdir()
    for name, hz in (("high_20240101_000000.wav", 7000), ("low_20240101_000000.wav", 1000)):
        sf.write(folder / name, (0.5 * np.sin(2 * np.pi * hz * t) * 32767).astype(np.int16), rate, subtype="PCM_16")
    store = str(tmp_path / "store")
    pi.ingest(pi.TimestampedFiles(str(folder), "{site}_%Y%m%d_%H%M%S.wav"), store, client="serial")
    tree = pi.open_store(store)
    rms = {}
    for path in pi.streams(tree):
        ds = tree[path].to_dataset()
        w = ds.pam.window("2024-01-01T00:00:00.5", "2024-01-01T00:00:02.5", sample_rate=8000)
        rms[ds.attrs["site"]] = float(np.sqrt(np.mean(w.values.astype(np.float64) ** 2)))
    assert rms["low"] == pytest.approx(0.5 / np.sqrt(2), rel=0.01)
    assert rms["high"] < 1e-3 * rms["low"]


def test_integer_output_of_a_resampling_is_refused(stores):
    ds = stores["soundtrap"]
    t0 = file_start_ns(ds, SOUNDTRAP_FIRST)
    with pytest.raises(ConfigError, match="float32 or float64"):
        ds.pam.window(t0, t0 + NS_PER_S, sample_rate=4000, dtype="int16")
    with pytest.raises(ConfigError, match="positive"):
        ds.pam.window(t0, t0 + NS_PER_S, sample_rate=0)


def test_plain_xarray_opens_a_stream_through_icechunk(stores, tmp_path, fixtures):
    """What the README shows: no pamingest code between Icechunk and xarray."""
    import icechunk

    store = str(tmp_path / "plain")
    pi.ingest(pi.TimestampedFiles(str(fixtures / "soundtrap"), "soundtrap"), store, client="serial", row_seconds=10)
    repo = icechunk.Repository.open(icechunk.local_filesystem_storage(store))
    session = repo.readonly_session("main")
    ds = xr.open_zarr(session.store, group="files/67416073/8000Hz_1ch_pcm16", consolidated=False, zarr_format=3)
    assert "chunk_start" in ds.coords
    ours = stores["soundtrap"]
    np.testing.assert_array_equal(ds["audio"][5].values, ours["audio"][5].values)
    np.testing.assert_array_equal(ds["chunk_start"].values, ours["chunk_start"].values)
