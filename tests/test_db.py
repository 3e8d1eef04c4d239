"""The database layer against real SQLite files and, when available, a real PostgreSQL."""

from __future__ import annotations

import os
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from psycopg import sql
from sqlalchemy import Column, Integer, MetaData, Table, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, OperationalError

from harness.db_faults import LostCommit, Unreachable
from spoolvault.db import (
    ADMIN_USERNAME,
    FILE_STATES,
    Base,
    CommitUnknown,
    Database,
    Job,
    JobState,
    ServerKind,
    UnknownServer,
    User,
    alembic_config,
    database_url,
    mask_url,
)
from spoolvault.db.database import brief_error
from spoolvault.errors import ClientError, ConfigError
from spoolvault.settings import SettingsConflict

PG_ENV = "SPOOLVAULT_TEST_PG_URL"


def job_fields(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "owner": "alice",
        "title": "quarterly report.pdf",
        "queue": "secure",
        "spool_name": uuid.uuid4().hex,
        "size": 123_456,
        "pages": 3,
        "encrypted": True,
        "key_id": "0011223344556677",
        "format_version": 1,
    }
    fields.update(overrides)
    return fields


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "spoolvault.db"


@pytest.fixture
def db(db_path: Path) -> Iterator[Database]:
    with Database.open(database_url(None, db_path)) as database:
        yield database


def schema_diff(database: Database, metadata: MetaData = Base.metadata) -> list[Any]:
    with database.engine.connect() as conn:
        return list(compare_metadata(MigrationContext.configure(conn), metadata))


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


# -- URLs ---------------------------------------------------------------------------------


def test_database_url_default_is_sqlite_in_data_dir(tmp_path: Path) -> None:
    url = database_url(None, tmp_path / "dir with space" / "spoolvault.db")
    parsed = make_url(url)
    assert parsed.drivername == "sqlite"
    assert parsed.database == str(tmp_path / "dir with space" / "spoolvault.db")


@pytest.mark.parametrize(
    "given",
    ["postgresql://u:p@db.example:5432/spool", "postgres://u:p@db.example:5432/spool"],
)
def test_database_url_postgres_uses_psycopg3(given: str, tmp_path: Path) -> None:
    url = database_url(given, tmp_path / "x.db")
    assert url == "postgresql+psycopg://u:p@db.example:5432/spool"


def test_database_url_explicit_sqlite_file(tmp_path: Path) -> None:
    assert database_url(f"sqlite:///{tmp_path}/a.db", tmp_path / "x.db").endswith("/a.db")


@pytest.mark.parametrize(
    ("given", "scheme"),
    [
        ("mysql://root:hunter2@db.example/spool", "mysql"),
        ("postgresql+psycopg2://root:hunter2@db.example/spool", "postgresql+psycopg2"),
        ("oracle://root:hunter2@db/x", "oracle"),
    ],
)
def test_database_url_unsupported_scheme(given: str, scheme: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        database_url(given, tmp_path / "x.db")
    message = str(info.value)
    assert repr(scheme) in message
    assert "hunter2" not in message
    assert "***" in message


@pytest.mark.parametrize(
    "given", ["sqlite://", "sqlite:///:memory:", "", "   ", "no-scheme-here", "user:pw@host"]
)
def test_database_url_refuses_memory_and_junk(given: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        database_url(given, tmp_path / "x.db")
    assert "pw" not in str(info.value)


def test_database_url_unparseable_hides_password(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        database_url("postgresql://u:hunter2@host:notaport/db", tmp_path / "x.db")
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://u:secret@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:se@cr/et@h:5/db?x=1", "postgresql://u:***@h:5/db?x=1"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("postgresql://h/db?sslmode=require", "postgresql://h/db?sslmode=require"),
        ("sqlite:////var/lib/spoolvault.db", "sqlite:////var/lib/spoolvault.db"),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


# -- opening and migrating SQLite ---------------------------------------------------------


def test_migrations_produce_exactly_the_models_schema(db: Database) -> None:
    assert schema_diff(db) == []


def test_schema_check_is_not_vacuous(db: Database) -> None:
    metadata = MetaData()
    for table in Base.metadata.tables.values():
        table.to_metadata(metadata)
    Table("extra", metadata, Column("id", Integer, primary_key=True))
    metadata.tables["jobs"].append_column(Column("extra_column", Integer))
    kinds = {
        diff[0] if isinstance(diff, tuple) else diff[0][0] for diff in schema_diff(db, metadata)
    }
    assert {"add_table", "add_column"} <= kinds


def test_schema_revision_is_head(db: Database) -> None:
    head = head_revision()
    assert head is not None and db.schema_revision() == head


def test_every_migration_downgrades_and_upgrades_again_keeping_jobs(db_path: Path) -> None:
    """A downgrade to the first revision and back keeps what the first revision stored."""
    from alembic import command

    url = database_url(None, db_path)
    with Database.open(url) as database:
        job = database.add_job(**job_fields())
        revisions = [
            r.revision for r in ScriptDirectory.from_config(alembic_config()).walk_revisions()
        ]
        assert revisions[-1] == "0001" and len(revisions) == len(set(revisions))
        with database.engine.begin() as conn:
            command.downgrade(alembic_config(conn), "0001")
        assert database.schema_revision() == "0001"
        with database.engine.begin() as conn:
            command.upgrade(alembic_config(conn), "head")
        assert database.schema_revision() == head_revision()
        assert schema_diff(database) == []
        again = database.get_job(job.id)
        assert again is not None and again.spool_name == job.spool_name
        assert again.hold_extended_until is None


def test_sqlite_pragmas_on_every_connection(db: Database) -> None:
    # Two DB-API connections at once, so the pool must have made (and configured) both.
    # (Raw connections: through SQLAlchemy each would BEGIN IMMEDIATE and wait on the other.)
    first, second = db.engine.raw_connection(), db.engine.raw_connection()
    try:
        for conn in (first, second):
            cursor = conn.cursor()
            pragma = {
                name: cursor.execute(f"PRAGMA {name}").fetchone()[0]
                for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
            }
            assert pragma == {
                "journal_mode": "wal",
                "synchronous": 2,  # FULL
                "foreign_keys": 1,
                "busy_timeout": 5000,
            }
    finally:
        first.close()
        second.close()


def test_primary_server_created_by_migration(db: Database) -> None:
    servers = db.servers()
    assert [(s.name, s.kind) for s in servers] == [("primary", ServerKind.PRIMARY)]
    assert servers[0].created_at.tzinfo is not None


def test_open_twice_keeps_data_and_does_not_rerun_migrations(db_path: Path) -> None:
    url = database_url(None, db_path)
    with Database.open(url) as first:
        job = first.add_job(**job_fields())
        generated = first.ensure_admin(None)
        first.update_settings("primary", {"hold_timeout_minutes": 30})
    assert generated is not None
    with Database.open(url) as second:
        assert second.schema_revision() == head_revision()
        again = second.get_job(job.id)
        assert again is not None and again.spool_name == job.spool_name
        assert second.ensure_admin(None) is None
        assert second.verify_password(ADMIN_USERNAME, generated)
        assert second.get_settings()["hold_timeout_minutes"] == 30
        assert len(second.servers()) == 1
        with second.engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").all() == [
                (head_revision(),)
            ]
        assert schema_diff(second) == []


def test_open_refuses_schema_newer_than_this_build(db_path: Path) -> None:
    url = database_url(None, db_path)
    with Database.open(url) as database, database.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '9999'")
    with pytest.raises(ConfigError, match=r"revision 9999, newer than this spoolvault"):
        Database.open(url)


def test_open_sqlite_in_missing_directory(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError, match=r"cannot open the SQLite database .*a-file"):
        Database.open(database_url(None, blocker / "spoolvault.db"))


def test_open_sqlite_file_that_is_not_a_database(db_path: Path) -> None:
    db_path.write_bytes(b"this is not SQLite" * 100)
    with pytest.raises(ConfigError, match="not a database"):
        Database.open(database_url(None, db_path))


def test_open_unreachable_postgres_masks_password() -> None:
    # Port 1 on loopback: refused at once, whether or not PostgreSQL runs here.
    with pytest.raises(ConfigError) as info:
        Database.open("postgresql://spool:hunter2@127.0.0.1:1/spool?connect_timeout=3")
    message = str(info.value)
    assert "PostgreSQL" in message
    assert "hunter2" not in message
    assert "spool:***@127.0.0.1:1" in message


def test_repr_has_no_password(db: Database) -> None:
    assert repr(db).startswith("Database('sqlite:///")


# -- jobs ---------------------------------------------------------------------------------


def test_job_round_trip(db: Database) -> None:
    fields = job_fields(state="failed", state_reason="printer-stopped")
    job = db.add_job(**fields)
    got = db.get_job(job.id)
    assert got is not None
    for name, value in fields.items():
        assert getattr(got, name) == value, name
    assert got.state is JobState.FAILED
    assert got.server == "primary"
    assert got.created_at == got.updated_at == job.created_at
    assert got.created_at.tzinfo == UTC
    assert abs(datetime.now(UTC) - got.created_at) < timedelta(minutes=1)


def test_job_defaults(db: Database) -> None:
    job = db.add_job(
        owner="bob", queue="secure", spool_name=uuid.uuid4().hex, size=0, encrypted=False
    )
    got = db.get_job(job.id)
    assert got is not None
    assert (got.title, got.state, got.state_reason, got.pages, got.key_id) == (
        "",
        JobState.HELD,
        None,
        None,
        None,
    )


def test_job_times_are_stored_as_utc(db_path: Path) -> None:
    fixed = datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=timezone(timedelta(hours=-5)))
    with Database.open(database_url(None, db_path), clock=lambda: fixed) as database:
        job = database.add_job(**job_fields())
        got = database.get_job(job.id)
    assert got is not None
    assert got.created_at == fixed
    assert got.created_at.tzinfo == UTC
    assert got.created_at.hour == 8


def test_ids_are_positive_increasing_and_never_reused(db: Database) -> None:
    ids = [db.add_job(**job_fields()).id for _ in range(5)]
    assert ids[0] >= 1
    assert ids == sorted(set(ids))
    with db.session() as s:
        s.delete(s.get_one(Job, ids[-1]))
    # An IPP job-id must not come back for a different job after the newest is deleted.
    assert db.add_job(**job_fields()).id > ids[-1]


def test_get_missing_job(db: Database) -> None:
    assert db.get_job(424242) is None


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ({"spool_name": "../../etc/passwd"}, "spool file name"),
        ({"spool_name": "A" * 32}, "spool file name"),
        ({"state": "lost"}, "invalid job state"),
        ({"key_id": "not hex"}, "key id"),
        ({"size": -1}, "negative"),
        ({"created_at": datetime(2030, 1, 1)}, "timezone-aware"),
    ],
)
def test_add_job_rejects_bad_fields(db: Database, override: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        db.add_job(**job_fields(**override))
    with db.session(write=False) as s:
        assert s.scalar(select(func.count()).select_from(Job)) == 0


def test_duplicate_spool_name_refused(db: Database) -> None:
    name = uuid.uuid4().hex
    db.add_job(**job_fields(spool_name=name))
    with pytest.raises(IntegrityError):
        db.add_job(**job_fields(spool_name=name))


def test_state_check_constraint_in_the_database(db: Database) -> None:
    job = db.add_job(**job_fields())
    with pytest.raises(IntegrityError), db.engine.begin() as conn:
        conn.execute(text("UPDATE jobs SET state = 'lost' WHERE id = :id"), {"id": job.id})


def test_spool_names_by_state_and_encryption(db: Database) -> None:
    expected: dict[bool, set[str]] = {True: set(), False: set()}
    for encrypted in (True, False):
        for state in JobState:
            job = db.add_job(**job_fields(encrypted=encrypted, state=state))
            if state in FILE_STATES:
                expected[encrypted].add(job.spool_name)
    assert {JobState.HELD, JobState.RELEASING, JobState.FAILED} == FILE_STATES
    assert db.spool_names(encrypted=True) == expected[True]
    assert db.spool_names(encrypted=False) == expected[False]
    assert len(expected[True]) == 3


def test_session_commits_or_rolls_back(db: Database) -> None:
    job = db.add_job(**job_fields())
    with pytest.raises(RuntimeError), db.session() as s:
        s.get_one(Job, job.id).state = JobState.CANCELLED
        s.flush()
        raise RuntimeError("boom")
    got = db.get_job(job.id)
    assert got is not None and got.state is JobState.HELD
    with db.session() as s:
        s.get_one(Job, job.id).state = JobState.CANCELLED
    got = db.get_job(job.id)
    assert got is not None and got.state is JobState.CANCELLED
    assert got.updated_at >= got.created_at


def test_concurrent_read_modify_write_loses_nothing(db: Database) -> None:
    # Write sessions start with BEGIN IMMEDIATE on SQLite: concurrent read-then-write
    # transactions queue instead of failing with "database is locked" or losing updates.
    job = db.add_job(**job_fields(pages=0))
    threads, rounds = 8, 15
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def work() -> None:
        try:
            start.wait()
            for _ in range(rounds):
                with db.session() as s:
                    row = s.get_one(Job, job.id)
                    row.pages = (row.pages or 0) + 1
                db.add_job(**job_fields())
        except BaseException as exc:  # collected and re-raised in the main thread
            errors.append(exc)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert errors == []
    got = db.get_job(job.id)
    assert got is not None and got.pages == threads * rounds
    with db.session(write=False) as s:
        assert s.scalar(select(func.count()).select_from(Job)) == threads * rounds + 1


# -- users --------------------------------------------------------------------------------


def test_ensure_admin_generates_once(db: Database) -> None:
    generated = db.ensure_admin(None)
    assert generated is not None and len(generated) >= 16
    assert db.ensure_admin(None) is None
    assert db.ensure_admin("another password") is None
    assert db.verify_password(ADMIN_USERNAME, generated)
    assert not db.verify_password(ADMIN_USERNAME, "another password")
    with db.session(write=False) as s:
        admins = s.scalars(select(User)).all()
    assert len(admins) == 1
    assert admins[0].is_admin
    assert admins[0].password_hash is not None
    assert admins[0].password_hash.startswith("$argon2id$")
    assert generated not in admins[0].password_hash
    assert admins[0].password_hash not in repr(admins[0])


def test_ensure_admin_with_given_password(db: Database) -> None:
    assert db.ensure_admin("correct horse battery staple") is None
    assert db.verify_password("admin", "correct horse battery staple")
    assert not db.verify_password("admin", "Correct horse battery staple")
    assert not db.verify_password("admin", "")


def test_ensure_admin_refuses_empty_password(db: Database) -> None:
    with pytest.raises(ConfigError, match="must not be empty"):
        db.ensure_admin("")


def test_verify_password_unknown_user_or_no_password(db: Database) -> None:
    with db.session() as s:
        s.add(User(username="cardonly", password_hash=None))
    assert not db.verify_password("nobody", "x")
    assert not db.verify_password("cardonly", "")
    assert not db.verify_password("cardonly", "x")


def test_verify_password_corrupt_hash(db: Database) -> None:
    with db.session() as s:
        s.add(User(username="broken", password_hash="not-a-phc-string"))
    assert not db.verify_password("broken", "x")


# -- servers ------------------------------------------------------------------------------


def test_add_server_and_settings_are_per_server(db: Database) -> None:
    db.add_server("site-berlin")
    assert [s.name for s in db.servers()] == ["primary", "site-berlin"]
    db.update_settings("site-berlin", {"spool_file_encryption": False})
    assert db.get_settings("site-berlin")["spool_file_encryption"] is False
    assert db.get_settings("primary")["spool_file_encryption"] is True
    with pytest.raises(ClientError, match="already exists"):
        db.add_server("site-berlin")
    with pytest.raises(UnknownServer):
        db.get_settings("site-paris")


# -- PostgreSQL ---------------------------------------------------------------------------


@pytest.fixture
def pg_url() -> Iterator[str]:
    base = os.environ.get(PG_ENV)
    if not base:
        pytest.skip(
            f"{PG_ENV} is not set: no PostgreSQL to test against "
            f"(run `make test`, or scripts/start-test-services.sh as root)"
        )
    name = f"spoolvault_test_{secrets.token_hex(6)}"
    admin_url = make_url(base).set(drivername="postgresql")
    conninfo = admin_url.render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        with psycopg.connect(conninfo, autocommit=True) as conn:
            for attempt in range(50):
                try:
                    conn.execute(drop)
                    break
                except psycopg.errors.InsufficientPrivilege:
                    # An autovacuum worker in the database, and a role without
                    # pg_signal_backend (scripts/start-test-services.sh grants it): it ends
                    # by itself soon.
                    if attempt == 49:
                        raise
                    time.sleep(0.2)


@pytest.mark.postgres
def test_postgres_schema_and_round_trip(pg_url: str) -> None:
    password = make_url(pg_url).password
    with Database.open(pg_url) as database:
        assert database.backend == "postgresql"
        assert database.schema_revision() == head_revision()
        assert schema_diff(database) == []
        assert password and f":{password}@" not in repr(database)
        assert ":***@" in repr(database)

        fields = job_fields(state="releasing", title="naïve résumé ✓")
        job = database.add_job(**fields)
        second = database.add_job(**job_fields())
        assert 1 <= job.id < second.id
        got = database.get_job(job.id)
        assert got is not None
        for name, value in fields.items():
            assert getattr(got, name) == value, name
        assert got.created_at.tzinfo == UTC
        assert got.created_at == job.created_at
        assert database.spool_names(encrypted=True) == {job.spool_name, second.spool_name}

        generated = database.ensure_admin(None)
        assert generated is not None
        assert database.verify_password("admin", generated)

        assert (
            database.update_settings("primary", {"hold_timeout_minutes": 5})["hold_timeout_minutes"]
            == 5
        )
    with Database.open(pg_url) as again:
        assert again.get_job(job.id) is not None
        assert again.get_settings()["hold_timeout_minutes"] == 5
        assert again.ensure_admin(None) is None


@pytest.mark.postgres
def test_postgres_concurrent_first_start(pg_url: str) -> None:
    # Several application servers starting at once on an empty database: one migrates,
    # the others wait on the advisory lock and find the schema current.
    results: list[object] = []

    def start() -> None:
        try:
            with Database.open(pg_url) as database:
                results.append(database.ensure_admin(None))
        except BaseException as exc:  # collected and checked in the main thread
            results.append(exc)

    workers = [threading.Thread(target=start) for _ in range(4)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert not [r for r in results if isinstance(r, BaseException)], results
    assert len([r for r in results if isinstance(r, str)]) == 1


@pytest.mark.postgres
def test_postgres_exclusive_settings_race(pg_url: str) -> None:
    # The servers row is locked FOR UPDATE: two admins enabling encryption and archiving
    # at the same moment on two app servers cannot both pass validation.
    with Database.open(pg_url) as one, Database.open(pg_url) as two:
        for _ in range(10):
            one.update_settings("primary", {"spool_file_encryption": False})
            barrier = threading.Barrier(2)
            outcomes: list[str] = []

            def change(
                database: Database,
                name: str,
                barrier: threading.Barrier = barrier,
                outcomes: list[str] = outcomes,
            ) -> None:
                barrier.wait()
                try:
                    database.update_settings("primary", {name: True})
                    outcomes.append("ok")
                except SettingsConflict:
                    outcomes.append("conflict")

            workers = [
                threading.Thread(target=change, args=(one, "spool_file_encryption")),
                threading.Thread(target=change, args=(two, "print_archiving")),
            ]
            for t in workers:
                t.start()
            for t in workers:
                t.join()
            assert sorted(outcomes) == ["conflict", "ok"]
            final = one.get_settings()
            assert not (final["spool_file_encryption"] and final["print_archiving"])
            one.update_settings("primary", {"print_archiving": False})


def _lost_commit_drill(db: Database, monkeypatch: pytest.MonkeyPatch, **fault: Any) -> None:
    """Three jobs whose transaction ends with a lost connection: all three are recorded
    once, with their own ids, whether the COMMIT had landed or not."""
    monkeypatch.setattr(db._jobs_in, "engine", LostCommit(db.engine, **fault))
    jobs = [db.new_job(**job_fields(title=f"job {n}")) for n in range(3)]
    assert db.add_jobs(jobs) == [None, None, None]
    with db.session(write=False) as s:
        rows = list(s.scalars(select(Job).order_by(Job.id)))
    assert [(r.id, r.spool_name) for r in rows] == [(j.id, j.spool_name) for j in jobs]


def test_a_commit_that_landed_but_failed_is_not_recorded_twice(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Retrying one job at a time after an ambiguous COMMIT would insert the jobs that did
    land again: each would fail as a duplicate spool name, and intake would remove the file
    its committed record names. The jobs that landed are found and keep their rows."""
    _lost_commit_drill(db, monkeypatch, landed=True)


def test_a_commit_that_failed_and_did_not_land_is_retried(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    _lost_commit_drill(db, monkeypatch, landed=False)


@pytest.mark.postgres
@pytest.mark.parametrize("landed", [True, False])
def test_lost_commits_on_postgres(
    pg_url: str, monkeypatch: pytest.MonkeyPatch, landed: bool
) -> None:
    with Database.open(pg_url) as database:
        _lost_commit_drill(database, monkeypatch, landed=landed)


def test_a_commit_that_failed_and_cannot_be_checked_is_unknown(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db._jobs_in, "engine", LostCommit(db.engine))
    monkeypatch.setattr(db._jobs_in, "read_engine", Unreachable())
    jobs = [db.new_job(**job_fields()) for _ in range(2)]
    errors = db.add_jobs(jobs)
    assert all(isinstance(e, CommitUnknown) for e in errors), errors


def test_a_second_insert_that_fails_after_a_lost_commit_is_unknown(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first COMMIT was lost and not found; the insert sent once more fails before its
    own COMMIT (a timeout on the unique index, the connection gone). The first may still
    land late, so the outcome is unknown (the file is kept), not a plain error."""
    monkeypatch.setattr(db._jobs_in, "engine", LostCommit(db.engine, landed=False, then_down=True))
    errors = db.add_jobs([db.new_job(**job_fields()) for _ in range(2)])
    assert all(isinstance(e, CommitUnknown) for e in errors), errors


def test_database_errors_are_logged_without_their_statement_and_parameters() -> None:
    """SQLAlchemy's error text carries the statement and every row's parameters (other
    users' owners and titles); logs get the driver's first line only."""
    secret = {"title": "Q3 layoffs.pdf", "owner": "ceo"}
    error = OperationalError("INSERT INTO jobs ...", secret, Exception("deadlock\nDETAIL: x"))
    assert brief_error(error) == "Exception: deadlock"
    assert brief_error(OperationalError("COMMIT", {}, Exception("  \n "))) == "Exception: "


def test_a_job_whose_commits_keep_failing_is_unknown_not_retried_forever(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db._jobs_in, "engine", LostCommit(db.engine, lost=99, landed=False))
    errors = db.add_jobs([db.new_job(**job_fields()) for _ in range(2)])
    assert all(isinstance(e, CommitUnknown) for e in errors), errors
    assert db._jobs_in.engine.lost == 99 - 3  # the batch, then each job once more
    with db.session(write=False) as s:
        assert s.scalar(select(func.count()).select_from(Job)) == 0


def test_a_definite_insert_failure_is_not_checked_or_retried(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An insert refused before its COMMIT (here: the database is gone) cannot have
    landed: it fails at once, and its file may go."""
    monkeypatch.setattr(db._jobs_in, "engine", Unreachable())
    monkeypatch.setattr(db._jobs_in, "read_engine", None)  # never asked
    [error] = db.add_jobs([db.new_job(**job_fields())])
    assert isinstance(error, OperationalError) and not isinstance(error, CommitUnknown)


def test_concurrent_add_job_commits_each_job_once_in_shared_transactions(db: Database) -> None:
    """Group commit: 16 threads record 25 jobs each; every job gets its own id and row,
    the returned objects are complete (defaults filled in), and a duplicate spool name
    fails only its own job, not the others committed with it."""
    _group_commit_drill(db)


@pytest.mark.postgres
def test_group_commit_on_postgres(pg_url: str) -> None:
    with Database.open(pg_url) as database:
        _group_commit_drill(database)


def _group_commit_drill(db: Database) -> None:
    taken = uuid.uuid4().hex
    db.add_job(**job_fields(spool_name=taken))
    start = threading.Barrier(16)
    errors: list[BaseException] = []
    made: list[Job] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        start.wait()
        for k in range(25):
            name = taken if (n, k) == (7, 3) else uuid.uuid4().hex
            try:
                job = db.add_job(**job_fields(owner=f"user{n}", spool_name=name))
            except IntegrityError as exc:
                with lock:
                    errors.append(exc)
                continue
            with lock:
                made.append(job)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(errors) == 1 and len(made) == 16 * 25 - 1
    assert len({j.id for j in made}) == len(made)
    for job in made[:20]:
        stored = db.get_job(job.id)
        assert stored is not None and stored.spool_name == job.spool_name
        assert stored.owner == job.owner
        assert job.document_format == "application/octet-stream" and job.server == "primary"
        assert job.state is JobState.HELD and job.attributes == "[]"
    with db.session(write=False) as s:
        assert s.scalar(select(func.count()).select_from(Job)) == 16 * 25
