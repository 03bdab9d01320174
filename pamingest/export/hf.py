"""``--format hf``: a Hugging Face dataset folder of clips with their labels.

``data/{split}-{i:05d}-of-{n:05d}.parquet`` shards, one row per clip: an
``audio`` column (``Audio``: FLAC bytes at the stored rate and bit depth,
bit for bit, unless ``--sample-rate``), ``labels`` (present), ``negatives``
(reviewed absent), ``weak_labels`` (machine scores >= ``--min-score``),
one ``label:<name>`` column per label (1 / 0 / -1 as people said: a weak
positive is -1 there and listed in ``weak_labels``), the clip's place (stream, source, site,
UTC start and end, recording and offset, valid fraction), ``scores`` and
``provenance`` as JSON, and its licence. ``datasets.load_dataset(OUT)``
loads it through the card's ``configs``.
"""

from __future__ import annotations

from typing import Any

from .audio import ClipAudio
from .base import ExportContext, Written, audio_value, dumps, iso, shards, write_parquet
from .select import Example

STRING = {"dtype": "string", "_type": "Value"}
STRINGS = {"feature": STRING, "_type": "List"}


def clip_features(label_names: list[str]) -> dict[str, Any]:
    features = {
        "id": STRING, "audio": {"_type": "Audio"}, "stream": STRING, "source": STRING, "site": STRING,
        "deployment": STRING, "utc_start": STRING, "utc_end": STRING, "duration": {"dtype": "float64", "_type": "Value"},
        "sample_rate": {"dtype": "int32", "_type": "Value"}, "bits_per_sample": {"dtype": "int32", "_type": "Value"},
        "channels": {"dtype": "int32", "_type": "Value"}, "file": STRING,
        "file_offset_s": {"dtype": "float64", "_type": "Value"}, "valid": {"dtype": "float64", "_type": "Value"},
        "labels": STRINGS, "negatives": STRINGS, "weak_labels": STRINGS,
    }
    for name in label_names:
        features[f"label:{name}"] = {"dtype": "int8", "_type": "Value"}
    features.update({"scores": STRING, "provenance": STRING, "license": STRING, "snapshot": STRING})
    return features


class HuggingFace:
    name = "hf"
    description = "Hugging Face dataset folder: parquet shards with an Audio column, labels and metadata"

    def write(self, examples: list[Example], ctx: ExportContext) -> Written:
        names = sorted({lab for e in examples for lab in (*e.positives, *e.negatives, *e.weak)})
        features = clip_features(names)
        out = Written(features=features)
        for split in ctx.splits:
            mine = [e for e in examples if e.split == split]
            if not mine:
                continue
            parts = shards(mine, ctx.shard_size)
            for i, part in enumerate(parts):
                rows = (self.row(e, clip, names, ctx) for e, clip in ctx.clips(part))
                out.files.append(write_parquet(ctx, f"data/{split}-{i:05d}-of-{len(parts):05d}.parquet", rows,
                                               features))
            out.rows[split] = len(mine)
            out.data_files[split] = f"data/{split}-*"
        return out

    @staticmethod
    def row(e: Example, clip: ClipAudio, names: list[str], ctx: ExportContext) -> dict[str, Any]:
        c = e.clip
        scores = {k[len("score:"):]: round(float(v), 6) for k, v in c.items()
                  if k.startswith("score:") and v == v}
        row = {
            "id": e.id, "audio": audio_value(e, clip), "stream": e.stream, "source": c["source"], "site": c["site"],
            "deployment": str(c.get("deployment", "")), "utc_start": iso(e.start_ns), "utc_end": iso(e.end_ns),
            "duration": (e.end_ns - e.start_ns) / 1e9,
            "sample_rate": clip.sample_rate, "bits_per_sample": int(c["bits_per_sample"]),
            "channels": int(c["channels"]), "file": str(c["file"]), "file_offset_s": float(c["file_offset_s"]),
            "valid": float(c["valid"]), "labels": list(e.positives), "negatives": list(e.negatives),
            "weak_labels": sorted(e.weak),
        }
        for name in names:
            row[f"label:{name}"] = 1 if name in e.positives else 0 if name in e.negatives else -1
        row.update({"scores": dumps(scores), "provenance": dumps(c["provenance"]),
                    "license": ctx.license_of(c["source"]), "snapshot": ctx.snapshot})
        return row
