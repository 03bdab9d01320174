"""Zero-copy (``ingest --virtual``) vs copied FLAC: store size per audio hour, ingest time, window latency.

Two collections, each ingested twice (virtual, copied) into fresh stores:

* ``mbari_256k_24bit``: Pacific Sound-like 256 kHz 24-bit mono WAVs (the
  synthetic signal of ``pacific_sound_memory.py``: noise at 2**16 + a 1 kHz
  tone; its low bits are noise, as a hydrophone's are), ``--files`` x
  ``--minutes`` (default 3 x 5 min; ``--quick`` 2 x 1 min);
* ``songmeter_22k_16bit``: the 48 real SongMeter fixture WAVs (10 s each,
  ../shared/fixtures/songmeter), the real audio's FLAC ratio.

Each on two media: the recordings on the local disk with local stores
(``local``), and the recordings in a moto S3 bucket with the stores in
another bucket of the same server (``s3``; moto answers a range request in
time growing with the object's size, which real S3 does not: the virtual
stream's reads of large objects are penalised there, so ``local`` is the
fair latency comparison).

Measured per store: bytes of the whole store (every object under its
prefix) per audio hour, next to the WAVs' own bytes per hour; the ingest's
wall time (virtual with quality statistics, which read the samples, and
without, which read headers only); ``--n`` 10 s windows through ``ds.pam.window``,
each starting inside a random row (p50/p95 after a warm-up), each checked to equal the
copied store's window sample for sample.

Prints one JSON object on stdout (logs on stderr).

Usage: python benchmarks/virtual_store.py [--quick] [--output FILE]
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np
import soundfile

import _common as C

log = logging.getLogger("pamingest.bench.virtual_store")
FIXTURES = Path(os.environ.get("PAMINGEST_FIXTURES", Path(__file__).resolve().parents[2] / "shared" / "fixtures"))
RATE = 256_000
WINDOW_S = 10.0


def _options(parser) -> None:
    parser.add_argument("--files", type=int, default=3, help="256 kHz files (default 3; quick 2)")
    parser.add_argument("--minutes", type=float, default=5.0, help="minutes per 256 kHz file (default 5; quick 1)")
    parser.add_argument("--n", type=int, default=60, help="timed windows per store")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--wait-quiet", type=float, default=120.0,
                        help="wait up to this many s for other processes to go quiet before timing (quick: 0)")


def _block(i: int, n: int) -> np.ndarray:
    rng = np.random.default_rng(1000 + i)
    t = (np.arange(n) + i * n) / RATE
    x = rng.normal(0, 2**16, n) + 2**20 * np.sin(2 * np.pi * 1000 * t)
    return np.clip(np.round(x), -(2**23), 2**23 - 1).astype(np.int32)


def make_mbari(folder: Path, files: int, minutes: float) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    start = dt.datetime(2024, 3, 1, 12, 0, 0)
    paths = []
    block = 10 * RATE
    for k in range(files):
        when = start + dt.timedelta(minutes=minutes * k)
        path = folder / f"MARS_{when:%Y%m%d_%H%M%S}.wav"
        with soundfile.SoundFile(str(path), "w", RATE, 1, subtype="PCM_24", format="WAV") as out:
            total = int(minutes * 60 * RATE)
            for i, lo in enumerate(range(0, total, block)):
                out.write((_block(k * 10_000 + i, min(block, total - lo)) << 8)[:, None])
        paths.append(path)
    return paths


def make_songmeter(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for p in sorted((FIXTURES / "songmeter" / "S4A03895").glob("*.wav")):
        shutil.copy(p, folder / p.name)
        out.append(folder / p.name)
    return out


COLLECTIONS = {
    "mbari_256k_24bit": ("MARS_%Y%m%d_%H%M%S.{ext}", "MARS"),
    "songmeter_22k_16bit": ("{site}_%Y%m%d_%H%M%S.{ext}", None),
}


def _ingest(root: str, template: str, site: str | None, store: str, storage_options: dict, store_options: dict,
            virtual: bool, quality: bool) -> dict:
    from pamingest import TimestampedFiles, ingest

    source = TimestampedFiles(root, template=template, site=site, storage_options=storage_options)
    t0 = time.perf_counter()
    report = ingest(source, store, client="threads", store_options=store_options, virtual=virtual, quality=quality)
    wall = time.perf_counter() - t0
    if report.failed or not report.ingested or report.copied:
        raise RuntimeError(f"ingest of {root} into {store} went wrong:\n{report.summary()}")
    return {"seconds": round(wall, 2), "audio_hours": report.audio_seconds / 3600, "rows": report.rows,
            "streams": report.streams}


def _store_bytes(store: str, s3) -> int:
    if store.startswith("s3://"):
        bucket, _, prefix = store[5:].partition("/")
        total = 0
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            total += sum(o["Size"] for o in page.get("Contents", []))
        return total
    return C.tree_bytes(Path(store))["apparent_bytes"]


def _windows(store: str, store_options: dict, stream: str, n: int, warmup: int, seed: int = 3):
    """``(times_ms, windows)``: random 10 s windows of ``stream`` (the same starts for any store)."""
    from pamingest import open_store

    t0 = time.perf_counter()
    ds = open_store(store, storage_options=store_options)[stream].to_dataset()
    open_ms = (time.perf_counter() - t0) * 1e3
    starts = ds["chunk_start"].values.astype("datetime64[ns]").astype(np.int64)
    row_ns = int(float(ds.attrs["row_seconds"]) * 1e9)
    rng = np.random.default_rng(seed)
    # Each window starts inside a random row (a duty-cycled deployment's random instants mostly
    # fall in its gaps): two rows read, or one at a recording's end.
    at = starts[rng.integers(0, len(starts), n + warmup)] + (rng.random(n + warmup) * row_ns).astype(np.int64)
    width = np.timedelta64(int(WINDOW_S * 1e9), "ns")
    times, kept = [], []
    t0 = time.perf_counter()
    first = ds.pam.window(np.datetime64(int(at[0]), "ns"), np.datetime64(int(at[0]), "ns") + width)
    first_ms = (time.perf_counter() - t0) * 1e3
    for i, a in enumerate(at):
        t = np.datetime64(int(a), "ns")
        t1 = time.perf_counter()
        w = ds.pam.window(t, t + width)
        if i >= warmup:
            times.append((time.perf_counter() - t1) * 1e3)
            kept.append(np.asarray(w.values))
    del first
    return np.array(times), kept, {"open_store_ms": round(open_ms, 1), "first_window_ms": round(first_ms, 1)}


def _latency(times: np.ndarray) -> dict:
    return {"n": len(times), "p50_ms": round(float(np.percentile(times, 50)), 2),
            "p95_ms": round(float(np.percentile(times, 95)), 2), "mean_ms": round(float(times.mean()), 2)}


def main() -> None:
    args = C.parse_args(__doc__.splitlines()[0], _options)
    if args.quick:
        args.files, args.minutes, args.n = 2, 1.0, 20
        args.wait_quiet = 0.0
    from moto.server import ThreadedMotoServer

    import boto3

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    s3_options = {"endpoint_url": endpoint, "key": "bench", "secret": "bench"}
    result: dict = {"benchmark": "virtual_store", "environment": C.environment(), "quick": args.quick,
                    "window_seconds": WINDOW_S, "collections": {}}
    try:
        with C.TempDir("pamingest-virtual-", args.tmpdir, args.keep) as tmp:
            for name, (template, site) in COLLECTIONS.items():
                folder = tmp / name / (site or "S4A03895")
                paths = (make_mbari(folder, args.files, args.minutes) if name.startswith("mbari")
                         else make_songmeter(folder))
                wav_bytes = sum(p.stat().st_size for p in paths)
                bucket = name.replace("_", "-")
                s3.create_bucket(Bucket=bucket)
                s3.create_bucket(Bucket=bucket + "-stores")
                for p in paths:
                    s3.upload_file(str(p), bucket, f"{p.parent.name}/{p.name}")
                entry: dict = {"files": len(paths), "wav_bytes": wav_bytes}
                for medium in ("local", "s3"):
                    root = str(tmp / name) if medium == "local" else f"s3://{bucket}"
                    src_opts = {} if medium == "local" else dict(s3_options)
                    store_opts = {} if medium == "local" else dict(s3_options)
                    stores = {kind: (str(tmp / f"{name}-{kind}") if medium == "local"
                                     else f"s3://{bucket}-stores/{kind}")
                              for kind in ("virtual", "virtual_no_quality", "copied")}
                    runs = {
                        "copied": _ingest(root, template, site, stores["copied"], src_opts, store_opts, False, True),
                        "virtual": _ingest(root, template, site, stores["virtual"], src_opts, store_opts, True, True),
                        "virtual_no_quality": _ingest(root, template, site, stores["virtual_no_quality"], src_opts,
                                                      store_opts, True, False),
                    }
                    hours = runs["copied"]["audio_hours"]
                    sizes = {k: _store_bytes(v, s3) for k, v in stores.items()}
                    quiet = C.wait_for_quiet(args.wait_quiet) if args.wait_quiet > 0 else {}
                    stream_c = runs["copied"]["streams"][0]
                    stream_v = runs["virtual"]["streams"][0]
                    t_c, w_c, open_c = _windows(stores["copied"], store_opts, stream_c, args.n, args.warmup)
                    t_v, w_v, open_v = _windows(stores["virtual"], store_opts, stream_v, args.n, args.warmup)
                    equal = all(np.array_equal(a, b) for a, b in zip(w_c, w_v))
                    entry[medium] = {
                        "audio_hours": round(hours, 4),
                        "wav_bytes_per_audio_hour": round(wav_bytes / hours),
                        "store_bytes": sizes,
                        "store_bytes_per_audio_hour": {k: round(v / hours) for k, v in sizes.items()},
                        "virtual_over_copied_size": round(sizes["virtual"] / sizes["copied"], 5),
                        "copied_over_wav_size": round(sizes["copied"] / wav_bytes, 4),
                        "ingest_seconds": {k: v["seconds"] for k, v in runs.items()},
                        "window_latency": {"copied": {**_latency(t_c), **open_c},
                                           "virtual": {**_latency(t_v), **open_v}},
                        "virtual_over_copied_window_p50": round(float(np.percentile(t_v, 50)
                                                                      / np.percentile(t_c, 50)), 3),
                        "windows_equal_sample_for_sample": equal,
                        "waited_for_quiet": quiet,
                    }
                    log.info("%s %s: %s", name, medium, entry[medium])
                    if not equal:
                        raise RuntimeError(f"{name} {medium}: virtual windows differ from the copied store's")
                result["collections"][name] = entry
    finally:
        server.stop()
    C.emit(result, args)


if __name__ == "__main__":
    main()
