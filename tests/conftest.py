"""Shared fixtures: a real `spoolvault run` process, a key file and spool, a real IPP
printer, a browser. What they start lives in tests/harness."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from harness import ippeve
from harness.server import ADMIN, Server, start_server
from harness.web_helpers import CHROMIUM, CHROMIUM_ARGS, DESKTOP
from spoolvault.spool.keys import KeyFileProvider
from spoolvault.spool.store import EncryptedSpool

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext

CS = 4096  # the smallest chunk size a reader accepts: many chunks for few bytes


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = start_server(tmp_path / "data", env={"SPOOLVAULT_ADMIN_PASSWORD": "test-admin-pw"})
    try:
        yield srv
    finally:
        srv.stop(signal.SIGKILL)


# -- a key file and an encrypted spool with small chunks (spool and key tests) ---------------


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys" / "keys.json"
    path.parent.mkdir()
    KeyFileProvider.create(path)
    return path


@pytest.fixture
def keys(key_file: Path) -> KeyFileProvider:
    return KeyFileProvider(key_file)


@pytest.fixture
def spool(tmp_path: Path, keys: KeyFileProvider) -> EncryptedSpool:
    directory = tmp_path / "encrypted"
    directory.mkdir()
    return EncryptedSpool(directory, keys, chunk_size=CS)


@pytest.fixture(scope="module")
def printer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ippeve.EvePrinter]:
    """A real IPP printer (ippeveprinter) shared by a module's tests."""
    if ippeve.IPPEVEPRINTER is None:
        pytest.skip("ippeveprinter is not installed (Debian package cups-ipp-utils)")
    p = ippeve.start_printer(tmp_path_factory.mktemp("ippeve"))
    try:
        yield p
    finally:
        p.stop()


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[Server]:
    """A fresh server whose administrator is ADMIN."""
    s = start_server(tmp_path / "data", env={"SPOOLVAULT_ADMIN_PASSWORD": ADMIN[1]})
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Chromium through Playwright, shared by a module's tests."""
    from playwright import sync_api as playwright_sync

    with playwright_sync.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    """A fresh browser context (no cookies) with a DESKTOP window."""
    ctx = browser.new_context(viewport=DESKTOP)
    ctx.set_default_timeout(30_000)
    try:
        yield ctx
    finally:
        ctx.close()
