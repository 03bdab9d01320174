"""Hybrid millidecade (HMD) spectra of a stream, as MBARI's ``pbp`` computes them.

The NOAA/MBARI soundscape product (Martin et al. 2021,
https://doi.org/10.1121/10.0003324): per UTC minute, the calibrated power
spectral density averaged into hybrid millidecade bands. The numbers here
follow ``mbari-pbp`` 1.9.0 and the PyPAM (``lifewatch-pypam`` 1.0.0) code it
calls, read from their sources:

* Samples: ``pbp/hmb_gen/file_helper.py`` ``extract_audio_segment`` reads
  each minute with ``soundfile`` (float64, integers divided by full scale),
  concatenating the pieces of every file meeting the minute; a minute
  without audio gets a NaN spectrum and effort 0
  (``pypam_support.py`` ``add_missing_segment``). A ``voltage_multiplier``
  scales the samples (full-scale volts), then a flat sensitivity multiplies
  them by ``10 ** (sensitivity_flat_value / 20)`` (``process_helper.py``
  ``process_segment_at_hour_minute_second``).
* PSD: ``hmso_pypam.py`` ``compute_spectrum`` -> PyPAM ``signal.py``
  ``Signal._spectrum``: ``scipy.signal.welch(x, fs, window=get_window("hann",
  nfft), nfft=nfft, noverlap=nfft * 0.5, scaling="density", detrend=False)``
  with ``nfft = fs`` (``pypam_support.py`` ``set_parameters``): periodic Hann,
  1 s segments, 50 % overlap, no detrending, mean of the segments, 1 Hz bins.
* Bands: PyPAM ``utils.py`` ``get_hybrid_millidecade_limits`` ->
  ``get_bands_limits(band=[0, fs/2], nfft, base=10, bands_per_division=1000,
  hybrid_mode=True)``: 1 Hz bands centred on the FFT bins up to where a
  millidecade band becomes wider than a bin, then millidecade bands centred
  at ``10 * 10**((2n - 1) / 2000)`` Hz (``get_center_freq`` with ``G =
  10**0.3``) with edges at ``fc * 10**(+-1/2000)``; the last edge is cut at
  Nyquist. At 1 Hz bins the first millidecade band is centred at 435.5 Hz.
* Band levels: PyPAM ``utils.py`` ``spectra_ds_to_bands``: the bins strictly
  inside a band are summed, the bin holding each edge contributes the part
  of its width inside the band, and the sum is divided by the bandwidth
  (the band's mean PSD; the 1 Hz bin width makes sum and integral equal).
* Calibration: ``pypam_support.py`` ``_apply_sensitivity_if_given``: ``10 *
  log10`` of the band PSD minus a frequency-dependent sensitivity (dB re
  V/uPa, interpolated to the band centres); the result is float32
  (``_get_aggregated_milli_psd``).
* netCDF (``process_helper.py`` ``process_day``, ``save_dataset_to_netcdf``;
  attribute text from ``metadata/mars/variableAttributes.yaml``): variables
  ``psd (time, frequency)`` float32 dB, ``effort (time)`` float32 seconds,
  ``sensitivity`` (``(frequency)`` for a table, ``("1",)`` for a flat value),
  optional ``quality_flag (time, frequency)`` int8 = 2 ("not evaluated");
  ``time`` int64 seconds since 1970-01-01 (each minute's start),
  ``frequency`` float32 band centres; written with h5netcdf, NETCDF4.

Calibration here is in physical terms: a level in dB re 1 uPa**2/Hz is
``10 log10(PSD of the full-scale samples) + 20 log10(full-scale volts) -
sensitivity(f) - gain``, with the sensitivity in dB re 1 V/uPa (negative)
and the gain in dB. pbp's ``sensitivity_flat_value`` is ``-(sensitivity +
gain)`` in these terms and its ``voltage_multiplier`` is the full-scale
volts; a flat sensitivity is applied to the levels rather than to the
samples, which is the same number up to rounding.

Two choices differ from pbp, both where pbp has no data to be right with:

* a minute with a gap (or an overlap, as SoundTrap files have at their
  seams) is split into its continuous pieces and Welch segments never span
  a seam (the store's rule: gaps stay gaps); pbp concatenates the pieces.
  Effort is the seconds of audio in the minute either way. A minute with
  less than one second of continuous audio has no segment: NaN, its effort
  still recorded.
* a calibration table is held at its end values outside its frequencies
  (``numpy.interp``; pbp's xarray ``interp`` gives NaN there).
"""

from __future__ import annotations

import csv
import functools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import ConfigError

GROUP = "hmd"
MINUTE_NS = 60 * 1_000_000_000
# Chunks of the stored spectra, fixed whatever a run's length, so that runs append whole chunks:
# an hour of bands (60 x ~2900 float32 at 256 kHz: 0.7 MB) and a day of times.
PSD_CHUNK_MINUTES = 60
MINUTES_PER_DAY = 1440
# PyPAM's get_center_freq constant for millidecade centres (bands_per_division even).
_G = 10.0 ** (3.0 / 10.0)
_BANDS_PER_DECADE = 1000

# Variable attributes as pbp writes them for MBARI's MARS product (metadata/mars/variableAttributes.yaml).
TIME_ATTRS = {"standard_name": "time", "long_name": "UTC time beginning each 1-minute temporal bin",
              "units": "seconds since 1970-01-01T00:00:00Z", "calendar": "proleptic_gregorian",
              "coverage_content_type": "coordinate"}
EFFORT_ATTRS = {"long_name": "duration of input data available for each 1-minute bin",
                "coverage_content_type": "qualityInformation", "units": "seconds"}
FREQUENCY_ATTRS = {"standard_name": "sound_frequency",
                   "long_name": "Center frequency of hybrid millidecade spectral bands", "units": "Hz",
                   "coverage_content_type": "coordinate"}
SENSITIVITY_ATTRS = {"long_name": "Hydrophone sensitivity (dB re 1 volt / µPa)", "units": "dB",
                     "coverage_content_type": "physicalMeasurement"}
PSD_ATTRS = {"standard_name": "sound_intensity_in_water",
             "long_name": "Single-sided mean-square sound pressure spectral density (dB re 1 µPa^2/Hz)",
             "units": "dB", "coverage_content_type": "physicalMeasurement",
             "comment": "Computation of single-sided mean-square sound pressure spectral density "
                        "followed ISO 18405 3.1.3.13."}
UNCALIBRATED_PSD_ATTRS = {**PSD_ATTRS, "standard_name": "", "units": "dB",
                          "long_name": "Single-sided power spectral density of the full-scale samples "
                                       "(dB re 1 FS^2/Hz); no calibration was given"}
QUALITY_FLAG_ATTRS = {"long_name": "Data quality flag", "flag_values": [1, 2, 3, 4, 9],
                      "flag_meanings": "good not_evaluated questionable bad missing",
                      "coverage_content_type": "qualityInformation"}
NOT_EVALUATED = 2


# ------------------------------------------------------------------ bands

def _centre(n: int) -> float:
    """PyPAM ``get_center_freq(10, 1000, n, 0)``: centre of millidecade band ``n``."""
    b = _BANDS_PER_DECADE * 0.3
    return 10.0 * _G ** ((2 * (n - 1) + 1) / (2 * b))


@functools.lru_cache(maxsize=8)
def _limits(sample_rate: int, nfft: int) -> tuple[np.ndarray, np.ndarray]:
    """(edges, centres) of the hybrid millidecade bands over [0, fs/2]: PyPAM ``get_bands_limits``
    in hybrid mode, step for step (its loop finds where millidecade bands take over)."""
    fs, top = float(sample_rate), sample_rate / 2
    width = fs / nfft
    low, high = 10.0 ** (-1 / (2 * _BANDS_PER_DECADE)), 10.0 ** (1 / (2 * _BANDS_PER_DECADE))
    n, bin_width = 0, 0.0
    while bin_width < width:  # first millidecade band at least one FFT bin wide
        n += 1
        fc = _centre(n)
        bin_width = high * fc - low * fc
    fc = _centre(n)
    linear = round(fc / width)
    dc = abs(linear * width - fc) + 0.1
    while abs(linear * width - fc) < dc:  # then on to where the two grids drift apart
        dc = abs(linear * width - fc)
        n += 1
        linear += 1
        fc = _centre(n)
    linear -= 1
    n -= 1
    if width * linear > top:
        linear = int(fs / 2 / width + 1)
    centres = [i * width for i in range(int(linear))]
    edges = [c - width / 2 for c in centres]
    upper = fc * high
    while upper < top:
        fc = _centre(n)
        upper = fc * high
        centres.append(fc)
        edges.append(fc * low)
        n += 1
    if upper > top:
        upper = top
        if fc > top:
            centres[-1] = top
    edges.append(upper)
    return np.asarray(edges, dtype=np.float64), np.asarray(centres, dtype=np.float64)


def hmd_bands(sample_rate: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hybrid millidecade bands of a recording at ``sample_rate`` (1 Hz FFT bins, as pbp).

    Returns
    -------
    centres, lower, upper : numpy.ndarray
        Band centres and edges in Hz; ``upper[k] == lower[k + 1]``, the
        first band starts at -0.5 Hz (centred on the 0 Hz bin, as PyPAM's)
        and the last ends at Nyquist.
    """
    sample_rate = _rate(sample_rate)
    edges, centres = _limits(sample_rate, sample_rate)
    return centres.copy(), edges[:-1].copy(), edges[1:].copy()


def _rate(sample_rate: Any) -> int:
    rate = float(sample_rate)
    if not rate.is_integer() or rate < 2:
        raise ConfigError(f"hybrid millidecade bands need an integer sample rate of at least 2 Hz (1 Hz FFT "
                          f"bins), got {sample_rate}")
    return int(rate)


@functools.lru_cache(maxsize=8)
def band_matrix(sample_rate: int):
    """Sparse ``(bins, bands)`` weights taking a 1 Hz PSD to band mean PSDs (PyPAM
    ``spectra_ds_to_bands``): ``band_psd = psd @ band_matrix(fs)``."""
    from scipy import sparse

    sample_rate = _rate(sample_rate)
    edges, centres = _limits(sample_rate, sample_rate)
    width = 1.0
    n_bins = sample_rate // 2 + 1
    n_bands = len(centres)
    freqs = np.arange(n_bins) * width
    # The bin holding each edge, clipped to the last bin as PyPAM clips it.
    border = np.floor((edges + width / 2) / width).astype(np.int64)
    border[-1] = min(border[-1], n_bins - 1)
    bandwidth = edges[1:] - edges[:-1]
    lower_part = border[:-1] * width + width / 2 - edges[:-1]
    upper_part = edges[1:] - (border[1:] * width - width / 2)
    # Bins holding no edge go whole to the band [lower, upper) containing them.
    inner = np.ones(n_bins, dtype=bool)
    inner[border[(border >= 0) & (border < n_bins)]] = False
    inner_bins = np.flatnonzero(inner)
    band_of = np.searchsorted(edges, freqs[inner_bins], side="right") - 1
    keep = (band_of >= 0) & (band_of < n_bands)
    rows = np.concatenate([inner_bins[keep], border[:-1], border[1:]])
    cols = np.concatenate([band_of[keep], np.arange(n_bands), np.arange(n_bands)])
    weights = np.concatenate([np.ones(int(keep.sum())), lower_part / width, upper_part / width])
    weights = weights / bandwidth[cols]
    return sparse.csr_matrix((weights, (rows, cols)), shape=(n_bins, n_bands))


def band_levels(psd_1hz: np.ndarray, sample_rate: int) -> np.ndarray:
    """Mean PSD in each hybrid millidecade band (linear, units of ``psd_1hz``).

    ``psd_1hz`` is ``(..., fs // 2 + 1)``: one-sided PSDs with 1 Hz bins
    (``minute_psd``). NaN spectra stay NaN.
    """
    psd = np.asarray(psd_1hz, dtype=np.float64)
    matrix = band_matrix(_rate(sample_rate))
    if psd.shape[-1] != matrix.shape[0]:
        raise ConfigError(f"a 1 Hz spectrum at {sample_rate} Hz has {matrix.shape[0]} bins, got {psd.shape[-1]}")
    flat = psd.reshape(-1, psd.shape[-1])
    return np.asarray(flat @ matrix).reshape(*psd.shape[:-1], matrix.shape[1])


# ------------------------------------------------------------------ spectra

def _welch(x: np.ndarray, sample_rate: int) -> tuple[np.ndarray, int]:
    """(mean PSD, segments) of one continuous piece, as PyPAM computes it; (None, 0) under 1 s."""
    from scipy import signal

    if len(x) < sample_rate:
        return None, 0
    _, psd = signal.welch(x, fs=sample_rate, window="hann", nperseg=sample_rate, noverlap=sample_rate // 2,
                          nfft=sample_rate, detrend=False, scaling="density")
    step = sample_rate - sample_rate // 2
    return psd, 1 + (len(x) - sample_rate) // step


def minute_psd(samples: np.ndarray | Sequence[np.ndarray], sample_rate: int) -> np.ndarray:
    """One-sided PSD (1 Hz bins, ``fs // 2 + 1`` values) of a minute of samples, as pbp computes it.

    Parameters
    ----------
    samples : numpy.ndarray or list of numpy.ndarray
        Full-scale samples (floats in [-1, 1)): one continuous array, or the
        continuous pieces of a minute with gaps; Welch segments (1 s, Hann,
        50 % overlap) never span two pieces and the minute's PSD is the mean
        over all segments.
    sample_rate : int
        Samples per second (the FFT length: 1 Hz bins).

    Returns
    -------
    numpy.ndarray
        float64 PSD in FS**2/Hz; NaN when no piece holds a whole second.
    """
    sample_rate = _rate(sample_rate)
    pieces = [samples] if isinstance(samples, np.ndarray) else list(samples)
    total, count = None, 0
    for piece in pieces:
        psd, k = _welch(np.asarray(piece, dtype=np.float64), sample_rate)
        if k:
            total = psd * k if total is None else total + psd * k
            count += k
    if not count:
        return np.full(sample_rate // 2 + 1, np.nan)
    return total / count


# ------------------------------------------------------------------ calibration

@dataclass(frozen=True)
class Calibration:
    """How full-scale samples become sound pressure.

    ``sensitivity`` is the hydrophone's (dB re 1 V/uPa, e.g. -176); a table
    ``(frequencies, dB)`` gives it per frequency (interpolated to band
    centres, held at its end values outside). ``gain`` (dB) is the
    recorder's amplification; ``full_scale_volts`` the voltage of digital
    full scale (pbp's ``voltage_multiplier``; 1 when the sensitivity is
    end to end). Without a sensitivity the levels stay uncalibrated, in dB
    re 1 FS**2/Hz.
    """

    sensitivity: float | None = None
    gain: float = 0.0
    full_scale_volts: float = 1.0
    table: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        for name in ("gain", "full_scale_volts"):
            if not math.isfinite(float(getattr(self, name))):
                raise ConfigError(f"calibration {name} must be a finite number, got {getattr(self, name)}")
        if self.full_scale_volts <= 0:
            raise ConfigError(f"full-scale voltage must be positive, got {self.full_scale_volts}")
        if self.sensitivity is not None and not math.isfinite(float(self.sensitivity)):
            raise ConfigError(f"sensitivity must be a finite number (dB re 1 V/uPa), got {self.sensitivity}")

    @property
    def calibrated(self) -> bool:
        return self.sensitivity is not None or self.table is not None

    def sensitivity_at(self, frequencies: np.ndarray) -> np.ndarray:
        """Sensitivity plus gain (dB) at ``frequencies``; zeros when uncalibrated."""
        f = np.asarray(frequencies, dtype=np.float64)
        if self.table is not None:
            base = np.interp(f, np.asarray(self.table[0]), np.asarray(self.table[1]))
        else:
            base = np.full(f.shape, float(self.sensitivity or 0.0))
        return base + float(self.gain)

    def offset_db(self, frequencies: np.ndarray) -> np.ndarray:
        """dB added to ``10 log10(PSD of full-scale samples)`` at ``frequencies``."""
        return 20 * math.log10(self.full_scale_volts) - self.sensitivity_at(frequencies)

    def as_attrs(self) -> dict[str, Any]:
        out: dict[str, Any] = {"gain_db": float(self.gain), "full_scale_volts": float(self.full_scale_volts),
                               "source": self.source}
        if self.sensitivity is not None:
            out["sensitivity_db"] = float(self.sensitivity)
        if self.table is not None:
            out["table_hz"] = [float(v) for v in self.table[0]]
            out["table_db"] = [float(v) for v in self.table[1]]
        return out

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> "Calibration":
        table = (tuple(attrs["table_hz"]), tuple(attrs["table_db"])) if "table_hz" in attrs else None
        return cls(attrs.get("sensitivity_db"), attrs.get("gain_db", 0.0), attrs.get("full_scale_volts", 1.0),
                   table, attrs.get("source", ""))


def _table(freqs: Sequence[Any], levels: Sequence[Any], where: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    try:
        f = np.asarray([float(v) for v in freqs])
        s = np.asarray([float(v) for v in levels])
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: calibration values must be numbers: {exc}") from None
    if len(f) != len(s) or not len(f):
        raise ConfigError(f"{where}: a calibration table needs as many sensitivities as frequencies, at least one "
                          f"(got {len(f)} frequencies, {len(s)} values)")
    if not (np.isfinite(f).all() and np.isfinite(s).all()):
        raise ConfigError(f"{where}: calibration table holds a value that is not a finite number")
    order = np.argsort(f, kind="stable")
    if (np.diff(f[order]) <= 0).any():
        raise ConfigError(f"{where}: calibration table repeats a frequency")
    return tuple(f[order].tolist()), tuple(s[order].tolist())


def read_calibration_csv(path: str | Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """A ``frequency,sensitivity`` CSV (Hz, dB re 1 V/uPa; a header line is allowed) as a table."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the calibration table: {exc.strerror or exc}") from None
    freqs, levels = [], []
    for line_no, row in enumerate(csv.reader(text.splitlines()), start=1):
        cells = [c.strip() for c in row if c.strip()]
        if not cells or cells[0].startswith("#"):
            continue
        if len(cells) < 2:
            raise ConfigError(f"{path} line {line_no}: expected frequency,sensitivity, got {','.join(row)!r}")
        try:
            f, s = float(cells[0]), float(cells[1])
        except ValueError:
            if not freqs and line_no == 1:
                continue  # a header
            raise ConfigError(f"{path} line {line_no}: {cells[0]!r}, {cells[1]!r} are not numbers") from None
        freqs.append(f)
        levels.append(s)
    return _table(freqs, levels, str(path))


def calibration_from_attrs(attrs: dict[str, Any]) -> Calibration | None:
    """The calibration a stream's deployment metadata gives (``CALIBRATION.FrequencyResponse_Hz`` and
    ``_dB``, as MBARI's deployment JSON has it), or None."""
    doc = attrs.get("deployment_metadata")
    if isinstance(doc, str):
        try:
            doc = json.loads(doc)
        except ValueError:
            return None
    if not isinstance(doc, dict):
        return None
    lowered = {str(k).lower(): v for k, v in doc.items()}
    cal = lowered.get("calibration")
    if not isinstance(cal, dict):
        return None
    cal = {str(k).lower(): v for k, v in cal.items()}
    where = f"deployment metadata {attrs.get('metadata_url', '')}".strip()
    if "frequencyresponse_hz" in cal and "frequencyresponse_db" in cal:
        return Calibration(table=_table(cal["frequencyresponse_hz"], cal["frequencyresponse_db"], where),
                           source=f"{where} CALIBRATION {cal.get('id', '')}".strip())
    for key in ("sensitivity_db", "sensitivity"):
        if key in cal:
            try:
                return Calibration(float(cal[key]), float(cal.get("gain_db", cal.get("gain", 0.0)) or 0.0),
                                   source=f"{where} CALIBRATION")
            except (TypeError, ValueError):
                raise ConfigError(f"{where}: CALIBRATION {key} is not a number: {cal[key]!r}") from None
    return None


def resolve_calibration(attrs: dict[str, Any], sensitivity: float | None = None, gain: float | None = None,
                        table: str | Path | None = None, full_scale_volts: float | None = None) -> Calibration:
    """The calibration to use: a table file, else a flat ``sensitivity`` given, else the stream's
    deployment metadata, else none (levels re full scale). ``gain`` and ``full_scale_volts`` given
    apply to whichever is used."""
    if table is not None:
        cal = Calibration(table=read_calibration_csv(table), source=str(table))
    elif sensitivity is not None:
        cal = Calibration(float(sensitivity), source="parameters")
    elif attrs.get("calibration_db") is not None:
        # The stream's broadband calibration (pamingest.quality): the level of a full-scale signal.
        cal = Calibration(-float(attrs["calibration_db"]), source="stream attribute calibration_db")
    else:
        cal = calibration_from_attrs(attrs) or Calibration(source="none")
    return Calibration(cal.sensitivity, float(gain) if gain is not None else cal.gain,
                       float(full_scale_volts) if full_scale_volts is not None else cal.full_scale_volts,
                       cal.table, cal.source)


def levels_db(band_psd: np.ndarray, centres: np.ndarray, calibration: Calibration) -> np.ndarray:
    """Band PSDs (FS**2/Hz) to float32 dB re 1 uPa**2/Hz (re 1 FS**2/Hz uncalibrated)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = 10 * np.log10(band_psd) + calibration.offset_db(centres)
    return out.astype(np.float32)


# ------------------------------------------------------------------ from the store

def _pieces(samples: np.ndarray, times: np.ndarray, sample_rate: int) -> tuple[list[np.ndarray], float]:
    """(continuous pieces, seconds covered) of stitched samples: split where time does not advance
    by one sample period (a gap, or the overlap of two recordings at a seam); time two pieces
    both cover (an overlap) counts once."""
    from .coverage import max_gap_ns, spans

    if not len(samples):
        return [], 0.0
    period = 1e9 / sample_rate
    step = np.diff(times)
    breaks = np.flatnonzero((step <= 0) | (step > 1.5 * period)) + 1
    first = np.concatenate([[0], breaks])
    last = np.concatenate([breaks - 1, [len(times) - 1]])
    start, end = times[first], times[last] + int(round(period))
    order = np.argsort(start, kind="stable")
    s0, e0 = spans(start[order], end[order], max_gap_ns(sample_rate))
    return np.split(samples, breaks), float((e0 - s0).sum() / 1e9)


@functools.lru_cache(maxsize=4)
def _stream(url: str, stream: str, snapshot: str, options: str):
    from .query import open_stream

    return open_stream(url, stream, snapshot, json.loads(options) or None)


def minute_band_psd(ds, minutes_ns: Sequence[int], channel: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(band PSD ``(minutes, bands)`` float64 in FS**2/Hz, effort seconds ``(minutes,)``) of the
    minutes starting at ``minutes_ns`` of a stream Dataset; NaN where a minute has no whole second."""
    sr = int(ds.attrs["sample_rate"])
    n_bands = band_matrix(sr).shape[1]
    out = np.full((len(minutes_ns), n_bands), np.nan)
    effort = np.zeros(len(minutes_ns), dtype=np.float32)
    psd = np.full((len(minutes_ns), sr // 2 + 1), np.nan)
    for i, t0 in enumerate(minutes_ns):
        window = ds.pam.window(int(t0), int(t0) + MINUTE_NS, dtype=np.float64)
        if not window.sizes["time"]:
            continue
        samples = window.values[:, channel]
        pieces, effort[i] = _pieces(samples, window["time"].values.view(np.int64), sr)
        psd[i] = minute_psd(pieces, sr)
    done = np.flatnonzero(np.isfinite(psd).all(axis=1))
    if len(done):
        out[done] = band_levels(psd[done], sr)
    return out, effort


def _minutes_task(minutes: np.ndarray, url: str, stream: str, snapshot: str, options: str,
                  channel: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Worker task: band PSDs of a block of minutes, read from the pinned snapshot."""
    bands, effort = minute_band_psd(_stream(url, stream, snapshot, options), minutes, channel)
    return minutes, bands, effort


@dataclass
class HmdReport:
    """What ``compute_hmd`` did."""

    store: str
    stream: str
    minutes: int = 0
    with_audio: int = 0
    audio_seconds: float = 0.0
    calibration: dict = field(default_factory=dict)
    snapshot_id: str | None = None
    compute_seconds: float = 0.0
    elapsed_seconds: float = 0.0

    def summary(self) -> str:
        cal = self.calibration.get("source") or "none"
        return (f"hmd {self.stream}: {self.minutes} minutes ({self.with_audio} with audio, "
                f"{self.audio_seconds:.0f} s of audio), calibration: {cal}; computed in {self.compute_seconds:.1f} s; "
                f"snapshot {self.snapshot_id or '-'}")

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def minute_starts(start: Any, end: Any) -> np.ndarray:
    """UTC minute starts (int ns) of the minutes meeting ``[start, end)``."""
    from .timing import to_ns

    t0, t1 = to_ns(start), to_ns(end)
    if t1 <= t0:
        raise ConfigError(f"the end ({end}) must come after the start ({start})")
    first = (t0 // MINUTE_NS) * MINUTE_NS
    return np.arange(first, t1, MINUTE_NS, dtype=np.int64)


def compute_hmd(store: Any, stream: str, start: Any = None, end: Any = None, *,
                sensitivity: float | None = None, gain: float | None = None,
                calibration_table: str | Path | None = None, full_scale_volts: float | None = None,
                channel: int = 0, client: Any = None, n_workers: int | None = None,
                store_options: dict | None = None, minutes_per_task: int = 10) -> HmdReport:
    """1-minute hybrid millidecade spectra of a stream's ``[start, end)``, written to the store.

    The minutes (UTC, whole) are computed in parallel on the executor
    (``pamingest.executor.executor_for``: a Dask client or address,
    ``"threads"``, ``"serial"``, or None to choose by size), each block of
    ``minutes_per_task`` minutes reading its rows from one pinned snapshot.
    The result goes to the group ``<stream>/hmd`` in one commit:
    ``psd (time, frequency)`` float32 dB, ``effort (time)`` seconds of audio,
    ``frequency`` band centres with ``frequency_bounds (frequency, nv)``,
    ``sensitivity (frequency)``, all with pbp's attributes. Minutes stored
    before are kept and minutes computed again are replaced; a calibration
    other than the stored one is a ConfigError (the levels would not be
    comparable). ``start``/``end`` default to the stream's first and last audio.
    """
    import time

    from .executor import executor_for
    from .query import open_stream
    from .store.repo import Store

    t_begin = time.perf_counter()
    st = Store.open(store, store_options)
    snapshot = st.tip()
    path = stream.strip("/")
    ds = open_stream(st.url, path, snapshot, store_options)
    sr = _rate(ds.attrs["sample_rate"])
    n_channels = ds["audio"].sizes["channel"]
    if not 0 <= channel < n_channels:
        raise ConfigError(f"stream {path} has {n_channels} channel(s); channel {channel} does not exist")
    if start is None or end is None:
        cover = ds.pam.coverage()
        if not len(cover):
            raise ConfigError(f"stream {path} holds no audio: no minutes to compute")
        start = cover["start"].min() if start is None else start
        end = cover["end"].max() if end is None else end
    cal = resolve_calibration(ds.attrs, sensitivity, gain, calibration_table, full_scale_volts)
    minutes = minute_starts(start, end)
    report = HmdReport(store=st.url, stream=path, minutes=len(minutes), calibration=cal.as_attrs())
    blocks = [minutes[i:i + max(1, minutes_per_task)] for i in range(0, len(minutes), max(1, minutes_per_task))]
    bands = np.full((len(minutes), band_matrix(sr).shape[1]), np.nan)
    effort = np.zeros(len(minutes), dtype=np.float32)
    options = json.dumps(store_options or {}, sort_keys=True)
    # Bytes a block reads, for executor_for's choice between threads and a cluster.
    work = int(len(minutes) * 60 * sr * ds["audio"].dtype.itemsize * n_channels)
    t_compute = time.perf_counter()
    with executor_for(client, n_workers, work) as executor:
        limit = max(2, 2 * getattr(executor, "n_threads", 1))
        for block, future in executor.map_unordered(_minutes_task, blocks, limit, url=st.url, stream=path,
                                                    snapshot=snapshot, options=options, channel=channel):
            got, b, e = future.result()
            at = np.searchsorted(minutes, got)
            bands[at], effort[at] = b, e
    report.compute_seconds = time.perf_counter() - t_compute
    centres, lower, upper = hmd_bands(sr)
    psd_db = levels_db(bands, centres, cal)
    report.with_audio = int(np.isfinite(psd_db).all(axis=1).sum())
    report.audio_seconds = float(effort.sum())
    commit = st.update(lambda root: _write(root, path, minutes, psd_db, effort, centres, lower, upper, cal, channel),
                       f"hmd {path}: {len(minutes)} minutes of hybrid millidecade spectra",
                       {"hmd": {"stream": path, "minutes": len(minutes), "start": int(minutes[0]) if len(minutes) else None}})
    report.snapshot_id = commit.snapshot_id
    report.elapsed_seconds = time.perf_counter() - t_begin
    return report


def _write(root, path: str, minutes: np.ndarray, psd_db: np.ndarray, effort: np.ndarray, centres: np.ndarray,
           lower: np.ndarray, upper: np.ndarray, cal: Calibration, channel: int) -> int:
    """Merge the minutes into ``<path>/hmd``, sorted by time; returns the minutes stored.

    A run over minutes after the stored ones (the next day of a deployment)
    or over stored minutes (a rerun) writes its rows in place: the arrays
    grow, and only the chunks holding its minutes are written, so a year of
    daily runs does not rewrite the year each day. Minutes that fall between
    or before stored ones rewrite the group whole, sorted by time.
    """
    stream_group = root[path]
    seconds = minutes // 1_000_000_000
    attrs = {"calibration": cal.as_attrs(), "channel": int(channel), "method": METHOD}
    if GROUP in stream_group:
        old = stream_group[GROUP]
        have = dict(old.attrs)
        if Calibration.from_attrs(have.get("calibration", {})) != cal or have.get("channel") != channel:
            raise ConfigError(
                f"stream {path} holds hybrid millidecade spectra of channel {have.get('channel')} with calibration "
                f"{json.dumps(have.get('calibration'), sort_keys=True)}; this run has channel {channel} and "
                f"{json.dumps(cal.as_attrs(), sort_keys=True)}: levels would not be comparable. Remove "
                f"{path}/{GROUP} first or use the stored calibration")
        old_t = np.asarray(old["time"][:], dtype=np.int64)
        placed = _in_place(old, old_t, seconds, psd_db, effort)
        if placed is not None:
            return placed
        keep = ~np.isin(old_t, seconds)
        seconds = np.concatenate([old_t[keep], seconds])
        psd_db = np.concatenate([np.asarray(old["psd"][:])[keep], psd_db])
        effort = np.concatenate([np.asarray(old["effort"][:])[keep], effort])
        order = np.argsort(seconds, kind="stable")
        seconds, psd_db, effort = seconds[order], psd_db[order], effort[order]
        del stream_group[GROUP]
    g = stream_group.create_group(GROUP, attributes=attrs)
    n, nb = psd_db.shape
    day = MINUTES_PER_DAY
    g.create_array("time", shape=(n,), chunks=(day,), dtype="int64", fill_value=0, dimension_names=("time",),
                   attributes=TIME_ATTRS)[:] = seconds
    g.create_array("frequency", shape=(nb,), chunks=(nb,), dtype="float32", fill_value=0.0,
                   dimension_names=("frequency",),
                   attributes={**FREQUENCY_ATTRS, "bounds": "frequency_bounds"})[:] = centres.astype(np.float32)
    g.create_array("frequency_bounds", shape=(nb, 2), chunks=(nb, 2), dtype="float64", fill_value=0.0,
                   dimension_names=("frequency", "nv"),
                   attributes={"long_name": "lower and upper edge of each hybrid millidecade band",
                               "units": "Hz"})[:] = np.stack([lower, upper], axis=1)
    g.create_array("sensitivity", shape=(nb,), chunks=(nb,), dtype="float32", fill_value=np.nan,
                   dimension_names=("frequency",),
                   attributes={**SENSITIVITY_ATTRS, "gain_included_db": float(cal.gain)}
                   )[:] = (cal.sensitivity_at(centres) if cal.calibrated else np.full(nb, np.nan)).astype(np.float32)
    g.create_array("effort", shape=(n,), chunks=(day,), dtype="float32", fill_value=0.0, dimension_names=("time",),
                   attributes=EFFORT_ATTRS)[:] = effort.astype(np.float32)
    g.create_array("psd", shape=(n, nb), chunks=(PSD_CHUNK_MINUTES, nb), dtype="float32", fill_value=np.nan,
                   dimension_names=("time", "frequency"),
                   attributes={**(PSD_ATTRS if cal.calibrated else UNCALIBRATED_PSD_ATTRS),
                               "coordinates": "frequency_bounds"})[:] = psd_db
    return n


def _in_place(group, stored: np.ndarray, seconds: np.ndarray, psd_db: np.ndarray, effort: np.ndarray) -> int | None:
    """Write the minutes into the stored arrays where they go without reordering any (each one
    stored already, or all after the last stored); the minutes then stored, or None (rewrite)."""
    if not len(seconds):
        return len(stored)
    at = np.searchsorted(stored, seconds)
    known = (at < len(stored)) & (stored[np.minimum(at, len(stored) - 1)] == seconds) if len(stored) else \
        np.zeros(len(seconds), dtype=bool)
    later = seconds > (stored[-1] if len(stored) else np.iinfo(np.int64).min)
    if not (known | later).all() or (later.any() and not later[np.argmax(later):].all()):
        return None  # a minute between stored ones, or new minutes before known ones
    if known.any():
        rows = at[known]
        group["psd"].set_orthogonal_selection((rows, slice(None)), psd_db[known].astype(np.float32))
        group["effort"].set_orthogonal_selection((rows,), effort[known].astype(np.float32))
    if later.any():
        n, k = len(stored), int(later.sum())
        for name in ("time", "effort", "psd"):
            array = group[name]
            array.resize((n + k, *array.shape[1:]))
        group["time"][n:] = seconds[later]
        group["effort"][n:] = effort[later].astype(np.float32)
        group["psd"][n:] = psd_db[later].astype(np.float32)
    return len(stored) + int(later.sum())


METHOD = ("pbp/PyPAM hybrid millidecade: Welch, periodic Hann, nfft = nperseg = fs (1 Hz), 50% overlap, "
          "no detrend, density; bands per Martin et al. (2021); segments never span a gap")


def hmd_dataset(store: Any, stream: str, snapshot: str | None = None, store_options: dict | None = None,
                start: Any = None, end: Any = None):
    """The stored spectra of a stream as an ``xarray.Dataset`` (time decoded), optionally cut to
    ``[start, end)``."""

    from .errors import StreamNotFoundError
    from .query import open_store
    from .timing import to_ns

    tree = open_store(store, snapshot, storage_options=store_options)
    path = f"{stream.strip('/')}/{GROUP}"
    try:
        ds = tree[path].to_dataset()
    except KeyError:
        raise StreamNotFoundError(f"{store}: stream {stream!r} has no hybrid millidecade spectra "
                                  f"(run `pamingest hmd` first)") from None
    if start is not None or end is not None:
        t = ds["time"].values.astype("datetime64[ns]").view(np.int64)
        keep = np.ones(len(t), dtype=bool)
        if start is not None:
            keep &= t >= to_ns(start)
        if end is not None:
            keep &= t < to_ns(end)
        ds = ds.isel(time=np.flatnonzero(keep))
    return ds


def export_netcdf(store: Any, stream: str, out: str | Path, *, start: Any = None, end: Any = None,
                  snapshot: str | None = None, store_options: dict | None = None,
                  quality_flag: bool = True, global_attrs: dict | None = None) -> Path:
    """Write a stream's stored spectra as the netCDF pbp writes (h5netcdf, NETCDF4, compressed).

    Variables ``psd``, ``effort``, ``sensitivity`` (per band for a table or
    deployment calibration, ``("1",)`` for a flat value, as pbp) and, with
    ``quality_flag``, ``quality_flag`` = 2 ("not evaluated", pbp's
    ``--add-quality-flag``); ``frequency_bounds`` is kept as the CF bounds
    of ``frequency`` (pbp has none; readers of pbp's files ignore it).
    """
    import datetime as _dt

    import xarray as xr

    ds = hmd_dataset(store, stream, snapshot, store_options, start, end).load()
    cal = Calibration.from_attrs(ds.attrs.get("calibration", {}))
    seconds = ds["time"].values.astype("datetime64[s]").astype(np.int64)
    time = xr.DataArray(seconds, dims=("time",), attrs={k: v for k, v in TIME_ATTRS.items() if k != "calendar"})
    coords = {"time": time, "frequency": ds["frequency"].astype(np.float32)}
    data = {"psd": (("time", "frequency"), ds["psd"].values.astype(np.float32), dict(ds["psd"].attrs)),
            "effort": (("time",), ds["effort"].values.astype(np.float32), EFFORT_ATTRS),
            "frequency_bounds": (("frequency", "nv"), ds["frequency_bounds"].values,
                                 dict(ds["frequency_bounds"].attrs))}
    data["psd"][2].pop("coordinates", None)
    if cal.table is not None:
        data["sensitivity"] = (("frequency",), ds["sensitivity"].values.astype(np.float32), SENSITIVITY_ATTRS)
    elif cal.sensitivity is not None:
        data["sensitivity"] = (("1",), np.array([-(cal.sensitivity + cal.gain)], dtype=np.float32),
                               {**SENSITIVITY_ATTRS, "comment": "pbp's sensitivity_flat_value: -(sensitivity + "
                                                                "gain), dB re 1 uPa per full scale"})
    if quality_flag:
        data["quality_flag"] = (("time", "frequency"), np.full(ds["psd"].shape, NOT_EVALUATED, dtype=np.int8),
                                QUALITY_FLAG_ATTRS)
    frequency_attrs = dict(FREQUENCY_ATTRS, bounds="frequency_bounds")
    coords["frequency"].attrs = frequency_attrs
    if len(seconds):
        first = _dt.datetime.fromtimestamp(int(seconds[0]), _dt.timezone.utc)
        last = _dt.datetime.fromtimestamp(int(seconds[-1]), _dt.timezone.utc)
    attrs = {"title": "Hybrid millidecade band sound pressure levels computed at 1 minute resolution",
             "Conventions": "COARDS, CF-1.6, ACDD-1.3",
             "source": f"pamingest {_version()}: {METHOD}",
             "time_coverage_start": first.strftime("%Y-%m-%d %H:%M:%SZ") if len(seconds) else "",
             "time_coverage_end": last.strftime("%Y-%m-%d %H:%M:%SZ") if len(seconds) else "",
             "time_coverage_resolution": "P60S",
             "date_created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d"),
             "pamingest_stream": stream.strip("/"),
             "calibration": json.dumps(cal.as_attrs(), sort_keys=True),
             **(global_attrs or {})}
    out_ds = xr.Dataset(data, coords=coords, attrs=attrs)
    encoding: dict[str, dict[str, Any]] = {"effort": {"_FillValue": None}, "frequency": {"_FillValue": None},
                                           "time": {"_FillValue": None, "dtype": "int64"}}
    if "sensitivity" in out_ds:
        encoding["sensitivity"] = {"_FillValue": None}
    for name in ("psd", "quality_flag"):
        if name in out_ds and out_ds[name].size:
            encoding[name] = {"zlib": True, "complevel": 3, "fletcher32": True,
                              "chunksizes": tuple(max(1, s // 2) for s in out_ds[name].shape)}
    out = Path(out)
    try:
        out_ds.to_netcdf(out, format="NETCDF4", engine="h5netcdf", encoding=encoding)
    except ImportError as exc:
        raise ConfigError(f"writing {out} needs h5netcdf: pip install 'pamingest[hmd]' ({exc})") from None
    return out


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("pamingest")
    except Exception:  # noqa: BLE001  (an uninstalled checkout)
        return "unknown"
