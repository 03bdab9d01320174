"""The ``pamingest`` command line: ingest, info, report, annotate, pseudolabel, queue, review, export, gc, demo."""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import warnings

from .errors import ConcurrentWriteError, ConfigError, PamIngestError, first_line

# Exit codes (also the epilog of ``pamingest --help``).
EXIT_OK = 0
EXIT_INCOMPLETE = 1  # annotate: a file or rows of one could not be attached; pseudolabel: chunks left queued
EXIT_ERROR = 2  # an error: bad options or input, no store, a plug-in that cannot load (argparse's usage errors too)
EXIT_RETRY = 3  # other writers kept changing the same data and this run gave up (part of) its write: run it again
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT, as shells report it)

EXIT_CODES = f"""exit codes:
  {EXIT_OK}    done (recordings that failed to decode are listed in the report and the store)
  {EXIT_INCOMPLETE}    done in part: annotate could not attach a file or rejected rows of one (each
       listed with file, line and reason) or read a review table with no answer,
       pseudolabel left chunks queued; verify found a referenced recording changed
  {EXIT_ERROR}    error: bad options or input, no store, an unknown or broken plug-in, the Dask
       scheduler lost mid-run (nothing of the run committed: run it again)
  {EXIT_RETRY}    try again: other writers kept changing the same data; what could not land was not
       committed (ConcurrentWriteError, or ingest deferred files), and a new run picks it up
  {EXIT_INTERRUPTED}  interrupted
"""

# Warnings a user can do nothing about: zarr flags the PCodec (a numcodecs codec) of
# non-FLAC streams on every open. Hidden without -v, in this process and in the
# Dask worker processes (which start with this process's environment).
QUIET_WARNINGS = ("Numcodecs codecs are not in the Zarr version 3 specification",)


def _storage_options(args, prefix: str = "") -> dict:
    opts: dict = {}
    endpoint = getattr(args, f"{prefix}endpoint_url", None)
    if endpoint:
        opts["endpoint_url"] = endpoint
    if getattr(args, f"{prefix}anon", False):
        opts["anon"] = True
    return opts


def _client(args):
    if args.serial:
        return "serial"
    if getattr(args, "threads", False):
        return "threads"
    return args.scheduler  # None -> threads for a small job, else a LocalCluster (executor.choose)


def _progress(args) -> bool:
    return not getattr(args, "no_progress", False) and sys.stderr.isatty()


def _print_dashboard(report) -> None:
    if report.dashboard_link:
        print(f"dask dashboard: {report.dashboard_link}", file=sys.stderr)


# CLI flags -> constructor options of each source kind (the names of the
# pamingest.sources entry points); None means "not given": the source's default.
def _files_options(args) -> dict:
    return {"root": args.root, "template": args.template, "name": args.source_name, "site": args.site}


def _manifest_options(args) -> dict:
    if bool(args.manifest) == bool(args.file):
        raise PamIngestError("give a manifest, or --file with --start, one of the two")
    if args.file and not args.start:
        raise PamIngestError("--file needs --start (its UTC start, or seconds with --relative)")
    return {"manifest": args.manifest, "files": [(args.file, args.start)] if args.file else None,
            "root": args.root, "time_base": "relative" if args.relative else None, "name": args.source_name,
            "site": args.site}


def _orcasound_options(args) -> dict:
    options = {"nodes": args.node, "start": args.start, "end": args.end, "bucket": args.bucket}
    if not args.flac:
        options["capture_delay_s"] = args.capture_delay
        options["live"] = args.live or None
    return options


def _sanctsound_options(args) -> dict:
    return {"root": args.root, "sites": args.site, "deployments": args.deployment, "start": args.start,
            "end": args.end, "name": args.source_name}


def _cornell_options(args) -> dict:
    return {"collection": args.collection, "timezone": args.timezone, "api": args.zenodo_api,
            "name": args.source_name}


def _marmaudio_options(args) -> dict:
    return {"record": args.record, "api": args.zenodo_api, "slot_seconds": args.slot_seconds,
            "name": args.source_name}


def _onc_options(args) -> dict:
    # The token from the flag or the environment (the library reads none); never printed.
    return {"location": args.location, "start": args.start, "end": args.end, "api": args.onc_api,
            "partition": args.partition, "name": args.source_name,
            "token": args.token or os.environ.get("ONC_TOKEN") or None}


def _ncei_options(args) -> dict:
    return {"collection": args.collection, "root": args.root, "stations": args.station,
            "deployments": args.deployment, "start": args.start, "end": args.end, "name": args.source_name,
            "check_subchunks": not args.no_subchunk_check}


def _pacific_sound_options(args) -> dict:
    return {"product": args.product, "start": args.start, "end": args.end, "url": args.url,
            "metadata_url": args.metadata_url, "deployment_metadata_url": args.deployment_metadata_url,
            "serials": args.recorder, "name": args.source_name}


def cmd_ingest(args) -> int:
    """Any source kind: the flags become its options, the registry builds it (as a deployment's are)."""
    from .ingest import ingest
    from .orchestration import build_source

    kind = "orcasound-flac" if getattr(args, "flac", False) else args.kind
    options = {k: v for k, v in args.source_options(args).items() if v is not None}
    # Access to the recordings as given (an endpoint and --anon together are kept); no
    # flag: the source's own default (anonymous for the public archives).
    access = _storage_options(args)
    if access:
        options["storage_options"] = access
    source = build_source(kind, options)
    report = ingest(source, args.store, row_seconds=args.row_seconds, client=_client(args), n_workers=args.workers,
                    store_options=_storage_options(args, "store_"), retry_failed=args.retry_failed,
                    progress=_progress(args), quality=not args.no_quality, virtual=args.virtual)
    _print_dashboard(report)
    products = None
    if getattr(args, "detections", False):
        from .orchestration import attach_source_detections

        products = attach_source_detections(source, args.store, store_options=_storage_options(args, "store_"),
                                            new_recordings=report.ingested > 0)
    if args.json:
        out = report.as_dict()
        print(json.dumps({**out, "detections": products.as_dict()} if products else out, indent=2))
    else:
        print(report.summary() + (f"\ndetection products:\n{products.summary()}" if products else ""))
    if report.deferred:
        print(f"pamingest: {len(report.deferred)} files deferred: other writers kept changing their streams; "
              "run again to ingest them", file=sys.stderr)
        return EXIT_RETRY
    return EXIT_OK


def cmd_info(args) -> int:
    from .info import store_info

    info = store_info(args.store, _storage_options(args), snapshot=args.snapshot)
    print(info.format())
    return EXIT_OK


def cmd_verify(args) -> int:
    """Every object a virtual stream refers to, checked against its ETag/modification time and size."""
    from .store.repo import Store
    from .store.virtual import stale_objects

    root = Store.open(args.store, _storage_options(args, "store_")).root()
    stale = stale_objects(root, _storage_options(args))
    if args.json:
        print(json.dumps([{"stream": p, "url": u, "reason": r} for p, u, r in stale], indent=2))
    else:
        for path, url, reason in stale:
            print(f"{path}: {url}: {reason}")
        print(f"{len(stale)} referenced objects changed or missing" if stale
              else "every object the store's virtual streams refer to is as ingested")
    return EXIT_INCOMPLETE if stale else EXIT_OK


def cmd_report(args) -> int:
    from .report import report

    summary = report(args.store, args.out, snapshot=args.snapshot, storage_options=_storage_options(args),
                     ltsa_days=args.ltsa_days)
    print(json.dumps(summary.as_dict(), indent=2) if args.json else summary.summary())
    return EXIT_OK


def cmd_gc(args) -> int:
    import datetime as dt

    from .store.repo import Store

    expire = None
    if args.expire_days is not None:
        expire = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=args.expire_days)
    collected = Store.open(args.store, _storage_options(args)).collect_garbage(
        grace_seconds=args.grace_hours * 3600, expire_before=expire, dry_run=args.dry_run)
    print(json.dumps(collected.as_dict(), indent=2) if args.json else collected.summary())
    return EXIT_OK


def cmd_annotate(args) -> int:
    from .annotations import OverlapRule, Recording, attach

    options = _params(args.option, "--option")
    recording = Recording(args.recording or "", args.start, args.stream or "") if (args.recording or args.start) else None
    rule = None
    if args.min_overlap_seconds is not None or args.min_overlap_fraction is not None or args.include_unreviewed:
        d = OverlapRule()
        frac = d.min_fraction if args.min_overlap_fraction is None else (args.min_overlap_fraction or None)
        rule = OverlapRule(d.min_seconds if args.min_overlap_seconds is None else args.min_overlap_seconds, frac,
                           args.include_unreviewed)
    if args.new:
        from .annotations.sync import attach_new

        if recording is not None or rule is not None:
            raise PamIngestError("--new takes folders of tables that name their recordings: "
                                 "--recording, --start and overlap settings go with a plain annotate")
        synced = attach_new(args.store, args.files, args.format, pattern=args.pattern, options=options,
                            stream=args.stream, skip_unknown_streams=True, replace_changed=args.replace,
                            store_options=_storage_options(args), storage_options=_storage_options(args))
        print(json.dumps(synced.as_dict(), indent=2) if args.json else synced.summary())
        return EXIT_INCOMPLETE if synced.failed or synced.rejected_rows or synced.plan.changed else EXIT_OK
    report = attach(args.store, args.files, args.format, options=options, recording=recording, stream=args.stream,
                    rule=rule, skip_unknown_streams=args.skip_unknown_streams,
                    store_options=_storage_options(args), storage_options=_storage_options(args),
                    progress=_progress(args), replace=args.replace)
    print(json.dumps(report.as_dict(), indent=2) if args.json else report.summary())
    return EXIT_INCOMPLETE if report.failed or report.rejected_rows or report.unanswered_tables else EXIT_OK


def _params(items: list[str], flag: str = "--param") -> dict:
    """``KEY=VALUE`` options: values parsed as JSON where they are JSON, else kept as text."""
    params = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise PamIngestError(f"{flag} wants KEY=VALUE, got {item!r}")
        try:
            params[key.strip().replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            params[key.strip().replace("-", "_")] = value
    return params


def cmd_pseudolabel(args) -> int:
    from .labeling import pseudolabel

    report = pseudolabel(args.store, args.labeler, params=_params(args.param), tag=args.tag or "",
                         streams=args.stream, client=_client(args), n_workers=args.workers,
                         batch_rows=args.batch_rows, max_chunks=args.max_chunks, retry_failed=args.retry_failed,
                         skip_flagged=args.skip_flagged, commit_seconds=args.commit_seconds, store_options=_storage_options(args),
                         progress=_progress(args))
    _print_dashboard(report)
    print(json.dumps(report.as_dict(), indent=2) if args.json else report.summary())
    return EXIT_INCOMPLETE if report.unfinished else EXIT_OK


def cmd_hmd(args) -> int:
    from . import hmd

    report = hmd.compute_hmd(args.store, args.stream, args.start, args.end, sensitivity=args.sensitivity,
                             gain=args.gain, calibration_table=args.calibration, full_scale_volts=args.full_scale_volts,
                             channel=args.channel, client=_client(args), n_workers=args.workers,
                             store_options=_storage_options(args))
    print(json.dumps(report.as_dict(), indent=2) if args.json else report.summary())
    return EXIT_OK


def cmd_hmd_export(args) -> int:
    from . import hmd

    out = hmd.export_netcdf(args.store, args.stream, args.output, start=args.start, end=args.end,
                            store_options=_storage_options(args), quality_flag=not args.no_quality_flag)
    print(out)
    return EXIT_OK


def cmd_queue(args) -> int:
    from .labeling import queue

    rows = queue(args.store, args.labeler, params=_params(args.param), streams=args.stream,
                 store_options=_storage_options(args))
    if args.json:
        print(json.dumps([{"stream": q.stream, "rows": q.rows, "live": q.live, "annotated": q.annotated,
                           "scored": q.scored, "failed": q.failed, "queued": q.queued} for q in rows], indent=2))
        return EXIT_OK
    print(f"{'stream':50s} {'live':>8s} {'annotated':>9s} {'scored':>8s} {'failed':>6s} {'queued':>8s}")
    for q in rows:
        print(f"{q.stream:50s} {q.live:8d} {q.annotated:9d} {q.scored:8d} {q.failed:6d} {q.queued:8d}")
    return EXIT_OK


def cmd_review(args) -> int:
    from .labeling import review

    batch = review(args.store, args.labeler, args.out, n=args.n, strategy=args.strategy, label=args.label,
                   tag=args.tag or "", version=args.version, streams=args.stream, seed=args.seed,
                   store_options=_storage_options(args), progress=_progress(args))
    print(json.dumps(batch.as_dict(), indent=2) if args.json else batch.summary())
    return EXIT_OK


def cmd_export(args) -> int:
    from .export import export

    licenses = dict(item.split("=", 1) for item in args.license or [] if "=" in item)
    bad = [item for item in args.license or [] if "=" not in item]
    if bad:
        raise ConfigError(f"--license takes SOURCE=LICENSE, got {bad[0]!r}")
    report = export(args.store, args.out, args.format, snapshot=args.snapshot, seconds=args.seconds, hop=args.hop,
                    min_valid=args.min_valid, sample_rate=args.sample_rate, split_by=args.split_by,
                    splits=args.splits, seed=args.seed, max_per_label=args.max_per_label, taxa=args.taxa,
                    min_score=args.min_score, labels=args.label, streams=args.stream, shard_size=args.shard_size,
                    licenses=licenses, tasks=args.task, shots=args.shots, storage_options=_storage_options(args))
    print(json.dumps(report.as_dict(), indent=2) if args.json else report.summary())
    return EXIT_OK


def cmd_demo(args) -> int:
    from .demo import run_demo

    return run_demo(workdir=args.workdir, fixtures=args.fixtures or os.environ.get("PAMINGEST_FIXTURES"),
                    n_workers=args.workers)


def _ingest_options(q, time_range: bool = False) -> None:
    """Options every ``ingest`` subcommand shares: access to the recordings, the store, the run."""
    if time_range:
        q.add_argument("--start", help="UTC start of the recordings to ingest (e.g. 2019-12-20 or 2019-12-20T06:00)")
        q.add_argument("--end", help="UTC end (exclusive)")
    q.add_argument("--endpoint-url", help="S3-compatible endpoint of the recordings' bucket")
    q.add_argument("--anon", action="store_true", help="anonymous access to the recordings' bucket")
    q.add_argument("--store", required=True, help="store URL: path, s3://bucket/prefix, gs://...")
    q.add_argument("--store-endpoint-url", help="S3-compatible endpoint of the store's bucket")
    q.add_argument("--row-seconds", type=float, default=None, help="row length of new streams (default 10)")
    q.add_argument("--scheduler", help="Dask scheduler address (default: threads of this process when the "
                                        "new files total under 256 MB, else a LocalCluster)")
    q.add_argument("--workers", type=int, help="start a LocalCluster of this many workers, whatever the job's "
                                               "size (default: one per core, for jobs of 256 MB or more)")
    q.add_argument("--threads", action="store_true", help="run in threads of this process, whatever the job's size")
    q.add_argument("--serial", action="store_true", help="run in this process, one task at a time (debugging)")
    q.add_argument("--retry-failed", action="store_true", help="try again objects that failed before")
    q.add_argument("--virtual", action="store_true",
                   help="zero-copy: PCM WAV files on S3 or a local disk become rows that refer to their byte "
                        "ranges (checked against each object's ETag or modification time); other files are copied")
    q.add_argument("--no-quality", action="store_true",
                   help="no per-row quality statistics (with --virtual, the recordings' samples are then never read)")
    q.add_argument("--json", action="store_true", help="print the report as JSON")
    q.add_argument("--no-progress", action="store_true", help="no progress bar (shown when stderr is a terminal)")
    q.set_defaults(func=cmd_ingest, uses_dask=True)


def _run_options(q, scheduler_help: str, workers_help: str) -> None:
    """Where a store command's work runs, the store's endpoint, and JSON output (pseudolabel, hmd)."""
    q.add_argument("--scheduler", help=scheduler_help)
    q.add_argument("--workers", type=int, help=workers_help)
    q.add_argument("--serial", action="store_true", help="run in this process (debugging)")
    q.add_argument("--endpoint-url", help="S3-compatible endpoint of the store")
    q.add_argument("--anon", action="store_true")
    q.add_argument("--json", action="store_true", help="print the report as JSON")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pamingest", description=__doc__, epilog=EXIT_CODES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-v", "--verbose", action="store_true",
                   help="log progress details, Dask's warnings and zarr's; tracebacks with errors")
    sub = p.add_subparsers(dest="command", required=True)

    ing = sub.add_parser("ingest", help="ingest recordings into a store")
    ing_sub = ing.add_subparsers(dest="kind", required=True)
    f = ing_sub.add_parser("files", help="timestamped files under a folder or bucket prefix")
    f.add_argument("root", help="folder or URL: /data/dep1, s3://bucket/prefix, gs://bucket/prefix")
    f.add_argument("--template", required=True,
                   help="soundtrap | songmeter | audiomoth | sanctsound | sanctsound-clips | nrs | pifsc | mars | "
                        "mars-daily | orcasound-flac | a pattern such as '{site}_%%Y%%m%%d_%%H%%M%%S.wav'")
    f.add_argument("--source-name", default="files", help="first level of the store's groups (default: files)")
    f.add_argument("--site", help="site name when the template has no {site} field")
    _ingest_options(f)
    f.set_defaults(source_options=_files_options)

    m = ing_sub.add_parser("manifest", help="recordings without a time in their name: starts from a CSV "
                                            "manifest (file,start[,site]) or one --file with --start")
    m.add_argument("manifest", nargs="?", help="CSV manifest: path or URL")
    m.add_argument("--file", help="one recording instead of a manifest")
    m.add_argument("--start", help="with --file: its UTC start (seconds from the collection's zero with --relative)")
    m.add_argument("--root", help="folder of relative file names (default: the manifest's folder)")
    m.add_argument("--relative", action="store_true",
                   help="no absolute time: starts are seconds from the collection's zero (relative time base)")
    m.add_argument("--source-name", default="files", help="first level of the store's groups (default: files)")
    m.add_argument("--site", help="site of lines that name none (default: the file's folder name)")
    _ingest_options(m)
    m.set_defaults(source_options=_manifest_options)

    o = ing_sub.add_parser("orcasound", help="Orcasound live HLS sessions (or --flac archives)")
    o.add_argument("--node", action="append", required=True, help="node folder, e.g. rpi_orcasound_lab (repeatable)")
    o.add_argument("--bucket", default="audio-orcasound-net")
    o.add_argument("--flac", action="store_true", help="the node's FLAC archive instead of HLS")
    o.add_argument("--live", action="store_true",
                   help="only the node's newest sessions, without listing every session (to poll every minute)")
    o.add_argument("--capture-delay", type=float, default=0.0,
                   help="seconds added to PTS-derived times for the node's capture start-up (default 0)")
    _ingest_options(o, time_range=True)
    o.set_defaults(source_options=_orcasound_options)

    from .sources.ncei import COLLECTIONS
    from .sources.ncei import DEFAULT_ROOT as NCEI_ROOT
    from .sources.pacific_sound import CH01_SERIALS, PRODUCTS
    from .sources.sanctsound import DEFAULT_ROOT as SANCTSOUND_ROOT

    s = ing_sub.add_parser("sanctsound", help="NOAA SanctSound recordings (gs://noaa-passive-bioacoustic/sanctsound)")
    s.add_argument("--root", default=SANCTSOUND_ROOT, help=f"collection root or a copy of it (default {SANCTSOUND_ROOT})")
    s.add_argument("--site", action="append", help="site such as ci01 (repeat or comma-separate; default all)")
    s.add_argument("--deployment", action="append", help="deployment such as 02 or ci01_02 (repeat; default all)")
    s.add_argument("--source-name", default="sanctsound", help="first level of the store's groups")
    s.add_argument("--detections", action="store_true",
                   help="also attach the selected deployments' detection products (those not attached yet)")
    _ingest_options(s, time_range=True)
    s.set_defaults(source_options=_sanctsound_options)

    from .sources.zenodo import CORNELL_COLLECTIONS, ZENODO_API

    c = ing_sub.add_parser("cornell", help="a Cornell Lab fully annotated soundscape collection (Zenodo), read "
                                           "inside its zip by range requests; its annotations.csv attached")
    c.add_argument("collection", choices=sorted(CORNELL_COLLECTIONS),
                   help="; ".join(f"{k}: {v.title} (Zenodo {v.record})" for k, v in CORNELL_COLLECTIONS.items()))
    c.add_argument("--timezone", help="zone of file names without a trailing Z (default: the collection's own, "
                                      "e.g. Pacific/Honolulu for uhh); names ending in Z are UTC")
    c.add_argument("--zenodo-api", default=ZENODO_API, help=f"the records API (default {ZENODO_API})")
    c.add_argument("--source-name", default="cornell", help="first level of the store's groups")
    c.add_argument("--no-annotations", dest="detections", action="store_false",
                   help="do not attach the collection's annotations.csv after the audio")
    _ingest_options(c)
    c.set_defaults(source_options=_cornell_options, detections=True)

    from .sources.zenodo import MARMAUDIO_RECORD, MARMAUDIO_SLOT_SECONDS

    ma = ing_sub.add_parser("marmaudio", help="MarmAudio: one-call marmoset FLACs (Zenodo), placed in a relative "
                                              "time base by Annotations.tsv; the table attached")
    ma.add_argument("--record", default=MARMAUDIO_RECORD, help=f"Zenodo record (default {MARMAUDIO_RECORD})")
    ma.add_argument("--zenodo-api", default=ZENODO_API, help=f"the records API (default {ZENODO_API})")
    ma.add_argument("--slot-seconds", type=float, default=MARMAUDIO_SLOT_SECONDS,
                    help=f"spacing of the calls in the relative time base (default {MARMAUDIO_SLOT_SECONDS})")
    ma.add_argument("--source-name", default="marmaudio", help="first level of the store's groups")
    ma.add_argument("--no-annotations", dest="detections", action="store_false",
                    help="do not attach Annotations.tsv after the audio")
    _ingest_options(ma)
    ma.set_defaults(source_options=_marmaudio_options, detections=True)

    from .sources.onc import ONC_API

    oc = ing_sub.add_parser("onc", help="Ocean Networks Canada's archive (Oceans 3.0 API): a location's hydrophone "
                                        "audio, e.g. Barkley Canyon (BACAX)")
    oc.add_argument("--location", default="BACAX", help="location code (default BACAX, Barkley Canyon Axis)")
    oc.add_argument("--token", help="Oceans 3.0 token (default: the ONC_TOKEN environment variable, which "
                                    "keeps it out of the process list)")
    oc.add_argument("--partition", choices=("day", "month"), default="day", help="one listing per UTC day or month")
    oc.add_argument("--onc-api", default=ONC_API, help=f"the API root (default {ONC_API})")
    oc.add_argument("--source-name", default="onc", help="first level of the store's groups")
    _ingest_options(oc, time_range=True)
    oc.set_defaults(source_options=_onc_options)

    n = ing_sub.add_parser("ncei", help=f"NOAA NCEI NRS or PIFSC recordings ({NCEI_ROOT})")
    n.add_argument("collection", choices=sorted(COLLECTIONS))
    n.add_argument("--root", default=NCEI_ROOT, help=f"archive root or a copy of it (default {NCEI_ROOT})")
    n.add_argument("--station", action="append", help="NRS station (11) or PIFSC project (pipan); repeat")
    n.add_argument("--deployment", action="append", help="deployment folder or its number; repeat")
    n.add_argument("--no-subchunk-check", action="store_true",
                   help="PIFSC: do not read XWAV directories (files timed by name; duty-cycled files mistimed)")
    n.add_argument("--source-name", default="ncei", help="first level of the store's groups")
    _ingest_options(n, time_range=True)
    n.set_defaults(source_options=_ncei_options)

    ps = ing_sub.add_parser("pacific-sound", help="MBARI Pacific Sound recordings (AWS, public)")
    ps.add_argument("product", choices=sorted(PRODUCTS))
    ps.add_argument("--url", help="the product's bucket URL, replacing the default (256khz: keep {year})")
    ps.add_argument("--metadata-url", help="daily metadata prefix (256khz); '' to ignore it")
    ps.add_argument("--deployment-metadata-url", help="deployment JSON kept as stream attributes")
    ps.add_argument("--recorder", action="append",
                    help=f"ch01 recorder serial to list (repeat; default {', '.join(CH01_SERIALS)})")
    ps.add_argument("--source-name", default="pacific-sound", help="first level of the store's groups")
    _ingest_options(ps, time_range=True)
    ps.set_defaults(source_options=_pacific_sound_options)


    info = sub.add_parser("info", help="streams, hours, failures and history of a store")
    info.add_argument("store")
    info.add_argument("--snapshot")
    info.add_argument("--endpoint-url")
    info.add_argument("--anon", action="store_true")
    info.set_defaults(func=cmd_info)

    ver = sub.add_parser("verify", help="check the recordings a virtual stream refers to against the versions "
                                        "ingested (exit 1 if one changed or went away)")
    ver.add_argument("store")
    ver.add_argument("--endpoint-url", help="S3-compatible endpoint of the recordings' bucket")
    ver.add_argument("--anon", action="store_true", help="anonymous access to the recordings' bucket")
    ver.add_argument("--store-endpoint-url", help="S3-compatible endpoint of the store's bucket")
    ver.add_argument("--json", action="store_true")
    ver.set_defaults(func=cmd_verify)

    rep = sub.add_parser("report", help="a static HTML page: coverage, LTSA per day, failures, labels, queue, history")
    rep.add_argument("store")
    rep.add_argument("-o", "--out", required=True, help="the page to write (path or URL), e.g. report.html")
    rep.add_argument("--snapshot", help="report on this snapshot (default: the tip of main)")
    rep.add_argument("--ltsa-days", type=int, default=7, help="LTSA images of each stream's last N days (default 7)")
    rep.add_argument("--endpoint-url")
    rep.add_argument("--anon", action="store_true")
    rep.add_argument("--json", action="store_true")
    rep.set_defaults(func=cmd_report)

    gc = sub.add_parser("gc", help="delete the data no snapshot needs (rows of runs that never landed; "
                                   "old history on request)")
    gc.add_argument("store")
    gc.add_argument("--grace-hours", type=float, default=168.0,
                    help="keep whatever was written in the last N hours: a run in flight writes its rows "
                         "before its commit (default 168, a week)")
    gc.add_argument("--expire-days", type=float,
                    help="also drop history older than N days: those snapshots can no longer be opened")
    gc.add_argument("--dry-run", action="store_true", help="count, delete nothing")
    gc.add_argument("--json", action="store_true")
    gc.add_argument("--endpoint-url")
    gc.set_defaults(func=cmd_gc)

    ann = sub.add_parser("annotate", help="attach annotation files to a store's streams (exit 1 if a file or a row failed)")
    ann.add_argument("store")
    ann.add_argument("files", nargs="+", metavar="FILE", help="annotation files (paths or URLs)")
    ann.add_argument("--format", required=True,
                     help="raven | audacity | sanctsound | podcast-tsv | orcahello | pods-ai | podcast-json")
    ann.add_argument("--new", action="store_true",
                     help="FILE may be folders or prefixes: attach the files under them the store has not "
                          "attached yet (for cron; a file changed since it was attached is reported, or replaced "
                          "with --replace)")
    ann.add_argument("--pattern", help="with --new: glob on file names (default: the format's suffixes)")
    ann.add_argument("--replace", action="store_true",
                     help="a file attached before under the same name (an earlier version) is replaced: its "
                          "events and effort are removed first, in the same commit (with --new: changed files)")
    ann.add_argument("--recording", help="recording the (file-relative) annotations belong to: URL or file name")
    ann.add_argument("--start", help="its UTC start (default: looked up in the store's files table)")
    ann.add_argument("--stream", help="stream path or prefix the annotations belong to")
    ann.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                     help="reader setting, e.g. label_column=Species, resolution=1h, label=orca (JSON values)")
    ann.add_argument("--min-overlap-seconds", type=float, help="overlap that labels a chunk (default 0.25)")
    ann.add_argument("--min-overlap-fraction", type=float,
                     help="fraction of an event that labels a chunk (default 0.5; 0 disables)")
    ann.add_argument("--include-unreviewed", action="store_true", help="let machine labels make positives")
    ann.add_argument("--skip-unknown-streams", action="store_true",
                     help="skip rows for sites the store has no stream of instead of failing the file")
    ann.add_argument("--endpoint-url", help="S3-compatible endpoint of the store (and annotation files)")
    ann.add_argument("--anon", action="store_true")
    ann.add_argument("--json", action="store_true", help="print the report as JSON")
    ann.add_argument("--no-progress", action="store_true", help="no progress bar (shown when stderr is a terminal)")
    ann.set_defaults(func=cmd_annotate)

    lab = sub.add_parser("pseudolabel", help="score the store's unannotated chunks with a labeler (on Dask)")
    lab.add_argument("store")
    lab.add_argument("--labeler", required=True,
                     help="NAME[:VARIANT]: energy:killer-whale | energy:humpback | energy:fin-whale | "
                          "energy:blue-whale | energy:vessel | birdnet | a pamingest.labelers entry point")
    lab.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                     help="labeler setting, e.g. threshold_db=8 (JSON values)")
    lab.add_argument("--tag", help="name a variant with other parameters (queued as another labeler)")
    lab.add_argument("--stream", action="append", help="stream path or prefix (repeat; default all)")
    lab.add_argument("--batch-rows", type=int, default=32, help="chunks per task (default 32)")
    lab.add_argument("--commit-seconds", type=float, default=2.0,
                     help="commit finished batches together at most this often (default 2; 0: every batch)")
    lab.add_argument("--max-chunks", type=int, help="score at most this many chunks in this run")
    lab.add_argument("--retry-failed", action="store_true", help="queue again chunks whose labelling failed")
    lab.add_argument("--skip-flagged", nargs="?", const="all", metavar="FLAGS",
                     help="leave out chunks with quality flags: all (default) or some of "
                          "clipped,dropout,silent,dc_offset")
    _run_options(lab, "Dask scheduler address (default: a LocalCluster)", "LocalCluster workers (default: one per core)")
    lab.add_argument("--no-progress", action="store_true", help="no progress bar (shown when stderr is a terminal)")
    lab.set_defaults(func=cmd_pseudolabel, uses_dask=True)

    hm = sub.add_parser("hmd", help="1-minute hybrid millidecade spectra of a stream (pbp's method), into the store")
    hm.add_argument("store")
    hm.add_argument("--stream", required=True, help="stream path (pamingest info lists them)")
    hm.add_argument("--start", help="UTC start (default: the stream's first audio)")
    hm.add_argument("--end", help="UTC end (default: the stream's last audio)")
    hm.add_argument("--sensitivity", type=float, help="flat hydrophone sensitivity, dB re 1 V/uPa (e.g. -176); "
                                                     "default: the stream's deployment metadata, else uncalibrated")
    hm.add_argument("--gain", type=float, help="recorder gain in dB (default 0)")
    hm.add_argument("--calibration", help="CSV of frequency (Hz), sensitivity (dB re 1 V/uPa), interpolated")
    hm.add_argument("--full-scale-volts", type=float, help="volts at digital full scale (default 1)")
    hm.add_argument("--channel", type=int, default=0, help="channel (default 0, as pbp)")
    _run_options(hm, "Dask scheduler address (default: threads or a LocalCluster by size)", "LocalCluster workers")
    hm.set_defaults(func=cmd_hmd, uses_dask=True)

    hx = sub.add_parser("hmd-export", help="a stream's stored HMD spectra as the netCDF pbp writes")
    hx.add_argument("store")
    hx.add_argument("--stream", required=True)
    hx.add_argument("-o", "--output", required=True, help="netCDF file to write")
    hx.add_argument("--start", help="UTC start (default: all stored minutes)")
    hx.add_argument("--end", help="UTC end")
    hx.add_argument("--no-quality-flag", action="store_true", help="leave out quality_flag (2: not evaluated)")
    hx.add_argument("--endpoint-url", help="S3-compatible endpoint of the store")
    hx.add_argument("--anon", action="store_true")
    hx.set_defaults(func=cmd_hmd_export)

    qu = sub.add_parser("queue", help="per stream: chunks queued, scored, annotated for a labeler")
    qu.add_argument("store")
    qu.add_argument("--labeler", required=True)
    qu.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE")
    qu.add_argument("--stream", action="append")
    qu.add_argument("--endpoint-url")
    qu.add_argument("--anon", action="store_true")
    qu.add_argument("--json", action="store_true")
    qu.set_defaults(func=cmd_queue)

    rv = sub.add_parser("review", help="write a review batch: Raven tables + FLAC clips of chunks to check")
    rv.add_argument("store")
    rv.add_argument("--labeler", required=True, help="labeler whose scores rank the chunks")
    rv.add_argument("--n", type=int, default=50, help="chunks in the batch (default 50)")
    rv.add_argument("--strategy", choices=["uncertainty", "top", "random"], default="uncertainty")
    rv.add_argument("--out", required=True, help="folder for the tables and clips")
    rv.add_argument("--label", help="rank by this class only")
    rv.add_argument("--tag")
    rv.add_argument("--version", help="labeler version whose scores to use")
    rv.add_argument("--stream", action="append")
    rv.add_argument("--seed", type=int, default=0, help="seed of --strategy random")
    rv.add_argument("--endpoint-url")
    rv.add_argument("--anon", action="store_true")
    rv.add_argument("--json", action="store_true")
    rv.add_argument("--no-progress", action="store_true", help="no progress bar (shown when stderr is a terminal)")
    rv.set_defaults(func=cmd_review)

    ex = sub.add_parser("export", help="training data: labelled clips as hf, naturelm, icl, verl or webdataset")
    ex.add_argument("store")
    ex.add_argument("out", help="output folder (local path or fsspec URL)")
    ex.add_argument("--format", default="hf", help="hf (default), naturelm, icl, verl, webdataset")
    ex.add_argument("--snapshot", help="snapshot to export (default: the tip of main now)")
    ex.add_argument("--seconds", type=float, default=10.0, help="clip length (default 10)")
    ex.add_argument("--hop", type=float, help="step between clips (default: the clip length)")
    ex.add_argument("--min-valid", type=float, default=1.0, help="least fraction of a clip holding audio (default 1)")
    ex.add_argument("--sample-rate", type=int, help="resample the audio (default: the stored rate, lossless)")
    ex.add_argument("--split-by", choices=["site", "deployment", "day", "stream"], default="site")
    ex.add_argument("--splits", help="NAME=FRACTION,... (default train=0.8,validation=0.1,test=0.1)")
    ex.add_argument("--seed", type=int, default=0)
    ex.add_argument("--max-per-label", type=int, help="at most this many clips per present label and split")
    ex.add_argument("--taxa", help="label -> taxon table (JSON or CSV) over the built-in one")
    ex.add_argument("--min-score", type=float, help="labeller scores from this are weak positives (default: unused)")
    ex.add_argument("--label", action="append", help="only this label (repeatable)")
    ex.add_argument("--stream", action="append", help="only this stream (repeatable)")
    ex.add_argument("--shard-size", type=int, default=1000, help="clips per shard (default 1000)")
    ex.add_argument("--license", action="append", metavar="SOURCE=LICENSE", help="licence of a source's audio")
    ex.add_argument("--task", action="append", help="naturelm/verl task (repeatable; default all)")
    ex.add_argument("--shots", type=int, default=2, help="shots per icl row (default 2)")
    ex.add_argument("--endpoint-url")
    ex.add_argument("--anon", action="store_true")
    ex.add_argument("--json", action="store_true")
    ex.set_defaults(func=cmd_export)

    demo = sub.add_parser("demo", help="build the demo store (make demo's, without Prefect): the fixture recordings "
                                        "from a local S3 server, ingested and labelled (no network)")
    demo.add_argument("--workdir", default=".demo", help="where the demo store is written (default .demo)")
    demo.add_argument("--fixtures", help="fixture folder (default: $PAMINGEST_FIXTURES or ../shared/fixtures)")
    demo.add_argument("--workers", type=int, default=2)
    demo.set_defaults(func=cmd_demo, uses_dask=True)
    return p


def _quiet(uses_dask: bool) -> None:
    """Only the report, the progress bar, the dashboard line and errors on a terminal (no -v)."""
    for text in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=re.escape(text))
    # Worker processes start with this environment; -W/PYTHONWARNINGS take the message as literal text.
    extra = [f"ignore:{text}" for text in QUIET_WARNINGS]
    os.environ["PYTHONWARNINGS"] = ",".join([w for w in [os.environ.get("PYTHONWARNINGS", "")] if w] + extra)
    if uses_dask:
        # Dask logs every cluster start and stop at INFO, and closed connections (with
        # tracebacks) as the cluster shuts down; what went wrong with the work is in the
        # report. local_cluster() gives its worker processes the same level.
        from .executor import quiet_dask

        quiet_dask(logging.CRITICAL)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        _quiet(getattr(args, "uses_dask", False))
    try:
        return args.func(args)
    except ConcurrentWriteError as exc:
        _error(args, str(exc))  # says that nothing was committed and to run again
        return EXIT_RETRY
    except (PamIngestError, OSError) as exc:
        # PamIngestError: what pamingest raises on purpose (bad options, input, plug-ins, store).
        # OSError: a path or bucket that cannot be read or written, a scheduler that does not answer.
        _error(args, str(exc) or type(exc).__name__)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("pamingest: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BaseException as exc:
        if type(exc).__name__ == "NoCredentialsError":  # botocore: a private bucket, or a public one without --anon
            _error(args, "no credentials for the bucket: for a public bucket pass --anon; otherwise set "
                         "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE")
            return EXIT_ERROR
        # Icechunk's errors (a snapshot id that does not exist, storage it cannot reach) and the
        # panics of its Rust core (a store folder that cannot be created; a BaseException) are
        # about the store the user named, not bugs of pamingest.
        if type(exc).__module__.split(".")[0] not in ("icechunk", "pyo3_runtime"):
            raise
        _error(args, first_line(str(exc)) or type(exc).__name__)
        return EXIT_ERROR


def _error(args, message: str) -> None:
    if args.verbose:
        import traceback

        traceback.print_exc()
    print(f"pamingest: error: {message}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
