"""HLS sessions -> runs of contiguous segments -> units to write.

A session folder's segments share one clock (MPEG-TS PTS). Consecutive
segments whose first PTS is where the previous one's samples end (within
one AAC frame) form a *run*: one continuous signal, timed from the run's
first PTS and then by sample count, so the few-tick PTS jitter between
segments never creates fake gaps or overlaps. A missing, skipped or
discontinuous segment ends the run; the next starts at its own PTS, so
gaps stay gaps.

Each stream keeps a runs table (``layout.RUN_ARRAYS``) so that a later
ingest of a growing session continues the run exactly where the last one
stopped: same sample axis, same decode blocks, its partial last row
rewritten in full.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import zarr

from .decode.hls import AAC_FRAME, MPEGTS_START_PTS_S, RunSegment, SegmentInfo
from .decode.sndfile import AudioInfo
from .plan import Unit, UnitFile
from .sources.base import SourceFile
from .store import layout
from .store.catalog import KnownFile
from .timing import NS_PER_S

SEGMENT_NAME = re.compile(r"live(\d+)\.ts\Z")


def segment_number(url: str) -> int:
    m = SEGMENT_NAME.search(url)
    if not m:
        raise ValueError(f"{url} is not an HLS segment name (liveN.ts)")
    return int(m.group(1))


def session_url(url: str) -> str:
    return url.rsplit("/", 1)[0] + "/"


def segment_audio_info(seg: SegmentInfo) -> AudioInfo:
    return AudioInfo(seg.sample_rate, seg.channels, seg.samples, "MPEG-TS", "AAC", "int16", 16)


@dataclass
class _Run:
    index: int | None  # runs-table row, None for a new run
    session: str
    t0_ns: int
    first_pts_s: float
    first_segment: int
    last_segment: int
    samples: int
    first_row: int
    last_row: int
    files: list[UnitFile]
    old_samples: int
    stream: str = ""
    info: AudioInfo | None = None

    def end_pts_s(self, rate: int) -> float:
        return self.first_pts_s + self.samples / rate


class _StoreState:
    """What the store already holds for HLS streams, read once per planning.

    Planning a backfill touches thousands of sessions: the known files are
    indexed by session folder once, and each stream's runs and files tables
    are read once, rather than once per session.
    """

    def __init__(self, root: zarr.Group, known: dict[str, KnownFile]) -> None:
        self.root = root
        self.by_session: dict[tuple[str, str], list[KnownFile]] = defaultdict(list)
        for k in known.values():
            if k.status == "ok" and SEGMENT_NAME.search(k.url):
                self.by_session[(k.stream, session_url(k.url))].append(k)
        self._tables: dict[str, dict[str, np.ndarray] | None] = {}

    def tables(self, stream: str) -> dict[str, np.ndarray] | None:
        if stream not in self._tables:
            group = self.root[stream] if stream in self.root else None
            if group is None or layout.RUNS_GROUP not in group:
                self._tables[stream] = None
            else:
                runs = group[layout.RUNS_GROUP]
                tables = {name: np.asarray(runs[name][:]) for name in layout.RUN_ARRAYS}
                tables["file_frames"] = group["file_frames"][:]
                tables["file_start"] = group["file_start"][:]
                self._tables[stream] = tables
        return self._tables[stream]

    def latest_run(self, stream: str, session: str) -> "_Run | None":
        """The latest run of ``session`` in a stream, with its segments, or None."""
        t = self.tables(stream)
        if t is None:
            return None
        hits = np.flatnonzero(t["run_session"] == session)
        if not len(hits):
            return None
        i = int(hits[np.argmax(t["run_last_segment"][hits])])
        first_seg, last_seg = int(t["run_first_segment"][i]), int(t["run_last_segment"][i])
        files = sorted((k for k in self.by_session.get((stream, session), [])
                        if first_seg <= segment_number(k.url) <= last_seg),
                       key=lambda k: segment_number(k.url))
        unit_files, pos = [], 0
        for k in files:
            n = int(t["file_frames"][k.file_index])
            sf = SourceFile("", "", int(t["file_start"][k.file_index]), k.url, k.size, k.etag)
            unit_files.append(UnitFile(sf, pos, n, new=False, file_index=k.file_index))
            pos += n
        samples = int(t["run_samples"][i])
        return _Run(i, session, int(t["run_t0"][i]), float(t["run_first_pts"][i]), first_seg, last_seg,
                    samples, int(t["run_first_row"][i]), int(t["run_last_row"][i]), unit_files, samples, stream)


def plan_runs(root: zarr.Group, segments: list[tuple[SourceFile, SegmentInfo]], known: dict[str, KnownFile],
              row_samples_for, capture_delay_s: float, block_segments: int,
              tolerance_samples: int = AAC_FRAME) -> list[Unit]:
    """Units for new segments: runs continued from the store or started at their PTS.

    ``row_samples_for(stream, sample_rate)`` gives the stream's row length.
    """
    by_session: dict[tuple[str, str], list[tuple[SourceFile, SegmentInfo]]] = defaultdict(list)
    for file, seg in segments:
        by_session[(file.site, session_url(file.url))].append((file, seg))
    units: list[Unit] = []
    state = _StoreState(root, known)
    for (site, session), segs in sorted(by_session.items()):
        segs.sort(key=lambda fs: segment_number(fs[0].url))
        epoch_ns = segs[0][0].start_ns
        run: _Run | None = None
        for file, seg in segs:
            info = segment_audio_info(seg)
            stream = layout.stream_path(file.source, site, info)
            if run is None:
                run = state.latest_run(stream, session)
            number = segment_number(file.url)
            contiguous = (
                run is not None and run.stream == stream and number > run.last_segment
                and abs(seg.first_pts_s - run.end_pts_s(seg.sample_rate)) * seg.sample_rate <= tolerance_samples
            )
            if not contiguous:
                if run is not None and run.samples > run.old_samples:
                    units.append(_unit(run, row_samples_for, block_segments))
                t0 = epoch_ns + int(round((seg.first_pts_s - MPEGTS_START_PTS_S + capture_delay_s) * NS_PER_S))
                run = _Run(None, session, t0, seg.first_pts_s, number, number, 0, -1, -1, [], 0, stream)
            run.info = info
            file_start = run.t0_ns + int(round((seg.first_pts_s - run.first_pts_s) * NS_PER_S))
            sf = SourceFile(file.source, file.site, file_start, file.url, file.size, file.etag, file.fields)
            run.files.append(UnitFile(sf, run.samples, seg.samples))
            run.samples += seg.samples
            run.last_segment = number
        if run is not None and run.samples > run.old_samples:
            units.append(_unit(run, row_samples_for, block_segments))
    return units


def _unit(run: _Run, row_samples_for, block_segments: int) -> Unit:
    stream, info = run.stream, run.info
    spr = row_samples_for(stream, info.sample_rate)
    info = AudioInfo(info.sample_rate, info.channels, run.samples, info.format, info.subtype, info.store_dtype, info.bits)
    write_from = (run.old_samples // spr) * spr
    rewrite = run.last_row if (run.old_samples % spr) else None
    segments = tuple(RunSegment(f.file.url, segment_number(f.file.url), f.start, f.samples) for f in run.files)
    unit = Unit(stream, info, run.t0_ns, run.samples, run.files, ("hls", segments, block_segments),
                write_from=write_from, rewrite_row=rewrite)
    unit.run = {"index": run.index, "session": run.session, "t0_ns": run.t0_ns, "first_pts_s": run.first_pts_s,
                "first_segment": run.first_segment, "last_segment": run.last_segment, "samples": run.samples,
                "first_row": run.first_row}
    return unit
