"""The database behind a small interface: open (and migrate), sessions, the queries we need.

Two real backends, one schema (models.py, created by the Alembic migrations):

- SQLite, the embedded default, in WAL mode with ``synchronous=FULL``: a commit is on disk
  before we acknowledge anything (a job accepted, a release recorded). Write transactions
  start with ``BEGIN IMMEDIATE`` so two writers queue on ``busy_timeout`` instead of one
  failing with "database is locked" when it upgrades a read lock; read-only sessions
  (``session(write=False)``) use a deferred BEGIN and never wait for writers.
- PostgreSQL through psycopg 3, for several application servers on one database.

``Database.open`` runs ``alembic upgrade head`` on every start (a no-op when the schema is
current) and refuses a database whose schema is newer than this build knows.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import secrets
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import Connection, Engine, create_engine, event, insert, select, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.schema import CallableColumnDefault, ScalarElementColumnDefault

from spoolvault import settings
from spoolvault.db.models import (
    FILE_STATES,
    Job,
    JobState,
    Server,
    ServerKind,
    ServerSetting,
    User,
    utcnow,
)
from spoolvault.db.url import mask_url, normalize_url
from spoolvault.errors import (
    ClientError,
    ConfigError,
    Conflict,
    NotFound,
    TemporaryFailure,
)

log = logging.getLogger(__name__)

MIGRATIONS_DIR: Final = Path(__file__).with_name("migrations")
ADMIN_USERNAME: Final = "admin"
PRIMARY_SERVER: Final = "primary"
SQLITE_BUSY_TIMEOUT_MS: Final = 5000
PG_CONNECT_TIMEOUT_S: Final = 10
# pg_advisory_xact_lock key: app servers starting together migrate one after the other.
_MIGRATION_LOCK_KEY: Final = 0x73706F6F6C7661  # "spoolva"

_hasher = PasswordHasher()  # argon2id, RFC 9106 low-memory profile


class UserExists(Conflict):
    """A user of that name exists already (HTTP 409)."""


class CommitUnknown(TemporaryFailure):
    """A job record's commit failed and the database could not be asked whether it had
    landed all the same: the record may exist. Its spool file must be kept (a file no job
    names is removed at the next start; a record without its file would be a broken job)."""


class UnknownServer(NotFound):
    """No primary or site server of that name (HTTP 404)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no server named {name!r}")
        self.name = name


@functools.cache
def _dummy_hash() -> str:
    return _hasher.hash(secrets.token_urlsafe(16))


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic configuration for our migrations, built in code (there is no alembic.ini).

    With ``connection``, Alembic commands (upgrade, revision --autogenerate, ...) run on it.
    """
    cfg = Config()
    # Config values go through configparser interpolation: a literal % must be doubled.
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def _sqlite_on_connect(dbapi_connection: Any, connection_record: Any) -> None:
    # Let SQLAlchemy's "begin" event (below) emit BEGIN itself: the sqlite3 module's own
    # implicit transactions start late and deferred, which breaks read-then-write safety.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        # busy_timeout first, so the switch to WAL waits for another process's lock.
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        mode = cursor.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        # FULL: in WAL mode NORMAL may lose the last commits on power loss; we acknowledge
        # a job only once its record is durable, so every commit syncs the WAL.
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()
    if str(mode).lower() != "wal":
        log.warning(
            "SQLite refused WAL mode (journal_mode=%s); is the data directory on a network "
            "file system? Put the database on a local disk",
            mode,
        )


def _sqlite_on_begin(conn: Connection) -> None:
    mode = conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")
    if mode not in ("DEFERRED", "IMMEDIATE"):
        raise ValueError(f"sqlite_begin must be DEFERRED or IMMEDIATE, not {mode!r}")
    conn.exec_driver_sql(f"BEGIN {mode}")


def _private_sqlite_files(database: str | None) -> None:
    """The SQLite file (password and PIN hashes, card HMACs, every title) made 0600 before
    SQLite opens it: SQLite gives its -wal and -shm the database file's mode. Existing
    files readable by others are tightened."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database)
    with contextlib.suppress(OSError):  # SQLite itself reports a path it cannot open
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm"), Path(f"{path}-journal")):
        with contextlib.suppress(OSError):
            if name.stat().st_mode & 0o077:
                name.chmod(0o600)
                log.warning("%s was readable by group or others: made 0600", name)


def _create_engine(url: URL) -> Engine:
    if url.get_backend_name() == "sqlite":
        _private_sqlite_files(url.database)
        engine = create_engine(url)
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
        return engine
    connect_args: dict[str, Any] = {}
    if "connect_timeout" not in url.query:
        # An unreachable server should fail start-up in seconds, not hang for minutes.
        connect_args["connect_timeout"] = PG_CONNECT_TIMEOUT_S
    # pre_ping: a restarted PostgreSQL must not turn the next request into an error.
    return create_engine(url, pool_pre_ping=True, connect_args=connect_args)


@dataclass
class _Pending:
    job: Job
    done: bool = False
    committed: bool = False
    error: BaseException | None = None
    lost_commit: bool = False  # a commit of it failed and it was not found: inserted again


class _GroupInsert:
    """Group commit for new jobs: one transaction, one WAL sync, for every job waiting.

    Intake threads call `add` at the same time (8 clients: 8 jobs being recorded). The
    first becomes the leader: it inserts every pending job in one transaction and wakes
    the others; who comes meanwhile waits for the next one. Each job is committed before
    its `add` returns, so a client still hears success only once its record is durable,
    and the WAL is synced once per batch instead of once per job. Core, not the ORM: the
    ORM's unit of work was a fifth of intake CPU (docs/benchmarks.md, "Intake").
    Intake's record thread calls ``commit`` itself with its own batches (``add_jobs``).
    """

    def __init__(self, engine: Engine, read_engine: Engine) -> None:
        self.engine = engine
        self.read_engine = read_engine  # for checks: never waits for a writer (SQLite)
        self._cond = threading.Condition()
        self._pending: list[_Pending] = []
        self._busy = False
        self._columns = [c for c in Job.__table__.columns if c.key != "id"]
        self._insert = insert(Job).returning(Job.id, sort_by_parameter_order=True)

    def add(self, job: Job) -> Job:
        entry = _Pending(job)
        with self._cond:
            self._pending.append(entry)
            while not entry.done:
                if self._busy:
                    self._cond.wait()
                    continue
                self._busy, batch, self._pending = True, self._pending, []
                self._cond.release()
                try:
                    self.commit(batch)
                finally:
                    self._cond.acquire()
                    self._busy = False
                    for e in batch:
                        if not e.committed and e.error is None:  # the leader was interrupted
                            e.error = RuntimeError("the job record was not committed")
                        e.done = True
                    self._cond.notify_all()
        if entry.error is not None:
            raise entry.error
        return job

    def _row(self, job: Job) -> dict[str, Any]:
        """Every column's value, the model's defaults filled in on the object too (as a
        flush would), so all rows have the same keys and the returned job is complete."""
        for column in self._columns:
            if column.key in job.__dict__:
                continue
            default = column.default
            value = None
            if isinstance(default, ScalarElementColumnDefault):
                value = default.arg
            elif isinstance(default, CallableColumnDefault):
                value = default.arg(None)  # type: ignore[arg-type]  # ctx unused
            setattr(job, column.key, value)
        return {column.key: job.__dict__[column.key] for column in self._columns}

    def commit(self, batch: list[_Pending]) -> None:
        """Insert these jobs in one transaction (one at a time if that fails)."""
        rows = [self._row(e.job) for e in batch]
        inserted = False
        try:
            with self.engine.begin() as conn:
                ids = conn.execute(self._insert, rows).scalars().all()
                inserted = True
        except Exception as exc:
            if inserted:
                self._after_lost_commit(batch, exc)
            elif len(batch) == 1:
                self._failed(batch[0], exc)
            else:
                # One bad row (a duplicate spool name) must not fail the others.
                for e in batch:
                    self.commit([e])
            return
        for e, job_id in zip(batch, ids, strict=True):
            e.job.id = job_id
            e.committed = True

    def _after_lost_commit(self, batch: list[_Pending], exc: Exception) -> None:
        """A COMMIT failed: it may have committed all the same (PostgreSQL's connection lost
        during it). Inserted again, such a job would fail as a duplicate, and its caller
        would remove the spool file its record names. So the jobs that landed keep their
        rows; the others are inserted again, once: a job whose second attempt fails in any
        way (a duplicate or a timeout on the unique index while the first COMMIT lands late)
        comes back here, and if still not found its outcome is unknown."""
        log.warning("job records: not confirmed (%s); checking which landed", brief_error(exc))
        try:
            rest = self._not_landed(batch)
        except Exception as check:
            log.error("job records: cannot check which landed (%s)", brief_error(check))
            for e in batch:
                e.error = CommitUnknown(_COMMIT_UNKNOWN)
            return
        for e in rest:
            if e.lost_commit:  # its second attempt failed too: leave it to the operator
                e.error = CommitUnknown(_COMMIT_UNKNOWN)
            else:
                e.lost_commit = True
                self.commit([e])

    def _failed(self, e: _Pending, exc: Exception) -> None:
        """One job's insert failed before its COMMIT: its error, unless it is a second
        attempt after a lost COMMIT (whose first may still land)."""
        if e.lost_commit:
            self._after_lost_commit([e], exc)
        else:
            e.error = exc

    def _not_landed(self, batch: list[_Pending]) -> list[_Pending]:
        """The jobs of ``batch`` not in the database; the others get their ids.

        A row is this job's if it names the same spool file (a random name) and has the
        same owner, size and creation time. A Create-Job job has no file yet and cannot be
        told apart: it is inserted again (its twin expires unused, as any job that never
        gets its document).
        """
        names = [e.job.spool_name for e in batch if e.job.spool_name is not None]
        if not names:
            return batch
        query = select(Job.id, Job.spool_name, Job.owner, Job.size, Job.created_at).where(
            Job.spool_name.in_(names)
        )
        with self.read_engine.connect() as conn:
            found = {row.spool_name: row for row in conn.execute(query)}
        rest = []
        for e in batch:
            row = found.get(e.job.spool_name)
            job = e.job
            if row is not None and (row.owner, row.size, row.created_at) == (
                job.owner,
                job.size,
                job.created_at,
            ):
                job.id = row.id
                e.committed = True
            else:
                rest.append(e)
        return rest


_COMMIT_UNKNOWN = (
    "the job record's commit failed, and the database could not tell whether it was "
    "recorded; the document is kept"
)


def brief_error(exc: BaseException) -> str:
    """An exception without SQLAlchemy's statement and parameters (other users' job data):
    its driver error's type and first line."""
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    lines = str(orig).strip().splitlines()
    return f"{type(orig).__name__}: {lines[0] if lines else ''}"


class Database:
    """An opened, migrated database. Thread-safe: each call uses its own session."""

    def __init__(self, engine: Engine, *, clock: Callable[[], datetime] = utcnow) -> None:
        """Wrap an engine made by ``Database.open`` (which also migrates); prefer ``open``."""
        self.engine = engine
        self.clock = clock
        self._write_sessions = sessionmaker(engine, expire_on_commit=False)
        read_engine = engine.execution_options(sqlite_begin="DEFERRED")
        self._read_engine = read_engine
        self._read_sessions = sessionmaker(read_engine, expire_on_commit=False)
        self._jobs_in = _GroupInsert(engine, read_engine)

    @classmethod
    def open(cls, url: str, *, clock: Callable[[], datetime] = utcnow) -> Database:
        """Connect to ``url`` (see ``database_url``) and bring the schema up to date.

        Raises ConfigError, with the password masked, when the database cannot be reached,
        opened or written, or when its schema is newer than this build.
        """
        sa_url = make_url(normalize_url(url))
        engine = _create_engine(sa_url)
        db = cls(engine, clock=clock)
        try:
            db._migrate()
        except BaseException:
            engine.dispose()
            raise
        return db

    # -- opening -----------------------------------------------------------------------

    @property
    def backend(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self.engine.dialect.name

    @property
    def display_url(self) -> str:
        """The URL with its password masked: for logs and messages."""
        return mask_url(self.engine.url.render_as_string(hide_password=False))

    def __repr__(self) -> str:
        return f"Database({self.display_url!r})"

    def _open_error(self, exc: DBAPIError) -> ConfigError:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        url = self.engine.url
        if url.password:
            reason = reason.replace(str(url.password), "***")
        if self.backend == "sqlite":
            path = Path(url.database or "")
            if path.parent.exists() and not path.parent.is_dir():
                reason = f"{path.parent} is not a directory"
            elif not path.parent.exists():
                reason = f"directory {path.parent} does not exist"
            return ConfigError(f"cannot open the SQLite database {path}: {reason}")
        return ConfigError(f"cannot use the PostgreSQL database {self.display_url}: {reason}")

    def _migrate(self) -> None:
        """``alembic upgrade head`` in one transaction; refuse a schema from the future."""
        try:
            with self.engine.begin() as conn:
                if self.backend == "postgresql":
                    conn.execute(
                        text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY}
                    )
                cfg = alembic_config(conn)
                script = ScriptDirectory.from_config(cfg)
                known = {rev.revision for rev in script.walk_revisions()}
                current = MigrationContext.configure(conn).get_current_heads()
                unknown = [rev for rev in current if rev not in known]
                if unknown:
                    raise ConfigError(
                        f"the database {self.display_url} has schema revision "
                        f"{', '.join(unknown)}, newer than this spoolvault knows "
                        f"(up to {script.get_current_head()}); it was used by a newer "
                        f"release: upgrade spoolvault again, or restore a backup"
                    )
                command.upgrade(cfg, "head")
        except DBAPIError as exc:
            raise self._open_error(exc) from exc
        except CommandError as exc:
            raise ConfigError(f"migrating the database {self.display_url}: {exc}") from exc

    def schema_revision(self) -> str | None:
        """The Alembic revision the database is at (``"0001"``, ...), None if unmigrated."""
        with self._read_engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def close(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- sessions ----------------------------------------------------------------------

    @contextlib.contextmanager
    def session(self, *, write: bool = True) -> Iterator[Session]:
        """A session in one transaction: committed if the block succeeds, else rolled back.

        Objects stay usable after the block (they are not expired on commit). Pass
        ``write=False`` for read-only work: on SQLite it does not take the write lock.
        """
        factory = self._write_sessions if write else self._read_sessions
        with factory.begin() as session:
            yield session

    # -- jobs --------------------------------------------------------------------------

    def add_job(self, **fields: Any) -> Job:
        """Record a job (``new_job``'s fields) and commit; return it with its new id."""
        return self._jobs_in.add(self.new_job(**fields))

    def new_job(
        self,
        *,
        owner: str,
        queue: str,
        spool_name: str | None,
        size: int,
        encrypted: bool,
        title: str = "",
        state: JobState | str = JobState.HELD,
        state_reason: str | None = None,
        pages: int | None = None,
        key_id: str | None = None,
        format_version: int | None = None,
        server: str = PRIMARY_SERVER,
        created_at: datetime | None = None,
        **details: Any,
    ) -> Job:
        """A job not recorded yet (``add_job`` and ``add_jobs`` record it)."""
        now = created_at if created_at is not None else self.clock()
        return Job(
            owner=owner,
            title=title,
            queue=queue,
            state=state,
            state_reason=state_reason,
            size=size,
            pages=pages,
            encrypted=encrypted,
            key_id=key_id,
            format_version=format_version,
            spool_name=spool_name,
            server=server,
            created_at=now,
            updated_at=now,
            **details,
        )

    def add_jobs(self, jobs: list[Job]) -> list[BaseException | None]:
        """Record new jobs (``new_job``) in one transaction where possible, at once.

        Each job gets its id, or its error in the list returned (None: recorded); one bad
        job (a duplicate spool name) does not keep the others from being recorded.
        """
        entries = [_Pending(job) for job in jobs]
        try:
            self._jobs_in.commit(entries)
        except Exception:  # a bug: what each job had got to still counts
            log.exception("job records: recording a batch failed")
            for e in entries:
                if not e.committed and e.error is None:
                    e.error = CommitUnknown(_COMMIT_UNKNOWN)
        return [
            e.error or (None if e.committed else RuntimeError("the job record was not committed"))
            for e in entries
        ]

    def get_job(self, job_id: int) -> Job | None:
        """The job with this id, or None (also for an id no column holds: 2**63 and up)."""
        if not 0 < job_id < 2**63:
            return None
        with self.session(write=False) as s:
            return s.get(Job, job_id)

    def spool_names(self, encrypted: bool) -> set[str]:
        """Spool file names that jobs still hold (held, releasing, failed).

        A printed, cancelled or expired job's file has been shredded; any other file in the
        spool directory is an orphan (``Spool.orphans``).
        """
        query = select(Job.spool_name).where(
            Job.encrypted == encrypted, Job.state.in_(sorted(FILE_STATES))
        )
        with self.session(write=False) as s:
            return set(s.scalars(query))

    # -- users -------------------------------------------------------------------------

    def add_user(self, username: str, password: str | None, *, is_admin: bool = False) -> User:
        """Create a local user (argon2id password hash; None: no password login)."""
        if not username or len(username) > 255 or username != username.strip():
            raise ClientError("a user name is 1 to 255 characters without surrounding spaces")
        if password is not None and len(password) < 8:
            raise ClientError("a password has at least 8 characters")
        hashed = _hasher.hash(password) if password is not None else None
        user = User(
            username=username, password_hash=hashed, is_admin=is_admin, created_at=self.clock()
        )
        try:
            with self.session() as s:
                s.add(user)
        except IntegrityError:
            raise UserExists(f"a user named {username!r} exists already") from None
        return user

    def ensure_admin(self, password: str | None) -> str | None:
        """Create the ``admin`` user on first start; return its password only if generated.

        With ``password`` (from SPOOLVAULT_ADMIN_PASSWORD) that password is set and None is
        returned; without, a random one is set and returned so the caller can print it
        once. If ``admin`` already exists nothing changes and None is returned.
        """
        if password is not None and not password:
            raise ConfigError("the admin password must not be empty")
        with self.session(write=False) as s:
            if s.scalar(select(User.id).where(User.username == ADMIN_USERNAME)) is not None:
                return None
        generated = secrets.token_urlsafe(12) if password is None else None
        # Hash outside the write transaction: argon2 is deliberately slow.
        hashed = _hasher.hash(generated if generated is not None else str(password))
        try:
            with self.session() as s:
                if s.scalar(select(User.id).where(User.username == ADMIN_USERNAME)) is not None:
                    return None
                s.add(
                    User(
                        username=ADMIN_USERNAME,
                        password_hash=hashed,
                        is_admin=True,
                        created_at=self.clock(),
                    )
                )
        except IntegrityError:
            return None  # another application server created it at the same moment
        log.info("created user %r", ADMIN_USERNAME)
        return generated

    def is_admin(self, username: str) -> bool:
        """True if ``username`` is an administrator (and not disabled)."""
        with self.session(write=False) as s:
            query = select(User.is_admin).where(User.username == username, ~User.disabled)
            return bool(s.scalar(query))

    def verify_password(self, username: str, password: str) -> bool:
        """True if ``username`` exists, is enabled, has a password and ``password`` matches."""
        with self.session(write=False) as s:
            user = s.scalar(select(User).where(User.username == username))
        # A disabled user (e.g. gone from the directory) is refused like an unknown one.
        stored = user.password_hash if user is not None and not user.disabled else None
        if user is None or stored is None:
            # Spend the same time as a real check: the answer time must not tell an
            # attacker which user names exist.
            with contextlib.suppress(VerificationError):
                _hasher.verify(_dummy_hash(), password)
            return False
        try:
            _hasher.verify(stored, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
        if _hasher.check_needs_rehash(stored):
            # The hashing parameters were raised since this hash was made.
            new_hash = _hasher.hash(password)
            with self.session() as s:
                s.get_one(User, user.id).password_hash = new_hash
        return True

    # -- servers and their settings ----------------------------------------------------

    def servers(self) -> list[Server]:
        """The primary server and every site server, primary first."""
        with self.session(write=False) as s:
            rows = s.scalars(select(Server).order_by(Server.name))
            return sorted(rows, key=lambda srv: srv.kind != ServerKind.PRIMARY)

    def add_server(self, name: str, kind: ServerKind | str = ServerKind.SITE) -> Server:
        """Register a site server (the primary exists from the first migration)."""
        if not name or len(name) > 64:
            raise ClientError("a server name must be 1 to 64 characters")
        server = Server(name=name, kind=ServerKind(kind), created_at=self.clock())
        try:
            with self.session() as s:
                s.add(server)
        except IntegrityError:
            raise ClientError(f"a server named {name!r} already exists") from None
        return server

    @staticmethod
    def _stored_settings(s: Session, server: str) -> dict[str, object]:
        rows = s.execute(
            select(ServerSetting.key, ServerSetting.value).where(ServerSetting.server == server)
        )
        out: dict[str, object] = {}
        for key, value in rows:
            try:
                out[key] = json.loads(value)
            except ValueError:
                log.warning("server %s: setting %s is not valid JSON; default used", server, key)
        return out

    def get_settings(self, server: str = PRIMARY_SERVER) -> dict[str, Any]:
        """Every setting of ``server``: its stored values over the defaults."""
        with self.session(write=False) as s:
            if s.get(Server, server) is None:
                raise UnknownServer(server)
            stored = self._stored_settings(s, server)
        return settings.from_stored(stored)

    def update_settings(self, server: str, changes: Mapping[str, object]) -> dict[str, Any]:
        """Validate and store ``changes`` (a partial update); return the full new settings.

        Raises InvalidSetting or SettingsConflict (nothing is stored then), UnknownServer.
        """
        with self.session() as s:
            # Lock the server row: two admins each enabling one of two exclusive settings
            # must not both pass validation against the same old values.
            if s.get(Server, server, with_for_update=True) is None:
                raise UnknownServer(server)
            new = settings.validate(changes, self._stored_settings(s, server))
            for name in changes:
                value = json.dumps(new[name])
                row = s.get(ServerSetting, (server, name))
                if row is None:
                    s.add(ServerSetting(server=server, key=name, value=value))
                else:
                    row.value = value
        return new
