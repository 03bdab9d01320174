"""Power spectra of a stream: per-row spectra, long-term spectral averages, spectrograms.

Everything here works on what ``open_store`` returns and keeps the store's
rules: times are UTC, samples are the recorder's integers (power is in
counts**2/Hz, no calibration is applied), and gaps stay gaps (a spectrum
never spans two rows, a spectrogram frame never spans a jump in time, and an
LTSA bin without audio is NaN rather than zero).

Spectra are Welch estimates computed with numpy: periodic Hann window,
mean removed per segment, one-sided power spectral density, the same
numbers as ``scipy.signal.welch`` with its defaults.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from . import query  # noqa: F401  (registers the .pam accessor used below)
from .errors import ConfigError
from .timing import NS_PER_S, to_ns

UNITS = "count**2/Hz"
# Segments transformed at once inside one row: bounds memory for long rows at high rates.
_SEGMENTS_PER_FFT = 256


def _hann(n: int) -> np.ndarray:
    """Periodic Hann window (``scipy.signal.get_window('hann', n)``)."""
    return 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)


def _check_segments(nperseg: int, noverlap: int | None) -> tuple[int, int]:
    nperseg = int(nperseg)
    if nperseg < 2:
        raise ConfigError(f"nperseg must be at least 2, got {nperseg}")
    noverlap = nperseg // 2 if noverlap is None else int(noverlap)
    if not 0 <= noverlap < nperseg:
        raise ConfigError(f"noverlap must be in [0, nperseg), got {noverlap} with nperseg={nperseg}")
    return nperseg, noverlap


def frequencies(sample_rate: float, nperseg: int) -> np.ndarray:
    """Frequencies (Hz) of a one-sided spectrum of ``nperseg`` samples: 0 .. Nyquist."""
    return np.fft.rfftfreq(int(nperseg), 1.0 / sample_rate)


def n_segments(n: int | np.ndarray, nperseg: int, noverlap: int | None = None) -> int | np.ndarray:
    """Welch segments in ``n`` samples (0 when ``n < nperseg``)."""
    nperseg, noverlap = _check_segments(nperseg, noverlap)
    step = nperseg - noverlap
    n = np.asarray(n, dtype=np.int64)
    out = np.where(n >= nperseg, 1 + (n - nperseg) // step, 0)
    return int(out) if out.ndim == 0 else out


def segment_psd(x: np.ndarray, sample_rate: float, nperseg: int = 1024,
                noverlap: int | None = None) -> np.ndarray:
    """One-sided power spectral density of each Welch segment of ``x``.

    Parameters
    ----------
    x : numpy.ndarray
        1-D samples (any numeric dtype; integers are used as they are).
    sample_rate : float
        Samples per second.
    nperseg : int
        Samples per segment (the FFT length).
    noverlap : int, optional
        Samples shared by consecutive segments; ``nperseg // 2`` by default.

    Returns
    -------
    numpy.ndarray
        ``(segments, nperseg // 2 + 1)`` float64, in units of ``x``**2/Hz;
        no rows when ``x`` is shorter than ``nperseg``.
    """
    nperseg, noverlap = _check_segments(nperseg, noverlap)
    x = np.asarray(x)
    if x.ndim != 1:
        raise ConfigError(f"segment_psd needs 1-D samples, got shape {x.shape}")
    step = nperseg - noverlap
    count = n_segments(len(x), nperseg, noverlap)
    window = _hann(nperseg)
    scale = 1.0 / (sample_rate * float(np.sum(window**2)))
    out = np.empty((count, nperseg // 2 + 1), dtype=np.float64)
    offsets = np.arange(nperseg)
    for first in range(0, count, _SEGMENTS_PER_FFT):
        k = np.arange(first, min(count, first + _SEGMENTS_PER_FFT))
        seg = x[k[:, None] * step + offsets].astype(np.float64)
        seg -= seg.mean(axis=1, keepdims=True)
        spec = np.fft.rfft(seg * window, axis=1)
        out[k] = (spec.real**2 + spec.imag**2) * scale
    # One-sided: every bin but DC (and Nyquist for an even length) carries its mirror's power.
    if nperseg % 2:
        out[:, 1:] *= 2
    else:
        out[:, 1:-1] *= 2
    return out


def welch(x: np.ndarray, sample_rate: float, nperseg: int = 1024, noverlap: int | None = None) -> np.ndarray:
    """Welch power spectral density of 1-D ``x``: the mean of :func:`segment_psd` (NaN if too short)."""
    psd = segment_psd(x, sample_rate, nperseg, noverlap)
    if not len(psd):
        return np.full(nperseg // 2 + 1, np.nan)
    return psd.mean(axis=0)


def _live_rows(ds: xr.Dataset, start: Any, end: Any) -> pd.DataFrame:
    """The accessor's live rows (sorted by start) whose start is in ``[start, end)``."""
    rows = ds.pam.rows
    if start is not None:
        rows = rows[rows["start"] >= pd.Timestamp(to_ns(start), unit="ns")]
    if end is not None:
        rows = rows[rows["start"] < pd.Timestamp(to_ns(end), unit="ns")]
    return rows


def row_spectra(ds: xr.Dataset, *, start: Any = None, end: Any = None, channel: int = 0, nperseg: int = 1024,
                noverlap: int | None = None, batch_rows: int = 1024) -> xr.DataArray:
    """Welch power spectral density of each row of a stream, read row by row.

    Rows are read through the Dataset's Dask arrays, one Zarr chunk (= one
    row) per task, ``batch_rows`` rows per ``compute``: memory stays at a
    few rows per worker thread whatever the length of the stream, and the
    work runs on whatever Dask scheduler is active (threads by default, a
    ``distributed.Client`` if one is). Only a row's valid samples are used.

    Parameters
    ----------
    ds : xarray.Dataset
        A stream, e.g. ``open_store(url)["songmeter/S4A03895/22000Hz_1ch_pcm16"].to_dataset()``.
    start, end : time-like, optional
        Keep the rows whose start is in ``[start, end)`` UTC (naive times are UTC).
    channel : int
        Channel to analyse.
    nperseg, noverlap : int
        Welch segment length and overlap (``nperseg // 2`` by default).
        Rows holding fewer than ``nperseg`` valid samples (the short last
        row of a file) are left out.
    batch_rows : int
        Rows per Dask ``compute``: bounds the task graph for long streams.

    Returns
    -------
    xarray.DataArray
        ``(time, frequency)`` float64 in count**2/Hz. ``time`` is each row's
        UTC start; coordinates ``row`` (the row in the store), ``n_valid``
        and ``segments`` (Welch segments averaged) run along ``time``.
    """
    nperseg, noverlap = _check_segments(nperseg, noverlap)
    sr = ds.pam.sample_rate
    channels = ds["audio"].sizes["channel"]
    if not 0 <= channel < channels:
        raise ConfigError(f"channel {channel} out of range: the stream has {channels}")
    rows = _live_rows(ds, start, end)
    rows = rows[rows["n_valid"] >= nperseg]
    ids = rows["row"].to_numpy()
    valid = rows["n_valid"].to_numpy()
    freqs = frequencies(sr, nperseg)
    out = np.empty((len(ids), len(freqs)), dtype=np.float64)
    if len(ids):
        import dask
        import dask.array as da

        audio = ds["audio"]
        lazy = audio.chunks is None  # open_store's default: xarray's lazy indexing, no Dask
        if not lazy and any(c != 1 for c in audio.chunks[0]):
            audio = audio.chunk({"chunk": 1})
        for first in range(0, len(ids), max(1, int(batch_rows))):
            sel = slice(first, first + max(1, int(batch_rows)))
            if lazy:
                # Only this batch's rows become Dask chunks, one row each: a Dask array of the whole
                # stream would have a chunk per row (millions), slow to make and to slice.
                block = audio.isel(chunk=ids[sel]).chunk({"chunk": 1}).data[:, :, channel]
            else:
                # The rows' own blocks, in time order: each task reads exactly one row (no fancy-index shuffle).
                data = audio.data
                block = da.concatenate([data.blocks[int(i)] for i in ids[sel]], axis=0)[:, :, channel]
            block = block.rechunk({1: -1})
            n = valid[sel]

            def psd(x: np.ndarray, block_info=None, n=n) -> np.ndarray:
                i = block_info[0]["array-location"][0][0]
                return welch(x[0, : n[i]], sr, nperseg, noverlap)[None, :]

            spectra = da.map_blocks(psd, block, dtype=np.float64, chunks=((1,) * block.shape[0], (len(freqs),)))
            (out[sel],) = dask.compute(spectra)
    return xr.DataArray(
        out, dims=("time", "frequency"),
        coords={"time": rows["start"].to_numpy(), "frequency": freqs, "row": ("time", ids),
                "n_valid": ("time", valid), "segments": ("time", n_segments(valid, nperseg, noverlap))},
        attrs={"units": UNITS, "long_name": "power spectral density", "sample_rate": sr, "channel": channel,
               "nperseg": nperseg, "noverlap": noverlap, "window": "hann"},
        name="psd",
    )


def _bin_ns(bin: Any) -> int:
    ns = int(pd.Timedelta(bin).value)
    if ns <= 0:
        raise ConfigError(f"LTSA bin must be a positive duration, got {bin!r}")
    return ns


def ltsa(ds: xr.Dataset, bin: Any = "1min", *, start: Any = None, end: Any = None, channel: int = 0,
         nperseg: int = 1024, noverlap: int | None = None, batch_rows: int = 1024,
         max_bins: int = 100_000) -> xr.DataArray:
    """Long-term spectral average: mean power spectrum per time bin over a stream or a range.

    Each row's Welch spectrum (:func:`row_spectra`, read row by row) is
    put in the bin holding the row's start, and a bin's spectrum is the mean
    over all Welch segments of its rows. Bins are regular from the range's
    start to its end (or the first to the last row), so time on the result
    is real time: a bin without audio (a duty-cycle pause, a gap between
    files) is NaN, never zero and never closed up.

    Parameters
    ----------
    ds : xarray.Dataset
        A stream Dataset from ``open_store``.
    bin : str or pandas.Timedelta or None
        Bin length (``"1min"``, ``"1h"``, ...), aligned to multiples of it
        since the Unix epoch. ``None``: one line per row (irregular times,
        rows without audio simply absent).
    start, end : time-like, optional
        UTC range (e.g. one day); the bins cover it whole.
    channel, nperseg, noverlap, batch_rows
        As in :func:`row_spectra`.
    max_bins : int
        Refuse to build more bins than this (a year of one-minute bins is
        half a million): choose a longer bin or a shorter range.

    Returns
    -------
    xarray.DataArray
        ``(time, frequency)`` float64 in count**2/Hz; ``time`` is each bin's
        UTC start; coordinates ``seconds`` (audio in the bin) and ``rows``
        run along ``time``. ``attrs["bin_seconds"]`` gives the bin length.

    Examples
    --------
    >>> L = ltsa(ds, "1min", start="2019-05-22", end="2019-05-23")   # doctest: +SKIP
    >>> (10 * np.log10(L)).plot(x="time", y="frequency")            # doctest: +SKIP
    """
    spectra = row_spectra(ds, start=start, end=end, channel=channel, nperseg=nperseg, noverlap=noverlap,
                          batch_rows=batch_rows)
    if bin is None:
        return spectra.rename("ltsa")
    width = _bin_ns(bin)
    sr = spectra.attrs["sample_rate"]
    starts = spectra["time"].values.astype("datetime64[ns]").astype(np.int64)
    if start is not None:
        lo = to_ns(start)
    elif len(starts):
        lo = int(starts.min())
    else:
        lo = None
    if end is not None:
        hi = to_ns(end)
    elif len(starts):
        hi = int(starts.max()) + 1
    else:
        hi = None
    if lo is None or hi is None:
        edges = np.zeros(0, dtype=np.int64)
    else:
        first, last = lo // width * width, -(-hi // width) * width
        count = (last - first) // width
        if count > max_bins:
            raise ConfigError(f"{count} bins of {pd.Timedelta(width, unit='ns')} from {pd.Timestamp(first, unit='ns')} "
                             f"(max_bins={max_bins}): choose a longer bin or a shorter range")
        edges = first + width * np.arange(count, dtype=np.int64)
    nbins, nfreq = len(edges), spectra.sizes["frequency"]
    power = np.zeros((nbins, nfreq))
    weight = np.zeros(nbins)
    seconds = np.zeros(nbins)
    nrows = np.zeros(nbins, dtype=np.int64)
    if nbins and len(starts):
        k = (starts - edges[0]) // width
        segs = spectra["segments"].values.astype(np.float64)
        np.add.at(power, k, spectra.values * segs[:, None])
        np.add.at(weight, k, segs)
        np.add.at(seconds, k, spectra["n_valid"].values / sr)
        np.add.at(nrows, k, 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(weight[:, None] > 0, power / weight[:, None], np.nan)
    attrs = dict(spectra.attrs, long_name="long-term spectral average (power spectral density)",
                 bin_seconds=width / NS_PER_S)
    return xr.DataArray(
        mean, dims=("time", "frequency"),
        coords={"time": edges.astype("datetime64[ns]"), "frequency": spectra["frequency"].values,
                "seconds": ("time", seconds), "rows": ("time", nrows)},
        attrs=attrs, name="ltsa",
    )


def continuous_pieces(times: np.ndarray, sample_rate: float) -> list[slice]:
    """Split a time coordinate where it does not advance by one sample period.

    A jump forward (a gap) or backward (overlapping files) ends a piece; a
    step within half a period of ``1 / sample_rate`` does not.
    """
    t = np.asarray(times).astype("datetime64[ns]").astype(np.int64)
    if not len(t):
        return []
    period = NS_PER_S / sample_rate
    breaks = np.flatnonzero(np.abs(np.diff(t) - period) > period / 2) + 1
    bounds = [0, *breaks.tolist(), len(t)]
    return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]


def spectrogram(window: xr.DataArray, *, channel: int = 0, nperseg: int = 512,
                noverlap: int | None = None) -> xr.DataArray:
    """Spectrogram of a window from ``ds.pam.window``, on its real UTC times.

    The window is cut where its time coordinate jumps (gaps, overlapping
    files) and each continuous piece is analysed on its own: no frame
    straddles a gap, and the frames' times say where each one is.

    Parameters
    ----------
    window : xarray.DataArray
        ``(time, channel)`` samples with a UTC ``time`` coordinate and a
        ``sample_rate`` attribute, as ``ds.pam.window(start, end)`` returns.
    channel : int
        Channel to analyse.
    nperseg, noverlap : int
        Frame length and overlap (``nperseg // 2`` by default).

    Returns
    -------
    xarray.DataArray
        ``(time, frequency)`` float64 in count**2/Hz; ``time`` is the UTC
        time of each frame's centre (its sample ``nperseg // 2``). Pieces shorter than ``nperseg`` give no
        frame.
    """
    nperseg, noverlap = _check_segments(nperseg, noverlap)
    sr = float(window.attrs["sample_rate"])
    step = nperseg - noverlap
    times = window["time"].values.astype("datetime64[ns]").astype(np.int64)
    x = window.isel(channel=channel).values
    frames, centres = [], []
    for piece in continuous_pieces(times, sr):
        psd = segment_psd(x[piece], sr, nperseg, noverlap)
        if len(psd):
            first = np.arange(len(psd)) * step
            # A frame's time is its sample nperseg // 2, as scipy.signal.spectrogram puts it.
            centres.append(times[piece][first + nperseg // 2])
            frames.append(psd)
    nfreq = nperseg // 2 + 1
    data = np.concatenate(frames) if frames else np.zeros((0, nfreq))
    centre = np.concatenate(centres) if centres else np.zeros(0, dtype=np.int64)
    return xr.DataArray(
        data, dims=("time", "frequency"),
        coords={"time": centre.astype("datetime64[ns]"), "frequency": frequencies(sr, nperseg)},
        attrs={"units": UNITS, "long_name": "power spectral density", "sample_rate": int(sr), "channel": channel,
               "nperseg": nperseg, "noverlap": noverlap, "window": "hann"},
        name="spectrogram",
    )


def decibels(power: xr.DataArray, floor: float = 1e-12) -> xr.DataArray:
    """``10 log10(power)`` (dB re 1 count**2/Hz); NaN (no audio) stays NaN, zeros clip at ``floor``."""
    out = 10 * np.log10(np.maximum(power, floor))
    return out.where(~np.isnan(power)).assign_attrs(power.attrs, units="dB re 1 " + power.attrs.get("units", UNITS))


__all__ = ["continuous_pieces", "decibels", "frequencies", "ltsa", "n_segments", "row_spectra", "segment_psd",
           "spectrogram", "welch"]
