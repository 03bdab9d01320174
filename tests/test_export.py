"""Clip tables and training exports (issue #12) from a store of real fixture recordings.

The store (``tests/export_store.py``) holds SanctSound clips with NCEI
detection products, a Raven-annotated field recording on three days, and a
SoundTrap stream with pseudo-labels and an answered review batch. Every
format is exported from it and read back: ``datasets`` loads the parquet
folders, soundfile decodes the audio (bit-exact with the store at the stored
rate), every answer is checked against the labels, splits never share a
group, and the same arguments give the same bytes.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

import pamingest as pi
from pamingest import rewards
from pamingest.clips import label_columns
from pamingest.errors import ConfigError
from pamingest.export import export
from pamingest.export.select import example_id, group_of
from pamingest.timing import NS_PER_S

import export_store

SECONDS = export_store.ROW_SECONDS  # clips as long as the rows: a clip's labels are its row's
SOUNDTRAP = "files/67416073/8000Hz_1ch_pcm16"
BIRDS = "birds/MSD/32000Hz_1ch_pcm16"


@pytest.fixture(scope="module")
def store(tmp_path_factory, fixtures) -> str:
    return export_store.build(tmp_path_factory.mktemp("export-store"), fixtures)


@pytest.fixture(scope="module")
def tree(store):
    return pi.open_store(store)


@pytest.fixture(scope="module")
def exported(store, tmp_path_factory):
    """Each format exported once with the same arguments (weak labels from 0.5, splits by day)."""
    root = tmp_path_factory.mktemp("exports")
    out = {}
    for fmt in ("hf", "naturelm", "icl", "verl", "webdataset"):
        out[fmt] = (root / fmt, export(store, str(root / fmt), fmt, seconds=SECONDS, min_score=0.5, split_by="day",
                                       shard_size=10))
    return out


def ns(values) -> np.ndarray:
    return np.asarray(values).astype("datetime64[ns]").astype(np.int64)


def load(folder: Path):
    import datasets

    # A cache of its own: datasets keys its cache by the folder's name and the files' mtimes, so another
    # session's export of a folder named alike can come back from ~/.cache instead of this one.
    ds = datasets.load_dataset(str(folder), cache_dir=str(folder.parent / f"{folder.name}.datasets-cache"))
    # Decoding Audio needs torchcodec; the tests read the bytes themselves, with soundfile.
    for split in ds:
        feature = ds[split].features["audio"]
        ds[split] = ds[split].cast_column(
            "audio", datasets.List(datasets.Audio(decode=False)) if isinstance(feature, datasets.List)
            else datasets.Audio(decode=False))
    return ds


# ---------------------------------------------------------------- clip tables

def test_clips_of_row_length_carry_the_rows_labels_and_scores(tree):
    """Clips laid on the rows (same length, from the same file starts) get exactly the stored chunk
    labels and each row's score: the same overlap rule, the same evidence."""
    for path in (SOUNDTRAP, BIRDS, "sanctsound/CI01/48000Hz_1ch_pcm16"):
        ds = tree[path].to_dataset()
        clips = ds.pam.clips(SECONDS, min_valid=0, stream=path)
        rows = ds.pam.rows
        full = rows[rows.n_valid == SECONDS * ds.attrs["sample_rate"]]
        by_row = clips[clips.row >= 0].set_index("row")
        stored = ds.pam.labels()
        # Every whole row is exactly one clip (a file's short last row is the short last clip of its
        # recording, beside the next recording's first: recordings overlap by a few ms).
        assert len(full) > 2 and sorted(by_row.index) == sorted(full.row)
        for _, row in full.iterrows():
            clip = by_row.loc[row.row]
            assert clip.start == row.start and clip.file == row.file and clip.file_offset == row.file_offset
            assert clip.valid == 1.0
            for name in stored["label"].values:
                assert clip[f"label:{name}"] == stored.sel(label=name).values[row.row], (path, name, row.row)
        if path == SOUNDTRAP:
            scores = ds.pam.scores("energy:humpback").values[:, 0]
            got = by_row.loc[full.row.to_numpy(), "score:energy_humpback_v1:humpback"]
            np.testing.assert_array_equal(got.to_numpy(np.float32), scores[full.row.to_numpy()])
            short = clips[(clips.row < 0)]
            assert len(short) == 3 and (short.valid < 0.05).all()  # the 17 ms end of each 300.017 s file


def test_clip_grid_follows_each_recording_and_valid_counts_the_audio(tree):
    """Three 10.1 s recordings on three days, clips of 4 s every 3 s: laid from each recording's start,
    never across the days between; the last clip of each is partly past its end."""
    ds = tree[BIRDS].to_dataset()
    rate = ds.attrs["sample_rate"]
    frames = int(ds["file_frames"].values[0])
    clips = ds.pam.clips(4, hop=3, min_valid=0)
    starts = ns(ds["file_start"].values)
    assert len(clips) == 3 * 4  # 0, 3, 6, 9 s in each
    for k, start in enumerate(sorted(starts)):
        mine = clips[ns(clips.start) // NS_PER_S // 86400 == start // NS_PER_S // 86400]
        assert ns(mine.start).tolist() == [start + s * NS_PER_S for s in (0, 3, 6, 9)]
        assert mine.valid.tolist()[:3] == [1.0, 1.0, 1.0]
        assert mine.valid.iloc[3] == pytest.approx((frames / rate - 9) / 4)
        assert mine.file_offset.tolist() == [0, 3 * rate, 6 * rate, 9 * rate]
    assert len(ds.pam.clips(4, hop=3, min_valid=0.9)) == 9


def test_provenance_names_annotations_reviews_and_labellers(tree):
    clips = pi.clips(tree, SECONDS)
    prov = [json.loads(p) for p in clips.provenance]
    review = [p for p, s in zip(prov, clips.stream) if s == SOUNDTRAP and "labels" in p]
    # The answered review batch: one humpback, four none (the unanswered row stays unknown).
    values = sorted(p["labels"]["humpback"]["value"] for p in review)
    assert values == [0, 0, 0, 0, 1]
    assert all(o["kind"] == "review" for p in review for o in p["labels"]["humpback"]["from"])
    birds = [p for p, s in zip(prov, clips.stream) if s == BIRDS and "labels" in p]
    kinds = {o["kind"] for p in birds for v in p["labels"].values() for o in v["from"]}
    files = {Path(o["file"]).name for p in birds for v in p["labels"].values() for o in v["from"]}
    assert kinds == {"annotation"}
    assert files == {"MSD-0003_20180427_2minstart00.Table.1.selections.txt", "EmptyExample.Table.1.selections.txt"}
    scored = [p["pseudo-label"] for p in prov if "pseudo-label" in p]
    assert scored and all(p == {"energy_humpback_v1": {"labeler": "energy:humpback", "version": "1"}} for p in scored)
    # Store-wide: label columns are the union; a stream that never saw a label has it unknown.
    assert set(label_columns(clips)) == {"bocaccio", "dolphins", "eato", "humpback", "lowa", "ships", "woth"}
    assert (clips.loc[clips.stream == BIRDS, "label:ships"] == -1).all()


def test_bad_clip_arguments_are_refused(tree):
    ds = tree[BIRDS].to_dataset()
    for kwargs in ({"seconds": 0}, {"seconds": 2, "hop": -1}, {"seconds": 2, "min_valid": 1.5}):
        with pytest.raises(ConfigError):
            ds.pam.clips(**kwargs)


# ---------------------------------------------------------------- hf

def test_hf_loads_with_datasets_and_its_audio_is_the_store_bit_for_bit(exported, tree):
    folder, report = exported["hf"]
    ds = load(folder)
    assert {s: ds[s].num_rows for s in ds} == report.rows and sum(report.rows.values()) == report.exported
    streams = {}
    for split in ds:
        for row in ds[split]:
            assert row["snapshot"] == report.snapshot
            stream = streams.setdefault(row["stream"], tree[row["stream"]].to_dataset())
            data, rate = sf.read(io.BytesIO(row["audio"]["bytes"]), dtype="int16", always_2d=True)
            want = stream.pam.window(pd.Timestamp(row["utc_start"]), pd.Timestamp(row["utc_end"])).values
            assert rate == stream.attrs["sample_rate"] == row["sample_rate"]
            np.testing.assert_array_equal(data, want)
            # Labels agree with the clip table's: positives, reviewed negatives, nothing unknown.
            for name in row["labels"]:
                assert row[f"label:{name}"] == 1
            for name in row["negatives"]:
                assert row[f"label:{name}"] == 0
            assert row["labels"] or row["negatives"] or row["weak_labels"]
    card = (folder / "README.md").read_text()
    assert report.snapshot in card and "configs:" in card and "dataset_info:" in card
    assert "| sanctsound | CC0-1.0" in card and f"--snapshot {report.snapshot}" in card


def groups_by_split(frame: pd.DataFrame, split_by: str) -> dict[str, set[str]]:
    return {split: set(group_of(part, split_by)) for split, part in frame.groupby("split")}


def test_splits_never_share_a_group(exported, tree):
    """The exported rows (split by day), read back; and every grouping on the store's clip table."""
    from pamingest.export.select import examples

    ds = load(exported["hf"][0])
    rows = pd.concat([ds[s].select_columns(["stream", "source", "site", "deployment", "utc_start"]).to_pandas()
                      .assign(split=s) for s in ds])
    rows["start"] = pd.to_datetime(rows.utc_start.str.rstrip("Z"))
    for split_by, frame in [("day", rows)] + [
            (by, pd.DataFrame([{**e.clip, "start": pd.Timestamp(e.start_ns), "split": e.split}
                               for e in examples(pi.clips(tree, SECONDS), split_by=by, seed=3)]))
            for by in ("site", "stream", "deployment")]:
        groups = groups_by_split(frame, split_by)
        assert len(groups) >= 2, (split_by, groups)  # more than one split was filled
        for a in groups:
            for b in groups:
                assert a == b or not groups[a] & groups[b], (split_by, a, b, groups[a] & groups[b])


def test_split_assignment_is_deterministic_disjoint_and_fills_every_split():
    """Deployments named by their streams (SanctSound's ``deployment`` attribute), 13 of them."""
    from pamingest.export.select import assign_splits, parse_splits

    frame = pd.DataFrame({"stream": [f"sanctsound/ci01_{d:02d}/48000Hz_1ch_pcm16" for d in range(13) for _ in range(3)],
                          "source": "sanctsound", "site": [f"ci01_{d:02d}" for d in range(13) for _ in range(3)],
                          "deployment": [f"{d:02d}" for d in range(13) for _ in range(3)]})
    groups = group_of(frame, "deployment")
    assert groups.nunique() == 13 and groups.iloc[0] == "sanctsound/ci01_00/00"
    splits = parse_splits("train=0.7,validation=0.15,test=0.15")
    a, b = assign_splits(groups, splits, seed=5), assign_splits(groups, splits, seed=5)
    assert a == b and set(a) == set(groups)
    assert sorted(list(a.values()).count(s) for s in ("train", "validation", "test")) == [2, 2, 9]
    assert assign_splits(groups, splits, seed=6) != a
    with pytest.raises(ConfigError):
        parse_splits("train=0.8,train=0.2")


def test_a_taxa_file_regroups_the_balance_report(store, tree, tmp_path):
    table = tmp_path / "taxa.csv"
    table.write_text("label,class,order,group\neato,Aves,Passeriformes,songbirds\nwoth,Aves,Passeriformes,songbirds\n")
    export(store, str(tmp_path / "out"), "webdataset", seconds=SECONDS, split_by="stream", taxa=str(table))
    card = (tmp_path / "out" / "README.md").read_text()
    songbirds = next(line for line in card.splitlines() if line.startswith("| songbirds |"))
    clips = pi.clips(tree, SECONDS, min_valid=1.0)
    present = int(((clips["label:eato"] == 1) | (clips["label:woth"] == 1)).sum())
    assert present > 0 and songbirds == f"| songbirds | {present} | {present} |"
    assert "| unmapped |" not in card  # every present label is in the file or the built-in table
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="not a taxa table"):
        export(store, str(tmp_path / "bad"), "hf", seconds=SECONDS, taxa=str(bad))
    assert not (tmp_path / "bad").exists()  # nothing written


def test_the_same_arguments_give_the_same_bytes(store, exported, tmp_path):
    for fmt in ("hf", "verl", "webdataset"):
        first, report = exported[fmt]
        again = export(store, str(tmp_path / fmt), fmt, seconds=SECONDS, min_score=0.5, split_by="day",
                       shard_size=10, snapshot=report.snapshot)
        assert again.files == report.files
        for name in report.files:
            assert (first / name).read_bytes() == (tmp_path / fmt / name).read_bytes(), (fmt, name)
    other = export(store, str(tmp_path / "seed"), "hf", seconds=SECONDS, min_score=0.5, split_by="day",
                   shard_size=10, seed=1)
    first, report = exported["hf"]
    digest = {f: hashlib.sha256((tmp_path / "seed" / f).read_bytes()).hexdigest() for f in other.files}
    assert digest != {f: hashlib.sha256((first / f).read_bytes()).hexdigest() for f in report.files}


def test_an_export_is_pinned_to_its_snapshot(store, exported, tmp_path, fixtures):
    """Labels attached after the export's snapshot do not change an export of that snapshot."""
    import shutil

    from pamingest.annotations import Recording, attach

    _, report = exported["hf"]
    store = str(shutil.copytree(store, tmp_path / "store"))  # the other tests keep theirs as built
    raven = fixtures / "annotated" / "raven"
    # The day reviewed as empty gets the other days' table: its clips turn positive.
    assert attach(store, [raven / "MSD-0003_20180427_2minstart00.Table.1.selections.txt"], "raven",
                  recording=Recording("MSD_20180428_000000.wav")).snapshot_id
    pinned = export(store, str(tmp_path / "pinned"), "hf", seconds=SECONDS, min_score=0.5, split_by="day",
                    shard_size=10, snapshot=report.snapshot)
    assert pinned.rows == report.rows and pinned.snapshot == report.snapshot
    for name in report.files:  # the card names the store, here a copy
        if name != "README.md":
            assert (tmp_path / "pinned" / name).read_bytes() == (exported["hf"][0] / name).read_bytes(), name
    tip = export(store, str(tmp_path / "tip"), "hf", seconds=SECONDS, min_score=0.5, split_by="day", shard_size=10)
    labels = lambda folder: [r["labels"] for s in load(folder).values() for r in s.remove_columns("audio")]  # noqa: E731
    assert tip.snapshot != report.snapshot
    assert sum(map(len, labels(tmp_path / "tip"))) > sum(map(len, labels(tmp_path / "pinned")))


def test_weak_labels_only_above_min_score_and_never_negatives(store, exported, tree):
    folder, _ = exported["hf"]
    ds = load(folder)
    clips = pi.clips(tree, SECONDS, min_valid=1.0).set_index(["stream", "start"])
    score = "score:energy_humpback_v1:humpback"
    for split in ds:
        for row in ds[split].remove_columns("audio"):
            clip = clips.loc[(row["stream"], pd.Timestamp(row["utc_start"].rstrip("Z")))]
            if "humpback" in row["weak_labels"]:
                assert clip[score] >= 0.5 and clip["label:humpback"] == -1
                assert json.loads(row["scores"])[score[len("score:"):]] == pytest.approx(clip[score], abs=1e-6)
            if clip["label:humpback"] == -1:
                assert "humpback" not in row["negatives"]


# ---------------------------------------------------------------- naturelm, verl, icl, webdataset

def test_naturelm_answers_agree_with_the_labels(exported, tree):
    folder, _ = exported["naturelm"]
    ds = load(folder)
    tasks = set()
    for split in ds:
        for row in ds[split].remove_columns("audio"):
            meta = json.loads(row["metadata"])
            tasks.add(row["task"])
            assert row["instruction"].startswith("<Audio><AudioHere></Audio> ")
            assert row["source_dataset"] == f"pamingest:{meta['source']}" and meta["snapshot"]
            present = set(meta["labels"]) | set(meta["score"])
            known = present | set(meta["negatives"])
            if row["task"] == "detection":
                offered = row["instruction"].split("?", 1)[-1] if "?" in row["instruction"] else row["instruction"]
                for label in known:
                    assert label.replace("_", " ") in row["instruction"]
                assert set(row["output"].split(", ")) - {"None"} == {x.replace("_", " ") for x in present}
                assert (row["output"] == "None") == (not present)
                assert offered  # the question lists the labels asked about
            elif row["task"] == "classification":
                assert [row["output"]] == [x.replace("_", " ") for x in present] and len(known) >= 2
            elif row["task"] in ("localisation", "counting"):
                ev = tree[meta["stream"]].to_dataset().pam.events()
                t0, t1 = pd.Timestamp(meta["utc_start"].rstrip("Z")), pd.Timestamp(meta["utc_end"].rstrip("Z"))
                label = next(x for x in meta["labels"] if x.replace("_", " ") in row["instruction"])
                hits = ev[(ev.label_norm == label) & ev.reviewed & (ev.start < t1) & (ev.end > t0)]
                if row["task"] == "localisation":
                    first = (hits.start.min() - t0).total_seconds()
                    assert float(row["output"]) == pytest.approx(first, abs=0.005)
                else:
                    assert int(row["output"]) == len(hits)
            else:
                assert row["task"] == "caption" and meta["site"] in row["output"]
    assert tasks == {"detection", "classification", "localisation", "counting", "caption"}


@pytest.mark.parametrize("utc,longitude,want", [("2020-01-01T16:00", -120.0, "morning"),  # 08:00 solar
                                                 ("2020-01-01T08:00", -120.0, "night"),
                                                 ("2020-01-01T20:00", -120.0, "afternoon"),
                                                 ("2020-01-01T02:00", 150.0, "afternoon"),
                                                 ("2020-01-01T12:00", float("nan"), None)])
def test_captions_say_the_part_of_day_only_where_the_place_is_known(utc, longitude, want):
    from pamingest.export.tasks import part_of_day

    assert part_of_day(pd.Timestamp(utc).value, longitude) == want


def test_verl_rows_score_their_own_answer_and_name_their_audio(exported):
    folder, report = exported["verl"]
    seen_tasks = set()
    for split in report.rows:
        frame = pd.read_parquet(folder / f"{split}.parquet")
        for _, row in frame.iterrows():
            info = row.extra_info
            seen_tasks.add(info["task"])
            truth = row.reward_model["ground_truth"]
            assert row.reward_model["style"] == "rule" and list(row.prompt)[0]["role"] == "user"
            assert rewards.compute_score(row.data_source, truth, truth, dict(info)) == 1.0
            if info["task"] in ("detection", "classification"):
                wrong = "None" if truth != "None" else info["vocabulary"][0]
                assert rewards.compute_score(row.data_source, wrong, truth, dict(info)) < 1.0
            assert (folder / info["audio"]).is_file() and info["split"] == split
    assert "caption" not in seen_tasks and {"detection", "localisation"} <= seen_tasks


def test_icl_shots_come_from_other_recordings_and_days_and_are_balanced(exported):
    folder, report = exported["icl"]
    ds = load(folder)
    assert sum(report.rows.values()) > 0
    for split in ds:
        for row in ds[split]:
            meta = json.loads(row["metadata"])
            shots = meta["shots"]
            assert len(row["audio"]) == len(shots) + 1 == row["instruction"].count("<AudioHere>")
            assert sorted(s["answer"] for s in shots) == ["no", "yes"]
            assert row["output"] == ("yes" if meta["label"] in meta["labels"] else "no")
            day = meta["utc_start"][:10]
            assert all(s["utc_start"][:10] != day for s in shots)


def test_webdataset_shards_pair_audio_and_labels(exported, tree):
    folder, report = exported["webdataset"]
    total = 0
    for tar_path in sorted(folder.glob("*.tar")):
        with tarfile.open(tar_path) as tar:
            names = tar.getnames()
            assert all(m.mtime == 0 and m.uid == 0 for m in tar.getmembers())
            keys = [n.split(".", 1)[0] for n in names]
            assert keys[::2] == keys[1::2] and names[1::2] == [k + ".json" for k in keys[::2]]
            for audio_name, json_name in zip(names[::2], names[1::2]):
                meta = json.loads(tar.extractfile(json_name).read())
                data, rate = sf.read(io.BytesIO(tar.extractfile(audio_name).read()), dtype="int16")
                assert rate == meta["sample_rate"] and len(data) == round(meta["duration"] * rate)
                total += 1
    assert total == sum(report.rows.values())


# ---------------------------------------------------------------- options, CLI

def test_resampled_export_and_balance(store, tmp_path, tree):
    out = tmp_path / "16k"
    report = export(store, str(out), "hf", seconds=SECONDS, sample_rate=16000, max_per_label=2, split_by="stream")
    ds = load(out)
    counts: dict[tuple[str, str], int] = {}
    for split in ds:
        for row in ds[split]:
            data, rate = sf.read(io.BytesIO(row["audio"]["bytes"]), dtype="int16")
            assert rate == row["sample_rate"] == 16000 and len(data) == SECONDS * 16000
            for label in row["labels"] or ["None"]:
                counts[(split, label)] = counts.get((split, label), 0) + 1
    assert counts and max(counts.values()) <= 2
    card = (out / "README.md").read_text()
    assert "## Balance (clips per taxon group)" in card and "| fishes |" in card
    assert report.exported < len(pi.clips(tree, SECONDS))


def test_export_command(store, tmp_path):
    out = tmp_path / "cli"
    result = subprocess.run([sys.executable, "-m", "pamingest.cli", "export", store, str(out), "--format", "webdataset",
                             "--seconds", str(SECONDS), "--split-by", "day", "--json"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["format"] == "webdataset" and report["exported"] > 0 and (out / "README.md").is_file()
    bad = subprocess.run([sys.executable, "-m", "pamingest.cli", "export", store, str(tmp_path / "x"), "--format",
                          "tfrecord"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown export format 'tfrecord'" in bad.stderr and "Traceback" not in bad.stderr


def test_whole_row_clips_are_the_stored_flac_bytes(exported, store, tree):
    """A clip that is exactly a stored row is copied, not decoded and encoded again: its file is the
    row's chunk as the store holds it (and, as every test here checks, its samples are the row's)."""
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    from pamingest.store.repo import Store

    folder, report = exported["webdataset"]
    session = Store.open(store).session(report.snapshot)
    clips = pi.clips(tree, SECONDS)
    rows = {example_id(s, int(t), f, int(o)): (s, r)
            for s, t, f, o, r in zip(clips.stream, ns(clips.start), clips.file, clips.file_offset, clips.row) if r >= 0}
    copied = 0
    for tar_path in sorted(folder.glob("*.tar")):
        with tarfile.open(tar_path) as tar:
            for name in tar.getnames():
                key = name.split(".", 1)[0]
                if name.endswith(".flac") and key in rows:
                    stream, row = rows[key]
                    chunk = sync(session.store.get(f"{stream}/audio/c/{row}/0/0", prototype=default_buffer_prototype()))
                    assert tar.extractfile(name).read() == chunk.to_bytes(), name
                    copied += 1
    assert copied >= 10


def test_clips_of_overlapping_recordings_starting_together_have_their_own_ids(tree):
    """SoundTrap files overlap by 17 ms: the short end of one and the start of the next are clips
    starting at the same instant; every clip of the table gets an id of its own."""
    from pamingest.export.select import examples

    clips = pi.clips(tree, SECONDS, min_valid=0)
    soundtrap = clips[clips.stream == SOUNDTRAP]
    assert soundtrap.start.duplicated().sum() == 2  # the two seams
    ids = [example_id(s, int(t), f, int(o)) for s, t, f, o in
           zip(clips.stream, ns(clips.start), clips.file, clips.file_offset)]
    assert len(set(ids)) == len(ids)
    chosen = examples(clips, min_score=0.0)
    assert len({e.id for e in chosen}) == len(chosen)


def test_an_export_with_no_labelled_clip_says_how_to_get_labels():
    from pamingest.export import ExportReport

    empty = ExportReport("out", "hf", "SNAP", clips=11, exported=0).summary()
    assert "exported 0 of 11 clips" in empty and "--min-score" in empty and "pamingest annotate" in empty
    assert "--min-score" not in ExportReport("out", "hf", "SNAP", clips=11, exported=3).summary()
