"""The REST API over a real database, in process, with an injected clock: sessions expire
and lockouts end without the test sleeping."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from spoolvault.api.app import create_api
from spoolvault.identity import CardKey, Devices, IdentityService
from spoolvault.jobs.release import ReleaseService
from spoolvault.jobs.service import JobService
from spoolvault.printers.registry import add_printer
from spoolvault.runtime import Runtime
from test_identity import Clock


class Client:
    """Requests to the ASGI app in process (httpx's ASGI transport, no sockets)."""

    def __init__(self, api: FastAPI) -> None:
        self.api = api

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.api)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                return await c.request(method, url, **kwargs)

        return asyncio.run(go())

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)


@dataclass
class App:
    client: Client
    identity: IdentityService
    clock: Clock
    device_token: str


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    with Runtime.open(tmp_path / "data", None, create=True) as rt:
        jobs = JobService(rt.db, rt.store)
        clock = Clock()
        identity = IdentityService(rt.db, CardKey.generate(), clock=clock, session_ttl=300)
        identity.users.add("alice", {"password": "alice-pw-1", "card_number": "A1"})
        add_printer(rt.db, name="lobby", uri="ipp://127.0.0.1:9/ipp/print")
        token = Devices(rt.db).register("mfd-1", "lobby").token
        api = create_api(jobs, ReleaseService(jobs), identity)
        yield App(Client(api), identity, clock, token)


def test_release_and_device_sessions_expire(app: App) -> None:
    c, device = app.client, {"Authorization": f"Bearer {app.device_token}"}
    r = c.post("/release/session", json={"username": "alice", "password": "alice-pw-1"})
    assert r.status_code == 200 and r.json()["expires_in"] == 300
    station = {"Authorization": f"Bearer {r.json()['token']}"}
    r = c.post("/mfd/session", json={"card_number": "a1"}, headers=device)
    assert r.status_code == 200, r.text
    mfd = {**device, "X-Session-Token": r.json()["token"]}
    assert c.get("/release/jobs", headers=station).status_code == 200
    assert c.get("/mfd/jobs", headers=mfd).status_code == 200
    app.clock.now += 299
    assert c.get("/release/jobs", headers=station).status_code == 200
    app.clock.now += 1
    r = c.get("/release/jobs", headers=station)
    assert r.status_code == 401 and "expired" in r.json()["detail"]
    assert c.get("/mfd/jobs", headers=mfd).status_code == 401
    assert c.get("/mfd/device", headers=device).status_code == 200  # the device stays valid


def test_station_lockout_answers_429_with_retry_after_until_it_ends(app: App) -> None:
    c = app.client
    for n in range(20):  # many cards tried at one station
        r = c.post("/release/session", json={"card_number": f"G{n}", "station": "kiosk"})
        assert r.status_code == 401
    r = c.post("/release/session", json={"card_number": "A1", "station": "kiosk"})
    assert r.status_code == 429 and r.headers["Retry-After"] == "30"
    app.clock.now += 20
    r = c.post("/release/session", json={"card_number": "A1", "station": "kiosk"})
    assert r.status_code == 429 and r.headers["Retry-After"] == "10"
    # The same client under another station name: its address is locked too.
    assert (
        c.post("/release/session", json={"card_number": "A1", "station": "desk"}).status_code == 429
    )
    app.clock.now += 10
    assert c.post("/release/session", json={"card_number": "A1", "station": "kiosk"}).is_success


def test_a_client_cannot_dodge_the_station_lockout_by_renaming_its_station(app: App) -> None:
    c = app.client
    for n in range(20):
        r = c.post("/release/session", json={"card_number": f"G{n}", "station": f"kiosk-{n}"})
        assert r.status_code == 401
    r = c.post("/release/session", json={"card_number": "A1", "station": "fresh-name"})
    assert r.status_code == 429 and r.headers["Retry-After"] == "30"
