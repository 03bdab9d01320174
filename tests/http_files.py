"""What the local HTTP servers of the tests share (zenodo_server.py, onc_server.py): a quiet handler
answering GET and HEAD through one ``_answer(head)``, and the byte range a ``Range`` header asks for."""

from __future__ import annotations

import re
from http.server import BaseHTTPRequestHandler


class QuietHandler(BaseHTTPRequestHandler):
    """GET and HEAD both go to ``_answer(head)``; nothing is logged."""

    def log_message(self, *args) -> None:
        pass

    def do_HEAD(self) -> None:
        self._answer(head=True)

    def do_GET(self) -> None:
        self._answer(head=False)

    def _answer(self, head: bool) -> None:
        raise NotImplementedError

    def send_bytes(self, body: bytes, kind: str = "application/octet-stream", head: bool = False) -> None:
        """``body``, or the part a ``Range`` header asks for (206, as object stores answer)."""
        span = requested_range(None if head else self.headers.get("Range"), len(body))
        part = body if span is None else body[span[0]:span[1] + 1]
        self.send_response(200 if span is None else 206)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(part)))
        self.send_header("Accept-Ranges", "bytes")
        if span is not None:
            self.send_header("Content-Range", f"bytes {span[0]}-{span[1]}/{len(body)}")
        self.end_headers()
        if not head:
            self.wfile.write(part)


def requested_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``(first, last)`` bytes of ``Range: bytes=a-b`` (a suffix ``-n`` too), or None for the whole body."""
    m = re.fullmatch(r"bytes=(\d*)-(\d*)", (header or "").strip())
    if m is None:
        return None
    first, last = m.group(1), m.group(2)
    if first == "":
        return size - int(last), size - 1
    return int(first), min(int(last) if last else size - 1, size - 1)
