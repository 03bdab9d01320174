"""The labelled store the export tests and ``benchmarks/export.py`` share, built from the fixtures.

One store, three kinds of labels, rows of 2 s:

- ``sanctsound``: SanctSound exemplar clips (48, 32 and 2 kHz, several
  sites) with detection products as NCEI writes them (presence hours,
  event spans, ship labels): people's positives and reviewed negatives;
- ``birds``: a 10 s field recording copied to three days, two with its
  Raven table (events of eato/lowa/woth; the table's recording is reviewed
  for every label) and one with the header-only table (reviewed, nothing);
- ``files`` (SoundTrap, 8 kHz, 15 min): pseudo-labels of ``energy:humpback``
  on every row, and a review batch of six rows answered (one humpback, four
  none, one left unanswered).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pamingest as pi
from pamingest.annotations import Recording, attach
from pamingest.labeling import pseudolabel, review

SANCTSOUND_CLIPS = [
    "SanctSound_CI01_01_bocaccio_20181101T100353Z.wav", "SanctSound_CI01_01_snappingshrimp_20181101T080448Z.wav",
    "SanctSound_CI01_03_dolphins_20190904T064203Z.wav", "SanctSound_CI01_03_smallboat_20190825T191712Z.wav",
    "SanctSound_MB01_05_ship_20200424T171317Z.wav",
]
# SanctSound products as NCEI writes them, for the times in the clips' names.
PRODUCTS = {
    "SanctSound_CI01_01_bocaccio_1h.csv": "\ufeffIsoStartTime,Presence\r\n2018-11-01T08:00:00Z,0\r\n"
                                          "2018-11-01T09:00:00Z,0\r\n2018-11-01T10:00:00Z,1\r\n",
    "SanctSound_CI01_03_dolphins.csv": "ISOStartTime,ISOEndTime,Presence\n"
                                       "2019-09-04T06:42:04.800Z,2019-09-04T06:42:05.900Z,1\n"
                                       "2019-09-04T06:42:06.500Z,2019-09-04T06:42:07.500Z,1\n"
                                       "2019-08-25T19:00:00Z,2019-08-25T20:00:00Z,0\n",
    "SanctSound_MB01_05_ships.csv": "ISOStartTime,ISOEndTime,Label\n"
                                    "2020-04-24T17:13:00Z,2020-04-24T17:13:20Z,NoShip\n"
                                    "2020-04-24T17:13:20Z,2020-04-24T17:14:00Z,Ship\n",
}
BIRDS = {"MSD_20180427_000000.wav": "table", "MSD_20180428_000000.wav": "empty", "MSD_20180429_000000.wav": "table"}
SOUNDTRAP = ["67416073.210610033655.flac", "67416073.210610034155.flac", "67416073.210610034655.flac"]
ROW_SECONDS = 2


def _edit_review_table(path: Path, answers: dict[int, str]) -> None:
    lines = path.read_text().splitlines()
    col = lines[0].split("\t").index("Annotation")
    out = [lines[0]]
    for i, line in enumerate(lines[1:]):
        cells = line.split("\t")
        cells[col] = answers.get(i, cells[col])
        out.append("\t".join(cells))
    path.write_text("\n".join(out) + "\n")


def build(root: Path, fixtures: Path) -> str:
    """Build the store under ``root`` (recordings are copied there, never into the project)."""
    store = str(root / "store")
    folders = {name: root / name for name in ("sanctsound", "birds", "soundtrap", "products", "review")}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    for name in SANCTSOUND_CLIPS:
        shutil.copy(fixtures / "sanctsound" / "clips" / name, folders["sanctsound"] / name)
    for name in BIRDS:
        shutil.copy(fixtures / "annotated" / "birds_10s.wav", folders["birds"] / name)
    for name in SOUNDTRAP:
        shutil.copy(fixtures / "soundtrap" / name, folders["soundtrap"] / name)
    for source in (pi.TimestampedFiles(str(folders["sanctsound"]), "sanctsound-clips", name="sanctsound"),
                   pi.TimestampedFiles(str(folders["birds"]), "{site}_%Y%m%d_%H%M%S.wav", name="birds"),
                   pi.TimestampedFiles(str(folders["soundtrap"]), "soundtrap")):
        report = pi.ingest(source, store, client="serial", row_seconds=ROW_SECONDS)
        assert report.ingested and not report.failed, report.summary()

    products = []
    for name, text in PRODUCTS.items():
        (folders["products"] / name).write_bytes(text.encode())
        products.append(folders["products"] / name)
    assert not attach(store, products, "sanctsound").failed
    raven = fixtures / "annotated" / "raven"
    for name, kind in BIRDS.items():
        if kind == "table":
            report = attach(store, [raven / "MSD-0003_20180427_2minstart00.Table.1.selections.txt"], "raven",
                            recording=Recording(name))
        else:
            report = attach(store, [raven / "EmptyExample.Table.1.selections.txt"], "raven",
                            options={"effort_labels": ["eato", "lowa", "woth"]}, recording=Recording(name))
        assert not report.failed, report.summary()

    pseudolabel(store, "energy:humpback", client="serial")
    batch = review(store, "energy:humpback", folders["review"], n=6, strategy="top",
                   streams=["files/67416073/8000Hz_1ch_pcm16"])
    [table] = batch.tables
    _edit_review_table(Path(table), {0: "humpback", 1: "none", 2: "none", 3: "?", 4: "none", 5: "none"})
    assert not attach(store, [table], "raven").failed
    return store
