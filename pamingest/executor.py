"""Executors: Dask (LocalCluster or a scheduler address) or serial, one interface.

The library never imports Prefect; any orchestrator hands it a Dask client
or an address. ``serial`` runs everything in-process, for debugging.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import logging
import os
from typing import Any, Callable, Iterable, Iterator

log = logging.getLogger(__name__)


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

    def map_unordered(self, fn: Callable, items: Iterable, limit: int, **kwargs: Any) -> Iterator[tuple[Any, cf.Future]]:
        for item in items:
            yield item, self.submit(fn, item, **kwargs)


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

    def submit(self, fn: Callable, *args: Any, key_prefix: str | None = None, **kwargs: Any):
        import uuid

        key = f"{key_prefix or fn.__name__}-{uuid.uuid4().hex}"
        return self.client.submit(fn, *args, key=key, pure=False, **kwargs)

    def map_unordered(self, fn: Callable, items: Iterable, limit: int, **kwargs: Any) -> Iterator[tuple[Any, Any]]:
        """``fn(item)`` for each item with at most ``limit`` in flight; (item, future) as done.

        Bounded submission keeps the client's memory and the scheduler's task
        count flat whatever the number of files.
        """
        from distributed import as_completed

        items = iter(items)
        pending: dict[str, Any] = {}
        first = []
        for item in items:
            future = self.submit(fn, item, **kwargs)
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
                future = self.submit(fn, item, **kwargs)
                pending[future.key] = item
                queue.add(future)
                return True
            return False

        for future in queue:
            yield pending.pop(future.key), future
            submit_next()


@contextlib.contextmanager
def executor_for(client: Any = None, n_workers: int | None = None) -> Iterator[SerialExecutor | DaskExecutor]:
    """An executor from a Client, a scheduler address, ``"serial"`` or None (LocalCluster).

    A LocalCluster started here uses processes with one thread each: decoding
    and FLAC encoding hold the GIL between C calls, so processes scale better.
    """
    if client == "serial":
        yield SerialExecutor()
        return
    if client is not None and not isinstance(client, str):
        yield DaskExecutor(client)
        return
    from distributed import Client, LocalCluster

    if isinstance(client, str):
        with Client(client, set_as_default=False) as c:
            log.info("Dask dashboard: %s", c.dashboard_link)
            yield DaskExecutor(c)
        return
    workers = n_workers or max(1, os.cpu_count() or 1)
    # Dask starts workers with MALLOC_TRIM_THRESHOLD_=65536, which also pins
    # glibc's mmap threshold: every 1-10 MB row buffer is then mmapped and
    # unmapped, ~100x the page faults, and ingest runs ~45% slower
    # (benchmarks/ingest_throughput.py). Worker memory stays flat without it
    # (benchmarks/worker_memory.py): a worker holds one row batch at a time.
    import dask

    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}), LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      dashboard_address="127.0.0.1:0", silence_logs=logging.ERROR) as cluster, \
            Client(cluster, set_as_default=False) as c:
        log.info("Dask dashboard: %s", c.dashboard_link)
        yield DaskExecutor(c)


