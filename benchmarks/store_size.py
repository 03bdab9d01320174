"""Store size: bytes of a pamingest store vs. standalone FLAC files of the same samples.

For every WAV/FLAC under the fixtures folder (``/work/shared/fixtures`` or
``--fixtures``; ``*.ffmpeg-decoded.wav`` and files libsndfile cannot read are
skipped and listed), grouped by folder and sample format:

* the group's files are exposed in a temporary folder as SoundTrap-named
  *symlinks* (``<group>.<YYMMDDHHMMSS>.<ext>``; the recordings themselves are
  never copied), and ingested into a fresh local store (``client="serial"``);
* the store's bytes on disk are measured: the whole store folder (chunks,
  manifests, snapshots, refs) and its ``chunks/`` folder alone, both as
  apparent bytes (sum of file sizes) and as allocated bytes (``du``);
* each file is also written with soundfile as a standalone FLAC at the same
  subtype (the reference a user would otherwise keep), and the totals compared.

One synthetic 60 s, 256 kHz, 24-bit file (coloured noise) is added as its own
group. Sample formats FLAC cannot hold (PCM_32, float) are stored by
pamingest with PCodec; they are reported (store vs. original bytes) but left
out of the FLAC ratio.

Target (issue): store bytes / standalone FLAC bytes <= 1.10, per format and
overall. ``ratio`` uses the whole store folder (the conservative number);
``ratio_chunks`` only its chunk files.

Usage: python benchmarks/store_size.py [--quick] [--fixtures DIR]
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import soundfile

import _common as C

log = logging.getLogger("pamingest.bench.store_size")

TARGET_RATIO = 1.10
FLAC_SUBTYPES = {"PCM_16": "int16", "PCM_24": "int32", "PCM_S8": "int16", "PCM_U8": "int16"}
DEFAULT_FIXTURES = "/work/shared/fixtures"


def _options(parser) -> None:
    parser.add_argument("--fixtures", default=DEFAULT_FIXTURES, help="folder of real recordings (read-only)")
    parser.add_argument("--max-per-group", type=int, help="at most this many files per group (quick: 3)")
    parser.add_argument("--synthetic-seconds", type=float, help="length of the synthetic 256 kHz 24-bit file (60; quick 10)")


def discover(root: Path) -> tuple[dict[tuple[str, str, str], list[tuple[Path, soundfile._SoundFileInfo]]], list[dict]]:
    """Readable recordings under ``root`` grouped by (folder, format, subtype); and the skipped ones."""
    groups: dict[tuple[str, str, str], list] = defaultdict(list)
    skipped = []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.suffix.lower() not in (".wav", ".flac"):
            continue
        rel = path.relative_to(root)
        if path.name.endswith(".ffmpeg-decoded.wav"):
            skipped.append({"file": str(rel), "reason": "ffmpeg-decoded copy (excluded by design)"})
            continue
        try:
            info = soundfile.info(str(path))
            if info.frames <= 0:
                raise ValueError("no samples")
        except Exception as exc:  # noqa: BLE001 - an unreadable fixture is listed, not fatal
            skipped.append({"file": str(rel), "reason": f"unreadable: {type(exc).__name__}: {exc}"})
            continue
        groups[(str(rel.parent), info.format, info.subtype)].append((path, info))
    return groups, skipped


def standalone_flac(path: Path, info, out: Path) -> int | None:
    """Write ``path``'s samples as a FLAC file at the same subtype; its size, or None if FLAC cannot."""
    dtype = FLAC_SUBTYPES.get(info.subtype)
    if dtype is None or info.channels > 8:
        return None
    data, sr = soundfile.read(str(path), dtype=dtype, always_2d=True)
    subtype = "PCM_16" if dtype == "int16" else "PCM_24"
    try:
        soundfile.write(str(out), data, sr, format="FLAC", subtype=subtype)
    except Exception as exc:  # noqa: BLE001
        log.warning("%s: cannot write standalone FLAC: %s", path.name, exc)
        return None
    return out.stat().st_size


def ingest_group(name: str, files: list[tuple[Path, object]], work: Path, site: int) -> dict:
    """Symlink ``files`` under SoundTrap names, ingest them serially, measure store and FLAC bytes."""
    from pamingest import TimestampedFiles, ingest

    links = work / f"links-{site}"
    flacs = work / f"flac-{site}"
    store = work / f"store-{site}"
    links.mkdir()
    flacs.mkdir()
    start = dt.datetime(2020, 1, 1)
    flac_bytes = 0
    flac_ok = True
    orig_bytes = 0
    frames = 0
    per_file = []
    for i, (path, info) in enumerate(files):
        ext = path.suffix.lower().lstrip(".")
        link = links / C.soundtrap_name(site, start + dt.timedelta(days=i), ext)
        os.symlink(path.resolve(), link)
        size = standalone_flac(path, info, flacs / f"{i}.flac")
        if size is None:
            flac_ok = False
        else:
            flac_bytes += size
        orig_bytes += path.stat().st_size
        frames += info.frames
        per_file.append({"file": path.name, "sample_rate": info.samplerate, "channels": info.channels,
                         "seconds": round(info.frames / info.samplerate, 3), "original_bytes": path.stat().st_size,
                         "standalone_flac_bytes": size})
    t0 = time.perf_counter()
    report = ingest(TimestampedFiles(str(links), "soundtrap"), str(store), client="serial")
    elapsed = time.perf_counter() - t0
    whole = C.tree_bytes(store)
    chunks = C.tree_bytes(store / "chunks") if (store / "chunks").exists() else {"apparent_bytes": 0, "du_bytes": 0, "files": 0}
    flac_du = C.tree_bytes(flacs)["du_bytes"]
    out = {
        "group": name,
        "files": len(files),
        "ingested": report.ingested,
        "failed": [{"file": Path(f.url).name, "reason": f.reason} for f in report.failed],
        "audio_seconds": round(report.audio_seconds, 3),
        "rows": report.rows,
        "streams": report.streams,
        "ingest_seconds": round(elapsed, 2),
        "original_bytes": orig_bytes,
        "store_bytes": whole["apparent_bytes"],
        "store_du_bytes": whole["du_bytes"],
        "store_files": whole["files"],
        "chunk_bytes": chunks["apparent_bytes"],
        "chunk_du_bytes": chunks["du_bytes"],
        "chunk_files": chunks["files"],
        "standalone_flac_bytes": flac_bytes if flac_ok else None,
        "standalone_flac_du_bytes": flac_du if flac_ok else None,
        "flac_comparable": flac_ok,
    }
    if flac_ok and flac_bytes:
        out["ratio"] = whole["apparent_bytes"] / flac_bytes
        out["ratio_chunks"] = chunks["apparent_bytes"] / flac_bytes
        out["ratio_du"] = whole["du_bytes"] / flac_du
    out["store_over_original"] = whole["apparent_bytes"] / orig_bytes if orig_bytes else None
    if len(per_file) <= 5:
        out["per_file"] = per_file
    return out


def totals(rows: list[dict]) -> dict:
    keys = ("files", "ingested", "audio_seconds", "original_bytes", "store_bytes", "store_du_bytes",
            "chunk_bytes", "chunk_du_bytes", "standalone_flac_bytes", "standalone_flac_du_bytes")
    t = {k: sum((r.get(k) or 0) for r in rows) for k in keys}
    t["audio_seconds"] = round(t["audio_seconds"], 3)
    if not any(r.get("flac_comparable") for r in rows):
        t["standalone_flac_bytes"] = t["standalone_flac_du_bytes"] = None
        t["store_over_original"] = t["store_bytes"] / t["original_bytes"] if t["original_bytes"] else None
    elif t["standalone_flac_bytes"]:
        t["ratio"] = t["store_bytes"] / t["standalone_flac_bytes"]
        t["ratio_chunks"] = t["chunk_bytes"] / t["standalone_flac_bytes"]
        t["ratio_du"] = t["store_du_bytes"] / t["standalone_flac_du_bytes"]
        t["meets_target"] = bool(t["ratio"] <= TARGET_RATIO)
        t["meets_target_chunks"] = bool(t["ratio_chunks"] <= TARGET_RATIO)
    return t


def main() -> None:
    args = C.parse_args(__doc__.splitlines()[0], _options)
    max_per_group = args.max_per_group or (3 if args.quick else None)
    synth_seconds = args.synthetic_seconds or (10.0 if args.quick else 60.0)
    fixtures = Path(args.fixtures)
    groups, skipped = discover(fixtures)
    result: dict = {
        "benchmark": "store_size", "quick": bool(args.quick),
        "config": {"fixtures": str(fixtures), "max_per_group": max_per_group, "row_seconds": 10.0,
                   "synthetic": f"{synth_seconds:g} s, 256 kHz, 24-bit PCM, mono, coloured noise",
                   "reference": "soundfile.write(..., format='FLAC', subtype=same) of each whole file "
                                "(libsndfile's default FLAC compression level, as the store codec)"},
        "environment": C.environment(),
        "skipped": skipped,
    }
    rows = []
    with C.TempDir("pam-bench-size-", args.tmpdir, args.keep) as tmp:
        for site, key in enumerate(sorted(groups), start=1):
            files = groups[key][:max_per_group] if max_per_group else groups[key]
            name = f"{key[0]} {key[1]}/{key[2]}"
            row = ingest_group(name, files, tmp, site)
            row["format"] = f"{key[1]}/{key[2]}"
            log.info("%-40s %3d files  store %9d B  flac %s  ratio %s", name, len(files), row["store_bytes"],
                     row["standalone_flac_bytes"], f"{row['ratio']:.4f}" if "ratio" in row else "-")
            rows.append(row)
        # One synthetic high-rate 24-bit file.
        synth_dir = tmp / "synthetic"
        synth_dir.mkdir()
        synth = synth_dir / "synthetic-256kHz-24bit.wav"
        C.write_synthetic(synth, synth_seconds, 256_000, 24, seed=11)
        info = soundfile.info(str(synth))
        row = ingest_group("synthetic WAV/PCM_24 256kHz", [(synth, info)], tmp, 999)
        row["format"] = "WAV/PCM_24"
        log.info("%-40s %3d files  store %9d B  flac %s  ratio %.4f", row["group"], 1, row["store_bytes"],
                 row["standalone_flac_bytes"], row["ratio"])
        rows.append(row)

    by_format: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_format[r["format"]].append(r)
    result["groups"] = rows
    result["per_format"] = {fmt: totals(rs) for fmt, rs in sorted(by_format.items())}
    comparable = [r for r in rows if r["flac_comparable"]]
    result["overall_flac_comparable"] = totals(comparable)
    result["overall_fixtures_only"] = totals([r for r in comparable if not r["group"].startswith("synthetic")])
    result["not_flac_comparable"] = [
        {"group": r["group"], "store_bytes": r["store_bytes"], "original_bytes": r["original_bytes"],
         "store_over_original": r["store_over_original"]} for r in rows if not r["flac_comparable"]
    ]
    failed = [f for r in rows for f in r["failed"]]
    result["ingest_failures"] = failed
    per_fmt_ok = [v.get("meets_target") for v in result["per_format"].values() if "meets_target" in v]
    overall = result["overall_flac_comparable"]
    result["targets"] = {
        "store_over_flac_ratio": {
            "target": f"<= {TARGET_RATIO}",
            "value": round(overall["ratio"], 4),
            "value_chunks_only": round(overall["ratio_chunks"], 4),
            "per_format": {k: round(v["ratio"], 4) for k, v in result["per_format"].items() if "ratio" in v},
            "met": bool(overall["ratio"] <= TARGET_RATIO and all(per_fmt_ok)),
        }
    }
    C.emit(result, args)


if __name__ == "__main__":
    main()
