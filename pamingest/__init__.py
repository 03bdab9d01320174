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
from .ingest import IngestReport, ingest
from .query import PamAccessor, open_store, open_stream, streams
from .sources import (
    TEMPLATES,
    FilenameTemplate,
    Ncei,
    OrcasoundFLAC,
    OrcasoundHLS,
    PacificSound,
    RejectedFile,
    SanctSound,
    Source,
    SourceFile,
    TimestampedFiles,
)
from .store.repo import Store, StoreLocation

__version__ = "0.1.0"

__all__ = [
    "ConcurrentIngestError", "ConcurrentWriteError", "ConfigError", "DecodeError", "LabelerNotFoundError", "LabelerUnavailableError",
    "LabelingError", "FilenameTemplate", "IngestReport",
    "PamAccessor", "PamIngestError", "RejectedFile", "Source", "SourceFile", "StoreError",
    "Store", "StoreLocation", "StoreNotFoundError", "StreamNotFoundError", "TEMPLATES", "TemplateError",
    "TimestampedFiles", "ingest", "open_store", "open_stream", "streams",
    "SanctSound", "Ncei", "PacificSound", "OrcasoundHLS", "OrcasoundFLAC",
]
