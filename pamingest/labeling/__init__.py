"""Pseudo-labelling: a durable queue of unannotated chunks, scored by labellers on Dask.

::

    from pamingest.labeling import pseudolabel, queue, review

    queue("store/", "energy:killer-whale")            # per stream: queued, scored, annotated chunks
    report = pseudolabel("store/", "energy:killer-whale", client=None)   # LocalCluster; or "serial"
    review("store/", "energy:killer-whale", "review/", n=50, strategy="uncertainty")

    ds = pamingest.open_store("store/")[stream].to_dataset()
    ds.pam.scores("energy:killer-whale")               # (chunk, class) DataArray, NaN = not scored

Labellers: ``energy:<preset>`` (shipped), ``birdnet`` (``pamingest[birdnet]``,
non-commercial model licence), and any registered through the
``pamingest.labelers`` entry point group.
"""

from .base import (ENTRY_POINT_GROUP, ChunkContext, Detection, LabelOutput, Labeler, LabelerSpec, get_labeler,
                   labeler_key, registered)
from .queue import FAILED, QUEUED, SCORED, LabelerInfo, StreamQueue, queue
from .review import STRATEGIES, ReviewBatch, review
from .run import PseudolabelReport, pseudolabel

__all__ = ["ChunkContext", "Detection", "ENTRY_POINT_GROUP", "FAILED", "LabelOutput", "Labeler", "LabelerInfo", "LabelerSpec",
           "PseudolabelReport", "QUEUED", "ReviewBatch", "SCORED", "STRATEGIES", "StreamQueue", "get_labeler",
           "labeler_key", "pseudolabel", "queue", "registered", "review"]
