"""Training data out of a store: ``export(store, out, format=...)`` and ``pamingest export``.

Pinned to one snapshot (default: the tip of ``main`` when the export
starts; its id goes into every row and the card), the export

1. cuts every stream into clips (``pamingest.clips``: ``seconds``, ``hop``,
   ``min_valid``; labels by the stored overlap rule),
2. keeps the clips with known labels (and weak ones above ``min_score``),
   assigns splits by group and balances them (``export/select.py``),
3. hands them to the format's exporter (``pamingest.exporters`` entry
   points: ``hf``, ``naturelm``, ``icl``, ``verl``, ``webdataset``), which
   reads each clip's audio from the snapshot (FLAC at the stored rate,
   bit for bit, unless ``sample_rate``),
4. writes the dataset card, ``README.md``.

The same snapshot and arguments give byte-identical files.
"""

from __future__ import annotations

import fnmatch
import shlex
from dataclasses import dataclass, field
from typing import Any, Iterable

from ..errors import ConfigError
from ..registry import registry
from .select import SPLIT_BY, balance, balance_report, examples, parse_splits, read_taxa


@dataclass
class ExportReport:
    out: str
    format: str
    snapshot: str
    clips: int  # clips cut from the snapshot
    exported: int  # clips exported (known labels, after balancing)
    rows: dict[str, int] = field(default_factory=dict)  # rows per split
    files: list[str] = field(default_factory=list)

    def summary(self) -> str:
        rows = ", ".join(f"{s} {n}" for s, n in self.rows.items()) or "none"
        text = (f"exported {self.exported} of {self.clips} clips as {self.format} to {self.out} "
                f"(snapshot {self.snapshot}); rows: {rows}; {len(self.files)} files")
        if self.clips and not self.exported:
            text += ("\nno clip has a known label: attach annotations (pamingest annotate), answer a review "
                     "batch, or take labellers' scores as weak labels with --min-score")
        return text

    def as_dict(self) -> dict[str, Any]:
        return {"out": self.out, "format": self.format, "snapshot": self.snapshot, "clips": self.clips,
                "exported": self.exported, "rows": self.rows, "files": self.files}


def formats() -> list[str]:
    return registry("exporters").names()


def export(store: str, out: str, format: str = "hf", *, snapshot: str | None = None, seconds: float = 10.0,
           hop: float | None = None, min_valid: float = 1.0, sample_rate: int | None = None,
           split_by: str = "site", splits: str | Iterable | None = None, seed: int = 0,
           max_per_label: int | None = None, taxa: str | None = None, min_score: float | None = None,
           labels: Iterable[str] | None = None, streams: Iterable[str] | None = None, shard_size: int = 1000,
           licenses: dict[str, str] | None = None, tasks: Iterable[str] | None = None, shots: int = 2,
           storage_options: dict | None = None, out_storage_options: dict | None = None,
           command: str | None = None) -> ExportReport:
    """Export a store's labelled clips as training data (see the module docstring).

    Parameters
    ----------
    store, out : str
        The store's URL and the output folder (local path or fsspec URL).
    format : str
        ``hf``, ``naturelm``, ``icl``, ``verl``, ``webdataset`` (or a plug-in's).
    snapshot : str, optional
        The snapshot to export; default the tip of ``main`` now.
    seconds, hop, min_valid : float
        Clip length and step (default: no overlap), least recorded fraction.
    sample_rate : int, optional
        Resample the audio to this rate (default: the stored rate, lossless).
    split_by : str
        ``site``, ``deployment``, ``day`` or ``stream``: no group in two splits.
    splits : str
        ``"train=0.8,validation=0.1,test=0.1"`` (default).
    seed : int
        Splits, balancing, phrasings and shots follow it.
    max_per_label : int, optional
        At most this many clips per present label and split.
    taxa : str, optional
        A label -> taxon table (JSON or CSV) over the built-in one.
    min_score : float, optional
        Labeller scores at or above it are weak positives; default: none used.
    labels, streams : optional
        Only these labels, only these streams.
    licenses : dict, optional
        Source name -> licence, over the built-in table.
    tasks : optional
        Instruction tasks for ``naturelm``/``verl`` (default all).
    shots : int
        Shots per ``icl`` row.
    command : str, optional
        What to write as the command in the card (default: the ``pamingest export`` command line
        that makes this export).
    """
    from ..fsutil import filesystem
    from ..query import open_store, streams as all_streams
    from ..store.repo import Store
    from .audio import ClipReader
    from .base import ExportContext, label_counts
    from .card import card
    from .tasks import StreamEvents

    # Given once, read several times (clip table, selection, card).
    labels, streams, tasks = (None if x is None else list(x) for x in (labels, streams, tasks))
    if split_by not in SPLIT_BY:
        raise ConfigError(f"split_by must be one of {', '.join(SPLIT_BY)}, not {split_by!r}")
    if shard_size < 1:
        raise ConfigError(f"shard_size must be >= 1, got {shard_size}")
    exporter = registry("exporters").get(format)()
    taxa_table = read_taxa(taxa)  # a bad table fails before anything is written
    session = Store.open(store, storage_options).session(snapshot)
    snapshot_id = session.snapshot_id
    tree = open_store(store, snapshot=snapshot_id, storage_options=storage_options)
    paths = list(streams) if streams is not None else all_streams(tree)
    unknown = sorted(set(paths) - set(all_streams(tree)))
    if unknown:
        raise ConfigError(f"{store} has no stream {', '.join(unknown)} at snapshot {snapshot_id}")
    from ..clips import clips as clip_table

    table = clip_table(tree, seconds, hop, labels, min_valid, streams=paths)
    pool = examples(table, split_by=split_by, splits=splits, seed=seed, min_score=min_score, labels=labels)
    chosen = balance(pool, max_per_label, seed) if max_per_label is not None else pool  # the card reports both
    datasets = {p: tree[p].to_dataset() for p in paths}
    event_cache: dict[str, StreamEvents] = {}

    def events(stream: str) -> StreamEvents:
        if stream not in event_cache:
            event_cache[stream] = StreamEvents(datasets[stream])
        return event_cache[stream]

    reader = ClipReader(session, datasets, sample_rate)
    fs, root = filesystem(out, out_storage_options)
    fs.makedirs(root, exist_ok=True)
    split_names = tuple(s for s, _ in parse_splits(splits))
    sources = sorted({str(t) for t in table["source"]}) if len(table) else []
    given = dict(licenses or {})
    command = command or _command(store, out, format, snapshot_id, seconds=seconds, hop=hop, min_valid=min_valid,
                                  sample_rate=sample_rate, split_by=split_by, splits=splits, seed=seed,
                                  max_per_label=max_per_label, taxa=taxa, min_score=min_score, labels=labels,
                                  streams=streams, shard_size=shard_size, tasks=tasks, shots=shots)
    options = {"format": format, "seconds": seconds, "hop": hop, "min_valid": min_valid, "sample_rate": sample_rate,
               "split_by": split_by, "splits": dict(parse_splits(splits)), "seed": seed,
               "max_per_label": max_per_label, "taxa": taxa, "min_score": min_score,
               "labels": sorted(labels) if labels is not None else None, "streams": paths,
               "shard_size": shard_size, "tasks": list(tasks) if tasks is not None else None, "shots": shots}
    ctx = ExportContext(out=out, fs=fs, root=root.rstrip("/"), tree=tree, snapshot=snapshot_id, store=store,
                        command=command, seed=seed, sample_rate=sample_rate, shard_size=shard_size,
                        splits=split_names, licenses=given, read_clips=reader.read, events=events,
                        options={"tasks": list(tasks) if tasks is not None else None, "shots": shots})
    try:
        written = exporter.write(chosen, ctx)
    finally:
        reader.close()
    sizes = {split: sum(fs.size(f"{ctx.root}/{f}") for f in written.files
                        if fnmatch.fnmatch(f, written.data_files.get(split, "")))
             for split in written.rows}
    text = card(fmt=format, description=exporter.description, written=written, snapshot=snapshot_id, store=store,
                command=command, licenses={s: ctx.license_of(s) for s in sources}, label_counts=label_counts(chosen),
                balance=balance_report(pool, chosen, taxa_table), options=options, split_bytes=sizes)
    ctx.write_bytes("README.md", text.encode())
    return ExportReport(out, format, snapshot_id, len(table), len(chosen), dict(written.rows),
                        sorted([*written.files, "README.md"]))


def _command(store: str, out: str, format: str, snapshot: str, **options) -> str:
    """The ``pamingest export`` command line that makes this export (given options only). The output
    folder is written as ``OUT``: where a copy was written is no part of what it holds, and two exports
    of the same snapshot with the same options are byte for byte the same wherever they go."""
    words = ["pamingest", "export", store, "OUT", "--format", format, "--snapshot", snapshot]
    defaults = {"seconds": 10.0, "hop": None, "min_valid": 1.0, "sample_rate": None, "split_by": "site",
                "splits": None, "seed": 0, "max_per_label": None, "taxa": None, "min_score": None, "labels": None,
                "streams": None, "shard_size": 1000, "tasks": None, "shots": 2}
    for name, value in options.items():
        if value is None or value == defaults.get(name):
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(value, (list, tuple, set)) and name != "splits":
            for v in sorted(value) if isinstance(value, set) else value:
                words += [flag.rstrip("s") if name != "streams" else "--stream", str(v)]
        else:
            words += [flag, str(value) if not isinstance(value, (list, tuple)) else ",".join(map(str, value))]
    return " ".join(shlex.quote(w) for w in words)


__all__ = ["ExportReport", "export", "formats"]
