"""Peak worker memory and throughput ingesting one Pacific Sound 256 kHz file from S3.

Generates (block by block) a 10 min 256 kHz 24-bit mono WAV, the size and
format of one ``pacific-sound-256khz-YYYY/MM/MARS_YYYYMMDD_HHMMSS.wav``
(``--quick``: 1 min), serves it from a moto S3 server started in this
process under the real bucket layout, and ingests it with the
``PacificSound`` source into a fresh local store on a LocalCluster of one
single-threaded worker process.

Memory: the worker's kernel high-water mark (``VmHWM`` of
``/proc/self/status``, read through ``client.run``) after resetting it
(``/proc/self/clear_refs``) just before the ingest, and its RSS sampled
every 0.1 s; the peak is the larger. The baseline is the worker's RSS
after warm-up imports. Throughput: audio seconds and WAV bytes per wall
second of the whole ``ingest()`` call (listing, probe, allocation, decode,
FLAC encode, write, commit), next to a bare read of the same object on the
same worker (moto serves ranges of a large object slowly, so the bare read
says how much of the time is the server's). The store is then read back and compared with
the generated samples, bit for bit.

Prints one JSON object on stdout (logs on stderr).

Usage: python benchmarks/pacific_sound_memory.py [--quick] [--output FILE]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402

import numpy as np
import psutil
import soundfile

log = logging.getLogger("pamingest.bench.pacific_sound_memory")
MB = 1024 * 1024
RATE = 256_000
START = dt.datetime(2024, 3, 1, 12, 0, 0)
BUCKET = f"pacific-sound-256khz-{START:%Y}"
KEY = f"{START:%m}/MARS_{START:%Y%m%d_%H%M%S}.wav"


def _real_stdout() -> int:
    """Keep fd 1 for the JSON; everything else written there (Icechunk's logger, workers) goes to stderr."""
    sys.stdout.flush()
    fd = os.dup(1)
    os.dup2(2, 1)
    return fd


def block_samples(i: int, n: int) -> np.ndarray:
    """Block ``i`` of the synthetic signal: noise plus a 1 kHz tone, 24-bit integers (deterministic)."""
    rng = np.random.default_rng(1000 + i)
    t = (np.arange(n) + i * n) / RATE
    x = rng.normal(0, 2**16, n) + 2**20 * np.sin(2 * np.pi * 1000 * t)
    if i == 0:
        x[:2] = [-(2**23), 2**23 - 1]  # both ends of the 24-bit range must survive
    return np.clip(np.round(x), -(2**23), 2**23 - 1).astype(np.int32)


def write_wav(path: Path, seconds: int, block_seconds: int = 10) -> None:
    n = block_seconds * RATE
    with soundfile.SoundFile(str(path), "w", RATE, 1, subtype="PCM_24", format="WAV") as out:
        for i in range(seconds // block_seconds):
            out.write((block_samples(i, n) << 8)[:, None])  # soundfile keeps the top 24 bits of int32


def _warm() -> int:
    import icechunk  # noqa: F401
    import s3fs  # noqa: F401
    import soundfile  # noqa: F401
    import zarr  # noqa: F401

    import pamingest.ingest  # noqa: F401
    import pamingest.store.codec  # noqa: F401

    return os.getpid()


def _bare_read(url: str, storage_options: dict) -> tuple[int, float]:
    """Read the object start to end in the range requests ingest's PCM reader makes
    (``sndfile.PCM_READ_BYTES``, one after the other), discarding it: the transfer alone."""
    from pamingest.decode.sndfile import PCM_READ_BYTES
    from pamingest.fsutil import filesystem

    fs, path = filesystem(url, storage_options)
    size = fs.size(path)
    t0, n = time.perf_counter(), 0
    for lo in range(0, size, PCM_READ_BYTES):
        n += len(fs.cat_file(path, start=lo, end=min(size, lo + PCM_READ_BYTES)))
    return n, time.perf_counter() - t0


def _reset_hwm() -> int:
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # resets VmHWM to the current RSS
    return os.getpid()


def _status_kb() -> dict:
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                out[key] = int(value.split()[0])
    return out


class Sampler(threading.Thread):
    def __init__(self, pid: int, interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.proc, self.interval, self.peak, self.n = psutil.Process(pid), interval, 0, 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                self.peak = max(self.peak, self.proc.memory_info().rss)
                self.n += 1
            except psutil.Error:
                return
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join()


def verify(store: str, seconds: int, block_seconds: int = 10) -> dict:
    """Compare the stored stream with the generated samples, row by row."""
    import pamingest as pi

    tree = pi.open_store(store)
    (name,) = pi.streams(tree)
    ds = tree[name].to_dataset()
    order = np.argsort(ds["file_offset"].values)
    n_valid = ds["n_valid"].values
    got_total, mismatched = 0, 0
    block = block_seconds * RATE
    expected_rows = {}
    for row in order:
        data = ds["audio"][int(row), : int(n_valid[row]), 0].values
        offset = int(ds["file_offset"].values[row])
        i = offset // block
        if i not in expected_rows:
            expected_rows = {i: block_samples(i, block)}
        want = expected_rows[i][offset - i * block : offset - i * block + len(data)]
        mismatched += int(np.count_nonzero(data != want))
        got_total += len(data)
    return {"stream": name, "dtype": str(ds["audio"].dtype), "samples": got_total,
            "expected_samples": seconds * RATE, "mismatched_samples": mismatched,
            "bit_exact": mismatched == 0 and got_total == seconds * RATE}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 min file instead of 10 min")
    parser.add_argument("--output", "-o", help="also write the JSON result to this file")
    parser.add_argument("--tmpdir", help="where to put the generated WAV and the store")
    parser.add_argument("--repeats", type=int, default=None, help="bare read + ingest pairs (default 3; quick 1)")
    args = parser.parse_args()
    repeats = args.repeats or (1 if args.quick else 3)
    json_fd = _real_stdout()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    import distributed  # noqa: F401 - its logging set-up at import would undo the levels below

    for name in ("distributed", "bokeh", "tornado", "werkzeug"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # Credentials for the local moto server only, before boto/s3fs/workers read them.
    os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                       "AWS_DEFAULT_REGION": "us-east-1"})
    os.environ.pop("AWS_PROFILE", None)

    import boto3
    import dask
    import icechunk
    import zarr
    from distributed import Client
    from moto.server import ThreadedMotoServer

    from pamingest import PacificSound, ingest
    from pamingest.executor import local_cluster

    seconds = 60 if args.quick else 600
    tmp = Path(tempfile.mkdtemp(prefix="pam-bench-ps-", dir=args.tmpdir))
    server = cluster = client = None
    try:
        wav = tmp / KEY.rsplit("/", 1)[-1]
        t0 = time.perf_counter()
        write_wav(wav, seconds)
        wav_bytes = wav.stat().st_size
        log.info("generated %s: %.0f s, %.1f MB in %.1f s", wav.name, seconds, wav_bytes / MB, time.perf_counter() - t0)

        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        s3.upload_file(str(wav), BUCKET, KEY)
        wav.unlink()  # served from moto from here on; keep the disk small
        log.info("served as s3://%s/%s from %s", BUCKET, KEY, endpoint)

        cluster = local_cluster(1, dashboard_address=None)  # as pamingest builds its clusters
        client = Client(cluster)
        client.wait_for_workers(1)
        client.run(_warm)
        options = {"endpoint_url": endpoint, "key": "bench", "secret": "bench"}
        source = PacificSound("256khz", start=START, end=START + dt.timedelta(minutes=10), metadata_url="",
                              storage_options=options)
        runs = []
        for r in range(repeats):
            # Memory first, on a worker that has only been warmed: the bare read after the ingest.
            (addr, pid), = client.run(_reset_hwm).items()
            baseline = psutil.Process(pid).memory_info().rss
            sampler = Sampler(pid)
            sampler.start()
            store = str(tmp / f"store-{r}")
            t0 = time.perf_counter()
            try:
                report = ingest(source, store, client=client)
            finally:
                elapsed = time.perf_counter() - t0
                sampler.stop()
            status = client.run(_status_kb)[addr]
            same_worker = client.run(os.getpid)[addr] == pid
            if report.failed or report.ingested != 1:
                raise RuntimeError(f"ingest failed:\n{report.summary()}")
            peak = max(sampler.peak, status["VmHWM"] * 1024)
            # The same bytes read bare on the worker: what the S3 server alone allows (moto serves a
            # range of a large object much slower than a real S3 endpoint does).
            n_read, read_s = client.submit(_bare_read, f"s3://{BUCKET}/{KEY}", options, pure=False).result()
            log.info("bare read on the worker: %.1f MB/s", n_read / MB / read_s)
            runs.append({"ingest_seconds": round(elapsed, 2), "bare_read_seconds": round(read_s, 2),
                         "ingest_over_bare_read": round((wav_bytes / elapsed) / (n_read / read_s), 3),
                         "worker_baseline_mb": round(baseline / MB, 1), "worker_peak_mb": round(peak / MB, 1),
                         "worker_vmhwm_mb": round(status["VmHWM"] / 1024, 1), "rss_samples": sampler.n,
                         "worker_restarted": not same_worker})
            log.info("repeat %d: ingested in %.1f s (%.3f of the bare read), peak %.0f MB", r, elapsed,
                     runs[-1]["ingest_over_bare_read"], peak / MB)
            if r:
                shutil.rmtree(store, ignore_errors=True)
        store = str(tmp / "store-0")
        log.info("verifying")
        check = verify(store, seconds)
        elapsed = statistics.median(x["ingest_seconds"] for x in runs)
        read_s = statistics.median(x["bare_read_seconds"] for x in runs)
        ratio = statistics.median(x["ingest_over_bare_read"] for x in runs)
        # The first ingest's peak, on a worker that has only been warmed; later repeats start from
        # what earlier ones (and the bare reads) left in glibc's arenas.
        peak_mb = runs[0]["worker_peak_mb"]
        store_bytes = sum(f.stat().st_size for f in Path(store).rglob("*") if f.is_file())
        result = {
            "benchmark": "pacific_sound_memory",
            "quick": bool(args.quick),
            "file": {"url": f"s3://{BUCKET}/{KEY}", "seconds": seconds, "sample_rate": RATE, "bits": 24,
                     "channels": 1, "bytes": wav_bytes,
                     "signal": "gaussian noise (sd 2^16) + 1 kHz tone (2^20), 24-bit"},
            "config": {"cluster": "LocalCluster(n_workers=1, threads_per_worker=1, processes=True)",
                       "row_seconds": 10.0, "rows_per_task": 90, "served_by": "moto ThreadedMotoServer (in process)",
                       "store": "local Icechunk repository"},
            "repeats": repeats,
            "ingest_seconds": round(elapsed, 2),
            "audio_s_per_s": round(seconds / elapsed, 1),
            "wav_mb_per_s": round(wav_bytes / MB / elapsed, 1),
            "samples_per_s": round(seconds * RATE / elapsed),
            "bare_s3_read_mb_per_s": round(n_read / MB / read_s, 1),
            "ingest_over_bare_read": ratio,
            "rows": report.rows,
            "worker_baseline_mb": runs[0]["worker_baseline_mb"],
            "worker_peak_mb": peak_mb,
            "targets": {
                "ingest_over_bare_read": {"measured": ratio, "target": 0.9, "met": ratio >= 0.9,
                                          "what": "median over the repeats"},
                "worker_peak_mb": {"measured": peak_mb, "target": 250, "met": peak_mb <= 250,
                                   "what": "the first repeat's (fresh worker); each repeat's in runs"},
            },
            "runs": runs,
            "store_bytes": store_bytes,
            "store_over_wav_bytes": round(store_bytes / wav_bytes, 3),
            "readback": check,
            "environment": c.environment(),
        }
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
        if server is not None:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    text = json.dumps(result, indent=2)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text + "\n")
    os.write(json_fd, (text + "\n").encode())


if __name__ == "__main__":
    main()
