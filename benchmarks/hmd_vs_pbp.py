"""Hybrid millidecade spectra: pamingest against MBARI's pbp, on the same minutes of audio.

Each case ingests recordings into a fresh store, reads every whole UTC
minute back as full-scale float64 samples (``ds.pam.window(..., dtype=
float64)``: what pbp's soundfile reader gives), and hands the same arrays
to both tools:

- ``pbp``: ``mbari-pbp`` 1.9.0's own code, ``pbp.hmb_gen.pypam_support.
  PypamSupport`` (``set_parameters(fs)``, ``add_segment`` per minute,
  ``process_captured_segments``), after scaling the samples by ``10 **
  (sensitivity_flat_value / 20)`` as ``ProcessHelper`` does. pbp pins
  numpy < 2 and xarray 2023.8 (through lifewatch-pypam 1.0.0), which cannot
  share an environment with pamingest, so it runs in its own interpreter:
  ``--pbp-python`` (or ``PBP_PYTHON``), a Python 3.11 venv with
  ``pip install mbari-pbp==1.9.0``. Its timed region is the add/process
  calls only (no imports, no file reads).
- ``pamingest``: ``pamingest.hmd.minute_psd`` + ``band_levels`` +
  ``levels_db`` on the same arrays, same calibration (-176 dB re V/uPa),
  timed the same way; and, for information, ``compute_hmd`` on the store
  (``client="serial"``: rows read and decoded from the store, spectra
  written back in a commit).

Both run on one core (scipy's FFT is single-threaded by default). Reported
per case: the largest |difference| of any band of any minute in dB (target
<= 0.1 dB), band centres equal, and seconds per minute of audio for each
tool (target: pamingest faster). ``--quick`` runs two minutes of the
SoundTrap fixture (8 kHz) and one synthetic minute at 48 kHz.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

FIXTURES = Path(os.environ.get("PAMINGEST_FIXTURES", Path(__file__).resolve().parents[2] / "shared" / "fixtures"))
SENSITIVITY = -176.0  # dB re 1 V/uPa, end to end: pbp's sensitivity_flat_value 176

PBP_WORKER = r"""
import json, sys, time, datetime as dt
import numpy as np
from loguru import logger
logger.remove()
from pbp.hmb_gen.pypam_support import PypamSupport
spec = json.loads(sys.argv[1])
data = np.load(spec["samples"])
fs, flat = spec["sample_rate"], spec["flat"]
t0 = time.perf_counter(); c0 = time.process_time()
support = PypamSupport(logger)
support.set_parameters(fs)
for i, minute in enumerate(data):
    support.add_segment(dt.datetime.fromtimestamp(spec["minutes"][i], dt.timezone.utc), minute * 10 ** (flat / 20))
result = support.process_captured_segments()
wall, cpu = time.perf_counter() - t0, time.process_time() - c0
np.savez(spec["out"], psd=result.psd_da.values, frequency=result.psd_da["frequency"].values)
import pbp, importlib.metadata as md
print(json.dumps({"wall": wall, "cpu": cpu, "pbp": md.version("mbari-pbp"), "pypam": md.version("lifewatch-pypam")}))
"""


def extra(parser) -> None:
    parser.add_argument("--pbp-python", default=os.environ.get("PBP_PYTHON"),
                        help="a Python with mbari-pbp==1.9.0 installed (its own venv; see the docstring)")
    parser.add_argument("--minutes", type=int, default=10, help="synthetic minutes per rate (full run)")


def ingest_case(name: str, folder: Path, template: str, tmp: Path):
    import pamingest as pi

    store = str(tmp / f"store-{name}")
    report = pi.ingest(pi.TimestampedFiles(str(folder), template), store, client="serial")
    if report.failed or not report.ingested:
        raise SystemExit(f"{name}: ingest failed: {report.summary()}")
    stream = pi.streams(pi.open_store(store))[0]
    return store, stream


def whole_minutes(store: str, stream: str, limit: int | None):
    """(minute starts ns, samples (minutes, 60 fs)) of the stream's whole UTC minutes."""
    import pamingest as pi
    from pamingest.hmd import MINUTE_NS

    ds = pi.open_stream(store, stream)
    sr = ds.pam.sample_rate
    cover = ds.pam.coverage()
    t0 = -(-int(cover["start"].min().value) // MINUTE_NS) * MINUTE_NS
    t1 = int(cover["end"].max().value) // MINUTE_NS * MINUTE_NS
    starts = np.arange(t0, t1, MINUTE_NS, dtype=np.int64)[:limit]
    rows = []
    for t in starts:
        w = ds.pam.window(int(t), int(t) + MINUTE_NS, dtype=np.float64)
        if w.sizes["time"] != 60 * sr or (np.diff(w["time"].values.view(np.int64)) <= 0).any():
            continue  # a minute with a gap or a seam overlap: pbp and pamingest differ there by design
        rows.append((t, w.values[:, 0]))
    if not rows:
        raise SystemExit(f"{stream}: no whole continuous minute to compare")
    return sr, np.array([r[0] for r in rows]), np.stack([r[1] for r in rows])


def run_pamingest(samples: np.ndarray, sr: int):
    from pamingest import hmd

    cal = hmd.Calibration(SENSITIVITY)
    centres = hmd.hmd_bands(sr)[0]
    hmd.band_matrix(sr)  # built once per rate and cached, as in a run; not counted
    t0, c0 = time.perf_counter(), time.process_time()
    psd = np.stack([hmd.minute_psd(m, sr) for m in samples])
    levels = hmd.levels_db(hmd.band_levels(psd, sr), centres, cal)
    return levels, centres, time.perf_counter() - t0, time.process_time() - c0


def run_pbp(python: str, samples: np.ndarray, sr: int, minutes_ns: np.ndarray, tmp: Path):
    path, out = tmp / "samples.npy", tmp / "pbp_out.npz"
    np.save(path, samples)
    spec = {"samples": str(path), "sample_rate": sr, "flat": -SENSITIVITY, "out": str(out),
            "minutes": [int(t // 1_000_000_000) for t in minutes_ns]}
    done = subprocess.run([python, "-c", PBP_WORKER, json.dumps(spec)], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"})
    if done.returncode:
        raise SystemExit(f"pbp failed ({python}):\n{done.stderr[-3000:]}")
    timing = json.loads(done.stdout.strip().splitlines()[-1])
    got = np.load(out)
    return got["psd"], got["frequency"], timing


def store_run(store: str, stream: str, minutes_ns: np.ndarray):
    from pamingest import hmd

    t0 = time.perf_counter()
    rep = hmd.compute_hmd(store, stream, int(minutes_ns[0]), int(minutes_ns[-1]) + hmd.MINUTE_NS,
                          sensitivity=SENSITIVITY, client="serial")
    return time.perf_counter() - t0, rep


def case(name: str, store: str, stream: str, limit: int | None, args, tmp: Path) -> dict:
    sr, minutes_ns, samples = whole_minutes(store, stream, limit)
    n = len(minutes_ns)
    ours, centres, wall, cpu = run_pamingest(samples, sr)
    out = {"case": name, "sample_rate": sr, "minutes": n,
           "pamingest": {"seconds_per_audio_minute": wall / n, "cpu_seconds_per_audio_minute": cpu / n}}
    store_wall, rep = store_run(store, stream, minutes_ns)
    out["pamingest_from_store_serial"] = {"seconds_per_audio_minute": store_wall / n,
                                          "compute_seconds": rep.compute_seconds}
    from pamingest import hmd as _hmd

    # The store has every minute of the range; the comparison only the whole, seamless ones.
    sd = _hmd.hmd_dataset(store, stream)
    t = sd["time"].values.astype("datetime64[ns]").view(np.int64)
    stored = sd["psd"].values[[int(np.flatnonzero(t == m)[0]) for m in minutes_ns]]
    out["store_matches_arrays_db"] = float(np.nanmax(np.abs(stored - ours)))
    if not args.pbp_python:
        out["pbp"] = "not run: give --pbp-python (a venv with mbari-pbp==1.9.0)"
        return out
    theirs, freq, timing = run_pbp(args.pbp_python, samples, sr, minutes_ns, tmp)
    out["pbp"] = {"seconds_per_audio_minute": timing["wall"] / n, "cpu_seconds_per_audio_minute": timing["cpu"] / n,
                  "versions": {"mbari-pbp": timing["pbp"], "lifewatch-pypam": timing["pypam"]}}
    out["bands"] = {"pamingest": len(centres), "pbp": int(len(freq)),
                    "centres_equal": bool(len(freq) == len(centres) and np.allclose(freq, centres, rtol=1e-6))}
    diff = np.abs(theirs.astype(np.float64) - ours.astype(np.float64))
    out["max_abs_diff_db"] = float(np.nanmax(diff)) if diff.size else None
    out["mean_abs_diff_db"] = float(np.nanmean(diff)) if diff.size else None
    out["nan_mismatch"] = int((np.isnan(theirs) != np.isnan(ours)).sum())
    out["speed_ratio_pbp_over_pamingest"] = timing["wall"] / wall
    out["within_0_1_db"] = _common.verdict(out["max_abs_diff_db"], 0.1, higher_is_better=False)
    out["pamingest_faster"] = _common.verdict(out["speed_ratio_pbp_over_pamingest"], 1.0, higher_is_better=True)
    return out


def main() -> None:
    args = _common.parse_args(__doc__.splitlines()[0], extra)
    tmp = Path(tempfile.mkdtemp(prefix="hmd-bench-", dir=args.tmpdir))
    cases = []
    store, stream = ingest_case("soundtrap", FIXTURES / "soundtrap", "soundtrap", tmp)
    cases.append(case("soundtrap-8kHz (real, fixture)", store, stream, 2 if args.quick else None, args, tmp))
    import datetime as dt

    rates = [(48_000, 16)] if args.quick else [(48_000, 16), (256_000, 24)]
    for rate, bits in rates:
        folder = tmp / f"synthetic-{rate}"
        folder.mkdir()
        minutes = 1 if args.quick else args.minutes
        _common.write_synthetic(folder / _common.soundtrap_name(1, dt.datetime(2024, 1, 1, 0, 0, 0)),
                                60 * minutes, rate, bits)
        store, stream = ingest_case(f"syn{rate}", folder, "soundtrap", tmp)
        cases.append(case(f"synthetic-{rate // 1000}kHz-{bits}bit", store, stream, minutes, args, tmp))
    result = {"benchmark": "hmd_vs_pbp", "quick": args.quick, "cases": cases,
              "targets": {"max_abs_diff_db": 0.1, "speed_ratio_pbp_over_pamingest": ">= 1"},
              "revision": _common.pamingest_revision(), "environment": _common.environment()}
    _common.emit(result, args)


if __name__ == "__main__":
    main()
