"""The data directory is private (issue 17): a real `spoolvault run` creates every file
that holds secrets or titles 0600, and tightens a directory others could read, saying so."""

from __future__ import annotations

import stat
from pathlib import Path

from harness.server import ipp_request, new_request, start_server
from spoolvault.ipp.constants import Operation


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_first_start_creates_private_files(tmp_path: Path) -> None:
    data = tmp_path / "data"
    srv = start_server(data, env={"SPOOLVAULT_ADMIN_PASSWORD": "admin-pw"})
    try:
        status, _ = ipp_request(srv, new_request(Operation.PRINT_JOB, srv), b"%PDF-1.4\n")
        assert status == 200
        files = ["spoolvault.db", "print-provider.conf", "instance-id", "audit/audit.jsonl"]
        for name in files + [f for f in ("spoolvault.db-wal", "spoolvault.db-shm")]:
            if (data / name).exists() or name in files:
                assert mode(data / name) == 0o600, (name, oct(mode(data / name)))
        assert mode(data) == 0o700
    finally:
        assert srv.stop() == 0


def test_a_readable_data_directory_is_tightened_and_logged(tmp_path: Path) -> None:
    data = tmp_path / "data"
    srv = start_server(data, env={"SPOOLVAULT_ADMIN_PASSWORD": "admin-pw"})
    assert srv.stop() == 0
    data.chmod(0o755)
    (data / "spoolvault.db").chmod(0o644)
    (data / "print-provider.conf").chmod(0o644)
    spool = next(p for p in data.iterdir() if p.is_dir() and "spool" in p.name.lower())
    spool.chmod(0o755)
    srv = start_server(data, env={"SPOOLVAULT_ADMIN_PASSWORD": "admin-pw"})
    try:
        assert mode(data) == 0o700 and mode(spool) == 0o700
        assert mode(data / "spoolvault.db") == 0o600
        assert mode(data / "print-provider.conf") == 0o600
        log = "".join(srv.first_lines)
        assert "readable by group or others" in log, log
    finally:
        assert srv.stop() == 0
