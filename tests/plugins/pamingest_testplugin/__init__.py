"""A user's labellers, registered through the ``pamingest.labelers`` entry point by the tests.

Not installed: ``tests/test_labeling.py`` writes a dist-info with the entry
points into a temporary folder and puts both on the path, as an installed
plugin package would be found.
"""

from __future__ import annotations

import os
import time

import numpy as np

from pamingest.labeling import Detection, LabelOutput


class LoudnessLabeler:
    """Scores a chunk by its RMS level (dB re full scale, mapped to [0, 1]); two classes.

    Every ``load()`` appends the worker's process id to the file named by
    ``PAMINGEST_TEST_LOADS``, so a test can count model loads per worker.
    ``PAMINGEST_TEST_DELAY`` (seconds per batch) slows it down for kill tests;
    it is read from the environment, not a parameter, since it does not
    change the scores.
    """

    version = "1"

    def __init__(self, variant=None, *, floor_db: float = -90.0):
        self.name = "loudness" + (f":{variant}" if variant else "")
        self.floor_db = float(floor_db)
        self.classes = ("loud", "quiet")
        self.loaded = False

    def params(self):
        return {"floor_db": self.floor_db}

    def load(self):
        path = os.environ.get("PAMINGEST_TEST_LOADS")
        if path:
            with open(path, "a") as f:
                f.write(f"{os.getpid()}\n")
        self.loaded = True

    def __call__(self, audio, n_valid, sample_rate):
        if not self.loaded:
            raise RuntimeError("the model was not loaded")
        delay = float(os.environ.get("PAMINGEST_TEST_DELAY", "0") or 0)
        if delay:
            time.sleep(delay)
        out = np.zeros((len(audio), 2), dtype=np.float32)
        detections = []
        for i, x in enumerate(audio):
            x = x[: int(n_valid[i])]
            rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if len(x) else 0.0
            db = 20 * np.log10(max(rms, 1e-12))
            loud = float(np.clip((db - self.floor_db) / -self.floor_db, 0, 1))
            out[i] = (loud, 1 - loud)
            detections.append(Detection(i, 0.0, len(x) / sample_rate, 0.0, sample_rate / 2, loud, "loud"))
        return LabelOutput(out, detections)


class BrokenLabeler(LoudnessLabeler):
    """Fails on every batch holding an odd row count: failures are recorded, the run goes on."""

    def __init__(self, variant=None, **kw):
        super().__init__(variant, **kw)
        self.name = "broken"

    def __call__(self, audio, n_valid, sample_rate):
        if len(audio) % 2:
            raise ValueError("cannot score an odd batch")
        return super().__call__(audio, n_valid, sample_rate)
