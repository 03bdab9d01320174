"""Ocean Networks Canada's archive (Oceans 3.0 API): the hydrophone files of a location.

Barkley Canyon Axis (location ``BACAX``) is where the Barkley Canyon
marine-mammal set was cut from. The archive lists and serves files through
the Oceans 3.0 ``archivefile`` service (as the ``onc`` client 2.6.0 calls
it; https://data.oceannetworks.ca/OpenAPI):

* list: ``GET {api}/archivefile/location?locationCode=BACAX&deviceCategoryCode=HYDROPHONE
  &dateFrom=...&dateTo=...&returnOptions=all&token=...`` answers
  ``{"files": [{"filename", "fileSize", "dateFrom", "deviceCode", "archivedDate",
  "modifyDate", ...}], "next": null | {"parameters": {...}}}``; a page cut by
  ``rowLimit`` names the next page's parameters in ``next``. Errors: 400 with
  ``{"errors": [{"errorCode", "errorMessage", "parameter"}]}``, 401 for a
  token the archive does not know.
* download: ``GET {api}/archivefile/download?filename=<name>&token=...``.

Names carry the device and the UTC start: ``<deviceCode>_<YYYYMMDDTHHMMSS.fffZ>[-suffix].<ext>``
(``ICLISTENHF1251_20140101T000000.000Z.wav``). A hydrophone's archive holds
``.wav``/``.flac`` audio next to ``.mp3``, ``.png`` spectrograms, ``.fft``,
``.mat``...: only the audio is taken (by name: the API's own ``extension``
filter is a client-side one).

The token. Every request needs the user's token as a query parameter; it must
never reach a log, a report or the store. Listing adds it to requests made
here and says nothing of the URL in errors. The stored URL of a file is the
download URL *without* the token, and the source's ``storage_options`` add it
to every read (fsspec's HTTP filesystem passes ``params`` to each request), so a
Dask worker reads a file with what each task brings, and a file's URL can be
shared. Error texts of failed reads go through ``fsutil.describe_read_error``,
which masks ``token=`` query values (aiohttp names the full URL it asked).

The library reads no environment: the CLI (``--token`` or ``ONC_TOKEN``) and the
flows' settings pass the token in.

Checked only against the documented layout and the ``onc`` client's source: no
machine here reaches data.oceannetworks.ca. Range requests on the download
service are assumed (fsspec falls back to reading from the start when a server
ignores them); tests serve the documented JSON and fixture recordings under ONC
names from a local server (tests/onc_server.py).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError, TemplateError
from ._select import time_range
from .base import RejectedFile, SourceFile
from .templates import FilenameTemplate, parse_name

log = logging.getLogger(__name__)

ONC_API = "https://data.oceannetworks.ca/api"
AUDIO = ("wav", "flac")
PAGES_MAX = 1000  # a listing that keeps naming a next page is a server fault, not an archive
# ICLISTENHF1251_20140101T000000.000Z.wav, NAXYS_HYD_007_20091231T235919.476Z-spect.png
ONC_TEMPLATE = FilenameTemplate(r"{device:[A-Za-z0-9_-]+?}_%Y%m%dT%H%M%S.%fZ{suffix:(?:-[A-Za-z0-9_-]+)?}"
                                r".{ext:[A-Za-z0-9]+}")
TOKEN_HELP = "an Oceans 3.0 token (https://data.oceannetworks.ca/Profile, Web Services tab)"


def _iso(ns: int) -> str:
    """The API's date form: ``2014-01-01T00:00:00.000Z``."""
    return _dt.datetime.fromtimestamp(ns / 1e9, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _pieces(lo: int, hi: int, unit: str) -> list[tuple[int, int]]:
    """``[lo, hi)`` cut at UTC day or month boundaries."""
    out, t = [], lo
    while t < hi:
        day = _dt.datetime.fromtimestamp(t // 10**9, _dt.timezone.utc).replace(hour=0, minute=0, second=0)
        if unit == "month":
            nxt = (day.replace(day=1) + _dt.timedelta(days=32)).replace(day=1)
        else:
            nxt = day + _dt.timedelta(days=1)
        stop = min(hi, int(nxt.timestamp()) * 10**9)
        out.append((t, stop))
        t = stop
    return out


@dataclass
class OncArchive:
    """Audio files of one ONC location and device category over a UTC range.

    Parameters
    ----------
    location : str
        Location code (``BACAX``: Barkley Canyon Axis); the store's site.
    start, end : time-like
        UTC range ``[start, end)``: files whose names start inside it.
        Required when listing (a whole archive is never one request).
    token : str
        The user's Oceans 3.0 token. Needed to list and read; never logged nor
        stored (not in ``repr`` either).
    device_category : str
        ``HYDROPHONE``.
    extensions : tuple of str
        File endings taken (``wav``, ``flac``); other archive files are ignored.
    partition : str
        ``day`` or ``month``: one listing request (and its pages) per piece.
    api : str
        The API root (a local server in tests).
    name : str
        The source's name: the first level of the store's groups.
    timeout : float
        Seconds a listing request may take.
    """

    location: str = "BACAX"
    start: Any = None
    end: Any = None
    token: str | None = field(default=None, repr=False)
    device_category: str = "HYDROPHONE"
    extensions: tuple[str, ...] = AUDIO
    partition: str = "day"
    api: str = ONC_API
    name: str = "onc"
    timeout: float = 120.0

    def __post_init__(self) -> None:
        if self.partition not in ("day", "month"):
            raise ConfigError(f"ONC archive: partition {self.partition!r}: day or month")
        if isinstance(self.extensions, str):
            self.extensions = tuple(e.strip() for e in self.extensions.split(",") if e.strip())
        self.extensions = tuple(e.lower().lstrip(".") for e in self.extensions)
        self.api = self.api.rstrip("/")
        self._lo, self._hi = time_range(self.start, self.end)

    @property
    def storage_options(self) -> dict[str, Any]:
        """fsspec HTTP options of every read: the token as a query parameter of each request."""
        return {"params": {"token": self.token}} if self.token else {}

    def download_url(self, filename: str) -> str:
        """A file's URL as stored: the download service's, without the token."""
        return f"{self.api}/archivefile/download?" + urllib.parse.urlencode({"filename": filename})

    def partitions(self) -> list[str]:
        """One piece of the range per UTC day (or month): ``<dateFrom>/<dateTo>``."""
        self._need_token()
        if self._lo is None or self._hi is None:
            raise ConfigError("ONC archive: give start and end (the archive is listed one day or month at a time)")
        return [f"{_iso(a)}/{_iso(b)}" for a, b in _pieces(self._lo, self._hi, self.partition)]

    def _need_token(self) -> None:
        if not self.token:
            raise ConfigError(f"ONC archive: no token: give {TOKEN_HELP} (the CLI's --token or ONC_TOKEN)")

    def list_partition(self, partition: str) -> list[SourceFile | RejectedFile]:
        date_from, date_to = partition.split("/")
        params: dict[str, Any] = {"locationCode": self.location, "deviceCategoryCode": self.device_category,
                                  "dateFrom": date_from, "dateTo": date_to, "returnOptions": "all"}
        rows: dict[str, dict[str, Any]] = {}
        for _ in range(PAGES_MAX):
            page = self._get("archivefile/location", params)
            files = page.get("files")
            if not isinstance(files, list):
                raise ConfigError(f"ONC archive: {self._where('archivefile/location')} answered no 'files' list "
                                  f"for {self.location} {partition}")
            for row in files:
                row = {"filename": row} if isinstance(row, str) else row
                if isinstance(row, dict) and row.get("filename"):
                    rows[str(row["filename"])] = row
            nxt = page.get("next")
            if not nxt:
                break
            params = {k: v for k, v in dict(nxt.get("parameters") or {}).items() if k != "token"}
            if not params:
                raise ConfigError(f"ONC archive: {self._where('archivefile/location')} named a next page "
                                  f"without its parameters ({self.location} {partition})")
        else:
            raise ConfigError(f"ONC archive: {self._where('archivefile/location')} kept naming a next page "
                              f"({PAGES_MAX} pages for {self.location} {partition})")
        return self._records(rows.values())

    def _records(self, rows) -> list[SourceFile | RejectedFile]:
        records: list[SourceFile | RejectedFile] = []
        for row in rows:
            filename = str(row["filename"])
            if filename.rsplit(".", 1)[-1].lower() not in self.extensions:
                continue
            url = self.download_url(filename)
            size = int(row.get("fileSize") or row.get("uncompressedFileSize") or 0)
            # The archive's record of the file: a re-archived file (new date or size) is a new version.
            changed = row.get("modifyDate") or row.get("archivedDate") or ""
            etag = f"onc:{changed}:{size}" if changed or size else ""
            try:
                start_ns, fields = parse_name(filename, (ONC_TEMPLATE,))
            except TemplateError as exc:
                records.append(RejectedFile(self.name, url, size, etag, str(exc)))
                continue
            if not self._lo <= start_ns < self._hi:
                continue  # the listing's dates are the file's; its name is what the store goes by
            fields = {k: v for k, v in fields.items() if v}
            records.append(SourceFile(self.name, self.location, start_ns, url, size, etag,
                                      tuple(sorted(fields.items()))))
        return sorted(records, key=lambda r: r.url)

    def stream_attributes(self, file: SourceFile) -> dict[str, Any]:
        fields = dict(file.fields)
        return {"onc_location_code": self.location, "onc_device_category": self.device_category,
                "onc_device_code": fields.get("device", ""), "onc_api": self.api}

    # ------------------------------------------------------------ HTTP

    def _where(self, service: str) -> str:
        return f"{self.api}/{service}"

    def _get(self, service: str, params: dict[str, Any]) -> dict[str, Any]:
        """One API request's JSON. Errors name the service and the archive's reason, never the token
        (they are raised ``from None``: a chained urllib error would carry the URL)."""
        self._need_token()
        where = self._where(service)
        query = urllib.parse.urlencode({**params, "token": self.token})
        request = urllib.request.Request(f"{where}?{query}", headers={"Accept": "application/json"})
        asked = ", ".join(f"{k}={v}" for k, v in params.items())
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310 - http(s) API root
                body = response.read()
        except urllib.error.HTTPError as exc:
            status, text = exc.code, _read(exc)
            exc.close()
            # An archive echoing the token in its message must not make us print it.
            reason = _reason(status, text).replace(self.token, "***")
            raise ConfigError(f"ONC archive: {where} ({asked}): {reason}") from None
        except urllib.error.URLError as exc:
            raise ConfigError(f"ONC archive: cannot reach {where}: {exc.reason}") from None
        except (TimeoutError, OSError) as exc:
            raise ConfigError(f"ONC archive: {where}: {type(exc).__name__}: {exc}") from None
        try:
            data = json.loads(body)
        except ValueError:
            raise ConfigError(f"ONC archive: {where} ({asked}) did not answer JSON "
                              f"(starts {body[:60]!r})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"ONC archive: {where} ({asked}) answered {type(data).__name__}, not an object")
        log.debug("ONC archive: %s (%s): %d file(s)", where, asked, len(data.get("files") or []))
        return data


def _read(exc: urllib.error.HTTPError) -> bytes:
    try:
        return exc.read() or b""
    except Exception:  # noqa: BLE001 - the status alone still says what failed
        return b""


def _reason(status: int, body: bytes) -> str:
    """What an error answer says: the API's own error list when it sent one."""
    if status == 401:
        return (f"HTTP 401 Unauthorized: the archive does not accept the token; check it ({TOKEN_HELP}); "
                "tokens are per user and can be regenerated")
    try:
        errors = json.loads(body).get("errors") or []
    except (ValueError, AttributeError):
        errors = []
    said = "; ".join(f"API Error {e.get('errorCode')}: {e.get('errorMessage')}"
                     + (f" (parameter: {e['parameter']})" if e.get("parameter") else "")
                     for e in errors if isinstance(e, dict))
    if status == 404:
        return "HTTP 404 Not Found: is the API root right (--onc-api)?" + (f" {said}" if said else "")
    return f"HTTP {status}" + (f": {said}" if said else " (the archive gave no reason)")
