"""MarmAudio on Zenodo: one-call files in a zip, placed in a relative time base by Annotations.tsv.

Served by a local HTTP server answering as Zenodo does (tests/zenodo_server.py); the calls are cut
from a real recording (a SanctSound humpback clip), written as 96 kHz FLACs.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import soundfile as sf

import pamingest as pi
from pamingest.cli import main
from zenodo_server import ZenodoServer, zip_of

CLIP = "sanctsound/clips/SanctSound_CI02_05_humpbackwhale_20201014T134715Z.wav"
# (parent, file, label, samples): the same file name in two parents, as the collection has
CALLS = [("session_A", "0001.flac", "Phee", 48_000), ("session_A", "0002.flac", "Trill", 20_000),
         ("session_B", "0001.flac", "Twitter", 30_000), ("session_B", "0003.flac", "Infant cry", 150_000)]


def _flac(samples: np.ndarray) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, 96_000, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


@pytest.fixture(scope="module")
def record(fixtures):
    real = sf.read(str(fixtures / CLIP), dtype="int16")[0]
    calls, at = {}, 0
    for parent, file, _, n in CALLS:
        calls[f"{parent}/{file}"] = real[at:at + n]
        at += n
    table = "file_name\tparent_name\tlabel\n" + "".join(f"{f}\t{p}\t{lab}\n" for p, f, lab, _ in CALLS)
    members = {key: _flac(x) for key, x in calls.items()}
    members["session_B/0099.flac"] = _flac(real[:1000])  # not in the table: no place in the time base
    server = ZenodoServer()
    server.publish("15017207", {"Annotations.tsv": table.encode(),
                                "Vocalizations.zip": zip_of(members, folder="Vocalizations")})
    yield server, calls
    server.stop()


def test_calls_placed_by_the_table_with_whole_file_labels(record, tmp_path, capsys):
    server, calls = record
    store = str(tmp_path / "store")
    # Slots of 1.5 s: the 1.56 s infant cry does not fit its slot and is refused with the reason.
    code = main(["ingest", "marmaudio", "--zenodo-api", server.api, "--slot-seconds", "1.5", "--store", store,
                 "--serial", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["ingested"] == 3, report
    tree = pi.open_store(store)
    (stream,) = pi.streams(tree)
    ds = tree[stream].to_dataset()
    assert ds.attrs["time_base"] == "relative" and "Annotations.tsv" in ds.attrs["time_base_note"]
    reasons = " ".join(str(v) for v in tree["rejected"].to_dataset()["reason"].values)
    assert "session_B/0099.flac: not listed in Annotations.tsv" in reasons
    assert "longer than its 1.5 s slot" in reasons
    starts = ds["file_start"].values.astype("datetime64[ns]").astype(np.int64)
    for i, url in enumerate(ds["file_url"].values):
        key = "/".join(str(url).split("::")[0].split("/")[-2:])
        line = [f"{p}/{f}" for p, f, _, _ in CALLS].index(key)
        assert starts[i] == int(line * 1.5e9)  # line k of the table at k x slot
        rows = np.flatnonzero(ds["file_index"].values == i)
        got = np.concatenate([ds["audio"].values[r, : ds["n_valid"].values[r], 0] for r in rows])
        np.testing.assert_array_equal(got, calls[key])
    # The table attached after the audio: each call a whole-file event, effort for its own type only.
    events = ds.pam.events()
    assert sorted(events["label"]) == ["Phee", "Trill", "Twitter"]
    assert any("not attached" in n for f in report["detections"]["attached"] for n in f["notes"])  # the cry
    labels = ds.pam.labels()
    first = int(np.flatnonzero(starts == 0)[0])
    row = int(np.flatnonzero(ds["file_index"].values == first)[0])
    assert int(labels.sel(label="phee").values[row]) == 1
    assert int(labels.sel(label="trill").values[row]) == -1  # not claimed absent: unknown
