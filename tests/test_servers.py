"""The application server's provider registry, on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from spoolvault.config import DataDir
from spoolvault.db import Database, JobState, database_url
from spoolvault.errors import ConfigError
from spoolvault.servers.provider import ProviderIdentity
from spoolvault.servers.registry import (
    ProviderExists,
    add_provider,
    authenticate,
    get_provider,
    hash_secret,
    heartbeat_answer,
    is_available,
    provider_jobs,
    record_heartbeat,
    register_app,
    servers_overview,
    warnings_for,
)
from spoolvault.servers.signing import AppKey, Verifier
from test_db import pg_url  # noqa: F401 (a fixture)

T0 = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        url = database_url(None, tmp_path / "app.db")
    else:
        url = request.getfixturevalue("pg_url")
    with Database.open(url) as database:
        yield database


def report(job_id: int, state: str = "held", **extra: Any) -> dict[str, Any]:
    return {
        "id": job_id,
        "owner": "alice",
        "title": f"job {job_id}",
        "queue": "secure",
        "state": state,
        "state_reason": None,
        "size": 100 + job_id,
        "pages": None,
        "encrypted": True,
        "format_version": 1,
        "document_format": "application/pdf",
        "printer": None,
        "printer_job_id": None,
        "created_at": T0.isoformat(),
        "updated_at": T0.isoformat(),
        "completed_at": None,
        **extra,
    }


def beat(jobs: list[dict[str, Any]], live: list[int] | None, **extra: Any) -> dict[str, Any]:
    return {"url": "http://127.0.0.1:9", "interval": 5, "jobs": jobs, "live": live, **extra}


def test_secret_is_shown_once_and_only_its_hash_is_stored(db: Database) -> None:
    secret = add_provider(db, "p1")
    assert secret.startswith("svp_") and len(secret) > 40
    row = get_provider(db, "p1")
    assert row.secret_hash == hash_secret(secret) and secret not in repr(row)
    assert authenticate(db, "p1", secret) is not None
    assert authenticate(db, "p1", secret[:-1]) is None
    assert authenticate(db, "nobody", secret) is None
    with pytest.raises(ProviderExists):
        add_provider(db, "p1")
    rotated = add_provider(db, "p1", rotate=True)
    assert authenticate(db, "p1", secret) is None and authenticate(db, "p1", rotated)


def test_heartbeats_keep_the_job_copies_current(db: Database) -> None:
    add_provider(db, "p1")
    add_provider(db, "p2")
    assert not record_heartbeat(db, "p1", beat([report(1), report(2)], [1, 2])).resync
    record_heartbeat(db, "p2", beat([report(1)], [1]))  # the same id on another provider
    held = provider_jobs(db, "p1", [JobState.HELD])
    assert [(j.provider_job_id, j.size) for j in held] == [(1, 101), (2, 102)]
    assert [j.spool_name for j in held] == [None, None]  # the file stays on the provider
    assert len(provider_jobs(db, "p2", [JobState.HELD])) == 1

    # Job 1 printed there; job 2 vanished without a report (an old backup restored there).
    done = report(1, "printed", printer="lobby", completed_at=T0.isoformat())
    record_heartbeat(db, "p1", beat([done], []))
    states = {j.provider_job_id: j for j in provider_jobs(db, "p1", list(JobState))}
    assert states[1].state is JobState.PRINTED and states[1].printer == "lobby"
    assert states[2].state is JobState.CANCELLED
    assert states[2].state_reason == "no longer held on provider p1"
    assert provider_jobs(db, "p2", [JobState.HELD])  # untouched


def test_an_unknown_live_job_asks_for_a_full_report(db: Database) -> None:
    add_provider(db, "p1")
    record_heartbeat(db, "p1", beat([report(1)], [1]))
    # Only changes are sent after the first heartbeat; job 7 is live but was never reported.
    assert record_heartbeat(db, "p1", beat([], [1, 7])).resync
    assert not record_heartbeat(db, "p1", beat([report(1), report(7)], [1, 7])).resync


def test_availability_follows_heartbeats(db: Database) -> None:
    add_provider(db, "p1")
    assert not is_available(get_provider(db, "p1"))  # never seen
    record_heartbeat(db, "p1", beat([], []))
    row = get_provider(db, "p1")
    assert row.last_seen is not None and is_available(row, row.last_seen + timedelta(seconds=19))
    assert not is_available(row, row.last_seen + timedelta(seconds=21))  # 3 x 5 s + 5 s


def test_heartbeat_answer_has_the_providers_server_settings_and_app_tokens(
    db: Database,
) -> None:
    db.add_server("berlin")
    db.update_settings("berlin", {"spool_file_encryption": False})
    add_provider(db, "p1", "berlin")
    me = register_app(db)
    answer = heartbeat_answer(db, "p1")
    assert answer["server"] == "berlin"
    assert answer["settings"]["spool_file_encryption"] is False
    assert answer["app_keys"] == {me.id: me.public_hex}
    assert repr(me) == f"AppKey(id={me.id!r})"  # never the private key


def test_signed_requests_are_bound_to_one_provider_and_never_replayed() -> None:
    me, other = AppKey.generate(), AppKey.generate()
    p1 = Verifier("p1", {me.id: me.public_hex})
    p2 = Verifier("p2", {me.id: me.public_hex})
    path, body = "/provider/v1/jobs/3/release", b'{"printer": {"name": "lobby"}}'
    headers = me.sign("p1", "POST", path, body)
    assert p2.check("POST", path, body, headers) == "bad signature"  # not for p2
    assert p1.check("POST", path, body + b" ", headers) == "bad signature"
    assert p1.check("POST", "/provider/v1/jobs/4/release", body, headers) == "bad signature"
    assert p1.check("DELETE", path, body, headers) == "bad signature"
    assert p1.check("POST", path, body, headers) is None
    assert p1.check("POST", path, body, headers) == "request replayed"
    assert "unknown application server" in str(
        p1.check("POST", path, body, other.sign("p1", "POST", path, body))
    )
    stale = {**me.sign("p1", "POST", path, body), "x-spoolvault-time": str(time.time() - 600)}
    assert "off" in str(p1.check("POST", path, body, stale))
    assert "required" in str(p1.check("POST", path, body, {}))


def test_warnings_name_the_providers_the_setting_does_not_reach(db: Database) -> None:
    for name in ("new", "old", "nokey", "silent"):
        add_provider(db, name)
    modern = {"formats": {"read": [1], "write": 1}, "capabilities": {"encrypt": True}}
    record_heartbeat(db, "new", beat([], [], **modern))
    record_heartbeat(db, "old", beat([], [], **{**modern, "formats": {"read": [0], "write": 0}}))
    record_heartbeat(db, "nokey", beat([], [], **{**modern, "capabilities": {"encrypt": False}}))
    warnings = warnings_for(db, "primary")
    assert len(warnings) == 3
    assert not any("provider new" in w for w in warnings)
    for name in ("old", "nokey"):
        assert any(f"does not affect jobs on provider {name}" in w for w in warnings)
    assert any("silent has not reported" in w for w in warnings)
    db.update_settings("primary", {"spool_file_encryption": False})
    assert warnings_for(db, "primary") == []
    [primary] = servers_overview(db)
    assert {p["name"] for p in primary["providers"]} == {"new", "old", "nokey", "silent"}


@pytest.mark.postgres
def test_two_application_servers_take_heartbeats_of_one_provider_at_once(
    pg_url: str,  # noqa: F811
) -> None:
    with Database.open(pg_url) as one, Database.open(pg_url) as two:
        add_provider(one, "p1")
        errors: list[BaseException] = []

        def send(database: Database, start: int) -> None:
            try:
                for n in range(start, start + 20):
                    record_heartbeat(database, "p1", beat([report(n)], None))
            except BaseException as exc:  # checked in the main thread
                errors.append(exc)

        workers = [threading.Thread(target=send, args=(d, s)) for d, s in ((one, 1), (two, 21))]
        for t in workers:
            t.start()
        for t in workers:
            t.join()
        assert errors == []
        assert len(provider_jobs(two, "p1", [JobState.HELD])) == 40


def test_provider_identity_from_conf_and_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in (
        "SPOOLVAULT_PROVIDER_NAME",
        "SPOOLVAULT_PROVIDER_SECRET",
        "SPOOLVAULT_PROVIDER_URL",
    ):
        monkeypatch.delenv(var, raising=False)
    data = DataDir.open(tmp_path / "d")
    with pytest.raises(ConfigError, match="needs its name and secret"):
        ProviderIdentity.load(data, "http://app:8631")
    with pytest.raises(ConfigError, match="needs --app-server"):
        ProviderIdentity.load(data, None)
    conf = data.conf_path.read_text()
    assert "#ProviderSecret=" in conf  # written commented out: not set
    data.conf_path.write_text(
        conf + "\nProviderName=p1\nProviderSecret=svp_from_conf\nApplicationServer=http://a/\n"
    )
    data = DataDir.open(tmp_path / "d")
    got = ProviderIdentity.load(data, None)
    assert (got.name, got.secret, got.app_url) == ("p1", "svp_from_conf", "http://a")
    assert "svp_from_conf" not in repr(got) and "svp_from_conf" not in repr(data.conf)
    monkeypatch.setenv("SPOOLVAULT_PROVIDER_SECRET", "svp_from_env")
    assert ProviderIdentity.load(data, "http://b").secret == "svp_from_env"
