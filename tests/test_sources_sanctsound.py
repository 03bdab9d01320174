"""SanctSound source against a moto bucket laid out as gs://noaa-passive-bioacoustic/sanctsound.

The real exemplar clips are written as FLAC under the three real audio name
forms and the real folder layout, with a deployment metadata JSON of each
schema and detection products in their ``data/`` folders.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import pamingest as pi
from pamingest.errors import ConfigError, SourceNotFoundError
from pamingest.sources.base import RejectedFile, SourceFile
from pamingest.sources.sanctsound import SanctSound, parse_detection_product

from helpers import SANCTSOUND_FIXTURE_STREAMS, assert_stream_matches, to_ns

BUCKET = "noaa-passive-bioacoustic"
ROOT = f"s3://{BUCKET}/sanctsound"

# (deployment folder, clip, audio name in the archive's form)
LAYOUT = [
    # form 1: ..._<serial>_YYYYMMDDTHHMMSSZ.flac; two sample rates in one deployment
    ("ci01/sanctsound_ci01_01", "SanctSound_CI01_01_bocaccio_20181101T100353Z.wav",
     "SanctSound_CI01_01_671379494_20181101T100353Z.flac"),
    ("ci01/sanctsound_ci01_01", "SanctSound_CI01_01_snappingshrimp_20181101T080448Z.wav",
     "SanctSound_CI01_01_671379494_20181101T080448Z.flac"),
    # form 2: ..._<serial>_YYMMDDHHMMSS.flac
    ("ci01/sanctsound_ci01_03", "SanctSound_CI01_03_smallboat_20190825T191712Z.wav",
     "SanctSound_CI01_03_671883305_190825191712.flac"),
    ("ci01/sanctsound_ci01_03", "SanctSound_CI01_03_dolphins_20190904T064203Z.wav",
     "SanctSound_CI01_03_671883305_190904064203.flac"),
    # form 3: ..._<serial>_YYMMDDHHMMSS_o.flac
    ("fk02/sanctsound_fk02_03", "SanctSound_FK02_03_rain_20191103T005156Z.wav",
     "SanctSound_FK02_03_671379494_191103005156_o.flac"),
    ("fk02/sanctsound_fk02_03", "SanctSound_FK02_03_snappingshrimp_20191103T014035Z.wav",
     "SanctSound_FK02_03_671379494_191103014035_o.flac"),
    # a deployment for time-range selection
    ("hi03/sanctsound_hi03_02", "SanctSound_HI03_02_spermwhale_20191216T115715Z.wav",
     "SanctSound_HI03_02_1207959583_20191216T115715Z.flac"),
    ("hi03/sanctsound_hi03_02", "SanctSound_HI03_02_dolphin_20191223T175613Z.wav",
     "SanctSound_HI03_02_1207959583_20191223T175613Z.flac"),
    ("hi03/sanctsound_hi03_02", "SanctSound_HI03_02_rain_20200210T201517Z.wav",
     "SanctSound_HI03_02_1207959583_20200210T201517Z.flac"),
]

FLAT_METADATA = {  # schema 1
    "DEPLOYMENT_NAME": "SanctSound_CI01_01",
    "INSTRUMENT_NAME": "SoundTrap ST500 HF",
    "LOCATION": {"lat": "34.0438", "lon": -120.0811},
    "DATA_QUALITY": [
        {"START": "2018-10-31T22:00:00Z", "END": "2019-01-15T00:00:00Z", "QUALITY": "Good"},
        {"START": "2019-01-15T00:00:00Z", "END": "2019-03-25T00:00:00Z", "QUALITY": "Compromised",
         "COMMENT": "self noise above 10 kHz"},
    ],
}
BLOCK_METADATA = {  # schema 2
    "DEPLOYMENT_NAME": "SanctSound_CI01_03",
    "INSTRUMENT_ID": "SoundTrap 671883305",
    "DEPLOYMENT": {"AUDIO_START": "2019-08-20T17:00:00", "AUDIO_END": "2019-11-01T12:00:00",
                   "DEPLOY_LAT": "34.0402", "DEPLOY_LON": "-120.0782"},
    "QUALITY_DETAILS": {"QUALITY_DETAILS": [{"QUALITY": "Good", "START": "2019-08-20T17:00:00",
                                             "END": "2019-11-01T12:00:00"}]},
}
PRODUCTS = [
    "products/detections/ci01/sanctsound_ci01_01_bluewhale_1d/data/SanctSound_CI01_01_bluewhale_1d.csv",
    "products/detections/ci01/sanctsound_ci01_01_ships/data/SanctSound_CI01_01_ships.csv",
    "products/detections/ci01/sanctsound_ci01_03_humpbackwhale_manual_1h/data/SanctSound_CI01_03_humpbackwhale_1h.csv",
    "products/detections/ci01/sanctsound_ci01_03_dolphins_1min/data/SanctSound_CI01_03_dolphins_1min.csv",
    "products/detections/fk02/sanctsound_fk02_03_atlanticcod/data/SanctSound_FK02_03_atlanticcod.csv",
    "products/detections/hi03/sanctsound_hi03_02_humpbackwhale_1h/data/SanctSound_HI03_02_humpbackwhale_1h.csv",
]
NOT_PRODUCTS = [
    # the data/ level is required; other objects in a product folder are not detections
    "products/detections/ci01/sanctsound_ci01_01_bluewhale_1d/SanctSound_CI01_01_bluewhale_1d.csv",
    "products/detections/ci01/sanctsound_ci01_01_bluewhale_1d/data/README.txt",
]


@pytest.fixture
def archive(s3, fixtures, tmp_path):
    """The bucket, and a map from each audio URL to the clip whose samples it holds."""
    clips = fixtures / "sanctsound" / "clips"
    s3.bucket(BUCKET)
    local: dict[str, Path] = {}
    for folder, clip, name in LAYOUT:
        data, rate = sf.read(str(clips / clip), dtype="int16", always_2d=True)
        flac = tmp_path / name
        sf.write(str(flac), data, rate, format="FLAC", subtype="PCM_16")
        local[s3.put(BUCKET, f"sanctsound/audio/{folder}/audio/{name}", flac)] = clips / clip
    s3.put(BUCKET, "sanctsound/audio/ci01/sanctsound_ci01_01/sanctsound_ci01_01.json",
           json.dumps(FLAT_METADATA).encode())
    s3.put(BUCKET, "sanctsound/audio/ci01/sanctsound_ci01_03/metadata/sanctsound_ci01_03.json",
           ("\ufeff" + json.dumps(BLOCK_METADATA, indent=1)).encode())
    # Objects that are not recordings: an unparsable name (reported) and a log (ignored).
    s3.put(BUCKET, "sanctsound/audio/fk02/sanctsound_fk02_03/audio/SanctSound_FK02_03_671379494_notatime.flac",
           (tmp_path / LAYOUT[4][2]).read_bytes())
    s3.put(BUCKET, "sanctsound/audio/fk02/sanctsound_fk02_03/audio/log.txt", b"deployment log\n")
    for key in PRODUCTS + NOT_PRODUCTS:
        s3.put(BUCKET, f"sanctsound/{key}", b"\xef\xbb\xbfISOStartTime,Presence\r\n2018-11-01T00:00:00Z,1\r\n")
    return local


def test_three_name_forms_one_stream_per_deployment_and_rate(s3, archive, store):
    src = SanctSound(ROOT, sites=["CI01", "fk02"], storage_options=s3.storage_options)
    assert src.partitions() == ["ci01/sanctsound_ci01_01", "ci01/sanctsound_ci01_03", "fk02/sanctsound_fk02_03"]
    report = pi.ingest(src, store, client="serial")
    assert report.ingested == 6, report.summary()
    assert [f.url.rsplit("/", 1)[-1] for f in report.failed] == ["SanctSound_FK02_03_671379494_notatime.flac"]
    tree = pi.open_store(store)
    assert pi.streams(tree) == SANCTSOUND_FIXTURE_STREAMS
    checked = sum(assert_stream_matches(tree[n].to_dataset(), lambda url: archive[url]) for n in pi.streams(tree))
    assert checked == 6
    # Each name form gives the clip's own UTC start (the clip names carry it too).
    for name in pi.streams(tree):
        ds = tree[name].to_dataset()
        for url, start in zip(ds["file_url"].values, ds["file_start"].values):
            clip_time = archive[str(url)].stem.rsplit("_", 1)[-1]
            assert start == np.datetime64(to_ns(clip_time), "ns"), url
    # Re-running adds nothing.
    again = pi.ingest(src, store, client="serial")
    assert again.ingested == 0 and again.skipped == 7


def test_metadata_of_both_schemas_become_stream_attributes(s3, archive, store):
    src = SanctSound(ROOT, sites="ci01,fk02", storage_options=s3.storage_options)
    pi.ingest(src, store, client="serial")
    tree = pi.open_store(store)
    flat = tree["sanctsound/ci01_01/2000Hz_1ch_pcm16"].attrs
    assert (flat["metadata_schema"], flat["deployment"], flat["sanctsound_site"]) == ("flat", "01", "ci01")
    assert flat["instrument"] == "SoundTrap ST500 HF"
    assert (flat["latitude"], flat["longitude"]) == (34.0438, -120.0811)
    assert [q["QUALITY"] for q in flat["data_quality"]] == ["Good", "Compromised"]
    assert flat["metadata_url"] == f"{ROOT}/audio/ci01/sanctsound_ci01_01/sanctsound_ci01_01.json"
    # The stream's own description is not overridden by the metadata.
    assert flat["sample_rate"] == 2000 and flat["site"] == "ci01_01"
    block = tree["sanctsound/ci01_03/48000Hz_1ch_pcm16"].attrs
    assert block["metadata_schema"] == "deployment-block"
    assert (block["latitude"], block["longitude"]) == (34.0402, -120.0782)
    assert (block["audio_start"], block["audio_end"]) == ("2019-08-20T17:00:00Z", "2019-11-01T12:00:00Z")
    assert block["instrument"] == "SoundTrap 671883305"
    assert block["data_quality"][0]["QUALITY"] == "Good"
    assert block["deployment_metadata"]["DEPLOYMENT"]["DEPLOY_LAT"] == "34.0402"
    none = tree["sanctsound/fk02_03/48000Hz_1ch_pcm16"].attrs
    assert none["deployment"] == "03" and "metadata_url" not in none


def test_unreadable_metadata_is_recorded_and_the_audio_ingested(s3, archive, store):
    s3.put(BUCKET, "sanctsound/audio/fk02/sanctsound_fk02_03/sanctsound_fk02_03.json", b"{not json")
    src = SanctSound(ROOT, sites="fk02", storage_options=s3.storage_options)
    report = pi.ingest(src, store, client="serial")
    assert report.ingested == 2
    attrs = pi.open_store(store)["sanctsound/fk02_03/48000Hz_1ch_pcm16"].attrs
    assert "sanctsound_fk02_03.json: not valid JSON" in attrs["metadata_error"]


def test_deployment_and_time_selection(s3, archive):
    opts = s3.storage_options
    assert SanctSound(ROOT, deployments=[3], storage_options=opts).partitions() == [
        "ci01/sanctsound_ci01_03", "fk02/sanctsound_fk02_03"]
    assert SanctSound(ROOT, deployments="ci01_01", storage_options=opts).partitions() == ["ci01/sanctsound_ci01_01"]
    assert SanctSound(ROOT, sites="hi03", deployments="02", storage_options=opts).partitions() == [
        "hi03/sanctsound_hi03_02"]
    # 20 Dec .. 1 Jan: the dolphin file starts inside; the sperm whale file (16 Dec) is the one
    # that may still be recording on 20 Dec; the February file is out.
    src = SanctSound(ROOT, sites="hi03", start="2019-12-20", end="2020-01-01", storage_options=opts)
    names = [r.name for r in src.list_partition("hi03/sanctsound_hi03_02")]
    assert names == ["SanctSound_HI03_02_1207959583_20191216T115715Z.flac",
                     "SanctSound_HI03_02_1207959583_20191223T175613Z.flac"]
    src = SanctSound(ROOT, sites="hi03", start="2020-02-10T20:15:17", storage_options=opts)
    assert [r.name for r in src.list_partition("hi03/sanctsound_hi03_02")] == [
        "SanctSound_HI03_02_1207959583_20200210T201517Z.flac"]
    # A deployment whose metadata puts its audio outside the range is not even listed.
    src = SanctSound(ROOT, sites="ci01", start="2019-12-01", end="2020-01-01", storage_options=opts)
    assert src.partitions() == ["ci01/sanctsound_ci01_01"]  # ci01_01's metadata has no audio span


def test_records_are_deterministic_and_rejections_kept(s3, archive):
    src = SanctSound(ROOT, sites="fk02", storage_options=s3.storage_options)
    records = src.list_partition("fk02/sanctsound_fk02_03")
    assert records == src.list_partition("fk02/sanctsound_fk02_03")
    assert [type(r) for r in records] == [SourceFile, SourceFile, RejectedFile]  # URL order
    assert "does not match the template" in records[2].reason
    good = [r for r in records if isinstance(r, SourceFile)]
    assert {r.site for r in good} == {"fk02_03"}
    assert dict(good[0].fields)["suffix"] == "o" and dict(good[0].fields)["serial"] == "671379494"


def test_detection_products_of_selected_deployments(s3, archive):
    opts = s3.storage_options
    everything = SanctSound(ROOT, storage_options=opts).detection_products()
    assert everything == sorted(f"{ROOT}/{k}" for k in PRODUCTS)
    ci01_03 = SanctSound(ROOT, sites="ci01", deployments="03", storage_options=opts).detection_products()
    assert [parse_detection_product(u) for u in ci01_03] == [
        parse_detection_product(f"{ROOT}/{PRODUCTS[3]}"), parse_detection_product(f"{ROOT}/{PRODUCTS[2]}")]
    p = parse_detection_product(ci01_03[1])
    assert (p.site, p.deployment, p.category, p.resolution) == ("ci01", "03", "humpbackwhale_manual", "1h")
    ships = SanctSound(ROOT, sites="ci01", storage_options=opts).detection_products(categories="ships")
    assert ships == [f"{ROOT}/{PRODUCTS[1]}"]
    daily = SanctSound(ROOT, storage_options=opts).detection_products(resolutions=["1d"])
    assert daily == [f"{ROOT}/{PRODUCTS[0]}"]
    events = SanctSound(ROOT, storage_options=opts).detection_products(resolutions=[""])
    assert events == sorted(f"{ROOT}/{PRODUCTS[i]}" for i in (1, 4))


def test_missing_site_or_deployment_is_an_error_naming_it(s3, archive):
    with pytest.raises(SourceNotFoundError, match="audio/ci02: no such site folder"):
        SanctSound(ROOT, sites="ci02", storage_options=s3.storage_options).partitions()
    with pytest.raises(SourceNotFoundError, match="no deployment folder matches ci01_07"):
        SanctSound(ROOT, deployments="ci01_07", storage_options=s3.storage_options).partitions()
    with pytest.raises(ConfigError, match="before it starts"):
        SanctSound(ROOT, start="2020-01-02", end="2020-01-01")


def test_default_root_is_the_public_google_bucket_read_anonymously():
    src = SanctSound()
    assert src.root == "gs://noaa-passive-bioacoustic/sanctsound"
    assert src.storage_options == {"token": "anon"}
    assert isinstance(src, pi.Source)


def test_command_line(s3, archive, tmp_path):
    from test_cli import run

    out = run("ingest", "sanctsound", "--root", ROOT, "--endpoint-url", s3.endpoint, "--site", "ci01",
              "--deployment", "03", "--store", tmp_path / "store", "--serial", "--json")
    report = json.loads(out.stdout)
    assert report["ingested"] == 2 and report["failed"] == []
    assert report["streams"] == ["sanctsound/ci01_03/48000Hz_1ch_pcm16"]
    bad = run("ingest", "sanctsound", "--root", ROOT, "--endpoint-url", s3.endpoint, "--site", "xx99",
              "--store", tmp_path / "store", "--serial", check=False)
    assert bad.returncode == 2 and "audio/xx99: no such site folder" in bad.stderr


def test_metadata_failures_never_raise_from_stream_attributes():
    """Ingest calls stream_attributes while allocating rows: an unreachable bucket must not abort the run."""
    dead = {"endpoint_url": "http://127.0.0.1:9", "key": "k", "secret": "s",
            "config_kwargs": {"retries": {"max_attempts": 1}}}
    src = SanctSound(ROOT, storage_options=dead)
    file = SourceFile("sanctsound", "ci01_01", 0, f"{ROOT}/audio/ci01/sanctsound_ci01_01/audio/x.flac", 1)
    attrs = src.stream_attributes(file)
    assert attrs["deployment"] == "01" and "cannot list the deployment folder" in attrs["metadata_error"]
