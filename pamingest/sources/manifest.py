"""Recordings without a time in their name: a manifest gives each one's start.

Lab and archive recordings (one call per file, files named by index) carry
no timestamp a template could read. A manifest says when each starts: a CSV
with a header, one recording per line::

    file,start,site
    calls/0001.wav,2021-03-04T10:00:00Z,lab
    calls/0002.wav,2021-03-04T10:00:07.5Z,lab

``file`` is a path or URL, relative to the manifest's folder (or ``root``);
``start`` is UTC (ISO 8601; a time without an offset is read as UTC, and a
time with one is converted); ``site`` is optional (default: the ``site``
option, else the file's folder name). One file needs no manifest:
``ManifestFiles(files=[("rec.wav", "2021-03-04T10:00Z")])``
(``pamingest ingest manifest --file rec.wav --start 2021-03-04T10:00Z``).

Collections with no absolute time at all use a **relative time base**:
``time_base="relative"`` and a ``start`` column of seconds from the
collection's zero (``0``, ``12.5``, ...). Times are then stored as offsets
from 1970-01-01T00:00:00Z, and the stream says so in its ``time_base``
(``relative``) and ``time_base_note`` attributes: they order and space the
recordings, they are not dates. A stream holds one time base: a relative
source cannot add to a stream of UTC times (name the source apart). Each recording keeps its own start, so nothing depends on the
order files are listed or added in.

A line that cannot be read (no file, a start that does not parse, a file
that is not there) becomes a rejected object naming the manifest and its
line; the other lines are ingested.
"""

from __future__ import annotations

import csv
import io
import math
import posixpath
from dataclasses import dataclass, field
from typing import Any, Sequence

from ..errors import ConfigError
from ..fsutil import filesystem, join_url
from ..timing import NS_PER_S, to_ns
from .base import RejectedFile, SourceFile
from .files import _etag, _not_a_file

FILE_COLUMNS = ("file", "path", "url", "filename", "file_name")
START_COLUMNS = ("start", "start_utc", "start_time", "utc_start", "start_seconds", "offset_seconds")
TIME_BASES = ("utc", "relative")
RELATIVE_REFERENCE = ("relative: seconds from the collection's zero, stored as offsets from 1970-01-01T00:00:00Z; "
                      "they order and space the recordings, they are not dates")


@dataclass
class ManifestFiles:
    """Recordings whose starts a manifest (or the caller) gives.

    Parameters
    ----------
    manifest : str, optional
        CSV manifest (path or URL): columns ``file``, ``start`` and optionally ``site``.
    files : sequence of (file, start), optional
        Recordings named here instead (``--file``/``--start``): start as in a manifest.
    root : str, optional
        Folder relative file names are read from (default: the manifest's folder).
    time_base : str
        ``utc`` (starts are UTC times) or ``relative`` (seconds from the collection's zero).
    name : str
        The source's name: the first level of the store's groups.
    site : str, optional
        Site of lines that name none (default: the file's folder name).
    storage_options : dict
        fsspec options of the manifest and the recordings.
    """

    manifest: str | None = None
    files: Sequence[Any] = ()
    root: str | None = None
    time_base: str = "utc"
    name: str = "files"
    site: str | None = None
    storage_options: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.manifest is None) == (not self.files):
            raise ConfigError("give a manifest or files (each with its start), one of the two")
        if self.time_base not in TIME_BASES:
            raise ConfigError(f"time_base must be one of {', '.join(TIME_BASES)}, not {self.time_base!r}")
        self.files = [tuple(f) for f in self.files]
        if any(len(f) != 2 for f in self.files):
            raise ConfigError("files: give each as (file, start)")
        if self.root is None:
            self.root = posixpath.dirname(self.manifest) if self.manifest else ""
        self.root = (self.root or "").rstrip("/")

    def partitions(self) -> list[str]:
        return [""]  # one manifest: read once

    def _lines(self) -> tuple[list[tuple[int | None, dict[str, str]]], list[RejectedFile]]:
        if not self.manifest:
            return [(None, {"file": str(f), "start": str(s)}) for f, s in self.files], []
        fs, path = filesystem(self.manifest, self.storage_options)
        with fs.open(path, "rb") as f:
            text = f.read().decode("utf-8-sig")
        reader = csv.reader(io.StringIO(text))
        header = [h.strip().lower() for h in next(reader, [])]
        file_col = next((header.index(c) for c in FILE_COLUMNS if c in header), None)
        start_col = next((header.index(c) for c in START_COLUMNS if c in header), None)
        if file_col is None or start_col is None:
            raise ConfigError(f"{self.manifest}: a manifest needs a file column ({', '.join(FILE_COLUMNS)}) "
                              f"and a start column ({', '.join(START_COLUMNS)}); it has {', '.join(header)}")
        site_col = header.index("site") if "site" in header else None
        lines = []
        for n, cells in enumerate(reader, start=2):
            if not any(c.strip() for c in cells):
                continue
            cell = lambda i: cells[i].strip() if i is not None and i < len(cells) else ""  # noqa: E731
            lines.append((n, {"file": cell(file_col), "start": cell(start_col), "site": cell(site_col)}))
        return lines, []

    def _where(self, line: int | None) -> str:
        return f"{self.manifest}, line {line}" if self.manifest and line else "given file"

    def _start_ns(self, value: str, line: int | None) -> int:
        if self.time_base == "relative":
            seconds = float(value)
            if not math.isfinite(seconds) or seconds < 0:
                raise ValueError(f"a relative start must be 0 or more seconds, not {value!r}")
            return int(round(seconds * NS_PER_S))
        return to_ns(value)

    def _url(self, name: str) -> str:
        if "://" in name or name.startswith("/") or not self.root:
            return name
        return f"{self.root}/{name}"

    def list_partition(self, partition: str) -> list[SourceFile | RejectedFile]:
        lines, records = self._lines()
        fs = None
        listed: dict[str, dict[str, dict]] = {}  # folder -> name -> info: one listing per folder
        for line, row in lines:
            name, where = row["file"], self._where(line)
            if not name:
                records.append(RejectedFile(self.name, f"{self.manifest}#line{line}", 0, "",
                                            f"{where}: no file named"))
                continue
            url = self._url(name)
            if fs is None:
                fs, _ = filesystem(url, self.storage_options)
            path = fs._strip_protocol(url)
            folder, base = posixpath.split(path)
            if folder not in listed:
                try:
                    listed[folder] = {e["name"].rstrip("/").rsplit("/", 1)[-1]: e for e in fs.ls(folder, detail=True)}
                except FileNotFoundError:
                    listed[folder] = {}
            info = listed[folder].get(base)
            if info is None or info.get("type") == "directory":
                records.append(RejectedFile(self.name, join_url(fs, path), 0, "",
                                            f"{base}: listed in {where} but not found"))
                continue
            size, etag = int(info.get("size") or 0), _etag(info)
            unreadable = _not_a_file(path, info)
            if unreadable:
                records.append(RejectedFile(self.name, join_url(fs, path), size, etag, unreadable))
                continue
            try:
                start = self._start_ns(row["start"], line)
            except (ValueError, TypeError, OverflowError) as exc:
                records.append(RejectedFile(self.name, join_url(fs, path), size, etag,
                                            f"{base}: {where}: start {row['start']!r} does not parse ({exc})"))
                continue
            site = row.get("site") or self.site or posixpath.basename(folder) or "site"
            fields = (("time_base", self.time_base),) + ((("manifest_line", str(line)),) if line else ())
            records.append(SourceFile(self.name, site, start, join_url(fs, path), size, etag, fields))
        return sorted(records, key=lambda r: r.url)

    def stream_attributes(self, file: SourceFile) -> dict:
        origin = self.manifest or "the ingest's --start"
        if self.time_base == "relative":
            return {"time_base": "relative", "time_base_note": RELATIVE_REFERENCE, "start_times_from": origin}
        return {"time_base": "utc", "start_times_from": origin}
