"""Latency of ``ds.pam.window(start, end)`` on a small and a 10x larger local store.

Builds two stores of synthetic 48 kHz 16-bit mono audio (coloured noise) from
consecutive SoundTrap-named files: 1 h (6 x 10 min) and 10 h (60 x 10 min);
``--quick``: 6 min and 60 min (1 min files). The small store's files are
symlinks to the first files of the large one. Each store is ingested with
``ingest(..., n_workers=2)`` (a LocalCluster started by pamingest), then
opened once with ``open_store``; the stream Dataset is kept for the whole
run so that the accessor's row index is built once (by the untimed warm-up).

Timed: ``--n`` (200) random 10 s windows, uniform over the store's coverage,
the same relative positions for both stores, each ``ds.pam.window(a, b)``
call measured end to end (it returns NumPy-backed samples). Every window is
checked to hold exactly 10 s of samples. The store's chunks were just
written, so they are in the page cache: this is "local, warm" latency.

The first window of the freshly opened Dataset is timed on its own
(``first_window_ms``: it reads the stream's row-block summary). Streams of up
to a year of rows are measured by ``window_at_scale.py``.

Targets (issue): p50 <= 50 ms on a local store, and flat in store size (here:
p50 of the 10x store within 1.5x of the small store's p50, or within 5 ms).

Usage: python benchmarks/window_latency.py [--quick] [--n 200]
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from pathlib import Path

import numpy as np

import _common as C

log = logging.getLogger("pamingest.bench.window_latency")

TARGET_P50_MS = 50.0
FLAT_REL = 1.5
FLAT_ABS_MS = 5.0
WINDOW_S = 10.0
SR = 48_000


def _options(parser) -> None:
    parser.add_argument("--n", type=int, default=200, help="timed windows per store")
    parser.add_argument("--warmup", type=int, default=10, help="untimed windows per store first")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--wait-quiet", type=float,
                        help="before each timed loop, wait up to this many s for other processes to go "
                             "quiet (default 120; quick 0)")


def build(audio_dir: Path, store: Path) -> dict:
    from pamingest import TimestampedFiles, ingest

    t0 = time.perf_counter()
    report = ingest(TimestampedFiles(str(audio_dir), "soundtrap"), str(store), n_workers=2)
    if report.failed or not report.ingested:
        raise RuntimeError(f"ingest failed:\n{report.summary()}")
    size = C.tree_bytes(store)
    return {"files": report.ingested, "rows": report.rows, "audio_hours": report.audio_seconds / 3600,
            "ingest_seconds_incl_cluster_start": round(time.perf_counter() - t0, 2),
            "store_bytes": size["apparent_bytes"], "store_files": size["files"]}


def latency(store: Path, rel_starts: np.ndarray, warmup: int, wait_quiet: float = 0.0) -> dict:
    from pamingest import open_store, streams

    t0 = time.perf_counter()
    tree = open_store(str(store))
    ds = tree[streams(tree)[0]].to_dataset()
    t_open = time.perf_counter() - t0
    # The stream's span, from another Dataset: coverage() builds the whole row index, which the
    # timed Dataset's windows would then use instead of the row-block summary.
    t0 = time.perf_counter()
    cov = tree[streams(tree)[0]].to_dataset().pam.coverage()
    t_cov = time.perf_counter() - t0
    start = int(cov["start"].iloc[0].value)
    end = int(cov["end"].iloc[-1].value)
    span = end - start - int(WINDOW_S * 1e9)
    starts = start + (rel_starts * span).astype(np.int64)
    win_ns = np.timedelta64(int(WINDOW_S * 1e9), "ns")
    expect = int(WINDOW_S * SR)
    rng = np.random.default_rng(12345)
    t0 = time.perf_counter()
    first = ds.pam.window(np.datetime64(int(starts[0]), "ns"), np.datetime64(int(starts[0]), "ns") + win_ns)
    t_first = time.perf_counter() - t0
    bad = int(first.shape[0] != expect)
    for a in start + (rng.random(warmup) * span).astype(np.int64):
        t = np.datetime64(int(a), "ns")
        ds.pam.window(t, t + win_ns)
    times = np.empty(len(starts))
    quiet = C.wait_for_quiet(wait_quiet) if wait_quiet > 0 else {}
    meter = C.CpuMeter()
    for i, a in enumerate(starts):
        t = np.datetime64(int(a), "ns")
        t0 = time.perf_counter()
        w = ds.pam.window(t, t + win_ns)
        times[i] = time.perf_counter() - t0
        if w.shape[0] != expect:
            bad += 1
    cpu = meter.read()
    ms = times * 1e3
    # For comparison: the same rows read straight through zarr (no xarray, no Dask).
    import zarr

    from pamingest.query import open_session

    audio = zarr.open_array(open_session(str(store)).store, path=f"{streams(tree)[0]}/audio", mode="r")
    n_rows = audio.shape[0]
    direct = []
    for r in np.random.default_rng(7).integers(0, n_rows - 1, size=min(50, len(starts))):
        t0 = time.perf_counter()
        audio[int(r) : int(r) + 2]
        direct.append(time.perf_counter() - t0)
    return {
        "coverage_spans": len(cov),
        "open_store_ms": round(t_open * 1e3, 1),
        "first_window_ms": round(t_first * 1e3, 1),
        "coverage_ms": round(t_cov * 1e3, 1),
        "n": len(ms),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p95_ms": round(float(np.percentile(ms, 95)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "mean_ms": round(float(ms.mean()), 2),
        "min_ms": round(float(ms.min()), 2),
        "max_ms": round(float(ms.max()), 2),
        "windows_with_wrong_length": bad,
        "direct_zarr_2_rows_p50_ms": round(float(np.percentile(direct, 50)) * 1e3, 2),
        "other_cores_during_timed_loop": cpu["other_cores"],
        "waited_for_quiet_s": quiet.get("waited_s"),
    }


def main() -> None:
    args = C.parse_args(__doc__.splitlines()[0], _options)
    file_seconds = 60.0 if args.quick else 600.0
    small_files, large_files = 6, 60
    rel = np.random.default_rng(args.seed).random(args.n)
    wait = args.wait_quiet if args.wait_quiet is not None else (0.0 if args.quick else 120.0)
    result: dict = {
        "benchmark": "window_latency", "quick": bool(args.quick),
        "config": {"sample_rate": SR, "bits": 16, "channels": 1, "row_seconds": 10.0, "window_seconds": WINDOW_S,
                   "file_seconds": file_seconds, "small_files": small_files, "large_files": large_files,
                   "n_windows": args.n, "warmup": args.warmup, "ingest": "ingest(..., n_workers=2)",
                   "reads": "open_store default: xarray lazy indexing, no Dask",
                   "flat_criterion": f"p50(large) <= max({FLAT_REL} x p50(small), p50(small) + {FLAT_ABS_MS:g} ms)"},
        "environment": C.environment(),
        "stores": {},
    }
    with C.TempDir("pam-bench-window-", args.tmpdir, args.keep) as tmp:
        large_dir = tmp / "audio-large"
        paths = C.make_deployment(large_dir, large_files, file_seconds, SR, 16,
                                  start=dt.datetime(2023, 6, 1, 0, 0, 0))
        small_dir = tmp / "audio-small"
        small_dir.mkdir()
        for p in paths[:small_files]:
            os.symlink(p, small_dir / p.name)
        for label, folder in (("small", small_dir), ("large", large_dir)):
            store = tmp / f"store-{label}"
            info = build(folder, store)
            log.info("%s store: %.1f h, %d rows, %.0f MB, ingested in %.1f s", label, info["audio_hours"],
                     info["rows"], info["store_bytes"] / 2**20, info["ingest_seconds_incl_cluster_start"])
            lat = latency(store, rel, args.warmup, wait)
            log.info("%s store: p50 %.1f ms, p95 %.1f ms", label, lat["p50_ms"], lat["p95_ms"])
            result["stores"][label] = {**info, **lat}
    small, large = result["stores"]["small"], result["stores"]["large"]
    flat = large["p50_ms"] <= max(FLAT_REL * small["p50_ms"], small["p50_ms"] + FLAT_ABS_MS)
    p50_ok = max(small["p50_ms"], large["p50_ms"]) <= TARGET_P50_MS
    result["size_ratio_rows"] = large["rows"] / small["rows"]
    result["p50_ratio_large_over_small"] = round(large["p50_ms"] / small["p50_ms"], 3)
    result["p95_ratio_large_over_small"] = round(large["p95_ms"] / small["p95_ms"], 3)
    result["targets"] = {
        "p50_ms": {"target": f"<= {TARGET_P50_MS:g} (local)", "value": {"small": small["p50_ms"], "large": large["p50_ms"]},
                   "met": p50_ok},
        "flat_in_store_size": {"target": "p50 does not grow with store size", "value": result["p50_ratio_large_over_small"],
                               "met": flat},
        "correct_lengths": {"target": "every window holds exactly 10 s of samples",
                            "value": small["windows_with_wrong_length"] + large["windows_with_wrong_length"],
                            "met": small["windows_with_wrong_length"] + large["windows_with_wrong_length"] == 0},
    }
    C.emit(result, args)


if __name__ == "__main__":
    main()
