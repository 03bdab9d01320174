"""Active learning: pick scored, unannotated chunks for people to review in Raven Pro.

``review(store, "energy:killer-whale", n=50, strategy="uncertainty", out=DIR)``
writes, per stream:

- ``DIR/<stream>/<nnnn>_<UTC>.flac``: the chunks (the stored samples, in the
  stored bit depth, at the stream's rate; WAV beyond 24 bits);
- ``DIR/<stream>.list.txt``: a Raven *list file*, the clips' absolute paths
  one per line in selection order, which Raven opens (File > Open Sound
  Files) as one file sequence;
- ``DIR/<stream>.selections.txt``: the Raven selection table of that
  sequence, one selection per clip;

plus ``DIR/HOW-TO-OPEN.txt`` (the steps in Raven, for the reviewer) and
``DIR/review.json`` (the batch: streams, rows, clips, where each came from).

Why a list file and one table per stream, not one table per clip: Raven
measures a selection's ``Begin Time (s)`` from the start of the sound in the
window, which for a file sequence is the start of its first file, and a
selection table written that way (``Begin Path``, ``File Offset (s)``, times
running on across the files) plus a list file of the same files in the same
order is what Raven's own makers write for many files at once (BirdNET-
Analyzer's combined table and its ``.list.txt``). The reviewer opens two
files per stream and pages through every clip, instead of opening fifty
clips and fifty tables. One sequence per stream because a sequence has one
sample rate. The table is consistent both ways Raven opens it: as a
selection table over the open sequence (``Begin Time`` counts from the
sequence start, clip after clip, in list order, which is also name order)
and as a sound selection table (``Begin Path`` is the clip and ``File Offset
(s)`` is 0: each selection covers its whole clip).

Columns: Raven's (``Selection, View, Channel, Begin Time (s), End Time (s),
Low Freq (Hz), High Freq (Hz), Begin File, Begin Path, File Offset (s)``),
``Annotation`` (``?``: the reviewer's answer goes here), ``Predicted Class``
and ``Predicted Score`` (the labeller's top class for the chunk and its
score: for a multi-class labeller, what it thinks is there), ``Score`` (the
score the chunk was ranked by: its best class, or ``label``'s), ``Reviewed
For``, ``Labeler``, ``Review Clip`` (marks the rows pamingest wrote) and
``Source File`` + ``Source Offset (s)``: the original recording and the
chunk's offset in it, which place the answers when the table is read back.

Strategies: ``uncertainty`` (score closest to 0.5, the labeller's own
threshold: where one answer teaches the most), ``top`` (highest score: to
confirm detections) and ``random`` (seeded: an unbiased sample for measuring
precision).

The table is read back by the Raven reader (``pamingest annotate STORE
DIR/*.selections.txt --format raven``). The reviewer replaces ``?`` in
``Annotation`` with what they heard (a class, several separated by ``;``, or
``none``) and may draw selections of their own on a clip. A clip row
answered that way becomes reviewed effort over the chunk (for the classes in
``Reviewed For``; empty: every label) plus an event per label heard; a row
still ``?`` is left out, counted, and a table with no answer at all is
reported with a warning. Effort takes the chunk out of every labeller's
queue and out of later review batches.
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
from ..timing import NAT, NS_PER_S, offset_ns
from .base import LabelerSpec, labeler_key, slug
from .queue import SCORED, annotated_rows, labelers_in, row_status, score_name

STRATEGIES = ("uncertainty", "top", "random")
UNANSWERED = "?"
# Review tables list the classes asked about only when there are few; a wide
# model (BirdNET: 6522) asks for every label.
MAX_LISTED_CLASSES = 20
COLUMNS = ["Selection", "View", "Channel", "Begin Time (s)", "End Time (s)", "Low Freq (Hz)", "High Freq (Hz)",
           "Begin File", "Begin Path", "File Offset (s)", "Annotation", "Predicted Class", "Predicted Score", "Score",
           "Reviewed For", "Labeler", "Review Clip", "Source File", "Source Offset (s)"]
GUIDE = "HOW-TO-OPEN.txt"


@dataclass
class ReviewBatch:
    """What ``review`` wrote: per stream a table and a list file, the clips, the chosen chunks."""

    out: str
    labeler: str
    key: str
    strategy: str
    tables: list[str] = field(default_factory=list)
    lists: list[str] = field(default_factory=list)
    clips: list[str] = field(default_factory=list)
    chunks: list[tuple[str, int]] = field(default_factory=list)
    pool: int = 0
    snapshot_id: str | None = None
    guide: str = ""

    def summary(self) -> str:
        return "\n".join([f"review     {len(self.chunks)} chunks of {self.pool} scored and not annotated "
                          f"({self.labeler}, strategy {self.strategy})"]
                         + [f"table      {t}\n  sounds   {s}" for t, s in zip(self.tables, self.lists)]
                         + [f"clips      {len(self.clips)} files under {self.out}",
                            f"open       in Raven Pro: see {self.guide}"])

    def as_dict(self) -> dict[str, Any]:
        return {"out": self.out, "labeler": self.labeler, "key": self.key, "strategy": self.strategy,
                "tables": self.tables, "lists": self.lists, "clips": self.clips,
                "chunks": [list(c) for c in self.chunks], "pool": self.pool, "snapshot_id": self.snapshot_id,
                "guide": self.guide}


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
    """Write a review batch: the ``n`` most useful scored, unannotated chunks, ready for Raven Pro.

    Per stream a Raven list file, a selection table over it and the clips;
    ``HOW-TO-OPEN.txt`` says how to open them (module docstring: why this
    layout).

    Parameters
    ----------
    store : str or StoreLocation
        Store URL.
    labeler : str
        The labeller whose scores rank the chunks (``NAME[:VARIANT]``).
    out : path
        Folder for the batch (created). Per stream a list file, a selection
        table and a folder of clips; an earlier batch's files there are
        replaced (its clips too, so that the folder holds this batch's only).
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
    out_dir = Path(out).resolve()  # the list files and Begin Path name the clips by absolute path
    out_dir.mkdir(parents=True, exist_ok=True)
    by_stream: dict[str, list[tuple[int, float]]] = {}
    for _, path, row, score in chosen:
        by_stream.setdefault(path, []).append((row, score))
    meta_of = {c[0]: c[3] for c in candidates}
    bar = progress_bar(progress, len(chosen), "clips written", "clip")
    written = []
    for path in sorted(by_stream):
        picked = sorted(by_stream[path], key=lambda rs: rs[0])  # in time order within a table
        stream = _write_stream(root[path], path, picked, meta_of[path], key, out_dir, bar)
        written.append(stream)
        batch.tables.append(stream["table"])
        batch.lists.append(stream["list"])
        batch.clips += [c["clip"] for c in stream["clips"]]
        batch.chunks += [(path, r) for r, _ in picked]
        batch.labeler = str(meta_of[path].get("name"))
    bar.close()
    guide = out_dir / GUIDE
    guide.write_text(_guide(batch, written, st.url), encoding="utf-8")
    batch.guide = str(guide)
    (out_dir / "review.json").write_text(json.dumps({**batch.as_dict(), "streams": written}, indent=2) + "\n")
    return batch


def _clip_width(n: int) -> int:
    """Digits of the clip numbers: names must sort in selection order (Raven sorts files it is given by name)."""
    return max(4, len(str(n)))


def _stale_clips(folder: Path) -> list[Path]:
    """Clips of an earlier batch written to the same folder: they would join a sequence opened by name."""
    import re

    pattern = re.compile(r"\d{4,}_\d{8}T\d{6}\.\d{3}Z\.(flac|wav)")
    return [p for p in folder.iterdir() if p.is_file() and pattern.fullmatch(p.name)] if folder.is_dir() else []


def _write_stream(group: zarr.Group, path: str, picked: list[tuple[int, float]], meta: dict, key: str,
                  out_dir: Path, bar=None) -> dict[str, Any]:
    """Write one stream's clips, list file and selection table; returns what review.json says of them."""
    import soundfile as sf

    rows = np.asarray([r for r, _ in picked], dtype=np.int64)
    sr = int(group.attrs["sample_rate"])
    starts = np.asarray(group["chunk_start"].get_orthogonal_selection((rows,)), dtype=np.int64)
    n_valid = np.asarray(group["n_valid"].get_orthogonal_selection((rows,)), dtype=np.int64)
    fidx = np.asarray(group["file_index"].get_orthogonal_selection((rows,)), dtype=np.int64)
    foff = np.asarray(group["file_offset"].get_orthogonal_selection((rows,)), dtype=np.int64)
    urls = np.asarray(group["file_url"][:], dtype=object)
    file_start = np.asarray(group["file_start"][:], dtype=np.int64)
    audio = group["audio"]
    bits = int(group.attrs.get("bits_per_sample") or audio.dtype.itemsize * 8)
    classes = list(meta.get("classes", []))
    # The top class over every class, whatever the ranking used: what the labeller thinks is there.
    all_scores = np.asarray(group[score_name(key)].get_orthogonal_selection((rows, slice(None))), dtype=np.float64)
    reviewed_for = ";".join(classes) if len(classes) <= MAX_LISTED_CLASSES else ""
    name = slug(path)
    folder = out_dir / name
    for old in _stale_clips(folder):
        old.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    width = _clip_width(len(picked))
    lines, clips, t = [], [], 0
    for k, (row, score) in enumerate(picked):
        if fidx[k] < 0 or file_start[fidx[k]] == NAT:
            raise LabelingError(f"{path} row {row}: its recording has no start time in the files table; "
                                "it cannot be placed by a review table")
        data = audio[int(row)][: int(n_valid[k])]
        when = pd.Timestamp(int(starts[k])).strftime("%Y%m%dT%H%M%S.%f")[:-3] + "Z"
        if audio.dtype == np.int16 or (audio.dtype == np.int32 and bits <= 24):
            clip = folder / f"{k + 1:0{width}d}_{when}.flac"
            if audio.dtype == np.int16:
                sf.write(str(clip), data, sr, subtype="PCM_16", format="FLAC")
            else:
                # The store keeps 24-bit samples right-aligned; libsndfile takes them from the top of an int32.
                sf.write(str(clip), data.astype(np.int32) << 8, sr, subtype="PCM_24", format="FLAC")
        else:  # FLAC holds integers up to 24 bits; others go out as WAV, still lossless
            clip = folder / f"{k + 1:0{width}d}_{when}.wav"
            sf.write(str(clip), data, sr, subtype="FLOAT" if audio.dtype.kind == "f" else "PCM_32", format="WAV")
        if bar is not None:
            bar.update(1)
        # Times in the sequence are sample counts over the rate, summed in integers: Raven places
        # files end to end by their samples, so the 50th clip starts exactly where the 49 before end.
        begin, end = t / sr, (t + int(n_valid[k])) / sr
        t += int(n_valid[k])
        source = file_name(str(urls[fidx[k]]))
        # The row's place in its recording, counted in samples: in a duty-cycled XWAV, time since the
        # file's start would count the gaps between its pieces too.
        offset = offset_ns(int(foff[k]), sr) / NS_PER_S
        s = all_scores[k]
        top = int(np.nanargmax(s)) if np.isfinite(s).any() else -1
        predicted = classes[top] if 0 <= top < len(classes) else ""
        top_score = float(s[top]) if top >= 0 else math.nan
        lines.append([str(k + 1), "Spectrogram 1", "1", f"{begin:.9f}", f"{end:.9f}", "0", f"{sr / 2:g}",
                      clip.name, str(clip), "0", UNANSWERED, predicted, _score(top_score), _score(score),
                      reviewed_for, str(meta.get("name")), f"{name}/{clip.name}", source, f"{offset:.9f}"])
        clips.append({"selection": k + 1, "clip": str(clip), "row": int(row),
                      "start": pd.Timestamp(int(starts[k]), tz="UTC").isoformat(),
                      "begin_time": begin, "end_time": end, "source_file": str(urls[fidx[k]]),
                      "source_offset": offset, "predicted_class": predicted,
                      "predicted_score": None if math.isnan(top_score) else top_score,
                      "score": None if math.isnan(score) else float(score)})
    listing = out_dir / f"{name}.list.txt"
    listing.write_text("".join(c["clip"] + "\n" for c in clips), encoding="utf-8")
    table = out_dir / f"{name}.selections.txt"
    with open(table, "w", encoding="utf-8", newline="") as f:
        f.write("\t".join(COLUMNS) + "\n")
        for line in lines:
            f.write("\t".join(line) + "\n")
    return {"stream": path, "table": str(table), "list": str(listing), "sample_rate": sr, "clips": clips}


def _score(x: float) -> str:
    return "" if math.isnan(x) else f"{x:.4f}"


def _guide(batch: ReviewBatch, streams: list[dict[str, Any]], store_url: str) -> str:
    """The reviewer's steps in Raven Pro, naming this batch's files."""
    each = "\n".join(f"  stream {s['stream']}: {len(s['clips'])} clips at {s['sample_rate']} Hz\n"
                     f"    sounds  {Path(s['list']).name}\n    table   {Path(s['table']).name}\n"
                     f"    clips   {Path(s['clips'][0]['clip']).parent.name}/" for s in streams)
    first = streams[0]
    sounds, table = Path(first["list"]).name, Path(first["table"]).name
    folder = Path(first["clips"][0]["clip"]).parent.name
    out = Path(first["table"]).parent
    return f"""pamingest review batch: {len(batch.chunks)} chunks scored by {batch.labeler} (strategy {batch.strategy})
Store: {store_url}

HOW TO OPEN IT IN RAVEN PRO
===========================

Per stream, a list of sound files and a selection table:

{each}

The list file names the stream's clips (the stored samples, as FLAC or WAV)
in order; Raven opens them as one sound, a file sequence. The table has one
selection per clip, at that clip's place in the sequence. One sequence per
stream, because a sequence has one sample rate.

For each stream (the first one's names here):

1. File > Open Sound Files...  Choose {sounds} and open it.
   Raven reads the list and opens the clips, in the listed order, as one
   file sequence (a paged window is fine: page through it clip by clip).
2. File > Open Selection Table...  Choose {table}.
   Selection 1 lies on the first clip, selection 2 on the second, and so
   on: Begin Time (s) counts from the start of the sequence; Begin File and
   File Offset (s) name the clip and the time in it.
3. For each selection, listen and look, then replace the "?" in the
   Annotation column with what you heard: a class (as in Predicted Class or
   Reviewed For), several separated by ";", or "none" for none of them.
   Predicted Class and Predicted Score: the labeller's top class for the
   clip and its score. Score: the score the clip was picked by.
4. You may draw selections of your own on a clip (a call you heard), with
   the class in Annotation: they become events at that time.
5. File > Save Selection Table (or Save As... under the same name): a
   tab-separated text table, as Raven saves them.
6. Back on the command line:
     pamingest annotate {store_url} {out / table} --format raven
   or all the streams at once:
     pamingest annotate {store_url} {out}/*.selections.txt --format raven

A selection left "?" is not taken (neither a label nor reviewed time): its
chunk stays in the queue. annotate counts the answered and unanswered
selections of each table, and warns about a table with no answer at all.

IF THE LIST DOES NOT OPEN (the folder was moved, or on another computer):
the list file holds absolute paths. Instead of step 1, choose File > Open
Sound Files..., select all the clips in the folder {folder}/ and open them
together as one file sequence (not in separate windows). Their names begin
with their number (0001_, 0002_, ...), so their name order is the list's
order and the table lines up the same way. Then go on with step 2.

Raven can also open the table as a "sound selection table" (it has Begin
Path and File Offset (s)): each selection is then placed on the clip its
Begin Path names.

What pamingest reads back: Annotation, and the clip each selection lies on
(Review Clip, else Begin File + File Offset (s), else Begin Time in the
sequence). Source File and Source Offset (s) are the original recording and
the clip's place in it: leave them as they are. review.json lists the same.
"""


__all__ = ["GUIDE", "ReviewBatch", "STRATEGIES", "UNANSWERED", "resolve_key", "review"]
