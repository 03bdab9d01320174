"""FLAC-in-Zarr codec: bit-exact round trips, and plain xarray in a fresh interpreter."""

import subprocess
import sys

import numpy as np
import pytest
import zarr

from pamingest.store.codec import FlacCodec


@pytest.mark.parametrize("bits,dtype,channels", [(16, "int16", 1), (16, "int16", 3), (24, "int32", 2)])
def test_round_trip_is_bit_exact(bits, dtype, channels):
    rng = np.random.default_rng(bits + channels)
    lo, hi = (-(2**15), 2**15) if bits == 16 else (-(2**23), 2**23)
    x = rng.integers(lo, hi, size=(4, 5000, channels)).astype(dtype)
    x[2, :, :] = 0  # a silent row
    x[3, 0, 0], x[3, 1, 0] = lo, hi - 1  # the extremes
    a = zarr.create_array(store={}, shape=x.shape, chunks=(1, 5000, channels), dtype=dtype,
                          serializer=FlacCodec(bits=bits, sample_rate=96000), compressors=None, fill_value=0)
    a[:] = x
    np.testing.assert_array_equal(a[:], x)


def test_out_of_range_24_bit_is_refused():
    a = zarr.create_array(store={}, shape=(1, 10, 1), chunks=(1, 10, 1), dtype="int32",
                          serializer=FlacCodec(bits=24), compressors=None, fill_value=0)
    with pytest.raises(ValueError, match="24-bit"):
        a[:] = np.full((1, 10, 1), 2**24, dtype="int32")


def test_codec_metadata_round_trips():
    c = FlacCodec(bits=24, sample_rate=256000)
    assert FlacCodec.from_dict(c.to_dict()) == c
    assert c.to_dict()["name"] == "pamingest.flac"


def test_fresh_interpreter_opens_a_store_with_plain_xarray(tmp_path):
    """The entry point registers the codec: no pamingest import needed to read."""
    path = tmp_path / "plain.zarr"
    x = (np.arange(3 * 800).reshape(3, 800, 1) % 2000 - 1000).astype("int16")
    g = zarr.open_group(str(path), mode="w")
    g.create_array("audio", shape=x.shape, chunks=(1, 800, 1), dtype="int16", serializer=FlacCodec(),
                   compressors=None, fill_value=0, dimension_names=("chunk", "sample", "channel"))[:] = x
    code = (
        "import sys, xarray as xr, numpy as np\n"
        f"ds = xr.open_zarr({str(path)!r}, consolidated=False, zarr_format=3)\n"
        "v = ds.audio.values\n"
        "print(int(v.sum()), v.shape)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split()[0] == str(int(x.sum()))


def test_rows_set_directly_are_stored_as_zarr_stores_them(fixtures, tmp_path):
    """store.rows.row_writer encodes FLAC rows itself and sets their chunks: the same bytes as
    zarr's own write of the same rows, and a row of zeros (the fill value) not stored at all."""
    import zarr
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    import pamingest as pi
    from pamingest.store.repo import Store
    from pamingest.store.rows import row_writer

    store = str(tmp_path / "s")
    pi.ingest(pi.TimestampedFiles(str(fixtures / "soundtrap"), "soundtrap"), store, client="serial")
    (stream,) = pi.streams(pi.open_store(store))
    path = f"{stream}/audio"
    session = Store.open(store).writable()
    audio = zarr.open_array(session.store, path=path, mode="r+")
    rows = audio[0:3]
    rows[1] = 0
    put = row_writer(session, path, audio)
    assert put.__name__ == "write"  # the direct path, not zarr's
    put(10, rows).result()
    audio[20:23] = rows  # zarr's own path

    def chunk(row):
        key = f"{path}/" + audio.metadata.encode_chunk_key((row, 0, 0))
        got = sync(session.store.get(key, prototype=default_buffer_prototype()))
        return None if got is None else got.to_bytes()

    assert chunk(10) == chunk(20) and chunk(12) == chunk(22) and chunk(10) is not None
    assert chunk(11) is None and chunk(21) is None  # zeros: the fill value, not stored
    np.testing.assert_array_equal(audio[10:13], rows)
