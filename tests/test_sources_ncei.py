"""NCEI NRS and PIFSC sources against a moto bucket laid out as gs://noaa-passive-bioacoustic."""

from __future__ import annotations

import datetime as dt
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import pamingest as pi
from pamingest.errors import SourceNotFoundError
from pamingest.sources.base import SourceFile
from pamingest.decode.xwav import read_directory as read_xwav_directory
from pamingest.sources.ncei import Ncei

from helpers import HeldRun, assert_stream_matches, by_name, to_ns

BUCKET = "noaa-passive-bioacoustic"
ROOT = f"s3://{BUCKET}"


def write_flac(path: Path, seconds: float, rate: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    samples = rng.integers(-2**15, 2**15, size=(int(seconds * rate), 1), dtype=np.int16)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), samples, rate, format="FLAC", subtype="PCM_16")
    return path


# ---------------------------------------------------------------- NRS

NRS = {
    "11/nrs_11_2019-2021": ["NRS11_20191231_230836.flac", "NRS11_20200101_030843.flac",
                            "NRS11_20200101_070850.flac",
                            "NRS11_20200101_110860.flac"],  # seconds = 60: 11:09:00
    "11/nrs_11_2015-2017": ["NRS11_20160101_000004.flac"],
    "01/nrs_01_2019": ["NRS01_20190601_000000.flac"],
}


@pytest.fixture
def nrs(s3, tmp_path):
    s3.bucket(BUCKET)
    for i, (folder, names) in enumerate(NRS.items()):
        for j, name in enumerate(names):
            path = write_flac(tmp_path / "nrs" / name, 2.2, 5000, seed=10 * i + j)
            s3.put(BUCKET, f"nrs/audio/{folder}/audio/{name}", path)
    return tmp_path / "nrs"


def test_nrs_names_with_seconds_sixty_ingest_at_the_rolled_over_time(s3, nrs, store):
    src = Ncei("nrs", ROOT, stations="11", deployments="nrs_11_2019-2021", storage_options=s3.storage_options)
    assert src.partitions() == ["11/nrs_11_2019-2021"]
    report = pi.ingest(src, store, client="serial", row_seconds=1)
    assert report.ingested == 4 and not report.failed, report.summary()
    ds = pi.open_store(store)["ncei/nrs_11_2019-2021/5000Hz_1ch_pcm16"].to_dataset()
    assert assert_stream_matches(ds, by_name(nrs)) == 4
    starts = dict(zip([u.rsplit("/", 1)[-1] for u in ds["file_url"].values], ds["file_start"].values))
    assert starts["NRS11_20200101_110860.flac"] == np.datetime64("2020-01-01T11:09:00")
    assert starts["NRS11_20191231_230836.flac"] == np.datetime64("2019-12-31T23:08:36")
    # The second row of the rolled-over file starts 1 s after 11:09:00.
    i = [u.rsplit("/", 1)[-1] for u in ds["file_url"].values].index("NRS11_20200101_110860.flac")
    row = np.flatnonzero((ds["file_index"].values == i) & (ds["file_offset"].values == 5000))[0]
    assert ds["chunk_start"].values[row] == np.datetime64("2020-01-01T11:09:01")
    assert ds.attrs["collection"] == "nrs" and ds.attrs["deployment"] == "nrs_11_2019-2021"


def test_nrs_time_range_prunes_deployments_by_their_years_and_files_by_4h_spans(s3, nrs):
    opts = s3.storage_options
    assert Ncei("nrs", ROOT, storage_options=opts).partitions() == [
        "01/nrs_01_2019", "11/nrs_11_2015-2017", "11/nrs_11_2019-2021"]
    src = Ncei("nrs", ROOT, start="2020-01-01T00:00", end="2020-01-01T08:00", storage_options=opts)
    assert src.partitions() == ["11/nrs_11_2019-2021"]
    # 23:08:36 + 4 h runs into the range; 11:09:00 starts after it.
    assert [r.name for r in src.list_partition("11/nrs_11_2019-2021")] == [
        "NRS11_20191231_230836.flac", "NRS11_20200101_030843.flac", "NRS11_20200101_070850.flac"]
    with pytest.raises(SourceNotFoundError, match="no deployment folder matches 2019-2021"):
        Ncei("nrs", ROOT, deployments="2019-2021", storage_options=opts).partitions()  # not a number
    assert Ncei("nrs", ROOT, stations=["01"], storage_options=opts).partitions() == ["01/nrs_01_2019"]
    with pytest.raises(SourceNotFoundError, match="nrs/audio/39: no such nrs folder"):
        Ncei("nrs", ROOT, stations="39", storage_options=opts).partitions()


def test_nrs_name_times_agree_with_the_archive_metadata(s3, fixtures):
    """The real NRS11 file names of three days, listed from the bucket layout, give the metadata's starts."""
    s3.bucket(BUCKET)
    want = {}
    for day in sorted((fixtures / "noaa-nrs" / "metadata").glob("*.json")):
        for entry in json.loads(day.read_text()):
            key = entry["uri"].split(f"{BUCKET}/", 1)[1]
            want[f"{ROOT}/{key}"] = to_ns(entry["start"])
            s3.put(BUCKET, key, b"")  # listing only: the records come from names, no audio is read
    src = Ncei("nrs", ROOT, storage_options=s3.storage_options)
    records = [r for p in src.partitions() for r in src.list_partition(p)]
    assert len(records) == len(want) == 19
    assert {r.url: r.start_ns for r in records} == want
    assert all(isinstance(r, SourceFile) and r.site == "nrs_11_2019-2021" for r in records)


# ---------------------------------------------------------------- PIFSC (XWAV in FLAC)

def harp_chunk(starts: list[dt.datetime], frames: list[int], rate: int) -> bytes:
    """A Triton ``harp`` chunk: 56-byte header, 32 bytes per raw file."""
    body = struct.pack("<B10s4s4s8sB8sHiih8s", 1, b"V2.64", b"K", b"Hawa", b"Hawaii14", 1, b"12345678",
                       len(starts), -157_000_000, 19_500_000, -700, b"")
    loc = 0
    for start, n in zip(starts, frames):
        body += struct.pack("<6BHIIIIB7s", start.year - 2000, start.month, start.day, start.hour, start.minute,
                            start.second, start.microsecond // 1000, loc, 2 * n, 2 * n, rate, 1, b"")
        loc += 2 * n
    assert len(body) == 56 + 32 * len(starts)
    return b"harp" + struct.pack("<I", len(body)) + body


def riff_header_chunks(rate: int, n_frames: int, harp: bytes) -> list[bytes]:
    fmt = b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate, 2 * rate, 2, 16)
    return [b"RIFF" + struct.pack("<I", 0) + b"WAVE", fmt, harp, b"data" + struct.pack("<I", 2 * n_frames)]


def write_xflac(path: Path, seconds_per_chunk: float, rate: int, starts: list[dt.datetime] | None, seed: int):
    """A FLAC as ``flac --keep-foreign-metadata`` makes from an XWAV: RIFF chunks in 'riff' APPLICATION blocks."""
    n = int(seconds_per_chunk * rate)
    rng = np.random.default_rng(seed)
    samples = rng.integers(-2**15, 2**15, size=(n * (len(starts) if starts else 3), 1), dtype=np.int16)
    return xflac_from(path, samples, rate, starts, [n] * len(starts) if starts else None)


def xflac_from(path: Path, samples: np.ndarray, rate: int, starts: list[dt.datetime] | None,
               frames: list[int] | None) -> Path:
    """``samples`` (int16) as an ``.x.flac`` whose directory lists raw files of ``frames`` at ``starts``."""
    plain = path.with_suffix(".plain.flac")
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(plain), samples, rate, format="FLAC", subtype="PCM_16")
    data = plain.read_bytes()
    plain.unlink()
    blocks, pos, last = [], 4, False
    while not last:
        last, kind, size = bool(data[pos] & 0x80), data[pos] & 0x7F, int.from_bytes(data[pos + 1 : pos + 4], "big")
        blocks.append((kind, data[pos + 4 : pos + 4 + size]))
        pos += 4 + size
    if starts:
        riff = [(2, b"riff" + c) for c in riff_header_chunks(rate, sum(frames), harp_chunk(starts, frames, rate))]
        blocks = blocks[:1] + riff + blocks[1:]
    out = bytearray(b"fLaC")
    for i, (kind, body) in enumerate(blocks):
        out += bytes([kind | (0x80 if i == len(blocks) - 1 else 0)]) + len(body).to_bytes(3, "big") + body
    path.write_bytes(bytes(out) + data[pos:])
    return path


def xwav_from(path: Path, samples: np.ndarray, rate: int, starts: list[dt.datetime], frames: list[int]) -> Path:
    """``samples`` (int16 mono) as an uncompressed ``.x.wav`` with the directory of ``xflac_from``."""
    chunks = riff_header_chunks(rate, len(samples), harp_chunk(starts, frames, rate))
    body = b"".join(chunks[1:]) + samples.astype("<i2").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WAVE" + body)
    return path


T0 = dt.datetime(2012, 12, 16, 19, 0, 0, 125_000)
PIFSC_DEP = "pipan/hawaii/pipan_hawaii_14"


@pytest.fixture
def pifsc(s3, tmp_path):
    s3.bucket(BUCKET)
    folder = tmp_path / "pifsc"
    folder.mkdir()
    files = {
        # continuous: three 1.5 s raw files back to back, the first at 19:00:00.125
        "Hawaii_K_14_121216_190000.df20.x.flac": [T0 + dt.timedelta(seconds=1.5 * i) for i in range(3)],
        # duty-cycled: 1.5 s every 5 min
        "Hawaii_K_14_121216_200000.df20.x.flac": [dt.datetime(2012, 12, 16, 20, 5 * i) for i in range(3)],
        # no harp chunk at all
        "Hawaii_K_14_121216_210000.df20.x.flac": None,
    }
    for i, (name, starts) in enumerate(files.items()):
        path = write_xflac(folder / name, 1.5, 10_000, starts, seed=i)
        s3.put(BUCKET, f"pifsc/audio/{PIFSC_DEP}/audio/{name}", path)
    s3.put(BUCKET, f"pifsc/audio/{PIFSC_DEP}/audio/README.flac", b"not an x.flac")  # ignored by suffix
    return folder


def test_xwav_directory_is_read_from_flac_foreign_metadata(s3, pifsc):
    url = f"{ROOT}/pifsc/audio/{PIFSC_DEP}/audio/Hawaii_K_14_121216_190000.df20.x.flac"
    subchunks, rate = read_xwav_directory(url, s3.storage_options)
    assert rate == 10_000 and [s.frames for s in subchunks] == [15_000] * 3
    assert subchunks[0].start_ns == to_ns("2012-12-16T19:00:00.125")
    assert subchunks[2].start_ns == to_ns("2012-12-16T19:00:03.125")
    plain = f"{ROOT}/pifsc/audio/{PIFSC_DEP}/audio/Hawaii_K_14_121216_210000.df20.x.flac"
    assert read_xwav_directory(plain, s3.storage_options) is None
    # ... and from an uncompressed .x.wav.
    header = b"".join(riff_header_chunks(10_000, 30_000, harp_chunk([T0, T0 + dt.timedelta(seconds=2)],
                                                                    [20_000, 10_000], 10_000)))
    s3.put(BUCKET, "pifsc/x.x.wav", header + bytes(60_000))
    subchunks, rate = read_xwav_directory(f"{ROOT}/pifsc/x.x.wav", s3.storage_options)
    assert [s.frames for s in subchunks] == [20_000, 10_000]


def test_pifsc_xwav_ingested_at_its_directory_times_a_duty_cycled_one_in_pieces(s3, pifsc, store):
    src = Ncei("pifsc", ROOT, stations="pipan", deployments=14, storage_options=s3.storage_options)
    assert src.partitions() == [PIFSC_DEP]
    report = pi.ingest(src, store, client="serial")
    assert report.ingested == 3 and not report.failed, report.summary()
    ds = pi.open_store(store)["ncei/pipan_hawaii_14/10000Hz_1ch_pcm16"].to_dataset()
    duty = f"{ROOT}/pifsc/audio/{PIFSC_DEP}/audio/Hawaii_K_14_121216_200000.df20.x.flac"
    # 1.5 s raw files every 5 min: three pieces of one, each timed by its own raw file
    pieces = {duty: [(15_000 * i, to_ns(f"2012-12-16T20:{5 * i:02d}")) for i in range(3)]}
    assert assert_stream_matches(ds, by_name(pifsc), pieces) == 3
    # The directory's first raw file (ms precision) times the file, not its name.
    assert ds["file_start"].values[0] == np.datetime64("2012-12-16T19:00:00.125")
    assert ds["file_start"].values[2] == np.datetime64("2012-12-16T21:00:00")
    assert list(ds["file_time_source"].values) == ["xwav", "xwav", "name"]


def test_pifsc_time_range_uses_the_xwav_span(s3, pifsc, tmp_path):
    opts = s3.storage_options

    def listed(**kw):
        records = Ncei("pifsc", ROOT, storage_options=opts, **kw).list_partition(PIFSC_DEP)
        return [r.name for r in records if isinstance(r, SourceFile)]

    def ingested(**kw):
        store = str(tmp_path / f"store-{len(list(tmp_path.iterdir()))}")
        report = pi.ingest(Ncei("pifsc", ROOT, storage_options=opts, **kw), store, client="serial")
        names = [] if not report.committed else [
            str(u).rsplit("/", 1)[-1] for path in pi.streams(pi.open_store(store))
            for u in pi.open_store(store)[path]["file_url"].values]
        return names, report

    # Listing only knows names: the file that may still be recording at the range's start is kept.
    assert listed(start="2012-12-16T19:00:05", end="2012-12-16T19:30") == ["Hawaii_K_14_121216_190000.df20.x.flac"]
    # Probing reads the directory: 19:00:00.125 + 4.5 s of raw files, so a range from 19:00:04 still
    # meets it and one from 19:00:05 does not.
    names, report = ingested(start="2012-12-16T19:00:04", end="2012-12-16T19:30")
    assert names == ["Hawaii_K_14_121216_190000.df20.x.flac"], report.summary()
    names, report = ingested(start="2012-12-16T19:00:05", end="2012-12-16T19:30")
    assert names == [] and report.outside_range == 1 and not report.committed, report.summary()
    # A duty-cycled file spans its pieces: its last (20:10:00, 1.5 s) meets a range from 20:09, which
    # its frames counted from its start (4.5 s) would miss; a range after it misses it.
    names, report = ingested(start="2012-12-16T20:09", end="2012-12-16T20:30")
    assert names == ["Hawaii_K_14_121216_200000.df20.x.flac"] and not report.failed, report.summary()
    names, report = ingested(start="2012-12-16T20:30", end="2012-12-16T21:30")
    assert names == ["Hawaii_K_14_121216_210000.df20.x.flac"] and not report.failed, report.summary()
    # Without the header check, files are timed (and selected) by name only.
    unchecked = Ncei("pifsc", ROOT, check_subchunks=False, storage_options=opts).list_partition(PIFSC_DEP)
    assert [r.start_ns for r in unchecked] == [to_ns("2012-12-16T19:00"), to_ns("2012-12-16T20:00"),
                                               to_ns("2012-12-16T21:00")]


def test_command_line(s3, nrs, tmp_path):
    from test_cli import run

    out = run("ingest", "ncei", "nrs", "--root", ROOT, "--endpoint-url", s3.endpoint, "--start", "2020-01-01",
              "--end", "2020-01-01T08:00", "--store", tmp_path / "store", "--serial", "--json")
    report = json.loads(out.stdout)
    assert (report["ingested"], report["failed"]) == (3, [])
    assert report["streams"] == ["ncei/nrs_11_2019-2021/5000Hz_1ch_pcm16"]


# ---------------------------------------------------------------- PIFSC duty-cycled: timed pieces of one file

RAW = 10_400  # frames of a raw file: 1.3 s at 8 kHz (a whole number of ms, as the directory counts)
DUTY_DEP = "pipan/hawaii/pipan_hawaii_15"
DUTY_STREAM = "ncei/pipan_hawaii_15/8000Hz_1ch_pcm16"
T1 = dt.datetime(2012, 12, 17, 0, 0, 0, 250_000)


@pytest.fixture
def duty_cycled(s3, fixtures, tmp_path):
    """Two duty-cycled XWAVs of real SoundTrap samples, an .x.flac and an .x.wav: six raw files each, in
    three runs of two (2.6 s) a minute apart, the .x.wav's runs going on where the .x.flac's stop.
    Returns URL -> (samples, raw files' starts, local path)."""
    s3.bucket(BUCKET)
    made = {}
    kinds = (("Hawaii_K_15_121217_000000.df20.x.flac", xflac_from), ("Hawaii_K_15_121217_000300.df20.x.wav", xwav_from))
    for k, (name, make) in enumerate(kinds):
        recording = sorted((fixtures / "soundtrap").glob("*.flac"))[k]
        samples = sf.read(str(recording), frames=6 * RAW, dtype="int16", always_2d=True)[0]
        starts = [T1 + dt.timedelta(minutes=3 * k + p, milliseconds=1300 * r) for p in range(3) for r in range(2)]
        path = make(tmp_path / "duty" / name, samples, 8000, starts, [RAW] * 6)
        made[s3.put(BUCKET, f"pifsc/audio/{DUTY_DEP}/audio/{name}", path)] = (samples, starts, path)
    return made


def duty_source(s3) -> Ncei:
    return Ncei("pifsc", ROOT, stations="pipan", deployments=15, storage_options=s3.storage_options)


def test_pifsc_duty_cycled_xwavs_are_stored_as_timed_pieces_of_one_file(s3, duty_cycled, store):
    from pamingest.info import store_info
    from pamingest.timing import offset_ns

    report = pi.ingest(duty_source(s3), store, client="serial", row_seconds=1)
    assert (report.ingested, report.rows, report.failed) == (2, 18, []), report.summary()
    assert report.audio_seconds == pytest.approx(2 * 6 * 1.3)
    ds = pi.open_store(store)[DUTY_STREAM].to_dataset()
    # Each file once in the files table, whole, timed by its first raw file.
    urls = [str(u) for u in ds["file_url"].values]
    assert sorted(urls) == sorted(duty_cycled)
    assert list(ds["file_status"].values) == ["ok", "ok"] and list(ds["file_frames"].values) == [6 * RAW] * 2
    assert list(ds["file_time_source"].values) == ["xwav", "xwav"]
    audio, n_valid = ds["audio"].values, ds["n_valid"].values
    fidx, offs = ds["file_index"].values, ds["file_offset"].values
    starts = ds["chunk_start"].values.astype("datetime64[ns]").astype(np.int64)
    file_start = ds["file_start"].values.astype("datetime64[ns]").astype(np.int64)
    for i, url in enumerate(urls):
        samples, raw, _ = duty_cycled[url]
        assert file_start[i] == to_ns(raw[0])
        rows = np.flatnonzero(fidx == i)
        rows = rows[np.argsort(offs[rows])]
        # Rows restart at each piece (20,800 samples): 8000, 8000 and 4800 valid (zero-padded).
        assert list(offs[rows]) == [p * 2 * RAW + k * 8000 for p in range(3) for k in range(3)]
        assert list(n_valid[rows]) == [8000, 8000, 4800] * 3
        for r in rows:
            o, n = int(offs[r]), int(n_valid[r])
            np.testing.assert_array_equal(audio[r, :n], samples[o : o + n], err_msg=f"{url} row {r}")
            assert not audio[r, n:].any()
            j = o // RAW  # the raw file holding the row's first sample: its own directory time
            assert starts[r] == to_ns(raw[j]) + offset_ns(o - j * RAW, 8000), (url, r)
    # A window across a gap: the end of the .x.flac's first piece, then the start of its second.
    samples, raw, _ = duty_cycled[urls[0]]
    t = to_ns(raw[0])
    w = ds.pam.window(t + 2 * 10**9, t + 61 * 10**9)
    np.testing.assert_array_equal(w.values, np.concatenate([samples[16_000 : 2 * RAW],
                                                            samples[2 * RAW : 2 * RAW + 8000]]))
    times = w["time"].values.astype("datetime64[ns]").astype(np.int64)
    assert (times[0], times[4799], times[4800]) == (t + 2 * 10**9, t + offset_ns(2 * RAW - 1, 8000), t + 60 * 10**9)
    # Coverage sees the duty cycle: 2.6 s every minute, six pieces of two files.
    coverage = ds.pam.coverage()
    assert list(coverage["start"].values.astype(np.int64)) == [to_ns(T1) + m * 60 * 10**9 for m in range(6)]
    assert list(coverage["seconds"]) == [2.6] * 6
    [info] = [s for s in store_info(store).streams if s.path == DUTY_STREAM]
    assert info.gaps == 5 and info.coverage.startswith("2.6 s every 1 min (6 spans)"), info.coverage
    assert info.files_ok == 2
    # Stored once: a second run finds nothing new.
    again = pi.ingest(duty_source(s3), store, client="serial")
    assert (again.ingested, again.skipped, again.committed) == (0, 2, False), again.summary()


def test_a_damaged_piece_fails_its_whole_xwav_and_the_mended_file_fills_the_dead_rows(s3, duty_cycled, store):
    [url] = [u for u in duty_cycled if u.endswith(".x.flac")]
    samples, raw, path = duty_cycled[url]
    data = path.read_bytes()
    middle = len(data) // 2  # in the second piece (file samples 20,800-41,600 of 62,400)
    key = url.removeprefix(f"{ROOT}/")
    s3.put(BUCKET, key, data[:middle] + bytes(64) + data[middle + 64 :])
    report = pi.ingest(duty_source(s3), store, client="serial", row_seconds=1)
    assert report.ingested == 1 and [f.url for f in report.failed] == [url], report.summary()
    assert "decoding failed at frame" in report.failed[0].reason
    ds = pi.open_store(store)[DUTY_STREAM].to_dataset()
    i = [str(u) for u in ds["file_url"].values].index(url)
    assert (ds["file_status"].values[i], ds["file_frames"].values[i]) == ("failed", 0)
    assert ds["file_error"].values[i] == report.failed[0].reason
    # Its first and last pieces decoded, but none of the file is stored: all 9 of its rows are dead.
    rows = np.flatnonzero(ds["file_index"].values == i)
    assert len(rows) == 9 and not ds["n_valid"].values[rows].any()
    assert np.isnat(ds["chunk_start"].values[rows]).all()
    assert len(ds.pam.coverage()) == 3  # the .x.wav's pieces only
    n_rows = ds.sizes["chunk"]
    s3.put(BUCKET, key, path)  # mended: a new ETag, taken again
    mended = pi.ingest(duty_source(s3), store, client="serial")
    assert (mended.ingested, mended.failed, mended.rows) == (1, [], 9), mended.summary()
    ds = pi.open_store(store)[DUTY_STREAM].to_dataset()
    assert ds.sizes["chunk"] == n_rows  # its pieces wrote into the rows the failed attempt left dead
    local = {u: p for u, (_, _, p) in duty_cycled.items()}
    pieces = {u: [(p * 2 * RAW, to_ns(starts[2 * p])) for p in range(3)] for u, (_, starts, _) in duty_cycled.items()}
    assert assert_stream_matches(ds, local.__getitem__, pieces) == 2


def test_a_duty_cycled_xwav_raced_by_another_run_is_moved_whole(s3, duty_cycled, store):
    """Run A writes the .x.wav's three pieces while run B lands the .x.flac in the same stream first:
    A's pieces are moved after B's rows together (one file, copied as encoded, nothing decoded
    twice), and the file keeps one entry."""
    from pamingest.decode.xwav import XwavDecoder

    opts = s3.storage_options
    run_a = HeldRun(Ncei("pifsc", ROOT, stations="pipan", deployments=15, start="2012-12-17T00:03",
                         storage_options=opts), store, XwavDecoder())
    b = pi.ingest(Ncei("pifsc", ROOT, stations="pipan", deployments=15, end="2012-12-17T00:02:59",
                       storage_options=opts), store, client="serial")
    a = run_a.release()
    assert (b.ingested, a.ingested, a.moved, a.failed) == (1, 1, 1, []), a.summary()
    assert a.rebuilds >= 1 and run_a.decoder.reads == 3  # a task per piece, never decoded again
    ds = pi.open_store(store)[DUTY_STREAM].to_dataset()
    assert [str(u).rsplit(".", 2)[-2:] for u in ds["file_url"].values] == [["x", "flac"], ["x", "wav"]]
    assert (ds["n_valid"].values > 0).all() and ds.sizes["chunk"] == 6  # a 10 s row per 2.6 s piece
    local = {u: p for u, (_, _, p) in duty_cycled.items()}
    pieces = {u: [(p * 2 * RAW, to_ns(starts[2 * p])) for p in range(3)] for u, (_, starts, _) in duty_cycled.items()}
    assert assert_stream_matches(ds, local.__getitem__, pieces) == 2


def test_a_duty_cycled_xwav_cut_short_keeps_its_pieces_up_to_its_end_and_one_holding_more_is_refused(tmp_path):
    """Pieces are placed by the directory's frame counts: a file cut short keeps the pieces (and the
    part of one) it holds, as ``partial``; one holding samples its directory does not list cannot
    place them, and is refused with the reason."""
    from pamingest.decode.base import Piece
    from pamingest.decode.xwav import XwavDecoder
    from pamingest.errors import DecodeError

    rng = np.random.default_rng(5)
    samples = rng.integers(-2**15, 2**15, size=(5 * 1000, 1), dtype=np.int16)
    starts = [T1 + dt.timedelta(seconds=s) for s in (0, 0.5, 60, 60.5, 120)]  # runs 0-1, 2-3, 4 at 2 kHz

    def probe(name: str, data: bytes):
        path = tmp_path / name
        path.write_bytes(data)
        return XwavDecoder().probe(SourceFile("pifsc", "x", 0, str(path), len(data)), {})

    whole = xwav_from(tmp_path / "whole.x.wav", samples, 2000, starts, [1000] * 5).read_bytes()
    info = probe("a.x.wav", whole)
    assert info.pieces == (Piece(to_ns(T1), 0, 2000), Piece(to_ns(starts[2]), 2000, 2000),
                           Piece(to_ns(starts[4]), 4000, 1000)) and not info.incomplete
    cut = probe("b.x.wav", whole[: len(whole) - 2 * 2500])  # ends 500 frames into the second piece
    assert cut.pieces == (Piece(to_ns(T1), 0, 2000), Piece(to_ns(starts[2]), 2000, 500))
    assert cut.incomplete.startswith("truncated: kept 2500 of the 5000 frames")
    more = xwav_from(tmp_path / "more.x.wav", np.concatenate([samples, samples[:10]]), 2000, starts, [1000] * 5)
    with pytest.raises(DecodeError, match="its directory lists 5000 frames, the file holds 5010"):
        probe("c.x.wav", more.read_bytes())
