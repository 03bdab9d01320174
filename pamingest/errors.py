"""Errors raised by pamingest.

One base class, ``PamIngestError`` (a ``ValueError``), with specific
subclasses; "not found" errors are also ``FileNotFoundError`` so that callers
can catch them the way they catch any missing file. ``first_line`` puts what
Icechunk says on one line, for messages that quote it.
"""

from __future__ import annotations

import re


class PamIngestError(ValueError):
    """Base class of every error pamingest raises on purpose."""


class TemplateError(PamIngestError):
    """A file name does not match any of the source's name templates."""


class DecodeError(PamIngestError):
    """A recording cannot be decoded (empty, truncated, not audio, lying header)."""


class StoreError(PamIngestError):
    """The store is not in the shape pamingest expects."""


class StoreUnavailableError(StoreError):
    """The store could not be read or written while a run wrote its rows or its commit, after
    retries (a full disk, a bucket that keeps failing): the store's fault, not the recording's.
    The run stops uncommitted; running it again, once the store can be written, completes it."""


class ClusterError(PamIngestError):
    """The Dask cluster failed a run: its scheduler went away mid-run, or the workers running one
    of its tasks all died (distributed's KilledWorker). The run stops; what it had not committed
    is left for the next run."""


class StoreNotFoundError(StoreError, FileNotFoundError):
    """No pamingest store exists at the given URL."""


class StreamNotFoundError(StoreError, KeyError):
    """The store has no stream at the given path."""


class SourceChangedError(StoreError):
    """A virtual stream's row refers to a recording that changed after it was ingested (its ETag or
    modification time no longer match): Icechunk refuses the range, and nothing is read."""


class ConfigError(PamIngestError):
    """An option contradicts the store or another option."""


class PluginError(ConfigError):
    """A registered source, decoder, annotation reader or labeller cannot be loaded."""


class PluginNotFoundError(ConfigError, KeyError):
    """No source, decoder, annotation reader or labeller is registered under that name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ConcurrentWriteError(StoreError):
    """Other writers kept changing the same data; this write gave up without committing anything."""


# The name of this error before annotate and pseudolabel committed through the same path as ingest.
ConcurrentIngestError = ConcurrentWriteError


class AnnotationError(PamIngestError):
    """An annotation file cannot be read or attached.

    The message starts with the file and, where one is to blame, the line
    (``"labels.txt, line 7: ..."``); both are kept as attributes.
    """

    def __init__(self, message: str, file: str | None = None, line: int | None = None) -> None:
        self.file, self.line, self.reason = file, line, message
        where = file or ""
        if line is not None:
            where = f"{where}, line {line}" if where else f"line {line}"
        super().__init__(f"{where}: {message}" if where else message)


class AnnotationTargetError(AnnotationError):
    """An annotation names a stream, site or recording that the store does not hold."""


class UnansweredReviewWarning(UserWarning):
    """A review table read back has no answered clip (every ``Annotation`` still ``?``): nothing attached."""


class SourceNotFoundError(PamIngestError, FileNotFoundError):
    """A source's root, site or deployment does not exist where the source looks for it."""


class MetadataError(PamIngestError):
    """A source's metadata file (deployment JSON, daily index) cannot be read or understood."""


class LabelingError(PamIngestError):
    """Pseudo-labelling cannot run: a labeller's settings, its scores in the store, a review batch."""


class LabelerNotFoundError(LabelingError, KeyError):
    """No labeller of that name is shipped or registered through the ``pamingest.labelers`` entry point."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class LabelerUnavailableError(LabelingError):
    """A labeller's optional dependencies or model file are not installed (e.g. ``pamingest[birdnet]``)."""


def first_line(message: str) -> str:
    """What an Icechunk error or panic says, on one line: their messages are drawn as a tree
    ("  x invalid snapshot id: ...", "  |", "  `-> ...") or end in a Rust span trace."""
    for line in message.split(", context: SpanTrace")[0].splitlines():
        text = re.sub(r"^\s*(?:[|│]\s*)*(?:x |`-> |× |╰─▶ )?", "", line).strip()
        if text and text != "context:":
            return text
    return ""


# Bugs, not bad input: ingest and labelling let these propagate instead of recording them as a
# file's or a batch's failure.
PROGRAMMING_ERRORS = (NameError, TypeError, AttributeError, ImportError, AssertionError)
