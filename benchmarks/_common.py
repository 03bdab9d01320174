"""Shared helpers for the benchmark scripts (not a benchmark itself).

* synthetic recordings: coloured noise plus a few tones, written block by
  block with soundfile so that the generator stays small in memory whatever
  the file length, and with SoundTrap-style names (``<site>.<YYMMDDHHMMSS>.wav``);
* a LocalCluster factory and worker warm-up (so that imports on the workers
  are not counted in the timed ingest);
* directory sizes, JSON output and stderr logging.

Every script prints exactly one JSON object on stdout; logs go to stderr.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile
from scipy import signal

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"

log = logging.getLogger("pamingest.bench")


# ----------------------------------------------------------------- cli, logs, output

_REAL_STDOUT: int | None = None


def guard_stdout() -> None:
    """Send everything written to fd 1 to stderr, keeping the real stdout for the JSON.

    Icechunk's Rust logger writes its warnings to stdout (e.g. "The
    LocalFileSystem storage is not safe for concurrent commits"), and Dask worker
    processes inherit fd 1: without this the JSON would not be alone on stdout.
    """
    global _REAL_STDOUT
    if _REAL_STDOUT is None:
        sys.stdout.flush()
        _REAL_STDOUT = os.dup(1)
        os.dup2(2, 1)


def parse_args(description: str, extra=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run in < 60 s")
    parser.add_argument("--output", "-o", help="also write the JSON result to this file")
    parser.add_argument("--tmpdir", help="where to put generated audio and stores (default: system temp)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging (stderr)")
    parser.add_argument("--nice", type=int, default=0,
                        help="change this process's (and its workers') scheduling priority by N (e.g. -10, "
                             "needs root) so that other processes on a shared machine disturb timings less")
    if extra is not None:
        extra(parser)
    args = parser.parse_args()
    guard_stdout()
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    if args.nice:
        try:
            os.nice(args.nice)
        except OSError as exc:
            log.warning("cannot change priority by %d: %s", args.nice, exc)
    # distributed is chatty at INFO (cluster start/stop); keep stderr readable. Import it
    # first: its own logging set-up at import time would undo the levels set here.
    import distributed  # noqa: F401

    for name in ("distributed", "bokeh", "tornado"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return args


def emit(result: dict, args: argparse.Namespace) -> None:
    """Print the single JSON object on stdout (and to --output if given)."""
    text = json.dumps(result, indent=2, sort_keys=False, default=_json_default)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text + "\n")
    sys.stdout.flush()
    if _REAL_STDOUT is not None:
        os.write(_REAL_STDOUT, (text + "\n").encode())
    else:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()


def _json_default(obj):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def pamingest_revision() -> dict:
    """The git commit of the pamingest under test, and whether its sources differ from it."""
    import subprocess

    import pamingest

    src = Path(pamingest.__file__).resolve().parent
    out = {"pamingest_path": str(src)}
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=src, capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "."], cwd=src, capture_output=True,
                               text=True, timeout=10).stdout.strip()
        # The whole checkout, benchmark scripts included; results written by earlier runs do not count.
        tree = subprocess.run(["git", "status", "--porcelain", "--", ":/", ":(exclude,top)benchmarks/results"],
                              cwd=src, capture_output=True, text=True, timeout=10).stdout.strip()
        out.update({"git_commit": head or None, "pamingest_sources_modified": bool(dirty),
                    "tree_clean": not tree})
    except (OSError, subprocess.SubprocessError):
        out["git_commit"] = None
    return out


def environment() -> dict:
    import dask
    import icechunk
    import zarr

    return {
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "libsndfile": soundfile.__libsndfile_version__,
        "soundfile": soundfile.__version__,
        "zarr": zarr.__version__,
        "icechunk": icechunk.__version__,
        "dask": dask.__version__,
        "numpy": np.__version__,
        "timestamp_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "nice": os.nice(0),
        **pamingest_revision(),
    }


class TempDir:
    """A temporary directory removed on exit unless ``keep``."""

    def __init__(self, prefix: str, base: str | None = None, keep: bool = False) -> None:
        self.path = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
        self.keep = keep

    def __enter__(self) -> Path:
        return self.path

    def __exit__(self, *exc) -> None:
        if self.keep:
            log.info("kept %s", self.path)
        else:
            shutil.rmtree(self.path, ignore_errors=True)


def verdict(value: float | None, target: float, higher_is_better: bool) -> bool | None:
    if value is None or not np.isfinite(value):
        return None
    return bool(value >= target) if higher_is_better else bool(value <= target)


# ----------------------------------------------------------------- synthetic audio

FULL_SCALE = {16: 2**15 - 1, 24: 2**23 - 1}


class ColouredNoise:
    """An endless, continuous signal: 1/f (pink) noise + two tones + a little white noise.

    White Gaussian noise goes through a pinking filter (Paul Kellet's economy
    IIR, run with carried filter state so that blocks join seamlessly); two
    tones come from a sine table (integer phase, no drift, cheap); a little
    white noise keeps the low bits unpredictable. FLAC has real work to do:
    the 16-bit output compresses to about 68 % of PCM, the 24-bit to ~78 %.
    About 0.1 s of CPU per minute of 48 kHz audio.
    """

    # Kellet's "economy" pinking filter as a single IIR (b, a) pair.
    _B = np.array([0.049922035, -0.095993537, 0.050612699, -0.004408786], dtype=np.float32)
    _A = np.array([1.0, -2.494956002, 2.017265875, -0.522189400], dtype=np.float32)
    _TABLE = 1 << 16

    def __init__(self, sample_rate: int, bits: int = 16, seed: int = 0, level: float = 0.05) -> None:
        self.sample_rate = int(sample_rate)
        self.bits = int(bits)
        self.rng = np.random.default_rng(seed)
        self.level = level
        self.zi = np.zeros(3, dtype=np.float32)
        self.n = 0
        self.table = np.sin(2 * np.pi * np.arange(self._TABLE) / self._TABLE).astype(np.float32)
        # Tone frequency = step * sample_rate / TABLE: between 2 % and 20 % of the sample rate.
        self.tones = [(int(self.rng.uniform(0.02, 0.2) * self._TABLE), np.float32(self.rng.uniform(0.1, 0.3)))
                      for _ in range(2)]

    def block(self, frames: int) -> np.ndarray:
        """The next ``frames`` samples as int16 (16 bit) or right-aligned int32 (24 bit)."""
        white = self.rng.standard_normal(frames, dtype=np.float32)
        x, self.zi = signal.lfilter(self._B, self._A, white, zi=self.zi)
        x *= np.float32(4.0)
        x += np.float32(0.05) * self.rng.standard_normal(frames, dtype=np.float32)
        idx = np.arange(self.n, self.n + frames, dtype=np.int64)
        for step, amp in self.tones:
            x += amp * self.table[(idx * step) & (self._TABLE - 1)]
        self.n += frames
        full = FULL_SCALE[self.bits]
        x *= np.float32(self.level * full)
        y = np.clip(np.rint(x), -full - 1, full)
        return y.astype(np.int16 if self.bits == 16 else np.int32)


def write_synthetic(path: Path, seconds: float, sample_rate: int, bits: int = 16, seed: int = 0,
                    block_seconds: float = 10.0, fmt: str = "WAV") -> int:
    """Write ``seconds`` of :class:`ColouredNoise` to ``path`` block by block; returns frames."""
    gen = ColouredNoise(sample_rate, bits, seed)
    total = int(round(seconds * sample_rate))
    block = max(1, int(block_seconds * sample_rate))
    subtype = "PCM_16" if bits == 16 else "PCM_24"
    with soundfile.SoundFile(str(path), "w", samplerate=sample_rate, channels=1, subtype=subtype, format=fmt) as f:
        done = 0
        while done < total:
            n = min(block, total - done)
            data = gen.block(n)
            if bits == 24:
                data = np.left_shift(data, 8)  # libsndfile takes 24-bit PCM from the top of an int32
            f.write(data)
            done += n
    return total


def soundtrap_name(site: str | int, start: dt.datetime, ext: str = "wav") -> str:
    return f"{site}.{start:%y%m%d%H%M%S}.{ext}"


def make_deployment(folder: Path, n_files: int, seconds: float, sample_rate: int = 48_000, bits: int = 16,
                    site: str = "1234", start: dt.datetime | None = None, seed: int = 0) -> list[Path]:
    """``n_files`` consecutive SoundTrap-named WAVs in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    start = start or dt.datetime(2024, 1, 1, 0, 0, 0)
    paths = []
    t0 = time.perf_counter()
    for i in range(n_files):
        when = start + dt.timedelta(seconds=i * seconds)
        path = folder / soundtrap_name(site, when)
        write_synthetic(path, seconds, sample_rate, bits, seed=seed + i)
        paths.append(path)
    log.info("generated %d x %.0f s at %d Hz/%d bit in %s (%.1f s)", n_files, seconds, sample_rate, bits,
             folder, time.perf_counter() - t0)
    return paths


# ----------------------------------------------------------------- dask

def _warm_imports() -> int:
    """Import what an ingest task needs, so the first timed task does not pay for it."""
    import icechunk  # noqa: F401
    import soundfile  # noqa: F401
    import zarr  # noqa: F401

    import pamingest.ingest  # noqa: F401
    import pamingest.store.codec  # noqa: F401

    return os.getpid()


def start_cluster(n_workers: int, malloc_trim: bool = False):
    """A LocalCluster of ``n_workers`` single-threaded worker processes, warmed up; (cluster, client).

    Built by ``pamingest.executor.local_cluster``, as pamingest builds its own:
    workers start without Dask's default ``MALLOC_TRIM_THRESHOLD_=65536``.
    ``malloc_trim=True`` keeps Dask's default, to measure what it costs.
    """
    from distributed import Client

    from pamingest.executor import local_cluster

    t0 = time.perf_counter()
    cluster = local_cluster(n_workers, dask_malloc_trim=malloc_trim)
    client = Client(cluster)
    client.wait_for_workers(n_workers)
    client.run(_warm_imports)
    envs = set(client.run(lambda: os.environ.get("MALLOC_TRIM_THRESHOLD_")).values())
    log.info("LocalCluster with %d worker(s) up in %.1f s (worker MALLOC_TRIM_THRESHOLD_=%s)", n_workers,
             time.perf_counter() - t0, ",".join(str(e) for e in envs))
    if malloc_trim != (envs != {None}):
        raise RuntimeError(f"asked for malloc_trim={malloc_trim}, workers have MALLOC_TRIM_THRESHOLD_={envs}")
    return cluster, client


def stop_cluster(cluster, client) -> None:
    try:
        client.close()
    finally:
        cluster.close()


# ----------------------------------------------------------------- contention

def _own_cpu_seconds() -> float:
    """CPU seconds of this process, its reaped children and its live descendants."""
    import psutil

    t = os.times()
    total = t.user + t.system + t.children_user + t.children_system
    for child in psutil.Process().children(recursive=True):
        try:
            ct = child.cpu_times()
            total += ct.user + ct.system
        except psutil.Error:
            pass
    return total


def _system_busy_seconds() -> float:
    import psutil

    ct = psutil.cpu_times()
    return sum(getattr(ct, f, 0.0) for f in ("user", "nice", "system", "irq", "softirq", "steal", "guest"))


class CpuMeter:
    """How busy the machine was with *other* processes over an interval (in cores).

    The machine may be shared (other sessions running tests): every timed
    measurement records ``other_cores``, the CPU used by processes outside this
    benchmark's process tree divided by the wall time (0 = quiet machine;
    2 = both cores of a 2-core machine taken by someone else).
    """

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.sys0 = _system_busy_seconds()
        self.own0 = _own_cpu_seconds()

    def read(self) -> dict:
        wall = time.perf_counter() - self.t0
        own = _own_cpu_seconds() - self.own0
        system = _system_busy_seconds() - self.sys0
        return {"own_cpu_seconds": round(own, 3),
                "own_cores": round(own / wall, 2) if wall else None,
                "other_cores": round(max(0.0, system - own) / wall, 2) if wall else None}


def wait_for_quiet(max_wait: float, threshold: float = 0.25, probe: float = 2.0) -> dict:
    """Wait (up to ``max_wait`` s) until other processes use < ``threshold`` cores; what was seen."""
    t0 = time.perf_counter()
    seen = None
    while True:
        m = CpuMeter()
        time.sleep(probe)
        seen = m.read()["other_cores"]
        if seen is not None and seen < threshold:
            break
        if time.perf_counter() - t0 >= max_wait:
            log.warning("machine still busy (%.2f cores used by other processes) after waiting %.0f s",
                        seen, time.perf_counter() - t0)
            break
        log.info("machine busy (%.2f cores used by other processes); waiting", seen)
    return {"waited_s": round(time.perf_counter() - t0, 1), "other_cores_at_start": seen}


# ----------------------------------------------------------------- sizes

def tree_bytes(path: Path) -> dict:
    """Apparent bytes (sum of file sizes), allocated bytes (du) and file count under ``path``."""
    apparent = allocated = files = 0
    for root, _, names in os.walk(path):
        for name in names:
            st = os.lstat(os.path.join(root, name))
            apparent += st.st_size
            allocated += st.st_blocks * 512
            files += 1
    return {"apparent_bytes": apparent, "du_bytes": allocated, "files": files}
