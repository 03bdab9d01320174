"""Peak memory of a Dask worker ingesting one long recording.

Generates (block by block, so the generator stays small):

* a 30 min 256 kHz 24-bit mono WAV and the same at half length (15 min);
* a 2 h 48 kHz 16-bit mono WAV and the same at half length (1 h);

(``--quick``: 2 min / 1 min and 10 min / 5 min), then ingests each file alone
into a fresh local store with a fresh LocalCluster of 1 single-threaded
worker process. The worker's RSS is sampled every 0.1 s from this process
(psutil on the worker's pid) and its kernel high-water mark (``VmHWM`` of
``/proc/<pid>/status``, reset through ``/proc/<pid>/clear_refs`` just before
the ingest) is read at the end; the peak is the larger of the two. The
baseline is the worker's RSS just before the ingest (after warm-up imports).

Targets (issue): peak worker RSS <= 400 MB per file, and flat in file length:
here "flat" means the full-length file's peak is within max(32 MB, 10 %) of
the half-length file's peak.

Usage: python benchmarks/worker_memory.py [--quick]
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
from pathlib import Path

import psutil

import _common as C

log = logging.getLogger("pamingest.bench.worker_memory")

TARGET_PEAK_MB = 400.0
FLAT_ABS_MB = 32.0
FLAT_REL = 0.10
MB = 1024 * 1024


def _options(parser) -> None:
    parser.add_argument("--interval", type=float, default=0.1, help="RSS sampling interval (s)")
    parser.add_argument("--only", choices=["hf", "lf"], help="run one recording kind only")


def _reset_hwm() -> int:
    """Runs on the worker: reset its peak-RSS counter; returns its pid."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass
    return os.getpid()


def _status_kb(pid: int, key: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class RssSampler(threading.Thread):
    """Samples a process's RSS every ``interval`` seconds until stopped."""

    def __init__(self, pid: int, interval: float) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        t0 = time.perf_counter()
        while not self._halt.is_set():
            try:
                self.samples.append((time.perf_counter() - t0, self.proc.memory_info().rss))
            except psutil.Error:
                break
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join()


def measure(folder: Path, store: Path, interval: float) -> dict:
    """Ingest ``folder`` (one file) with a fresh 1-worker cluster; the worker's memory."""
    from pamingest import TimestampedFiles, ingest

    cluster, client = C.start_cluster(1)
    try:
        pids = client.run(_reset_hwm)
        (addr, pid), = pids.items()
        baseline = psutil.Process(pid).memory_info().rss
        hwm_before = _status_kb(pid, "VmHWM")
        sampler = RssSampler(pid, interval)
        own = RssSampler(os.getpid(), interval)
        sampler.start()
        own.start()
        t0 = time.perf_counter()
        meter = C.CpuMeter()
        try:
            report = ingest(TimestampedFiles(str(folder), "soundtrap"), str(store), client=client)
        finally:
            elapsed = time.perf_counter() - t0
            cpu = meter.read()
            sampler.stop()
            own.stop()
        hwm_kb = _status_kb(pid, "VmHWM")
        pid_after = client.run(os.getpid)[addr] if addr in client.scheduler_info()["workers"] else None
    finally:
        C.stop_cluster(cluster, client)
    if report.failed or report.ingested != 1:
        raise RuntimeError(f"ingest failed:\n{report.summary()}")
    sampled_peak = max((rss for _, rss in sampler.samples), default=0)
    peak = max(sampled_peak, (hwm_kb or 0) * 1024)
    # A timeline, downsampled to ~40 points, to show whether memory grows with time.
    step = max(1, len(sampler.samples) // 40)
    timeline = [(round(t, 1), round(rss / MB, 1)) for t, rss in sampler.samples[::step]]
    return {
        "audio_seconds": report.audio_seconds,
        "rows": report.rows,
        "ingest_seconds": round(elapsed, 2),
        "other_cores_during_ingest": cpu["other_cores"],
        "worker_baseline_mb": round(baseline / MB, 1),
        "worker_hwm_after_warmup_mb": round((hwm_before or 0) / 1024, 1),
        "worker_peak_rss_sampled_mb": round(sampled_peak / MB, 1),
        "worker_vmhwm_mb": round((hwm_kb or 0) / 1024, 1),
        "worker_peak_mb": round(peak / MB, 1),
        "worker_peak_above_baseline_mb": round((peak - baseline) / MB, 1),
        "worker_restarted": pid_after is not None and pid_after != pid,
        "samples": len(sampler.samples),
        "client_peak_rss_sampled_mb": round(max((r for _, r in own.samples), default=0) / MB, 1),
        "worker_rss_timeline_s_mb": timeline,
    }


def main() -> None:
    args = C.parse_args(__doc__.splitlines()[0], _options)
    q = args.quick
    kinds = {
        "hf": {"label": "256kHz_24bit_mono", "sample_rate": 256_000, "bits": 24, "seconds": 120 if q else 1800},
        "lf": {"label": "48kHz_16bit_mono", "sample_rate": 48_000, "bits": 16, "seconds": 600 if q else 7200},
    }
    if args.only:
        kinds = {args.only: kinds[args.only]}
    result: dict = {"benchmark": "worker_memory", "quick": bool(q),
                    "config": {"sampling_interval_s": args.interval, "row_seconds": 10.0,
                               "rows_per_task": 90, "cluster": "LocalCluster(n_workers=1, threads_per_worker=1, processes=True)",
                               "flat_criterion": f"|peak(full) - peak(half)| <= max({FLAT_ABS_MB:g} MB, {FLAT_REL:.0%} of peak(half))"},
                    "environment": C.environment(), "files": {}}
    all_ok = True
    with C.TempDir("pam-bench-memory-", args.tmpdir, args.keep) as tmp:
        for key, kind in kinds.items():
            entries = {}
            for part, seconds in (("half", kind["seconds"] / 2), ("full", kind["seconds"])):
                folder = tmp / f"{key}-{part}"
                folder.mkdir()
                path = folder / C.soundtrap_name("5678", dt.datetime(2024, 3, 1, 12, 0, 0))
                t0 = time.perf_counter()
                C.write_synthetic(path, seconds, kind["sample_rate"], kind["bits"], seed=7)
                log.info("generated %s (%.0f s of audio, %.0f MB) in %.1f s", path.name, seconds,
                         path.stat().st_size / MB, time.perf_counter() - t0)
                m = measure(folder, tmp / f"store-{key}-{part}", args.interval)
                m["file_seconds"] = seconds
                m["file_mb"] = round(path.stat().st_size / MB, 1)
                log.info("%s %s: worker peak %.1f MB (baseline %.1f MB), %.1f s", kind["label"], part,
                         m["worker_peak_mb"], m["worker_baseline_mb"], m["ingest_seconds"])
                entries[part] = m
                path.unlink()  # keep the temp disk small
            full, half = entries["full"]["worker_peak_mb"], entries["half"]["worker_peak_mb"]
            growth = full - half
            flat = abs(growth) <= max(FLAT_ABS_MB, FLAT_REL * half)
            under = max(full, half) <= TARGET_PEAK_MB
            all_ok &= flat and under
            result["files"][kind["label"]] = {
                **entries,
                "peak_mb": max(full, half),
                "growth_full_minus_half_mb": round(growth, 1),
                "meets_peak_target": under,
                "flat_in_length": flat,
            }
    result["targets"] = {
        "peak_worker_rss_mb": {"target": f"<= {TARGET_PEAK_MB:g} per file",
                               "value": {k: v["peak_mb"] for k, v in result["files"].items()},
                               "met": all(v["meets_peak_target"] for v in result["files"].values())},
        "flat_in_file_length": {"target": "full-length peak ~= half-length peak",
                                "value": {k: v["growth_full_minus_half_mb"] for k, v in result["files"].items()},
                                "met": all(v["flat_in_length"] for v in result["files"].values())},
    }
    result["all_targets_met"] = all_ok
    C.emit(result, args)


if __name__ == "__main__":
    main()
