"""What a container's header declares about its samples, against what the object holds.

libsndfile quietly reads what is there: a WAV, AIFF, AU, W64 or RF64 cut
short opens with the frames it still holds, as if whole. Each container's
module (``riff``, ``w64``, ``aiff``, ``au``, ``caf``) reads the header's own
count into a :class:`Declared`, so that a cut file is told from a short
one; ``flac`` tells whether a FLAC ends where its STREAMINFO says.

Some writers leave a length open (a recorder streaming to disk writes the
header first: WAV ``data`` size 0, FLAC total samples 0). libsndfile then
finds no samples, or reads without knowing where they end; it reads such a
file through :class:`HeaderFix`, which shows it the length the object
really holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO

Patches = tuple[tuple[int, bytes], ...]  # (offset in the object, bytes read there instead)


@dataclass(frozen=True)
class Declared:
    """A container header's frame count, and the frames the object holds where the header puts them.

    ``frames`` is None when the header leaves the length open (streamed)
    or does not state one; ``held`` is None when only decoding can tell.
    ``patches`` make an open length explicit for libsndfile.
    """

    frames: int | None
    held: int | None
    patches: Patches = ()

    @property
    def cut(self) -> bool:
        return self.frames is not None and self.held is not None and self.held < self.frames


class HeaderFix:
    """A readable binary file showing ``patches`` in place of the object's own bytes there.

    Only the header bytes that state a length are patched: every sample is
    read from the object as it is.
    """

    def __init__(self, fh: BinaryIO, patches: Patches) -> None:
        self._fh, self._patches = fh, patches

    def read(self, size: int = -1) -> bytes:
        pos = self._fh.tell()
        data = self._fh.read(size)
        for offset, new in self._patches:
            lo, hi = max(offset, pos), min(offset + len(new), pos + len(data))
            if lo < hi:
                data = data[: lo - pos] + new[lo - offset : hi - offset] + data[hi - pos :]
        return data

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        memoryview(buffer)[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._fh.seek(offset, whence)

    def tell(self) -> int:
        return self._fh.tell()
