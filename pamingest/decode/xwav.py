"""XWAV (HARP) recordings: WAV or FLAC whose ``harp`` chunk lists the raw files inside.

An XWAV holds a directory of "raw files" (subchunks, 75 s each on HARPs) in
its ``harp`` RIFF chunk; ``flac --keep-foreign-metadata`` keeps it in
APPLICATION blocks of an ``.x.flac``. The probe reads the directory: a file
whose raw files are contiguous is one signal, timed by its first raw file
(millisecond precision, better than the name). Duty-cycled deployments
leave gaps between raw files: such a file is planned as several units, one
per run of contiguous raw files (a *piece*, ``AudioInfo.pieces``), each
timed by its first raw file. The file keeps one entry in the files table;
its rows' ``file_offset`` count from the file's first sample, so a row's
time is its piece's start + its offset into the piece, not ``file_start +
file_offset / rate`` (docs/architecture.md, Units). Samples are read by
libsndfile as any WAV/FLAC.
"""

from __future__ import annotations

import datetime as _dt
import struct
from dataclasses import dataclass, replace
from typing import Any, Iterator, Sequence

import numpy as np

from ..errors import DecodeError
from ..fsutil import describe_read_error, filesystem, open_for_read
from ..sources.base import SourceFile
from ..timing import NS_PER_S, utc_datetime_to_ns
from . import riff
from .base import AudioInfo, PlanContext, Piece, Unit, UnitFile
from .sndfile import SndfileDecoder, read


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


def contiguous_runs(subchunks: list[Subchunk], rate: int, max_gap_seconds: float) -> list[list[int]]:
    """Indices of the raw files in runs: each starts where the one before it ends, within ``max_gap_seconds``."""
    runs = [[0]] if subchunks else []
    for i, (a, b) in enumerate(zip(subchunks, subchunks[1:]), start=1):
        expected = a.start_ns + a.frames * NS_PER_S // rate
        if abs(b.start_ns - expected) > max_gap_seconds * NS_PER_S:
            runs.append([])
        runs[-1].append(i)
    return runs


def directory_gap_seconds(subchunks: list[Subchunk], rate: int) -> float:
    """The largest gap (or overlap) between consecutive raw files, in seconds."""
    worst = 0.0
    for a, b in zip(subchunks, subchunks[1:]):
        expected = a.start_ns + a.frames * NS_PER_S // rate
        worst = max(worst, abs(b.start_ns - expected) / NS_PER_S)
    return worst


class XwavDecoder(SndfileDecoder):
    """WAV/FLAC read by libsndfile, timed by the XWAV directory; a duty-cycled file in timed pieces.

    Parameters
    ----------
    max_gap_seconds : float
        Largest gap or overlap between consecutive raw files still taken as
        one continuous signal; a larger one starts a new piece.
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
        runs = contiguous_runs(subchunks, rate, self.max_gap_seconds)
        timed = replace(info, start_ns=subchunks[0].start_ns, time_source="xwav")
        if len(runs) == 1:
            return timed
        return self._pieces(timed, subchunks, rate, runs)

    def _pieces(self, info: AudioInfo, subchunks: list[Subchunk], rate: int, runs: list[list[int]]) -> AudioInfo:
        """``info`` with the file's pieces: a run of contiguous raw files each, cut where the file ends."""
        what = (f"duty-cycled XWAV ({len(subchunks)} raw files in {len(runs)} runs, gaps up to "
                f"{directory_gap_seconds(subchunks, rate):g} s)")
        if rate != info.sample_rate:
            raise DecodeError(f"{what}: its directory counts {rate} Hz, its samples are at {info.sample_rate} Hz, "
                              "so its raw files cannot be placed in time")
        listed = sum(s.frames for s in subchunks)
        if info.frames > listed:
            raise DecodeError(f"{what}: its directory lists {listed} frames, the file holds {info.frames}, so "
                              "its raw files cannot be placed in time")
        pieces, offset = [], 0
        for run in runs:
            frames = min(sum(subchunks[i].frames for i in run), info.frames - offset)
            if frames <= 0:
                break
            pieces.append(Piece(subchunks[run[0]].start_ns, offset, frames))
            offset += frames
        incomplete = info.incomplete
        if info.frames < listed and not incomplete:
            incomplete = f"truncated: kept {info.frames} of the {listed} frames its XWAV directory lists"
        return replace(info, pieces=tuple(pieces), incomplete=incomplete)

    def plan(self, probed: Sequence[tuple[SourceFile, AudioInfo]], context: PlanContext) -> list[Unit]:
        """A unit per continuous file, and one per piece of a duty-cycled file (its rows then restart
        at each piece: a row never spans a gap)."""
        units = super().plan([(f, i) for f, i in probed if not i.pieces], context)
        for file, info in probed:
            if not info.pieces:
                continue
            # file_start is the first raw file's time, as for a continuous file
            file = replace(file, start_ns=info.pieces[0].start_ns)
            path = context.stream_path(file, info)
            for piece in info.pieces:
                units.append(Unit(path, info, piece.start_ns, piece.frames,
                                  [UnitFile(file, 0, piece.frames, time_source="xwav", incomplete=info.incomplete,
                                            offset=piece.offset)],
                                  self, (file.url, info, piece.offset)))
        return units

    def read(self, source: Any, start: int, stop: int, storage_options: dict) -> Iterator[np.ndarray]:
        if len(source) == 2:
            return super().read(source, start, stop, storage_options)
        url, info, offset = source  # a piece: its samples from `offset` on in the file
        return read(url, info, offset + start, offset + stop, storage_options)
