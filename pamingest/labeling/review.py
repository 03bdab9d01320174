"""Active learning: pick scored, unannotated chunks for people to review, as Raven tables + FLAC clips.

``review(store, "energy:killer-whale", n=50, strategy="uncertainty", out=DIR)``
writes, per stream, ``DIR/<stream>.selections.txt`` (a Raven selection table,
one selection per chunk) and the chunks as ``DIR/<stream>/<nnnn>_<UTC>.flac``
(in the stored bit depth, at the stream's rate), plus ``DIR/review.json``.

Strategies: ``uncertainty`` (score closest to 0.5, the labeller's own
threshold: where one answer teaches the most), ``top`` (highest score: to
confirm detections) and ``random`` (seeded: an unbiased sample for measuring
precision).

The table is read back by the Raven reader (``pamingest annotate STORE
DIR/*.selections.txt --format raven``). Each selection names the chunk's
original recording (``Begin File``, ``File Offset (s)``), so it is placed
through the store's files table, and its review clip (``Review Clip``). The
reviewer replaces ``?`` in ``Annotation`` with what they heard (a class,
several separated by ``;``, or ``none``) and may add selections of their own
inside a clip. A clip row answered that way becomes reviewed effort over the
chunk (for the classes in ``Reviewed For``; empty: every label) plus an event
per label heard; a row still ``?`` is left out. Effort takes the chunk out
of every labeller's queue and out of later review batches.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd
import zarr

from ..annotations.base import file_name
from ..errors import ConfigError, LabelingError
from ..progress import progress_bar
from ..store import layout
from ..store.repo import Store, StoreLocation
from ..timing import NAT, NS_PER_S
from .base import LabelerSpec, labeler_key, slug
from .queue import SCORED, annotated_rows, labelers_in, row_status, score_name

STRATEGIES = ("uncertainty", "top", "random")
UNANSWERED = "?"
# Review tables list the classes asked about only when there are few; a wide
# model (BirdNET: 6522) asks for every label.
MAX_LISTED_CLASSES = 20
COLUMNS = ["Selection", "View", "Channel", "Begin Time (s)", "End Time (s)", "Low Freq (Hz)", "High Freq (Hz)",
           "Begin File", "File Offset (s)", "Review Clip", "Reviewed For", "Labeler", "Score", "Annotation"]


@dataclass
class ReviewBatch:
    """What ``review`` wrote: the tables, the clips, the chosen chunks."""

    out: str
    labeler: str
    key: str
    strategy: str
    tables: list[str] = field(default_factory=list)
    clips: list[str] = field(default_factory=list)
    chunks: list[tuple[str, int]] = field(default_factory=list)
    pool: int = 0
    snapshot_id: str | None = None

    def summary(self) -> str:
        return "\n".join([f"review     {len(self.chunks)} chunks of {self.pool} scored and not annotated "
                          f"({self.labeler}, strategy {self.strategy})"]
                         + [f"table      {t}" for t in self.tables]
                         + [f"clips      {len(self.clips)} files under {self.out}"])

    def as_dict(self) -> dict[str, Any]:
        return {"out": self.out, "labeler": self.labeler, "key": self.key, "strategy": self.strategy,
                "tables": self.tables, "clips": self.clips, "chunks": [list(c) for c in self.chunks],
                "pool": self.pool, "snapshot_id": self.snapshot_id}


def resolve_key(root: zarr.Group, labeler: str | LabelerSpec, tag: str = "", version: str | None = None) -> str:
    """The stored key of a labeller named ``NAME[:VARIANT]`` (+tag): the installed version if it
    can be built, else the only version the store holds."""
    spec = LabelerSpec.parse(labeler, None, tag)
    name = spec.spec + (f"+{spec.tag}" if spec.tag else "")
    stored: dict[str, str] = {}
    for _, group in layout.iter_streams(root):
        for key, meta in labelers_in(group).items():
            if meta.get("name") == name:
                stored[key] = str(meta.get("version"))
    if version is not None:
        key = labeler_key(name, version)
        if key not in stored:
            raise LabelingError(f"no scores of {name} v{version} in the store "
                                f"(it has {', '.join(sorted(stored.values())) or 'none'})")
        return key
    if not stored:
        raise LabelingError(f"no scores of {name} in the store: run `pamingest pseudolabel` first")
    if len(stored) == 1:
        return next(iter(stored))
    try:
        installed = spec.build()
        key = labeler_key(installed.name, installed.version)
        if key in stored:
            return key
    except LabelingError:
        pass
    raise LabelingError(f"the store holds scores of {name} versions {', '.join(sorted(stored.values()))}: "
                        "name one (--version)")


def _priority(scores: np.ndarray, strategy: str, rng: np.random.Generator) -> np.ndarray:
    """Lower is reviewed first."""
    with np.errstate(invalid="ignore"):
        if strategy == "top":
            best = np.nanmax(np.where(np.isnan(scores), -np.inf, scores), axis=1)
            return -best
        if strategy == "uncertainty":
            return np.nanmin(np.where(np.isnan(scores), np.inf, np.abs(scores - 0.5)), axis=1)
    return rng.random(len(scores))


def review(
    store: str | StoreLocation,
    labeler: str | LabelerSpec,
    out: str | os.PathLike,
    *,
    n: int = 50,
    strategy: str = "uncertainty",
    label: str | None = None,
    tag: str = "",
    version: str | None = None,
    streams: Iterable[str] | None = None,
    seed: int = 0,
    store_options: dict | None = None,
    progress: bool = False,
) -> ReviewBatch:
    """Write a review batch: the ``n`` most useful scored, unannotated chunks as Raven tables + FLAC.

    Parameters
    ----------
    store : str or StoreLocation
        Store URL.
    labeler : str
        The labeller whose scores rank the chunks (``NAME[:VARIANT]``).
    out : path
        Folder for the tables and clips (created; existing files are replaced).
    n : int
        Chunks in the batch.
    strategy : {"uncertainty", "top", "random"}
        How chunks are ranked (module docstring).
    label : str, optional
        Rank by this class's score only (default: every class).
    version : str, optional
        The labeller version whose scores to use (default: the installed one,
        or the only one stored).
    seed : int
        Seed of ``random``.
    progress : bool
        Show a progress bar (clips written) on stderr.

    Returns
    -------
    ReviewBatch
    """
    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown strategy {strategy!r}: use {', '.join(STRATEGIES)}")
    if n < 1:
        raise ConfigError(f"n must be >= 1, got {n}")
    st = Store.open(store, store_options)
    snapshot = st.tip()
    root = st.root(snapshot)
    key = resolve_key(root, labeler, tag, version)
    prefixes = [p.strip("/") for p in streams] if streams else None
    candidates = []
    for path, group in layout.iter_streams(root):
        if prefixes and not any(not p or path == p or path.startswith(p + "/") for p in prefixes):
            continue
        meta = labelers_in(group).get(key)
        if meta is None or score_name(key) not in group:
            continue
        live = np.asarray(group["n_valid"][:]) > 0
        pool = np.flatnonzero(live & (row_status(group, key) == SCORED) & ~annotated_rows(group))
        if not len(pool):
            continue
        scores = np.asarray(group[score_name(key)].get_orthogonal_selection((pool, slice(None))), dtype=np.float64)
        classes = list(meta.get("classes", []))
        if label is not None:
            if label not in classes:
                raise ConfigError(f"{meta.get('name')} has no class {label!r} (classes: {', '.join(classes[:10])}"
                                  f"{'...' if len(classes) > 10 else ''})")
            scores = scores[:, [classes.index(label)]]
        candidates.append((path, pool, scores, meta))
    rng = np.random.default_rng(seed)
    table = []
    for path, pool, scores, meta in candidates:
        for row, s, p in zip(pool, scores, _priority(scores, strategy, rng)):
            best = np.nanmax(s) if np.isfinite(s).any() else math.nan
            table.append((float(p), path, int(row), float(best)))
    batch = ReviewBatch(str(out), "", key, strategy, pool=len(table), snapshot_id=snapshot)
    if not table:
        raise LabelingError(f"nothing to review for {key}: no scored chunk is left without annotation effort")
    table.sort(key=lambda t: (t[0], t[1], t[2]))
    chosen = table[:n]
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    by_stream: dict[str, list[tuple[int, float]]] = {}
    for _, path, row, score in chosen:
        by_stream.setdefault(path, []).append((row, score))
    meta_of = {c[0]: c[3] for c in candidates}
    bar = progress_bar(progress, len(chosen), "clips written", "clip")
    for path in sorted(by_stream):
        picked = sorted(by_stream[path], key=lambda rs: rs[0])  # in time order within a table
        tpath, clips = _write_stream(root[path], path, picked, meta_of[path], out_dir, bar)
        batch.tables.append(str(tpath))
        batch.clips += [str(c) for c in clips]
        batch.chunks += [(path, r) for r, _ in picked]
        batch.labeler = str(meta_of[path].get("name"))
    bar.close()
    (out_dir / "review.json").write_text(json.dumps(batch.as_dict(), indent=2) + "\n")
    return batch


def _write_stream(group: zarr.Group, path: str, picked: list[tuple[int, float]], meta: dict,
                  out_dir: Path, bar=None) -> tuple[Path, list[Path]]:
    import soundfile as sf

    rows = np.asarray([r for r, _ in picked], dtype=np.int64)
    sr = int(group.attrs["sample_rate"])
    starts = np.asarray(group["chunk_start"].get_orthogonal_selection((rows,)), dtype=np.int64)
    n_valid = np.asarray(group["n_valid"].get_orthogonal_selection((rows,)), dtype=np.int64)
    fidx = np.asarray(group["file_index"].get_orthogonal_selection((rows,)), dtype=np.int64)
    urls = np.asarray(group["file_url"][:], dtype=object)
    file_start = np.asarray(group["file_start"][:], dtype=np.int64)
    audio = group["audio"]
    bits = int(group.attrs.get("bits_per_sample") or audio.dtype.itemsize * 8)
    classes = list(meta.get("classes", []))
    reviewed_for = ";".join(classes) if len(classes) <= MAX_LISTED_CLASSES else ""
    folder = out_dir / slug(path)
    folder.mkdir(parents=True, exist_ok=True)
    lines, clips, t = [], [], 0.0
    for k, (row, score) in enumerate(picked):
        if fidx[k] < 0 or file_start[fidx[k]] == NAT:
            raise LabelingError(f"{path} row {row}: its recording has no start time in the files table; "
                                "it cannot be placed by a review table")
        data = audio[int(row)][: int(n_valid[k])]
        when = pd.Timestamp(int(starts[k])).strftime("%Y%m%dT%H%M%S.%f")[:-3] + "Z"
        if audio.dtype == np.int16 or (audio.dtype == np.int32 and bits <= 24):
            clip = folder / f"{k + 1:04d}_{when}.flac"
            if audio.dtype == np.int16:
                sf.write(str(clip), data, sr, subtype="PCM_16", format="FLAC")
            else:
                # The store keeps 24-bit samples right-aligned; libsndfile takes them from the top of an int32.
                sf.write(str(clip), data.astype(np.int32) << 8, sr, subtype="PCM_24", format="FLAC")
        else:  # FLAC holds integers up to 24 bits; others go out as WAV, still lossless
            clip = folder / f"{k + 1:04d}_{when}.wav"
            sf.write(str(clip), data, sr, subtype="FLOAT" if audio.dtype.kind == "f" else "PCM_32", format="WAV")
        clips.append(clip)
        if bar is not None:
            bar.update(1)
        seconds = int(n_valid[k]) / sr
        offset = (int(starts[k]) - int(file_start[fidx[k]])) / NS_PER_S
        lines.append([str(k + 1), "Spectrogram 1", "1", f"{t:.9f}", f"{t + seconds:.9f}", "0",
                      f"{sr / 2:g}", file_name(str(urls[fidx[k]])), f"{offset:.9f}",
                      f"{slug(path)}/{clip.name}", reviewed_for, str(meta.get("name")),
                      "" if math.isnan(score) else f"{score:.4f}", UNANSWERED])
        t += seconds
    table = out_dir / f"{slug(path)}.selections.txt"
    with open(table, "w", encoding="utf-8", newline="") as f:
        f.write("\t".join(COLUMNS) + "\n")
        for line in lines:
            f.write("\t".join(line) + "\n")
    return table, clips


__all__ = ["ReviewBatch", "STRATEGIES", "UNANSWERED", "resolve_key", "review"]
