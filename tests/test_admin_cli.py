"""`spoolvault printer|settings|jobs`: with no server running, and beside a running one."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from harness import ippeve
from harness.server import ADMIN, Server, spoolvault, start_server
from harness.web_helpers import submit

pytestmark = pytest.mark.skipif(ippeve.IPPEVEPRINTER is None, reason="needs cups-ipp-utils")


def sv(data_dir: Path, *args: str) -> tuple[int, str]:
    done = spoolvault(*args, "--data-dir", str(data_dir))
    return done.returncode, done.stdout + done.stderr


def audit_events(data_dir: Path, action: str) -> str:
    code, text = sv(data_dir, "audit", "list", "--action", action)
    assert code == 0, text
    return text


def test_printers_and_settings_without_a_server(tmp_path: Path) -> None:
    data = tmp_path / "data"
    srv = start_server(data, env={"SPOOLVAULT_ADMIN_PASSWORD": ADMIN[1]})
    srv.stop()  # created the data directory; no server from here on

    code, text = sv(data, "printer", "add", "lobby", "ipp://10.0.0.5/ipp/print", "--group", "hq")
    assert code == 0 and "lobby" in text and "hq" in text, text
    code, text = sv(data, "printer", "add", "lobby", "socket://10.0.0.6")
    assert code == 2 and "exists already" in text
    code, text = sv(data, "printer", "add", "bad", "http://10.0.0.7/")
    assert code == 2 and "error:" in text
    code, text = sv(
        data, "printer", "set", "lobby", "--block-release-on-error", "--hold-timeout-minutes", "15"
    )
    assert code == 0 and "15 min" in text, text
    code, text = sv(data, "printer", "set", "lobby", "--snmp-port", "70000")
    assert code == 2 and "snmp_port" in text
    code, text = sv(data, "printer", "list")
    assert code == 0 and "lobby" in text and "yes" in text and "15 min" in text

    code, text = sv(data, "settings", "set", "hold_timeout_minutes", "45")
    assert code == 0 and "240 -> 45" in text, text
    code, text = sv(data, "settings", "set", "print_archiving", "on")
    assert code == 2 and "archiving" in text.lower()  # encryption is on: they exclude
    code, text = sv(data, "settings", "set", "no_such_thing", "1")
    assert code == 2 and "unknown setting" in text
    code, text = sv(data, "settings", "show")
    assert code == 0 and "hold_timeout_minutes" in text and "45" in text

    code, text = sv(data, "printer", "remove", "lobby")
    assert code == 0, text
    assert "lobby" not in sv(data, "printer", "list")[1]

    changes = audit_events(data, "printer.change")
    assert "cli:" in changes and "added" in changes and "removed" in changes
    settings = audit_events(data, "settings.change")
    assert "45" in settings and "refused" in settings
    verified = spoolvault("audit", "verify", "--data-dir", str(data))
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_beside_a_running_server_events_are_queued_for_it(
    tmp_path: Path, printer: ippeve.EvePrinter
) -> None:
    data = tmp_path / "data"
    srv: Server = start_server(data, env={"SPOOLVAULT_ADMIN_PASSWORD": ADMIN[1]})
    try:
        code, text = sv(data, "printer", "add", "lobby", printer.uri)
        assert code == 0 and "within seconds" in text, text
        code, text = sv(data, "settings", "set", "hold_timeout_minutes", "30")
        assert code == 0, text
        with httpx.Client(base_url=srv.url + "/api/v1", auth=ADMIN, timeout=30) as c:
            assert c.get("/servers/primary/settings").json()["hold_timeout_minutes"] == 30
            assert [p["name"] for p in c.get("/printers").json()] == ["lobby"]

        body = b"released from the command line\n" * 500
        keep = submit(srv, "alice", b"cancelled from the command line\n")
        job_id = submit(srv, "alice", body)
        seen = set(printer.files())
        code, text = sv(data, "jobs", "list", "--state", "held")
        assert code == 0 and "alice" in text and str(job_id) in text, text
        code, text = sv(data, "jobs", "release", str(job_id), "--printer", "lobby")
        assert code == 0 and f"job {job_id} printed" in text, text
        code, text = sv(data, "jobs", "release", str(job_id), "--printer", "lobby")
        assert code == 1 and "not held" in text  # printed once, never twice
        code, text = sv(data, "jobs", "cancel", str(keep))
        assert code == 0 and "cancelled" in text, text
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not set(printer.files()) - seen:
            time.sleep(0.1)
        time.sleep(0.5)
        assert [f.read_bytes() for f in set(printer.files()) - seen] == [body]

        with httpx.Client(base_url=srv.url + "/api/v1", auth=ADMIN, timeout=30) as c:
            events = c.get("/audit", params={"limit": 100}).json()
        mine = [(e["action"], e["job_id"]) for e in events if e["actor"].startswith("cli:")]
        assert ("job.release", job_id) in mine and ("job.cancel", keep) in mine
        assert ("printer.change", None) in mine and ("settings.change", None) in mine
        assert not list((data / "audit" / "pending").glob("*.json"))  # all recorded
    finally:
        srv.stop()
    verified = spoolvault("audit", "verify", "--data-dir", str(data))
    assert verified.returncode == 0, verified.stdout + verified.stderr
