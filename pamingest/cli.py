"""The ``pamingest`` command line: ingest, info, annotate, pseudolabel, queue, review, demo."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from .errors import PamIngestError


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
    return args.scheduler  # None -> LocalCluster


def cmd_ingest_files(args) -> int:
    from .sources.files import TimestampedFiles

    source = TimestampedFiles(args.root, args.template, name=args.source_name, site=args.site,
                              storage_options=_storage_options(args))
    return _run_ingest(args, source)


def cmd_ingest_orcasound(args) -> int:
    from .ingest import ingest
    from .sources.orcasound import OrcasoundFLAC, OrcasoundHLS

    options = _storage_options(args) or {}
    if not args.endpoint_url:
        options.setdefault("anon", True)
    kind = OrcasoundFLAC if args.flac else OrcasoundHLS
    extra = {} if args.flac else {"capture_delay_s": args.capture_delay}
    source = kind(args.node, start=args.start, end=args.end, bucket=args.bucket, storage_options=options, **extra)
    return _run_ingest(args, source)


def _run_ingest(args, source) -> int:
    from .ingest import ingest

    report = ingest(source, args.store, row_seconds=args.row_seconds, client=_client(args), n_workers=args.workers,
                    store_options=_storage_options(args, "store_"), retry_failed=args.retry_failed,
                    progress=not args.no_progress and sys.stderr.isatty())
    if report.dashboard_link:
        print(f"dask dashboard: {report.dashboard_link}", file=sys.stderr)
    print(json.dumps(report.as_dict(), indent=2) if args.json else report.summary())
    return 0


def cmd_ingest_sanctsound(args) -> int:
    from .sources.sanctsound import SanctSound

    # No access options given: the source's own default (anonymous for the public bucket).
    source = SanctSound(args.root, sites=args.site, deployments=args.deployment, start=args.start, end=args.end,
                        storage_options=_storage_options(args) or None, name=args.source_name)
    return _run_ingest(args, source)


def cmd_ingest_ncei(args) -> int:
    from .sources.ncei import Ncei

    source = Ncei(args.collection, args.root, stations=args.station, deployments=args.deployment,
                  start=args.start, end=args.end, storage_options=_storage_options(args) or None,
                  name=args.source_name, check_subchunks=not args.no_subchunk_check)
    return _run_ingest(args, source)


def cmd_ingest_pacific_sound(args) -> int:
    from .sources.pacific_sound import CH01_SERIALS, PacificSound

    source = PacificSound(args.product, start=args.start, end=args.end, url=args.url,
                          metadata_url=args.metadata_url, deployment_metadata_url=args.deployment_metadata_url,
                          serials=args.recorder or CH01_SERIALS,
                          storage_options=_storage_options(args) or None, name=args.source_name)
    return _run_ingest(args, source)


def cmd_info(args) -> int:
    from .info import store_info

    info = store_info(args.store, _storage_options(args), snapshot=args.snapshot)
    print(info.format())
    return 0


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
    report = attach(args.store, args.files, args.format, options=options, recording=recording, stream=args.stream,
                    rule=rule, skip_unknown_streams=args.skip_unknown_streams,
                    store_options=_storage_options(args), storage_options=_storage_options(args))
    print(json.dumps(report.as_dict(), indent=2) if args.json else report.summary())
    return 1 if report.failed else 0


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
                         commit_seconds=args.commit_seconds, store_options=_storage_options(args))
    if report.dashboard_link:
        print(f"dask dashboard: {report.dashboard_link}", file=sys.stderr)
    print(json.dumps(report.as_dict(), indent=2) if args.json else report.summary())
    return 1 if report.unfinished else 0


def cmd_queue(args) -> int:
    from .labeling import queue

    rows = queue(args.store, args.labeler, params=_params(args.param), streams=args.stream,
                 store_options=_storage_options(args))
    if args.json:
        print(json.dumps([{"stream": q.stream, "rows": q.rows, "live": q.live, "annotated": q.annotated,
                           "scored": q.scored, "failed": q.failed, "queued": q.queued} for q in rows], indent=2))
        return 0
    print(f"{'stream':50s} {'live':>8s} {'annotated':>9s} {'scored':>8s} {'failed':>6s} {'queued':>8s}")
    for q in rows:
        print(f"{q.stream:50s} {q.live:8d} {q.annotated:9d} {q.scored:8d} {q.failed:6d} {q.queued:8d}")
    return 0


def cmd_review(args) -> int:
    from .labeling import review

    batch = review(args.store, args.labeler, args.out, n=args.n, strategy=args.strategy, label=args.label,
                   tag=args.tag or "", version=args.version, streams=args.stream, seed=args.seed,
                   store_options=_storage_options(args))
    print(json.dumps(batch.as_dict(), indent=2) if args.json else batch.summary())
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    return run_demo(workdir=args.workdir, fixtures=args.fixtures, n_workers=args.workers)


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
    q.add_argument("--scheduler", help="Dask scheduler address (default: a LocalCluster)")
    q.add_argument("--workers", type=int, help="LocalCluster workers (default: one per core)")
    q.add_argument("--serial", action="store_true", help="run in this process (debugging)")
    q.add_argument("--retry-failed", action="store_true", help="try again objects that failed before")
    q.add_argument("--json", action="store_true", help="print the report as JSON")
    q.add_argument("--no-progress", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pamingest", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = p.add_subparsers(dest="command", required=True)

    ing = sub.add_parser("ingest", help="ingest recordings into a store")
    ing_sub = ing.add_subparsers(dest="source", required=True)
    f = ing_sub.add_parser("files", help="timestamped files under a folder or bucket prefix")
    f.add_argument("root", help="folder or URL: /data/dep1, s3://bucket/prefix, gs://bucket/prefix")
    f.add_argument("--template", required=True,
                   help="soundtrap | songmeter | audiomoth | sanctsound | sanctsound-clips | nrs | pifsc | mars | "
                        "mars-daily | orcasound-flac | a pattern such as '{site}_%%Y%%m%%d_%%H%%M%%S.wav'")
    f.add_argument("--source-name", default="files", help="first level of the store's groups (default: files)")
    f.add_argument("--site", help="site name when the template has no {site} field")
    _ingest_options(f)
    f.set_defaults(func=cmd_ingest_files)

    o = ing_sub.add_parser("orcasound", help="Orcasound live HLS sessions (or --flac archives)")
    o.add_argument("--node", action="append", required=True, help="node folder, e.g. rpi_orcasound_lab (repeatable)")
    o.add_argument("--bucket", default="audio-orcasound-net")
    o.add_argument("--flac", action="store_true", help="the node's FLAC archive instead of HLS")
    o.add_argument("--capture-delay", type=float, default=0.0,
                   help="seconds added to PTS-derived times for the node's capture start-up (default 0)")
    _ingest_options(o, time_range=True)
    o.set_defaults(func=cmd_ingest_orcasound)

    from .sources.ncei import COLLECTIONS
    from .sources.ncei import DEFAULT_ROOT as NCEI_ROOT
    from .sources.pacific_sound import CH01_SERIALS, PRODUCTS
    from .sources.sanctsound import DEFAULT_ROOT as SANCTSOUND_ROOT

    s = ing_sub.add_parser("sanctsound", help="NOAA SanctSound recordings (gs://noaa-passive-bioacoustic/sanctsound)")
    s.add_argument("--root", default=SANCTSOUND_ROOT, help=f"collection root or a copy of it (default {SANCTSOUND_ROOT})")
    s.add_argument("--site", action="append", help="site such as ci01 (repeat or comma-separate; default all)")
    s.add_argument("--deployment", action="append", help="deployment such as 02 or ci01_02 (repeat; default all)")
    s.add_argument("--source-name", default="sanctsound", help="first level of the store's groups")
    _ingest_options(s, time_range=True)
    s.set_defaults(func=cmd_ingest_sanctsound)

    n = ing_sub.add_parser("ncei", help=f"NOAA NCEI NRS or PIFSC recordings ({NCEI_ROOT})")
    n.add_argument("collection", choices=sorted(COLLECTIONS))
    n.add_argument("--root", default=NCEI_ROOT, help=f"archive root or a copy of it (default {NCEI_ROOT})")
    n.add_argument("--station", action="append", help="NRS station (11) or PIFSC project (pipan); repeat")
    n.add_argument("--deployment", action="append", help="deployment folder or its number; repeat")
    n.add_argument("--no-subchunk-check", action="store_true",
                   help="PIFSC: do not read XWAV directories (files timed by name; duty-cycled files mistimed)")
    n.add_argument("--source-name", default="ncei", help="first level of the store's groups")
    _ingest_options(n, time_range=True)
    n.set_defaults(func=cmd_ingest_ncei)

    ps = ing_sub.add_parser("pacific-sound", help="MBARI Pacific Sound recordings (AWS, public)")
    ps.add_argument("product", choices=sorted(PRODUCTS))
    ps.add_argument("--url", help="the product's bucket URL, replacing the default (256khz: keep {year})")
    ps.add_argument("--metadata-url", help="daily metadata prefix (256khz); '' to ignore it")
    ps.add_argument("--deployment-metadata-url", help="deployment JSON kept as stream attributes")
    ps.add_argument("--recorder", action="append",
                    help=f"ch01 recorder serial to list (repeat; default {', '.join(CH01_SERIALS)})")
    ps.add_argument("--source-name", default="pacific-sound", help="first level of the store's groups")
    _ingest_options(ps, time_range=True)
    ps.set_defaults(func=cmd_ingest_pacific_sound)


    info = sub.add_parser("info", help="streams, hours, failures and history of a store")
    info.add_argument("store")
    info.add_argument("--snapshot")
    info.add_argument("--endpoint-url")
    info.add_argument("--anon", action="store_true")
    info.set_defaults(func=cmd_info)

    ann = sub.add_parser("annotate", help="attach annotation files to a store's streams (exit 1 if a file failed)")
    ann.add_argument("store")
    ann.add_argument("files", nargs="+", metavar="FILE", help="annotation files (paths or URLs)")
    ann.add_argument("--format", required=True,
                     help="raven | audacity | sanctsound | podcast-tsv | orcahello | pods-ai | podcast-json")
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
    lab.add_argument("--scheduler", help="Dask scheduler address (default: a LocalCluster)")
    lab.add_argument("--workers", type=int, help="LocalCluster workers (default: one per core)")
    lab.add_argument("--serial", action="store_true", help="run in this process (debugging)")
    lab.add_argument("--endpoint-url", help="S3-compatible endpoint of the store")
    lab.add_argument("--anon", action="store_true")
    lab.add_argument("--json", action="store_true", help="print the report as JSON")
    lab.set_defaults(func=cmd_pseudolabel)

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
    rv.set_defaults(func=cmd_review)

    demo = sub.add_parser("demo", help="ingest the fixture recordings from a local S3 server (no network)")
    demo.add_argument("--workdir", default=".demo", help="where the demo store is written (default .demo)")
    demo.add_argument("--fixtures", help="fixture folder (default: $PAMINGEST_FIXTURES or ../shared/fixtures)")
    demo.add_argument("--workers", type=int, default=2)
    demo.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except PamIngestError as exc:
        print(f"pamingest: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
