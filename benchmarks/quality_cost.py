"""Per-row cost of the quality statistics (pamingest/quality.py) against the row's decode + encode.

For 10 s rows of 48 kHz 16-bit mono (what benchmarks/ingest_throughput.py
ingests) and stereo, and 256 kHz 24-bit mono (ColouredNoise, written as
FLAC, as recorders such as SoundTrap store it), timeit measures, in
ms per row (best of ``--repeats`` runs of ``--number`` rows):

- ``stats``: ``quality.row_stats`` on the row as ``write_rows`` holds it;
- ``decode``: soundfile reading the row from the FLAC file;
- ``encode``: pamingest's ``FlacCodec.encode_samples`` of the row (what the
  store writes);

and ``stats / (decode + encode)``: the fraction of a row's own work the
statistics add (issue #13: at most 5 % of ingest throughput; ingest with and
without them is ``benchmarks/ingest_throughput.py --quality-off``).

Usage: python benchmarks/quality_cost.py [--quick]
"""

from __future__ import annotations

import io
import timeit

import numpy as np
import soundfile

import _common as C

ROWS = [("48kHz_16bit_mono", 48_000, 16, 1), ("48kHz_16bit_stereo", 48_000, 16, 2), ("256kHz_24bit_mono", 256_000, 24, 1)]


def _options(parser) -> None:
    parser.add_argument("--repeats", type=int, help="timeit repeats (default 7; quick 3)")
    parser.add_argument("--number", type=int, help="rows per repeat (default 10; quick 3)")


def measure(sample_rate: int, bits: int, channels: int, repeats: int, number: int) -> dict:
    from pamingest import quality
    from pamingest.resample import full_scale
    from pamingest.store.codec import FlacCodec

    frames = 10 * sample_rate
    gens = [C.ColouredNoise(sample_rate, bits, seed=c) for c in range(channels)]
    row = np.stack([g.block(frames) for g in gens], axis=1)
    dtype = row.dtype
    scale = full_scale(dtype, bits)
    levels = quality.clip_levels(dtype, scale)
    subtype = "PCM_16" if bits == 16 else "PCM_24"
    flac = io.BytesIO()
    soundfile.write(flac, row << 8 if bits == 24 else row, sample_rate, subtype=subtype, format="FLAC")
    data = flac.getvalue()
    codec = FlacCodec(bits=bits, sample_rate=sample_rate)

    def decode():
        with soundfile.SoundFile(io.BytesIO(data)) as f:
            out = f.read(frames, dtype="int16" if bits == 16 else "int32", always_2d=True)
        if bits == 24:
            np.right_shift(out, 8, out=out)
        return out

    assert np.array_equal(decode(), row)

    def best(fn) -> float:
        return min(timeit.repeat(fn, number=number, repeat=repeats)) / number * 1e3

    stats = best(lambda: quality.row_stats(row, scale, levels))
    dec = best(decode)
    enc = best(lambda: codec.encode_samples(row))
    return {"stats_ms": stats, "decode_ms": dec, "encode_ms": enc,
            "stats_over_decode_encode": stats / (dec + enc)}


def main() -> None:
    args = C.parse_args(__doc__.splitlines()[0], _options)
    repeats = args.repeats or (3 if args.quick else 7)
    number = args.number or (3 if args.quick else 10)
    result = {"benchmark": "quality_cost", "quick": bool(args.quick), "environment": C.environment(),
              "config": {"row_seconds": 10, "repeats": repeats, "number": number}}
    for name, sr, bits, ch in ROWS:
        result[name] = {k: round(v, 4) for k, v in measure(sr, bits, ch, repeats, number).items()}
    C.emit(result, args)


if __name__ == "__main__":
    main()
