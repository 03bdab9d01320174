"""A clip's audio as a file's bytes: FLAC at the stored rate and bit depth, bit for bit, unless
resampled.

Integer PCM up to 24 bits is FLAC, lossless: read back with soundfile it
gives the stored integers (24-bit as the recorder's values). 32-bit integer
and float streams, which FLAC cannot hold, are WAV (``PCM_32`` / ``FLOAT``).
With ``sample_rate`` the clip is resampled (``pamingest.resample``) and
quantised back to the stream's bit depth (rounded, clipped), as a recorder
at that rate would have stored it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from ..timing import NS_PER_S


@dataclass(frozen=True)
class ClipAudio:
    data: bytes
    extension: str  # "flac" or "wav"
    sample_rate: int
    frames: int


def _quantise(x: np.ndarray, dtype: np.dtype, bits: int) -> np.ndarray:
    """Full-scale floats -> the stored integers (``resample.full_scale``), rounded and clipped."""
    from ..resample import full_scale

    top = full_scale(dtype, bits)
    return np.clip(np.rint(x.astype(np.float64) * top), -top, top - 1).astype(dtype)


def encode(samples: np.ndarray, sample_rate: int, bits: int) -> tuple[bytes, str]:
    """``(n, channels)`` samples in the stored dtype -> file bytes and extension."""
    import soundfile as sf

    buf = io.BytesIO()
    if samples.dtype == np.int16:
        sf.write(buf, samples, sample_rate, format="FLAC", subtype="PCM_16")
        return buf.getvalue(), "flac"
    if samples.dtype == np.int32 and bits <= 24 and samples.shape[1] <= 8:
        # right-aligned 24-bit values; libsndfile takes int32 as left-aligned
        sf.write(buf, samples << 8, sample_rate, format="FLAC", subtype="PCM_24")
        return buf.getvalue(), "flac"
    subtype = {np.dtype(np.int32): "PCM_32", np.dtype(np.float32): "FLOAT", np.dtype(np.float64): "DOUBLE"}
    sf.write(buf, samples, sample_rate, format="WAV", subtype=subtype[samples.dtype])
    return buf.getvalue(), "wav"


def clip_audio(ds, start_ns: int, end_ns: int, sample_rate: int | None = None) -> ClipAudio:
    """The stream Dataset ``ds``'s samples of ``[start_ns, end_ns)`` as a file."""
    bits = int(ds.attrs.get("bits_per_sample") or 16)
    stored = int(ds.attrs["sample_rate"])
    if sample_rate is None or int(sample_rate) == stored:
        samples = np.ascontiguousarray(ds.pam.window(start_ns, end_ns).values)
        rate = stored
    else:
        x = ds.pam.window(start_ns, end_ns, sample_rate=int(sample_rate)).values
        dtype = np.dtype(ds["audio"].dtype)
        samples = x.astype(dtype) if dtype.kind == "f" else _quantise(x, dtype, bits)
        rate = int(sample_rate)
    data, ext = encode(samples, rate, bits)
    return ClipAudio(data, ext, rate, len(samples))


def duration_s(start_ns: int, end_ns: int) -> float:
    return (end_ns - start_ns) / NS_PER_S
