"""HLS ingest throughput per worker against bare decode loops of the same segments.

Synthesises an Orcasound-layout session (MPEG-TS/AAC, 48 kHz, 10 s segments
with continuous PTS, PyAV's AAC encoder), serves it from a moto S3 server on
127.0.0.1 and measures, in audio-seconds per second:

- ``pamingest_1_worker`` / ``pamingest_2_workers``: ``ingest(OrcasoundHLS(...))``
  on a LocalCluster (store on local disk; cluster start-up not timed);
- ``bare_pyav_decode``: one PyAV decoder through the segments, ffmpeg's s16
  scaling, nothing stored (the issue's baseline; target: pamingest >= 0.7 of it);
- ``bare_pyav_decode_flac``: the same plus a FLAC encode of every 10 s row,
  i.e. the work pamingest has to do anyway;
- ``ffmpeg_cli_per_clip``: ``ffmpeg -i liveNNN.ts -f s16le -`` once per segment,
  as the Orcasound tools decode clips today (skipped if ffmpeg is not installed).

The bare loops read the segments from local files: they pay no S3 cost, which
pamingest does.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import subprocess
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


def ffmpeg_per_clip(paths: list[Path]) -> float | None:
    exe = shutil.which("ffmpeg")
    if not exe:
        return None
    t0 = time.perf_counter()
    for p in paths:
        subprocess.run([exe, "-v", "error", "-i", str(p), "-f", "s16le", "-"], check=True,
                       stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    args = c.parse_args(__doc__)
    minutes = 3 if args.quick else 30
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    import boto3

    import pamingest as pi
    from pamingest.demo import start_s3_server
    from pamingest.sources.orcasound import OrcasoundHLS
    from pamingest.testing import hls_segments, tone_and_noise

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
        try:
            s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
            s3.create_bucket(Bucket=BUCKET)
            for p in paths:
                s3.put_object(Bucket=BUCKET, Key=f"{NODE}/hls/{EPOCH}/{p.name}", Body=p.read_bytes())
            options = {"endpoint_url": endpoint, "key": os.environ["AWS_ACCESS_KEY_ID"],
                       "secret": os.environ["AWS_SECRET_ACCESS_KEY"]}
            results = {}
            for workers in (1, 2):
                cluster, client = c.start_cluster(workers)
                try:
                    store = tmp / f"store-{workers}"
                    t0 = time.perf_counter()
                    report = pi.ingest(OrcasoundHLS([NODE], storage_options=options), str(store), client=client)
                    elapsed = time.perf_counter() - t0
                finally:
                    c.stop_cluster(cluster, client)
                assert report.ingested == len(segments) and not report.failed, report.summary()
                results[workers] = audio_seconds / elapsed / workers
                log.info("pamingest %d worker(s): %.1f s", workers, elapsed)
        finally:
            server.stop()
        decode = bare_decode(paths, flac=False)
        decode_flac = bare_decode(paths, flac=True)
        ff = ffmpeg_per_clip(paths)
    per_worker = results[1]
    out = {
        "benchmark": "hls_throughput",
        "quick": args.quick,
        "segments": len(segments),
        "audio_seconds": round(audio_seconds, 1),
        "audio_s_per_s_per_worker": {
            "pamingest_1_worker": round(results[1], 1),
            "pamingest_2_workers": round(results[2], 1),
            "bare_pyav_decode": round(audio_seconds / decode, 1),
            "bare_pyav_decode_flac": round(audio_seconds / decode_flac, 1),
            "ffmpeg_cli_per_clip": round(audio_seconds / ff, 1) if ff else None,
        },
        "ratio_pamingest_to_bare_pyav_decode": round(per_worker / (audio_seconds / decode), 3),
        "ratio_pamingest_to_bare_decode_flac": round(per_worker / (audio_seconds / decode_flac), 3),
        "ratio_pamingest_to_ffmpeg_cli": round(per_worker / (audio_seconds / ff), 3) if ff else None,
        "speedup_2_workers": round(2 * results[2] / results[1], 3),
        "target_ratio_to_bare_decode": 0.7,
        "meets_target": c.verdict(per_worker / (audio_seconds / decode), 0.7, True),
        "environment": c.environment(),
    }
    c.emit(out, args)


if __name__ == "__main__":
    main()
