"""Prefect flow ``hmd``: 1-minute hybrid millidecade spectra of a stream into the store (thin wiring).

One coarse Prefect task runs ``pamingest.hmd.compute_hmd``: the minutes are
Dask futures on the cluster at ``scheduler_address`` (threads or a
LocalCluster by size when unset) and the spectra land in one commit under
``<stream>/hmd``. Safe to retry: minutes computed again replace themselves.
Store, scheduler and the store's endpoint come from ``settings``
(``PAMINGEST_*``) unless given. Deployment ``hmd/soundscape`` (prefect.yaml,
flows/serve.py): ``prefect deployment run hmd/soundscape --param stream=...``.
"""

from __future__ import annotations

import settings
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from pamingest import hmd as pam_hmd


@task(retries=2, retry_delay_seconds=15, task_run_name="hmd {stream}")
def compute(store: str, stream: str, start: str | None, end: str | None, sensitivity: float | None,
            gain: float | None, scheduler_address: str | None) -> dict:
    report = pam_hmd.compute_hmd(store, stream, start, end, sensitivity=sensitivity, gain=gain,
                                 client=scheduler_address, store_options=settings.store_options())
    get_run_logger().info("%s", report.summary())
    return report.as_dict()


@flow(name="hmd")
def hmd(stream: str, start: str | None = None, end: str | None = None, sensitivity: float | None = None,
        gain: float | None = None, store: str | None = None, scheduler_address: str | None = None) -> dict:
    """Hybrid millidecade spectra of ``stream`` over ``[start, end)`` (default: all its audio)."""
    report = compute(settings.store(store), stream, start, end, sensitivity, gain,
                     settings.scheduler(scheduler_address))
    create_markdown_artifact(f"**hmd** `{report['stream']}`: {report['minutes']} minutes "
                             f"({report['with_audio']} with audio), snapshot `{report['snapshot_id']}`",
                             key="hmd", description=f"pamingest hmd on {report['store']}")
    return report


if __name__ == "__main__":
    import sys

    print(hmd(sys.argv[1]))
