"""Helpers shared by the archive sources: time ranges, month partitions, listings.

Selection by time works on file START times (from names or archive
metadata). A file is selected when the span it may cover overlaps the
range ``[start, end)``: with a nominal or recorded duration, that span is
known; without one (SanctSound deployments differ), a file is kept when it
starts inside the range or is the last file to start before it, the one that
may still be recording at ``start``. Ingest keeps whole files, so a selected
file may hold samples outside the range.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import replace
from typing import Any, Callable, Iterable, Sequence

from ..errors import ConfigError
from ..timing import NS_PER_S, ns_to_iso, to_ns
from .base import RejectedFile, SourceFile


def time_range(start: Any = None, end: Any = None) -> tuple[int | None, int | None]:
    """``(start_ns, end_ns)`` from any time-likes (naive = UTC); None where not given."""
    try:
        lo = None if start is None else to_ns(start)
        hi = None if end is None else to_ns(end)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"bad time range start={start!r} end={end!r}: {exc}") from exc
    if lo is not None and hi is not None and hi <= lo:
        raise ConfigError(f"time range ends ({ns_to_iso(hi)}) before it starts ({ns_to_iso(lo)})")
    return lo, hi


def overlaps(start_ns: int, duration_ns: int, lo: int | None, hi: int | None) -> bool:
    """Whether ``[start, start + duration)`` meets ``[lo, hi)`` (open ends where None)."""
    if hi is not None and start_ns >= hi:
        return False
    if lo is not None and start_ns + max(duration_ns, 0) <= lo:
        return False
    return True


def select_time(
    records: Iterable[SourceFile | RejectedFile],
    lo: int | None,
    hi: int | None,
    duration_ns: Callable[[SourceFile], int | None] | None = None,
) -> list[SourceFile | RejectedFile]:
    """Records whose files may hold samples in ``[lo, hi)`` (see module docstring).

    RejectedFile records are kept: a name that cannot be parsed cannot be shown
    to lie outside the range, and must be reported rather than dropped.
    Order is preserved.
    """
    records = list(records)
    if lo is None and hi is None:
        return records
    keep: list[bool] = []
    # Per site, the last file starting at or before lo: the one that may still be recording
    # at lo, if its duration is unknown.
    in_progress: dict[str, tuple[int, str]] = {}
    for rec in records:
        if isinstance(rec, RejectedFile):
            continue
        if lo is not None and rec.start_ns <= lo:
            best = in_progress.get(rec.site)
            if best is None or (rec.start_ns, rec.url) > best:
                in_progress[rec.site] = (rec.start_ns, rec.url)
    for rec in records:
        if isinstance(rec, RejectedFile):
            keep.append(True)
            continue
        dur = duration_ns(rec) if duration_ns is not None else None
        if dur is not None:
            keep.append(overlaps(rec.start_ns, dur, lo, hi))
        else:
            starts_inside = (lo is None or rec.start_ns >= lo) and (hi is None or rec.start_ns < hi)
            running = in_progress.get(rec.site) == (rec.start_ns, rec.url) and (hi is None or rec.start_ns < hi)
            keep.append(starts_inside or running)
    return [r for r, k in zip(records, keep) if k]


def months(lo: int, hi: int) -> list[tuple[int, int]]:
    """``(year, month)`` of every calendar month (UTC) meeting ``[lo, hi)``, in order."""
    first = _dt.datetime.fromtimestamp(lo // NS_PER_S, _dt.timezone.utc)
    last = _dt.datetime.fromtimestamp((hi - 1) // NS_PER_S, _dt.timezone.utc)
    out = []
    y, m = first.year, first.month
    while (y, m) <= (last.year, last.month):
        out.append((y, m))
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return out


def days(lo: int, hi: int) -> list[_dt.date]:
    """Every calendar day (UTC) meeting ``[lo, hi)``, in order."""
    first = _dt.datetime.fromtimestamp(lo // NS_PER_S, _dt.timezone.utc).date()
    last = _dt.datetime.fromtimestamp((hi - 1) // NS_PER_S, _dt.timezone.utc).date()
    return [first + _dt.timedelta(days=i) for i in range((last - first).days + 1)]


def utc_day(ns: int) -> _dt.date:
    return _dt.datetime.fromtimestamp(ns // NS_PER_S, _dt.timezone.utc).date()


def list_objects(fs, path: str, *, recursive: bool = False, prefix: str = "") -> list[dict]:
    """fsspec ``info`` dicts of the objects under ``path`` (not folders), sorted by name.

    ``prefix`` restricts a listing to object names starting with it (an S3 or
    GCS prefix listing: no folder needed). A missing folder lists as empty.
    """
    try:
        if prefix:
            found = fs.find(path, prefix=prefix, detail=True)
            entries = list(found.values())
        elif recursive:
            entries = list(fs.find(path, detail=True).values())
        else:
            entries = fs.ls(path, detail=True)
    except FileNotFoundError:
        return []
    return sorted((e for e in entries if e.get("type") != "directory"), key=lambda e: e["name"])


def list_folders_with_prefix(fs, path: str, prefix: str) -> list[dict]:
    """Folders (and objects) directly under ``path`` whose names start with ``prefix``: one S3
    listing with that key prefix, not a listing of the whole folder; [] if none."""
    if hasattr(fs, "_lsdir"):  # s3fs: a delimited listing with a key prefix
        from fsspec.asyn import sync

        try:
            return sync(fs.loop, fs._lsdir, path.rstrip("/"), refresh=True, prefix=prefix)
        except FileNotFoundError:
            return []
    try:
        entries = fs.ls(path, detail=True)
    except FileNotFoundError:
        return []
    return [e for e in entries if e["name"].rstrip("/").rsplit("/", 1)[-1].startswith(prefix)]


def list_folders(fs, path: str) -> list[str]:
    """Names (last path segment) of the folders directly under ``path``, sorted; [] if missing."""
    try:
        entries = fs.ls(path, detail=True)
    except FileNotFoundError:
        return []
    return sorted(e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries if e.get("type") == "directory")


def with_site(records: Sequence[SourceFile | RejectedFile], site: str) -> list[SourceFile | RejectedFile]:
    """The records with ``site`` as their stream site (the name's own site stays in ``fields``)."""
    return [replace(r, site=site) if isinstance(r, SourceFile) else r for r in records]


def as_list(value: Any) -> list[str] | None:
    """None, one value or several (a comma-separated string counts as several) -> list of str."""
    if value is None:
        return None
    if isinstance(value, (str, int)):
        value = [value]
    out = [part.strip() for v in value for part in str(v).split(",") if part.strip()]
    return out or None
