"""Hybrid millidecade spectra (pamingest.hmd): bands, levels, calibration, the store and pbp's netCDF."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import pamingest as pi
from pamingest import hmd
from pamingest.errors import ConfigError


def test_bands_follow_martin_et_al_as_pypam_computes_them():
    # 1 Hz bands 0..434 Hz, then millidecade bands from 435.01 Hz (Martin et al. 2021, Table 1);
    # counts from PyPAM's get_bands_limits (pbp 1.9.0 gives the same: benchmarks/hmd_vs_pbp.py).
    for rate, count in ((8000, 1400), (48000, 2178), (256000, 2905)):
        centres, lower, upper = hmd.hmd_bands(rate)
        assert len(centres) == count
        np.testing.assert_array_equal(centres[:435], np.arange(435.0))
        np.testing.assert_allclose(centres[435], 10 * 10 ** ((2 * 1639 - 1) / 2000), rtol=1e-12)
        assert centres[435] == pytest.approx(435.0108, abs=1e-4)
        assert lower[0] == -0.5 and upper[-1] == rate / 2
        np.testing.assert_array_equal(upper[:-1], lower[1:])
        ratio = upper[436:-1] / lower[436:-1]
        np.testing.assert_allclose(ratio, 10 ** 0.001, rtol=1e-9)  # one millidecade wide
        assert (upper[435:-1] - lower[435:-1] >= 1.0).all()  # never narrower than a bin (the last is cut at Nyquist)


def test_pure_tone_lands_in_its_band_with_its_power():
    rate, amplitude = 8000, 0.25
    centres, lower, upper = hmd.hmd_bands(rate)
    k = int(np.searchsorted(centres, 3000.0))
    tone = float(round(centres[k]))  # a bin centre well inside band k (Hann spreads it over +-1 bin)
    assert lower[k] + 1 < tone < upper[k] - 1
    t = np.arange(60 * rate) / rate
    x = amplitude * np.sin(2 * np.pi * tone * t)
    bands = hmd.band_levels(hmd.minute_psd(x, rate), rate)
    assert int(np.argmax(bands)) == k
    # Mean square A**2/2 spread over the band's width: its mean PSD.
    expected_db = 10 * np.log10(amplitude ** 2 / 2 / (upper[k] - lower[k]))
    got = hmd.levels_db(bands, centres, hmd.Calibration())
    assert got[k] == pytest.approx(expected_db, abs=0.01)
    # All of the power is in the bands: the bands' integral is the signal's mean square.
    assert float((bands * (upper - lower)).sum()) == pytest.approx(amplitude ** 2 / 2, rel=1e-6)


def test_calibration_shifts_levels_by_exactly_the_db_given(tmp_path):
    rate = 8000
    x = np.random.default_rng(1).standard_normal(60 * rate) * 0.01
    centres = hmd.hmd_bands(rate)[0]
    bands = hmd.band_levels(hmd.minute_psd(x, rate), rate)
    raw = hmd.levels_db(bands, centres, hmd.Calibration()).astype(np.float64)
    flat = hmd.levels_db(bands, centres, hmd.Calibration(-176.0, gain=12.0)).astype(np.float64)
    np.testing.assert_allclose(flat - raw, 176.0 - 12.0, atol=1e-4)
    table = tmp_path / "cal.csv"
    table.write_text("frequency_hz,sensitivity_db\n100,-170\n1100,-180\n")
    cal = hmd.resolve_calibration({}, table=table)
    got = hmd.levels_db(bands, centres, cal).astype(np.float64) - raw
    expect = -np.interp(centres, [100, 1100], [-170, -180])
    np.testing.assert_allclose(got, expect, atol=1e-4)
    assert got[centres.searchsorted(600)] == pytest.approx(175.0, abs=0.02)  # halfway, interpolated
    assert got[-1] == pytest.approx(180.0, abs=1e-4)  # held at the table's last value


def test_bad_calibration_names_the_file_and_the_reason(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("100,-170\n200,loud\n")
    with pytest.raises(ConfigError, match=r"bad\.csv line 2"):
        hmd.read_calibration_csv(bad)
    bad.write_text("100,-170\n100,-171\n")
    with pytest.raises(ConfigError, match="repeats a frequency"):
        hmd.read_calibration_csv(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        hmd.read_calibration_csv(tmp_path / "missing.csv")
    with pytest.raises(ConfigError, match="integer sample rate"):
        hmd.hmd_bands(44100.5)


def test_deployment_metadata_calibration_is_used():
    doc = {"CALIBRATION": {"ID": "C1", "FrequencyResponse_Hz": [250, 10000], "FrequencyResponse_dB": [-177.9, -176.8]}}
    cal = hmd.resolve_calibration({"deployment_metadata": doc})
    assert cal.table == ((250.0, 10000.0), (-177.9, -176.8))
    np.testing.assert_allclose(cal.sensitivity_at(np.array([100.0, 250.0, 20000.0])), [-177.9, -177.9, -176.8])
    # Parameters given override the metadata.
    assert hmd.resolve_calibration({"deployment_metadata": doc}, sensitivity=-170).table is None


def test_gaps_split_welch_segments_and_effort_counts_audio():
    rate = 1000
    x = np.random.default_rng(2).standard_normal(60 * rate)
    whole = hmd.minute_psd(x, rate)
    halves = hmd.minute_psd([x[:30 * rate], x[30 * rate:]], rate)
    # Segments at 0.5 s steps: the split loses the one segment across the seam, nothing else.
    from scipy import signal

    _, a = signal.welch(x[:30 * rate], rate, nperseg=rate, detrend=False)
    _, b = signal.welch(x[30 * rate:], rate, nperseg=rate, detrend=False)
    np.testing.assert_allclose(halves, (a + b) / 2, rtol=1e-12)
    assert not np.allclose(halves, whole, rtol=1e-6)
    assert np.isnan(hmd.minute_psd(x[: rate - 1], rate)).all()


@pytest.fixture(scope="module")
def soundtrap_store(tmp_path_factory, fixtures):
    """The three SoundTrap files (8 kHz, 15 min from 03:36:55 UTC), ingested as they are."""
    store = str(tmp_path_factory.mktemp("hmd") / "store")
    report = pi.ingest(pi.TimestampedFiles(str(fixtures / "soundtrap"), "soundtrap"), store, client="serial")
    assert report.ingested and not report.failed, report.summary()
    return store, pi.streams(pi.open_store(store))[0]


def test_store_round_trip_and_pbp_netcdf(soundtrap_store, tmp_path):
    store, stream = soundtrap_store
    rep = hmd.compute_hmd(store, stream, sensitivity=-176.0, client="threads", minutes_per_task=4)
    # 03:36:55 .. 03:51:55: 14 whole minutes and the two partial ones at the ends (pbp's minutes).
    assert rep.minutes == 16 and rep.with_audio == 16
    ds = hmd.hmd_dataset(store, stream)
    assert ds["psd"].dims == ("time", "frequency") and ds["psd"].shape == (16, 1400)
    assert str(ds["time"].values[0]) == "2021-06-10T03:36:00.000000000"
    # Effort is time covered: the few ms by which SoundTrap files overlap are not counted twice.
    np.testing.assert_allclose(ds["effort"].values, [5] + [60] * 14 + [55.012375], atol=1e-3)
    # The same numbers as the arrays computed directly from one minute's samples.
    sds = pi.open_stream(store, stream)
    t = np.datetime64("2021-06-10T03:40:00", "ns").view(np.int64)
    w = sds.pam.window(int(t), int(t) + hmd.MINUTE_NS, dtype=np.float64)
    direct = hmd.levels_db(hmd.band_levels(hmd.minute_psd(w.values[:, 0], 8000), 8000),
                           hmd.hmd_bands(8000)[0], hmd.Calibration(-176.0))
    np.testing.assert_array_equal(ds["psd"].sel(time="2021-06-10T03:40").values, direct)
    assert ds["frequency_bounds"].shape == (1400, 2)
    # The stream tree still lists one stream, and the group does not disturb reading it.
    assert pi.streams(pi.open_store(store)) == [stream]

    # A rerun of some minutes replaces them; another calibration is refused.
    hmd.compute_hmd(store, stream, "2021-06-10T03:40", "2021-06-10T03:42", sensitivity=-176.0, client="serial")
    assert hmd.hmd_dataset(store, stream).sizes["time"] == 16
    with pytest.raises(ConfigError, match="would not be comparable"):
        hmd.compute_hmd(store, stream, "2021-06-10T03:40", "2021-06-10T03:41", sensitivity=-170.0, client="serial")

    out = hmd.export_netcdf(store, stream, tmp_path / "hmd.nc")
    nc = xr.open_dataset(out, engine="h5netcdf")
    assert {"psd", "effort", "sensitivity", "quality_flag"} <= set(nc.data_vars)
    assert nc["psd"].dims == ("time", "frequency") and nc["psd"].dtype == np.float32
    assert nc["psd"].attrs["units"] == "dB" and nc["psd"].attrs["standard_name"] == "sound_intensity_in_water"
    assert nc["frequency"].attrs["standard_name"] == "sound_frequency"
    assert nc["sensitivity"].dims == ("1",) and float(nc["sensitivity"][0]) == 176.0  # pbp's flat value
    assert (nc["quality_flag"].values == 2).all()
    raw = xr.open_dataset(out, engine="h5netcdf", decode_times=False)
    assert raw["time"].dtype == np.int64 and raw["time"].attrs["units"] == "seconds since 1970-01-01T00:00:00Z"
    np.testing.assert_array_equal(nc["psd"].values, ds["psd"].values)


def test_cli_hmd_and_export(soundtrap_store, tmp_path, capsys):
    from pamingest.cli import EXIT_ERROR, main

    store, stream = soundtrap_store
    assert main(["hmd", store, "--stream", stream, "--start", "2021-06-10T03:44", "--end", "2021-06-10T03:46",
                 "--sensitivity", "-176", "--serial"]) == 0
    assert "2 minutes (2 with audio" in capsys.readouterr().out
    bad = tmp_path / "cal.csv"
    bad.write_text("100,-170\nten,-171\n")
    assert main(["hmd", store, "--stream", stream, "--calibration", str(bad), "--serial"]) == EXIT_ERROR
    assert f"{bad} line 2" in capsys.readouterr().err
    out = tmp_path / "out.nc"
    assert main(["hmd-export", store, "--stream", stream, "-o", str(out), "--start", "2021-06-10T03:44",
                 "--end", "2021-06-10T03:46"]) == 0
    nc = xr.open_dataset(out, engine="h5netcdf")
    assert nc.sizes["time"] == 2 and nc.sizes["frequency"] == 1400


def test_later_runs_append_in_place_and_equal_one_run(soundtrap_store, tmp_path):
    """A deployment computed a span at a time: each later span grows the arrays (no group rewritten),
    a rerun overwrites its minutes in place, a span before the stored ones rewrites the group; in
    every case the spectra equal one run over the whole recording."""
    import shutil

    from pamingest.store.repo import Store

    store, stream = soundtrap_store
    store = str(shutil.copytree(store, tmp_path / "store"))

    def drop(root):  # spectra the module's other test may have stored
        if hmd.GROUP in root[stream]:
            del root[stream][hmd.GROUP]

    Store.open(store).update(drop, "drop hmd")
    whole = str(shutil.copytree(store, tmp_path / "whole"))
    hmd.compute_hmd(whole, stream, sensitivity=-176.0, client="serial")
    want = hmd.hmd_dataset(whole, stream)

    def run(start, end):
        before = Store.open(store).tip()
        hmd.compute_hmd(store, stream, start, end, sensitivity=-176.0, client="serial")
        repo = Store.open(store).repo
        return repo.diff(from_snapshot_id=before, to_snapshot_id=repo.lookup_branch("main"))

    run("2021-06-10T03:40", "2021-06-10T03:45")  # creates the group
    for start, end in (("2021-06-10T03:45", "2021-06-10T03:52"), ("2021-06-10T03:41", "2021-06-10T03:43")):
        diff = run(start, end)  # appended, then rerun: written in place
        assert not [a for a in diff.new_arrays | diff.deleted_arrays if "/hmd" in a], (start, diff)
        assert any(a.endswith("/hmd/psd") for a in diff.updated_chunks)
    diff = run("2021-06-10T03:36", "2021-06-10T03:40")  # before the stored minutes: the group is rewritten
    assert [a for a in diff.new_arrays if a.endswith("/hmd/psd")]
    got = hmd.hmd_dataset(store, stream)
    np.testing.assert_array_equal(got["time"].values, want["time"].values)
    np.testing.assert_array_equal(got["psd"].values, want["psd"].values)
    np.testing.assert_array_equal(got["effort"].values, want["effort"].values)
