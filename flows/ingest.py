"""Prefect flow ``ingest``: thin wiring of pamingest calls (no logic lives here).

Each Prefect task ingests one coarse piece (Orcasound: node x day); inside it
the per-file and per-row work runs as Dask futures on the cluster at
``scheduler_address`` (or a LocalCluster this flow starts). Pieces run one
after the other because each already spreads its files and rows over every
worker of the cluster, which is where the parallelism is: running them
concurrently would only plan several pieces at once in the flow run's process,
and pieces of one node write the same stream, so they would keep rebasing onto
each other's commits (they would all land, as concurrent writers do, but with
work redone). Store, scheduler and endpoints come from ``settings``
(``PAMINGEST_*``) unless given. When the run committed new rows, every
deployment of the ``pseudolabel`` flow is started on the store
(``run_deployment(..., timeout=0)``: not waited for), so new chunks are
labelled without anyone asking. After the pieces, the store's report page is
written (``report``: beside a local store by default, ``orchestration.report_target``)
and linked from the run's artifact.
"""

from __future__ import annotations

import contextlib
from typing import Any

import settings
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from pseudolabel import pseudolabel as pseudolabel_flow

from pamingest import orchestration


@task(retries=2, retry_delay_seconds=15, task_run_name="ingest {kind} {options}")
def ingest_piece(kind: str, options: dict[str, Any], store: str, scheduler_address: str | None,
                 row_seconds: float | None, virtual: bool = False) -> dict:
    # Safe to retry: a store never ingests an object twice (URL + ETag), and a
    # crashed attempt leaves the store's main branch where it was.
    report = orchestration.ingest_partition(kind, settings.with_secrets(kind, options), store, scheduler_address,
                                            row_seconds,
                                            s3_endpoint=settings.s3_endpoint(),
                                            store_options=settings.store_options(), virtual=virtual)
    get_run_logger().info("%s", report.summary())
    return report.as_dict()


@task(retries=2, retry_delay_seconds=15, task_run_name="attach {kind} detection products")
def attach_detections(kind: str, options: dict[str, Any], store: str, new_recordings: bool = False) -> dict:
    # Safe to retry: products are recognised by name and content.
    report = orchestration.attach_detections(kind, options, store, s3_endpoint=settings.s3_endpoint(),
                                             store_options=settings.store_options(),
                                             new_recordings=new_recordings)
    get_run_logger().info("%s", report.summary())
    return report.as_dict()


@task(task_run_name="report {out}")
def write_report(store: str, out: str, reports: list[dict] | None) -> dict | None:
    page = orchestration.store_report(store, out, reports, store_options=settings.store_options())
    return page.as_dict() if page else None


def start_pseudolabel_deployments(store: str) -> list[str]:
    """Start (without waiting) a run of each ``pseudolabel/<name>`` deployment on ``store``."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.deployments import run_deployment

    with get_client(sync_client=True) as client:
        found = client.read_deployments(flow_filter=FlowFilter(name=FlowFilterName(any_=[pseudolabel_flow.name])))
    runs = []
    for deployment in found:
        run = run_deployment(f"{pseudolabel_flow.name}/{deployment.name}", parameters={"store": store}, timeout=0)
        runs.append(str(run.id))
    return runs


@flow(name="ingest")
def ingest(source: str = "orcasound", options: dict[str, Any] | None = None, store: str | None = None,
           scheduler_address: str | None = None, row_seconds: float | None = None, detections: bool = False,
           report: str | None = None, virtual: bool = False) -> dict:
    """Ingest a source's new recordings into a pamingest store (and, with ``detections``, attach the
    source's detection products: SanctSound's); ``report``: where the store's report page goes ("" none);
    ``virtual``: PCM WAV recordings by reference, not copied (zero-copy; docs/architecture.md)."""
    from distributed import Client

    from pamingest.executor import local_cluster

    log = get_run_logger()
    store = settings.store(store)
    address = settings.scheduler(scheduler_address)
    with contextlib.ExitStack() as stack:
        if not address and orchestration.wants_cluster(source, options or {}):
            address = stack.enter_context(local_cluster()).scheduler_address
        if address and address != "serial":
            client = stack.enter_context(Client(address, set_as_default=False))
            log.info("Dask dashboard: %s", client.dashboard_link)
        reports = [ingest_piece(source, piece, store, address, row_seconds, virtual)
                   for piece in orchestration.work_partitions(source, options or {})]
    attached = (attach_detections(source, options or {}, store, any(r["ingested"] for r in reports))
                if detections else None)
    rows = sum(r["rows"] for r in reports)
    # Labelling first: a live poll's new rows are scored while the report page is written.
    labelling = start_pseudolabel_deployments(store) if rows else []
    if labelling:
        log.info("new rows: started %d pseudolabel run(s)", len(labelling))
    target = orchestration.report_target(store, report)
    # The run's commits stand whatever happens to the page: a failed report is named in the artifact.
    changed = None if attached and attached["attached"] else reports  # None: labels changed, write it anyway
    page = write_report(store, target, changed, return_state=True).result(raise_on_failure=False) if target else None
    if isinstance(page, BaseException):
        log.error("store report not written: %s", page)
    create_markdown_artifact(orchestration.report_markdown(reports, page), key=f"ingest-{source}",
                             description=f"pamingest ingest of {source} into {store}")
    if attached is not None:
        create_markdown_artifact(orchestration.annotate_markdown(attached), key=f"annotate-{source}-detections",
                                 description=f"pamingest: {source} detection products attached to {store}")
    return {
        "store": store,
        "pieces": len(reports),
        "ingested": sum(r["ingested"] for r in reports),
        "failed": sum(len(r["failed"]) for r in reports),
        "rows": rows,
        "pseudolabel_runs": labelling,
        "detections_attached": len(attached["attached"]) if attached else 0,
        "report": page["out"] if isinstance(page, dict) else None,
        "snapshot_id": next((r["snapshot_id"] for r in reversed(reports) if r["snapshot_id"]), None),
    }
