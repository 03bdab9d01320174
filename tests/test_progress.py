"""Progress bars of pseudolabel, annotate (attach) and review: on stderr when asked, nothing otherwise."""

import re

import pytest

import pamingest as pi
from pamingest.annotations import attach
from pamingest.labeling import pseudolabel, review


@pytest.fixture
def store(tmp_path, fixtures):
    store = str(tmp_path / "store")
    report = pi.ingest(pi.TimestampedFiles(str(fixtures / "soundtrap"), "soundtrap"), store, client="serial")
    assert report.rows == 93
    return store


def _final(err: str, desc: str) -> str:
    """The last state tqdm drew of the bar named ``desc``."""
    states = [s for s in re.split(r"[\r\n]", err) if s.startswith(desc)]
    assert states, err
    return states[-1]


def test_pseudolabel_annotate_and_review_show_progress_when_asked(store, tmp_path, capsys):
    report = pseudolabel(store, "energy:humpback", client="serial", batch_rows=8, progress=True)
    assert report.scored == 93
    assert "93/93" in _final(capsys.readouterr().err, "chunks scored")

    batch = review(store, "energy:humpback", tmp_path / "review", n=5, progress=True)
    assert len(batch.clips) == 5
    assert "5/5" in _final(capsys.readouterr().err, "clips written")

    # The review tables, answered, are annotation files: two of them, one unreadable.
    (table,) = batch.tables
    answered = tmp_path / "answered.txt"
    answered.write_text(open(table).read().replace("\t?\t", "\tnone\t"))  # the Annotation cells
    attached = attach(store, [str(answered), str(tmp_path / "missing.txt")], "raven", progress=True)
    assert len(attached.failed) == 1 and attached.files[0].review.answered == 5
    assert "2/2" in _final(capsys.readouterr().err, "files attached")


def test_no_progress_by_default(store, tmp_path, capsys):
    pseudolabel(store, "energy:humpback", client="serial")
    review(store, "energy:humpback", tmp_path / "review", n=2)
    attach(store, [str(tmp_path / "missing.txt")], "raven")
    assert capsys.readouterr().err == ""
