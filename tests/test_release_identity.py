"""Release with identities, end to end: a real server, real IPP submissions, a real
ippeveprinter and a private cupsd. Who may see, release and cancel what (delegation), card
and PIN logins, lockout, MFD devices and Fast Release."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from harness import cupsd, ippeve
from harness.server import ADMIN, Server, jobs_in
from harness.web_helpers import add_printer, client, submit, wait_for_files
from spoolvault.db import JobState

pytestmark = pytest.mark.skipif(ippeve.IPPEVEPRINTER is None, reason="needs cups-ipp-utils")

CAROL_CARD, CAROL_PIN = "04:C4:R0:11", "7319"
DAVE_CARD = "D4VE0001"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def session(c: httpx.Client, **credentials: str) -> dict[str, str]:
    r = c.post("/release/session", json=credentials)
    assert r.status_code == 200, r.text
    return bearer(r.json()["token"])


def people(c: httpx.Client) -> None:
    for user in (
        {"username": "alice", "password": "alice-pw-1", "full_name": "Alice"},
        {"username": "bob", "password": "bob-pw-123"},
        {"username": "carol", "card_number": CAROL_CARD, "pin": CAROL_PIN, "groups": ["pa"]},
        {"username": "dave", "card_number": DAVE_CARD, "id_number": "E-4", "pin": "2468"},
    ):
        r = c.post("/users", json=user, auth=ADMIN)
        assert r.status_code == 201, r.text
        body = r.text
        for secret in ("alice-pw-1", CAROL_CARD, CAROL_PIN, DAVE_CARD, "2468"):
            assert secret not in body


def audit(c: httpx.Client, action: str) -> list[tuple[str, int | None, str]]:
    events = c.get("/audit", params={"action": action}, auth=ADMIN).json()
    return [(e["actor"], e["job_id"], e["outcome"]) for e in reversed(events)]


def test_who_may_see_release_and_cancel_which_job(srv: Server, printer: ippeve.EvePrinter) -> None:
    add_printer(srv, "lobby", printer.uri)
    body = os.urandom(150_000)
    with client(srv) as c:
        people(c)
        a1 = submit(srv, "alice", body)
        a2 = submit(srv, "alice", b"alice's second\n")
        b1 = submit(srv, "bob", b"bob's job\n")
        alice = session(c, username="alice", password="alice-pw-1")
        bob = session(c, username="bob", password="bob-pw-123")
        carol = session(c, card_number=CAROL_CARD.lower(), pin=CAROL_PIN)
        dave = session(c, id_number="E-4", pin="2468")

        def listed(who: dict[str, str]) -> list[int]:
            r = c.get("/release/jobs", headers=who)
            assert r.status_code == 200, r.text
            return [j["id"] for j in r.json()]

        assert listed(alice) == [a1, a2] and listed(bob) == [b1] and listed(carol) == []
        # Someone else's job, or none at all: the same 404, never a hint it exists.
        for job in (a1, 999_999):
            r = c.post(f"/release/jobs/{job}", json={"printer": "lobby"}, headers=bob)
            assert r.status_code == 404 and r.json()["detail"] == f"you have no job {job}"
            assert c.delete(f"/release/jobs/{job}", headers=carol).status_code == 404

        # alice delegates to the group "pa" (admin call) and to bob (her own session).
        r = c.put("/users/alice/delegates", json={"groups": ["pa"]}, auth=ADMIN)
        assert r.json() == {"users": [], "groups": ["pa"]}
        r = c.put("/release/delegates", json={"users": ["bob"], "groups": ["pa"]}, headers=alice)
        assert r.status_code == 200 and r.json() == {"users": ["bob"], "groups": ["pa"]}
        assert listed(carol) == [a1, a2] and listed(bob) == [a1, a2, b1]
        assert listed(dave) == []  # not in "pa"
        assert listed(alice) == [a1, a2]  # delegation goes one way
        r = c.post(f"/release/jobs/{b1}", json={"printer": "lobby"}, headers=alice)
        assert r.status_code == 404

        before = len(printer.files())
        r = c.post(f"/release/jobs/{a1}", json={"printer": "lobby"}, headers=carol)
        assert r.status_code == 200, r.text
        assert r.json()["job"]["owner"] == "alice" and r.json()["job"]["state"] == "printed"
        assert body in {f.read_bytes() for f in wait_for_files(printer, before + 1)}
        assert c.delete(f"/release/jobs/{a2}", headers=bob).status_code == 200
        r = c.post(f"/release/jobs/{a2}", json={"printer": "lobby"}, headers=dave)
        assert r.status_code == 404

        # The admin view says who did what, on whose behalf.
        r = c.get("/users/alice", auth=ADMIN)
        assert r.json()["delegates"] == ["bob"] and r.json()["delegate_groups"] == ["pa"]
        refused = audit(c, "job.release_failed")
        assert ("bob", a1, "refused") in refused and ("dave", a2, "refused") in refused
        assert ("carol", a1, "ok") in audit(c, "job.release")
        assert [a for a, _, o in audit(c, "auth.login") if o == "ok"] == [
            "alice",
            "bob",
            "carol",
            "dave",
        ]
    states = {j.id: j.state for j in jobs_in(srv.data_dir)}
    assert states == {a1: JobState.PRINTED, a2: JobState.CANCELLED, b1: JobState.HELD}


def test_card_logins_lockout_and_bad_requests(srv: Server) -> None:
    with client(srv) as c:
        people(c)
        r = c.post("/release/session", json={"card_number": DAVE_CARD})
        assert r.status_code == 401  # dave has a PIN: the card alone is not enough
        wrong = {"card_number": CAROL_CARD, "pin": "0000", "station": "kiosk-1"}
        unknown = {"card_number": "NOSUCHCARD", "pin": "0000", "station": "kiosk-2"}
        answers = {c.post("/release/session", json=b).json()["detail"] for b in (wrong, unknown)}
        assert len(answers) == 1  # the same words for a wrong PIN and an unknown card
        for _ in range(4):
            assert c.post("/release/session", json=wrong).status_code == 401
        r = c.post("/release/session", json=wrong)
        assert r.status_code == 429, r.text
        assert int(r.headers["Retry-After"]) == 30 and "try again" in r.json()["detail"]
        good = {"card_number": CAROL_CARD, "pin": CAROL_PIN, "station": "kiosk-3"}
        assert c.post("/release/session", json=good).status_code == 429  # the account
        for bad in ({"pin": "1234"}, {"username": "alice"}, {}, {"id_number": "E-4"}):
            r = c.post("/release/session", json=bad)
            assert r.status_code == 422 and "give one of" in r.json()["detail"], r.text
        r = c.patch("/users/carol", json={"pin": None}, auth=ADMIN)
        assert r.status_code == 200 and r.json()["has_pin"] is False
        r = c.patch("/users/nobody", json={"pin": "1234"}, auth=ADMIN)
        assert r.status_code == 404
        r = c.post("/users", json={"username": "x", "pin": "12"}, auth=ADMIN)
        assert r.status_code == 422 and "4 to 16 digits" in r.json()["detail"]
        r = c.post("/users", json={"username": "y", "card_number": DAVE_CARD}, auth=ADMIN)
        assert r.status_code == 409 and "card" in r.json()["detail"]
        assert c.get("/users", auth=("bob", "bob-pw-123")).status_code == 401
        listing = c.get("/users", auth=ADMIN)
        assert {u["username"] for u in listing.json()} >= {"alice", "bob", "carol", "dave"}
        assert DAVE_CARD not in listing.text and "hash" not in listing.text
        logins = audit(c, "auth.login")
        assert logins.count(("carol", None, "refused")) == 7  # 5 wrong, then 2 locked out
        assert ("unknown", None, "refused") in logins
        # (Not the hashes: random hex may hold any four digits.)
        text = repr([(e["actor"], e["detail"]) for e in c.get("/audit", auth=ADMIN).json()])
        for secret in (CAROL_PIN, CAROL_CARD, DAVE_CARD, "NOSUCHCARD", "0000"):
            assert secret not in text


def register(c: httpx.Client, name: str, printer: str) -> str:
    r = c.post("/devices", json={"name": name, "printer": printer}, auth=ADMIN)
    assert r.status_code == 201, r.text
    token = r.json()["token"]
    assert isinstance(token, str) and len(token) > 40
    return token


def test_mfd_device_api(srv: Server, printer: ippeve.EvePrinter) -> None:
    add_printer(srv, "lobby", printer.uri)
    add_printer(srv, "annex", f"ipp://127.0.0.1:{cupsd.free_port()}/ipp/print")
    body = b"%PDF-1.4 mfd release\n" + os.urandom(40_000)
    with client(srv) as c:
        people(c)
        lobby = bearer(register(c, "mfd-lobby", "lobby"))
        annex = bearer(register(c, "mfd-annex", "annex"))
        again = c.post("/devices", json={"name": "mfd-lobby", "printer": "lobby"}, auth=ADMIN)
        assert again.status_code == 409 and "exists" in again.json()["detail"]
        r = c.post("/devices", json={"name": "mfd-x", "printer": "nowhere"}, auth=ADMIN)
        assert r.status_code == 422 and "no printer" in r.json()["detail"]
        assert c.get("/devices", auth=ADMIN).json() == [
            {"name": "mfd-annex", "printer": "annex"},
            {"name": "mfd-lobby", "printer": "lobby"},
        ]
        a1 = submit(srv, "alice", body)
        own_queue = submit(srv, "alice", b"for annex only\n", queue="annex")
        b1 = submit(srv, "bob", b"bob's\n")

        assert c.get("/mfd/device").status_code == 401
        assert c.get("/mfd/device", headers=bearer("svd_forged")).status_code == 401
        assert c.get("/mfd/device", headers=lobby).json() == {
            "name": "mfd-lobby",
            "printer": "lobby",
            "block_release_on_error": False,
        }
        r = c.post(
            "/mfd/session", json={"username": "alice", "password": "nope-nope"}, headers=lobby
        )
        assert r.status_code == 401 and "detail" in r.json()
        r = c.post(
            "/mfd/session", json={"username": "alice", "password": "alice-pw-1"}, headers=lobby
        )
        assert r.status_code == 200 and r.json()["full_name"] == "Alice"
        alice = {**lobby, "X-Session-Token": r.json()["token"]}
        jobs = c.get("/mfd/jobs", headers=alice).json()
        assert [(j["id"], j["releasable_here"]) for j in jobs] == [(a1, True), (own_queue, False)]
        # The session works on its own device only, and is no release-station session.
        stolen = {**annex, "X-Session-Token": alice["X-Session-Token"]}
        assert c.get("/mfd/jobs", headers=stolen).status_code == 401
        assert c.get("/release/jobs", headers=bearer(alice["X-Session-Token"])).status_code == 401
        assert c.get("/mfd/jobs", headers=lobby).status_code == 401
        assert c.post(f"/mfd/jobs/{b1}/release", headers=alice).status_code == 404
        assert c.delete(f"/mfd/jobs/{b1}", headers=alice).status_code == 404
        r = c.post(f"/mfd/jobs/{own_queue}/release", headers=alice)
        assert r.status_code == 409 and "annex" in r.json()["detail"]

        before = len(printer.files())
        r = c.post(f"/mfd/jobs/{a1}/release", headers=alice)
        assert r.status_code == 200, r.text
        assert r.json()["state"] == "printed" and r.json()["printer_job_id"]
        assert body in {f.read_bytes() for f in wait_for_files(printer, before + 1)}

        carol = c.post(
            "/mfd/session", json={"card_number": CAROL_CARD, "pin": CAROL_PIN}, headers=lobby
        )
        assert carol.status_code == 200 and carol.json()["username"] == "carol"
        c.put("/users/bob/delegates", json={"users": ["carol"]}, auth=ADMIN)
        carol_h = {**lobby, "X-Session-Token": carol.json()["token"]}
        r = c.post("/mfd/jobs/release-all", headers=carol_h)
        assert r.status_code == 200 and [j["id"] for j in r.json()["released"]] == [b1]
        assert c.delete("/mfd/session", headers=carol_h).status_code == 204
        assert c.get("/mfd/jobs", headers=carol_h).status_code == 401

        assert c.delete("/devices/mfd-lobby", auth=ADMIN).status_code == 204
        assert c.get("/mfd/jobs", headers=alice).status_code == 401  # its token is dead
        assert c.delete("/devices/mfd-lobby", auth=ADMIN).status_code == 404
        assert [a for a, _, _ in audit(c, "device.change")] == ["admin"] * 3
    states = {j.id: j.state for j in jobs_in(srv.data_dir)}
    assert states == {a1: JobState.PRINTED, own_queue: JobState.HELD, b1: JobState.PRINTED}


def test_fast_release_arrives_byte_identical(srv: Server, printer: ippeve.EvePrinter) -> None:
    add_printer(srv, "lobby", printer.uri, block_release_on_error=True)
    add_printer(srv, "annex", f"ipp://127.0.0.1:{cupsd.free_port()}/ipp/print")
    docs = [os.urandom(2 << 20), b"second document\n" * 500]
    with client(srv) as c:
        people(c)
        terminal = bearer(register(c, "reader-lobby", "lobby"))
        other = bearer(register(c, "reader-annex", "annex"))
        ids = [submit(srv, "dave", d) for d in docs]
        elsewhere = submit(srv, "dave", b"annex queue\n", queue="annex")
        carols = submit(srv, "carol", b"carol's\n")
        card = {"card_number": DAVE_CARD.lower()}
        assert c.post("/fast-release/lobby", json=card).status_code == 401
        r = c.post("/fast-release/lobby", json=card, headers=other)
        assert r.status_code == 403 and "annex only" in r.json()["detail"]
        r = c.post("/fast-release/lobby", json={"card_number": "NOBODY"}, headers=terminal)
        assert r.status_code == 401
        before = len(printer.files())
        r = c.post("/fast-release/lobby", json=card, headers=terminal)
        assert r.status_code == 200, r.text
        assert r.json()["username"] == "dave" and r.json()["failed"] == []
        assert [j["id"] for j in r.json()["released"]] == ids
        arrived = {f.read_bytes() for f in wait_for_files(printer, before + 2)}
        assert all(d in arrived for d in docs)
        released = [(a, j, o) for a, j, o in audit(c, "job.release")]
        assert released == [("dave", ids[0], "ok"), ("dave", ids[1], "ok")]
        events = c.get("/audit", params={"action": "job.release"}, auth=ADMIN).json()
        assert all(e["detail"].startswith("fast release: ") for e in events)
        assert ("device:reader-annex", None, "refused") in audit(c, "job.release_failed")
    states = {j.id: j.state for j in jobs_in(srv.data_dir)}
    assert states[elsewhere] is JobState.HELD and states[carols] is JobState.HELD
    assert [states[i] for i in ids] == [JobState.PRINTED] * 2


def test_fast_release_to_a_printer_in_error_still_delivers(srv: Server) -> None:
    root = Path(tempfile.mkdtemp(prefix="spoolvault-cupsd-", dir="/var/tmp"))
    root.chmod(0o755)
    cups = cupsd.start_cupsd(root)
    try:
        cups.run("lpadmin", "-p", "stopped", "-E", "-v", "file:///dev/null", "-m", "raw")
        cups.run("cupsdisable", "stopped")  # paused: in error for the health gate
        uri = f"ipp://{cups.host}/printers/stopped"
        add_printer(srv, "jammed", uri, block_release_on_error=True)
        with client(srv) as c:
            people(c)
            terminal = bearer(register(c, "reader-jammed", "jammed"))
            job = submit(srv, "dave", b"%PDF-1.4 fast release into a stopped queue\n")
            dave = session(c, id_number="E-4", pin="2468")
            r = c.post(f"/release/jobs/{job}", json={"printer": "jammed"}, headers=dave)
            assert r.status_code == 409 and "jammed" in r.json()["detail"], r.text
            r = c.post("/fast-release/jammed", json={"card_number": DAVE_CARD}, headers=terminal)
            assert r.status_code == 200, r.text
            assert [j["id"] for j in r.json()["released"]] == [job]
            assert ("dave", job, "ok") in audit(c, "job.release")
        # cupsd holds the job in its stopped queue: delivery was attempted, and accepted.
        deadline = time.monotonic() + 10
        while "stopped-" not in cups.run("lpstat", "-o", "stopped").stdout:
            assert time.monotonic() < deadline, cups.error_log()
            time.sleep(0.1)
        [row] = jobs_in(srv.data_dir)
        assert row.state is JobState.PRINTED and row.printer == "jammed"
    finally:
        cups.stop()
        shutil.rmtree(root, ignore_errors=True)
