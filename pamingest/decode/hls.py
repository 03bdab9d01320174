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
blocks the same way: their samples are identical by construction (a run
records its block size in the runs table, and a later run continuing it
keeps that size). Within a block the samples equal an uninterrupted decode.
Blocks are also the unit of parallel work: ingest starts tasks at block
starts (``HlsDecoder.restarts``), so no segment is decoded by two tasks
except the one priming each block.

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
from ..fsutil import describe_read_error, fetch_pool, filesystem, whole_object_options
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
# Decode blocks are the unit of parallel work (a task never starts inside one):
# 16 segments (160 s) keep two cores busy on a 30-minute session, and priming
# costs one extra segment decode per block (~2% of the work, without encoding).
DEFAULT_BLOCK_SEGMENTS = 16
# Runs stored before their block size was recorded were decoded in blocks of 64.
LEGACY_BLOCK_SEGMENTS = 64
# A probe batch (a decode block) is fetched this many segments at a time, the next few
# downloading while the current ones are demuxed.
PROBE_FETCH_BATCH = 4
# A segment's whole base name (a URL's last part, or the name alone): ``xlive001.ts`` is not segment 1.
SEGMENT_NAME = re.compile(r"(?:\A|/)live(\d+)\.ts\Z")

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
    # A run keeps the block size it was first decoded with, whatever later runs are given.
    "run_block_segments": Column("int64", -1),
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
        return fs.cat_file(path, **whole_object_options(fs))
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


class DemuxedSegments:
    """Segments demuxed by ``probe_segment`` in this process, kept for the decode that follows.

    Planning a run needs every segment's frame count and first PTS, i.e. a
    demux of the whole object; decoding needs the same packets. When the
    probe and the decode run in one process (threads or serial executors,
    or a Dask worker given both), the decode takes the probe's packets
    instead of downloading and demuxing the segment again. Entries are taken
    (removed) by the decode and bounded by ``max_bytes``, oldest dropped
    first: a worker that probed segments another worker decodes holds at
    most that much.
    """

    def __init__(self, max_bytes: int = 128 * 2**20) -> None:
        import threading
        from collections import OrderedDict

        self.max_bytes = max_bytes
        self._items: OrderedDict[str, tuple[list, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def put(self, url: str, packets: list) -> None:
        size = sum(p.size for p in packets)
        with self._lock:
            if url in self._items:
                self._bytes -= self._items.pop(url)[1]
            self._items[url] = (packets, size)
            self._bytes += size
            while self._bytes > self.max_bytes and self._items:
                self._bytes -= self._items.popitem(last=False)[1][1]

    def take(self, url: str) -> list | None:
        with self._lock:
            item = self._items.pop(url, None)
            if item is None:
                return None
            self._bytes -= item[1]
            return item[0]

    def __len__(self) -> int:
        return len(self._items)


DEMUXED = DemuxedSegments()


def probe_segment(url: str, size: int | None = None, storage_options: dict | None = None,
                  min_seconds: float = MIN_SEGMENT_SECONDS, data: bytes | None = None) -> SegmentInfo:
    """Demux a segment (``data``, or read from ``url``): rate, channels, frames, first PTS.
    Flags short, silent, broken ones."""
    if size == 0:
        raise DecodeError("empty object (0 bytes)")
    if data is None:
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
    DEMUXED.put(url, packets)
    return info


def _new_decoder():
    import av

    return av.CodecContext.create("aac", "r")


def _decode_packets(decoder, packets) -> np.ndarray:
    """int16 (n, channels): PyAV float decode scaled as ffmpeg's s16 conversion does.

    Frames are copied into one float buffer and converted once per segment:
    ``AudioFrame.to_ndarray`` per 1024-sample frame, then a concatenate, cost
    more than the AAC decode itself (benchmarks/hls_throughput.json).
    """
    planar = None  # fltp: (channels, n)
    pos = 0
    for packet in packets:
        try:
            frames = decoder.decode(packet)
        except Exception as exc:  # noqa: BLE001
            raise DecodeError(f"AAC decode failed at PTS {packet.pts} ({exc})") from exc
        for frame in frames:
            n = frame.samples
            if planar is None:
                if frame.format.name != "fltp":
                    raise DecodeError(f"AAC decoder gave {frame.format.name} samples, not planar float (fltp)")
                # AAC-LC frames are 1024 samples; room for one frame more per packet is never needed.
                planar = np.empty((len(frame.planes), max(len(packets), 1) * AAC_FRAME + n), dtype=np.float32)
            if pos + n > planar.shape[1]:
                planar = np.concatenate([planar, np.empty_like(planar)], axis=1)
            for channel, plane in enumerate(frame.planes):
                planar[channel, pos : pos + n] = np.frombuffer(plane, dtype=np.float32, count=n)
            pos += n
    if planar is None:
        return np.zeros((0, 0), dtype=np.int16)
    samples = planar[:, :pos].T * np.float32(32768.0)
    np.rint(samples, out=samples)  # round half to even, as ffmpeg's lrintf
    np.clip(samples, -32768, 32767, out=samples)
    return samples.astype(np.int16)


@dataclass(frozen=True)
class RunSegment:
    """A segment's place in a contiguous run: decode it to get samples [start, start + samples)."""

    url: str
    number: int  # the N of liveN.ts
    start: int  # sample offset of its first sample in the run
    samples: int


def _fetch_each(urls: Sequence[str], storage_options: dict | None) -> list[bytes | DecodeError]:
    """Each URL's bytes, fetched concurrently (fsspec ``cat``); a DecodeError for each that failed."""
    if not urls:
        return []
    fs, _ = filesystem(urls[0], storage_options)
    paths = [fs._strip_protocol(u) for u in urls]
    try:
        got = fs.cat(paths, on_error="return", **whole_object_options(fs))
    except Exception as exc:  # noqa: BLE001
        return [DecodeError(describe_read_error(exc))] * len(urls)
    if not isinstance(got, dict):
        got = {paths[0]: got}
    return [DecodeError(describe_read_error(v)) if isinstance(v, BaseException) else v
            for v in (got.get(p, FileNotFoundError(p)) for p in paths)]


def _prefetch_each(urls: Sequence[str], storage_options: dict | None, batch: int = 8) -> Iterator[bytes | DecodeError]:
    """Each URL's bytes (or the DecodeError of its read) in order, fetched ``batch`` at a time.

    Segments are ~200 kB: fetched one by one, an object store's latency, not
    decoding, would be the cost of a task. The next batch downloads in a
    thread while the current one is demuxed or decoded; at most two batches
    are held.
    """
    if not urls:
        return
    pool = fetch_pool()
    pending = pool.submit(_fetch_each, urls[:batch], storage_options)
    try:
        for k in range(0, len(urls), batch):
            current = pending.result()
            nxt = k + batch
            pending = pool.submit(_fetch_each, urls[nxt : nxt + batch], storage_options) if nxt < len(urls) else None
            yield from current
    finally:
        if pending is not None:
            pending.cancel()


def _prefetch(urls: Sequence[str], storage_options: dict | None, batch: int = 8) -> Iterator[bytes]:
    """Each URL's bytes in order (``_prefetch_each``); the first failed read raises its DecodeError."""
    for got in _prefetch_each(urls, storage_options, batch):
        if isinstance(got, DecodeError):
            raise got
        yield got


def _segment_packets(urls: Sequence[str], storage_options: dict | None) -> Iterator[list]:
    """Each URL's AAC packets in order: the probe's (``DEMUXED``), or fetched and demuxed."""
    cached = [DEMUXED.take(u) for u in urls]
    fetched = _prefetch([u for u, c in zip(urls, cached) if c is None], storage_options)
    for packets in cached:
        yield packets if packets is not None else _packets(next(fetched))[3]


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
    data = _segment_packets([s.url for s in wanted], storage_options)
    decoder = _new_decoder()
    previous_packets = None
    if prime is not None:
        previous_packets = next(data)
        _decode_packets(decoder, previous_packets)
    for i in range(b, last):
        seg = segments[i]
        packets = next(data)
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
    block_segments: int = DEFAULT_BLOCK_SEGMENTS

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
        blocks = t["run_block_segments"]
        block = int(blocks[i]) if i < len(blocks) and blocks[i] > 0 else LEGACY_BLOCK_SEGMENTS
        return _Run(i, session, int(t["run_t0"][i]), float(t["run_first_pts"][i]), first_seg, last_seg,
                    samples, int(t["run_first_row"][i]), int(t["run_last_row"][i]), unit_files, samples, stream,
                    block_segments=block)


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

    # The probe demuxes whole segments and keeps their packets for the decode (DEMUXED):
    # ingest probes a decode block's segments together and decodes the block where they
    # were probed.
    keeps_probed_data = True

    @property
    def probe_batch(self) -> int:
        return self.block_segments

    def probe(self, file: SourceFile, storage_options: dict) -> SegmentInfo:
        return probe_segment(file.url, file.size, storage_options)

    def probe_many(self, files: Sequence[SourceFile], storage_options: dict) -> list[SegmentInfo | DecodeError]:
        """Probe segments fetched concurrently (a segment is ~200 kB: fetched one by one, the
        object store's latency would be the probe's cost), a few at a time: the next few
        download while the current ones are demuxed."""
        nonempty = [f.url for f in files if f.size != 0]
        fetched = _prefetch_each(nonempty, storage_options, PROBE_FETCH_BATCH)
        out: list[SegmentInfo | DecodeError] = []
        for f in files:
            try:
                data = next(fetched) if f.size != 0 else None
                if isinstance(data, DecodeError):
                    raise data
                out.append(probe_segment(f.url, f.size, storage_options, data=data))
            except DecodeError as exc:
                out.append(exc)
        return out

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
                    run = _Run(None, session, t0, seg.first_pts_s, number, number, 0, -1, -1, [], 0, stream,
                               block_segments=self.block_segments)
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
                    RunSource(segments, run.block_segments), continues, state=run)

    def restarts(self, unit: Unit) -> list[int]:
        """Unit samples where a decode block starts: tasks begin there (``ingest.task_rows``)."""
        source: RunSource = unit.source
        block = source.block_segments
        return [seg.start for k, seg in enumerate(source.segments)
                if k == 0 or seg.number // block != source.segments[k - 1].number // block]

    def records(self, unit: Unit) -> list[TableRecord]:
        """The unit's entry in the stream's runs table (updated when it continued a stored run)."""
        run: _Run = unit.state
        values = {
            "run_session": run.session, "run_t0": run.t0_ns, "run_first_pts": run.first_pts_s,
            "run_samples": run.samples, "run_first_segment": run.first_segment,
            "run_last_segment": run.last_segment,
            "run_first_row": run.first_row if run.first_row >= 0 else unit.rows[0],
            "run_last_row": unit.rows[-1], "run_block_segments": run.block_segments,
        }
        return [TableRecord(RUNS, RUNS_GROUP, run.index, values)]

