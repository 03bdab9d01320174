"""The notebooks in notebooks/, executed for real against the demo store (the one `make demo` and `pamingest demo` build)."""

from __future__ import annotations

import json
import re
import shutil
import warnings
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

import pamingest as pi
from pamingest.info import store_info

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
EXPLORE = NOTEBOOKS / "01_explore_store.ipynb"
ORCASOUND = NOTEBOOKS / "02_orcasound_session.ipynb"
LABELS = NOTEBOOKS / "03_labels_to_training_data.ipynb"
BUSH_POINT = "orcasound/rpi_bush_point/48000Hz_1ch_pcm16"  # two synthesised sessions an hour apart
LAB = "orcasound/rpi_orcasound_lab/48000Hz_2ch_pcm16"  # the fixture segments: one real session
SONGMETER = "songmeter/S4A03895/22000Hz_1ch_pcm16"
SOUNDTRAP = "soundtrap/67416073/8000Hz_1ch_pcm16"
SB03 = "sanctsound/SB03/48000Hz_1ch_pcm16"


def execute(path: Path, workdir: Path, monkeypatch, **env: str) -> nbformat.NotebookNode:
    """Run a notebook in a fresh python3 kernel (this interpreter), cells timing out after 120 s."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    # The kernel inherits this environment: matplotlib's inline backend renders with Agg into PNG outputs.
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}).execute()
    nbformat.write(nb, workdir / path.name)  # kept in the test's tmp dir to look at when an assertion fails
    return nb


def cell(nb, tag: str):
    found = [c for c in nb.cells if tag in c.metadata.get("tags", [])]
    assert len(found) == 1, f"no single cell tagged {tag!r}"
    return found[0]


def stdout(c) -> str:
    return "".join(o.text for o in c.outputs if o.output_type == "stream" and o.name == "stdout")


def has_image(c) -> bool:
    return any("image/png" in o.get("data", {}) for o in c.outputs)


def assert_quiet(nb) -> None:
    """No error and nothing on stderr: no warning noise in front of a reader."""
    noise = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
             if o.output_type == "error" or (o.output_type == "stream" and o.name == "stderr")]
    assert not noise, noise


def test_notebooks_are_stored_without_outputs():
    paths = sorted(NOTEBOOKS.glob("*.ipynb"))
    assert EXPLORE in paths and ORCASOUND in paths and LABELS in paths
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        for c in nb.cells:
            if c.cell_type == "code":
                assert not c.outputs and c.execution_count is None, f"{path.name} has outputs"


def test_every_notebook_is_executed_by_a_test():
    """A notebook put in notebooks/ without a test here that executes it fails this one."""
    import ast

    executed = set()
    for test in ast.walk(ast.parse(Path(__file__).read_text())):
        if isinstance(test, ast.FunctionDef) and test.name.startswith("test_"):
            executed |= {globals()[call.args[0].id] for call in ast.walk(test)
                         if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "execute"
                         and call.args and isinstance(call.args[0], ast.Name)}
    assert executed == set(NOTEBOOKS.glob("*.ipynb")), "notebooks without a test: " + \
        ", ".join(sorted(p.name for p in set(NOTEBOOKS.glob("*.ipynb")) - executed))


def test_explore_store_on_the_demo_store(demo_store, tmp_path, monkeypatch):
    nb = execute(EXPLORE, tmp_path, monkeypatch, PAMINGEST_STORE=demo_store)
    assert_quiet(nb)
    names = pi.streams(pi.open_store(demo_store))
    assert SONGMETER in names and SOUNDTRAP in names and len(names) > 30
    listed = stdout(cell(nb, "streams"))
    assert all(name in listed.split() for name in names)
    table = cell(nb, "table").outputs[0]["data"]["text/html"]
    assert SONGMETER in table and SOUNDTRAP in table
    # The stream with the most audio is the SoundTrap deployment: 15 min without a break.
    assert f"stream {SOUNDTRAP}: 8000 Hz, 1 channel(s), int16 samples, 93 rows of 10.0 s, 1 span(s)" in \
        stdout(cell(nb, "stream"))
    assert "80000 samples x 1 channel(s), int16" in stdout(cell(nb, "window"))
    assert "LTSA of 2021-06-10: 16 bins of 1 min, 16 with audio, 513 frequencies up to 4000 Hz" in \
        stdout(cell(nb, "ltsa-compute"))
    for tag in ("waveform", "spectrogram", "ltsa"):
        assert has_image(cell(nb, tag)), tag


def test_explore_store_on_a_duty_cycled_stream(demo_store, tmp_path, monkeypatch):
    nb = execute(EXPLORE, tmp_path, monkeypatch, PAMINGEST_STORE=demo_store, PAMINGEST_STREAM=SONGMETER)
    assert f"stream {SONGMETER}: 22000 Hz" in stdout(cell(nb, "stream"))
    assert "48 span(s)" in stdout(cell(nb, "stream"))  # 10 s every 15 min
    assert "220000 samples x 1 channel(s), int16" in stdout(cell(nb, "window"))
    # 2-min bins from 00:00 to 11:45:10: one bin in 7.5 holds a recording, the others are blank.
    assert "LTSA of 2019-05-22: 353 bins of 2 min, 48 with audio, 513 frequencies up to 11000 Hz" in \
        stdout(cell(nb, "ltsa-compute"))
    assert has_image(cell(nb, "ltsa"))


def test_orcasound_session_across_the_gap_between_sessions(demo_store, tmp_path, monkeypatch):
    nb = execute(ORCASOUND, tmp_path, monkeypatch, PAMINGEST_STORE=demo_store)
    assert_quiet(nb)
    listed = stdout(cell(nb, "streams"))
    assert f"{BUSH_POINT}  (2 runs)" in listed and f"{LAB}  (1 runs)" in listed
    assert f"stream {BUSH_POINT}: 48000 Hz, 1 channel(s), int16" in listed  # the stream with the most runs
    assert "time_uncertainty_seconds: 3.0" in listed
    runs = cell(nb, "runs").outputs[0]["data"]["text/plain"]
    assert "1730419200" in runs and "1730422800" in runs  # the session folders' epochs
    assert "3559.978667" in runs  # 01:00:00 - 00:00:40.021333: the second run's gap_before_s
    assert "2 span(s); gaps between them: 3559.98 s" in stdout(cell(nb, "coverage"))
    assert "480000 samples (10.00 s of audio) in 2 continuous piece(s)" in stdout(cell(nb, "window"))
    assert has_image(cell(nb, "gap-plot"))


def test_orcasound_session_of_the_real_segments(demo_store, tmp_path, monkeypatch):
    nb = execute(ORCASOUND, tmp_path, monkeypatch, PAMINGEST_STORE=demo_store, PAMINGEST_ORCASOUND_STREAM=LAB)
    assert f"stream {LAB}: 48000 Hz, 2 channel(s), int16" in stdout(cell(nb, "streams"))
    # The streamer's PTS jitter by a fraction of a millisecond: within one AAC frame, so one run.
    text = stdout(cell(nb, "segments"))
    jitter = float(re.search(r"inside a session: ([0-9.]+) ms", text).group(1))
    assert text.startswith("3 segments") and 0 < jitter < 1024 / 48
    assert "1 span(s); gaps between them: none" in stdout(cell(nb, "coverage"))
    assert "in 1 continuous piece(s)" in stdout(cell(nb, "window"))
    assert has_image(cell(nb, "gap-plot"))


def test_a_missing_store_fails_with_its_name(tmp_path, monkeypatch):
    from nbclient.exceptions import CellExecutionError

    with pytest.raises(CellExecutionError, match="StoreNotFoundError"):
        execute(EXPLORE, tmp_path, monkeypatch, PAMINGEST_STORE=str(tmp_path / "nothing-here"))


def test_store_info_is_quiet_about_pcodec_streams(demo_store):
    info = store_info(demo_store)
    assert any(s.dtype == "int32" for s in info.streams)  # SanctSound MB01's 32-bit clip: PCodec
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        store_info(demo_store)
    assert not [w for w in caught if "Numcodecs" in str(w.message)]


def test_labels_to_training_data_on_a_copy_of_the_demo_store(demo_store, fixtures, tmp_path, monkeypatch):
    """The labelling loop: annotations, labels, queue, pseudo-labels, a review answered and read
    back, an export loaded with datasets. It writes to its store: a copy of the session's."""
    from pamingest.store.repo import Store

    demo_tip = Store.open(demo_store).tip()
    store = str(tmp_path / "store")
    shutil.copytree(demo_store, store)
    work = tmp_path / "work"
    nb = execute(LABELS, tmp_path, monkeypatch, PAMINGEST_STORE=store, PAMINGEST_WORKDIR=str(work),
                 PAMINGEST_FIXTURES=str(fixtures))
    assert_quiet(nb)
    tree = pi.open_store(store)

    # Annotations: the Raven table's events (one row rejected with its line, those past the 10 s
    # recording kept), effort over both recordings, and labels only there.
    text = stdout(cell(nb, "attach"))
    assert f"MSD-0003_20180427_2minstart00.Table.1.selections.txt: 9 events, 1 effort spans -> {SONGMETER}" in text
    assert "4 events fall outside the ingested audio (kept)" in text and "line 11: empty label" in text
    assert "EmptyExample.Table.1.selections.txt: 0 events, 3 effort spans" in text
    song = tree[SONGMETER].to_dataset()
    labels = song.pam.labels().to_pandas()
    labels.index = song["chunk_start"].values
    assert labels.loc["2019-05-22 00:00:00"].to_dict() == {"eato": 1, "lowa": 0, "woth": 1}
    assert labels.loc["2019-05-22 00:15:00"].to_dict() == {"eato": 0, "lowa": 0, "woth": 0}
    assert (labels.iloc[2:] == -1).all().all() and len(labels) == 48
    assert "-1       46    46    46" in stdout(cell(nb, "labels"))

    # The queue: everything but the annotated chunks, scored by pseudolabel.
    assert "energy:humpback: chunks 236, annotated 2, scored 0, queued 234" in stdout(cell(nb, "queue-before"))
    assert "energy:humpback: 234 chunks were queued; scored 234, failed 0" in stdout(cell(nb, "pseudolabel"))
    scores = tree[SONGMETER].to_dataset().pam.scores("energy:humpback")
    assert (scores["status"].values[2:] == 1).all() and (scores["status"].values[:2] == 0).all()  # annotated: not

    # The review batch, answered with NOAA's labels, came back as effort and events on its chunks.
    batch = json.loads((work / "review" / "review.json").read_text())
    assert batch["labeler"] == "energy:humpback" and len(batch["chunks"]) == 5 and batch["pool"] == 8
    sb03 = tree[SB03].to_dataset()
    answers = sb03.pam.labels()
    noaa = [url.rsplit("/", 1)[-1].split("_")[3] for url in sb03["file_url"].values[sb03["file_index"].values]]
    answered = {row for stream, row in batch["chunks"] if stream == SB03}
    assert len(answered) == 5
    for row, heard in enumerate(noaa):
        humpback = int(answers.sel(label="humpback").values[row])
        if row not in answered:
            assert humpback == -1, row  # nobody was asked: unknown, whatever the score
        elif heard == "humpbackwhale":
            assert humpback == 1, row
        else:
            assert humpback == 0 and int(answers.sel(label=heard).values[row]) == 1, (row, heard)
    effort = sb03.pam.effort()
    assert len(effort) == 5 and set(effort["source"]) == {"pamingest-review"}
    # Answered chunks left every labeller's queue and the review pool.
    text = stdout(cell(nb, "queue-after"))
    assert "review pool of sanctsound/SB03/48000Hz_1ch_pcm16: 8 chunks before the answers, 3 after" in text
    assert text.count(f"{SB03}       8          5       8       0") == 2, text  # both labellers

    # The export: the people's labels only (the songmeter's 2 recordings and the 5 answered chunks in
    # 5 s clips), one stream per split, loaded by datasets with the store's samples.
    assert "exported 11 of 391 clips as hf" in stdout(cell(nb, "export")) and (work / "hf" / "README.md").is_file()
    text = stdout(cell(nb, "datasets"))
    assert re.search(r"train: Dataset\(\{.*?num_rows: 4", text, re.S) and re.search(r"test: Dataset\(\{.*?num_rows: 7", text, re.S)
    assert "labels ['eato', 'woth'], negatives ['lowa']" in text and "the store's samples: True" in text
    assert Store.open(demo_store).tip() == demo_tip  # the session's demo store is left as it was


def test_store_info_tells_duty_cycles_and_gaps(demo_store):
    text = store_info(demo_store).format()
    lines = text.splitlines()
    songmeter = lines[[i for i, line in enumerate(lines) if line.startswith(SONGMETER)][0] + 1]
    assert songmeter.startswith("  47 gaps; 10 s every 15 min (48 spans); 8 min of audio over 11 h 45 min")
    soundtrap = lines[[i for i, line in enumerate(lines) if line.startswith(SOUNDTRAP)][0] + 1]
    assert soundtrap.startswith("  0 gaps; continuous: one span of 15 min")
