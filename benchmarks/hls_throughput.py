"""HLS ingest throughput per worker against bare decode loops of the same segments.

Synthesises an Orcasound-layout session (MPEG-TS/AAC, 48 kHz, 10 s segments
with continuous PTS, PyAV's AAC encoder), serves it from a moto S3 server on
127.0.0.1 and measures, in audio-seconds per second:

- ``pamingest_1_worker`` / ``pamingest_2_workers``: ``ingest(OrcasoundHLS(...))``
  on a LocalCluster of single-threaded workers (store on local disk; the
  clusters are started and warmed before timing);
- ``pamingest_threads`` (information): the same with ``client="threads"``,
  what the default command does for a job of this size;
- ``bare_pyav_decode``: one PyAV decoder through the segments, ffmpeg's s16
  scaling, nothing stored;
- ``bare_pyav_decode_flac``: the same plus a FLAC encode of every 10 s row,
  i.e. the work pamingest has to do anyway.

Targets (issue #11): one worker >= 0.8x the bare decode + FLAC loop; two
workers >= 1.8x one. The variants are interleaved over the repeats and
compared on medians. The bare loops read the segments from local files: they
pay no S3 cost, which pamingest does (moto on this machine, sharing its cores).
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import soundfile

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402

log = logging.getLogger("pamingest.bench")
BUCKET = "audio-orcasound-net"
NODE = "rpi_orcasound_lab"
EPOCH = 1_730_419_200


def bare_decode(paths: list[Path], flac: bool) -> float:
    import av

    t0 = time.perf_counter()
    decoder = av.CodecContext.create("aac", "r")
    carry = np.zeros((0, 2), dtype=np.int16)
    for p in paths:
        with av.open(str(p)) as container:
            frames = [f.to_ndarray() for packet in container.demux(container.streams.audio[0]) if packet.size
                      for f in decoder.decode(packet)]
        samples = np.clip(np.round(np.concatenate(frames, axis=1).T * 32768), -32768, 32767).astype(np.int16)
        if flac:
            carry = np.concatenate([carry, samples]) if len(carry) else samples
            while len(carry) >= 480_000:
                soundfile.write(io.BytesIO(), carry[:480_000], 48_000, format="FLAC", subtype="PCM_16")
                carry = carry[480_000:]
    return time.perf_counter() - t0


def _extra(parser) -> None:
    parser.add_argument("--repeats", type=int, default=None, help="interleaved repeats (default 3; quick 1)")
    parser.add_argument("--wait-quiet", type=float, default=None,
                        help="wait up to S s for a quiet machine before each repeat (default 60; quick 0)")


def main() -> None:
    args = c.parse_args(__doc__, _extra)
    minutes = 3 if args.quick else 30
    repeats = args.repeats or (1 if args.quick else 3)
    wait = args.wait_quiet if args.wait_quiet is not None else (0 if args.quick else 60)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    import boto3

    import pamingest as pi
    from pamingest.demo import start_s3_server
    from pamingest.sources.orcasound import OrcasoundHLS
    from pamingest.testing import hls_segments, tone_and_noise

    runs: dict[str, list[dict]] = {k: [] for k in ("pamingest_1_worker", "pamingest_2_workers", "pamingest_threads",
                                                   "bare_pyav_decode", "bare_pyav_decode_flac")}
    with c.TempDir("pam-hls-", args.tmpdir) as tmp:
        log.info("synthesising %d min of stereo HLS segments", minutes)
        segments = hls_segments(tone_and_noise(minutes * 60, channels=2, seed=11))
        paths = []
        for n, data in enumerate(segments):
            p = tmp / f"live{n:03d}.ts"
            p.write_bytes(data)
            paths.append(p)
        audio_seconds = len(segments) * 469 * 1024 / 48_000
        server, endpoint = start_s3_server()
        clusters = {w: c.start_cluster(w) for w in (1, 2)}
        try:
            s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
            s3.create_bucket(Bucket=BUCKET)
            for p in paths:
                s3.put_object(Bucket=BUCKET, Key=f"{NODE}/hls/{EPOCH}/{p.name}", Body=p.read_bytes())
            options = {"endpoint_url": endpoint, "key": os.environ["AWS_ACCESS_KEY_ID"],
                       "secret": os.environ["AWS_SECRET_ACCESS_KEY"]}
            for r in range(repeats):
                if wait:
                    c.wait_for_quiet(wait)
                for name, client in (("pamingest_1_worker", clusters[1][1]), ("pamingest_2_workers", clusters[2][1]),
                                     ("pamingest_threads", "threads")):
                    store = tmp / f"store-{name}-{r}"
                    meter = c.CpuMeter()
                    t0 = time.perf_counter()
                    report = pi.ingest(OrcasoundHLS([NODE], storage_options=options), str(store), client=client)
                    elapsed = time.perf_counter() - t0
                    assert report.ingested == len(segments) and not report.failed, report.summary()
                    runs[name].append({"seconds": round(elapsed, 3), **meter.read()})
                    shutil.rmtree(store, ignore_errors=True)
                    log.info("repeat %d %s: %.2f s", r, name, elapsed)
                for name, flac in (("bare_pyav_decode", False), ("bare_pyav_decode_flac", True)):
                    meter = c.CpuMeter()
                    runs[name].append({"seconds": round(bare_decode(paths, flac=flac), 3), **meter.read()})
        finally:
            for cluster, client in clusters.values():
                c.stop_cluster(cluster, client)
            server.stop()
    med = {k: statistics.median(x["seconds"] for x in v) for k, v in runs.items()}
    rate = {k: audio_seconds / v for k, v in med.items()}
    one, two = rate["pamingest_1_worker"], rate["pamingest_2_workers"]
    ratio = one / rate["bare_pyav_decode_flac"]
    speedup = two / one
    out = {
        "benchmark": "hls_throughput",
        "quick": args.quick,
        "segments": len(segments),
        "audio_seconds": round(audio_seconds, 1),
        "repeats": repeats,
        "audio_s_per_s": {k: round(v, 1) for k, v in rate.items()},
        "ratio_1_worker_to_bare_decode_flac": round(ratio, 3),
        "ratio_1_worker_to_bare_decode": round(one / rate["bare_pyav_decode"], 3),
        "speedup_2_workers_over_1": round(speedup, 3),
        "speedup_threads_over_1_worker": round(rate["pamingest_threads"] / one, 3),
        "targets": {
            "one_worker_vs_bare_decode_flac": {"measured": round(ratio, 3), "target": 0.8,
                                               "met": c.verdict(ratio, 0.8, True)},
            "two_workers_over_one": {"measured": round(speedup, 3), "target": 1.8,
                                     "met": c.verdict(speedup, 1.8, True)},
        },
        "runs": runs,
        "environment": c.environment(),
    }
    c.emit(out, args)


if __name__ == "__main__":
    main()
