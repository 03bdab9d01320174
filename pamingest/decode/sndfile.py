"""WAV, FLAC, AIFF, AU, W64, RF64 and CAF streamed through soundfile (libsndfile) over fsspec.

Samples are stored as soundfile reads them, except 24-bit PCM, which
libsndfile returns left-aligned in int32 and which is stored right-aligned
(the recorder's own integer values, |x| < 2**23), so that FLAC keeps it at
24 bits. ``AudioInfo.store_dtype`` and ``bits`` say what a stream holds.

The probe holds every header against the object (``containers``): a file
cut short is ingested up to where it ends, with the reason; a length left
open by a streaming writer is the length the object holds. Containers
whose header it cannot check are not ingested.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from ..errors import DecodeError
from ..pcm import PCM_WIDTH, pcm_samples
from ..fsutil import describe_read_error, fetch_pool, filesystem, open_for_read
from ..sources.base import SourceFile
from . import aiff, au, caf, flac, riff, w64
from .base import AudioInfo, FileDecoder
from .containers import Declared, HeaderFix, Patches

if TYPE_CHECKING:
    import soundfile

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
# Frames read per block: bounded memory whatever the file's length (1 MiB of 24-bit mono at most).
READ_BLOCK_FRAMES = 1 << 18


@dataclass(frozen=True)
class SndfileInfo(AudioInfo):
    """AudioInfo, and the header bytes libsndfile reads in place of the file's own
    (``containers.HeaderFix``): a length its header leaves open or gets wrong, made the one it holds."""

    header_fix: Patches = ()
    # Where the samples of a packed little-endian PCM WAV start (its ``data`` chunk); None for every
    # other file. Read once at probe: tasks read the samples from there, and a virtual ingest
    # (store/virtual.py) refers to byte ranges counted from it.
    pcm_offset: int | None = None


def _declared(fh, size: int) -> Declared | None:
    """What the header of a container libsndfile reads declares; None for the others (and FLAC)."""
    fh.seek(0)
    head = fh.read(16)
    if head[:4] in riff.FORMS and head[8:12] == b"WAVE":
        return riff.declared(fh, size)
    if head == w64.MAGIC:
        return w64.declared(fh, size)
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return aiff.declared(fh, size)
    if head[:4] in au.MAGICS:
        return au.declared(fh, size)
    if head[:4] == caf.MAGIC:
        return caf.declared(fh, size)
    return None


def _open(fh, url: str) -> soundfile.SoundFile:
    # imported lazily: `import pamingest` stays under 0.4 s (benchmarks/startup.py)
    import soundfile

    try:
        return soundfile.SoundFile(fh)
    except soundfile.LibsndfileError as exc:
        text = exc.error_string
        if "does not exist" in text:
            # libsndfile's words when none of its format probes recognise the bytes read through
            # a file object (the object is there: it is open)
            text = "no format libsndfile reads recognises its bytes"
        raise DecodeError(f"not a readable audio file ({text})") from exc
    except Exception as exc:  # noqa: BLE001 - any failure to open is this file's reason
        raise DecodeError(f"cannot open: {describe_read_error(exc)}") from exc


def _truncated(kept: int, declared: int | None, where: str) -> str:
    if declared is None:
        return f"truncated: kept {kept} frames (its header declares no length); {where}"
    return f"truncated: kept {kept} of the {declared} frames its header declares; {where}"


def _decodable_frames(snd: soundfile.SoundFile) -> tuple[int, str]:
    """Frames libsndfile decodes from where ``snd`` is until the stream ends, and why it stopped
    there ('' at a clean end); a block at a time, whatever the file's length.

    Read through libsndfile's own call (soundfile's private binding of it,
    ``_snd``; tests/test_sndfile.py and test_ingest.py hold it to account),
    not ``SoundFile.read``: soundfile seeks after every read to track its
    position, and in a FLAC without a known length, or cut short, that seek
    fails after a read that did decode, losing how many frames it gave.
    """
    import soundfile

    block = np.empty((READ_BLOCK_FRAMES, snd.channels), dtype=np.int32)
    out = soundfile._ffi.cast("int *", block.ctypes.data)
    frames = 0
    while True:
        got = soundfile._snd.sf_readf_int(snd._file, out, READ_BLOCK_FRAMES)
        frames += got
        error = soundfile._snd.sf_error(snd._file)
        if error:
            return frames, soundfile.LibsndfileError(error).error_string.removeprefix("Error : ").rstrip(".")
        if got == 0:
            return frames, ""


def _counted_flac(fs, path: str, url: str, stream: flac.StreamInfo) -> tuple[int, str, Patches]:
    """A FLAC's frames counted by decoding it, why they end before its header says ('' if they do
    not), and the patch that makes STREAMINFO count them.

    libsndfile reads it as of unknown length (STREAMINFO's total shown as
    0): a total that says too few would stop it early.
    """
    declared = stream.total or None
    with open_for_read(fs, path) as fh, _open(HeaderFix(fh, (stream.total_patch(0),)), url) as snd:
        frames, stopped = _decodable_frames(snd)
    if declared is not None and frames >= declared:
        reason = ""  # every declared frame decodes: what follows is not audio (a tag)
    elif stopped:
        reason = _truncated(frames, declared, f"decoding stopped at frame {frames} ({stopped})")
    elif declared is not None:
        reason = _truncated(frames, declared, f"the stream ends at frame {frames}")
    else:
        reason = ""
    return frames, reason, ((stream.total_patch(frames),) if frames and frames != stream.total else ())


def probe(url: str, size: int | None = None, storage_options: dict | None = None) -> SndfileInfo:
    """Read a recording's header: sample rate, channels, frames, sample format.

    The frames are those the object holds: a file cut short (its header
    declares more) is ingested up to where it ends, the reason in
    ``AudioInfo.incomplete``. A FLAC that does not end where STREAMINFO says
    (or whose STREAMINFO counts 0 samples: written while streaming) is
    counted by decoding it, streamed.
    """
    if size == 0:
        raise DecodeError("empty object (0 bytes)")
    fs, path = filesystem(url, storage_options)
    with open_for_read(fs, path, block_size=256 * 1024) as fh:
        if size is None:
            size = fs.size(path)
        if size == 0:
            raise DecodeError("empty object (0 bytes)")
        try:
            declared = _declared(fh, size)
            stream = flac.stream_info(fh) if declared is None else None
            # A FLAC that ends with the whole frame STREAMINFO names as its last is taken at its word.
            count = stream is not None and not (stream.total and flac.frames_at_end(fh, size, stream) == stream.total)
            fh.seek(0)
        except DecodeError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise DecodeError(describe_read_error(exc)) from exc
        patches = declared.patches if declared is not None else ()
        try:
            snd = _open(HeaderFix(fh, patches) if patches else fh, url)
        except DecodeError as exc:
            if declared is not None and declared.cut:
                raise DecodeError(f"truncated: its header declares {declared.frames} frames, the object holds "
                                  f"{declared.held}, and libsndfile cannot read it: {exc}") from exc
            raise
        with snd:
            if snd.subtype not in _SUBTYPES:
                raise DecodeError(f"unsupported sample format {snd.format}/{snd.subtype}")
            if stream is None and declared is None:
                raise DecodeError(f"{snd.format} files are not ingested: pamingest cannot check such a header against "
                                  "the object's size, so a file cut short would pass as whole")
            rate, channels, fmt, subtype, frames = snd.samplerate, snd.channels, snd.format, snd.subtype, snd.frames
        pcm_offset = None
        if fmt == "WAV" and subtype in PCM_WIDTH:
            try:
                pcm_offset = _pcm_data_offset(fh, size, PCM_WIDTH[subtype], channels)
            except Exception:  # noqa: BLE001 - libsndfile read the header: tasks read through it instead
                pcm_offset = None
    incomplete = ""
    if count:
        try:
            frames, incomplete, patches = _counted_flac(fs, path, url, stream)
        except DecodeError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise DecodeError(f"counting its frames: {describe_read_error(exc)}") from exc
    elif declared is not None and declared.frames is not None and declared.frames > frames:
        incomplete = _truncated(frames, declared.frames, f"the object ends at frame {frames}")
    if frames <= 0:
        raise DecodeError("recording holds no samples" + (f" ({incomplete})" if incomplete else ""))
    store_dtype, bits, _ = _SUBTYPES[subtype]
    return SndfileInfo(int(rate), int(channels), int(frames), fmt, subtype, store_dtype, bits,
                       incomplete=incomplete, header_fix=patches, pcm_offset=pcm_offset)


# Little-endian PCM WAV read without libsndfile: sample bytes per subtype (pcm.PCM_WIDTH).
_PCM_WIDTH = PCM_WIDTH
# Bytes per range request of the direct PCM reader: S3's guidance for ranged reads is
# 8-16 MB. Two are held at once (the one being converted and the next), converted
# PCM_CONVERT_BYTES at a time. 16 MB read a 460 MB Pacific Sound file from moto (the
# test server, which spends per request in proportion to the object's size) 1.8x
# faster, but took the worker's peak from ~210 to ~290 MB (benchmarks/pacific_sound_memory.py).
PCM_READ_BYTES = 8 * 2**20
PCM_CONVERT_BYTES = 2**20


def _pcm_data_offset(fh, size: int, width: int, channels: int) -> int | None:
    """Where the samples of a little-endian RIFF/WAVE start, when its frames are ``channels`` packed
    samples of ``width`` bytes (e.g. not 24 bits in 32-bit containers); else None."""
    fh.seek(0)
    is_wave, little = riff.form(fh)
    if not is_wave or not little:
        return None
    packed = False
    for chunk in riff.walk(fh, size, little):
        if chunk.id == b"fmt ":
            body = riff.read_body(fh, chunk, 16)
            packed = len(body) >= 16 and int.from_bytes(body[12:14], "little") == width * channels \
                and int.from_bytes(body[14:16], "little") == 8 * width
        elif chunk.id == b"data":
            return chunk.offset if packed else None
    return None


def _read_pcm(fs, path: str, offset: int, info: AudioInfo, start: int, want: int) -> Iterator[np.ndarray]:
    """The frames ``[start, start + want)`` of a packed PCM WAV whose samples begin at ``offset``.

    Read in ~4 MB ranges, the next range fetched in a thread while the caller
    encodes the current one: the object store's transfer and the encoding
    overlap instead of taking turns.
    """
    width = _PCM_WIDTH[info.subtype]
    frame_bytes = width * info.channels
    block = max(1, PCM_READ_BYTES // frame_bytes)
    ranges = [(start + k, min(block, want - k)) for k in range(0, want, block)]

    def fetch(first: int, n: int) -> bytes:
        lo = offset + first * frame_bytes
        try:
            return fs.cat_file(path, start=lo, end=lo + n * frame_bytes)
        except Exception as exc:  # noqa: BLE001
            raise DecodeError(f"decoding failed at frame {first}: {describe_read_error(exc)}") from exc

    done = 0
    pool = fetch_pool()
    pending = pool.submit(fetch, *ranges[0]) if ranges else None
    try:
        for i, (first, n) in enumerate(ranges):
            raw = pending.result()
            pending = pool.submit(fetch, *ranges[i + 1]) if i + 1 < len(ranges) else None
            got = len(raw) // frame_bytes
            view = memoryview(raw)[: got * frame_bytes]
            step = max(1, PCM_CONVERT_BYTES // frame_bytes) * frame_bytes
            for k in range(0, len(view), step):  # converted a few MB at a time: int32 is 4/3 of 24-bit
                yield pcm_samples(view[k : k + step], width, info.channels)
            done += got
            if got < n:
                break
    finally:
        if pending is not None:
            pending.cancel()  # a reader stopped early (an error downstream): no range left behind
    if done < want:
        raise DecodeError(f"file ends at frame {start + done} but its header announces {info.frames} frames "
                          "(truncated or corrupt)")


def read(url: str, info: AudioInfo, start: int, stop: int, storage_options: dict | None = None,
         block_frames: int = READ_BLOCK_FRAMES) -> Iterator[np.ndarray]:
    """Yield ``(n, channels)`` blocks of the file's frames ``[start, stop)``, in the stored dtype.

    Memory holds one block (plus the filesystem's read-ahead), whatever the
    file's length. Raises DecodeError if the file ends before the frames its
    probe found.
    """
    fs, path = filesystem(url, storage_options)
    _, _, read_dtype = _SUBTYPES[info.subtype]
    want = min(stop, info.frames) - start
    done = 0
    if info.format == "WAV" and info.subtype in _PCM_WIDTH:
        # Integer PCM in a little-endian RIFF: the samples are read and converted in ~4 MB
        # blocks here. Through libsndfile each block is hundreds of small reads, each a
        # Python call into fsspec: a 256 kHz 24-bit file decoded at half the speed of a
        # bare read of its bytes (benchmarks/pacific_sound_memory.py).
        offset = getattr(info, "pcm_offset", None)
        if offset is None:
            with open_for_read(fs, path, block_size=256 * 1024) as fh:
                try:
                    offset = _pcm_data_offset(fh, fs.size(path), _PCM_WIDTH[info.subtype], info.channels)
                except DecodeError:
                    raise
                except Exception as exc:  # noqa: BLE001
                    raise DecodeError(describe_read_error(exc)) from exc
        if offset is not None:
            yield from _read_pcm(fs, path, offset, info, start, want)
            return
    fix = info.header_fix if isinstance(info, SndfileInfo) else ()
    with open_for_read(fs, path) as fh, _open(HeaderFix(fh, fix) if fix else fh, url) as snd:
        try:
            if start:
                snd.seek(start)
            while done < want:
                block = snd.read(min(block_frames, want - done), dtype=read_dtype, always_2d=True)
                if len(block) == 0:
                    break
                if info.bits == 24:
                    np.right_shift(block, 8, out=block)  # our own array: shifted in place
                done += len(block)
                yield block
        except DecodeError:
            raise
        except Exception as exc:  # noqa: BLE001
            broke = start + done + _frames_before_error(fs, path, url, fix, start + done)
            raise DecodeError(f"decoding failed at frame {broke}: {describe_read_error(exc)}") from exc
        if done < want:
            raise DecodeError(
                f"file ends at frame {start + done} but its header announces {info.frames} frames "
                "(truncated or corrupt)"
            )


def _frames_before_error(fs, path: str, url: str, fix: Patches, at: int) -> int:
    """How many frames from ``at`` decode before libsndfile's error: a failed block read gives
    none of its frames, so the reason would name the block's start, not where the damage is.
    Only run once a read has failed; 0 if this second read fails some other way."""
    try:
        with open_for_read(fs, path) as fh, _open(HeaderFix(fh, fix) if fix else fh, url) as snd:
            if at:
                snd.seek(at)
            return _decodable_frames(snd)[0]
    except Exception:  # noqa: BLE001 - the first error is the one reported
        return 0


class SndfileDecoder(FileDecoder):
    """WAV, FLAC, AIFF... through libsndfile, streamed over fsspec; one unit per file."""

    name = "sndfile"

    def probe(self, file: SourceFile, storage_options: dict) -> AudioInfo:
        return probe(file.url, file.size, storage_options)

    def read(self, source: Any, start: int, stop: int, storage_options: dict) -> Iterator[np.ndarray]:
        url, info = source
        return read(url, info, start, stop, storage_options)
