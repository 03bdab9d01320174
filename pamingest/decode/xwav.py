"""XWAV (HARP) recordings: WAV or FLAC whose ``harp`` chunk lists the raw files inside.

An XWAV holds a directory of "raw files" (subchunks, 75 s each on HARPs) in
its ``harp`` RIFF chunk; ``flac --keep-foreign-metadata`` keeps it in
APPLICATION blocks of an ``.x.flac``. Duty-cycled deployments leave gaps
between raw files, so such a file is NOT one continuous signal: ingest
stores a file as one (file start + offset / rate), which would mistime every
raw file after the first. The probe therefore reads the directory: a file
whose raw files are contiguous is timed by its first raw file (millisecond
precision, better than the name); a duty-cycled file is refused with the
reason, until ingest can store sub-file segments. Samples are read by
libsndfile as any WAV/FLAC.
"""

from __future__ import annotations

import datetime as _dt
import struct
from dataclasses import dataclass, replace

from ..errors import DecodeError
from ..fsutil import describe_read_error, filesystem, open_for_read
from ..sources.base import SourceFile
from ..timing import NS_PER_S, utc_datetime_to_ns
from . import riff
from .base import AudioInfo
from .sndfile import SndfileDecoder


@dataclass(frozen=True)
class Subchunk:
    """One raw file of an XWAV: when it starts and how many frames it holds."""

    start_ns: int
    frames: int


def parse_directory(chunks: dict[bytes, bytes]) -> tuple[list[Subchunk], int] | None:
    """``(subchunks, sample_rate)`` from an XWAV's header chunks; None if it has no ``harp`` chunk.

    The ``harp`` chunk layout follows Triton (MarineBioAcousticsRC): a 56-byte
    header whose bytes 36-37 count the raw files, then 32 bytes per raw file:
    year-2000, month, day, hour, minute, second (u8), milliseconds (u16),
    byte offset, byte length, write length, sample rate (u32), gain (u8).
    """
    harp, fmt = chunks.get(b"harp"), chunks.get(b"fmt ")
    if harp is None:
        return None
    if fmt is None or len(fmt) < 16:
        raise DecodeError("XWAV header has a harp chunk but no fmt chunk")
    rate, block_align = struct.unpack("<I", fmt[4:8])[0], struct.unpack("<H", fmt[12:14])[0]
    if len(harp) < 56 or not rate or not block_align:
        raise DecodeError("XWAV harp chunk is too short or its format is empty")
    n = struct.unpack("<H", harp[36:38])[0]
    if len(harp) < 56 + 32 * n:
        raise DecodeError(f"XWAV harp chunk announces {n} raw files but holds {(len(harp) - 56) // 32}")
    out = []
    for i in range(n):
        rec = harp[56 + 32 * i : 88 + 32 * i]
        y, mo, d, h, mi, s = rec[:6]
        ms, _, length = struct.unpack("<HII", rec[6:16])
        try:
            start = _dt.datetime(2000 + y, mo, d, h, mi, s, ms * 1000)
        except ValueError as exc:
            raise DecodeError(f"XWAV raw file {i} has an impossible time ({exc})") from exc
        out.append(Subchunk(utc_datetime_to_ns(start), length // block_align))
    return out, rate


def read_directory(url: str, storage_options: dict | None = None) -> tuple[list[Subchunk], int] | None:
    """``(subchunks, sample_rate)`` of an ``.x.flac`` / ``.x.wav`` object, or None without a ``harp`` chunk.

    Reads only the object's header (FLAC metadata blocks, or WAV chunks before ``data``).
    """
    fs, path = filesystem(url, storage_options)
    with open_for_read(fs, path, block_size=256 * 1024) as fh:
        magic = fh.read(4)
        fh.seek(0)
        try:
            chunks = riff.flac_riff_chunks(fh) if magic == b"fLaC" else riff.header_chunks(fh, fs.size(path))
        except DecodeError:
            raise
        except Exception as exc:  # noqa: BLE001 - named with the file by the caller
            raise DecodeError(describe_read_error(exc)) from exc
    return parse_directory(chunks)


def directory_gap_seconds(subchunks: list[Subchunk], rate: int) -> float:
    """The largest gap (or overlap) between consecutive raw files, in seconds."""
    worst = 0.0
    for a, b in zip(subchunks, subchunks[1:]):
        expected = a.start_ns + a.frames * NS_PER_S // rate
        worst = max(worst, abs(b.start_ns - expected) / NS_PER_S)
    return worst


class XwavDecoder(SndfileDecoder):
    """WAV/FLAC read by libsndfile, timed by the XWAV directory, duty-cycled files refused.

    Parameters
    ----------
    max_gap_seconds : float
        Largest gap or overlap between consecutive raw files still taken as
        one continuous signal.
    """

    name = "xwav"

    def __init__(self, max_gap_seconds: float = 0.01) -> None:
        self.max_gap_seconds = float(max_gap_seconds)

    def probe(self, file: SourceFile, storage_options: dict) -> AudioInfo:
        info = super().probe(file, storage_options)
        directory = read_directory(file.url, storage_options)
        if directory is None:
            return info
        subchunks, rate = directory
        if not subchunks:
            raise DecodeError("XWAV directory lists no raw files")
        worst = directory_gap_seconds(subchunks, rate)
        if worst > self.max_gap_seconds:
            raise DecodeError(
                f"duty-cycled XWAV ({len(subchunks)} raw files, gaps up to {worst:g} s): ingest stores a file "
                "as one continuous signal, so every raw file after the first would be mistimed; not ingested")
        return replace(info, start_ns=subchunks[0].start_ns, time_source="xwav")
