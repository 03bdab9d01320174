"""Reading a store: ``open_store`` and the ``.pam`` accessor on a stream's Dataset."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import xarray as xr

from .errors import StoreNotFoundError, StreamNotFoundError
from .store.repo import Store, StoreLocation
from .timing import NS_PER_S, offset_ns, to_ns


def open_session(url: str | StoreLocation, snapshot: str | None = None, branch: str = "main",
                 storage_options: dict | None = None):
    """A read-only Icechunk session on ``branch`` or a pinned ``snapshot``."""
    return Store.open(url, storage_options).session(snapshot, branch)


def open_store(url: str | StoreLocation, snapshot: str | None = None, *, branch: str = "main",
               storage_options: dict | None = None, chunks: dict | None = None) -> xr.DataTree:
    """Open a pamingest store as an ``xarray.DataTree`` (lazy).

    Opening reads metadata only. Arrays are read when indexed, and then only
    the Zarr chunks a selection needs (xarray's lazy indexing):
    ``ds["audio"][i]`` reads one row. By default no Dask array is made: a
    stream's audio has one chunk per row, and a Dask array of a year of 10 s
    rows (3.2 million chunks) costs 0.5 s to make and seconds for any
    selection of it (measured, ``benchmarks/window_at_scale.py``).

    Parameters
    ----------
    url : str
        Store URL (path, ``s3://``, ``gs://``, ``memory://``).
    snapshot : str, optional
        Icechunk snapshot id to pin (e.g. the one a training run used).
    storage_options : dict, optional
        ``endpoint_url``, ``key``/``secret``, ``anon`` for object stores.
    chunks : dict, optional
        ``{}`` for Dask-backed arrays, one Dask chunk per Zarr chunk (what
        ``open_store`` gave before; fine for small stores), or any ``chunks``
        xarray takes. ``ds["audio"].isel(chunk=rows).chunk({"chunk": 1})``
        makes Dask work of chosen rows.

    Returns
    -------
    xarray.DataTree
        One node per stream, ``<source>/<site>/<stream>``; each node's
        Dataset has the ``.pam`` accessor.
    """
    session = open_session(url, snapshot, branch, storage_options)
    try:
        with warnings.catch_warnings():
            # PCodec streams (32-bit, float) make zarr warn that numcodecs is outside the v3 spec.
            warnings.filterwarnings("ignore", message="Numcodecs codecs are not in the Zarr version 3")
            tree = xr.open_datatree(session.store, engine="zarr", consolidated=False, chunks=chunks, zarr_format=3)
    except FileNotFoundError as exc:
        raise StoreNotFoundError(f"no pamingest store at {url}") from exc
    return tree.map_over_datasets(_chunk_start_as_coordinate)


def _chunk_start_as_coordinate(ds: xr.Dataset) -> xr.Dataset:
    """Each row's start as a coordinate of a stream's Dataset, in streams written before the audio
    array said so (its CF ``coordinates`` attribute)."""
    return ds.set_coords("chunk_start") if "chunk_start" in ds.data_vars else ds


def streams(tree: xr.DataTree) -> list[str]:
    """Paths of the stream nodes of an opened store."""
    return sorted(node.path.lstrip("/") for node in tree.subtree if "pamingest_stream" in node.attrs)


def open_stream(url: str, stream: str, snapshot: str | None = None, storage_options: dict | None = None) -> xr.Dataset:
    """One stream's Dataset (``open_store(url)[stream].to_dataset()``)."""
    tree = open_store(url, snapshot, storage_options=storage_options)
    if stream.strip("/") not in streams(tree):
        raise StreamNotFoundError(f"{url} has no stream {stream!r}; it has {', '.join(streams(tree)) or 'none'}")
    return tree[stream].to_dataset()


@xr.register_dataset_accessor("pam")
class PamAccessor:
    """Time-based access to a stream: ``ds.pam.window(start, end)``, ``ds.pam.rows``;
    annotations: ``ds.pam.events()``, ``ds.pam.effort()``, ``ds.pam.labels()``;
    pseudo-labels: ``ds.pam.scores(labeler)``, ``ds.pam.detections()``."""

    # A window meeting more blocks of rows than this (a long window, or rows interleaved in
    # time) reads every row's start once instead; blocks read are kept for later windows.
    _MAX_BLOCKS = 32
    _CACHED_BLOCKS = 64

    def __init__(self, ds: xr.Dataset) -> None:
        if "audio" not in ds or "chunk_start" not in ds:
            raise StreamNotFoundError("the .pam accessor needs a stream Dataset (with audio and chunk_start)")
        self._ds = ds
        self._index: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._summary: tuple[np.ndarray, np.ndarray, np.ndarray] | bool | None = None
        self._blocks: dict[int, tuple[np.ndarray, ...]] = {}  # least recently used first

    @property
    def sample_rate(self) -> int:
        return int(self._ds.attrs["sample_rate"])

    def _rows(self):
        """(row ids sorted by start, start ns, valid samples) of the rows holding audio."""
        if self._index is None:
            start = _ns(self._ds["chunk_start"].values)
            valid = self._ds["n_valid"].values.astype(np.int64)
            live = np.flatnonzero(valid > 0)
            order = live[np.argsort(start[live], kind="stable")]
            self._index = (order, start[order], valid[order])
            self._ends = start[order] + offset_ns(valid[order], self.sample_rate)
        return self._index

    def _overlapping(self, t0: int, t1: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows, start ns, valid samples) of the live rows meeting ``[t0, t1)``, by start (then row).

        Through the row-block summary (``store/row_blocks.py``): only the
        blocks of rows whose span meets the window are read. A stream without
        one (written before it), or whose summary disagrees with a block
        read, has its whole row index built once instead.
        """
        if self._index is None and self._row_summary():
            found = self._from_blocks(t0, t1)
            if found is not None:
                return found
        order, starts, valid = self._rows()
        # Rows are sorted by start, and a row ends at most one full row after its start.
        longest = offset_ns(int(self._ds["audio"].shape[1]), self.sample_rate)
        lo = int(np.searchsorted(starts, t0 - longest, side="right"))
        hi = int(np.searchsorted(starts, t1, side="left"))
        k = lo + np.flatnonzero(self._ends[lo:hi] > t0)
        return order[k], starts[k], valid[k]

    def _row_summary(self):
        """(known, first start, last end) per block of rows, or False when the stream has none."""
        if self._summary is None:
            from .store.row_blocks import block_rows
            from .timing import NAT

            names = ("row_block_start", "row_block_end", "row_block_rows")
            self._summary = False
            want = block_rows(self._ds.sizes["chunk"])
            # More blocks than rows: a Dataset cut from a stream (ds.isel(chunk=...)), not a stream.
            if all(name in self._ds for name in names) and self._ds.sizes["row_block"] <= len(want):
                have = np.asarray(self._ds["row_block_rows"].values, dtype=np.int64)
                m = len(have)
                # A block summarised for another row count (or not yet) is unknown: always read.
                known = np.zeros(len(want), dtype=bool)
                known[:m] = have[:m] == want[:m]
                first = np.full(len(want), NAT, dtype=np.int64)
                last = np.full(len(want), NAT, dtype=np.int64)
                first[:m] = _ns(self._ds["row_block_start"].values)[:m]
                last[:m] = _ns(self._ds["row_block_end"].values)[:m]
                self._summary = (known, first, last)
        return self._summary

    def _from_blocks(self, t0: int, t1: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """``_overlapping`` from the blocks the summary points at; None: use the whole index."""
        from .store.layout import ROW_BLOCK

        known, first, last = self._summary
        # NaT (no live row) is the smallest int64: such a block never ends after t0.
        pick = np.flatnonzero(~known | ((first < t1) & (last > t0)))
        if len(pick) > self._MAX_BLOCKS:
            return None
        rows, starts, valid = [], [], []
        for b in pick:
            block = self._block(int(b))
            if block is None:
                return None
            s, e, v = block
            hit = np.flatnonzero((v > 0) & (s < t1) & (e > t0))
            rows.append(int(b) * ROW_BLOCK + hit)
            starts.append(s[hit])
            valid.append(v[hit])
        if not rows:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
        rows, starts, valid = np.concatenate(rows), np.concatenate(starts), np.concatenate(valid)
        order = np.argsort(starts, kind="stable")  # rows were gathered in row order: ties stay so
        return rows[order], starts[order], valid[order]

    def _block(self, b: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(start ns, end ns, valid samples) of block ``b``'s rows, kept for later windows; None
        (and the summary dropped) when a known block disagrees with its summary."""
        from .store.layout import ROW_BLOCK
        from .store.row_blocks import summarise

        got = self._blocks.pop(b, None)
        if got is not None:
            self._blocks[b] = got
            return got
        a, z = b * ROW_BLOCK, min((b + 1) * ROW_BLOCK, self._ds.sizes["chunk"])
        start = _ns(self._ds["chunk_start"].variable[a:z].values)
        valid = np.asarray(self._ds["n_valid"].variable[a:z].values, dtype=np.int64)
        known, first, last = self._summary
        if known[b]:
            f, e, _ = summarise(start, valid, self.sample_rate)
            if f[0] != first[b] or e[0] != last[b]:
                self._summary = False
                return None
        got = (start, start + offset_ns(valid, self.sample_rate), valid)
        self._blocks[b] = got
        if len(self._blocks) > self._CACHED_BLOCKS:
            del self._blocks[next(iter(self._blocks))]
        return got

    @property
    def rows(self) -> "pd.DataFrame":  # noqa: F821
        """One line per live row: start, end, n_valid, file URL and offset."""
        import pandas as pd

        order, start, valid = self._rows()
        end = start + offset_ns(valid, self.sample_rate)
        files = self._ds["file_url"].values
        fidx = self._ds["file_index"].values[order]
        return pd.DataFrame({
            "row": order,
            "start": start.astype("datetime64[ns]"),
            "end": end.astype("datetime64[ns]"),
            "n_valid": valid,
            "file": files[fidx] if len(files) else [],
            "file_offset": self._ds["file_offset"].values[order],
        })

    def coverage(self, max_gap: float | None = None) -> "pd.DataFrame":  # noqa: F821
        """Continuous spans of audio: gaps longer than ``max_gap`` s (default 1.5 samples) split them."""
        import pandas as pd

        order, start, valid = self._rows()
        if not len(order):
            return pd.DataFrame(columns=["start", "end", "seconds"])
        from .coverage import max_gap_ns, spans

        end = start + offset_ns(valid, self.sample_rate)
        tol = int(max_gap * NS_PER_S) if max_gap is not None else max_gap_ns(self.sample_rate)
        s0, e0 = spans(start, end, tol)
        return pd.DataFrame({"start": s0.astype("datetime64[ns]"), "end": e0.astype("datetime64[ns]"),
                             "seconds": (e0 - s0) / NS_PER_S})

    def window(self, start: Any, end: Any, sample_rate: int | None = None, dtype=None) -> xr.DataArray:
        """Samples recorded in ``[start, end)`` UTC, stitched across rows.

        Returns a DataArray ``(time, channel)`` whose ``time`` coordinate is
        each sample's UTC time. Gaps stay gaps: no sample is invented, the
        time coordinate jumps over them. Rows are taken in start order; where
        two recordings overlap in time (a file a few ms longer than the
        interval between file starts, as SoundTrap writes them) both are
        kept, so ``time`` steps back at the seam rather than dropping
        recorded samples.

        Parameters
        ----------
        sample_rate : int, optional
            Resample to this rate (anti-aliased polyphase, ``scipy.signal.
            resample_poly``); the samples come as float32 unless ``dtype``
            says float64. Each continuous piece is resampled on its own, read
            with enough audio around the window that its edges are filtered
            as the middle is; across a gap the result jumps in time exactly
            as the stored samples do (``pamingest.resample``).
        dtype : optional
            ``float32`` or ``float64``: samples divided by the stream's full
            scale (2**15 for 16-bit, 2**23 for 24-bit), in [-1, 1). Default:
            the stored integers (or floats) as they are.
        """
        sr = self.sample_rate
        t0, t1 = to_ns(start), to_ns(end)
        bits = self._ds.attrs.get("bits_per_sample")
        if sample_rate is None or int(sample_rate) == sr:
            samples, times = self._samples(t0, t1)
            if dtype is not None:
                from .resample import as_float

                samples = as_float(samples, dtype, bits)
            return self._window_array(samples, times, sr, dtype is not None)
        from .resample import as_float, context_samples, resample_window

        margin = offset_ns(context_samples(sr, int(sample_rate)), sr)
        samples, times = self._samples(t0 - margin, t1 + margin)
        samples, times = resample_window(as_float(samples, dtype or np.float32, bits), times, sr, int(sample_rate),
                                         t0, t1)
        return self._window_array(samples, times, int(sample_rate), True)

    def _samples(self, t0: int, t1: int) -> tuple[np.ndarray, np.ndarray]:
        """Stored samples of ``[t0, t1)`` ``(n, channels)`` and their times (int64 ns), rows by start."""
        from .timing import offset_range_ns

        sr = self.sample_rate
        rows, starts, valid = self._overlapping(t0, t1)
        channels = self._ds["audio"].sizes["channel"]
        empty = np.zeros((0, channels), dtype=self._ds["audio"].dtype), np.zeros(0, dtype=np.int64)
        if not len(rows):
            return empty
        data = self._read_rows(rows)
        pieces, times = [], []
        for k in range(len(rows)):
            # First and last sample of this row inside the window, by exact arithmetic.
            a = _first_sample_at_or_after(t0 - starts[k], sr)
            b = _first_sample_at_or_after(t1 - starts[k], sr)
            a, b = max(a, 0), min(b, int(valid[k]))
            if b <= a:
                continue
            pieces.append(data[k, a:b])
            times.append(starts[k] + offset_range_ns(a, b, sr))
        if not pieces:
            return empty
        return np.concatenate(pieces), np.concatenate(times)

    def _window_array(self, samples: np.ndarray, times: np.ndarray, sample_rate: int, scaled: bool) -> xr.DataArray:
        import pandas as pd

        # A DatetimeIndex given as it is: xarray copies a datetime64 array three times to make one.
        t = pd.DatetimeIndex(times.view("datetime64[ns]"), copy=False)
        attrs = {"sample_rate": sample_rate, "bits_per_sample": self._ds.attrs.get("bits_per_sample")}
        if scaled:
            attrs["units"] = "1 (full scale)"
        if sample_rate != self.sample_rate:
            attrs["stored_sample_rate"] = self.sample_rate
        return xr.DataArray(samples, dims=("time", "channel"), coords={"time": t}, attrs=attrs, name="audio")

    def clips(self, seconds: float, hop: float | None = None, labels=None, min_valid: float = 0.9, rule=None,
              stream: str = "", skip_flagged=None, thresholds=None) -> "pd.DataFrame":  # noqa: F821
        """Fixed-length clips of this stream: one line each with its span, recording and offset,
        valid fraction, labels (1 / 0 / -1), labeller scores and provenance (``pamingest.clips``);
        ``skip_flagged="all"`` (or flag names) leaves out clips over rows with quality flags."""
        from .clips import stream_clips

        return stream_clips(self._ds, seconds, hop, labels, min_valid, rule, stream, skip_flagged, thresholds)

    def quality(self, thresholds=None, **overrides) -> "pd.DataFrame":  # noqa: F821
        """Each live row's quality statistics, computed at ingest, and its flags.

        Columns: ``row``, ``start``, ``n_valid``, ``computed`` (False for rows
        ingested before statistics were kept, or with ``quality=False``: their
        statistics are NaN and they carry no flag), ``clipped`` (samples at
        full scale), ``longest_run`` (samples) and ``longest_run_ms``,
        ``zero_fraction``, ``dc_offset`` (fraction of full scale),
        ``rms_dbfs``, ``rms_db_re_upa`` (only when the stream has a
        ``calibration_db`` attribute: ``pamingest.quality.rms_db_re_upa``),
        ``flags`` (names, comma-separated: ``clipped``, ``dropout``,
        ``silent``, ``dc_offset``) and one boolean column per flag
        (``flag_clipped``, ...). Flags are derived now from the
        stored statistics with ``thresholds`` (a ``QualityThresholds``) or its
        fields given as keywords (``silent_dbfs=-80``): changing them needs no
        re-ingest.
        """
        from .quality import QualityThresholds, has_stats, quality_frame

        if thresholds is None or overrides:
            from dataclasses import replace

            thresholds = replace(thresholds or QualityThresholds(), **overrides)
        if not has_stats(self._ds):
            warnings.warn(f"stream {self._ds.attrs.get('source', '')}/{self._ds.attrs.get('site', '')}: no quality "
                          "statistics (ingested before they were kept): every row reads as not computed; rows "
                          "ingested from now on have them", stacklevel=2)
        return quality_frame(self._ds, thresholds)

    def events(self) -> "pd.DataFrame":  # noqa: F821
        """The stream's annotated events, one line each.

        Columns: ``start``, ``end`` (UTC), ``low_hz``, ``high_hz``, ``label``
        (as written), ``label_norm``, ``source``, ``confidence`` (machine
        labels), ``annotator``, ``reviewed``, ``kind``, ``verdict``,
        ``recording``, ``file`` and ``line`` (the annotation file and line it
        came from) and ``in_audio`` (False for events outside every row).
        """
        from .annotations.store import events_frame

        return events_frame(self._ds)

    def effort(self) -> "pd.DataFrame":  # noqa: F821
        """Reviewed time spans: ``start``, ``end``, ``label_norm`` (``""``: every label), source, file, line."""
        from .annotations.store import effort_frame

        return effort_frame(self._ds)

    def labels(self, rule=None) -> xr.DataArray:
        """Chunk labels ``(chunk, label)``: 1 positive, 0 negative (reviewed, no event), -1 unknown.

        Rows ingested after the last attach are labelled from the stored
        events and effort; ``rule`` (an ``OverlapRule``) recomputes all rows
        with other thresholds.
        """
        from .annotations.store import labels_array

        return labels_array(self._ds, rule)

    def scores(self, labeler: str | None = None, version: str | None = None) -> xr.DataArray:
        """Pseudo-label scores ``(chunk, class)`` of one labeller; NaN where not scored (yet).

        ``labeler`` is ``NAME[:VARIANT]`` as given to ``pamingest pseudolabel``
        (e.g. ``energy:killer-whale``) or its stored key; it may be omitted
        when one labeller scored the stream. Attributes: name, version,
        parameters; coordinate ``status``: 0 queued, 1 scored, 2 failed.
        """
        from .labeling.queue import scores_array

        return scores_array(self._ds, labeler, version)

    def detections(self, labeler: str | None = None, version: str | None = None) -> "pd.DataFrame":  # noqa: F821
        """Event boxes from labellers: chunk, start, end (UTC), low_hz, high_hz, score, label, labeler key."""
        from .labeling.queue import detections_frame

        return detections_frame(self._ds, labeler, version)

    def _read_rows(self, rows: np.ndarray) -> np.ndarray:
        """``audio[rows]``: through xarray's lazy indexing, which reads just these rows' chunks
        (decoded in parallel); Dask-backed audio is read as slices of consecutive rows.

        Fancy indexing a Dask array with one chunk per row costs time in
        proportion to the whole store's rows; slices cost per row read. A
        virtual stream's row whose recording changed since its ingest raises
        ``SourceChangedError`` naming the recording.
        """
        try:
            return self._read_rows_as_stored(rows)
        except Exception as exc:
            from .store.virtual import explain_changed

            explained = explain_changed(exc, f"stream {self._ds.attrs.get('source', '')}/"
                                             f"{self._ds.attrs.get('site', '')}")
            if explained is None:
                raise
            raise explained from exc

    def _read_rows_as_stored(self, rows: np.ndarray) -> np.ndarray:
        audio = self._ds["audio"].variable
        rows = np.asarray(rows, dtype=np.int64)
        consecutive = bool((np.diff(rows) == 1).all())
        if audio.chunks is None:
            if consecutive:
                return np.asarray(audio[int(rows[0]) : int(rows[-1]) + 1].values)
            return np.asarray(audio[rows].values)
        import dask

        data = audio.data
        pieces, k = [], 0
        while k < len(rows):
            j = k + 1
            while j < len(rows) and rows[j] == rows[j - 1] + 1:
                j += 1
            pieces.append(data[int(rows[k]) : int(rows[j - 1]) + 1])
            k = j
        return np.concatenate(dask.compute(*pieces), axis=0)


def _ns(values: np.ndarray) -> np.ndarray:
    """Times (datetime64, or integer ns when not decoded) as int64 ns; NaT is the smallest int64."""
    return np.asarray(values).astype("datetime64[ns]").astype(np.int64)


def _first_sample_at_or_after(delta_ns: int, sample_rate: int) -> int:
    """Smallest sample index whose (rounded) time offset is >= ``delta_ns``."""
    if delta_ns <= 0:
        return 0
    k = int(delta_ns) * sample_rate // NS_PER_S
    while offset_ns(k, sample_rate) < delta_ns:
        k += 1
    while k > 0 and offset_ns(k - 1, sample_rate) >= delta_ns:
        k -= 1
    return k
