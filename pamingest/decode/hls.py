"""HLS sessions: MPEG-TS segments holding AAC, decoded with PyAV as one signal.

Facts this module relies on (measured on the Orcasound fixture segments,
docs/sources.md):

- PyAV's float decode, scaled by 32768, rounded and clipped to int16, equals
  ffmpeg's ``s16`` decode bit for bit; every AAC-LC frame gives 1024 samples
  (the encoder's priming samples are kept at the head of a session, as ffmpeg
  keeps them).
- ffmpeg's AAC decoder carries state across frames: the MDCT overlap (one
  frame) and the random generator of perceptual noise substitution, which
  runs from the decoder's creation. Priming a decoder with the previous
  segment removes the overlap glitch but not the noise generator's history,
  so a slice primed that way is *not* bit-identical to a decode from the
  session's first segment (measured: 19,820 of 960,512 samples differ in
  live002 primed by live001 versus decoded from live000).

So the canonical decode of a session restarts at fixed *blocks* of
``block_segments`` consecutive segment numbers, each block primed with the
segment before it. Any slicing of a session into tasks, a whole-session
ingest and a later run continuing a grown session all decode the same
blocks the same way: their samples are identical by construction. Within a
block the samples equal an uninterrupted decode.

Sessions -> runs -> units (``HlsDecoder.plan``). A session folder's segments
share one clock (MPEG-TS PTS). Consecutive segments whose first PTS is where
the previous one's samples end (within one AAC frame) form a *run*: one
continuous signal, timed from the run's first PTS and then by sample count,
so the few-tick PTS jitter between segments never creates fake gaps or
overlaps. A missing, skipped or discontinuous segment ends the run; the next
starts at its own PTS, so gaps stay gaps. Each stream keeps a runs table
(``RUNS``) so that a later ingest of a growing session continues the run
exactly where the last one stopped: same sample axis, same decode blocks,
its partial last row rewritten in full.
"""

from __future__ import annotations

import io
import re
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np

from ..errors import DecodeError
from ..fsutil import describe_read_error, filesystem
from ..store.tables import Column, Table
from ..timing import NAT, NS_PER_S
from .base import AudioInfo, Continuation, PlanContext, TableRecord, Unit, UnitFile

if TYPE_CHECKING:
    # pamingest.sources.orcasound imports this module's constants, so that this module can be
    # imported first (a Dask worker unpickling an HlsDecoder): SourceFile is imported where used.
    from ..sources.base import SourceFile

AAC_FRAME = 1024
# ffmpeg's MPEG-TS muxer starts timestamps at 2 x its max_delay of 0.7 s.
MPEGTS_START_PTS_S = 1.4
# Segments shorter than this are defects (0.085 s segments are seen in the wild).
MIN_SEGMENT_SECONDS = 1.0
# AAC frames of digital silence are a few bytes; a segment made only of such
# frames is decoded to confirm it is all zeros.
SILENT_FRAME_BYTES = 16
DEFAULT_BLOCK_SEGMENTS = 64
SEGMENT_NAME = re.compile(r"live(\d+)\.ts\Z")

# One entry per run of contiguous segments, in the stream group's "runs" group.
RUNS_GROUP = "runs"
RUNS = Table("run", {
    "run_session": Column(str, ""),
    "run_t0": Column("int64", NAT, time=True),
    "run_first_pts": Column("float64", float("nan")),
    "run_samples": Column("int64", 0),
    "run_first_segment": Column("int64", -1),
    "run_last_segment": Column("int64", -1),
    "run_first_row": Column("int64", -1),
    "run_last_row": Column("int64", -1),
})


@dataclass(frozen=True)
class SegmentInfo(AudioInfo):
    """What demuxing a segment tells, without decoding it: ``frames`` counts samples (AAC
    frames x 1024), ``first_pts`` is in ``time_base`` ticks."""

    first_pts: int = 0
    time_base: float = 0.0

    @property
    def samples(self) -> int:
        return self.frames

    @property
    def first_pts_s(self) -> float:
        return self.first_pts * self.time_base


def segment_number(url: str) -> int:
    m = SEGMENT_NAME.search(url)
    if not m:
        raise DecodeError(f"{url} is not an HLS segment name (liveN.ts)")
    return int(m.group(1))


def session_url(url: str) -> str:
    return url.rsplit("/", 1)[0] + "/"


def _read(url: str, storage_options: dict | None) -> bytes:
    fs, path = filesystem(url, storage_options)
    try:
        return fs.cat_file(path)
    except Exception as exc:  # noqa: BLE001
        raise DecodeError(describe_read_error(exc)) from exc


def _packets(data: bytes):
    import av

    try:
        container = av.open(io.BytesIO(data), format="mpegts")
    except Exception as exc:  # noqa: BLE001 - PyAV raises several error types
        raise DecodeError(f"not a readable MPEG-TS segment ({exc})") from exc
    with container:
        if not container.streams.audio:
            raise DecodeError("MPEG-TS segment holds no audio stream")
        stream = container.streams.audio[0]
        if stream.codec_context.name != "aac":
            raise DecodeError(f"audio codec is {stream.codec_context.name}, not AAC")
        time_base = float(stream.time_base)
        try:
            packets = [p for p in container.demux(stream) if p.size]
        except Exception as exc:  # noqa: BLE001
            raise DecodeError(f"demuxing failed ({exc})") from exc
        return stream.codec_context.sample_rate, stream.codec_context.channels, time_base, packets


def probe_segment(url: str, size: int | None = None, storage_options: dict | None = None,
                  min_seconds: float = MIN_SEGMENT_SECONDS) -> SegmentInfo:
    """Demux a segment: rate, channels, frames, first PTS. Flags short, silent, broken ones."""
    if size == 0:
        raise DecodeError("empty object (0 bytes)")
    data = _read(url, storage_options)
    rate, channels, time_base, packets = _packets(data)
    if not packets or packets[0].pts is None:
        raise DecodeError("segment holds no AAC frame with a timestamp")
    if not rate or not channels:
        raise DecodeError("segment's AAC stream has no sample rate or channel layout")
    info = SegmentInfo(int(rate), int(channels), len(packets) * AAC_FRAME, "MPEG-TS", "AAC", "int16", 16,
                       first_pts=int(packets[0].pts), time_base=time_base)
    seconds = info.samples / info.sample_rate
    if seconds < min_seconds:
        raise DecodeError(f"short segment: {seconds:.3f} s ({len(packets)} AAC frames)")
    if max(p.size for p in packets) <= SILENT_FRAME_BYTES:
        samples = _decode_packets(_new_decoder(), packets)
        if not np.any(samples):
            raise DecodeError(f"silent segment: {seconds:.3f} s of digital zeros")
    return info


def _new_decoder():
    import av

    return av.CodecContext.create("aac", "r")


def _decode_packets(decoder, packets) -> np.ndarray:
    """int16 (n, channels): PyAV float decode scaled as ffmpeg's s16 conversion does."""
    out = []
    for packet in packets:
        try:
            frames = decoder.decode(packet)
        except Exception as exc:  # noqa: BLE001
            raise DecodeError(f"AAC decode failed at PTS {packet.pts} ({exc})") from exc
        for frame in frames:
            out.append(frame.to_ndarray())
    if not out:
        return np.zeros((0, 0), dtype=np.int16)
    planar = np.concatenate(out, axis=1)  # fltp: (channels, n)
    return np.clip(np.round(planar.T * 32768.0), -32768, 32767).astype(np.int16)


@dataclass(frozen=True)
class RunSegment:
    """A segment's place in a contiguous run: decode it to get samples [start, start + samples)."""

    url: str
    number: int  # the N of liveN.ts
    start: int  # sample offset of its first sample in the run
    samples: int


def _prefetch(urls: Sequence[str], storage_options: dict | None, batch: int = 8) -> Iterator[bytes]:
    """Each URL's bytes in order, fetched ``batch`` at a time concurrently (fsspec ``cat``).

    Segments are ~200 kB: fetched one by one, an object store's latency, not
    decoding, would be the cost of a task. The next batch downloads in a
    thread while the current one is decoded; at most two batches are held.
    """
    if not urls:
        return
    from concurrent.futures import ThreadPoolExecutor

    fs, _ = filesystem(urls[0], storage_options)

    def fetch(k: int) -> list[bytes]:
        paths = [fs._strip_protocol(u) for u in urls[k : k + batch]]
        try:
            got = fs.cat(paths, on_error="raise")
        except Exception as exc:  # noqa: BLE001
            raise DecodeError(describe_read_error(exc)) from exc
        if not isinstance(got, dict):
            got = {paths[0]: got}
        return [got[p] for p in paths]

    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(fetch, 0)
        for k in range(0, len(urls), batch):
            current = pending.result()
            if k + batch < len(urls):
                pending = pool.submit(fetch, k + batch)
            yield from current


def decode_run(segments: Sequence[RunSegment], start: int, stop: int, storage_options: dict | None = None,
               block_segments: int = DEFAULT_BLOCK_SEGMENTS, primer: RunSegment | None = None) -> Iterator[np.ndarray]:
    """Yield the run's int16 samples ``[start, stop)`` in the canonical block decode.

    ``segments`` are the run's segments in order; ``primer`` is the segment
    just before the run's first one when the run continues an earlier decode
    block (never for a run's true start).
    """
    if stop <= start:
        return
    first = next(i for i, s in enumerate(segments) if s.start + s.samples > start)
    # Walk back to the start of the decode block holding the first wanted sample.
    b = first
    while b > 0 and segments[b].number // block_segments == segments[b - 1].number // block_segments:
        b -= 1
    last = next((i for i in range(b, len(segments)) if segments[i].start >= stop), len(segments))
    prime = segments[b - 1] if b > 0 else primer
    if prime is not None and prime.number // block_segments == segments[b].number // block_segments:
        prime = None
    wanted = ([prime] if prime is not None else []) + list(segments[b:last])
    data = _prefetch([s.url for s in wanted], storage_options)
    decoder = _new_decoder()
    previous_packets = None
    if prime is not None:
        previous_packets = _packets(next(data))[3]
        _decode_packets(decoder, previous_packets)
    for i in range(b, last):
        seg = segments[i]
        packets = _packets(next(data))[3]
        if i > b and seg.number // block_segments != segments[i - 1].number // block_segments:
            decoder = _new_decoder()  # block boundary: fresh decoder primed by the previous segment
            _decode_packets(decoder, previous_packets)
        samples = _decode_packets(decoder, packets)
        previous_packets = packets
        if len(samples) != seg.samples:
            raise DecodeError(f"{seg.url}: decoded {len(samples)} samples, demuxing announced {seg.samples}")
        lo, hi = max(start, seg.start), min(stop, seg.start + seg.samples)
        if hi > lo:
            yield samples[lo - seg.start : hi - seg.start]


# ---------------------------------------------------------------- sessions -> runs -> units

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


class _StoredRuns:
    """What the store already holds for HLS streams, read once per planning.

    Planning a backfill touches thousands of sessions: the known files are
    indexed by session folder once, and each stream's runs and files tables
    are read once, rather than once per session.
    """

    def __init__(self, root, known: dict) -> None:
        self.root = root
        self.by_session: dict[tuple[str, str], list] = defaultdict(list)
        for k in known.values():
            if k.status == "ok" and SEGMENT_NAME.search(k.url):
                self.by_session[(k.stream, session_url(k.url))].append(k)
        self._tables: dict[str, dict[str, np.ndarray] | None] = {}

    def tables(self, stream: str) -> dict[str, np.ndarray] | None:
        if stream not in self._tables:
            group = self.root[stream] if stream in self.root else None
            if group is None or RUNS_GROUP not in group:
                self._tables[stream] = None
            else:
                tables = RUNS.read(group[RUNS_GROUP])
                tables["file_frames"] = group["file_frames"][:]
                tables["file_start"] = group["file_start"][:]
                self._tables[stream] = tables
        return self._tables[stream]

    def latest_run(self, stream: str, session: str) -> _Run | None:
        """The latest run of ``session`` in a stream, with its segments, or None."""
        from ..sources.base import SourceFile

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
            unit_files.append(UnitFile(sf, pos, n, new=False, file_index=k.file_index, time_source="pts"))
            pos += n
        samples = int(t["run_samples"][i])
        return _Run(i, session, int(t["run_t0"][i]), float(t["run_first_pts"][i]), first_seg, last_seg,
                    samples, int(t["run_first_row"][i]), int(t["run_last_row"][i]), unit_files, samples, stream)


@dataclass(frozen=True)
class RunSource:
    """What a worker needs to decode part of a run: its segments and the decode block size."""

    segments: tuple[RunSegment, ...]
    block_segments: int


class HlsDecoder:
    """MPEG-TS/AAC segments of HLS sessions, joined into runs (see the module docstring).

    Parameters
    ----------
    capture_delay_s : float
        Seconds added to PTS-derived times (the node's capture start-up delay).
    block_segments : int
        Segment numbers per canonical decode block.
    tolerance_samples : int
        How far a segment's first PTS may be from where the run's samples end
        and still continue the run.
    """

    name = "hls"

    def __init__(self, capture_delay_s: float = 0.0, block_segments: int = DEFAULT_BLOCK_SEGMENTS,
                 tolerance_samples: int = AAC_FRAME) -> None:
        self.capture_delay_s = float(capture_delay_s)
        self.block_segments = int(block_segments)
        self.tolerance_samples = int(tolerance_samples)

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and vars(self) == vars(other)

    def __hash__(self) -> int:
        return hash((self.capture_delay_s, self.block_segments, self.tolerance_samples))

    def __repr__(self) -> str:
        return (f"HlsDecoder(capture_delay_s={self.capture_delay_s}, block_segments={self.block_segments}, "
                f"tolerance_samples={self.tolerance_samples})")

    def probe(self, file: SourceFile, storage_options: dict) -> SegmentInfo:
        return probe_segment(file.url, file.size, storage_options)

    def read(self, source: RunSource, start: int, stop: int, storage_options: dict) -> Iterator[np.ndarray]:
        return decode_run(source.segments, start, stop, storage_options, block_segments=source.block_segments)

    def plan(self, probed: Sequence[tuple[SourceFile, SegmentInfo]], context: PlanContext) -> list[Unit]:
        """Units for new segments: runs continued from the store or started at their PTS."""
        from ..sources.base import SourceFile

        by_session: dict[tuple[str, str], list[tuple[SourceFile, SegmentInfo]]] = defaultdict(list)
        for file, seg in probed:
            by_session[(file.site, session_url(file.url))].append((file, seg))
        units: list[Unit] = []
        stored = _StoredRuns(context.root, context.known)
        for (site, session), segs in sorted(by_session.items()):
            segs.sort(key=lambda fs: segment_number(fs[0].url))
            epoch_ns = segs[0][0].start_ns
            run: _Run | None = None
            for file, seg in segs:
                stream = context.stream_path(file, seg)
                if run is None:
                    run = stored.latest_run(stream, session)
                number = segment_number(file.url)
                contiguous = (
                    run is not None and run.stream == stream and number > run.last_segment
                    and abs(seg.first_pts_s - run.end_pts_s(seg.sample_rate)) * seg.sample_rate
                    <= self.tolerance_samples
                )
                if not contiguous:
                    if run is not None and run.samples > run.old_samples:
                        units.append(self._unit(run))
                    t0 = epoch_ns + int(round((seg.first_pts_s - MPEGTS_START_PTS_S + self.capture_delay_s)
                                              * NS_PER_S))
                    run = _Run(None, session, t0, seg.first_pts_s, number, number, 0, -1, -1, [], 0, stream)
                run.info = seg
                file_start = run.t0_ns + int(round((seg.first_pts_s - run.first_pts_s) * NS_PER_S))
                sf = SourceFile(file.source, file.site, file_start, file.url, file.size, file.etag, file.fields)
                run.files.append(UnitFile(sf, run.samples, seg.samples, time_source="pts"))
                run.samples += seg.samples
                run.last_segment = number
            if run is not None and run.samples > run.old_samples:
                units.append(self._unit(run))
        return units

    def _unit(self, run: _Run) -> Unit:
        seg = run.info
        info = AudioInfo(seg.sample_rate, seg.channels, run.samples, seg.format, seg.subtype, seg.store_dtype,
                         seg.bits, run.t0_ns, "pts")
        segments = tuple(RunSegment(f.file.url, segment_number(f.file.url), f.start, f.samples) for f in run.files)
        continues = Continuation(run.old_samples, run.last_row) if run.old_samples else None
        # The run itself stays on the client (Unit.state): records() writes it once rows are allocated.
        return Unit(run.stream, info, run.t0_ns, run.samples, run.files, self,
                    RunSource(segments, self.block_segments), continues, state=run)

    def records(self, unit: Unit) -> list[TableRecord]:
        """The unit's entry in the stream's runs table (updated when it continued a stored run)."""
        run: _Run = unit.state
        values = {
            "run_session": run.session, "run_t0": run.t0_ns, "run_first_pts": run.first_pts_s,
            "run_samples": run.samples, "run_first_segment": run.first_segment,
            "run_last_segment": run.last_segment,
            "run_first_row": run.first_row if run.first_row >= 0 else unit.rows[0],
            "run_last_row": unit.rows[-1],
        }
        return [TableRecord(RUNS, RUNS_GROUP, run.index, values)]

