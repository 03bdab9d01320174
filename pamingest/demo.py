"""The demo store, built one way by ``pamingest demo`` and ``make demo`` (``flows/demo.py``).

Nothing leaves the machine: a moto S3 server on 127.0.0.1 holds the fixture
recordings laid out as they are in real buckets (three recorder deployments
and an Orcasound HLS bucket), and pamingest ingests them into a local store
that the notebooks open, then scores its chunks with the demo's labeller.

``demo_ingests`` is the one list of what the demo ingests. ``make demo``
runs each item as ``prefect deployment run ingest/<deployment> --params ...``
against served deployments (whose ingest flow starts ``pseudolabel/default``,
the labeller ``DEMO_LABELER``); ``pamingest demo`` and the tests make the
calls that flow makes (``build_demo_store``), without Prefect. Both fill the
buckets with ``fill_demo_buckets``, so the two stores hold the same streams,
rows and scores.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import SourceNotFoundError

# The labeller of the demo's ``pseudolabel/default`` deployment (flows/demo.py serves it with this one).
DEMO_LABELER = "energy:killer-whale"

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


@dataclass(frozen=True)
class DemoIngest:
    """One ingest of the demo: a source kind and its options.

    ``make demo`` runs it as ``prefect deployment run ingest/<deployment> --params <params()>``;
    ``build_demo_store`` makes the calls the ingest flow makes for those parameters.
    """

    deployment: str  # the served ingest deployment (flows/serve.py) that runs it
    source: str  # a ``pamingest.sources`` entry point name
    options: dict[str, Any] = field(default_factory=dict)  # the source's options, JSON-friendly

    def params(self) -> dict[str, Any]:
        """The ingest flow's parameters."""
        return {"source": self.source, "options": self.options}


def demo_ingests(fixtures: Path | None) -> list[DemoIngest]:
    """What the demo ingests, in order, from the buckets ``fill_demo_buckets`` fills: the three
    recorder deployments (with fixtures), then the Orcasound nodes."""
    jobs = []
    if fixtures is not None:
        for bucket, (_, _, _, template, name) in DEMO_LAYOUT.items():
            jobs.append(DemoIngest("files", "files", {"root": f"s3://{bucket}", "template": template, "name": name}))
    jobs.append(DemoIngest("orcasound", "orcasound", {"nodes": list(ORCASOUND_NODES)}))
    return jobs


def fill_demo_buckets(endpoint: str, fixtures: Path | None) -> dict[str, int]:
    """Every bucket of the demo, on the S3 server at ``endpoint``: objects per bucket. Without
    fixtures, only the Orcasound bucket, its segments synthesised."""
    counts = fill_buckets(endpoint, fixtures) if fixtures is not None else {}
    counts[ORCASOUND_BUCKET] = sum(fill_orcasound_bucket(endpoint, fixtures).values())
    return counts


@dataclass
class DemoBuild:
    """What ``build_demo_store`` did: one ingest report per piece, and the labelling report."""

    ingests: list = field(default_factory=list)  # (DemoIngest, piece options, IngestReport)
    labeling: Any = None  # PseudolabelReport


def build_demo_store(store: str, endpoint: str, fixtures: Path | None, scheduler: str | None = None, *,
                     progress: bool = False) -> DemoBuild:
    """The demo store from buckets filled by ``fill_demo_buckets`` on ``endpoint``: the calls the
    ingest flow makes for each of ``demo_ingests`` (one per piece of its source), then the labelling
    that flow starts (``DEMO_LABELER`` over every queued chunk).

    ``scheduler`` is a Dask scheduler address, ``"serial"`` or ``"threads"`` (None: a LocalCluster
    per call, as a flow run without ``PAMINGEST_SCHEDULER``).
    """
    from .orchestration import ingest_partition, pseudolabel_store, work_partitions

    built = DemoBuild()
    for job in demo_ingests(fixtures):
        for piece in work_partitions(job.source, job.options):
            report = ingest_partition(job.source, piece, store, scheduler, s3_endpoint=endpoint, progress=progress)
            built.ingests.append((job, piece, report))
    built.labeling = pseudolabel_store(store, DEMO_LABELER, scheduler=scheduler)
    return built


def demo_queue_line(store: str) -> str:
    """One line on the demo labeller's queue: what it scored, what is left."""
    from .labeling import queue

    queues = queue(store, DEMO_LABELER)
    return (f"labelled   {DEMO_LABELER}: {sum(q.scored for q in queues)} chunks scored in {len(queues)} streams, "
            f"{sum(q.queued for q in queues)} queued")


def run_demo(workdir: str = ".demo", fixtures: str | None = None, n_workers: int = 2) -> int:
    """``pamingest demo``: the demo store at ``<workdir>/store``, without Prefect."""
    import pandas as pd
    from distributed import Client

    from .executor import local_cluster
    from .info import store_info
    from .query import open_store, streams

    fixture_dir = find_fixtures(fixtures, required=False)
    store = str(Path(workdir).resolve() / "store")
    server, endpoint = start_s3_server()
    try:
        counts = fill_demo_buckets(endpoint, fixture_dir)
        print(f"local S3 server {endpoint}: " + ", ".join(f"s3://{b} ({n} objects)" for b, n in counts.items())
              + ("" if fixture_dir else "; no fixtures found: Orcasound segments synthesised"))
        with local_cluster(n_workers) as cluster, Client(cluster) as client:
            print(f"dask dashboard: {client.dashboard_link}")
            built = build_demo_store(store, endpoint, fixture_dir, cluster.scheduler_address,
                                     progress=sys.stderr.isatty())
        for job, piece, report in built.ingests:
            print(f"\n== {job.source} {piece} -> {store}\n{report.summary()}")
        print(f"\n{built.labeling.summary()}")
    finally:
        server.stop()
    print("\n" + store_info(store).format())
    print(demo_queue_line(store))
    tree = open_store(store)
    first = streams(tree)[0]
    ds = tree[first].to_dataset()
    start = ds.pam.rows["start"].iloc[0]
    w = ds.pam.window(start, start + pd.Timedelta(seconds=2))
    print(f"\nopen it:  pamingest.open_store({store!r})[{first!r}].to_dataset().pam.window(...)")
    print(f"example:  2 s from {start} -> {w.sizes['time']} samples, dtype {w.dtype}")
    return 0
