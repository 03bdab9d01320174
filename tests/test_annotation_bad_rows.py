"""Hostile annotation files (issue #16): bad rows are rejected one by one, with file, line and reason.

Every table is written at test time and attached to a copy of one small
store (the spinetail recording, 19.5 s from 2020-01-01T00:00:00Z, 5 s rows,
site ``spinetail``), so each case checks what the store ends up holding.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tracemalloc

import pytest

import pamingest as pi
from pamingest.annotations import Recording, attach, read_annotations

WAV = "spinetail_20200101_000000.wav"
STREAM = "files/spinetail/44100Hz_1ch_pcm16"
OUT_OF_RANGE = "is more than 9.47e+09 s"  # MAX_SECONDS: 1900-01-01 to 2200-01-01

RAVEN_HEADER = "Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tLow Freq (Hz)\tHigh Freq (Hz)\tSpecies\n"


def raven(*rows) -> str:
    """A Raven table; each row is (begin, end, label) or a whole line as a string."""
    lines = [row if isinstance(row, str) else f"{i}\tSpectrogram 1\t1\t{row[0]}\t{row[1]}\t100\t200\t{row[2]}"
             for i, row in enumerate(rows, 1)]
    return RAVEN_HEADER + "".join(line + "\n" for line in lines)


def around(bad, *, good=(("1.0", "2.0", "SP"), ("3.0", "4.0", "SP"))) -> str:
    """A Raven table with a good selection (line 2), the bad one (line 3) and another good one (line 4)."""
    return raven(good[0], bad, good[1])


SHIPS = "ISOStartTime,ISOEndTime,Label\n2020-01-01T00:00:00Z,2020-01-01T00:00:05Z,NoShip\n{}\n" \
        "2020-01-01T00:00:10Z,2020-01-01T00:00:15Z,Ship\n"
PODS = "Category,NodeName,Timestamp,URI,Description,Notes,Confidence\n" \
       "resident,spinetail,,https://x/?time=2020-01-01T00%3A00%3A02.000Z,calls,tp_human_only,\n{}\n" \
       "resident,spinetail,,https://x/?time=2020-01-01T00%3A00%3A12.000Z,\"calls\",tp_human_only,\n"
PODCAST = "wav_filename\tstart_time_s\tduration_s\tlocation\n" \
          f"{WAV}\t1.0\t2.0\tlab\n{{}}\n{WAV}\t10.0\t2.0\tlab\n"
ORCAHELLO = "wav_filename\tstart_time_s\tduration_s\tconfidence\n" \
            f"{WAV}\t1.0\t2.0\t0.9\n{{}}\n{WAV}\t10.0\t2.0\t0.8\n"


def podcast_json(*regions) -> str:
    return json.dumps({"uri": WAV, "annotations": [{"start_time_s": b, "duration_s": d} for b, d in regions]})


# id: (format, file name, content, reader options,
#      lines of the events stored, rejected (line, reason), effort spans stored)
CASES = {
    # 1. Times beyond what int64 nanoseconds hold crashed the whole annotate.
    "raven-begin-1e300": ("raven", "t.txt", around(("1e300", "1e300", "SP")), {}, [2, 4],
                          [(3, f"time out of range: Begin Time (s) '1e300' {OUT_OF_RANGE}")], 0),
    "raven-end-1e10": ("raven", "t.txt", around(("1.5", "1e10", "SP")), {}, [2, 4],
                       [(3, f"time out of range: End Time (s) '1e10' {OUT_OF_RANGE}")], 0),
    "raven-offset-1e10": ("raven", "t.txt",
                          RAVEN_HEADER.rstrip("\n") + "\tBegin File\tFile Offset (s)\n"
                          f"1\tSpectrogram 1\t1\t1\t2\t100\t200\tSP\t{WAV}\t1\n"
                          f"2\tSpectrogram 1\t1\t1\t2\t100\t200\tSP\t{WAV}\t1e10\n"
                          f"3\tSpectrogram 1\t1\t3\t4\t100\t200\tSP\t{WAV}\t3\n", {}, [2, 4],
                          [(3, f"time out of range: File Offset (s) '1e10' {OUT_OF_RANGE}")], 0),
    "audacity-end-1e300": ("audacity", "t.txt", "1.0\t2.0\tSP\n1\t1e300\tSP\n3.0\t4.0\tSP\n", {}, [1, 3],
                           [(2, f"time out of range: end time '1e300' {OUT_OF_RANGE}")], 0),
    "podcast-tsv-duration-1e300": ("podcast-tsv", "train.tsv", PODCAST.format(f"{WAV}\t5.0\t1e300\tlab"), {},
                                   [2, 4], [(3, f"time out of range: duration_s '1e300' {OUT_OF_RANGE}")], 0),
    "orcahello-start-1e10": ("orcahello", "p.tsv", ORCAHELLO.format(f"{WAV}\t1e10\t2.0\t0.5"), {}, [2, 4],
                             [(3, f"time out of range: start_time_s '1e10' {OUT_OF_RANGE}")], 0),
    "podcast-json-start-1e300": ("podcast-json", "p.json", podcast_json((1, 1), (1e300, 1), (3, 1)), {}, [0, 0],
                                 [(None, f"document, annotation 1: time out of range: start 1e+300 {OUT_OF_RANGE}")],
                                 0),
    "sanctsound-year-1800": ("sanctsound", "SanctSound_CI01_01_ships.csv",
                             SHIPS.format("1800-01-01T00:00:00Z,1800-01-01T00:00:05Z,Ship"), {"site": "spinetail"},
                             [4], [(3, "time out of range: 1800-01-01T00:00:00 is outside 1900-01-01 to "
                                       "2200-01-01 UTC")], 2),
    "sanctsound-year-9999": ("sanctsound", "SanctSound_CI01_01_ships.csv",
                             SHIPS.format("9999-01-01T00:00:00Z,9999-01-01T00:00:05Z,Ship"), {"site": "spinetail"},
                             [4], [(3, "ISOStartTime '9999-01-01T00:00:00Z' is not a time (or is outside "
                                       "1900-01-01 to 2200-01-01)")], 2),
    "pods-ai-uri-year-2300": ("pods-ai", "pods.csv",
                              PODS.format("resident,spinetail,,https://x/?time=2300-01-01T00%3A00%3A07.000Z,"
                                          "calls,tp_human_only,"), {}, [2, 4],
                              [(3, "URI time '2300-01-01T00:00:07.000Z' is not a time (or is outside 1900-01-01 "
                                   "to 2200-01-01)")], 0),
    # 2. A leading quote made CSV quoting swallow the selections after it: tab formats are not quoted.
    "raven-leading-quote": ("raven", "t.txt", raven(("1", "2", '"SP'), ("3", "4", "SP"), ("5", "6", 'SP"'),
                                                    ("7", "8", "SP")), {}, [2, 3, 4, 5], [], 1),
    "podcast-tsv-leading-quote": ("podcast-tsv", "train.tsv", PODCAST.format(f"{WAV}\t5.0\t2.0\t\"lab"), {},
                                  [2, 3, 4], [], 1),
    "orcahello-leading-quote": ("orcahello", "p.tsv", ORCAHELLO.format(f"{WAV}\t5.0\t2.0\t\"0.5"), {}, [2, 4],
                                [(3, "confidence '\"0.5' is not a number")], 0),
    # ... and a quote left open in a CSV export rejects its line only, the lines after it are read.
    "sanctsound-open-quote": ("sanctsound", "SanctSound_CI01_01_ships.csv",
                              SHIPS.format('2020-01-01T00:00:05Z,2020-01-01T00:00:10Z,"Ship'), {"site": "spinetail"},
                              [4], [(3, "a quote opened on this line is not closed on it (it would swallow "
                                        "line 4)")], 2),
    "pods-ai-open-quote": ("pods-ai", "pods.csv",
                           PODS.format('resident,spinetail,,https://x/?time=2020-01-01T00%3A00%3A07.000Z,"calls,'
                                       'tp_human_only,'), {}, [2, 4],
                           [(3, "a quote opened on this line is not closed on it (it would swallow line 4)")], 0),
    # 3. Negative times, empty labels and control characters were stored.
    "raven-negative-begin": ("raven", "t.txt", around(("-1", "0.5", "SP")), {}, [2, 4],
                             [(3, "Begin Time (s) '-1' is negative")], 0),
    "raven-negative-offset": ("raven", "t.txt",
                              RAVEN_HEADER.rstrip("\n") + "\tBegin File\tFile Offset (s)\n"
                              f"1\tSpectrogram 1\t1\t1\t2\t100\t200\tSP\t{WAV}\t1\n"
                              f"2\tSpectrogram 1\t1\t1\t2\t100\t200\tSP\t{WAV}\t-3\n", {}, [2],
                              [(3, "File Offset (s) '-3' is negative")], 0),
    "audacity-negative-start": ("audacity", "t.txt", "1.0\t2.0\tSP\n-0.5\t1\tSP\n3.0\t4.0\tSP\n", {}, [1, 3],
                                [(2, "start time '-0.5' is negative")], 0),
    "podcast-tsv-negative-start": ("podcast-tsv", "train.tsv", PODCAST.format(f"{WAV}\t-1\t2.0\tlab"), {}, [2, 4],
                                   [(3, "start_time_s '-1' is negative")], 0),
    "podcast-json-negative-start": ("podcast-json", "p.json", podcast_json((1, 1), (-2, 1)), {}, [0],
                                    [(None, "document, annotation 1: start -2 is negative")], 0),
    "raven-end-before-begin": ("raven", "t.txt", around(("5", "4", "SP")), {}, [2, 4],
                               [(3, "negative duration: ends 1 s before it starts")], 0),
    "raven-not-a-number": ("raven", "t.txt", around(("abc", "2", "SP")), {}, [2, 4],
                           [(3, "Begin Time (s) 'abc' is not a number")], 0),
    "raven-nan": ("raven", "t.txt", around(("nan", "2", "SP")), {}, [2, 4],
                  [(3, "Begin Time (s) 'nan' is not a finite number")], 0),
    "raven-short-row": ("raven", "t.txt", around("9\tSpectrogram 1"), {}, [2, 4],
                        [(3, "Begin Time (s) '' is not a number")], 0),
    "raven-repeated-selection": ("raven", "t.txt",
                                 raven(("1", "2", "SP"), ("3", "4", "SP"), "2\tWaveform 1\t1\t3.5\t4\t0\t0\tSP"),
                                 {}, [2, 3], [(4, "selection 2 is repeated (line 3) with other times")], 0),
    # A label rejected where its time is known leaves its span out of the effort (2 spans, not 1).
    "raven-empty-label": ("raven", "t.txt", around(("5", "6", "")), {}, [2, 4], [(3, "empty label")], 2),
    "raven-blank-label": ("raven", "t.txt", around(("5", "6", "   ")), {}, [2, 4], [(3, "empty label")], 2),
    "raven-nul-label": ("raven", "t.txt", around(("5", "6", "S\x00P")), {}, [2, 4],
                        [(3, "label 'S\\x00P' contains the control character U+0000")], 2),
    "raven-escape-label": ("raven", "t.txt", around(("5", "6", "SP\x1b[31m")), {}, [2, 4],
                           [(3, "label 'SP\\x1b[31m' contains the control character U+001B")], 2),
    "raven-label-mapped-to-nothing": ("raven", "t.txt", around(("5", "6", "SP?")), {"label_map": {"SP?": ""}},
                                      [2, 4], [(3, "label 'SP?' maps to an empty label")], 2),
    # A review answer rejected takes its clip's effort with it: "reviewed" without the answer is no absence.
    "raven-review-answer-nul": ("raven", "review.txt",
                                "Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tBegin File\t"
                                "File Offset (s)\tReview Clip\tReviewed For\tAnnotation\n"
                                f"1\tSpectrogram 1\t1\t0\t5\t{WAV}\t0\tc1.flac\tsp\tsp\n"
                                f"2\tSpectrogram 1\t1\t0\t5\t{WAV}\t5\tc2.flac\tsp\tS\x00P\n"
                                f"3\tSpectrogram 1\t1\t0\t5\t{WAV}\t10\tc3.flac\tsp\tnone\n", {}, [2],
                                [(3, "label 'S\\x00P' contains the control character U+0000")], 2),
    "audacity-empty-label": ("audacity", "t.txt", "1.0\t2.0\tSP\n5\t6\t\n3.0\t4.0\tSP\n", {}, [1, 3],
                             [(2, "empty label")], 2),
    "audacity-nul-label": ("audacity", "t.txt", "1.0\t2.0\tSP\n5\t6\tS\x00P\n3.0\t4.0\tSP\n", {}, [1, 3],
                           [(2, "label 'S\\x00P' contains the control character U+0000")], 2),
    "audacity-band-without-label": ("audacity", "t.txt", "\\\t100\t200\n1.0\t2.0\tSP\n", {}, [2],
                                    [(1, "frequency line without a label line before it")], 0),
    "sanctsound-empty-label": ("sanctsound", "SanctSound_CI01_01_ships.csv",
                               SHIPS.format("2020-01-01T00:00:05Z,2020-01-01T00:00:10Z,"), {"site": "spinetail"},
                               [4], [(3, "empty Label")], 2),
    "pods-ai-empty-category": ("pods-ai", "pods.csv",
                               PODS.format(",spinetail,,https://x/?time=2020-01-01T00%3A00%3A07.000Z,calls,"
                                           "tp_human_only,"), {}, [2, 4], [(3, "empty label")], 0),
}


@pytest.fixture(scope="module")
def spinetail_store(tmp_path_factory, fixtures) -> str:
    folder = tmp_path_factory.mktemp("recordings")
    shutil.copy(fixtures / "annotated" / "spinetail.wav", folder / WAV)
    store = str(tmp_path_factory.mktemp("pristine") / "store")
    report = pi.ingest(pi.TimestampedFiles(str(folder), "{site}_%Y%m%d_%H%M%S.{ext}"), store, client="serial",
                       row_seconds=5)
    assert report.ingested == 1 and not report.failed, report.summary()
    return store


@pytest.fixture
def store(spinetail_store, tmp_path) -> str:
    """A copy of the small store, for one test to write to."""
    shutil.copytree(spinetail_store, tmp_path / "store")
    return str(tmp_path / "store")


def stored(store: str):
    tree = pi.open_store(store)
    return tree[STREAM].to_dataset()


@pytest.mark.parametrize("case", list(CASES))
def test_bad_rows_are_rejected_and_the_others_attached(case, store, tmp_path):
    format, name, text, options, event_lines, rejected, effort = CASES[case]
    path = tmp_path / name
    path.write_bytes(text.encode())
    report = attach(store, [path], format, options=options, recording=Recording(WAV))
    assert not report.failed, report.summary()
    [entry] = report.files
    assert [(r.line, r.reason) for r in entry.rejected] == rejected
    # Every rejection names its file, its line (JSON: its place in the document) and its reason.
    for r, (line, reason) in zip(entry.rejected, rejected):
        assert str(r) == f"{path}{f', line {line}' if line else ''}: {reason}"
    assert report.rejected_rows == len(rejected)
    ds = stored(store)
    assert sorted(ds.pam.events().line.tolist()) == event_lines
    assert len(ds.pam.effort()) == effort
    assert entry.events == len(event_lines) and entry.effort == effort


def test_annotate_command_rejects_huge_times_without_a_traceback(store, tmp_path):
    table = tmp_path / "hostile.selections.txt"
    table.write_text(raven(("1", "2", "SP"), ("1e300", "1e300", "SP"), ("1e10", "1e10", "SP"), ("3", "4", "CRER")))
    cmd = [sys.executable, "-m", "pamingest.cli", "annotate", store, str(table), "--format", "raven",
           "--recording", WAV]
    out = subprocess.run(cmd + ["--json"], capture_output=True, text=True)
    assert "Traceback" not in out.stderr and out.returncode == 1, out.stderr  # 1: done in part (--help)
    result = json.loads(out.stdout)
    assert result["rejected_rows"] == 2 and not result["failed"] and result["committed"]
    assert result["files"][0]["events"] == 2
    assert result["files"][0]["rejected"] == [
        {"line": 3, "reason": f"time out of range: Begin Time (s) '1e300' {OUT_OF_RANGE}"},
        {"line": 4, "reason": f"time out of range: Begin Time (s) '1e10' {OUT_OF_RANGE}"}]
    assert sorted(stored(store).pam.events().label.tolist()) == ["CRER", "SP"]
    # The text report names file, line and reason; the same file again still reports its bad rows.
    out = subprocess.run(cmd, capture_output=True, text=True)
    assert out.returncode == 1 and f"rejected {table}, line 3: time out of range" in out.stdout
    assert "rejected   2 rows" in out.stdout


# id: (format, file name, content, reader options, effort spans as (label, seconds), note or "")
EMPTY = {
    "raven-header-only": ("raven", "t.txt", RAVEN_HEADER, {}, [],
                          "the table has no selections and no effort_labels were given: no effort recorded"),
    "raven-header-only-labels-named": ("raven", "t.txt", RAVEN_HEADER, {"effort_labels": ["sp", "crer"]},
                                       [("sp", 19.542), ("crer", 19.542)], ""),
    "raven-header-and-blank-lines": ("raven", "t.txt", RAVEN_HEADER + "\n\t\t\n", {}, [],
                                     "no effort recorded"),
    "audacity-empty": ("audacity", "t.txt", "", {}, [], "the track has no labels and no effort_labels were given"),
    "audacity-blank-lines": ("audacity", "t.txt", "\n\n", {}, [], "no effort recorded"),
    "audacity-empty-labels-named": ("audacity", "t.txt", "", {"effort_labels": ["sp"]}, [("sp", 19.542)], ""),
}


@pytest.mark.parametrize("case", list(EMPTY))
def test_an_empty_table_claims_effort_only_for_the_labels_named(case, store, tmp_path):
    format, name, text, options, effort, note = EMPTY[case]
    path = tmp_path / name
    path.write_text(text)
    report = attach(store, [path], format, options=options, recording=Recording(WAV))
    assert not report.failed and not report.rejected_rows, report.summary()
    [entry] = report.files
    assert entry.effort == len(effort) and entry.events == 0
    assert (note in "\n".join(entry.notes)) if note else not entry.notes
    assert (note in report.summary()) if note else True
    ef = stored(store).pam.effort()
    spans = [(lab, round((e - s).total_seconds(), 3)) for lab, s, e in zip(ef.label_norm, ef.start, ef.end)]
    assert spans == effort
    labels = stored(store).pam.labels()
    # Never every label: "" (all labels) is not claimed by an empty table.
    assert "" not in ef.label_norm.tolist() and sorted(labels["label"].values.tolist()) == sorted(l for l, _ in effort)


@pytest.mark.parametrize("format, header", [("sanctsound", "ISOStartTime,ISOEndTime,Label\n"),
                                            ("pods-ai", PODS.split("\n")[0] + "\n"),
                                            ("podcast-tsv", PODCAST.split("\n")[0] + "\n"),
                                            ("orcahello", ORCAHELLO.split("\n")[0] + "\n")])
def test_header_only_tables_of_per_row_formats_record_nothing(format, header, tmp_path):
    path = tmp_path / ("SanctSound_CI01_01_ships.csv" if format == "sanctsound" else "t.txt")
    path.write_text(header)
    ann = read_annotations(path, format, options={"site": "spinetail"} if format == "sanctsound" else None)
    assert ann.events.empty and ann.effort.empty and not ann.rejected


def test_a_table_whose_rows_are_all_rejected_is_not_an_empty_table(store, tmp_path):
    # Read as header-only before: the whole recording a reviewed absence of every label.
    path = tmp_path / "t.txt"
    path.write_text(raven(("-1", "2", "SP"), ("x", "2", "SP")))
    report = attach(store, [path], "raven", recording=Recording(WAV))
    assert [r.line for r in report.files[0].rejected] == [2, 3]
    assert not report.committed and stored(store).pam.effort().empty


def test_a_300k_row_raven_table_is_read_in_bounded_memory(tmp_path):
    # Measured in a process (VmHWM, 300k rows): 643 MB before (a dict and a list of cells per row),
    # 240 MB after, of which ~84 MB is the interpreter and its imports. Here: the reader's own
    # allocations for 100k rows, well above the ~500 B/row it needs and well below the ~2 KB/row
    # it took.
    n = 100_000
    path = tmp_path / "big.txt"
    with open(path, "w") as f:
        f.write(RAVEN_HEADER)
        for i in range(1, n + 1):
            b = (i % 19000) / 1000
            f.write(f"{i}\tSpectrogram 1\t1\t{b!r}\t{b + 0.25!r}\t{1000 + i % 7}.5\t{5000 + i % 11}.25\tSP\n")
    data = path.read_bytes()
    from pamingest.annotations import get_reader
    from pamingest.annotations.base import ReadContext

    reader = get_reader("raven")
    context = ReadContext((Recording(WAV, start="2020-01-01", duration=20),))
    tracemalloc.start()
    try:
        ann = reader(data, str(path), context)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(ann.events) == n
    assert peak / n < 1000, f"{peak / n:.0f} bytes per row"


def test_annotate_command_with_a_start_that_is_not_a_time_is_an_error(store, tmp_path):
    table = tmp_path / "t.txt"
    table.write_text(raven(("1", "2", "SP")))
    for start in ("yesterday", "9999-01-01"):
        out = subprocess.run([sys.executable, "-m", "pamingest.cli", "annotate", store, str(table), "--format",
                              "raven", "--recording", "elsewhere.wav", "--start", start],
                             capture_output=True, text=True)
        assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
        assert f"pamingest: error: recording start '{start}' is not a time" in out.stderr
