"""Zero-copy ingest (``ingest --virtual``): rows that are byte ranges of the original PCM WAV objects.

Real recordings (SongMeter 16-bit, SanctSound 32-bit) on a moto S3 server and on a local disk; the
same checks a copied stream passes, every sample equal; changed objects refused, never read.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from helpers import assert_stream_matches, by_name
from pamingest import ingest, open_store
from pamingest.cli import main
from pamingest.errors import SourceChangedError
from pamingest.info import store_info
from pamingest.labeling import pseudolabel
from pamingest.sources.files import TimestampedFiles
from pamingest.store.codec import PcmCodec
from pamingest.store.repo import Store
from pamingest.store.virtual import stale_objects

SONGMETER = "songmeter/S4A03895"
MB01 = ["SanctSound_MB01_05_bocaccio_20200508T042435Z.wav", "SanctSound_MB01_05_humpbackwhale_20200721T103355Z.wav"]
SOUNDTRAP = "soundtrap/67416073.210610033655.flac"
TEMPLATE = ["{site}_%Y%m%d_%H%M%S.{ext}", "SanctSound_{site:[A-Z]{2}\\d{2}_\\d{2}}_{kind}_%Y%m%dT%H%M%SZ.{ext}",
            "{site}.%y%m%d%H%M%S.{ext}"]


def _chunk_objects(store: str) -> int:
    """Bytes of the store's chunk objects (the audio a copied store holds; a virtual one holds none)."""
    return sum(p.stat().st_size for p in (Path(store) / "chunks").rglob("*") if p.is_file())


@pytest.mark.parametrize("bits", [16, 24, 32])
def test_pcm_codec_reads_a_short_range_padded_and_writes_the_recordings_bytes(bits):
    import zarr

    dtype = "int16" if bits == 16 else "int32"
    codec = PcmCodec(bits=bits)
    x = np.random.default_rng(bits).integers(-(2 ** (bits - 1)), 2 ** (bits - 1), size=(2, 50, 3)).astype(dtype)
    store = zarr.storage.MemoryStore()
    a = zarr.create_array(store, shape=x.shape, chunks=(1, 50, 3), dtype=dtype, fill_value=0, serializer=codec,
                          compressors=None)
    a[:] = x
    np.testing.assert_array_equal(a[:], x)
    raw = store._store_dict["c/1/0/0"].to_bytes()
    assert len(raw) == 50 * 3 * bits // 8  # the recording's own interleaved little-endian bytes
    # A file's last row: the reference is shorter than the chunk; the rest reads as the fill value.
    store._store_dict["c/1/0/0"] = store._store_dict["c/1/0/0"][: 20 * 3 * bits // 8]
    np.testing.assert_array_equal(a[1, :20], x[1, :20])
    assert not a[1, 20:].any()
    store._store_dict["c/1/0/0"] = store._store_dict["c/1/0/0"][:7]  # not whole frames
    with pytest.raises(ValueError, match="whole frames"):
        a[1]


@pytest.fixture
def wav_bucket(s3, fixtures):
    """A bucket of SongMeter WAVs (16-bit), two SanctSound 32-bit clips and one SoundTrap FLAC."""
    s3.bucket("pam")
    for p in sorted((fixtures / SONGMETER).glob("*.wav"))[:6]:
        s3.put("pam", f"deploy/{p.name}", p)
    for name in MB01:
        s3.put("pam", f"deploy/{name}", fixtures / "sanctsound" / "clips" / name)
    s3.put("pam", f"deploy/{Path(SOUNDTRAP).name}", fixtures / SOUNDTRAP)
    return s3


def _local(fixtures):
    def find(url: str) -> Path:
        name = url.rsplit("/", 1)[-1]
        for folder in (fixtures / SONGMETER, fixtures / "sanctsound" / "clips", fixtures / "soundtrap"):
            if (folder / name).exists():
                return folder / name
        raise AssertionError(url)
    return find


def test_virtual_s3_stream_reads_as_the_copied_one(wav_bucket, fixtures, tmp_path):
    source = TimestampedFiles("s3://pam/deploy", template=TEMPLATE,
                              storage_options=wav_bucket.storage_options)
    virtual, copied = str(tmp_path / "virtual"), str(tmp_path / "copied")
    rv = ingest(source, virtual, client="threads", virtual=True)
    rc = ingest(source, copied, client="threads")
    assert rv.ingested == rc.ingested == 9 and not rv.failed, rv.summary()
    # The FLAC cannot be referenced: copied, and the report says so with the reason.
    assert [f.url for f in rv.copied] == [f"s3://pam/deploy/{Path(SOUNDTRAP).name}"]
    assert "not packed integer PCM WAV" in rv.copied[0].reason and "copied" in rv.summary()
    assert sorted(rv.streams) == sorted(s if s.startswith("files/67416073/") else s + "_virtual"
                                        for s in rc.streams), (rv.streams, rc.streams)

    tree_v, tree_c = open_store(virtual), open_store(copied)
    for path in rc.streams:
        if path.startswith("files/67416073/"):
            continue  # the SoundTrap FLAC: copied in both
        ds_v, ds_c = tree_v[path + "_virtual"].to_dataset(), tree_c[path].to_dataset()
        assert ds_v.attrs["storage"] == "virtual"
        assert assert_stream_matches(ds_v, _local(fixtures)) >= 2
        np.testing.assert_array_equal(ds_v["audio"].values, ds_c["audio"].values)
        for name in ("chunk_start", "n_valid", "quality_rms_dbfs", "quality_clipped"):
            np.testing.assert_array_equal(ds_v[name].values, ds_c[name].values)
        t0 = ds_c["chunk_start"].values.min()
        w_v = ds_v.pam.window(t0 + np.timedelta64(3, "s"), t0 + np.timedelta64(27, "s"))
        w_c = ds_c.pam.window(t0 + np.timedelta64(3, "s"), t0 + np.timedelta64(27, "s"))
        np.testing.assert_array_equal(w_v.values, w_c.values)
        np.testing.assert_array_equal(w_v["time"].values, w_c["time"].values)
        clips_v, clips_c = ds_v.pam.clips(5.0), ds_c.pam.clips(5.0)
        assert len(clips_v) == len(clips_c) > 0
        np.testing.assert_array_equal(clips_v["start"].values, clips_c["start"].values)
    # Nothing of the WAVs' samples is in the virtual store: only the copied FLAC's chunks.
    flac_bytes = Path(fixtures / SOUNDTRAP).stat().st_size
    assert _chunk_objects(virtual) < 1.2 * flac_bytes < _chunk_objects(copied)

    # Above the store: the labelling queue and a labeller score the same chunks to the same values.
    lv = pseudolabel(virtual, "energy:humpback", client="serial")
    lc = pseudolabel(copied, "energy:humpback", client="serial")
    assert lv.scored == lc.scored > 0 and not lv.failed
    sv = open_store(virtual)[next(s for s in rv.streams if "22000Hz" in s)].to_dataset()
    sc = open_store(copied)[next(s for s in rc.streams if "22000Hz" in s)].to_dataset()
    score = next(k for k in sv.data_vars if k.startswith("score__"))
    np.testing.assert_array_equal(sv[score].values, sc[score].values)

    # Labels and a training export: the same rows, the same audio bytes, from either store.
    from pamingest.annotations import Recording, attach
    from pamingest.export import export

    table = fixtures / "annotated" / "raven" / "MSD-0003_20180427_2minstart00.Table.1.selections.txt"
    first = sorted((fixtures / SONGMETER).glob("*.wav"))[0].name
    exports = {}
    for name, store in (("virtual", virtual), ("copied", copied)):
        assert attach(store, [table], "raven", recording=Recording(first)).snapshot_id
        report = export(store, str(tmp_path / f"hf-{name}"), "hf", seconds=5.0, min_score=0.5, split_by="day")
        assert sum(report.rows.values()) > 0, report.rows
        exports[name] = report
    assert exports["virtual"].files == exports["copied"].files
    import pyarrow.parquet as pq

    for name in exports["copied"].files:
        if name.endswith(".parquet"):  # rows name their stream and snapshot, which differ; not their audio
            got, want = (pq.read_table(tmp_path / f"hf-{k}" / name).to_pydict() for k in ("virtual", "copied"))
            assert len(got["audio"]) == len(want["audio"]) > 0
            assert [a["bytes"] for a in got["audio"]] == [a["bytes"] for a in want["audio"]], name
            assert got["labels"] == want["labels"] and got["utc_start"] == want["utc_start"]

    # Another process, opening the store as a notebook does, reads the references too.
    path = next(s for s in rv.streams if "22000Hz" in s)
    code = (f"from pamingest import open_store; ds = open_store({virtual!r})[{path!r}].to_dataset(); "
            "print(int(abs(ds['audio'].values.astype('int64')).sum()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) == int(abs(tree_c[path.removesuffix("_virtual")].to_dataset()["audio"].values
                                      .astype("int64")).sum())


def test_changed_object_is_refused_and_reported(wav_bucket, fixtures, tmp_path, capsys):
    source = TimestampedFiles("s3://pam/deploy", template=TEMPLATE,
                              storage_options=wav_bucket.storage_options)
    store = str(tmp_path / "virtual")
    ingest(source, store, client="serial", virtual=True, quality=False)
    songmeter = sorted((fixtures / SONGMETER).glob("*.wav"))
    changed = songmeter[1]
    # The same object rewritten with other samples, same size (a re-export, a corrected gain).
    data, sr = sf.read(str(changed), dtype="int16")
    body = changed.read_bytes()
    header = len(body) - data.nbytes
    wav_bucket.put("pam", f"deploy/{changed.name}", body[:header] + (-data).astype("<i2").tobytes())

    ds = open_store(store)["files/S4A03895/22000Hz_1ch_pcm16_virtual"].to_dataset()
    starts = ds["chunk_start"].values
    first = np.sort(starts)
    # The untouched file before it still reads; the changed one is refused, naming it.
    np.testing.assert_array_equal(ds.pam.window(first[0], first[0] + np.timedelta64(5, "s")).values[:, 0],
                                  sf.read(str(songmeter[0]), dtype="int16")[0][: 5 * sr])
    t_changed = first[1]
    with pytest.raises(SourceChangedError, match=changed.name):
        ds.pam.window(t_changed, t_changed + np.timedelta64(2, "s"))

    stale = stale_objects(Store.open(store).root(), wav_bucket.storage_options)
    assert [(u.rsplit("/", 1)[-1], "changed since ingested" in r) for _, u, r in stale] == [(changed.name, True)]
    wav_bucket.delete("pam", f"deploy/{songmeter[2].name}")
    code = main(["verify", store, "--endpoint-url", wav_bucket.endpoint])
    out = capsys.readouterr().out
    assert code == 1 and changed.name in out and songmeter[2].name in out and "no longer exists" in out

    # The next ingest sees the changed object and says so (it is not read, nor ingested twice).
    again = ingest(source, store, client="serial", virtual=True)
    assert changed.name in " ".join(f.url for f in again.changed) and again.ingested == 0


def test_virtual_local_folder_24_bit(tmp_path, fixtures, capsys):
    """Local recordings (a file:// container): 16-bit SongMeter WAVs and a 24-bit stereo WAV whose
    rows are not whole (its last row is short), ingested by reference; a rewritten file is refused."""
    folder = tmp_path / "deploy 2019" / "S4A03895"  # a space: Icechunk container prefixes must avoid it
    folder.mkdir(parents=True)
    for p in sorted((fixtures / SONGMETER).glob("*.wav"))[:3]:
        shutil.copy(p, folder / p.name)
    real = sf.read(str(fixtures / SONGMETER / "S4A03895_20190522_000000.wav"), dtype="int32")[0]
    stereo = np.stack([real, -real], axis=1)[:215_000] // 256  # 24-bit values, stereo, 9.77 s at 22 kHz
    other = folder / "S4A03895_20190522_020000.wav"
    sf.write(str(other), stereo.astype(np.int32) << 8, 22000, subtype="PCM_24")
    # Recorded a minute ago: Icechunk checks a local file's modification time in whole seconds, so a
    # rewrite within the second of the version ingested would pass its check (`verify` still sees it).
    for p in folder.iterdir():
        os.utime(p, (time.time() - 60, time.time() - 60))
    store = str(tmp_path / "store")
    code = main(["ingest", "files", str(tmp_path / "deploy 2019"), "--template", "songmeter", "--store", store,
                 "--virtual", "--row-seconds", "4", "--serial", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["ingested"] == 4 and not report["copied"] and not report["failed"], report
    assert "rows are references to the recordings (virtual)" in store_info(store).format()
    tree = open_store(store)
    ds24 = tree["files/S4A03895/22000Hz_2ch_pcm24_virtual"].to_dataset()
    assert assert_stream_matches(ds24, by_name(folder)) == 1
    assert list(ds24["n_valid"].values) == [88_000, 88_000, 39_000]
    ds16 = tree["files/S4A03895/22000Hz_1ch_pcm16_virtual"].to_dataset()
    assert assert_stream_matches(ds16, by_name(folder)) == 3
    assert _chunk_objects(store) == 0  # every row a reference

    sf.write(str(other), (stereo.astype(np.int32) << 8) // 2, 22000, subtype="PCM_24")  # rewritten in place
    ds24 = open_store(store)["files/S4A03895/22000Hz_2ch_pcm24_virtual"].to_dataset()
    t0 = ds24["chunk_start"].values.min()
    with pytest.raises(SourceChangedError, match=other.name):
        ds24.pam.window(t0, t0 + np.timedelta64(1, "s"))
    assert [u for _, u, _ in stale_objects(Store.open(store).root())] == [str(other)]


def test_virtual_rows_written_by_dask_worker_processes(wav_bucket, tmp_path, fixtures):
    """Forks pickled to worker processes set the references (they carry the containers), and
    workers of another run read them (they open the store authorised)."""
    from distributed import Client, LocalCluster

    source = TimestampedFiles("s3://pam/deploy", template=TEMPLATE,
                              storage_options=wav_bucket.storage_options)
    store = str(tmp_path / "virtual")
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        report = ingest(source, store, client=client, virtual=True, rows_per_task=2)
        assert report.ingested == 9 and not report.failed, report.summary()
        scored = pseudolabel(store, "energy:humpback", client=client)
        assert scored.scored > 0 and not scored.failed, scored.summary()
    ds = open_store(store)["files/S4A03895/22000Hz_1ch_pcm16_virtual"].to_dataset()
    assert assert_stream_matches(ds, _local(fixtures)) == 6


def test_virtual_needs_a_wav_decoder(tmp_path):
    from pamingest.errors import ConfigError
    from pamingest.sources.orcasound import OrcasoundHLS

    with pytest.raises(ConfigError, match="sndfile"):
        ingest(OrcasoundHLS(nodes=["rpi_orcasound_lab"], bucket=str(tmp_path)), str(tmp_path / "s"), virtual=True)
