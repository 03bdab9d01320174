"""MBARI Pacific Sound source: moto buckets with the real layouts, and the real ch01 listing."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import example, given, settings
from hypothesis import strategies as st

import pamingest as pi
from pamingest.errors import ConfigError
from pamingest.sources._select import months, select_time
from pamingest.sources.base import RejectedFile, SourceFile
from pamingest.sources.pacific_sound import PacificSound, listing_entries
from pamingest.timing import NS_PER_S

from helpers import assert_stream_matches, by_name, to_ns

FULL_SCALE = 2**23


def write_24bit(path: Path, seconds: float, rate: int, seed: int) -> np.ndarray:
    """A 24-bit mono WAV of noise that reaches both ends of the 24-bit range; its samples."""
    rng = np.random.default_rng(seed)
    samples = rng.integers(-FULL_SCALE, FULL_SCALE, size=int(seconds * rate), dtype=np.int32)
    samples[:4] = [-FULL_SCALE, FULL_SCALE - 1, 0, -1]
    path.parent.mkdir(parents=True, exist_ok=True)
    # soundfile takes int32 left-aligned and keeps the top 24 bits.
    sf.write(str(path), (samples << 8)[:, None], rate, subtype="PCM_24", format="WAV")
    return samples


MARS_FILES = ["08/MARS_20220831_235016.wav", "09/MARS_20220901_000016.wav",
              "09/MARS_20220901_001016.wav", "09/MARS_20220901_002016.wav"]


@pytest.fixture
def mars(s3, fixtures, tmp_path):
    """The 2022 256 kHz bucket (four short files), the daily metadata bucket, the deployment JSON."""
    s3.bucket("pacific-sound-256khz-2022")
    s3.bucket("pacific-sound-metadata")
    local = {}
    for i, key in enumerate(MARS_FILES):
        path = tmp_path / "256khz" / key
        write_24bit(path, 1.5, 256_000, seed=i)
        local[s3.put("pacific-sound-256khz-2022", key, path)] = path
    s3.put("pacific-sound-metadata", "256khz/2022/20220901.json", fixtures / "mbari" / "metadata" / "20220901.json")
    s3.put("pacific-sound-metadata", "deployments/MBARI_MARS_Hydrophone_Deployment02.json",
           fixtures / "mbari" / "MBARI_MARS_Hydrophone_Deployment02.json")
    return local


def test_256khz_24bit_read_back_bit_for_bit(s3, mars, store):
    src = PacificSound("256khz", start="2022-09-01T00:00:00", end="2022-09-01T00:15:00",
                       deployment_metadata_url="s3://pacific-sound-metadata/deployments/"
                                               "MBARI_MARS_Hydrophone_Deployment02.json",
                       storage_options=s3.storage_options)
    # The month before the range holds a file that runs into it.
    assert src.partitions() == ["2022/08", "2022/09"]
    report = pi.ingest(src, store, client="serial", row_seconds=0.5)
    assert report.ingested == 3 and not report.failed, report.summary()
    ds = pi.open_store(store)["pacific-sound/mars/256000Hz_1ch_pcm24"].to_dataset()
    assert ds["audio"].dtype == np.int32 and ds.attrs["bits_per_sample"] == 24
    assert assert_stream_matches(ds, lambda url: mars[url]) == 3
    assert [u.rsplit("/", 1)[-1] for u in ds["file_url"].values] == [
        "MARS_20220831_235016.wav", "MARS_20220901_000016.wav", "MARS_20220901_001016.wav"]
    # Both ends of the 24-bit range survive.
    first_rows = ds["audio"].values[ds["file_offset"].values == 0, :4, 0]
    assert (first_rows == [-FULL_SCALE, FULL_SCALE - 1, 0, -1]).all()
    attrs = ds.attrs
    assert (attrs["product"], attrs["full_scale_peak_volts"]) == ("256khz", 3.0)
    assert attrs["daily_metadata_url"] == "s3://pacific-sound-metadata/256khz"
    assert (attrs["latitude"], attrs["longitude"]) == (36.7128, -122.186)
    assert attrs["audio_start"] == "2017-06-13T18:15:50Z" and attrs["audio_end"] is None
    assert attrs["deployment_metadata"]["CALIBRATION"]["ID"] == "C4087"


def test_daily_metadata_is_used_where_present(s3, mars):
    src = PacificSound("256khz", start="2022-09-01T00:00:00", end="2022-09-01T00:15:00",
                       storage_options=s3.storage_options)
    records = [r for p in src.partitions() for r in src.list_partition(p)]
    fields = {r.name: dict(r.fields) for r in records}
    # 31 Aug has no metadata file: name time, nominal length.
    assert "time_source" not in fields["MARS_20220831_235016.wav"]
    meta = fields["MARS_20220901_000016.wav"]
    assert meta["time_source"] == "metadata" and meta["duration_secs"] == "600.0"
    assert meta["metadata_channels"] == "1" and meta["jitter_secs"] == "0" and "name_start" not in meta


def test_daily_metadata_start_and_duration_win_over_the_name(s3, mars, fixtures):
    entries = json.loads((fixtures / "mbari" / "metadata" / "20220901.json").read_text())
    for e in entries:
        if e["uri"].endswith("MARS_20220901_000016.wav"):
            e["duration_secs"] = 1200.0  # e.g. a file longer than the nominal 10 min
        if e["uri"].endswith("MARS_20220901_001016.wav"):
            e["start"] = "2022-09-01T00:10:16.25"
    s3.put("pacific-sound-metadata", "256khz/2022/20220901.json", json.dumps(entries).encode())
    src = PacificSound("256khz", start="2022-09-01T00:12:00", end="2022-09-01T00:13:00",
                       storage_options=s3.storage_options)
    records = src.list_partition("2022/09")
    # 00:00:16 + 1200 s runs past 00:12; with the nominal 600 s it would not.
    assert [r.name for r in records] == ["MARS_20220901_000016.wav", "MARS_20220901_001016.wav"]
    shifted = records[1]
    assert shifted.start_ns == to_ns("2022-09-01T00:10:16.25")
    assert dict(shifted.fields)["name_start"] == "2022-09-01T00:10:16Z"
    # A damaged metadata file is not used: names and nominal lengths again.
    s3.put("pacific-sound-metadata", "256khz/2022/20220901.json", b"[{not json")
    src = PacificSound("256khz", start="2022-09-01T00:12:00", end="2022-09-01T00:13:00",
                       storage_options=s3.storage_options)
    assert [r.name for r in src.list_partition("2022/09")] == ["MARS_20220901_001016.wav"]


def test_day_long_16khz_and_2khz_products(s3, store, tmp_path):
    local = {}
    for product, rate in (("16khz", 16_000), ("2khz", 2_000)):
        s3.bucket(f"pacific-sound-{product}")
        for day in ("20220901", "20220902"):
            name = f"MARS-{day}T000000Z-{rate // 1000}kHz.wav"
            path = tmp_path / product / name
            write_24bit(path, 7.3, rate, seed=int(day) + rate)
            local[s3.put(f"pacific-sound-{product}", f"2022/09/{name}", path)] = path
    for product in ("16khz", "2khz"):
        src = PacificSound(product, start="2022-09-02T06:00", end="2022-09-02T07:00",
                           storage_options=s3.storage_options)
        # A day-long file from 1 Sep ends at 2 Sep 00:00: only the 2 Sep file is selected.
        assert src.partitions() == ["2022/09"]
        assert [r.name for r in src.list_partition("2022/09")] == [f"MARS-20220902T000000Z-{product[:-3]}kHz.wav"]
        src = PacificSound(product, storage_options=s3.storage_options, first_year=2022, last_year=2022)
        report = pi.ingest(src, store, client="serial", row_seconds=2)
        assert report.ingested == 2 and not report.failed, report.summary()
    tree = pi.open_store(store)
    assert pi.streams(tree) == ["pacific-sound/mars/16000Hz_1ch_pcm24", "pacific-sound/mars/2000Hz_1ch_pcm24"]
    for name in pi.streams(tree):
        ds = tree[name].to_dataset()
        assert assert_stream_matches(ds, lambda url: local[url]) == 2
        assert ds["file_start"].values[1] == np.datetime64("2022-09-02T00:00:00")


def test_partitions_without_a_range_are_the_month_folders(s3, mars):
    src = PacificSound("256khz", storage_options=s3.storage_options, first_year=2021, last_year=2023)
    # 2021 and 2023 have no bucket here.
    assert src.partitions() == ["2022/08", "2022/09"]
    assert len(src.list_partition("2022/09")) == 3
    with pytest.raises(ConfigError, match="needs a {year} field"):
        PacificSound("256khz", url="s3://my-mirror/256khz")
    with pytest.raises(ConfigError, match="unknown Pacific Sound product"):
        PacificSound("64khz")


# ---------------------------------------------------------------- the real ch01 listing

@pytest.fixture(scope="module")
def ch01_listing(fixtures):
    return listing_entries((fixtures / "mbari" / "pacific-sound-ch01.listing.txt").read_text(), "pacific-sound-ch01")


# Nothing may reach a server in these tests: any request to this endpoint fails.
DEAD = {"endpoint_url": "http://127.0.0.1:9", "anon": True}


def test_ch01_listing_names_times_and_sizes(ch01_listing):
    records = PacificSound("ch01", storage_options=DEAD).records(ch01_listing)
    assert len(ch01_listing) == 2042
    # The .log.xml companions are ignored, every .wav name parses.
    assert len(records) == 1021 and all(isinstance(r, SourceFile) for r in records)
    assert records == sorted(records, key=lambda r: r.url)
    by_name_ = {r.name: r for r in records}
    first = by_name_["6716.221116080000.wav"]
    assert (first.site, first.start_ns, first.size) == ("ch01_6716", to_ns("2022-11-16T08:00:00"), 2073279180)
    assert first.url == "s3://pacific-sound-ch01/6716.221116080000.wav"
    last = by_name_["6998.221026110449.wav"]
    assert (last.start_ns, last.size) == (to_ns("2022-10-26T11:04:49"), 65788492)
    assert {r.site for r in records} == {"ch01_6716", "ch01_6998"}
    assert sum(r.size for r in records) == sum(e["size"] for e in ch01_listing if e["name"].endswith(".wav"))


def test_ch01_range_selects_prefix_partitions_without_listing(ch01_listing):
    src = PacificSound("ch01", start="2022-11-17", end="2022-11-17T12:00", storage_options=DEAD)
    parts = src.partitions()  # would fail on DEAD if it listed anything
    assert parts == ["6716.2211", "6998.2211"]
    # What S3 returns for those prefixes, run through the source, is what a whole listing gives.
    listed = [r for p in parts for r in src.records([e for e in ch01_listing
                                                    if e["name"].split("/", 1)[1].startswith(p)])]
    assert listed == src.records(ch01_listing)
    assert [(r.name, r.start_iso) for r in listed] == [
        ("6716.221116195948.wav", "2022-11-16T19:59:48Z"),  # 6 h file still running at 00:00
        ("6716.221117015941.wav", "2022-11-17T01:59:41Z"),
        ("6716.221117075938.wav", "2022-11-17T07:59:38Z"),
    ]
    # A range at the start of a month also lists the month before (a 6 h file may run over).
    assert PacificSound("ch01", start="2023-01-01T02:00", end="2023-01-02", storage_options=DEAD,
                        serials="6716").partitions() == ["6716.2212", "6716.2301"]
    assert PacificSound("ch01", start="2023-01-01", storage_options=DEAD, serials=None).partitions() == [""]


def test_ch01_selection_never_misses_a_recording_in_the_range(ch01_listing):
    """Against the real listing: every file whose span (from its size) meets the range is selected."""
    all_records = PacificSound("ch01", storage_options=DEAD).records(ch01_listing)
    span = {r.url: int((r.size - 44) / (48_000 * 2) * NS_PER_S) for r in all_records}  # 48 kHz 16-bit mono
    lo_all, hi_all = min(r.start_ns for r in all_records), max(r.start_ns for r in all_records)
    rng = random.Random(4)
    for _ in range(40):
        lo = rng.randrange(lo_all - 86400 * NS_PER_S, hi_all)
        hi = lo + rng.choice([60, 3600, 6 * 3600, 86400, 30 * 86400]) * NS_PER_S
        src = PacificSound("ch01", start=np.datetime64(lo, "ns"), end=np.datetime64(hi, "ns"), storage_options=DEAD)
        entries = [e for e in ch01_listing if e["name"].split("/", 1)[1].startswith(tuple(src.partitions()))]
        got = {r.url for r in src.records(entries)}
        must = {r.url for r in all_records if r.start_ns < hi and r.start_ns + span[r.url] > lo}
        assert must <= got, (lo, hi, sorted(must - got))
        # ... and nothing that certainly ends before the range or starts after it.
        assert all(r.start_ns < hi and r.start_ns + 6 * 3600 * NS_PER_S > lo
                   for r in all_records if r.url in got)


def test_ch01_soundtrap_files_from_a_prefix_partitioned_bucket(s3, fixtures, store, tmp_path):
    """Real SoundTrap recordings renamed into the ch01 form, with their .log.xml companions."""
    s3.bucket("pacific-sound-ch01")
    local = {}
    for flac in sorted((fixtures / "soundtrap").glob("*.flac")):
        stamp = flac.stem.split(".")[1]
        wav = tmp_path / f"6716.{stamp}.wav"
        data, rate = sf.read(str(flac), dtype="int16", always_2d=True)
        sf.write(str(wav), data, rate, subtype="PCM_16")
        local[s3.put("pacific-sound-ch01", wav.name, wav)] = wav
        s3.put("pacific-sound-ch01", f"6716.{stamp}.log.xml", b"<ST><EVENT/></ST>")
    s3.put("pacific-sound-ch01", "6716.garbled.wav", b"RIFF")
    src = PacificSound("ch01", start="2021-06-10T03:40", end="2021-06-10T04:00", storage_options=s3.storage_options)
    assert src.partitions() == ["6716.2106", "6998.2106"]
    report = pi.ingest(src, store, client="serial")
    assert report.ingested == 3 and report.failed == [], report.summary()
    ds = pi.open_store(store)["pacific-sound/ch01_6716/8000Hz_1ch_pcm16"].to_dataset()
    assert assert_stream_matches(ds, by_name(tmp_path)) == 3
    # Without a range, the serial prefix is one partition, and the garbled name is reported.
    everything = PacificSound("ch01", serials="6716", storage_options=s3.storage_options)
    assert everything.partitions() == ["6716."]
    records = everything.list_partition("6716.")
    assert [type(r) for r in records] == [SourceFile] * 3 + [RejectedFile]
    assert [r.url for r in records[:3]] == sorted(local)


def test_command_line(s3, mars, tmp_path):
    from test_cli import run

    out = run("ingest", "pacific-sound", "256khz", "--endpoint-url", s3.endpoint, "--start", "2022-09-01T00:05",
              "--end", "2022-09-01T00:15", "--row-seconds", "0.5", "--store", tmp_path / "store", "--serial", "--json")
    report = json.loads(out.stdout)
    assert (report["ingested"], report["failed"]) == (2, [])
    assert report["streams"] == ["pacific-sound/mars/256000Hz_1ch_pcm24"]
    bad = run("ingest", "pacific-sound", "ch01", "--start", "2023-02-01", "--end", "2023-01-01",
              "--store", tmp_path / "store", "--serial", check=False)
    assert bad.returncode == 2 and "before it starts" in bad.stderr and "Traceback" not in bad.stderr


# ---------------------------------------------------------------- partition and selection arithmetic

T_MIN, T_MAX = to_ns("2015-01-01"), to_ns("2030-01-01")


@settings(max_examples=300, deadline=None)
@given(lo=st.integers(T_MIN, T_MAX), length=st.integers(1, 800 * 86400 * NS_PER_S))
def test_months_are_exactly_those_meeting_the_range(lo, length):
    hi = lo + length
    got = months(lo, hi)
    first, last = np.datetime64(lo, "ns").astype("datetime64[M]"), np.datetime64(hi - 1, "ns").astype("datetime64[M]")
    want = np.arange(first, last + np.timedelta64(1, "M"))
    assert got == [(int(str(m)[:4]), int(str(m)[5:7])) for m in want]


@settings(max_examples=200, deadline=None)
@given(starts=st.lists(st.integers(0, 10**6), min_size=1, max_size=30, unique=True),
       durations=st.lists(st.one_of(st.none(), st.integers(1, 10**5)), min_size=30, max_size=30),
       lo=st.integers(-10**5, 10**6), length=st.integers(1, 10**6))
@example(starts=[0, 20], durations=[10, 5] + [None] * 28, lo=10, length=10)  # ends exactly at lo / starts at hi
def test_select_time_keeps_every_file_that_may_overlap(starts, durations, lo, length):
    hi = lo + length
    records = [SourceFile("s", "site", t, f"u{i:03d}", 1) for i, t in enumerate(starts)]
    dur = {r.url: d for r, d in zip(records, durations)}
    got = {r.url for r in select_time(records, lo, hi, lambda r: dur[r.url])}
    for r in records:
        d = dur[r.url]
        if d is not None:
            assert (r.url in got) == (r.start_ns < hi and r.start_ns + d > lo)
        elif lo <= r.start_ns < hi:
            assert r.url in got
    # Of the files of unknown length starting before lo, only the last file to start by lo may be kept.
    before = [r for r in records if r.start_ns <= lo]
    last = max(before, key=lambda r: r.start_ns).url if before else None
    extra = {r.url for r in records if dur[r.url] is None and r.start_ns < lo and r.url in got}
    assert extra <= {last}
