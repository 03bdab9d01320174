"""The libsndfile decoder: its direct PCM path gives the same samples as libsndfile, bit for bit;
its probe decodes a FLAC only when the file does not end where STREAMINFO says."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from pamingest.decode import sndfile
from pamingest.errors import DecodeError


def _reference(path, start: int, stop: int, subtype: str) -> np.ndarray:
    dtype = {"PCM_16": "int16", "PCM_24": "int32", "PCM_32": "int32"}[subtype]
    data, _ = sf.read(str(path), dtype=dtype, always_2d=True, start=start, stop=stop)
    return np.right_shift(data, 8) if subtype == "PCM_24" else data


def _read(path, start: int, stop: int) -> tuple[np.ndarray, list[int]]:
    info = sndfile.probe(str(path))
    blocks = list(sndfile.read(str(path), info, start, stop))
    return np.concatenate(blocks), [len(b) for b in blocks]


@pytest.fixture
def wav_files(fixtures, tmp_path):
    """Every integer PCM layout: the fixtures' 16-bit mono, stereo and 3-channel (extensible) and
    32-bit WAVs, and 24-bit files written here (no fixture is 24-bit), mono, stereo and 3 channels."""
    paths = [
        fixtures / "songmeter/S4A03895/S4A03895_20190522_053000.wav",
        fixtures / "orcasound/hls/live000.ffmpeg-decoded.wav",
        fixtures / "lab/fruitfly-song-multichannel.wav",
        fixtures / "sanctsound/clips/SanctSound_MB01_05_bocaccio_20200508T042435Z.wav",
    ]
    rng = np.random.default_rng(4)
    for channels in (1, 2, 3):
        x = rng.integers(-(2**23), 2**23, size=(50_003, channels), dtype=np.int32)
        x[:4] = [[-(2**23)] * channels, [2**23 - 1] * channels, [-1] * channels, [0] * channels]  # extremes
        p = tmp_path / f"synthetic-24bit-{channels}ch.wav"
        sf.write(str(p), np.left_shift(x, 8), 96_000, subtype="PCM_24")
        paths.append(p)
    return paths


def test_direct_pcm_reads_equal_libsndfile_bit_for_bit(wav_files, monkeypatch):
    monkeypatch.setattr(sndfile, "PCM_READ_BYTES", 30_000)  # many blocks, cut mid-row
    for path in wav_files:
        info = sndfile.probe(str(path))
        assert info.subtype in sndfile._PCM_WIDTH, (path, info.subtype)
        for start, stop in ((0, info.frames), (7_777, info.frames - 3), (info.frames - 5, info.frames + 100)):
            got, sizes = _read(path, start, stop)
            want = _reference(path, start, min(stop, info.frames), info.subtype)
            assert got.dtype == np.dtype(info.store_dtype), path
            np.testing.assert_array_equal(got, want, err_msg=f"{path} [{start}, {stop})")
            if start == 0:
                assert len(sizes) > 1, path  # read in blocks of PCM_READ_BYTES, not through libsndfile


def test_a_truncated_pcm_wav_names_the_frame_where_it_ends(tmp_path):
    x = np.arange(-50_000, 50_000, dtype=np.int32).reshape(-1, 1) * 64
    path = tmp_path / "cut.wav"
    sf.write(str(path), np.left_shift(x, 8), 48_000, subtype="PCM_24")
    info = sndfile.probe(str(path))
    path.write_bytes(path.read_bytes()[: -3 * 1_000])  # the recorder stopped 1,000 frames early
    with pytest.raises(DecodeError, match="file ends at frame 99000 but its header announces 100000"):
        list(sndfile.read(str(path), info, 0, info.frames))


def test_a_flac_is_decoded_at_probe_only_when_it_does_not_end_where_streaminfo_says(fixtures, tmp_path):
    """A FLAC whose STREAMINFO counts 0 samples is counted by decoding it, and read from any frame
    through a STREAMINFO that counts them. A whole FLAC's probe reads its header and its last
    frame: a frame damaged in the middle goes unseen there (nothing is decoded) and is named when
    the file is read."""
    path = fixtures / "soundtrap" / "67416073.210610033655.flac"
    data = path.read_bytes()
    source = sf.read(str(path), dtype="int16", always_2d=True)[0]

    streamed = tmp_path / "streamed.flac"
    packed = int.from_bytes(data[18:26], "big")
    streamed.write_bytes(data[:18] + (packed & ~(2**36 - 1)).to_bytes(8, "big") + data[26:])  # total: 0
    info = sndfile.probe(str(streamed))
    assert info.frames == len(source)
    assert info.incomplete == "" and info.header_fix
    for start, stop in ((0, info.frames), (1_234_567, 1_500_000), (info.frames - 5, info.frames)):
        got = np.concatenate(list(sndfile.read(str(streamed), info, start, stop)))
        np.testing.assert_array_equal(got, source[start:stop])

    whole = sndfile.probe(str(path))
    assert (whole.frames, whole.incomplete, whole.header_fix) == (len(source), "", ())
    damaged = tmp_path / "damaged.flac"
    middle = len(data) // 2
    damaged.write_bytes(data[:middle] + bytes(64) + data[middle + 64 :])
    info = sndfile.probe(str(damaged))
    assert (info.frames, info.incomplete) == (len(source), "")
    with pytest.raises(DecodeError, match="decoding failed at frame"):
        list(sndfile.read(str(damaged), info, 0, info.frames))
