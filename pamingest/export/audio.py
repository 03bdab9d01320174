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


def _flac_ok(dtype: np.dtype, bits: int, channels: int, sample_rate: int) -> bool:
    """Whether FLAC holds these samples as they are (the rule of the store's own codec)."""
    from ..store.codec import FLAC_MAX_CHANNELS, FLAC_MAX_SAMPLE_RATE

    return (dtype == np.int16 or (dtype == np.int32 and bits <= 24)) and channels <= FLAC_MAX_CHANNELS \
        and sample_rate <= FLAC_MAX_SAMPLE_RATE


def encode(samples: np.ndarray, sample_rate: int, bits: int) -> tuple[bytes, str]:
    """``(n, channels)`` samples in the stored dtype -> file bytes and extension."""
    import soundfile as sf

    from ..store.codec import flac_bytes

    if _flac_ok(samples.dtype, bits, samples.shape[1], sample_rate):
        # the store codec's encoder: in C without the GIL (a memory file), so clips encode in parallel
        if samples.dtype == np.int16:
            return flac_bytes(samples, sample_rate, "PCM_16"), "flac"
        return flac_bytes(samples, sample_rate, "PCM_24", shift=8), "flac"  # right-aligned 24-bit values
    buf = io.BytesIO()
    subtype = {np.dtype(np.int16): "PCM_16", np.dtype(np.int32): "PCM_32", np.dtype(np.float32): "FLOAT",
               np.dtype(np.float64): "DOUBLE"}
    sf.write(buf, samples, sample_rate, format="WAV", subtype=subtype[samples.dtype])
    return buf.getvalue(), "wav"


def clip_samples(ds, start_ns: int, end_ns: int, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
    """The stream Dataset ``ds``'s samples of ``[start_ns, end_ns)`` in the stored dtype, and their rate
    (resampled and quantised back to the stream's bit depth when ``sample_rate`` is another)."""
    stored = int(ds.attrs["sample_rate"])
    if sample_rate is None or int(sample_rate) == stored:
        return np.ascontiguousarray(ds.pam.window(start_ns, end_ns).values), stored
    bits = int(ds.attrs.get("bits_per_sample") or 16)
    x = ds.pam.window(start_ns, end_ns, sample_rate=int(sample_rate)).values
    dtype = np.dtype(ds["audio"].dtype)
    return (x.astype(dtype) if dtype.kind == "f" else _quantise(x, dtype, bits)), int(sample_rate)


class ClipReader:
    """Clips' audio from one snapshot, a batch at a time.

    A clip that is exactly one whole stored row of a FLAC stream, at the
    stored rate, is that row's chunk: its bytes are copied from the store
    (a complete FLAC stream, the samples bit for bit), fetched concurrently,
    with no decode or encode. Any other clip is read through
    ``window`` and encoded, the encodes in parallel threads (libFLAC runs
    without the GIL). A row of digital silence has no chunk (zarr stores
    no chunk equal to its fill value): it is encoded like the others.
    """

    def __init__(self, session, datasets: dict, sample_rate: int | None = None, threads: int | None = None) -> None:
        import os

        self.store = session.store
        self.datasets = datasets
        self.sample_rate = sample_rate
        self.threads = threads or os.cpu_count() or 1
        self._pool = None

    def _copyable(self, e) -> bool:
        ds = self.datasets[e.stream]
        stored = int(ds.attrs["sample_rate"])
        return int(e.clip.get("row", -1)) >= 0 and (self.sample_rate in (None, stored)) and _flac_ok(
            np.dtype(ds["audio"].dtype), int(ds.attrs.get("bits_per_sample") or 16), int(ds["audio"].shape[2]), stored)

    def _chunks(self, keys: list[str]) -> list[bytes | None]:
        import asyncio

        from zarr.core.buffer import default_buffer_prototype
        from zarr.core.sync import sync

        prototype = default_buffer_prototype()

        async def fetch():
            got = await asyncio.gather(*(self.store.get(k, prototype=prototype) for k in keys))
            return [None if b is None else b.to_bytes() for b in got]

        return sync(fetch())

    def read(self, batch: list) -> list[ClipAudio]:
        from concurrent.futures import ThreadPoolExecutor

        out: list[ClipAudio | None] = [None] * len(batch)
        copy = [i for i, e in enumerate(batch) if self._copyable(e)]
        if copy:
            keys = [f"{batch[i].stream}/audio/c/{int(batch[i].clip['row'])}/0/0" for i in copy]
            for i, data in zip(copy, self._chunks(keys)):
                if data is not None and data[:4] == b"fLaC":
                    ds = self.datasets[batch[i].stream]
                    out[i] = ClipAudio(data, "flac", int(ds.attrs["sample_rate"]), int(ds["audio"].shape[1]))
        rest = [i for i in range(len(batch)) if out[i] is None]
        if rest:
            # Samples are read one clip at a time (the accessor's row index is not shared across
            # threads); the encodes, most of the work, run in parallel.
            read = [(i, *clip_samples(self.datasets[batch[i].stream], batch[i].start_ns, batch[i].end_ns,
                                      self.sample_rate)) for i in rest]
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="pamingest-export")

            def encoded(item):
                i, samples, rate = item
                data, ext = encode(samples, rate, int(self.datasets[batch[i].stream].attrs.get("bits_per_sample") or 16))
                return i, ClipAudio(data, ext, rate, len(samples))

            for i, clip in self._pool.map(encoded, read):
                out[i] = clip
        return out  # type: ignore[return-value]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
