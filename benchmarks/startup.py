"""Start-up time: ``import pamingest`` and ``pamingest --help`` in fresh interpreters.

Each case is a fresh ``python`` subprocess (this interpreter, ``sys.executable``,
with this process's environment, so ``PYTHONPATH`` picks the same pamingest as
``environment.pamingest_path``; run from a temporary folder, so that the current
directory does not), timed wall clock from start to exit:

* ``python_pass``: ``python -c pass``, the interpreter alone (baseline, for
  information);
* ``import_pamingest``: ``python -c "import pamingest"``;
* ``help``: what the ``pamingest`` console script runs, ``from pamingest.cli
  import main`` then ``main()`` with ``sys.argv = ["pamingest", "--help"]``
  (the console script itself may point at another checkout of pamingest);
* ``help_python_m``: ``python -m pamingest.cli --help``, for information.

Every case is run ``--warmup`` times first (2; quick 1: page cache and
``__pycache__`` warm), then ``--repeats`` times (15; quick 3), the cases
interleaved so that a busy spell of a shared machine hits them alike; median
and p90 are reported, with every run. ``other_cores`` is the CPU other
processes used meanwhile (see README).

Also: the heavy modules (dask, distributed, zarr, icechunk, xarray, pandas,
av, scipy, soundfile, s3fs) found in ``sys.modules`` after ``import
pamingest`` and after ``pamingest --help`` (there should be none), the lighter
ones for information (numpy, fsspec, tqdm, importlib.metadata), and where
``pamingest --help`` spends its import time, by package (``python -X importtime``).

Targets (issue #11): median ``import pamingest`` <= 0.4 s, median
``pamingest --help`` <= 0.6 s (fresh interpreter, warm page cache); no heavy
module imported by either.

Usage: python benchmarks/startup.py [--quick] [--repeats N] [-o results/startup.json]
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time

import numpy as np

import _common as C

log = logging.getLogger("pamingest.bench.startup")

TARGET_IMPORT_S = 0.4
TARGET_HELP_S = 0.6
HEAVY = ("dask", "distributed", "zarr", "icechunk", "xarray", "pandas", "av", "scipy", "soundfile", "s3fs")
LIGHT = ("numpy", "fsspec", "tqdm", "importlib.metadata")

HELP_CODE = "import sys; from pamingest.cli import main; sys.argv = ['pamingest', '--help']; sys.exit(main())"
CASES = {
    "python_pass": ["-c", "pass"],
    "import_pamingest": ["-c", "import pamingest"],
    "help": ["-c", HELP_CODE],
    "help_python_m": ["-m", "pamingest.cli", "--help"],
}

# Run in a subprocess: the modules a command left in sys.modules (its own output discarded).
PROBE = """
import contextlib, io, json, sys
with contextlib.redirect_stdout(io.StringIO()):
    if {help!r}:
        from pamingest.cli import main
        sys.argv = ["pamingest", "--help"]
        try:
            main()
        except SystemExit:
            pass
    else:
        import pamingest
print(json.dumps({{"pamingest": sys.modules["pamingest"].__file__, "modules": sorted(sys.modules)}}))
"""


def _options(parser) -> None:
    parser.add_argument("--repeats", type=int, help="timed runs of each case (15; quick 3)")
    parser.add_argument("--warmup", type=int, help="untimed runs of each case first (2; quick 1)")
    parser.add_argument("--wait-quiet", type=float, default=None,
                        help="wait up to S seconds for other processes to use < 0.25 cores first (10; quick 0)")


def run_once(args: list[str], cwd: str) -> float:
    """Wall seconds of one fresh ``python ARGS`` from start to exit."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, *args], cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"python {' '.join(args)} exited {proc.returncode}: {proc.stderr.decode()[-2000:]}")
    return wall


def stats(runs: list[float]) -> dict:
    a = np.asarray(runs)
    return {"median_s": round(float(np.median(a)), 4), "p90_s": round(float(np.percentile(a, 90)), 4),
            "min_s": round(float(a.min()), 4), "max_s": round(float(a.max()), 4),
            "runs_s": [round(float(x), 4) for x in runs]}


def loaded_modules(help: bool, cwd: str) -> dict:
    """``{"pamingest": its file, "heavy": [...], "light": [...]}`` after ``import pamingest`` or ``--help``."""
    out = subprocess.run([sys.executable, "-c", PROBE.format(help=help)], cwd=cwd, capture_output=True, text=True,
                         check=True).stdout
    found = json.loads(out.strip().splitlines()[-1])
    modules = set(found["modules"])
    return {"pamingest": found["pamingest"],
            "heavy": [m for m in HEAVY if m in modules],
            "light": [m for m in LIGHT if m in modules]}


def importtime_by_package(args: list[str], cwd: str, n: int = 10) -> list[dict]:
    """Where ``python -X importtime ARGS`` spends its import time: the ``n`` top-level packages
    (numpy, pamingest, encodings, ...) with the most import time of their own modules (ms)."""
    proc = subprocess.run([sys.executable, "-X", "importtime", *args], cwd=cwd, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    by_package: dict[str, int] = {}
    for line in proc.stderr.splitlines():
        parts = line.split("|")
        if not line.startswith("import time:") or len(parts) != 3 or not parts[1].strip().isdigit():
            continue
        package = parts[2].strip().split(".")[0]
        by_package[package] = by_package.get(package, 0) + int(parts[0].split(":")[1])
    top = sorted(by_package.items(), key=lambda kv: -kv[1])[:n]
    return [{"package": name, "self_ms": round(us / 1000, 1)} for name, us in top]


def main() -> None:
    args = C.parse_args(__doc__.splitlines()[0], _options)
    repeats = args.repeats or (3 if args.quick else 15)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    wait = args.wait_quiet if args.wait_quiet is not None else (0.0 if args.quick else 10.0)
    result: dict = {
        "benchmark": "startup", "quick": bool(args.quick),
        "config": {"repeats": repeats, "warmup": warmup, "python": sys.executable,
                   "commands": {name: ["python", *a] for name, a in CASES.items()},
                   "timing": "wall clock of the whole subprocess (fork/exec to exit), cases interleaved"},
        "environment": C.environment(),
    }
    with C.TempDir("pam-bench-startup-", args.tmpdir, args.keep) as tmp:
        cwd = str(tmp)
        after = {"import_pamingest": loaded_modules(False, cwd), "help": loaded_modules(True, cwd)}
        expected = result["environment"].get("pamingest_path")
        for name, found in after.items():
            if expected and os.path.dirname(os.path.realpath(found["pamingest"])) != expected:
                raise RuntimeError(f"subprocesses import {found['pamingest']}, this process {expected}")
            log.info("after %s: heavy %s, light %s", name, found["heavy"] or "none", found["light"] or "none")
        for _ in range(warmup):
            for a in CASES.values():
                run_once(a, cwd)
        quiet = C.wait_for_quiet(wait) if wait > 0 else {}
        meter = C.CpuMeter()
        runs: dict[str, list[float]] = {name: [] for name in CASES}
        for _ in range(repeats):
            for name, a in CASES.items():
                runs[name].append(run_once(a, cwd))
        result["contention"] = {**quiet, **meter.read()}
        result["wall"] = {name: stats(r) for name, r in runs.items()}
        for name, s in result["wall"].items():
            log.info("%-18s median %.3f s  p90 %.3f s", name, s["median_s"], s["p90_s"])
        result["import_minus_python_pass_s"] = round(
            result["wall"]["import_pamingest"]["median_s"] - result["wall"]["python_pass"]["median_s"], 4)
        result["modules_after"] = {name: {"heavy": f["heavy"], "light": f["light"]} for name, f in after.items()}
        result["importtime_help_by_package"] = importtime_by_package(CASES["help"], cwd)
    imp, hlp = result["wall"]["import_pamingest"]["median_s"], result["wall"]["help"]["median_s"]
    heavy = sorted(set(after["import_pamingest"]["heavy"]) | set(after["help"]["heavy"]))
    result["targets"] = {
        "import_pamingest_median_s": {"target": f"<= {TARGET_IMPORT_S:g}", "value": imp,
                                      "met": C.verdict(imp, TARGET_IMPORT_S, higher_is_better=False)},
        "help_median_s": {"target": f"<= {TARGET_HELP_S:g}", "value": hlp,
                          "met": C.verdict(hlp, TARGET_HELP_S, higher_is_better=False)},
        "heavy_modules_loaded": {"target": "none after import pamingest or pamingest --help", "value": heavy,
                                 "met": not heavy},
    }
    C.emit(result, args)


if __name__ == "__main__":
    main()
