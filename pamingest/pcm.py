"""Interleaved little-endian integer PCM <-> samples in the stored dtype (numpy only).

Shared by the WAV reader (``decode/sndfile.py``), which converts the bytes it
fetches, and the PCM chunk codec (``store/codec.py``), which converts the
byte ranges a virtual stream's rows refer to. 24-bit samples are held in
int32, right-aligned (the recorder's own values), as every stream stores them.
"""

from __future__ import annotations

import numpy as np

# Bytes per sample for the PCM widths a WAV holds packed (libsndfile subtype names).
PCM_WIDTH = {"PCM_16": 2, "PCM_24": 3, "PCM_32": 4}
# Bits per sample -> (bytes per sample, stored dtype).
PCM_BITS = {16: (2, np.int16), 24: (3, np.int32), 32: (4, np.int32)}


def pcm_samples(raw, width: int, channels: int) -> np.ndarray:
    """Interleaved little-endian PCM bytes -> ``(frames, channels)`` in the stored dtype (24-bit: int32
    holding the recorder's values, as libsndfile's reading shifted right by 8 gives them)."""
    if width == 2:
        return np.frombuffer(raw, dtype="<i2").astype(np.int16).reshape(-1, channels)
    if width == 4:
        return np.frombuffer(raw, dtype="<i4").astype(np.int32).reshape(-1, channels)
    wide = np.empty((len(raw) // 3, 4), dtype=np.uint8)
    wide[:, 0] = 0
    wide[:, 1:] = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3)
    samples = wide.view("<i4").reshape(-1)
    np.right_shift(samples, 8, out=samples)  # arithmetic: the top byte's sign extends down
    return samples.astype(np.int32, copy=False).reshape(-1, channels)


def pcm_bytes(samples: np.ndarray, width: int) -> bytes:
    """``(frames, channels)`` samples in the stored dtype -> interleaved little-endian PCM bytes."""
    if width == 2:
        return np.ascontiguousarray(samples, dtype="<i2").tobytes()
    if width == 4:
        return np.ascontiguousarray(samples, dtype="<i4").tobytes()
    flat = np.ascontiguousarray(samples, dtype="<i4").reshape(-1)
    if flat.size and (flat.max() > 2**23 - 1 or flat.min() < -(2**23)):
        raise ValueError("sample outside the 24-bit range: refusing to cut it to 24 bits")
    return flat.view(np.uint8).reshape(-1, 4)[:, :3].tobytes()
