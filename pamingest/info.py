"""A store at a glance: streams, hours, files, failures, history."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import zarr

from . import quality
from .coverage import duty_cycle, max_gap_ns, spans
from .store import layout
from .store.repo import Store, StoreLocation
from .timing import ns_to_iso, offset_ns


@dataclass
class StreamInfo:
    path: str
    sample_rate: int
    channels: int
    dtype: str
    bits: int
    row_seconds: float
    rows: int
    files_ok: int
    files_failed: int
    hours: float
    first: str
    last: str
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # (url, file_status, reason), not ok
    coverage: str = ""  # duty cycle in words (coverage.duty_cycle)
    gaps: int = 0  # gaps between continuous spans (over 1.5 samples)
    # Live rows per quality flag (default thresholds), "flagged" (any) and "unchecked" (no statistics).
    quality: dict[str, int] = field(default_factory=dict)
    # "virtual": rows refer to the recordings' bytes (store/virtual.py); "" copied into the store.
    storage: str = ""


@dataclass
class StoreInfo:
    url: str
    snapshot_id: str
    streams: list[StreamInfo] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)
    partial: list[tuple[str, str]] = field(default_factory=list)  # stored up to where they end
    history: list[tuple[str, str, str]] = field(default_factory=list)

    def format(self) -> str:
        out = [f"store     {self.url}", f"snapshot  {self.snapshot_id}", ""]
        header = f"{'stream':<48} {'rate':>8} {'ch':>3} {'bits':>4} {'rows':>8} {'files':>6} {'failed':>6} {'hours':>9}  span"
        out.append(header)
        for s in self.streams:
            out.append(f"{s.path:<48} {s.sample_rate:>8} {s.channels:>3} {s.bits:>4} {s.rows:>8} {s.files_ok:>6} "
                       f"{s.files_failed:>6} {s.hours:>9.3f}  {s.first} .. {s.last}")
            out.append(f"  {s.gaps} gaps; {s.coverage}"
                       + ("; rows are references to the recordings (virtual): `pamingest verify` checks them"
                          if s.storage == "virtual" else ""))
        total = sum(s.hours for s in self.streams)
        out.append(f"{len(self.streams)} streams, {total:.3f} h of audio; {len(self.rejected)} objects rejected")
        if any(s.quality for s in self.streams):
            out.append("")
            out.append("quality flags (rows; default thresholds, pamingest.quality)")
            out.append(f"{'stream':<48} {'flagged':>8} {'clipped':>8} {'dropout':>8} {'silent':>8} {'dc_offset':>9}"
                       f" {'unchecked':>9}")
            for s in self.streams:
                q = s.quality
                if q:
                    out.append(f"{s.path:<48} {q['flagged']:>8} {q['clipped']:>8} {q['dropout']:>8} {q['silent']:>8} "
                               f"{q['dc_offset']:>9} {q['unchecked']:>9}")
        for url, reason in self.rejected[:20]:
            out.append(f"  - {url}: {reason}")
        if len(self.rejected) > 20:
            out.append(f"  ... and {len(self.rejected) - 20} more")
        if self.partial:
            out.append(f"{len(self.partial)} files end before their headers say: stored up to there")
            out += [f"  - {url}: {reason}" for url, reason in self.partial[:20]]
            if len(self.partial) > 20:
                out.append(f"  ... and {len(self.partial) - 20} more")
        if self.history:
            out.append("")
            out.append("history (newest first)")
            out += [f"  {sid}  {when}  {msg}" for sid, when, msg in self.history]
        return "\n".join(out)


def store_info(url: str | StoreLocation, storage_options: dict | None = None, snapshot: str | None = None,
               history: int = 10) -> StoreInfo:
    with warnings.catch_warnings():
        # PCodec streams (32-bit, float) make zarr warn that numcodecs is outside the v3 spec (as open_store).
        warnings.filterwarnings("ignore", message="Numcodecs codecs are not in the Zarr version 3")
        return _store_info(url, storage_options, snapshot, history)


def _store_info(url: str | StoreLocation, storage_options: dict | None, snapshot: str | None,
                history: int) -> StoreInfo:
    st = Store.open(url, storage_options)
    session = st.session(snapshot)
    root = zarr.open_group(session.store, mode="r")
    info = StoreInfo(st.url, session.snapshot_id)
    for path, g in layout.iter_streams(root):
        n_valid = g["n_valid"][:]
        starts = g["chunk_start"][:]
        status = np.asarray(g["file_status"][:])
        stored = np.isin(status, ("ok", "partial"))  # KnownFile.stored
        live = n_valid > 0
        sr = int(g.attrs["sample_rate"])
        info.streams.append(StreamInfo(
            path, sr, int(g.attrs["channels"]), str(g.attrs["dtype"]), int(g.attrs["bits_per_sample"]),
            float(g.attrs["row_seconds"]), int(live.sum()), int(stored.sum()),
            int((~stored).sum()), float(n_valid.sum()) / sr / 3600,
            ns_to_iso(int(starts[live].min())) if live.any() else "-",
            ns_to_iso(int(starts[live].max())) if live.any() else "-",
        ))
        order = np.argsort(starts[live], kind="stable")
        row_start = starts[live][order].astype(np.int64)
        span_start, span_end = spans(row_start, row_start + offset_ns(n_valid[live][order], sr), max_gap_ns(sr))
        info.streams[-1].coverage = duty_cycle(span_start, span_end)
        info.streams[-1].storage = str(g.attrs.get("storage", ""))
        info.streams[-1].gaps = max(len(span_start) - 1, 0)
        stats = ({name: g[name][: len(n_valid)] for name in quality.QUALITY.columns} if quality.has_stats(g)
                 else quality.empty_stats(len(n_valid)))
        info.streams[-1].quality = quality.flag_counts(stats, n_valid, int(g.attrs["channels"]), sr)
        for url, error, file_status in zip(g["file_url"][:], g["file_error"][:], status):
            if file_status != "ok":
                info.streams[-1].failures.append((str(url), str(file_status), str(error)))
            if file_status == "partial":
                info.partial.append((str(url), str(error)))
            elif file_status != "ok":
                info.rejected.append((str(url), str(error)))
    if layout.REJECTED_GROUP in root:
        r = root[layout.REJECTED_GROUP]
        info.rejected += [(str(u), str(e)) for u, e in zip(r["url"][:], r["reason"][:])]
    for snap in st.history(session.snapshot_id, history):
        info.history.append((snap.id, snap.written_at.strftime("%Y-%m-%d %H:%M:%S"), snap.message))
    return info
