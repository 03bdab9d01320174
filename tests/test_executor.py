"""The one LocalCluster factory: real clusters, the workers' environment as the workers see it."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

from pamingest.executor import NANNY_PRE_SPAWN_ENVIRON, executor_for, local_cluster

ROOT = Path(__file__).resolve().parents[1]


def _worker_env(client, name: str) -> set:
    return set(client.run(lambda: os.environ.get(name)).values())


def test_local_cluster_workers_start_without_dasks_malloc_trim(monkeypatch):
    from distributed import Client

    # What a cluster started earlier in this process with Dask's defaults leaves behind
    # (its nannies copy their pre-spawn variables into os.environ): the factory's workers
    # must not inherit it.
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")
    with local_cluster(2) as cluster, Client(cluster, set_as_default=False) as c:
        c.wait_for_workers(2)
        assert _worker_env(c, "MALLOC_TRIM_THRESHOLD_") == {None}
        assert _worker_env(c, "OMP_NUM_THREADS") == {"1"}  # Dask's other pre-spawn settings are kept
        assert set(c.nthreads().values()) == {1}
        assert os.getpid() not in c.run(os.getpid).values()  # processes, not threads
        assert cluster.dashboard_link.startswith("http://127.0.0.1:")
        # The address `make demo` prints serves the dashboard itself (bokeh is in the test extra the
        # demo installs), not distributed's "Dask needs bokeh>=3.1.0 for the dashboard".
        import requests

        page = requests.get(cluster.dashboard_link, timeout=30)
        assert page.status_code == 200 and "needs bokeh" not in page.text, page.text[:300]
        assert "bokeh" in page.text.lower() and "<html" in page.text.lower(), page.text[:300]
    with local_cluster(1, dask_malloc_trim=True) as cluster, Client(cluster, set_as_default=False) as c:
        assert _worker_env(c, "MALLOC_TRIM_THRESHOLD_") == {"65536"}


def test_a_value_someone_chose_is_kept(monkeypatch):
    from distributed import Client

    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "1048576")
    with local_cluster(1) as cluster, Client(cluster, set_as_default=False) as c:
        assert _worker_env(c, "MALLOC_TRIM_THRESHOLD_") == {"1048576"}


def test_executor_for_none_runs_on_the_factorys_cluster(monkeypatch):
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")
    with executor_for(None, n_workers=1) as ex:
        assert ex.n_threads == 1 and ex.dashboard_link.startswith("http://127.0.0.1:")
        assert _worker_env(ex.client, "MALLOC_TRIM_THRESHOLD_") == {None}


def test_the_factory_removes_what_dask_sets():
    assert NANNY_PRE_SPAWN_ENVIRON == {"MALLOC_TRIM_THRESHOLD_": None}
    import dask
    import distributed  # noqa: F401  (Dask's nanny defaults)

    assert "MALLOC_TRIM_THRESHOLD_" in dask.config.get("distributed.nanny.pre-spawn-environ")


@pytest.mark.parametrize("folder", ["pamingest", "flows", "benchmarks"])
def test_no_other_code_builds_a_local_cluster(folder):
    """Every LocalCluster of the library, the flows, the demo and the benchmarks comes from the factory."""
    offenders = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        if path == ROOT / "pamingest" / "executor.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                fn = node.func
                name = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", None)
                if name == "LocalCluster":
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, f"LocalCluster built outside pamingest.executor.local_cluster: {offenders}"


def test_executor_choice():
    from pamingest.executor import LOCAL_WORK_BYTES, choose

    assert choose(None, None, LOCAL_WORK_BYTES - 1) == "threads"
    assert choose(None, None, LOCAL_WORK_BYTES) == "cluster"
    assert choose(None, 2, 1000) == "cluster"  # --workers asks for a cluster whatever the size
    assert choose(None, None, None) == "cluster"  # size unknown (pseudolabel): a cluster as before
    assert choose("serial", None, 1) == "serial" and choose("threads", 4, 10**12) == "threads"
    assert choose("tcp://127.0.0.1:8786", None, 1) == "dask"


def test_thread_executor_runs_every_item_at_most_limit_at_once():
    import threading
    import time

    from pamingest.executor import ThreadExecutor

    running, peak, lock = [0], [0], threading.Lock()

    def task(item):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.01)
        with lock:
            running[0] -= 1
        if item == 7:
            raise ValueError("item 7")
        return item * 2

    ex = ThreadExecutor(4)
    try:
        got = {}
        for item, future in ex.map_unordered(task, range(20), limit=3):
            got[item] = future.exception() or future.result()
    finally:
        ex.close()
    assert sorted(got) == list(range(20)) and peak[0] <= 3
    assert got[3] == 6 and isinstance(got[7], ValueError)


def test_a_small_job_without_a_client_runs_in_threads_and_stores_what_serial_stores(fixtures, tmp_path):
    import numpy as np

    import pamingest as pi

    src = pi.TimestampedFiles(str(fixtures / "soundtrap"), "soundtrap")
    auto = pi.ingest(src, str(tmp_path / "auto"))
    assert auto.dashboard_link is None and auto.ingested == 3 and not auto.failed  # no cluster started
    pi.ingest(src, str(tmp_path / "serial"), client="serial")
    (stream,) = pi.streams(pi.open_store(str(tmp_path / "auto")))
    a = pi.open_store(str(tmp_path / "auto"))[stream].to_dataset()
    b = pi.open_store(str(tmp_path / "serial"))[stream].to_dataset()
    for name in ("audio", "chunk_start", "n_valid", "file_offset"):
        np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)


def test_the_dashboard_address_shows_an_ingest_in_its_task_stream(chromium, fixtures, tmp_path):
    """The Dask dashboard pamingest prints, opened in Chromium before an ingest on a LocalCluster: during
    the run its status page's task stream (a bokeh plot) receives the run's tasks and draws them."""
    import pamingest as pi
    from browser import coloured, pixels, visit

    ready = ("() => window.Bokeh && Bokeh.documents.length > 0"
             " && Bokeh.documents[0].get_model_by_name('task_stream') !== null")
    # The task stream's data as the browser holds it (sent over bokeh's websocket), and where it is drawn.
    names = ("() => [...new Set(Bokeh.documents[0].get_model_by_name('task_stream')"
             ".renderers[0].data_source.data.name)]")
    box = ("() => { const r = Bokeh.index.find_one(Bokeh.documents[0].get_model_by_name('task_stream'))"
           ".el.getBoundingClientRect(); return {x: r.x, y: r.y, width: r.width, height: r.height} }")

    def open_status(browser, url):
        seen = visit(browser, url, width=1400, height=1000)
        seen.page.wait_for_function(ready, timeout=60_000)
        return seen

    def task_stream(browser, seen):
        page = seen.page
        # The stream is sent in batches every 100 ms: wait for the writes, the run's last tasks.
        page.wait_for_function(f"() => ({names})().some(n => n.startsWith('write'))", timeout=60_000)
        return list(seen.problems), page.evaluate(names), page.screenshot(clip=page.evaluate(box))

    with local_cluster(1) as cluster:
        seen = chromium.run(open_status, cluster.dashboard_link)
        try:
            report = pi.ingest(pi.TimestampedFiles(str(fixtures / "soundtrap"), "soundtrap"), str(tmp_path / "store"),
                               client=cluster.scheduler_address)
            assert report.ingested == 3 and report.dashboard_link == cluster.dashboard_link  # what the CLI prints
            problems, tasks, shot = chromium.run(task_stream, seen)
        finally:
            chromium.run(lambda browser: seen.page.context.close())
    assert not problems, problems
    assert {"probe", "write"} <= {n.split("_")[0] for n in tasks}, tasks
    # Drawn, not only received: the plot's area holds the tasks' coloured bars.
    share = coloured(pixels(shot)).mean()
    assert share > 0.01, share
