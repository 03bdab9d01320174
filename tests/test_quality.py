"""Per-row quality statistics (pamingest/quality.py): computed at ingest on the row buffers, stored
with the rows, flags derived at read time; ``.pam.quality()``, ``pamingest info``, clips and the
labelling queue use them."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import soundfile

import pamingest as pi
from pamingest import quality
from pamingest.info import store_info
from pamingest.labeling.queue import store_queue
from pamingest.store import layout
from pamingest.store.repo import Store

SR = 8000  # 1 s rows of 8000 samples
RNG = np.random.default_rng(13)


def noise(n: int, amp: float = 1000.0) -> np.ndarray:
    return np.clip(np.round(RNG.standard_normal(n) * amp), -30000, 30000).astype(np.int16)


def defect_rows() -> dict[str, np.ndarray]:
    """One 1 s row per defect (mono int16), and a 3000-sample tail: the file's last, partial row."""
    clean = noise(SR)
    clipped = noise(SR)
    clipped[100:125] = 32767
    clipped[5000:5005] = -32768
    stuck = noise(SR)
    stuck[2000:2200] = 123  # 25 ms held at one value
    stuck[1999], stuck[2200] = 7, 9
    zeros = np.zeros(SR, np.int16)
    dc = (noise(SR) + 3277).astype(np.int16)  # +0.1 of full scale
    quiet = RNG.choice(np.array([-1, 0, 1], np.int16), SR, p=[0.25, 0.5, 0.25])  # ~ -93 dBFS
    tail = noise(3000)
    tail[-1] = 0
    return {"clean": clean, "clipped": clipped, "stuck": stuck, "zeros": zeros, "dc": dc, "quiet": quiet,
            "tail": tail}


def reference(x: np.ndarray, fs: float) -> dict:
    """The statistics, computed plainly (float64, loops) for comparison."""
    x = x.reshape(len(x), -1)
    lo, hi = -fs, fs - 1
    longest = 0
    for c in range(x.shape[1]):
        run = 1
        for i in range(1, len(x)):
            run = run + 1 if x[i, c] == x[i - 1, c] else 1
            longest = max(longest, run)
        longest = max(longest, 1)
    means = x.astype(np.float64).mean(axis=0)
    rms = np.sqrt(np.mean(x.astype(np.float64) ** 2))
    with np.errstate(divide="ignore"):
        db = 20 * np.log10(rms / fs)
    return {"quality_clipped": int(((x <= lo) | (x >= hi)).sum()), "quality_longest_run": longest,
            "quality_zeros": int((x == 0).sum()), "quality_dc_offset": means[np.argmax(np.abs(means))] / fs,
            "quality_rms_dbfs": db}


def write_defects(folder, subtype="PCM_16", fmt="WAV"):
    folder.mkdir(parents=True, exist_ok=True)
    rows = defect_rows()
    ext = "wav" if fmt == "WAV" else "flac"
    soundfile.write(folder / f"67416073.210610033655.{ext}", np.concatenate(list(rows.values())), SR,
                    subtype=subtype, format=fmt)
    return rows


@pytest.fixture(scope="module")
def defects(tmp_path_factory):
    """The defect rows as one FLAC, ingested into a store with 1 s rows."""
    tmp = tmp_path_factory.mktemp("quality")
    rows = write_defects(tmp / "audio", fmt="FLAC")
    store = str(tmp / "store")
    report = pi.ingest(pi.TimestampedFiles(str(tmp / "audio"), "soundtrap"), store, client="serial", row_seconds=1)
    assert report.ingested == 1 and not report.failed, report.summary()
    return store, rows


def stream(store):
    tree = pi.open_store(store)
    return tree[pi.query.streams(tree)[0]].to_dataset()


def test_each_defect_row_gets_exact_stats_and_its_flag(defects):
    store, rows = defects
    q = stream(store).pam.quality()
    assert list(q["n_valid"]) == [SR] * 6 + [3000]
    assert q["computed"].all()
    for (name, x), (_, line) in zip(rows.items(), q.iterrows()):
        want = reference(x, 32768.0)
        assert line["clipped"] == want["quality_clipped"], name
        assert line["longest_run"] == want["quality_longest_run"], name
        assert line["zero_fraction"] == want["quality_zeros"] / len(x), name
        assert line["dc_offset"] == pytest.approx(want["quality_dc_offset"], abs=1e-6), name
        if np.isfinite(want["quality_rms_dbfs"]):
            assert line["rms_dbfs"] == pytest.approx(want["quality_rms_dbfs"], abs=1e-3), name
        else:
            assert line["rms_dbfs"] == -np.inf, name
    assert list(q["flags"]) == ["", "clipped", "dropout", "dropout,silent", "dc_offset", "silent", ""]
    assert q.loc[1, "clipped"] == 30 and q.loc[2, "longest_run"] == 200 and q.loc[2, "longest_run_ms"] == 25.0


def test_last_partial_row_counts_only_its_valid_samples(defects):
    store, rows = defects
    line = stream(store).pam.quality().iloc[-1]
    # The row is zero-padded past its 3000 samples: they would add 5000 zeros and a 5000-sample run.
    assert line["zero_fraction"] == (rows["tail"] == 0).sum() / 3000
    assert line["longest_run"] < 10


def test_thresholds_change_flags_without_reingest(defects):
    store, _ = defects
    ds = stream(store)
    assert list(ds.pam.quality(silent_dbfs=-200, dropout_ms=30, clipped_samples=31)["flags"]) == \
        ["", "", "", "dropout,silent", "dc_offset", "", ""]  # all zeros: -inf dBFS, below any threshold
    assert list(ds.pam.quality(quality.QualityThresholds(dc_offset=0.2, clipped_fraction=0.003,
                                                         clipped_samples=10**9))["flags"]) == \
        ["", "clipped", "dropout", "dropout,silent", "", "silent", ""]


def test_info_counts_flags(defects):
    store, _ = defects
    info = store_info(store)
    assert info.streams[0].quality == {"clipped": 1, "dropout": 2, "silent": 2, "dc_offset": 1, "flagged": 5,
                                       "unchecked": 0}
    text = info.format()
    assert "quality flags" in text
    line = next(ln for ln in text.splitlines()[text.splitlines().index(
        "quality flags (rows; default thresholds, pamingest.quality)"):] if ln.startswith("files/"))
    assert line.split() == ["files/67416073/8000Hz_1ch_pcm16", "5", "1", "2", "2", "1", "0"]


def test_clips_and_queue_skip_flagged_rows(defects):
    store, _ = defects
    ds = stream(store)
    assert len(ds.pam.clips(1.0, min_valid=0.2)) == 7
    kept = ds.pam.clips(1.0, min_valid=0.2, skip_flagged="all")
    assert list(kept["row"]) == [0, -1]  # the clean row and the partial tail (not a whole row)
    # Clips of 2 s overlapping a flagged row go too; only dropout: rows 2 and 3.
    two = ds.pam.clips(2.0, min_valid=0.1, skip_flagged=["dropout"])
    assert list(two["start"].astype("int64") - two["start"].astype("int64").iloc[0]) == [0, 4 * 10**9, 6 * 10**9]
    with pytest.raises(pi.errors.ConfigError, match="unknown quality flag 'loud'"):
        ds.pam.clips(1.0, skip_flagged="loud")
    root = Store.open(store).root()
    (everything,) = store_queue(root, "energy_killer_whale_v1")
    (clean,) = store_queue(root, "energy_killer_whale_v1", skip_flagged="all")
    (no_dc,) = store_queue(root, "energy_killer_whale_v1", skip_flagged="dc_offset")
    assert list(everything.queued_rows) == list(range(7))
    assert list(clean.queued_rows) == [0, 6] and clean.flagged == 5
    assert list(no_dc.queued_rows) == [0, 1, 2, 3, 5, 6] and no_dc.flagged == 1


def test_24_bit_stream_full_scale_and_calibration(tmp_path):
    fs = 2**23
    t = np.arange(SR) / SR
    sine = np.round(0.1 * fs * np.sin(2 * np.pi * 440 * t)).astype(np.int32)  # -20 dB peak: -23.01 dBFS RMS
    clipped = sine.copy()
    clipped[10:20] = fs - 1
    audio = tmp_path / "audio"
    audio.mkdir()
    # libsndfile writes int32 to PCM_24 by its top 24 bits: the values go in shifted left by 8.
    soundfile.write(audio / "67416073.210610033655.wav", np.concatenate([sine, clipped]) << 8, SR, subtype="PCM_24")
    store = str(tmp_path / "store")
    pi.ingest(pi.TimestampedFiles(str(audio), "soundtrap"), store, client="serial", row_seconds=1)
    ds = stream(store)
    assert ds.attrs["bits_per_sample"] == 24
    q = ds.pam.quality()
    assert q["rms_dbfs"][0] == pytest.approx(-20 - 10 * np.log10(2), abs=0.01)
    assert list(q["clipped"]) == [0, 10] and list(q["flags"]) == ["", "clipped"]
    assert "rms_db_re_upa" not in q
    # A calibration set later applies to rows already stored.
    ds.attrs["calibration_db"] = 177.96
    assert ds.pam.quality()["rms_db_re_upa"][0] == pytest.approx(177.96 - 23.0103, abs=0.01)


def test_stream_ingested_without_stats(tmp_path):
    """ingest(quality=False), and a store made before the table existed: rows read "not computed",
    nothing is flagged, and rows ingested later get statistics."""
    audio = tmp_path / "audio"
    write_defects(audio)
    store = str(tmp_path / "store")
    pi.ingest(pi.TimestampedFiles(str(audio), "soundtrap"), store, client="serial", row_seconds=1, quality=False)
    q = stream(store).pam.quality()
    assert not q["computed"].any() and q["clipped"].isna().all() and (q["flags"] == "").all()
    # An older store: its stream has no quality arrays at all.
    st = Store.open(store)
    path = layout.iter_streams(st.root())[0][0]

    def drop(root):
        for name in quality.QUALITY.columns:
            del root[path][name]
        return [path]

    st.update(drop, lambda _: "drop the quality table")
    with pytest.warns(UserWarning, match="no quality statistics"):
        q = stream(store).pam.quality()
    assert len(q) == 7 and not q["computed"].any()
    assert store_info(store).streams[0].quality["unchecked"] == 7
    more = tmp_path / "more"
    more.mkdir()
    soundfile.write(more / "67416073.210610043655.wav", np.zeros(SR, np.int16), SR, subtype="PCM_16")
    pi.ingest(pi.TimestampedFiles(str(more), "soundtrap"), store, client="serial")
    q = stream(store).pam.quality()
    assert list(q["computed"]) == [False] * 7 + [True] and q["flags"].iloc[-1] == "dropout,silent"


def test_fixtures_come_out_clean_or_explained(fixtures, tmp_path):
    """The SoundTrap files and the SongMeter deployment are clean; the SanctSound exemplar clips
    flag what they hold: one clipped acoustic release, and DC offsets of peak-normalised excerpts."""
    folder = tmp_path / "soundtrap"
    shutil.copytree(fixtures / "soundtrap", folder)
    store = str(tmp_path / "store")
    pi.ingest(pi.TimestampedFiles(str(folder), "soundtrap"), store, client="serial")
    q = stream(store).pam.quality()
    assert len(q) == 93 and q["computed"].all() and (q["flags"] == "").all()
    assert q["rms_dbfs"].between(-41, -33).all() and q["dc_offset"].abs().max() < 0.02

    clips = tmp_path / "clips"
    shutil.copytree(fixtures / "sanctsound" / "clips", clips)
    store = str(tmp_path / "sanct")
    pi.ingest(pi.TimestampedFiles(str(clips), "sanctsound-clips", name="sanctsound"), store, client="serial")
    tree = pi.open_store(store)
    frames = {p: tree[p].to_dataset().pam.quality() for p in pi.query.streams(tree)}
    flagged = {p: sorted(set(f["flags"]) - {""}) for p, f in frames.items() if (f["flags"] != "").any()}
    assert {p for p, fl in flagged.items() if "clipped" in fl} == {"sanctsound/CI04/48000Hz_1ch_pcm16"}
    assert all(set(fl) <= {"clipped", "dc_offset"} for fl in flagged.values())
    assert frames["sanctsound/CI04/48000Hz_1ch_pcm16"]["clipped"].max() == 200


def test_full_32_bit_rows_do_not_overflow_their_sums():
    """32-bit samples square up to 2**62: their sums go through float64, not int64 blocks."""
    x = np.clip(np.random.default_rng(0).normal(0, 2**29, (480_000, 1)), -2**31, 2**31 - 1).astype(np.int32)
    clipped, _, _, dc, rms = quality.row_stats(x, 2.0**31, quality.clip_levels(x.dtype, 2.0**31))
    assert rms == pytest.approx(20 * np.log10(np.sqrt((x.astype(np.float64) ** 2).mean()) / 2**31), abs=1e-9)
    assert dc == pytest.approx(x.astype(np.float64).mean() / 2**31, abs=1e-12)


def test_one_reading_of_a_streams_calibration_for_levels_and_spectra():
    from pamingest.hmd import resolve_calibration

    metadata = {"deployment_metadata": {"CALIBRATION": {"sensitivity_dB": -176.0, "gain_dB": 6.0}}}
    assert quality.rms_db_re_upa(np.array([-20.0]), metadata)[0] == pytest.approx(-20.0 + 170.0)
    assert quality.rms_db_re_upa(np.array([-20.0]), {"deployment_metadata": {}}) is None
    cal = resolve_calibration({"calibration_db": 177.96})
    assert float(cal.offset_db(np.array([1000.0]))[0]) == pytest.approx(177.96)


def plain_stats(x: np.ndarray, full_scale: float, levels: tuple[float, float]) -> tuple:
    """``row_stats`` computed plainly: Python integers for the sums of integer samples (exact), one
    channel at a time for the runs (from where the value changes)."""
    n, channels = x.shape
    if n == 0:
        return 0, 0, 0, 0.0, float("-inf")
    lo, hi = levels
    longest = 0
    for c in range(channels):
        changes = np.flatnonzero(x[1:, c] != x[:-1, c])
        longest = max(longest, int(np.diff(np.concatenate(([-1], changes, [n - 1]))).max()))
    if x.dtype.kind in "iu":
        values = x.astype(np.int64).T.tolist()
        means = np.array([float(sum(v)) for v in values]) / n
        squares = sum(v * v for channel in values for v in channel)
    else:
        means = x.astype(np.float64).mean(axis=0)
        squares = float((x.astype(np.float64) ** 2).sum())
    worst = int(np.argmax(np.abs(means)))
    with np.errstate(divide="ignore"):
        dbfs = float(20 * np.log10(np.sqrt(float(squares) / x.size) / full_scale))
    return (int(np.count_nonzero((x <= lo) | (x >= hi))), longest, int(np.count_nonzero(x == 0)),
            float(means[worst] / full_scale), dbfs)


def random_row(rng, dtype, bits: int, frames: int, channels: int) -> np.ndarray:
    """Noise at a random level with the defects row_stats looks for, at random: held values (short
    and long, alike in neighbouring channels), zeros, samples at both ends of the range, a dead channel."""
    if dtype == np.float32:
        top, bottom = 1.0, -1.0
    else:
        top, bottom = 2 ** (bits - 1) - 1, -(2 ** (bits - 1))
    x = rng.normal(0, top * 10 ** rng.uniform(-4, -0.3), (frames, channels))
    if dtype != np.float32:
        x = np.round(x)
    x = np.clip(x, bottom, top)
    for _ in range(rng.integers(0, 6) if frames else 0):
        a = rng.integers(0, max(1, frames))
        length = int(rng.choice([2, 3, 5, 12, 20, 33, 40, 70, 200, 3000]))
        value = rng.choice([0, bottom, top, x[a, 0]])
        x[a : a + length, rng.integers(0, channels)] = value
        if rng.random() < 0.3:  # the same value held in every channel: runs must not join across channels
            x[a : a + length] = value
    if channels > 1 and frames and rng.random() < 0.1:
        x[:, rng.integers(0, channels)] = rng.choice([0, x[0, 0]])
    return x.astype(dtype)


@pytest.mark.parametrize("dtype,bits", [(np.int16, 16), (np.int32, 24), (np.int32, 32), (np.float32, 32)])
def test_row_stats_equal_a_plain_computation(dtype, bits, monkeypatch):
    """Every shortcut of row_stats (clip counts only when reached, runs by binary lifting, exact sums in
    float64 chunks) gives the plain computation's values: exactly for integers of up to 24 bits, to
    float64 rounding for wider ones and floats. Then small chunks, few lifting levels and einsum's row
    dots (numpy < 2), so that short rows go through several chunks and the long-run path."""
    rng = np.random.default_rng(bits + np.dtype(dtype).itemsize)
    fs = 1.0 if dtype == np.float32 else 2.0 ** (bits - 1)
    levels = quality.clip_levels(dtype, fs)
    einsum = lambda a, b: np.einsum("ij,ij->i", a, b)  # noqa: E731 (row_stats' own on numpy < 2)
    for lift, chunk, dots in [(quality._LIFT_LEVELS, quality._CHUNK_SAMPLES, quality._row_dots), (3, 2048, einsum)]:
        monkeypatch.setattr(quality, "_LIFT_LEVELS", lift)
        monkeypatch.setattr(quality, "_CHUNK_SAMPLES", chunk)
        monkeypatch.setattr(quality, "_row_dots", dots)
        for frames in [0, 1, 2, 3, 7, 8, 9, 1000, 5003, 20000] * 2:
            for channels in [1, 2, 3]:
                x = random_row(rng, dtype, bits, frames, channels)
                got, want = quality.row_stats(x, fs, levels), plain_stats(x, fs, levels)
                what = (frames, channels, lift, chunk)
                assert quality.row_stats(np.asfortranarray(x), fs, levels) == got, what  # any memory layout
                assert got[:3] == want[:3], what
                if dtype == np.int16 or bits == 24:
                    assert got[3:] == want[3:], what
                else:
                    assert got[3] == pytest.approx(want[3], rel=1e-12, abs=1e-15), what
                    assert got[4] == pytest.approx(want[4], rel=1e-12), what


def test_row_stats_the_same_in_threads():
    """Each thread has its own scratch buffer: rows of different sizes computed at once in two threads
    (as ingest's stats pool does) give the serial results."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(5)
    rows = [random_row(rng, np.int16, 16, frames, channels) for frames in (48_000, 100_000, 7)
            for channels in (1, 2)] * 4
    levels = quality.clip_levels(np.int16, 32768.0)
    serial = [quality.row_stats(x, 32768.0, levels) for x in rows]
    with ThreadPoolExecutor(2) as pool:
        assert list(pool.map(lambda x: quality.row_stats(x, 32768.0, levels), rows)) == serial
