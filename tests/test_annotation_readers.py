"""Annotation readers on the real files (and on files written in the documented formats)."""

from __future__ import annotations

import csv
import re

import numpy as np
import pandas as pd
import pytest

from pamingest.registry import registry
from pamingest.annotations import (EFFORT_COLUMNS, EVENT_COLUMNS, Recording, get_reader,
                                   read_annotations)
from pamingest.errors import AnnotationError, ConfigError, PamIngestError
from pamingest.timing import NS_PER_S, to_ns

T0 = "2018-04-27T00:00:00"
MSD = "MSD-0003_20180427_2minstart00.Table.1.selections.txt"


def raven_rows(fixtures):
    """The MSD-0003 table's data rows, split into cells (what the reader must reproduce)."""
    lines = (fixtures / "annotated" / "raven" / MSD).read_text().splitlines()
    return lines[0].split("\t"), [line.split("\t") for line in lines[1:]]


def check_schema(ann):
    assert list(ann.events.columns) == list(EVENT_COLUMNS)
    assert list(ann.effort.columns) == list(EFFORT_COLUMNS)


def test_every_format_has_an_explicit_reader():
    assert registry("annotation_readers").names() == ["audacity", "cornell", "marmaudio", "orcahello", "podcast-json",
                                                      "podcast-tsv", "pods-ai", "raven", "sanctsound"]
    with pytest.raises(ConfigError, match="unknown annotation format 'csv'"):
        get_reader("csv")
    with pytest.raises(ConfigError, match="bad option for the raven reader"):
        get_reader("raven", no_such_setting=1)


def test_raven_table_times_labels_bounds_and_effort(fixtures):
    header, rows = raven_rows(fixtures)
    ann = read_annotations(fixtures / "annotated" / "raven" / MSD, "raven",
                           recording=Recording("MSD-0003.wav", start=T0, duration=120.0))
    check_schema(ann)
    ev = ann.events
    assert len(rows) == 10 and len(ev) == 9
    t0 = to_ns(T0)
    for (_, e), cells in zip(ev.iterrows(), rows):
        assert e.start == t0 + round(float(cells[3]) * NS_PER_S)
        assert e.end == t0 + round(float(cells[4]) * NS_PER_S)
        assert (e.low_hz, e.high_hz) == (float(cells[5]), float(cells[6]))
        assert e.label == cells[7]
    assert list(ev.line) == list(range(2, 11))
    assert ev.label_norm.tolist()[:3] == ["woth", "eato", "woth"]
    assert ev.reviewed.all() and (ev.annotator == "human").all() and ev.confidence.isna().all()
    # Selection 10 has no label: rejected with its line, and the others kept.
    assert [(r.line, r.reason) for r in ann.rejected] == [(11, "empty label")]
    assert str(ann.rejected[0]) == f"{fixtures / 'annotated' / 'raven' / MSD}, line 11: empty label"
    # The table covers its recording over all 120 s, for every label, except where the unlabelled
    # selection is: that sound may be any label, so its span is no reviewed absence.
    b10, e10 = (t0 + round(float(x) * NS_PER_S) for x in rows[9][3:5])
    assert ann.effort[["start", "end", "label_norm"]].values.tolist() == \
        [[t0, b10, ""], [e10, t0 + 120 * NS_PER_S, ""]]


def test_raven_header_only_table_is_reviewed_absence_of_the_labels_named(fixtures):
    path = fixtures / "annotated" / "raven" / "EmptyExample.Table.1.selections.txt"
    # Nothing says which labels were looked for: no effort, and a note saying so (never every label).
    ann = read_annotations(path, "raven", recording=Recording("empty.wav", start=T0, duration=60))
    assert ann.events.empty and ann.effort.empty and not ann.rejected
    assert ann.notes == ["empty.wav: the table has no selections and no effort_labels were given: no effort "
                         "recorded (give effort_labels, the labels that were looked for, to record that none "
                         "was found)"]
    # The labels the reviewer looked for: reviewed, nothing found, for those only.
    ann = read_annotations(path, "raven", options={"effort_labels": ["woth", "eato"]},
                           recording=Recording("empty.wav", start=T0, duration=60))
    assert ann.events.empty and not ann.notes
    assert ann.effort[["start", "end", "label_norm"]].values.tolist() == \
        [[to_ns(T0), to_ns(T0) + 60 * NS_PER_S, "woth"], [to_ns(T0), to_ns(T0) + 60 * NS_PER_S, "eato"]]
    # Without a recording nothing can be placed in time: a clear error, not a silent empty result.
    with pytest.raises(AnnotationError, match="EmptyExample.*does not name its recording"):
        read_annotations(path, "raven")


def test_raven_annotation_column_and_trailing_tabs(fixtures):
    path = fixtures / "annotated" / "raven" / "raven_with_Annotation_col.txt"
    ann = read_annotations(path, "raven", recording=Recording("a.wav", start=T0, duration=10))
    assert ann.events.label.tolist() == ["CSWA"] and ann.events.label_norm.tolist() == ["cswa"]
    assert ann.events.start.tolist() == [to_ns(T0) + 1_897_648_166]
    # The label column is configurable; naming one the table lacks is an error at its header.
    with pytest.raises(AnnotationError, match=r"raven_with_Annotation_col.txt, line 1: missing required column 'Species'"):
        read_annotations(path, "raven", options={"label_column": "Species"},
                         recording=Recording("a.wav", start=T0, duration=10))


def test_raven_view_rows_collapse_and_begin_file_offsets(tmp_path, fixtures):
    header, rows = raven_rows(fixtures)
    # As Raven writes it with two views open: every selection twice, waveform first,
    # and with Begin File / File Offset: selections 1-5 in one file, 6-10 in the next.
    cols = header + ["Begin File", "File Offset (s)"]
    out = ["\t".join(cols)]
    for cells in rows:
        cells = (cells + [""] * 8)[:8]
        sel, begin = int(cells[0]), float(cells[3])
        name, offset = ("rec_a.wav", begin) if sel <= 5 else ("rec_b.wav", begin - 10.0)
        wave = [cells[0], "Waveform 1", *cells[2:5], "0", "16000", cells[7]]
        spec = [cells[0], "Spectrogram 1", *cells[2:8]]
        for c in (wave, spec):
            out.append("\t".join([*c, "", "", name, f"{offset!r}"]) + "\t")
    path = tmp_path / "two-views.txt"
    path.write_text("\r\n".join(out) + "\r\n")
    a, b = to_ns("2018-04-27T05:00:00"), to_ns("2018-04-27T05:00:10.5")
    ann = read_annotations(path, "raven", recordings=[Recording("/data/rec_a.wav", start=a, duration=10),
                                                      Recording("/data/rec_b.wav", start=b, duration=10)])
    ev = ann.events
    assert len(ev) == 9  # selection 10 has no label: rejected at its first line, its other view with it
    assert [(r.line, r.reason) for r in ann.rejected] == [(20, "empty label")]
    assert ev.low_hz.tolist() == [float(c[5]) for c in rows[:9]]  # the spectrogram row's bounds, not 0-16000
    assert ev.line.tolist() == [2 + 2 * i for i in range(9)]  # each selection's first line
    for (_, e), cells in zip(ev.iterrows(), rows):
        begin, end = float(cells[3]), float(cells[4])
        base, offset = (a, begin) if int(cells[0]) <= 5 else (b, begin - 10.0)
        assert e.start == base + round(offset * NS_PER_S)
        assert e.end - e.start == round(end * NS_PER_S) - round(begin * NS_PER_S) or \
            abs((e.end - e.start) - (end - begin) * NS_PER_S) <= 1
        assert e.recording == ("/data/rec_a.wav" if int(cells[0]) <= 5 else "/data/rec_b.wav")
    # Each file is covered whole, but for the unlabelled selection's span in rec_b.
    assert ann.effort.recording.tolist() == ["/data/rec_a.wav", "/data/rec_b.wav", "/data/rec_b.wav"]
    # A file the table names but nobody placed in time is an error naming its line.
    with pytest.raises(AnnotationError, match=r"two-views.txt, line 12: recording 'rec_b.wav' is not in the store"):
        read_annotations(path, "raven", recordings=[Recording("/data/rec_a.wav", start=a)])


def test_birdnet_tables_are_unreviewed_machine_labels(tmp_path):
    path = tmp_path / "birdnet.txt"
    path.write_text("Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tLow Freq (Hz)\tHigh Freq (Hz)\t"
                    "Species Code\tCommon Name\tConfidence\n"
                    "1\tSpectrogram 1\t1\t0\t3.0\t150\t12000\tamerob\tAmerican Robin\t0.8123\n")
    ann = read_annotations(path, "raven", options={"label_column": "Common Name"},
                           recording=Recording("x.wav", start=T0, duration=60))
    e = ann.events.iloc[0]
    assert (e.label, e.label_norm, e.confidence, e.reviewed, e.annotator) == \
        ("American Robin", "american_robin", 0.8123, False, "machine")
    assert ann.effort.empty  # a detector's output is not a review


def test_audacity_track_with_spectral_lines(fixtures):
    path = fixtures / "annotated" / "spinetail.audacity.txt"
    lines = path.read_text().splitlines()
    ann = read_annotations(path, "audacity", recording=Recording("spinetail.wav", start=T0, duration=19.542))
    check_schema(ann)
    labels = [line.split("\t") for line in lines if not line.startswith("\\")]
    bands = [line.split("\t") for line in lines if line.startswith("\\")]
    assert len(ann.events) == len(labels) == len(bands) == 18
    t0 = to_ns(T0)
    for (_, e), lab, band in zip(ann.events.iterrows(), labels, bands):
        assert e.start == t0 + round(float(lab[0]) * NS_PER_S) and e.end == t0 + round(float(lab[1]) * NS_PER_S)
        assert (e.label, e.low_hz, e.high_hz) == (lab[2], float(band[1]), float(band[2]))
    assert ann.events.label_norm.value_counts().to_dict() == {"sp": 14, "crer": 4}
    assert ann.events.line.tolist()[:3] == [1, 3, 5]


def test_audacity_bad_lines_are_rejected_with_their_line(tmp_path):
    path = tmp_path / "track.txt"
    path.write_text("1.0\t2.0\tSP\n\\\t100\t200\n3.5\tabc\tSP\n\\\t300\t400\n5.0\t4.0\tSP\n6.0\t7.0\tSP\n")
    ann = read_annotations(path, "audacity", recording=Recording("r.wav", start=T0))
    # Each bad line is rejected (the band line after a rejected label line goes with it); the rest is read.
    assert [str(r) for r in ann.rejected] == [f"{path}, line 3: end time 'abc' is not a number",
                                              f"{path}, line 5: negative duration: ends 1 s before it starts"]
    assert ann.events.line.tolist() == [1, 6]
    assert ann.events.low_hz.iloc[0] == 100.0 and np.isnan(ann.events.low_hz.iloc[1])
    # Rows rejected before their time was known may have marked anything: no effort is claimed.
    assert ann.effort.empty and "no effort recorded" in ann.notes[-1]


# ---------------------------------------------------------------- SanctSound

def write(tmp_path, name, text, *, bom=False, crlf=False):
    path = tmp_path / name
    if crlf:
        text = text.replace("\n", "\r\n")
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode())
    return path


def test_sanctsound_hourly_presence_with_bom_crlf_and_casing(tmp_path):
    path = write(tmp_path, "SanctSound_CI01_01_bocaccio_1h.csv",
                 "IsoStartTime,Presence\n2018-11-01T08:00:00Z,0\n2018-11-01T09:00:00.000Z,1\n2018-11-01T10:00:00Z,NA\n",
                 bom=True, crlf=True)
    ann = read_annotations(path, "sanctsound")
    check_schema(ann)
    h = 3600 * NS_PER_S
    t8 = to_ns("2018-11-01T08:00:00")
    assert ann.events[["start", "end", "label", "label_norm", "kind", "site"]].values.tolist() == \
        [[t8 + h, t8 + 2 * h, "bocaccio", "bocaccio", "presence", "CI01_01"]]
    # Both reviewed hours are effort; the NA hour was not reviewed.
    assert ann.effort[["start", "end", "label_norm"]].values.tolist() == \
        [[t8, t8 + h, "bocaccio"], [t8 + h, t8 + 2 * h, "bocaccio"]]
    assert ann.events.line.tolist() == [3] and ann.effort.line.tolist() == [2, 3]


def test_sanctsound_column_variants(tmp_path):
    spans = write(tmp_path, "SanctSound_CI01_03_dolphins.csv",
                  "ISOStartTime,ISOEndTime,Presence\n2019-09-04T06:42:04.8Z,2019-09-04T06:42:05.9Z,1\n")
    ships = write(tmp_path, "SanctSound_MB01_05_ships.csv",
                  "ISOStartTime,ISOEndTime,Label\n2020-04-24T17:13:00Z,2020-04-24T17:13:20Z,NoShip\n"
                  "2020-04-24T17:13:20Z,2020-04-24T17:14:00Z,Ship\n", crlf=True)
    older = write(tmp_path, "SanctSound_SB01_01_northatlanticrightwhale_manual_1d.csv",
                  "Begin_datetime_ISO6801,End_datetime_ISO6801,Presence\n"
                  "2018-11-20T00:00:00+00:00,2018-11-21T00:00:00+00:00,1\n")
    daily = write(tmp_path, "SanctSound_HI03_02_dolphin.csv", "ISO_Date,Presence\n2019-12-23,0\n")
    effort = write(tmp_path, "SanctSound_GR01_01_dolphins_1min.csv",
                   "ISOStartTime,Presence,Effort,Count\n2018-12-24T00:37:00Z,1,1,4\n2018-12-24T00:38:00Z,0,0,0\n")

    a = read_annotations(spans, "sanctsound")
    assert a.events[["start", "end", "kind"]].values.tolist() == \
        [[to_ns("2019-09-04T06:42:04.8"), to_ns("2019-09-04T06:42:05.9"), "event"]]
    b = read_annotations(ships, "sanctsound")
    assert b.events[["label", "label_norm", "start"]].values.tolist() == [["Ship", "ships", to_ns("2020-04-24T17:13:20")]]
    assert len(b.effort) == 2 and set(b.effort.label_norm) == {"ships"}  # NoShip: reviewed, no ship
    c = read_annotations(older, "sanctsound")
    e = c.events.iloc[0]
    # A _manual product shares its label with the automatic one and is a person's work.
    assert (e.label, e.label_norm, e.annotator, e.site) == \
        ("northatlanticrightwhale_manual", "northatlanticrightwhale", "human", "SB01_01")
    assert e.end - e.start == 86400 * NS_PER_S
    d = read_annotations(daily, "sanctsound")
    assert d.events.empty and d.effort[["start", "end"]].values.tolist() == \
        [[to_ns("2019-12-23"), to_ns("2019-12-24")]]
    f = read_annotations(effort, "sanctsound")
    assert len(f.events) == 1 and f.effort[["start", "end"]].values.tolist() == \
        [[to_ns("2018-12-24T00:37"), to_ns("2018-12-24T00:38")]]  # Effort 0: not reviewed


def test_sanctsound_bad_files_fail_and_bad_rows_are_rejected(tmp_path):
    # What is wrong with the whole file (its columns, its name) fails it.
    files = {
        "SanctSound_CI01_01_finwhale_1h.csv": ("ISOStartTime,Count\n2018-11-01T08:00:00Z,3\n",
                                               r"line 1: missing required column 'Presence' \(or 'Label'\)"),
        "SanctSound_CI01_01_humpbackwhale.csv": ("ISOStartTime,Presence\n2018-11-01T08:00:00Z,1\n",
                                                 r"line 2: no end time and no bin length"),
        "detections.csv": ("ISOStartTime,Presence\n", r"cannot tell the category and site"),
    }
    for name, (text, message) in files.items():
        path = write(tmp_path, name, text)
        with pytest.raises(AnnotationError, match=re.escape(name) + ".*" + message) as info:
            read_annotations(path, "sanctsound")
        assert isinstance(info.value, PamIngestError) and info.value.file.endswith(name)
    # What is wrong with a row rejects that row; the others are read.
    rows = {
        "SanctSound_CI01_01_seiwhale_1h.csv": ("ISOStartTime,Presence\n2018-11-01T08:00:00Z,0\nyesterday,1\n",
                                               (3, "ISOStartTime 'yesterday' is not a time (or is outside "
                                                   "1900-01-01 to 2200-01-01)")),
        "SanctSound_CI01_01_bluewhale.csv": ("ISOStartTime,ISOEndTime,Presence\n2018-11-01T07:00:00Z,"
                                             "2018-11-01T07:10:00Z,0\n2018-11-01T08:10:00Z,2018-11-01T08:00:00Z,1\n",
                                             (3, "negative duration: ends 600 s before it starts")),
        "SanctSound_CI01_02_seiwhale_1d.csv": ("ISOStartTime,Presence\n2018-10-31,0\n2018-11-01,yes\n",
                                               (3, "Presence 'yes' is not a number")),
    }
    for name, (text, rejected) in rows.items():
        ann = read_annotations(write(tmp_path, name, text), "sanctsound")
        assert [(r.line, r.reason) for r in ann.rejected] == [rejected], name
        assert ann.effort.line.tolist() == [2], name  # the good row's reviewed absence


# ---------------------------------------------------------------- Orcasound

def pods_ai_rows(fixtures, name="pods-ai-detections.csv"):
    """The export's rows, indexed by the line each starts on (some descriptions span lines)."""
    path = fixtures / "orcasound" / "annotations" / name
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header, starts, rows, last = next(reader), [], [], 1
        for row in reader:
            starts.append(last + 1)
            rows.append(row)
            last = reader.line_num
    return pd.DataFrame(rows, columns=header, index=starts)


@pytest.mark.parametrize("name", ["pods-ai-detections.csv", "pods-ai-training_samples.csv"])
def test_pods_ai_times_are_pacific_with_dst_and_match_the_uri(fixtures, name):
    raw = pods_ai_rows(fixtures, name)
    ann = read_annotations(fixtures / "orcasound" / "annotations" / name, "pods-ai")
    check_schema(ann)
    ev = ann.events
    assert len(ev) == len(raw.drop_duplicates())  # the export repeats some rows: counted once
    rows = raw.loc[ev.line.to_numpy()]
    centre = (ev.start.to_numpy() + ev.end.to_numpy()) // 2
    assert ((ev.end - ev.start) == 60 * NS_PER_S).all()
    # The centre is the URI's UTC time, to the millisecond.
    uri = pd.to_datetime(rows.URI.str.extract(r"time=([^&]+)")[0].str.replace("%3A", ":"), utc=True)
    np.testing.assert_array_equal(centre, uri.dt.tz_localize(None).astype("datetime64[ns]").astype(np.int64))
    # The "_PST" timestamp is Pacific wall time with daylight saving: 7 h behind UTC in summer, 8 in winter.
    local = pd.to_datetime(rows.Timestamp.str[:19], format="%Y_%m_%d_%H_%M_%S")
    offset_h = np.round((local.astype("datetime64[ns]").astype(np.int64).to_numpy() - centre) / 3.6e12)
    summer = local.dt.month.isin([6, 7, 8]).to_numpy()
    winter = local.dt.month.isin([12, 1, 2]).to_numpy()
    assert summer.any() and winter.any()
    assert (offset_h[summer] == -7).all() and (offset_h[winter] == -8).all()
    assert set(ev.site) <= {"rpi_orcasound_lab", "rpi_bush_point", "rpi_port_townsend", "rpi_sunset_bay",
                            "rpi_north_sjc", "rpi_point_robinson", "rpi_mast_center", "rpi_andrews_bay"}


def test_pods_ai_verdicts(fixtures):
    raw = pods_ai_rows(fixtures)
    ann = read_annotations(fixtures / "orcasound" / "annotations" / "pods-ai-detections.csv", "pods-ai")
    ev = ann.events
    by = ev.groupby("verdict")
    assert by.annotator.unique().map(list).to_dict() == {
        "tp_human_only": ["human"], "tp_both": ["human+machine"],
        "tp_machine_only": ["machine"], "fp_machine_only": ["machine"]}
    assert ev.reviewed.all()
    # Confidence is the model's, in percent in the file, a fraction here; people have none.
    assert ev[ev.verdict == "tp_human_only"].confidence.isna().all()
    machine = ev[ev.verdict != "tp_human_only"]
    rows = raw.loc[machine.line.to_numpy()]
    np.testing.assert_allclose(machine.confidence, rows.Confidence.astype(float) / 100)
    # A false positive is an event of what the listener heard, and reviewed absence of the whales.
    fp = ev[ev.verdict == "fp_machine_only"]
    assert set(fp.label_norm) == {"vessel", "water", "jingle", "human"}
    assert len(ann.effort) == 3 * len(fp)
    assert set(ann.effort.label_norm) == {"resident", "transient", "humpback"}
    assert set(ev[ev.verdict.str.startswith("tp")].label_norm) == {"resident", "transient", "humpback"}


def test_pods_ai_disagreeing_times_and_missing_columns(tmp_path, fixtures):
    lines = (fixtures / "orcasound" / "annotations" / "pods-ai-detections.csv").read_text().splitlines()
    # Shift one row's UTC time by an hour: the two clocks no longer agree.
    lines[3] = lines[3].replace("T14%3A37%3A24", "T15%3A37%3A24")
    bad = tmp_path / "pods.csv"
    bad.write_text("\n".join(lines[:10]) + "\n")
    ann = read_annotations(bad, "pods-ai")
    [rejected] = ann.rejected
    assert re.fullmatch(r".*pods.csv, line 4: Timestamp '2023_10_26_07_37_24_PST'.*disagree", str(rejected))
    assert 4 not in ann.events.line.tolist() and len(ann.events) == 8  # the other rows are read
    bad.write_text("Category,Timestamp,URI\n" + "\n".join(lines[1:3]) + "\n")
    with pytest.raises(AnnotationError, match=r"pods.csv, line 1: missing required column 'NodeName'"):
        read_annotations(bad, "pods-ai")


def test_podcast_json_machine_proposals_and_human_submissions(fixtures):
    folder = fixtures / "orcasound" / "annotations"
    start = to_ns("2017-09-27T15:25:00")
    sub = read_annotations(folder / "podcast-submit.json", "podcast-json",
                           recording=Recording(start=start, duration=60))
    check_schema(sub)
    assert len(sub.events) == 6 and sub.events.reviewed.all() and (sub.events.annotator == "human").all()
    assert sub.events.start.iloc[0] == start + 24_500_000_000
    assert sub.events.recording.iloc[0].endswith("OS_9_27_2017_08_25_00__0001.wav")
    assert sub.effort[["start", "end", "label_norm"]].values.tolist() == [[start, start + 60 * NS_PER_S, "orca"]]
    prop = read_annotations(folder / "podcast-annotation.json", "podcast-json",
                            recording=Recording(start=start))
    assert prop.events.confidence.tolist() == [0.453, 0.635] and not prop.events.reviewed.any()
    assert prop.effort.empty  # model proposals are not a review
    with pytest.raises(AnnotationError, match=r"podcast-submit.json: recording .*OS_9_27_2017_08_25_00__0001.wav"
                                              r"' is not in the store"):
        read_annotations(folder / "podcast-submit.json", "podcast-json")


def test_orcahello_predictions_are_unreviewed_with_confidence(fixtures):
    path = fixtures / "orcasound" / "annotations" / "orcahello-predictions.tsv"
    raw = pd.read_csv(path, sep="\t")
    base = to_ns("2017-09-27T16:00:00")
    names = sorted(raw.wav_filename.unique())
    recs = [Recording(n, start=base + k * 3600 * NS_PER_S) for k, n in enumerate(names)]
    ann = read_annotations(path, "orcahello", recordings=recs)
    check_schema(ann)
    ev = ann.events
    assert len(ev) == len(raw) == 8341
    assert not ev.reviewed.any() and (ev.annotator == "machine").all() and (ev.label_norm == "orca").all()
    np.testing.assert_allclose(ev.confidence, raw.confidence)
    k = raw.wav_filename.map({n: i for i, n in enumerate(names)}).to_numpy()
    np.testing.assert_array_equal(ev.start, base + k * 3600 * NS_PER_S + (raw.start_time_s * NS_PER_S).round().astype(np.int64))
    assert ann.effort.empty
    strong = read_annotations(path, "orcahello", options={"threshold": 0.9}, recordings=recs)
    assert len(strong.events) == int((raw.confidence >= 0.9).sum()) > 0


def test_podcast_tsv_positives_markers_and_pacific_dates(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_text(
        "dataset\twav_filename\tstart_time_s\tduration_s\tlocation\tdate\tpst_or_master_tape_identifier\n"
        "podcast_round2\tOS_9_27_2017_08_25_00__0001.wav\t24.5\t2.45\torcasound_lab\t9/27/2017\t08:25:00\n"
        "podcast_round2\tOS_9_27_2017_08_25_00__0001.wav\t38.4\t2.45\torcasound_lab\t9/27/2017\t08:25:00\n"
        "podcast_round2\tOS_1_10_2018_08_00_00__0000.wav\t0.0\t0.01\torcasound_lab\t1/10/2018\t08:00:00\n")
    ann = read_annotations(path, "podcast-tsv", options={"file_seconds": 60}, stream="orcasound/rpi_orcasound_lab")
    check_schema(ann)
    summer = to_ns("2017-09-27T15:25:00")  # 08:25 PDT
    winter = to_ns("2018-01-10T16:00:00")  # 08:00 PST
    assert ann.events[["start", "end", "label_norm"]].values.tolist() == [
        [summer + 24_500_000_000, summer + 26_950_000_000, "orca"],
        [summer + 38_400_000_000, summer + 40_850_000_000, "orca"]]
    # Every listed file is reviewed whole; the 0.01 s row marks a file without calls.
    assert ann.effort[["start", "end", "label_norm"]].values.tolist() == [
        [summer, summer + 60 * NS_PER_S, "orca"], [winter, winter + 60 * NS_PER_S, "orca"]]
    assert set(ann.events.stream) == {"orcasound/rpi_orcasound_lab"}
    # The autumn clock change repeats 01:00-02:00: such a time cannot be placed.
    path.write_text("wav_filename\tstart_time_s\tduration_s\tdate\tpst_or_master_tape_identifier\n"
                    "OS_11_5_2017_01_30_00__0000.wav\t1.0\t2.0\t11/5/2017\t01:30:00\n")
    ann = read_annotations(path, "podcast-tsv")
    assert [str(r) for r in ann.rejected] == [f"{path}, line 2: local time 2017-11-05T01:30:00 in "
                                              "America/Los_Angeles occurs twice (clocks went back)"]
    assert ann.events.empty and ann.effort.empty
    path.write_text("wav_filename\tstart_time_s\tduration_s\nOS.wav\t1.0\t-2.0\n")
    ann = read_annotations(path, "podcast-tsv", recording=Recording(start=T0))
    assert [str(r) for r in ann.rejected] == [f"{path}, line 2: duration_s '-2.0' is negative"]
