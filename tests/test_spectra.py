"""Per-row spectra, LTSA and spectrograms on real recordings and a synthesised tone."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal
import soundfile as sf

import pamingest as pi
from pamingest import spectra
from pamingest.timing import NS_PER_S

from helpers import source_samples, to_ns, window_ns

SONGMETER = "songmeter/S4A03895/22000Hz_1ch_pcm16"
SOUNDTRAP = "soundtrap/67416073/8000Hz_1ch_pcm16"


@pytest.fixture(scope="module")
def tree(demo_store):
    return pi.open_store(demo_store)


def stream(tree, path):
    return tree[path].to_dataset()


def scipy_welch(x, rate, nperseg=1024):
    return scipy.signal.welch(np.asarray(x, dtype=np.float64), rate, nperseg=nperseg)


def test_row_spectra_of_the_songmeter_deployment_equal_welch_on_each_file(tree, fixtures):
    ds = stream(tree, SONGMETER)
    psd = spectra.row_spectra(ds, batch_rows=7)  # several batches
    assert psd.dims == ("time", "frequency") and psd.shape == (48, 513)
    assert psd["frequency"].values[0] == 0 and psd["frequency"].values[-1] == 11000.0  # up to Nyquist
    assert np.isfinite(psd.values).all() and (psd.values >= 0).all()
    assert psd.attrs["units"] == "count**2/Hz"
    # One row per 10 s file, at the time its name gives, 15 min apart.
    t = psd["time"].values
    assert t[0] == np.datetime64("2019-05-22T00:00:00") and (np.diff(t) == np.timedelta64(15, "m")).all()
    files = sorted((fixtures / "songmeter" / "S4A03895").glob("*.wav"))
    for k in (0, 17, 47):
        f, want = scipy_welch(source_samples(files[k])[:, 0], 22000)
        np.testing.assert_allclose(psd["frequency"].values, f)
        np.testing.assert_allclose(psd.values[k], want, rtol=1e-9)
    np.testing.assert_array_equal(spectra.row_spectra(ds).values, psd.values)  # batching changes nothing


def test_rows_shorter_than_a_segment_are_left_out_and_ranges_select_rows(tree):
    ds = stream(tree, SOUNDTRAP)
    rows = ds.pam.rows
    assert (rows["n_valid"] < 1024).sum() == 3  # each file's last row: 137, 292, 99 samples
    psd = spectra.row_spectra(ds)
    assert psd.sizes["time"] == len(rows) - 3 == 90
    assert (psd["n_valid"].values >= 1024).all()
    part = spectra.row_spectra(ds, start="2021-06-10T03:40:00", end="2021-06-10T03:41:00")
    assert part.sizes["time"] == 6
    assert part["time"].values[0] >= np.datetime64("2021-06-10T03:40:00")
    np.testing.assert_array_equal(part.values, psd.sel(time=part["time"]).values)


def test_ltsa_of_a_day_keeps_the_duty_cycle_gaps_as_nan(tree):
    ds = stream(tree, SONGMETER)
    day = spectra.ltsa(ds, "1min", start="2019-05-22", end="2019-05-23")
    assert day.shape == (1440, 513)
    assert day["time"].values[0] == np.datetime64("2019-05-22T00:00") and day.attrs["bin_seconds"] == 60.0
    has_audio = np.isfinite(day.values).all(axis=1)
    assert has_audio.sum() == 48 and not np.isfinite(day.values[~has_audio]).any()
    np.testing.assert_array_equal(np.flatnonzero(has_audio), np.arange(48) * 15)  # one minute in fifteen
    assert (day["seconds"].values[has_audio] == 10.0).all() and (day["seconds"].values[~has_audio] == 0).all()
    # A bin holding one row is that row's spectrum.
    rows = spectra.row_spectra(ds)
    np.testing.assert_allclose(day.values[has_audio], rows.values)
    # Quarter-hour bins hold one recording each; the fixture is the first half of the day.
    quarter = spectra.ltsa(ds, "15min", start="2019-05-22", end="2019-05-23")
    assert quarter.sizes["time"] == 96
    assert np.isfinite(quarter.values[:48]).all() and np.isnan(quarter.values[48:]).all()
    # Without a range the bins run from the first row's to the last row's.
    whole = spectra.ltsa(ds, "1h")
    assert whole.sizes["time"] == 12 and (whole["rows"].values == 4).all()
    np.testing.assert_allclose(whole.values[0], rows.values[:4].mean(axis=0))  # equal segment counts
    # bin=None: one line per row.
    np.testing.assert_array_equal(spectra.ltsa(ds, None).values, rows.values)


def test_ltsa_bins_weigh_rows_by_their_segments(tree):
    """A one-hour bin of the SoundTrap files is Welch over all segments of its rows (short rows aside)."""
    ds = stream(tree, SOUNDTRAP)
    L = spectra.ltsa(ds, "1h")
    assert L.sizes["time"] == 1 and L["time"].values[0] == np.datetime64("2021-06-10T03:00")
    rows = spectra.row_spectra(ds)
    segs = rows["segments"].values
    np.testing.assert_allclose(L.values[0], (rows.values * segs[:, None]).sum(0) / segs.sum())
    assert L["seconds"].values[0] == pytest.approx(rows["n_valid"].values.sum() / 8000)


def test_ltsa_refuses_absurd_bin_counts(tree):
    ds = stream(tree, SONGMETER)
    with pytest.raises(ValueError, match="bins"):
        spectra.ltsa(ds, "1s", start="2019-01-01", end="2020-01-01")
    with pytest.raises(ValueError, match="positive"):
        spectra.ltsa(ds, "0s")


def test_spectrogram_frames_never_straddle_a_gap(tree, fixtures):
    ds = stream(tree, SONGMETER)
    # 5 s at the end of the first recording and 5 s at the start of the next, 15 min later.
    w = ds.pam.window("2019-05-22T00:00:05", "2019-05-22T00:15:05")
    assert w.sizes["time"] == 2 * 110000
    pieces = spectra.continuous_pieces(w["time"].values, 22000)
    assert [(p.start, p.stop) for p in pieces] == [(0, 110000), (110000, 220000)]
    sg = spectra.spectrogram(w, nperseg=512)
    files = sorted((fixtures / "songmeter" / "S4A03895").glob("*.wav"))
    per_piece = []
    for x, t0 in ((source_samples(files[0])[110000:, 0], "2019-05-22T00:00:05"),
                  (source_samples(files[1])[:110000, 0], "2019-05-22T00:15:00")):
        f, t, sxx = scipy.signal.spectrogram(x.astype(np.float64), 22000, window="hann", nperseg=512,
                                             noverlap=256)
        per_piece.append((to_ns(t0) + np.round(t * NS_PER_S).astype(np.int64), sxx.T))
    np.testing.assert_allclose(sg["frequency"].values, f)
    np.testing.assert_allclose(sg.values, np.concatenate([p[1] for p in per_piece]), rtol=1e-9)
    got_t = window_ns(sg)
    want_t = np.concatenate([p[0] for p in per_piece])
    assert np.abs(got_t - want_t).max() <= 1  # ns rounding of 1/22000 s
    gap = (got_t > to_ns("2019-05-22T00:00:10")) & (got_t < to_ns("2019-05-22T00:15:00"))
    assert not gap.any()


def test_spectrogram_cuts_where_overlapping_files_step_back_in_time(tree):
    """The SoundTrap files are 300.017 s long but start 300 s apart: across a boundary time steps back."""
    ds = stream(tree, SOUNDTRAP)
    w = ds.pam.window("2021-06-10T03:41:50", "2021-06-10T03:42:00")
    t = window_ns(w)
    assert (np.diff(t) < 0).sum() == 1
    pieces = spectra.continuous_pieces(w["time"].values, 8000)
    assert len(pieces) == 2
    assert all((np.diff(t[p]) > 0).all() for p in pieces)
    sg = spectra.spectrogram(w, nperseg=256)
    first_piece = spectra.segment_psd(w.values[pieces[0], 0], 8000, 256)
    np.testing.assert_array_equal(sg.values[: len(first_piece)], first_piece)


@pytest.fixture(scope="module")
def tone_store(tmp_path_factory):
    """Synthesised 25 s two-channel recording: 1000 Hz on channel 0, 2500 Hz on channel 1, 8 kHz int16."""
    folder = tmp_path_factory.mktemp("tone")
    rate, seconds, amp = 8000, 25, 10000
    t = np.arange(rate * seconds) / rate
    x = np.stack([amp * np.sin(2 * np.pi * 1000 * t), amp * np.sin(2 * np.pi * 2500 * t + 0.3)], axis=1)
    sf.write(folder / "1234.210101120000.wav", np.round(x).astype(np.int16), rate, subtype="PCM_16")
    store = str(folder / "store")
    report = pi.ingest(pi.TimestampedFiles(str(folder), "soundtrap"), store, client="serial")
    assert report.ingested == 1
    return store


def test_pure_tone_peaks_at_its_bin_with_its_power(tone_store):
    ds = pi.open_store(tone_store)["files/1234/8000Hz_2ch_pcm16"].to_dataset()
    for channel, freq in ((0, 1000.0), (1, 2500.0)):
        psd = spectra.row_spectra(ds, channel=channel, nperseg=1024)
        assert psd.sizes["time"] == 3  # 10 s + 10 s + 5 s
        df = 8000 / 1024
        for line in psd.values:
            assert psd["frequency"].values[np.argmax(line)] == freq  # 1000 / 7.8125 = bin 128
            # Parseval: the density integrates to the tone's mean square, A**2 / 2.
            assert line.sum() * df == pytest.approx(10000**2 / 2, rel=1e-3)
        L = spectra.decibels(spectra.ltsa(ds, "1min", channel=channel))
        assert L.sizes["time"] == 1 and L["frequency"].values[int(L.argmax("frequency")[0])] == freq
        assert L.attrs["units"] == "dB re 1 count**2/Hz"


def test_a_dataset_without_dask_or_rechunked_is_read_the_same(tone_store):
    ds = pi.open_store(tone_store)["files/1234/8000Hz_2ch_pcm16"].to_dataset()
    eager = ds.load()
    assert eager["audio"].chunks is None
    want = spectra.row_spectra(ds).values
    np.testing.assert_array_equal(spectra.row_spectra(eager).values, want)
    # Rechunked by a user (several rows per chunk, rows cut in pieces): still one row per task, same numbers.
    np.testing.assert_array_equal(spectra.row_spectra(ds.chunk({"chunk": 2, "sample": 30000})).values, want)


def test_welch_helpers_match_scipy_and_check_their_arguments():
    rng = np.random.default_rng(0)
    x = rng.integers(-2000, 2000, 5000).astype(np.int16)
    for nperseg, noverlap in ((256, None), (255, 100), (64, 0)):
        f, want = scipy.signal.welch(x.astype(np.float64), 1000, nperseg=nperseg, noverlap=noverlap)
        np.testing.assert_allclose(spectra.welch(x, 1000, nperseg, noverlap), want, rtol=1e-9)
        np.testing.assert_allclose(spectra.frequencies(1000, nperseg), f)
    assert np.isnan(spectra.welch(x[:10], 1000, 256)).all()
    assert spectra.segment_psd(x[:10], 1000, 256).shape == (0, 129)
    assert spectra.n_segments(np.array([100, 256, 384, 1000]), 256).tolist() == [0, 1, 2, 6]
    with pytest.raises(ValueError):
        spectra.welch(x, 1000, 1)
    with pytest.raises(ValueError):
        spectra.welch(x, 1000, 256, 256)


def test_channel_out_of_range(tree):
    with pytest.raises(ValueError, match="channel"):
        spectra.row_spectra(stream(tree, SONGMETER), channel=1)
