"""Disk full: a real 1 MiB tmpfs as EncryptedSpoolDir, eight clients on every intake path.

tests/test_ipp_server.py already proves one Print-Job on a full disk gets
server-error-temporary-error and leaves nothing; this drill adds raw 9100, LPD and
Create-Job/Send-Document, concurrency, and release (and the space it frees) while full.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from harness import drills
from harness.fakeprinter import FakePrinter
from harness.server import Server
from harness.tmpfs import mounted_tmpfs
from spoolvault.db import JobState
from spoolvault.ipp.constants import Operation, Status, ValueTag


@pytest.fixture
def full(tmp_path: Path) -> Iterator[tuple[Server, Path]]:
    with mounted_tmpfs(tmp_path / "tiny", "size=1m,mode=0700") as spool_dir:
        data_dir = tmp_path / "data"
        data_dir.mkdir()
        (data_dir / "print-provider.conf").write_text(f"EncryptedSpoolDir={spool_dir}\n")
        srv = drills.start(data_dir, tmp_path / "tmp", "--lpd", "127.0.0.1:0")
        try:
            yield srv, spool_dir
        finally:
            srv.stop()


def temp_files(spool_dir: Path) -> list[str]:
    return [p.name for p in spool_dir.iterdir() if p.name.startswith(".tmp-")]


def test_full_disk_every_path_clear_errors_nothing_partial_held_jobs_release(
    full: tuple[Server, Path], tmp_path: Path
) -> None:
    srv, spool_dir = full
    # Eight clients until the disk is full and for a while after.
    load = drills.Load()
    threads = drills.start_load(load, srv, "full", seed=7)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and load.failures < 40:
        time.sleep(0.1)
    load.stop.set()
    for t in threads:
        t.join(timeout=30)
    assert load.failures >= 40 and load.acked, (load.failures, len(load.acked))
    found = drills.check_consistency(
        srv.data_dir, load.acked, [srv.data_dir, spool_dir, tmp_path / "tmp"], incoming_ok=120
    )
    assert found.problems == []
    assert temp_files(spool_dir) == []

    # The disk is full now: each path says so clearly and keeps nothing.
    before = len(drills.all_jobs(srv.data_dir))
    big = drills.MARKER * (1 << 16)  # 1 MiB: cannot fit
    msg = drills.ipp_message(srv, Operation.PRINT_JOB)
    _, resp = drills.ipp_call(drills.http_addr(srv), msg, big)
    assert resp is not None and resp.code == Status.SERVER_ERROR_TEMPORARY_ERROR, resp
    text = resp.operation.get("status-message")
    assert text is not None and "no space left" in str(text.value)
    create = drills.ipp_message(srv, Operation.CREATE_JOB)
    create.operation.add("job-name", ValueTag.NAME, "create-full")
    created = drills.job_id_of(drills.ipp_call(drills.http_addr(srv), create)[1])
    assert created is not None
    send = drills.ipp_message(srv, Operation.SEND_DOCUMENT)
    send.operation.add("job-id", ValueTag.INTEGER, created)
    send.operation.add("last-document", ValueTag.BOOLEAN, True)
    _, resp = drills.ipp_call(drills.http_addr(srv), send, big)
    assert resp is not None and resp.code == Status.SERVER_ERROR_TEMPORARY_ERROR, resp
    raw = drills.pjl_wrapped(drills.OWNER, "raw-full", big)
    assert drills.raw_print(drills.server_address(srv, "raw"), raw) is False  # reset
    lpd = drills.server_address(srv, "lpd")
    assert drills.lpd_print(lpd, drills.OWNER, "lpd-full", big, timeout=10) is False  # NAK
    jobs = drills.all_jobs(srv.data_dir)
    assert len(jobs) == before + 1  # only the Create-Job record, still waiting
    (waiting,) = [j for j in jobs if j.id == created]
    assert waiting.state is JobState.INCOMING and waiting.spool_name is None
    assert temp_files(spool_dir) == []

    # Held jobs stay releasable on the full disk, and releasing frees the space.
    printer = FakePrinter(["accept"]).start()
    admin = ("admin", drills.ADMIN_PASSWORD)
    try:
        with httpx.Client(base_url=srv.url + "/api/v1", timeout=60) as c:
            r = c.post("/printers", json={"name": "p", "uri": printer.uri}, auth=admin)
            assert r.status_code == 201, r.text
            r = c.post(
                "/users", json={"username": drills.OWNER, "password": "pw-12345"}, auth=admin
            )
            assert r.status_code == 201
            r = c.post("/release/session", json={"username": drills.OWNER, "password": "pw-12345"})
            token = {"Authorization": f"Bearer {r.json()['token']}"}
            titles = {j.title: j.id for j in drills.all_jobs(srv.data_dir)}
            for ack in load.acked:
                job_id = ack.job_id or titles[ack.title]
                r = c.post(f"/release/jobs/{job_id}", json={"printer": "p"}, headers=token)
                assert r.status_code == 200, r.text
    finally:
        printer.stop()
    assert sorted(printer.complete) == sorted(a.body for a in load.acked)
    assert [p for p in spool_dir.iterdir() if p.suffix == ".spool"] == []
    # Space is back: a job fits again.
    assert drills.ipp_print(srv, "after", b"fits now\n") is not None
    assert drills.find_plaintext([srv.data_dir, spool_dir, tmp_path / "tmp"]) == []
