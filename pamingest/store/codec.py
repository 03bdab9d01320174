"""FLAC inside Zarr: each chunk (one store row) is a complete FLAC stream.

Chosen by measurement (docs/architecture.md; ``benchmarks/store_size.py`` checks it):
on the fixture recordings, per-row FLAC is 1.002x the size of standalone FLAC
files of the same samples (PCodec 1.04x, Blosc/zstd ~1.4x), and encodes
faster than PCodec. Each chunk stays a playable ``.flac`` file, which makes a
store's bytes useful even without pamingest.

The codec is registered with zarr through the ``zarr.codecs`` entry point
(pyproject.toml), so ``xarray.open_zarr`` works in a fresh interpreter
wherever pamingest is installed.
"""

from __future__ import annotations

import asyncio
import io
import os
from dataclasses import dataclass, replace
from typing import Any, Self

import numpy as np
import soundfile
from zarr.abc.codec import ArrayBytesCodec
from zarr.core.array_spec import ArraySpec
from zarr.core.buffer import Buffer, NDBuffer

CODEC_NAME = "pamingest.flac"
FLAC_MAX_CHANNELS = 8
FLAC_MAX_SAMPLE_RATE = 655_350
FLAC_BITS = {16: ("PCM_16", np.int16), 24: ("PCM_24", np.int32)}


# libsndfile reads and writes a FLAC stream in hundreds of small calls. Through a
# BytesIO each is a Python callback that must take the GIL, and while another
# thread holds it (decoding the next rows) each waits a switch interval: a 10 s
# stereo row took 650 ms to encode instead of 10 ms, and threads ingested no
# faster than one. An anonymous in-memory file (Linux memfd) is read and written
# by libsndfile in C, without the GIL (42 ms under the same contention, and the
# same bytes). Elsewhere the BytesIO path is kept.
_MEMFD = hasattr(os, "memfd_create")


# 24-bit rows are handed to libsndfile this many frames at a time, each block shifted
# into the top 24 bits of an int32 on its own: a 256 kHz row is 10 MB, and a shifted
# copy of the whole row would double what each encode holds.
SHIFT_BLOCK_FRAMES = 2**16


def _write_flac(f, data: np.ndarray, shift: int) -> None:
    if not shift:
        f.write(data)
        return
    for k in range(0, len(data), SHIFT_BLOCK_FRAMES):
        f.write(np.left_shift(data[k : k + SHIFT_BLOCK_FRAMES], shift))


def flac_bytes(data: np.ndarray, sample_rate: int, subtype: str, shift: int = 0) -> bytes:
    """``(frames, channels)`` samples, shifted left by ``shift`` bits on the way -> one FLAC stream."""
    channels = data.shape[1]
    if not _MEMFD:
        out = io.BytesIO()
        with soundfile.SoundFile(out, "w", sample_rate, channels, subtype, format="FLAC") as f:
            _write_flac(f, data, shift)
        return out.getvalue()
    fd = os.memfd_create("pamingest-flac", os.MFD_CLOEXEC)
    try:
        with soundfile.SoundFile(fd, "w", sample_rate, channels, subtype, format="FLAC", closefd=False) as f:
            _write_flac(f, data, shift)
        return os.pread(fd, os.lseek(fd, 0, os.SEEK_END), 0)
    finally:
        os.close(fd)


def flac_samples(data: bytes, dtype: str) -> np.ndarray:
    """One FLAC stream -> ``(frames, channels)`` samples of ``dtype``."""
    if not _MEMFD:
        return soundfile.read(io.BytesIO(data), dtype=dtype, always_2d=True)[0]
    fd = os.memfd_create("pamingest-flac", os.MFD_CLOEXEC)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.lseek(fd, 0, os.SEEK_SET)
        with soundfile.SoundFile(fd, "r", closefd=False) as f:
            return f.read(dtype=dtype, always_2d=True)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class FlacCodec(ArrayBytesCodec):
    """Array -> FLAC bytes for integer audio chunks shaped ``(..., sample, channel)``.

    Parameters
    ----------
    bits : int
        16 (int16 arrays) or 24 (int32 arrays whose values fit 24 bits).
    sample_rate : int
        Written into each chunk's FLAC header so that a chunk plays back at
        the right speed; it has no effect on the samples.
    """

    is_fixed_size = False
    bits: int = 16
    sample_rate: int = 48_000

    def __init__(self, *, bits: int = 16, sample_rate: int = 48_000) -> None:
        if bits not in FLAC_BITS:
            raise ValueError(f"FLAC codec supports 16 or 24 bits, not {bits}")
        object.__setattr__(self, "bits", int(bits))
        object.__setattr__(self, "sample_rate", int(min(max(1, sample_rate), FLAC_MAX_SAMPLE_RATE)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        config = dict(data.get("configuration") or {})
        return cls(**config)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": CODEC_NAME,
            "configuration": {"bits": self.bits, "sample_rate": self.sample_rate},
        }

    def evolve_from_array_spec(self, array_spec: ArraySpec) -> Self:
        dtype = np.dtype(array_spec.dtype.to_native_dtype())
        expected = FLAC_BITS[self.bits][1]
        if dtype != expected:
            raise ValueError(f"FLAC codec with {self.bits} bits needs {np.dtype(expected)} arrays, got {dtype}")
        if array_spec.shape[-1] > FLAC_MAX_CHANNELS:
            raise ValueError(f"FLAC holds at most {FLAC_MAX_CHANNELS} channels, got {array_spec.shape[-1]}")
        return replace(self)

    def _frames(self, shape: tuple[int, ...]) -> tuple[int, int]:
        channels = shape[-1] if len(shape) > 1 else 1
        return int(np.prod(shape)) // channels, channels

    def _encode_sync(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        encoded = self.encode_samples(np.asarray(chunk_array.as_numpy_array()))
        return chunk_spec.prototype.buffer.from_bytes(encoded)

    def encode_samples(self, data: np.ndarray) -> bytes:
        """One chunk's samples (``(..., sample, channel)``) -> its FLAC stream."""
        frames, channels = self._frames(data.shape)
        data = data.reshape(frames, channels)
        subtype, _ = FLAC_BITS[self.bits]
        shift = 0
        if self.bits == 24:
            if data.size and (data.max() > 2**23 - 1 or data.min() < -(2**23)):
                raise ValueError("sample outside the 24-bit range: refusing a lossy FLAC encode")
            shift = 8  # libsndfile reads 24-bit PCM from the top 24 bits of an int32
        return flac_bytes(np.ascontiguousarray(data), self.sample_rate, subtype, shift)

    def _decode_sync(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        _, dtype = FLAC_BITS[self.bits]
        data = flac_samples(chunk_bytes.to_bytes(), np.dtype(dtype).name)
        if self.bits == 24:
            np.right_shift(data, 8, out=data)  # our own array: shifted in place
        return chunk_spec.prototype.nd_buffer.from_numpy_array(data.reshape(chunk_spec.shape))

    # libsndfile is called through CFFI, which releases the GIL: running chunk
    # codecs in threads lets one window read decode its rows in parallel.
    async def _encode_single(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        return await asyncio.to_thread(self._encode_sync, chunk_array, chunk_spec)

    async def _decode_single(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        return await asyncio.to_thread(self._decode_sync, chunk_bytes, chunk_spec)

    def compute_encoded_size(self, input_byte_length: int, _chunk_spec: ArraySpec) -> int:
        raise NotImplementedError("FLAC output size is data dependent")


PCM_CODEC_NAME = "pamingest.pcm"


@dataclass(frozen=True)
class PcmCodec(ArrayBytesCodec):
    """Array <-> interleaved little-endian integer PCM, a WAV file's ``data`` bytes.

    The serializer of a virtual stream (``store/virtual.py``): each chunk is a
    byte range of the original recording, so the chunk's bytes are the
    recording's own. A range shorter than the chunk (a file's last row) is
    zero-padded to it, as a copied stream's last row is; ``n_valid`` says
    how much is real.

    Parameters
    ----------
    bits : int
        16 (int16 arrays), 24 or 32 (int32 arrays; 24-bit values right-aligned).
    """

    is_fixed_size = True
    bits: int = 16

    def __init__(self, *, bits: int = 16) -> None:
        from ..pcm import PCM_BITS

        if bits not in PCM_BITS:
            raise ValueError(f"PCM codec supports 16, 24 or 32 bits, not {bits}")
        object.__setattr__(self, "bits", int(bits))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        return cls(**dict(data.get("configuration") or {}))

    def to_dict(self) -> dict[str, Any]:
        return {"name": PCM_CODEC_NAME, "configuration": {"bits": self.bits}}

    @property
    def width(self) -> int:
        from ..pcm import PCM_BITS

        return PCM_BITS[self.bits][0]

    def evolve_from_array_spec(self, array_spec: ArraySpec) -> Self:
        from ..pcm import PCM_BITS

        dtype = np.dtype(array_spec.dtype.to_native_dtype())
        expected = np.dtype(PCM_BITS[self.bits][1])
        if dtype != expected:
            raise ValueError(f"PCM codec with {self.bits} bits needs {expected} arrays, got {dtype}")
        return replace(self)

    def _decode_sync(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        from ..pcm import pcm_samples

        shape = chunk_spec.shape
        channels = shape[-1] if len(shape) > 1 else 1
        frame_bytes = self.width * channels
        raw = chunk_bytes.as_numpy_array()  # a view of the fetched bytes (uint8)
        frames = int(np.prod(shape)) // channels
        have = len(raw) // frame_bytes
        if have > frames or len(raw) % frame_bytes:
            raise ValueError(f"PCM chunk of {len(raw)} bytes does not hold whole frames of {frame_bytes} bytes "
                             f"up to the chunk's {frames} frames")
        data = pcm_samples(raw, self.width, channels)
        if have < frames:  # a file's last row: the rest of the chunk is the fill value, as when copied
            padded = np.zeros((frames, channels), dtype=data.dtype)
            padded[:have] = data
            data = padded
        return chunk_spec.prototype.nd_buffer.from_numpy_array(data.reshape(shape))

    def _encode_sync(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        from ..pcm import pcm_bytes

        data = np.asarray(chunk_array.as_numpy_array())
        channels = data.shape[-1] if data.ndim > 1 else 1
        return chunk_spec.prototype.buffer.from_bytes(pcm_bytes(data.reshape(-1, channels), self.width))

    async def _encode_single(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        return self._encode_sync(chunk_array, chunk_spec)

    async def _decode_single(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        # numpy's conversions release the GIL for rows of MBs (a 256 kHz 24-bit row is 7.7 MB)
        return await asyncio.to_thread(self._decode_sync, chunk_bytes, chunk_spec)

    def compute_encoded_size(self, input_byte_length: int, chunk_spec: ArraySpec) -> int:
        itemsize = np.dtype(chunk_spec.dtype.to_native_dtype()).itemsize
        return input_byte_length // itemsize * self.width
