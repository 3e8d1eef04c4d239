"""Shared fixtures: a real `spoolvault run` process on an ephemeral port."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import ippeve

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, ViewportSize
from spoolvault.spool.keys import KeyFileProvider
from spoolvault.spool.store import EncryptedSpool

SPOOLVAULT = [sys.executable, "-m", "spoolvault"]
ADMIN = ("admin", "admin-pw-123")  # the administrator of servers started by `srv`
# Browser tests drive Debian's Chromium (Playwright's own download does not work here).
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-quic",
    "--disable-sync",
]
DESKTOP: ViewportSize = {"width": 1280, "height": 800}  # the browser tests' window
CS = 4096  # the smallest chunk size a reader accepts: many chunks for few bytes
_LISTEN_RE = re.compile(r"listening on (https?://\S+)")


def spoolvault(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run one `spoolvault …` command to completion and capture its output."""
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        [*SPOOLVAULT, *args], capture_output=True, text=True, timeout=120, **kwargs
    )


@dataclass
class Server:
    """A running `spoolvault run` process."""

    proc: subprocess.Popen[str]
    url: str
    data_dir: Path
    first_lines: list[str]
    drain: threading.Thread

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        """Signal the server, wait for it, and close its pipe; return its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.drain.join(timeout=5)
            assert self.proc.stdout is not None
            self.proc.stdout.close()


def _drain(proc: subprocess.Popen[str], lines: list[str]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)


def start_server(data_dir: Path, *extra: str, env: dict[str, str] | None = None) -> Server:
    """Start `spoolvault run` and wait for its "listening on" line."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    proc = subprocess.Popen(
        [
            *SPOOLVAULT,
            "run",
            "--data-dir",
            str(data_dir),
            "--http",
            "127.0.0.1:0",
            "--raw",
            "off",
            "--no-dnssd",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=full_env,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if m := _LISTEN_RE.search(line):
            # Keep draining output so a chatty server never blocks on a full pipe.
            drain = threading.Thread(target=_drain, args=(proc, lines), daemon=True)
            drain.start()
            return Server(proc, m.group(1), data_dir, lines, drain)
    proc.kill()
    proc.wait()
    proc.stdout.close()
    raise AssertionError("spoolvault run did not start:\n" + "".join(lines))


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


@contextlib.contextmanager
def mounted_tmpfs(path: Path, options: str) -> Iterator[Path]:
    """Mount a real tmpfs on ``path`` (a full or read-only disk, not a simulated one).

    Skips the test where mounting is not allowed (not root, a restricted container).
    """
    path.mkdir(exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], check=True)


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
