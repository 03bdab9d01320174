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


# Exact sums in float64: a float64 holds every integer up to 2**53, so integers whose partial sums all
# stay within it sum exactly in any order. The same row then gives the same bits wherever it is
# ingested (serially, in threads, on a Dask worker), through numpy's own float loops: SIMD, 2x faster
# than its integer ones, and no BLAS (its float sums depend on its thread count, and waking its
# threads costs more than these sums). Samples of up to 24 bits square to at most 2**46, so the squares
# sum in partials of 128 (at most 2**53 each), whose total is then taken exactly (``_exact_sums``).
_EXACT_MAX = 2**23  # the largest |sample| for which those partials are exact
_PARTIAL = 128
# Samples per pass through the float64 scratch buffer (8 MB, reused): a 10 s 48 kHz row in one pass
# (each pass costs a few numpy calls), and the buffer stays this size whatever the row's length.
_CHUNK_SAMPLES = 2**20
_local = threading.local()
# Levels of ``_longest_run``'s binary lifting (runs of up to 2**(_LIFT_LEVELS - 1) samples), each a
# boolean array of the row's size: past them, the few starts of the longest runs are listed instead.
_LIFT_LEVELS = 6


# Each row's dot product, for the partials of squares: np.vecdot (numpy >= 2) calls BLAS's dot once
# per row, 128 samples, too few for BLAS to wake a thread, 1.4x faster than einsum; and the partials
# are exact, so that BLAS's order of summation (and FMAs) gives einsum's bits.
_row_dots = getattr(np, "vecdot", None) or (lambda a, b: np.einsum("ij,ij->i", a, b))


def _scratch(size: int) -> np.ndarray:
    """This thread's float64 buffer of ``size``, reused from row to row (no page faults)."""
    have = getattr(_local, "scratch", None)
    if have is None or len(have) < size:
        have = np.empty(size)
        _local.scratch = have
    return have[:size]


def row_stats(samples: np.ndarray, full_scale: float, levels: tuple[float, float]) -> tuple[int, int, int, float, float]:
    """``(clipped, longest_run, zeros, dc_offset, rms_dbfs)`` of one row's valid samples ``(n, channels)``.

    A handful of vectorised passes: a min/max (the clip count only when it
    can be non-zero), a count of zeros, a comparison of neighbours (then a few
    ANDs of its booleans for the longest run), and the sums and sums of
    squares per channel: exact for samples of up to 24 bits (float64 through
    a reused buffer), in float64 for wider ones and floats.
    """
    n, channels = samples.shape
    if n == 0:
        return 0, 0, 0, 0.0, float("-inf")
    lo, hi = levels
    smin, smax = samples.min(), samples.max()
    if samples.dtype.kind in "iu":
        # As the samples' own type: against a Python float numpy compares in float64, 3x slower.
        lo, hi = samples.dtype.type(lo), samples.dtype.type(hi)
    clipped = 0
    if smin <= lo:
        clipped += int(np.count_nonzero(samples <= lo))
    if smax >= hi:
        clipped += int(np.count_nonzero(samples >= hi))
    # ``== 0`` and a count of the booleans: 1.5x faster than count_nonzero on int32 samples.
    zeros = int(np.count_nonzero(samples == 0))
    longest = _longest_run(samples)
    # (2**30 samples of at most 2**23 sum below 2**53.)
    if samples.dtype.kind in "iu" and max(-int(smin), int(smax)) <= _EXACT_MAX and samples.size <= 2**30:
        sums, squares = _exact_sums(samples)
    else:
        sums, squares = _float_sums(samples)
    means = np.asarray(sums, dtype=np.float64) / n
    worst = int(np.argmax(np.abs(means)))
    rms = np.sqrt(float(squares) / samples.size)
    with np.errstate(divide="ignore"):
        dbfs = float(20 * np.log10(rms / full_scale))
    return clipped, longest, zeros, float(means[worst] / full_scale), dbfs


def _exact_sums(samples: np.ndarray) -> tuple[np.ndarray, int]:
    """Per-channel sums and the sum of squares of integer samples of at most 2**23 in magnitude, exact."""
    n, channels = samples.shape
    # The chunk, copied to float64, is a grid of rows of ``width`` samples: whole frames (column j
    # holds channel j % channels) and whole partials of squares; about 1024 wide, where summing
    # the columns (adding rows: no dependency between lanes) runs 1.4x faster than a flat sum.
    width = _PARTIAL * channels * max(1, 8 // channels)
    frames = max(1, _CHUNK_SAMPLES // width) * width // channels
    buffer = _scratch(frames * channels)
    column_sums = np.zeros(width)  # |sum| <= 2**23 * samples <= 2**53: exact
    squares = 0
    for a in range(0, n, frames):
        chunk = samples[a : a + frames]
        y = buffer[: -(-chunk.size // width) * width]
        np.copyto(y[: chunk.size].reshape(chunk.shape), chunk, casting="unsafe")
        y[chunk.size :] = 0  # padding to whole grid rows: zeros add nothing
        column_sums += y.reshape(-1, width).sum(axis=0)
        rows = y.reshape(-1, _PARTIAL)
        partials = _row_dots(rows, rows)  # each at most 128 * 2**46 = 2**53: exact
        total = partials.sum()
        if total < 2**53:
            # Exact: the partials are >= 0, so had a partial sum passed 2**53 the total would too.
            squares += int(total)
        else:
            # Split each partial into its high and low 32 bits (exact) and sum those.
            high = np.floor(partials * 2.0**-32)
            squares += (int(high.sum()) << 32) + int((partials - high * 2.0**32).sum())
    return column_sums.reshape(-1, channels).sum(axis=0), squares


def _float_sums(samples: np.ndarray) -> tuple[np.ndarray, float]:
    """Per-channel sums and the sum of squares of wider samples (full 32-bit, floats), in float64.

    Full 32-bit samples square up to 2**62: no exact float64 sum, and int64 ones would overflow.
    float64 in numpy's own loops, in blocks of a fixed size (the same order everywhere, so the
    same bits), relative error ~1e-16.
    """
    n, channels = samples.shape
    block_frames = max(1, 2**16 // channels)  # 512 KB of float64 a block, whatever the row's length
    sums = np.zeros(channels)
    squares = 0.0
    for a in range(0, n, block_frames):
        block = samples[a : a + block_frames].astype(np.float64, order="C")  # one order of sums, whatever the layout
        flat = block.reshape(-1)
        squares += np.einsum("i,i->", flat, flat).item()
        sums += np.einsum("ij->j", block)
    return sums, squares


def _longest_run(samples: np.ndarray) -> int:
    """The longest run of identical consecutive samples in any one channel (1 when none repeats).

    Without listing where neighbours are equal (a pass through the whole row, 3x slower than
    a comparison): by binary lifting over boolean arrays. ``starts[k][i * channels + c]`` says
    that frame i of channel c starts a run of at least ``2**k + 1`` samples; each level is the
    one below and itself ``2**k`` frames on, so that a few ANDs of the row's length find the
    longest run (real audio rarely repeats a sample more than a few times).
    """
    n, channels = samples.shape
    if n < 2:
        return n
    held = (samples[1:] == samples[:-1]).reshape(-1)
    if not held.any():
        return 1
    starts = [held]
    while len(starts) < _LIFT_LEVELS:
        span = 1 << (len(starts) - 1)
        longer = starts[-1][: -span * channels] & starts[-1][span * channels :]
        if not longer.any():
            break
        starts.append(longer)
    else:
        return _longest_long_run(starts[-1], 1 << (len(starts) - 1), n, channels)
    # The longest run is s + 1 samples, s between 2**top and 2**(top + 1) - 1: add the lower
    # powers of two to s greedily, while runs of s + 1 + 2**k remain.
    s, at_least = 1 << (len(starts) - 1), starts[-1]
    for k in range(len(starts) - 2, -1, -1):
        step = 1 << k
        if s + step < n:
            longer = at_least[: len(starts[k]) - s * channels] & starts[k][s * channels :]
            if longer.any():
                s, at_least = s + step, longer
    return s + 1


def _longest_long_run(held: np.ndarray, span: int, n: int, channels: int) -> int:
    """The longest run when some are longer than ``2**(_LIFT_LEVELS - 1)`` (a zero-filled gap, a stuck
    or dead channel), from ``held``: which samples start a run of at least ``span + 1``."""
    # Double on, without keeping the levels (their memory), while any run is that long; then
    # list the few starts left.
    while True:
        longer = held[: -span * channels] & held[span * channels :]
        if not longer.any():
            break
        held, span = longer, 2 * span
    starts = np.flatnonzero(held)
    if channels > 1:
        # As channel * n + frame, sorted: each channel's starts in order, apart from the next
        # channel's by at least 2 (a frame is < n - 1), so that no run joins two channels.
        starts = np.sort(starts % channels * n + starts // channels)
    # r consecutive starts make a run of r + span samples.
    breaks = np.flatnonzero(np.diff(starts) != 1)
    edges = np.concatenate(([-1], breaks, [len(starts) - 1]))
    return int(np.diff(edges).max()) + span


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
