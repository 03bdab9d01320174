"""The one-command demo: the Orcasound deployment run for real, on this machine only.

    python flows/demo.py [--workdir .demo] [--keep]

1. a moto S3 server on 127.0.0.1 holding an Orcasound-layout bucket
   (the fixture HLS segments, or segments synthesised with PyAV's AAC encoder);
2. a Dask LocalCluster (its dashboard address is printed);
3. a local Prefect server (SQLite under the workdir);
4. the deployments served (flows/serve.py), then
   ``prefect deployment run ingest/orcasound --watch`` run as a user would;
   the ingest flow starts ``pseudolabel/default`` for the new rows, which the
   demo waits for;
5. a summary of the store, with the Prefect UI and Dask dashboard addresses.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check, what: str, timeout: float = 120.0, proc: subprocess.Popen | None = None) -> None:
    """Poll ``check()`` until it is true; fail early if ``proc`` died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited with {proc.returncode}")
        try:
            if check():
                return
        except Exception:  # noqa: BLE001 - not ready yet
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{what} not ready after {timeout:.0f} s")


def http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as r:
        return r.status == 200


def wait_for_flow_run(api: str, flow_name: str, timeout: float = 300.0) -> str:
    """Final state of the (first) run of ``flow_name``, through the server's REST API."""
    import json
    import urllib.request

    body = json.dumps({"flows": {"name": {"any_": [flow_name]}}, "limit": 1}).encode()
    deadline = time.monotonic() + timeout
    state = "not started"
    while time.monotonic() < deadline:
        req = urllib.request.Request(f"{api}/flow_runs/filter", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            runs = json.loads(resp.read())
        if runs:
            state = runs[0]["state_type"]
            if state in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                return state
        time.sleep(1)
    return f"{state} after {timeout:.0f} s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default=".demo")
    parser.add_argument("--fixtures", help="fixture folder (default: $PAMINGEST_FIXTURES or ../shared/fixtures)")
    parser.add_argument("--keep", action="store_true", help="keep the servers running until Ctrl-C")
    args = parser.parse_args(argv)

    import settings  # flows/settings.py: this script's folder is on sys.path
    from pamingest import orchestration
    from pamingest.demo import (ORCASOUND_NODES, fill_orcasound_bucket, find_fixtures, start_s3_server,
                                stop_processes)
    from pamingest.executor import local_cluster
    from pamingest.info import store_info

    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    store = str(workdir / "store")
    fixtures = find_fixtures(args.fixtures or os.environ.get("PAMINGEST_FIXTURES"), required=False)
    procs: list[subprocess.Popen] = []
    s3, endpoint = start_s3_server()
    # The cluster the served flow runs submit to (PAMINGEST_SCHEDULER below), built as pamingest builds its own.
    cluster = local_cluster(2)
    try:
        counts = fill_orcasound_bucket(endpoint, fixtures)
        print(f"S3 server      {endpoint}  (s3://audio-orcasound-net: "
              + ", ".join(f"{n} {k} segments" for n, k in counts.items())
              + ("" if fixtures else "; synthesised, no fixtures found") + ")")
        print(f"Dask dashboard {cluster.dashboard_link}")
        port = free_port()
        api = f"http://127.0.0.1:{port}/api"
        env = {
            **os.environ,
            "PREFECT_HOME": str(workdir / "prefect"),
            "PREFECT_API_URL": api,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_ENABLED": "true",
            settings.STORE: store,
            settings.SCHEDULER: cluster.scheduler_address,
            settings.S3_ENDPOINT: endpoint,
            settings.ORCASOUND_NODES: ",".join(ORCASOUND_NODES),
        }
        log = open(workdir / "prefect-server.log", "w")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=env, stdout=log, stderr=subprocess.STDOUT))
        wait_until(lambda: http_ok(f"{api}/health"), "Prefect server", proc=procs[-1])
        print(f"Prefect UI     http://127.0.0.1:{port}")
        serve_log = open(workdir / "serve.log", "w")
        procs.append(subprocess.Popen([sys.executable, str(HERE / "serve.py")], env=env,
                                      stdout=serve_log, stderr=subprocess.STDOUT))
        prefect = [sys.executable, "-m", "prefect"]
        wait_until(lambda: subprocess.run([*prefect, "deployment", "inspect", "ingest/orcasound"], env=env,
                                          capture_output=True).returncode == 0,
                   "served deployments", proc=procs[-1])
        print("running        prefect deployment run ingest/orcasound --watch")
        run = subprocess.run([*prefect, "deployment", "run", "ingest/orcasound", "--watch"], env=env,
                             capture_output=True, text=True)
        tail = "\n".join(run.stdout.strip().splitlines()[-3:])
        print(tail)
        if run.returncode != 0:
            print(run.stderr[-3000:], file=sys.stderr)
            print(f"the flow run failed; logs: {workdir / 'serve.log'}", file=sys.stderr)
            return 1
        # The ingest flow committed new rows, so it started pseudolabel/default: wait for that run.
        print("waiting        pseudolabel/default, started by the ingest flow for the new rows")
        state = wait_for_flow_run(api, "pseudolabel")
        print(f"pseudolabel    {state}")
        print()
        print(store_info(store).format())
        from pamingest.labeling import queue

        for q in queue(store, settings.labeler()):  # the labeller of pseudolabel/default
            print(f"labelled       {q.stream}: {q.scored} chunks scored, {q.queued} queued")
        print(f"\nopen it in a notebook: pamingest.open_store({store!r})")
        page = Path(orchestration.report_target(store))  # written by the ingest flow beside the store
        if page.is_file():
            print(f"store report   {page.as_uri()}")
        if args.keep:
            print(f"\nPrefect UI http://127.0.0.1:{port}  Dask dashboard {cluster.dashboard_link}  (Ctrl-C stops)")
            while True:
                time.sleep(3600)
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        stop_processes(procs)
        cluster.close()
        s3.stop()


if __name__ == "__main__":
    sys.exit(main())
