"""Timestamped files under any fsspec URL (local folder, s3://, gs://, ...).

The start time of each file comes from its name through explicit templates
(``pamingest.sources.templates``). Listing is partitioned by the folders
under the root, so a bucket with millions of objects is listed prefix by
prefix, several at a time.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field
from typing import Any

from ..errors import TemplateError
from ..fsutil import filesystem, join_url
from .base import RejectedFile, SourceFile
from .templates import FilenameTemplate, get_templates, parse_name

AUDIO_SUFFIXES = (".wav", ".flac")


def _not_a_file(path: str, info: dict[str, Any]) -> str | None:
    """Why a listed entry is no file to read (a link that leads nowhere, a named pipe, a
    socket or device), or None.

    Local listings give such entries a size of 0, which would otherwise be
    reported as an empty file (and reading a named pipe would block).
    """
    base = path.rsplit("/", 1)[-1]
    mode = info.get("mode") or 0
    if info.get("islink"):  # only local filesystems list links
        target = info.get("destination", "?")
        try:
            mode = os.stat(path).st_mode  # what the link leads to
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return f"{base}: symbolic link loop (following {base} -> {target} never reaches a file)"
            if exc.errno == errno.ENOENT:
                return f"{base}: broken symbolic link (its target {target} does not exist)"
            return f"{base}: unreadable symbolic link to {target} ({exc.strerror})"
    elif info.get("type") != "other":  # fsspec's local type for anything but files and folders
        return None
    if mode and not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
        kind = ("a named pipe" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
                else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a special file")
        return f"{base}: not a regular file ({kind})"
    return None


def _etag(info: dict[str, Any]) -> str:
    """What tells two versions of an object apart: its ETag (S3), hash (GCS) or, for local
    files, which have neither, the modification time (a file rewritten with the same size
    must not look unchanged)."""
    tag = info.get("ETag") or info.get("etag") or info.get("md5Hash") or ""
    if not tag and info.get("mtime") is not None:
        return f"mtime:{float(info['mtime'])!r}"
    return str(tag).strip('"')


@dataclass
class TimestampedFiles:
    """Recordings whose names carry their UTC start time.

    Parameters
    ----------
    root : str
        Folder or bucket prefix: ``/data/deployment``, ``s3://bucket/prefix``.
    template : str or FilenameTemplate or list
        Shipped name (``soundtrap``, ``songmeter``, ``audiomoth``, ``sanctsound``,
        ``sanctsound-clips``) or a pattern such as ``"{site}_%Y%m%d_%H%M%S.wav"``.
    name : str
        The source's name: the first level of the store's groups.
    site : str, optional
        Site for files whose template has no ``{site}`` field.
    storage_options : dict
        fsspec options: ``anon=True``, ``key``/``secret``, ``endpoint_url``.
    suffixes : tuple of str
        Object name endings to consider (case-insensitive); others are ignored.
    partition_depth : int
        Folder levels under ``root`` that become listing partitions.
    """

    root: str
    template: Any
    name: str = "files"
    site: str | None = None
    storage_options: dict = field(default_factory=dict)
    suffixes: tuple[str, ...] = AUDIO_SUFFIXES
    partition_depth: int = 1

    def __post_init__(self) -> None:
        self.templates: tuple[FilenameTemplate, ...] = get_templates(self.template)
        self.root = self.root.rstrip("/")

    def _fs(self):
        return filesystem(self.root, self.storage_options)

    def partitions(self) -> list[str]:
        """The root itself (its direct files) and its folders down to ``partition_depth``."""
        fs, root = self._fs()
        found = [""]
        level = [root]
        for depth in range(self.partition_depth):
            nxt = []
            for prefix in level:
                for entry in fs.ls(prefix, detail=True):
                    if entry["type"] == "directory":
                        nxt.append(entry["name"].rstrip("/"))
            if depth == self.partition_depth - 1:
                found += [p[len(root) :].lstrip("/") for p in nxt]
            else:
                # Files sitting at intermediate levels belong to that level's partition.
                found += ["=" + p[len(root) :].lstrip("/") for p in nxt]
            level = nxt
        return sorted(found)

    def list_partition(self, partition: str) -> list[SourceFile | RejectedFile]:
        fs, root = self._fs()
        shallow = partition == "" or partition.startswith("=")
        prefix = f"{root}/{partition.lstrip('=')}".rstrip("/")
        if shallow:
            entries = [e for e in fs.ls(prefix, detail=True) if e["type"] != "directory"]
        else:
            entries = list(fs.find(prefix, detail=True).values())
        return records_from_listing(fs, entries, self.templates, self.name, self.site, self.suffixes)


def records_from_listing(
    fs,
    entries: list[dict[str, Any]],
    templates: tuple[FilenameTemplate, ...],
    source: str,
    site: str | None = None,
    suffixes: tuple[str, ...] = AUDIO_SUFFIXES,
) -> list[SourceFile | RejectedFile]:
    """Records for listed objects (fsspec ``info`` dicts: ``name``, ``size``, ``ETag``...).

    Objects whose names do not end with one of ``suffixes`` are ignored; names
    no template reads, and symbolic links that lead to no file, become
    RejectedFile records. Sorted by URL, so the same listing always gives the
    same records. Shared by every source that lists objects, so that a listing
    held in a file (a saved ``aws s3 ls``) gives exactly what a live listing
    would.

    Parameters
    ----------
    fs : fsspec.AbstractFileSystem
        The filesystem the entries come from (it makes their URLs).
    entries : list of dict
        Listed objects, as ``fs.ls(..., detail=True)`` or ``fs.find(..., detail=True)`` give them.
    templates : tuple of FilenameTemplate
        Name templates, tried in order.
    source : str
        The records' source name.
    site : str, optional
        Site of files whose template has no ``{site}`` field.
    suffixes : tuple of str
        Object name endings to consider (case-insensitive).
    """
    records: list[SourceFile | RejectedFile] = []
    for info in entries:
        path = info["name"]
        base = path.rsplit("/", 1)[-1]
        if not base.lower().endswith(suffixes):
            continue
        url = join_url(fs, path)
        size, etag = int(info.get("size") or 0), _etag(info)
        unreadable = _not_a_file(path, info)
        if unreadable:
            records.append(RejectedFile(source, url, size, etag, unreadable))
            continue
        try:
            start_ns, fields = parse_name(base, templates)
        except TemplateError as exc:
            records.append(RejectedFile(source, url, size, etag, str(exc)))
            continue
        file_site = fields.get("site") or site
        if not file_site:
            records.append(RejectedFile(source, url, size, etag, f"{base}: the template gives no site and none was set"))
            continue
        records.append(SourceFile(source, file_site, start_ns, url, size, etag, tuple(sorted(fields.items()))))
    return sorted(records, key=lambda r: r.url)
