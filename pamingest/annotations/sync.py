"""Attach what is new under a prefix: the planning and the report of a scheduled ``annotate``.

``attach_new(store, "s3://bucket/annotations/", "raven")`` lists the
annotation files under a folder or prefix (local, ``s3://``, ``gs://``), or
takes a list of files, and attaches those the store has not attached yet, in
batches of ``batch_files`` (one commit each). Run it as often as you like:

- a file whose name (URL) the store has not attached is read and attached;
  ``attach`` itself then skips content it already holds (the same table
  under another name);
- a file whose name the store has attached with the same content (SHA-256)
  is left alone: a run reads the files it knows again, one GET each, to
  tell; a new file costs a listing entry and a GET;
- a file whose name was attached with other content (an analyst saved a
  corrected table) is **reported as changed and not attached again**, or,
  with ``replace_changed``, **replaces** its earlier version: the old
  version's events and effort are detached and the new one attached, in one
  commit;
- a file that cannot be read or placed (its recording is not in the store
  yet, say) is listed with the reason and, as it was not attached, tried
  again by the next run: annotations may arrive before their audio.

Files are picked by the reader's file suffixes (``RavenTable.suffixes``...)
or by a glob ``pattern`` on the file name (``*.selections.txt``).
"""

from __future__ import annotations

import fnmatch
import hashlib
from dataclasses import dataclass, field
from typing import Any, Iterable

from ..errors import ConfigError
from ..fsutil import filesystem, join_url, whole_object_options
from ..store import layout
from ..store.repo import Store, StoreLocation
from ..registry import registry
from .store import AttachReport, attach, read_table

DEFAULT_BATCH_FILES = 500  # files per commit: a retry repeats at most one batch's reads


@dataclass
class AnnotationPlan:
    """What a prefix holds against what the store has attached."""

    listed: int = 0
    new: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    changed: list[tuple[str, str]] = field(default_factory=list)  # (url, reason): left as attached
    replaced: list[str] = field(default_factory=list)  # changed files attached in place of their earlier version
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (url or prefix, reason)


@dataclass
class AnnotateReport:
    """What one ``attach_new`` did: the plan, and the report of each batch it attached."""

    store: str
    format: str
    plan: AnnotationPlan
    batches: list[AttachReport] = field(default_factory=list)

    @property
    def attached(self) -> list:
        return [f for b in self.batches for f in b.files if f.streams]

    @property
    def unchanged(self) -> list:
        """Files read as new whose content the store already held (under another name)."""
        return [f for b in self.batches for f in b.files if f.unchanged and not f.streams]

    @property
    def elsewhere(self) -> list:
        """Files read whose rows all belong to sites the store has no stream of (tried again next run)."""
        return [f for b in self.batches for f in b.files if not f.streams and not f.unchanged and f.skipped_rows]

    @property
    def failed(self) -> list[tuple[str, str]]:
        return self.plan.unreadable + [item for b in self.batches for item in b.failed]

    @property
    def events(self) -> int:
        return sum(f.events for f in self.attached)

    @property
    def outside_audio(self) -> int:
        return sum(f.outside_audio for f in self.attached)

    @property
    def rejected_rows(self) -> int:
        return sum(b.rejected_rows for b in self.batches)

    @property
    def snapshot_id(self) -> str | None:
        return next((b.snapshot_id for b in reversed(self.batches) if b.snapshot_id), None)

    def summary(self) -> str:
        p = self.plan
        lines = [f"store      {self.store}",
                 f"listed     {p.listed} {self.format} files: {len(p.new)} new, {len(p.already)} already attached, "
                 f"{len(p.changed) + len(p.replaced)} changed"]
        for f in self.attached:
            lines.append(f"attached   {f.name}: {f.events} events, {f.effort} effort spans -> {', '.join(f.streams)}")
            if f.outside_audio:
                lines.append(f"  {f.outside_audio} events fall outside the ingested audio (kept)")
            lines += [f"  rejected {r}" for r in f.rejected]
        lines += [f"unchanged  {f.name}: its content is already attached to {', '.join(f.unchanged)}"
                  for f in self.unchanged]
        lines += [f"no stream  {f.name}: rows for " + ", ".join(f"{site!r} ({n})" for site, n in f.skipped_rows.items())
                  + " skipped: the store has no stream of them" for f in self.elsewhere]
        lines += [f"replaced   {url}: changed since it was attached; its earlier version's rows removed"
                  for url in p.replaced]
        lines += [f"changed    {url}: {why}" for url, why in p.changed]
        lines.append(f"failed     {len(self.failed)} files (tried again by the next run)")
        lines += [f"  - {msg}" for _, msg in self.failed]
        lines.append(f"snapshot   {self.snapshot_id or '-'}")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        p = self.plan
        return {
            "store": self.store, "format": self.format, "snapshot_id": self.snapshot_id,
            "listed": p.listed, "new": len(p.new), "already": len(p.already),
            "changed": [{"file": u, "reason": r} for u, r in p.changed], "replaced": list(p.replaced),
            "attached": [f.as_dict() for f in self.attached],
            "unchanged": [f.name for f in self.unchanged],
            "no_stream": [{"file": f.name, "skipped_rows": f.skipped_rows} for f in self.elsewhere],
            "events": self.events, "outside_audio": self.outside_audio, "rejected_rows": self.rejected_rows,
            "failed": [{"file": u, "reason": r} for u, r in self.failed],
            "commits": sum(1 for b in self.batches if b.snapshot_id),
        }


def wanted(name: str, suffixes: Iterable[str], pattern: str | None) -> bool:
    """Whether a file name is one of the format's (its suffixes) or matches ``pattern``."""
    base = name.rstrip("/").rsplit("/", 1)[-1]
    if pattern:
        return fnmatch.fnmatchcase(base.lower(), pattern.lower())
    return base.lower().endswith(tuple(s.lower() for s in suffixes))


def list_annotation_files(where: str | Iterable[str], format: str, *, pattern: str | None = None,
                          storage_options: dict | None = None) -> tuple[list[str], list[tuple[str, str]]]:
    """The annotation files under ``where`` (folders/prefixes, searched recursively, or files), sorted.

    Returns ``(urls, missing)``: a folder or file that does not exist is
    listed in ``missing`` with the reason, and the others are still listed.
    A file named explicitly is taken whatever its name; a folder's files
    are filtered by ``pattern`` or the reader's suffixes.
    """
    suffixes = tuple(getattr(registry("annotation_readers").get(format), "suffixes", ()) or ())
    if not suffixes and not pattern:
        raise ConfigError(f"the {format} reader names no file suffixes: give a pattern (e.g. '*.txt')")
    urls: set[str] = set()
    missing: list[tuple[str, str]] = []
    for item in [where] if isinstance(where, str) else list(where):
        item = str(item)
        fs, path = filesystem(item, storage_options)
        try:
            glob = any(c in path for c in "*?[")
            if glob:  # a glob names the files itself: no suffix filter
                found = [p for p in fs.glob(path) if not fs.isdir(p)]
            elif fs.isdir(path):
                found = [p for p in fs.find(path) if wanted(p, suffixes, pattern)]
            elif fs.isfile(path):
                found = [path]
            else:
                found = []
        except (OSError, ValueError) as exc:
            missing.append((item, f"{item}: cannot list: {exc}"))
            continue
        if not found and not glob and not fs.exists(path):
            missing.append((item, f"{item}: no such file or folder"))
        urls.update(join_url(fs, p) for p in found)
    return sorted(urls), missing


def attached_files(store: str | StoreLocation, store_options: dict | None = None) -> dict[str, set[str]]:
    """Annotation file name -> SHA-256 digests attached under it, over every stream of the store's tip."""
    root = Store.open(store, store_options).root()
    known: dict[str, set[str]] = {}
    for _, group in layout.iter_streams(root):
        table = read_table(group, "annotation_file", keys=("sha256", "name"))
        for name, sha in zip(table["name"], table["sha256"]):
            known.setdefault(str(name), set()).add(str(sha))
    return known


def _read_all(urls: list[str], storage_options: dict | None) -> dict[str, bytes | Exception]:
    """Whole small objects, fetched concurrently where the filesystem can (s3fs, gcsfs)."""
    if not urls:
        return {}
    fs, _ = filesystem(urls[0], storage_options)
    paths = {fs._strip_protocol(u): u for u in urls}
    got = fs.cat(list(paths), on_error="return", **whole_object_options(fs))
    return {paths[p]: v for p, v in got.items()}


def plan_annotations(store: str | StoreLocation, urls: Iterable[str], *, store_options: dict | None = None,
                     storage_options: dict | None = None) -> AnnotationPlan:
    """Which of the annotation files ``urls`` are new to the store, attached already, or changed since."""
    urls = list(urls)
    plan = AnnotationPlan(listed=len(urls))
    known = attached_files(store, store_options)
    contents = _read_all([u for u in urls if u in known], storage_options)
    for url in urls:
        if url not in known:
            plan.new.append(url)
            continue
        data = contents.get(url)
        if not isinstance(data, bytes):
            plan.unreadable.append((url, f"{url}: cannot read: {data}"))
        elif hashlib.sha256(data).hexdigest() in known[url]:
            plan.already.append(url)
        else:
            plan.changed.append((url, "changed since it was attached: not attached again (its rows would be "
                                      "added beside the earlier ones); replace it (--replace-changed) or attach "
                                      "it under a new name"))
    return plan


def attach_new(store: str | StoreLocation, where: str | Iterable[str], format: str, *, pattern: str | None = None,
               options: dict | None = None, stream: str | None = None, skip_unknown_streams: bool = True,
               batch_files: int = DEFAULT_BATCH_FILES, replace_changed: bool = False,
               store_options: dict | None = None, storage_options: dict | None = None) -> AnnotateReport:
    """Attach the annotation files under ``where`` that the store has not attached; see the module doc.

    Parameters
    ----------
    where : str or list of str
        Folders or prefixes (searched recursively) and/or files: paths,
        ``s3://``, ``gs://`` URLs.
    format : str
        Reader name (``raven``, ``sanctsound``, ``podcast-tsv``, ``orcahello``,
        ``pods-ai``, ``podcast-json``, ``audacity``).
    pattern : str, optional
        Glob on file names; default: the reader's suffixes.
    options, stream
        As for ``attach`` (reader settings; the stream the files belong to).
    skip_unknown_streams : bool
        Rows for sites the store has no stream of are skipped and counted
        (default: a bucket's products cover more sites than a store).
    batch_files : int
        Files per commit.
    replace_changed : bool
        Attach a file changed since it was attached in place of its earlier
        version (default: report it and leave the store as it is).
    """
    urls, missing = list_annotation_files(where, format, pattern=pattern, storage_options=storage_options)
    return attach_new_files(store, urls, format, options=options, stream=stream,
                            skip_unknown_streams=skip_unknown_streams, batch_files=batch_files,
                            replace_changed=replace_changed, store_options=store_options,
                            storage_options=storage_options, missing=missing)


def attach_new_files(store: str | StoreLocation, urls: Iterable[str], format: str, *, options: dict | None = None,
                     stream: str | None = None, skip_unknown_streams: bool = True,
                     batch_files: int = DEFAULT_BATCH_FILES, replace_changed: bool = False,
                     store_options: dict | None = None, storage_options: dict | None = None,
                     missing: Iterable[tuple[str, str]] = (), reattach: bool = False) -> AnnotateReport:
    """``attach_new`` for files already listed (URLs: a source's detection products, say).

    ``reattach``: files attached already are read again and replace their
    earlier version (a collection's table whose rows name recordings the
    store did not hold then, and holds now)."""
    if batch_files < 1:
        raise ConfigError(f"batch_files must be at least 1, got {batch_files}")
    plan = plan_annotations(store, urls, store_options=store_options, storage_options=storage_options)
    plan.unreadable[:0] = list(missing)
    if reattach and plan.already:
        plan.changed += [(url, "attached again: the store holds more of its recordings") for url in plan.already]
        plan.already, replace_changed = [], True
    report = AnnotateReport(str(store.url if isinstance(store, StoreLocation) else store), format, plan)
    for i in range(0, len(plan.new), batch_files):
        report.batches.append(attach(store, plan.new[i:i + batch_files], format, options=options, stream=stream,
                                     skip_unknown_streams=skip_unknown_streams, store_options=store_options,
                                     storage_options=storage_options))
    if replace_changed and plan.changed:
        changed = [url for url, _ in plan.changed]
        for i in range(0, len(changed), batch_files):
            report.batches.append(attach(store, changed[i:i + batch_files], format, options=options, stream=stream,
                                         skip_unknown_streams=skip_unknown_streams, store_options=store_options,
                                         storage_options=storage_options, replace=True))
        plan.replaced, plan.changed = changed, []
    return report
