"""Print Archiving: printed plain jobs kept for approved administrators, audited, purged."""

from __future__ import annotations

import shutil
import time
from datetime import timedelta
from pathlib import Path

import anyio
import pytest

from harness import ippeve, ipptool
from harness.server import ADMIN, Server
from harness.web_helpers import add_printer, client, submit, wait_for_files
from spoolvault.archive import Archive, archive_dir
from spoolvault.db import Database, Job, JobState, database_url
from spoolvault.jobs.intake import Submission
from spoolvault.jobs.service import JobService
from spoolvault.runtime import Runtime
from test_jobs import Clock, _chunks

pytestmark = pytest.mark.skipif(ippeve.IPPEVEPRINTER is None, reason="needs cups-ipp-utils")
AUDITOR = ("auditor", "auditor-pw-123")


@pytest.fixture
def srv(srv: Server) -> Server:
    """The shared server fixture, with a second administrator."""
    with Database.open(database_url(None, srv.data_dir / "spoolvault.db")) as db:
        db.add_user(AUDITOR[0], AUDITOR[1], is_admin=True)
    return srv


def test_archive_keeps_printed_plain_documents_for_approved_administrators(
    srv: Server, printer: ippeve.EvePrinter
) -> None:
    pdf = ipptool.minimal_pdf(2, marker="archived quarterly report")
    text = b"archived plain text\n" * 200
    with client(srv) as c:
        r = c.patch(
            "/servers/primary/settings",
            json={"spool_file_encryption": False, "print_archiving": True},
            auth=ADMIN,
        )
        assert r.status_code == 200, r.text
        r = c.patch(
            "/servers/primary/settings", json={"print_archive_viewers": "auditor"}, auth=ADMIN
        )
        assert r.status_code == 200, r.text
        assert c.post("/users", json={"username": "alice", "password": "password-1"}, auth=ADMIN)
    add_printer(srv, "lobby", printer.uri)
    time.sleep(2.1)  # the job service reads settings at most every 2 s
    ids = [submit(srv, "alice", pdf, fmt="application/pdf"), submit(srv, "alice", text)]
    with client(srv) as c:
        token = c.post(
            "/release/session", json={"username": "alice", "password": "password-1"}
        ).json()["token"]
        for job_id in ids:
            r = c.post(
                f"/release/jobs/{job_id}",
                json={"printer": "lobby"},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert r.status_code == 200, r.text
    wait_for_files(printer, 2)
    kept = sorted(archive_dir(srv.data_dir).glob("*.spool"))
    assert len(kept) == 2 and {p.read_bytes() for p in kept} == {pdf, text}
    assert not list((srv.data_dir / "spool" / "plain").glob("*.spool"))

    with client(srv) as c:
        r = c.get("/archive", auth=ADMIN)  # an administrator, but not approved
        assert r.status_code == 403 and "approved" in r.json()["detail"]
        listed = c.get("/archive", auth=AUDITOR).json()
        assert [a["id"] for a in listed] == sorted(ids, reverse=True)
        assert listed[1]["printer"] == "lobby" and listed[1]["pages"] == 2
        assert [
            a["id"] for a in c.get("/archive", params={"title": "nothing"}, auth=AUDITOR).json()
        ] == []
        doc = c.get(f"/archive/{ids[0]}/document", auth=AUDITOR)
        assert doc.status_code == 200 and doc.content == pdf
        assert doc.headers["content-type"] == "application/pdf"
        preview = c.get(f"/archive/{ids[0]}/preview.png", auth=AUDITOR)
        if shutil.which("gs"):
            assert preview.status_code == 200, preview.text
            assert preview.content.startswith(b"\x89PNG\r\n\x1a\n")
        else:
            assert preview.status_code == 404 and "Ghostscript" in preview.json()["detail"]
        none = c.get(f"/archive/{ids[1]}/preview.png", auth=AUDITOR)
        assert none.status_code == 404 and "no preview" in none.json()["detail"]
        assert c.get("/archive/99999/document", auth=AUDITOR).status_code == 404
        events = c.get("/audit", params={"action": "archive.view"}, auth=ADMIN).json()
    outcomes = [(e["actor"], e["outcome"]) for e in events]
    assert ("admin", "refused") in outcomes and ("auditor", "ok") in outcomes
    assert any("downloaded" in e["detail"] and e["job_id"] == ids[0] for e in events)


def test_encrypted_jobs_are_never_archived(srv: Server, printer: ippeve.EvePrinter) -> None:
    """Encryption on (the default): a printed job is shredded, whatever is asked."""
    with client(srv) as c:
        r = c.patch("/servers/primary/settings", json={"print_archiving": True}, auth=ADMIN)
        assert r.status_code == 409 and "Spool File Encryption" in r.json()["detail"]
        c.post("/users", json={"username": "bob", "password": "password-1"}, auth=ADMIN)
    add_printer(srv, "lobby", printer.uri)
    seen = len(printer.files())
    job_id = submit(srv, "bob", b"secret, never archived\n")
    with client(srv) as c:
        token = c.post("/release/session", json={"username": "bob", "password": "password-1"})
        r = c.post(
            f"/release/jobs/{job_id}",
            json={"printer": "lobby"},
            headers={"Authorization": f"Bearer {token.json()['token']}"},
        )
        assert r.status_code == 200, r.text
    wait_for_files(printer, seen + 1)
    assert list(archive_dir(srv.data_dir).glob("*")) == []


def test_purge_removes_documents_past_the_retention(tmp_path: Path) -> None:
    clock = Clock()
    with Runtime.open(tmp_path / "data", None, create=True) as rt:
        jobs = JobService(rt.db, rt.store, clock=clock)
        jobs.archive = Archive(archive_dir(rt.data.root), rt.db)
        rt.db.update_settings(
            "primary",
            {"spool_file_encryption": False, "print_archiving": True, "archive_retention_days": 7},
        )

        def printed(n: int) -> str:
            async def go() -> int:
                job = await jobs.submit(Submission(owner="a", queue="secure"), _chunks(b"d%d" % n))
                return job.id

            job_id = anyio.run(go)
            with rt.db.session() as s:
                job = s.get_one(Job, job_id)
                job.state, job.completed_at = JobState.PRINTED, clock.now
                name = job.spool_name
            assert name is not None
            jobs.archive.keep(rt.store.plain, name)  # type: ignore[union-attr]
            return name

        old = printed(1)
        clock.now += timedelta(days=5)
        young = printed(2)
        clock.now += timedelta(days=3)  # old: 8 days, young: 3 days
        assert jobs.purge_archive() == 1
        assert not jobs.archive.path(old).exists() and jobs.archive.path(young).exists()
        assert jobs.purge_archive() == 0  # looked at hourly, not on every pass
