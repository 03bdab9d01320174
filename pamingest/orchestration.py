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
    for key in ("root", "url", "bucket", "api"):
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
    if s3_endpoint and not _source_url(kind, options).startswith(("gs://", "gcs://", "http://", "https://")):
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


def wants_cluster(kind: str, options: dict[str, Any]) -> bool:
    """Whether a flow given no scheduler should start a LocalCluster for this source.

    A live poll (Orcasound ``live``) finds a few new segments a minute: a
    cluster would take longer to start than the work, so the ingest runs in
    threads of the flow run's process (``ingest``'s own choice for small jobs).
    """
    return not options.get("live")


def ingest_partition(kind: str, options: dict[str, Any], store: str, scheduler: str | None = None,
                     row_seconds: float | None = None, *, s3_endpoint: str | None = None,
                     store_options: dict[str, Any] | None = None, progress: bool = False,
                     virtual: bool = False) -> IngestReport:
    """Ingest one piece; safe to retry (exactly-once by URL + ETag, main moves by compare-and-swap).

    ``scheduler`` is a Dask scheduler address (None: a LocalCluster),
    ``s3_endpoint`` as for ``build_source``, ``store_options`` the store's
    (e.g. its ``endpoint_url``); ``progress`` shows a progress bar on stderr;
    ``virtual``: PCM WAV files by reference (``ingest(virtual=True)``).
    """
    if not store:
        raise ConfigError("no store given")
    return ingest(build_source(kind, options, s3_endpoint), store, client=scheduler or None,
                  store_options=store_options or {}, row_seconds=row_seconds, progress=progress, virtual=virtual)


# The ingest flow's report is lighter than `pamingest report`'s: it is rewritten after runs that changed the store,
# and its cost is the LTSA rows it reads (measured: 0.05 s per 10 s row of 48 kHz stereo noise on 2 cores, 0.2 s
# when they are busy), so the last day from at most 144 rows (one per 10 min): 7-30 s at most, whatever the
# store's size (~1 s for the small stores of the demo and tests).
FLOW_REPORT_OPTIONS = {"ltsa_days": 1, "ltsa_rows_per_day": 144}
# ... and at most every 10 minutes: orcasound-live ingests every minute; its page may lag by that much.
FLOW_REPORT_MIN_SECONDS = 600.0


def report_target(store: str, given: str | None = None) -> str | None:
    """Where the ingest flow writes the store's report, or None for no report.

    ``given``: a path or URL, or ``""``/``"off"`` for none. By default
    ``<store>-report.html`` beside a local store, and none for an object
    store: there every run would read rows over the network and write an
    object into the bucket that nobody asked for, and the artifact's link
    to it would not open from the Prefect UI (give a path to have one).
    """
    if given is not None:
        return None if given.strip().lower() in ("", "off", "none", "false", "no") else given
    if "://" in store and not store.startswith("file://"):
        return None
    return f"{store.rstrip('/')}-report.html"


def store_report(store: str, out: str, reports: list[dict[str, Any]] | None = None, *,
                 store_options: dict[str, Any] | None = None, out_options: dict[str, Any] | None = None,
                 min_seconds: float = FLOW_REPORT_MIN_SECONDS, **options: Any):
    """Write the store's report page after an ingest (``pamingest.report.report``); returns its summary.

    With ``reports`` (the run's ``IngestReport.as_dict()``), only when no
    page is at ``out`` yet, or the run changed the store (rows, failed or
    partial files) and the page is at least ``min_seconds`` old; None when
    skipped. Without: always. ``options`` go to ``report`` (default
    ``FLOW_REPORT_OPTIONS``). ``out_options``: access to ``out``; by default the store's
    when both are on the same kind of storage.
    """
    from .fsutil import filesystem
    from .report import report

    if out_options is None:
        same_kind = out.split("://")[0] == store.split("://")[0] if "://" in out else "://" not in store
        out_options = store_options if same_kind else None
    if reports is not None:
        fs, path = filesystem(out, out_options)
        if fs.exists(path):
            changed = any(r["rows"] or r["failed"] or r.get("partial") for r in reports)
            age = _dt.datetime.now(_dt.timezone.utc) - _aware(fs.modified(path))
            if not changed or age.total_seconds() < min_seconds:
                return None
    return report(store, out, storage_options=store_options, out_storage_options=out_options,
                  **{**FLOW_REPORT_OPTIONS, **options})


def report_markdown(reports: list[dict[str, Any]], page: dict[str, Any] | BaseException | None = None) -> str:
    """A Markdown summary of a run's reports (``IngestReport.as_dict()``), for a Prefect artifact.

    ``page``: the store report written after the run (``ReportSummary.as_dict()``), linked; or the
    error that stopped it, named.
    """
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
    if isinstance(page, BaseException):
        lines += ["", f"**Store report** not written: {type(page).__name__}: {page}"]
    elif page:
        out = page["out"]
        link = out if "://" in out else _file_uri(out)
        lines += ["", f"**Store report**: [{out}]({link}) (snapshot `{page['snapshot_id']}`; open it in a "
                      "browser: coverage, LTSA per day, failures, labels, queue, history)"]
    return "\n".join(lines)


def _aware(when: _dt.datetime) -> _dt.datetime:
    # fsspec's local filesystem gives naive UTC times, s3fs and gcsfs aware ones.
    return when if when.tzinfo else when.replace(tzinfo=_dt.timezone.utc)


def _file_uri(path: str) -> str:
    from pathlib import Path

    return Path(path).absolute().as_uri()


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



# ---------------------------------------------------------------- annotations


def annotate_store(store: str, format: str, where: str | list[str], *, pattern: str | None = None,
                   options: dict[str, Any] | None = None, stream: str | None = None,
                   skip_unknown_streams: bool = True, replace_changed: bool = False, s3_endpoint: str | None = None,
                   store_options: dict[str, Any] | None = None):
    """Attach the annotation files under ``where`` the store has not attached yet (``annotations.sync``).

    Safe to run on a schedule and to retry: attached files are recognised by
    name and content, and files that failed are tried again. ``s3_endpoint``
    is the server of ``s3://`` annotation files. Returns the ``AnnotateReport``.
    """
    from .annotations.sync import attach_new

    if not store:
        raise ConfigError("no store given")
    if not where:
        raise ConfigError("no annotation folder, prefix or files given")
    if isinstance(where, str):  # "a,b": an environment-templated deployment parameter
        where = [w.strip() for w in where.split(",") if w.strip()]
    access = {"endpoint_url": s3_endpoint} if s3_endpoint and any(str(w).startswith("s3://") for w in where) else {}
    return attach_new(store, where, format, pattern=pattern, options=options, stream=stream,
                      skip_unknown_streams=skip_unknown_streams, replace_changed=replace_changed,
                      store_options=store_options or {}, storage_options=access)


def attach_detections(kind: str, options: dict[str, Any], store: str, *, categories: Any = None,
                      resolutions: Any = None, s3_endpoint: str | None = None,
                      store_options: dict[str, Any] | None = None, new_recordings: bool = False):
    """Attach a source's published detection products (SanctSound's) or annotation tables (Cornell's)
    that the store has not attached yet.

    Rows for sites or deployments the store has no audio of are skipped and
    counted; products are recognised by name and content, so running it
    after every ingest attaches each product once (a collection's table is
    read again after an ingest that added recordings: ``new_recordings``).
    """
    return attach_source_detections(build_source(kind, options, s3_endpoint), store, categories=categories,
                                    resolutions=resolutions, store_options=store_options,
                                    new_recordings=new_recordings)


def attach_source_detections(source, store: str, *, categories: Any = None, resolutions: Any = None,
                             store_options: dict[str, Any] | None = None, new_recordings: bool = False):
    """``attach_detections`` for a source already built (the CLI's).

    A source publishes SanctSound-style detection products
    (``detection_products``), or a collection's own annotation tables
    (``annotation_files`` read as ``annotation_format``: the Cornell
    soundscapes). Such a table names recordings across the collection, so
    after an ingest that added recordings (``new_recordings``) it is read
    again and replaces its earlier version (its rows for them are attached).
    """
    from .annotations.sync import attach_new_files

    options = dict(storage_options=getattr(source, "storage_options", None), store_options=store_options or {})
    tables = getattr(source, "annotation_files", None)
    if tables is not None:
        return attach_new_files(store, tables(), source.annotation_format, stream=source.name,
                                reattach=new_recordings, **options)
    products = getattr(source, "detection_products", None)
    if products is None:
        raise ConfigError(f"source {type(source).__name__} publishes no detection products or annotation tables")
    return attach_new_files(store, products(categories, resolutions), "sanctsound", **options)


def annotate_markdown(report: dict[str, Any]) -> str:
    """A Markdown summary of an ``AnnotateReport.as_dict()``, for a Prefect artifact."""
    attached = report["attached"]
    lines = [
        "| format | listed | new | already attached | changed | attached | events | outside the audio "
        "| rejected rows | failed | store snapshot |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        f"| {report['format']} | {report['listed']} | {report['new']} | {report['already']} "
        f"| {len(report['changed']) + len(report.get('replaced', []))} | {len(attached)} | {report['events']} | {report['outside_audio']} "
        f"| {report['rejected_rows']} | {len(report['failed'])} | `{report['snapshot_id'] or '-'}` |",
    ]
    if attached:
        lines += ["", "**Attached**", ""]
        lines += [f"- `{f['name']}`: {f['events']} events, {f['effort']} effort spans -> "
                  + ", ".join(f"`{s}`" for s in f["streams"])
                  + (f"; {f['outside_audio']} events outside the ingested audio (kept)" if f["outside_audio"] else "")
                  + (f"; {len(f['rejected'])} rows rejected" if f["rejected"] else "")
                  for f in attached]
    if report["no_stream"]:
        lines += ["", "**Outside the store's streams** (no stream of their sites; read again by the next run)", ""]
        lines += [f"- `{f['file']}`: " + ", ".join(f"{n} rows for {site}" for site, n in f["skipped_rows"].items())
                  for f in report["no_stream"][:100]]
    if report["failed"]:
        lines += ["", "**Failed** (tried again by the next run)", ""]
        lines += [f"- {f['reason']}" for f in report["failed"][:100]]
    if report.get("replaced"):
        lines += ["", "**Replaced** (changed since attached: the earlier version's rows removed)", ""]
        lines += [f"- `{url}`" for url in report["replaced"][:100]]
    if report["changed"]:
        lines += ["", "**Changed since attached** (not attached again)", ""]
        lines += [f"- `{c['file']}`: {c['reason']}" for c in report["changed"][:100]]
    rejected = [(f["name"], r) for f in attached for r in f["rejected"]]
    if rejected:
        lines += ["", "**Rejected rows**", ""]
        lines += [f"- `{name}` line {r['line']}: {r['reason']}" for name, r in rejected[:100]]
    return "\n".join(lines)
