"""One lockout on every login path, against a real `spoolvault run` (docs/identity.md).

The guesser and the owner connect from different loopback source addresses (127.0.x.y:
Linux routes all of 127/8 to lo), so the server sees two client addresses; release devices
(MFD, Fast Release) are told apart by their device, the client there.
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import pytest

from harness.server import ADMIN, Server, new_request
from harness.web_helpers import PASSWORD, add_printer, add_user
from spoolvault.identity.lockout import PAIR
from spoolvault.ipp.codec import encode
from spoolvault.ipp.constants import Operation

CARD, CARD_PIN, PIN = "B0B1", "C4R0L", "4821"


def at(srv: Server, address: str, base: str = "") -> httpx.Client:
    """A client whose connections come from ``address``."""
    transport = httpx.HTTPTransport(local_address=address)
    return httpx.Client(base_url=srv.url + base, transport=transport, timeout=60)


@dataclass
class Site:
    srv: Server
    devices: dict[str, str]  # device name -> its token


Attempt = Callable[[Site, str, bool], httpx.Response]


def release_session(body_ok: dict[str, str], body_bad: dict[str, str]) -> Attempt:
    def attempt(site: Site, address: str, good: bool) -> httpx.Response:
        with at(site.srv, address, "/api/v1") as c:
            return c.post("/release/session", json=body_ok if good else body_bad)

    return attempt


def mfd(site: Site, address: str, good: bool) -> httpx.Response:
    device = "mfd-a" if address.endswith(".1") else "mfd-b"
    body = {"username": "bob", "password": PASSWORD if good else "wrong-1"}
    with at(site.srv, address, "/api/v1") as c:
        auth = {"Authorization": f"Bearer {site.devices[device]}"}
        return c.post("/mfd/session", json=body, headers=auth)


def fast_release(site: Site, address: str, good: bool) -> httpx.Response:
    device = "fast-a" if address.endswith(".1") else "fast-b"
    with at(site.srv, address, "/api/v1") as c:
        auth = {"Authorization": f"Bearer {site.devices[device]}"}
        body = {"card_number": CARD if good else "GUESSED"}
        return c.post("/fast-release/lobby", json=body, headers=auth)


def admin_pages(site: Site, address: str, good: bool) -> httpx.Response:
    with at(site.srv, address) as c:
        token = re.search(r'name="csrf" value="([^"]+)"', c.get("/admin/login").text)
        assert token is not None
        form = {"csrf": token.group(1), "username": "adm", "password": PASSWORD}
        if not good:
            form["password"] = "wrong-1"
        return c.post("/admin/login", data=form)


def rest_basic(site: Site, address: str, good: bool) -> httpx.Response:
    with at(site.srv, address, "/api/v1") as c:
        return c.get("/users", auth=("adm", PASSWORD if good else "wrong-1"))


def ipp_basic(site: Site, address: str, good: bool) -> httpx.Response:
    secret = f"adm:{PASSWORD if good else 'wrong-1'}".encode()
    headers = {
        "Content-Type": "application/ipp",
        "Authorization": "Basic " + base64.b64encode(secret).decode(),
    }
    body = encode(new_request(Operation.GET_PRINTER_ATTRIBUTES, site.srv, user="adm"))
    with at(site.srv, address) as c:
        return c.post("/printers/secure", content=body, headers=headers)


PATHS: dict[str, Attempt] = {
    "station password": release_session(
        {"username": "bob", "password": PASSWORD}, {"username": "bob", "password": "wrong-1"}
    ),
    "card": release_session({"card_number": CARD}, {"card_number": "GUESSED"}),
    "card and PIN": release_session(
        {"card_number": CARD_PIN, "pin": PIN}, {"card_number": CARD_PIN, "pin": "0000"}
    ),
    "ID number and PIN": release_session(
        {"id_number": "E-7", "pin": PIN}, {"id_number": "E-7", "pin": "0000"}
    ),
    "MFD": mfd,
    "Fast Release device": fast_release,
    "admin pages": admin_pages,
    "REST Basic": rest_basic,
    "IPP Basic": ipp_basic,
}


@pytest.fixture
def site(srv: Server) -> Site:
    add_user(srv, "bob", card_number=CARD)
    add_user(srv, "carol", card_number=CARD_PIN, pin=PIN, id_number="E-7")
    add_user(srv, "adm", is_admin=True)
    add_printer(srv, "lobby", "ipp://127.0.0.1:9/ipp/print")
    devices = {}
    with httpx.Client(base_url=srv.url + "/api/v1", auth=ADMIN, timeout=60) as c:
        for name in ("mfd-a", "mfd-b", "fast-a", "fast-b"):
            r = c.post("/devices", json={"name": name, "printer": "lobby"})
            assert r.status_code == 201, r.text
            devices[name] = r.json()["token"]
    return Site(srv, devices)


def test_the_guesser_is_locked_and_the_owner_elsewhere_is_not_on_every_path(site: Site) -> None:
    for n, (name, attempt) in enumerate(PATHS.items(), start=1):
        # Each path's guesser and owner at their own addresses: the per-address limit
        # across accounts (20) is not what this test measures.
        guesser, owner = f"127.0.{n}.1", f"127.0.{n}.2"
        assert attempt(site, owner, True).status_code < 400, name  # it works at all
        for i in range(PAIR.threshold):
            r = attempt(site, guesser, False)
            assert r.status_code == 401, (name, i, r.status_code, r.text)
        r = attempt(site, guesser, False)
        assert r.status_code == 429, (name, r.status_code, r.text)
        assert r.headers["Retry-After"] == str(int(PAIR.base)), name
        r = attempt(site, owner, True)
        assert r.status_code < 400, (name, r.status_code, r.text)


def test_fast_release_can_require_the_pin_of_users_who_have_one(site: Site) -> None:
    auth = {"Authorization": f"Bearer {site.devices['fast-a']}"}
    with at(site.srv, "127.0.0.1", "/api/v1") as c:
        tap = c.post("/fast-release/lobby", json={"card_number": CARD_PIN}, headers=auth)
        assert tap.status_code == 200 and tap.json()["username"] == "carol"  # default: a tap
        r = c.patch(
            "/servers/primary/settings", json={"fast_release_require_pin": True}, auth=ADMIN
        )
        assert r.status_code == 200, r.text
        deadline = time.monotonic() + 10  # settings are re-read within SETTINGS_TTL
        while time.monotonic() < deadline:
            tap = c.post("/fast-release/lobby", json={"card_number": CARD_PIN}, headers=auth)
            if tap.status_code == 401:
                break
            time.sleep(0.5)
        assert tap.status_code == 401, tap.text
        wrong = {"card_number": CARD_PIN, "pin": "0000"}
        assert c.post("/fast-release/lobby", json=wrong, headers=auth).status_code == 401
        right = {"card_number": CARD_PIN, "pin": PIN}
        r = c.post("/fast-release/lobby", json=right, headers=auth)
        assert r.status_code == 200 and r.json()["username"] == "carol"
        r = c.post("/fast-release/lobby", json={"card_number": CARD}, headers=auth)
        assert r.status_code == 200 and r.json()["username"] == "bob"  # no PIN: a tap
