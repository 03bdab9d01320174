"""The labeller protocol, its output records, and the registry of labellers.

A labeller scores chunks (store rows) per class. It is built from a spec
string such as ``energy:killer-whale`` (``NAME[:VARIANT]``) plus keyword
parameters; settings live in ``__init__``, the model is loaded by
``load()`` (once per worker process, see ``run.py``) and the work is done in
``__call__`` on a batch of rows of one stream, at the stream's own sample
rate. A labeller whose model needs another rate resamples inside itself.

Shipped labellers: ``energy`` (band-limited energy detector, presets as
variants) and ``birdnet`` (optional extra ``pamingest[birdnet]``). Other
packages add labellers through the ``pamingest.labelers`` entry point group
(name -> class or factory taking ``variant`` and keyword parameters).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..errors import ConfigError, LabelerNotFoundError, LabelingError, PluginError
from ..resample import full_scale  # noqa: F401 - part of the labeller API (labellers scale by it)

ENTRY_POINT_GROUP = "pamingest.labelers"


@dataclass(frozen=True)
class Detection:
    """One event box found by a labeller inside a chunk.

    Parameters
    ----------
    chunk : int
        Index of the chunk in the batch given to the labeller (0-based).
    start, end : float
        Seconds from the chunk's first sample.
    low_hz, high_hz : float
        Frequency bounds (NaN when the labeller does not give them).
    score : float
        The labeller's score for this event.
    label : str
        Class name (one of the labeller's ``classes``).
    """

    chunk: int
    start: float
    end: float
    low_hz: float = float("nan")
    high_hz: float = float("nan")
    score: float = float("nan")
    label: str = ""


@dataclass
class LabelOutput:
    """What a labeller returns for a batch of chunks.

    Attributes
    ----------
    scores : numpy.ndarray
        ``(n_chunks, n_classes)`` float32, one score per chunk and class, in
        the order of the labeller's ``classes``. NaN: the chunk could not be
        assessed for that class (e.g. the target band lies above Nyquist).
    detections : list of Detection
        Event boxes, optional.
    """

    scores: np.ndarray
    detections: list[Detection] = field(default_factory=list)


@dataclass(frozen=True)
class ChunkContext:
    """Where and when a batch's chunks were recorded: given to labellers that ask for it.

    A labeller with a true ``uses_context`` attribute is called as
    ``labeler(audio, n_valid, sample_rate, context=ChunkContext(...))``
    (BirdNET: its species filter wants the place and the week); others are
    called without it.

    Attributes
    ----------
    stream : str
        The stream's path in the store.
    starts : numpy.ndarray
        int64 ns since the epoch (UTC) of each chunk's first sample.
    attrs : dict
        The stream's attributes: ``sample_rate``, ``site``, and ``latitude``
        / ``longitude`` where deployment metadata gave them.
    """

    stream: str
    starts: np.ndarray
    attrs: dict = field(default_factory=dict)


@runtime_checkable
class Labeler(Protocol):
    """A model that scores chunks of audio per class.

    Attributes
    ----------
    name : str
        Stable name including the variant (``energy:killer-whale``).
    version : str
        Bumped whenever the scores for the same audio and parameters change;
        the store scores each chunk exactly once per name and version.
    classes : tuple of str
        Class names (normalised labels, like annotation ``label_norm``).
    uses_context : bool, optional
        True: ``__call__`` also takes ``context=ChunkContext`` (where and when).
    """

    name: str
    version: str
    classes: tuple[str, ...]

    def params(self) -> dict[str, Any]:
        """JSON-friendly settings, stored with the scores."""
        ...

    def load(self) -> None:
        """Load the model (heavy work, once per process); idempotent."""
        ...

    def __call__(self, audio: np.ndarray, n_valid: np.ndarray, sample_rate: int) -> LabelOutput:
        """Score a batch.

        Parameters
        ----------
        audio : numpy.ndarray
            ``(n_chunks, row_samples, channels)`` float32 in [-1, 1) at the
            stream's own rate; samples past ``n_valid`` are zero padding.
        n_valid : numpy.ndarray
            Valid samples of each chunk.
        sample_rate : int
            The stream's sample rate.
        """
        ...


def mono(audio: np.ndarray) -> np.ndarray:
    """``(n, samples, channels)`` -> ``(n, samples)``: the mean of the channels.

    Energy adds incoherently across hydrophones of an array, so the mean keeps
    a call heard on any channel while it averages uncorrelated noise down.
    """
    return audio.mean(axis=2) if audio.shape[2] > 1 else audio[:, :, 0]


# ---------------------------------------------------------------- registry

def registered() -> list[str]:
    """Names of the labellers registered under the ``pamingest.labelers`` entry point group."""
    from ..registry import registry

    return registry("labelers").names()


@dataclass(frozen=True)
class LabelerSpec:
    """A labeller named by ``NAME[:VARIANT]`` plus parameters: small, picklable, hashable.

    Workers rebuild the labeller from its spec (and cache it per process),
    so that the model itself never travels through the scheduler.
    """

    spec: str
    params_json: str = "{}"
    tag: str = ""

    @classmethod
    def parse(cls, spec: "str | LabelerSpec", params: dict[str, Any] | None = None,
              tag: str = "") -> "LabelerSpec":
        """``NAME[:VARIANT]`` + parameters (+ a tag naming a variant with other parameters)."""
        if tag and not re.fullmatch(r"[A-Za-z0-9_.\-]+", tag):
            raise ConfigError(f"tag {tag!r}: use letters, digits, '.', '_' or '-'")
        if isinstance(spec, LabelerSpec):
            if params or tag:
                merged = {**spec.params, **(params or {})}
                return cls(spec.spec, json.dumps(merged, sort_keys=True), tag or spec.tag)
            return spec
        if not isinstance(spec, str) or not re.fullmatch(r"[A-Za-z0-9_.\-]+(:[A-Za-z0-9_.\-+]+)?", spec.strip()):
            raise ConfigError(f"labeler {spec!r}: expected NAME or NAME:VARIANT (e.g. energy:killer-whale)")
        try:
            text = json.dumps(params or {}, sort_keys=True)
        except TypeError as exc:
            raise ConfigError(f"labeler {spec}: parameters must be JSON values ({exc})") from None
        return cls(spec.strip(), text, tag)

    @property
    def name(self) -> str:
        return self.spec.split(":", 1)[0]

    @property
    def variant(self) -> str | None:
        return self.spec.split(":", 1)[1] if ":" in self.spec else None

    @property
    def params(self) -> dict[str, Any]:
        return json.loads(self.params_json)

    def build(self) -> Labeler:
        """Construct the labeller (without loading its model)."""
        from ..registry import registry

        labelers = registry("labelers")
        if self.name not in labelers:
            raise LabelerNotFoundError(
                f"unknown labeler {self.name!r}: known {', '.join(labelers.names())} "
                f"(more through the {ENTRY_POINT_GROUP!r} entry point group)")
        try:
            factory = labelers.get(self.name)
        except PluginError as exc:  # a plug-in that fails to import is a configuration problem
            raise LabelingError(str(exc)) from exc
        try:
            labeler = factory(self.variant, **self.params)
        except LabelingError:
            raise
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"labeler {self.spec}: {exc}") from None
        for attr in ("name", "version", "classes"):
            if not getattr(labeler, attr, None):
                raise LabelingError(f"labeler {self.spec}: the object built has no {attr!r}")
        if self.tag:
            # A tagged variant is another labeller for the queue: its own scores, its own rows done.
            labeler.name = f"{labeler.name}+{self.tag}"
        return labeler


def get_labeler(spec: str | LabelerSpec, **params: Any) -> Labeler:
    """A labeller from ``NAME[:VARIANT]`` and parameters (not loaded yet).

    Examples
    --------
    >>> get_labeler("energy:killer-whale").classes
    ('killer_whale',)
    """
    return LabelerSpec.parse(spec, params).build()


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", str(text)).strip("_").lower() or "x"


def labeler_key(name: str, version: str) -> str:
    """The suffix of a labeller's arrays in a stream group: ``energy_killer_whale_v1``."""
    return f"{slug(name)}_v{slug(version)}"


__all__ = ["ChunkContext", "Detection", "ENTRY_POINT_GROUP", "LabelOutput", "Labeler", "LabelerSpec", "full_scale", "get_labeler",
           "labeler_key", "mono", "registered", "slug"]
