"""The audit log with a real file and database, the real CLI, and a real server."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import stat
import subprocess
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import anyio
import httpx
import pytest
from sqlalchemy import delete, update
from sqlalchemy.exc import OperationalError

from harness import cupsd
from harness.server import Server, ipp_request, job_group, new_request, spoolvault, start_server
from spoolvault.admin.actions import describe_refused_settings, describe_settings_change
from spoolvault.audit import (
    GENESIS,
    Action,
    AuditLog,
    Event,
    Outcome,
    audit_path,
    list_events,
    verify,
)
from spoolvault.audit.events import canonical
from spoolvault.db import AuditEvent, Database, JobState
from spoolvault.ipp.constants import Operation, Status, ValueTag
from spoolvault.jobs.intake import Submission
from spoolvault.jobs.service import JobService
from spoolvault.runtime import Runtime
from test_db import pg_url  # noqa: F401 - the PostgreSQL fixture

ADMIN = ("admin", "audit-admin-pw-7c41e9")
PIN = b"90817263"
LINE_RE = re.compile(r"\bline (\d+)\b")


@dataclass
class Site:
    """A data directory with its database, as `spoolvault run` leaves it."""

    root: Path
    db: Database

    @property
    def file(self) -> Path:
        return audit_path(self.root)

    def open(self, clock: Callable[[], datetime] | None = None) -> AuditLog:
        if clock is None:
            return AuditLog.open(self.file, self.db)
        return AuditLog.open(self.file, self.db, clock=clock)

    def lines(self) -> list[bytes]:
        return self.file.read_bytes().splitlines(keepends=True)

    def write(self, lines: list[bytes]) -> None:
        self.file.write_bytes(b"".join(lines))


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    with Runtime.open(tmp_path / "data", None, create=True) as rt:
        yield Site(rt.data.root, rt.db)


def some_events(audit: AuditLog, n: int) -> list[Event]:
    """Events of every kind: nulls, numbers, unicode, quotes, newlines, brackets."""
    out = []
    kinds = list(Action)
    for i in range(n):
        event = audit.record(
            ["alice", "bob", "system", "zoë"][i % 4],
            kinds[i % len(kinds)],
            job_id=None if i % 5 == 0 else i,
            printer=None if i % 3 else f"lobby-{i}",
            outcome=list(Outcome)[i % 3],
            detail=f'title "Q{i} [draft]" résumé\nline two' if i % 2 else "",
        )
        assert event is not None
        out.append(event)
    return out


def cli_verify(site: Site, *extra: str) -> tuple[int, str, str]:
    r = spoolvault("audit", "verify", "--data-dir", str(site.root), *extra)
    return r.returncode, r.stdout, r.stderr


def reported_line(stderr: str) -> int:
    m = LINE_RE.search(stderr)
    assert m, stderr
    return int(m.group(1))


# -- the chain -------------------------------------------------------------------------------


def test_chain_verifies_after_many_events_from_many_threads(site: Site) -> None:
    audit = site.open()
    some_events(audit, 30)

    def work(n: int) -> None:
        for i in range(40):
            assert audit.record(f"user{n}", Action.ADMIN_VIEW, detail=f"{n}/{i}") is not None

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    head = audit.head
    audit.close()

    lines = site.lines()
    assert len(lines) == 30 + 8 * 40
    events = [Event.parse(raw[:-1]) for raw in lines]
    assert [e.id for e in events] == list(range(1, len(lines) + 1))
    assert events[0].prev == GENESIS and events[-1].hash == head
    assert all(raw == e.line() for raw, e in zip(lines, events, strict=True))  # canonical
    assert stat.S_IMODE(site.file.stat().st_mode) == 0o600
    assert stat.S_IMODE(site.file.parent.stat().st_mode) == 0o700

    result = verify(site.file, site.db)
    assert result.ok and result.events == len(lines) and result.head == head
    code, out, err = cli_verify(site)
    assert code == 0, err
    assert f"{len(lines)} events verified" in out and head in out


def test_hash_is_sha256_of_the_canonical_line_without_hash(site: Site) -> None:
    audit = site.open()
    [first, second] = some_events(audit, 2)
    audit.close()
    obj = json.loads(site.lines()[1])
    stated = obj.pop("hash")
    body = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert stated == hashlib.sha256(body.encode()).hexdigest() == second.hash
    assert obj["prev"] == first.hash
    assert canonical({"b": 1, "a": "é"}) == '{"a":"é","b":1}'.encode()
    assert describe_settings_change("s", {"ldap_bind_password": "a"}, {}, ["ldap_bind_password"])
    for detail in (
        describe_settings_change("s", {}, {"smtp_password": "hunter2"}, ["smtp_password"]),
        describe_refused_settings("s", ["api_token"], "api_token must not be 'hunter2'"),
    ):
        assert "hunter2" not in detail
    if shutil.which("jq"):  # docs/audit.md: any sort-keys, compact, UTF-8 JSON tool will do
        for raw in site.lines():
            body = subprocess.run(
                ["jq", "-cjS", "del(.hash)"], input=raw, capture_output=True, check=True
            ).stdout
            assert hashlib.sha256(body).hexdigest() == json.loads(raw)["hash"]


def test_every_edit_of_every_field_of_every_line_is_detected(site: Site) -> None:
    audit = site.open()
    some_events(audit, 8)
    audit.close()
    original = site.lines()
    changed = {
        "id": lambda v: v + 100,
        "at": lambda v: v.replace("2", "1", 1),
        "actor": lambda v: v + "x",
        "action": lambda v: "job.release",
        "job_id": lambda v: 999 if v is None else None,
        "printer": lambda v: "other" if v is None else None,
        "outcome": lambda v: "ok" if v != "ok" else "failed",
        "detail": lambda v: v + ".",
        "prev": lambda v: "f" * 64,
        "hash": lambda v: "e" * 64,
    }
    for index in range(len(original)):
        for name, change in changed.items():
            obj = json.loads(original[index])
            if obj[name] == change(obj[name]):
                continue
            obj[name] = change(obj[name])
            lines = list(original)
            lines[index] = canonical(obj) + b"\n"
            site.write(lines)
            result = verify(site.file, site.db)
            assert not result.ok and result.line == index + 1, (name, index, result)
    site.write(original)
    assert verify(site.file, site.db).ok


def _edit(lines: list[bytes]) -> int:
    lines[4] = lines[4].replace(b'"outcome":"', b'"outcome":"x', 1)
    return 5


def _delete(lines: list[bytes]) -> int:
    del lines[6]
    return 7


def _reorder(lines: list[bytes]) -> int:
    lines[2], lines[3] = lines[3], lines[2]
    return 3


def _truncate_mid_line(lines: list[bytes]) -> int:
    lines[8] = lines[8][:40]
    del lines[9:]
    return 9


def _delete_last(lines: list[bytes]) -> int:
    del lines[-1]
    return len(lines) + 1


def _rechain_from(lines: list[bytes]) -> int:
    # An attacker who edits a line and recomputes every later hash: the chain holds, the
    # database cross-check does not.
    prev = json.loads(lines[4])["prev"]
    for i in range(4, len(lines)):
        obj = json.loads(lines[i])
        obj.pop("hash")
        obj["prev"] = prev
        if i == 4:
            obj["actor"] = "somebody-else"
        obj["hash"] = prev = hashlib.sha256(canonical(obj)).hexdigest()
        lines[i] = canonical(obj) + b"\n"
    return 5


def _whitespace(lines: list[bytes]) -> int:
    lines[1] = lines[1].replace(b",", b", ", 1)
    return 2


@pytest.mark.parametrize(
    "attack",
    [_edit, _delete, _reorder, _truncate_mid_line, _delete_last, _rechain_from, _whitespace],
)
def test_cli_finds_file_tampering_and_its_line(site: Site, attack: Callable[..., int]) -> None:
    audit = site.open()
    some_events(audit, 12)
    audit.close()
    lines = site.lines()
    expected = attack(lines)
    site.write(lines)
    code, out, err = cli_verify(site)
    assert code == 1, (out, err)
    assert "FAILED" in err and reported_line(err) == expected, err
    assert "Traceback" not in err


def test_cli_finds_database_rows_edited_or_deleted(site: Site) -> None:
    audit = site.open()
    some_events(audit, 10)
    audit.close()
    with site.db.session() as s:
        s.execute(update(AuditEvent).where(AuditEvent.id == 4).values(detail="nothing to see"))
    code, _, err = cli_verify(site)
    assert code == 1 and reported_line(err) == 4 and "detail" in err, err

    with site.db.session() as s:
        s.execute(delete(AuditEvent).where(AuditEvent.id == 4))
    code, _, err = cli_verify(site)
    assert code == 1 and reported_line(err) == 4 and "not in the database" in err, err


def test_anchor_detects_a_rewritten_history(site: Site) -> None:
    audit = site.open()
    some_events(audit, 5)
    anchor = audit.head
    some_events(audit, 3)
    audit.close()
    code, out, _ = cli_verify(site, "--anchor", anchor)
    assert code == 0, out
    code, _, err = cli_verify(site, "--anchor", "a" * 64)
    assert code == 1 and "anchor" in err


def test_cli_operator_errors_are_one_line_exit_2(tmp_path: Path) -> None:
    r = spoolvault("audit", "verify", "--data-dir", str(tmp_path / "nowhere"))
    assert r.returncode == 2 and "does not exist" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


# -- crashes and failures --------------------------------------------------------------------


def test_torn_last_line_is_set_aside_and_the_chain_continues(site: Site) -> None:
    audit = site.open()
    some_events(audit, 6)
    audit.close()
    whole = site.file.read_bytes()
    torn = b'{"action":"job.submit","actor":"alice","at":"2026-11'
    site.file.write_bytes(whole + torn)  # a crash in the middle of writing line 7
    code, _, err = cli_verify(site)
    assert code == 1 and reported_line(err) == 7 and "incomplete" in err

    audit = site.open()
    [aside] = site.file.parent.glob("audit.jsonl.torn-*")
    assert aside.read_bytes() == torn
    assert stat.S_IMODE(aside.stat().st_mode) == 0o600
    assert site.file.read_bytes().startswith(whole)
    recovered = Event.parse(site.lines()[6][:-1])
    assert recovered.action == Action.AUDIT_RECOVERED and recovered.id == 7
    assert "moved" in recovered.detail and aside.name in recovered.detail
    assert audit.record("alice", Action.JOB_SUBMIT, job_id=1) is not None
    assert audit.status == "ok"
    audit.close()
    assert verify(site.file, site.db).ok


def test_damaged_last_line_is_set_aside_too(site: Site) -> None:
    audit = site.open()
    some_events(audit, 3)
    audit.close()
    lines = site.lines()
    site.write([*lines, b"\x00\x00\x00 not json\n"])
    audit = site.open()
    audit.close()
    [aside] = site.file.parent.glob("audit.jsonl.torn-*")
    assert aside.read_bytes() == b"\x00\x00\x00 not json\n"
    assert verify(site.file, site.db).ok


def test_line_synced_but_not_in_the_database_is_restored(site: Site) -> None:
    audit = site.open()
    events = some_events(audit, 5)
    audit.close()
    # A crash after the file's fsync, before the database commit.
    with site.db.session() as s:
        s.execute(delete(AuditEvent).where(AuditEvent.id >= 4))
    assert not verify(site.file, site.db).ok
    audit = site.open()
    audit.close()
    result = verify(site.file, site.db)
    assert result.ok and result.events == 6
    last = Event.parse(site.lines()[-1][:-1])
    assert last.action == Action.AUDIT_RECOVERED and "restored 2 events" in last.detail
    assert last.prev == events[-1].hash


def test_a_failed_write_never_breaks_the_operation_and_shows(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    with Runtime.open(site.root, None) as rt:
        audit = site.open()
        jobs = JobService(rt.db, rt.store, audit=audit)
        job = submit(jobs, "alice", b"first")
        # The file becomes unwritable under the server (a read-only descriptor in its place).
        assert audit._fd is not None
        read_only = os.open(site.file, os.O_RDONLY)
        os.dup2(read_only, audit._fd)
        os.close(read_only)
        with caplog.at_level(logging.ERROR, logger="spoolvault.audit.log"):
            cancelled = jobs.cancel(job, reason="changed my mind", actor="alice")
        assert cancelled.state is JobState.CANCELLED  # the operation went on
        assert audit.status == "error" and audit.error
        assert any("NOT (durably) recorded" in r.getMessage() for r in caplog.records)
        audit.close()
    assert verify(site.file, site.db).ok  # nothing half-written: the event is simply missing


def test_rows_wait_for_a_database_that_fails_and_then_catch_up(
    site: Site, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    audit = site.open()
    monkeypatch.setattr(audit, "DB_RETRY_SECONDS", 0.05)
    real_db = audit.db

    def down() -> None:
        raise OperationalError("INSERT", {}, Exception("database is down"))

    monkeypatch.setattr(audit, "db", SimpleNamespace(engine=SimpleNamespace(begin=down)))
    with caplog.at_level(logging.ERROR, logger="spoolvault.audit.log"):
        events = some_events(audit, 5)  # durable in the file all the same
        assert not audit.sync(timeout=0.3)
    assert audit.status == "error" and "wait for the database" in (audit.error or "")
    monkeypatch.setattr(audit, "db", real_db)
    assert audit.sync(timeout=10)
    assert audit.status == "ok"
    audit.close()
    result = verify(site.file, site.db)
    assert result.ok and result.events == 5 and result.head == events[-1].hash


@pytest.mark.postgres
def test_postgres_chain_cross_check_and_queries(pg_url: str, tmp_path: Path) -> None:  # noqa: F811
    with Database.open(pg_url) as db:
        site = Site(tmp_path, db)
        audit = site.open()
        events = some_events(audit, 25)
        audit.close()
        result = verify(site.file, db)
        assert result.ok and result.events == 25 and result.head == events[-1].hash
        assert [e.id for e in list_events(db, limit=3)] == [25, 24, 23]
        assert [e.id for e in list_events(db, before_id=3)] == [2, 1]
        assert all(e.actor == "zoë" for e in list_events(db, actor="zoë"))
        assert list_events(db, limit=1000) == list(reversed(events))  # same fields as the file
        with db.session() as s:
            s.execute(update(AuditEvent).where(AuditEvent.id == 9).values(actor="nobody"))
        result = verify(site.file, db)
        assert result.line == 9 and "actor" in (result.problem or "")


# -- events of the job service -------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


def submit(jobs: JobService, owner: str, data: bytes, title: str = "") -> int:
    async def go() -> int:
        sub = Submission(owner=owner, queue="secure", title=title)
        return (await jobs.submit(sub, _chunks(data))).id

    return anyio.run(go)


def test_submit_and_expiry_use_the_service_clock(site: Site) -> None:
    clock = Clock()
    with Runtime.open(site.root, None) as rt:
        audit = site.open(clock)
        jobs = JobService(rt.db, rt.store, clock=clock, audit=audit)
        job = submit(jobs, "alice", b"x" * 1000, title="budget.xlsx")
        clock.now += timedelta(minutes=241)
        assert jobs.expire_held() == 1
        audit.close()
    submitted, expired = [Event.parse(raw[:-1]) for raw in site.lines()]
    assert (submitted.action, submitted.actor, submitted.job_id) == ("job.submit", "alice", job)
    assert submitted.at == "2026-11-24T09:00:00.000000Z"
    assert "'budget.xlsx'" in submitted.detail and "1000 bytes" in submitted.detail
    assert (expired.action, expired.actor, expired.job_id) == ("job.expire", "system", job)
    assert expired.at == "2026-11-24T13:01:00.000000Z" and expired.outcome == "ok"


# -- a real server -------------------------------------------------------------------------


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[Server]:
    s = start_server(tmp_path / "data", env={"SPOOLVAULT_ADMIN_PASSWORD": ADMIN[1]})
    try:
        yield s
    finally:
        s.stop()


def ipp_print(srv: Server, user: str, title: str) -> int:
    req = new_request(Operation.PRINT_JOB, srv, user=user)
    req.operation.add("job-name", ValueTag.NAME, title)
    req.operation.add("job-password", ValueTag.OCTET_STRING, PIN)
    req.operation.add("job-password-encryption", ValueTag.KEYWORD, "none")
    _, resp = ipp_request(srv, req, b"%PDF-1.4 audit test\n")
    assert resp is not None and resp.code == Status.SUCCESSFUL_OK, resp
    job_id = job_group(resp).get("job-id")
    assert job_id is not None and isinstance(job_id.value, int)
    return job_id.value


def ipp_cancel(srv: Server, user: str, job_id: int) -> int:
    req = new_request(Operation.CANCEL_JOB, srv, user=user)
    req.operation.add("job-id", ValueTag.INTEGER, job_id)
    _, resp = ipp_request(srv, req)
    assert resp is not None
    return resp.code


def test_server_records_who_did_what_and_never_a_secret(srv: Server) -> None:
    title = "Board minutes [draft] ünïcode"
    job = ipp_print(srv, "alice", title)
    assert ipp_cancel(srv, "mallory", job) == Status.CLIENT_ERROR_NOT_AUTHORIZED
    assert ipp_cancel(srv, "alice", job) == Status.SUCCESSFUL_OK
    held = ipp_print(srv, "alice", "kept")
    unreachable = f"ipp://127.0.0.1:{cupsd.free_port()}/ipp/print"
    with httpx.Client(base_url=srv.url + "/api/v1", timeout=60) as c:
        printer = {"name": "jammed", "uri": unreachable, "block_release_on_error": True}
        assert c.post("/printers", json=printer, auth=ADMIN).status_code == 201
        user = {"username": "alice", "password": "alice-pw-5512"}
        assert c.post("/users", json=user, auth=ADMIN).status_code == 201
        r = c.post("/release/session", json=user)
        station = {"Authorization": f"Bearer {r.json()['token']}"}
        r = c.post(f"/release/jobs/{held}", json={"printer": "jammed"}, headers=station)
        assert r.status_code == 409, r.text
        assert c.delete(f"/release/jobs/{held}", headers=station).status_code == 200
        r = c.patch("/servers/primary/settings", json={"hold_timeout_minutes": 30}, auth=ADMIN)
        assert r.status_code == 200, r.text
        r = c.patch("/servers/primary/settings", json={"print_archiving": True}, auth=ADMIN)
        assert r.status_code == 409, r.text
        assert c.get("/jobs", auth=ADMIN).status_code == 200
        assert c.get("/audit").status_code == 401
        assert c.get("/audit", auth=("admin", "not-the-password")).status_code == 401

        events = c.get("/audit", auth=ADMIN).json()
        seen = [(e["action"], e["actor"], e["job_id"], e["outcome"]) for e in reversed(events)]
        assert seen == [
            ("job.submit", "alice", job, "ok"),
            ("job.cancel", "mallory", job, "refused"),
            ("job.cancel", "alice", job, "ok"),
            ("job.submit", "alice", held, "ok"),
            ("printer.change", "admin", None, "ok"),
            ("user.change", "admin", None, "ok"),  # created alice (fields, never values)
            ("auth.login", "alice", None, "ok"),  # her release station login
            ("job.release_failed", "alice", held, "refused"),
            ("job.cancel", "alice", held, "ok"),
            ("settings.change", "admin", None, "ok"),
            ("settings.change", "admin", None, "refused"),
            ("admin.view", "admin", None, "ok"),
            ("auth.login", "admin", None, "refused"),  # the wrong Basic password (lockout)
        ]
        by_action = {e["action"]: e for e in events}
        assert title in events[-1]["detail"] and "PIN-protected" in events[-1]["detail"]
        blocked = by_action["job.release_failed"]
        assert blocked["printer"] == "jammed" and "unreachable" in blocked["detail"]
        changes = [e["detail"] for e in events if e["action"] == "settings.change"]
        assert "hold_timeout_minutes 240 -> 30" in changes[1]
        assert "print_archiving" in changes[0] and "cannot both be enabled" in changes[0]
        assert "GET /api/v1/jobs" in by_action["admin.view"]["detail"]
        ids = [e["id"] for e in events]
        assert ids == sorted(ids, reverse=True)

        def get(**params: object) -> list[dict[str, object]]:
            r = c.get("/audit", params=params, auth=ADMIN)
            assert r.status_code == 200, r.text
            return r.json()  # type: ignore[no-any-return]

        assert [e["action"] for e in get(job_id=job)] == ["job.cancel"] * 2 + ["job.submit"]
        assert [e["job_id"] for e in get(actor="mallory")] == [job]
        assert len(get(action="settings.change")) == 2
        newest = get(limit=2)
        assert len(newest) == 2 and newest[0]["action"] == "admin.view"  # the last look
        older = get(before_id=newest[-1]["id"], limit=1000)
        assert [e["id"] for e in older] == list(range(int(newest[-1]["id"]) - 1, 0, -1))
        for bad in ({"action": "job.frobnicate"}, {"limit": 0}, {"limit": 1001}):
            assert c.get("/audit", params=bad, auth=ADMIN).status_code == 422
        health = c.get("/health").json()  # /api/v1/health
        assert health["audit"] == "ok", health

    code, out, err = cli_verify_dir(srv.data_dir)  # while the server runs
    assert code == 0, err
    assert srv.stop() == 0
    code, out, err = cli_verify_dir(srv.data_dir)
    assert code == 0, err
    count = len(audit_path(srv.data_dir).read_bytes().splitlines())
    assert f"{count} events verified" in out

    raw = audit_path(srv.data_dir).read_bytes()
    assert title.encode() in raw  # titles are metadata
    with Runtime.open(srv.data_dir, None) as rt, rt.db.session(write=False) as s:
        stored = " ".join(
            f"{e.actor} {e.detail} {e.printer}" for e in s.query(AuditEvent).all()
        ).encode()
    for secret in (ADMIN[1].encode(), PIN, b"alice-pw-5512"):
        assert secret not in raw and secret not in stored


def cli_verify_dir(data_dir: Path) -> tuple[int, str, str]:
    r = spoolvault("audit", "verify", "--data-dir", str(data_dir))
    return r.returncode, r.stdout, r.stderr
