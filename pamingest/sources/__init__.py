"""Sources: list a collection of recordings as SourceFile records."""

from .base import RejectedFile, Source, SourceFile, list_source
from .files import TimestampedFiles
from .templates import TEMPLATES, FilenameTemplate, get_templates, parse_name

__all__ = [
    "FilenameTemplate",
    "RejectedFile",
    "Source",
    "SourceFile",
    "TEMPLATES",
    "TimestampedFiles",
    "get_templates",
    "list_source",
    "parse_name",
]
