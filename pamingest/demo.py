"""The embedded default: fixture recordings in a local S3 server, ingested on a LocalCluster.

Nothing leaves the machine: a moto S3 server on 127.0.0.1 holds the
fixture recordings laid out as recorder deployments are in real buckets,
and pamingest ingests them into a local store that notebooks can open.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from .errors import SourceNotFoundError

DEMO_LAYOUT = {
    # bucket: (fixture folder, key prefix, glob, template, source name)
    "pam-field-recordings": ("songmeter/S4A03895", "S4A03895", "*.wav", "songmeter", "songmeter"),
    "soundtrap-deployments": ("soundtrap", "67416073", "*.flac", "soundtrap", "soundtrap"),
    "sanctsound-exemplars": ("sanctsound/clips", "", "*.wav", "sanctsound-clips", "sanctsound"),
}


def find_fixtures(explicit: str | None = None, required: bool = True) -> Path | None:
    """``explicit`` (the callers pass ``--fixtures`` or ``$PAMINGEST_FIXTURES``), else ``shared/fixtures``
    in this folder or one above it, or beside the repository."""
    if explicit and not Path(explicit).is_dir():
        raise SourceNotFoundError(f"fixture recordings not found: {explicit} is not a folder")
    candidates = [explicit]
    here = Path.cwd().resolve()
    candidates += [str(p / "shared" / "fixtures") for p in (here, *here.parents)]
    candidates.append(str(Path(__file__).resolve().parents[2] / "shared" / "fixtures"))
    for c in candidates:
        if c and Path(c).is_dir():
            return Path(c)
    if not required:
        return None
    raise SourceNotFoundError("fixture recordings not found: pass --fixtures or set PAMINGEST_FIXTURES")


def start_s3_server():
    """A moto S3 server on a free loopback port; returns (server, endpoint)."""
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "demo")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "demo")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return server, f"http://{host}:{port}"


def stop_processes(procs, timeout: float = 20.0) -> None:
    """Stop server processes started for the demo (or a test): terminate, newest first, then kill
    whatever has not exited within ``timeout`` seconds."""
    import subprocess

    for p in reversed(procs):
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()


def fill_buckets(endpoint: str, fixtures: Path) -> dict[str, int]:
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    counts = {}
    for bucket, (folder, prefix, pattern, _, _) in DEMO_LAYOUT.items():
        s3.create_bucket(Bucket=bucket)
        files = sorted((fixtures / folder).glob(pattern))
        for f in files:
            s3.put_object(Bucket=bucket, Key=f"{prefix}/{f.name}" if prefix else f.name, Body=f.read_bytes())
        counts[bucket] = len(files)
    return counts


ORCASOUND_BUCKET = "audio-orcasound-net"
ORCASOUND_NODES = ("rpi_orcasound_lab", "rpi_bush_point")
# Session folder epochs of the demo bucket: 2024-11-01T00:00:00Z and an hour later.
DEMO_EPOCHS = (1_730_419_200, 1_730_422_800)


def fill_orcasound_bucket(endpoint: str, fixtures: Path | None) -> dict[str, int]:
    """An Orcasound-layout bucket: the fixture HLS session on ``rpi_orcasound_lab``
    (synthesised with PyAV's AAC encoder when the fixtures are missing) and a
    synthesised mono node with two sessions and a gap between them."""
    import boto3

    from .testing import hls_segments, tone_and_noise

    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket=ORCASOUND_BUCKET)
    hls = fixtures / "orcasound" / "hls" if fixtures else None
    if hls and all((hls / f"live00{i}.ts").is_file() for i in range(3)):
        lab = [(hls / f"live00{i}.ts").read_bytes() for i in range(3)]
    else:
        lab = hls_segments(tone_and_noise(30, channels=2, seed=1))
    counts = {}
    for node, sessions in (
        (ORCASOUND_NODES[0], [(DEMO_EPOCHS[0], lab)]),
        (ORCASOUND_NODES[1], [(e, hls_segments(tone_and_noise(40, channels=1, seed=k)))
                              for k, e in enumerate(DEMO_EPOCHS)]),
    ):
        for epoch, segments in sessions:
            for n, data in enumerate(segments):
                s3.put_object(Bucket=ORCASOUND_BUCKET, Key=f"{node}/hls/{epoch}/live{n:03d}.ts", Body=data)
            s3.put_object(Bucket=ORCASOUND_BUCKET, Key=f"{node}/hls/{epoch}/live.m3u8", Body=b"#EXTM3U\n")
            counts[node] = counts.get(node, 0) + len(segments)
        s3.put_object(Bucket=ORCASOUND_BUCKET, Key=f"{node}/latest.txt", Body=str(sessions[-1][0]).encode())
    return counts


def run_demo(workdir: str = ".demo", fixtures: str | None = None, n_workers: int = 2) -> int:
    from distributed import Client

    from .executor import local_cluster
    from .info import store_info
    from .ingest import ingest
    from .query import open_store, streams
    from .sources.files import TimestampedFiles

    fixture_dir = find_fixtures(fixtures)
    store = str(Path(workdir).resolve() / "store")
    server, endpoint = start_s3_server()
    try:
        counts = fill_buckets(endpoint, fixture_dir)
        print(f"local S3 server {endpoint}: " + ", ".join(f"s3://{b} ({n} objects)" for b, n in counts.items()))
        options = {"endpoint_url": endpoint, "key": os.environ["AWS_ACCESS_KEY_ID"],
                   "secret": os.environ["AWS_SECRET_ACCESS_KEY"]}
        with local_cluster(n_workers) as cluster, Client(cluster) as client:
            print(f"dask dashboard: {client.dashboard_link}")
            for bucket, (_, _, _, template, name) in DEMO_LAYOUT.items():
                source = TimestampedFiles(f"s3://{bucket}", template, name=name, storage_options=options)
                report = ingest(source, store, client=client, progress=sys.stderr.isatty())
                print(f"\n== s3://{bucket} -> {store}\n{report.summary()}")
    finally:
        server.stop()
    print("\n" + store_info(store).format())
    tree = open_store(store)
    first = streams(tree)[0]
    ds = tree[first].to_dataset()
    start = ds.pam.rows["start"].iloc[0]
    w = ds.pam.window(start, start + __import__("pandas").Timedelta(seconds=2))
    print(f"\nopen it:  pamingest.open_store({store!r})[{first!r}].to_dataset().pam.window(...)")
    print(f"example:  2 s from {start} -> {w.sizes['time']} samples, dtype {w.dtype}")
    return 0
