"""Progress bars of long library calls (tqdm on stderr; a notebook widget under Jupyter)."""

from __future__ import annotations


def progress_bar(enabled: bool, total: int, desc: str, unit: str):
    """A tqdm bar, or when ``enabled`` is false one whose ``update``/``reset``/``close`` do nothing."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, dynamic_ncols=True)
