"""Expiry reminders against a real SMTP server (aiosmtpd), and the link that keeps a job."""

from __future__ import annotations

import email
import re
import socket
from collections.abc import Iterator
from datetime import timedelta
from email.message import Message
from pathlib import Path

import anyio
import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from harness.server import ADMIN, jobs_in, start_server
from harness.web_helpers import submit
from spoolvault.identity import open_card_key
from spoolvault.identity.users import Users
from spoolvault.jobs.intake import Submission
from spoolvault.jobs.reminders import Reminders, check_token, link_token
from spoolvault.jobs.service import JobService
from spoolvault.runtime import Runtime
from test_jobs import Clock, _chunks


class Inbox:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, int]]:
    box = Inbox()
    controller = Controller(box, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield box, controller.port
    finally:
        controller.stop()


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    with Runtime.open(tmp_path / "data", None, create=True) as runtime:
        yield runtime


def held(jobs: JobService, owner: str, title: str) -> int:
    async def go() -> int:
        sub = Submission(owner=owner, queue="secure", title=title)
        return (await jobs.submit(sub, _chunks(b"document"))).id

    return anyio.run(go)


def test_one_reminder_before_expiry_with_a_link_that_only_fits_its_job(
    rt: Runtime, inbox: tuple[Inbox, int]
) -> None:
    box, port = inbox
    clock = Clock()
    jobs = JobService(rt.db, rt.store, clock=clock)
    key = open_card_key(rt.data.root, rt.db)
    users = Users(rt.db, key)
    users.add("alice", {"email": "alice@example.org"})
    users.add("bob", {})  # no address: never mailed
    rt.db.update_settings(
        "primary",
        {
            "smtp_host": "127.0.0.1",
            "smtp_port": port,
            "hold_timeout_minutes": 60,
            "expiry_reminder_minutes": 30,
            "public_url": "https://print.example.org:8631",
        },
    )
    reminders = Reminders(jobs, key)
    job_id = held(jobs, "alice", "Budget 2027.pdf")
    held(jobs, "bob", "no mail for bob")
    clock.now += timedelta(minutes=20)
    assert anyio.run(reminders.send_due) == 0  # expires in 40 minutes: not yet
    clock.now += timedelta(minutes=15)
    assert anyio.run(reminders.send_due) == 1
    assert anyio.run(reminders.send_due) == 0  # one reminder per job
    [mail] = box.messages
    assert mail["To"] == "alice@example.org"
    assert "Budget 2027.pdf" in mail["Subject"] and "25 minutes" in mail["Subject"]
    body = mail.get_payload(decode=True)
    assert isinstance(body, bytes)
    link = re.search(rb"https://print\.example\.org:8631/hold/extend/(\S+)", body)
    assert link is not None
    token = link.group(1).decode()
    job = jobs.get(job_id)
    assert check_token(key, job, token) and token == link_token(key, job)
    assert not check_token(key, job, token[:-1] + ("0" if token[-1] != "0" else "1"))
    other = jobs.get(job_id + 1)
    assert not check_token(key, other, token)
    assert job.reminder_sent_at == clock.now


def test_a_relay_that_fails_keeps_the_reminder_due(rt: Runtime) -> None:
    clock = Clock()
    jobs = JobService(rt.db, rt.store, clock=clock)
    key = open_card_key(rt.data.root, rt.db)
    Users(rt.db, key).add("alice", {"email": "alice@example.org"})
    rt.db.update_settings(
        "primary",
        {"smtp_host": "127.0.0.1", "smtp_port": free_port(), "hold_timeout_minutes": 60},
    )
    reminders = Reminders(jobs, key)
    job_id = held(jobs, "alice", "report")
    clock.now += timedelta(minutes=45)
    assert anyio.run(reminders.send_due) == 0
    assert jobs.get(job_id).reminder_sent_at is None
    assert [d.job_id for d in reminders.due()] == [job_id]  # still due, tried again later


def test_the_link_page_keeps_the_job_once(tmp_path: Path) -> None:
    srv = start_server(tmp_path / "data", env={"SPOOLVAULT_ADMIN_PASSWORD": ADMIN[1]})
    try:
        job_id = submit(srv, "alice", b"keep me longer\n")
        with Runtime.open(srv.data_dir, None) as rt:
            token = link_token(
                open_card_key(rt.data.root, rt.db), JobService(rt.db, rt.store).get(job_id)
            )
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            page = c.get(f"/hold/extend/{token}")
            assert page.status_code == 200 and "<form method=post>" in page.text
            [job] = jobs_in(srv.data_dir)
            assert job.hold_extended_until is None  # a GET changes nothing
            kept = c.post(f"/hold/extend/{token}")
            assert kept.status_code == 200 and "held until" in kept.text, kept.text
            again = c.post(f"/hold/extend/{token}")
            assert again.status_code == 409 and "once" in again.text
            assert c.get(f"/hold/extend/{job_id}.{'0' * 32}").status_code == 404
            assert c.get("/hold/extend/nonsense").status_code == 404
            events = c.get("/api/v1/audit", params={"action": "job.hold_extend"}, auth=ADMIN)
        [job] = jobs_in(srv.data_dir)
        assert job.hold_extended_until is not None
        assert [e["actor"] for e in events.json()] == ["alice"]
    finally:
        srv.stop()
