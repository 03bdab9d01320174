"""A standing corpus of bad and odd audio inputs (issue #16 item 2), ingested in one run.

Every kind of damaged, unusual or misnamed recording met in the field (or
imaginable from the formats' specifications) is made at test time, put in
ONE folder beside good recordings, and ingested in ONE run: what one file
does must not change what happens to its neighbours. Each case then has
its own assertion of its outcome:

- ``ok``: stored bit for bit (the samples the builder wrote, not a re-read
  of the damaged file, so a reader that loses samples cannot agree with itself);
- ``partial``: stored up to where it ends, with the frames kept and why;
- ``failed`` / ``rejected``: recorded, nothing stored, with a stable part
  of the reason (``failed``: probed and failed; ``rejected``: the catalog's
  rejected table, i.e. never decoded or not readable);
- ``ignored``: not an audio suffix, not listed at all.

A case whose present behaviour is wrong is marked xfail(strict=True) with
what should happen: the table keeps the right expectation.
"""

from __future__ import annotations

import os
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import soundfile as sf

import pamingest as pi
from pamingest.store.catalog import read_catalog
from pamingest.store.repo import Store

from helpers import ffmpeg_samples

TEMPLATE = "{site}_%Y%m%d_%H%M%S.{ext:wav|flac}"
RATE = 8000
FRAMES = 4000  # half a second at 8 kHz: enough for several FLAC frames, small enough to stay fast
TIME = "20240301_120000"


# ---------------------------------------------------------------- samples

def noise(frames: int = FRAMES, channels: int = 1, kind: str = "int16", seed: int = 0) -> np.ndarray:
    """Full-range random samples in the dtype the store keeps for ``kind`` (24-bit: right-aligned int32)."""
    rng = np.random.default_rng(seed)
    if kind == "int16":
        return rng.integers(-(2**15), 2**15, size=(frames, channels), dtype=np.int16)
    if kind == "int8":  # 8-bit WAV is read back as int16 holding value << 8
        return (rng.integers(-128, 128, size=(frames, channels)) << 8).astype(np.int16)
    if kind == "int24":
        return rng.integers(-(2**23), 2**23, size=(frames, channels), dtype=np.int32)
    if kind == "int32":
        return rng.integers(-(2**31), 2**31, size=(frames, channels), dtype=np.int32)
    if kind == "float32":
        return rng.uniform(-1, 1, size=(frames, channels)).astype(np.float32)
    return rng.uniform(-1, 1, size=(frames, channels))  # float64


def write(path: Path, x: np.ndarray, rate: int = RATE, subtype: str | None = None, fmt: str | None = None) -> None:
    """``x`` in the stored dtype, written so that reading it back gives ``x`` (24-bit shifted left)."""
    if subtype == "PCM_24":
        x = x.astype(np.int32) << 8
    sf.write(str(path), x, rate, subtype=subtype, format=fmt or ("FLAC" if path.suffix.lower() == ".flac" else "WAV"))


def wav_bytes(x: np.ndarray, rate: int = RATE, subtype: str = "PCM_16", fmt: str = "WAV") -> bytes:
    import io

    buf = io.BytesIO()
    sf.write(buf, x if subtype != "PCM_24" else x << 8, rate, subtype=subtype, format=fmt)
    return buf.getvalue()


def chunk(cid: bytes, body: bytes) -> bytes:
    """A little-endian RIFF chunk, padded to an even size as the specification asks."""
    return cid + struct.pack("<I", len(body)) + body + (b"\0" if len(body) & 1 else b"")


def riff(*chunks: bytes) -> bytes:
    body = b"WAVE" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def fmt_pcm(channels: int, rate: int, bits: int) -> bytes:
    align = channels * bits // 8
    return chunk(b"fmt ", struct.pack("<HHIIHH", 1, channels, rate, rate * align, align, bits))


def flac_total(data: bytes, total: int) -> bytes:
    """A FLAC's bytes with STREAMINFO's total samples set to ``total`` and its MD5 unset."""
    out = bytearray(data)
    packed = int.from_bytes(out[18:26], "big")
    out[18:26] = (packed & ~(2**36 - 1) | total).to_bytes(8, "big")
    out[26:42] = bytes(16)
    return bytes(out)


# ---------------------------------------------------------------- builders
# Each writes the file under test at ``path`` and returns the samples the store must hold for it
# (None: nothing stored). FIXTURES is set by the corpus fixture: the real recordings.

FIXTURES: Path


def songmeter() -> Path:
    return sorted((FIXTURES / "songmeter" / "S4A03895").glob("*.wav"))[0]


def soundtrap() -> Path:
    return sorted((FIXTURES / "soundtrap").glob("*.flac"))[0]


def empty_file(path):
    path.write_bytes(b"")


def one_byte(path):
    path.write_bytes(b"R")


def wav_header_only(path):
    path.write_bytes(wav_bytes(noise())[:44])  # declares 4000 frames, holds none


def wav_header_without_data_chunk(path):
    path.write_bytes(riff(fmt_pcm(1, RATE, 16)))


def wav_of_no_frames(path):
    write(path, noise(0))


def random_bytes(path):
    path.write_bytes(np.random.default_rng(1).bytes(10_000))


def riff_header_then_random_bytes(path):
    path.write_bytes(b"RIFF" + struct.pack("<I", 9992) + b"WAVE" + np.random.default_rng(2).bytes(9988))


def flac_magic_then_random_bytes(path):
    path.write_bytes(b"fLaC" + np.random.default_rng(3).bytes(10_000))


def cut(fraction: float):
    def wav_cut(path):
        """A real SongMeter recording cut short: the last frame may be cut through its samples."""
        data = songmeter().read_bytes()
        path.write_bytes(data[: int(len(data) * fraction)])
        return sf.read(str(songmeter()), dtype="int16", always_2d=True)[0][: (int(len(data) * fraction) - 44) // 2]

    wav_cut.__name__ = f"wav_cut_at_{round(fraction * 100)}_percent"
    return wav_cut


def wav_data_size(size: int):
    def streamed(path):
        """What a recorder streaming to disk leaves: RIFF and data sizes never filled in."""
        x = noise(seed=4)
        data = bytearray(wav_bytes(x))
        at = data.index(b"data") + 4
        data[4:8] = data[at : at + 4] = size.to_bytes(4, "little")
        path.write_bytes(bytes(data))
        return x

    streamed.__name__ = f"wav_data_size_{size:#x}"
    return streamed


def sndfile_format(fmt: str, subtype: str = "PCM_16", kind: str = "int16"):
    def container(path):
        """Another container libsndfile reads, named .wav as recorders' software may."""
        x = noise(kind=kind, seed=5)
        path.write_bytes(wav_bytes(x, subtype=subtype, fmt=fmt))
        return x

    container.__name__ = f"{fmt.lower()}_{subtype.lower()}_named_wav"
    return container


def riff_chunk_claims_rifx(path):
    """RIFX: big-endian RIFF; libsndfile writes it for WAV with endian='BIG'."""
    x = noise(seed=6)
    sf.write(str(path), x, RATE, format="WAV", subtype="PCM_16", endian="BIG")
    assert path.read_bytes()[:4] == b"RIFX"
    return x


def flac_total_zero(path):
    """STREAMINFO counting 0 samples: a streaming encoder's FLAC, valid by the specification."""
    x = noise(seed=7)
    write(path.with_suffix(".tmp"), x, subtype="PCM_16", fmt="FLAC")
    path.write_bytes(flac_total(path.with_suffix(".tmp").read_bytes(), 0))
    path.with_suffix(".tmp").unlink()
    return x


def flac_declaring_more(path):
    x = noise(seed=8)
    write(path.with_suffix(".tmp"), x, subtype="PCM_16", fmt="FLAC")
    path.write_bytes(flac_total(path.with_suffix(".tmp").read_bytes(), 10 * FRAMES))
    path.with_suffix(".tmp").unlink()
    return x


def flac_cut_at_half(path):
    """A real SoundTrap FLAC cut at half its bytes: the frames before the cut one are kept."""
    data = soundtrap().read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return ffmpeg_samples(path)


def flac_missing_last_byte(path):
    data = soundtrap().read_bytes()
    path.write_bytes(data[:-1])
    return ffmpeg_samples(path)


def flac_damaged_in_the_middle(path):
    """Bytes overwritten in the middle of the frames: a disk or transfer error, not a cut."""
    write(path.with_suffix(".tmp"), noise(16_000, seed=9), subtype="PCM_16", fmt="FLAC")
    data = bytearray(path.with_suffix(".tmp").read_bytes())
    path.with_suffix(".tmp").unlink()
    mid = len(data) // 2
    data[mid : mid + 400] = np.random.default_rng(9).bytes(400)
    path.write_bytes(bytes(data))


def flac_metadata_only(path):
    write(path.with_suffix(".tmp"), noise(seed=10), subtype="PCM_16", fmt="FLAC")
    data = path.with_suffix(".tmp").read_bytes()
    path.with_suffix(".tmp").unlink()
    path.write_bytes(data[: data.index(b"\xff\xf8")])  # up to the first frame's sync code


def encoded(fmt: str, subtype: str):
    def lossy(path):
        path.write_bytes(wav_bytes(noise(kind="float32", seed=11), subtype=subtype, fmt=fmt))

    lossy.__name__ = f"{fmt.lower()}_named_wav"
    return lossy


def pcm(subtype: str, kind: str, channels: int = 1, rate: int = RATE, frames: int = FRAMES, suffix_fmt: str = "WAV"):
    def recording(path):
        x = noise(frames, channels, kind, seed=channels + rate % 97)
        path.write_bytes(wav_bytes(x, rate, subtype, suffix_fmt))
        return x

    recording.__name__ = f"{suffix_fmt.lower()}_{subtype.lower()}_{channels}ch_{rate}hz"
    return recording


def wav_mu_law(path):
    path.write_bytes(wav_bytes(noise(seed=12), subtype="ULAW"))
    return sf.read(str(path), dtype="int16", always_2d=True)[0]  # lossy: the store keeps libsndfile's decoding


def wav_ima_adpcm(path):
    path.write_bytes(wav_bytes(noise(seed=13), subtype="IMA_ADPCM"))


def extra_chunks(path):
    """LIST, bext and JUNK before the data and LIST, id3 after it, as field recorders write them."""
    x = noise(seed=14)
    path.write_bytes(riff(
        fmt_pcm(1, RATE, 16), chunk(b"JUNK", bytes(28)), chunk(b"bext", b"Wildlife Acoustics".ljust(602, b"\0")),
        chunk(b"LIST", b"INFOICMT" + struct.pack("<I", 8) + b"deploy1\0"), chunk(b"data", x.tobytes()),
        chunk(b"LIST", b"INFOISFT" + struct.pack("<I", 6) + b"rec 1\0"), chunk(b"id3 ", b"ID3\3\0\0\0\0\0\0")))
    return x


def odd_chunk_padding(path):
    """A 7-byte chunk before the data (a pad byte follows it) and 8-bit mono data of an odd length."""
    x8 = np.random.default_rng(15).integers(0, 256, size=FRAMES + 1, dtype=np.uint8)
    path.write_bytes(riff(fmt_pcm(1, RATE, 8), chunk(b"note", b"odd one"), chunk(b"data", x8.tobytes()),
                          chunk(b"LIST", b"INFO")))
    return ((x8.astype(np.int16) - 128) << 8).reshape(-1, 1)


def trailing_garbage_after_data(path):
    """An ID3v1 tag appended to a whole WAV by a tagger: not a chunk, not samples."""
    x = noise(seed=16)
    path.write_bytes(wav_bytes(x) + b"TAG" + bytes(125))
    return x


def flac_with_id3v2_in_front(path):
    x = noise(seed=17)
    write(path.with_suffix(".tmp"), x, subtype="PCM_16", fmt="FLAC")
    tag = b"ID3\x03\x00\x00\x00\x00\x00\x10" + bytes(16)
    path.write_bytes(tag + path.with_suffix(".tmp").read_bytes())
    path.with_suffix(".tmp").unlink()
    return x


def digital_silence(path):
    x = np.zeros((FRAMES, 1), dtype=np.int16)
    write(path, x, subtype="PCM_16")
    return x


def clipped_int16(path):
    x = np.clip(noise(seed=18).astype(np.int32) * 4, -(2**15), 2**15 - 1).astype(np.int16)
    write(path, x, subtype="PCM_16")
    return x


def clipped_float_beyond_full_scale(path):
    """Floats past +-1.0 (and at it): a float WAV holds them; nothing may clip or rescale them."""
    x = (noise(kind="float32", seed=19) * 3).astype(np.float32)
    x[:10, 0] = [1.0, -1.0, 1e30, -1e30, 0.0, -0.0, 1e-45, 2.0, -2.0, 65504.0]
    write(path, x, subtype="FLOAT")
    return x


def float_nan_inf_signed_zero(path):
    """NaN, infinities, -0.0 and a denormal: bit for bit means these too (a comparison by value would
    take -0.0 for 0.0 and skip NaN)."""
    x = noise(kind="float32", seed=21)
    x[:6, 0] = [np.nan, np.inf, -np.inf, -0.0, np.float32(1e-45), np.float32(-1e-45)]
    write(path, x, subtype="FLOAT")
    return x


def header_field(offset: int, value: int, width: int):
    def zeroed(path):
        """A WAV whose fmt chunk states an impossible value (a recorder's firmware bug)."""
        data = bytearray(wav_bytes(noise(seed=22)))
        data[offset : offset + width] = value.to_bytes(width, "little")
        path.write_bytes(bytes(data))

    zeroed.__name__ = f"wav_with_{value}_at_byte_{offset}"
    return zeroed


def wav_odd_data_size(path):
    """A data size of 8001 bytes over 8000 bytes of 16-bit samples: the half sample is not a frame."""
    x = noise(seed=23)
    data = bytearray(wav_bytes(x))
    at = data.index(b"data") + 4
    data[at : at + 4] = (2 * FRAMES + 1).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    return x


def wav_open_data_then_chunk(path):
    """The data size left 0 (streamed) but the RIFF size right and a LIST chunk after the data, as a
    recorder that patches only the RIFF size at close leaves it: the data ends where LIST begins."""
    x = noise(seed=24)
    path.write_bytes(riff(fmt_pcm(1, RATE, 16), b"data" + bytes(4) + x.tobytes(),
                          chunk(b"LIST", b"INFOISFT" + struct.pack("<I", 6) + b"rec 1\0")))
    return x


def wav_open_data_then_chunks(size: int, stereo8: bool = False):
    def streamed(path):
        """An open data size (``size``: 0 or 0xFFFFFFFF) and two chunks after the data (LIST, id3),
        the RIFF size right; 8-bit stereo makes an even frame, 8-bit mono an odd-sized data chunk
        whose pad byte comes before the first chunk."""
        channels = 2 if stereo8 else 1
        x8 = (np.random.default_rng(26).integers(-128, 128, size=(FRAMES + 1, channels))).astype(np.int16)
        body = (x8 + 128).astype(np.uint8).tobytes()
        data = b"data" + struct.pack("<I", size) + body + (b"\0" if len(body) & 1 else b"")
        path.write_bytes(riff(fmt_pcm(channels, RATE, 8), data,
                              chunk(b"LIST", b"INFOISFT" + struct.pack("<I", 6) + b"rec 1\0"),
                              chunk(b"id3 ", b"ID3" + bytes(20))))
        return (x8 << 8).astype(np.int16)  # libsndfile reads 8-bit PCM as int16, << 8

    streamed.__name__ = f"wav_open_data_{size:#x}_then_chunks" + ("_stereo" if stereo8 else "")
    return streamed


def wav_open_data_stale_riff_size(path):
    """Data size open and a RIFF size that ends before the object does (written early, never patched):
    nothing says where the samples end, so they run to the end of the object."""
    x = noise(seed=27)
    data = bytearray(riff(fmt_pcm(1, RATE, 16), b"data" + bytes(4) + x.tobytes()))
    data[4:8] = struct.pack("<I", 36 + 8 + 1000)
    path.write_bytes(bytes(data))
    return x


def au_size_unknown(path):
    """AU written while streaming: data size 0xFFFFFFFF, the samples run to the end."""
    x = noise(seed=25)
    data = bytearray(wav_bytes(x, fmt="AU"))
    data[8:12] = b"\xff\xff\xff\xff"
    path.write_bytes(bytes(data))
    return x


def named_pipe(path):
    """A FIFO where a recording should be (a capture process writing into the folder)."""
    os.mkfifo(path)


def symlink_to_recording(path):
    """A link to a whole recording elsewhere (a deployment folder assembled from links)."""
    x = noise(seed=26)
    target = path.parent.parent / "elsewhere.wav"
    write(target, x, subtype="PCM_16")
    os.symlink(target, path)
    return x


def good_copy(src_of: Callable[[], Path]):
    def good(path):
        shutil.copy(src_of(), path)
        return sf.read(str(src_of()), dtype="int16", always_2d=True)[0]

    return good


def symlink_loop(path):
    os.symlink(path.name, path)  # a link to itself


def broken_symlink(path):
    os.symlink("no-such-recording.wav", path)


def directory_named_wav(path):
    path.mkdir()


def not_audio_suffix(path):
    path.write_bytes(wav_bytes(noise(seed=20)))


# ---------------------------------------------------------------- the table

@dataclass(frozen=True)
class Case:
    kind: str  # also the file's site: every case has its own stream, or its own record
    build: Callable[[Path], np.ndarray | None]
    outcome: str  # "ok", "partial", "failed", "rejected" or "ignored"
    reason: str = ""  # a stable part of the recorded reason
    name: str | None = None  # the file name, when the name is what the case is about
    suffix: str = "wav"
    start: str = "2024-03-01T12:00:00"  # UTC start the store must give a stored file

    @property
    def file_name(self) -> str:
        return self.name or f"{self.kind}_{TIME}.{self.suffix}"


# Present behaviour judged wrong: the case states what should happen, and is expected to fail until then.
FINDINGS = {
}


NO_FRAMES = "recording holds no samples"
UNREADABLE = "not a readable audio file"
TRUNCATED = "the object ends at frame"

CASES = [
    # --- nothing, or nothing audio
    Case("empty", empty_file, "rejected", "empty object (0 bytes)"),
    Case("empty-flac", empty_file, "rejected", "empty object (0 bytes)", suffix="flac"),
    Case("one-byte", one_byte, "rejected", UNREADABLE),
    Case("wav-header-only", wav_header_only, "rejected", "kept 0 of the 4000 frames its header declares"),
    Case("wav-no-data-chunk", wav_header_without_data_chunk, "rejected", UNREADABLE),
    Case("wav-zero-frames", wav_of_no_frames, "rejected", NO_FRAMES),
    Case("random-bytes-wav", random_bytes, "rejected", f"{UNREADABLE} (no format libsndfile reads recognises"),
    Case("random-bytes-flac", random_bytes, "rejected", UNREADABLE, suffix="flac"),
    Case("riff-then-random", riff_header_then_random_bytes, "rejected", UNREADABLE),
    Case("flac-magic-then-random", flac_magic_then_random_bytes, "rejected", "FLAC", suffix="flac"),
    Case("flac-metadata-only", flac_metadata_only, "rejected", NO_FRAMES, suffix="flac"),
    Case("wav-rate-0", header_field(24, 0, 4), "rejected", UNREADABLE),
    Case("wav-channels-0", header_field(22, 0, 2), "rejected", "Channel count is zero"),
    Case("fifo", named_pipe, "rejected", "not a regular file (a named pipe)"),
    # --- cut short or damaged
    Case("wav-cut-50", cut(0.5), "partial", TRUNCATED),
    Case("wav-cut-99", cut(0.99), "partial", TRUNCATED),
    Case("flac-cut-50", flac_cut_at_half, "partial", "decoding stopped at frame", suffix="flac"),
    Case("flac-missing-last-byte", flac_missing_last_byte, "partial", "decoding stopped at frame", suffix="flac"),
    Case("flac-declares-more", flac_declaring_more, "partial", "kept 4000 of the 40000 frames its header declares",
         suffix="flac"),
    # libsndfile's FLAC encoder writes 4096-sample frames; the damage starts in the second one.
    Case("flac-damaged-middle", flac_damaged_in_the_middle, "failed", "decoding failed at frame 4096", suffix="flac"),
    # --- lengths left open by streaming writers
    Case("wav-data-size-0", wav_data_size(0), "ok"),
    Case("wav-data-size-ffffffff", wav_data_size(0xFFFFFFFF), "ok"),
    Case("flac-total-0", flac_total_zero, "ok", suffix="flac"),
    Case("au-size-unknown", au_size_unknown, "ok"),
    Case("wav-open-data-then-chunk", wav_open_data_then_chunk, "ok"),
    Case("wav-open-data-pad-then-chunks", wav_open_data_then_chunks(0), "ok"),
    Case("wav-ffffffff-data-then-chunks", wav_open_data_then_chunks(0xFFFFFFFF, stereo8=True), "ok"),
    Case("wav-open-data-stale-riff-size", wav_open_data_stale_riff_size, "ok"),
    # --- other containers, named .wav
    Case("rifx", riff_chunk_claims_rifx, "ok"),
    Case("rf64", sndfile_format("RF64"), "ok"),
    Case("w64", sndfile_format("W64"), "ok"),
    Case("aiff", sndfile_format("AIFF"), "ok"),
    Case("aifc-float", sndfile_format("AIFF", "FLOAT", "float32"), "ok"),
    Case("au", sndfile_format("AU"), "ok"),
    Case("caf", sndfile_format("CAF"), "ok"),
    Case("wavex", sndfile_format("WAVEX", "PCM_24", "int24"), "ok"),
    Case("mp3-named-wav", encoded("MP3", "MPEG_LAYER_III"), "rejected", "unsupported sample format"),
    Case("ogg-named-wav", encoded("OGG", "VORBIS"), "rejected", "unsupported sample format"),
    Case("ima-adpcm", wav_ima_adpcm, "rejected", "unsupported sample format"),
    Case("mu-law", wav_mu_law, "ok"),
    # --- sample formats, channels and rates
    Case("pcm8", pcm("PCM_U8", "int8"), "ok"),
    Case("pcm16", pcm("PCM_16", "int16"), "ok"),
    Case("pcm24", pcm("PCM_24", "int24"), "ok"),
    Case("pcm32", pcm("PCM_32", "int32"), "ok"),
    Case("float32", pcm("FLOAT", "float32"), "ok"),
    Case("float64", pcm("DOUBLE", "float64"), "ok"),
    Case("flac-pcm8", pcm("PCM_S8", "int8", suffix_fmt="FLAC"), "ok", suffix="flac"),
    Case("flac-pcm24", pcm("PCM_24", "int24", suffix_fmt="FLAC"), "ok", suffix="flac"),
    Case("stereo", pcm("PCM_16", "int16", channels=2), "ok"),
    Case("8-channels", pcm("PCM_24", "int24", channels=8), "ok"),
    Case("10-channels", pcm("PCM_16", "int16", channels=10), "ok"),
    Case("rate-1hz", pcm("PCM_16", "int16", rate=1, frames=30), "ok"),
    Case("rate-96k", pcm("PCM_24", "int24", rate=96_000, frames=9600), "ok"),
    Case("rate-384k", pcm("PCM_16", "int16", rate=384_000, frames=38_400), "ok"),
    Case("digital-silence", digital_silence, "ok"),
    Case("clipped-int16", clipped_int16, "ok"),
    Case("float-beyond-full-scale", clipped_float_beyond_full_scale, "ok"),
    Case("float-nan-inf", float_nan_inf_signed_zero, "ok"),
    # --- odd but valid layouts
    Case("extra-chunks", extra_chunks, "ok"),
    Case("odd-chunk-padding", odd_chunk_padding, "ok"),
    Case("id3v1-after-wav", trailing_garbage_after_data, "ok"),
    Case("wav-odd-data-size", wav_odd_data_size, "ok"),
    Case("flac-id3v2-in-front", flac_with_id3v2_in_front, "ok", suffix="flac"),
    # --- names
    Case("hour-25", pcm("PCM_16", "int16"), "rejected", "hour 25 out of range 0-23",
         name="hour-25_20240301_250000.wav"),
    Case("feb-30", pcm("PCM_16", "int16"), "rejected", "day 30 out of range for February 2024",
         name="feb-30_20240230_120000.wav"),
    Case("year-1600", pcm("PCM_16", "int16"), "rejected", "year 1600 is outside the supported range",
         name="year-1600_16000301_120000.wav"),
    Case("year-9999", pcm("PCM_16", "int16"), "rejected", "year 9999 is outside the supported range",
         name="year-9999_99990301_120000.wav"),
    Case("no-template-match", pcm("PCM_16", "int16"), "rejected", "does not match the template",
         name="recording-without-a-time.wav"),
    # The template's {ext:wav|flac} is explicit: an uppercase suffix is listed (suffixes are
    # case-insensitive) and rejected by name, never silently skipped.
    Case("upper-wav", pcm("PCM_16", "int16"), "rejected", "does not match the template",
         name=f"upper-wav_{TIME}.WAV"),
    Case("upper-flac", pcm("PCM_16", "int16", suffix_fmt="FLAC"), "rejected", "does not match the template",
         name=f"upper-flac_{TIME}.FLAC"),
    Case("suffix-only", pcm("PCM_16", "int16"), "rejected", "does not match the template", name=".wav"),
    # Seconds may read 60 (NOAA NRS names do): the next minute.
    Case("second-60", pcm("PCM_16", "int16"), "ok", name="second-60_20240301_115960.wav"),
    Case("feb-29-leap-year", pcm("PCM_16", "int16"), "ok", name="feb-29-leap-year_20240229_120000.wav",
         start="2024-02-29T12:00:00"),
    Case("feb-29-common-year", pcm("PCM_16", "int16"), "rejected", "day 29 out of range for February 2023",
         name="feb-29-common-year_20230229_120000.wav"),
    # Sites become group names: characters URLs and paths treat specially must survive.
    Case("unicode-site", pcm("PCM_16", "int16"), "ok", name=f"río-ñ_{TIME}.wav"),
    Case("space-in-site", pcm("PCM_16", "int16"), "ok", name=f"space site_{TIME}.wav"),
    Case("percent-in-site", pcm("PCM_16", "int16"), "ok", name=f"pct%20x_{TIME}.wav"),
    Case("hash-in-site", pcm("PCM_16", "int16"), "ok", name=f"hash#x_{TIME}.wav"),
    Case("question-mark-in-site", pcm("PCM_16", "int16"), "ok", name=f"q?x_{TIME}.wav"),
    Case("long-name", pcm("PCM_16", "int16"), "ok", name=f"{'L' * 230}_{TIME}.wav"),
    Case("symlink-to-recording", symlink_to_recording, "ok"),
    Case("symlink-loop", symlink_loop, "rejected", "symbolic link loop"),
    Case("broken-symlink", broken_symlink, "rejected", "broken symbolic link"),
    Case("directory-named-wav", directory_named_wav, "ignored"),
    Case("txt-suffix", not_audio_suffix, "ignored", name=f"txt-suffix_{TIME}.txt"),
    Case("part-suffix", not_audio_suffix, "ignored", name=f"part-suffix_{TIME}.wav.part"),
    Case("no-suffix", not_audio_suffix, "ignored", name=f"no-suffix_{TIME}"),
]

# Good recordings in the same folder: real SongMeter WAV and SoundTrap FLAC files.
GOOD = [
    Case("S4A03895", good_copy(songmeter), "ok", name="S4A03895_20190522_000000.wav", start="2019-05-22T00:00:00"),
    Case("67416073", good_copy(soundtrap), "ok", name="67416073_20210610_033655.flac", start="2021-06-10T03:36:55"),
]


# ---------------------------------------------------------------- one folder, one run

@dataclass
class Stored:
    status: str
    reason: str
    samples: np.ndarray | None
    start: np.datetime64 | None = None


@dataclass
class Corpus:
    folder: Path
    expected: dict[str, np.ndarray | None]  # file name -> samples the store must hold
    report: object
    again: object
    retried: object  # a third run, taking every failed file again
    stored: dict[str, Stored]  # file name -> what the store records
    reasons: dict[str, str]  # file name -> the run's reason (failed or partial)


def stored_files(store: str) -> dict[str, Stored]:
    """Every file the store records, by name: status, reason, and its samples in file order."""
    out: dict[str, Stored] = {}
    st = Store.open(store)
    root = st.root(st.tip())
    for url, known in read_catalog(root).items():
        if known.status == "rejected":
            out[url.rsplit("/", 1)[-1]] = Stored("rejected", "", None)
    tree = pi.open_store(store)
    for name in pi.streams(tree):
        ds = tree[name].to_dataset()
        audio, n_valid = ds["audio"].values, ds["n_valid"].values
        fidx, offs = ds["file_index"].values, ds["file_offset"].values
        for i, url in enumerate(ds["file_url"].values):
            rows = np.flatnonzero(fidx == i)
            rows = rows[np.argsort(offs[rows])]
            got = np.concatenate([audio[r, : n_valid[r]] for r in rows]) if len(rows) else None
            if got is not None:
                got = got.reshape(len(got), audio.shape[2] if audio.ndim == 3 else 1)
                status = ds["file_status"].values[i]
                assert status not in ("ok", "partial") or int(ds["file_frames"].values[i]) == len(got), url
            out[str(url).rsplit("/", 1)[-1]] = Stored(str(ds["file_status"].values[i]), str(ds["file_error"].values[i]),
                                                      got, ds["file_start"].values[i])
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, fixtures) -> Corpus:
    global FIXTURES
    FIXTURES = fixtures
    folder = tmp_path_factory.mktemp("corpus") / "deployment"
    folder.mkdir()
    names = [c.file_name for c in CASES + GOOD]
    assert len(set(names)) == len(names), "two cases write the same file"
    expected = {c.file_name: c.build(folder / c.file_name) for c in CASES + GOOD}
    store = str(folder.parent / "store")
    source = pi.TimestampedFiles(str(folder), TEMPLATE)
    report = pi.ingest(source, store, client="serial")
    stored = stored_files(store)
    again = pi.ingest(source, store, client="serial")
    retried = pi.ingest(source, store, client="serial", retry_failed=True)
    reasons = {f.url.rsplit("/", 1)[-1]: f.reason for f in report.failed + report.partial}
    return Corpus(folder, expected, report, again, retried, stored, reasons)


CASE_PARAMS = [pytest.param(c, id=c.kind, marks=[pytest.mark.xfail(strict=True, reason=FINDINGS[c.kind])]
                             if c.kind in FINDINGS else []) for c in CASES]


def assert_bit_exact(got: np.ndarray | None, want: np.ndarray, what: str) -> None:
    """Same dtype, shape and bytes: NaN payloads and -0.0 included, which comparing values would pass over."""
    assert got is not None, f"{what}: no samples stored"
    assert (got.dtype, got.shape) == (want.dtype, want.shape), (what, got.dtype, got.shape, want.dtype, want.shape)
    if got.tobytes() != want.tobytes():
        first = int(np.flatnonzero(got.view(np.uint8).ravel() != want.view(np.uint8).ravel())[0]) // got.itemsize
        raise AssertionError(f"{what}: sample {first} differs ({got.ravel()[first]!r}, want {want.ravel()[first]!r})")


@pytest.mark.parametrize("case", CASE_PARAMS)
def test_each_case_has_its_outcome(corpus, case):
    name = case.file_name
    if case.outcome == "ignored":
        assert name not in corpus.stored and name not in corpus.reasons
        return
    got = corpus.stored.get(name)
    assert got is not None, f"{name}: not recorded at all"
    assert got.status == case.outcome, (got.status, corpus.reasons.get(name))
    reason = corpus.reasons.get(name, "")
    # libsndfile's words for a path it could not open: never the reason for a file that is there.
    assert "File does not exist" not in reason, reason
    if case.outcome in ("failed", "rejected"):
        assert case.reason in reason, reason
        assert got.samples is None or len(got.samples) == 0  # a failed file leaves no live rows
        return
    assert_bit_exact(got.samples, corpus.expected[name], name)
    assert got.start == np.datetime64(case.start, "ns"), got.start
    if case.outcome == "partial":
        # the reason is in the report and in the store, and counts the frames kept
        assert case.reason in reason and got.reason == reason
        assert f"kept {len(corpus.expected[name])} " in reason, reason
    else:
        assert not reason and not got.reason, reason


def test_the_good_files_beside_them_are_ingested_bit_exact(corpus):
    for case in GOOD:
        got = corpus.stored[case.file_name]
        assert got.status == "ok" and got.start == np.datetime64(case.start, "ns")
        assert_bit_exact(got.samples, corpus.expected[case.file_name], case.file_name)


def test_the_run_accounts_for_every_listed_file(corpus):
    listed = [c for c in CASES + GOOD if c.outcome != "ignored"]
    assert corpus.report.listed == len(listed)
    assert corpus.report.ingested == sum(c.outcome in ("ok", "partial") for c in listed)


def test_a_second_run_adds_nothing_and_crashes_on_nothing(corpus):
    again = corpus.again
    assert (again.ingested, again.committed, again.failed, again.partial) == (0, False, [], [])
    assert again.skipped == corpus.report.listed


def test_retrying_the_failures_fails_them_again_with_the_same_reasons(corpus):
    """retry_failed decodes every failed file again: each fails as before, none is stored twice."""
    retried = corpus.retried
    assert (retried.ingested, retried.partial) == (0, [])
    assert {f.url: f.reason for f in retried.failed} == {f.url: f.reason for f in corpus.report.failed}


def test_the_corpus_holds_at_least_40_kinds():
    assert len({c.kind for c in CASES}) >= 40
