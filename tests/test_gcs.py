"""The gs:// path: SanctSound and NCEI NRS read through real gcsfs from gcp-storage-emulator.

The emulator's bucket is laid out as gs://noaa-passive-bioacoustic (docs/sources.md)
with the same objects the moto tests use (test_sources_sanctsound, test_sources_ncei),
and the sources keep their default gs:// roots: only the endpoint and anonymous access
are given, spelled ``anon=True`` as ``--anon`` gives them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import pamingest as pi
from pamingest.errors import DecodeError, SourceNotFoundError
from pamingest.fsutil import filesystem
from pamingest.sources.base import SourceFile
from pamingest.sources.ncei import Ncei
from pamingest.sources.sanctsound import DEFAULT_ROOT, SanctSound

from helpers import SANCTSOUND_FIXTURE_STREAMS, assert_stream_matches, by_name, to_ns
from test_sources_ncei import NRS, write_flac
from test_sources_sanctsound import BLOCK_METADATA, FLAT_METADATA, LAYOUT, NOT_PRODUCTS, PRODUCTS

BUCKET = "noaa-passive-bioacoustic"
ROOT = DEFAULT_ROOT  # gs://noaa-passive-bioacoustic/sanctsound


def _md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def _uploader(endpoint: str):
    # gcsfs's plain JSON-API class, not pamingest.fsutil: the bucket must not depend on the code under test.
    from gcsfs.core import GCSFileSystem

    return GCSFileSystem(endpoint_url=endpoint, token="anon", use_listings_cache=False)


@pytest.fixture(scope="session")
def gcs_archive(gcs_endpoint, fixtures, tmp_path_factory):
    """The bucket, once per session; maps each gs:// audio URL to the local file holding its samples."""
    fs = _uploader(gcs_endpoint)
    fs.mkdir(BUCKET)
    work = tmp_path_factory.mktemp("gcs-archive")
    clips = fixtures / "sanctsound" / "clips"
    local: dict[str, Path] = {}
    for folder, clip, name in LAYOUT:
        data, rate = sf.read(str(clips / clip), dtype="int16", always_2d=True)
        flac = work / name
        sf.write(str(flac), data, rate, format="FLAC", subtype="PCM_16")
        key = f"{BUCKET}/sanctsound/audio/{folder}/audio/{name}"
        fs.pipe_file(key, flac.read_bytes())
        local[f"gs://{key}"] = clips / clip
    fs.pipe_file(f"{BUCKET}/sanctsound/audio/ci01/sanctsound_ci01_01/sanctsound_ci01_01.json",
                 json.dumps(FLAT_METADATA).encode())
    fs.pipe_file(f"{BUCKET}/sanctsound/audio/ci01/sanctsound_ci01_03/metadata/sanctsound_ci01_03.json",
                 ("\ufeff" + json.dumps(BLOCK_METADATA, indent=1)).encode())
    fs.pipe_file(f"{BUCKET}/sanctsound/audio/fk02/sanctsound_fk02_03/audio/SanctSound_FK02_03_671379494_notatime.flac",
                 (work / LAYOUT[4][2]).read_bytes())
    fs.pipe_file(f"{BUCKET}/sanctsound/audio/fk02/sanctsound_fk02_03/audio/log.txt", b"deployment log\n")
    for key in PRODUCTS + NOT_PRODUCTS:
        fs.pipe_file(f"{BUCKET}/sanctsound/{key}", b"\xef\xbb\xbfISOStartTime,Presence\r\n2018-11-01T00:00:00Z,1\r\n")
    for i, (folder, names) in enumerate(NRS.items()):
        for j, name in enumerate(names):
            path = write_flac(work / "nrs" / name, 2.2, 5000, seed=10 * i + j)
            fs.pipe_file(f"{BUCKET}/nrs/audio/{folder}/audio/{name}", path.read_bytes())
            local[f"gs://{BUCKET}/nrs/audio/{folder}/audio/{name}"] = path
    return local


@pytest.fixture
def access(gcs_endpoint) -> dict:
    return {"endpoint_url": gcs_endpoint, "anon": True}


def test_sanctsound_from_the_default_gs_root_bit_for_bit(gcs_endpoint, gcs_archive, access, store):
    src = SanctSound(sites=["CI01", "fk02"], storage_options=access)
    assert src.root == "gs://noaa-passive-bioacoustic/sanctsound"
    assert src.partitions() == ["ci01/sanctsound_ci01_01", "ci01/sanctsound_ci01_03", "fk02/sanctsound_fk02_03"]
    report = pi.ingest(src, store, client="serial")
    assert report.ingested == 6, report.summary()
    assert [f.url for f in report.failed] == [
        f"{ROOT}/audio/fk02/sanctsound_fk02_03/audio/SanctSound_FK02_03_671379494_notatime.flac"]
    tree = pi.open_store(store)
    # The streams the same objects give from the moto bucket (test_sources_sanctsound).
    assert pi.streams(tree) == SANCTSOUND_FIXTURE_STREAMS
    checked = sum(assert_stream_matches(tree[n].to_dataset(), lambda url: gcs_archive[url]) for n in pi.streams(tree))
    assert checked == 6
    for name in pi.streams(tree):
        ds = tree[name].to_dataset()
        for url, start, etag in zip(ds["file_url"].values, ds["file_start"].values, ds["file_etag"].values):
            assert str(url).startswith("gs://noaa-passive-bioacoustic/sanctsound/audio/")
            assert start == np.datetime64(to_ns(gcs_archive[str(url)].stem.rsplit("_", 1)[-1]), "ns"), url
            # GCS's own content hash, not the mtime fallback of local files: a re-run compares it.
            assert etag == _md5(_uploader(gcs_endpoint).cat_file(str(url))), url
    again = pi.ingest(src, store, client="serial")
    assert again.ingested == 0 and again.skipped == 7
    assert "STORAGE_EMULATOR_HOST" not in os.environ  # reached through endpoint_url only


def test_metadata_and_detection_products_through_gcsfs(gcs_archive, access):
    src = SanctSound(sites="ci01", storage_options=access)
    flat = src.deployment_metadata("ci01/sanctsound_ci01_01")
    assert flat["metadata_schema"] == "flat" and flat["instrument"] == "SoundTrap ST500 HF"
    assert flat["metadata_url"] == f"{ROOT}/audio/ci01/sanctsound_ci01_01/sanctsound_ci01_01.json"
    block = src.deployment_metadata("ci01/sanctsound_ci01_03")  # in a sub-folder, with a BOM
    assert block["metadata_schema"] == "deployment-block"
    assert (block["latitude"], block["longitude"]) == (34.0402, -120.0782)
    everything = SanctSound(storage_options=access).detection_products()
    assert everything == sorted(f"{ROOT}/{k}" for k in PRODUCTS)


def test_ncei_nrs_from_the_default_gs_root(gcs_archive, access, store):
    src = Ncei("nrs", stations="11", deployments="nrs_11_2019-2021", storage_options=access)
    assert src.root == "gs://noaa-passive-bioacoustic"
    assert src.partitions() == ["11/nrs_11_2019-2021"]
    report = pi.ingest(src, store, client="serial", row_seconds=1)
    assert report.ingested == 4 and not report.failed, report.summary()
    ds = pi.open_store(store)["ncei/nrs_11_2019-2021/5000Hz_1ch_pcm16"].to_dataset()
    assert assert_stream_matches(ds, lambda url: gcs_archive[url]) == 4
    starts = dict(zip([u.rsplit("/", 1)[-1] for u in ds["file_url"].values], ds["file_start"].values))
    assert starts["NRS11_20200101_110860.flac"] == np.datetime64("2020-01-01T11:09:00")


def test_anon_spelling_and_an_endpoint_give_a_fast_plain_gcsfs(gcs_archive, access):
    from gcsfs.core import GCSFileSystem

    fs, path = filesystem(ROOT, access)
    assert path == "noaa-passive-bioacoustic/sanctsound"
    assert fs.storage_options["token"] == "anon" and "anon" not in fs.storage_options
    assert fs.storage_options["use_listings_cache"] is False
    # gcsfs's default class for gs:// first asks the bucket's layout over gRPC, which a
    # non-Google endpoint does not serve: a minute per call, uncached.
    assert type(fs) is GCSFileSystem
    t0 = time.perf_counter()
    for _ in range(3):
        assert [p.rsplit("/", 1)[-1] for p in fs.ls(f"{path}/audio")] == ["ci01", "fk02", "hi03"]
    assert time.perf_counter() - t0 < 5
    # The filesystem goes to Dask workers pickled.
    import pickle

    again = pickle.loads(pickle.dumps(fs))
    assert again.ls(f"{path}/audio/hi03") == [f"{path}/audio/hi03/sanctsound_hi03_02"]


def test_listing_sees_objects_added_since_the_last_one(gcs_endpoint, gcs_archive, access, store):
    """No listing cache: a long-lived process must see new recordings (a scratch bucket, so the shared one stays whole)."""
    fs = _uploader(gcs_endpoint)
    bucket = "pamingest-gcs-scratch"
    fs.mkdir(bucket)
    try:
        folder, clip, name = LAYOUT[6]  # hi03_02
        src_url = f"{ROOT}/audio/{folder}/audio/{name}"
        fs.pipe_file(f"{bucket}/sanctsound/audio/{folder}/audio/{name}", fs.cat_file(src_url))
        src = SanctSound(f"gs://{bucket}/sanctsound", sites="hi03", storage_options=access)
        assert [r.name for r in src.list_partition("hi03/sanctsound_hi03_02")] == [name]
        assert pi.ingest(src, store, client="serial").ingested == 1
        later = LAYOUT[7][2]
        fs.pipe_file(f"{bucket}/sanctsound/audio/{folder}/audio/{later}",
                     fs.cat_file(f"{ROOT}/audio/{folder}/audio/{later}"))
        assert [r.name for r in src.list_partition("hi03/sanctsound_hi03_02")] == [name, later]
        # Folders are listed with ls (gcsfs's find does not read its listing cache; ls does).
        assert src.partitions() == ["hi03/sanctsound_hi03_02"]
        fs.pipe_file(f"{bucket}/sanctsound/audio/hi03/sanctsound_hi03_03/audio/{later}",
                     fs.cat_file(f"{ROOT}/audio/{folder}/audio/{later}"))
        assert src.partitions() == ["hi03/sanctsound_hi03_02", "hi03/sanctsound_hi03_03"]
        report = pi.ingest(src, store, client="serial")
        assert report.ingested == 2 and report.skipped == 1, report.summary()
    finally:
        fs.rm(bucket, recursive=True)


def test_missing_site_object_or_bucket_is_a_clear_error(gcs_archive, access):
    with pytest.raises(SourceNotFoundError, match="audio/ci02: no such site folder"):
        SanctSound(sites="ci02", storage_options=access).partitions()
    with pytest.raises(SourceNotFoundError, match=r"no site folders \(audio/\); is gs://no-such-bucket/sanctsound"):
        SanctSound("gs://no-such-bucket/sanctsound", storage_options=access).partitions()
    from pamingest.decode.sndfile import SndfileDecoder

    gone = SourceFile("sanctsound", "ci01_01", 0, f"{ROOT}/audio/ci01/sanctsound_ci01_01/audio/gone.flac", 1000)
    with pytest.raises(DecodeError, match=r"object not found .*gone\.flac"):
        SndfileDecoder().probe(gone, access)
    no_bucket = SourceFile("sanctsound", "ci01_01", 0, "gs://no-such-bucket/sanctsound/x.flac", 1000)
    with pytest.raises(DecodeError, match="object not found"):
        SndfileDecoder().probe(no_bucket, access)


def test_command_line_with_anon_and_endpoint(gcs_archive, gcs_endpoint, tmp_path):
    from test_cli import run

    # No --root: the source's default gs:// bucket, reached at the emulator.
    out = run("ingest", "sanctsound", "--endpoint-url", gcs_endpoint, "--anon", "--site", "ci01",
              "--deployment", "03", "--store", tmp_path / "store", "--serial", "--json")
    report = json.loads(out.stdout)
    assert report["ingested"] == 2 and report["failed"] == []
    assert report["streams"] == ["sanctsound/ci01_03/48000Hz_1ch_pcm16"]
    bad = run("ingest", "sanctsound", "--endpoint-url", gcs_endpoint, "--anon", "--site", "xx99",
              "--store", tmp_path / "store", "--serial", check=False)
    assert bad.returncode == 2 and "sanctsound/audio/xx99: no such site folder" in bad.stderr
