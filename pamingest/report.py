"""A store report: one static HTML page to look at (``pamingest report STORE -o report.html``).

Per stream: a coverage timeline (inline SVG: spans as bars, gaps as the
track between them, the duty cycle in words), a long-term spectral average
per day (PNG, inline as base64), failed files with their reasons, events,
positive/negative chunks and effort per label, the labelling queue of each
labeller; for the store: objects rejected before they had a stream, and the
snapshot history. One file, no external URL, no script: it opens from disk,
from a Prefect artifact's link, or as a CI artifact.

Everything is read through what ``info``, ``query`` (the ``.pam``
accessor), ``spectra`` and ``labeling.queue`` already compute, from one
snapshot. The page is bounded whatever the store's size: LTSA images only
for the last ``ltsa_days`` days of each stream and ``ltsa_images`` in all,
each from at most ``ltsa_rows_per_day`` rows (read row by row, as
``spectra.ltsa`` does); timelines of more than ``max_spans`` spans are
drawn as pixel columns shaded by the fraction of time covered; lists are
cut at ``max_list`` lines. The page says where it was cut.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .coverage import duration_words, duty_cycle
from .errors import ConfigError
from .timing import NS_PER_S

NS_PER_DAY = 86_400 * NS_PER_S
TIMELINE_WIDTH = 960  # SVG user units (px at 100% zoom)
# Tick steps of a timeline's time axis, the first giving at most MAX_TICKS ticks is used.
TICK_STEPS_S = (1, 5, 10, 30, 60, 300, 600, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86_400, 2 * 86_400,
                7 * 86_400, 14 * 86_400, 30 * 86_400, 91 * 86_400, 182 * 86_400, 365 * 86_400)
MAX_TICKS = 8


@dataclass
class ReportSummary:
    """What :func:`report` wrote."""

    out: str
    store: str
    snapshot_id: str
    streams: int
    ltsa_images: int
    bytes: int
    seconds: float
    cut: list[str] = field(default_factory=list)  # what the page leaves out, as the page says it

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        lines = [f"report     {self.out}", f"store      {self.store}", f"snapshot   {self.snapshot_id}",
                 f"streams    {self.streams}, {self.ltsa_images} LTSA images, {self.bytes:,} bytes, "
                 f"{self.seconds:.1f} s"]
        lines += [f"cut        {c}" for c in self.cut]
        return "\n".join(lines)


def report(store: Any, out: str, *, snapshot: str | None = None, storage_options: dict | None = None,
           out_storage_options: dict | None = None, ltsa_days: int = 7, ltsa_images: int = 60,
           ltsa_rows_per_day: int = 288, ltsa_columns: int = 288, max_spans: int = 2000, max_list: int = 200,
           history: int = 50) -> ReportSummary:
    """Write a store's report: one self-contained static HTML file.

    Parameters
    ----------
    store : str or StoreLocation or Store
        The store (path, ``s3://``, ``gs://``).
    out : str
        Where to write the page (a path or an fsspec URL).
    snapshot : str, optional
        Report on this snapshot (default: the tip of ``main``).
    storage_options, out_storage_options : dict, optional
        Access to the store and to ``out``.
    ltsa_days : int
        LTSA images for at most this many days of each stream: its last
        days with audio (0: none).
    ltsa_images : int
        At most this many LTSA images in the whole page.
    ltsa_rows_per_day : int
        Rows read for one day's LTSA at most: the first rows of each bin (a
        day of 10 s rows has 8640; a column of the image is the mean over
        the rows read in its bin). Reading is what a report costs: 0.05 s
        per 10 s row of 48 kHz stereo on 2 cores (0.2 s when they are busy).
    ltsa_columns : int
        Time bins of a day's image at most, and no more than
        ``ltsa_rows_per_day`` (bins are at least a row long, and a duty
        cycle's period long on a duty-cycled stream).
    max_spans : int
        Timelines with more spans than this are drawn as pixel columns
        shaded by the fraction of time they hold audio.
    max_list : int
        Failed files, rejected objects and queue lines listed at most per list.
    history : int
        Snapshots listed (newest first).

    Returns
    -------
    ReportSummary
        Where the page went, its size, and what was cut.
    """
    for name, value in (("ltsa_days", ltsa_days), ("ltsa_images", ltsa_images)):
        if value < 0:
            raise ConfigError(f"report: {name} must be >= 0, got {value}")
    for name, value in (("ltsa_rows_per_day", ltsa_rows_per_day), ("ltsa_columns", ltsa_columns),
                        ("max_spans", max_spans), ("max_list", max_list), ("history", history)):
        if value < 1:
            raise ConfigError(f"report: {name} must be >= 1, got {value}")
    t0 = time.monotonic()
    limits = _Limits(ltsa_days, ltsa_images, ltsa_rows_per_day, ltsa_columns, max_spans, max_list)
    with warnings.catch_warnings():
        # PCodec streams (32-bit, float) make zarr warn that numcodecs is outside the v3 spec (as open_store).
        warnings.filterwarnings("ignore", message="Numcodecs codecs are not in the Zarr version 3")
        page, info, n_streams, cut = _render(store, snapshot, storage_options, history, limits)
    data = page.encode("utf-8")
    _write(out, data, out_storage_options)
    return ReportSummary(out, info.url, info.snapshot_id, n_streams, limits.images_made, len(data),
                         time.monotonic() - t0, cut)


@dataclass
class _Limits:
    days: int
    images: int
    rows_per_day: int
    columns: int
    spans: int
    listed: int
    images_made: int = 0
    matplotlib_missing: str = ""


def _write(out: str, data: bytes, storage_options: dict | None) -> None:
    from .fsutil import filesystem

    fs, path = filesystem(out, storage_options)
    if "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)):
        # Replaced whole: a browser (or the Prefect UI's link) reloading meanwhile never reads half a page.
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    else:
        fs.pipe(path, data)


# ---------------------------------------------------------------- reading the store


def _render(store, snapshot, storage_options, history, limits: _Limits):
    from . import query
    from .info import store_info
    from .store import layout
    from .store.repo import Store

    st = Store.open(store, storage_options)
    info = store_info(st, snapshot=snapshot, history=history)
    # Everything else at the snapshot info read, so that the page is one snapshot's.
    tree = query.open_store(st, info.snapshot_id)
    root = st.root(info.snapshot_id)
    groups = dict(layout.iter_streams(root))
    sections, cut = [], []
    placed = set()
    for s in info.streams:
        ds = tree[s.path].to_dataset()
        section, stream_cut, failed_urls = _stream_section(s, ds, groups[s.path], limits)
        sections.append(section)
        cut += [f"{s.path}: {c}" for c in stream_cut]
        placed |= failed_urls
    unplaced = [(u, r) for u, r in info.rejected if u not in placed]  # rejected before planning: no stream
    if limits.matplotlib_missing:
        cut.append(limits.matplotlib_missing)
    page = _page(info, sections, unplaced, limits, cut)
    return page, info, len(info.streams), cut


def _stream_section(s, ds, group, limits: _Limits) -> tuple[str, list[str], set[str]]:
    cut: list[str] = []
    spans = ds.pam.coverage()
    starts = spans["start"].to_numpy().astype("datetime64[ns]").astype(np.int64)
    ends = spans["end"].to_numpy().astype("datetime64[ns]").astype(np.int64)
    parts = [f'<section class="stream" id="{_anchor(s.path)}">', f"<h2>{_e(s.path)}</h2>", _facts(s)]
    parts.append("<h3>Coverage</h3>")
    words = duty_cycle(starts, ends)
    parts.append(f'<p class="duty">{_e(words)}</p>')
    svg, drawn_as_columns = timeline_svg(starts, ends, s.path, limits.spans)
    parts.append(svg)
    if drawn_as_columns:
        cut.append(f"{len(starts)} spans drawn as {TIMELINE_WIDTH} columns of the fraction covered "
                   f"(max_spans={limits.spans})")
        parts.append(f'<p class="note">{len(starts):,} spans: drawn as {TIMELINE_WIDTH} columns shaded by '
                     f"the fraction of their time holding audio (more than max_spans={limits.spans}).</p>")
    parts.append(_gaps(starts, ends))
    parts.append("<h3>Long-term spectral average</h3>")
    ltsa_html, ltsa_cut = _ltsa_section(ds, starts, ends, s, limits)
    parts.append(ltsa_html)
    cut += ltsa_cut
    failed_html, failed_urls, failed_cut = _failures(s, limits.listed)
    parts.append(failed_html)
    cut += failed_cut
    parts.append(_labels(ds))
    queue_html = _queue(group, s.path)
    parts.append(queue_html)
    parts.append("</section>")
    return "\n".join(parts), cut, failed_urls


# ---------------------------------------------------------------- coverage


def _ticks(t0: int, t1: int) -> list[tuple[int, str]]:
    span_s = max((t1 - t0) / NS_PER_S, 1e-9)
    step = next((s for s in TICK_STEPS_S if span_s / s <= MAX_TICKS), TICK_STEPS_S[-1])
    step_ns = step * NS_PER_S
    first = -(-t0 // step_ns) * step_ns
    fmt = "%Y-%m-%d" if step >= 86_400 else ("%H:%M" if step >= 60 else "%H:%M:%S")
    out, last_day = [], None
    for t in range(first, t1 + 1, step_ns):
        ts = pd.Timestamp(t, unit="ns")
        label = ts.strftime(fmt)
        if step < 86_400 and ts.date() != last_day:  # the date where it changes (and on the first tick)
            label = ts.strftime("%m-%d ") + label
            last_day = ts.date()
        out.append((t, label))
    return out


def timeline_svg(starts: np.ndarray, ends: np.ndarray, stream: str, max_spans: int) -> tuple[str, bool]:
    """An inline SVG of a stream's spans over its whole time range; True when drawn as columns.

    One ``rect.span`` per span (at least 1 px wide, so that a 10 s recording shows on a year-long
    axis), over a track whose visible background is the gaps. More than ``max_spans`` spans: one
    ``rect.span-column`` per pixel column holding audio, its opacity the fraction covered.
    """
    w, top, h = TIMELINE_WIDTH, 6, 26
    n = len(starts)
    head = (f'<svg class="timeline" role="img" width="{w}" height="58" '
            f'viewBox="0 0 {w} 58" data-stream="{_e(stream)}" data-spans="{n}">')
    parts = [head, f'<title>coverage of {_e(stream)}: {n} spans</title>',
             f'<rect class="track" x="0" y="{top}" width="{w}" height="{h}"/>']
    if not n:
        parts.append("</svg>")
        return "\n".join(parts), False
    t0, t1 = int(starts[0]), int(ends[-1])
    scale = w / max(t1 - t0, 1)
    as_columns = n > max_spans
    if not as_columns:
        for s, e in zip(starts, ends):
            width = max((e - s) * scale, 1.0)
            x = min((s - t0) * scale, w - width)  # a last short span widened to 1 px stays inside
            tip = f"{_iso(s)} to {_iso(e)} ({duration_words((e - s) / NS_PER_S)})"
            parts.append(f'<rect class="span" x="{x:.2f}" y="{top}" width="{width:.2f}" height="{h}">'
                         f"<title>{tip}</title></rect>")
    else:
        # Audio held up to each column edge: the spans are sorted and disjoint, so a cumulative sum
        # of their lengths plus the part of the span an edge falls in.
        edges = t0 + (np.arange(w + 1) * (t1 - t0)) // w
        lengths = (ends - starts).astype(np.float64)
        before = np.concatenate([[0.0], np.cumsum(lengths)])
        k = np.searchsorted(starts, edges, side="right") - 1
        inside = np.where(k >= 0, np.clip(edges - starts[np.maximum(k, 0)], 0, lengths[np.maximum(k, 0)]), 0.0)
        held = np.where(k >= 0, before[np.maximum(k, 0)] + inside, 0.0)
        share = np.diff(held) / np.maximum(np.diff(edges), 1)
        for x in np.flatnonzero(share > 0):
            opacity = max(float(share[x]), 0.15)  # a column with a few seconds of audio must still show
            parts.append(f'<rect class="span-column" x="{x}" y="{top}" width="1" height="{h}" '
                         f'fill-opacity="{opacity:.3f}"/>')
    for t, label in _ticks(t0, t1):
        x = (t - t0) * scale
        anchor = "start" if x < 40 else ("end" if x > w - 40 else "middle")
        parts.append(f'<line class="tick" x1="{x:.1f}" x2="{x:.1f}" y1="{top + h}" y2="{top + h + 5}"/>'
                     f'<text x="{x:.1f}" y="{top + h + 18}" text-anchor="{anchor}">{_e(label)}</text>')
    parts.append("</svg>")
    return "\n".join(parts), as_columns


def _gaps(starts: np.ndarray, ends: np.ndarray, n: int = 3) -> str:
    if len(starts) < 2:
        return ""
    gaps = starts[1:] - ends[:-1]
    biggest = np.argsort(gaps)[::-1][:n]
    items = [f"<li>{duration_words(gaps[i] / NS_PER_S)}: {_iso(ends[i])} to {_iso(starts[i + 1])}</li>"
             for i in sorted(biggest)]
    return f'<details class="gaps"><summary>largest gaps</summary><ul>{"".join(items)}</ul></details>'


# ---------------------------------------------------------------- LTSA


def _ltsa_days(starts: np.ndarray, ends: np.ndarray) -> list[int]:
    """UTC midnights (ns) of the days holding audio, in order."""
    days: set[int] = set()
    for s, e in zip(starts // NS_PER_DAY, (ends - 1) // NS_PER_DAY):
        days.update(range(int(s), int(e) + 1))
    return [d * NS_PER_DAY for d in sorted(days)]


def _ltsa_section(ds, starts, ends, s, limits: _Limits) -> tuple[str, list[str]]:
    from . import spectra

    days = _ltsa_days(starts, ends)
    if not days:
        return '<p class="note">no audio</p>', []
    if not limits.days:
        return '<p class="note">LTSA images not drawn (ltsa_days=0).</p>', []
    chosen = days[-limits.days:]
    room = max(limits.images - limits.images_made, 0)
    notes, cut = [], []
    if len(chosen) > room:
        chosen = chosen[len(chosen) - room:]
        notes.append(f"the page's limit of {limits.images} LTSA images (ltsa_images) is reached")
    if len(chosen) < len(days):
        text = f"LTSA of the last {len(chosen)} of {len(days)} days with audio"
        notes.insert(0, text + (f" (ltsa_days={limits.days})" if len(days) > limits.days else ""))
        cut.append(text)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        limits.matplotlib_missing = "LTSA images need matplotlib: pip install 'pamingest[report]'"
        return f'<p class="note">{_e(limits.matplotlib_missing)}.</p>', []
    # The live rows by start, as coverage() just indexed them (cached on the accessor); ds.pam.rows would
    # also make a file URL per row, hundreds of MB for a year of 10 s rows.
    row_ids, row_start, _ = ds.pam._rows()
    period = _period_ns(starts, ends)
    figures = []
    for day in chosen:
        lo, hi = day, day + NS_PER_DAY
        # The image spans the day's audio, not the whole day: a 5 min clip is not one column of 288.
        first = int(max(lo, starts[np.searchsorted(ends, lo, side="right")]))
        k = np.searchsorted(starts, hi, side="left") - 1
        last = int(min(hi, ends[k]))
        row_ns = int(s.row_seconds * NS_PER_S)
        # No more bins than rows read: each bin of a continuous day gets a row, none is left grey for want of one.
        bins = min(limits.columns, limits.rows_per_day)
        width = max(-(-(last - first) // bins), row_ns, period, NS_PER_S)
        # A round length (1 min, 15 min, 1 h...), or whole seconds past the list.
        width = next((t * NS_PER_S for t in TICK_STEPS_S if t * NS_PER_S >= width), -(-width // NS_PER_S) * NS_PER_S)
        lo_bin, hi_bin = first // width * width, -(-last // width) * width
        a, b = np.searchsorted(row_start, lo), np.searchsorted(row_start, hi)
        if b - a <= limits.rows_per_day:
            picked = np.arange(b - a)
        else:
            per_bin = max(1, limits.rows_per_day // ((hi_bin - lo_bin) // width))
            picked = _rows_per_bin(row_start[a:b], lo_bin, width, per_bin)
        read = f", {len(picked)} of {b - a} rows read (the first of each bin)" if len(picked) < b - a else ""
        picked = row_ids[a:b][picked]
        sub = ds.isel(chunk=np.sort(picked))
        L = spectra.ltsa(sub, pd.Timedelta(width, unit="ns"), start=lo_bin, end=hi_bin)
        png = _ltsa_png(L, lo_bin, hi_bin, day)
        limits.images_made += 1
        caption = (f"{pd.Timestamp(day, unit='ns'):%Y-%m-%d} UTC, {_iso(lo_bin)} to {_iso(hi_bin)}: "
                   f"{L.sizes['time']} bins of {duration_words(width / NS_PER_S)}{read}; Welch, "
                   f"{L.attrs['nperseg']}-sample Hann segments, channel {L.attrs['channel']}; grey: no audio")
        figures.append(f'<figure class="ltsa"><img alt="LTSA {pd.Timestamp(day, unit="ns"):%Y-%m-%d}" '
                       f'src="data:image/png;base64,{base64.b64encode(png).decode()}">'
                       f"<figcaption>{_e(caption)}</figcaption></figure>")
    head = "".join(f'<p class="note">{_e(n)}.</p>' for n in notes)
    return head + "\n".join(figures), cut


def _rows_per_bin(starts: np.ndarray, lo: int, width: int, per_bin: int) -> np.ndarray:
    """Positions of the first ``per_bin`` rows (sorted ``starts``) starting in each bin of ``width`` from ``lo``."""
    bin_of = (starts - lo) // width
    first = np.searchsorted(bin_of, bin_of, side="left")  # each row's bin's first row
    return np.flatnonzero(np.arange(len(starts)) - first < per_bin)


def _period_ns(starts: np.ndarray, ends: np.ndarray) -> int:
    """A duty cycle's period (median start-to-start), 0 for a stream mostly recording."""
    if len(starts) < 3:
        return 0
    periods = np.diff(starts)
    p = int(np.median(periods))
    held = float(np.median(ends - starts))
    return p if held < 0.5 * p else 0


def _ltsa_png(L, lo: int, hi: int, day: int) -> bytes:
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, MultipleLocator

    import matplotlib

    with np.errstate(divide="ignore", invalid="ignore"):
        db = 10 * np.log10(np.where(L.values > 0, L.values, np.nan))
    finite = db[np.isfinite(db)]
    vmin, vmax = (np.percentile(finite, [2, 98]) if finite.size else (0.0, 1.0))
    if vmax <= vmin:
        vmax = vmin + 1
    seconds = ((lo - day) / NS_PER_S, (hi - day) / NS_PER_S)  # since the day's midnight
    f = L["frequency"].values
    fig = Figure(figsize=(9.6, 2.4), dpi=80)  # pyplot-free: no global state, safe in threads
    ax = fig.add_axes((0.07, 0.2, 0.83, 0.72))
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="#d9d9d9")  # no audio in the bin: gaps stay gaps
    im = ax.imshow(np.ma.masked_invalid(db.T), origin="lower", aspect="auto", interpolation="nearest", cmap=cmap,
                   norm=Normalize(vmin, vmax), extent=(seconds[0], seconds[1], f[0] / 1000, f[-1] / 1000))
    with_seconds = seconds[1] - seconds[0] < 1800

    def clock(x: float, _pos=None) -> str:
        h, rest = divmod(int(round(x)), 3600)
        text = f"{h:02d}:{rest // 60:02d}"
        return f"{text}:{rest % 60:02d}" if with_seconds else text

    extent = max(seconds[1] - seconds[0], 1e-9)
    ax.xaxis.set_major_locator(MultipleLocator(next((t for t in TICK_STEPS_S if extent / t <= MAX_TICKS), 86_400)))
    ax.xaxis.set_major_formatter(FuncFormatter(clock))
    ax.set_xlabel("UTC")
    ax.set_ylabel("kHz")
    cax = fig.add_axes((0.915, 0.2, 0.015, 0.72))
    fig.colorbar(im, cax=cax).set_label("dB re 1 count²/Hz", fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


# ---------------------------------------------------------------- files, labels, queue


def _failures(s, max_list: int) -> tuple[str, set[str], list[str]]:
    """The stream's files not stored whole (``StreamInfo.failures``), with their reasons."""
    bad = s.failures
    if not bad:
        return "<h3>Failed files</h3><p>none</p>", set(), []
    rows = [f'<tr><td>{_e(status)}</td><td class="url">{_e(url)}</td><td>{_e(reason)}</td></tr>'
            for url, status, reason in bad[:max_list]]
    cut, more = [], ""
    if len(bad) > max_list:
        more = f'<p class="note">and {len(bad) - max_list:,} more (max_list={max_list}): <code>pamingest info</code> lists them.</p>'
        cut.append(f"{len(bad)} failed files, {max_list} listed")
    html_ = (f"<h3>Failed files ({len(bad)})</h3><p class=\"note\">partial: stored up to where the file ends; "
             f"failed: nothing stored.</p><table><tr><th>status</th><th>file</th><th>reason</th></tr>{''.join(rows)}"
             f"</table>{more}")
    return html_, {url for url, _, _ in bad}, cut


def _union_seconds(start: np.ndarray, end: np.ndarray) -> float:
    if not len(start):
        return 0.0
    order = np.argsort(start, kind="stable")
    s, e = start[order], end[order]
    reach = np.maximum.accumulate(e)
    fresh = np.concatenate([[True], s[1:] > reach[:-1]])  # starts a new merged interval
    group = np.cumsum(fresh) - 1
    lo = s[fresh]
    hi = np.zeros(len(lo), dtype=np.int64)
    np.maximum.at(hi, group, e)
    return float((hi - lo).sum()) / NS_PER_S


def _labels(ds) -> str:
    from .annotations.store import ANNOTATIONS_ATTR

    if ANNOTATIONS_ATTR not in ds.attrs:
        return "<h3>Labels and effort</h3><p>no annotations attached</p>"
    events, effort = ds.pam.events(), ds.pam.effort()
    labels = ds.pam.labels()
    live = ds["n_valid"].values > 0
    values = labels.values[live]
    names = [str(n) for n in labels["label"].values]
    ef_start = effort["start"].to_numpy().astype("datetime64[ns]").astype(np.int64)
    ef_end = effort["end"].to_numpy().astype("datetime64[ns]").astype(np.int64)
    ef_label = effort["label_norm"].to_numpy().astype(str)
    every = ef_label == ""
    all_names = sorted(set(names) | set(events["label_norm"].astype(str)) | set(ef_label[~every]))
    rows = []
    for name in all_names:
        ev = (events["label_norm"].astype(str) == name).to_numpy()
        j = names.index(name) if name in names else None
        pos = int((values[:, j] == 1).sum()) if j is not None else 0
        neg = int((values[:, j] == 0).sum()) if j is not None else 0
        unknown = int(live.sum()) - pos - neg
        mine = every | (ef_label == name)
        hours = _union_seconds(ef_start[mine], ef_end[mine]) / 3600
        rows.append(f"<tr><td>{_e(name)}</td><td>{int(ev.sum())}</td>"
                    f"<td>{int((ev & events['reviewed'].to_numpy(bool)).sum())}</td>"
                    f"<td>{int((ev & events['in_audio'].to_numpy(bool)).sum())}</td>"
                    f"<td>{pos}</td><td>{neg}</td><td>{unknown}</td><td>{hours:.3f}</td></tr>")
    head = ("<tr><th>label</th><th>events</th><th>reviewed</th><th>in audio</th><th>positive chunks</th>"
            "<th>negative chunks</th><th>unknown chunks</th><th>effort hours</th></tr>")
    every_h = _union_seconds(ef_start[every], ef_end[every]) / 3600
    files = int(ds.sizes.get("annotation_file", 0))
    note = (f'<p class="note">{len(events)} events and {len(effort)} effort spans from {files} annotation files; '
            f"effort for every label: {every_h:.3f} h (counted in each label's effort). Absence of an event is a "
            "negative only under effort.</p>")
    return f"<h3>Labels and effort</h3>{note}<table>{head}{''.join(rows)}</table>"


def _queue(group, path: str) -> str:
    from .labeling.queue import labelers_in, stream_queue

    known = labelers_in(group)
    if not known:
        return "<h3>Labelling queue</h3><p>no labeller has run on this stream</p>"
    rows = []
    for key, meta in sorted(known.items()):
        q = stream_queue(group, key, path)
        rows.append(f"<tr><td>{_e(meta.get('name', key))}</td><td>{_e(meta.get('version', ''))}</td>"
                    f"<td>{q.live}</td><td>{q.scored}</td><td>{q.queued}</td><td>{q.annotated}</td>"
                    f"<td>{q.failed}</td></tr>")
    head = ("<tr><th>labeller</th><th>version</th><th>chunks</th><th>scored</th><th>queued</th>"
            "<th>reviewed (under effort)</th><th>failed</th></tr>")
    return f"<h3>Labelling queue</h3><table>{head}{''.join(rows)}</table>"


# ---------------------------------------------------------------- page


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _iso(ns: int) -> str:
    return pd.Timestamp(int(ns), unit="ns").strftime("%Y-%m-%d %H:%M:%S")


def _anchor(path: str) -> str:
    return "s-" + "".join(c if c.isalnum() else "-" for c in path)


def _facts(s) -> str:
    return (f'<table class="facts"><tr><th>sample rate</th><td>{s.sample_rate} Hz</td><th>channels</th>'
            f"<td>{s.channels}</td><th>samples</th><td>{_e(s.dtype)}, {s.bits} bits</td><th>row</th>"
            f"<td>{duration_words(s.row_seconds)}</td></tr><tr><th>rows</th><td>{s.rows:,}</td><th>files</th>"
            f"<td>{s.files_ok:,} stored, {s.files_failed:,} failed</td><th>audio</th><td>{s.hours:.3f} h</td>"
            f"<th>from</th><td>{_e(s.first)} to {_e(s.last)} (row starts)</td></tr></table>")


CSS = """
body{font:14px/1.4 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.5em auto;max-width:1000px;color:#222}
h1{font-size:1.5em;margin-bottom:.2em}h2{border-top:2px solid #ccc;padding-top:.6em;margin-top:1.6em;font-size:1.2em}
h3{font-size:1em;margin:1em 0 .3em}
table{border-collapse:collapse;margin:.3em 0}th,td{border:1px solid #ddd;padding:2px 6px;text-align:left;vertical-align:top}
th{background:#f4f4f4;font-weight:600}td.url{word-break:break-all}
.note{color:#555;font-size:.92em}.duty{font-weight:600}
svg.timeline{display:block;margin:.3em 0}svg.timeline .track{fill:#e8e8e8}
svg.timeline .span,svg.timeline .span-column{fill:#1f5fa8}svg.timeline .tick{stroke:#666}
svg.timeline text{font-size:11px;fill:#444}
figure.ltsa{margin:.5em 0}figure.ltsa img{display:block;max-width:100%}figcaption{font-size:.85em;color:#555}
code{font-size:.92em}nav ul{columns:2}
"""


def _page(info, sections: list[str], unplaced: list[tuple[str, str]], limits: _Limits, cut: list[str]) -> str:
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    hours = sum(s.hours for s in info.streams)
    failed = sum(s.files_failed for s in info.streams)
    nav = "".join(f'<li><a href="#{_anchor(s.path)}">{_e(s.path)}</a> ({s.hours:.3f} h)</li>' for s in info.streams)
    head = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>pamingest report: {_e(info.url)}</title><style>{CSS}</style></head><body>",
        f"<h1>pamingest store report</h1><p><code>{_e(info.url)}</code> at snapshot <code>{_e(info.snapshot_id)}"
        f"</code>, written {now}.</p>",
        f'<p class="summary">{len(info.streams)} streams, {hours:.3f} h of audio; {failed} files failed in '
        f"streams, {len(unplaced)} objects rejected before they had a stream; {len(info.partial)} files stored "
        "up to where they end.</p>",
    ]
    if cut:
        head.append('<p class="note">This page is bounded: ' + "; ".join(_e(c) for c in cut) + ".</p>")
    if nav:
        head.append(f"<nav><ul>{nav}</ul></nav>")
    body = list(sections)
    body.append("<section id=\"rejected\"><h2>Objects rejected before they had a stream</h2>")
    if unplaced:
        rows = "".join(f'<tr><td class="url">{_e(u)}</td><td>{_e(r)}</td></tr>' for u, r in unplaced[:limits.listed])
        body.append(f"<table><tr><th>object</th><th>reason</th></tr>{rows}</table>")
        if len(unplaced) > limits.listed:
            body.append(f'<p class="note">and {len(unplaced) - limits.listed:,} more (max_list={limits.listed}).</p>')
    else:
        body.append("<p>none</p>")
    body.append("</section>")
    rows = "".join(f"<tr><td><code>{_e(sid)}</code></td><td>{_e(when)}</td><td>{_e(msg)}</td></tr>"
                   for sid, when, msg in info.history)
    body.append(f'<section id="history"><h2>Snapshot history</h2><p class="note">newest first, from '
                f"<code>{_e(info.snapshot_id)}</code>; {len(info.history)} listed.</p>"
                f"<table><tr><th>snapshot</th><th>written (UTC)</th><th>message</th></tr>{rows}</table></section>")
    return "\n".join(head + body + ["</body></html>", ""])
