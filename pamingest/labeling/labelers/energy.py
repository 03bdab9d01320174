"""Band-limited energy detector: a frequency band and an adaptive noise floor per target.

The classic detector of bioacoustics (Raven's "Band Limited Energy
Detector", Mellinger's energy sums): power in a band, compared with an
estimate of the background in that band, events where the ratio stays above
a threshold long enough. Two noise floors, chosen per target:

``time`` (transient calls shorter than a chunk: killer-whale calls, humpback
    song units, fin-whale 20 Hz pulses)
    for each frequency bin, a low percentile of its power over the chunk's
    frames (Raven's noise block = the chunk), so the floor follows the
    chunk's own background and the steady parts of it (a ship's tonal, a
    chorus) cancel out. SNR per frame = band power / band floor.
``frequency`` (long tonal sources that can fill a whole chunk: blue-whale
    A/B calls, ship tonals)
    the chunk's mean spectrum against its own running median across
    frequency (``floor_width_hz``): a narrow line stands out of the smooth
    background whether or not it lasts the whole chunk. SNR = the most
    prominent bin of the band.

The chunk's score is ``1 / (1 + exp(-(snr_db - threshold_db) / slope_db))``:
0.5 at the threshold, so "uncertain" means "near the threshold". Event
boxes: runs of frames above the threshold at least ``min_duration`` long
(``time``), or the chunk (``frequency``); frequency bounds are the band's
bins above the threshold during the event.

Low bands are computed after an integer decimation (``scipy.signal.
resample_poly``) so that a 10 Hz resolution at 48 kHz does not cost a
48000-point FFT; the store's audio is read at its own rate. A band above
the stream's Nyquist frequency cannot be assessed: the score is NaN.

Presets (bands from the literature on each call type, not fitted to any
test recording):

=================  ==============  =======  =====================================
preset             band (Hz)       floor    what
=================  ==============  =======  =====================================
killer-whale       1000 - 10000    time     pulsed calls and whistles
humpback           100 - 4000      time     song units
fin-whale          15 - 35         time     20 Hz pulses (~1 s downsweeps)
blue-whale         10 - 100        frequency A/B calls (tonal, 10-20 s), D calls
vessel             20 - 1000       frequency propeller tonals and blade rates
=================  ==============  =======  =====================================
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
from scipy import ndimage, signal

from ...errors import ConfigError
from ..base import Detection, LabelOutput, mono

VERSION = "1"


@dataclass(frozen=True)
class EnergySettings:
    """One target: its band, its floor, its threshold and its time scales."""

    target: str
    low_hz: float
    high_hz: float
    floor: str = "time"
    frame_seconds: float = 0.05
    hop_fraction: float = 0.5
    floor_percentile: float = 20.0
    floor_width_hz: float = 0.0
    threshold_db: float = 10.0
    slope_db: float = 2.0
    min_duration: float = 0.2

    def check(self) -> None:
        if not 0 <= self.low_hz < self.high_hz:
            raise ConfigError(f"band must satisfy 0 <= low_hz < high_hz, got {self.low_hz}-{self.high_hz} Hz")
        if self.floor not in ("time", "frequency"):
            raise ConfigError(f"floor must be 'time' or 'frequency', not {self.floor!r}")
        if self.frame_seconds <= 0 or not 0 < self.hop_fraction <= 1:
            raise ConfigError("frame_seconds must be > 0 and hop_fraction in (0, 1]")
        if not 0 < self.floor_percentile < 100:
            raise ConfigError(f"floor_percentile must be in (0, 100), got {self.floor_percentile}")
        if self.slope_db <= 0 or self.min_duration < 0:
            raise ConfigError("slope_db must be > 0 and min_duration >= 0")


PRESETS: dict[str, EnergySettings] = {
    "killer-whale": EnergySettings("killer_whale", 1000, 10000, "time", frame_seconds=0.02, min_duration=0.2),
    "humpback": EnergySettings("humpback", 100, 4000, "time", frame_seconds=0.05, min_duration=0.3),
    "fin-whale": EnergySettings("fin_whale", 15, 35, "time", frame_seconds=0.5, hop_fraction=0.25,
                                min_duration=0.5),
    "blue-whale": EnergySettings("blue_whale", 10, 100, "frequency", frame_seconds=1.0, floor_width_hz=20.0),
    "vessel": EnergySettings("vessel", 20, 1000, "frequency", frame_seconds=0.5, floor_width_hz=50.0),
}


class EnergyDetector:
    """Band-limited energy detector with an adaptive noise floor.

    Parameters
    ----------
    variant : str, optional
        A preset (``killer-whale``, ``humpback``, ``fin-whale``,
        ``blue-whale``, ``vessel``); None: give at least ``low_hz``,
        ``high_hz`` and ``target``.
    **settings
        Overrides of :class:`EnergySettings` fields (``low_hz``,
        ``high_hz``, ``floor``, ``threshold_db``, ``min_duration``...).
    """

    version = VERSION

    def __init__(self, variant: str | None = None, **settings: Any) -> None:
        if variant is not None:
            if variant not in PRESETS:
                raise ConfigError(f"unknown preset {variant!r}: use one of {', '.join(sorted(PRESETS))}")
            base = PRESETS[variant]
        else:
            missing = {"target", "low_hz", "high_hz"} - set(settings)
            if missing:
                raise ConfigError(f"without a preset give {', '.join(sorted(missing))}")
            base = EnergySettings(str(settings.pop("target")), float(settings.pop("low_hz")),
                                  float(settings.pop("high_hz")))
        unknown = set(settings) - set(EnergySettings.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"unknown setting(s) {', '.join(sorted(unknown))}")
        self.settings = replace(base, **settings)
        self.settings.check()
        self.variant = variant
        self._overrides = dict(settings)
        self.name = f"energy:{variant}" if variant else f"energy:{self.settings.target}"
        self.classes = (self.settings.target,)

    def params(self) -> dict[str, Any]:
        return asdict(self.settings)

    def load(self) -> None:
        """Nothing to load: the detector is a few lines of numpy."""

    def __repr__(self) -> str:
        return f"EnergyDetector({self.variant!r}, **{self._overrides!r})"

    # ------------------------------------------------------------ scoring

    def __call__(self, audio: np.ndarray, n_valid: np.ndarray, sample_rate: int) -> LabelOutput:
        s = self.settings
        x = mono(np.asarray(audio, dtype=np.float32))
        n = x.shape[0]
        scores = np.full((n, 1), np.nan, dtype=np.float32)
        nyquist = sample_rate / 2
        if s.low_hz >= 0.95 * nyquist or n == 0:
            return LabelOutput(scores)
        high = min(s.high_hz, 0.95 * nyquist)
        # Decimate while the band stays well below the reduced Nyquist (x2.5 leaves the
        # anti-alias filter's transition band outside the band).
        q = max(1, int(sample_rate // (2.5 * high)))
        rate = sample_rate / q
        if q > 1:
            x = signal.resample_poly(x, 1, q, axis=1).astype(np.float32)
        valid = np.ceil(np.asarray(n_valid, dtype=np.float64) / q).astype(np.int64)
        nperseg = max(16, int(round(s.frame_seconds * rate)))
        nperseg = min(nperseg, x.shape[1])
        hop = max(1, int(round(nperseg * s.hop_fraction)))
        freqs, times, power = signal.spectrogram(x, fs=rate, window="hann", nperseg=nperseg,
                                                 noverlap=nperseg - hop, detrend=False, axis=-1, mode="psd")
        band = (freqs >= s.low_hz) & (freqs <= high)
        if not band.any():
            return LabelOutput(scores)
        # A frame counts only if it lies inside the chunk's valid samples (the last row of
        # a file is zero-padded).
        frame_end = times + nperseg / (2 * rate)
        live = frame_end[None, :] <= (valid[:, None] / rate) + 1e-9
        detections: list[Detection] = []
        for i in range(n):
            if live[i].sum() < 2:
                continue
            p = power[i][:, live[i]]
            if s.floor == "time":
                snr, det = self._time_floor(p, freqs, band, times[live[i]], nperseg / rate, hop / rate)
            else:
                snr, det = self._frequency_floor(p, freqs, band, valid[i] / rate)
            scores[i, 0] = self._score(snr)
            detections += [replace(d, chunk=i) for d in det]
        return LabelOutput(scores, detections)

    def _score(self, snr_db: float) -> float:
        s = self.settings
        z = (snr_db - s.threshold_db) / s.slope_db
        return float(1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z)))))

    def _time_floor(self, p, freqs, band, times, frame_s, hop_s):
        s = self.settings
        pb = p[band]
        # A periodogram bin of noise is exponentially distributed: its q-quantile is
        # -ln(1 - q) times its mean. Dividing by that makes the floor an estimate of the
        # noise's mean power, so pure noise sits near 0 dB whatever the percentile.
        q = s.floor_percentile / 100
        floor = np.percentile(pb, s.floor_percentile, axis=1) / -math.log1p(-q) + 1e-30
        ratio = pb.sum(axis=0) / floor.sum()
        # Average over the minimum duration: one loud frame is a click, not a call.
        width = max(1, int(round(s.min_duration / hop_s)))
        smooth = ndimage.uniform_filter1d(ratio, width, mode="nearest") if width > 1 else ratio
        snr = 10 * np.log10(np.maximum(smooth, 1e-30))
        above = snr > s.threshold_db
        detections = []
        for a, b in _runs(above):
            start = max(0.0, times[a] - frame_s / 2)
            end = times[b - 1] + frame_s / 2
            if end - start < s.min_duration:
                continue
            lo, hi = _bounds(pb[:, a:b].mean(axis=1) / floor, freqs[band], s.threshold_db)
            detections.append(Detection(0, float(start), float(end), lo, hi,
                                        self._score(float(snr[a:b].max())), s.target))
        return float(snr.max()), detections

    def _frequency_floor(self, p, freqs, band, seconds):
        s = self.settings
        spectrum_db = 10 * np.log10(p.mean(axis=1) + 1e-30)
        df = freqs[1] - freqs[0]
        width = max(3, int(round(s.floor_width_hz / df)) | 1)
        floor_db = ndimage.median_filter(spectrum_db, size=width, mode="nearest")
        prominence = (spectrum_db - floor_db)[band]
        snr = float(prominence.max())
        detections = []
        if snr > s.threshold_db:
            lo, hi = _bounds(10 ** (prominence / 10), freqs[band], s.threshold_db)
            detections.append(Detection(0, 0.0, float(seconds), lo, hi, self._score(snr), s.target))
        return snr, detections


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """``[start, stop)`` of each run of True."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)))


def _bounds(ratio: np.ndarray, freqs: np.ndarray, threshold_db: float) -> tuple[float, float]:
    hot = np.flatnonzero(10 * np.log10(np.maximum(ratio, 1e-30)) > threshold_db)
    if not len(hot):
        return float(freqs[0]), float(freqs[-1])
    return float(freqs[hot[0]]), float(freqs[hot[-1]])


__all__ = ["EnergyDetector", "EnergySettings", "PRESETS", "VERSION"]
