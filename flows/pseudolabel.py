"""Prefect flow ``pseudolabel``: score a store's unannotated chunks with a labeller (thin wiring).

One coarse Prefect task runs ``pamingest.orchestration.pseudolabel_store``;
the batches inside it are Dask futures on the cluster at
``scheduler_address`` (a LocalCluster when unset), and finished batches are
committed as they come, so a retried or re-run flow only scores what is left.
Store, scheduler, labeller and the store's endpoint come from ``settings``
(``PAMINGEST_*``) unless given. The ingest flow starts this flow's
deployments when it commits new rows.
"""

from __future__ import annotations

from typing import Any

import settings
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from pamingest import orchestration


@task(retries=2, retry_delay_seconds=15, task_run_name="pseudolabel {labeler}")
def label_queue(labeler: str, params: dict[str, Any] | None, store: str, scheduler_address: str | None, tag: str,
                batch_rows: int | None) -> dict:
    # Safe to retry: committed batches are not scored again, the rest is still queued.
    report = orchestration.pseudolabel_store(store, labeler, params, scheduler_address, tag, batch_rows,
                                             store_options=settings.store_options())
    get_run_logger().info("%s", report.summary())
    return report.as_dict()


@flow(name="pseudolabel")
def pseudolabel(store: str | None = None, labeler: str | None = None, params: dict[str, Any] | None = None,
                tag: str = "", scheduler_address: str | None = None, batch_rows: int | None = None) -> dict:
    """Score the store's queued chunks with ``labeler`` (``NAME[:VARIANT]``, e.g. energy:killer-whale)."""
    report = label_queue(settings.labeler(labeler), params, settings.store(store),
                         settings.scheduler(scheduler_address), tag, batch_rows)
    create_markdown_artifact(orchestration.pseudolabel_markdown(report),
                             key=f"pseudolabel-{report['key'].replace('_', '-')}",
                             description=f"pamingest pseudolabel {report['labeler']} on {report['store']}")
    return report
