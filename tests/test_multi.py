"""Several servers as separate `spoolvault run` processes on loopback (docs/deployment.md).

An application server (--role app) and print providers (--role provider), each with its own
data directory and ports; jobs go in over IPP to a provider, releases go through the
application server's release station API, and out to a real ippeveprinter.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness import ippeve
from harness.cupsd import free_port
from harness.server import (
    ADMIN,
    Server,
    ipp_request,
    jobs_in,
    new_request,
    spoolvault,
    start_server,
)
from harness.web_helpers import PASSWORD, add_user, client, login, submit
from spoolvault.config import DataDir
from spoolvault.db import JobState
from spoolvault.identity.lockout import PAIR
from spoolvault.ipp.codec import IppMessage
from spoolvault.ipp.constants import Operation, Status, ValueTag
from spoolvault.spool import format as spool_format
from test_db import PG_ENV, pg_url  # noqa: F401 (a fixture)

pytestmark = pytest.mark.skipif(ippeve.IPPEVEPRINTER is None, reason="needs cups-ipp-utils")

BEAT = "0.3"  # seconds between heartbeats in these tests
_SECRET_RE = re.compile(r"secret \(shown once\): (\S+)")


class Cluster:
    """Processes started by one test, stopped at its end."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.running: list[Server] = []
        self.secrets: dict[str, str] = {}

    def app(self, name: str = "app", *extra: str) -> Server:
        srv = start_server(
            self.root / name,
            "--role",
            "app",
            *extra,
            env={"SPOOLVAULT_ADMIN_PASSWORD": ADMIN[1]},
        )
        self.running.append(srv)
        return srv

    def register(self, app: Server, name: str, *extra: str) -> str:
        done = spoolvault("provider", "add", name, "--data-dir", str(app.data_dir), *extra)
        assert done.returncode == 0, done.stderr
        m = _SECRET_RE.search(done.stdout)
        assert m, done.stdout
        self.secrets[name] = m.group(1)
        return m.group(1)

    def provider(self, name: str, app: Server, *extra: str) -> Server:
        env = {
            "SPOOLVAULT_PROVIDER_NAME": name,
            "SPOOLVAULT_PROVIDER_SECRET": self.secrets[name],
            "SPOOLVAULT_HEARTBEAT_SECONDS": BEAT,
            "SPOOLVAULT_ADMIN_PASSWORD": "provider-admin-pw",
        }
        srv = start_server(
            self.root / name, "--role", "provider", "--app-server", app.url, *extra, env=env
        )
        self.running.append(srv)
        return srv

    def stop(self, srv: Server) -> None:
        assert srv.stop() == 0, "".join(srv.first_lines)
        self.running.remove(srv)

    def close(self) -> None:
        for srv in self.running:
            srv.stop(signal.SIGKILL)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        c.close()


def wait_until(what: str, check: Callable[[], Any], timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def my_jobs(app: Server, session: dict[str, str]) -> list[dict[str, Any]]:
    with client(app) as c:
        r = c.get("/release/jobs", headers=session)
        assert r.status_code == 200, r.text
        jobs: list[dict[str, Any]] = r.json()
        return jobs


def listed(app: Server, session: dict[str, str], count: int) -> list[dict[str, Any]]:
    """Wait until the user's release station lists ``count`` jobs (heartbeats carry them)."""
    return wait_until(  # type: ignore[no-any-return]
        f"{count} jobs listed", lambda: (j := my_jobs(app, session)) and len(j) == count and j
    )


def setup_app(cluster: Cluster, printer: ippeve.EvePrinter, *providers: str) -> Server:
    app = cluster.app()
    with client(app) as c:
        r = c.post("/printers", json={"name": "lobby", "uri": printer.uri}, auth=ADMIN)
        assert r.status_code == 201, r.text
    add_user(app, "alice")
    for name in providers:
        cluster.register(app, name)
    return app


def release(app: Server, session: dict[str, str], job_id: int) -> httpx.Response:
    with client(app) as c:
        return c.post(f"/release/jobs/{job_id}", json={"printer": "lobby"}, headers=session)


def spool_files(srv: Server) -> list[Path]:
    return sorted(DataDir.open(srv.data_dir, create=False).encrypted_spool.glob("*.spool"))


# -- roles, routing, byte-identical release ---------------------------------------------


def test_release_is_routed_to_the_provider_that_holds_the_job(
    cluster: Cluster, printer: ippeve.EvePrinter
) -> None:
    app = setup_app(cluster, printer, "p1", "p2")
    p1, p2 = cluster.provider("p1", app), cluster.provider("p2", app)
    body1, body2 = os.urandom(300_000), os.urandom(200_000)
    id1, id2 = submit(p1, "alice", body1), submit(p2, "alice", body2)
    # Encrypted at rest on the provider that received it (the primary's setting), and
    # nowhere else: an application server has no spool files.
    assert len(spool_files(p1)) == 1 and len(spool_files(p2)) == 1
    assert spool_files(p1)[0].read_bytes()[:8] == spool_format.MAGIC
    assert body1[:4096] not in spool_files(p1)[0].read_bytes()
    assert spool_files(app) == []

    session = login(app, "alice")
    jobs = {j["provider"]: j for j in listed(app, session, 2)}
    assert jobs["p1"]["size"] == len(body1) and jobs["p2"]["size"] == len(body2)
    assert all(j["available"] and j["state"] == "held" and j["encrypted"] for j in jobs.values())

    before = len(printer.files())
    r = release(app, session, jobs["p2"]["id"])
    assert r.status_code == 200, r.text
    assert r.json()["job"]["state"] == "printed" and r.json()["printer_job_id"]
    files = wait_until("the printed file", lambda: len(printer.files()) > before)
    assert files
    time.sleep(0.3)
    assert printer.files()[-1].read_bytes() == body2  # byte-identical, from p2's spool

    # p2 printed and shredded its own job; p1's job is untouched, still held and encrypted.
    assert spool_files(p2) == []
    assert [j.state for j in jobs_in(p2.data_dir)] == [JobState.PRINTED]
    assert [(j.id, j.state) for j in jobs_in(p1.data_dir)] == [(id1, JobState.HELD)]
    assert len(spool_files(p1)) == 1
    [left] = my_jobs(app, session)
    assert left["provider"] == "p1" and left["id"] == jobs["p1"]["id"]
    assert id2 == 1  # each provider numbers its own jobs; the app server has its own ids

    with client(app) as c:
        servers = c.get("/servers", auth=ADMIN).json()
    [primary] = servers
    by_name = {p["name"]: p for p in primary["providers"]}
    assert set(by_name) == {"p1", "p2"}
    assert by_name["p1"]["available"] and by_name["p1"]["held_jobs"] == 1
    assert by_name["p1"]["formats"] == {"read": [1], "write": 1}
    assert by_name["p1"]["capabilities"] == {"encrypt": True}
    assert by_name["p1"]["spool"]["encrypted"]["files"] == 1
    assert primary["warnings"] == []
    # The provider learned the printer from its heartbeat answer and polls its health.
    wait_until(
        "printer health in the heartbeat",
        lambda: _provider_status(app, "p1").get("printers", {}).get("lobby"),
    )

    # Cancelling at the application server's release station: p1 cancels and shreds it.
    with client(app) as c:
        r = c.delete(f"/release/jobs/{jobs['p1']['id']}", headers=session)
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "cancelled" and r.json()["provider"] == "p1"
    assert [j.state for j in jobs_in(p1.data_dir)] == [JobState.CANCELLED]
    assert spool_files(p1) == [] and my_jobs(app, session) == []


def _provider_status(app: Server, name: str) -> dict[str, Any]:
    with client(app) as c:
        [primary] = c.get("/servers", auth=ADMIN).json()
    return next(p for p in primary["providers"] if p["name"] == name)


def test_provider_down_its_jobs_are_unavailable_not_lost_and_release_after_it_returns(
    cluster: Cluster, printer: ippeve.EvePrinter
) -> None:
    app = setup_app(cluster, printer, "p1")
    p1 = cluster.provider("p1", app)
    body = os.urandom(100_000)
    submit(p1, "alice", body, fmt="text/plain")
    session = login(app, "alice")
    [job] = listed(app, session, 1)
    cluster.stop(p1)

    gone = wait_until(
        "the job shown unavailable",
        lambda: (j := my_jobs(app, session)) and not j[0]["available"] and j,
    )
    assert gone[0]["id"] == job["id"] and gone[0]["state"] == "held"
    before = len(printer.files())
    r = release(app, session, job["id"])
    assert r.status_code == 503, r.text
    assert "p1" in r.json()["detail"] and "kept" in r.json()["detail"]
    with client(app) as c:
        [seen] = c.get("/jobs", auth=ADMIN).json()
    assert seen["state"] == "held" and not seen["available"]

    p1 = cluster.provider("p1", app)  # back, on another port
    wait_until("the job available again", lambda: my_jobs(app, session)[0]["available"])
    r = release(app, session, job["id"])
    assert r.status_code == 200, r.text
    wait_until("the printed file", lambda: len(printer.files()) > before)
    time.sleep(0.3)
    assert printer.files()[-1].read_bytes() == body


def test_secrets_and_tokens_are_checked(cluster: Cluster, printer: ippeve.EvePrinter) -> None:
    app = setup_app(cluster, printer, "p1")
    secret = cluster.secrets["p1"]
    with client(app) as c:
        beat = {"url": "http://127.0.0.1:9/", "jobs": [], "live": []}
        r = c.post("/providers/heartbeat", json=beat, auth=("p1", secret + "x"))
        assert r.status_code == 401
        r = c.post("/providers/heartbeat", json=beat, auth=("p9", secret))
        assert r.status_code == 401
    # Only the hash is stored; the secret is in no file of the application server.
    for path in app.data_dir.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    assert secret not in "".join(app.first_lines)

    p1 = cluster.provider("p1", app)
    submit(p1, "alice", b"held on p1\n")
    listed(app, login(app, "alice"), 1)
    with httpx.Client(base_url=p1.url, timeout=30) as c:
        lobby = {"name": "lobby", "uri": printer.uri}
        r = c.post("/provider/v1/jobs/1/release", json={"printer": lobby})
        assert r.status_code == 401
        r = c.post(
            "/provider/v1/jobs/1/release",
            json={"printer": lobby},
            headers={"Authorization": "Bearer not-an-app-token"},
        )
        assert r.status_code == 401
    assert [j.state for j in jobs_in(p1.data_dir)] == [JobState.HELD]
    assert secret not in "".join(p1.first_lines)


def test_admin_api_warns_when_a_provider_cannot_encrypt_or_writes_an_older_format(
    cluster: Cluster, printer: ippeve.EvePrinter
) -> None:
    app = setup_app(cluster, printer, "old", "plain")
    # Heartbeats as an older provider would send them, through the real API.
    with client(app) as c:
        for name, formats, caps in (
            ("old", {"read": [0], "write": 0}, {"encrypt": True}),
            ("plain", {"read": [1], "write": 1}, {"encrypt": False, "encrypt_reason": "no key"}),
        ):
            beat = {
                "url": "http://127.0.0.1:9",
                "interval": 10,
                "formats": formats,
                "capabilities": caps,
                "jobs": [],
                "live": [],
            }
            r = c.post("/providers/heartbeat", json=beat, auth=(name, cluster.secrets[name]))
            assert r.status_code == 200, r.text
            assert r.json()["settings"]["spool_file_encryption"] is True
        [primary] = c.get("/servers", auth=ADMIN).json()
        warnings = primary["warnings"]
        assert len(warnings) == 2
        assert any("does not affect jobs on provider old" in w for w in warnings)
        assert any(
            "provider plain cannot encrypt" in w and "does not affect jobs on provider plain" in w
            for w in warnings
        )
        r = c.get("/servers/primary/settings", auth=ADMIN)
        assert "does not affect jobs on provider plain" in r.headers["warning"]
        r = c.patch("/servers/primary/settings", json={"spool_file_encryption": False}, auth=ADMIN)
        assert r.status_code == 200 and "warning" not in r.headers
        r = c.patch("/servers/primary/settings", json={"spool_file_encryption": True}, auth=ADMIN)
        assert r.status_code == 200 and r.json()["spool_file_encryption"] is True
        assert "provider old" in r.headers["warning"]


def test_settings_reach_the_provider_and_apply_to_new_jobs(
    cluster: Cluster, printer: ippeve.EvePrinter
) -> None:
    app = setup_app(cluster, printer, "p1")
    p1 = cluster.provider("p1", app)
    with client(app) as c:
        r = c.patch("/servers/primary/settings", json={"spool_file_encryption": False}, auth=ADMIN)
        assert r.status_code == 200
    wait_until(
        "the setting on the provider",
        lambda: httpx.get(p1.url + "/healthz").json()["spool_file_encryption"] is False,
    )
    time.sleep(2.1)  # the provider re-reads settings for new jobs every 2 s
    submit(p1, "alice", b"not encrypted\n")
    [job] = listed(app, login(app, "alice"), 1)
    assert job["encrypted"] is False and spool_files(p1) == []


# -- downgrades ----------------------------------------------------------------------------


def test_downgrade_drill_unknown_format_never_reaches_the_printer_and_drain(
    cluster: Cluster, printer: ippeve.EvePrinter
) -> None:
    app = setup_app(cluster, printer, "p1")
    p1 = cluster.provider("p1", app)
    good, newer = os.urandom(50_000), os.urandom(60_000)
    submit(p1, "alice", good, fmt="text/plain")
    submit(p1, "alice", newer, fmt="text/plain")
    session = login(app, "alice")
    jobs = listed(app, session, 2)
    wait_until("the printer known to the provider", lambda: b"lobby" in _printers(p1))
    cluster.stop(p1)
    # Seen down first, so that "back" below means the restarted p1 (on another port), not
    # the app server's last news of the old one.
    wait_until("p1 seen down", lambda: not any(j["available"] for j in my_jobs(app, session)))
    # A file written by a newer spoolvault: its header names format version 2.
    local = {j.size: j for j in jobs_in(p1.data_dir)}
    path = DataDir.open(p1.data_dir, create=False).encrypted_spool / (
        f"{local[len(newer)].spool_name}.spool"
    )
    raw = bytearray(path.read_bytes())
    raw[8:10] = (2).to_bytes(2, "big")
    path.write_bytes(bytes(raw))

    p1 = cluster.provider("p1", app)
    wait_until("p1 back", lambda: all(j["available"] for j in my_jobs(app, session)))
    before = printer.files()
    newer_id = next(j["id"] for j in jobs if j["size"] == len(newer))
    r = release(app, session, newer_id)
    assert r.status_code == 502, r.text
    assert "format version 2 is not supported" in r.json()["detail"]
    time.sleep(1)
    assert printer.files() == before  # not one byte, no empty job
    assert path.exists()
    [kept] = [j for j in my_jobs(app, session) if j["id"] == newer_id]
    assert kept["state"] == "failed" and "version 2" in kept["state_reason"]

    data = str(p1.data_dir)
    listing = spoolvault("provider", "drain", "--data-dir", data)
    assert listing.returncode == 1 and "NOT safe" in listing.stdout
    assert "2 encrypted held jobs remain" in listing.stdout

    # While the provider runs (its audit log takes the events from a queue).
    drained = spoolvault("provider", "drain", "--data-dir", data, "--printer", "lobby")
    assert drained.returncode == 1, drained.stdout + drained.stderr
    assert "released to lobby" in drained.stdout and "1 encrypted held jobs remain" in (
        drained.stdout
    )
    assert "version 2" in drained.stderr
    wait_until("the drained job printed", lambda: len(printer.files()) > len(before))
    time.sleep(0.3)
    assert printer.files()[-1].read_bytes() == good
    assert all(f.stat().st_size > 0 for f in printer.files())
    wait_until(
        "the provider's report of the drain",
        lambda: {j["state"] for j in _all_jobs(app)} == {"printed", "failed"},
    )
    cluster.stop(p1)

    # And with the provider stopped.
    cancelled = spoolvault("provider", "drain", "--data-dir", data, "--cancel")
    assert cancelled.returncode == 0, cancelled.stdout + cancelled.stderr
    assert "safe: no encrypted held jobs remain" in cancelled.stdout
    assert not path.exists() and spool_files(p1) == []
    assert len(printer.files()) == len(before) + 1


def _printers(srv: Server) -> bytes:
    with httpx.Client(base_url=srv.url + "/api/v1", timeout=30) as c:
        return c.get("/printers", auth=("admin", "provider-admin-pw")).content


# -- PostgreSQL ----------------------------------------------------------------------------


@pytest.mark.postgres
def test_two_application_servers_on_one_postgres(
    cluster: Cluster,
    printer: ippeve.EvePrinter,
    pg_url: str,  # noqa: F811
) -> None:
    one = cluster.app("app1", "--database", pg_url)
    two = cluster.app("app2", "--database", pg_url)
    with client(one) as c:
        r = c.post("/printers", json={"name": "lobby", "uri": printer.uri}, auth=ADMIN)
        assert r.status_code == 201, r.text
    add_user(two, "alice")  # one database: a user made on one server logs in on the other
    cluster.register(one, "p1", "--database", pg_url)
    p1 = cluster.provider("p1", one)  # it reports to the first only
    body = os.urandom(80_000)
    submit(p1, "alice", body, fmt="text/plain")
    session = login(two, "alice")
    [job] = listed(two, session, 1)
    assert job["provider"] == "p1" and job["available"]
    before = len(printer.files())
    r = release(two, session, job["id"])  # the second asks p1 directly
    assert r.status_code == 200, r.text
    wait_until("the printed file", lambda: len(printer.files()) > before)
    time.sleep(0.3)
    assert printer.files()[-1].read_bytes() == body
    with client(one) as c:
        [seen] = c.get("/jobs", auth=ADMIN).json()
    assert seen["state"] == "printed"
    assert os.environ.get(PG_ENV)


def test_release_sessions_and_lockout_counts_are_shared_by_app_servers(
    cluster: Cluster,
    pg_url: str,  # noqa: F811
) -> None:
    one = cluster.app("app1", "--database", pg_url)
    two = cluster.app("app2", "--database", pg_url)
    add_user(one, "alice")
    session = login(one, "alice")  # opened on the first server
    with client(two) as c:
        assert c.get("/release/jobs", headers=session).status_code == 200  # works on the second
        c.delete("/release/session", headers=session)
    with client(one) as c:
        r = c.get("/release/jobs", headers=session)
        assert r.status_code == 401  # logged out on the second: gone on the first
    wrong = {"username": "alice", "password": "wrong-1"}
    for n in range(PAIR.threshold):  # the failures alternate between the servers
        with client(one if n % 2 else two) as c:
            assert c.post("/release/session", json=wrong).status_code == 401
    for srv in (one, two):  # one count: five in all lock the pair on both
        with client(srv) as c:
            r = c.post("/release/session", json={"username": "alice", "password": PASSWORD})
            assert r.status_code == 429 and r.headers["Retry-After"] in ("29", "30"), r.text


# -- site servers --------------------------------------------------------------------------


def test_site_server_releases_its_jobs_while_the_primary_is_down_and_reports_back(
    cluster: Cluster, printer: ippeve.EvePrinter
) -> None:
    port = free_port()
    primary = cluster.app("primary", "--http", f"127.0.0.1:{port}")
    with client(primary) as c:
        r = c.post("/printers", json={"name": "lobby", "uri": printer.uri}, auth=ADMIN)
        assert r.status_code == 201, r.text
        r = c.patch("/servers/primary/settings", json={"hold_timeout_minutes": 60}, auth=ADMIN)
        assert r.status_code == 200
    add_user(primary, "alice")
    done = spoolvault(
        "provider", "add", "berlin", "--site", "berlin", "--data-dir", str(primary.data_dir)
    )
    assert done.returncode == 0 and "site server berlin registered" in done.stdout
    m = _SECRET_RE.search(done.stdout)
    assert m
    cluster.secrets["berlin"] = m.group(1)
    with client(primary) as c:
        r = c.patch("/servers/berlin/settings", json={"hold_timeout_minutes": 90}, auth=ADMIN)
        assert r.status_code == 200
    site = start_server(
        cluster.root / "berlin",
        "--app-server",
        primary.url,  # --role all (the default) with a primary: a site server
        env={
            "SPOOLVAULT_PROVIDER_NAME": "berlin",
            "SPOOLVAULT_PROVIDER_SECRET": cluster.secrets["berlin"],
            "SPOOLVAULT_HEARTBEAT_SECONDS": BEAT,
            "SPOOLVAULT_ADMIN_PASSWORD": ADMIN[1],
        },
    )
    cluster.running.append(site)
    add_user(site, "alice")  # the site's own release station checks its own users
    first = os.urandom(40_000)
    submit(site, "alice", first, fmt="text/plain")
    at_primary = login(primary, "alice")
    [seen] = listed(primary, at_primary, 1)
    assert seen["provider"] == "berlin" and seen["available"]
    # The site took its own server's settings (not the primary's) and the printers.
    wait_until(
        "the site's settings",
        lambda: (
            httpx.get(site.url + "/api/v1/servers/primary/settings", auth=ADMIN).json()[
                "hold_timeout_minutes"
            ]
            == 90
        ),
    )
    with client(primary) as c:
        servers = {s["name"]: s for s in c.get("/servers", auth=ADMIN).json()}
    assert servers["berlin"]["kind"] == "site"
    assert [p["name"] for p in servers["berlin"]["providers"]] == ["berlin"]

    cluster.stop(primary)
    second = os.urandom(30_000)
    submit(site, "alice", second, fmt="text/plain")  # accepted with the primary down
    at_site = login(site, "alice")
    before = len(printer.files())
    with client(site) as c:
        for job in c.get("/release/jobs", headers=at_site).json():
            r = c.post(f"/release/jobs/{job['id']}", json={"printer": "lobby"}, headers=at_site)
            assert r.status_code == 200, r.text
    wait_until("both printed", lambda: len(printer.files()) >= before + 2)
    time.sleep(0.3)
    assert {f.read_bytes() for f in printer.files()[-2:]} == {first, second}

    primary = cluster.app("primary", "--http", f"127.0.0.1:{port}")  # back, same address
    at_primary = login(primary, "alice")
    wait_until("the site's report", lambda: len(_all_jobs(primary)) == 2)
    wait_until(
        "both shown printed",
        lambda: [j["state"] for j in _all_jobs(primary)] == ["printed", "printed"],
    )
    assert my_jobs(primary, at_primary) == []


def _all_jobs(app: Server) -> list[dict[str, Any]]:
    with client(app) as c:
        jobs: list[dict[str, Any]] = c.get("/jobs", auth=ADMIN).json()
        return jobs


def test_a_job_pin_is_checked_by_the_provider_that_holds_the_job(
    cluster: Cluster, printer: ippeve.EvePrinter
) -> None:
    app = setup_app(cluster, printer, "p1")
    p1 = cluster.provider("p1", app)
    req: IppMessage = new_request(Operation.PRINT_JOB, p1, user="alice")
    req.operation.add("job-password", ValueTag.OCTET_STRING, b"4711")
    req.operation.add("job-password-encryption", ValueTag.KEYWORD, "none")
    req.operation.add("document-format", ValueTag.MIME_MEDIA_TYPE, "text/plain")
    body = b"salary letters\n" * 100
    _, resp = ipp_request(p1, req, body)
    assert resp is not None and resp.code == Status.SUCCESSFUL_OK, resp
    session = login(app, "alice")
    [job] = listed(app, session, 1)
    with client(app) as c:

        def release(pin: str | None) -> httpx.Response:
            sent = {"printer": "lobby"} | ({"job_pin": pin} if pin is not None else {})
            return c.post(f"/release/jobs/{job['id']}", json=sent, headers=session)

        r = release(None)
        assert r.status_code == 403 and "job PIN" in r.json()["detail"]
        r = release("0000")
        assert r.status_code == 403 and "wrong job PIN" in r.json()["detail"]
        before = len(printer.files())
        r = release("4711")
        assert r.status_code == 200, r.text
    wait_until("the printed file", lambda: len(printer.files()) > before)
    time.sleep(0.3)
    assert printer.files()[-1].read_bytes() == body
