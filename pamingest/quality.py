"""Per-row quality: statistics computed at ingest from the decoded rows, flags derived at read time.

``row_stats`` runs in the write task (``ingest.write_rows``) on each row's
buffer while it is in memory, over the row's valid samples only (the last
row of a file is zero-padded past ``n_valid``). The statistics are stored
per row (``QUALITY``, a table on the ``chunk`` dimension, in the same commit
as the rows); flags are not stored but derived from them by ``flags`` with a
``QualityThresholds``, so that thresholds can change without re-ingesting.

Statistics (all channels of a row together):

``quality_clipped``
    samples at the ends of the stream's range (``-full_scale`` or
    ``full_scale - 1`` for integers, ``|x| >= 1`` for floats);
``quality_longest_run``
    the longest run of identical consecutive samples in any one channel, in
    samples (1 when no two neighbours are equal): dropouts, zero-filled gaps,
    a stuck ADC;
``quality_zeros``
    samples equal to 0;
``quality_dc_offset``
    the mean of the channel whose mean is farthest from 0, as a fraction of
    full scale (signed);
``quality_rms_dbfs``
    RMS level of all the row's samples in dB re full scale
    (``20 log10(rms / full_scale)``: a full-scale sine is -3.01 dBFS; an
    all-zero row is -inf).

Integer columns hold -1 and float columns NaN for rows whose statistics were
never computed (rows ingested before this table existed, or with
``ingest(..., quality=False)``).

dB re 1 uPa is not stored: it depends on a calibration a user may learn
later. ``rms_db_re_upa`` derives it at read time from the stream attribute
``calibration_db`` (see its docstring).
"""

from __future__ import annotations

import threading

from dataclasses import dataclass

import numpy as np

from .store.tables import ROW_CHUNK, Column, Table

QUALITY = Table("chunk", {
    "quality_clipped": Column("int32", -1),
    "quality_longest_run": Column("int32", -1),
    "quality_zeros": Column("int32", -1),
    "quality_dc_offset": Column("float32", float("nan")),
    "quality_rms_dbfs": Column("float32", float("nan")),
}, chunk=ROW_CHUNK)

# Flag bits (``flags``); a row's flag set is their OR.
CLIPPED, DROPOUT, SILENT, DC_OFFSET = 1, 2, 4, 8
FLAG_NAMES = {CLIPPED: "clipped", DROPOUT: "dropout", SILENT: "silent", DC_OFFSET: "dc_offset"}

# Frames per pass of the sum and sum of squares: their float32 copy stays ~1 MB per channel,
# whatever the row's length (a 256 kHz row is 2.56 M frames).
_BLOCK_FRAMES = 2**18


@dataclass(frozen=True)
class QualityThresholds:
    """When a row is flagged; every default is documented with why it was chosen.

    Parameters
    ----------
    clipped_samples : int
        ``clipped`` when the row has at least this many samples at full scale
        (default 10). A lone sample at full scale is usually a peak that just
        reached it; a clipped waveform is flattened over several samples per
        peak, so ten catch any real clipping while a single extreme peak in a
        10 s row goes unflagged.
    clipped_fraction : float, optional
        Alternatively (when set), ``clipped`` when at least this fraction of
        the row's samples is at full scale.
    dropout_ms : float
        ``dropout`` when some channel holds one value for at least this long
        (default 10 ms: 480 samples at 48 kHz). Recorded noise, even 1 LSB of
        it, changes value every few samples; a run of 10 ms is a zero-filled
        gap, a dropped buffer or a stuck converter. (A clipped stretch is a
        run too: heavy clipping may also flag ``dropout``.)
    silent_dbfs : float
        ``silent`` when the row's RMS level is below this (default -90 dBFS:
        RMS below one 16-bit step, 20 log10(1 / 32768) = -90.3 dBFS; the ocean
        at any gain keeps a 16-bit recorder above it, so a row below it is a
        dead channel, a disconnected hydrophone or digital silence).
    dc_offset : float
        ``dc_offset`` when some channel's mean is farther than this fraction of
        full scale from 0 (default 0.05 = 5 %, 0.4 dB of lost headroom).
        The field recordings among the fixtures keep below it (SoundTrap
        0.9-1.7 %, SongMeter 2.9 %), so 5 % is above a recorder's usual
        residual offset and flags a failing preamplifier or a biased ADC.
        (The SanctSound exemplar clips flag it in places: they are
        peak-normalised excerpts, which amplified their recorders' offset
        with the signal; tests/test_quality.py.)
    """

    clipped_samples: int = 10
    clipped_fraction: float | None = None
    dropout_ms: float = 10.0
    silent_dbfs: float = -90.0
    dc_offset: float = 0.05


def clip_levels(dtype, full_scale: float) -> tuple[float, float]:
    """The lowest and highest values a sample of the stream can hold (integers) or ``(-1, 1)`` (floats)."""
    if np.dtype(dtype).kind == "f":
        return -1.0, 1.0
    return -full_scale, full_scale - 1


# Up to this many samples of 16 bits, squares (< 2**30 each) sum below 2**53: exact in float64.
_EXACT_FLOAT64_SAMPLES = 2**23
_SCRATCH_FRAMES = 2**20  # a row of up to 21 s at 48 kHz in one pass (8 MB a channel)
_local = threading.local()


def _scratch(channels: int) -> np.ndarray:
    """This thread's float64 buffer ``(frames, channels)``, reused from row to row (grown when short)."""
    have = getattr(_local, "scratch", None)
    if have is None or have.shape[1] != channels:
        have = np.empty((_SCRATCH_FRAMES, channels))
        _local.scratch = have
    return have


def row_stats(samples: np.ndarray, full_scale: float, levels: tuple[float, float]) -> tuple[int, int, int, float, float]:
    """``(clipped, longest_run, zeros, dc_offset, rms_dbfs)`` of one row's valid samples ``(n, channels)``.

    A handful of vectorised passes: a min/max (the clip count only when it
    can be non-zero), ``count_nonzero``, a comparison of neighbours (runs are
    measured only where neighbours are equal, usually few), and the sums and
    sums of squares per channel, exact: 16-bit rows through a reused float64
    buffer, wider ones in int64 blocks.
    """
    n, channels = samples.shape
    if n == 0:
        return 0, 0, 0, 0.0, float("-inf")
    lo, hi = levels
    smin, smax = samples.min(), samples.max()
    clipped = 0
    if smin <= lo:
        clipped += int(np.count_nonzero(samples <= lo))
    if smax >= hi:
        clipped += int(np.count_nonzero(samples >= hi))
    zeros = samples.size - int(np.count_nonzero(samples))
    longest = _longest_run(samples)
    # The same row must give the same bits wherever it is ingested (serial, threads, a Dask worker):
    # no BLAS (its float sums depend on its thread count), and sums that are exact (16-bit rows
    # in float64, below) or integers summed in int64 by numpy's own loops, in blocks small enough
    # that no block's sum of squares overflows (wider samples: 2**16 of at most 2**46 each).
    integer = samples.dtype.kind in "iu"
    if integer and samples.dtype.itemsize <= 2 and n <= _SCRATCH_FRAMES and samples.size <= _EXACT_FLOAT64_SAMPLES:
        # Samples of 16 bits or fewer: every partial sum of them and of their squares is an
        # integer below 2**53, so float64 sums are exact in any order: numpy's own float loops
        # (SIMD, no BLAS, whose thread wake-ups cost more than these sums) are 2x faster than
        # its integer ones, and the same row gives the same bits wherever it is ingested.
        y = _scratch(channels)[:n]
        np.copyto(y, samples, casting="unsafe")  # into a reused buffer: no page faults
        flat = y.reshape(-1)
        squares = float(np.einsum("i,i->", flat, flat))
        sums = np.array([flat[c::channels].sum() for c in range(channels)])
    else:
        block_frames = _BLOCK_FRAMES // 2 if samples.dtype.itemsize <= 2 else max(1, 2**16 // channels)
        # 24-bit samples (in int32) square below 2**46: 2**16 of them sum exactly in int64. Full
        # 32-bit ones square up to 2**62 and would overflow: float64, in numpy's own loops (the
        # same order everywhere, so the same bits), relative error ~1e-16.
        wide = integer and max(-int(smin), int(smax)) >= 2**23
        acc = np.int64 if integer and not wide else np.float64
        integer = integer and not wide
        sums = np.zeros(channels, dtype=acc)
        squares = 0
        ones = np.ones(min(n, block_frames), dtype=acc)
        for a in range(0, n, block_frames):
            block = samples[a : a + block_frames].astype(acc)
            flat = block.reshape(-1)
            squares += np.dot(flat, flat).item() if integer else np.einsum("i,i->", flat, flat).item()
            sums += np.dot(ones[: len(block)], block) if integer else np.einsum("ij->j", block)
    means = np.asarray(sums, dtype=np.float64) / n
    worst = int(np.argmax(np.abs(means)))
    rms = np.sqrt(float(squares) / samples.size)
    with np.errstate(divide="ignore"):
        dbfs = float(20 * np.log10(rms / full_scale))
    return clipped, longest, zeros, float(means[worst] / full_scale), dbfs


def _longest_run(samples: np.ndarray) -> int:
    n = len(samples)
    if n < 2:
        return n
    equal = samples[1:] == samples[:-1]
    if not equal.any():
        return 1
    best = 0
    channels = samples.shape[1]
    where = np.flatnonzero(equal)  # contiguous, and few: real audio rarely repeats a sample
    for c in range(channels):
        at = where[where % channels == c] // channels if channels > 1 else where  # sample i equals i + 1
        if not len(at):
            continue
        breaks = np.flatnonzero(np.diff(at) != 1)
        edges = np.concatenate(([-1], breaks, [len(at) - 1]))
        best = max(best, int(np.diff(edges).max()))
    return best + 1


def empty_stats(rows: int) -> dict[str, np.ndarray]:
    """The table's columns for ``rows`` rows, every one "not computed"."""
    return {name: np.full(rows, col.fill, dtype=col.dtype) for name, col in QUALITY.columns.items()}


def flags(stats: dict[str, np.ndarray], n_valid: np.ndarray, channels: int, sample_rate: int,
          thresholds: QualityThresholds | None = None) -> np.ndarray:
    """Each row's flag set (``CLIPPED | DROPOUT | SILENT | DC_OFFSET`` bits) from its stored statistics;
    0 for rows without statistics."""
    t = thresholds or QualityThresholds()
    clipped = np.asarray(stats["quality_clipped"], dtype=np.int64)
    computed = clipped >= 0
    out = np.zeros(len(clipped), dtype=np.uint8)
    samples = np.asarray(n_valid, dtype=np.int64) * channels
    is_clipped = clipped >= t.clipped_samples
    if t.clipped_fraction is not None:
        is_clipped |= clipped >= t.clipped_fraction * np.maximum(samples, 1)
    out[computed & is_clipped] |= CLIPPED
    run_ms = np.asarray(stats["quality_longest_run"], dtype=np.float64) * 1e3 / sample_rate
    out[computed & (run_ms >= t.dropout_ms)] |= DROPOUT
    out[computed & (np.asarray(stats["quality_rms_dbfs"]) < t.silent_dbfs)] |= SILENT
    out[computed & (np.abs(np.asarray(stats["quality_dc_offset"])) > t.dc_offset)] |= DC_OFFSET
    return out


def flag_names(value: int) -> str:
    """``"clipped,dropout"`` for a flag set ("" for none)."""
    return ",".join(name for bit, name in FLAG_NAMES.items() if value & bit)


def parse_flags(names) -> int:
    """A flag set from names (``"clipped,silent"``, a list of names, ``"all"``, or an int)."""
    if names is None:
        return 0
    if isinstance(names, (int, np.integer)):
        return int(names)
    if isinstance(names, str):
        names = [n for n in names.split(",") if n.strip()]
    value = 0
    by_name = {v: k for k, v in FLAG_NAMES.items()}
    for name in names:
        name = name.strip().lower()
        if name == "all":
            value |= sum(FLAG_NAMES)
        elif name in by_name:
            value |= by_name[name]
        else:
            from .errors import ConfigError

            raise ConfigError(f"unknown quality flag {name!r}: use {', '.join(FLAG_NAMES.values())} or all")
    return value


def rms_db_re_upa(rms_dbfs: np.ndarray, attrs: dict) -> np.ndarray | None:
    """RMS in dB re 1 uPa from dBFS and the stream's ``calibration_db`` attribute, or None without one.

    ``calibration_db`` is the level, in dB re 1 uPa, of a full-scale RMS
    signal: ``-(hydrophone sensitivity in dB re 1 V/uPa) - (gain in dB) +
    20 log10(ADC full-scale voltage in V)``. E.g. a -170 dB re V/uPa
    hydrophone, 0 dB gain, 2.5 V full scale: 170 + 7.96 = 177.96. Set it on
    the stream group (``group.attrs["calibration_db"] = 177.96``) or through a
    source's ``stream_attributes``; it applies to every row, old ones too.
    (A flat frequency response is assumed: a broadband level, not a spectrum.)
    """
    cal = attrs.get("calibration_db")
    if cal is None:
        # Else a flat calibration in the deployment metadata, as the HMD spectra read it (one
        # reading of a stream's calibration for both); a frequency table gives no broadband level.
        from .hmd import calibration_from_attrs

        flat = calibration_from_attrs(attrs)
        if flat is None or flat.table is not None or flat.sensitivity is None:
            return None
        cal = float(flat.offset_db(np.zeros(1))[0])
    return np.asarray(rms_dbfs, dtype=np.float64) + float(cal)


def has_stats(ds) -> bool:
    """Whether a stream (Dataset or zarr group) has the quality table at all."""
    return all(name in ds for name in QUALITY.columns)


def dataset_stats(ds) -> dict[str, np.ndarray]:
    """The stored statistics of every row of a stream's Dataset ("not computed" where it has none)."""
    n = ds.sizes["chunk"]
    if not has_stats(ds):
        return empty_stats(n)
    return {name: np.asarray(ds[name].values) for name in QUALITY.columns}


def dataset_flags(ds, thresholds: QualityThresholds | None = None) -> np.ndarray:
    """Every row's flag set (``flags``) in a stream's Dataset, with ``thresholds``."""
    return flags(dataset_stats(ds), ds["n_valid"].values, int(ds.sizes.get("channel", 1)),
                 int(ds.attrs["sample_rate"]), thresholds)


def quality_frame(ds, thresholds: QualityThresholds | None = None):
    """One line per live row of a stream's Dataset: its statistics and flags (``PamAccessor.quality``)."""
    import pandas as pd

    n_valid = np.asarray(ds["n_valid"].values, dtype=np.int64)
    live = np.flatnonzero(n_valid > 0)
    stats = {k: v[live] for k, v in dataset_stats(ds).items()}
    channels = int(ds.sizes.get("channel", 1))
    sr = int(ds.attrs["sample_rate"])
    computed = stats["quality_clipped"] >= 0
    samples = np.maximum(n_valid[live] * channels, 1)
    bits = flags(stats, n_valid[live], channels, sr, thresholds)
    start = np.asarray(ds["chunk_start"].values).astype("datetime64[ns]")[live]

    def where_computed(values, dtype=np.float64):
        return np.where(computed, np.asarray(values, dtype=dtype), np.nan)

    frame = pd.DataFrame({
        "row": live,
        "start": start,
        "n_valid": n_valid[live],
        "computed": computed,
        "clipped": where_computed(stats["quality_clipped"]),
        "longest_run": where_computed(stats["quality_longest_run"]),
        "longest_run_ms": where_computed(stats["quality_longest_run"]) * 1e3 / sr,
        "zero_fraction": where_computed(stats["quality_zeros"]) / samples,
        "dc_offset": where_computed(stats["quality_dc_offset"]),
        "rms_dbfs": where_computed(stats["quality_rms_dbfs"]),
    })
    upa = rms_db_re_upa(frame["rms_dbfs"].to_numpy(), dict(ds.attrs))
    if upa is not None:
        frame["rms_db_re_upa"] = upa
    frame["flags"] = [flag_names(int(b)) for b in bits]
    for bit, name in FLAG_NAMES.items():
        frame[f"flag_{name}"] = (bits & bit) != 0
    frame.attrs["thresholds"] = thresholds or QualityThresholds()
    frame.attrs["rows_without_stats"] = int((~computed).sum())
    return frame


def flag_counts(stats: dict[str, np.ndarray], n_valid: np.ndarray, channels: int, sample_rate: int,
                thresholds: QualityThresholds | None = None) -> dict[str, int]:
    """Live rows per flag, ``"flagged"`` (any flag) and ``"unchecked"`` (no statistics)."""
    live = np.asarray(n_valid) > 0
    bits = flags(stats, n_valid, channels, sample_rate, thresholds)[live]
    out = {name: int(np.count_nonzero(bits & bit)) for bit, name in FLAG_NAMES.items()}
    out["flagged"] = int(np.count_nonzero(bits))
    out["unchecked"] = int(np.count_nonzero(np.asarray(stats["quality_clipped"])[live] < 0))
    return out


__all__ = ["CLIPPED", "DC_OFFSET", "DROPOUT", "FLAG_NAMES", "QUALITY", "QualityThresholds", "SILENT",
           "clip_levels", "dataset_flags", "flag_counts", "flag_names", "flags", "has_stats",
           "quality_frame", "parse_flags", "row_stats", "rms_db_re_upa"]
