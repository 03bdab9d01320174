"""Commits per second one store sustains with 4 concurrent writer processes.

Each writer is a separate process committing through ``Store.update`` in a
loop for a fixed time, each commit shaped like a pseudo-label batch (status
and score chunks of 4096 rows, plus a few detection rows appended). Two
cases:

* ``disjoint``: each writer scores its own stream. Another writer's commit
  never touches what this one writes, so a writer that lost the race
  rebases onto it (Icechunk's ConflictDetector) and commits again.
* ``contended``: all writers score the same stream, the same chunk. Every
  lost race is a real conflict: the writer re-applies its write on the new
  tip (``Commit.rebuilds``).

Stores: a local folder (commits serialised by the lock file) and an S3
bucket on a moto server on 127.0.0.1 (conditional writes). A single writer
alone gives the baseline. Every snapshot a writer reports must be in the
branch's history afterwards (``all_landed``): a lost update would show here.

    python benchmarks/concurrent_writers.py [--quick] [-o results/concurrent_writers.json]
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from _common import TempDir, emit, environment, log, parse_args  # noqa: E402

ROWS = 4096
STREAMS = 4


def detections_table():
    from pamingest.store.tables import Column, Table

    return Table("detection", {"detection_chunk": Column("int64", -1), "detection_score": Column("float32", np.nan)})


def make_store(url: str, options: dict) -> None:
    from pamingest.store.repo import Store

    st = Store.open(url, options, create=True)
    session = st.writable()
    root = st.open_root(session)
    for k in range(STREAMS):
        g = root.require_group(f"s{k}")
        g.create_array("status", shape=(ROWS * 64,), chunks=(ROWS,), dtype="int8", fill_value=0)
        g.create_array("score", shape=(ROWS * 64, 1), chunks=(ROWS, 1), dtype="float32", fill_value=np.nan)
        detections_table().create(g)
    st.commit(session, "benchmark arrays")


def writer(url: str, options: dict, stream: str, chunk_of: int, seconds: float, start_at: float, give_up: float,
           queue) -> None:
    from pamingest.errors import ConcurrentWriteError
    from pamingest.store.repo import RetryPolicy, Store

    # Writers give up after `give_up` seconds without landing (a real writer waits 10 minutes).
    opened = Store.open(url, options)
    st = Store(opened.location, opened.repo, RetryPolicy(timeout=give_up))
    gave_up = 0
    rng = np.random.default_rng(os.getpid())
    table = detections_table()
    latencies, snapshots, rebases, rebuilds = [], [], 0, 0
    while time.time() < start_at:
        time.sleep(0.001)
    k = 0
    end = start_at + seconds
    while time.time() < end:
        chunk = chunk_of if chunk_of >= 0 else k % 64

        def apply(root):
            g = root[stream]
            lo = chunk * ROWS
            g["status"][lo : lo + ROWS] = 1
            g["score"][lo : lo + ROWS, 0] = rng.random(ROWS, dtype=np.float32)
            table.append(g, {"detection_chunk": [lo, lo + 1], "detection_score": [0.5, 0.7]})
            return lo

        t0 = time.perf_counter()
        try:
            commit = st.update(apply, f"score {stream} chunk {chunk}", {"writer": os.getpid()})
        except ConcurrentWriteError:
            gave_up += 1
            continue
        latencies.append(time.perf_counter() - t0)
        snapshots.append(commit.snapshot_id)
        rebases += commit.rebases
        rebuilds += commit.rebuilds
        k += 1
    queue.put({"commits": len(snapshots), "snapshots": snapshots, "latencies": latencies,
               "rebases": rebases, "rebuilds": rebuilds, "gave_up": gave_up})


def run_case(url: str, options: dict, n_writers: int, contended: bool, seconds: float) -> dict:
    from pamingest.store.repo import Store

    make_store(url, options)
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    start_at = time.time() + 3.0  # every process imported and opened the store before the clock starts
    procs = [ctx.Process(target=writer, args=(url, options, "s0" if contended else f"s{k}", 0 if contended else -1,
                                              seconds, start_at, seconds, queue)) for k in range(n_writers)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=2 * seconds + 120) for _ in procs]
    for p in procs:
        p.join(30)
    st = Store.open(url, options)
    history = {s.id for s in st.history(st.tip(), 10**6)}
    snapshots = [s for r in results for s in r["snapshots"]]
    latencies = sorted(x for r in results for x in r["latencies"])
    commits = len(snapshots)
    return {
        "writers": n_writers,
        "contended": contended,
        "seconds": seconds,
        "commits": commits,
        "commits_per_second": round(commits / seconds, 2),
        "per_writer": [r["commits"] for r in results],
        "rebases": sum(r["rebases"] for r in results),
        "rebuilds": sum(r["rebuilds"] for r in results),
        "gave_up": sum(r["gave_up"] for r in results),
        "latency_max_s": round(latencies[-1], 2) if latencies else None,
        "latency_p50_ms": round(1000 * statistics.median(latencies), 1) if latencies else None,
        "latency_p95_ms": round(1000 * latencies[int(0.95 * (len(latencies) - 1))], 1) if latencies else None,
        "all_landed": set(snapshots) <= history and len(set(snapshots)) == commits,
        "exit_codes": [p.exitcode for p in procs],
    }


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], lambda p: p.add_argument("--seconds", type=float, default=None))
    seconds = args.seconds or (5.0 if args.quick else 30.0)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    result: dict = {"benchmark": "concurrent_writers", "environment": environment(), "cases": []}
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    import boto3

    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="bench")
    try:
        with TempDir("pamingest-commits-", args.tmpdir, args.keep) as tmp:
            n = 0
            for kind in ("local", "s3"):
                for writers, contended in ((1, False), (4, False), (4, True)):
                    n += 1
                    if kind == "local":
                        url, options = str(tmp / f"store{n}"), {}
                    else:
                        url, options = f"s3://bench/store{n}", {"endpoint_url": endpoint}
                    log.info("%s store, %d writers, %s", kind, writers, "contended" if contended else "disjoint")
                    case = run_case(url, options, writers, contended, seconds)
                    case["store"] = kind
                    log.info("  %.1f commits/s, %d rebases, %d rebuilds, p50 %s ms, all landed: %s",
                             case["commits_per_second"], case["rebases"], case["rebuilds"],
                             case["latency_p50_ms"], case["all_landed"])
                    result["cases"].append(case)
    finally:
        server.stop()
    four = {(c["store"], c["contended"]): c for c in result["cases"] if c["writers"] == 4}
    result["summary"] = {
        f"{store}_{'contended' if contended else 'disjoint'}_commits_per_second": c["commits_per_second"]
        for (store, contended), c in four.items()
    }
    result["all_landed"] = all(c["all_landed"] for c in result["cases"])
    emit(result, args)


if __name__ == "__main__":
    main()
