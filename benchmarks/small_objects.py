"""Many small objects: MarmAudio-like one-call FLACs inside a Zenodo zip, listed and ingested.

Builds ``--files`` (20 000; quick 2 000) one-call 96 kHz 16-bit FLACs of
``--call-seconds`` (0.1 s) each, cut from a real recording (a SanctSound
humpback clip of the fixtures, so FLAC has real audio to code), in a
deflated ``Vocalizations.zip`` under 200 parents, with their
``Annotations.tsv``; serves both from a local HTTP server that answers as
Zenodo does (records API, HEAD, byte ranges: tests/zenodo_server.py).

Timed, each in a fresh store:

* listing: ``MarmAudio.partitions()`` + ``list_partition`` (the table and
  the zip's central directory), objects per second;
* ``ingest`` with the default executor choice (threads for this size) and
  with ``--workers`` LocalCluster workers, objects per second and audio
  seconds per second, each excluding nothing (listing, probe, plan, write,
  commit);
* a bare loop for comparison: every member read through the same zip
  filesystem over HTTP and decoded by soundfile, in as many threads as the
  threads run uses: what the objects cost without pamingest.

The ratio ingest / bare says how much per-object overhead pamingest adds.
Prints one JSON object on stdout.

Usage: python benchmarks/small_objects.py [--quick] [--files N] [--output FILE]
"""

from __future__ import annotations

import concurrent.futures as cf
import io
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

import _common as C

log = logging.getLogger("pamingest.bench.small_objects")
ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("PAMINGEST_FIXTURES", ROOT.parent / "shared" / "fixtures"))
CLIP = FIXTURES / "sanctsound" / "clips" / "SanctSound_CI02_05_humpbackwhale_20201014T134715Z.wav"
RATE = 96_000


def _options(parser) -> None:
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--call-seconds", type=float, default=0.1)
    parser.add_argument("--parents", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2, help="LocalCluster workers for the cluster run (0: none)")


def build(n: int, seconds: float, parents: int) -> tuple[bytes, bytes, float]:
    sys.path.insert(0, str(ROOT / "tests"))
    from zenodo_server import zip_of

    real = sf.read(str(CLIP), dtype="int16")[0]
    per = int(seconds * RATE)
    members, lines = {}, ["file_name\tparent_name\tlabel"]
    for k in range(n):
        parent, name = f"session_{k % parents:03d}", f"{k // parents:05d}.flac"
        at = (k * 997) % (len(real) - per)
        buf = io.BytesIO()
        sf.write(buf, real[at:at + per], RATE, format="FLAC", subtype="PCM_16")
        members[f"{parent}/{name}"] = buf.getvalue()
        lines.append(f"{name}\t{parent}\t{('Phee', 'Trill', 'Twitter', 'Tsik')[k % 4]}")
    return zip_of(members, folder="Vocalizations"), ("\n".join(lines) + "\n").encode(), n * per / RATE


def bare(source, threads: int) -> float:
    """Seconds to read and decode every member the way a task reads one, in ``threads`` threads."""
    from pamingest.fsutil import filesystem

    urls = [r.url for p in source.partitions() for r in source.list_partition(p) if not hasattr(r, "reason")]

    def one(url: str) -> int:
        fs, path = filesystem(url, {})
        with fs.open(path, "rb") as fh:
            return len(sf.read(io.BytesIO(fh.read()), dtype="int16")[0])

    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(threads) as pool:
        frames = sum(pool.map(one, urls))
    assert frames > 0
    return time.perf_counter() - t0


def main() -> None:
    args = C.parse_args(__doc__.splitlines()[0], _options)
    if args.quick:
        args.files = 2_000
    sys.path.insert(0, str(ROOT / "tests"))
    from zenodo_server import ZenodoServer

    from pamingest import ingest
    from pamingest.sources.zenodo import MarmAudio

    t0 = time.perf_counter()
    archive, table, audio_seconds = build(args.files, args.call_seconds, args.parents)
    log.info("built %d calls (%.1f MB zip) in %.1f s", args.files, len(archive) / 1e6, time.perf_counter() - t0)
    server = ZenodoServer()
    server.publish("15017207", {"Annotations.tsv": table, "Vocalizations.zip": archive})
    result: dict = {"benchmark": "small_objects", "environment": C.environment(), "quick": args.quick,
                    "files": args.files, "call_seconds": args.call_seconds, "zip_bytes": len(archive),
                    "audio_seconds": audio_seconds}
    try:
        with C.TempDir("pamingest-small-", args.tmpdir, args.keep) as tmp:
            source = MarmAudio(api=server.api)
            t0 = time.perf_counter()
            listed = [r for p in source.partitions() for r in source.list_partition(p)]
            t_list = time.perf_counter() - t0
            assert len(listed) == args.files
            result["listing"] = {"seconds": round(t_list, 2), "objects_per_s": round(args.files / t_list)}
            threads = os.cpu_count() or 2
            t_bare = bare(MarmAudio(api=server.api), threads)
            result["bare_read_decode"] = {"seconds": round(t_bare, 2), "threads": threads,
                                          "objects_per_s": round(args.files / t_bare)}
            runs = [("threads", "threads", None)] + ([("cluster", None, args.workers)] if args.workers else [])
            for label, client, workers in runs:
                t0 = time.perf_counter()
                report = ingest(MarmAudio(api=server.api), str(tmp / label), client=client, n_workers=workers)
                wall = time.perf_counter() - t0
                assert report.ingested == args.files and not report.failed, report.summary()
                result[f"ingest_{label}"] = {
                    "seconds": round(wall, 2), "objects_per_s": round(args.files / wall),
                    "audio_s_per_s": round(audio_seconds / wall, 1), "rows": report.rows,
                    "workers": workers, "over_bare": round(wall / t_bare, 2)}
                log.info("%s: %s", label, result[f"ingest_{label}"])
    finally:
        server.stop()
    C.emit(result, args)


if __name__ == "__main__":
    main()
