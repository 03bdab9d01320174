"""Sources: list a collection of recordings as SourceFile records."""

from .base import RejectedFile, Source, SourceFile, list_source
from .files import TimestampedFiles, records_from_listing
from .ncei import Ncei
from .onc import OncArchive
from .orcasound import OrcasoundFLAC, OrcasoundHLS
from .pacific_sound import PacificSound
from .sanctsound import SanctSound, parse_detection_product
from .templates import TEMPLATES, FilenameTemplate, get_templates, parse_name
from .zenodo import CornellSoundscapes, ZenodoRecord

__all__ = [
    "OrcasoundFLAC",
    "OrcasoundHLS",
    "FilenameTemplate",
    "Ncei",
    "OncArchive",
    "PacificSound",
    "CornellSoundscapes",
    "ZenodoRecord",
    "RejectedFile",
    "SanctSound",
    "Source",
    "SourceFile",
    "TEMPLATES",
    "TimestampedFiles",
    "get_templates",
    "list_source",
    "parse_detection_product",
    "parse_name",
    "records_from_listing",
]
