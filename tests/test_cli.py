"""The `spoolvault` command for real: `run` as a process, and the file verbs beside it."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import urllib.request
from pathlib import Path

import pytest

from harness.server import Server, spoolvault, start_server
from spoolvault.config import DataDir
from spoolvault.db import Database, database_url
from spoolvault.spool.keys import KeyFileProvider
from spoolvault.spool.store import EncryptedSpool

MARKER = b"CONFIDENTIAL-PAYROLL-7f3a9c"


def get_json(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - loopback test server
        assert resp.status == 200
        return json.loads(resp.read())  # type: ignore[no-any-return]


def test_run_creates_data_dir_serves_health_and_stops_on_sigterm(server: Server) -> None:
    data = server.data_dir
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert stat.S_IMODE((data / "keys.json").stat().st_mode) == 0o600
    assert (data / "print-provider.conf").is_file()
    assert (data / "spool" / "encrypted").is_dir() and (data / "spool" / "plain").is_dir()
    assert (data / "spoolvault.db").is_file()

    health = get_json(server.url + "/healthz")
    assert health["status"] == "ok"
    assert health["spool_file_encryption"] is True
    keys = json.loads((data / "keys.json").read_text())
    assert health["current_key_id"] == keys["current"]
    with urllib.request.urlopen(server.url + "/", timeout=10) as resp:  # noqa: S310
        assert b"spoolvault" in resp.read()

    assert server.stop(signal.SIGTERM) == 0
    assert "Traceback" not in "".join(server.first_lines)


def test_sigint_also_stops_cleanly(server: Server) -> None:
    assert server.stop(signal.SIGINT) == 0


def test_generated_admin_password_printed_once(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SPOOLVAULT_ADMIN_PASSWORD"}
    first = start_server(tmp_path / "d", env=env)
    try:
        shown = [ln for ln in first.first_lines if "admin password" in ln]
        assert len(shown) == 1
        # Not a terminal: the password goes to a 0600 file, never into the output (a log).
        path = tmp_path / "d" / "initial-admin-password"
        assert str(path) in shown[0]
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        password = path.read_text().strip()
        assert len(password) >= 12 and password not in "".join(first.first_lines)
    finally:
        assert first.stop() == 0
    second = start_server(tmp_path / "d", env=env)
    try:
        assert not any("admin password" in ln for ln in second.first_lines)
    finally:
        assert second.stop() == 0
    data = DataDir.open(tmp_path / "d", create=False)
    db = Database.open(database_url(None, data.database))
    try:
        assert db.verify_password("admin", password)
        assert not db.verify_password("admin", password + "x")
    finally:
        db.close()
    assert password.encode() not in (tmp_path / "d" / "spoolvault.db").read_bytes()


def test_busy_port_is_a_clear_startup_error(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        port = sock.getsockname()[1]
        res = spoolvault(
            "run",
            "--data-dir",
            str(tmp_path / "d"),
            "--http",
            f"127.0.0.1:{port}",
            "--raw",
            "off",
        )
    assert res.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in res.stderr
    assert "Traceback" not in res.stderr


def test_unc_spool_dir_stops_startup_with_mount_advice(tmp_path: Path) -> None:
    data = tmp_path / "d"
    data.mkdir()
    (data / "print-provider.conf").write_text(
        "EncryptedSpoolDir=\\\\print-server\\encryptedspools\n"
    )
    res = spoolvault("run", "--data-dir", str(data), "--http", "127.0.0.1:0", "--raw", "off")
    assert res.returncode == 2
    assert "\\\\print-server\\encryptedspools" in res.stderr
    assert "Mount the share" in res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--http", "nonsense", "--http 'nonsense': expected HOST:PORT"),
        ("--raw", "1.2.3.4", "--raw '1.2.3.4': expected HOST:PORT or off"),
        ("--role", "provider", "--role provider needs --app-server URL"),
        ("--role", "site", "--role 'site': expected all, app or provider"),
        ("--database", "mysql://x/y", "mysql"),
    ],
)
def test_bad_flags_are_clear_errors(tmp_path: Path, flag: str, value: str, message: str) -> None:
    res = spoolvault("run", "--data-dir", str(tmp_path / "d"), "--http", "127.0.0.1:0", flag, value)
    assert res.returncode == 2, res.stderr
    assert message in " ".join(res.stderr.split())
    assert "Traceback" not in res.stderr


def _write_jobs(data_dir: Path, count: int) -> list[str]:
    data = DataDir.open(data_dir, create=False)
    spool = EncryptedSpool(data.encrypted_spool, KeyFileProvider(data.key_file))
    names = []
    for i in range(count):
        with spool.create() as w:
            w.write(MARKER * (1000 + i))
            names.append(w.commit().name)
    return names


def test_key_rotate_while_server_runs_keeps_files_readable(server: Server) -> None:
    names = _write_jobs(server.data_dir, 5)
    before = json.loads((server.data_dir / "keys.json").read_text())["current"]

    res = spoolvault("key", "rotate", "--data-dir", str(server.data_dir))
    assert res.returncode == 0, res.stderr
    assert "rewrapped 5 spool files" in res.stdout
    assert f"retired key {before}" in res.stdout

    after = json.loads((server.data_dir / "keys.json").read_text())["current"]
    assert after != before
    # The running server picks up the new key without a restart.
    assert get_json(server.url + "/healthz")["current_key_id"] == after
    listing = spoolvault("key", "list", "--data-dir", str(server.data_dir))
    assert listing.returncode == 0 and before in listing.stdout and "retired" in listing.stdout

    verify = spoolvault("spool", "verify", "--data-dir", str(server.data_dir))
    assert verify.returncode == 0, verify.stdout
    assert "5 spool files verified, 0 failed" in verify.stdout
    assert len(names) == 5


def test_spool_verify_reports_a_tampered_file(tmp_path: Path) -> None:
    DataDir.open(tmp_path)
    KeyFileProvider.open_or_create(tmp_path / "keys.json")
    names = _write_jobs(tmp_path, 2)
    path = tmp_path / "spool" / "encrypted" / f"{names[0]}.spool"
    raw = bytearray(path.read_bytes())
    raw[500] ^= 1
    path.write_bytes(bytes(raw))
    res = spoolvault("spool", "verify", "--data-dir", str(tmp_path))
    assert res.returncode == 1
    assert "1 spool files verified, 1 failed" in res.stdout
    assert names[0] in res.stdout


def test_key_retire_refused_while_in_use(tmp_path: Path) -> None:
    DataDir.open(tmp_path)
    keys = KeyFileProvider.open_or_create(tmp_path / "keys.json")
    old = keys.current().id.hex()
    _write_jobs(tmp_path, 1)
    keys.rotate()
    res = spoolvault("key", "retire", old, "--data-dir", str(tmp_path))
    assert res.returncode == 2
    assert "still used by 1 spool files" in res.stderr
    cur = spoolvault("key", "retire", keys.current().id.hex(), "--data-dir", str(tmp_path))
    assert cur.returncode == 2 and "current key" in cur.stderr


def test_spool_orphans_finds_and_deletes_only_unreferenced_files(server: Server) -> None:
    data = DataDir.open(server.data_dir, create=False)
    names = _write_jobs(server.data_dir, 3)
    db = Database.open(database_url(None, data.database))
    try:
        db.add_job(
            owner="alice",
            title="t",
            queue="secure",
            size=1,
            encrypted=True,
            spool_name=names[0],
            state="held",
        )
    finally:
        db.close()

    fresh = spoolvault("spool", "orphans", "--data-dir", str(server.data_dir))
    assert fresh.returncode == 0 and "0 orphan files found" in fresh.stdout  # too young

    listed = spoolvault("spool", "orphans", "--data-dir", str(server.data_dir), "--min-age", "0")
    assert listed.returncode == 0, listed.stderr
    assert "2 orphan files found" in listed.stdout
    assert names[1] in listed.stdout and names[2] in listed.stdout and names[0] not in listed.stdout

    deleted = spoolvault(
        "spool", "orphans", "--delete", "--min-age", "0", "--data-dir", str(server.data_dir)
    )
    assert deleted.returncode == 0 and "2 orphan files removed" in deleted.stdout
    remaining = sorted(p.name for p in data.encrypted_spool.glob("*.spool"))
    assert remaining == [f"{names[0]}.spool"]


def test_marker_never_on_disk_under_data_dir(server: Server) -> None:
    _write_jobs(server.data_dir, 3)
    assert server.stop() == 0
    for path in server.data_dir.rglob("*"):
        if path.is_file():
            assert MARKER not in path.read_bytes(), path


def test_verbs_on_missing_data_dir_are_clear(tmp_path: Path) -> None:
    for verb in (["key", "rotate"], ["spool", "verify"], ["spool", "orphans"], ["key", "list"]):
        res = spoolvault(*verb, "--data-dir", str(tmp_path / "missing"))
        assert res.returncode == 2, verb
        assert "does not exist" in res.stderr and "Traceback" not in res.stderr


def test_json_logs_are_one_object_per_line_without_document_content(tmp_path: Path) -> None:
    from harness.server import ipp_request, new_request
    from spoolvault.ipp.constants import Operation, Status, ValueTag

    srv = start_server(tmp_path / "data", env={"SPOOLVAULT_LOG_FORMAT": "json"})
    try:
        req = new_request(Operation.PRINT_JOB, srv, user="alice")
        req.operation.add("job-name", ValueTag.NAME, "json log test")
        _, resp = ipp_request(srv, req, MARKER * 10)
        assert resp is not None and resp.code == Status.SUCCESSFUL_OK
    finally:
        assert srv.stop() == 0
    records = [json.loads(line) for line in srv.first_lines if line.startswith("{")]
    assert records, srv.first_lines
    for record in records:
        assert {"time", "level", "logger", "message"} <= set(record)
    messages = " ".join(r["message"] for r in records)
    assert "held for alice" in messages
    assert MARKER.decode() not in "".join(srv.first_lines)
    other = [ln for ln in srv.first_lines if not ln.startswith("{") and ln.strip()]
    assert all("listening on" in ln or "admin password" in ln for ln in other), other
