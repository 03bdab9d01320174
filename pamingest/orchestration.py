"""Plain helpers for orchestrators (Prefect flows, cron, notebooks) and the CLI.

Nothing here imports Prefect or reads the environment: a flow (whose
settings come from ``PAMINGEST_*`` variables, ``flows/settings.py``) or the
CLI (flags) passes the store, scheduler, endpoints and labeller in. A flow
calls ``work_partitions`` to cut a source into coarse, independent pieces
(node x day for Orcasound) and ``ingest_partition`` for each; the
fine-grained work of each piece runs as Dask futures on the cluster at
``scheduler``.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import inspect
from typing import Any

from .errors import ConfigError, PamIngestError
from .ingest import IngestReport, ingest
from .registry import build, registry
from .timing import to_ns

# Source kinds are the names of the ``pamingest.sources`` entry points: files,
# orcasound, orcasound-flac, sanctsound, ncei, pacific-sound, and any plug-in's.

# Options that take a list; a comma-separated string is accepted for them, as
# environment-templated deployment parameters produce them.
LIST_OPTIONS = ("nodes", "sites", "deployments", "stations", "serials")


def source_kinds() -> list[str]:
    """The source kinds that can be built (registered ``pamingest.sources`` entry points)."""
    return registry("sources").names()


def _source_url(kind: str, options: dict[str, Any]) -> str:
    """The bucket or root URL a source reads, from its options or its class default."""
    cls = registry("sources").get(kind)
    for key in ("root", "url", "bucket"):
        value = options.get(key)
        if value is None and dataclasses.is_dataclass(cls):
            value = next((f.default for f in dataclasses.fields(cls) if f.name == key
                          and f.default is not dataclasses.MISSING), None)
        if isinstance(value, str) and value:
            return value if "://" in value or key != "bucket" else f"s3://{value}"
    return ""


def build_source(kind: str, options: dict[str, Any] | None = None, s3_endpoint: str | None = None):
    """A source from its kind and constructor options (JSON-friendly, as in a deployment or from CLI flags).

    Parameters
    ----------
    kind : str
        A ``pamingest.sources`` entry point name (``files``, ``orcasound``...).
    options : dict
        Constructor arguments. Comma-separated strings are accepted for list
        options (``nodes``, ``sites``, ``deployments``, ``stations``, ``serials``).
    s3_endpoint : str, optional
        An S3-compatible server for sources that read ``s3://`` (its
        ``endpoint_url``; an ``anon`` in their storage options is dropped, the
        server's credentials apply). ``gs://`` sources are left alone.

    Raises
    ------
    PluginNotFoundError
        No source of that kind is registered.
    ConfigError
        The options do not fit the source's constructor.
    """
    cls = registry("sources").get(kind)
    options = {k: _split_list(k, v) for k, v in (options or {}).items()}
    if s3_endpoint and not _source_url(kind, options).startswith(("gs://", "gcs://")):
        so = dict(options.get("storage_options") or {})
        so.setdefault("endpoint_url", s3_endpoint)
        so.pop("anon", None)
        options["storage_options"] = so
    try:
        inspect.signature(cls).bind(**options)
    except TypeError as exc:  # checked before the call: a TypeError inside the constructor is a bug, not this
        accepted = ", ".join(p for p in inspect.signature(cls).parameters)
        raise ConfigError(f"source {kind!r}: {exc} (its options: {accepted})") from None
    try:
        return build("sources", (kind, options))
    except PamIngestError:
        raise
    except ValueError as exc:  # a source rejecting a value (a time that does not parse, an unknown product)
        raise ConfigError(f"source {kind!r}: {exc}") from exc


def _split_list(key: str, value: Any) -> Any:
    if key in LIST_OPTIONS and isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


def _days(start: Any, end: Any) -> list[tuple[str, str]]:
    """UTC day pieces of [start, end): the first and last may be partial days."""
    import pandas as pd  # lazily: the CLI builds its source here and needs no pandas (startup.py)

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


def ingest_partition(kind: str, options: dict[str, Any], store: str, scheduler: str | None = None,
                     row_seconds: float | None = None, *, s3_endpoint: str | None = None,
                     store_options: dict[str, Any] | None = None, progress: bool = False) -> IngestReport:
    """Ingest one piece; safe to retry (exactly-once by URL + ETag, main moves by compare-and-swap).

    ``scheduler`` is a Dask scheduler address (None: a LocalCluster),
    ``s3_endpoint`` as for ``build_source``, ``store_options`` the store's
    (e.g. its ``endpoint_url``); ``progress`` shows a progress bar on stderr.
    """
    if not store:
        raise ConfigError("no store given")
    return ingest(build_source(kind, options, s3_endpoint), store, client=scheduler or None,
                  store_options=store_options or {}, row_seconds=row_seconds, progress=progress)


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
    partial = [f for r in reports for f in r.get("partial", [])]
    if partial:
        lines += ["", "**Files stored up to where they end** (cut short)", ""]
        lines += [f"- `{f['url']}`: {f['reason']}" for f in partial]
    streams = sorted({s for r in reports for s in r["streams"]})
    if streams:
        lines += ["", "**Streams written**: " + ", ".join(f"`{s}`" for s in streams)]
    return "\n".join(lines)


# ---------------------------------------------------------------- pseudo-labelling


def pseudolabel_store(store: str, labeler: str, params: dict[str, Any] | None = None, scheduler: str | None = None,
                      tag: str = "", batch_rows: int | None = None, store_options: dict[str, Any] | None = None):
    """Score a store's queued chunks; safe to retry (a chunk is written once per labeller version).

    Returns the ``PseudolabelReport``. ``scheduler`` is a Dask scheduler
    address (None: a LocalCluster; ``"serial"``: in this process).
    """
    from .labeling import pseudolabel
    from .labeling.run import DEFAULT_BATCH_ROWS

    if not store:
        raise ConfigError("no store given")
    if not labeler:
        raise ConfigError("no labeler given")
    return pseudolabel(store, labeler, params=params, tag=tag, client=scheduler or None,
                       store_options=store_options or {}, batch_rows=batch_rows or DEFAULT_BATCH_ROWS)


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


def export_store(store: str, format: str, out: str | None = None, options: dict[str, Any] | None = None,
                 store_options: dict[str, Any] | None = None):
    """Export the store's labelled clips at the tip of ``main`` now (``pamingest.export.export``).

    ``out`` defaults to ``<store>-exports/<format>/<snapshot>``: a new
    snapshot gets a folder of its own, and a retry of the same snapshot
    writes the same files again. Returns the ``ExportReport``.
    """
    from .export import export
    from .store.repo import Store

    if not store:
        raise ConfigError("no store given")
    options = dict(options or {})
    snapshot = options.pop("snapshot", None) or Store.open(store, store_options).session().snapshot_id
    out = out or f"{store.rstrip('/')}-exports/{format}/{snapshot}"
    return export(store, out, format, snapshot=snapshot, storage_options=store_options,
                  out_storage_options=store_options if out.startswith(store.split("://")[0] + "://") else None,
                  **options)


def export_markdown(report: dict[str, Any]) -> str:
    """A Markdown summary of an ``ExportReport.as_dict()``, for a Prefect artifact."""
    rows = ", ".join(f"{s} {n}" for s, n in report["rows"].items()) or "none"
    return "\n".join([
        "| format | snapshot | clips | exported | rows per split | files | out |",
        "|---|---|---:|---:|---|---:|---|",
        f"| {report['format']} | `{report['snapshot']}` | {report['clips']} | {report['exported']} | {rows} "
        f"| {len(report['files'])} | `{report['out']}` |",
    ])

