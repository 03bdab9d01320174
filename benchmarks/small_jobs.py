"""Small jobs: the default ``pamingest ingest files`` against ``--serial`` on the same folder.

The command as a user types it, in a subprocess, into a fresh store each
time: the default (no ``--workers``, no ``--scheduler``), ``--serial`` (one
task at a time in the process) and, for information, ``--workers 2`` (a
LocalCluster started for the job), alternating, on the real fixture folders:

- ``soundtrap``: 3 SoundTrap FLAC files, 5 min at 8 kHz each (0.9 MB);
- ``songmeter``: 48 SongMeter WAV files, 10 s at 22 kHz each (21 MB).

Target (issue #11): the default is no slower than 1.2x ``--serial`` on
<= 50 small files (median wall of the repeats). The default runs a job in
threads of its own process when its new files total less than
``pamingest.executor.LOCAL_WORK_BYTES`` (256 MB) and starts a LocalCluster
above that; both sides of the threshold are timed here on a synthetic
folder just below and just above it would take minutes, so the threshold's
choice rests on ``hls_vs_orca_hls_utils.py`` and ``ingest_throughput.py``.
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
FIXTURES = c.BENCH_DIR.parent.parent / "shared" / "fixtures"
FOLDERS = {"soundtrap": ("soundtrap", "soundtrap"), "songmeter": ("songmeter/S4A03895", "songmeter")}
VARIANTS = {"default": [], "serial": ["--serial"], "workers_2": ["--workers", "2"]}
TARGET = 1.2


def _extra(parser) -> None:
    parser.add_argument("--repeats", type=int, default=None, help="alternating repeats (default 5; quick 1)")
    parser.add_argument("--fixtures", default=str(FIXTURES))


def run(folder: Path, template: str, store: Path, extra: list[str]) -> dict:
    cmd = [str(Path(sys.executable).with_name("pamingest")), "ingest", "files", str(folder), "--template", template,
           "--store", str(store), "--no-progress", "--json", *extra]
    meter = c.CpuMeter()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    report = json.loads(proc.stdout[proc.stdout.index("{"):])
    shutil.rmtree(store, ignore_errors=True)
    return {"wall_s": round(wall, 3), "ingest_call_s": round(report["elapsed_seconds"], 3),
            "files": report["ingested"], "failed": len(report["failed"]), **meter.read()}


def main() -> None:
    args = c.parse_args(__doc__, _extra)
    repeats = args.repeats or (1 if args.quick else 5)
    fixtures = Path(args.fixtures)
    results: dict[str, dict[str, list[dict]]] = {name: {v: [] for v in VARIANTS} for name in FOLDERS}
    with c.TempDir("pam-small-", args.tmpdir, args.keep) as tmp:
        for r in range(repeats):
            for name, (folder, template) in FOLDERS.items():
                order = list(VARIANTS) if r % 2 == 0 else list(reversed(VARIANTS))
                for v in order:
                    res = run(fixtures / folder, template, tmp / f"{name}-{v}-{r}", VARIANTS[v])
                    results[name][v].append(res)
                    log.info("%s %s: %.2f s", name, v, res["wall_s"])
    summary, targets = {}, {}
    for name, runs in results.items():
        med = {v: round(statistics.median(x["wall_s"] for x in rs), 3) for v, rs in runs.items()}
        files = {rs[0]["files"] for rs in runs.values()}
        if len(files) != 1 or any(x["failed"] for rs in runs.values() for x in rs):
            raise RuntimeError(f"{name}: variants disagree on the files ingested: {runs}")
        ratio = round(med["default"] / med["serial"], 3)
        summary[name] = {"files": files.pop(), "wall_s_median": med, "default_over_serial": ratio}
        targets[f"{name}_default_over_serial"] = {"measured": ratio, "target": TARGET,
                                                  "met": c.verdict(ratio, TARGET, False)}
    c.emit({"benchmark": "small_jobs", "quick": args.quick, "repeats": repeats, "summary": summary,
            "targets": targets, "runs": results, "environment": c.environment()}, args)


if __name__ == "__main__":
    main()
