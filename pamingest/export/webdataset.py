"""``--format webdataset``: tar shards of ``.flac`` + ``.json`` for streaming training.

``{split}-{i:06d}.tar``, each holding up to ``--shard-size`` clips as
``{id}.flac`` (or ``.wav`` for 32-bit and float streams) and ``{id}.json``
(labels, negatives, weak labels with scores, the clip's place, provenance,
licence, snapshot), in the export's order, with fixed owners and times so
that the same export gives the same bytes. WebDataset groups members by
the name before the first dot: ids are hex, with no dot.
"""

from __future__ import annotations

from .base import ExportContext, Written, dumps, metadata, shards, write_tar
from .select import Example


class WebDataset:
    name = "webdataset"
    description = "tar shards of .flac + .json per clip (WebDataset layout)"

    def write(self, examples: list[Example], ctx: ExportContext) -> Written:
        out = Written()
        for split in ctx.splits:
            mine = [e for e in examples if e.split == split]
            if not mine:
                continue
            for i, part in enumerate(shards(mine, ctx.shard_size)):
                out.files.append(write_tar(ctx, f"{split}-{i:06d}.tar", self.members(part, ctx)))
            out.rows[split] = len(mine)
        return out

    @staticmethod
    def members(part: list[Example], ctx: ExportContext):
        for e, clip in ctx.clips(part):
            meta = {**metadata(e, clip, ctx), "license": ctx.license_of(e.clip["source"])}
            yield f"{e.id}.{clip.extension}", clip.data
            yield f"{e.id}.json", dumps(meta).encode()
