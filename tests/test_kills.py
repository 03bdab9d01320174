"""SIGKILLs of a Dask worker, the scheduler and the ingest command mid-run (issue #16 item 3).

A real cluster of separate processes, each in a process group of its own: a
``dask scheduler`` and two ``dask worker``s with their nannies (as the image
runs them, infra/), one thread each. ``pamingest ingest files --scheduler``
ingests eight SoundTrap recordings (40 min at 8 kHz, 2 s rows: 16 write
tasks, ~1.5 s on the cluster) while one process is SIGKILLed. The targets:

- ``worker``: the worker process (what the kernel's OOM killer does); its
  nanny starts a new one, and Dask runs the worker's tasks again elsewhere,
  so a task may write its rows twice (into two forks; only the fork the
  attempt that finished returns is merged);
- ``worker-host`` (slow form only): the ``dask worker`` process group, nanny
  and worker, as when a machine or pod goes; a new one is started after;
- ``scheduler``: the client loses its cluster, and the workers close; a
  fresh cluster is started after;
- ``client``: the ingest command; the cluster survives.

What must hold after each kill: the command completes (exit 0) or stops with
one clear line (exit 2, no traceback; the client kill aside), main holds the
whole run or none of it, a re-run completes, and the store ends identical,
row by row (``helpers.tree_digest``), to a clean run's: no row lost or doubled.

The quick tests kill each target once while the run's write tasks run, and
make Dask give a task up (KilledWorker): ~20 s with the cluster's start on an
idle 2-core machine, ~40 s on a busy one. ``pytest -m slow tests/test_kills.py``
kills 20 times, five per target, at seeded random moments of the run's time on
the cluster (~2-2.5 min).

What they found: a lost scheduler, and a task whose workers all died, ended
the command on distributed's FutureCancelledError or KilledWorker with a
traceback (and, for the scheduler, distributed.client's own traceback logged
at ERROR despite the quiet CLI). A lost scheduler now stops the run with
``ClusterError``, one line, exit 2 (pamingest.executor); a task given up
(KilledWorker) fails its recordings with the reason and the run goes on, as
for any bad recording (``ingest._killed_workers``): one recording that
crashes every decoder must not block its folder for good. Worker and client
kills lost or doubled nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import pamingest as pi

from helpers import tree_digest

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 120  # seconds any subprocess is waited for
N_FILES = 8


def _env() -> dict:
    # Dask's nanny copies MALLOC_TRIM_THRESHOLD_ into the environment of the process that starts
    # one (an earlier test's LocalCluster): none of it for these processes.
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _live_in_groups(pgids: set[int]) -> list[str]:
    """Processes of these process groups still alive (zombies waiting to be reaped are not)."""
    alive = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # state, ppid, pgrp, ...
        if int(fields[2]) in pgids and fields[0] != "Z":
            alive.append(f"{entry.name} {stat[:stat.rindex(')') + 1]}")
    return alive


class Cluster:
    """A ``dask scheduler`` and ``dask worker``s (nanny + worker) on loopback, each its own process group."""

    def __init__(self, logs: Path, n_workers: int = 2, env: dict | None = None) -> None:
        self.logs, self.n_workers, self.env = logs, n_workers, {**_env(), **(env or {})}
        self.procs: list[subprocess.Popen] = []  # every process group ever started
        self.scheduler: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []
        self.address = ""
        self.starts = 0

    def _spawn(self, args: list[str], name: str) -> subprocess.Popen:
        log = open(self.logs / f"{self.starts:02d}-{name}.log", "wb")
        proc = subprocess.Popen([sys.executable, "-m", *args], env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        log.close()
        self.procs.append(proc)
        return proc

    def _spawn_worker(self) -> subprocess.Popen:
        return self._spawn(["distributed.cli.dask_worker", self.address, "--nthreads", "1", "--nworkers", "1",
                            "--host", "127.0.0.1", "--no-dashboard"], f"worker-{len(self.procs)}")

    def start(self) -> None:
        self.starts += 1
        self.address = f"tcp://127.0.0.1:{_free_port()}"
        self.scheduler = self._spawn(["distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port",
                                      self.address.rsplit(":", 1)[1], "--no-dashboard"], "scheduler")
        self.workers = [self._spawn_worker() for _ in range(self.n_workers)]
        self.wait_for_workers()

    def client(self, timeout: float = 10):
        from distributed import Client

        return Client(self.address, timeout=timeout, set_as_default=False)

    def wait_for_workers(self) -> None:
        deadline = time.monotonic() + 60
        while True:
            try:
                with self.client(5) as c:
                    c.wait_for_workers(self.n_workers, timeout=max(1, deadline - time.monotonic()))
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def worker_pids(self) -> dict[str, int]:
        """Worker address -> pid of its worker process (a child of its nanny)."""
        with self.client() as c:
            return c.run(os.getpid)

    def ensure(self) -> None:
        """Serve again as at the start: a new cluster if the scheduler is gone, else new ``dask worker``s
        for those killed (a killed worker *process* is restarted by its nanny)."""
        if self.scheduler.poll() is not None:
            self.stop()
            self.start()
            return
        self.workers = [w for w in self.workers if w.poll() is None]
        while len(self.workers) < self.n_workers:
            self.workers.append(self._spawn_worker())
        self.wait_for_workers()

    def kill(self, target: str, cli: subprocess.Popen, worker: tuple[str, int] | None = None) -> str:
        """SIGKILL ``target`` (the ingest command ``cli``, or a ``worker`` given as (address, pid)):
        what was killed."""
        if target == "client":
            os.kill(cli.pid, signal.SIGKILL)
            return f"client {cli.pid}"
        if target == "scheduler":
            os.kill(self.scheduler.pid, signal.SIGKILL)
            return f"scheduler {self.scheduler.pid}"
        address, pid = worker
        if target == "worker":
            os.kill(pid, signal.SIGKILL)
            return f"worker process {pid} ({address})"
        assert target == "worker-host", target
        group = os.getpgid(pid)
        os.killpg(group, signal.SIGKILL)
        return f"dask worker group {group} ({address})"

    def stop(self) -> None:
        """SIGKILL every process group still led by its process (a group whose leader was killed
        and reaped was killed whole: its number may belong to another process by now)."""
        groups = [proc.pid for proc in self.procs if proc.poll() is None]
        for group in groups:
            try:
                os.killpg(group, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for proc in self.procs:
            proc.wait(timeout=30)
        self.procs = []
        deadline = time.monotonic() + 20
        while (alive := _live_in_groups(set(groups))) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive, f"processes of the cluster survived SIGKILL: {alive}"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    logs = tmp_path_factory.mktemp("dask-logs")
    c = Cluster(logs)
    try:
        c.start()
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def recordings(tmp_path_factory, fixtures) -> Path:
    """Forty minutes of SoundTrap recordings: the three fixture files linked under eight consecutive names."""
    import datetime as dt

    folder = tmp_path_factory.mktemp("recordings")
    files = sorted((fixtures / "soundtrap").glob("*.flac"))
    first = dt.datetime(2021, 6, 10, 3, 36, 55)
    for k in range(N_FILES):
        when = first + dt.timedelta(minutes=5 * k)
        (folder / f"67416073.{when:%y%m%d%H%M%S}.flac").symlink_to(files[k % len(files)])
    return folder


@pytest.fixture(scope="module")
def clean_store(recordings, tmp_path_factory) -> str:
    """The store of a run never killed (in this process, serial)."""
    store = str(tmp_path_factory.mktemp("clean") / "store")
    report = pi.ingest(pi.TimestampedFiles(str(recordings), "soundtrap"), store, client="serial", row_seconds=2)
    assert report.ingested == N_FILES and not report.failed, report.summary()
    return store


@pytest.fixture(scope="module")
def clean(clean_store) -> dict:
    """The clean run's store as ``tree_digest`` gives it."""
    return tree_digest(pi.open_store(clean_store))


_commands: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def no_command_left_running():
    """A test that fails mid-run leaves no ingest command behind."""
    yield
    while _commands:
        proc = _commands.pop()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def start_ingest(recordings: Path, store: str, address: str, *extra: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "pamingest.cli", "ingest", "files", str(recordings),
                             "--template", "soundtrap", "--store", store, "--scheduler", address,
                             "--row-seconds", "2", "--no-progress", "--json", *extra],
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    _commands.append(proc)
    return proc


def finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"the ingest command hung for {TIMEOUT} s:\n{err[-3000:]}")
    return proc.returncode, out, err


def ingest(recordings: Path, store: str, address: str) -> dict:
    code, out, err = finish(start_ingest(recordings, store, address))
    assert code == 0, err[-3000:]
    return json.loads(out)


def assert_clear_exit(code: int, err: str, what: str) -> None:
    """Done (0), or stopped with one line saying why (2): no traceback, nothing else on stderr."""
    assert code in (0, 2), f"exit {code} after {what}:\n{err[-3000:]}"
    lines = err.strip().splitlines()
    if code == 2:
        assert len(lines) == 1 and lines[0].startswith("pamingest: error: "), f"after {what}:\n{err[-3000:]}"
    assert "Traceback" not in err, f"after {what}:\n{err[-3000:]}"


def main_state(store: str, want: dict) -> str:
    """``whole`` (main equals the clean run's store) or ``none`` (no file nor row in it); fails on
    anything else: part of a run, or rows lost or doubled."""
    try:
        got = tree_digest(pi.open_store(store))
    except (FileNotFoundError, KeyError, pi.PamIngestError):
        return "none"  # killed before the store existed
    if got == want:
        return "whole"
    held = {key: value for key, value in got.items() if key[1] in ("audio", "file_url") and len(value)}
    assert not held, f"main holds part of a run, or a run with rows lost or doubled: {differences(want, got)}"
    return "none"


def differences(want: dict, got: dict) -> list:
    keys = sorted(set(want) | set(got))
    return [(key, "missing" if key not in got else "extra" if key not in want else "differs")
            for key in keys if want.get(key) != got.get(key)]


def assert_same_store(want: dict, store: str, what: str) -> None:
    got = tree_digest(pi.open_store(store))
    assert got == want, f"the store differs from a clean run's after {what}: {differences(want, got)}"


def wait_for_tasks(cluster: Cluster, cli: subprocess.Popen, prefix: str = "") -> dict[str, list[str]]:
    """Once tasks of the run whose keys start with ``prefix`` run: worker address -> those tasks."""
    deadline = time.monotonic() + 60
    with cluster.client() as c:
        while time.monotonic() < deadline:
            busy = {w: [str(k) for k in keys if str(k).startswith(prefix)] for w, keys in c.processing().items()}
            busy = {w: keys for w, keys in busy.items() if keys}
            if busy:
                return busy
            assert cli.poll() is None, f"the run ended before a task {prefix}* was seen: {cli.communicate()}"
            time.sleep(0.02)
    pytest.fail(f"no task {prefix}* ran within 60 s")


def kill_while_writing(cluster: Cluster, target: str, cli: subprocess.Popen) -> str:
    """Wait for the run's write tasks, then SIGKILL ``target`` (a worker: one running a write)."""
    busy = wait_for_tasks(cluster, cli, "_write_task")
    victim = sorted(busy)[0]
    return cluster.kill(target, cli, (victim, cluster.worker_pids()[victim]))


# ---------------------------------------------------------------- quick: each target once, mid-write

def test_a_worker_killed_mid_write_loses_and_doubles_no_row(cluster, recordings, clean, tmp_path):
    """The worker process running a write task is killed; its nanny restarts it and Dask runs the
    task again: the run completes, with every row once."""
    store = str(tmp_path / "store")
    cluster.ensure()
    cli = start_ingest(recordings, store, cluster.address)
    what = kill_while_writing(cluster, "worker", cli)
    code, out, err = finish(cli)
    assert_clear_exit(code, err, what)
    assert code == 0, f"a killed worker stopped the run: {err}"
    assert json.loads(out)["ingested"] == N_FILES
    assert main_state(store, clean) == "whole"
    assert ingest(recordings, store, cluster.address)["ingested"] == 0  # nothing left, nothing twice
    assert_same_store(clean, store, what)


def test_a_scheduler_killed_mid_write_stops_the_run_with_a_clear_error(cluster, recordings, clean, tmp_path):
    store = str(tmp_path / "store")
    cluster.ensure()
    cli = start_ingest(recordings, store, cluster.address)
    what = kill_while_writing(cluster, "scheduler", cli)
    code, out, err = finish(cli)
    assert code == 2, f"exit {code} after {what}:\n{err[-3000:]}"
    assert_clear_exit(code, err, what)
    assert "Dask scheduler" in err, err
    assert main_state(store, clean) == "none"  # stopped before its commit
    cluster.ensure()  # a fresh scheduler and workers
    assert ingest(recordings, store, cluster.address)["ingested"] == N_FILES
    assert_same_store(clean, store, what)


def test_an_ingest_killed_mid_write_leaves_the_cluster_to_serve_the_next_run(cluster, recordings, clean, tmp_path):
    store = str(tmp_path / "store")
    cluster.ensure()
    cli = start_ingest(recordings, store, cluster.address)
    what = kill_while_writing(cluster, "client", cli)
    code, _, _ = finish(cli)
    assert code == -signal.SIGKILL
    assert main_state(store, clean) == "none"
    assert ingest(recordings, store, cluster.address)["ingested"] == N_FILES
    assert_same_store(clean, store, what)
    with cluster.client() as c:  # the killed client's tasks did not stay on the cluster
        assert len(c.nthreads()) == 2
        assert c.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)) == 0


def live_rows(store: str) -> dict:
    """Per stream, the live rows as (start, file name, audio digest), sorted: what a store holds,
    whatever rows a retry reused."""
    tree = pi.open_store(store)
    out = {}
    for path in pi.streams(tree):
        ds = tree[path].to_dataset()
        valid = ds["n_valid"].values
        urls = ds["file_url"].values
        out[path] = sorted((int(ds["chunk_start"].values[i].astype("datetime64[ns]").astype("int64")),
                            str(urls[ds["file_index"].values[i]]).rsplit("/", 1)[-1],
                            hashlib.sha256(ds["audio"][i].values[: valid[i]].tobytes()).hexdigest())
                           for i in np.flatnonzero(valid > 0))
    return out


def test_a_task_whose_workers_all_die_fails_its_recording_and_the_run_goes_on(recordings, clean_store, tmp_path):
    """Dask gives up a task when every worker that ran it died (KilledWorker), as when a recording
    crashes or exhausts every worker decoding it. With no failure allowed (Dask allows 3), one
    killed worker does it: the recordings of the tasks it held are recorded failed with the reason,
    the others are committed, and ``--retry-failed`` completes the store."""
    (tmp_path / "logs").mkdir()
    cluster = Cluster(tmp_path / "logs", n_workers=1, env={"DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "0"})
    try:
        cluster.start()
        store = str(tmp_path / "store")
        cli = start_ingest(recordings, store, cluster.address)
        what = kill_while_writing(cluster, "worker", cli)
        code, out, err = finish(cli)
        assert_clear_exit(code, err, what)
        assert code == 0, f"exit {code} after {what}:\n{err[-3000:]}"
        report = json.loads(out)
        assert report["failed"] and report["snapshot_id"], report
        assert all("killed every Dask worker that tried" in f["reason"] for f in report["failed"]), report["failed"]
        assert report["ingested"] == N_FILES - len(report["failed"])
        cluster.ensure()  # the nanny has started a new worker
        retried = start_ingest(recordings, store, cluster.address, "--retry-failed")
        code, out, err = finish(retried)
        assert code == 0 and json.loads(out)["ingested"] == len(report["failed"]), err[-3000:]
        assert live_rows(store) == live_rows(clean_store)
    finally:
        cluster.stop()


# ---------------------------------------------------------------- slow: 20 kills at random moments

KILLS = 20
TARGETS = ("worker", "scheduler", "client", "worker-host")


@pytest.fixture(scope="module")
def work_seconds(cluster, recordings, clean, tmp_path_factory) -> float:
    """How long a run keeps the cluster busy: from its first task seen running to its end. Its store
    equals the serial run's."""
    store = str(tmp_path_factory.mktemp("timed") / "store")
    cli = start_ingest(recordings, store, cluster.address)
    wait_for_tasks(cluster, cli)
    t0 = time.monotonic()
    code, out, err = finish(cli)
    seconds = time.monotonic() - t0
    assert code == 0 and json.loads(out)["ingested"] == N_FILES, err[-3000:]
    assert_same_store(clean, store, "a run on the cluster")
    return seconds


@pytest.mark.slow
@pytest.mark.parametrize("k", range(KILLS))
def test_kills_at_random_moments(cluster, recordings, clean, work_seconds, tmp_path, k):
    """Kill number ``k``: ``TARGETS[k % 4]`` (five kills each) at a seeded random moment of the run's
    time on the cluster: from its first task seen running to its usual end."""
    rng = random.Random(1600 + k)
    target = TARGETS[k % len(TARGETS)]
    delay = rng.uniform(0, 1.0) * work_seconds
    store = str(tmp_path / "store")
    cluster.ensure()
    worker = rng.choice(sorted(cluster.worker_pids().items()))
    cli = start_ingest(recordings, store, cluster.address)
    wait_for_tasks(cluster, cli)
    time.sleep(delay)
    running = cli.poll() is None
    what = cluster.kill(target, cli, worker) if running or target != "client" else "nothing (the client was done)"
    what += f", {delay:.2f} s after its first task" + ("" if running else " (the run was done)")
    code, out, err = finish(cli)
    if target == "client":
        assert code in (-signal.SIGKILL, 0), err[-3000:]
    else:
        assert_clear_exit(code, err, what)
    state = main_state(store, clean)
    if code == 0:
        assert state == "whole", what
    cluster.ensure()
    again = ingest(recordings, store, cluster.address)
    assert again["ingested"] == (0 if state == "whole" else N_FILES), (what, again)
    assert_same_store(clean, store, what)
    print(f"kill {k}: {what}: exit {code}, main {state}; re-run ingested {again['ingested']}")
