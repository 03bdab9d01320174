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
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from ..errors import DecodeError
from ..fsutil import describe_read_error, filesystem

AAC_FRAME = 1024
# ffmpeg's MPEG-TS muxer starts timestamps at 2 x its max_delay of 0.7 s.
MPEGTS_START_PTS_S = 1.4
# Segments shorter than this are defects (0.085 s segments are seen in the wild).
MIN_SEGMENT_SECONDS = 1.0
# AAC frames of digital silence are a few bytes; a segment made only of such
# frames is decoded to confirm it is all zeros.
SILENT_FRAME_BYTES = 16
DEFAULT_BLOCK_SEGMENTS = 64


@dataclass(frozen=True)
class SegmentInfo:
    """What demuxing a segment tells, without decoding it."""

    sample_rate: int
    channels: int
    frames: int  # AAC frames with data
    first_pts: int  # in time_base units
    time_base: float  # seconds per PTS tick

    @property
    def samples(self) -> int:
        return self.frames * AAC_FRAME

    @property
    def first_pts_s(self) -> float:
        return self.first_pts * self.time_base


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
    info = SegmentInfo(int(rate), int(channels), len(packets), int(packets[0].pts), time_base)
    seconds = info.samples / info.sample_rate
    if seconds < min_seconds:
        raise DecodeError(f"short segment: {seconds:.3f} s ({info.frames} AAC frames)")
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
