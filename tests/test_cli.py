"""The command line as a user runs it: real processes, real recordings."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

import pamingest as pi

PAMINGEST = [sys.executable, "-m", "pamingest.cli"]


def run(*args, check=True):
    return subprocess.run([*PAMINGEST, *map(str, args)], capture_output=True, text=True, check=check)


def test_ingest_files_then_info(tmp_path, fixtures):
    store = tmp_path / "store"
    out = run("ingest", "files", fixtures / "soundtrap", "--template", "soundtrap", "--store", store,
              "--serial", "--json")
    report = json.loads(out.stdout)
    assert report["ingested"] == 3 and report["failed"] == [] and report["rows"] == 93
    info = run("info", store).stdout
    assert "files/67416073/8000Hz_1ch_pcm16" in info and "0.250" in info
    again = json.loads(run("ingest", "files", fixtures / "soundtrap", "--template", "soundtrap",
                           "--store", store, "--serial", "--json").stdout)
    assert again["ingested"] == 0 and again["skipped"] == 3


def test_summary_names_failed_files(tmp_path, fixtures):
    folder = tmp_path / "rec"
    folder.mkdir()
    (folder / "S4A03895_20190522_000000.wav").write_bytes(
        (fixtures / "songmeter/S4A03895/S4A03895_20190522_000000.wav").read_bytes())
    (folder / "S4A03895_20190522_001500.wav").write_bytes(b"")
    out = run("ingest", "files", folder, "--template", "songmeter", "--store", tmp_path / "s", "--serial")
    assert "ingested   1 files" in out.stdout
    assert "S4A03895_20190522_001500.wav: empty object (0 bytes)" in out.stdout


def test_errors_are_reported_without_a_traceback(tmp_path, fixtures):
    out = run("ingest", "files", fixtures / "soundtrap", "--template", "nosuch", "--store", tmp_path / "s",
              "--serial", check=False)
    assert out.returncode == 2
    assert "unknown template 'nosuch'" in out.stderr and "Traceback" not in out.stderr
    out = run("info", tmp_path / "missing", check=False)
    assert out.returncode == 2 and "no pamingest store" in out.stderr


def test_demo_runs_the_embedded_default(tmp_path, fixtures):
    """The README's first command: local S3 server + LocalCluster + fixture recordings."""
    out = subprocess.run([*PAMINGEST, "demo", "--workdir", tmp_path, "--fixtures", fixtures],
                         capture_output=True, text=True, check=True, timeout=300)
    assert "dask dashboard: http://127.0.0.1:" in out.stdout
    assert "33 streams" in out.stdout and "0 objects rejected" in out.stdout
    tree = pi.open_store(str(tmp_path / "store"))
    assert "songmeter/S4A03895/22000Hz_1ch_pcm16" in pi.streams(tree)
