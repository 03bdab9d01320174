"""Plain helpers for orchestrators (Prefect flows, cron, notebooks).

Nothing here imports Prefect: a flow calls ``work_partitions`` to cut a
source into coarse, independent pieces (node x day for Orcasound) and
``ingest_partition`` for each, in sequence; the fine-grained work of each
piece runs as Dask futures on the cluster at ``scheduler``.
"""

from __future__ import annotations

import datetime as _dt
import os
from typing import Any

import pandas as pd

from .ingest import IngestReport, ingest
from .sources.files import TimestampedFiles
from .sources.ncei import Ncei
from .sources.orcasound import OrcasoundFLAC, OrcasoundHLS
from .sources.pacific_sound import PacificSound
from .sources.sanctsound import SanctSound
from .timing import to_ns

# Source kinds a deployment can name, and the class each builds.
SOURCES: dict[str, Any] = {
    "files": TimestampedFiles,
    "orcasound": OrcasoundHLS,
    "orcasound-flac": OrcasoundFLAC,
    "sanctsound": SanctSound,
    "ncei": Ncei,
    "pacific-sound": PacificSound,
}

# Settings read from the environment, so that a deployment's parameters stay
# the same from a laptop to a cluster (docs: infra/README.md).
ENV_STORE = "PAMINGEST_STORE"
ENV_SCHEDULER = "PAMINGEST_SCHEDULER"
ENV_ENDPOINT = "PAMINGEST_S3_ENDPOINT"  # S3-compatible endpoint for s3:// sources (and the store by default)
ENV_STORE_ENDPOINT = "PAMINGEST_STORE_ENDPOINT"  # the store's own endpoint (a MinIO store, public sources)


def _source_url(kind: str, options: dict[str, Any]) -> str:
    """The bucket or root URL a source reads, from its options or its class default."""
    import dataclasses

    cls = SOURCES[kind]
    for key in ("root", "url", "bucket"):
        value = options.get(key)
        if value is None and dataclasses.is_dataclass(cls):
            value = next((f.default for f in dataclasses.fields(cls) if f.name == key
                          and f.default is not dataclasses.MISSING), None)
        if isinstance(value, str) and value:
            return value if "://" in value or key != "bucket" else f"s3://{value}"
    return ""


def build_source(kind: str, options: dict[str, Any]):
    """A source from its kind and constructor options (JSON-friendly, as in a deployment).

    ``PAMINGEST_S3_ENDPOINT`` points sources that read ``s3://`` at an
    S3-compatible server; ``gs://`` sources are left alone. Comma-separated
    strings are accepted for list options (``nodes``, ``sites``), as
    environment-templated deployment parameters produce them.
    """
    if kind not in SOURCES:
        raise ValueError(f"unknown source {kind!r}; known: {', '.join(sorted(SOURCES))}")
    options = {k: _split_list(k, v) for k, v in options.items()}
    endpoint = os.environ.get(ENV_ENDPOINT)
    if endpoint and not _source_url(kind, options).startswith(("gs://", "gcs://")):
        so = dict(options.get("storage_options") or {})
        so.setdefault("endpoint_url", endpoint)
        so.pop("anon", None)
        options["storage_options"] = so
    return SOURCES[kind](**options)


LIST_OPTIONS = ("nodes", "sites", "deployments", "stations", "serials")


def _split_list(key: str, value: Any) -> Any:
    if key in LIST_OPTIONS and isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


def store_options() -> dict[str, Any]:
    endpoint = os.environ.get(ENV_STORE_ENDPOINT) or os.environ.get(ENV_ENDPOINT)
    return {"endpoint_url": endpoint} if endpoint else {}


def _days(start: Any, end: Any) -> list[tuple[str, str]]:
    """UTC day pieces of [start, end): the first and last may be partial days."""
    t0, t1 = (pd.Timestamp(to_ns(start)), pd.Timestamp(to_ns(end)))
    out, day = [], t0
    while day < t1:
        nxt = min(t1, (day.normalize() + _dt.timedelta(days=1)))
        out.append((day.isoformat(), nxt.isoformat()))
        day = nxt
    return out


def work_partitions(kind: str, options: dict[str, Any]) -> list[dict[str, Any]]:
    """Coarse pieces of a source: node x day for Orcasound (one per node without a range)."""
    if kind in ("orcasound", "orcasound-flac"):
        nodes = _split_list("nodes", options.get("nodes") or [])
        pieces = []
        for node in nodes:
            if options.get("start") and options.get("end"):
                pieces += [{**options, "nodes": [node], "start": a, "end": b}
                           for a, b in _days(options["start"], options["end"])]
            else:
                pieces.append({**options, "nodes": [node]})
        return pieces
    return [dict(options)]


def ingest_partition(kind: str, options: dict[str, Any], store: str | None = None,
                     scheduler: str | None = None, row_seconds: float | None = None) -> IngestReport:
    """Ingest one piece; safe to retry (exactly-once by URL + ETag, main moves by compare-and-swap)."""
    store = store or os.environ.get(ENV_STORE)
    if not store:
        raise ValueError(f"no store given and {ENV_STORE} is not set")
    scheduler = scheduler or os.environ.get(ENV_SCHEDULER) or None
    return ingest(build_source(kind, options), store, client=scheduler, store_options=store_options(),
                  row_seconds=row_seconds)


def report_markdown(reports: list[dict[str, Any]]) -> str:
    """A Markdown summary of a run's reports (``IngestReport.as_dict()``), for a Prefect artifact."""
    ingested = sum(r["ingested"] for r in reports)
    hours = sum(r["audio_hours"] for r in reports)
    size = sum(r["bytes_read"] for r in reports)
    failed = [f for r in reports for f in r["failed"]]
    snapshot = next((r["snapshot_id"] for r in reversed(reports) if r["snapshot_id"]), "-")
    lines = [
        "| files ingested | failed | hours of audio | bytes read | store snapshot |",
        "|---:|---:|---:|---:|---|",
        f"| {ingested} | {len(failed)} | {hours:.3f} | {size:,} | `{snapshot}` |",
    ]
    if failed:
        lines += ["", "**Failed files**", ""] + [f"- `{f['url']}`: {f['reason']}" for f in failed]
    streams = sorted({s for r in reports for s in r["streams"]})
    if streams:
        lines += ["", "**Streams written**: " + ", ".join(f"`{s}`" for s in streams)]
    return "\n".join(lines)


# ---------------------------------------------------------------- pseudo-labelling

ENV_LABELER = "PAMINGEST_LABELER"
DEFAULT_LABELER = "energy:killer-whale"
# A flow that ingested new rows starts the runs of the deployments of this flow.
PSEUDOLABEL_FLOW = "pseudolabel"


def pseudolabel_store(labeler: str | None = None, params: dict[str, Any] | None = None, store: str | None = None,
                      scheduler: str | None = None, tag: str = "", batch_rows: int | None = None):
    """Score a store's queued chunks; safe to retry (a chunk is written once per labeller version).

    Returns the ``PseudolabelReport``. Store, scheduler and labeller default
    to ``PAMINGEST_STORE``, ``PAMINGEST_SCHEDULER`` and ``PAMINGEST_LABELER``.
    """
    from .labeling import pseudolabel
    from .labeling.run import DEFAULT_BATCH_ROWS

    store = store or os.environ.get(ENV_STORE)
    if not store:
        raise ValueError(f"no store given and {ENV_STORE} is not set")
    scheduler = scheduler or os.environ.get(ENV_SCHEDULER) or None
    labeler = labeler or os.environ.get(ENV_LABELER) or DEFAULT_LABELER
    return pseudolabel(store, labeler, params=params, tag=tag, client=scheduler, store_options=store_options(),
                       batch_rows=batch_rows or DEFAULT_BATCH_ROWS)


def pseudolabel_markdown(report: dict[str, Any]) -> str:
    """A Markdown summary of a ``PseudolabelReport.as_dict()``, for a Prefect artifact."""
    lines = [
        "| labeler | queued | scored | failed | detections | hours of audio | commits | store snapshot |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
        f"| {report['labeler']} v{report['version']} | {report['queued']} | {report['scored']} | {report['failed']} "
        f"| {report['detections']} | {report['audio_seconds'] / 3600:.3f} | {report['commits']} "
        f"| `{report['snapshot_id'] or '-'}` |",
    ]
    if report["errors"]:
        lines += ["", "**Errors**", ""] + [f"- {e}" for e in report["errors"][:50]]
    return "\n".join(lines)
