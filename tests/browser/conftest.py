"""Browser tests: Debian's Chromium, driven by Playwright for Python, against real servers.

Chromium comes from apt (`apt-get install chromium`) when /usr/bin/chromium is missing; the
Playwright browser download is never used. Outside CI a machine that cannot install it skips
these tests (with the reason printed); in CI (`CI=true`) that is a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.conftest import run_in_thread
from tests.e2e.harness import ServerProcess

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# Screenshots go to a folder the tests own (ignored by git), so running the suite changes no
# tracked file; `scripts/refresh_screenshots.sh` points this at docs/img to refresh the README's.
SCREENSHOTS = Path(
    os.environ.get("LIVECART_SCREENSHOTS_DIR")
    or Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
)
T = TypeVar("T")


def _install_chromium() -> str | None:
    """Installs Debian's chromium when missing; returns why it is unavailable, or None."""
    if os.path.exists(CHROMIUM):
        return None
    if shutil.which("apt-get") is None:
        return "chromium is missing and apt-get is not available to install it"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        # The emoji font makes chat in the screenshots look as it does on people's machines.
        install = ["apt-get", "install", "-y", "chromium", "fonts-noto-color-emoji"]
        for cmd in (["apt-get", "update"], install):
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200)
            if done.returncode != 0:
                tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
                return f"`{' '.join(cmd)}` failed: {' / '.join(tail)}"
    except (OSError, subprocess.SubprocessError) as exc:
        return f"installing chromium failed: {exc}"
    return (
        None if os.path.exists(CHROMIUM) else "apt installed chromium but it is not at " + CHROMIUM
    )


@pytest.fixture(scope="session")
def chromium_path() -> str:
    reason = _install_chromium()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"browser tests need Chromium in CI: {reason}")
        print(f"\nskipping browser tests: {reason}")
        pytest.skip(reason)
    return CHROMIUM


@pytest.fixture(scope="module")
def browser(chromium_path: str) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(database_url, str(tmp_path_factory.mktemp("web-node"))).start()
    try:
        yield proc
    finally:
        proc.kill()


# The browser tests are synchronous (Playwright's sync API owns this thread): async harness
# helpers run on their own loop in a worker thread.
run = run_in_thread


class Pages:
    """Opens pages, each in its own browser context (own localStorage, like separate people),
    and records every console error and uncaught exception they produce."""

    def __init__(self, browser: Any) -> None:
        self.browser = browser
        self.contexts: list[Any] = []
        self.errors: list[str] = []
        self.allowed: list[re.Pattern[str]] = []

    def open(self, url: str, *, width: int = 1280, height: int = 860) -> Any:
        ctx = self.browser.new_context(viewport={"width": width, "height": height})
        self.contexts.append(ctx)
        page = ctx.new_page()
        page.set_default_timeout(15000)
        page.on("console", lambda m: self._console(page, m))
        page.on("pageerror", lambda e: self.errors.append(f"{page.url}: uncaught {e}"))
        page.goto(url)
        return page

    def _console(self, page: Any, message: Any) -> None:
        if message.type == "error":
            loc = message.location or {}
            where = loc.get("url", "") if isinstance(loc, dict) else ""
            self.errors.append(f"{page.url}: {message.text} {where}".strip())

    def allow(self, pattern: str) -> None:
        """Console errors matching `pattern` are expected (a server that is down, say)."""
        self.allowed.append(re.compile(pattern))

    def unexpected(self) -> list[str]:
        return [e for e in self.errors if not any(p.search(e) for p in self.allowed)]

    def close(self) -> None:
        for ctx in self.contexts:
            with contextlib.suppress(Exception):
                ctx.close()


@pytest.fixture
def pages(browser: Any) -> Iterator[Pages]:
    p = Pages(browser)
    try:
        yield p
        assert p.unexpected() == [], "console errors:\n" + "\n".join(p.unexpected())
    finally:
        p.close()


class Background:
    """An asyncio loop in a daemon thread, for clients that must keep running (bots) while
    the test drives the browser."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        async def shutdown() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=10)

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(15)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            if not self.thread.is_alive():
                self.loop.close()


@pytest.fixture
def background() -> Iterator[Background]:
    bg = Background()
    try:
        yield bg
    finally:
        bg.stop()
