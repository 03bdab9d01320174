"""``--format naturelm``: instruction rows as NatureLM-audio's training sets have them.

Columns: ``audio`` (``Audio``), ``instruction`` (with
``<Audio><AudioHere></Audio>``), ``output``, ``task``, ``source_dataset``,
``metadata`` (JSON: sample rate, duration, site, UTC time, source,
provenance, scores, whether weak), ``license``; laid out and loaded as the
``hf`` format (``data/{split}-*.parquet`` and a card). Tasks and their
rules: ``export/tasks.py``; several rows per clip, one per task it answers.
"""

from __future__ import annotations

from .base import ExportContext, Written, audio_value, dumps, metadata, shards, write_parquet
from .select import Example
from .tasks import TASKS, Row, phrasings, rows_for

STRING = {"dtype": "string", "_type": "Value"}
FEATURES = {"id": STRING, "audio": {"_type": "Audio"}, "instruction": STRING, "output": STRING, "task": STRING,
            "source_dataset": STRING, "metadata": STRING, "license": STRING}


def source_dataset(e: Example) -> str:
    return f"pamingest:{e.clip['source']}"


class NatureLM:
    name = "naturelm"
    description = "instruction rows (audio, instruction, output, task, metadata) as NatureLM-audio's sets have them"

    def write(self, examples: list[Example], ctx: ExportContext) -> Written:
        tasks = tuple(ctx.options.get("tasks") or TASKS)
        phrasing = phrasings()
        out = Written(features=FEATURES)
        counts: dict[str, int] = {}
        for split in ctx.splits:
            # The rows first, without audio (the shards' count goes into their names), then each
            # shard's rows with their clips read a group at a time.
            planned: list[tuple[Example, Row]] = []
            for e in (e for e in examples if e.split == split):
                for r in rows_for(e, ctx.events(e.stream), ctx.seed, phrasing, tasks):
                    counts[r.task] = counts.get(r.task, 0) + 1
                    planned.append((e, r))
            if not planned:
                continue
            parts = shards(planned, ctx.shard_size)
            for i, part in enumerate(parts):
                out.files.append(write_parquet(ctx, f"data/{split}-{i:05d}-of-{len(parts):05d}.parquet",
                                               self.rows(part, ctx), FEATURES))
            out.rows[split] = len(planned)
            out.data_files[split] = f"data/{split}-*"
        out.notes.append("Rows per task: " + ", ".join(f"{t} {n}" for t, n in sorted(counts.items())))
        return out

    @staticmethod
    def rows(part: list[tuple[Example, Row]], ctx: ExportContext):
        """A shard's rows, each clip read once for the consecutive rows (tasks) it answers."""
        tasks_of: dict[str, list[Row]] = {}
        order: list[Example] = []
        for e, r in part:
            if e.id not in tasks_of:
                order.append(e)
            tasks_of.setdefault(e.id, []).append(r)
        for e, clip in ctx.clips(order):
            meta = dumps(metadata(e, clip, ctx))
            for r in tasks_of[e.id]:
                yield {"id": f"{e.id}-{r.task}", "audio": audio_value(e, clip), "instruction": r.instruction,
                       "output": r.output, "task": r.task, "source_dataset": source_dataset(e), "metadata": meta,
                       "license": ctx.license_of(e.clip["source"])}
