"""Synthetic inputs for tests, benchmarks and the demo when no recordings are at hand."""

from __future__ import annotations

import io
from fractions import Fraction

import numpy as np

from .decode.hls import MPEGTS_START_PTS_S

SEGMENT_FRAMES = 469  # 469 AAC frames x 1024 = 10.0053 s at 48 kHz, as Orcasound's streamer cuts them


def tone_and_noise(seconds: float, rate: int = 48_000, channels: int = 1, seed: int = 0) -> np.ndarray:
    """float32 (n, channels) in [-1, 1): a few whistles over coloured noise."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    out = np.empty((n, channels), dtype=np.float32)
    for c in range(channels):
        noise = np.cumsum(rng.standard_normal(n)) * 1e-3
        noise -= np.convolve(noise, np.ones(256) / 256, mode="same")
        sweep = 0.2 * np.sin(2 * np.pi * (2000 + 1500 * np.sin(2 * np.pi * 0.3 * t + c)) * t)
        out[:, c] = (0.05 * noise + sweep * (np.sin(2 * np.pi * 0.5 * t) > 0.6)).astype(np.float32)
    return np.clip(out, -0.99, 0.99)


def hls_segments(samples: np.ndarray, rate: int = 48_000, frames_per_segment: int = SEGMENT_FRAMES,
                 bit_rate: int = 64_000) -> list[bytes]:
    """Encode float samples (n, channels) with PyAV's AAC encoder into MPEG-TS segments.

    One encoder for the whole signal and continuous timestamps across
    segments, as a live HLS streamer writes them (the first PTS is 1.4 s).
    """
    import av

    channels = samples.shape[1]
    layout = "mono" if channels == 1 else "stereo"
    codec = av.CodecContext.create("aac", "w")
    codec.sample_rate = rate
    codec.layout = layout
    codec.format = "fltp"
    codec.bit_rate = bit_rate
    codec.time_base = Fraction(1, rate)
    codec.open()
    packets = []
    pos = 0
    while pos < len(samples):
        block = samples[pos : pos + 1024]
        if len(block) < 1024:
            block = np.vstack([block, np.zeros((1024 - len(block), channels), dtype=np.float32)])
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(block.T), format="fltp", layout=layout)
        frame.sample_rate = rate
        frame.pts = pos
        packets += codec.encode(frame)
        pos += 1024
    packets += codec.encode(None)
    # The encoder stamps its first (priming) packet at -1024; a live streamer's
    # muxer puts the first packet at 1.4 s.
    shift = 1024 + int(round(MPEGTS_START_PTS_S * rate))
    for packet in packets:
        packet.pts += shift
        packet.dts += shift
    segments = []
    for k in range(0, len(packets), frames_per_segment):
        buf = io.BytesIO()
        with av.open(buf, "w", format="mpegts") as out:
            stream = out.add_stream("aac", rate=rate, layout=layout)
            stream.codec_context.extradata = codec.extradata
            for packet in packets[k : k + frames_per_segment]:
                packet.stream = stream
                out.mux(packet)
        segments.append(buf.getvalue())
    return segments


def restamped_segments(segments: list[bytes], count: int, first: int = 0) -> list[bytes]:
    """Segments ``first .. first + count - 1`` of an endless session cut from real ones, timestamps restamped.

    The AAC packets of ``segments`` (a real session's MPEG-TS segments) are
    reused in turn, unchanged, and given the timestamps an unbroken session
    would have: the first segment's first packet at 1.4 s, each packet one
    AAC frame after the one before. Segment ``k`` is the same bytes whatever
    ``first`` was, so a growing bucket can be filled one segment at a time.
    """
    import av

    packets: list[list[tuple[bytes, int]]] = []  # per source segment: (payload, duration in its time base)
    stream_info = None
    for data in segments:
        with av.open(io.BytesIO(data), "r", format="mpegts") as f:
            audio = f.streams.audio[0]
            stream_info = stream_info or (audio.codec_context.sample_rate, audio.codec_context.layout.name,
                                          audio.time_base)
            packets.append([(bytes(p), int(p.duration or 0)) for p in f.demux(audio) if p.size])
    rate, layout, time_base = stream_info
    frame = Fraction(1024, rate) / time_base  # an AAC frame in the stream's time base
    per_segment = [len(p) for p in packets]
    out = []
    for k in range(first, first + count):
        source = packets[k % len(packets)]
        # Packets before segment k: whole cycles of the source segments, then the rest of one cycle.
        before = (k // len(packets)) * sum(per_segment) + sum(per_segment[: k % len(packets)])
        start = int(round(MPEGTS_START_PTS_S / time_base)) + int(before * frame)
        buf = io.BytesIO()
        with av.open(buf, "w", format="mpegts") as f:
            stream = f.add_stream("aac", rate=rate, layout=layout)
            stream.time_base = time_base
            for i, (payload, _) in enumerate(source):
                packet = av.Packet(payload)
                packet.stream = stream
                packet.time_base = time_base
                packet.pts = packet.dts = start + int(i * frame)
                packet.duration = int(frame)
                f.mux(packet)
        out.append(buf.getvalue())
    return out
