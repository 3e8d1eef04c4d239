"""What the tests that drive a running server share besides conftest's fixtures: a server
with a printer, its clients (the REST API, anonymous or as the administrator, a release
session, IPP Print-Job), a printer's output, the browser, the login form, and the
screenshots for the docs."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from harness import ippeve
from harness.server import ADMIN, Server, job_group, new_request, start_server
from spoolvault.ipp.codec import IppMessage, decode, encode
from spoolvault.ipp.constants import Operation, Status, ValueTag

if TYPE_CHECKING:
    from playwright.sync_api import Page, ViewportSize

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
PASSWORD = "password-1"  # of every user that add_user creates
SCREENSHOTS = os.environ.get("SPOOLVAULT_SCREENSHOTS")  # a directory for the docs' pictures
NEEDS_CHROMIUM_AND_PRINTER = [  # the browser tests' pytestmark
    pytest.mark.skipif(ippeve.IPPEVEPRINTER is None, reason="needs cups-ipp-utils"),
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium"),
]


@contextlib.contextmanager
def lobby_server(data_dir: Path, printer_uri: str) -> Iterator[Server]:
    """A server whose administrator is ADMIN, with the printer "lobby" (group floor2)."""
    srv = start_server(data_dir, env={"SPOOLVAULT_ADMIN_PASSWORD": ADMIN[1]})
    try:
        add_printer(srv, "lobby", printer_uri, group="floor2")
        yield srv
    finally:
        srv.stop()


# -- the REST API and IPP -------------------------------------------------------------------


def client(srv: Server, auth: tuple[str, str] | None = None) -> httpx.Client:
    """The REST API, anonymous unless ``auth`` (a --tls server's certificate is not checked)."""
    return httpx.Client(
        base_url=srv.url + "/api/v1",
        timeout=60,
        auth=auth,
        verify=False,  # noqa: S501 (the --tls test server's own certificate)
    )


def api(srv: Server) -> httpx.Client:
    """The REST API as ADMIN."""
    return client(srv, ADMIN)


def login(srv: Server, name: str, password: str = PASSWORD) -> dict[str, str]:
    """A release session's headers (Authorization: Bearer)."""
    with client(srv) as c:
        r = c.post("/release/session", json={"username": name, "password": password})
        assert r.status_code == 200, r.text
        return {"Authorization": f"Bearer {r.json()['token']}"}


def add_user(srv: Server, name: str, **extra: object) -> None:
    """A user whose password is PASSWORD."""
    with api(srv) as c:
        r = c.post("/users", json={"username": name, "password": PASSWORD, **extra})
        assert r.status_code == 201, r.text


def add_printer(srv: Server, name: str, uri: str, **extra: object) -> None:
    with api(srv) as c:
        r = c.post("/printers", json={"name": name, "uri": uri, **extra})
        assert r.status_code == 201, r.text


def audit(srv: Server, **params: str) -> list[dict[str, object]]:
    """The audit events that match ``params``, newest first."""
    with api(srv) as c:
        events: list[dict[str, object]] = c.get("/audit", params=params).json()
        return events


def submit(
    srv: Server,
    user: str,
    body: bytes,
    title: str | None = None,
    fmt: str = "text/plain",
    queue: str = "secure",
    pin: bytes | None = None,
) -> int:
    """Print-Job ``body`` to ``queue`` as ``user``; the new job's id."""
    req: IppMessage = new_request(Operation.PRINT_JOB, srv, user=user)
    req.operation.set("printer-uri", ValueTag.URI, f"ipp://localhost/printers/{queue}")
    if pin is not None:  # PWG 5100.11 job-password
        req.operation.add("job-password", ValueTag.OCTET_STRING, pin)
        req.operation.add("job-password-encryption", ValueTag.KEYWORD, "none")
    if title is not None:
        req.operation.add("job-name", ValueTag.NAME, title)
    req.operation.add("document-format", ValueTag.MIME_MEDIA_TYPE, fmt)
    r = httpx.post(
        srv.url + f"/printers/{queue}",
        content=encode(req) + body,
        headers={"Content-Type": "application/ipp"},
        verify=False,  # noqa: S501 (the --tls test server's own certificate)
        timeout=30,
    )
    resp = decode(r.content)[0]
    assert resp.code == Status.SUCCESSFUL_OK, resp
    job_id = job_group(resp).get("job-id")
    assert job_id is not None and isinstance(job_id.value, int)
    return job_id.value


def wait_for_files(printer: ippeve.EvePrinter, count: int, timeout: float = 30) -> list[Path]:
    """The files ``printer`` has printed, once there are ``count``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        files = printer.files()
        if len(files) >= count:
            time.sleep(0.3)  # let the last one be written out
            return printer.files()
        time.sleep(0.1)
    raise AssertionError(f"printer has {printer.files()}, expected {count} files")


# -- pages ----------------------------------------------------------------------------------


def fill_login(page: Page, form: str, user: str, password: str) -> None:
    """Log in with the page's user name and password form ``form`` (a CSS selector)."""
    page.fill("#username", user)
    page.fill("#password", password)
    page.click(f"{form} button")


def screenshots(page: Page, name: str, viewports: dict[str, ViewportSize]) -> None:
    """Save the page as NAME-LABEL.png at each viewport (by label) when SPOOLVAULT_SCREENSHOTS
    is set."""
    if not SCREENSHOTS:
        return
    out = Path(SCREENSHOTS)
    out.mkdir(parents=True, exist_ok=True)
    size = page.viewport_size
    for label, viewport in viewports.items():
        page.set_viewport_size(viewport)
        page.screenshot(path=str(out / f"{name}-{label}.png"), full_page=True)
    if size is not None:
        page.set_viewport_size(size)
