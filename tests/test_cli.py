"""The command line as a user runs it: real processes, real recordings."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import pamingest as pi
from helpers import store_digest
from pamingest.demo import build_demo_store, fill_demo_buckets

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


# A few recordings of each of the demo's buckets (the whole demo: the slow test below).
DEMO_SAMPLE = {
    "songmeter/S4A03895": ["S4A03895_20190522_000000.wav", "S4A03895_20190522_001500.wav"],
    "soundtrap": ["67416073.210610033655.flac"],
    "sanctsound/clips": ["SanctSound_CI02_05_humpbackwhale_20201014T134715Z.wav",
                         "SanctSound_MB01_05_bocaccio_20200508T042435Z.wav"],
    "orcasound/hls": ["live000.ts", "live001.ts", "live002.ts"],
}


def demo(workdir: Path, fixtures: Path, *args: str) -> subprocess.CompletedProcess:
    out = subprocess.run([*PAMINGEST, "demo", "--workdir", workdir, "--fixtures", fixtures, *args],
                         capture_output=True, text=True, check=True, timeout=600)
    assert "dask dashboard: http://127.0.0.1:" in out.stdout and "0 objects rejected" in out.stdout
    assert "Numcodecs" not in out.stdout + out.stderr and "Traceback" not in out.stderr, out.stderr
    return out


def test_demo_builds_what_the_flows_build(tmp_path, fixtures, s3):
    """`pamingest demo` (local S3 server, LocalCluster) on a sample of the demo's recordings: the
    store that `pamingest.demo.build_demo_store`, the calls of `make demo`'s flow runs, makes of the
    same buckets in this process, serially, value for value."""
    sample = tmp_path / "fixtures"
    for folder, names in DEMO_SAMPLE.items():
        (sample / folder).mkdir(parents=True)
        for name in names:
            (sample / folder / name).symlink_to(fixtures / folder / name)
    out = demo(tmp_path / "demo", sample, "--workers", "1")  # a LocalCluster all the same, started sooner
    assert "6 streams" in out.stdout and " 0 queued" in out.stdout
    fill_demo_buckets(s3.endpoint, sample)
    reference = str(tmp_path / "reference")
    build_demo_store(reference, s3.endpoint, sample, "serial")
    tree = pi.open_store(str(tmp_path / "demo" / "store"))
    assert {"songmeter/S4A03895/22000Hz_1ch_pcm16", "orcasound/rpi_orcasound_lab/48000Hz_2ch_pcm16",
            "sanctsound/MB01/4000Hz_1ch_pcm32"} <= set(pi.streams(tree))
    assert store_digest(tree) == store_digest(pi.open_store(reference))


@pytest.mark.slow
def test_demo_builds_the_demo_store(tmp_path, fixtures, demo_store):
    """The whole demo: the session's demo store (built as above, in this process), which the
    notebooks run against; `make demo`'s is compared with it in tests/test_flows.py."""
    out = demo(tmp_path, fixtures)
    assert "35 streams" in out.stdout
    assert "labelled   energy:killer-whale: 236 chunks scored in 35 streams, 0 queued" in out.stdout
    assert store_digest(pi.open_store(str(tmp_path / "store"))) == store_digest(pi.open_store(demo_store))


def test_quiet_on_a_local_cluster(tmp_path, fixtures):
    """Without -v: no Dask logs, no zarr warnings, no tracebacks as the cluster shuts down; only the
    dashboard line. SanctSound's MB01 32-bit clip is stored with PCodec, which zarr warns about on
    every open, in this process and on the workers."""
    store = tmp_path / "store"
    clips = tmp_path / "clips"  # three of the clips, the 32-bit one among them: the cluster's start is the point
    clips.mkdir()
    for name in ("SanctSound_MB01_05_bocaccio_20200508T042435Z.wav", "SanctSound_CI01_01_bocaccio_20181101T100353Z.wav",
                 "SanctSound_CI05_04_finwhale_20191228T134133Z.wav"):
        shutil.copy(fixtures / "sanctsound" / "clips" / name, clips / name)
    out = run("ingest", "files", clips, "--template", "sanctsound-clips", "--store", store, "--workers", "2")
    assert "files/MB01/4000Hz_1ch_pcm32" in out.stdout
    label = run("pseudolabel", store, "--labeler", "energy:humpback", "--workers", "2")
    assert "scored" in label.stdout
    review = run("review", store, "--labeler", "energy:humpback", "--n", "3", "--out", tmp_path / "review")
    for cmd in (out, label, review):
        assert "INFO" not in cmd.stderr and "Traceback" not in cmd.stderr and "Numcodecs" not in cmd.stderr, cmd.stderr
        assert "WARNING" not in cmd.stderr and "Warning" not in cmd.stderr, cmd.stderr
    for cmd in (out, label):
        lines = [line for line in cmd.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("dask dashboard: http://127.0.0.1:"), cmd.stderr
    # -v asks for what the quiet mode hides: the filter is what keeps it out, not its absence.
    loud = run("-v", "pseudolabel", store, "--labeler", "energy:fin-whale", "--workers", "1")
    assert "INFO distributed" in loud.stderr


def test_exit_codes_are_documented_in_help():
    out = run("--help").stdout
    assert "exit codes:" in out
    for code, words in ((0, "done"), (1, "annotate"), (2, "error"), (3, "try again"), (130, "interrupted")):
        assert re.search(rf"^\s+{code}\s+.*{words}", out, re.M), (code, out)


@pytest.mark.parametrize("args, message", [
    (["pseudolabel", "{store}", "--labeler", "nosuch", "--serial"], "unknown labeler 'nosuch'"),
    (["pseudolabel", "{store}", "--labeler", "energy:nosuch", "--serial"], "unknown preset 'nosuch'"),
    (["annotate", "{store}", "x.txt", "--format", "nosuch"], "unknown annotation format 'nosuch'"),
    (["ingest", "orcasound", "--node", "a", "--start", "garbage", "--store", "{store}", "--serial"],
     "source 'orcasound': Unknown datetime string format"),
    (["ingest", "files", "{tmp}/nowhere", "--template", "soundtrap", "--store", "{store}", "--serial"],
     "No such file or directory"),
    (["info", "{store}", "--snapshot", "NOTASNAPSHOT"], "invalid snapshot id"),
    (["demo", "--fixtures", "{tmp}/nowhere", "--workdir", "{tmp}/demo"], "is not a folder"),
])
def test_configuration_mistakes_are_one_line(tmp_path, fixtures, args, message):
    store = tmp_path / "store"
    run("ingest", "files", fixtures / "soundtrap", "--template", "soundtrap", "--store", store, "--serial")
    out = run(*[a.format(store=store, tmp=tmp_path) for a in args], check=False)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pamingest: error: ") and message in lines[0], out.stderr


def test_a_concurrent_write_that_gave_up_exits_3(monkeypatch, capsys, tmp_path):
    """ConcurrentWriteError (and files an ingest deferred) say "run again" with exit 3, for schedulers to retry."""
    from pamingest import cli
    from pamingest.errors import ConcurrentWriteError
    from pamingest.ingest import FailedFile, IngestReport

    def gives_up(args):
        raise ConcurrentWriteError("s: the branch kept moving; gave up after 200 attempts to commit: run again")

    monkeypatch.setattr(cli, "cmd_info", gives_up)
    assert cli.main(["info", str(tmp_path)]) == cli.EXIT_RETRY == 3
    assert capsys.readouterr().err.splitlines() == [
        "pamingest: error: s: the branch kept moving; gave up after 200 attempts to commit: run again"]

    def deferred(source, store, **kwargs):
        return IngestReport(store=str(store), run_id="r", deferred=[FailedFile("a.wav", "kept changing")])

    monkeypatch.setattr(sys.modules["pamingest.ingest"], "ingest", deferred)
    assert cli.main(["ingest", "files", str(tmp_path), "--template", "soundtrap", "--store", str(tmp_path),
                     "--serial"]) == 3
    assert "run again" in capsys.readouterr().err
