"""A real headless browser for the tests: Debian's Chromium, driven by Playwright.

Playwright's sync API runs its event loop in the thread that starts it and
leaves that loop marked as running there: started in pytest's main thread,
it would make every later ``asyncio.run()`` of the session fail (Prefect's
clients, the flow tests). So one browser per session lives in a worker
thread of its own, and tests hand it functions (``Chromium.run``); pages
and other Playwright objects are only touched from that thread.
"""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

CHROMIUM = Path("/usr/bin/chromium")  # Debian's package (chromium); .ci/run installs it


class Chromium:
    """One headless Chromium, in its own thread."""

    def __init__(self, executable: Path = CHROMIUM) -> None:
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="chromium")
        self._playwright, self.browser = self._thread.submit(self._start, executable).result(120)

    @staticmethod
    def _start(executable: Path):
        from playwright.sync_api import sync_playwright

        playwright = sync_playwright().start()
        # Playwright's own browser builds are never downloaded: there is no internet here, and the
        # distribution's Chromium is what CI installs with apt-get.
        return playwright, playwright.chromium.launch(executable_path=str(executable), headless=True)

    def run(self, fn: Callable[..., Any], *args, timeout: float = 120, **kwargs) -> Any:
        """``fn(browser, *args, **kwargs)`` in the browser's thread; its result (or exception)."""
        return self._thread.submit(fn, self.browser, *args, **kwargs).result(timeout)

    def close(self) -> None:
        def stop() -> None:
            self.browser.close()
            self._playwright.stop()

        self._thread.submit(stop).result(60)
        self._thread.shutdown()


@dataclass
class Visit:
    """A page opened with listeners: what went wrong while it loaded and ran."""

    page: Any
    requests: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    bad_responses: list[str] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        return self.console_errors + self.page_errors + self.failed_requests + self.bad_responses


def visit(browser, url: str, *, width: int = 1280, height: int = 900, block_outside: bool = False) -> Visit:
    """Open ``url`` in a fresh context and record console errors, uncaught exceptions and failed requests.

    ``block_outside``: requests leaving 127.0.0.1 (a web app's analytics) are aborted, not attempted
    (there is no internet here), and not counted as problems.
    """
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    seen = Visit(page)
    if block_outside:
        def route(r):
            url_ = r.request.url
            if url_.startswith(("http://127.0.0.1", "ws://127.0.0.1", "data:", "blob:", "file:")):
                r.continue_()
            else:
                r.abort()

        page.route("**/*", route)
    page.on("request", lambda r: seen.requests.append(r.url))
    page.on("console", lambda m: m.type == "error" and seen.console_errors.append(f"{m.text} ({m.location})"))
    page.on("pageerror", lambda e: seen.page_errors.append(str(e)))
    page.on("requestfailed", lambda r: not (block_outside and not r.url.startswith("http://127.0.0.1"))
            and seen.failed_requests.append(f"{r.url}: {r.failure}"))
    page.on("response", lambda r: r.status >= 400 and seen.bad_responses.append(f"{r.status} {r.url}"))
    page.goto(url, wait_until="load")
    return seen


def pixels(png: bytes) -> np.ndarray:
    """A PNG screenshot as an ``(height, width, 3)`` uint8 array."""
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def coloured(rgb: np.ndarray, spread: int = 60) -> np.ndarray:
    """Pixels that are clearly coloured (not white, grey or black): the plots' marks, not their frames."""
    rgb = rgb.astype(np.int16)
    return (rgb.max(axis=2) - rgb.min(axis=2)) > spread
