"""Orcasound HLS sessions and FLAC archives from a moto bucket with the real layout."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest
import soundfile as sf

import pamingest as pi
from pamingest.sources.orcasound import OrcasoundFLAC, OrcasoundHLS
from pamingest.testing import hls_segments, tone_and_noise
from pamingest.timing import NS_PER_S

from helpers import window_ns

BUCKET = "audio-orcasound-net"
LAB = "rpi_orcasound_lab"
E1 = 1_622_000_000  # session folder epochs
E2 = E1 + 3600


def reference_decode(segments: list[bytes]) -> np.ndarray:
    """An independent whole-session decode: one PyAV decoder through every segment, ffmpeg s16 scaling."""
    decoder = av.CodecContext.create("aac", "r")
    out = []
    for data in segments:
        with av.open(io.BytesIO(data)) as c:
            for packet in c.demux(c.streams.audio[0]):
                if packet.size:
                    out += [f.to_ndarray() for f in decoder.decode(packet)]
    return np.clip(np.round(np.concatenate(out, axis=1).T * 32768), -32768, 32767).astype(np.int16)


def first_pts(data: bytes) -> float:
    with av.open(io.BytesIO(data)) as c:
        s = c.streams.audio[0]
        return next(p.pts for p in c.demux(s) if p.size) * float(s.time_base)


@pytest.fixture
def fixture_segments(fixtures):
    return [(fixtures / "orcasound" / "hls" / f"live00{i}.ts").read_bytes() for i in range(3)]


@pytest.fixture
def orca_bucket(s3, fixture_segments):
    """Session 1: the fixture segments as live998/999/1000 (lexical != numeric order);
    session 2 an hour later: the same three plus a short and an undecodable segment."""
    s3.bucket(BUCKET)
    for n, data in zip((998, 999, 1000), fixture_segments):
        s3.put(BUCKET, f"{LAB}/hls/{E1}/live{n}.ts", data)
    s3.put(BUCKET, f"{LAB}/hls/{E1}/live.m3u8", b"#EXTM3U\n#EXTINF:10.0,\nlive1000.ts\n")
    s3.put(BUCKET, f"{LAB}/latest.txt", str(E2).encode())
    for n, data in enumerate(fixture_segments):
        s3.put(BUCKET, f"{LAB}/hls/{E2}/live{n:03d}.ts", data)
    s3.put(BUCKET, f"{LAB}/hls/{E2}/live003.ts", fixture_segments[2][: 188 * 30])  # 0.28 s: short
    s3.put(BUCKET, f"{LAB}/hls/{E2}/live004.ts", b"\x47" + b"\x00" * 5000)  # not MPEG-TS
    return s3


def lab_stream(store):
    tree = pi.open_store(store)
    return tree[f"orcasound/{LAB}/48000Hz_2ch_pcm16"].to_dataset()


def assert_same_rows(a, b, n_rows: int) -> None:
    """Two streams hold the same rows: count, valid samples, times and audio."""
    assert a.sizes["chunk"] == b.sizes["chunk"] == n_rows
    for name in ("n_valid", "chunk_start", "audio"):
        np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)


def session_samples(ds, epoch: int) -> np.ndarray:
    """A session's rows concatenated in time order."""
    rows = ds.pam.rows
    rows = rows[rows["file"].str.contains(f"/hls/{epoch}/")]
    audio, n_valid = ds["audio"].values, ds["n_valid"].values
    return np.concatenate([audio[r, : n_valid[r]] for r in rows["row"]])


def test_sessions_segments_order_samples_and_timing(orca_bucket, fixture_segments, store):
    src = OrcasoundHLS([LAB], storage_options=orca_bucket.storage_options)
    assert src.partitions() == [f"{LAB}/hls/{E1}", f"{LAB}/hls/{E2}"]
    names = [f.url.rsplit("/", 1)[-1] for f in src.list_partition(f"{LAB}/hls/{E1}")]
    assert names == ["live998.ts", "live999.ts", "live1000.ts"]  # numeric, not lexical; no m3u8
    report = pi.ingest(src, store, client="serial")
    assert report.ingested == 6
    reasons = {f.url.rsplit("/", 1)[-1]: f.reason for f in report.failed}
    assert set(reasons) == {"live003.ts", "live004.ts"}
    assert reasons["live003.ts"].startswith("short segment")
    assert "MPEG-TS" in reasons["live004.ts"] or "no AAC" in reasons["live004.ts"]
    ds = lab_stream(store)
    reference = reference_decode(fixture_segments)
    np.testing.assert_array_equal(session_samples(ds, E1), reference)
    np.testing.assert_array_equal(session_samples(ds, E2), reference)
    # Time: a run starts at epoch + (PTS - 1.4 s); each segment's first sample, counted, is
    # within one AAC frame of its own PTS (the streamer's timestamps jitter by a few ticks).
    urls = list(ds["file_url"].values)
    fstart = ds["file_start"].values.astype("datetime64[ns]").astype(np.int64)
    rows = ds.pam.rows
    t0 = rows["start"].iloc[0].value
    assert t0 == E1 * NS_PER_S + round((first_pts(fixture_segments[0]) - 1.4) * NS_PER_S)
    counted = 0
    for n, data in zip((998, 999, 1000), fixture_segments):
        i = urls.index(f"s3://{BUCKET}/{LAB}/hls/{E1}/live{n}.ts")
        by_pts = E1 * NS_PER_S + round((first_pts(data) - 1.4) * NS_PER_S)
        assert fstart[i] == by_pts
        by_count = t0 + counted * NS_PER_S // 48000
        assert abs(by_count - by_pts) <= 1024 * NS_PER_S // 48000
        counted += 469 * 1024
    # The gap between sessions stays a gap: no sample is invented.
    w = ds.pam.window(np.datetime64(E1, "s"), np.datetime64(E2 + 60, "s"))
    assert w.sizes["time"] == 2 * len(reference)
    t = window_ns(w)
    jump = np.flatnonzero(np.diff(t) > NS_PER_S)
    assert len(jump) == 1 and t[jump[0] + 1] - t[jump[0]] > 3500 * NS_PER_S
    assert ds.attrs["time_uncertainty_seconds"] == 3.0
    # Re-running adds nothing.
    again = pi.ingest(src, store, client="serial")
    assert again.ingested == 0 and not again.failed


def test_an_odd_segment_name_is_rejected_and_the_session_ingested(s3, fixture_segments, store):
    """A .ts object the streamer did not name (live1816b.ts, xlive001.ts) is rejected with the reason,
    not skipped and not taken for a segment of the session; the session lands as one run, bit-exact."""
    s3.bucket(BUCKET)
    for n, data in enumerate(fixture_segments):
        s3.put(BUCKET, f"{LAB}/hls/{E1}/live{n:03d}.ts", data)
    s3.put(BUCKET, f"{LAB}/hls/{E1}/live1816b.ts", fixture_segments[1])
    s3.put(BUCKET, f"{LAB}/hls/{E1}/xlive001.ts", fixture_segments[1])
    s3.put(BUCKET, f"{LAB}/hls/{E1}/live.m3u8", b"#EXTM3U\n")  # a playlist: not audio, not a rejection
    src = OrcasoundHLS([LAB], storage_options=s3.storage_options)
    report = pi.ingest(src, store, client="serial")
    assert {f.url: f.reason for f in report.failed} == {
        f"s3://{BUCKET}/{LAB}/hls/{E1}/live1816b.ts": "live1816b.ts: not a segment name of the form liveN.ts",
        f"s3://{BUCKET}/{LAB}/hls/{E1}/xlive001.ts": "xlive001.ts: not a segment name of the form liveN.ts",
    }
    assert report.ingested == 3 and report.streams == [f"orcasound/{LAB}/48000Hz_2ch_pcm16"]
    ds = lab_stream(store)
    assert [u.rsplit("/", 1)[-1] for u in ds["file_url"].values] == ["live000.ts", "live001.ts", "live002.ts"]
    np.testing.assert_array_equal(session_samples(ds, E1), reference_decode(fixture_segments))
    assert ds.pam.rows["start"].iloc[0].value == E1 * NS_PER_S + round((first_pts(fixture_segments[0]) - 1.4) * NS_PER_S)
    again = pi.ingest(src, store, client="serial")
    assert (again.ingested, again.skipped, again.failed) == (0, 5, [])


def test_a_session_beyond_the_supported_times_is_rejected_at_listing(s3, fixture_segments, store):
    """A session folder whose epoch (11 digits) is past 2262 cannot be timed in int64 nanoseconds:
    its segments are rejected when listed, for any source (ingest.unstorable), and the node's
    other session lands."""
    s3.bucket(BUCKET)
    s3.put(BUCKET, f"{LAB}/hls/{E1}/live000.ts", fixture_segments[0])
    s3.put(BUCKET, f"{LAB}/hls/99999999999/live000.ts", fixture_segments[0])
    report = pi.ingest(OrcasoundHLS([LAB], storage_options=s3.storage_options), store, client="serial")
    assert {f.url: f.reason for f in report.failed} == {
        f"s3://{BUCKET}/{LAB}/hls/99999999999/live000.ts": "live000.ts: start time 5138-11-16T09:46:39Z is outside "
        "the supported range 1678-01-01 to 2262-01-01 UTC (what the store's int64 nanosecond times hold)"}
    assert report.ingested == 1
    np.testing.assert_array_equal(session_samples(lab_stream(store), E1), reference_decode(fixture_segments[:1]))


def test_single_segment_matches_ffmpeg_bit_for_bit(s3, fixtures, store):
    s3.bucket(BUCKET)
    s3.put(BUCKET, f"rpi_port_townsend/hls/{E1}/live000.ts", fixtures / "orcasound/hls/live000.ts")
    pi.ingest(OrcasoundHLS(["rpi_port_townsend"], storage_options=s3.storage_options), store, client="serial")
    ds = pi.open_store(store)["orcasound/rpi_port_townsend/48000Hz_2ch_pcm16"].to_dataset()
    got = np.concatenate([ds["audio"].values[r, :n] for r, n in enumerate(ds["n_valid"].values)])
    want, rate = sf.read(fixtures / "orcasound/hls/live000.ffmpeg-decoded.wav", dtype="int16")
    assert rate == 48000 and got.shape == want.shape == (480256, 2)
    np.testing.assert_array_equal(got, want)


def test_sliced_and_whole_session_ingests_are_identical(s3, tmp_path):
    """Tasks of one row, decode blocks of two segments: same samples as one task for all."""
    s3.bucket(BUCKET)
    segments = hls_segments(tone_and_noise(75, channels=1, seed=3))
    for n, data in enumerate(segments):
        s3.put(BUCKET, f"rpi_bush_point/hls/{E1}/live{n:03d}.ts", data)
    src = OrcasoundHLS(["rpi_bush_point"], storage_options=s3.storage_options, block_segments=2)
    pi.ingest(src, str(tmp_path / "whole"), client="serial", rows_per_task=10_000)
    pi.ingest(src, str(tmp_path / "sliced"), client="serial", rows_per_task=1)
    a = pi.open_store(str(tmp_path / "whole"))["orcasound/rpi_bush_point/48000Hz_1ch_pcm16"].to_dataset()
    b = pi.open_store(str(tmp_path / "sliced"))["orcasound/rpi_bush_point/48000Hz_1ch_pcm16"].to_dataset()
    assert a.sizes["chunk"] == b.sizes["chunk"] == 8
    np.testing.assert_array_equal(a["audio"].values, b["audio"].values)
    np.testing.assert_array_equal(a["chunk_start"].values, b["chunk_start"].values)
    # Within a decode block the samples equal an uninterrupted decode of the session.
    ref = reference_decode(segments)
    got = np.concatenate([a["audio"].values[r, :n] for r, n in enumerate(a["n_valid"].values)])
    assert got.shape == ref.shape
    np.testing.assert_array_equal(got[: 2 * 469 * 1024], ref[: 2 * 469 * 1024])
    # Across a block boundary the primed decoder leaves no glitch: the first frame after it matches.
    k = 2 * 469 * 1024
    np.testing.assert_array_equal(got[k : k + 1024], ref[k : k + 1024])


@pytest.mark.parametrize("stored_block", [2, None], ids=["recorded", "legacy-store"])
def test_a_continued_run_keeps_the_block_size_it_was_decoded_with(s3, tmp_path, stored_block):
    """A grown session is continued in the stored run's decode blocks, whatever block size the
    later run is given; a store from before block sizes were recorded continues in blocks of 64."""
    import zarr

    from pamingest.decode.hls import LEGACY_BLOCK_SEGMENTS, RUNS_GROUP
    from pamingest.store.repo import Store

    s3.bucket(BUCKET)
    segments = hls_segments(tone_and_noise(45, channels=1, seed=5))  # 5 segments
    for n, data in enumerate(segments[:3]):
        s3.put(BUCKET, f"rpi_bush_point/hls/{E1}/live{n:03d}.ts", data)
    block = stored_block or LEGACY_BLOCK_SEGMENTS
    opts = s3.storage_options
    grown = str(tmp_path / "grown")
    pi.ingest(OrcasoundHLS(["rpi_bush_point"], storage_options=opts, block_segments=block), grown, client="serial")
    stream = "orcasound/rpi_bush_point/48000Hz_1ch_pcm16"
    if stored_block is None:  # what a store written before run_block_segments existed looks like
        st = Store.open(grown)
        session = st.writable()
        zarr.open_group(session.store, path=f"{stream}/{RUNS_GROUP}", mode="r+").__delitem__("run_block_segments")
        session.commit("drop run_block_segments (a store from before it existed)")
    for n, data in enumerate(segments[3:], start=3):
        s3.put(BUCKET, f"rpi_bush_point/hls/{E1}/live{n:03d}.ts", data)
    pi.ingest(OrcasoundHLS(["rpi_bush_point"], storage_options=opts, block_segments=3), grown, client="serial",
              rows_per_task=1)
    once = str(tmp_path / "once")
    pi.ingest(OrcasoundHLS(["rpi_bush_point"], storage_options=opts, block_segments=block), once, client="serial")
    a = pi.open_store(grown)[stream].to_dataset()
    b = pi.open_store(once)[stream].to_dataset()
    np.testing.assert_array_equal(a["audio"].values, b["audio"].values)
    np.testing.assert_array_equal(a["chunk_start"].values, b["chunk_start"].values)
    runs = pi.open_store(grown)[f"{stream}/runs"].to_dataset()
    assert list(runs["run_block_segments"].values) == [block]


def test_write_tasks_start_at_decode_block_starts(s3, tmp_path):
    """No task starts inside a decode block: it would decode the block's head again."""
    from pamingest.ingest import task_rows, plan, probe
    from pamingest.executor import SerialExecutor
    from pamingest.decode.hls import HlsDecoder
    from pamingest.sources.base import list_source
    from pamingest.store.catalog import read_catalog
    from pamingest.store.repo import Store

    s3.bucket(BUCKET)
    segments = hls_segments(tone_and_noise(75, channels=1, seed=3))  # 8 segments, ~80 rows of 1 s
    for n, data in enumerate(segments):
        s3.put(BUCKET, f"rpi_bush_point/hls/{E1}/live{n:03d}.ts", data)
    src = OrcasoundHLS(["rpi_bush_point"], storage_options=s3.storage_options)
    decoder = HlsDecoder(block_segments=3)
    files = [f for f in list_source(src)]
    probed, rejected = probe(SerialExecutor(), decoder, files, s3.storage_options, 8)
    assert not rejected
    root = Store.open(str(tmp_path / "s"), create=True).root()
    (unit,) = plan(decoder, probed, root, read_catalog(root), 1.0)
    spr = 48_000
    unit.rows = list(range(-(-unit.n_samples // spr)))
    tasks = task_rows(unit, spr, rows_per_task=4)
    starts = [seg.start for seg in unit.source.segments if seg.number % 3 == 0]
    # Every block start begins a task (at the first row starting at or after it) ...
    for sample in starts[1:]:
        assert -(-sample // spr) in {lo for lo, _ in tasks}
    # ... tasks cover every row once, and none holds more than rows_per_task rows.
    assert [r for lo, hi in tasks for r in range(lo, hi)] == list(range(len(unit.rows)))
    assert max(hi - lo for lo, hi in tasks) <= 4


def test_a_probed_segment_is_decoded_from_the_probe_not_read_again(s3, fixture_segments):
    """In one process the decode takes the probe's demuxed packets: no second download."""
    from pamingest.decode.hls import DEMUXED, RunSegment, decode_run, probe_segment

    s3.bucket(BUCKET)
    key = f"{LAB}/hls/{E1}/live000.ts"
    url = s3.put(BUCKET, key, fixture_segments[0])
    info = probe_segment(url, len(fixture_segments[0]), s3.storage_options)
    s3.delete(BUCKET, key)  # from now on, only the probe's packets can give its samples
    segment = (RunSegment(url, 0, 0, info.samples),)
    from_probe = np.concatenate(list(decode_run(segment, 0, info.samples, s3.storage_options)))
    assert DEMUXED.take(url) is None  # taken, not kept
    with pytest.raises(pi.DecodeError, match="not found|No such|does not exist"):
        list(decode_run(segment, 0, info.samples, s3.storage_options))  # taken: a second decode must read
    np.testing.assert_array_equal(from_probe, reference_decode(fixture_segments[:1]))


def test_probing_segments_asks_for_each_object_once(s3, fixture_segments):
    """One GET per segment and no HEAD: s3fs asks an object's size before a whole-object read
    unless told not to split it, which doubled the probe's requests (and their latency)."""
    from pamingest.decode.hls import HlsDecoder
    from pamingest.fsutil import filesystem
    from pamingest.sources.base import SourceFile

    s3.bucket(BUCKET)
    files = []
    for n, data in enumerate(fixture_segments + fixture_segments):
        url = s3.put(BUCKET, f"{LAB}/hls/{E1}/live{n:03d}.ts", data)
        files.append(SourceFile("orcasound", LAB, E1 * NS_PER_S, url, len(data), f"etag{n}"))
    fs, _ = filesystem(files[0].url, s3.storage_options)
    fs.ls(f"{BUCKET}/{LAB}")  # starts fs's client, so that its request events can be counted
    calls: list[str] = []

    def count(event_name, **kwargs):
        calls.append(event_name.split(".")[-1])

    fs.s3.meta.events.register("before-call.s3", count)
    try:
        infos = HlsDecoder().probe_many(files, s3.storage_options)
    finally:
        fs.s3.meta.events.unregister("before-call.s3", count)
    assert [info.samples for info in infos] == [len(reference_decode([d])) for d in fixture_segments] * 2
    assert sorted(calls) == ["GetObject"] * len(files)


def _demuxed_segments_held() -> int:
    from pamingest.decode.hls import DEMUXED

    return len(DEMUXED)


def test_on_a_cluster_each_block_is_decoded_by_the_worker_that_probed_it(s3, tmp_path):
    """The probe keeps a block's demuxed segments on its worker; the block's write task is sent
    there and takes them: no worker is left holding segments nobody decoded from memory."""
    from distributed import Client

    from pamingest.executor import local_cluster

    s3.bucket(BUCKET)
    segments = hls_segments(tone_and_noise(240, channels=1, seed=9))  # 24 segments: 12 blocks of 2
    for n, data in enumerate(segments):
        s3.put(BUCKET, f"rpi_bush_point/hls/{E1}/live{n:03d}.ts", data)
    src = OrcasoundHLS(["rpi_bush_point"], storage_options=s3.storage_options, block_segments=2)
    with local_cluster(2) as cluster, Client(cluster, set_as_default=False) as client:
        report = pi.ingest(src, str(tmp_path / "store"), client=client)
        left = client.run(_demuxed_segments_held)
    assert report.ingested == 24 and not report.failed
    assert set(left.values()) == {0}, left
    pi.ingest(src, str(tmp_path / "serial"), client="serial")
    stream = "orcasound/rpi_bush_point/48000Hz_1ch_pcm16"
    a = pi.open_store(str(tmp_path / "store"))[stream].to_dataset()
    b = pi.open_store(str(tmp_path / "serial"))[stream].to_dataset()
    np.testing.assert_array_equal(a["audio"].values, b["audio"].values)


def test_grown_live_session_continues_without_duplicate_or_gap(s3, fixture_segments, tmp_path):
    s3.bucket(BUCKET)
    for n, data in zip((998, 999), fixture_segments):
        s3.put(BUCKET, f"{LAB}/hls/{E1}/live{n}.ts", data)
    src = OrcasoundHLS([LAB], storage_options=s3.storage_options)
    grown = str(tmp_path / "grown")
    first = pi.ingest(src, grown, client="serial")
    assert first.ingested == 2 and first.rows == 3  # 960,512 samples: 2 full rows + a partial one
    s3.put(BUCKET, f"{LAB}/hls/{E1}/live1000.ts", fixture_segments[2])
    second = pi.ingest(src, grown, client="serial")
    assert second.ingested == 1 and second.skipped == 2
    once = str(tmp_path / "once")
    pi.ingest(src, once, client="serial")
    a, b = lab_stream(grown), lab_stream(once)
    assert_same_rows(a, b, 4)
    np.testing.assert_array_equal(session_samples(a, E1), reference_decode(fixture_segments))


def test_two_runs_continuing_one_live_session_at_once(s3, fixture_segments, tmp_path):
    """B continues a stored session with one new segment; A, started later, lists two. B lands
    first: A's run shares a segment with B's and continued the same stored run, so A plans again on
    top of B's rows and adds only the segment B did not have. The store equals a one-shot ingest."""
    from pamingest.decode.hls import HlsDecoder

    from helpers import HeldRun

    s3.bucket(BUCKET)
    put = lambda n: s3.put(BUCKET, f"{LAB}/hls/{E1}/live{n}.ts", fixture_segments[n - 998])  # noqa: E731
    src = OrcasoundHLS([LAB], storage_options=s3.storage_options)
    raced = str(tmp_path / "raced")
    put(998)
    assert pi.ingest(src, raced, client="serial").ingested == 1
    put(999)
    run_b = HeldRun(src, raced, HlsDecoder())
    put(1000)
    run_a = HeldRun(src, raced, HlsDecoder())
    b = run_b.release()
    a = run_a.release()
    assert (b.ingested, b.rounds) == (1, 1), b.summary()
    assert a.rebuilds >= 1 and a.rounds == 2 and a.ingested == 1 and not a.failed, a.summary()
    once = str(tmp_path / "once")
    pi.ingest(src, once, client="serial")
    x, y = lab_stream(raced), lab_stream(once)
    assert_same_rows(x, y, 4)
    assert sorted(x["file_url"].values.tolist()) == sorted(y["file_url"].values.tolist())


def test_orcasound_flac_archive(s3, fixtures, store):
    s3.bucket(BUCKET)
    files = sorted((fixtures / "soundtrap").glob("*.flac"))
    names = ["2021-06-10_03-36-55", "2021-06-10_03-41-55", "2021-06-10_03-46-55"]
    for name, f in zip(names, files):
        s3.put(BUCKET, f"{LAB}/flac/{name}_{LAB}-8000-1.flac", f)
    src = OrcasoundFLAC([LAB], start="2021-06-10T03:40:00", end="2021-06-10T04:00:00",
                        storage_options=s3.storage_options)
    report = pi.ingest(src, store, client="serial")
    assert report.ingested == 2  # the first file ends before the range
    ds = pi.open_store(store)[f"orcasound/{LAB}/8000Hz_1ch_pcm16"].to_dataset()
    w = ds.pam.window("2021-06-10T03:41:55", "2021-06-10T03:42:05")
    np.testing.assert_array_equal(w.values, sf.read(files[1], dtype="int16", always_2d=True)[0][:80000])


def test_time_range_selects_sessions(orca_bucket):
    src = OrcasoundHLS([LAB], start=np.datetime64(E2 + 10, "s"), end=np.datetime64(E2 + 20, "s"),
                       storage_options=orca_bucket.storage_options)
    assert src.partitions() == [f"{LAB}/hls/{E2}"]
    names = [f.url.rsplit("/", 1)[-1] for f in src.list_partition(f"{LAB}/hls/{E2}")]
    assert names[:2] == ["live000.ts", "live001.ts"]


def test_command_line_without_credentials_says_what_to_do(orca_bucket, tmp_path):
    import os
    import subprocess
    import sys

    from pamingest.cli import EXIT_ERROR

    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["AWS_SHARED_CREDENTIALS_FILE"] = env["AWS_CONFIG_FILE"] = str(tmp_path / "none")
    out = subprocess.run([sys.executable, "-m", "pamingest.cli", "ingest", "orcasound", "--node", LAB,
                          "--store", tmp_path / "s", "--endpoint-url", orca_bucket.endpoint, "--serial"],
                         capture_output=True, text=True, env=env)
    assert out.returncode == EXIT_ERROR, out.stderr
    assert "no credentials" in out.stderr and "--anon" in out.stderr and "Traceback" not in out.stderr


def test_command_line(orca_bucket, tmp_path):
    import json
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "pamingest.cli", "-v", "ingest", "orcasound", "--node", LAB,
         "--start", "2021-05-26T04:33:20Z", "--end", "2021-05-26T04:34:20Z", "--store", tmp_path / "s",
         "--endpoint-url", orca_bucket.endpoint, "--serial", "--json"],
        capture_output=True, text=True, check=True)
    report = json.loads(out.stdout)
    # Only the second session is in range: its three good segments and two defective ones.
    assert report["ingested"] == 3 and len(report["failed"]) == 2, out.stderr


def test_capture_delay_shifts_every_time_and_nothing_else(orca_bucket, tmp_path):
    """--capture-delay: a node's capture start-up delay is added to PTS-derived times; samples
    and rows are the same as without it."""
    from pamingest.cli import main

    stores = {}
    for delay in ("0", "2.5"):
        store = str(tmp_path / f"store-{delay}")
        assert main(["ingest", "orcasound", "--node", LAB, "--endpoint-url", orca_bucket.endpoint,
                     "--store", store, "--threads", "--no-progress", "--capture-delay", delay]) in (0, 1)
        stores[delay] = lab_stream(store)
    plain, delayed = stores["0"], stores["2.5"]
    np.testing.assert_array_equal(delayed["audio"].values, plain["audio"].values)
    shift = (delayed["chunk_start"].values - plain["chunk_start"].values).astype(np.int64)
    assert set(shift.tolist()) == {int(2.5 * NS_PER_S)}


def test_live_polls_follow_a_growing_session_a_missing_segment_and_a_restart(s3, fixture_segments, tmp_path):
    """What the orcasound-live deployment does every minute, poll by poll, on a bucket that grows by
    restamped real segments: only the newest sessions are listed; the store after the polls equals a
    one-shot ingest of the same bucket, a missing segment is a gap, a restart a new run."""
    import time

    from pamingest.sources.orcasound import LIVE_LOOKBACK_S
    from pamingest.testing import restamped_segments

    s3.bucket(BUCKET)
    now = int(time.time())
    old, first, restart = now - LIVE_LOOKBACK_S - 3600, now - 600, now - 60
    for epoch in (old - 86400, old):  # earlier sessions: never listed by a live poll
        s3.put(BUCKET, f"{LAB}/hls/{epoch}/live000.ts", fixture_segments[0])
    segments = restamped_segments(fixture_segments, 8)
    put = lambda epoch, n: s3.put(BUCKET, f"{LAB}/hls/{epoch}/live{n:03d}.ts", segments[n])  # noqa: E731
    live = OrcasoundHLS([LAB], live=True, storage_options=s3.storage_options)
    store = str(tmp_path / "live")
    polls = []
    for batch in ([(first, 0), (first, 1), (first, 2)], [(first, 3), (first, 4)],
                  [(first, 6)],  # live005.ts never arrives
                  [(restart, 0), (restart, 1), (first, 7)]):  # the node restarted; the old session's tail lands late
        for epoch, n in batch:
            put(epoch, n)
        polls.append(pi.ingest(live, store, client="serial"))
    assert [p.ingested for p in polls] == [3, 2, 1, 3] and not any(p.failed for p in polls)
    assert live.sessions(LAB) == [first, restart]
    assert live.partitions() == [f"{LAB}/hls/{first}", f"{LAB}/hls/{restart}"]

    ds = lab_stream(store)
    assert not [u for u in ds["file_url"].values.tolist() if f"/{old}/" in u or f"/{old - 86400}/" in u]
    # The one-shot ingest of the sessions the polls saw (the old ones are in the bucket too).
    once = str(tmp_path / "once")
    pi.ingest(OrcasoundHLS([LAB], start=np.datetime64(first, "s"), storage_options=s3.storage_options), once,
              client="serial")
    ref = lab_stream(once)
    assert sorted(ds["file_url"].values.tolist()) == sorted(ref["file_url"].values.tolist())
    order, ref_order = np.argsort(ds["chunk_start"].values), np.argsort(ref["chunk_start"].values)
    for name in ("n_valid", "chunk_start"):
        np.testing.assert_array_equal(ds[name].values[order], ref[name].values[ref_order], err_msg=name)
    np.testing.assert_array_equal(ds["audio"].values[order], ref["audio"].values[ref_order])
    # live005 missing: a gap of one segment inside the first session; the restart: a third span.
    spans = ds.pam.coverage()
    assert len(spans) == 3
    gap = (spans["start"].iloc[1] - spans["end"].iloc[0]) / np.timedelta64(1, "s")
    assert gap == pytest.approx(469 * 1024 / 48000, abs=1e-3)
    assert spans["start"].iloc[2] == np.datetime64(restart * NS_PER_S, "ns")
