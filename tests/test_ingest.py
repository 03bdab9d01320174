"""Ingest real recordings from a moto S3 bucket laid out like a user's own."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import zarr

import pamingest as pi
from pamingest.query import open_session
from pamingest.timing import NS_PER_S

from helpers import assert_stream_matches, by_name, ffmpeg_samples, source_samples, to_ns, window_ns


def upload(s3, bucket, prefix, files):
    s3.bucket(bucket) if not _exists(s3, bucket) else None
    for f in files:
        s3.put(bucket, f"{prefix}/{f.name}" if prefix else f.name, f)


def _exists(s3, bucket):
    return any(b["Name"] == bucket for b in s3.client.list_buckets().get("Buckets", []))


def only_stream(tree):
    names = pi.streams(tree)
    assert len(names) == 1, names
    return tree[names[0]].to_dataset()


def test_songmeter_duty_cycled_rows_at_name_times(s3, fixtures, store):
    folder = fixtures / "songmeter" / "S4A03895"
    files = sorted(folder.glob("*.wav"))
    upload(s3, "field-recordings", "S4A03895", files)
    src = pi.TimestampedFiles("s3://field-recordings", "songmeter", storage_options=s3.storage_options)
    report = pi.ingest(src, store, client="serial")
    assert report.ingested == len(files) == 48 and not report.failed
    ds = only_stream(pi.open_store(store))
    assert ds.attrs["sample_rate"] == 22000 and ds["audio"].dtype == np.int16
    assert assert_stream_matches(ds, by_name(folder)) == 48
    # Each file's row starts at the time its name gives, 15 min apart.
    starts = np.sort(ds["chunk_start"].values)
    assert starts[0] == np.datetime64("2019-05-22T00:00:00")
    assert (np.diff(starts) == np.timedelta64(15, "m")).all()
    # A 40 min window holds three 10 s recordings and keeps the gaps as gaps.
    w = ds.pam.window("2019-05-22T00:00:00", "2019-05-22T00:40:00")
    assert w.sizes["time"] == 3 * 220000
    t = window_ns(w)
    jumps = np.flatnonzero(np.diff(t) > NS_PER_S)
    assert len(jumps) == 2
    assert t[jumps[0] + 1] == to_ns("2019-05-22T00:15:00")
    np.testing.assert_array_equal(w.values[:220000], source_samples(files[0]))
    cov = ds.pam.coverage()
    assert len(cov) == 48 and np.allclose(cov["seconds"], 10.0)


def test_soundtrap_consecutive_flac_files(s3, fixtures, store):
    folder = fixtures / "soundtrap"
    files = sorted(folder.glob("*.flac"))
    upload(s3, "soundtrap", "deployment-01", files)
    src = pi.TimestampedFiles("s3://soundtrap", "soundtrap", storage_options=s3.storage_options)
    report = pi.ingest(src, store, client="serial", row_seconds=10)
    assert report.ingested == 3 and report.rows == 31 + 31 + 31
    ds = only_stream(pi.open_store(store))
    assert ds.attrs["row_samples"] == 80000
    assert assert_stream_matches(ds, by_name(folder)) == 3
    # The second file's row 3 starts 30 s after its name's time.
    i = list(ds["file_url"].values).index("s3://soundtrap/deployment-01/67416073.210610034155.flac")
    row = np.flatnonzero((ds["file_index"].values == i) & (ds["file_offset"].values == 3 * 80000))[0]
    assert ds["chunk_start"].values[row] == np.datetime64("2021-06-10T03:42:25")
    # A window across the boundary of files 1 and 2 returns exactly the source samples.
    w = ds.pam.window("2021-06-10T03:41:50", "2021-06-10T03:42:00")
    a, b = source_samples(files[0]), source_samples(files[1])
    n_a = len(a) - 295 * 8000  # samples of file 1 from 03:41:50 to its end
    np.testing.assert_array_equal(w.values[:n_a], a[295 * 8000 :])
    assert window_ns(w)[n_a] == to_ns("2021-06-10T03:41:55")
    np.testing.assert_array_equal(w.values[n_a:], b[: 5 * 8000])


def test_sanctsound_clips_make_one_stream_per_rate(s3, fixtures, store):
    folder = fixtures / "sanctsound" / "clips"
    files = sorted(folder.glob("*.wav"))
    upload(s3, "sanctsound-clips", "", files)
    src = pi.TimestampedFiles("s3://sanctsound-clips", "sanctsound-clips", name="sanctsound",
                              storage_options=s3.storage_options)
    report = pi.ingest(src, store, client="serial")
    assert not report.failed, report.summary()
    tree = pi.open_store(store)
    names = pi.streams(tree)
    import soundfile as sf

    site = {f: f.name.split("_")[2 if f.name.startswith("filtered") else 1] for f in files}
    expected = {(site[f], sf.info(str(f)).samplerate, sf.info(str(f)).channels, sf.info(str(f)).subtype)
                for f in files}
    assert len(names) == len(expected)
    rates = {tree[n].attrs["sample_rate"] for n in names}
    assert {48000, 44100, 32000, 4000, 2000} <= rates
    checked = sum(assert_stream_matches(tree[n].to_dataset(), by_name(folder)) for n in names)
    assert checked == len(files) == report.ingested


def test_rerun_adds_nothing_and_new_objects_add_exactly_themselves(s3, fixtures, store):
    folder = fixtures / "songmeter" / "S4A03895"
    files = sorted(folder.glob("*.wav"))
    upload(s3, "rec", "S4A03895", files[:10])
    src = pi.TimestampedFiles("s3://rec", "songmeter", storage_options=s3.storage_options)
    first = pi.ingest(src, store, client="serial")
    assert first.ingested == 10
    again = pi.ingest(src, store, client="serial")
    assert (again.ingested, again.skipped, again.snapshot_id) == (0, 10, first.snapshot_id)
    upload(s3, "rec", "S4A03895", files[10:13])
    more = pi.ingest(src, store, client="serial")
    assert more.ingested == 3 and more.skipped == 10
    ds = only_stream(pi.open_store(store))
    assert ds.sizes["chunk"] == 13 and ds.sizes["file"] == 13
    assert assert_stream_matches(ds, by_name(folder)) == 13
    # A changed object under a known URL is reported, not ingested twice.
    s3.put("rec", f"S4A03895/{files[0].name}", files[20])
    changed = pi.ingest(src, store, client="serial")
    assert changed.ingested == 0 and [c.url for c in changed.changed] == [f"s3://rec/S4A03895/{files[0].name}"]
    assert only_stream(pi.open_store(store)).sizes["chunk"] == 13
    # Readers pinned to the first snapshot still see the first run only.
    pinned = only_stream(pi.open_store(store, snapshot=first.snapshot_id))
    assert pinned.sizes["chunk"] == 10


def make_bad_objects(s3, fixtures, bucket):
    good = sorted((fixtures / "soundtrap").glob("*.flac"))
    upload(s3, bucket, "67416073", good)
    flac = good[0].read_bytes()
    wav = (fixtures / "songmeter" / "S4A03895" / "S4A03895_20190522_000000.wav").read_bytes()
    bad = {
        "67416073.210610040000.wav": b"",  # zero bytes
        "67416073.210610041000.flac": flac[: len(flac) // 2],  # truncated FLAC
        "67416073.210610042000.wav": b"Station log\nno audio in this file\n" * 20,  # text named .wav
        "67416073.210610043000.wav": wav[: len(wav) // 2],  # header claims more frames than held
        "67416073.notatime.wav": wav,  # name the template cannot parse
    }
    for name, body in bad.items():
        s3.put(bucket, f"67416073/{name}", body)
    return good, bad


def test_bad_input_is_recorded_and_the_rest_ingested(s3, fixtures, store):
    good, bad = make_bad_objects(s3, fixtures, "mixed")
    src = pi.TimestampedFiles("s3://mixed", "soundtrap", storage_options=s3.storage_options)
    report = pi.ingest(src, store, client="serial")
    cut = {"67416073.210610041000.flac", "67416073.210610043000.wav"}  # stored up to where they end
    assert report.ingested == 3 + len(cut)
    reasons = {f.url.rsplit("/", 1)[-1]: f.reason for f in report.failed}
    assert set(reasons) == set(bad) - cut
    assert "empty" in reasons["67416073.210610040000.wav"]
    assert "not a readable audio file" in reasons["67416073.210610042000.wav"]
    assert "does not match the template" in reasons["67416073.notatime.wav"]
    partial = {f.url.rsplit("/", 1)[-1]: f.reason for f in report.partial}
    assert set(partial) == cut
    assert partial["67416073.210610041000.flac"].startswith("truncated: kept ")
    assert "of the 2400137 frames its header declares; decoding stopped at frame" in partial[
        "67416073.210610041000.flac"]
    wav = bad["67416073.210610043000.wav"]
    held = (len(wav) - wav.index(b"data") - 8) // 2
    assert partial["67416073.210610043000.wav"] == (
        f"truncated: kept {held} of the 220000 frames its header declares; the object ends at frame {held}")
    summary = report.summary()
    assert all(name in summary for name in bad)
    tree = pi.open_store(store)
    assert len(pi.streams(tree)) == 2  # the WAV is 22 kHz
    ds = tree["files/67416073/8000Hz_1ch_pcm16"].to_dataset()
    originals = {f.name: f for f in good} | {"67416073.210610041000.flac": good[0]}  # the first half of good[0]
    assert assert_stream_matches(ds, lambda url: originals[url.rsplit("/", 1)[-1]]) == 4
    # The truncated FLAC keeps its frames before the cut: readers see them, and no more.
    status = dict(zip(ds["file_url"].values, ds["file_status"].values))
    assert status["s3://mixed/67416073/67416073.210610041000.flac"] == "partial"
    kept = dict(zip(ds["file_url"].values, ds["file_frames"].values))["s3://mixed/67416073/67416073.210610041000.flac"]
    w = ds.pam.window("2021-06-10T04:10:00", "2021-06-10T04:20:00")
    assert w.sizes["time"] == kept
    np.testing.assert_array_equal(w.values, source_samples(good[0])[:kept])
    session = open_session(store)
    rejected = zarr.open_group(session.store, mode="r")["rejected"]
    assert len(rejected["url"][:]) == 3
    # A re-run adds nothing; retrying the failures records them again without duplicates, and
    # leaves the partial files alone (their rows are stored).
    again = pi.ingest(src, store, client="serial")
    assert again.ingested == 0 and not again.failed and again.skipped == 8
    retry = pi.ingest(src, store, client="serial", retry_failed=True)
    assert len(retry.failed) == 3 and retry.ingested == 0 and not retry.partial
    ds2 = pi.open_store(store)["files/67416073/8000Hz_1ch_pcm16"].to_dataset()
    assert ds2.sizes["file"] == 4 and ds2.sizes["chunk"] == ds.sizes["chunk"]
    assert len(zarr.open_group(open_session(store).store, mode="r")["rejected"]["url"][:]) == 3


def test_s3_store_and_dask_local_cluster(s3, fixtures):
    from distributed import LocalCluster

    folder = fixtures / "songmeter" / "S4A03895"
    files = sorted(folder.glob("*.wav"))[:12]
    upload(s3, "rec", "S4A03895", files)
    s3.bucket("stores")
    src = pi.TimestampedFiles("s3://rec", "songmeter", storage_options=s3.storage_options)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        # An existing scheduler, given by address as a deployment would.
        report = pi.ingest(src, "s3://stores/pam", client=cluster.scheduler_address,
                           store_options=s3.storage_options, rows_per_task=1)
    assert report.ingested == 12
    ds = only_stream(pi.open_store("s3://stores/pam", storage_options=s3.storage_options))
    assert assert_stream_matches(ds, by_name(folder)) == 12


def test_long_file_split_into_tasks_matches_whole(tmp_path, fixtures):
    """A file cut into several row-range tasks gives the same rows as one task."""
    folder = fixtures / "soundtrap"
    src = pi.TimestampedFiles(str(folder), "soundtrap")
    whole = pi.ingest(src, str(tmp_path / "whole"), client="serial", rows_per_task=1000)
    split = pi.ingest(src, str(tmp_path / "split"), client="serial", rows_per_task=7)
    a = only_stream(pi.open_store(str(tmp_path / "whole")))
    b = only_stream(pi.open_store(str(tmp_path / "split")))
    assert whole.rows == split.rows
    np.testing.assert_array_equal(a["audio"].values, b["audio"].values)
    np.testing.assert_array_equal(a["chunk_start"].values, b["chunk_start"].values)


def test_row_length_is_fixed_per_stream(tmp_path, fixtures):
    folder = tmp_path / "rec"
    folder.mkdir()
    for f in sorted((fixtures / "songmeter" / "S4A03895").glob("*.wav"))[:2]:
        (folder / f.name).write_bytes(f.read_bytes())
    src = pi.TimestampedFiles(str(folder), "songmeter")
    pi.ingest(src, str(tmp_path / "s"), client="serial", row_seconds=5)
    ds = only_stream(pi.open_store(str(tmp_path / "s")))
    assert ds.sizes["chunk"] == 4 and ds.attrs["row_samples"] == 110000
    f = sorted((fixtures / "songmeter" / "S4A03895").glob("*.wav"))[2]
    (folder / f.name).write_bytes(f.read_bytes())
    with pytest.raises(pi.ConfigError, match="--row-seconds 5"):
        pi.ingest(src, str(tmp_path / "s"), client="serial", row_seconds=10)


def test_missing_store_is_a_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        pi.open_store(str(tmp_path / "nothing-here"))
    assert not (tmp_path / "nothing-here").exists()  # looking does not create it


def test_in_memory_store_refuses_ingest_with_the_reason(fixtures):
    # Forked sessions of in-memory storage come back empty in the task: every file would "fail".
    with pytest.raises(pi.ConfigError, match="in-memory storage"):
        pi.ingest(pi.TimestampedFiles(str(fixtures / "soundtrap"), "soundtrap"), "memory://refused", client="serial")


def test_listing_is_partitioned_and_deterministic(s3, fixtures):
    folder = fixtures / "songmeter" / "S4A03895"
    files = sorted(folder.glob("*.wav"))
    s3.bucket("parts")
    for k, f in enumerate(files[:12]):
        s3.put("parts", f"site{k % 3}/{f.name}", f)  # three prefixes
    s3.put("parts", files[12].name, files[12])      # one object at the root
    src = pi.TimestampedFiles("s3://parts", "songmeter", storage_options=s3.storage_options)
    assert src.partitions() == ["", "site0", "site1", "site2"]
    per_part = {p: src.list_partition(p) for p in src.partitions()}
    assert [len(v) for v in per_part.values()] == [1, 4, 4, 4]
    from pamingest.sources import list_source

    listed = list(list_source(src, max_parallel=4))
    assert [r.url for r in listed] == [r.url for p in src.partitions() for r in per_part[p]]
    assert listed == list(list_source(src, max_parallel=1))


def test_sources_can_describe_their_streams(tmp_path, fixtures):
    class Deployment(pi.TimestampedFiles):
        def stream_attributes(self, file):
            return {"deployment_lat": 36.7, "instrument": f"SoundTrap {file.site}", "sample_rate": 1}

    pi.ingest(Deployment(str(fixtures / "soundtrap"), "soundtrap"), str(tmp_path / "s"), client="serial")
    ds = only_stream(pi.open_store(str(tmp_path / "s")))
    assert ds.attrs["instrument"] == "SoundTrap 67416073" and ds.attrs["deployment_lat"] == 36.7
    assert ds.attrs["sample_rate"] == 8000  # layout attributes cannot be overridden


def test_later_per_row_arrays_grow_with_new_rows(tmp_path, fixtures):
    """An array another stage added on the chunk dimension (scores) grows with the rows."""
    from pamingest.store.repo import StoreLocation, open_repository

    folder = tmp_path / "rec"
    folder.mkdir()
    files = sorted((fixtures / "songmeter" / "S4A03895").glob("*.wav"))
    for f in files[:2]:
        (folder / f.name).write_bytes(f.read_bytes())
    store = str(tmp_path / "s")
    src = pi.TimestampedFiles(str(folder), "songmeter")
    pi.ingest(src, store, client="serial")
    repo = open_repository(StoreLocation.from_url(store))
    session = repo.writable_session("main")
    group = zarr.open_group(session.store, mode="a")["files/S4A03895/22000Hz_1ch_pcm16"]
    scores = group.create_array("score_demo", shape=(2, 3), chunks=(1024, 3), dtype="float32",
                                fill_value=float("nan"), dimension_names=("chunk", "class"))
    scores[:] = 0.5
    session.commit("add scores")
    (folder / files[2].name).write_bytes(files[2].read_bytes())
    pi.ingest(src, store, client="serial")
    ds = pi.open_store(store)["files/S4A03895/22000Hz_1ch_pcm16"].to_dataset()
    assert ds["score_demo"].shape == (3, 3)
    assert np.isnan(ds["score_demo"].values[2]).all() and (ds["score_demo"].values[:2] == 0.5).all()


def test_a_row_that_fails_to_encode_fails_its_file_only(tmp_path, fixtures, monkeypatch):
    """Rows are encoded in other threads while the task decodes on: an encode failure still
    fails its file (with the reason), leaves none of its rows visible, and the rest land.
    The failure is injected (a FLAC encoder that raises cannot be produced with real input)."""
    from pamingest.store.codec import FlacCodec

    folder = fixtures / "soundtrap"
    real = FlacCodec.encode_samples
    calls = []

    def encode(self, samples):
        calls.append(len(samples))
        if len(calls) == 5:  # a row of the first file (31 rows), while later rows are in flight
            raise OSError("disk full (injected)")
        return real(self, samples)

    monkeypatch.setattr(FlacCodec, "encode_samples", encode)
    store = str(tmp_path / "store")
    report = pi.ingest(pi.TimestampedFiles(str(folder), "soundtrap"), store, client="serial", row_seconds=10)
    assert report.ingested == 2 and [f.url.rsplit("/", 1)[-1] for f in report.failed] == [
        "67416073.210610033655.flac"]
    assert "write failed" in report.failed[0].reason and "disk full (injected)" in report.failed[0].reason
    ds = only_stream(pi.open_store(store))
    failed = list(ds["file_url"].values).index(report.failed[0].url)
    dead = ds["file_index"].values == failed  # its allocated rows hold no sample (none half-written)
    assert dead.sum() == 31 and not ds["n_valid"].values[dead].any() and not ds["audio"].values[dead].any()
    assert assert_stream_matches(ds, by_name(folder)) == 2


# ---------------------------------------------------------------- hostile headers (issue #16)

def flac_with_total(data: bytes, total: int) -> bytes:
    """A FLAC's bytes with STREAMINFO's total samples set to ``total`` and its MD5 unset (0 and
    unset: what streaming writers leave)."""
    out = bytearray(data)
    assert out[:4] == b"fLaC" and out[4] & 0x7F == 0  # STREAMINFO first, as every encoder writes it
    packed = int.from_bytes(out[18:26], "big")
    out[18:26] = (packed & ~(2**36 - 1) | total).to_bytes(8, "big")
    out[26:42] = bytes(16)
    return bytes(out)


def soundtrap_copy(fixtures, folder):
    """The three SoundTrap fixture files in ``folder``, to damage one of them there."""
    folder.mkdir()
    good = sorted((fixtures / "soundtrap").glob("*.flac"))
    for f in good:
        (folder / f.name).write_bytes(f.read_bytes())
    return good


def test_a_flac_streamed_without_a_length_is_ingested_whole(tmp_path, fixtures, store):
    """STREAMINFO counting 0 samples is valid FLAC (streaming writers leave it so): libsndfile
    reports 2**63 - 1 frames, which ingest allocated rows for (MemoryError: every run aborted). The
    frames are counted by decoding, and the file's rows, written by tasks that each seek into it,
    equal the source's bit for bit."""
    folder = tmp_path / "rec"
    good = soundtrap_copy(fixtures, folder)
    streamed = folder / good[1].name
    streamed.write_bytes(flac_with_total(good[1].read_bytes(), 0))
    assert sf.info(str(streamed)).frames == 2**63 - 1
    report = pi.ingest(pi.TimestampedFiles(str(folder), "soundtrap"), store, client="serial", row_seconds=10,
                       rows_per_task=7)
    assert report.ingested == 3 and not report.failed and not report.partial, report.summary()
    ds = only_stream(pi.open_store(store))
    assert assert_stream_matches(ds, by_name(fixtures / "soundtrap")) == 3
    frames = dict(zip(ds["file_url"].values, ds["file_frames"].values))
    assert frames[str(streamed)] == sf.info(str(good[1])).frames == 2_400_292
    assert set(ds["file_status"].values) == {"ok"}


def test_a_flac_declaring_more_than_it_holds_is_kept_to_its_end_across_tasks(tmp_path, fixtures, store):
    """A FLAC whose header declares more frames than it holds, its rows cut into several write
    tasks (1 s rows, 90 a task): the tasks past its end failed to seek and the file was lost whole.
    The SoundTrap file cut to 90%, and a 3 s FLAC declaring 2**31 samples (3 days), are stored up
    to where they end, recorded partial with where they stopped; the other files are ingested."""
    folder = tmp_path / "rec"
    good = soundtrap_copy(fixtures, folder)
    cut = folder / good[1].name
    data = good[1].read_bytes()
    cut.write_bytes(data[: len(data) * 9 // 10])
    kept = len(ffmpeg_samples(cut))
    x = np.random.default_rng(16).integers(-(2**15), 2**15, size=(24_000, 1), dtype=np.int16)
    whole = tmp_path / "whole"
    whole.mkdir()
    sf.write(str(whole / "67416073.210610040000.flac"), x, 8000, subtype="PCM_16")
    lying = folder / "67416073.210610040000.flac"
    lying.write_bytes(flac_with_total((whole / lying.name).read_bytes(), 2**31))
    report = pi.ingest(pi.TimestampedFiles(str(folder), "soundtrap"), store, client="serial", row_seconds=1)
    assert report.ingested == 4 and not report.failed, report.summary()
    assert {f.url: f.reason for f in report.partial} == {
        str(cut): f"truncated: kept {kept} of the 2400292 frames its header declares; decoding stopped at frame "
                  f"{kept} (flac decoder lost sync)",
        str(lying): "truncated: kept 24000 of the 2147483648 frames its header declares; the stream ends at frame "
                    "24000",
    }
    ds = only_stream(pi.open_store(store))
    originals = {f.name: f for f in good} | {lying.name: whole / lying.name}
    assert assert_stream_matches(ds, lambda url: originals[url.rsplit("/", 1)[-1]]) == 4
    status = dict(zip(ds["file_url"].values, ds["file_status"].values))
    assert status == {str(folder / f.name): "ok" for f in good} | {str(cut): "partial", str(lying): "partial"}
    i = list(ds["file_url"].values).index(str(cut))
    rows = np.flatnonzero(ds["file_index"].values == i)
    assert len(rows) == -(-kept // 8000) and ds["n_valid"].values[rows].sum() == kept
    np.testing.assert_array_equal(ds["audio"].values[rows].reshape(-1, 1)[:kept], ffmpeg_samples(cut))


def test_a_flac_missing_its_last_byte_keeps_every_whole_frame(tmp_path, fixtures, store):
    """A FLAC missing only its last byte was discarded whole ("failed at frame 0"). Every frame
    before the damaged one is stored, and the file is recorded partial: kept N of M declared frames,
    where decoding stopped. Readers see exactly those frames; a re-run (retrying failures too) does
    not store them twice."""
    folder = tmp_path / "rec"
    good = soundtrap_copy(fixtures, folder)
    cut = folder / good[0].name
    data = good[0].read_bytes()
    cut.write_bytes(data[:-1])
    total = sf.info(str(good[0])).frames
    block = int.from_bytes(data[10:12], "big")  # STREAMINFO's block size: every frame but the last holds it
    kept = total - total % block  # the last frame lost the last byte of its CRC
    assert (block, kept) == (4096, 2_396_160) and len(ffmpeg_samples(cut)) == kept
    src = pi.TimestampedFiles(str(folder), "soundtrap")
    report = pi.ingest(src, store, client="serial", row_seconds=10)
    reason = (f"truncated: kept {kept} of the {total} frames its header declares; decoding stopped at frame {kept} "
              "(flac decoder lost sync)")
    assert report.ingested == 3 and not report.failed
    assert [(f.url, f.reason) for f in report.partial] == [(str(cut), reason)]
    assert f"  - {cut}: {reason}" in report.summary()
    ds = only_stream(pi.open_store(store))
    assert assert_stream_matches(ds, by_name(fixtures / "soundtrap")) == 3
    i = list(ds["file_url"].values).index(str(cut))
    assert (ds["file_status"].values[i], ds["file_error"].values[i], ds["file_frames"].values[i]) == (
        "partial", reason, kept)
    w = ds.pam.window("2021-06-10T03:36:55", "2021-06-10T03:41:55")  # the cut file's span
    assert w.sizes["time"] == kept
    np.testing.assert_array_equal(w.values, source_samples(good[0])[:kept])
    again = pi.ingest(src, store, client="serial", retry_failed=True)
    assert (again.ingested, again.skipped, again.committed) == (0, 3, False)


def test_a_wav_streamed_without_sizes_runs_to_the_end_of_the_object(tmp_path, store):
    """Recorders streaming to disk write the header first: RIFF and data sizes 0, or 0xFFFFFFFF.
    A data size of 0 was "holds no samples". The data runs to the end of the object, as the direct
    PCM reader takes it (24-bit), and as libsndfile reads it when shown that (float): bit for bit."""
    folder, whole = tmp_path / "rec", tmp_path / "whole"
    folder.mkdir()
    whole.mkdir()
    rng = np.random.default_rng(4)
    pcm = rng.integers(-(2**23), 2**23, size=(96_000, 2), dtype=np.int32)  # 2 s at 48 kHz
    files = {  # name: (subtype, RIFF and data size written in place of the true ones; None: whole)
        "REC_20240301_120000.wav": ("PCM_24", 0),
        "REC_20240301_120010.wav": ("PCM_24", 0xFFFFFFFF),
        "REC_20240301_120020.wav": ("PCM_24", None),
        "REC_20240301_120030.wav": ("FLOAT", 0),
        "REC_20240301_120040.wav": ("FLOAT", None),
    }
    for name, (subtype, size) in files.items():
        samples = np.left_shift(pcm, 8) if subtype == "PCM_24" else (pcm / 2**23).astype(np.float32)
        sf.write(str(whole / name), samples, 48_000, subtype=subtype)
        data = bytearray((whole / name).read_bytes())
        if size is not None:
            at = data.index(b"data") + 4
            data[4:8] = data[at : at + 4] = size.to_bytes(4, "little")
        (folder / name).write_bytes(bytes(data))
    report = pi.ingest(pi.TimestampedFiles(str(folder), "{site}_%Y%m%d_%H%M%S.wav"), store, client="serial",
                       row_seconds=0.5)
    assert report.ingested == 5 and not report.failed and not report.partial, report.summary()
    tree = pi.open_store(store)
    pcm24, floats = (tree[f"files/REC/48000Hz_2ch_{kind}"].to_dataset() for kind in ("pcm24", "float32"))
    assert assert_stream_matches(pcm24, by_name(whole)) == 3
    assert set(pcm24["file_frames"].values) == {96_000}
    audio, n_valid = floats["audio"].values, floats["n_valid"].values
    assert set(floats["file_frames"].values) == {96_000} and set(floats["file_status"].values) == {"ok"}
    for i in range(2):
        rows = np.flatnonzero(floats["file_index"].values == i)
        got = np.concatenate([audio[r, : n_valid[r]] for r in rows[np.argsort(floats["file_offset"].values[rows])]])
        np.testing.assert_array_equal(got, (pcm / 2**23).astype(np.float32))


def test_cut_aiff_rf64_w64_au_files_are_recorded_as_truncated(tmp_path, store):
    """AIFF, RF64, W64 and AU files (and an extensible WAV) cut short were stored "ok" with half
    their frames: the header check covered RIFF/RIFX only. Each is now stored up to where it ends
    and recorded partial with how many frames it kept of how many declared. A cut CAF, which
    libsndfile cannot open, fails with that reason; an IRCAM file, whose header pamingest does not
    check, is not ingested, with that reason. The whole WAV beside them is ingested."""
    folder, whole = tmp_path / "rec", tmp_path / "whole"
    folder.mkdir()
    whole.mkdir()
    x = np.random.default_rng(5).integers(-(2**15), 2**15, size=(16_000, 2), dtype=np.int16)  # 2 s at 8 kHz
    files = {  # name: (libsndfile format, cut short)
        "REC_20240301_120000.aiff": ("AIFF", True),
        "REC_20240301_120010.wav": ("RF64", True),
        "REC_20240301_120020.w64": ("W64", True),
        "REC_20240301_120030.wav": ("AU", True),  # named .wav, as the recorder's software may
        "REC_20240301_120040.wav": ("WAVEX", True),
        "REC_20240301_120050.caf": ("CAF", True),
        "REC_20240301_120100.wav": ("IRCAM", False),
        "REC_20240301_120110.wav": ("WAV", False),
    }
    for name, (fmt, cut) in files.items():
        sf.write(str(whole / name), x, 8000, format=fmt, subtype="PCM_16")
        data = (whole / name).read_bytes()
        (folder / name).write_bytes(data[: len(data) - 8000 * 4] if cut else data)  # the last 8000 frames missing
    src = pi.TimestampedFiles(str(folder), "{site}_%Y%m%d_%H%M%S.{ext}", suffixes=(".wav", ".aiff", ".w64", ".caf"))
    report = pi.ingest(src, store, client="serial")
    truncated = "truncated: kept 8000 of the 16000 frames its header declares; the object ends at frame 8000"
    kept = [name for name, (fmt, cut) in files.items() if cut and fmt != "CAF"]
    assert report.ingested == 6
    assert {f.url.rsplit("/", 1)[-1]: f.reason for f in report.partial} == dict.fromkeys(kept, truncated)
    assert {f.url.rsplit("/", 1)[-1]: f.reason for f in report.failed} == {
        "REC_20240301_120050.caf": "truncated: its header declares 16000 frames, the object holds 8000, and "
                                   "libsndfile cannot read it: not a readable audio file (Supported file format "
                                   "but file is malformed.)",
        "REC_20240301_120100.wav": "IRCAM files are not ingested: pamingest cannot check such a header against the "
                                   "object's size, so a file cut short would pass as whole",
    }
    ds = only_stream(pi.open_store(store))
    assert assert_stream_matches(ds, by_name(whole)) == 6
    status = {url.rsplit("/", 1)[-1]: (s, n) for url, s, n in zip(ds["file_url"].values, ds["file_status"].values,
                                                                   ds["file_frames"].values)}
    assert status == dict.fromkeys(kept, ("partial", 8000)) | {"REC_20240301_120110.wav": ("ok", 16000)}


LARGE_ROWS = """
import sys, numpy as np, soundfile
import pamingest as pi, pamingest.ingest
ing = sys.modules["pamingest.ingest"]

folder, store = sys.argv[1], sys.argv[2]
if folder == "make-256k":
    import os
    folder = store + "-src"
    os.makedirs(folder)
    x = (np.random.default_rng(0).normal(0, 2**16, 11 * 256_000)).astype(np.int32) << 8
    soundfile.write(folder + "/MARS_20240301_120000.wav", x, 256_000, subtype="PCM_24")
    template = "{site}_%Y%m%d_%H%M%S.wav"
else:
    template = "soundtrap"
report = pi.ingest(pi.TimestampedFiles(folder, template), store, client="serial", row_seconds=10)
assert report.ingested >= 1 and not report.failed, report.failed
print(ing._large_buffers_returned)
"""

MAPPED_ON_ITS_OWN = """
import ctypes, sys, numpy as np

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                                      "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "fixed":
    import pamingest.ingest
    sys.modules["pamingest.ingest"].return_large_buffers()
a = np.ones(10 * 2**20, np.uint8); del a  # glibc's dynamic threshold rises to 10 MB
before = libc.mallinfo2().hblkhd
b = np.ones(6 * 2**20, np.uint8)  # mapped on its own (given back when freed), or in a heap
print((libc.mallinfo2().hblkhd - before) / 2**20)
"""


def glibc_defaults() -> dict:
    """This environment without glibc's malloc tuning variables: a Dask nanny started by an
    earlier test copies Dask's MALLOC_TRIM_THRESHOLD_ into this process's environment, and
    any such variable turns glibc's dynamic mmap threshold off in a child."""
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}


@pytest.mark.parametrize("source", ["make-256k", "soundtrap"])
def test_only_rows_too_large_to_batch_fix_the_allocators_mmap_threshold(tmp_path, fixtures, source):
    """A 256 kHz 24-bit row (10 MB) is written alone; such tasks have freed buffers of 4 MB
    or more returned to the system (benchmarks/pacific_sound_memory.py: peak -23 MB). Files
    with small rows leave glibc's allocator as it is (HLS measured 6% slower with the fixed
    threshold)."""
    import subprocess
    import sys

    folder = source if source == "make-256k" else str(fixtures / "soundtrap")
    out = subprocess.run([sys.executable, "-c", LARGE_ROWS, folder, str(tmp_path / "store")],
                         capture_output=True, text=True, check=True, env=glibc_defaults()).stdout.split()
    assert out == [str(source == "make-256k")]


@pytest.mark.parametrize("allocator", ["fixed", "glibc"])
def test_returned_large_buffers_are_mapped_on_their_own(allocator):
    """What the fixed threshold does (in a fresh interpreter without other threads): a 6 MB
    buffer allocated after a 10 MB one was freed is mapped on its own, so that freeing it gives
    it back; glibc's own dynamic threshold puts it in a heap, which keeps it."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", MAPPED_ON_ITS_OWN, allocator], capture_output=True, text=True,
                         check=True, env=glibc_defaults()).stdout
    mapped_mb = float(out)
    assert mapped_mb >= 6.0 if allocator == "fixed" else mapped_mb == 0.0


def test_a_replaced_bad_file_is_ingested_and_a_rewritten_good_one_reported(tmp_path, fixtures):
    """Local files have no ETag: their modification time tells versions apart. A file that
    failed and is then replaced is ingested (nothing of it was stored); a stored file rewritten
    in place, even with the same size, is reported as changed, never silently kept."""
    import os
    import shutil

    folder, store = tmp_path / "deployment", str(tmp_path / "store")
    folder.mkdir()
    names = ["67416073.210610033655.flac", "67416073.210610034155.flac"]
    shutil.copy(fixtures / "soundtrap" / names[0], folder)
    (folder / names[1]).write_bytes(b"fLaC" + b"\x00" * 4000)  # an upload that broke off: unreadable
    src = pi.TimestampedFiles(str(folder), "soundtrap")
    first = pi.ingest(src, store, client="serial")
    assert first.ingested == 1 and [f.url for f in first.failed] == [str(folder / names[1])]

    shutil.copy(fixtures / "soundtrap" / names[1], folder)  # uploaded again, complete
    data = (folder / names[0]).read_bytes()
    (folder / names[0]).write_bytes(data)  # rewritten in place: same bytes, same size, new time
    os.utime(folder / names[0], (1e9, 1e9))
    second = pi.ingest(src, store, client="serial")
    assert second.ingested == 1 and not second.failed
    assert [c.url for c in second.changed] == [str(folder / names[0])]
    assert "changed since ingest" in second.changed[0].reason

    third = pi.ingest(src, store, client="serial")  # nothing new, nothing changed
    assert third.ingested == 0 and third.skipped == 1 and [c.url for c in third.changed] == [str(folder / names[0])]
    ds = only_stream(pi.open_store(store))
    assert assert_stream_matches(ds, by_name(fixtures / "soundtrap")) == 2


# Hostile names (issue #16): copies of one real recording under names a recorder would not write.
ODD_TEMPLATE = "{site}_%Y%m%d_%H%M%S.{ext:wav|flac}"


def recording(fixtures):
    return fixtures / "songmeter" / "S4A03895" / "S4A03895_20190522_000000.wav"


def copies_named(folder, fixtures, names):
    import shutil

    folder.mkdir()
    for name in names:
        shutil.copy(recording(fixtures), folder / name)
    return folder


def reasons_by_name(report):
    return {f.url.rsplit("/", 1)[-1]: f.reason for f in report.failed}


def test_years_the_store_cannot_hold_are_rejected_at_listing_and_the_folder_ingested(tmp_path, fixtures):
    folder = copies_named(tmp_path / "rec", fixtures,
                          ["k25a_20210101_000000.wav", "k25a_99990101_000000.wav", "k25a_16000101_000000.wav"])
    src = pi.TimestampedFiles(str(folder), ODD_TEMPLATE)
    store = str(tmp_path / "store")
    report = pi.ingest(src, store, client="serial")
    supported = "1678-01-01 to 2262-01-01 UTC (what the store's int64 nanosecond times hold)"
    assert reasons_by_name(report) == {
        "k25a_99990101_000000.wav": f"file name 'k25a_99990101_000000.wav': year 9999 is outside the supported "
                                    f"range {supported}",
        "k25a_16000101_000000.wav": f"file name 'k25a_16000101_000000.wav': year 1600 is outside the supported "
                                    f"range {supported}",
    }
    assert report.ingested == 1 and report.streams == ["files/k25a/22000Hz_1ch_pcm16"]
    ds = only_stream(pi.open_store(store))
    assert list(ds["file_start"].values) == [np.datetime64("2021-01-01T00:00:00", "ns")]
    assert assert_stream_matches(ds, lambda url: recording(fixtures)) == 1
    # The rejections are recorded: a re-run neither crashes nor retries them.
    again = pi.ingest(src, store, client="serial")
    assert (again.ingested, again.skipped, again.failed, again.commits) == (0, 3, [], 0)


def test_impossible_times_in_names_are_rejected_with_the_field_not_rolled_over(tmp_path, fixtures):
    folder = copies_named(tmp_path / "rec", fixtures, [
        "k25a_20210101_000000.wav", "k25a_20210101_250000.wav", "k25a_20210101_009900.wav",
        "k25a_20210230_000000.wav", "k25a_2021_0101.wav"])
    store = str(tmp_path / "store")
    report = pi.ingest(pi.TimestampedFiles(str(folder), ODD_TEMPLATE), store, client="serial")
    assert reasons_by_name(report) == {
        "k25a_20210101_250000.wav": "file name 'k25a_20210101_250000.wav': hour 25 out of range 0-23",
        "k25a_20210101_009900.wav": "file name 'k25a_20210101_009900.wav': minute 99 out of range 0-59",
        "k25a_20210230_000000.wav": "file name 'k25a_20210230_000000.wav': day 30 out of range for February 2021 "
                                    "(1-28)",
        "k25a_2021_0101.wav": "file name 'k25a_2021_0101.wav' does not match the template "
                              "'{site}_%Y%m%d_%H%M%S.{ext:wav|flac}'",
    }
    # Only the good name has rows: nothing stored at 2021-01-02T01:00 or 01:39.
    ds = only_stream(pi.open_store(store))
    assert report.ingested == 1
    assert list(ds["file_start"].values) == [np.datetime64("2021-01-01T00:00:00", "ns")]
    assert assert_stream_matches(ds, lambda url: recording(fixtures)) == 1


def test_distinct_sites_never_share_a_stream(tmp_path, fixtures):
    from urllib.parse import unquote

    sites = ["k25a", "k25a b", "k25a-b", "k25a_b", "k25a%20b", "Møller", "Ærø", "_k25a", "k25a-"]
    folder = copies_named(tmp_path / "rec", fixtures, [f"{site}_20210101_000000.wav" for site in sites])
    store = str(tmp_path / "store")
    report = pi.ingest(pi.TimestampedFiles(str(folder), ODD_TEMPLATE), store, client="serial")
    assert report.ingested == len(sites) and not report.failed
    expected = {  # plain names are their own path, as before; the rest percent-encoded
        "k25a": "k25a", "k25a b": "k25a%20b", "k25a-b": "k25a-b", "k25a_b": "k25a_b", "k25a%20b": "k25a%2520b",
        "Møller": "M%C3%B8ller", "Ærø": "%C3%86r%C3%B8", "_k25a": "%5Fk25a", "k25a-": "k25a-",
    }
    assert report.streams == sorted(f"files/{segment}/22000Hz_1ch_pcm16" for segment in expected.values())
    tree = pi.open_store(store)
    for site, segment in expected.items():
        ds = tree[f"files/{segment}/22000Hz_1ch_pcm16"].to_dataset()
        assert ds.attrs["site"] == site == unquote(segment)
        assert [u.rsplit("/", 1)[-1] for u in ds["file_url"].values] == [f"{site}_20210101_000000.wav"]
        assert assert_stream_matches(ds, lambda url: recording(fixtures)) == 1


def test_stream_path_segments_are_injective_and_keep_plain_names():
    from urllib.parse import unquote

    from pamingest.store.layout import safe_segment

    plain = ["rpi_orcasound_lab", "S4A03895", "67416073", "ci01_02", "nrs_11_2019-2021", "pipan_hawaii_14", "a.b"]
    assert [safe_segment(s) for s in plain] == plain
    tricky = ["k25a b", "k25a-b", "k25a%20b", "k25a/b", ".", "..", "__x", "_x", "%5Fx", "Møller", "Mo\u0308ller",
              "鯨", "-", "x.", " "]
    segments = [safe_segment(s) for s in tricky]
    assert len(set(segments)) == len(tricky)
    assert [unquote(s) for s in segments] == tricky
    assert all(s.isascii() and "/" not in s and s not in (".", "..") and not s.startswith(("_", ".")) for s in segments)


def test_a_symlink_loop_is_rejected_as_such_and_the_folder_ingested(tmp_path, fixtures):
    import os

    folder = copies_named(tmp_path / "rec", fixtures, ["k25a_20210101_000000.wav"])
    os.symlink("k25a_20210101_020000.wav", folder / "k25a_20210101_010000.wav")  # a loop of two links
    os.symlink("k25a_20210101_010000.wav", folder / "k25a_20210101_020000.wav")
    os.symlink("k25a_20210101_000000.wav", folder / "k25a_20210101_030000.wav")  # a link to a file: read through
    os.symlink("gone.wav", folder / "k25a_20210101_040000.wav")  # a link to nothing
    store = str(tmp_path / "store")
    report = pi.ingest(pi.TimestampedFiles(str(folder), ODD_TEMPLATE), store, client="serial")
    assert reasons_by_name(report) == {
        "k25a_20210101_010000.wav": "k25a_20210101_010000.wav: symbolic link loop (following "
                                    "k25a_20210101_010000.wav -> k25a_20210101_020000.wav never reaches a file)",
        "k25a_20210101_020000.wav": "k25a_20210101_020000.wav: symbolic link loop (following "
                                    "k25a_20210101_020000.wav -> k25a_20210101_010000.wav never reaches a file)",
        "k25a_20210101_040000.wav": "k25a_20210101_040000.wav: broken symbolic link (its target gone.wav does "
                                    "not exist)",
    }
    assert report.ingested == 2
    ds = only_stream(pi.open_store(store))
    assert list(ds["file_start"].values) == [np.datetime64("2021-01-01T00:00:00", "ns"),
                                             np.datetime64("2021-01-01T03:00:00", "ns")]
    assert assert_stream_matches(ds, lambda url: recording(fixtures)) == 2


@pytest.mark.parametrize("kind", ["float32", "10-channel"])
def test_streams_flac_cannot_hold_are_stored_losslessly_with_pcodec(tmp_path, kind):
    """FLAC holds integers of up to 24 bits and up to 8 channels; float WAVs and wider arrays
    fall back to PCodec (lossless, in numcodecs), read back bit for bit."""
    import soundfile as sf

    folder = tmp_path / "rec"
    folder.mkdir()
    rng = np.random.default_rng(7)
    if kind == "float32":
        data = (rng.standard_normal((3 * 16000, 2)) * 0.1).astype(np.float32)
        sf.write(folder / "array_20240301_120000.wav", data, 16000, subtype="FLOAT")
    else:
        data = (rng.standard_normal((3 * 16000, 10)) * 3000).astype(np.int16)
        sf.write(folder / "array_20240301_120000.wav", data, 16000, subtype="PCM_16")
    store = str(tmp_path / "store")
    report = pi.ingest(pi.TimestampedFiles(str(folder), "{site}_%Y%m%d_%H%M%S.wav"), store, client="serial",
                       row_seconds=1)
    assert report.ingested == 1 and not report.failed
    tree = pi.open_store(store)
    (name,) = pi.streams(tree)
    audio = zarr.open_group(open_session(store).store, mode="r")[name]["audio"]
    assert [type(c).__name__ for c in audio.metadata.codecs] == ["PCodec"]
    ds = tree[name].to_dataset()
    assert ds["audio"].dtype == data.dtype and ds.attrs["channels"] == data.shape[1]
    got = np.concatenate([ds["audio"].values[r, : ds["n_valid"].values[r]] for r in range(ds.sizes["chunk"])])
    np.testing.assert_array_equal(got, data)
