"""Annotations: one reader per format -> normalised events + effort -> chunk labels in the store.

::

    from pamingest.annotations import attach, read_annotations, Recording

    ann = read_annotations("track.txt", "audacity",
                           recording=Recording("spinetail.wav", start="2020-01-01T00:00:00"))
    ann.events          # DataFrame: start/end ns UTC, low_hz/high_hz, label, label_norm, ...
    report = attach("store/", ["track.txt"], "audacity",
                    recording=Recording("spinetail_20200101_000000.wav"))   # start from the store

The format is always named by the caller, never guessed from the file.
Readers are registered, pamingest's own included, under the
``pamingest.annotation_readers`` entry point group (name -> reader class;
``pamingest.registry``), loaded when a format is asked for.
"""

from __future__ import annotations

from ..store.repo import Store, StoreLocation
from .audacity import AudacityLabels
from .base import (EFFORT_COLUMNS, EVENT_COLUMNS, AnnotationReader, Annotations, ReadContext, Recording,
                   RecordingLookup, ResolvedRecording, normalize_label)
from .labels import NEGATIVE, POSITIVE, UNKNOWN, OverlapRule, chunk_labels, events_in_audio
from .orcahello import OrcaHelloPredictions
from .pods_ai import PodsAiDetections
from .podcast_json import PodcastJson
from .podcast_tsv import PodcastTsv
from .raven import RavenTable
from .sanctsound import SanctSoundDetections
from .store import (AttachedFile, AttachReport, StoreFiles, attach, detach, get_reader, read_bytes, refresh_labels,
                    stream_labels)
from .sync import AnnotateReport, attach_new

def read_annotations(path: str, format: str | AnnotationReader, *, options: dict | None = None,
                     recording: Recording | None = None, recordings=(), store: str | StoreLocation | None = None,
                     stream: str = "", storage_options: dict | None = None,
                     store_options: dict | None = None) -> Annotations:
    """Read one annotation file into normalised events and effort, without touching a store.

    Parameters
    ----------
    path : str
        The annotation file (path or fsspec URL).
    format : str or AnnotationReader
        Format name (``raven``, ``audacity``, ``sanctsound``, ``podcast-tsv``,
        ``orcahello``, ``pods-ai``, ``podcast-json``) or a reader.
    options : dict, optional
        Reader settings.
    recording, recordings : Recording
        Recording(s) with UTC starts, for file-relative formats.
    store : str, optional
        A store whose files tables place recordings not given explicitly.
    stream : str
        Restrict store lookups to this stream (prefix).

    Returns
    -------
    Annotations
    """
    reader = get_reader(format, **(options or {}))
    lookup = None
    if store is not None:
        lookup = StoreFiles(Store.open(store, store_options).root())
    given = tuple(recordings) + ((recording,) if recording is not None else ())
    return reader(read_bytes(path, storage_options), str(path), ReadContext(given, lookup, stream.strip("/")))


__all__ = [
    "EFFORT_COLUMNS", "EVENT_COLUMNS", "NEGATIVE", "POSITIVE", "UNKNOWN", "AnnotationReader",
    "AnnotateReport", "Annotations", "AttachReport", "AttachedFile", "AudacityLabels", "OrcaHelloPredictions", "OverlapRule",
    "PodcastJson", "PodcastTsv", "PodsAiDetections", "RavenTable", "ReadContext", "Recording", "RecordingLookup",
    "ResolvedRecording", "SanctSoundDetections", "StoreFiles", "attach", "attach_new", "chunk_labels", "detach", "events_in_audio",
    "get_reader", "normalize_label", "read_annotations", "refresh_labels", "stream_labels",
]
