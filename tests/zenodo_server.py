"""A local HTTP server that answers as Zenodo does: the records API's JSON, and file downloads with
HEAD and byte-range GETs (what fsspec's HTTP filesystem, and so its zip filesystem, asks for).

Only the documented layout (``GET /api/records/<id>``: ``files`` with ``key``, ``size``,
``checksum``, ``links.self``); no machine here reaches zenodo.org.
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
import zipfile
from http.server import ThreadingHTTPServer
from pathlib import Path

from http_files import QuietHandler


class ZenodoServer:
    """``publish(record, {key: bytes})`` serves a record; ``requests`` logs (method, path, Range)."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str, str | None]] = []
        server = self

        class Handler(QuietHandler):
            def _answer(self, head: bool) -> None:
                path = self.path.split("?", 1)[0]
                server.requests.append((self.command, path, self.headers.get("Range")))
                body = server.files.get(path)
                if body is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_bytes(body, head=head)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self.api = f"{self.url}/api"
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def publish(self, record: str, files: dict[str, bytes]) -> None:
        entries = []
        for key, data in files.items():
            path = f"/api/records/{record}/files/{key}/content"
            self.files[path] = data
            entries.append({"id": hashlib.md5(key.encode()).hexdigest(), "key": key, "size": len(data),
                            "checksum": "md5:" + hashlib.md5(data).hexdigest(), "links": {"self": self.url + path}})
        self.files[f"/api/records/{record}"] = json.dumps({"id": int(record), "files": entries}).encode()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def zip_of(members: dict[str, Path | bytes], folder: str = "soundscape_data") -> bytes:
    """A deflated zip of ``members`` (name -> file or bytes) under ``folder/``, as the collections ship."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(f"{folder}/{name}", data if isinstance(data, bytes) else Path(data).read_bytes())
    return buf.getvalue()
