"""Assertions shared by the ingest tests."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import soundfile as sf

from pamingest.timing import offset_ns, to_ns


def source_samples(path: Path) -> np.ndarray:
    """What the store must hold for a recording: soundfile's read, 24-bit right-aligned."""
    info = sf.info(str(path))
    if info.subtype == "PCM_24":
        return sf.read(str(path), dtype="int32", always_2d=True)[0] >> 8
    dtype = "int16" if info.subtype in ("PCM_16", "PCM_S8", "PCM_U8") else "int32"
    return sf.read(str(path), dtype=dtype, always_2d=True)[0]


def assert_stream_matches(ds, local_for_url, pieces: dict | None = None) -> int:
    """Every ok file's rows equal its source samples, and every row time is exact; a partial file's
    rows (a file cut short) equal its source's first ``file_frames`` samples (``local_for_url`` gives
    the whole recording it was cut from). A file stored in timed pieces (a duty-cycled XWAV) has its
    pieces in ``pieces``: URL -> [(file offset, start ns)], each row timed from its piece's start.

    Returns the number of files checked.
    """
    audio = ds["audio"].values
    n_valid = ds["n_valid"].values
    fidx = ds["file_index"].values
    offs = ds["file_offset"].values
    starts = ds["chunk_start"].values.astype("datetime64[ns]").astype(np.int64)
    sr = int(ds.attrs["sample_rate"])
    urls = ds["file_url"].values
    status = ds["file_status"].values
    file_start = ds["file_start"].values.astype("datetime64[ns]").astype(np.int64)
    frames = ds["file_frames"].values
    checked = 0
    for i, url in enumerate(urls):
        rows = np.flatnonzero(fidx == i)
        if status[i] not in ("ok", "partial"):
            assert (n_valid[rows] == 0).all(), f"{url} failed but has live rows"
            continue
        rows = rows[np.argsort(offs[rows])]
        got = np.concatenate([audio[r, : n_valid[r]] for r in rows])
        want = source_samples(local_for_url(str(url)))
        if status[i] == "partial":
            want = want[: frames[i]]
        assert len(got) == frames[i], url
        assert got.dtype == want.dtype or np.can_cast(want.dtype, got.dtype)
        np.testing.assert_array_equal(got, want, err_msg=str(url))
        timed = np.asarray((pieces or {}).get(str(url), [(0, file_start[i])]), dtype=np.int64)
        which = np.searchsorted(timed[:, 0], offs[rows], side="right") - 1
        np.testing.assert_array_equal(starts[rows], timed[which, 1] + offset_ns(offs[rows] - timed[which, 0], sr))
        checked += 1
    return checked


def by_name(folder: Path):
    return lambda url: folder / url.rsplit("/", 1)[-1]


def window_ns(da) -> np.ndarray:
    return da["time"].values.astype("datetime64[ns]").astype(np.int64)


class HeldDecoder:
    """Wraps a decoder: probes and plans as it does, but holds the first read until released, when
    the run has listed, probed, planned and allocated its rows."""

    def __init__(self, inner) -> None:
        import threading

        self.inner, self.name = inner, inner.name
        self.reached, self.gate = threading.Event(), threading.Event()
        self.reads = 0

    def probe(self, file, storage_options):
        return self.inner.probe(file, storage_options)

    def plan(self, probed, context):
        units = self.inner.plan(probed, context)
        for unit in units:
            unit.decoder = self
        return units

    def read(self, source, start, stop, storage_options):
        self.reads += 1
        self.reached.set()
        assert self.gate.wait(60)
        return self.inner.read(source, start, stop, storage_options)

    def records(self, unit):
        return self.inner.records(unit)


class _WithDecoder:
    def __init__(self, source, decoder) -> None:
        self._source, self.decoder = source, decoder

    def __getattr__(self, name):
        return getattr(self._source, name)


class HeldRun:
    """``ingest`` of a source in a thread (serial), held before its first write; ``release()``
    lets it write and land, and returns its report."""

    def __init__(self, source, store: str, inner_decoder) -> None:
        import threading

        import pamingest as pi

        self.decoder = HeldDecoder(inner_decoder)
        self.report = None
        self.thread = threading.Thread(
            target=lambda: setattr(self, "report", pi.ingest(_WithDecoder(source, self.decoder), store,
                                                             client="serial")))
        self.thread.start()
        assert self.decoder.reached.wait(60)

    def release(self):
        self.decoder.gate.set()
        self.thread.join(60)
        return self.report


__all__ = ["HeldRun", "SANCTSOUND_FIXTURE_STREAMS", "assert_stream_matches", "by_name", "ffmpeg_samples", "source_samples",
           "store_digest", "to_ns", "tree_digest", "window_ns"]


def ffmpeg_samples(path) -> np.ndarray:
    """The samples of a mono 16-bit FLAC as FFmpeg's decoder (PyAV) gives them before the stream
    ends or breaks: a second decoder's word for what a damaged file holds."""
    import av

    blocks = []
    with av.open(str(path)) as container:
        try:
            for frame in container.decode(audio=0):
                blocks.append(frame.to_ndarray().reshape(-1, 1))
        except av.error.InvalidDataError:
            pass  # the frame the file was cut in
    return np.concatenate(blocks).astype(np.int16, copy=False)


# The streams the SanctSound fixture objects give, in the real layout, whatever the bucket
# serves them (moto S3 in test_sources_sanctsound, a GCS emulator in test_gcs).
SANCTSOUND_FIXTURE_STREAMS = [
    "sanctsound/ci01_01/2000Hz_1ch_pcm16",
    "sanctsound/ci01_01/32000Hz_1ch_pcm16",
    "sanctsound/ci01_03/48000Hz_1ch_pcm16",
    "sanctsound/fk02_03/48000Hz_1ch_pcm16",
]


def tree_digest(tree) -> dict:
    """Every stored value of a store, audio as one hash per row: equal digests, equal stores.

    Rows, files and row blocks are compared as the store orders them:
    allocation is deterministic (start time, then URL), so a faulty run that
    lost or doubled a row, or put one elsewhere, differs from a clean one.
    """
    out: dict = {}
    for node in tree.subtree:
        path = node.path
        out[(path, "attrs")] = dict(node.attrs)
        for name, var in node.ds.data_vars.items():
            values = var.values
            if name == "audio":
                out[(path, name)] = [hashlib.blake2b(np.ascontiguousarray(r).tobytes(), digest_size=12).hexdigest()
                                     for r in values]
            else:
                out[(path, name)] = values.tolist()
    return out


# Tables whose rows are appended as labelling batches land: their order depends on which batch
# committed first, not on what they hold.
UNORDERED_TABLES = ("detection", "labeling_failure")


def store_digest(tree) -> dict:
    """``tree_digest`` up to what may differ between two builds of the same store: NaN equals NaN,
    and the rows of the labelling tables (``UNORDERED_TABLES``) are compared as sorted sets."""

    def plain(values) -> list:
        return [None if isinstance(v, float) and np.isnan(v) else plain(v) if isinstance(v, list) else v
                for v in values]

    out = {}
    for key, value in tree_digest(tree).items():
        out[key] = plain(value) if isinstance(value, list) else value
    for node in tree.subtree:
        for dim in UNORDERED_TABLES:
            names = sorted(n for n, v in node.ds.data_vars.items() if v.dims[:1] == (dim,))
            if names:
                rows = zip(*(out.pop((node.path, n)) for n in names))
                out[(node.path, dim)] = (names, sorted(rows, key=repr))
    return out
