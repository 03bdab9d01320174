"""Live Orcasound: from a segment's upload to the store's ``main``, and to its pseudo-labels (issue #15 item 2).

As it runs for users: a moto S3 server on 127.0.0.1 holds an Orcasound-layout
bucket that grows by one segment every 10 s, as a node uploads them (real
fixture segments, restamped into one unbroken session:
``pamingest.testing.restamped_segments``); a local Prefect server; the
``ingest/orcasound-live`` deployment (every 60 s) and ``pseudolabel/default``
(energy:killer-whale, started by the ingest flow when it committed rows)
served by ``flows/serve.py``'s own deployment objects. Along the way one
segment never arrives and the node restarts (a new session folder).

Latency of a segment = commit time of the first snapshot of ``main`` that
holds it (its file row, status ok) minus the end of its upload; scored = the
first snapshot in which every row starting in it is scored. Commit times
come from the store's history afterwards, so nothing polls the store while
it runs.

Targets: median <= 120 s in ``main`` (p95 reported), median <= 180 s
scored. Requests: one live poll is run again in this process with a
counter on the S3 client's calls, and the cost per node per day is given
for the sessions seen here and worked out for 6 h and 24 h sessions.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402

ROOT = c.BENCH_DIR.parent
sys.path.insert(0, str(ROOT / "flows"))
log = logging.getLogger("pamingest.bench")
FIXTURES = ROOT.parent / "shared" / "fixtures"
BUCKET = "audio-orcasound-net"
NODE = "rpi_orcasound_lab"
STREAM = f"orcasound/{NODE}/48000Hz_2ch_pcm16"
LABELER = "energy:killer-whale"
SEGMENT_SECONDS = 10.0
TARGET_MAIN_S, TARGET_SCORED_S = 120.0, 180.0

SERVE = """
import sys
sys.path.insert(0, {flows!r})
from prefect import serve
from serve import deployments
serve(*[d for d in deployments() if d.name in ("orcasound-live", "default")])
"""


def upload(s3, segments_for, plan, log_times, stop):
    """Put segment after segment every SEGMENT_SECONDS, as a node does; ``plan``: [(epoch, number)]."""
    t_next = time.time()
    for epoch, number in plan:
        if stop.is_set():
            return
        time.sleep(max(0.0, t_next - time.time()))
        if number is not None:
            key = f"{NODE}/hls/{epoch}/live{number:03d}.ts"
            s3.put_object(Bucket=BUCKET, Key=key, Body=segments_for(epoch, number))
            log_times[f"s3://{BUCKET}/{key}"] = time.time()
        t_next += SEGMENT_SECONDS


def first_seen(store: str) -> tuple[dict[str, float], dict[str, float]]:
    """URL -> commit time of the first snapshot of main holding it; and -> every row starting in it scored."""
    import numpy as np
    import zarr

    from pamingest.store.repo import Store

    st = Store.open(store)
    history = list(reversed(list(st.repo.ancestry(branch="main"))))  # oldest first
    in_main, scored = {}, {}
    for snap in history:
        try:
            root = zarr.open_group(st.session(snap.id).store, mode="r")
        except FileNotFoundError:  # the repository's first snapshot: no root group yet
            continue
        if STREAM not in root:
            continue
        g = root[STREAM]
        urls, status = g["file_url"][:], g["file_status"][:]
        when = snap.written_at.timestamp()
        for url, stat in zip(urls, status):
            if str(stat) == "ok":
                in_main.setdefault(str(url), when)
        statuses = [n for n in g.array_keys() if n.startswith("status__")]  # one per labeller
        if not statuses:
            continue
        rows_status = g[statuses[0]][:]
        file_index = g["file_index"][: len(rows_status)]
        for i, url in enumerate(urls):
            rows = np.flatnonzero(file_index == i)
            if len(rows) and (rows_status[rows] == 1).all():
                scored.setdefault(str(url), when)
    return in_main, scored


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def count_poll_requests(endpoint: str) -> dict:
    """S3 calls of one live poll's listing, counted on the S3 client (the segments are all stored by now)."""
    from fsspec.asyn import sync

    from pamingest.sources.base import list_source
    from pamingest.sources.orcasound import OrcasoundHLS

    source = OrcasoundHLS([NODE], live=True, storage_options={"endpoint_url": endpoint})
    fs, _ = source._fs()
    client = sync(fs.loop, fs.set_session)
    calls: dict[str, int] = {}

    def count(event_name, **_):
        op = event_name.rsplit(".", 1)[-1]
        calls[op] = calls.get(op, 0) + 1

    client.meta.events.register("before-call.s3", count)
    listed = list(list_source(source))
    return {"calls": sum(calls.values()), "by_operation": calls, "objects_listed": len(listed)}


def main() -> None:
    args = c.parse_args(__doc__.splitlines()[0], extra=lambda p: (
        p.add_argument("--minutes", type=float, default=12.0, help="how long the node uploads (default 12)"),
    ))
    # --quick: two polls' worth (about 3 min in all: the deployment polls once a minute).
    minutes = 1.5 if args.quick else args.minutes
    settle = 90 if args.quick else 150
    import boto3

    from pamingest.demo import start_s3_server, stop_processes
    from pamingest.testing import restamped_segments
    from demo import free_port, http_ok, wait_until

    import settings

    fixture = [(FIXTURES / "orcasound" / "hls" / f"live00{i}.ts").read_bytes() for i in range(3)]
    n_segments = int(minutes * 60 / SEGMENT_SECONDS)
    # Segment 15 never arrives; at two thirds the node restarts into a new session folder.
    missing, restart_at = 15, (2 * n_segments) // 3
    restamped = restamped_segments(fixture, n_segments)
    tmp = Path(tempfile.mkdtemp(prefix="pam-live-", dir=args.tmpdir))
    store = str(tmp / "store")
    s3_server, endpoint = start_s3_server()
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket=BUCKET)
    first_epoch = int(time.time())
    second_epoch = first_epoch + int(restart_at * SEGMENT_SECONDS) + 20  # the node's restart takes ~20 s
    plan = []
    for k in range(n_segments):
        if k < restart_at:
            plan.append((first_epoch, None if k == missing else k))
        else:
            plan.append((second_epoch, k - restart_at))
    segments_for = lambda epoch, n: restamped[n] if epoch == first_epoch else restamped[n]  # noqa: E731

    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(tmp / "prefect"), "PREFECT_API_URL": api,
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", settings.STORE: store, settings.S3_ENDPOINT: endpoint,
           settings.ORCASOUND_NODES: NODE, settings.LABELER: LABELER}
    env.pop(settings.SCHEDULER, None)
    procs: list[subprocess.Popen] = []
    uploaded: dict[str, float] = {}
    stop = threading.Event()
    try:
        procs.append(subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                                       "--port", str(port)], env=env, stdout=open(tmp / "server.log", "w"),
                                      stderr=subprocess.STDOUT))
        wait_until(lambda: http_ok(f"{api}/health"), "Prefect server", proc=procs[-1])
        procs.append(subprocess.Popen([sys.executable, "-c", SERVE.format(flows=str(ROOT / "flows"))], env=env,
                                      stdout=open(tmp / "serve.log", "w"), stderr=subprocess.STDOUT))
        uploader = threading.Thread(target=upload, args=(s3, segments_for, plan, uploaded, stop), daemon=True)
        t0 = time.time()
        uploader.start()
        uploader.join()
        # Let the last segments land and be scored: two polls and a labelling run.
        time.sleep(settle)
        elapsed = time.time() - t0
    finally:
        stop.set()
        stop_processes(procs)
    requests = count_poll_requests(endpoint)
    s3_server.stop()

    in_main, scored = first_seen(store)
    to_main = [in_main[u] - t for u, t in uploaded.items() if u in in_main]
    to_scored = [scored[u] - t for u, t in uploaded.items() if u in scored]
    missing_main = sorted(u for u in uploaded if u not in in_main)
    median_main = statistics.median(to_main) if to_main else None
    median_scored = statistics.median(to_scored) if to_scored else None
    polls_per_day = 86400 / 60
    per_poll = requests["calls"]
    result = {
        "benchmark": "live_latency",
        "setup": {"segments_uploaded": len(uploaded), "minutes": minutes, "segment_every_s": SEGMENT_SECONDS,
                  "poll_every_s": 60, "missing_segment": missing, "restart_after_segment": restart_at,
                  "labeler": LABELER, "elapsed_s": round(elapsed, 1)},
        "to_main_s": {"median": median_main, "p95": percentile(to_main, 0.95), "max": max(to_main, default=None),
                      "min": min(to_main, default=None), "n": len(to_main), "never": missing_main},
        "to_scored_s": {"median": median_scored, "p95": percentile(to_scored, 0.95),
                        "max": max(to_scored, default=None), "n": len(to_scored)},
        "requests_per_poll": requests,
        # Listing calls of the polls plus one GET per segment (8640 a day at 10 s).
        "requests_per_node_per_day": {
            "seen_here": round(per_poll * polls_per_day) + 8640,
            # Listing calls grow with the sessions' segments (1000 keys a page): 3 prefix listings +
            # two sessions' pages, plus one GET per new segment (8640 a day).
            "sessions_of_6h": round((3 + 2 * 3) * polls_per_day + 8640),
            "sessions_of_24h": round((3 + 2 * 9) * polls_per_day + 8640),
        },
        "targets": {"median_to_main_s": TARGET_MAIN_S, "median_to_scored_s": TARGET_SCORED_S},
        "met": {"to_main": c.verdict(median_main, TARGET_MAIN_S, higher_is_better=False),
                "to_scored": c.verdict(median_scored, TARGET_SCORED_S, higher_is_better=False)},
        "revision": c.pamingest_revision(),
        "environment": c.environment(),
    }
    c.emit(result, args)
    if not args.keep:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
