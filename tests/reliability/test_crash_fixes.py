"""One test per bug the crash drill found (docs/reliability.md)."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import pytest

from harness import drills


def test_a_server_killed_mid_raw_job_resets_the_connection(tmp_path: Path) -> None:
    """The kernel closing a dead server's socket must not look like "job accepted" (a FIN).

    Found by the crash drill: raw 9100 jobs acknowledged by a FIN and then missing, because
    a SIGKILLed process's sockets were closed normally by the kernel.
    """
    srv = drills.start(tmp_path / "data", tmp_path / "tmp")
    try:
        addr = drills.server_address(srv, "raw")
        with socket.create_connection(addr, timeout=10) as s:
            s.sendall(drills.pjl_wrapped("alice", "cut", b"first part of a job\n" * 100))
            time.sleep(0.5)  # the server has read it all and waits for more
            srv.proc.send_signal(signal.SIGKILL)
            srv.proc.wait(timeout=10)
            with pytest.raises(ConnectionResetError):
                s.recv(1)  # before the fix: b"" (a FIN)
    finally:
        srv.stop(signal.SIGKILL)


def test_a_graceful_raw_close_is_still_a_fin(tmp_path: Path) -> None:
    srv = drills.start(tmp_path / "data", tmp_path / "tmp")
    try:
        body = drills.pjl_wrapped("alice", "whole", b"a whole job\n")
        assert drills.raw_print(drills.server_address(srv, "raw"), body)
        assert [j.title for j in drills.all_jobs(srv.data_dir)] == ["whole"]
    finally:
        srv.stop()


def test_restart_removes_files_no_job_names_and_keeps_every_job_file(tmp_path: Path) -> None:
    """A crash between a file's commit and its job record (or between "printed" and the
    shred) leaves a spool file no job names; the next start removes it.

    Found by the crash drill: `spoolvault spool orphans --min-age 0` listed such files after
    every restart, and nothing ever removed them.
    """
    data_dir = tmp_path / "data"
    srv = drills.start(data_dir, tmp_path / "tmp")
    body = b"kept " * 1000
    try:
        job_id = drills.ipp_print(srv, "kept", body)
        assert job_id is not None
    finally:
        srv.stop()
    enc, plain = drills.spools(data_dir)
    stray = []
    for spool in (enc, plain):
        with spool.create() as w:
            w.write(drills.MARKER + b" committed, never recorded")
            stray.append(spool.path(w.commit().name))
    assert drills.orphans(data_dir) == "2 orphan files found"
    srv = drills.start(data_dir, tmp_path / "tmp")
    try:
        assert not any(p.exists() for p in stray)
        assert drills.orphans(data_dir) == "0 orphan files found"
        (job,) = drills.all_jobs(data_dir)
        assert job.id == job_id and job.spool_name is not None
        assert enc.read_all(job.spool_name) == body
    finally:
        srv.stop()
