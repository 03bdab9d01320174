"""Prefect flows for real: a Prefect server, served deployments, Dask schedulers and workers."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import pamingest as pi
from pamingest.testing import hls_segments, tone_and_noise

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "flows"))


@pytest.mark.slow
def test_demo_runs_the_deployments_through_a_prefect_server(tmp_path, fixtures, demo_store, chromium_or_none):
    """The README's first command: prefect server + served deployments + `prefect deployment run`.

    A long trial (~2 min, the longest test): run with ``-m slow``, and by hand as ``make demo``
    from a clean clone before each stop. It builds the store `pamingest demo` builds, which is the
    session's demo store, value for value. By default, the runs the demo makes are checked against
    what `pamingest demo` ingests (``test_make_demo_runs_what_pamingest_demo_ingests``), `pamingest
    demo` builds the store its flow runs build (``test_cli.py::test_demo_builds_what_the_flows_build``)
    and the served deployments register on a real Prefect server
    (``test_infra.py::test_worker_entrypoint_registers_...``)."""
    import re

    import requests

    from helpers import store_digest

    # --keep: the demo stays up after its summary, as a user looks at it; its addresses are fetched
    # then, and Ctrl-C (SIGINT) ends it.
    proc = subprocess.Popen([sys.executable, str(ROOT / "flows" / "demo.py"), "--workdir", str(tmp_path),
                             "--fixtures", str(fixtures), "--keep"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    lines = []
    status = None  # the Dask dashboard's status page, open in the browser from when it is printed
    try:
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("Dask dashboard ") and chromium_or_none is not None:
                status = chromium_or_none.run(_open_status, line.split()[-1])
            if "(Ctrl-C stops)" in line:
                ui, dashboard = re.search(r"Prefect UI (\S+)  Dask dashboard (\S+)", line).groups()
                page = requests.get(dashboard, timeout=30)
                assert page.status_code == 200 and "needs bokeh" not in page.text and "bokeh" in page.text.lower()
                page = requests.get(ui, timeout=30)
                assert page.status_code == 200 and "prefect" in page.text.lower() and "<html" in page.text.lower()
                if chromium_or_none is not None:
                    _look_at_the_demo(chromium_or_none, status, ui, lines, tmp_path)
                break
        else:
            pytest.fail("the demo did not come up within 900 s")
    finally:
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=120)
    out = subprocess.CompletedProcess(proc.args, proc.returncode, "".join(lines) + rest, err)
    assert any("(Ctrl-C stops)" in line for line in lines), out.stdout[-2000:] + out.stderr[-3000:]
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert out.stdout.count("Flow run finished successfully") == 4  # three recorder buckets, Orcasound
    assert "Prefect UI     http://127.0.0.1:" in out.stdout and "Dask dashboard http://127.0.0.1:" in out.stdout
    assert "Numcodecs" not in out.stdout + out.stderr
    # Each ingest flow run started pseudolabel/default for its new rows; together they scored every chunk.
    assert re.search(r"^pseudolabel    COMPLETED(, COMPLETED)*$", out.stdout, re.M), out.stdout[-3000:]
    assert "labelled   energy:killer-whale: 236 chunks scored in 35 streams, 0 queued" in out.stdout
    tree = pi.open_store(str(tmp_path / "store"))
    bush = tree["orcasound/rpi_bush_point/48000Hz_1ch_pcm16"].to_dataset()
    assert len(bush.pam.coverage()) == 2  # two sessions, a gap between them
    assert store_digest(tree) == store_digest(pi.open_store(demo_store))


def test_make_demo_runs_what_pamingest_demo_ingests(monkeypatch, tmp_path, fixtures):
    """`make demo` (flows/demo.py) and `pamingest demo` build one store: each `prefect deployment
    run` the demo makes names a served ingest deployment and carries the parameters of one of
    `pamingest.demo.demo_ingests`; the flow takes them and cuts them into the pieces
    `build_demo_store` ingests; the served pseudolabel/default labels with the demo's labeller."""
    import json

    import demo as make_demo
    import serve
    from ingest import ingest as ingest_flow

    from pamingest.demo import DEMO_LABELER, ORCASOUND_NODES, demo_ingests
    from pamingest.orchestration import work_partitions

    env = make_demo.served_environment(tmp_path, "http://127.0.0.1:9/api", str(tmp_path / "store"),
                                       "tcp://127.0.0.1:9", "http://127.0.0.1:9")
    for name, value in env.items():
        if name.startswith("PAMINGEST_"):
            monkeypatch.setenv(name, value)
    served = {f"{d.flow_name}/{d.name}": d for d in serve.deployments()}
    assert served["pseudolabel/default"].parameters == {"labeler": DEMO_LABELER}
    assert served["ingest/orcasound"].parameters["options"] == {"nodes": list(ORCASOUND_NODES)}
    pieces = []
    for argv in make_demo.deployment_runs(fixtures):
        assert argv[:2] == ["deployment", "run"] and argv[-1] == "--watch"
        deployment = served[argv[2]]
        assert deployment.flow_name == ingest_flow.name
        # What the server starts: the deployment's parameters, overridden by --params.
        params = ingest_flow.validate_parameters({**deployment.parameters,
                                                  **json.loads(argv[argv.index("--params") + 1])})
        pieces += [(params["source"], p) for p in work_partitions(params["source"], params["options"])]
    want = [(job.source, p) for job in demo_ingests(fixtures) for p in work_partitions(job.source, job.options)]
    assert pieces == want
    assert [kind for kind, _ in want] == ["files"] * 3 + ["orcasound"] * 2  # the recorders' buckets, two nodes
    # Without fixtures, both ingest only the (synthesised) Orcasound bucket.
    assert [argv[2] for argv in make_demo.deployment_runs(None)] == ["ingest/orcasound"]


TASK_STREAM = "Bokeh.documents[0].get_model_by_name('task_stream')"


def _open_status(browser, url: str):
    from browser import visit

    seen = visit(browser, url, width=1400, height=1000)
    seen.page.wait_for_function(f"() => window.Bokeh && Bokeh.documents.length > 0 && {TASK_STREAM} !== null")
    return seen


def _look_at_the_demo(chromium, status, ui: str, lines: list[str], tmp_path: Path) -> None:
    """The demo's printed addresses in a real browser: the Dask dashboard's status page, open since its
    address was printed, has drawn the flow runs' tasks in its task stream; the Prefect UI lists the
    ingest run; the store report the ingest flow wrote loads clean."""
    from browser import coloured, pixels, visit

    report = next(line.split()[-1] for line in lines if line.startswith("store report"))

    def look(browser):
        found = {}
        page = status.page
        page.wait_for_function(f"() => {TASK_STREAM}.renderers[0].data_source.data.name.some(n => n !== 'start')")
        names = page.evaluate(f"() => [...new Set({TASK_STREAM}.renderers[0].data_source.data.name)]")
        box = page.evaluate(f"() => {{ const r = Bokeh.index.find_one({TASK_STREAM}).el.getBoundingClientRect(); "
                            "return {x: r.x, y: r.y, width: r.width, height: r.height} }")
        found["task stream"] = (names, coloured(pixels(page.screenshot(clip=box))).mean(), list(status.problems))
        page.context.close()
        seen = visit(browser, ui, block_outside=True)
        page = seen.page
        page.get_by_role("link", name="Runs").first.click()
        page.get_by_text("orcasound", exact=False).first.wait_for(timeout=60_000)
        page.screenshot(path=str(tmp_path / "prefect-runs.png"))
        found["prefect ui"] = (page.inner_text("body"), list(seen.page_errors) + list(seen.failed_requests))
        page.context.close()
        seen = visit(browser, report)
        found["report"] = (seen.page.locator("svg.timeline rect.span").count(), list(seen.problems))
        seen.page.context.close()
        return found

    found = chromium.run(look)
    names, share, problems = found["task stream"]
    assert share > 0.01 and not problems, found["task stream"]
    text, problems = found["prefect ui"]
    assert "orcasound" in text and not problems, (text[:2000], problems)
    spans, problems = found["report"]
    assert spans >= 3 and not problems, found["report"]  # three sessions: one on one node, two on the other


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def dask_processes():
    """A `dask scheduler` and two `dask worker` processes on loopback, as on a cluster."""
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
    sched = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                              "--port", str(port), "--dashboard-address", "127.0.0.1:0"],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers = [subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1",
                                 "--no-nanny", "--name", f"w{i}", "--host", "127.0.0.1"],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for i in range(2)]
    from distributed import Client

    deadline = time.monotonic() + 60
    while True:
        try:
            with Client(address, timeout=5, set_as_default=False) as c:
                c.wait_for_workers(2, timeout=30)
                pids = c.run(os.getpid)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    yield address, pids, workers
    for p in [*workers, sched]:
        if p.poll() is None:
            p.terminate()
    for p in [*workers, sched]:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()


@pytest.fixture(scope="module")
def prefect_harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def long_session(s3):
    """Ten minutes of a synthetic mono node: 60 segments, enough tasks to kill a worker mid-run."""
    s3.bucket("audio-orcasound-net")
    for n, data in enumerate(hls_segments(tone_and_noise(600, channels=1, seed=7))):
        s3.put("audio-orcasound-net", f"rpi_sunset_bay/hls/1730419200/live{n:03d}.ts", data)
    os.environ["PAMINGEST_S3_ENDPOINT"] = s3.endpoint
    yield
    os.environ.pop("PAMINGEST_S3_ENDPOINT", None)


def test_flow_on_a_real_scheduler_survives_a_killed_worker(prefect_harness, long_session, dask_processes, tmp_path):
    from ingest import ingest as ingest_flow

    address, pids, workers = dask_processes
    options = {"nodes": ["rpi_sunset_bay"], "block_segments": 4}
    # No report pages: they are not what this test is about, and each reads the 60 rows for its LTSA.
    clean = ingest_flow(source="orcasound", options=options, store=str(tmp_path / "clean"),
                        scheduler_address=address, report="")
    assert clean["ingested"] == 60 and clean["failed"] == 0

    from distributed import Client

    killed = threading.Event()

    def kill_a_worker_when_busy():
        with Client(address, set_as_default=False) as c:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                busy = [w for w, tasks in c.processing().items() if any("write" in str(t) for t in tasks)]
                if busy:
                    victim = busy[0]
                    os.kill(c.run(os.getpid, workers=[victim])[victim], signal.SIGKILL)
                    killed.set()
                    return
                time.sleep(0.05)

    killer = threading.Thread(target=kill_a_worker_when_busy)
    killer.start()
    result = ingest_flow(source="orcasound", options=options, store=str(tmp_path / "killed"),
                         scheduler_address=address, report="")
    killer.join()
    assert killed.is_set(), "no worker was killed: the test did not test anything"
    assert result["ingested"] == 60 and result["failed"] == 0
    a = pi.open_store(str(tmp_path / "clean"))["orcasound/rpi_sunset_bay/48000Hz_1ch_pcm16"].to_dataset()
    b = pi.open_store(str(tmp_path / "killed"))["orcasound/rpi_sunset_bay/48000Hz_1ch_pcm16"].to_dataset()
    for name in ("chunk_start", "n_valid", "file_offset"):
        np.testing.assert_array_equal(np.sort(a[name].values), np.sort(b[name].values))
    order_a, order_b = np.argsort(a["chunk_start"].values), np.argsort(b["chunk_start"].values)
    np.testing.assert_array_equal(a["audio"].values[order_a], b["audio"].values[order_b])
    # A retried run changes nothing.
    again = ingest_flow(source="orcasound", options=options, store=str(tmp_path / "killed"),
                        scheduler_address=address, report="")
    assert again["ingested"] == 0


def test_flow_reports_an_artifact(prefect_harness, s3, fixtures, tmp_path):
    from prefect.client.orchestration import get_client

    from ingest import ingest as ingest_flow

    s3.bucket("audio-orcasound-net")
    for i in range(3):
        s3.put("audio-orcasound-net", f"rpi_north_sjc/hls/1730419200/live00{i}.ts",
               fixtures / "orcasound" / "hls" / f"live00{i}.ts")
    s3.put("audio-orcasound-net", "rpi_north_sjc/hls/1730419200/live003.ts", b"")
    os.environ["PAMINGEST_S3_ENDPOINT"] = s3.endpoint
    try:
        result = ingest_flow(source="orcasound", options={"nodes": ["rpi_north_sjc"]},
                             store=str(tmp_path / "s"), scheduler_address=None)
    finally:
        os.environ.pop("PAMINGEST_S3_ENDPOINT", None)
    assert result["ingested"] == 3 and result["failed"] == 1
    import asyncio

    async def read_artifact():
        async with get_client() as client:
            return await client.read_latest_artifacts()

    artifacts = [a for a in asyncio.run(read_artifact()) if a.key == "ingest-orcasound"]
    assert artifacts and "live003.ts" in artifacts[0].data and result["snapshot_id"] in artifacts[0].data
    # The store's report page, written beside the (local) store and linked from the artifact.
    page = tmp_path / "s-report.html"
    assert result["report"] == str(page) and page.is_file()
    assert f"[{page}]({page.as_uri()})" in artifacts[0].data
    assert "orcasound/rpi_north_sjc/48000Hz_2ch_pcm16" in page.read_text()
    # A run that changes nothing leaves the page as it is; one asked for no report writes none.
    os.environ["PAMINGEST_S3_ENDPOINT"] = s3.endpoint
    try:
        before = page.stat().st_mtime_ns
        again = ingest_flow(source="orcasound", options={"nodes": ["rpi_north_sjc"]}, store=str(tmp_path / "s"),
                            scheduler_address="serial")
        assert again["ingested"] == 0 and again["report"] is None and page.stat().st_mtime_ns == before
        off = ingest_flow(source="orcasound", options={"nodes": ["rpi_north_sjc"]}, store=str(tmp_path / "t"),
                          scheduler_address="serial", report="")
        assert off["ingested"] == 3 and off["report"] is None and not (tmp_path / "t-report.html").exists()
    finally:
        os.environ.pop("PAMINGEST_S3_ENDPOINT", None)


def test_ingest_flow_starts_the_pseudolabel_deployments_on_new_rows(prefect_harness, tmp_path, fixtures):
    import uuid

    from prefect.client.orchestration import get_client

    from ingest import ingest as ingest_flow
    from pseudolabel import pseudolabel as pseudolabel_flow

    folder = tmp_path / "rec"
    folder.mkdir()
    name = "67416073.210610033655.flac"
    (folder / name).write_bytes((fixtures / "soundtrap" / name).read_bytes())
    deployment_id = pseudolabel_flow.to_deployment(name="test-humpback",
                                                   parameters={"labeler": "energy:humpback"}).apply()
    store = str(tmp_path / "store")
    options = {"root": str(folder), "template": "soundtrap"}
    result = ingest_flow(source="files", options=options, store=store, scheduler_address=None)
    assert result["rows"] == 31 and len(result["pseudolabel_runs"]) == 1
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(uuid.UUID(result["pseudolabel_runs"][0]))
    assert run.deployment_id == deployment_id and run.parameters["store"] == store
    # Nothing new: no labelling run is started.
    again = ingest_flow(source="files", options=options, store=store, scheduler_address=None)
    assert again["rows"] == 0 and again["pseudolabel_runs"] == []
    # What the deployment runs: the flow, here in this process; a second run finds nothing queued.
    report = pseudolabel_flow(store=store, labeler="energy:humpback", scheduler_address="serial")
    assert report["scored"] == 31 and report["labeler"] == "energy:humpback"
    assert pseudolabel_flow(store=store, labeler="energy:humpback", scheduler_address="serial")["queued"] == 0
    ds = pi.open_store(store)["files/67416073/8000Hz_1ch_pcm16"].to_dataset()
    assert (ds.pam.scores("energy:humpback")["status"].values == 1).all()


def test_serve_declares_a_pseudolabel_deployment(monkeypatch):
    import serve

    monkeypatch.setenv("PAMINGEST_LABELER", "energy:humpback")
    names = {(d.flow_name, d.name): d for d in serve.deployments()}
    assert names[("pseudolabel", "default")].parameters == {"labeler": "energy:humpback"}


def test_settings_are_read_when_a_flow_run_asks(monkeypatch):
    """The flows read PAMINGEST_* at run time (flows/settings.py); an explicit parameter wins."""
    import settings

    for name in (settings.STORE, settings.SCHEDULER, settings.S3_ENDPOINT, settings.STORE_ENDPOINT,
                 settings.LABELER):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError, match="PAMINGEST_STORE"):
        settings.store()
    assert settings.scheduler() is None and settings.store_options() == {} and settings.s3_endpoint() is None
    assert settings.labeler() == "energy:killer-whale"
    monkeypatch.setenv(settings.STORE, "s3://bucket/store")
    monkeypatch.setenv(settings.SCHEDULER, "tcp://dask-scheduler:8786")
    monkeypatch.setenv(settings.S3_ENDPOINT, "http://minio:9000")
    monkeypatch.setenv(settings.LABELER, "energy:humpback")
    assert settings.store() == "s3://bucket/store" and settings.store("/other") == "/other"
    assert settings.scheduler() == "tcp://dask-scheduler:8786" and settings.scheduler("serial") == "serial"
    assert settings.store_options() == {"endpoint_url": "http://minio:9000"}  # the sources' server by default
    monkeypatch.setenv(settings.STORE_ENDPOINT, "http://store:9000")
    assert settings.store_options() == {"endpoint_url": "http://store:9000"}
    assert settings.s3_endpoint() == "http://minio:9000"
    assert settings.labeler() == "energy:humpback" and settings.labeler("birdnet") == "birdnet"
    monkeypatch.setenv(settings.ORCASOUND_NODES, " a, b,,")
    assert settings.listed(settings.ORCASOUND_NODES, "x") == ["a", "b"]


def test_export_flow_writes_the_snapshot_it_pinned_and_reports_it(prefect_harness, fixtures, tmp_path):
    """The export deployment's flow: default output beside the store, named by the snapshot it
    pinned; run again, the same files; an artifact naming the snapshot."""
    import asyncio
    import shutil

    from prefect.client.orchestration import get_client

    from export import export as export_flow
    from pamingest.annotations import Recording, attach

    store = birds_store(tmp_path, fixtures)
    table = fixtures / "annotated" / "raven" / "MSD-0003_20180427_2minstart00.Table.1.selections.txt"
    snapshot = attach(store, [table], "raven", recording=Recording("MSD_20180427_000000.wav")).snapshot_id
    result = export_flow(format="webdataset", options={"seconds": 2, "splits": "train=1"}, store=store)
    out = Path(f"{store}-exports/webdataset/{snapshot}")
    assert result["snapshot"] == snapshot and result["out"] == str(out) and result["exported"] == 5  # 10.1 s: five whole 2 s clips
    first = {name: (out / name).read_bytes() for name in result["files"]}
    again = export_flow(format="webdataset", options={"seconds": 2, "splits": "train=1"}, store=store)
    assert again["files"] == result["files"] and all((out / n).read_bytes() == b for n, b in first.items())

    async def read_artifact():
        async with get_client() as client:
            return await client.read_latest_artifacts()

    artifacts = [a for a in asyncio.run(read_artifact()) if a.key == "export-webdataset"]
    assert artifacts and snapshot in artifacts[0].data


def test_a_prefect_task_that_fails_after_its_commit_and_retries_ingests_nothing_twice(prefect_harness, fixtures,
                                                                                       tmp_path, monkeypatch):
    """The ingest task's first attempt commits its run and then fails (as when the flow run's process
    loses the Prefect API after the commit). This failure is injected (a wrapper that raises once
    after the real call): nothing real makes a task fail between its commit and its return. Prefect
    retries the task; the retry finds every file stored and ingests nothing; the store holds each
    file once, as a single clean run does."""
    import ingest as ingest_module

    calls = []
    real = ingest_module.orchestration.ingest_partition

    def commits_then_fails(*args, **kwargs):
        report = real(*args, **kwargs)
        calls.append(report.as_dict())
        if len(calls) == 1:
            raise ConnectionError("lost the Prefect API after the commit (injected)")
        return report

    monkeypatch.setattr(ingest_module.orchestration, "ingest_partition", commits_then_fails)
    monkeypatch.setattr(ingest_module, "ingest_piece", ingest_module.ingest_piece.with_options(retry_delay_seconds=0))
    store = str(tmp_path / "store")
    options = {"root": str(fixtures / "soundtrap"), "template": "soundtrap"}
    result = ingest_module.ingest(source="files", options=options, store=store, scheduler_address="serial")
    assert [c["ingested"] for c in calls] == [3, 0] and calls[1]["skipped"] == 3
    assert result["ingested"] == 0  # what the retried (returned) attempt did
    clean = str(tmp_path / "clean")
    pi.ingest(pi.TimestampedFiles(str(fixtures / "soundtrap"), "soundtrap"), clean, client="serial")
    path = "files/67416073/8000Hz_1ch_pcm16"
    a, b = (pi.open_store(s)[path].to_dataset() for s in (store, clean))
    assert a.sizes["chunk"] == b.sizes["chunk"] and a.sizes["file"] == b.sizes["file"] == 3
    np.testing.assert_array_equal(a["audio"].values, b["audio"].values)


def birds_store(tmp_path, fixtures) -> str:
    """A store of one real 10 s field recording (the fixture Raven table's), in rows of 2 s."""
    folder = tmp_path / "recordings"
    folder.mkdir()
    shutil.copy(fixtures / "annotated" / "birds_10s.wav", folder / "MSD_20180427_000000.wav")
    store = str(tmp_path / "store")
    pi.ingest(pi.TimestampedFiles(str(folder), "{site}_%Y%m%d_%H%M%S.wav"), store, client="serial", row_seconds=2)
    return store


def _artifact(key: str) -> str:
    import asyncio

    from prefect.client.orchestration import get_client

    async def read():
        async with get_client() as client:
            return await client.read_latest_artifacts()

    found = [a for a in asyncio.run(read()) if a.key == key]
    assert found, f"no artifact {key}"
    return found[0].data


def test_annotate_flow_attaches_the_new_tables_under_an_s3_prefix(prefect_harness, s3, fixtures, tmp_path,
                                                                 monkeypatch):
    """The annotate deployment's flow on a prefix that grows between runs: each table once, a table of
    audio not ingested yet listed as failed with its reason (and tried again), all in the artifact."""
    from annotate import annotate as annotate_flow

    store = birds_store(tmp_path, fixtures)
    table = fixtures / "annotated" / "raven" / "MSD-0003_20180427_2minstart00.Table.1.selections.txt"
    s3.bucket("tables")
    ours = s3.put("tables", "2018/MSD_20180427_000000.Table.1.selections.txt", table)
    early = s3.put("tables", "2018/MSD_20180501_000000.Table.1.selections.txt", table)
    monkeypatch.setenv("PAMINGEST_S3_ENDPOINT", s3.endpoint)
    monkeypatch.setenv("PAMINGEST_ANNOTATIONS", "s3://tables/2018/")

    first = annotate_flow(format="raven", store=store)
    assert [f["name"] for f in first["attached"]] == [ours] and first["events"] == 9
    assert [f["file"] for f in first["failed"]] == [early]
    text = _artifact("annotate-raven")
    assert ours in text and "outside the ingested audio" in text
    assert "MSD_20180501_000000" in text and "not in the store" in text and first["snapshot_id"] in text

    second = annotate_flow(format="raven", store=store)
    assert second["already"] == 1 and second["attached"] == [] and second["snapshot_id"] is None
    assert len(pi.open_store(store)["files/MSD/32000Hz_1ch_pcm16"].to_dataset().pam.events()) == 9

    # An analyst corrects the table: the flow replaces its earlier version (its default).
    s3.put("tables", "2018/MSD_20180427_000000.Table.1.selections.txt",
           table.read_bytes() + b"99\tSpectrogram 1\t1\t5\t6\t100\t200\tLOWA\n")
    third = annotate_flow(format="raven", store=store)
    assert third["replaced"] == [ours] and third["events"] == 10 and "**Replaced**" in _artifact("annotate-raven")
    assert len(pi.open_store(store)["files/MSD/32000Hz_1ch_pcm16"].to_dataset().pam.events()) == 10

    monkeypatch.delenv("PAMINGEST_ANNOTATIONS")
    idle = annotate_flow(format="raven", store=store)  # the hourly deployment where no folder was set
    assert idle["configured"] is False and "PAMINGEST_ANNOTATIONS" in _artifact("annotate-raven")


def test_sanctsound_ingest_flow_attaches_the_detection_products(prefect_harness, s3, fixtures, tmp_path, monkeypatch):
    """ingest/sanctsound with detections: the deployment's products attached after its audio, once;
    products of a site the store has no audio of are skipped and counted."""
    import soundfile as sf

    from ingest import ingest as ingest_flow

    bucket = "noaa-passive-bioacoustic"
    s3.bucket(bucket)
    data, rate = sf.read(str(fixtures / "sanctsound" / "clips" / "SanctSound_CI01_01_bocaccio_20181101T100353Z.wav"),
                         dtype="int16", always_2d=True)
    flac = tmp_path / "clip.flac"
    sf.write(str(flac), data, rate, format="FLAC", subtype="PCM_16")
    s3.put(bucket, "sanctsound/audio/ci01/sanctsound_ci01_01/audio/SanctSound_CI01_01_671379494_20181101T100353Z.flac",
           flac)
    hourly = "products/detections/ci01/sanctsound_ci01_01_bocaccio_1h/data/SanctSound_CI01_01_bocaccio_1h.csv"
    s3.put(bucket, f"sanctsound/{hourly}", b"\xef\xbb\xbfIsoStartTime,Presence\r\n2018-11-01T09:00:00Z,0\r\n"
                                          b"2018-11-01T10:00:00Z,1\r\n")
    # A deployment of the site whose audio the store does not have: its rows are skipped and counted.
    elsewhere = "products/detections/ci01/sanctsound_ci01_03_dolphins/data/SanctSound_CI01_03_dolphins.csv"
    s3.put(bucket, f"sanctsound/{elsewhere}", b"ISOStartTime,ISOEndTime,Presence\n"
                                              b"2019-09-04T06:42:04Z,2019-09-04T06:42:06Z,1\n")
    monkeypatch.setenv("PAMINGEST_S3_ENDPOINT", s3.endpoint)
    store = str(tmp_path / "store")
    options = {"root": f"s3://{bucket}/sanctsound", "sites": ["ci01"]}
    result = ingest_flow(source="sanctsound", options=options, store=store, scheduler_address="serial",
                         detections=True)
    assert result["ingested"] == 1 and result["detections_attached"] == 1
    ds = pi.open_store(store)["sanctsound/ci01_01/2000Hz_1ch_pcm16"].to_dataset()
    events = ds.pam.events()
    assert list(events["label"]) == ["bocaccio"] and events["in_audio"].all()
    assert (ds.pam.labels().sel(label="bocaccio").values == 1).all()  # 10:03:53 on: inside the positive hour
    text = _artifact("annotate-sanctsound-detections")
    assert "SanctSound_CI01_01_bocaccio_1h.csv" in text and "sanctsound/ci01_01/2000Hz_1ch_pcm16" in text
    assert "SanctSound_CI01_03_dolphins.csv`: 1 rows for CI01_03" in text  # deployment 03: no audio here
    again = ingest_flow(source="sanctsound", options=options, store=store, scheduler_address="serial",
                        detections=True)
    assert again["ingested"] == 0 and again["detections_attached"] == 0
    assert len(pi.open_store(store)["sanctsound/ci01_01/2000Hz_1ch_pcm16"].to_dataset().pam.events()) == 1


def test_hmd_deployment_flow_writes_the_spectra_and_an_artifact(prefect_harness, fixtures, tmp_path):
    """The ``hmd/soundscape`` deployment's flow on a real SoundTrap recording: one spectrum per whole minute,
    in the store, and an artifact naming the snapshot."""
    from hmd import hmd as hmd_flow

    store = str(tmp_path / "store")
    folder = tmp_path / "st"
    folder.mkdir()
    name = "67416073.210610033655.flac"
    shutil.copy(fixtures / "soundtrap" / name, folder / name)
    report = pi.ingest(pi.TimestampedFiles(str(folder), "soundtrap"), store, client="serial")
    stream = report.streams[0]
    result = hmd_flow(stream=stream, store=store, scheduler_address="serial")
    ds = pi.open_store(store)[f"{stream}/hmd"].to_dataset()
    # 5 min from 03:36:55: six minute bins touched, each with audio
    assert result["minutes"] == ds.sizes["time"] == result["with_audio"] == 6
    assert np.isfinite(ds["psd"].values).all()  # every minute had audio: every band has a level

    import asyncio

    from prefect.client.orchestration import get_client

    async def read_artifact():
        async with get_client() as client:
            return await client.read_latest_artifacts()

    artifacts = [a for a in asyncio.run(read_artifact()) if a.key == "hmd"]
    assert artifacts and result["snapshot_id"] in artifacts[0].data and stream in artifacts[0].data


def test_cornell_ingest_flow_reads_the_zip_by_ranges_and_attaches_the_table(prefect_harness, fixtures, tmp_path,
                                                                            monkeypatch):
    """ingest/cornell as deployed (detections on), against a local server answering as Zenodo does: the
    collection's members ingested, annotations.csv attached once, an artifact naming it."""
    from ingest import ingest as ingest_flow
    from zenodo_server import ZenodoServer, zip_of

    server = ZenodoServer()
    try:
        audio = sorted((fixtures / "soundtrap").glob("*.flac"))
        members = {"SSW_001_20170225_010000Z.flac": audio[0], "SSW_004_20170225_050004Z.flac": audio[1]}
        table = (fixtures / "annotated" / "cornell" / "ssw.csv").read_bytes()
        server.publish("7079380", {"annotations.csv": table, "soundscape_data.zip": zip_of(members)})
        monkeypatch.setenv("PAMINGEST_S3_ENDPOINT", "http://127.0.0.1:9")  # ignored: Zenodo is HTTP, not S3
        store = str(tmp_path / "store")
        options = {"collection": "ssw", "api": server.api}
        result = ingest_flow(source="cornell", options=options, store=store, scheduler_address="serial",
                             detections=True)
        assert result["ingested"] == 2 and result["detections_attached"] == 1
        ds = pi.open_store(store)["cornell/SSW/8000Hz_1ch_pcm16"].to_dataset()
        assert {"cangoo", "blujay"} <= set(ds.pam.events()["label_norm"])
        assert "annotations.csv" in _artifact("annotate-cornell-detections")
        again = ingest_flow(source="cornell", options=options, store=store, scheduler_address="serial",
                            detections=True)
        assert again["ingested"] == 0 and again["detections_attached"] == 0
    finally:
        server.stop()


def test_barkley_canyon_ingest_flow_reads_the_token_from_settings_never_a_parameter(prefect_harness, fixtures,
                                                                                     tmp_path, monkeypatch):
    """ingest/barkley-canyon as deployed (options: location) with a range, against a local server answering
    as ONC's archivefile service: the token comes from PAMINGEST_ONC_TOKEN inside the task, reaches every
    request, and is in no task run's name or parameters, nor in the store."""
    import asyncio

    from prefect.client.orchestration import get_client

    from ingest import ingest as ingest_flow
    from onc_server import OncServer, register_onc_source

    if register_onc_source(tmp_path / "site"):
        monkeypatch.syspath_prepend(str(tmp_path / "site"))
    token = "flow-onc-token-93be1f"
    server = OncServer(token)
    try:
        audio = sorted((fixtures / "soundtrap").glob("*.flac"))
        server.publish("BACAX", "HYDROPHONE", {"ICLISTENHF1251_20140101T000000.000Z.flac": audio[0].read_bytes(),
                                               "ICLISTENHF1251_20140101T000500.000Z.flac": audio[1].read_bytes()})
        monkeypatch.setenv("PAMINGEST_ONC_TOKEN", token)
        store = str(tmp_path / "store")
        options = {"location": "BACAX", "api": server.api, "start": "2014-01-01", "end": "2014-01-02"}
        result = ingest_flow(source="onc", options=options, store=store, scheduler_address="serial", report="")
        assert result["ingested"] == 2 and not result["failed"]
        assert all(q.get("token") == token for _, _, q, _ in server.requests)
        assert pi.streams(pi.open_store(store)) == ["onc/BACAX/8000Hz_1ch_pcm16"]

        async def task_runs():
            async with get_client() as client:
                return await client.read_task_runs()

        runs = [r for r in asyncio.run(task_runs()) if r.name.startswith("ingest onc")]
        assert runs and all(token not in f"{r.name} {r.task_inputs}" for r in runs)
        assert token.encode() not in b"".join(p.read_bytes() for p in (tmp_path / "store").rglob("*") if p.is_file())
    finally:
        server.stop()
