"""Which clips an export holds, in which split, and what is known about each.

From the clip table (``pamingest.clips``) of one pinned snapshot:

- **Known labels only.** A clip's label is positive (1) or a reviewed
  negative (0) as people said (annotations, review answers); unknown (-1)
  is never taken for absent. A labeller's score at or above ``min_score``
  makes a *weak* positive for a class people did not label on that clip;
  a lower score makes nothing (not a negative). Clips with no known and no
  weak label are not exported.
- **Splits by group** (``split_by``: ``site``, ``deployment``, ``day``,
  ``stream``): every clip of a group lands in one split. Groups are ordered
  by a hash of the seed and the group's name and cut at the split
  fractions (each split with a non-zero fraction gets a group when there
  are enough groups), so the same store, seed and fractions give the same
  splits.
- **Balance**: at most ``max_per_label`` clips per positive label (per
  split), kept in a seeded order; clips whose every label is negative count
  under ``None``. ``taxa`` (label -> taxon fields) groups the counts of the
  balance report in the card.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Iterable

import numpy as np
import pandas as pd

from ..clips import LABEL_PREFIX, SCORE_PREFIX
from ..errors import ConfigError

SPLIT_BY = ("site", "deployment", "day", "stream")
DEFAULT_SPLITS = (("train", 0.8), ("validation", 0.1), ("test", 0.1))
NONE_LABEL = "None"


@dataclass(frozen=True)
class Example:
    """One exported clip: where it is, its split, and what is known about it."""

    id: str
    split: str
    stream: str
    start_ns: int
    end_ns: int
    clip: dict[str, Any]  # the clip table's line (start/end as ns), provenance decoded
    positives: tuple[str, ...]  # people said present
    negatives: tuple[str, ...]  # people reviewed, absent
    weak: dict[str, float] = field(default_factory=dict)  # class -> score >= min_score, no human label

    @property
    def known(self) -> tuple[str, ...]:
        """Labels whose presence is known for this clip (sorted): people's, then weak ones."""
        return tuple(sorted(set(self.positives) | set(self.negatives) | set(self.weak)))

    @property
    def present(self) -> tuple[str, ...]:
        return tuple(sorted(set(self.positives) | set(self.weak)))


def parse_splits(text: str | Iterable | None) -> tuple[tuple[str, float], ...]:
    """``"train=0.8,validation=0.1,test=0.1"`` (or pairs) -> normalised (name, fraction) pairs."""
    if text is None:
        return DEFAULT_SPLITS
    pairs = []
    items = text.split(",") if isinstance(text, str) else list(text)
    for item in items:
        name, _, value = item.partition("=") if isinstance(item, str) else (item[0], "=", item[1])
        try:
            pairs.append((str(name).strip(), float(value)))
        except ValueError:
            raise ConfigError(f"splits: {item!r} is not NAME=FRACTION") from None
    total = sum(f for _, f in pairs)
    if not pairs or total <= 0 or any(f < 0 for _, f in pairs) or len({n for n, _ in pairs}) != len(pairs):
        raise ConfigError(f"splits: {text!r} must name distinct splits with fractions >= 0 adding up to > 0")
    return tuple((n, f / total) for n, f in pairs)


def group_of(clips: pd.DataFrame, split_by: str) -> pd.Series:
    """Each clip's split group: ``site`` (source/site), ``deployment`` (source/site/deployment where
    the stream names its deployment, else the stream: a recorder's stream is one deployment's),
    ``day`` (UTC date), ``stream``."""
    if split_by == "site":
        return clips["source"].astype(str) + "/" + clips["site"].astype(str)
    if split_by == "stream":
        return clips["stream"].astype(str)
    if split_by == "day":
        return clips["start"].dt.strftime("%Y-%m-%d")
    if split_by == "deployment":
        deployment = clips["deployment"].astype(str) if "deployment" in clips else pd.Series("", index=clips.index)
        named = clips["source"].astype(str) + "/" + clips["site"].astype(str) + "/" + deployment
        return named.where(deployment != "", clips["stream"].astype(str))
    raise ConfigError(f"split_by must be one of {', '.join(SPLIT_BY)}, not {split_by!r}")


def assign_splits(groups: Iterable[str], splits: tuple[tuple[str, float], ...], seed: int) -> dict[str, str]:
    """Group -> split, deterministic: groups in the order of ``sha256(seed:group)``, cut at the
    cumulative fractions; a split with a non-zero fraction gets at least one group when there are
    as many groups as such splits."""
    names = sorted(set(groups))
    ordered = sorted(names, key=lambda g: hashlib.sha256(f"{seed}:{g}".encode()).hexdigest())
    n = len(ordered)
    wanted = [(s, f) for s, f in splits if f > 0]
    counts = [int(round(f * n)) for _, f in wanted]
    if n >= len(wanted):
        for i, c in enumerate(counts):
            if c == 0:
                counts[i] = 1
                counts[int(np.argmax(counts))] -= 1
    counts[-1] = n - sum(counts[:-1]) if wanted else 0
    out, k = {}, 0
    for (split, _), c in zip(wanted, counts):
        for g in ordered[k : k + max(c, 0)]:
            out[g] = split
        k += max(c, 0)
    for g in ordered[k:]:
        out[g] = wanted[-1][0]
    return out


def examples(clips: pd.DataFrame, *, split_by: str = "site", splits=None, seed: int = 0,
             min_score: float | None = None, max_per_label: int | None = None,
             labels: Iterable[str] | None = None) -> list[Example]:
    """The clips to export, in a stable order (split, stream, start), with their splits."""
    splits = parse_splits(splits)
    label_cols = [c for c in clips.columns if c.startswith(LABEL_PREFIX)]
    score_cols = [c for c in clips.columns if c.startswith(SCORE_PREFIX)]
    only = set(labels) if labels is not None else None
    split_of = assign_splits(group_of(clips, split_by), splits, seed) if len(clips) else {}
    group = group_of(clips, split_by).tolist() if len(clips) else []
    out = []
    values = clips[label_cols].to_numpy() if label_cols else np.zeros((len(clips), 0), np.int8)
    scores = clips[score_cols].to_numpy(dtype=np.float64) if score_cols else np.zeros((len(clips), 0))
    names = [c[len(LABEL_PREFIX):] for c in label_cols]
    classes = [c.rsplit(":", 1)[1] for c in score_cols]
    starts = clips["start"].to_numpy().astype("datetime64[ns]").astype(np.int64)
    ends = clips["end"].to_numpy().astype("datetime64[ns]").astype(np.int64)
    records = clips.to_dict("records")
    for i, record in enumerate(records):
        pos = tuple(n for n, v in zip(names, values[i]) if v == 1 and (only is None or n in only))
        neg = tuple(n for n, v in zip(names, values[i]) if v == 0 and (only is None or n in only))
        weak: dict[str, float] = {}
        if min_score is not None:
            for cls, s in zip(classes, scores[i]):
                if np.isfinite(s) and s >= min_score and cls not in pos and cls not in neg \
                        and (only is None or cls in only):
                    weak[cls] = max(weak.get(cls, -np.inf), float(s))
        if not (pos or neg or weak):
            continue
        record = dict(record)
        record["start"], record["end"] = int(starts[i]), int(ends[i])
        record["provenance"] = json.loads(record.get("provenance") or "{}")
        ex_id = example_id(record["stream"], int(starts[i]), record["file"], int(record["file_offset"]))
        out.append(Example(ex_id, split_of[group[i]], str(record["stream"]), int(starts[i]), int(ends[i]), record,
                           pos, neg, weak))
    out.sort(key=lambda e: ([s for s, _ in splits].index(e.split), e.stream, e.start_ns))
    if max_per_label is not None:
        out = balance(out, max_per_label, seed)
    return out


def example_id(stream: str, start_ns: int, file: str, file_offset: int) -> str:
    """A clip's id in every export: the same clip, the same id. Two recordings that overlap can
    each have a clip starting at the same instant: the recording and offset tell them apart."""
    return hashlib.sha256(f"{stream}@{start_ns}@{file}@{file_offset}".encode()).hexdigest()[:16]


def balance(items: list[Example], max_per_label: int, seed: int) -> list[Example]:
    """At most ``max_per_label`` clips per present label (``None`` for all-negative clips) per split.

    Clips are taken in a seeded order, rarest label first, so a clip holding a
    rare and a common label is kept for the rare one; order in the output is
    kept as given.
    """
    counts: dict[tuple[str, str], int] = {}
    by_label: dict[str, int] = {}
    for e in items:
        for lab in e.present or (NONE_LABEL,):
            by_label[lab] = by_label.get(lab, 0) + 1
    keyed = sorted(items, key=lambda e: (min((by_label[lab] for lab in (e.present or (NONE_LABEL,)))),
                                         hashlib.sha256(f"{seed}:{e.id}".encode()).hexdigest()))
    kept = set()
    for e in keyed:
        present = e.present or (NONE_LABEL,)
        if all(counts.get((e.split, lab), 0) < max_per_label for lab in present):
            kept.add(e.id)
            for lab in present:
                counts[(e.split, lab)] = counts.get((e.split, lab), 0) + 1
    return [e for e in items if e.id in kept]


def builtin_taxa() -> dict[str, dict[str, str]]:
    """The built-in label -> taxon table for the SanctSound and Orcasound labels (``taxa.json``)."""
    data = json.loads(resources.files(__package__).joinpath("taxa.json").read_text())
    return {k: v for k, v in data.items() if not k.startswith("_")}


def read_taxa(path: str | None) -> dict[str, dict[str, str]]:
    """Built-in taxa, with a user's file (JSON object, or CSV with a ``label`` column) over them."""
    taxa = builtin_taxa()
    if path is None:
        return taxa
    from ..fsutil import filesystem

    fs, p = filesystem(path)
    with fs.open(p, "rb") as fh:
        raw = fh.read().decode("utf-8-sig")
    try:
        if path.endswith(".json"):
            user = json.loads(raw)
        else:
            import csv
            import io

            user = {row.pop("label"): row for row in csv.DictReader(io.StringIO(raw))}
    except (ValueError, KeyError) as exc:
        user = exc
    if not isinstance(user, dict) or not all(isinstance(v, dict) for v in user.values()):
        raise ConfigError(f"{path}: not a taxa table (a JSON object label -> fields, or a CSV with a label "
                          f"column){': ' + str(user) if isinstance(user, Exception) else ''}")
    taxa.update({str(k): {str(a): str(b) for a, b in v.items()} for k, v in user.items()})
    return taxa


def taxon_group(label: str, taxa: dict[str, dict[str, str]]) -> str:
    """The group a label counts under in the balance report: its ``group``, else its ``order`` or
    ``class``, else ``unmapped``."""
    entry = taxa.get(label) or {}
    return entry.get("group") or entry.get("order") or entry.get("class") or "unmapped"


def balance_report(before: list[Example], after: list[Example], taxa: dict[str, dict[str, str]]) -> dict:
    """Clips per taxon group (a clip counts once per group of its present labels), before and after."""
    def count(items):
        out: dict[str, int] = {}
        for e in items:
            for g in sorted({taxon_group(lab, taxa) for lab in e.present} or {NONE_LABEL}):
                out[g] = out.get(g, 0) + 1
        return dict(sorted(out.items()))
    return {"before": count(before), "after": count(after)}
