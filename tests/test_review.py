"""Review batches as Raven Pro opens them: a list file + a selection table over that file sequence.

What a reviewer sees in Raven is checked against the files themselves: the
clips in list order are the sequence, each selection's Begin Time / End Time
cut that sequence at its clip, whose samples are the store's chunk and the
original recording's at Source File + Source Offset (s). Answers read back
land on the chunks; an unanswered table is reported; the predicted class is
the labeller's top class; BirdNET's species filter takes its place and week
from parameters or the stream.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import pamingest as pi
from pamingest.annotations import attach, read_annotations
from pamingest.errors import ConfigError, UnansweredReviewWarning
from pamingest.labeling import get_labeler, pseudolabel, review
from pamingest.labeling.labelers import birdnet
from pamingest.labeling.run import read_rows
from pamingest.store.repo import Store, StoreLocation, open_repository
from test_labeling import SOUNDTRAP, _edit_table, batch_table, dataset, soundtrap_store


def test_review_batch_opens_as_a_raven_file_sequence(tmp_path, fixtures):
    store = soundtrap_store(tmp_path, fixtures, SOUNDTRAP[:2])
    pseudolabel(store, "energy:humpback", client="serial")
    batch = review(store, "energy:humpback", tmp_path / "review", n=8, strategy="random", seed=1)
    [table_path], [list_path] = batch.tables, batch.lists
    table = batch_table(table_path)
    ds = dataset(store)
    rows = sorted(r for _, r in batch.chunks)
    assert len(rows) == 8 and len({ds["file_index"].values[r] for r in rows}) == 2  # clips of both recordings

    # The list file Raven opens: the clips, absolute paths, in selection order, which is also name order.
    listed = Path(list_path).read_text().splitlines()
    assert listed == batch.clips == list(table["Begin Path"])
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in listed)
    assert [Path(p).name for p in listed] == sorted(Path(p).name for p in listed)
    assert list(table["Selection"]) == [str(k) for k in range(1, 9)]
    assert list(table["Begin File"]) == [Path(p).name for p in listed] and set(table["File Offset (s)"]) == {"0"}

    # The file sequence: the clips end to end. Each selection's Begin/End Time cut out exactly its
    # clip, which is the store's chunk, which is the original recording at Source File + Source Offset.
    clips = [sf.read(p, dtype="int16") for p in listed]
    assert {rate for _, rate in clips} == {8000}
    sequence = np.concatenate([x for x, _ in clips])
    audio, n_valid, starts = ds["audio"].values, ds["n_valid"].values, ds["chunk_start"].values
    edge = 0
    for k, row in enumerate(rows):
        begin, end = float(table["Begin Time (s)"][k]), float(table["End Time (s)"][k])
        assert round(begin * 8000) == edge  # starts where the clips before it end, to the sample
        cut = sequence[round(begin * 8000) : round(end * 8000)]
        np.testing.assert_array_equal(cut, audio[row, : n_valid[row], 0])
        np.testing.assert_array_equal(cut, clips[k][0])
        original, _ = sf.read(fixtures / "soundtrap" / table["Source File"][k], dtype="int16",
                              start=round(float(table["Source Offset (s)"][k]) * 8000), frames=len(cut))
        np.testing.assert_array_equal(cut, original)
        edge += len(cut)
    assert edge == len(sequence)
    assert "File > Open Sound Files" in Path(batch.guide).read_text() and Path(list_path).name in Path(
        batch.guide).read_text()

    # Sent back as written (every Annotation still "?"): a warning naming the table, nothing attached.
    with pytest.warns(UnansweredReviewWarning, match=Path(table_path).name):
        report = attach(store, [table_path], "raven")
    assert report.snapshot_id is None and report.unanswered_tables == [table_path]
    assert "no clip answered (all 8 still '?'): nothing attached" in report.summary()

    # Answered: read by the Raven reader against the store, each answer lands on its chunk's time.
    _edit_table(Path(table_path), {k: "humpback" if k % 2 else "none" for k in range(8)})
    ann = read_annotations(table_path, "raven", store=store)
    assert ann.review.answered == 8 and ann.review.unanswered == 0
    ends = starts[rows].astype(np.int64) + n_valid[rows].astype(np.int64) * 1_000_000_000 // 8000
    effort = ann.effort.sort_values("start")
    np.testing.assert_array_equal(effort["start"].to_numpy(np.int64), starts[rows].astype(np.int64))
    np.testing.assert_array_equal(effort["end"].to_numpy(np.int64), ends.astype(np.int64))
    np.testing.assert_array_equal(np.sort(ann.events["start"].to_numpy(np.int64)), starts[rows[1::2]].astype(np.int64))

    # A table written before the clips were the Begin File (Begin File = the recording, File Offset in
    # it) is still placed the same way.
    old = batch_table(table_path)
    old["Begin File"], old["File Offset (s)"] = old["Source File"], old["Source Offset (s)"]
    old = old.drop(columns=["Begin Path", "Source File", "Source Offset (s)"])
    old.to_csv(tmp_path / "old.selections.txt", sep="\t", index=False)
    before = read_annotations(str(tmp_path / "old.selections.txt"), "raven", store=store)
    np.testing.assert_array_equal(before.effort.sort_values("start")["start"].to_numpy(np.int64),
                                  effort["start"].to_numpy(np.int64))


def test_predicted_class_of_a_multiclass_labeler(tmp_path, fixtures, labeler_plugin):
    """A labeller with two classes: each selection says its top class and score, and the ranking score."""
    store = soundtrap_store(tmp_path, fixtures, SOUNDTRAP[:1])
    # The recording is ~37 dB below full scale: on a -60 dB floor "loud" scores ~0.38, "quiet" ~0.62.
    pseudolabel(store, "loudness", params={"floor_db": -60.0}, client="serial")
    scores = dataset(store).pam.scores("loudness")
    classes, values = list(scores["class"].values), scores.values
    assert classes == ["loud", "quiet"]
    for label, ranked in ((None, values.max(axis=1)), ("loud", values[:, 0])):
        batch = review(store, "loudness", tmp_path / f"by-{label}", n=6, strategy="uncertainty", label=label)
        table = batch_table(batch.tables[0])
        rows = sorted(r for _, r in batch.chunks)
        assert list(table["Predicted Class"]) == [classes[int(np.argmax(values[r]))] for r in rows]
        np.testing.assert_allclose(table["Predicted Score"].astype(float), values[rows].max(axis=1), atol=5e-5)
        np.testing.assert_allclose(table["Score"].astype(float), ranked[rows], atol=5e-5)
        assert set(table["Reviewed For"]) == {"loud;quiet"}
    # Ranked by "loud", the picks are still "quiet" by the labeller's top class, with its own score.
    assert set(table["Predicted Class"]) == {"quiet"}
    assert (table["Score"].astype(float) < 0.5).all() and (table["Predicted Score"].astype(float) > 0.5).all()


ITHACA = (42.48, -76.45)  # where birds_10s.wav's wood thrush and eastern towhee sing
CAPE_TOWN = (-33.92, 18.42)


@pytest.mark.skipif(birdnet.available() is not None, reason=f"BirdNET not installed: {birdnet.available()}")
def test_birdnet_species_filter_takes_place_and_week(tmp_path, fixtures):
    """BirdNET's species filter from the stream's latitude/longitude and each chunk's week, or from
    parameters; then a review of its scores names the top class of 6522."""
    folder = tmp_path / "rec"
    folder.mkdir()
    shutil.copy(fixtures / "annotated" / "birds_10s.wav", folder / "MSD_20180427_000000.wav")
    store = str(tmp_path / "store")
    pi.ingest(pi.TimestampedFiles(str(folder), "{site}_%Y%m%d_%H%M%S.wav"), store, client="serial", row_seconds=5)
    [path] = pi.streams(pi.open_store(store))

    def place(root):  # what a source with deployment metadata keeps on the stream
        root[path].attrs.update({"latitude": ITHACA[0], "longitude": ITHACA[1]})

    Store.open(store).update(place, "deployment position")
    model = get_labeler("birdnet")
    week = birdnet.week_48(int(dataset(store, path)["chunk_start"].values[0].astype(np.int64)))
    assert week == 16  # 27 April: day 117 of 365 x 48, rounded up
    here, year, cape = (model.species_mask(*ITHACA, week), model.species_mask(*ITHACA, -1),
                        model.species_mask(*CAPE_TOWN, week))
    thrush = model.classes.index("wood_thrush")
    assert here[thrush] and not cape[thrush] and (here != year).any() and 20 < here.sum() < len(here) // 10

    # The unfiltered scores of the same audio, straight from the model (no place given, none in context).
    session = open_repository(StoreLocation.from_url(store)).readonly_session("main")
    raw = model(*read_rows(session, path, np.arange(2))).scores

    runs = {"stream": ({}, here), "cape-town": ({"latitude": CAPE_TOWN[0], "longitude": CAPE_TOWN[1]}, cape),
            "year": ({"week": -1}, year)}
    for tag, (params, mask) in runs.items():
        report = pseudolabel(store, "birdnet", params=params, tag="" if tag == "stream" else tag, client="serial")
        assert report.scored == 3 and not report.failed
        spec = "birdnet" if tag == "stream" else f"birdnet+{tag}"
        values = dataset(store, path).pam.scores(spec).values[:2]
        assert (np.isfinite(values) == mask).all()  # left-out species are NaN: not assessed there and then
        np.testing.assert_allclose(values[:, mask], raw[:, mask], rtol=1e-5, atol=1e-6)
    assert np.isfinite(dataset(store, path).pam.scores("birdnet").values[:2, thrush]).all()

    # Review of the filtered scores: the predicted class is the top one among 6522; too many to list.
    batch = review(store, "birdnet", tmp_path / "review", n=2, strategy="top")
    table = batch_table(batch.tables[0])
    values = dataset(store, path).pam.scores("birdnet").values
    rows = sorted(r for _, r in batch.chunks)
    assert list(table["Predicted Class"]) == [model.classes[int(np.nanargmax(values[r]))] for r in rows]
    assert set(table["Reviewed For"]) == {""} and set(table["Labeler"]) == {"birdnet"}


def test_birdnet_place_and_week_parameters_are_checked():
    if birdnet.available() is not None:
        pytest.skip(birdnet.available())
    with pytest.raises(ConfigError, match="both latitude and longitude"):
        get_labeler("birdnet", latitude=42.5)
    with pytest.raises(ConfigError, match="out of range"):
        get_labeler("birdnet", latitude=142.5, longitude=0)
    with pytest.raises(ConfigError, match="week must be 1-48"):
        get_labeler("birdnet", week=49)
    labeler = get_labeler("birdnet", latitude=1.0, longitude=2.0, week=7)
    assert labeler.params()["latitude"] == 1.0 and labeler.place(None, None) == (1.0, 2.0, 7)
    assert get_labeler("birdnet", species_filter=False).place(None, None) is None

