"""Recordings without a time in their name: starts from a manifest, one --file/--start, a relative time base."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

import pamingest as pi
from pamingest.errors import ConfigError
from pamingest.sources.manifest import RELATIVE_REFERENCE, ManifestFiles
from pamingest.timing import NS_PER_S, to_ns

BIRDS = "annotated/birds_10s.wav"


@pytest.fixture
def calls(tmp_path, fixtures):
    """Real recordings named by index, as lab collections name them."""
    folder = tmp_path / "calls"
    folder.mkdir()
    shutil.copy(fixtures / BIRDS, folder / "0001.wav")
    shutil.copy(fixtures / BIRDS, folder / "0002.wav")
    return folder


def stream_of(store):
    tree = pi.open_store(store)
    [name] = pi.streams(tree)
    return name, tree[name].to_dataset()


def test_a_manifest_gives_each_recording_its_start_and_bad_lines_are_named(calls, fixtures, tmp_path):
    (calls / "manifest.csv").write_text(
        "file,start,site\n"
        "0001.wav,2021-03-04T10:00:00Z,lab\n"
        "0002.wav,2021-03-04T12:01:07.5+02:00,lab\n"   # an offset: converted to UTC
        "0003.wav,2021-03-04T10:05:00Z,lab\n"          # not there
        "0001.wav,yesterday-ish,lab\n"                  # a start that does not parse
    )
    store = str(tmp_path / "store")
    report = pi.ingest(ManifestFiles(str(calls / "manifest.csv")), store, client="serial")
    assert report.ingested == 2
    reasons = sorted(f.reason for f in report.failed)
    assert any("0003.wav: listed in" in r and "manifest.csv, line 4 but not found" in r for r in reasons), reasons
    assert any("manifest.csv, line 5: start 'yesterday-ish' does not parse" in r for r in reasons), reasons
    name, ds = stream_of(store)
    assert name.startswith("files/lab/")
    starts = dict(zip([u.rsplit("/", 1)[-1] for u in ds["file_url"].values.tolist()], ds["file_start"].values))
    assert starts["0001.wav"] == np.datetime64(to_ns("2021-03-04T10:00:00Z"), "ns")
    assert starts["0002.wav"] == np.datetime64(to_ns("2021-03-04T10:01:07.5Z"), "ns")
    assert ds.attrs["time_base"] == "utc" and ds.attrs["start_times_from"].endswith("manifest.csv")
    # The samples are the recording's, at the manifest's time.
    data, rate = sf.read(str(fixtures / BIRDS), dtype="int16", always_2d=True)
    w = ds.pam.window("2021-03-04T10:00:00Z", "2021-03-04T10:00:02Z")
    np.testing.assert_array_equal(w.values, data[: 2 * rate])
    assert pi.ingest(ManifestFiles(str(calls / "manifest.csv")), store, client="serial").ingested == 0


def test_a_relative_time_base_orders_and_spaces_recordings_without_dates(calls, tmp_path):
    (calls / "manifest.csv").write_text("file,start_seconds\n0001.wav,0\n0002.wav,60\n")
    store = str(tmp_path / "store")
    report = pi.ingest(ManifestFiles(str(calls / "manifest.csv"), time_base="relative"), store, client="serial")
    assert report.ingested == 2 and not report.failed
    _, ds = stream_of(store)
    assert ds.attrs["time_base_note"] == RELATIVE_REFERENCE and ds.attrs["time_base"] == "relative"
    assert sorted(ds["file_start"].values.astype("int64").tolist()) == [0, 60 * NS_PER_S]
    spans = ds.pam.coverage()
    assert len(spans) == 2 and spans["start"].iloc[1] == np.datetime64(60 * NS_PER_S, "ns")
    # The same recordings on UTC times under the same source name: refused, not mixed in.
    shutil.copy(calls / "0001.wav", calls / "0003.wav")
    (calls / "utc.csv").write_text("file,start\n0003.wav,2021-03-04T10:00:00Z\n")
    with pytest.raises(ConfigError, match="holds relative times and this source gives utc times"):
        pi.ingest(ManifestFiles(str(calls / "utc.csv"), site="calls"), store, client="serial")


def test_one_file_with_its_start_from_the_command_line(calls, tmp_path):
    store = str(tmp_path / "store")
    cmd = [sys.executable, "-m", "pamingest.cli", "ingest", "manifest", "--file", str(calls / "0002.wav"),
           "--start", "2020-01-01T06:30:00Z", "--site", "spinetail", "--store", store, "--serial", "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["ingested"] == 1
    name, ds = stream_of(store)
    assert name.startswith("files/spinetail/")
    assert ds["file_start"].values[0] == np.datetime64(to_ns("2020-01-01T06:30:00Z"), "ns")
    no_start = subprocess.run(cmd[:7] + cmd[9:], capture_output=True, text=True)
    assert no_start.returncode == 2 and "--file needs --start" in no_start.stderr


def test_a_manifest_in_a_bucket_names_objects_beside_it(s3, fixtures, tmp_path):
    s3.bucket("lab")
    s3.put("lab", "calls/0001.wav", fixtures / BIRDS)
    s3.put("lab", "calls/manifest.csv", b"file,start\n0001.wav,2021-03-04T10:00:00Z\n")
    store = str(tmp_path / "store")
    report = pi.ingest(ManifestFiles("s3://lab/calls/manifest.csv", storage_options=s3.storage_options), store,
                       client="serial")
    assert report.ingested == 1 and not report.failed, report.summary()
    name, ds = stream_of(store)
    assert name.startswith("files/calls/") and ds["file_url"].values[0] == "s3://lab/calls/0001.wav"


def test_bad_settings_are_refused():
    with pytest.raises(ConfigError, match="one of the two"):
        ManifestFiles()
    with pytest.raises(ConfigError, match="time_base"):
        ManifestFiles(files=[("a.wav", "2020-01-01")], time_base="local")
