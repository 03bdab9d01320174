"""Serve the pamingest deployments from this process (the local equivalent of a worker).

    python flows/serve.py            # then: prefect deployment run ingest/orcasound

Deployment parameters come from the environment (``settings``) so that the
same deployments run on a laptop and on a cluster: PAMINGEST_LABELER
(labeller of the ``pseudolabel/default`` deployment, e.g.
energy:killer-whale; the ingest flow starts every pseudolabel deployment
when it committed new rows), PAMINGEST_ORCASOUND_NODES and
PAMINGEST_SANCTSOUND_SITES (comma-separated), PAMINGEST_FILES_ROOT. The flow
runs read PAMINGEST_STORE, PAMINGEST_SCHEDULER, PAMINGEST_S3_ENDPOINT and
PAMINGEST_STORE_ENDPOINT when they start (``flows/settings.py``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from prefect import serve  # noqa: E402

import settings  # noqa: E402
from annotate import annotate  # noqa: E402
from export import export  # noqa: E402
from hmd import hmd  # noqa: E402
from ingest import ingest  # noqa: E402
from pseudolabel import pseudolabel  # noqa: E402

ORCASOUND_EVERY_SECONDS = 600  # live segments arrive every 10 s; pick them up every 10 min
ORCASOUND_LIVE_EVERY_SECONDS = 60  # the live deployment: a segment in the store within two minutes
ANNOTATE_EVERY_SECONDS = 3600  # analysts save tables by the hour, not by the second


def deployments():
    nodes = settings.listed(settings.ORCASOUND_NODES, "rpi_orcasound_lab")
    files_root = os.environ.get(settings.FILES_ROOT, "")
    labeler = settings.labeler()
    return [
        pseudolabel.to_deployment(
            name="default", parameters={"labeler": labeler},
            description=f"Pseudo-label the store's unannotated chunks with {labeler}; "
                        "started by the ingest flow when it commits new rows.",
            tags=["pamingest", "pseudolabel"],
        ),
        annotate.to_deployment(
            name="new-files", interval=ANNOTATE_EVERY_SECONDS, parameters={"format": "raven"},
            description="Attach the annotation files added under $PAMINGEST_ANNOTATIONS since the last run "
                        "(Raven tables by default; give format and where for others).",
            tags=["pamingest", "annotate"],
        ),
        export.to_deployment(
            name="hf", parameters={"format": "hf"},
            description="Training data: the store's labelled clips as a Hugging Face dataset folder, pinned to "
                        "the current snapshot (give out and options when running it).",
            tags=["pamingest", "export"],
        ),
        hmd.to_deployment(
            name="soundscape",
            description="1-minute hybrid millidecade spectra of a stream into the store (give stream, and "
                        "start/end, sensitivity, gain when running it).",
            tags=["pamingest", "hmd"],
        ),
        ingest.to_deployment(
            name="orcasound", interval=ORCASOUND_EVERY_SECONDS,
            parameters={"source": "orcasound", "options": {"nodes": nodes}},
            description="Live Orcasound HLS sessions: picks up new segments of growing sessions.",
            tags=["pamingest", "orcasound"],
        ),
        ingest.to_deployment(
            name="orcasound-live", interval=ORCASOUND_LIVE_EVERY_SECONDS,
            parameters={"source": "orcasound", "options": {"nodes": nodes, "live": True}},
            description="Live Orcasound HLS, polled every minute: the nodes' newest sessions only, "
                        "ingested in the flow run's threads.",
            tags=["pamingest", "orcasound", "live"],
        ),
        ingest.to_deployment(
            name="sanctsound",
            parameters={"source": "sanctsound",
                        "options": {"sites": settings.listed(settings.SANCTSOUND_SITES, "ci01")},
                        "detections": True},
            description="NOAA SanctSound recordings (gs://noaa-passive-bioacoustic/sanctsound) and the "
                        "deployments' detection products.",
            tags=["pamingest", "sanctsound"],
        ),
        ingest.to_deployment(
            name="cornell",
            parameters={"source": "cornell", "options": {"collection": "ssw"}, "detections": True},
            description="A Cornell Lab fully annotated soundscape collection on Zenodo (zip members read by range "
                        "requests) and its annotations.csv.",
            tags=["pamingest", "cornell"],
        ),
        ingest.to_deployment(
            name="barkley-canyon",
            parameters={"source": "onc", "options": {"location": "BACAX"}},
            description="Ocean Networks Canada hydrophone audio of Barkley Canyon Axis (BACAX) from the Oceans 3.0 "
                        "archive (give start/end when running it; the token from PAMINGEST_ONC_TOKEN or ONC_TOKEN).",
            tags=["pamingest", "onc"],
        ),
        ingest.to_deployment(
            name="marmaudio", parameters={"source": "marmaudio", "detections": True},
            description="MarmAudio marmoset calls on Zenodo (one-call files in a zip, a relative time base from "
                        "Annotations.tsv) and their labels.",
            tags=["pamingest", "marmaudio"],
        ),
        ingest.to_deployment(
            name="pacific-sound",
            parameters={"source": "pacific-sound", "options": {"product": "256khz"}},
            description="MBARI Pacific Sound recordings (give start/end when running it).",
            tags=["pamingest", "pacific-sound"],
        ),
        ingest.to_deployment(
            name="files", parameters={"source": "files", "options": {"root": files_root, "template": "soundtrap"}},
            description="Timestamped recordings under a folder or bucket prefix.",
            tags=["pamingest"],
        ),
    ]


if __name__ == "__main__":
    serve(*deployments())
