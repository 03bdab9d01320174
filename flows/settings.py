"""Settings of the pamingest flows, read from the environment when a flow run starts.

The library takes store, scheduler, endpoints and labeller as arguments and
reads no environment; the deployments get them from here, so that their
parameters stay the same from a laptop to a cluster (infra/README.md,
"Settings"). A flow parameter given explicitly wins over its variable.

==============================  ==============================================================
``PAMINGEST_STORE``             store URL (required: a relative default would land inside a
                                worker's container and vanish with it)
``PAMINGEST_SCHEDULER``         Dask scheduler address; a LocalCluster when unset
``PAMINGEST_S3_ENDPOINT``       S3-compatible server of the ``s3://`` sources (and of the store
                                when ``PAMINGEST_STORE_ENDPOINT`` is unset)
``PAMINGEST_STORE_ENDPOINT``    the store's own S3-compatible server (a MinIO store beside
                                public buckets)
``PAMINGEST_LABELER``           labeller of ``pseudolabel`` runs given none (default
                                energy:killer-whale)
``PAMINGEST_ANNOTATIONS``       folders, prefixes or files (comma-separated) whose new annotation
                                files ``annotate`` runs attach, when given none
``PAMINGEST_ONC_TOKEN``         Oceans 3.0 token of the ``onc`` source (``ingest/barkley-canyon``);
                                ``ONC_TOKEN`` when unset. Added to the source's options inside
                                the task, never a flow or task parameter (those are logged)
``PAMINGEST_ORCASOUND_NODES``,  ``flows/serve.py`` only: parameters of its deployments
``PAMINGEST_SANCTSOUND_SITES``,
``PAMINGEST_FILES_ROOT``
==============================  ==============================================================
"""

from __future__ import annotations

import os
from typing import Any

STORE = "PAMINGEST_STORE"
SCHEDULER = "PAMINGEST_SCHEDULER"
S3_ENDPOINT = "PAMINGEST_S3_ENDPOINT"
STORE_ENDPOINT = "PAMINGEST_STORE_ENDPOINT"
LABELER = "PAMINGEST_LABELER"
ORCASOUND_NODES = "PAMINGEST_ORCASOUND_NODES"
SANCTSOUND_SITES = "PAMINGEST_SANCTSOUND_SITES"
FILES_ROOT = "PAMINGEST_FILES_ROOT"
ANNOTATIONS = "PAMINGEST_ANNOTATIONS"
ONC_TOKEN = "PAMINGEST_ONC_TOKEN"

DEFAULT_LABELER = "energy:killer-whale"


def store(given: str | None = None) -> str:
    value = given or os.environ.get(STORE)
    if not value:
        raise ValueError(f"give the flow a store or set {STORE}")
    return value


def scheduler(given: str | None = None) -> str | None:
    """A Dask scheduler address, ``"serial"``, or None (the flow starts a LocalCluster)."""
    return given or os.environ.get(SCHEDULER) or None


def s3_endpoint() -> str | None:
    return os.environ.get(S3_ENDPOINT) or None


def store_options() -> dict[str, Any]:
    endpoint = os.environ.get(STORE_ENDPOINT) or os.environ.get(S3_ENDPOINT)
    return {"endpoint_url": endpoint} if endpoint else {}


def annotations(given: str | list[str] | None = None) -> str | list[str]:
    """Folders, prefixes or files to attach from; "" when none is configured."""
    return given or os.environ.get(ANNOTATIONS) or ""


def labeler(given: str | None = None) -> str:
    return given or os.environ.get(LABELER) or DEFAULT_LABELER


def listed(name: str, default: str) -> list[str]:
    """A comma-separated variable as a list (``PAMINGEST_ORCASOUND_NODES=a,b``)."""
    return [v.strip() for v in os.environ.get(name, default).split(",") if v.strip()]


def with_secrets(kind: str, options: dict[str, Any]) -> dict[str, Any]:
    """A source's options with the credentials it takes from the environment (the ``onc`` token).

    Called inside a task, on what it passes to the library: Prefect records flow and task
    parameters (and names task runs by them), so a token must never be one.
    """
    if kind == "onc" and not options.get("token"):
        token = os.environ.get(ONC_TOKEN) or os.environ.get("ONC_TOKEN")
        if token:
            return {**options, "token": token}
    return options
