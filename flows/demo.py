"""The one-command demo: the deployments run for real through a Prefect server, on this machine only.

    python flows/demo.py [--workdir .demo] [--keep]

1. a moto S3 server on 127.0.0.1 holding the demo's buckets (``pamingest.demo``:
   three recorder deployments and an Orcasound HLS bucket, from the fixtures);
2. a Dask LocalCluster (its dashboard address is printed);
3. a local Prefect server (SQLite under the workdir);
4. the deployments served (flows/serve.py), then for each of the demo's
   ingests ``prefect deployment run ingest/<deployment> --params ... --watch``
   run as a user would; each ingest flow run that commits new rows starts
   ``pseudolabel/default``, and the demo waits for those runs;
5. a summary of the store, with the Prefect UI and Dask dashboard addresses.

The store is the one ``pamingest demo`` builds without Prefect: both take
their buckets, ingests and labeller from ``pamingest.demo``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
import warnings
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


TERMINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")


def wait_for_flow_runs(api: str, flow_name: str, timeout: float = 300.0) -> list[str]:
    """Final states of every run of ``flow_name`` (through the server's REST API) once none is left
    to finish (none at all: nothing to wait for); the states so far, and "not finished after N s",
    when ``timeout`` passes first."""
    body = json.dumps({"flows": {"name": {"any_": [flow_name]}}}).encode()
    deadline = time.monotonic() + timeout
    states: list[str] = []
    while time.monotonic() < deadline:
        req = urllib.request.Request(f"{api}/flow_runs/filter", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            states = [run["state_type"] for run in json.loads(resp.read())]
        if all(state in TERMINAL for state in states):
            return states
        time.sleep(1)
    return [*states, f"not finished after {timeout:.0f} s"]


def deployment_runs(fixtures: Path | None) -> list[list[str]]:
    """The ``prefect deployment run`` arguments of the demo's ingests (``pamingest.demo.demo_ingests``)."""
    from pamingest.demo import demo_ingests

    return [["deployment", "run", f"ingest/{job.deployment}", "--params", json.dumps(job.params()), "--watch"]
            for job in demo_ingests(fixtures)]


def served_environment(workdir: Path, api: str, store: str, scheduler: str, endpoint: str) -> dict[str, str]:
    """The environment of the Prefect server, the served deployments and the ``prefect`` commands."""
    import settings  # flows/settings.py: this script's folder is on sys.path

    from pamingest.demo import DEMO_LABELER, ORCASOUND_NODES

    return {
        **os.environ,
        "PREFECT_HOME": str(workdir / "prefect"),
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "true",
        settings.STORE: store,
        settings.SCHEDULER: scheduler,
        settings.S3_ENDPOINT: endpoint,
        settings.LABELER: DEMO_LABELER,  # pseudolabel/default: the labeller pamingest demo runs
        settings.ORCASOUND_NODES: ",".join(ORCASOUND_NODES),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default=".demo")
    parser.add_argument("--fixtures", help="fixture folder (default: $PAMINGEST_FIXTURES or ../shared/fixtures)")
    parser.add_argument("--keep", action="store_true", help="keep the servers running until Ctrl-C")
    args = parser.parse_args(argv)

    from pamingest import orchestration
    from pamingest.cli import QUIET_WARNINGS
    from pamingest.demo import demo_queue_line, fill_demo_buckets, find_fixtures, start_s3_server, stop_processes
    from pamingest.executor import local_cluster
    from pamingest.info import store_info

    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    store = str(workdir / "store")
    fixtures = find_fixtures(args.fixtures or os.environ.get("PAMINGEST_FIXTURES"), required=False)
    procs: list[subprocess.Popen] = []
    s3, endpoint = start_s3_server()
    # zarr warns on every open of a PCodec stream (SanctSound's 32-bit clip) that numcodecs is outside
    # the Zarr v3 spec: not in this output, nor in that of the cluster's workers (they start with this
    # environment), as the CLI does.
    for text in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=re.escape(text))
    os.environ["PYTHONWARNINGS"] = ",".join(
        [w for w in [os.environ.get("PYTHONWARNINGS", "")] if w] + [f"ignore:{text}" for text in QUIET_WARNINGS])
    # The cluster the served flow runs submit to (PAMINGEST_SCHEDULER below), built as pamingest builds its own.
    cluster = local_cluster(2)
    try:
        counts = fill_demo_buckets(endpoint, fixtures)
        print(f"S3 server      {endpoint}  ("
              + ", ".join(f"s3://{b}: {n} objects" for b, n in counts.items())
              + ("" if fixtures else "; no fixtures found: Orcasound segments synthesised") + ")")
        print(f"Dask dashboard {cluster.dashboard_link}")
        port = free_port()
        api = f"http://127.0.0.1:{port}/api"
        env = served_environment(workdir, api, store, cluster.scheduler_address, endpoint)
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
        runs = deployment_runs(fixtures)
        for name in sorted({"pseudolabel/default", *(command[2] for command in runs)}):
            wait_until(lambda name=name: subprocess.run([*prefect, "deployment", "inspect", name], env=env,
                                              capture_output=True).returncode == 0,
                       f"served deployment {name}", proc=procs[-1])
        # One after the other, as each ingest's pieces already spread over the whole cluster.
        for command in runs:
            print(f"running        prefect {' '.join(command[:3])} --params '{command[4]}' --watch")
            run = subprocess.run([*prefect, *command], env=env, capture_output=True, text=True)
            print("\n".join(run.stdout.strip().splitlines()[-1:]))
            if run.returncode != 0:
                print(run.stderr[-3000:], file=sys.stderr)
                print(f"the flow run failed; logs: {workdir / 'serve.log'}", file=sys.stderr)
                return 1
        # Each ingest flow run that committed new rows has started pseudolabel/default (before it
        # finished): wait for those runs.
        print("waiting        pseudolabel/default, started by the ingest flow runs for their new rows")
        states = wait_for_flow_runs(api, "pseudolabel")
        print(f"pseudolabel    {', '.join(states) or 'no run (no new rows)'}")
        print()
        print(store_info(store).format())
        print(demo_queue_line(store))
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
