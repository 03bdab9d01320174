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
