"""pamingest: passive acoustic monitoring recordings -> lossless, exactly-timed Zarr stores.

Public API::

    from pamingest import TimestampedFiles, ingest, open_store
    report = ingest(TimestampedFiles("s3://bucket/deployment", "soundtrap"), "store/")
    tree = open_store("store/")
    ds = tree["files/67416073/8000Hz_1ch_pcm16"].to_dataset()
    ds.pam.window("2021-06-10T03:40:00", "2021-06-10T03:40:10")

    from pamingest.labeling import pseudolabel, review     # pseudo-labels, active learning
    pseudolabel("store/", "energy:humpback")
    ds.pam.scores("energy:humpback")
"""

import importlib
import importlib.util
import sys
import types

from .errors import (
    ConcurrentIngestError,
    ConcurrentWriteError,
    ConfigError,
    DecodeError,
    LabelerNotFoundError,
    LabelerUnavailableError,
    LabelingError,
    PamIngestError,
    StoreError,
    StoreNotFoundError,
    StreamNotFoundError,
    TemplateError,
)
# Everything but the errors is imported on first use (PEP 562): `import pamingest` stays under
# 0.4 s (benchmarks/startup.py) instead of importing the whole stack (zarr, icechunk, xarray,
# pandas, dask...). `from pamingest import open_store` imports pamingest.query, which registers
# the ``.pam`` accessor on xarray Datasets.
_LAZY = {
    "IngestReport": "ingest", "ingest": "ingest",
    "PamAccessor": "query", "open_store": "query", "open_stream": "query", "streams": "query",
    "TEMPLATES": "sources", "FilenameTemplate": "sources", "Ncei": "sources", "OrcasoundFLAC": "sources",
    "OrcasoundHLS": "sources", "PacificSound": "sources", "RejectedFile": "sources", "SanctSound": "sources",
    "Source": "sources", "SourceFile": "sources", "TimestampedFiles": "sources",
    "ZenodoRecord": "sources", "CornellSoundscapes": "sources",
    "Store": "store.repo", "StoreLocation": "store.repo", "clips": "clips",
}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    elif not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        value = importlib.import_module(f".{name}", __name__)  # a submodule: pamingest.labeling, ...
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


# Functions named like the submodule that defines them.
_SAME_NAME = ("ingest", "clips")


class _Package(types.ModuleType):
    """``pamingest.ingest`` and ``pamingest.clips`` are the functions, not the submodules of the same names.

    Importing a submodule binds it on its package (``pamingest.ingest =
    <module pamingest.ingest>``) when it is first loaded, by whoever loads
    it (the CLI, a Dask worker unpickling a task); the function is bound
    instead, as the package's former eager ``from .ingest import ingest`` did.
    """

    def __setattr__(self, name: str, value) -> None:
        if name in _SAME_NAME and isinstance(value, types.ModuleType):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

__version__ = "0.1.0"

__all__ = [
    "ConcurrentIngestError", "ConcurrentWriteError", "ConfigError", "DecodeError", "LabelerNotFoundError", "LabelerUnavailableError",
    "LabelingError", "FilenameTemplate", "IngestReport",
    "PamAccessor", "PamIngestError", "RejectedFile", "Source", "SourceFile", "StoreError",
    "Store", "StoreLocation", "StoreNotFoundError", "StreamNotFoundError", "TEMPLATES", "TemplateError",
    "TimestampedFiles", "ingest", "open_store", "open_stream", "streams",
    "SanctSound", "Ncei", "PacificSound", "OrcasoundHLS", "OrcasoundFLAC", "ZenodoRecord", "CornellSoundscapes",
]
