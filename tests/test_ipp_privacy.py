"""Job privacy and claimed owners over IPP (issue 17), with real connections from several
loopback addresses: the permission matrix of docs/security.md "Job privacy"."""

from __future__ import annotations

import base64
import http.client
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from harness import ipptool
from harness.server import (
    Server,
    job_group,
    jobs_in,
    new_request,
    queue_uri,
    spoolvault,
    start_server,
)
from spoolvault.config import DataDir
from spoolvault.db import Database, JobState, database_url
from spoolvault.ipp.codec import IppMessage, decode, encode
from spoolvault.ipp.constants import GroupTag, Operation, Status, ValueTag

pytestmark = pytest.mark.skipif(shutil.which("ipptool") is None, reason="needs cups-ipp-utils")

TITLE = "Merger plan Q3"
PASSWORDS = {"alice": "alice-password", "bob": "bob-password", "boss": "boss-password"}
SUBMITTER = "127.0.0.1"
ELSEWHERE = "127.0.0.2"


def post(
    srv: Server,
    msg: IppMessage,
    body: bytes = b"",
    *,
    source: str = SUBMITTER,
    user: str | None = None,
) -> tuple[int, IppMessage | None, dict[str, str]]:
    """POST one IPP request from ``source``, authenticated as ``user`` if given."""
    parts = urlsplit(srv.url)
    conn = http.client.HTTPConnection(
        parts.hostname, parts.port, timeout=30, source_address=(source, 0)
    )
    headers = {"Content-Type": "application/ipp"}
    if user is not None:
        token = base64.b64encode(f"{user}:{PASSWORDS[user]}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    try:
        conn.request("POST", "/printers/secure", encode(msg) + body, headers)
        resp = conn.getresponse()
        data = resp.read()
        got = {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()
    return resp.status, (decode(data)[0] if resp.status == 200 else None), got


def make_server(data: Path, *, auth_required: bool) -> Server:
    srv = start_server(data, env={"SPOOLVAULT_ADMIN_PASSWORD": "admin-pw"})
    db = Database.open(database_url(None, DataDir.open(data, create=False).database))
    try:
        db.add_user("alice", PASSWORDS["alice"])
        db.add_user("bob", PASSWORDS["bob"])
        db.add_user("boss", PASSWORDS["boss"], is_admin=True)
        if auth_required:
            db.update_settings("primary", {"ipp_authentication_required": True})
    finally:
        db.close()
    if auth_required:
        time.sleep(2.5)  # the server re-reads settings every 2 s
    return srv


@pytest.fixture(scope="module")
def open_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = make_server(tmp_path_factory.mktemp("privacy") / "data", auth_required=False)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = make_server(tmp_path_factory.mktemp("privacy-auth") / "data", auth_required=True)
    try:
        yield srv
    finally:
        srv.stop()


def submit(srv: Server, *, authenticated: bool) -> int:
    """A job of alice's from 127.0.0.1, by claim or authenticated."""
    msg = new_request(Operation.PRINT_JOB, srv, user="alice")
    msg.operation.add("job-name", ValueTag.NAME, TITLE)
    status, resp, _ = post(srv, msg, b"%PDF-1.4\n", user="alice" if authenticated else None)
    assert status == 200 and resp is not None and resp.code == Status.SUCCESSFUL_OK, resp
    job_id = job_group(resp).get("job-id")
    assert job_id is not None and isinstance(job_id.value, int)
    return job_id.value


# Who asks: (requesting-user-name, authenticated user or None, source address).
REQUESTERS = {
    "owner": ("alice", "alice", ELSEWHERE),
    "owner-claim-same-host": ("alice", None, SUBMITTER),
    "owner-claim-other-host": ("alice", None, ELSEWHERE),
    "other-user": ("bob", "bob", SUBMITTER),
    "other-claim": ("bob", None, SUBMITTER),
    "admin": ("boss", "boss", ELSEWHERE),
}
# Who sees alice's job-name and owner (with ipp_authentication_required off).
SEES = {"owner", "owner-claim-same-host", "admin"}
# Who may change it: the others get 401 (challenged) or client-error-not-authorized.
CHANGES = {"owner", "owner-claim-same-host", "admin"}
CHALLENGED = {"owner-claim-other-host"}

CHANGING_OPS = [
    Operation.CANCEL_JOB,
    Operation.HOLD_JOB,
    Operation.RELEASE_JOB,
    Operation.SET_JOB_ATTRIBUTES,
    Operation.CANCEL_MY_JOBS,
]


def request_for(srv: Server, op: int, who: str, job_id: int) -> IppMessage:
    name = REQUESTERS[who][0]
    msg = new_request(op, srv, user=name)
    if op == Operation.GET_JOBS:
        msg.operation.add("which-jobs", ValueTag.KEYWORD, "all")
        msg.operation.add("requested-attributes", ValueTag.KEYWORD, "all")
    elif op == Operation.CANCEL_MY_JOBS:
        msg.operation.add("job-ids", ValueTag.INTEGER, job_id)
    else:
        msg.operation.add("job-id", ValueTag.INTEGER, job_id)
    if op == Operation.SET_JOB_ATTRIBUTES:
        msg.groups.append(msg.groups[0].__class__(GroupTag.JOB, []))
        msg.groups[-1].add("job-priority", ValueTag.INTEGER, 60)
    return msg


def job_of(resp: IppMessage, job_id: int) -> dict[str, object]:
    for group in resp.groups:
        if group.tag == GroupTag.JOB:
            attr = group.get("job-id")
            if attr is not None and attr.value == job_id:
                return {a.name: a.value for a in group.attributes}
    raise AssertionError(f"job {job_id} not in the reply")


@pytest.mark.parametrize("who", list(REQUESTERS))
@pytest.mark.parametrize("op", [Operation.GET_JOB_ATTRIBUTES, Operation.GET_JOBS])
def test_reading_another_users_job_shows_nothing_that_identifies_it(
    open_server: Server, op: int, who: str
) -> None:
    job_id = submit(open_server, authenticated=False)
    _, user, source = REQUESTERS[who]
    status, resp, _ = post(
        open_server, request_for(open_server, op, who, job_id), source=source, user=user
    )
    assert status == 200 and resp is not None and resp.code == Status.SUCCESSFUL_OK, resp
    attrs = job_of(resp, job_id)
    assert attrs["job-state"] == 4 and "job-k-octets" in attrs  # state and size: public
    if who in SEES:
        assert attrs["job-name"] == TITLE and attrs["job-originating-user-name"] == "alice"
    else:
        for private in ("job-name", "job-originating-user-name", "job-state-message"):
            assert private not in attrs, (who, private)


@pytest.mark.parametrize("who", list(REQUESTERS))
@pytest.mark.parametrize("op", CHANGING_OPS)
def test_changing_a_job_needs_its_owner_or_an_admin(open_server: Server, op: int, who: str) -> None:
    job_id = submit(open_server, authenticated=False)
    _, user, source = REQUESTERS[who]
    status, resp, headers = post(
        open_server, request_for(open_server, op, who, job_id), source=source, user=user
    )
    job = next(j for j in jobs_in(open_server.data_dir) if j.id == job_id)
    cancels = op in (Operation.CANCEL_JOB, Operation.CANCEL_MY_JOBS)
    # Cancel-My-Jobs cancels the requester's own jobs (PWG 5100.11): not an admin's tool.
    changes = CHANGES - {"admin"} if op == Operation.CANCEL_MY_JOBS else CHANGES
    if who in changes:
        assert status == 200 and resp is not None, (status, who)
        assert resp.code < 0x100, (who, hex(resp.code))
        if cancels:
            assert job.state is JobState.CANCELLED
    elif who in CHALLENGED:
        assert status == 401 and headers.get("www-authenticate", "").startswith("Basic"), who
        assert job.state is JobState.HELD and job.client_hold is None
    else:
        assert status == 200 and resp is not None
        refused = (Status.CLIENT_ERROR_NOT_AUTHORIZED, Status.CLIENT_ERROR_NOT_POSSIBLE)
        assert resp.code in refused, (who, hex(resp.code))
        assert job.state is JobState.HELD and job.client_hold is None


@pytest.mark.parametrize("who", list(REQUESTERS))
@pytest.mark.parametrize("op", [Operation.GET_JOB_ATTRIBUTES, Operation.GET_JOBS, *CHANGING_OPS])
def test_with_authentication_required_only_the_owner_and_admins_see_or_change(
    auth_server: Server, op: int, who: str
) -> None:
    job_id = submit(auth_server, authenticated=True)
    _, user, source = REQUESTERS[who]
    status, resp, headers = post(
        auth_server, request_for(auth_server, op, who, job_id), source=source, user=user
    )
    if user is None:  # every claim is challenged
        assert status == 401 and "www-authenticate" in headers
        return
    assert status == 200 and resp is not None
    mine = who in ("owner", "admin")
    if op == Operation.CANCEL_MY_JOBS:
        mine = who == "owner"  # only the requester's own jobs (PWG 5100.11)
    if op in (Operation.GET_JOB_ATTRIBUTES, Operation.GET_JOBS):
        attrs = job_of(resp, job_id)
        assert ("job-name" in attrs) is mine, who
        assert ("job-originating-user-name" in attrs) is mine, who
    elif mine:
        assert resp.code < 0x100, (who, hex(resp.code))
    else:
        refused = (Status.CLIENT_ERROR_NOT_AUTHORIZED, Status.CLIENT_ERROR_NOT_POSSIBLE)
        assert resp.code in refused, (who, hex(resp.code))


def test_hide_document_names_hides_titles_from_admins_over_ipp(tmp_path: Path) -> None:
    srv = make_server(tmp_path / "data", auth_required=False)
    try:
        job_id = submit(srv, authenticated=False)
        db = Database.open(database_url(None, DataDir.open(srv.data_dir, create=False).database))
        try:
            db.update_settings("primary", {"hide_document_names": True})
        finally:
            db.close()
        time.sleep(2.5)
        seen = {}
        for who in ("admin", "owner"):
            _, user, source = REQUESTERS[who]
            req = request_for(srv, Operation.GET_JOB_ATTRIBUTES, who, job_id)
            _, resp, _ = post(srv, req, source=source, user=user)
            assert resp is not None
            seen[who] = job_of(resp, job_id)["job-name"]
        assert seen == {"admin": "(hidden)", "owner": TITLE}
    finally:
        srv.stop()


def test_control_characters_in_names_never_reach_the_log_or_a_reply(
    open_server: Server, tmp_path: Path
) -> None:
    forged = "evil\nERROR spoolvault: forged line\x1b[31m\u202etxt.exe"
    msg = new_request(Operation.PRINT_JOB, open_server, user="mallory\r\nINFO forged")
    msg.operation.add("job-name", ValueTag.NAME, forged)
    status, resp, _ = post(open_server, msg, b"%PDF-1.4\n")
    assert status == 200 and resp is not None
    job_id = job_group(resp).get("job-id")
    assert job_id is not None
    job = next(j for j in jobs_in(open_server.data_dir) if j.id == job_id.value)
    assert job.owner == "mallory  INFO forged"  # CR and LF each a space
    assert job.title == "evil ERROR spoolvault: forged line[31mtxt.exe"
    assert not any(
        line.startswith(("ERROR spoolvault: forged", "INFO forged"))
        for line in open_server.first_lines
    )
    assert not any("\x1b" in line or "\u202e" in line for line in open_server.first_lines)
    listed = spoolvault(
        "jobs",
        "list",
        "--data-dir",
        str(open_server.data_dir),
        env={**os.environ, "COLUMNS": "300"},
    )
    assert listed.returncode == 0 and "forged line" in listed.stdout, listed.stderr
    assert "\x1b" not in listed.stdout and "\u202e" not in listed.stdout
    # ipptool checks every name value of our Get-Jobs reply (it refused control characters).
    suites = ipptool.prepare(tmp_path / "suites")
    (suites / "get-jobs-names.test").write_text(
        '{\n NAME "Get-Jobs"\n OPERATION Get-Jobs\n GROUP operation-attributes-tag\n'
        " ATTR charset attributes-charset utf-8\n"
        " ATTR naturalLanguage attributes-natural-language en\n"
        ' ATTR uri printer-uri $uri\n ATTR name requesting-user-name "mallory  INFO forged"\n'
        " ATTR keyword which-jobs all\n ATTR keyword requested-attributes all\n"
        " STATUS successful-ok\n EXPECT job-name OF-TYPE name\n}\n"
    )
    result = ipptool.run(queue_uri(open_server), "get-jobs-names.test", suites)
    assert result.steps and result.failed == [], [(s.name, s.errors) for s in result.failed]


def test_an_absurd_job_id_is_a_client_error(open_server: Server) -> None:
    msg = IppMessage((2, 0), Operation.GET_JOB_ATTRIBUTES, 1, [])
    msg.operation.add("attributes-charset", ValueTag.CHARSET, "utf-8")
    msg.operation.add("attributes-natural-language", ValueTag.NATURAL_LANGUAGE, "en")
    base = queue_uri(open_server).rsplit("/printers/", 1)[0]
    for tail in ("99999999999999999999999", "9223372036854775808", "\u0663"):
        msg.operation.set("job-uri", ValueTag.URI, f"{base}/jobs/{tail}")
        status, resp, _ = post(open_server, msg)
        assert status == 200 and resp is not None
        assert resp.code == Status.CLIENT_ERROR_NOT_FOUND, (tail, hex(resp.code))


def test_an_absurd_job_id_over_the_api_is_not_found(open_server: Server) -> None:
    admin = ("admin", "admin-pw")
    with httpx.Client(base_url=open_server.url + "/api/v1", timeout=60) as c:
        user = {"username": "carol", "password": "carol-pw-9931"}
        assert c.post("/users", json=user, auth=admin).status_code == 201
        token = c.post("/release/session", json=user).json()["token"]
        station = {"Authorization": f"Bearer {token}"}
        for job_id in ("99999999999999999999999", "9223372036854775808", "0", "-1"):
            r = c.post(f"/release/jobs/{job_id}", json={"printer": "any"}, headers=station)
            assert r.status_code == 404, (job_id, r.status_code, r.text)
            r = c.delete(f"/release/jobs/{job_id}", headers=station)
            assert r.status_code == 404, (job_id, r.status_code, r.text)


def test_a_foreign_host_header_is_refused(open_server: Server) -> None:
    port = urlsplit(open_server.url).port
    msg = encode(new_request(Operation.GET_PRINTER_ATTRIBUTES, open_server))
    for host, expected in (
        ("evil.example", 400),
        (f"rebind.attacker.test:{port}", 400),
        (f"localhost:{port}", 200),
        (f"127.0.0.3:{port}", 200),
        (f"[::1]:{port}", 200),
        (f"{socket.gethostname()}:{port}", 200),
    ):
        for path, method, body in (("/printers/secure", "POST", msg), ("/healthz", "GET", b"")):
            done = subprocess.run(
                [
                    "curl",
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "--interface",
                    "127.0.0.2",
                    "-X",
                    method,
                    "-H",
                    f"Host: {host}",
                    "-H",
                    "Content-Type: application/ipp",
                    "--data-binary",
                    "@-",
                    f"{open_server.url}{path}",
                ],
                input=body if method == "POST" else None,
                capture_output=True,
                timeout=30,
            )
            code = int(done.stdout or b"0")
            assert (code == 400) == (expected == 400), (host, path, code)
    # Through the name, ipptool (its Host: localhost) sees only our own name in the URIs.
    uri = queue_uri(open_server).replace("127.0.0.1", "localhost")
    suites = ipptool.prepare(Path(tempfile.mkdtemp()))
    result = ipptool.run(uri, "get-printer-attributes.test", suites)
    assert result.steps and result.failed == [], [(s.name, s.errors) for s in result.failed]
    assert b"evil" not in result.stdout and f"ipp://localhost:{port}".encode() in result.stdout


def test_a_printer_pointing_back_at_this_server(tmp_path: Path) -> None:
    srv = make_server(tmp_path / "data", auth_required=False)
    try:
        port = urlsplit(srv.url).port
        with httpx.Client(base_url=srv.url + "/api/v1", timeout=60) as c:
            for uri in (
                f"ipp://127.0.0.1:{port}/printers/secure",
                f"ipp://localhost:{port}/printers/loop",
                f"http://127.0.0.2:{port}/ipp/print",
            ):
                body = {"name": "loop", "uri": uri, "mode": "direct"}
                r = c.post("/printers", json=body, auth=("admin", "admin-pw"))
                assert r.status_code == 400 and "loop" in r.text, (uri, r.status_code, r.text)
        # The command line does not know the port it would loop on: the delivery guard.
        done = spoolvault(
            "printer",
            "add",
            "loop",
            f"ipp://127.0.0.1:{port}/printers/loop",
            "--mode",
            "direct",
            "--data-dir",
            str(srv.data_dir),
        )
        assert done.returncode == 0, done.stdout + done.stderr
        msg = new_request(Operation.PRINT_JOB, srv, user="alice")
        msg.operation.set("printer-uri", ValueTag.URI, queue_uri(srv, "loop"))
        status, resp, _ = post(srv, msg, b"%PDF-1.4\n")
        assert status == 200 and resp is not None and resp.code < 0x100, resp
        time.sleep(3)
        jobs = jobs_in(srv.data_dir)
        assert len(jobs) == 1, [(j.id, j.queue, j.state) for j in jobs]  # no copies
        assert jobs[0].state is not JobState.PRINTED
        assert any("loops back" in line for line in srv.first_lines)
    finally:
        srv.stop()


def non_loopback_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.254", 9))  # no packet is sent: it picks the route's address
            address = str(s.getsockname()[0])
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_metrics_and_health_details_are_for_loopback_and_admins(tmp_path: Path) -> None:
    address = non_loopback_address()
    if address is None:
        pytest.skip("needs a non-loopback address")
    srv = start_server(
        tmp_path / "data", "--http", "0.0.0.0:0", env={"SPOOLVAULT_ADMIN_PASSWORD": "admin-pw"}
    )
    try:
        port = urlsplit(srv.url).port
        local = f"http://127.0.0.1:{port}"
        remote = f"http://{address}:{port}"
        assert httpx.get(f"{local}/metrics").status_code == 200
        assert "current_key_id" in httpx.get(f"{local}/healthz").json()
        r = httpx.get(f"{remote}/metrics")
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Basic")
        assert httpx.get(f"{remote}/healthz").json() == {"status": "ok"}
        assert httpx.get(f"{remote}/metrics", auth=("admin", "admin-pw")).status_code == 200
        detail = httpx.get(f"{remote}/healthz", auth=("admin", "admin-pw")).json()
        assert "current_key_id" in detail
    finally:
        srv.stop()
