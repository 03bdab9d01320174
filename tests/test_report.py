"""The store report (``pamingest report``): one static page, checked as text and in a real browser."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest

import pamingest as pi
from browser import coloured, pixels, visit
from pamingest.report import duty_cycle, report

SONGMETER = "songmeter/S4A03895/22000Hz_1ch_pcm16"  # 48 files of 10 s, one every 15 min
BIRDS = "files/MSD/32000Hz_1ch_pcm16"
BROKEN = "S4A03895_20190522_120000.wav"


@pytest.fixture(scope="module")
def report_store(tmp_path_factory, fixtures) -> str:
    """Real recordings with every section of the page filled: a duty-cycled deployment plus a file that
    is not audio, an annotated recording (Raven table: events and effort), and a labeller that has
    scored 20 of the deployment's 48 chunks."""
    from pamingest.annotations import Recording, attach
    from pamingest.labeling import pseudolabel

    work = tmp_path_factory.mktemp("report")
    deployment = work / "S4A03895"
    deployment.mkdir()
    for path in sorted((fixtures / "songmeter" / "S4A03895").glob("*.wav")):
        (deployment / path.name).symlink_to(path)
    (deployment / BROKEN).write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    store = str(work / "store")
    ingested = pi.ingest(pi.TimestampedFiles(str(deployment), "songmeter", name="songmeter"), store, client="serial")
    assert ingested.ingested == 48 and len(ingested.failed) == 1, ingested.summary()
    birds = work / "birds"
    birds.mkdir()
    shutil.copy(fixtures / "annotated" / "birds_10s.wav", birds / "MSD_20180427_000000.wav")
    pi.ingest(pi.TimestampedFiles(str(birds), "{site}_%Y%m%d_%H%M%S.wav"), store, client="serial", row_seconds=2)
    table = fixtures / "annotated" / "raven" / "MSD-0003_20180427_2minstart00.Table.1.selections.txt"
    attach(store, [table], "raven", recording=Recording("MSD_20180427_000000.wav"))
    scored = pseudolabel(store, "energy:humpback", client="serial", streams=[SONGMETER], max_chunks=20)
    assert scored.scored == 20
    return store


@pytest.fixture(scope="module")
def written(report_store, tmp_path_factory):
    """The page with its defaults: (summary, path)."""
    out = tmp_path_factory.mktemp("page") / "report.html"
    return report(report_store, str(out)), out


def _section(page: str, stream: str) -> str:
    start = page.index(f"<h2>{stream}</h2>")
    return page[start: page.index("</section>", start)]


def test_the_report_holds_every_section_in_one_self_contained_file(written):
    summary, out = written
    page = out.read_text()
    assert summary.streams == 2 and summary.ltsa_images == 2 and summary.cut == []
    assert summary.bytes == len(page.encode()) and summary.snapshot_id in page
    # Self-contained: nothing fetched from anywhere (images inline, no script, no stylesheet link).
    assert not re.search(r"""(src|href)\s*=\s*["'](?!data:|#)""", page), "a resource outside the page"
    assert "http://" not in page and "https://" not in page and "<script" not in page
    songmeter = _section(page, SONGMETER)
    assert "10 s every 15 min (48 spans)" in songmeter
    assert songmeter.count('<rect class="span"') == 48
    assert songmeter.count('<img alt="LTSA 2019-05-22"') == 1 and "48 bins of 15 min" in songmeter
    # The queue: 20 scored by the labeller, 28 still queued.
    assert re.search(r"<td>energy:humpback</td><td>1</td><td>48</td><td>20</td><td>28</td><td>0</td><td>0</td>",
                     songmeter), songmeter[-800:]
    birds = _section(page, BIRDS)
    assert "continuous: one span of 10.1 s" in birds
    # Labels from the Raven table: events per label, positive/negative chunks, the table's effort (10.1 s).
    for label, events, positive, negative in (("eato", 4, 3, 3), ("lowa", 1, 0, 6), ("woth", 4, 3, 3)):
        assert re.search(rf"<td>{label}</td><td>{events}</td><td>{events}</td><td>\d+</td><td>{positive}</td>"
                         rf"<td>{negative}</td><td>0</td><td>0.003</td>", birds), (label, birds[-1500:])
    assert "no labeller has run on this stream" in birds
    # The broken file was rejected when probed: named with its reason, outside any stream.
    rejected = page[page.index('<section id="rejected">'):]
    assert BROKEN in rejected and "not a readable audio file" in rejected
    history = page[page.index('<section id="history">'):]
    assert "pamingest pseudolabel energy:humpback v1: 20 chunks" in history and "pamingest annotate" in history


def test_a_large_report_is_cut_and_says_where(report_store, tmp_path):
    out = tmp_path / "small.html"
    summary = report(report_store, str(out), ltsa_images=1, max_spans=10)
    page = out.read_text()
    assert summary.ltsa_images == 1
    assert any("48 spans drawn as 960 columns" in c for c in summary.cut), summary.cut
    songmeter = _section(page, SONGMETER)
    assert '<rect class="span"' not in songmeter
    # A 10 s recording is a quarter of a column of 44 s: one column, or two where it straddles their edge.
    x = np.array([int(v) for v in re.findall(r'<rect class="span-column" x="(\d+)"', songmeter)])
    assert 48 <= len(x) <= 96 and int((np.diff(x) > 1).sum()) + 1 == 48
    assert "limit of 1 LTSA images (ltsa_images) is reached" in songmeter  # the second stream in path order
    assert "This page is bounded" in page
    # A day's LTSA from the first row of each bin: 12 rows asked, 12 bins of 1 h, the first of each read.
    report(report_store, str(tmp_path / "few.html"), ltsa_rows_per_day=12)
    assert "12 bins of 1 h, 12 of 48 rows read (the first of each bin)" in (tmp_path / "few.html").read_text()
    none = report(report_store, str(tmp_path / "none.html"), ltsa_days=0)
    assert none.ltsa_images == 0 and "LTSA images not drawn (ltsa_days=0)" in (tmp_path / "none.html").read_text()
    with pytest.raises(pi.ConfigError, match="max_spans"):
        report(report_store, str(tmp_path / "x.html"), max_spans=0)


def test_duty_cycles_in_words():
    s = 1_000_000_000
    starts = np.arange(10, dtype=np.int64) * 900 * s
    assert duty_cycle(starts, starts + 10 * s).startswith("10 s every 15 min (10 spans); 1 min 40 s of audio")
    assert duty_cycle(starts[:1], starts[:1] + 3600 * s) == "continuous: one span of 1 h"
    assert duty_cycle(starts[:0], starts[:0]) == "no audio"
    irregular = np.array([0, 100, 5000], dtype=np.int64) * s
    assert duty_cycle(irregular, irregular + 50 * s).startswith(
        "3 spans, median 50 s long, median gap 40 min 50 s, longest gap 1 h 20 min; 2 min 30 s of audio")


def test_the_command_writes_the_page_and_names_a_missing_store(report_store, tmp_path, capsys):
    from pamingest.cli import main

    out = tmp_path / "cli.html"
    assert main(["report", report_store, "-o", str(out), "--ltsa-days", "0"]) == 0
    assert "<svg" in out.read_text() and str(out) in capsys.readouterr().out
    # A pinned snapshot: the store as the deployment's ingest left it, before the birds and the labeller.
    first = next(sid for sid, _, message in pi.info.store_info(report_store, history=20).history
                 if message.startswith("pamingest run") and "48 files" in message)
    assert main(["report", report_store, "-o", str(out), "--ltsa-days", "0", "--snapshot", first, "--json"]) == 0
    assert f'"snapshot_id": "{first}"' in capsys.readouterr().out
    page = out.read_text()
    assert f"<h2>{SONGMETER}</h2>" in page and BIRDS not in page and "no labeller has run" in page
    assert main(["report", str(tmp_path / "nothing"), "-o", str(tmp_path / "n.html")]) == 2
    assert "no pamingest store" in capsys.readouterr().err


def test_the_report_in_a_browser_loads_clean_and_shows_the_timeline(chromium, written, tmp_path):
    out = written[1]

    def look(browser):
        seen = visit(browser, out.as_uri(), width=1100)
        try:
            page = seen.page
            timeline = page.locator(f'svg.timeline[data-stream="{SONGMETER}"]')
            spans = timeline.locator("rect.span").count()
            images = page.evaluate("() => [...document.querySelectorAll('figure.ltsa img')]"
                                   ".map(i => i.complete && i.naturalWidth > 0)")
            shot = timeline.screenshot(path=str(tmp_path / "timeline.png"))
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
            return seen, spans, images, shot
        finally:
            seen.page.context.close()

    seen, spans, images, shot = chromium.run(look)
    assert not seen.problems, seen.problems
    assert all(url.startswith(("file://", "data:")) for url in seen.requests), seen.requests
    assert spans == 48 and images == [True, True]
    rgb = pixels(shot)
    assert rgb.std() > 10  # not blank
    # The 48 spans are drawn: 48 separate runs of pixel columns holding the bars' colour.
    marked = coloured(rgb).any(axis=0)
    runs = int(np.count_nonzero(marked[1:] & ~marked[:-1]) + marked[0])
    assert runs == 48, runs


def test_the_ingest_flow_writes_its_report_beside_local_stores_only(report_store, s3, tmp_path):
    from pamingest.orchestration import report_markdown, report_target, store_report

    assert report_target("/data/store") == "/data/store-report.html"
    assert report_target("s3://bucket/store") is None  # each run would read rows over the network
    assert report_target("s3://bucket/store", "/srv/www/store.html") == "/srv/www/store.html"
    assert report_target("/data/store", "off") is None and report_target("/data/store", "") is None
    # After a run: written when there is no page, or the run changed the store and the page is 10 min old.
    page, changed, same = str(tmp_path / "p.html"), [{"rows": 1, "failed": []}], [{"rows": 0, "failed": []}]
    assert store_report(report_store, page, same, ltsa_days=0).out == page
    assert store_report(report_store, page, changed, ltsa_days=0) is None  # orcasound-live: every minute
    assert store_report(report_store, page, changed, ltsa_days=0, min_seconds=0).out == page
    assert store_report(report_store, page, same, ltsa_days=0, min_seconds=0) is None
    # A report asked for in a bucket is written there.
    s3.bucket("reports")
    options = {"endpoint_url": s3.endpoint, "key": "testing", "secret": "testing"}
    summary = report(report_store, "s3://reports/store.html", out_storage_options=options, ltsa_days=0)
    body = s3.client.get_object(Bucket="reports", Key="store.html")["Body"].read()
    assert len(body) == summary.bytes and body.startswith(b"<!DOCTYPE html>")
    assert "not written: RuntimeError: disk full" in report_markdown(
        [{"ingested": 0, "audio_hours": 0, "bytes_read": 0, "failed": [], "snapshot_id": "X", "streams": []}],
        RuntimeError("disk full"))
