"""Sun/NeXT AU headers: the data size against the object.

Six 32-bit fields, big-endian (``.snd``) or little-endian (``dns.``):
magic, data offset, data size (0xFFFFFFFF: unknown, written by streaming
writers), encoding, sample rate, channels.
"""

from __future__ import annotations

import struct
from typing import BinaryIO

from .containers import Declared

MAGICS = (b".snd", b"dns.")
# encoding -> bytes per sample (mu-law, 8/16/24/32-bit PCM, float, double, A-law)
_WIDTH = {1: 1, 2: 1, 3: 2, 4: 3, 5: 4, 6: 4, 7: 8, 27: 1}


def declared(fh: BinaryIO, size: int) -> Declared:
    """Frames the data size declares, and those the object holds after the data offset."""
    fh.seek(0)
    head = fh.read(24)
    if len(head) < 24:
        return Declared(None, None)
    order = ">" if head[:4] == b".snd" else "<"
    offset, length, encoding, _, channels = struct.unpack(order + "5I", head[4:])
    frame_bytes = _WIDTH.get(encoding, 0) * channels
    if not frame_bytes:
        return Declared(None, None)
    held = max(0, size - offset) // frame_bytes
    if length == 0xFFFFFFFF:
        return Declared(None, held)
    return Declared(length // frame_bytes, min(held, length // frame_bytes))
