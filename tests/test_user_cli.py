"""`spoolvault user …`: add, list, set-card, set-pin, import, delegate; with and without a
running server (they share the database and the card secret)."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx

from harness.server import spoolvault, start_server
from spoolvault.runtime import Runtime


def test_user_verbs_while_the_server_runs_and_after(tmp_path: Path) -> None:
    data = tmp_path / "data"
    srv = start_server(data, env={"SPOOLVAULT_ADMIN_PASSWORD": "admin-pw-123"})
    try:
        d = ("--data-dir", str(data))
        done = spoolvault(
            "user", "add", "alice", *d, "--card", "CLI-CARD-7", "--pin", "--full-name", "Alice A",
            "--group", "staff", "--email", "alice@example.org", input="2580\n",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        with httpx.Client(base_url=srv.url + "/api/v1", timeout=30) as c:
            r = c.post("/release/session", json={"card_number": "cli-card-7", "pin": "2580"})
            assert r.status_code == 200, r.text  # the server sees the CLI's user and card
            assert spoolvault("user", "set-pin", "alice", *d, input="1397\n").returncode == 0
            r = c.post("/release/session", json={"card_number": "CLI-CARD-7", "pin": "2580"})
            assert r.status_code == 401
            r = c.post("/release/session", json={"card_number": "CLI-CARD-7", "pin": "1397"})
            assert r.status_code == 200
        assert (
            spoolvault("user", "add", "bob", *d, "--password", input="bob-pw-123\n").returncode == 0
        )
    finally:
        assert srv.stop(signal.SIGTERM) == 0

    d = ("--data-dir", str(data))
    assert spoolvault("user", "set-card", "bob", "-", *d, input="BOB-1\n").returncode == 0
    assert (
        spoolvault("user", "delegate", "alice", *d, "--to", "bob", "--group", "staff").returncode
        == 0
    )
    dup = spoolvault("user", "set-card", "bob", "CLI-CARD-7", *d)
    assert dup.returncode == 2 and "already enrolled" in dup.stderr
    bad = spoolvault("user", "set-pin", "bob", *d, input="12\n")
    assert bad.returncode == 2 and "4 to 16 digits" in bad.stderr and "Traceback" not in bad.stderr
    assert spoolvault("user", "set-card", "ghost", "X1", *d).returncode == 2
    listed = spoolvault("user", "list", *d)
    assert listed.returncode == 0, listed.stderr
    alice = next(line for line in listed.stdout.splitlines() if "alice" in line)
    assert "Alice A" in alice and "staff" in alice and "bob" in alice and "@staff" in alice
    for secret in ("CLI-CARD-7", "BOB-1", "2580", "1397", "bob-pw-123"):
        assert secret not in listed.stdout
    assert spoolvault("user", "set-card", "bob", *d, "--clear").returncode == 0

    csv = tmp_path / "people.csv"
    csv.write_text("username,card_number,pin\ncarol,C-1,12\ndave,C-1,\nalice,,\n")
    failed = spoolvault("user", "import", str(csv), *d)
    assert failed.returncode == 1
    assert "line 2: a PIN is 4 to 16 digits" in failed.stderr
    assert "line 3: the same card number as line 2" in failed.stderr
    assert "C-1" not in failed.stderr
    csv.write_text("username,card_number,pin\ncarol,C-1,1234\ndave,C-2,\n")
    ok = spoolvault("user", "import", str(csv), *d)
    assert ok.returncode == 0 and "2 added" in ok.stdout, ok.stderr
    with Runtime.open(data, None) as rt:
        from spoolvault.identity import IdentityService, open_card_key

        ident = IdentityService(rt.db, open_card_key(rt.data.root, rt.db))
        assert ident.login_card("c-1", "1234", station="t") == "carol"
        assert ident.may_release("bob", "alice") and not ident.may_release("carol", "alice")
    # Every change is audited, those made beside the running server too (queued for it).
    listed_events = spoolvault("audit", "list", "--action", "user.change", "--limit", "100", *d)
    assert listed_events.returncode == 0, listed_events.stderr
    changes = listed_events.stdout
    assert "created alice" in changes and "alice: pin" in changes and "created bob" in changes
    assert "bob: card_number" in changes and "alice: delegates" in changes
    assert "imported people.csv: 2 added" in changes and "cli:" in changes
    for secret in ("CLI-CARD-7", "BOB-1", "2580", "1397", "bob-pw-123"):
        assert secret not in changes
    assert spoolvault("audit", "verify", *d).returncode == 0


def test_user_verbs_need_an_existing_data_dir(tmp_path: Path) -> None:
    done = spoolvault("user", "list", "--data-dir", str(tmp_path / "none"))
    assert done.returncode == 2 and "does not exist" in done.stderr
