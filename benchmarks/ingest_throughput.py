"""Ingest throughput: pamingest on Dask vs. a bare decode + FLAC-encode loop.

Generates N synthetic SoundTrap-named WAVs (48 kHz, 16-bit, mono, coloured
noise so that FLAC has real work) in a temporary folder, then measures, in
audio-seconds per wall-second (and per worker):

1. ``bare``: one process, for each file: soundfile decode in 10 s blocks and
   FLAC-encode each block to a BytesIO (what a row costs with no store, no
   Dask, no Icechunk);
2. ``ingest_1w``: ``pamingest.ingest`` into a fresh local store with a
   LocalCluster of 1 single-threaded worker process;
3. ``ingest_2w``: the same with 2 workers.

Cluster start-up (and the workers' first imports) is excluded: the cluster is
started and warmed before the clock starts and handed to ``ingest`` as
``client=``. Each measurement is repeated (``--repeats``, fresh store each
time); the median is reported, with every repeat listed. The files are read
once before timing so every variant reads from the page cache.

Targets (issue): ingest with 1 worker >= 0.7x the bare loop; 2 workers >= 1.7x
1 worker. ``serial`` (``client="serial"``, in-process, no Dask) is reported for
information: it separates Dask's overhead from pamingest's own.

Usage: python benchmarks/ingest_throughput.py [--quick] [--n-files N] [--file-seconds S]
"""

from __future__ import annotations

import io
import logging
import os
import statistics
import time
from pathlib import Path

import soundfile

import _common as C

log = logging.getLogger("pamingest.bench.ingest_throughput")

TARGET_1W_OVER_BARE = 0.7
TARGET_2W_OVER_1W = 1.7
ROW_SECONDS = 10.0


def _options(parser) -> None:
    parser.add_argument("--n-files", type=int, help="number of files (default 24; quick 4)")
    parser.add_argument("--file-seconds", type=float, help="seconds per file (default 300; quick 60)")
    parser.add_argument("--repeats", type=int, help="repeats of each measurement (default 3; quick 1)")
    parser.add_argument("--sample-rate", type=int, default=48_000)
    parser.add_argument("--wait-quiet", type=float,
                        help="before each timed run, wait up to this many s for other processes to go "
                             "quiet (default 120; quick 0)")
    parser.add_argument("--no-serial", action="store_true", help="skip the informational serial ingest")
    parser.add_argument("--extra-workers", type=int, nargs="*", default=[],
                        help="also measure these worker counts (informational), e.g. --extra-workers 3")


def bare_loop(paths: list[Path], row_seconds: float = ROW_SECONDS) -> dict:
    """Decode each file in row-sized blocks and FLAC-encode each block to memory."""
    t0 = time.perf_counter()
    frames = encoded = 0
    sample_rate = None
    for path in paths:
        with soundfile.SoundFile(str(path)) as snd:
            sample_rate = snd.samplerate
            subtype = snd.subtype
            block = int(round(row_seconds * snd.samplerate))
            dtype = "int16" if subtype == "PCM_16" else "int32"
            while True:
                data = snd.read(block, dtype=dtype, always_2d=True)
                if not len(data):
                    break
                out = io.BytesIO()
                soundfile.write(out, data, snd.samplerate, format="FLAC", subtype=subtype)
                frames += len(data)
                encoded += out.getbuffer().nbytes
    elapsed = time.perf_counter() - t0
    audio = frames / sample_rate
    return {"elapsed_seconds": elapsed, "audio_seconds": audio, "flac_bytes": encoded}


def row_write_breakdown(path: Path, n_rows: int, row_seconds: float = ROW_SECONDS) -> dict:
    """Milliseconds per row for the layers an ingest row goes through, in this process.

    ``decode``: soundfile read of one row; ``flac_encode``: soundfile FLAC
    encode to BytesIO; ``zarr_memory``: ``audio[i:i+1] = row`` on a zarr array
    with pamingest's FlacCodec in a MemoryStore; ``zarr_icechunk_local``: the
    same through an Icechunk session on a local folder (what ``write_rows`` does).
    """
    import tempfile

    import icechunk
    import zarr

    from pamingest.store.codec import FlacCodec

    with soundfile.SoundFile(str(path)) as snd:
        sr = snd.samplerate
        block = int(round(row_seconds * sr))
        t0 = time.perf_counter()
        rows = []
        while len(rows) < n_rows:
            data = snd.read(block, dtype="int16", always_2d=True)
            if len(data) < block:
                break
            rows.append(data)
        decode = (time.perf_counter() - t0) / len(rows)
    t0 = time.perf_counter()
    for r in rows:
        soundfile.write(io.BytesIO(), r, sr, format="FLAC", subtype="PCM_16")
    encode = (time.perf_counter() - t0) / len(rows)

    def through(store) -> float:
        arr = zarr.create_array(store, name="audio", shape=(len(rows), block, 1), chunks=(1, block, 1),
                                dtype="int16", serializer=FlacCodec(bits=16, sample_rate=sr), compressors=None,
                                fill_value=0)
        t = time.perf_counter()
        for i, r in enumerate(rows):
            arr[i : i + 1] = r[None]
        return (time.perf_counter() - t) / len(rows)

    memory = through(zarr.storage.MemoryStore())
    with tempfile.TemporaryDirectory(prefix="pam-bench-row-") as d:
        repo = icechunk.Repository.create(icechunk.local_filesystem_storage(d))
        ice = through(repo.writable_session("main").store)
    return {"rows": len(rows), "decode_ms": decode * 1e3, "flac_encode_ms": encode * 1e3,
            "zarr_memory_ms": memory * 1e3, "zarr_icechunk_local_ms": ice * 1e3}


def timed_ingest(audio_dir: Path, store: Path, client) -> dict:
    from pamingest import TimestampedFiles, ingest

    src = TimestampedFiles(str(audio_dir), "soundtrap")
    t0 = time.perf_counter()
    report = ingest(src, str(store), client=client, row_seconds=ROW_SECONDS)
    elapsed = time.perf_counter() - t0
    if report.failed or not report.ingested:
        raise RuntimeError(f"ingest did not ingest everything:\n{report.summary()}")
    size = C.tree_bytes(store)
    return {"elapsed_seconds": elapsed, "report_elapsed_seconds": report.elapsed_seconds,
            "audio_seconds": report.audio_seconds, "files": report.ingested, "rows": report.rows,
            "store_bytes": size["apparent_bytes"]}


def measured(fn, wait_quiet: float, *a) -> dict:
    """``fn(*a)`` after waiting for a quiet machine, with the CPU used by others meanwhile."""
    quiet = C.wait_for_quiet(wait_quiet) if wait_quiet > 0 else {}
    meter = C.CpuMeter()
    out = fn(*a)
    out.update(meter.read())
    if quiet:
        out["waited_for_quiet_s"] = quiet["waited_s"]
    return out


def summarise(runs: list[dict], workers: int) -> dict:
    rates = [r["audio_seconds"] / r["elapsed_seconds"] for r in runs]
    med = statistics.median(rates)
    return {
        "workers": workers,
        "audio_seconds": runs[0]["audio_seconds"],
        "elapsed_seconds_median": statistics.median(r["elapsed_seconds"] for r in runs),
        "audio_s_per_s": med,
        "audio_s_per_s_per_worker": med / workers,
        "audio_s_per_s_best": max(rates),
        "audio_s_per_s_per_worker_best": max(rates) / workers,
        "other_cores_max": max(r.get("other_cores") or 0 for r in runs),
        "repeats": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()} for r in runs],
    }


def main() -> None:
    args = C.parse_args(__doc__.splitlines()[0], _options)
    n_files = args.n_files or (4 if args.quick else 24)
    file_seconds = args.file_seconds or (60.0 if args.quick else 300.0)
    repeats = args.repeats or (1 if args.quick else 3)
    wait = args.wait_quiet if args.wait_quiet is not None else (0.0 if args.quick else 120.0)
    sr = args.sample_rate
    result: dict = {
        "benchmark": "ingest_throughput",
        "quick": bool(args.quick),
        "config": {"n_files": n_files, "file_seconds": file_seconds, "sample_rate": sr, "bits": 16,
                   "channels": 1, "row_seconds": ROW_SECONDS, "repeats": repeats,
                   "wait_quiet_s": wait,
                   "signal": "pink noise + 2 tones (benchmarks/_common.py ColouredNoise)"},
        "environment": C.environment(),
    }
    with C.TempDir("pam-bench-throughput-", args.tmpdir, args.keep) as tmp:
        audio_dir = tmp / "audio"
        paths = C.make_deployment(audio_dir, n_files, file_seconds, sr, 16)
        wav_bytes = sum(p.stat().st_size for p in paths)
        result["config"]["wav_bytes"] = wav_bytes

        # Warm the page cache (and libsndfile/FLAC code paths) once, untimed.
        bare_loop(paths[:1])
        for p in paths:
            p.read_bytes()

        bare_runs = []
        for i in range(repeats):
            bare_runs.append(measured(bare_loop, wait, paths))
            log.info("bare loop %d: %.0f audio-s/s", i, bare_runs[-1]["audio_seconds"] / bare_runs[-1]["elapsed_seconds"])
        bare = summarise(bare_runs, 1)
        result["bare"] = bare

        result["row_write_breakdown_ms_per_row"] = row_write_breakdown(paths[0], 30 if args.quick else 120)
        log.info("per-row cost: %s", result["row_write_breakdown_ms_per_row"])

        store_n = 0

        def fresh_store() -> Path:
            nonlocal store_n
            store_n += 1
            return tmp / f"store-{store_n}"

        if not args.no_serial:
            runs = []
            for i in range(repeats):
                runs.append(measured(timed_ingest, wait, audio_dir, fresh_store(), "serial"))
                log.info("serial ingest %d: %.0f audio-s/s", i, runs[-1]["audio_seconds"] / runs[-1]["elapsed_seconds"])
            result["ingest_serial"] = summarise(runs, 1)

        for workers in (1, 2, *args.extra_workers):
            cluster, client = C.start_cluster(workers)
            try:
                runs = []
                for i in range(repeats):
                    runs.append(measured(timed_ingest, wait, audio_dir, fresh_store(), client))
                    log.info("ingest %d worker(s) %d: %.0f audio-s/s", workers, i,
                             runs[-1]["audio_seconds"] / runs[-1]["elapsed_seconds"])
            finally:
                C.stop_cluster(cluster, client)
            result[f"ingest_{workers}w"] = summarise(runs, workers)

    one, two = result["ingest_1w"], result["ingest_2w"]
    ratio_1w_bare = one["audio_s_per_s"] / bare["audio_s_per_s"]
    speedup = two["audio_s_per_s"] / one["audio_s_per_s"]
    result["ratio_1w_over_bare"] = ratio_1w_bare
    result["speedup_2w_over_1w"] = speedup
    # Contention only ever slows a run down: the best repeats are the least disturbed.
    result["ratio_1w_over_bare_best"] = one["audio_s_per_s_best"] / bare["audio_s_per_s_best"]
    result["speedup_2w_over_1w_best"] = two["audio_s_per_s_best"] / one["audio_s_per_s_best"]
    result["max_other_cores_during_runs"] = max(
        result[k]["other_cores_max"] for k in ("bare", "ingest_serial", "ingest_1w", "ingest_2w") if k in result
    )
    if "ingest_serial" in result:
        result["ratio_serial_over_bare"] = result["ingest_serial"]["audio_s_per_s"] / bare["audio_s_per_s"]
    result["store_over_bare_flac_bytes"] = one["repeats"][0]["store_bytes"] / bare["repeats"][0]["flac_bytes"]
    result["targets"] = {
        "ratio_1w_over_bare": {"target": f">= {TARGET_1W_OVER_BARE}", "value": round(ratio_1w_bare, 3),
                               "value_best_repeats": round(result["ratio_1w_over_bare_best"], 3),
                               "met": C.verdict(ratio_1w_bare, TARGET_1W_OVER_BARE, True)},
        "speedup_2w_over_1w": {"target": f">= {TARGET_2W_OVER_1W}", "value": round(speedup, 3),
                               "value_best_repeats": round(result["speedup_2w_over_1w_best"], 3),
                               "met": C.verdict(speedup, TARGET_2W_OVER_1W, True)},
    }
    result["notes"] = []
    if result["max_other_cores_during_runs"] > 0.25:
        result["notes"].append(
            f"other processes used up to {result['max_other_cores_during_runs']} cores during some timed runs "
            "(see other_cores per repeat): those numbers are pessimistic."
        )
    if (os.cpu_count() or 1) < 3:
        result["notes"] += [
            f"this machine has {os.cpu_count()} CPU(s): with 2 workers the scheduler and the client "
            "(planning, merging forks, committing) compete with the workers for the same cores."
        ]
    C.emit(result, args)


if __name__ == "__main__":
    main()
