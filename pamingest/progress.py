"""Progress bars of long library calls (tqdm on stderr; a notebook widget under Jupyter)."""

from __future__ import annotations


def progress_bar(enabled: bool, total: int, desc: str, unit: str):
    """A tqdm bar, or when ``enabled`` is false one whose ``update``/``reset``/``close`` do nothing."""
    if enabled:
        from tqdm.auto import tqdm
    else:
        # tqdm.auto warns on import under Jupyter when ipywidgets is missing; a bar never shown needs none.
        from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, dynamic_ncols=True)
