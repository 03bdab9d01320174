"""WAV, FLAC (and the other libsndfile formats) streamed through soundfile over fsspec.

Samples are stored as soundfile reads them, except 24-bit PCM, which
libsndfile returns left-aligned in int32 and which is stored right-aligned
(the recorder's own integer values, |x| < 2**23), so that FLAC keeps it at
24 bits. ``AudioInfo.store_dtype`` and ``bits`` say what a stream holds.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import soundfile

from ..errors import DecodeError
from ..fsutil import describe_read_error, filesystem, open_for_read

# libsndfile subtype -> (stored dtype, bits per sample, dtype soundfile reads)
_SUBTYPES = {
    "PCM_S8": ("int16", 8, "int16"),
    "PCM_U8": ("int16", 8, "int16"),
    "PCM_16": ("int16", 16, "int16"),
    "ULAW": ("int16", 16, "int16"),
    "ALAW": ("int16", 16, "int16"),
    "PCM_24": ("int32", 24, "int32"),
    "PCM_32": ("int32", 32, "int32"),
    "FLOAT": ("float32", 32, "float32"),
    "DOUBLE": ("float64", 64, "float64"),
}


@dataclass(frozen=True)
class AudioInfo:
    """What a stream needs to know about a recording before decoding it."""

    sample_rate: int
    channels: int
    frames: int
    format: str
    subtype: str
    store_dtype: str
    bits: int

    @property
    def stream_key(self) -> tuple[int, int, str, int]:
        return (self.sample_rate, self.channels, self.store_dtype, self.bits)


def _check_wav_header(fh, size: int) -> None:
    """Reject a RIFF/WAVE whose ``data`` chunk claims more bytes than the object holds.

    libsndfile silently shortens such a file to what is there; a recording cut
    short by a failed upload or a recorder crash must be reported instead.
    """
    head = fh.read(12)
    if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
        return
    little = head[:4] == b"RIFF"
    fmt = "<I" if little else ">I"
    pos = 12
    block_align = None
    while pos + 8 <= size:
        fh.seek(pos)
        hdr = fh.read(8)
        if len(hdr) < 8:
            return
        cid, clen = hdr[:4], struct.unpack(fmt, hdr[4:])[0]
        if cid == b"fmt ":
            body = fh.read(16)
            if len(body) >= 14:
                block_align = struct.unpack("<H" if little else ">H", body[12:14])[0]
        elif cid == b"data":
            held = size - (pos + 8)
            # 0 and 0xFFFFFFFF are written by recorders streaming to disk: size unknown.
            if clen not in (0, 0xFFFFFFFF) and clen > held:
                if block_align:
                    raise DecodeError(
                        f"WAV header declares {clen // block_align} frames but the object holds "
                        f"only {held // block_align} (truncated file)"
                    )
                raise DecodeError(f"WAV header declares {clen} data bytes but the object holds only {held}")
            return
        pos += 8 + clen + (clen & 1)


def _open(fh, url: str) -> soundfile.SoundFile:
    try:
        return soundfile.SoundFile(fh)
    except soundfile.LibsndfileError as exc:
        raise DecodeError(f"not a readable audio file ({exc.error_string})") from exc
    except Exception as exc:  # noqa: BLE001 - any failure to open is this file's reason
        raise DecodeError(f"cannot open: {describe_read_error(exc)}") from exc


def _info(snd: soundfile.SoundFile) -> AudioInfo:
    if snd.subtype not in _SUBTYPES:
        raise DecodeError(f"unsupported sample format {snd.format}/{snd.subtype}")
    store_dtype, bits, _ = _SUBTYPES[snd.subtype]
    if snd.frames <= 0:
        raise DecodeError("recording holds no samples")
    return AudioInfo(int(snd.samplerate), int(snd.channels), int(snd.frames), snd.format, snd.subtype, store_dtype, bits)


def probe(url: str, size: int | None = None, storage_options: dict | None = None) -> AudioInfo:
    """Read a recording's header: sample rate, channels, frames, sample format."""
    if size == 0:
        raise DecodeError("empty object (0 bytes)")
    fs, path = filesystem(url, storage_options)
    with open_for_read(fs, path, block_size=256 * 1024) as fh:
        if size is None:
            size = fs.size(path)
        if size == 0:
            raise DecodeError("empty object (0 bytes)")
        try:
            _check_wav_header(fh, size)
            fh.seek(0)
        except DecodeError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise DecodeError(describe_read_error(exc)) from exc
        with _open(fh, url) as snd:
            return _info(snd)


def read_rows(
    url: str,
    info: AudioInfo,
    row_samples: int,
    first_row: int,
    n_rows: int,
    storage_options: dict | None = None,
) -> Iterator[np.ndarray]:
    """Yield ``(row_samples, channels)`` blocks of the file's rows ``first_row ...``.

    The last block of the file is short. Memory holds one row (plus the
    filesystem's read-ahead), whatever the file's length. Raises DecodeError
    if the file ends before the frames its header announced.
    """
    fs, path = filesystem(url, storage_options)
    _, _, read_dtype = _SUBTYPES[info.subtype]
    start = first_row * row_samples
    want = min(n_rows * row_samples, info.frames - start)
    with open_for_read(fs, path) as fh, _open(fh, url) as snd:
        try:
            if start:
                snd.seek(start)
            done = 0
            while done < want:
                block = snd.read(min(row_samples, want - done), dtype=read_dtype, always_2d=True)
                if len(block) == 0:
                    break
                if info.bits == 24:
                    block = np.right_shift(block, 8)
                done += len(block)
                yield block
        except DecodeError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise DecodeError(f"decoding failed at frame {start + done}: {describe_read_error(exc)}") from exc
        if done < want:
            raise DecodeError(
                f"file ends at frame {start + done} but its header announces {info.frames} frames "
                "(truncated or corrupt)"
            )
