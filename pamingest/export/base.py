"""The exporter protocol, what every exporter is handed, and the writing helpers they share.

An exporter (one module per format, registered under the
``pamingest.exporters`` entry point group) turns the selected examples of
one pinned snapshot into files under ``out``. It gets an
:class:`ExportContext`: the opened store, the snapshot id, the arguments,
and ``audio(example)``, the clip's audio as file bytes. It returns the
files it wrote (relative paths) and, for the dataset card, the counts it
wants to report. Nothing an exporter writes depends on time, host or
order of execution: the same snapshot and arguments give the same bytes.
"""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Protocol, runtime_checkable

import pandas as pd

from ..timing import NS_PER_S
from .audio import ClipAudio
from .select import Example

# Licences of the public archives, as their publishers state them; a source not listed is
# "unknown" unless --license gives it. Check the terms before redistributing an export.
LICENSES = {
    "orcasound": "CC-BY-NC-SA-4.0",
    "sanctsound": "CC0-1.0 (NOAA/US Navy public data)",
    "ncei": "CC0-1.0 (NOAA NCEI public data)",
    "pacific-sound": "CC-BY-4.0 (MBARI Pacific Sound)",
}
UNKNOWN_LICENSE = "unknown"


@dataclass
class ExportContext:
    out: str  # local folder or fsspec URL
    fs: Any
    root: str  # ``out`` on ``fs``
    tree: Any  # the store opened at the snapshot
    snapshot: str
    store: str
    command: str
    seed: int
    sample_rate: int | None
    shard_size: int
    splits: tuple[str, ...]
    licenses: dict[str, str]
    read_clips: Callable[[list[Example]], list[ClipAudio]]  # a batch of clips' audio, in order
    events: Callable[[str], Any]  # stream -> tasks.StreamEvents
    options: dict[str, Any] = field(default_factory=dict)

    def clips(self, examples: Iterable[Example]) -> Iterator[tuple[Example, ClipAudio]]:
        """Each example with its clip's audio, in order, read ``ROW_GROUP`` clips at a time."""
        batch: list[Example] = []
        for e in examples:
            batch.append(e)
            if len(batch) == ROW_GROUP:
                yield from zip(batch, self.read_clips(batch))
                batch = []
        if batch:
            yield from zip(batch, self.read_clips(batch))

    def license_of(self, source: str) -> str:
        return self.licenses.get(source) or LICENSES.get(source) or UNKNOWN_LICENSE

    def write_bytes(self, relative: str, data: bytes) -> str:
        path = f"{self.root}/{relative}"
        parent = path.rsplit("/", 1)[0]
        self.fs.makedirs(parent, exist_ok=True)
        with self.fs.open(path, "wb") as fh:
            fh.write(data)
        return relative


@dataclass
class Written:
    """What an exporter wrote: files (relative to ``out``), rows per split, and card sections."""

    files: list[str] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)
    features: dict[str, Any] | None = None  # Hugging Face features of its parquet rows, if any
    data_files: dict[str, str] = field(default_factory=dict)  # split -> glob, for the card's configs
    notes: list[str] = field(default_factory=list)


@runtime_checkable
class Exporter(Protocol):
    name: str
    description: str

    def write(self, examples: list[Example], ctx: ExportContext) -> Written: ...


# ---------------------------------------------------------------- shared pieces

def iso(ns: int) -> str:
    """UTC time to the nanosecond: ``2019-09-04T06:42:03.000000000Z``."""
    return pd.Timestamp(int(ns)).strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(ns) % NS_PER_S:09d}Z"


def metadata(example: Example, clip: ClipAudio, ctx: ExportContext) -> dict[str, Any]:
    """The facts every row carries (the ``metadata`` JSON of instruction rows)."""
    c = example.clip
    return {
        "id": example.id, "stream": example.stream, "source": c["source"], "site": c["site"],
        "deployment": str(c.get("deployment", "")),
        "utc_start": iso(example.start_ns), "utc_end": iso(example.end_ns),
        "duration": (example.end_ns - example.start_ns) / NS_PER_S, "sample_rate": clip.sample_rate,
        "stored_sample_rate": int(c["sample_rate"]), "bits_per_sample": int(c["bits_per_sample"]),
        "channels": int(c["channels"]), "valid": float(c["valid"]), "file": c["file"],
        "file_offset_s": float(c["file_offset_s"]), "labels": list(example.positives),
        "negatives": list(example.negatives), "weak": bool(example.weak),
        "score": {k: round(v, 6) for k, v in sorted(example.weak.items())},
        "provenance": c["provenance"], "snapshot": ctx.snapshot, "split": example.split,
    }


def dumps(value: Any) -> str:
    """JSON as every export writes it: sorted keys, no spaces to vary."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def audio_value(example: Example, clip: ClipAudio) -> dict[str, Any]:
    """An ``Audio`` cell: the file bytes and a file name (what ``datasets`` stores)."""
    return {"bytes": clip.data, "path": f"{example.id}.{clip.extension}"}


def shards(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)] or [[]]


def feature_to_arrow(feature: dict[str, Any]):
    """The pyarrow type of a Hugging Face feature dict (the few kinds exports use)."""
    import pyarrow as pa

    kind = feature["_type"]
    if kind == "Audio":
        return pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    if kind == "Value":
        return {"string": pa.string(), "int8": pa.int8(), "int64": pa.int64(), "float32": pa.float32(),
                "float64": pa.float64(), "bool": pa.bool_(), "int32": pa.int32()}[feature["dtype"]]
    if kind == "List":
        return pa.list_(feature_to_arrow(feature["feature"]))
    if kind == "Struct":  # exports' own marker for a dict of features (datasets writes a plain dict)
        return pa.struct([(k, feature_to_arrow(v)) for k, v in feature["fields"].items()])
    raise ValueError(f"no arrow type for feature {feature!r}")


def _hf_feature(feature: dict[str, Any]) -> Any:
    """A feature as ``datasets`` writes it to JSON (a struct is a plain dict of its fields)."""
    if feature["_type"] == "Struct":
        return {k: _hf_feature(v) for k, v in feature["fields"].items()}
    if feature["_type"] == "List":
        return {"feature": _hf_feature(feature["feature"]), "_type": "List"}
    return feature


# Rows per parquet row group (and clips read at a time): what a writer holds is one group's
# audio, ~64 x 1 MB for 10 s clips at 48 kHz, whatever the shard's or the store's size.
ROW_GROUP = 64


def write_parquet(ctx: ExportContext, relative: str, rows: Iterable[dict[str, Any]], features: dict[str, Any]) -> str:
    """Rows as one parquet file whose schema carries the Hugging Face features, as ``datasets`` writes
    them (so ``load_dataset`` decodes the ``Audio`` columns), written ``ROW_GROUP`` rows at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    hf = json.dumps({"info": {"features": {k: _hf_feature(v) for k, v in features.items()}}})
    schema = pa.schema([(name, feature_to_arrow(f)) for name, f in features.items()], metadata={"huggingface": hf})
    # Audio bytes are FLAC already: compressing them again, or hashing them for a dictionary, costs
    # CPU and saves nothing.
    audio = _audio_leaves(features)
    compression = {leaf: "NONE" if leaf in audio else "ZSTD" for leaf in _leaves(schema)}
    dictionary = [leaf for leaf in _leaves(schema) if leaf not in audio]
    path = f"{ctx.root}/{relative}"
    ctx.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    with ctx.fs.open(path, "wb") as fh, pq.ParquetWriter(fh, schema, compression=compression, write_statistics=False,
                                                          use_dictionary=dictionary, store_schema=False) as writer:
        # No statistics: nothing in the files but the rows and their schema (reproducible bytes).
        group: list[dict[str, Any]] = []
        for row in rows:
            group.append(row)
            if len(group) == ROW_GROUP:
                writer.write_table(pa.Table.from_pylist(group, schema=schema))
                group = []
        if group:
            writer.write_table(pa.Table.from_pylist(group, schema=schema))
    return relative


def _leaves(schema) -> list[str]:
    """Parquet column paths of an arrow schema's leaves (``audio.bytes``, ``a.list.element.b``)."""
    import pyarrow as pa

    def walk(name: str, kind) -> list[str]:
        if pa.types.is_struct(kind):
            return [p for f in kind for p in walk(f"{name}.{f.name}", f.type)]
        if pa.types.is_list(kind):
            return walk(f"{name}.list.element", kind.value_type)
        return [name]
    return [p for f in schema for p in walk(f.name, f.type)]


def _audio_leaves(features: dict[str, Any]) -> set[str]:
    out = set()
    for name, f in features.items():
        if f["_type"] == "Audio":
            out.add(f"{name}.bytes")
        elif f["_type"] == "List" and f["feature"]["_type"] == "Audio":
            out.add(f"{name}.list.element.bytes")
    return out


def write_tar(ctx: ExportContext, relative: str, members: Iterable[tuple[str, bytes]]) -> str:
    """A tar of ``(name, bytes)`` in the given order, with fixed owner and times (reproducible),
    streamed member by member."""
    path = f"{ctx.root}/{relative}"
    ctx.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    with ctx.fs.open(path, "wb") as fh, tarfile.open(fileobj=fh, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode, info.uid, info.gid = len(data), 0, 0o644, 0, 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    return relative


def label_counts(examples: list[Example]) -> dict[str, dict[str, dict[str, int]]]:
    """split -> label -> {"positive", "negative", "weak"} counts."""
    out: dict[str, dict[str, dict[str, int]]] = {}
    for e in examples:
        per = out.setdefault(e.split, {})
        for kind, labels in (("positive", e.positives), ("negative", e.negatives), ("weak", tuple(e.weak))):
            for lab in labels:
                slot = per.setdefault(lab, {"positive": 0, "negative": 0, "weak": 0})
                slot[kind] += 1
    return {s: dict(sorted(v.items())) for s, v in sorted(out.items())}
