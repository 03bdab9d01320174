"""Prefect flow ``export``: training data out of the store (thin wiring).

One Prefect task runs ``pamingest.orchestration.export_store``: the export is
pinned to the snapshot at the tip of ``main`` when the task starts, and goes
to ``out`` (default: ``<store>-exports/<format>/<snapshot>``), so a retried
task writes the same bytes to the same place. Store and the store's endpoint
come from ``settings`` (``PAMINGEST_*``) unless given.

    prefect deployment run export/hf --params '{"out": "s3://bucket/datasets/pam-hf", "options": {"seconds": 5}}'
"""

from __future__ import annotations

from typing import Any

import settings
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from pamingest import orchestration


@task(retries=1, retry_delay_seconds=15, task_run_name="export {format}")
def export_snapshot(store: str, format: str, out: str | None, options: dict[str, Any]) -> dict:
    # Safe to retry: the snapshot is fixed first, and the same snapshot and options give the same files.
    report = orchestration.export_store(store, format, out, options, store_options=settings.store_options())
    get_run_logger().info("%s", report.summary())
    return report.as_dict()


@flow(name="export")
def export(format: str = "hf", out: str | None = None, options: dict[str, Any] | None = None,
           store: str | None = None) -> dict:
    """Export the store's labelled clips as ``format`` (hf, naturelm, icl, verl, webdataset)."""
    report = export_snapshot(settings.store(store), format, out, dict(options or {}))
    create_markdown_artifact(orchestration.export_markdown(report), key=f"export-{format}",
                             description=f"pamingest export {format} of {report['snapshot']}")
    return report
