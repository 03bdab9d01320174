"""``--format icl``: in-context (few-shot) rows: k labelled shots, then the query.

For a query clip and one label people labelled on it (present or reviewed
absent), ``--shots`` k clips of the same split with that label known are
drawn: half present, half absent (balanced, the odd one present), none from
the query's recording or UTC day (no leakage through the same recording or
the same day's conditions). The instruction holds k + 1
``<Audio><AudioHere></Audio>`` tokens, the shots' answers written after
theirs; ``audio`` is the list of the k + 1 clips in the same order; the
output is ``yes`` or ``no``. Queries without enough eligible shots are left
out (counted in the card). Weak (machine) labels are used for neither shots
nor queries.
"""

from __future__ import annotations

import pandas as pd

from .base import ExportContext, Written, audio_value, dumps, metadata, shards, write_parquet
from .select import Example
from .tasks import AUDIO_TOKEN, display, phrasings, pick

STRING = {"dtype": "string", "_type": "Value"}
FEATURES = {"id": STRING, "audio": {"feature": {"_type": "Audio"}, "_type": "List"}, "instruction": STRING,
            "output": STRING, "task": STRING, "shots": {"feature": STRING, "_type": "List"}, "source_dataset": STRING,
            "metadata": STRING, "license": STRING}


def day(e: Example) -> str:
    return pd.Timestamp(e.start_ns).strftime("%Y-%m-%d")


class InContext:
    name = "icl"
    description = "few-shot rows: k labelled shots then the query, several audio tokens per instruction"

    def write(self, examples: list[Example], ctx: ExportContext) -> Written:
        k = int(ctx.options.get("shots") or 2)
        template = phrasings()["icl"]
        out = Written(features=FEATURES)
        skipped = 0
        for split in ctx.splits:
            mine = [e for e in examples if e.split == split]
            # (label, present?) -> candidate shots, in a seeded order
            pools: dict[tuple[str, bool], list[Example]] = {}
            for e in mine:
                for lab in e.positives:
                    pools.setdefault((lab, True), []).append(e)
                for lab in e.negatives:
                    pools.setdefault((lab, False), []).append(e)
            for key, pool in pools.items():
                pool.sort(key=lambda e: pick(ctx.seed, "shot", key[0], e.id))
            planned = []  # (query, label, shots): chosen first, the audio read shard by shard
            for q in mine:
                labels = sorted(set(q.positives) | set(q.negatives))
                if not labels:
                    continue
                label = labels[pick(ctx.seed, q.id, "icl-label") % len(labels)]
                shots = self._shots(q, label, k, pools, ctx.seed)
                if shots is None:
                    skipped += 1
                    continue
                planned.append((q, label, shots))
            if not planned:
                continue
            parts = shards(planned, ctx.shard_size)
            for i, part in enumerate(parts):
                out.files.append(write_parquet(ctx, f"data/{split}-{i:05d}-of-{len(parts):05d}.parquet",
                                               self.rows(part, template, ctx), FEATURES))
            out.rows[split] = len(planned)
            out.data_files[split] = f"data/{split}-*"
        out.notes.append(f"{skipped} queries had too few shots from other recordings and days, and were left out.")
        return out

    @staticmethod
    def rows(part, template: list[str], ctx: ExportContext):
        """A shard's rows, a group at a time: each group's clips (queries and shots) read once."""
        from .base import ROW_GROUP

        for g in range(0, len(part), ROW_GROUP):
            group = part[g : g + ROW_GROUP]
            needed = {e.id: e for q, _, shots in group for e in (*shots, q)}
            clips = dict(zip(needed, (c for _, c in ctx.clips(needed.values()))))
            for q, label, shots in group:
                answers = ["yes" if label in s.positives else "no" for s in shots]
                parts = [f"{AUDIO_TOKEN} Answer: {a}." for a in answers]
                phrase = template[pick(ctx.seed, q.id, "icl") % len(template)]
                instruction = phrase.format(shots=" ".join(parts), query=AUDIO_TOKEN, label=display(label))
                meta = {**metadata(q, clips[q.id], ctx), "label": label,
                        "shots": [{"id": s.id, "answer": a, "utc_start": metadata(s, clips[s.id], ctx)["utc_start"],
                                   "stream": s.stream} for s, a in zip(shots, answers)]}
                yield {"id": f"{q.id}-icl", "audio": [audio_value(e, clips[e.id]) for e in (*shots, q)],
                       "instruction": instruction, "output": "yes" if label in q.positives else "no",
                       "task": "icl-detection", "shots": [s.id for s in shots],
                       "source_dataset": f"pamingest:{q.clip['source']}", "metadata": dumps(meta),
                       "license": ctx.license_of(q.clip["source"])}

    @staticmethod
    def _shots(q: Example, label: str, k: int, pools, seed: int) -> list[Example] | None:
        want = {True: k - k // 2, False: k // 2}
        chosen: list[Example] = []
        for present, n in want.items():
            pool = pools.get((label, present), [])
            if not pool or not n:
                if n:
                    return None
                continue
            start = pick(seed, q.id, "start", present) % len(pool)
            got = []
            for j in range(len(pool)):
                s = pool[(start + j) % len(pool)]
                if s.id != q.id and s.clip["file"] != q.clip["file"] and day(s) != day(q) and s not in got:
                    got.append(s)
                    if len(got) == n:
                        break
            if len(got) < n:
                return None
            chosen += got
        chosen.sort(key=lambda s: pick(seed, q.id, "shot-order", s.id))
        return chosen
