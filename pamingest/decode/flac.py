"""FLAC streams: STREAMINFO, and whether the object ends with the frame STREAMINFO says is last.

libsndfile takes a FLAC's length from STREAMINFO's total samples, which
streaming writers leave at 0 (unknown: libsndfile reports 2**63 - 1
frames) and which a file cut short still states in full. A whole file ends
with a whole frame, whose CRC-16 checks and whose last sample is the
declared total: one read of the object's tail tells, without decoding
(``frames_at_end``). Frame headers are read as RFC 9639 lays them out.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from typing import BinaryIO, Iterator

from ..errors import DecodeError

MAGIC = b"fLaC"
_TOTAL_BITS = (1 << 36) - 1


def _crc_table(poly: int, width: int) -> list[int]:
    top, mask = 1 << (width - 1), (1 << width) - 1
    table = []
    for byte in range(256):
        crc = byte << (width - 8)
        for _ in range(8):
            crc = ((crc << 1) ^ poly if crc & top else crc << 1) & mask
        table.append(crc)
    return table


_CRC8, _CRC16 = _crc_table(0x07, 8), _crc_table(0x8005, 16)


def _crc8(data: bytes) -> int:
    crc = 0
    for b in data:
        crc = _CRC8[crc ^ b]
    return crc


def _crc16(data: bytes) -> int:
    crc = 0
    for b in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC16[(crc >> 8) ^ b]
    return crc


@dataclass(frozen=True)
class StreamInfo:
    """The STREAMINFO block, where it is, and where the first frame starts."""

    offset: int  # of the STREAMINFO body in the object
    audio_offset: int
    min_block: int
    max_block: int
    max_frame_bytes: int  # 0: not known
    channels: int
    bits: int
    total: int  # samples per channel; 0: not known
    packed: int  # the 64 bits holding sample rate, channels, bits and total

    def total_patch(self, total: int) -> tuple[int, bytes]:
        """The header bytes that make STREAMINFO count ``total`` samples (0: unknown)."""
        if not 0 <= total <= _TOTAL_BITS:
            raise DecodeError(f"FLAC stream of {total} samples: STREAMINFO cannot count it")
        return self.offset + 10, struct.pack(">Q", (self.packed & ~_TOTAL_BITS) | total)


def _id3_size(head: bytes) -> int:
    """Bytes of an ID3v2 tag at the start of ``head`` (libsndfile skips one before a FLAC), or 0."""
    if len(head) < 10 or head[:3] != b"ID3":
        return 0
    size = (head[6] & 0x7F) << 21 | (head[7] & 0x7F) << 14 | (head[8] & 0x7F) << 7 | head[9] & 0x7F
    return 10 + size + (10 if head[5] & 0x10 else 0)


def metadata_blocks(fh: BinaryIO) -> Iterator[tuple[int, int]]:
    """``(block type, body size)`` of each metadata block from ``fh``'s position (just after
    ``fLaC``), ``fh`` at the block's body; the caller reads what it needs of it, the next
    step skips the rest (PADDING, SEEKTABLE and PICTURE can be large: never read whole).
    Ends with ``fh`` where the frames start."""
    last = False
    while not last:
        head = fh.read(4)
        if len(head) < 4:
            raise DecodeError("FLAC metadata ends early")
        last, kind, size = bool(head[0] & 0x80), head[0] & 0x7F, int.from_bytes(head[1:4], "big")
        body = fh.tell()
        yield kind, size
        fh.seek(body + size)


def stream_info(fh: BinaryIO) -> StreamInfo | None:
    """The stream's STREAMINFO and where its frames start; None if the object is not a FLAC stream."""
    fh.seek(0)
    start = _id3_size(fh.read(10))
    fh.seek(start)
    if fh.read(4) != MAGIC:
        return None
    info = None
    for kind, _ in metadata_blocks(fh):
        if kind == 0 and info is None:
            offset = fh.tell()
            body = fh.read(34)
            if len(body) < 34:
                raise DecodeError("FLAC STREAMINFO ends early")
            min_block, max_block = struct.unpack(">HH", body[:4])
            packed = struct.unpack(">Q", body[10:18])[0]
            info = (offset, min_block, max_block, int.from_bytes(body[7:10], "big"),
                    ((packed >> 41) & 7) + 1, ((packed >> 36) & 31) + 1, packed & _TOTAL_BITS, packed)
    if info is None:
        raise DecodeError("FLAC stream has no STREAMINFO block")
    offset, min_block, max_block, max_frame, channels, bits, total, packed = info
    return StreamInfo(offset, fh.tell(), min_block, max_block, max_frame, channels, bits, total, packed)


_BLOCK_SIZES = {1: 192, 2: 576, 3: 1152, 4: 2304, 5: 4608, **{c: 256 << (c - 8) for c in range(8, 16)}}
_SAMPLE_BITS = {1: 8, 2: 12, 4: 16, 5: 20, 6: 24, 7: 32}
_SYNC = re.compile(rb"\xff[\xf8\xf9]")
_ID3V1 = 128  # bytes of the tag some taggers append


def _continuation_bytes(lead: int) -> int | None:
    """Bytes following a UTF-8 style lead byte (0 to 6), or None if it cannot lead."""
    if lead < 0x80:
        return 0
    for extra, bound in enumerate((0xE0, 0xF0, 0xF8, 0xFC, 0xFE, 0xFF), start=1):
        if 0xC0 <= lead < bound:
            return extra
    return None


def _frame_header(buf: bytes, pos: int, info: StreamInfo) -> tuple[int, int] | None:
    """``(first sample, samples)`` of the frame whose header starts at ``buf[pos]``, if its CRC-8 checks."""
    if pos + 6 > len(buf):
        return None
    variable = buf[pos + 1] & 1
    block_code, rate_code = buf[pos + 2] >> 4, buf[pos + 2] & 15
    channel_code, bits_code = buf[pos + 3] >> 4, (buf[pos + 3] >> 1) & 7
    if not block_code or rate_code == 15 or channel_code > 10 or bits_code == 3 or buf[pos + 3] & 1:
        return None
    if (channel_code + 1 if channel_code < 8 else 2) != info.channels:
        return None
    if bits_code and _SAMPLE_BITS[bits_code] != info.bits:
        return None
    lead = buf[pos + 4]  # the frame or sample number, coded as UTF-8 extended to 36 bits
    extra = _continuation_bytes(lead)
    if extra is None or extra > (6 if variable else 5):
        return None
    number = lead & (0x3F >> extra) if extra else lead
    i = pos + 5
    if i + extra > len(buf):
        return None
    for b in buf[i : i + extra]:
        if b & 0xC0 != 0x80:
            return None
        number = number << 6 | b & 0x3F
    i += extra
    if block_code in (6, 7):
        n = 1 if block_code == 6 else 2
        block = int.from_bytes(buf[i : i + n], "big") + 1
        i += n
    else:
        block = _BLOCK_SIZES[block_code]
    i += {12: 1, 13: 2, 14: 2}.get(rate_code, 0)
    if i >= len(buf) or _crc8(buf[pos:i]) != buf[i]:
        return None
    return (number if variable else number * info.max_block), block


def frames_at_end(fh: BinaryIO, size: int, info: StreamInfo, candidates: int = 8) -> int | None:
    """Samples up to the end of the object's last frame, when the object ends with a whole frame
    (or one and an ID3v1 tag).

    None when it does not: cut inside a frame, or followed by other bytes.
    The tail read is one frame at most (STREAMINFO's largest frame, or the
    size of an uncompressed one) and the tag.
    """
    largest = info.max_frame_bytes or 16 + info.channels * (2 + ((info.max_block or 65535) * (info.bits + 1) + 7) // 8)
    window = min(size - info.audio_offset, largest + 64 + _ID3V1)
    if window < 8:
        return None
    fh.seek(size - window)
    tail = fh.read(window)
    if len(tail) != window:
        return None
    if len(tail) > _ID3V1 and tail[-_ID3V1 : 3 - _ID3V1] == b"TAG":
        tail = tail[:-_ID3V1]
    crc = int.from_bytes(tail[-2:], "big")
    for match in reversed(list(_SYNC.finditer(tail))):
        header = _frame_header(tail, match.start(), info)
        if header is None:
            continue
        if _crc16(tail[match.start() : -2]) == crc:
            first, samples = header
            return first + samples
        candidates -= 1
        if not candidates:
            break
    return None
