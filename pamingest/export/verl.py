"""``--format verl``: RL rows with verifiable rewards, as verl's RL trainers read them.

``{split}.parquet`` with verl's columns: ``data_source``, ``prompt``
(``[{role, content}]``, the instruction with its audio token), ``ability``,
``reward_model`` (``{style: "rule", ground_truth}``) and ``extra_info``
(``split``, ``index``, ``audio``: the clip's file under ``audio/``,
``task``, ``vocabulary``, ``tolerance_s``). The clips are written once as
``audio/{split}/{id}.flac``. Rewards: ``pamingest.rewards.compute_score``
(``custom_reward_function.path`` = the file of ``pamingest.rewards``,
``custom_reward_function.name=compute_score``). Captions have no verifiable
answer and are left out.
"""

from __future__ import annotations

from ..rewards import DEFAULT_TOLERANCE_S
from .base import ExportContext, Written, write_parquet
from .select import Example
from .tasks import TASKS, phrasings, rows_for

STRING = {"dtype": "string", "_type": "Value"}
FEATURES = {
    "data_source": STRING,
    "prompt": {"feature": {"_type": "Struct", "fields": {"role": STRING, "content": STRING}}, "_type": "List"},
    "ability": STRING,
    "reward_model": {"_type": "Struct", "fields": {"style": STRING, "ground_truth": STRING}},
    "extra_info": {"_type": "Struct", "fields": {
        "split": STRING, "index": {"dtype": "int64", "_type": "Value"}, "audio": STRING, "id": STRING,
        "task": STRING, "vocabulary": {"feature": STRING, "_type": "List"},
        "tolerance_s": {"dtype": "float64", "_type": "Value"}}},
}


class Verl:
    name = "verl"
    description = "RL rows with rule-based rewards (verl parquet: prompt, reward_model, extra_info) + audio files"

    def write(self, examples: list[Example], ctx: ExportContext) -> Written:
        tasks = tuple(t for t in (ctx.options.get("tasks") or TASKS) if t != "caption")
        phrasing = phrasings()
        out = Written(features=FEATURES)
        for split in ctx.splits:
            rows = []
            planned = [(e, rows_for(e, ctx.events(e.stream), ctx.seed, phrasing, tasks))
                       for e in examples if e.split == split]
            tasks_of = {e.id: got for e, got in planned if got}
            for e, clip in ctx.clips(e for e, got in planned if got):
                audio = ctx.write_bytes(f"audio/{split}/{e.id}.{clip.extension}", clip.data)
                out.files.append(audio)
                for r in tasks_of[e.id]:
                    rows.append({
                        "data_source": f"pamingest/{e.clip['source']}",
                        "prompt": [{"role": "user", "content": r.instruction}],
                        "ability": f"bioacoustics/{r.task}",
                        "reward_model": {"style": "rule", "ground_truth": r.output},
                        "extra_info": {"split": split, "index": len(rows), "audio": audio, "id": e.id, "task": r.task,
                                       "vocabulary": list(r.vocabulary), "tolerance_s": DEFAULT_TOLERANCE_S},
                    })
            if rows:
                out.files.append(write_parquet(ctx, f"{split}.parquet", rows, FEATURES))
                out.rows[split] = len(rows)
                out.data_files[split] = f"{split}.parquet"
        out.notes.append("Rewards: `pamingest.rewards.compute_score` (verl: custom_reward_function.path=$(python -c "
                         "'import pamingest.rewards as r; print(r.__file__)') custom_reward_function.name=compute_score).")
        return out
