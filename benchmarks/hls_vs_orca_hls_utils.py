"""Orcasound ingest against Orcasound's own reader (orca-hls-utils), on one local bucket.

One moto S3 server on 127.0.0.1 serves one Orcasound HLS session in the real
bucket layout: ``../shared/bench/orcabucket.py`` (N restamped copies of the
fixture segments, 10 s of 48 kHz stereo AAC each, ``live.m3u8``,
``latest.txt``; default 180 segments = 30 min). The two tools then take turns
on it, each repeat in alternating order:

- ``orca_hls_utils``: ``../shared/bench/orca_hls_utils_anchor.py`` in a
  subprocess: ``DateRangeHLSStream`` -> 60 s WAV clips, one ``ffmpeg`` process
  per clip (the ``imageio-ffmpeg`` binary, put on PATH as ``ffmpeg``). Its own
  timed region: listing through the last clip (its imports and interpreter
  start are *not* in it).
- ``pamingest``: ``pamingest ingest orcasound --node ... --endpoint-url ...
  --store NEW`` in a subprocess, the command as a user types it, timed from
  outside: interpreter start, imports, listing, probing, decoding, FLAC
  encoding, writing and the commit all count. Its ``elapsed`` (the
  ``ingest()`` call alone, comparable to the anchor's timed region) is
  reported too.
- ``pamingest_workers_2`` (information): the same with ``--workers 2``, i.e.
  a LocalCluster started for the job.

Every pamingest run must ingest every segment into a fresh store; every
anchor run must write the session's 60 s clips (the anchor checks them).
Target (issue #11): pamingest's wall throughput >= 1.5x orca-hls-utils', on
the medians of the repeats during which other processes used < 0.25 cores
(all repeats if none was that quiet).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402

log = logging.getLogger("pamingest.bench")
DEFAULT_BENCH_DIR = c.BENCH_DIR.parent.parent / "shared" / "bench"
TARGET = 1.5


def _extra(parser) -> None:
    parser.add_argument("--segments", type=int, default=None, help="session length in 10 s segments "
                        "(default 180; quick 30)")
    parser.add_argument("--repeats", type=int, default=None, help="alternating repeats (default 5; quick 1)")
    parser.add_argument("--bench-dir", default=str(DEFAULT_BENCH_DIR),
                        help="folder holding orcabucket.py and orca_hls_utils_anchor.py")
    parser.add_argument("--no-workers", action="store_true", help="skip the --workers 2 variant")
    parser.add_argument("--wait-quiet", type=float, default=None, help="wait up to S s for a quiet machine "
                        "before each repeat (default 60; quick 0)")


def _ffmpeg_on_path(tmp: Path) -> dict:
    """An environment whose PATH has the imageio-ffmpeg binary as ``ffmpeg`` (orca-hls-utils calls it so)."""
    import imageio_ffmpeg

    bin_dir = tmp / "bin"
    bin_dir.mkdir(exist_ok=True)
    link = bin_dir / "ffmpeg"
    if not link.exists():
        link.symlink_to(imageio_ffmpeg.get_ffmpeg_exe())
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}


def run_anchor(bench_dir: Path, endpoint: str, segments: int, env: dict) -> dict:
    meter = c.CpuMeter()
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(bench_dir / "orca_hls_utils_anchor.py"), "--segments", str(segments),
                           "--endpoint", endpoint], capture_output=True, text=True, env=env, timeout=900)
    outer = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"orca-hls-utils anchor failed ({proc.returncode}): {proc.stderr[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"wall_s": result["wall_s"], "process_wall_s": round(outer, 3), "audio_s": result["audio_s"],
            "clips": result["clips"], **meter.read()}


def run_pamingest(endpoint: str, store: Path, segments: int, extra: list[str]) -> dict:
    pamingest = Path(sys.executable).with_name("pamingest")
    cmd = [str(pamingest), "ingest", "orcasound", "--node", "rpi_orcasound_lab", "--endpoint-url", endpoint,
           "--store", str(store), "--no-progress", "--json", *extra]
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}
    meter = c.CpuMeter()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    report = json.loads(proc.stdout[proc.stdout.index("{"):])
    if report["ingested"] != segments or report["failed"]:
        raise RuntimeError(f"pamingest ingested {report['ingested']} of {segments} segments: {report['failed'][:3]}")
    shutil.rmtree(store, ignore_errors=True)
    return {"wall_s": round(wall, 3), "ingest_call_s": round(report["elapsed_seconds"], 3),
            "audio_s": round(report["audio_hours"] * 3600, 3), **meter.read()}


def _median(runs: list[dict], key: str) -> float | None:
    values = [r[key] for r in runs]
    return round(statistics.median(values), 3) if values else None


def main() -> None:
    args = c.parse_args(__doc__, _extra)
    segments = args.segments or (30 if args.quick else 180)
    repeats = args.repeats or (1 if args.quick else 5)
    wait = args.wait_quiet if args.wait_quiet is not None else (0 if args.quick else 60)
    bench_dir = Path(args.bench_dir).resolve()
    sys.path.insert(0, str(bench_dir))
    import orcabucket  # ../shared/bench: the reference harness's bucket

    from importlib.metadata import version

    variants = ["orca_hls_utils", "pamingest"] + ([] if args.no_workers else ["pamingest_workers_2"])
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    quiet: list[bool] = []
    with c.TempDir("pam-vs-orca-", args.tmpdir, args.keep) as tmp:
        env = _ffmpeg_on_path(tmp)
        endpoint, server = orcabucket.serve(segments)
        try:
            for r in range(repeats):
                if wait:
                    c.wait_for_quiet(wait)
                order = variants if r % 2 == 0 else list(reversed(variants))
                busy = []
                for v in order:
                    if v == "orca_hls_utils":
                        res = run_anchor(bench_dir, endpoint, segments, env)
                    else:
                        extra = ["--workers", "2"] if v == "pamingest_workers_2" else []
                        res = run_pamingest(endpoint, tmp / f"store-{v}-{r}", segments, extra)
                    runs[v].append(res)
                    busy.append(res["other_cores"] or 0.0)
                    log.info("repeat %d %s: %.2f s wall (other processes %.2f cores)", r, v, res["wall_s"],
                             res["other_cores"] or 0.0)
                quiet.append(max(busy) < 0.25)
        finally:
            server.stop()
    basis = "quiet_repeats" if any(quiet) else "all_repeats"
    chosen = {v: [x for x, q in zip(rs, quiet) if q or basis == "all_repeats"] for v, rs in runs.items()}
    audio_s = runs["orca_hls_utils"][0]["audio_s"]
    anchor = _median(chosen["orca_hls_utils"], "wall_s")
    ours = _median(chosen["pamingest"], "wall_s")
    ratio = round(anchor / ours, 3) if anchor and ours else None
    call = _median(chosen["pamingest"], "ingest_call_s")
    summary = {
        v: {"wall_s_median": _median(rs, "wall_s"), "audio_s_per_s": round(audio_s / _median(rs, "wall_s"), 1)}
        for v, rs in chosen.items()
    }
    summary["pamingest"]["ingest_call_s_median"] = call
    out = {
        "benchmark": "hls_vs_orca_hls_utils",
        "quick": args.quick,
        "segments": segments,
        "audio_seconds": audio_s,
        "orca_hls_utils_version": version("orca-hls-utils"),
        "basis": basis,
        "quiet_repeats": sum(quiet),
        "repeats": repeats,
        "summary": summary,
        "ratio_pamingest_to_orca_hls_utils_wall": ratio,
        "ratio_pamingest_ingest_call_to_orca_hls_utils_wall": round(anchor / call, 3) if anchor and call else None,
        "targets": {
            "wall_throughput_vs_orca_hls_utils": {"measured": ratio, "target": TARGET, "met": c.verdict(ratio, TARGET, True),
                                                  "what": "orca-hls-utils wall / pamingest command wall (medians)"},
        },
        "runs": runs,
        "environment": c.environment(),
    }
    c.emit(out, args)


if __name__ == "__main__":
    main()
