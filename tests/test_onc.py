"""Ocean Networks Canada's archive (Barkley Canyon, BACAX) through the Oceans 3.0 archivefile service.

A local HTTP server answers as the documented API does (tests/onc_server.py): listings by location,
device category and day, downloads by file name with byte ranges, its errors. The audio is the fixture
SoundTrap FLACs (real 5 min recordings, as ONC's hydrophones write) under ONC names. The token must
reach the server with every request and appear nowhere in the store, the report or an error.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import pamingest as pi
from pamingest.cli import main
from pamingest.errors import ConfigError
from pamingest.sources.onc import OncArchive
from pamingest.timing import to_ns
from onc_server import OncServer, register_onc_source

TOKEN = "onc-test-token-5f0c2a9e71d84b36"
NAMES = ["ICLISTENHF1251_20140101T000000.000Z.flac", "ICLISTENHF1251_20140101T000500.000Z.flac",
         "ICLISTENHF1251_20140102T120000.000Z.flac"]
OTHERS = ["ICLISTENHF1251_20140101T000000.000Z-spect.png", "ICLISTENHF1251_20140101T000000.000Z.mp3",
          "ICLISTENHF1251_20140103T000000.000Z.flac"]  # not audio we take; outside the range


@pytest.fixture(scope="module")
def onc(tmp_path_factory, fixtures):
    site = tmp_path_factory.mktemp("site")
    registered = register_onc_source(site)
    if registered:
        sys.path.insert(0, str(site))
    server = OncServer(TOKEN)
    audio = sorted((fixtures / "soundtrap").glob("*.flac"))
    server.recordings = {name: audio[i % len(audio)] for i, name in enumerate(NAMES)}
    server.publish("BACAX", "HYDROPHONE", {n: p.read_bytes() for n, p in server.recordings.items()})
    server.publish("BACAX", "HYDROPHONE", {n: b"not audio" for n in OTHERS})
    yield server
    server.stop()
    if registered:
        sys.path.remove(str(site))


def _everything_in(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


def _strings(ds) -> str:
    """Every text the store's dataset holds: string variables, attributes of it and of its variables."""
    parts = [json.dumps(ds.attrs, default=str)]
    for name, var in ds.variables.items():
        parts.append(json.dumps(var.attrs, default=str))
        if var.dtype.kind in "OUS":
            parts += [str(v) for v in np.asarray(var.values).ravel()]
    return "\n".join(parts)


def test_cli_ingests_a_day_range_by_ranges_with_the_token_kept_out_of_the_store(onc, tmp_path, capsys, monkeypatch):
    store = str(tmp_path / "store")
    onc.requests.clear()
    onc.row_limit = 2  # the first day's listing comes in two pages
    monkeypatch.setenv("ONC_TOKEN", TOKEN)
    try:
        code = main(["ingest", "onc", "--start", "2014-01-01", "--end", "2014-01-03", "--onc-api", onc.api,
                     "--store", store, "--serial", "--json"])
    finally:
        onc.row_limit = 100_000
    out = capsys.readouterr()
    assert out.out, out.err
    report = json.loads(out.out)
    assert code == 0 and report["ingested"] == 3 and not report["failed"], out
    # One listing per UTC day (plus the first day's second page), every request with the token.
    lists = [q for m, p, q, r in onc.requests if p == "/api/archivefile/location"]
    assert sorted((q["dateFrom"][:10], q["dateTo"][:10], q.get("page") or "1") for q in lists) == [
        ("2014-01-01", "2014-01-02", "1"), ("2014-01-01", "2014-01-02", "2"), ("2014-01-02", "2014-01-03", "1")]
    assert all(q["locationCode"] == "BACAX" and q["deviceCategoryCode"] == "HYDROPHONE"
               and q["returnOptions"] == "all" for q in lists)
    assert all(q.get("token") == TOKEN for m, p, q, r in onc.requests)
    # Files read by ranges, never one GET of a whole file.
    gets = [r for m, p, q, r in onc.requests if m == "GET" and p == "/api/archivefile/download"]
    assert gets and all(r is not None for r in gets)

    tree = pi.open_store(store)
    assert pi.streams(tree) == ["onc/BACAX/8000Hz_1ch_pcm16"]
    ds = tree["onc/BACAX/8000Hz_1ch_pcm16"].to_dataset()
    assert ds.attrs["onc_location_code"] == "BACAX" and ds.attrs["onc_device_code"] == "ICLISTENHF1251"
    for i, url in enumerate(ds["file_url"].values):
        name = str(url).rsplit("filename=", 1)[-1]
        assert str(url) == f"{onc.api}/archivefile/download?filename={name}"
        rows = np.flatnonzero(ds["file_index"].values == i)
        got = np.concatenate([ds["audio"].values[r, : ds["n_valid"].values[r], 0] for r in rows])
        np.testing.assert_array_equal(got, sf.read(str(onc.recordings[name]), dtype="int16")[0])
        stamp = name.split("_")[1]
        assert int(ds["file_start"].values[i].astype("datetime64[ns]").astype(np.int64)) == to_ns(
            f"{stamp[:4]}-{stamp[4:6]}-{stamp[6:8]}T{stamp[9:11]}:{stamp[11:13]}:{stamp[13:19]}")
    # The token: not in the store's texts, not in any byte of its folder, not in the output.
    assert TOKEN not in _strings(ds)
    assert TOKEN.encode() not in _everything_in(tmp_path / "store")
    assert TOKEN not in out.out + out.err

    # The report page: the files named by their ONC names, no token.
    assert main(["report", store, "--out", str(tmp_path / "report.html")]) == 0
    page = (tmp_path / "report.html").read_text()
    assert TOKEN not in page + capsys.readouterr().out

    # Labels attach by ONC file name (Raven's Begin File), through the store's files table.
    table = tmp_path / "barkley.selections.txt"
    table.write_text("Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tLow Freq (Hz)\tHigh Freq (Hz)\t"
                     f"Begin File\tFile Offset (s)\tSpecies\n"
                     f"1\tSpectrogram 1\t1\t612.5\t614.0\t15\t30\t{NAMES[2]}\t12.5\tfin whale\n")
    code = main(["annotate", store, str(table), "--format", "raven", "--json"])
    assert code == 0, capsys.readouterr()
    events = pi.open_store(store)["onc/BACAX/8000Hz_1ch_pcm16"].to_dataset().pam.events()
    (start,) = events["start"].values.astype("datetime64[ns]").astype(np.int64)
    assert start == to_ns("2014-01-02T12:00:12.5")


def test_token_missing_or_refused_and_api_errors_say_why_without_the_token(onc, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("ONC_TOKEN", raising=False)
    argv = ["ingest", "onc", "--start", "2014-01-01", "--end", "2014-01-02", "--onc-api", onc.api,
            "--store", str(tmp_path / "store"), "--serial"]
    assert main(argv) == 2
    assert "no token" in capsys.readouterr().err

    wrong = TOKEN[::-1]
    assert main(argv + ["--token", wrong]) == 2
    err = capsys.readouterr().err
    assert "401" in err and "does not accept the token" in err and wrong not in err

    def listing_error(**options) -> str:
        with pytest.raises(ConfigError) as exc:
            src = OncArchive(start="2014-01-01", end="2014-01-02", token=TOKEN, **options)
            [r for p in src.partitions() for r in src.list_partition(p)]
        assert TOKEN not in str(exc.value) and exc.value.__cause__ is None and exc.value.__suppress_context__
        return str(exc.value)

    assert "API Error 127: Invalid parameter value (parameter: locationCode)" in listing_error(
        location="NOWHERE", api=onc.api)
    assert "HTTP 404" in listing_error(api=f"{onc.url}/wrong")
    onc.fail["/api/archivefile/location"] = 500
    try:
        assert "HTTP 500 (the archive gave no reason)" in listing_error(api=onc.api)
    finally:
        onc.fail.clear()
    with pytest.raises(ConfigError, match="give start and end"):
        OncArchive(token=TOKEN, api=onc.api).partitions()


def test_a_download_that_fails_is_recorded_with_its_reason_and_no_token(onc, tmp_path, capsys):
    """A 500 page for one file's download: that file fails with the status, the others land; the
    reason (aiohttp names the URL it asked, token included) is masked in the store and the report."""
    store = str(tmp_path / "store")
    onc.fail[NAMES[1]] = 500
    try:
        code = main(["ingest", "onc", "--start", "2014-01-01", "--end", "2014-01-02", "--onc-api", onc.api,
                     "--token", TOKEN, "--store", store, "--serial", "--json"])
    finally:
        onc.fail.clear()
    out = capsys.readouterr()
    report = json.loads(out.out)
    assert code == 0 and report["ingested"] == 1, out
    (failed,) = report["failed"]
    assert failed["url"].endswith(f"filename={NAMES[1]}") and "500" in failed["reason"]
    assert TOKEN not in out.out + out.err
    assert TOKEN.encode() not in _everything_in(tmp_path / "store")
    assert main(["info", store]) == 0
    info = capsys.readouterr().out
    assert f"filename={NAMES[1]}" in info and TOKEN not in info


def test_names_parse_to_device_and_time_and_other_files_are_left_out(onc):
    src = OncArchive(start="2014-01-01", end="2014-01-03", token=TOKEN, api=onc.api, partition="month")
    assert src.partitions() == ["2014-01-01T00:00:00.000Z/2014-01-03T00:00:00.000Z"]  # the month, cut by the range
    assert OncArchive(start="2014-01-20", end="2014-03-02", token=TOKEN, partition="month").partitions() == [
        "2014-01-20T00:00:00.000Z/2014-02-01T00:00:00.000Z", "2014-02-01T00:00:00.000Z/2014-03-01T00:00:00.000Z",
        "2014-03-01T00:00:00.000Z/2014-03-02T00:00:00.000Z"]
    records = src.list_partition(src.partitions()[0])
    assert [r.name for r in records] == NAMES  # no .png, .mp3, nor the file after the range
    assert {dict(r.fields)["device"] for r in records} == {"ICLISTENHF1251"}
    assert records[0].start_ns == to_ns("2014-01-01T00:00:00") and records[0].site == "BACAX"
    assert TOKEN not in repr(src) and src.storage_options == {"params": {"token": TOKEN}}
