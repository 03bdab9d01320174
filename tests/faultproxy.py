"""An S3 reverse proxy on 127.0.0.1 that forwards to a real server (moto) and injects faults.

Test infrastructure, not a mock: every request reaches the real server
unchanged (the Host header too, so signatures made for the proxy's address
stay valid), except those a seeded schedule picks to fail:

- ``500`` / ``503``: an S3 XML error (InternalError / SlowDown), the
  request not forwarded;
- ``reset``: the connection closed without a response, the request not
  forwarded;
- ``lost-reply`` (PUT only): forwarded, so the write lands, then the
  connection closed without a response: the client cannot tell whether it
  landed, which is what a conditional write's retry must cope with;
- ``slow``: forwarded, the response held back ``delay`` seconds;
- ``truncate`` (GET only): the real status and a correct Content-Length,
  then half the body and the connection closed.

Whether a request fails is a function of (seed, method, URL, Range, how many
times that same request was seen): the schedule does not depend on how a
client's threads interleave, and a retry of a failed request gets a fresh
draw instead of failing forever.
"""

from __future__ import annotations

import hashlib
import http.client
import random
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

FAULTS = ("500", "503", "reset", "lost-reply", "slow", "truncate")
# Headers that belong to one connection, not to the request or response (RFC 9110 7.6.1).
_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade", "expect"}
_ERRORS = {
    "500": (500, "InternalError", "We encountered an internal error. Please try again."),
    "503": (503, "SlowDown", "Please reduce your request rate."),
}


@dataclass
class Injected:
    """One fault the proxy injected."""

    fault: str
    method: str
    path: str


@dataclass
class FaultProxy:
    """``with FaultProxy(upstream, rate=0.1, seed=1) as proxy:`` then point clients at ``proxy.endpoint``.

    ``methods`` are those faults are injected on; ``faults`` the kinds drawn
    from (each equally likely); ``enabled`` can be switched off to let a
    clean re-run through.
    """

    upstream: str
    rate: float = 0.1
    seed: int = 0
    methods: tuple[str, ...] = ("GET", "PUT")
    faults: tuple[str, ...] = FAULTS
    delay: float = 0.5
    # Only requests whose path contains this are drawn for; at most ``limit`` faults in all.
    only: str = ""
    limit: int | None = None
    enabled: bool = True
    injected: list[Injected] = field(default_factory=list)
    requests: Counter = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: Counter = Counter()
        up = urlsplit(self.upstream)
        self._up_host, self._up_port = up.hostname, up.port or 80
        self._server: ThreadingHTTPServer | None = None

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def counts(self) -> Counter:
        with self._lock:
            return Counter(i.fault for i in self.injected)

    def __enter__(self) -> "FaultProxy":
        proxy = self

        class Handler(_Handler):
            pass

        Handler.proxy = proxy
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="faultproxy", daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def draw(self, method: str, path: str, range_: str) -> str | None:
        """The fault for this request, or None to forward it as it is."""
        key = (method, path, range_)
        with self._lock:
            self.requests[method] += 1
            nth = self._seen[key]
            self._seen[key] += 1
        if not self.enabled or method not in self.methods or self.only not in path:
            return None
        digest = hashlib.blake2b(repr((self.seed, key, nth)).encode(), digest_size=8).digest()
        rng = random.Random(int.from_bytes(digest, "big"))
        if rng.random() >= self.rate:
            return None
        kinds = [f for f in self.faults if not (f == "lost-reply" and method != "PUT")
                 and not (f == "truncate" and method != "GET")]
        if not kinds:  # e.g. only truncation asked for, and this is a PUT
            return None
        fault = rng.choice(kinds)
        with self._lock:
            if self.limit is not None and len(self.injected) >= self.limit:
                return None
            self.injected.append(Injected(fault, method, path))
        return fault


class _Handler(BaseHTTPRequestHandler):
    proxy: FaultProxy
    protocol_version = "HTTP/1.1"  # keep-alive, as S3 clients expect of a real endpoint

    def log_message(self, *args) -> None:  # the test's output stays readable
        pass

    def do_GET(self):
        self._relay()

    do_PUT = do_POST = do_HEAD = do_DELETE = do_GET

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _reset(self) -> None:
        # SO_LINGER 0: the peer sees a reset (ECONNRESET), not an orderly end of stream.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        self.close_connection = True
        self.connection.close()

    def _relay(self) -> None:
        body = self._body()
        fault = self.proxy.draw(self.command, self.path, self.headers.get("Range", ""))
        if fault == "reset":
            return self._reset()
        if fault in _ERRORS:
            status, code, message = _ERRORS[fault]
            xml = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}'
                   f"</Message><RequestId>faultproxy</RequestId></Error>").encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(xml)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(xml)
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
        if body or self.command in ("PUT", "POST"):
            headers["Content-Length"] = str(len(body))
        conn = http.client.HTTPConnection(self.proxy._up_host, self.proxy._up_port, timeout=60)
        try:
            conn.request(self.command, self.path, body=body, headers=headers)
            up = conn.getresponse()
            data = up.read()
            status, reason, up_headers = up.status, up.reason, up.getheaders()
        finally:
            conn.close()
        if fault == "lost-reply":
            return self._reset()
        if fault == "slow":
            time.sleep(self.proxy.delay)
        self.send_response(status, reason)
        length = None
        for k, v in up_headers:
            if k.lower() in _HOP or k.lower() in ("server", "date"):
                continue
            if k.lower() == "content-length":
                length = v
                continue
            self.send_header(k, v)
        # HEAD keeps the object's length; a body is sent with its own.
        self.send_header("Content-Length", length if self.command == "HEAD" and length else str(len(data)))
        self.end_headers()
        if self.command == "HEAD":
            return
        if fault == "truncate" and len(data) > 1:
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            return self._reset()
        self.wfile.write(data)
