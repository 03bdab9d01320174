"""Rows and files of streams: what an ingest run allocates, hands to workers, and writes.

A run's store work, in order (``pamingest.ingest`` drives it):

1. ``prepare_streams``: streams the run writes that do not exist yet are
   created empty, and sources' stream attributes updated, in a small commit
   of their own. Concurrent runs then share a stream group instead of
   racing to create it, and a run's own commit never touches a group's
   attributes (which would conflict with every other writer's).
2. ``allocate`` (on a writable session at the run's base snapshot): each
   unit gets its rows at the end of its stream, each new file its index in
   the files table; every stream's ``audio`` array is grown, and a fork of
   the session holding only that stream's growth is made for the workers.
3. Workers write audio rows through forks of their stream's fork.
4. ``write_tables``: the row, file, decoder (HLS runs) and rejected tables,
   and the row-block summary of the rows written (``store.row_blocks``).
5. ``land``: commit through ``Store.commit``. If others committed meanwhile,
   the session is rebased (disjoint changes), and ``repair`` grows arrays
   another writer created in the meantime. If the rebase meets a real
   conflict, the run is rebuilt on the new tip: streams nobody else wrote
   keep their rows (their forks are merged again, nothing is re-decoded).
   In a stream another run appended to, a unit whose files that run
   ingested is dropped (one copy); a file unit is *moved* after that run's
   rows, its encoded rows copied as they are (nothing decoded again); a
   unit continuing stored rows (a growing HLS session) is *deferred*, to be
   planned again on top of what the other run stored.
"""

from __future__ import annotations

import asyncio
import json
import pickle
from collections import defaultdict
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable

import numpy as np

from ..decode.base import Unit, UnitFile
from ..sources.base import RejectedFile
from ..errors import ConfigError, StoreUnavailableError, first_line
from ..timing import NAT
from . import layout, virtual
from .catalog import KnownFile, read_catalog
from .repo import Commit, Store, _icechunk

if TYPE_CHECKING:  # zarr is only in type hints here: `import pamingest` stays light (benchmarks/startup.py)
    import zarr


def _by_stream(units: Iterable[Unit]) -> dict[str, list[Unit]]:
    groups: dict[str, list[Unit]] = defaultdict(list)
    for unit in units:
        groups[unit.stream].append(unit)
    for path in groups:
        groups[path].sort(key=lambda u: (u.t0_ns, u.files[0].file.url))
    return groups


def prepare_streams(store: Store, specs: dict[str, tuple[layout.StreamSpec, Any]], check_rows: bool,
                    attributes: dict[str, dict]) -> Commit:
    """Create missing streams (empty) and update stream attributes that changed; one commit, or none.

    ``specs`` maps stream path -> (StreamSpec, AudioInfo); ``attributes`` maps
    stream path -> attributes a source gives it. With ``check_rows``, an
    existing stream whose rows differ from the spec's is a ConfigError.
    """

    def apply(root: zarr.Group) -> list[str]:
        changed = []
        for path in sorted(specs):
            spec, info = specs[path]
            if path in root:
                group = root[path]
                if check_rows:
                    layout.check_stream(group, spec)
                given = (attributes.get(path) or {}).get("time_base")
                have = group.attrs.get("time_base", "utc")
                if given is not None and given != have:
                    # Relative offsets beside UTC times in one stream would read as dates they are not.
                    raise ConfigError(f"stream {path} holds {have} times and this source gives {given} times: "
                                      "give the source another name (its streams are then apart)")
            else:
                group = layout.create_stream(root, spec, info)
                changed.append(path)
            extra = {k: v for k, v in (attributes.get(path) or {}).items() if k not in layout.RESERVED_ATTRS}
            # Compared as JSON: stored attributes come back from JSON (tuples as lists, and so on).
            if any(_json(group.attrs.get(k)) != _json(v) for k, v in extra.items()):
                group.attrs.update(extra)
                changed.append(path)
        return sorted(set(changed))

    return store.update(apply, lambda paths: f"pamingest: prepare streams {', '.join(paths)}")


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def allocate(store: Store, session, units: list[Unit], known: dict[str, KnownFile]) -> dict[str, bytes]:
    """Give units their rows and new files their indices; grow ``audio`` in ``session``.

    Returns each stream's fork (pickled): a copy of the session holding only
    that stream's growth, for its workers to fork from. Rows are allocated in
    a deterministic order (start time, then URL).
    """
    forks: dict[str, bytes] = {}
    sizes: dict[str, int] = {}
    for path, stream_units in sorted(_by_stream(units).items()):
        group = Store.open_root(session)[path]
        row = _assign(group, path, stream_units, known)
        sizes[path] = row
        _grow_audio(group, row)
        forks[path] = pickle.dumps(Store.fork(session))
        session.discard_changes()
    root = Store.open_root(session)
    for path, row in sizes.items():
        _grow_audio(root[path], row)
    return forks


def _assign(group: zarr.Group, path: str, units: list[Unit], known: dict[str, KnownFile]) -> int:
    """Rows at the end of the stream and file-table indices for ``units``; returns the new row count."""
    spr = int(group.attrs["row_samples"])
    row = group["audio"].shape[0]
    n_files = group["file_url"].shape[0]
    dead: dict[int, np.ndarray] | None = None  # read once, when a failed file is retried
    given: dict[str, int] = {}  # a file in several units (a duty-cycled XWAV's pieces) has one entry
    for unit in units:
        retried = None
        for uf in unit.new_files:
            prior = known.get(uf.file.url)
            if prior and prior.stream == path:
                uf.file_index = prior.file_index  # a retried file keeps its table entry
                retried = uf if prior.status == "failed" else None
            elif uf.file.url in given:
                uf.file_index = given[uf.file.url]
            else:
                uf.file_index, n_files = n_files, n_files + 1
                given[uf.file.url] = uf.file_index
        rewrite = unit.rewrite_row(spr)
        fresh = unit.new_rows(spr)
        if retried is not None and len(unit.files) == 1 and rewrite is None:
            # A failed attempt left this file's rows dead (allocated, never written): the retry
            # writes into them, so that retrying a file that keeps failing adds no rows.
            dead = _dead_rows_by_file(group) if dead is None else dead
            earlier = dead.get(retried.file_index, np.zeros(0, dtype=np.int64))
            if len(earlier) >= fresh:
                unit.rows = [int(r) for r in earlier[:fresh]]
                dead[retried.file_index] = earlier[fresh:]  # the file's next piece takes the next ones
                continue
        unit.rows = ([rewrite] if rewrite is not None else []) + list(range(row, row + fresh))
        row += fresh
    return row


def _dead_rows_by_file(group: zarr.Group) -> dict[int, np.ndarray]:
    """Rows of each file that were allocated and never written (``n_valid`` 0, no start)."""
    n = group["audio"].shape[0]
    n_valid = group["n_valid"][:n]
    start = group["chunk_start"][:n]
    rows = np.flatnonzero((n_valid == 0) & (start == NAT))
    files = group["file_index"][:n][rows]
    return {int(f): rows[files == f] for f in np.unique(files)}


def _grow_audio(group: zarr.Group, rows: int) -> None:
    audio = group["audio"]
    if audio.shape[0] != rows:
        audio.resize((rows, *audio.shape[1:]))


def write_tables(root: zarr.Group, units: list[Unit], rejected: list[RejectedFile],
                 known: dict[str, KnownFile]) -> None:
    """Row, file and decoder tables of the units' streams, and the rejected objects."""
    from . import row_blocks

    for path, stream_units in _by_stream(units).items():
        group = root[path]
        spr = int(group.attrs["row_samples"])
        layout.grow_row_arrays(group)
        written, tables, stats = [], [], []
        from ..quality import empty_stats

        for unit in stream_units:
            table = unit.row_table(spr)
            rows = np.asarray(unit.rows, dtype=np.int64)
            rewrite = unit.rewrite_row(spr)
            if unit.status != "ok":
                # Dead rows: allocated, never written. A rewritten row keeps its earlier content.
                keep = rows != (rewrite if rewrite is not None else -1)
                rows = rows[keep]
                table = {"chunk_start": np.full(len(rows), NAT, dtype=np.int64),
                         "n_valid": np.zeros(len(rows), dtype=np.int32),
                         "file_index": table["file_index"][keep], "file_offset": table["file_offset"][keep]}
            elif rewrite is not None:
                _requeue(group, rewrite)
            written.append(rows)
            tables.append(table)
            # Rows without statistics (dead rows, ingest(quality=False)) say "not computed", also where
            # they replace a row that had some.
            stats.append(unit.quality if unit.status == "ok" and unit.quality is not None
                         else empty_stats(len(rows)))
        if written:
            # One write per column for the whole commit, rows in order (a slice when they follow each
            # other, as a run's rows do), not one per unit: 24 files made 216 small writes.
            every = np.concatenate(written)
            order = np.argsort(every, kind="stable")
            layout.ROWS.write(group, every[order], {k: np.concatenate([t[k] for t in tables])[order]
                                                    for k in tables[0]})
            # Streams made before the quality table get it here, sized to their rows ("not computed").
            layout.QUALITY.create(group)
            layout.QUALITY.write(group, every[order], {k: np.concatenate([np.asarray(q[k]) for q in stats])[order]
                                                       for k in stats[0]})
        # The row-block summary readers find windows by, in the same commit as the rows.
        row_blocks.update(group, np.concatenate(written) if written else ())
        # One entry per file, also for a file in several units (a duty-cycled XWAV's pieces, which
        # succeed or fail together: fail_together): its frames are theirs together.
        entries: dict[str, list[tuple[UnitFile, Unit]]] = defaultdict(list)
        for u in stream_units:
            for uf in u.new_files:
                entries[uf.file.url].append((uf, u))
        if entries:
            first = [parts[0] for parts in entries.values()]
            layout.FILES.write(group, [uf.file_index for uf, _ in first], {
                "file_url": [uf.file.url for uf, _ in first],
                "file_etag": [uf.file.etag for uf, _ in first],
                "file_size": [uf.file.size for uf, _ in first],
                "file_start": [uf.file.start_ns for uf, _ in first],
                "file_frames": [sum(uf.samples for uf, _ in parts) if u.status == "ok" else 0
                                for parts, (_, u) in zip(entries.values(), first)],
                "file_status": [file_status(uf, u) for uf, u in first],
                "file_error": [u.error if u.status != "ok" else uf.incomplete for uf, u in first],
                "file_time_source": [uf.time_source for uf, _ in first],
            })
        for unit in stream_units:
            if unit.status != "ok":
                continue
            for record in getattr(unit.decoder, "records", lambda u: [])(unit):
                sub = group.require_group(record.group)
                if record.index is None:
                    record.table.append(sub, {k: [v] for k, v in record.values.items()})
                else:
                    record.table.write(sub, [record.index], {k: [v] for k, v in record.values.items()})
    if rejected:
        group = layout.ensure_rejected(root)
        retried = {r.url: k for r in rejected if (k := known.get(r.url)) and k.stream == layout.REJECTED_GROUP}
        fresh = [r for r in rejected if r.url not in retried]
        for r in rejected:
            if r.url in retried:
                layout.REJECTED.write(group, [retried[r.url].file_index], {"reason": [r.reason]})
        layout.REJECTED.append(group, {"url": [r.url for r in fresh], "etag": [r.etag for r in fresh],
                                       "size": [r.size for r in fresh], "source": [r.source for r in fresh],
                                       "reason": [r.reason for r in fresh]})


def fail_together(units: list[Unit]) -> None:
    """A file in several units (a duty-cycled XWAV's pieces) is stored whole or not at all: when one
    of its units failed, the others fail with its reason (their rows left dead, their forks dropped)."""
    failed: dict[str, str] = {}
    for unit in units:
        if unit.status != "ok":
            for uf in unit.new_files:
                failed.setdefault(uf.file.url, unit.error)
    for unit in units:
        why = next((failed[uf.file.url] for uf in unit.new_files if uf.file.url in failed), None)
        if unit.status == "ok" and why is not None:
            unit.status, unit.error, unit.forks, unit.quality = "failed", why, [], None


def file_status(uf: UnitFile, unit: Unit) -> str:
    """A file's status in the files table: ``failed`` with its unit, else ``ok``, or ``partial`` when
    it ends before its header says (stored up to there; ``file_error`` says where and why)."""
    if unit.status != "ok":
        return unit.status
    return "partial" if uf.incomplete else "ok"


def _requeue(group: zarr.Group, row: int) -> None:
    """A rewritten row holds more audio than when it was scored: queue it again for every labeller."""
    for name, array in group.arrays():
        if name.startswith("status__") and row < array.shape[0] and int(array[row]) != 0:
            array[row] = 0
            score = group.get(name.replace("status__", "score__", 1))
            if score is not None and row < score.shape[0]:
                score[row] = np.nan


def repair(session, streams: Iterable[str]) -> None:
    """After a rebase: grow per-row arrays that another writer created meanwhile at the old length."""
    root = Store.open_root(session)
    for path in streams:
        if path in root:
            layout.grow_row_arrays(root[path])


def raced_streams(base: zarr.Group, tip: zarr.Group, units: list[Unit], known_base: dict[str, KnownFile],
                  known_tip: dict[str, KnownFile]) -> set[str]:
    """Streams another run wrote to between ``base`` and ``tip``: their audio or files table grew,
    or one of the units' files is now recorded differently than at ``base``."""
    raced = set()
    for path, stream_units in _by_stream(units).items():
        if path not in tip or any(base[path][name].shape != tip[path][name].shape for name in ("audio", "file_url")):
            raced.add(path)
        elif any(known_tip.get(uf.file.url) != known_base.get(uf.file.url)
                 for u in stream_units for uf in u.new_files):
            raced.add(path)
    return raced


@dataclass
class Landing:
    """What a run landed: the commit, the units in it, and what a conflict took out of it."""

    commit: Commit
    units: list[Unit]
    rejected: list[RejectedFile]
    deferred: list[Unit] = field(default_factory=list)  # to plan again on top of another run's rows
    dropped: list[Unit] = field(default_factory=list)  # their files were ingested by another run
    moved: int = 0  # units whose rows were copied after another run's rows


def _chunk_key(stream: str, row: int, array: zarr.Array) -> str:
    return f"{stream}/audio/" + array.metadata.encode_chunk_key((row, 0, 0))


def row_writer(session, array_path: str, audio: zarr.Array) -> Callable[[int, np.ndarray], Future]:
    """``write(first_row, rows)``: whole rows into ``audio`` through ``session``'s store.

    For FLAC streams the rows are encoded (concurrently, off the GIL) and their
    chunks set directly, as zarr would store them (a row equal to the fill
    value is not stored): zarr's own write path costs ~0.4 ms and a copy of
    the row per chunk on top of the encode (benchmarks/ingest_throughput.py).
    ``write`` returns at once with a future that is done when every chunk is
    set: the caller decodes its next rows meanwhile, and must leave ``rows``
    untouched until then. Other codecs go through zarr (the future is done
    when ``write`` returns).
    """
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import _get_loop

    from .codec import FlacCodec

    codecs = audio.metadata.codecs
    if not (len(codecs) == 1 and isinstance(codecs[0], FlacCodec) and audio.metadata.fill_value == 0):
        refused = _icechunk().IcechunkError  # what the store raises; an encoder's failure is not one

        def through_zarr(first: int, rows: np.ndarray) -> Future:
            done: Future = Future()
            try:
                audio[first : first + len(rows)] = rows
            except refused as exc:
                raise StoreUnavailableError(_refused(array_path, first, exc)) from exc
            done.set_result(None)
            return done

        return through_zarr
    codec, prototype, store = codecs[0], default_buffer_prototype(), session.store

    async def one(row: int, samples: np.ndarray) -> None:
        key = f"{array_path}/" + audio.metadata.encode_chunk_key((row, 0, 0))
        encoded = await asyncio.to_thread(codec.encode_samples, samples) if samples.any() else None
        try:
            if encoded is None:
                await store.delete(key)
            else:
                await store.set(key, prototype.buffer.from_bytes(encoded))
        except Exception as exc:  # noqa: BLE001 - the store's failure, not the recording's
            raise StoreUnavailableError(_refused(array_path, row, exc)) from exc

    def write(first: int, rows: np.ndarray) -> Future:
        async def all_rows() -> None:
            # Done when every row's write is, failed or not: a write left running when a failure
            # returned would outlive its task (and, at exit, the interpreter: Icechunk then aborts).
            settled = await asyncio.gather(*(one(first + i, rows[i]) for i in range(len(rows))),
                                           return_exceptions=True)
            for outcome in settled:
                if isinstance(outcome, BaseException):
                    raise outcome

        # zarr's event loop (the one its own writes use), without waiting on it here
        return asyncio.run_coroutine_threadsafe(all_rows(), _get_loop())

    return write


def _refused(array_path: str, row: int, exc: BaseException) -> str:
    return f"{array_path} row {row}: the store refused the write ({type(exc).__name__}: {first_line(str(exc))})"


def copy_rows(source, target, stream: str, pairs: list[tuple[int, int]], audio: zarr.Array) -> None:
    """Copy the encoded audio chunks ``old row -> new row`` from one session's store to another's."""
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    prototype = default_buffer_prototype()

    async def one(old: int, new: int) -> None:
        data = await source.store.get(_chunk_key(stream, old, audio), prototype=prototype)
        if data is not None:  # a row of zeros is not stored (the fill value)
            await target.store.set(_chunk_key(stream, new, audio), data)

    async def all_pairs() -> None:
        await asyncio.gather(*(one(old, new) for old, new in pairs))

    sync(all_pairs())


def land(store: Store, session, base: str, units: list[Unit], rejected: list[RejectedFile],
         known: dict[str, KnownFile], forks: dict[str, bytes],
         message: Callable[[list[Unit], list[RejectedFile]], str],
         metadata: Callable[[list[Unit], list[RejectedFile]], dict]) -> Landing:
    """Merge the finished units' writes, write the tables and commit (see the module docstring)."""
    fail_together(units)
    for unit in units:
        if unit.status == "ok" and unit.forks:
            session.merge(*unit.forks)
    with store.writing("the run's tables"):  # their larger chunks are written to storage at once
        write_tables(Store.open_root(session), units, rejected, known)
    state = Landing(Commit(None), list(units), list(rejected))
    base_root = store.root(base)
    written = session  # the session holding every unit's encoded rows, where they are copied from
    original_rows = {id(u): list(u.rows) for u in units}

    def rebuild():
        fresh = store.writable()
        tip = store.root(fresh.snapshot_id)
        known_tip = read_catalog(tip)
        raced = raced_streams(base_root, tip, units, known, known_tip)
        state.units, state.deferred, state.dropped, state.moved = [], [], [], 0
        moving: dict[str, list[Unit]] = defaultdict(list)
        for unit in units:
            unit.rows = list(original_rows[id(unit)])
            taken = [uf for uf in unit.new_files if known_tip.get(uf.file.url) != known.get(uf.file.url)]
            if unit.stream not in raced:
                state.units.append(unit)
            elif taken and len(taken) == len(unit.new_files):
                state.dropped.append(unit)  # another run ingested (or rejected) these files meanwhile
            elif taken or unit.continues is not None or unit.stream not in tip:
                # Its plan depends on what another run changed (part of an HLS run taken, or the
                # stored run it continues grown): planned again, on top of that run's rows.
                state.deferred.append(unit)
            else:
                moving[unit.stream].append(unit)
        # An object another run recorded meanwhile is its; the rest keep their place.
        state.rejected = [r for r in rejected if known_tip.get(r.url) == known.get(r.url)]
        for path in sorted({u.stream for u in state.units}):
            fresh.merge(pickle.loads(forks[path]))
        for unit in state.units:
            if unit.status == "ok" and unit.forks:
                fresh.merge(*unit.forks)
        root = Store.open_root(fresh)
        with store.writing("the run's rows and tables"):
            for path, stream_units in sorted(moving.items()):
                group = root[path]
                old_rows = {id(u): list(u.rows) for u in stream_units}
                _grow_audio(group, _assign(group, path, stream_units, known_tip))
                for unit in stream_units:
                    if unit.status != "ok":
                        continue
                    if virtual.is_virtual(group):
                        # References, not bytes: copying the chunks would read the recordings and
                        # store their samples, the copy a virtual stream exists to avoid.
                        spr = int(group.attrs["row_samples"])
                        virtual.set_refs(fresh, f"{path}/audio", virtual.object_ref(unit), unit.rows,
                                         unit.write_from(spr), unit.n_samples, spr)
                    else:
                        copy_rows(written, fresh, path, list(zip(old_rows[id(unit)], unit.rows)), group["audio"])
                state.units += stream_units
                state.moved += len({u.files[0].file.url for u in stream_units})  # a file's pieces are one file
            write_tables(Store.open_root(fresh), state.units, state.rejected, known_tip)
        return fresh if fresh.has_uncommitted_changes else None

    state.commit = store.commit(
        session,
        lambda: message(state.units, state.rejected),
        lambda: metadata(state.units, state.rejected),
        repair=lambda s: repair(s, sorted({u.stream for u in state.units})),
        rebuild=rebuild)
    return state


__all__ = ["Landing", "allocate", "copy_rows", "fail_together", "file_status", "land", "prepare_streams", "raced_streams",
           "repair", "write_tables"]
