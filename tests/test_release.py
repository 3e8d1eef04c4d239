"""Release, end to end with real peers: IPP in, REST release, ippeveprinter out."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from harness import cupsd, ippeve, ipptool
from harness.server import (
    ADMIN,
    Server,
    ipp_request,
    job_group,
    jobs_in,
    new_request,
    spoolvault,
    start_server,
)
from harness.snmpd import start_snmpd
from harness.web_helpers import add_printer, add_user, client, login, submit, wait_for_files
from spoolvault.config import DataDir
from spoolvault.db import Job, JobState
from spoolvault.ipp.codec import IppMessage
from spoolvault.ipp.constants import Operation, Status, ValueTag
from spoolvault.runtime import Runtime

pytestmark = pytest.mark.skipif(ippeve.IPPEVEPRINTER is None, reason="needs cups-ipp-utils")


def the_job(srv: Server, done: Callable[[Job], bool], timeout: float = 30) -> Job:
    """The server's only job, once ``done(job)`` (or as it is when ``timeout`` runs out)."""
    deadline = time.monotonic() + timeout
    while True:
        [job] = jobs_in(srv.data_dir)
        if done(job) or time.monotonic() > deadline:
            return job
        time.sleep(0.1)


def test_release_arrives_byte_identical_and_the_file_is_shredded(
    srv: Server, printer: ippeve.EvePrinter
) -> None:
    add_printer(srv, "lobby", printer.uri)
    add_user(srv, "alice")
    docs = [
        (ipptool.minimal_pdf(2, marker="release"), "application/pdf"),
        (b"plain text job\n" * 1000, "text/plain"),
        # ippeveprinter sniffs application/octet-stream and refuses what it cannot type,
        # so random bytes go as text/plain (its /bin/cat "prints" them unchanged).
        (os.urandom(3 << 20), "text/plain"),
    ]
    ids = [submit(srv, "alice", body, fmt=fmt) for body, fmt in docs]
    session = login(srv, "alice")
    before = len(printer.files())
    with client(srv) as c:
        mine = c.get("/release/jobs", headers=session).json()
        assert sorted(j["id"] for j in mine) == sorted(ids)
        for job_id in ids:
            r = c.post(f"/release/jobs/{job_id}", json={"printer": "lobby"}, headers=session)
            assert r.status_code == 200, r.text
            assert r.json()["job"]["state"] == "printed"
            assert r.json()["printer_job_id"]
    files = wait_for_files(printer, before + len(docs))
    arrived = {f.read_bytes() for f in files[before:]} | {f.read_bytes() for f in files}
    for body, _ in docs:
        assert body in arrived
    data = DataDir.open(srv.data_dir, create=False)
    assert list(data.encrypted_spool.glob("*.spool")) == []  # crypto-shredded after printing
    assert [j.state for j in jobs_in(srv.data_dir)] == [JobState.PRINTED] * 3


def test_user_cannot_release_or_cancel_someone_elses_job(
    srv: Server, printer: ippeve.EvePrinter
) -> None:
    add_printer(srv, "lobby", printer.uri)
    add_user(srv, "alice")
    add_user(srv, "bob")
    job_id = submit(srv, "alice", b"alice's secret")
    bob = login(srv, "bob")
    with client(srv) as c:
        assert c.get("/release/jobs", headers=bob).json() == []
        r = c.post(f"/release/jobs/{job_id}", json={"printer": "lobby"}, headers=bob)
        assert r.status_code == 404 and "detail" in r.json()
        assert c.delete(f"/release/jobs/{job_id}", headers=bob).status_code == 404
        assert c.get("/release/jobs").status_code == 401
        bad = c.post("/release/session", json={"username": "bob", "password": "wrong-pass"})
        assert bad.status_code == 401
    [job] = jobs_in(srv.data_dir)
    assert job.state is JobState.HELD


def test_tampered_spool_file_is_never_sent(srv: Server, printer: ippeve.EvePrinter) -> None:
    add_printer(srv, "lobby", printer.uri)
    add_user(srv, "alice")
    job_id = submit(srv, "alice", os.urandom(200_000))
    [job] = jobs_in(srv.data_dir)
    data = DataDir.open(srv.data_dir, create=False)
    path = data.encrypted_spool / f"{job.spool_name}.spool"
    raw = bytearray(path.read_bytes())
    raw[150_000] ^= 0x01
    path.write_bytes(bytes(raw))
    before = printer.files()
    session = login(srv, "alice")
    with client(srv) as c:
        r = c.post(f"/release/jobs/{job_id}", json={"printer": "lobby"}, headers=session)
    assert r.status_code == 502
    assert "cannot be decrypted" in r.json()["detail"]
    time.sleep(1)
    assert printer.files() == before  # not one byte reached the printer
    [job] = jobs_in(srv.data_dir)
    assert job.state is JobState.FAILED and path.exists()  # kept for an administrator


def test_unreachable_printer_blocking_and_not_blocking(srv: Server) -> None:
    port = cupsd.free_port()  # nothing listens there
    add_printer(srv, "gone-block", f"ipp://127.0.0.1:{port}/ipp/print", block_release_on_error=True)
    add_printer(srv, "gone", f"ipp://127.0.0.1:{port}/ipp/print")
    add_user(srv, "alice")
    job_id = submit(srv, "alice", b"%PDF-1.4 held\n")
    session = login(srv, "alice")
    with client(srv) as c:
        r = c.post(f"/release/jobs/{job_id}", json={"printer": "gone-block"}, headers=session)
        assert r.status_code == 409, r.text
        assert "gone-block" in r.json()["detail"] and "unreachable" in r.json()["detail"]
        r = c.post(f"/release/jobs/{job_id}", json={"printer": "gone"}, headers=session)
        assert r.status_code == 502, r.text
    [job] = jobs_in(srv.data_dir)
    assert job.state is JobState.HELD and job.state_reason and "not printed" in job.state_reason


def test_printer_stopped_in_cupsd_blocks_release(srv: Server) -> None:
    root = Path(tempfile.mkdtemp(prefix="spoolvault-cupsd-", dir="/var/tmp"))
    root.chmod(0o755)
    cups = cupsd.start_cupsd(root)
    try:
        cups.run("lpadmin", "-p", "stopped", "-E", "-v", "file:///dev/null", "-m", "raw")
        cups.run("cupsdisable", "stopped")
        add_printer(
            srv, "jammed", f"ipp://{cups.host}/printers/stopped", block_release_on_error=True
        )
        add_user(srv, "alice")
        job_id = submit(srv, "alice", b"%PDF-1.4 waiting\n")
        session = login(srv, "alice")
        with client(srv) as c:
            r = c.post(f"/release/jobs/{job_id}", json={"printer": "jammed"}, headers=session)
        assert r.status_code == 409, r.text
        assert "jammed" in r.json()["detail"]
        [job] = jobs_in(srv.data_dir)
        assert job.state is JobState.HELD
    finally:
        cups.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_direct_queue_prints_without_hold(
    srv: Server, printer: ippeve.EvePrinter, tmp_path: Path
) -> None:
    add_printer(srv, "kiosk", printer.uri, mode="direct")
    before = len(printer.files())
    body = ipptool.minimal_pdf(1, marker="direct")
    job_id = submit(srv, "walk-in", body, fmt="application/pdf", queue="kiosk")
    job = the_job(srv, lambda j: j.state not in (JobState.HELD, JobState.RELEASING))
    assert job.id == job_id and job.state is JobState.PRINTED, job.state_reason
    assert body in {f.read_bytes() for f in wait_for_files(printer, before + 1)}


def test_ipptool_suites_pass_against_a_direct_queue_in_front_of_ippeveprinter(
    srv: Server, printer: ippeve.EvePrinter, tmp_path: Path
) -> None:
    """ipp-1.1.test and ipp-2.0.test with 0 failures: every job completes at the printer.

    The queue offers the document formats its printer takes (so the suites skip JPEG on a
    printer without it), and attributes the printer refuses (``sides`` on ippeveprinter)
    are left out at delivery rather than leaving the job held.
    """
    add_printer(srv, "kiosk", printer.uri, mode="direct")
    suites = ipptool.prepare(tmp_path / "suites")
    uri = srv.url.replace("http://", "ipp://") + "/printers/kiosk"
    before = len(printer.files())
    for suite in ("ipp-1.1.test", "ipp-2.0.test"):
        result = ipptool.run(uri, suite, suites, "-I", "-f", "document-a4.pdf", timeout=300)
        assert len(result.steps) >= 60, (suite, result.stderr)
        assert result.failed == [], (
            suite,
            [(s.name, s.errors) for s in result.failed],
            [line for line in srv.first_lines if "direct job" in line or "WARNING" in line],
        )
    done = {JobState.PRINTED, JobState.CANCELLED}
    deadline = time.monotonic() + 30  # the last jobs may still be on their way
    jobs = jobs_in(srv.data_dir)
    while not {j.state for j in jobs} <= done and time.monotonic() < deadline:
        time.sleep(0.2)
        jobs = jobs_in(srv.data_dir)
    assert [(j.id, j.state, j.state_reason) for j in jobs if j.state not in done] == []
    printed = [j for j in jobs if j.state is JobState.PRINTED]
    assert len(printed) >= 10
    wait_for_files(printer, before + len(printed))
    assert any("without sides" in (j.state_reason or "") for j in printed)


def test_a_printers_queue_offers_and_enforces_the_printers_formats(
    srv: Server, printer: ippeve.EvePrinter
) -> None:
    add_printer(srv, "kiosk", printer.uri, mode="direct")
    req = new_request(Operation.GET_PRINTER_ATTRIBUTES, srv)
    req.operation.set(
        "printer-uri", ValueTag.URI, srv.url.replace("http://", "ipp://") + "/printers/kiosk"
    )
    _, resp = ipp_request(srv, req, b"", path="/printers/kiosk")
    assert resp is not None and resp.code == Status.SUCCESSFUL_OK
    attrs = resp.groups[-1]
    formats = attrs.get("document-format-supported")
    assert formats is not None
    # ippeve.start_printer runs ippeveprinter with -f application/pdf,...,text/plain
    assert "application/pdf" in formats.python_values
    assert "image/jpeg" not in formats.python_values
    req = new_request(Operation.PRINT_JOB, srv, user="walk-in")
    req.operation.set(
        "printer-uri", ValueTag.URI, srv.url.replace("http://", "ipp://") + "/printers/kiosk"
    )
    req.operation.add("document-format", ValueTag.MIME_MEDIA_TYPE, "image/jpeg")
    _, resp = ipp_request(srv, req, b"\xff\xd8\xff\xe0 not printable here", path="/printers/kiosk")
    assert resp is not None and resp.code == Status.CLIENT_ERROR_DOCUMENT_FORMAT_NOT_SUPPORTED
    assert jobs_in(srv.data_dir) == []


def test_concurrent_releases_each_print_once(srv: Server, printer: ippeve.EvePrinter) -> None:
    """Four users release at once to one printer that takes one job at a time (busy
    answers are retried); two stations releasing the same job: one wins, one is refused."""
    add_printer(srv, "lobby", printer.uri)
    users = ["ann", "ben", "cid", "dot"]
    bodies: dict[int, bytes] = {}
    for user in users:
        add_user(srv, user)
        for k in range(2):
            body = f"{user} job {k}\n".encode() * 20_000 + os.urandom(64)
            bodies[submit(srv, user, body)] = body
    sessions = {u: login(srv, u) for u in users}
    printer.wait_idle()
    seen = set(printer.files())

    def release_all(user: str) -> list[int]:
        codes = []
        with client(srv) as c:
            for job in c.get("/release/jobs", headers=sessions[user]).json():
                r = c.post(
                    f"/release/jobs/{job['id']}", json={"printer": "lobby"}, headers=sessions[user]
                )
                codes.append(r.status_code)
        return codes

    with ThreadPoolExecutor(len(users)) as pool:
        results = list(pool.map(release_all, users))
    assert results == [[200, 200]] * len(users)
    files = wait_for_files(printer, len(seen) + len(bodies))
    arrived = [f.read_bytes() for f in files if f not in seen]
    assert sorted(arrived) == sorted(bodies.values())  # each once, byte-identical
    assert {j.state for j in jobs_in(srv.data_dir)} == {JobState.PRINTED}

    # The same job from two stations at the same moment.
    body = b"released from two stations\n" * 10_000
    job_id = submit(srv, "ann", body)
    second = login(srv, "ann")
    start = threading.Barrier(2)

    def station(session: dict[str, str]) -> int:
        with client(srv) as c:
            start.wait()
            r = c.post(f"/release/jobs/{job_id}", json={"printer": "lobby"}, headers=session)
            return r.status_code

    with ThreadPoolExecutor(2) as pool:
        codes = sorted(pool.map(station, [sessions["ann"], second]))
    assert codes[0] == 200 and codes[1] in (404, 409), codes
    wait_for_files(printer, len(seen) + len(bodies) + 1)
    time.sleep(1)
    assert [f.read_bytes() for f in printer.files()].count(body) == 1


def test_restart_with_a_thousand_held_jobs_keeps_all_releasable(
    tmp_path: Path, printer: ippeve.EvePrinter
) -> None:
    data_dir = tmp_path / "data"
    env = {"SPOOLVAULT_ADMIN_PASSWORD": ADMIN[1]}
    srv = start_server(data_dir, env=env)
    count = 1000
    try:
        add_user(srv, "alice")
        add_printer(srv, "lobby", printer.uri)

        def one(n: int) -> tuple[int, bytes]:
            body = f"held job {n} ".encode() * (50 + n % 200)
            return submit(srv, "alice", body), body

        with ThreadPoolExecutor(8) as pool:
            submitted = dict(pool.map(one, range(count)))
    finally:
        assert srv.stop() == 0
    assert len(submitted) == count
    srv = start_server(data_dir, env=env)
    try:
        session = login(srv, "alice")
        with client(srv) as c:
            held = c.get("/release/jobs", headers=session).json()
            assert sorted(j["id"] for j in held) == sorted(submitted)
            assert {j["state"] for j in held} == {"held"}
        verified = spoolvault("spool", "verify", "--quiet", "--data-dir", str(data_dir))
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert f"{count} spool files verified, 0 failed" in verified.stdout
        sample = sorted(submitted)[:: count // 5]
        before = len(printer.files())
        with client(srv) as c:
            for job_id in sample:
                r = c.post(f"/release/jobs/{job_id}", json={"printer": "lobby"}, headers=session)
                assert r.status_code == 200, r.text
        arrived = {f.read_bytes() for f in wait_for_files(printer, before + len(sample))}
        assert {submitted[j] for j in sample} <= arrived
    finally:
        srv.stop()


def test_snmp_no_paper_blocks_release_end_to_end(
    srv: Server, printer: ippeve.EvePrinter, tmp_path: Path
) -> None:
    """A real snmpd (pass_persist) reports noPaper for the printer: a blocking printer
    refuses with 409 naming it, the job stays held; once paper is back it prints."""
    agent = start_snmpd(tmp_path / "snmpd")
    try:
        agent.set_state(["noPaper"], status=1)
        snmp = {"snmp_community": "public", "snmp_host": "127.0.0.1", "snmp_port": agent.port}
        add_printer(srv, "copier", printer.uri, block_release_on_error=True, **snmp)
        add_printer(srv, "tolerant", printer.uri, **snmp)
        add_user(srv, "alice")
        body = b"needs paper\n" * 5000
        job_id = submit(srv, "alice", body)
        session = login(srv, "alice")
        seen = set(printer.files())
        with client(srv) as c:
            r = c.post(f"/release/jobs/{job_id}", json={"printer": "copier"}, headers=session)
            assert r.status_code == 409, r.text
            assert "copier" in r.json()["detail"] and "paper" in r.json()["detail"].lower()
            [job] = jobs_in(srv.data_dir)
            assert job.state is JobState.HELD
            time.sleep(0.5)
            assert set(printer.files()) == seen  # nothing was sent

            agent.set_state([], status=3)
            time.sleep(2.5)  # past the health cache's max age
            r = c.post(f"/release/jobs/{job_id}", json={"printer": "copier"}, headers=session)
            assert r.status_code == 200, r.text
            # A printer that does not block prints even while SNMP reports an error.
            agent.set_state(["noPaper"], status=1)
            other = submit(srv, "alice", b"printed anyway\n" * 100)
            r = c.post(f"/release/jobs/{other}", json={"printer": "tolerant"}, headers=session)
            assert r.status_code == 200, r.text
        arrived = {f.read_bytes() for f in wait_for_files(printer, len(seen) + 2)}
        assert body in arrived and b"printed anyway\n" * 100 in arrived
    finally:
        agent.stop()


def test_start_up_recovery_is_audited(tmp_path: Path) -> None:
    """A job left releasing by a crash is kept as failed at the next start, and said so."""
    data_dir = tmp_path / "data"
    env = {"SPOOLVAULT_ADMIN_PASSWORD": ADMIN[1]}
    srv = start_server(data_dir, env=env)
    try:
        job_id = submit(srv, "alice", b"being sent when the power went\n")
    finally:
        assert srv.stop() == 0
    with Runtime.open(data_dir, None) as rt, rt.db.session() as s:
        job = s.get_one(Job, job_id)
        job.state, job.printer = JobState.RELEASING, "lobby"
    srv = start_server(data_dir, env=env)
    try:
        [job] = jobs_in(srv.data_dir)
        assert job.state is JobState.FAILED and "may have printed" in (job.state_reason or "")
        with client(srv) as c:
            r = c.get("/audit", params={"action": "server.recovered"}, auth=ADMIN)
        assert r.status_code == 200, r.text
        [event] = r.json()
        assert "1 jobs being released" in event["detail"] and event["actor"] == "system"
    finally:
        srv.stop()


def test_printers_can_be_changed_and_removed_over_rest(srv: Server) -> None:
    add_printer(srv, "lobby", "ipp://127.0.0.1:9/ipp/print")
    with client(srv) as c:
        r = c.patch(
            "/printers/lobby",
            json={"block_release_on_error": True, "hold_timeout_minutes": 20},
            auth=ADMIN,
        )
        assert r.status_code == 200, r.text
        assert r.json()["block_release_on_error"] is True
        assert r.json()["hold_timeout_minutes"] == 20
        assert c.patch("/printers/lobby", json={"uri": None}, auth=ADMIN).status_code == 422
        bad = c.patch("/printers/lobby", json={"uri": "http://x/"}, auth=ADMIN)
        assert bad.status_code == 422 and "detail" in bad.json()
        assert c.patch("/printers/nope", json={"group": "x"}, auth=ADMIN).status_code == 404
        assert c.patch("/printers/lobby", json={"group": "x"}).status_code == 401
        job_id = submit(srv, "alice", b"held on lobby's own queue\n", queue="lobby")
        r = c.delete("/printers/lobby", auth=ADMIN)
        assert r.status_code == 409 and "1 jobs held" in r.json()["detail"]
        done = c.get("/jobs", auth=ADMIN).json()
        assert [j["id"] for j in done] == [job_id]
    with Runtime.open(srv.data_dir, None) as rt:
        from spoolvault.jobs.service import JobService

        JobService(rt.db, rt.store).cancel(job_id, reason="test", actor="admin")
    with client(srv) as c:
        assert c.delete("/printers/lobby", auth=ADMIN).status_code == 200
        assert c.get("/printers", auth=ADMIN).json() == []
        details = [
            e["detail"]
            for e in c.get("/audit", params={"action": "printer.change"}, auth=ADMIN).json()
        ]
    assert details[0] == "removed" and "hold_timeout_minutes None -> 20" in details[1]


def test_prometheus_metrics_count_what_happened(srv: Server, printer: ippeve.EvePrinter) -> None:
    add_printer(srv, "lobby", printer.uri)
    add_printer(srv, "offline", "ipp://127.0.0.1:9/ipp/print", block_release_on_error=True)
    add_user(srv, "alice")
    body = b"counted\n" * 1000
    ids = [submit(srv, "alice", body) for _ in range(3)]
    session = login(srv, "alice")
    with client(srv) as c:
        assert c.post(f"/release/jobs/{ids[0]}", json={"printer": "lobby"}, headers=session)
        r = c.post(f"/release/jobs/{ids[1]}", json={"printer": "offline"}, headers=session)
        assert r.status_code == 409
        assert c.delete(f"/release/jobs/{ids[2]}", headers=session).status_code == 200
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        r = c.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    values: dict[str, float] = {}
    for line in r.text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    assert values['spoolvault_events_total{action="job.submit",outcome="ok"}'] == 3
    assert values['spoolvault_events_total{action="job.release",outcome="ok"}'] == 1
    assert values['spoolvault_events_total{action="job.release_failed",outcome="refused"}'] == 1
    assert values['spoolvault_events_total{action="job.cancel",outcome="ok"}'] == 1
    assert values['spoolvault_spooled_bytes_total{spool="encrypted"}'] == 3 * len(body)
    assert values['spoolvault_printer_errors_total{printer="offline"}'] == 1
    assert values['spoolvault_release_seconds_count{outcome="ok"}'] == 1
    assert values['spoolvault_jobs{state="held"}'] == 1
    assert values['spoolvault_held_bytes{spool="encrypted"}'] == len(body)
    assert "alice" not in r.text and "counted" not in r.text  # no user or document names


def test_hidden_document_names_stay_out_of_admin_views_and_the_audit_log(srv: Server) -> None:
    with client(srv) as c:
        r = c.patch("/servers/primary/settings", json={"hide_document_names": True}, auth=ADMIN)
        assert r.status_code == 200, r.text
    add_user(srv, "alice")
    time.sleep(2.1)  # the job service reads settings at most every 2 s
    req: IppMessage = new_request(Operation.PRINT_JOB, srv, user="alice")
    req.operation.add("job-name", ValueTag.NAME, "merger plans.pdf")
    _, resp = ipp_request(srv, req, b"%PDF-1.4\n% hidden title\n")
    assert resp is not None and resp.code == Status.SUCCESSFUL_OK
    with client(srv) as c:
        [job] = c.get("/jobs", auth=ADMIN).json()
        assert job["title"] == "(hidden)"
        [own] = c.get("/release/jobs", headers=login(srv, "alice")).json()
        assert own["title"] == "merger plans.pdf"  # the owner still knows which job it is
        events = c.get("/audit", params={"action": "job.submit"}, auth=ADMIN).json()
    assert "(hidden)" in events[0]["detail"] and "merger" not in events[0]["detail"]
    lines = (srv.data_dir / "audit" / "audit.jsonl").read_text()
    assert "merger" not in lines


def test_a_job_printed_with_a_pin_needs_it_at_release(
    srv: Server, printer: ippeve.EvePrinter
) -> None:
    """PWG 5100.11 job-password: the owner's login is not enough; five wrong PINs lock it."""
    add_printer(srv, "lobby", printer.uri)
    add_user(srv, "alice")

    def pin_job(body: bytes, pin: bytes) -> int:
        req: IppMessage = new_request(Operation.PRINT_JOB, srv, user="alice")
        req.operation.add("job-password", ValueTag.OCTET_STRING, pin)
        req.operation.add("job-password-encryption", ValueTag.KEYWORD, "none")
        req.operation.add("document-format", ValueTag.MIME_MEDIA_TYPE, "text/plain")
        _, resp = ipp_request(srv, req, body)
        assert resp is not None and resp.code == Status.SUCCESSFUL_OK, resp
        job_id = job_group(resp).get("job-id")
        assert job_id is not None and isinstance(job_id.value, int)
        return job_id.value

    body = b"salary letters\n" * 100
    first, second = pin_job(body, b"4711"), pin_job(b"locked out\n", b"2580")
    session = login(srv, "alice")
    seen = set(printer.files())
    with client(srv) as c:
        [listed] = [j for j in c.get("/release/jobs", headers=session).json() if j["id"] == first]
        assert listed["pin_protected"] is True

        def release(job_id: int, pin: str | None) -> httpx.Response:
            body = {"printer": "lobby"} | ({"job_pin": pin} if pin is not None else {})
            return c.post(f"/release/jobs/{job_id}", json=body, headers=session)

        r = release(first, None)
        assert r.status_code == 403 and "job PIN" in r.json()["detail"]
        r = release(first, "0000")
        assert r.status_code == 403 and "wrong job PIN" in r.json()["detail"]
        r = release(first, "4711")
        assert r.status_code == 200, r.text
        codes = [release(second, f"{n:04d}").status_code for n in range(5)]
        assert codes == [403, 403, 403, 403, 429]
        r = release(second, "2580")  # right, but too late: locked for a while
        assert r.status_code == 429 and "Retry-After" in r.headers
        events = c.get("/audit", params={"job_id": second}, auth=ADMIN).json()
    assert set(printer.files()) - seen and body in {
        f.read_bytes() for f in wait_for_files(printer, len(seen) + 1)
    }
    assert sum(e["action"] == "job.release_failed" for e in events) == 6
    assert not any("2580" in e["detail"] or "0001" in e["detail"] for e in events)
    # An administrator releases it without the PIN (admin release, audited as such).
    done = spoolvault(
        "jobs", "release", str(second), "--printer", "lobby", "--data-dir", str(srv.data_dir)
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_direct_job_is_sent_again_when_its_printer_comes_up(srv: Server, tmp_path: Path) -> None:
    """A direct queue's printer is down when the job comes in (connection refused): the
    job is tried again, and prints once a printer answers on that address."""
    port = cupsd.free_port()
    add_printer(srv, "kiosk", f"ipp://127.0.0.1:{port}/ipp/print", mode="direct")
    body = ipptool.minimal_pdf(1, marker="late printer")
    job_id = submit(srv, "walk-in", body, fmt="application/pdf", queue="kiosk")
    job = the_job(srv, lambda j: j.state is JobState.HELD and bool(j.state_reason), timeout=10)
    assert job.state is JobState.HELD and "not printed" in (job.state_reason or ""), job
    printer = ippeve.start_printer(tmp_path / "late", port=port)
    try:
        job = the_job(srv, lambda j: j.state is JobState.PRINTED)
        assert job.id == job_id and job.state is JobState.PRINTED, job.state_reason
        printer.wait_for_body(body)
    finally:
        printer.stop()
