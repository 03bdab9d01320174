"""Executors: Dask (LocalCluster or a scheduler address), in-process threads, or serial.

The library never imports Prefect; any orchestrator hands it a Dask client
or an address. ``serial`` runs everything in-process, one task at a time,
for debugging. ``threads`` runs tasks in a thread pool of this process:
FLAC encoding and S3 reads release the GIL (decoding mostly does not), and
nothing has to start, so a small job finishes before a ``LocalCluster``
would have started its workers. Without a client, ``executor_for`` picks
threads for small jobs and a ``LocalCluster`` above ``LOCAL_WORK_BYTES``.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import logging
import os
import sys
from typing import Any, Callable, Iterable, Iterator

log = logging.getLogger(__name__)

# The level of distributed's logger in this process, applied when this module imports
# distributed (None: Dask's own). distributed sets its logger's level when it is
# imported, so a level set before that import is lost; importing distributed only to
# set a level would cost a job that runs in threads 0.17 s of start-up.
_dask_log_level: int | None = None


def quiet_dask(level: int = logging.CRITICAL) -> None:
    """Log Dask's messages (cluster starts and stops, closed connections) at ``level`` and above."""
    global _dask_log_level
    _dask_log_level = level
    if "distributed" in sys.modules:
        _set_dask_log_level(level)


def _set_dask_log_level(level: int) -> None:
    logging.getLogger("distributed").setLevel(level)
    # distributed gives some of its loggers levels of their own (distributed.client: WARNING), which
    # the parent's does not override: a lost scheduler would log a traceback at ERROR.
    for name in list(logging.root.manager.loggerDict):
        logger = logging.root.manager.loggerDict[name]
        if name.startswith("distributed.") and isinstance(logger, logging.Logger) and 0 < logger.level < level:
            logger.setLevel(level)


def _import_distributed():
    import distributed

    if _dask_log_level is not None:
        _set_dask_log_level(_dask_log_level)
    return distributed


@contextlib.contextmanager
def _cluster_failures_stop_the_run(address: str | None, client=None) -> Iterator[None]:
    """A lost scheduler, or a task whose workers all died, raises ``ClusterError`` (one line) from the
    run, not distributed's FutureCancelledError or KilledWorker with a traceback (tests/test_kills.py).

    A scheduler that dies while a result is being fetched from a worker (whose
    connection then closes too) surfaces as a closed connection instead: it
    is the same loss when the client has lost its scheduler by then."""
    from distributed.client import FutureCancelledError
    from distributed.comm.core import CommClosedError
    from distributed.scheduler import KilledWorker

    from .errors import ClusterError

    after = "the run stopped, and what it had not committed is left for the next run"
    where = f" {address}" if address else ""
    lost = ClusterError(f"lost the Dask scheduler{where} mid-run; {after}: run it again once the scheduler is back")
    try:
        yield
    except FutureCancelledError as exc:
        if exc.reason != "scheduler-connection-lost":
            raise
        raise lost from exc
    except (CommClosedError, OSError) as exc:
        if client is None or not _scheduler_lost(client):
            raise
        raise lost from exc
    except KilledWorker as exc:
        raise ClusterError(f"{' '.join(str(exc).split())} ({after})") from exc


def _scheduler_lost(client, wait: float = 3.0) -> bool:
    """Whether the client has lost its scheduler (it notices within a moment of the connection's end)."""
    import time

    deadline = time.monotonic() + wait
    while True:
        if client.status != "running":
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


class SerialExecutor:
    """Runs each task when submitted; futures are already done."""

    dashboard_link = None
    n_threads = 1

    def submit(self, fn: Callable, *args: Any, **kwargs: Any) -> cf.Future:
        future: cf.Future = cf.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - handed back through the future
            future.set_exception(exc)
        return future

    def map_unordered(self, fn: Callable, items: Iterable, limit: int, placement: Callable | None = None,
                      **kwargs: Any) -> Iterator[tuple[Any, cf.Future]]:
        for item in items:
            yield item, self.submit(fn, item, **kwargs)

    def where(self, future) -> str | None:
        return None


class ThreadExecutor:
    """Runs tasks in a pool of threads of this process; results come back as they finish."""

    dashboard_link = None

    def __init__(self, n_threads: int | None = None) -> None:
        self.n_threads = max(1, n_threads or os.cpu_count() or 1)
        self._pool = cf.ThreadPoolExecutor(self.n_threads, thread_name_prefix="pamingest")

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def submit(self, fn: Callable, *args: Any, **kwargs: Any) -> cf.Future:
        return self._pool.submit(fn, *args, **kwargs)

    def map_unordered(self, fn: Callable, items: Iterable, limit: int, placement: Callable | None = None,
                      **kwargs: Any) -> Iterator[tuple[Any, cf.Future]]:
        """``fn(item)`` for each item with at most ``limit`` in flight; (item, future) as done."""
        items = iter(items)
        pending: dict[cf.Future, Any] = {}

        def submit_next() -> None:
            for item in items:
                pending[self.submit(fn, item, **kwargs)] = item
                return

        for _ in range(max(1, limit)):
            submit_next()
        while pending:
            done, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
            for future in done:
                yield pending.pop(future), future
                submit_next()

    def where(self, future) -> str | None:
        return None


class DaskExecutor:
    """Submits to a ``distributed.Client``; results come back as they finish."""

    def __init__(self, client) -> None:
        self.client = client

    @property
    def dashboard_link(self) -> str | None:
        return getattr(self.client, "dashboard_link", None)

    @property
    def n_threads(self) -> int:
        return max(1, sum(self.client.nthreads().values()))

    def submit(self, fn: Callable, *args: Any, key_prefix: str | None = None, worker: str | None = None,
               **kwargs: Any):
        import uuid

        key = f"{key_prefix or fn.__name__}-{uuid.uuid4().hex}"
        # A preferred worker (one holding the task's input in memory) is a hint, not a rule:
        # the scheduler may still run the task elsewhere when that worker is busy.
        where = {"workers": [worker], "allow_other_workers": True} if worker else {}
        return self.client.submit(fn, *args, key=key, pure=False, **where, **kwargs)

    def where(self, future) -> str | None:
        """The worker that holds a finished task's result (where it ran)."""
        holders = self.client.who_has([future]).get(future.key) or ()
        return next(iter(holders), None)

    def map_unordered(self, fn: Callable, items: Iterable, limit: int, placement: Callable | None = None,
                      **kwargs: Any) -> Iterator[tuple[Any, Any]]:
        """``fn(item)`` for each item with at most ``limit`` in flight; (item, future) as done.

        Bounded submission keeps the client's memory and the scheduler's task
        count flat whatever the number of files. ``placement(item)`` names
        the worker an item should preferably run on (or None).
        """
        from distributed import as_completed

        def submit(item):
            return self.submit(fn, item, worker=placement(item) if placement else None, **kwargs)

        items = iter(items)
        pending: dict[str, Any] = {}
        first = []
        for item in items:
            future = submit(item)
            pending[future.key] = item
            first.append(future)
            if len(first) >= max(1, limit):
                break
        if not first:
            return
        # The client is not the default one (set_as_default=False): give its loop.
        queue = as_completed(first, loop=self.client.loop)

        def submit_next() -> bool:
            for item in items:
                future = submit(item)
                pending[future.key] = item
                queue.add(future)
                return True
            return False

        for future in queue:
            yield pending.pop(future.key), future
            submit_next()


# Below this many bytes of new input, a run without a client runs in threads of its
# own process instead of starting a LocalCluster. Starting a 2-worker cluster and
# importing the decoding stack in its workers costs ~3 s on a 2-core machine, about
# what threads take for 100-300 MB of recordings (AAC segments ~ 9 MB/s, WAV ~ 20 MB/s
# per core, benchmarks/small_jobs.json); above it the workers' parallel decoding pays
# for their start.
LOCAL_WORK_BYTES = 256 * 2**20


def choose(client: Any, n_workers: int | None, work_bytes: int | None) -> str:
    """``serial``, ``threads``, ``dask`` (a client or an address) or ``cluster`` (a new LocalCluster)."""
    if client in ("serial", "threads"):
        return client
    if client is not None:
        return "dask"
    if n_workers is None and work_bytes is not None and work_bytes < LOCAL_WORK_BYTES:
        return "threads"
    return "cluster"


@contextlib.contextmanager
def executor_for(client: Any = None, n_workers: int | None = None,
                 work_bytes: int | None = None) -> Iterator[SerialExecutor | ThreadExecutor | DaskExecutor]:
    """An executor from a Client, a scheduler address, ``"serial"``, ``"threads"`` or None.

    None: a ``local_cluster`` of ``n_workers``, unless ``n_workers`` is not
    given and the job is small (``work_bytes`` below ``LOCAL_WORK_BYTES``):
    then threads of this process.
    """
    kind = choose(client, n_workers, work_bytes)
    if kind == "serial":
        yield SerialExecutor()
        return
    if kind == "threads":
        executor = ThreadExecutor(n_workers)
        log.info("small job (%s bytes): running in %d threads of this process", work_bytes, executor.n_threads)
        try:
            yield executor
        finally:
            executor.close()
        return
    if client is not None and not isinstance(client, str):
        with _cluster_failures_stop_the_run(getattr(getattr(client, "scheduler", None), "address", None), client):
            yield DaskExecutor(client)
        return
    Client = _import_distributed().Client

    if isinstance(client, str):
        with Client(client, set_as_default=False) as c, _cluster_failures_stop_the_run(client, c):
            log.info("Dask dashboard: %s", c.dashboard_link)
            yield DaskExecutor(c)
        return
    with local_cluster(n_workers) as cluster, Client(cluster, set_as_default=False) as c, \
            _cluster_failures_stop_the_run(cluster.scheduler_address, c):
        log.info("Dask dashboard: %s", c.dashboard_link)
        yield DaskExecutor(c)


# What the nannies of pamingest's Dask workers put in a worker's environment before
# starting it, on top of Dask's ``distributed.nanny.pre-spawn-environ``. Dask's default
# MALLOC_TRIM_THRESHOLD_=65536 also pins glibc's mmap threshold: every 1-10 MB row
# buffer is then mmapped and unmapped, ~100x the page faults, and ingest runs ~45%
# slower (benchmarks/ingest_throughput.py). Setting the variable to glibc's own
# default (131072) does not help: glibc stops adapting its mmap threshold as soon as
# the variable is set at all, so it must be absent. Worker memory stays flat without
# it (benchmarks/worker_memory.py): a worker holds one row batch at a time.
# infra/dask.yaml gives the `dask worker` processes of the image the same setting.
NANNY_PRE_SPAWN_ENVIRON: dict[str, Any] = {"MALLOC_TRIM_THRESHOLD_": None}


def local_cluster(n_workers: int | None = None, threads_per_worker: int = 1, *, dask_malloc_trim: bool = False,
                  **kwargs: Any):
    """A Dask ``LocalCluster`` as pamingest runs one: the one place such a cluster is built.

    Parameters
    ----------
    n_workers : int, optional
        Worker processes (default: one per core).
    threads_per_worker : int
        Decoding and FLAC encoding hold the GIL between C calls, so processes
        with one thread each scale better than threads.
    dask_malloc_trim : bool
        Keep Dask's default ``MALLOC_TRIM_THRESHOLD_=65536`` in the workers'
        environment (only for benchmarks that compare both; see
        ``NANNY_PRE_SPAWN_ENVIRON``).
    **kwargs
        More ``LocalCluster`` arguments. Defaults: ``processes=True``, the
        dashboard on a free port of 127.0.0.1 (never on every interface), and
        the workers' logs silenced below ERROR (``silence_logs=logging.WARNING``
        or ``False`` shows more), or below the level of this process's
        ``distributed`` logger when that is higher (the quiet CLI).

    Returns
    -------
    distributed.LocalCluster
        Started; use it as a context manager or ``close()`` it. Workers added
        later with ``scale()`` start with Dask's default environment.
    """
    import dask

    LocalCluster = _import_distributed().LocalCluster

    kwargs.setdefault("processes", True)
    kwargs.setdefault("dashboard_address", "127.0.0.1:0")
    kwargs.setdefault("silence_logs", max(logging.ERROR, logging.getLogger("distributed").getEffectiveLevel()))
    environ = {} if dask_malloc_trim else NANNY_PRE_SPAWN_ENVIRON
    for name, value in environ.items():
        # A nanny copies its pre-spawn variables into *this* process's environment, which
        # worker processes inherit: an earlier cluster started with Dask's default (a test,
        # a notebook) would leave MALLOC_TRIM_THRESHOLD_=65536 to every later one. A value
        # that differs from Dask's is someone's choice and is kept (Dask keeps it too).
        dask_value = dask.config.get(f"distributed.nanny.pre-spawn-environ.{name}", None)
        if value is None and dask_value is not None and os.environ.get(name) == str(dask_value):
            del os.environ[name]
    with dask.config.set({f"distributed.nanny.pre-spawn-environ.{name}": value for name, value in environ.items()}):
        # The nannies read the setting while the cluster starts, i.e. inside this block.
        return LocalCluster(n_workers=n_workers or max(1, os.cpu_count() or 1),
                            threads_per_worker=threads_per_worker, **kwargs)
