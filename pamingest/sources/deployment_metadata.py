"""Deployment metadata JSON of the NOAA/NCEI-style archives (SanctSound, MBARI MARS).

Two schemas are in use (docs/sources.md):

* flat: ``DEPLOYMENT_NAME``, ``INSTRUMENT_NAME``, ``DATA_QUALITY``,
  ``LOCATION.lat`` / ``LOCATION.lon``;
* deployment block: ``DEPLOYMENT.AUDIO_START``, ``AUDIO_END``, ``DEPLOY_LAT``,
  ``DEPLOY_LON`` (with ``INSTRUMENT_ID`` / ``INSTRUMENT_TYPE`` and
  ``QUALITY_DETAILS`` alongside, as in MBARI's deployment files).

Both are normalised to the same stream attributes (position, instrument,
audio span, data-quality ranges), and the document itself is kept whole
under ``deployment_metadata`` so nothing the archive says is lost. Keys are
matched case-insensitively: the archives are not consistent about it.
"""

from __future__ import annotations

import json
import math
from typing import Any

from ..errors import MetadataError
from ..timing import ns_to_iso, to_ns

SCHEMA_FLAT = "flat"
SCHEMA_DEPLOYMENT_BLOCK = "deployment-block"
# Values the archives write where a time is not (yet) known.
_OPEN_ENDED = {"", "ongoing", "currently deployed", "present", "none", "null", "n/a", "na", "tbd"}


def _get(doc: Any, *keys: str) -> Any:
    """The value under the first of ``keys`` present in ``doc`` (case-insensitive), else None."""
    if not isinstance(doc, dict):
        return None
    lowered = {str(k).lower(): v for k, v in doc.items()}
    for key in keys:
        if key.lower() in lowered:
            return lowered[key.lower()]
    return None


def _float(value: Any) -> float | None:
    try:
        out = float(str(value).strip())
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _time(value: Any) -> str | None:
    """ISO-8601 UTC (``...Z``) of a metadata time; None for open-ended or unparsable values."""
    if value is None or str(value).strip().lower() in _OPEN_ENDED:
        return None
    try:
        return ns_to_iso(to_ns(str(value).strip()))
    except (ValueError, TypeError):
        return None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def parse_deployment_metadata(doc: Any, url: str = "") -> dict[str, Any]:
    """Stream attributes from a deployment metadata document (either schema).

    Parameters
    ----------
    doc : dict
        The parsed JSON document.
    url : str
        Where it was read from; named in errors and kept as ``metadata_url``.

    Returns
    -------
    dict
        JSON-serialisable attributes: ``metadata_url``, ``metadata_schema``,
        ``deployment_name``, ``instrument``, ``latitude``, ``longitude``,
        ``audio_start``, ``audio_end`` (ISO UTC or None), ``data_quality``
        (the archive's ranges, as written) and ``deployment_metadata`` (the
        whole document).

    Raises
    ------
    MetadataError
        If the document matches neither schema.
    """
    if not isinstance(doc, dict):
        raise MetadataError(f"{url}: deployment metadata is a {type(doc).__name__}, not a JSON object")
    block = _get(doc, "DEPLOYMENT")
    location = _get(doc, "LOCATION")
    if isinstance(block, dict):
        schema = SCHEMA_DEPLOYMENT_BLOCK
        lat, lon = _get(block, "DEPLOY_LAT", "LAT", "LATITUDE"), _get(block, "DEPLOY_LON", "LON", "LONGITUDE")
        start, end = _get(block, "AUDIO_START"), _get(block, "AUDIO_END")
        quality = _get(doc, "QUALITY_DETAILS", "DATA_QUALITY")
        # MBARI nests the list once more: {"QUALITY_DETAILS": {"QUALITY_DETAILS": [...]}}.
        if isinstance(quality, dict) and _get(quality, "QUALITY_DETAILS") is not None:
            quality = _get(quality, "QUALITY_DETAILS")
        instrument = _get(doc, "INSTRUMENT_NAME", "INSTRUMENT_ID", "INSTRUMENT_TYPE")
    elif isinstance(location, dict) or _get(doc, "INSTRUMENT_NAME") is not None:
        schema = SCHEMA_FLAT
        lat = _get(location, "lat", "latitude")
        lon = _get(location, "lon", "lng", "longitude")
        start, end = _get(doc, "AUDIO_START", "START"), _get(doc, "AUDIO_END", "END")
        quality = _get(doc, "DATA_QUALITY", "QUALITY_DETAILS")
        instrument = _get(doc, "INSTRUMENT_NAME", "INSTRUMENT_ID")
    else:
        keys = ", ".join(sorted(map(str, doc))[:12]) or "none"
        raise MetadataError(
            f"{url}: unknown deployment metadata schema (expected DEPLOYMENT.AUDIO_START/DEPLOY_LAT/... "
            f"or DEPLOYMENT_NAME/INSTRUMENT_NAME/LOCATION; found keys {keys})"
        )
    return {
        "metadata_url": url,
        "metadata_schema": schema,
        "deployment_name": _text(_get(doc, "DEPLOYMENT_NAME")),
        "instrument": _text(instrument),
        "latitude": _float(lat),
        "longitude": _float(lon),
        "audio_start": _time(start),
        "audio_end": _time(end),
        "data_quality": quality if quality is not None else [],
        "deployment_metadata": doc,
    }


def read_deployment_metadata(fs, path: str, url: str | None = None) -> dict[str, Any]:
    """Read and parse one metadata JSON object through ``fs`` (see ``parse_deployment_metadata``)."""
    url = url or path
    try:
        with fs.open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError as exc:
        raise MetadataError(f"{url}: metadata file not found") from exc
    except Exception as exc:  # noqa: BLE001 - any read failure names the file
        raise MetadataError(f"{url}: cannot read metadata ({type(exc).__name__}: {exc})") from exc
    try:
        # utf-8-sig: some archive JSON files start with a byte-order mark.
        doc = json.loads(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MetadataError(f"{url}: not valid JSON ({exc})") from exc
    return parse_deployment_metadata(doc, url)
