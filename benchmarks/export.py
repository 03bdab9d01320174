"""Export speed and memory: ``pamingest export`` of 10 s clips at 48 kHz (issue #12 item 5).

A synthetic deployment (coloured noise, 48 kHz 16-bit mono, 10 min files)
is ingested twice: with 10 s rows, so that every 10 s clip is one whole
row and is copied from the store as it is (``export.audio.ClipReader``),
and with 4 s rows, so that every clip is read through ``window`` and
FLAC-encoded again. A SanctSound-style presence table reviews every hour
(alternately present and absent), so every clip is exported. Each export
runs in a fresh process and reports its wall time, its CPU seconds (all
threads) and its peak RSS:

- ``copy``: ``--format hf``, 10 s clips that are whole rows;
- ``encode``: the same clips from the 4 s-row store (decode + encode);
- ``resample``: ``--sample-rate 16000`` from the 10 s-row store;
- ``memory``: ``copy`` on a store 4x as long: the peak RSS must not grow
  with the store (target: within 15% of the shorter store's).

Target (issue #12): >= 300 clips/s per core without resampling, i.e. clips
per CPU-second of the export process, measured on the longer store's
``copy`` export (fixed costs included; the rate per extra clip is
reported beside it); ``encode`` and ``resample`` are reported.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402

log = logging.getLogger("pamingest.bench")
TARGET_CLIPS_PER_CPU_S = 300
TARGET_MEMORY_GROWTH = 0.15
FILE_SECONDS = 600
SITE = "1234"
START = dt.datetime(2024, 1, 1)

# The export in a process of its own: its imports (pyarrow, zarr, icechunk, xarray, scipy) are made
# before the clock starts and reported apart; CPU seconds are the export's, all threads.
CHILD = textwrap.dedent("""
    import json, resource, sys, time
    t = time.perf_counter()
    import dask, pyarrow.parquet, scipy.signal, xarray, zarr, icechunk, soundfile, yaml
    import pamingest.query, pamingest.clips, pamingest.export.hf
    from pamingest.export import export
    imports = time.perf_counter() - t
    store, out, fmt, rate = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
    cpu = lambda u: u.ru_utime + u.ru_stime
    before = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    report = export(store, out, fmt, seconds=10, split_by="day", sample_rate=int(rate) if rate != "-" else None)
    wall = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"wall_s": wall, "cpu_s": cpu(usage) - cpu(before), "imports_s": imports,
                      "rss_before_mb": before.ru_maxrss / 1024, "peak_rss_mb": usage.ru_maxrss / 1024,
                      "clips": report.exported, "rows": report.rows}))
""")


def _extra(parser) -> None:
    parser.add_argument("--hours", type=float, default=None, help="hours of audio (default 1; quick 0.2)")
    parser.add_argument("--quiet-wait", type=float, default=120, help="wait up to this long for a quiet machine")


def build_store(root: Path, hours: float, row_seconds: float, name: str) -> str:
    import pamingest as pi
    from pamingest.annotations import attach

    folder = root / f"audio-{hours:g}h"
    if not folder.exists():
        c.make_deployment(folder, int(round(hours * 3600 / FILE_SECONDS)), FILE_SECONDS, 48_000, 16, SITE, START)
    store = str(root / name)
    report = pi.ingest(pi.TimestampedFiles(str(folder), "soundtrap"), store, client="threads", row_seconds=row_seconds)
    if report.failed:
        raise RuntimeError(report.summary())
    # Every hour reviewed: present and absent in turn, so every clip has a known label.
    lines = ["ISOStartTime,ISOEndTime,Presence"]
    for h in range(int(-(-hours // 1))):
        t0 = START + dt.timedelta(hours=h)
        lines.append(f"{t0:%Y-%m-%dT%H:%M:%SZ},{t0 + dt.timedelta(hours=1):%Y-%m-%dT%H:%M:%SZ},{h % 2}")
    table = root / f"presence-{name}.csv"
    table.write_text("\n".join(lines) + "\n")
    attached = attach(store, [table], "sanctsound", options={"label": "humpback", "site": SITE})
    if attached.failed:
        raise RuntimeError(attached.summary())
    return store


def run_export(store: str, out: Path, fmt: str = "hf", rate: int | None = None) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    meter = c.CpuMeter()
    proc = subprocess.run([sys.executable, "-c", CHILD, store, str(out), fmt, str(rate or "-")],
                          capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    got["clips_per_s"] = round(got["clips"] / got["wall_s"], 1)
    got["clips_per_cpu_s"] = round(got["clips"] / got["cpu_s"], 1)
    got["output_mb"] = round(c.tree_bytes(out)["apparent_bytes"] / 2**20, 1)
    got.update({k: v for k, v in meter.read().items() if k == "other_cores"})
    for k in ("wall_s", "cpu_s", "imports_s", "rss_before_mb", "peak_rss_mb"):
        got[k] = round(got[k], 3)
    shutil.rmtree(out, ignore_errors=True)
    return got


def main() -> None:
    c.guard_stdout()
    args = c.parse_args(__doc__, _extra)
    hours = args.hours or (0.2 if args.quick else 1.0)
    with c.TempDir("pam-export-", args.tmpdir, args.keep) as tmp:
        whole_rows = build_store(tmp, hours, 10, "rows10")
        short_rows = build_store(tmp, hours, 4, "rows4")
        long_store = build_store(tmp, 4 * hours, 10, "rows10-long")
        quiet = c.wait_for_quiet(args.quiet_wait)
        runs = {
            "copy": run_export(whole_rows, tmp / "out"),
            "encode": run_export(short_rows, tmp / "out"),
            "resample": run_export(whole_rows, tmp / "out", rate=16000),
            "memory_long_store": run_export(long_store, tmp / "out"),
        }
        for name, r in runs.items():
            log.info("%s: %s", name, r)
    growth = runs["memory_long_store"]["peak_rss_mb"] / runs["copy"]["peak_rss_mb"] - 1
    # Per clip, without what every export pays once (opening the store, the clip table, the card):
    # the long store's extra clips over its extra CPU seconds.
    short, long = runs["copy"], runs["memory_long_store"]
    marginal = round((long["clips"] - short["clips"]) / (long["cpu_s"] - short["cpu_s"]), 1)
    rate = long["clips_per_cpu_s"]
    targets = {
        "copy_clips_per_cpu_s": {"measured": rate, "target": TARGET_CLIPS_PER_CPU_S,
                                 "met": c.verdict(rate, TARGET_CLIPS_PER_CPU_S, True),
                                 "note": f"whole export of the {4 * hours:g} h store, fixed costs included; "
                                         f"per extra clip: {marginal} clips per CPU-second"},
        "memory_growth_4x_store": {"measured": round(growth, 3), "target": TARGET_MEMORY_GROWTH,
                                   "met": c.verdict(growth, TARGET_MEMORY_GROWTH, False)},
    }
    c.emit({"benchmark": "export", "quick": args.quick, "hours": hours, "clip_seconds": 10, "sample_rate": 48_000,
            "quiet": quiet, "runs": runs, "targets": targets, "environment": c.environment()}, args)


if __name__ == "__main__":
    main()
