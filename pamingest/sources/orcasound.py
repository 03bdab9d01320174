"""Orcasound hydrophones: live HLS sessions and FLAC archives in public S3.

Layout (docs/sources.md)::

    <bucket>/<node>/hls/<unix-epoch>/live000.ts, live001.ts, ... live1049.ts
    <bucket>/<node>/flac/%Y-%m-%d_%H-%M-%S_<node>-<rate>-<channels>.flac

A session folder's epoch is when the node's streamer (re)started. Segments
are listed from the bucket (``live.m3u8`` keeps only a rolling window) and
ordered by their number, not lexically (``live1000.ts`` after ``live999.ts``).
A ``.ts`` object not named ``liveN.ts`` is rejected with that reason.

Time: a run's first sample is at ``epoch + (PTS - 1.4 s) + capture_delay``.
The 1.4 s is ffmpeg's MPEG-TS muxer offset; the node's capture start-up
delay is undocumented (Orcasound's tools assume 1-3 s, a user reports ~2 s),
so it defaults to 0 and the stream records ``time_uncertainty_seconds``.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

from ..decode.hls import DEFAULT_BLOCK_SEGMENTS, MPEGTS_START_PTS_S, SEGMENT_NAME
from ..fsutil import filesystem, join_url
from ..timing import NS_PER_S, to_ns
from ..errors import ConfigError
from ._select import list_folders_with_prefix
from .base import RejectedFile, SourceFile
from .files import TimestampedFiles

DEFAULT_BUCKET = "audio-orcasound-net"
NODES = (
    "rpi_orcasound_lab", "rpi_bush_point", "rpi_port_townsend", "rpi_sunset_bay",
    "rpi_north_sjc", "rpi_point_robinson", "rpi_mast_center", "rpi_andrews_bay",
)
NOMINAL_SEGMENT_SECONDS = 10.0
# Orcasound's own tools shift times by 1-3 s for the capture start-up.
TIME_UNCERTAINTY_SECONDS = 3.0
_EPOCH = re.compile(r"(\d{9,11})\Z")
# Live polling: a session lasts at most a day (nodes restart every few hours), so its
# folder epoch is within the last two days; after a restart, the previous session's
# last segments may still be uploading, so the newest two sessions are listed.
LIVE_LOOKBACK_S = 2 * 86400
LIVE_SESSIONS = 2


def epoch_prefixes(lo: int, hi: int, digits: int = 5) -> list[str]:
    """Key prefixes (the leading ``digits`` digits) covering every epoch of [lo, hi] of the same length."""
    step = 10 ** max(len(str(hi)) - digits, 0)
    return sorted({str(e)[:digits] for e in range(lo - lo % step, hi + 1, step) if len(str(e)) == len(str(hi))})


def _range(start: Any, end: Any) -> tuple[int | None, int | None]:
    return (to_ns(start) if start is not None else None, to_ns(end) if end is not None else None)


@dataclass
class OrcasoundHLS:
    """Live HLS sessions of one or more Orcasound nodes, optionally within a UTC range.

    Parameters
    ----------
    nodes : sequence of str
        Node folders, e.g. ``["rpi_orcasound_lab"]``.
    start, end : time-like, optional
        UTC range; sessions and segments that overlap it are kept.
    bucket : str
        Bucket name (``audio-orcasound-net``; ``streaming-orcasound-net`` for older HLS).
    storage_options : dict
        fsspec options; anonymous access by default.
    capture_delay_s : float
        Seconds between the streamer's PTS origin and the sound it carries.
    block_segments : int
        Segments per decode block (see ``pamingest.decode.hls``).
    live : bool
        Poll mode: only the node's newest sessions, found without listing
        every session folder (see ``LIVE_SESSIONS``); for a deployment that
        runs every minute. Not with ``start``/``end``.
    """

    nodes: Sequence[str]
    start: Any = None
    end: Any = None
    bucket: str = DEFAULT_BUCKET
    storage_options: dict = field(default_factory=lambda: {"anon": True})
    capture_delay_s: float = 0.0
    block_segments: int = DEFAULT_BLOCK_SEGMENTS
    name: str = "orcasound"
    live: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.nodes, str):
            self.nodes = [self.nodes]
        self._t0, self._t1 = _range(self.start, self.end)
        if self.live and (self.start is not None or self.end is not None):
            raise ConfigError("live polls the newest sessions: give no start or end with it")

    @property
    def decoder(self) -> tuple[str, dict]:
        """Segments are decoded and joined into runs by the ``hls`` decoder, with this source's timing."""
        return ("hls", {"capture_delay_s": self.capture_delay_s, "block_segments": self.block_segments})

    def _fs(self):
        return filesystem(f"s3://{self.bucket}", self.storage_options)

    def sessions(self, node: str) -> list[int]:
        """Session epochs of a node, oldest first (from the listing, never from live.m3u8).

        In ``live`` mode only the newest ``LIVE_SESSIONS`` of those started in
        the last ``LIVE_LOOKBACK_S``, listed by epoch prefix (``hls/17644``...:
        two or three requests, however many sessions the node has had).
        """
        fs, _ = self._fs()
        folder = f"{self.bucket}/{node}/hls/"
        if self.live:
            now = int(time.time())
            entries = [e for p in epoch_prefixes(now - LIVE_LOOKBACK_S, now + 60)
                       for e in list_folders_with_prefix(fs, folder, p)]
        else:
            try:
                entries = fs.ls(folder, detail=True)
            except FileNotFoundError:
                return []
        epochs = []
        for e in entries:
            m = _EPOCH.search(e["name"].rstrip("/"))
            if e["type"] == "directory" and m:
                epochs.append(int(m.group(1)))
        epochs = sorted(set(epochs))
        if self.live:  # the prefixes cover more than the lookback: keep to it
            epochs = [e for e in epochs if e >= now - LIVE_LOOKBACK_S][-LIVE_SESSIONS:]
        return epochs

    def partitions(self) -> list[str]:
        """One partition per session that overlaps the range: ``<node>/hls/<epoch>``."""
        parts = []
        for node in self.nodes:
            epochs = self.sessions(node)
            for i, epoch in enumerate(epochs):
                begin = epoch * NS_PER_S
                # A session ends where the next begins; the newest may still be growing.
                finish = epochs[i + 1] * NS_PER_S if i + 1 < len(epochs) else None
                if self._t1 is not None and begin >= self._t1:
                    continue
                if self._t0 is not None and finish is not None and finish <= self._t0:
                    continue
                parts.append(f"{node}/hls/{epoch}")
        return parts

    def list_partition(self, partition: str) -> list[SourceFile | RejectedFile]:
        node, _, epoch = partition.split("/")
        fs, _ = self._fs()
        records: list[tuple[int, SourceFile]] = []
        rejected: list[RejectedFile] = []
        for info in fs.ls(f"{self.bucket}/{partition}/", detail=True):
            base = info["name"].rstrip("/").rsplit("/", 1)[-1]
            if info["type"] == "directory" or not base.lower().endswith(".ts"):
                continue  # live.m3u8 and anything else is not audio
            tag = str(info.get("ETag") or info.get("etag") or "").strip('"')
            m = SEGMENT_NAME.search(base)
            if not m:
                # A segment the streamer did not name has no place in the session's order.
                rejected.append(RejectedFile(self.name, join_url(fs, info["name"]), int(info.get("size") or 0), tag,
                                             f"{base}: not a segment name of the form liveN.ts"))
                continue
            number = int(m.group(1))
            nominal = int(epoch) * NS_PER_S + int(number * NOMINAL_SEGMENT_SECONDS * NS_PER_S)
            # Segment index x 10 s is only a guide to time: keep a margin of a minute.
            if self._t1 is not None and nominal - 60 * NS_PER_S >= self._t1:
                continue
            if self._t0 is not None and nominal + 70 * NS_PER_S <= self._t0:
                continue
            records.append((number, SourceFile(
                self.name, node, int(epoch) * NS_PER_S, join_url(fs, info["name"]), int(info.get("size") or 0),
                tag, (("number", str(number)), ("session", epoch)),
            )))
        # Rejected names are kept whatever the time range: their place in it is unknown.
        return [r for _, r in sorted(records, key=lambda nr: nr[0])] + sorted(rejected, key=lambda r: r.url)

    def stream_attributes(self, file: SourceFile) -> dict:
        return {
            "orcasound_node": file.site,
            "time_origin": f"session epoch + (MPEG-TS PTS - {MPEGTS_START_PTS_S} s) + capture delay",
            "capture_delay_seconds": self.capture_delay_s,
            "time_uncertainty_seconds": TIME_UNCERTAINTY_SECONDS,
            "decode": f"PyAV AAC, float x 32768 rounded to int16 (= ffmpeg s16); decoder restarted every "
                      f"{self.block_segments} segments, primed with the previous one",
        }


@dataclass
class OrcasoundFLAC:
    """FLAC archives of Orcasound research nodes: ``<node>/flac/<UTC time>_<node>-<rate>-<ch>.flac``."""

    nodes: Sequence[str]
    start: Any = None
    end: Any = None
    bucket: str = DEFAULT_BUCKET
    storage_options: dict = field(default_factory=lambda: {"anon": True})
    name: str = "orcasound"
    # Archive files are 30 s long; a file starting this long before the range may reach into it.
    lookback_seconds: float = 60.0

    def __post_init__(self) -> None:
        if isinstance(self.nodes, str):
            self.nodes = [self.nodes]
        self._t0, self._t1 = _range(self.start, self.end)
        self._by_node = {
            node: TimestampedFiles(f"s3://{self.bucket}/{node}/flac", "orcasound-flac", name=self.name,
                                   storage_options=self.storage_options, partition_depth=0)
            for node in self.nodes
        }

    def partitions(self) -> list[str]:
        return list(self.nodes)

    def list_partition(self, partition: str) -> list[SourceFile | RejectedFile]:
        out = []
        for rec in self._by_node[partition].list_partition(""):
            if isinstance(rec, SourceFile):
                if self._t1 is not None and rec.start_ns >= self._t1:
                    continue
                if self._t0 is not None and rec.start_ns + self.lookback_seconds * NS_PER_S <= self._t0:
                    continue
            out.append(rec)
        return out
