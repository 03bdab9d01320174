"""Prefect flow ``annotate``: attach the new annotation files under folders or prefixes (thin wiring).

Lists the annotation files of one format under ``where`` (local folders,
``s3://`` or ``gs://`` prefixes, or files) and attaches those the store has
not attached (``pamingest.orchestration.annotate_store``): a scheduled run
picks up what analysts or a detector added since the last one, files that
failed (their audio is not ingested yet, say) are tried again, and a file
changed since it was attached (a corrected table) replaces its earlier
version (``replace_changed=False``: reported and left as attached). The
artifact says what was attached, what fell outside the audio, what failed
and why. Store and endpoints come from ``settings`` (``PAMINGEST_*``).
"""

from __future__ import annotations

from typing import Any

import settings
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from pamingest import orchestration


@task(retries=2, retry_delay_seconds=15, task_run_name="attach new {format} files")
def attach_new(format: str, where: str | list[str], pattern: str | None, options: dict[str, Any] | None,
               stream: str | None, skip_unknown_streams: bool, replace_changed: bool, store: str) -> dict:
    # Safe to retry: a file the store attached is recognised by name and content.
    report = orchestration.annotate_store(store, format, where, pattern=pattern, options=options, stream=stream,
                                          skip_unknown_streams=skip_unknown_streams, replace_changed=replace_changed,
                                          s3_endpoint=settings.s3_endpoint(), store_options=settings.store_options())
    get_run_logger().info("%s", report.summary())
    return report.as_dict()


@flow(name="annotate")
def annotate(format: str, where: str | list[str] | None = None, pattern: str | None = None,
             options: dict[str, Any] | None = None, stream: str | None = None, skip_unknown_streams: bool = True,
             replace_changed: bool = True, store: str | None = None) -> dict:
    """Attach the ``format`` annotation files under ``where`` that the store has not attached yet; a file
    changed since it was attached (a corrected table) replaces its earlier version (``replace_changed``)."""
    where = settings.annotations(where)
    if not where:
        # The scheduled deployment on a machine where nobody set a folder: a run that fails every
        # hour would teach people to ignore failed runs.
        message = f"no annotation folders given: set {settings.ANNOTATIONS} or give `where`; nothing attached"
        get_run_logger().warning(message)
        create_markdown_artifact(message, key=f"annotate-{format}", description="pamingest annotate")
        return {"store": settings.store(store), "format": format, "attached": [], "failed": [], "configured": False}
    report = attach_new(format, where, pattern, options, stream, skip_unknown_streams, replace_changed,
                        settings.store(store))
    create_markdown_artifact(orchestration.annotate_markdown(report), key=f"annotate-{format}",
                             description=f"pamingest annotate ({format}) into {report['store']}")
    return report
