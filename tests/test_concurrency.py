"""Every writer of one store at once, as separate processes through the command line: two ingests of
different sources, an annotate and two pseudolabel runs, started together, repeated. Every commit
lands, every object is in the store once, every chunk is scored once."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

import pamingest as pi
from pamingest.labeling import SCORED
from pamingest.labeling.queue import LabelerInfo, status_name
from pamingest.labeling.base import LabelerSpec
from pamingest.store.repo import Store

CLI = [sys.executable, "-m", "pamingest.cli"]
LABELER = "energy:humpback"
SPINETAIL = "spinetail_20200101_000000.wav"


def start(*args) -> subprocess.Popen:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen([*CLI, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)


def finish(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode in (0, 1), f"{proc.args}\n{err[-3000:]}"  # annotate exits 1 when a file failed
    return json.loads(out)


@pytest.mark.parametrize("repeat", range(2))
def test_ingests_annotate_and_pseudolabel_started_together_all_land(tmp_path, fixtures, repeat):
    store = str(tmp_path / "store")
    spinetail = tmp_path / "spinetail"
    spinetail.mkdir()
    shutil.copy(fixtures / "annotated" / "spinetail.wav", spinetail / SPINETAIL)
    # The annotated recording and the chunks to label exist before the writers start.
    pi.ingest(pi.TimestampedFiles(str(spinetail), "{site}_%Y%m%d_%H%M%S.wav"), store, client="serial", row_seconds=5)
    pi.ingest(pi.TimestampedFiles(str(fixtures / "soundtrap"), "soundtrap"), store, client="serial")
    before = Store.open(store).tip()

    procs = {
        "songmeter": start("ingest", "files", fixtures / "songmeter" / "S4A03895", "--template", "songmeter",
                           "--store", store, "--serial", "--json"),
        "sanctsound": start("ingest", "files", fixtures / "sanctsound" / "clips", "--template", "sanctsound-clips",
                            "--source-name", "sanctsound", "--store", store, "--serial", "--json"),
        "annotate": start("annotate", store, fixtures / "annotated" / "spinetail.audacity.txt", "--format",
                          "audacity", "--recording", SPINETAIL, "--json"),
        "label1": start("pseudolabel", store, "--labeler", LABELER, "--serial", "--batch-rows", "4",
                        "--commit-seconds", "0", "--json"),
        "label2": start("pseudolabel", store, "--labeler", LABELER, "--serial", "--batch-rows", "4",
                        "--commit-seconds", "0", "--json"),
    }
    reports = {name: finish(p) for name, p in procs.items()}

    st = Store.open(store)
    history = st.history(st.tip(), 100_000)
    ids = [s.id for s in history]
    assert before in ids
    new = history[: ids.index(before)]
    kinds = Counter((s.metadata or {}).get("pamingest", "prepare" if "prepare streams" in s.message else "?")
                    for s in new)
    # Every commit a writer reported is on main: none was overwritten by another writer's.
    assert kinds["ingest"] == reports["songmeter"]["commits"] + reports["sanctsound"]["commits"] == 2, kinds
    assert kinds["annotate"] == 1 and reports["annotate"]["snapshot_id"] in ids
    assert kinds["pseudolabel"] == reports["label1"]["commits"] + reports["label2"]["commits"] > 0
    for name in ("songmeter", "sanctsound", "label1", "label2"):
        assert reports[name]["snapshot_id"] in ids, name
    assert set(kinds) <= {"ingest", "annotate", "pseudolabel", "prepare"}, kinds

    tree = pi.open_store(store)
    paths = pi.streams(tree)
    # Every object once, every file's rows exactly its frames, no dead row.
    urls = [str(u) for p in paths for u in tree[p]["file_url"].values]
    assert len(urls) == len(set(urls)) == 1 + 3 + 48 + len(list((fixtures / "sanctsound" / "clips").glob("*.wav")))
    assert reports["songmeter"]["ingested"] == 48 and not reports["songmeter"]["failed"]
    for p in paths:
        ds = tree[p].to_dataset()
        assert (ds["n_valid"].values > 0).all(), p
        per_file = np.bincount(ds["file_index"].values, weights=ds["n_valid"].values, minlength=ds.sizes["file"])
        np.testing.assert_array_equal(per_file, ds["file_frames"].values, err_msg=p)

    # The annotation landed once, on the recording it names.
    spin = next(p for p in paths if p.startswith("files/spinetail/"))
    assert len(tree[spin].to_dataset().pam.events()) == 18

    # Every chunk scored once: the rows both labelling runs saw are scored, and the commits' counts
    # add up to exactly the scored rows (a row written twice would be counted twice).
    key = LabelerInfo.of(LabelerSpec.parse(LABELER).build()).key
    scored = sum(int((tree[p].to_dataset()[status_name(key)].values == SCORED).sum())
                 for p in paths if status_name(key) in tree[p].to_dataset())
    committed = sum(int((s.metadata or {}).get("scored", 0)) for s in new
                    if (s.metadata or {}).get("pamingest") == "pseudolabel")
    assert scored == committed == reports["label1"]["scored"] + reports["label2"]["scored"]
    # At least every soundtrap row (there when both runs started); the spinetail rows are scored only
    # if a run read the queue before the annotation's effort landed on them.
    assert scored >= 93
