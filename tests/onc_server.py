"""A local HTTP server that answers as Ocean Networks Canada's Oceans 3.0 archivefile service does.

Only the documented layout (the ``onc`` client 2.6.0's calls and the API's OpenAPI/wiki pages): no
machine here reaches data.oceannetworks.ca.

* ``GET /api/archivefile/location?locationCode&deviceCategoryCode&dateFrom&dateTo&returnOptions=all&token``:
  ``{"files": [{"filename", "fileSize", "dateFrom", "deviceCode", ...}], "next": ..., "queryUrl": ...}``,
  files whose time is in ``[dateFrom, dateTo)``; ``row_limit`` cuts pages whose ``next`` names the
  following page's parameters (``page``; the token left out, as the client adds it again).
* ``GET``/``HEAD /api/archivefile/download?filename&token``: the file, byte ranges answered (206).
* Errors as the API gives them: 401 for a token it does not know, 400 with ``{"errors": [...]}``
  for an unknown location, 404 ``errors`` for an unknown file; ``fail`` makes a path answer a
  status with an HTML page (a 500 from a proxy).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
from http.server import ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlparse

from http_files import QuietHandler

_STAMP = re.compile(r"_(\d{8}T\d{6}\.\d{3})Z")


def _time(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def _file_time(name: str) -> dt.datetime:
    return dt.datetime.strptime(_STAMP.search(name).group(1), "%Y%m%dT%H%M%S.%f").replace(tzinfo=dt.timezone.utc)


class OncServer:
    """``publish(location, category, {filename: bytes})``; ``requests`` logs (method, path, query, Range)."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.files: dict[str, bytes] = {}
        self.locations: dict[tuple[str, str], list[str]] = {}
        self.requests: list[tuple[str, str, dict[str, str], str | None]] = []
        self.row_limit = 100_000
        self.fail: dict[str, int] = {}  # path or filename -> status answered with an HTML page
        server = self

        class Handler(QuietHandler):
            def _send(self, status: int, body: bytes, kind: str = "application/json", head: bool = False,
                      extra: dict[str, str] | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                for k, v in (extra or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                if not head:
                    self.wfile.write(body)

            def _error(self, status: int, code: int, message: str, parameter: str, head: bool) -> None:
                body = {"errors": [{"errorCode": code, "errorMessage": message, "parameter": parameter}]}
                self._send(status, json.dumps(body).encode(), head=head)

            def _answer(self, head: bool) -> None:
                url = urlparse(self.path)
                q = {k: v[0] for k, v in parse_qs(url.query).items()}
                server.requests.append((self.command, url.path, q, self.headers.get("Range")))
                failing = server.fail.get(url.path) or server.fail.get(q.get("filename", ""))
                if failing:
                    page = f"<html><body><h1>{failing} Internal Server Error</h1></body></html>".encode()
                    return self._send(failing, page, "text/html", head)
                if url.path.startswith("/api/") and q.get("token") != server.token:
                    # As the API: 401 with the request's URL in its message, token and all.
                    body = {"errors": [{"errorCode": 128, "errorMessage": f"Invalid token in {self.path}",
                                        "parameter": "token"}]}
                    return self._send(401, json.dumps(body).encode(), head=head)
                if url.path == "/api/archivefile/location":
                    return self._list(q, head)
                if url.path == "/api/archivefile/download":
                    return self._download(q, head)
                self._send(404, b"<html><body>Not Found</body></html>", "text/html", head)

            def _list(self, q: dict[str, str], head: bool) -> None:
                key = (q.get("locationCode", ""), q.get("deviceCategoryCode", ""))
                if key not in server.locations:
                    return self._error(400, 127, "Invalid parameter value", "locationCode", head)
                lo, hi = _time(q["dateFrom"]), _time(q["dateTo"])
                names = sorted((n for n in server.locations[key] if lo <= _file_time(n) < hi), key=_file_time)
                number = int(q.get("page", 1))
                page = names[(number - 1) * server.row_limit: number * server.row_limit]
                nxt = None
                if len(names) > number * server.row_limit:
                    params = {k: v for k, v in q.items() if k != "token"} | {"page": str(number + 1)}
                    nxt = {"parameters": params, "url": f"{server.url}/api/archivefile/location?{urlencode(params)}"}
                files = [{"archiveLocation": "/archive/AD", "archivedDate": "2015-01-02T00:10:00.000Z",
                          "compression": None, "dataProductCode": "AD",
                          "dateFrom": _file_time(n).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
                          "dateTo": None, "deviceCode": n.split("_2")[0], "fileSize": len(server.files[n]),
                          "filename": n, "modifyDate": "2015-01-02T00:10:00.000Z",
                          "uncompressedFileSize": len(server.files[n])} for n in page]
                body = {"files": files, "next": nxt, "queryUrl": "(omitted)"}
                self._send(200, json.dumps(body).encode(), head=head)

            def _download(self, q: dict[str, str], head: bool) -> None:
                body = server.files.get(q.get("filename", ""))
                if body is None:
                    return self._error(404 if q.get("filename") else 400, 96, "File not found", "filename", head)
                self.send_bytes(body, "audio/octet-stream", head)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self.api = f"{self.url}/api"
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def publish(self, location: str, category: str, files: dict[str, bytes]) -> None:
        self.files.update(files)
        self.locations.setdefault((location, category), []).extend(files)

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def register_onc_source(site) -> bool:
    """Register the ``onc`` source kind for this process when the installed pamingest predates it.

    Sources are entry points of the installed distribution; a checkout whose pyproject.toml gained
    ``onc`` is not installed again by running its tests. A dist-info naming it is written to
    ``site`` (a temporary folder), which the caller puts on ``sys.path`` (True: it must).
    """
    from pamingest.registry import registry

    if "onc" in registry("sources"):
        return False
    info = site / "pamingest_onc_source-0.1.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: pamingest-onc-source\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[pamingest.sources]\nonc = pamingest.sources.onc:OncArchive\n")
    return True
