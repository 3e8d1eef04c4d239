"""The audit log: who did what to which job, on which printer, when, and how it ended.

Every event is kept twice: as a row of ``audit_events`` (to query) and as a line of a
hash-chained JSON-lines file, ``<data-dir>/audit/audit.jsonl`` (to prove history was not
edited). docs/audit.md specifies the file; in short, each line is the canonical JSON
(RFC 8785 for the value types used: sorted keys, no whitespace, UTF-8) of the event with
``prev``, the previous line's ``hash`` (64 zeros for the first line), and ``hash``, the
SHA-256 of the line's canonical JSON without ``hash``.

Writing (one writer, the server process; readers such as ``spoolvault audit verify`` may
read at any time):

1. under a lock: the next id, ``prev``, ``hash``, and one ``write()`` of the whole line to
   the file opened with O_APPEND, so the file order is the chain order;
2. group commit: one thread fsyncs the file for every line written so far while the
   others wait for it. There is no timer: a lone event is synced at once, and events that
   arrive during a sync share the next one. ``record`` returns here: the event is durable.
3. a database writer thread inserts the synced lines' rows, in id order, in batches.

So the file is the record, and the database a copy that is never ahead of it: after a
crash the database may lack the file's last events (they are restored from the file at
start-up), and the file may end in a torn line (set aside to ``audit.jsonl.torn-<time>``);
both are reported as an ``audit.recovered`` event.

Recording never breaks the operation it records: a failure is logged at ERROR, the
operation goes on, and ``AuditLog.status`` (shown by the health endpoint) says ``error``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, Literal

from sqlalchemy import func, insert, select

from spoolvault.db import AuditEvent, Database
from spoolvault.db.models import utcnow
from spoolvault.errors import ConfigError, SpoolvaultError

log = logging.getLogger(__name__)

SYSTEM: Final = "system"  # the actor of what nobody asked for: expiry, direct queues
GENESIS: Final = "0" * 64  # the first line's prev
AUDIT_DIR: Final = "audit"
AUDIT_FILE: Final = "audit.jsonl"
PENDING_DIR: Final = "pending"  # events queued by other processes (queue_pending)
MAX_ACTOR = 255
MAX_DETAIL = 2000
_AT_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
_AT_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
_HASH_RE = re.compile(r"[0-9a-f]{64}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_READ_BLOCK = 1 << 16


class Action(StrEnum):
    """What happened: the whole vocabulary, in one place (docs/audit.md lists it)."""

    JOB_SUBMIT = "job.submit"  # a document arrived; the job is held (any intake)
    JOB_RELEASE = "job.release"  # the printer accepted the job
    JOB_RELEASE_FAILED = "job.release_failed"  # refused (blocked, not allowed) or failed
    JOB_CANCEL = "job.cancel"  # by its owner or an administrator
    JOB_ABORT = "job.abort"  # IPP Close-Job before any document
    JOB_EXPIRE = "job.expire"  # not released within the hold timeout
    JOB_HOLD_EXTENDED = "job.hold_extend"  # the owner extended the hold (once)
    JOB_REMIND = "job.remind"  # the owner was told the job is about to expire
    JOB_REDACT = "job.redact"  # old jobs' document names erased (privacy setting)
    SETTINGS_CHANGE = "settings.change"
    PRINTER_CHANGE = "printer.change"  # a printer added, changed or removed
    ARCHIVE_VIEW = "archive.view"  # an approved administrator listed, read or previewed
    ARCHIVE_PURGE = "archive.purge"  # archived documents past the retention removed
    ADMIN_VIEW = "admin.view"  # an administrator listed jobs or the audit log
    AUDIT_RECOVERED = "audit.recovered"  # start-up repaired the file after a crash
    SERVER_RECOVERED = "server.recovered"  # start-up cleaned up after a crash (what, how many)
    AUTH_LOGIN = "auth.login"  # a login at a release station or device: ok, or refused
    USER_CHANGE = "user.change"  # a user created or changed (which fields, never values)
    DEVICE_CHANGE = "device.change"  # a release device registered or removed


class Outcome(StrEnum):
    """How it ended."""

    OK = "ok"
    REFUSED = "refused"  # not allowed or not possible; nothing changed
    FAILED = "failed"  # tried, and it went wrong


# The event fields, in the order people read them; a line has these plus "hash".
FIELDS: Final = ("id", "at", "actor", "action", "job_id", "printer", "outcome", "detail", "prev")
_LINE_KEYS: Final = frozenset({*FIELDS, "hash"})


@dataclass(frozen=True)
class AuditEntry:
    """An event to record (``AuditLog.record_many``): ``record``'s arguments."""

    actor: str
    action: Action
    job_id: int | None = None
    printer: str | None = None
    outcome: Outcome = Outcome.OK
    detail: str = ""
    at: datetime | None = None


class AuditError(SpoolvaultError):
    """The audit log could not record an event (logged; never reaches a client)."""


class AuditBusy(ConfigError):
    """Another process (the running server) writes this audit log."""


def queue_pending(
    audit_file: Path,
    actor: str,
    action: Action,
    *,
    outcome: Outcome = Outcome.OK,
    job_id: int | None = None,
    printer: str | None = None,
    detail: str = "",
    at: datetime | None = None,
) -> Path:
    """Queue an event for the process that writes the audit log (the running server).

    A CLI command run beside a server cannot append to the chain itself; it leaves the
    event, durably, in ``audit/pending/``, and the server records it within seconds
    (its housekeeping) or at its next start.
    """
    directory = audit_file.parent / PENDING_DIR
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    when = at if at is not None else utcnow()
    body = canonical(
        {
            "at": format_at(when),
            "actor": actor,
            "action": action.value,
            "outcome": outcome.value,
            "job_id": job_id,
            "printer": printer,
            "detail": detail,
        }
    )
    name = f"{time.time_ns():020d}-{os.getpid()}-{secrets.token_hex(4)}.json"
    tmp = directory / f".{name}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, body)
        os.fsync(fd)
    finally:
        os.close(fd)
    final = directory / name
    os.rename(tmp, final)
    _fsync_dir(directory)
    return final


class QueuedAudit:
    """Stands in for the AuditLog in a command-line tool while the server writes the log:
    every event is queued (`queue_pending`) for the server to record."""

    def __init__(self, audit_file: Path) -> None:
        self.audit_file = audit_file

    def record(
        self,
        actor: str,
        action: Action,
        *,
        job_id: int | None = None,
        printer: str | None = None,
        outcome: Outcome = Outcome.OK,
        detail: str = "",
        at: datetime | None = None,
    ) -> None:
        try:
            queue_pending(
                self.audit_file,
                actor,
                action,
                outcome=outcome,
                job_id=job_id,
                printer=printer,
                detail=detail,
                at=at,
            )
        except OSError as exc:  # never breaks what it records, as AuditLog.record
            log.error("audit event NOT queued (%s by %s, job %s): %s", action, actor, job_id, exc)

    def record_many(self, entries: Sequence[AuditEntry]) -> None:
        for e in entries:
            self.record(
                e.actor,
                e.action,
                job_id=e.job_id,
                printer=e.printer,
                outcome=e.outcome,
                detail=e.detail,
                at=e.at,
            )

    def sync(self, timeout: float = 10.0) -> bool:
        return False  # the server records queued events within seconds

    def ingest_pending(self) -> int:
        return 0

    def close(self) -> None:
        pass


def open_for_command(audit_file: Path, db: Database) -> AuditLog | QueuedAudit:
    """The audit log for a command-line tool: the log itself when no server runs (held
    until `close`), else a QueuedAudit."""
    try:
        return AuditLog.open(audit_file, db)
    except AuditBusy:
        return QueuedAudit(audit_file)


def record_offline(
    audit_file: Path, db: Database, actor: str, action: Action, **kw: Any
) -> Literal["recorded", "queued"]:
    """Record an event from a command-line tool: itself when no server runs, else queued."""
    try:
        audit = AuditLog.open(audit_file, db)
    except AuditBusy:
        queue_pending(audit_file, actor, action, **kw)
        return "queued"
    try:
        if audit.record(actor, action, **kw) is None:
            raise ConfigError(f"the audit log {audit_file} could not record the event")
    finally:
        audit.close()
    return "recorded"


def audit_path(data_root: Path) -> Path:
    """The audit file of a data directory."""
    return data_root / AUDIT_DIR / AUDIT_FILE


def canonical(obj: Mapping[str, object]) -> bytes:
    """Canonical JSON: sorted keys, no whitespace, UTF-8 (RFC 8785 for strings, ints, null)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def format_at(at: datetime) -> str:
    """A timestamp as the file writes it: UTC, microseconds, ``Z``."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"naive datetime {at!r}: give a timezone-aware (UTC) datetime")
    return at.astimezone(UTC).strftime(_AT_FORMAT)


def parse_at(text: str) -> datetime:
    """The inverse of ``format_at``; ValueError for any other form."""
    # fromisoformat is ~20 times faster than strptime (every event is parsed once for its
    # row), but accepts more forms: the round trip keeps it as strict as the format.
    at = datetime.fromisoformat(text)
    if at.tzinfo is None or format_at(at) != text:
        raise ValueError(f"time data {text!r} does not match format {_AT_FORMAT!r}")
    return at.astimezone(UTC)


def _text(value: str, limit: int) -> str:
    # No control characters (titles come from clients): a line then needs no JSON escapes
    # but \" and \\, so any tool that sorts keys and writes compact UTF-8 JSON (jq -cS)
    # reproduces it. Lone surrogates cannot be UTF-8: replaced rather than fail to record.
    value = _CONTROL.sub(lambda m: " " if m.group() in "\t\n\r" else "\ufffd", value)
    return value.encode("utf-8", "replace").decode("utf-8")[:limit]


@dataclass(frozen=True)
class Event:
    """One event, exactly as its line holds it."""

    id: int
    at: str
    actor: str
    action: str
    job_id: int | None
    printer: str | None
    outcome: str
    detail: str
    prev: str
    hash: str

    def body(self) -> dict[str, object]:
        """The line without ``hash``: what ``hash`` is computed over."""
        return {name: getattr(self, name) for name in FIELDS}

    def computed_hash(self) -> str:
        return hashlib.sha256(canonical(self.body())).hexdigest()

    def line(self) -> bytes:
        """The file line, newline included."""
        return canonical(asdict(self)) + b"\n"

    def values(self) -> dict[str, object]:
        """The event as ``audit_events`` column values."""
        return {
            "id": self.id,
            "at": parse_at(self.at),
            "actor": self.actor,
            "action": self.action,
            "job_id": self.job_id,
            "printer": self.printer,
            "outcome": self.outcome,
            "detail": self.detail,
            "prev_hash": self.prev,
            "hash": self.hash,
        }

    @classmethod
    def from_row(cls, row: AuditEvent) -> Event:
        return cls(
            id=row.id,
            at=format_at(row.at),
            actor=row.actor,
            action=row.action,
            job_id=row.job_id,
            printer=row.printer,
            outcome=row.outcome,
            detail=row.detail,
            prev=row.prev_hash,
            hash=row.hash,
        )

    @classmethod
    def parse(cls, raw: bytes) -> Event:
        """A line (without its newline) as an event; ValueError says what is wrong with it."""
        try:
            obj = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"not JSON ({exc})") from None
        if not isinstance(obj, dict):
            raise ValueError("not a JSON object")
        if set(obj) != _LINE_KEYS:
            extra, missing = set(obj) - _LINE_KEYS, _LINE_KEYS - set(obj)
            raise ValueError(f"wrong fields (extra: {sorted(extra)}, missing: {sorted(missing)})")
        for name in ("id", "job_id"):
            value = obj[name]
            if not (value is None and name == "job_id") and type(value) is not int:
                raise ValueError(f"{name} must be an integer")
        for name in ("at", "actor", "action", "outcome", "detail", "prev", "hash"):
            if type(obj[name]) is not str:
                raise ValueError(f"{name} must be a string")
        if obj["printer"] is not None and type(obj["printer"]) is not str:
            raise ValueError("printer must be a string or null")
        if not _AT_RE.fullmatch(obj["at"]):
            raise ValueError("at must be a UTC timestamp like 2026-11-24T09:00:00.000000Z")
        for name in ("prev", "hash"):
            if not _HASH_RE.fullmatch(obj[name]):
                raise ValueError(f"{name} must be 64 lowercase hex digits")
        return cls(**obj)


def new_event(
    id: int,
    prev: str,
    at: datetime,
    actor: str,
    action: str,
    *,
    job_id: int | None,
    printer: str | None,
    outcome: str,
    detail: str,
) -> Event:
    """An event with its hash computed."""
    event = Event(
        id=id,
        at=format_at(at),
        actor=_text(actor, MAX_ACTOR),
        action=str(action),
        job_id=job_id,
        printer=_text(printer, 64) if printer is not None else None,
        outcome=str(outcome),
        detail=_text(detail, MAX_DETAIL),
        prev=prev,
        hash="",
    )
    return dataclasses.replace(event, hash=event.computed_hash())


# -- reading the file backwards (start-up needs only its end) ----------------------------


def _last_newline_end(fd: int, size: int) -> int:
    """The offset just after the file's last newline (0 if it has none)."""
    pos = size
    while pos > 0:
        step = min(_READ_BLOCK, pos)
        pos -= step
        cut = os.pread(fd, step, pos).rfind(b"\n")
        if cut >= 0:
            return pos + cut + 1
    return 0


def _lines_backward(fd: int, end: int) -> Iterator[tuple[int, bytes]]:
    """The complete lines before ``end`` (just after a newline), last first: (offset, line)."""
    pos, buf = end, b""  # buf is file[pos:end of the next line to yield]
    while True:
        cut = buf.rfind(b"\n", 0, len(buf) - 1) if buf else -1
        if cut >= 0:
            yield pos + cut + 1, buf[cut + 1 : -1]
            buf = buf[: cut + 1]
        elif pos == 0:
            if buf:
                yield 0, buf[:-1]
            return
        else:
            step = min(_READ_BLOCK, pos)
            pos -= step
            buf = os.pread(fd, step, pos) + buf


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- writing -------------------------------------------------------------------------------


class AuditLog:
    """The server's audit log: appends events to the file and the database (see above)."""

    DB_RETRY_SECONDS = 1.0
    # The rows of events recorded within this long share one transaction: the database copy
    # is off the request path, and one commit per event would contend with the jobs' own.
    DB_BATCH_SECONDS = 0.01

    def __init__(
        self, path: Path, db: Database, fd: int, *, clock: Callable[[], datetime] = utcnow
    ) -> None:
        """Use ``AuditLog.open``, which recovers the file after a crash."""
        self.path = path
        self.db = db
        self.clock = clock
        self._fd: int | None = fd
        self._lock = threading.Lock()  # id, prev, write: file order = chain order
        self._cond = threading.Condition()  # guards everything below
        self._head = GENESIS
        self._next_id = 1
        self._size = 0
        self._written = 0  # the last id written to the file
        self._synced = 0  # the last id whose line is fsynced
        self._syncing = False  # a thread is in fsync for everybody
        self._rows: list[Event] = []  # written, not yet in the database, in id order
        self._stored = 0  # the last id in the database
        self._store_now = False  # sync() wants the rows now: skip the batching window
        self._closing = False
        self._broken: str | None = None  # the file may end in a partial line: stop writing
        self._error: str | None = None  # events were lost: sticky until restart
        self._db_error: str | None = None  # rows wait for the database: until it works
        self._writer = threading.Thread(target=self._store_rows, name="audit-db", daemon=True)
        self._writer.start()

    @classmethod
    def open(cls, path: Path, db: Database, *, clock: Callable[[], datetime] = utcnow) -> AuditLog:
        """Open (creating, dir 0700 and file 0600) the audit file and continue its chain."""
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(path.parent, 0o700)
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise ConfigError(f"cannot open the audit log {path}: {exc.strerror}") from None
        try:
            # One writer per file, across processes: the chain is continued from memory.
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise AuditBusy(
                f"the audit log {path} is in use by a running spoolvault server"
            ) from None
        audit = cls(path, db, fd, clock=clock)
        try:
            os.fchmod(fd, 0o600)
            audit._recover()
            audit.ingest_pending()
        except OSError as exc:
            audit.close()
            raise ConfigError(f"cannot read the audit log {path}: {exc.strerror}") from None
        except BaseException:
            audit.close()
            raise
        return audit

    @property
    def head(self) -> str:
        """The hash of the last line written."""
        return self._head

    @property
    def status(self) -> str:
        """``ok``, or ``error`` while something is wrong (see ``error``)."""
        return "ok" if self.error is None else "error"

    @property
    def error(self) -> str | None:
        """Why ``status`` is ``error``: lost events (until restart), or a database backlog."""
        return self._error or self._db_error

    def record(
        self,
        actor: str,
        action: Action,
        *,
        job_id: int | None = None,
        printer: str | None = None,
        outcome: Outcome = Outcome.OK,
        detail: str = "",
        at: datetime | None = None,
    ) -> Event | None:
        """Record one event; return once its line is durable (its row follows shortly).

        Never raises: a failure is logged at ERROR, makes ``status`` ``error`` and returns
        None. ``detail`` is metadata only: never document content, passwords, PINs or keys.
        """
        entry = AuditEntry(actor, action, job_id, printer, outcome, detail, at)
        events = self.record_many([entry])
        return None if events is None else events[0]

    def record_many(self, entries: Sequence[AuditEntry]) -> list[Event] | None:
        """Record events in this order with one fsync; return once all lines are durable.

        Never raises, as ``record``; None if any of them was not durably recorded.
        """
        events: list[Event] = []
        try:
            for e in entries:
                at = e.at if e.at is not None else self.clock()
                events.append(
                    self._append(
                        e.actor,
                        e.action,
                        job_id=e.job_id,
                        printer=e.printer,
                        outcome=e.outcome,
                        detail=e.detail,
                        at=at,
                    )
                )
            if events:
                self._sync_file(events[-1].id)
        except Exception as exc:
            self._error = f"{type(exc).__name__}: {exc}"
            for e in entries:  # appended ones too: none of them is known to be durable
                log.error(
                    "audit event NOT (durably) recorded (%s by %s, job %s, %s): %s",
                    e.action,
                    e.actor,
                    e.job_id,
                    e.outcome,
                    self._error,
                )
            return None
        return events

    def _append(self, actor: str, action: Action, *, at: datetime, **kw: Any) -> Event:
        with self._lock:
            if self._fd is None:
                raise AuditError("the audit log is closed")
            if self._broken is not None:
                raise AuditError(f"the audit file is unusable until restart: {self._broken}")
            event = new_event(self._next_id, self._head, at, actor, action, **kw)
            data = event.line()
            try:
                written = os.write(self._fd, data)
                if written != len(data):
                    raise OSError(errno.ENOSPC, f"short write ({written} of {len(data)} bytes)")
            except OSError:
                self._truncate_partial()
                raise
            self._size += written
            self._next_id += 1
            self._head = event.hash
            with self._cond:
                # Under the append lock: the rows queue in id order, so the database always
                # holds a prefix of the file (what verify relies on while the server runs).
                self._written = event.id
                self._rows.append(event)
            return event

    def _truncate_partial(self) -> None:
        # A partial line would glue itself to the next one: cut the file back to the end of
        # the last whole line, or stop writing to it.
        assert self._fd is not None
        try:
            if os.fstat(self._fd).st_size != self._size:
                os.ftruncate(self._fd, self._size)
        except OSError as exc:
            self._broken = f"a partial line could not be removed: {exc.strerror}"

    def _sync_file(self, upto: int) -> None:
        """Group commit: return once line ``upto`` is fsynced. One thread syncs for all the
        lines written so far while the others wait, so concurrent events share one fsync."""
        with self._cond:
            while self._synced < upto:
                if self._syncing:
                    self._cond.wait()
                    continue
                self._syncing, target, synced = True, self._written, False
                fd = self._fd
                self._cond.release()
                try:
                    if fd is None:
                        raise AuditError("the audit log is closed")
                    os.fsync(fd)
                    synced = True
                finally:
                    self._cond.acquire()
                    self._syncing = False
                    if synced:
                        self._synced = max(self._synced, target)
                    self._cond.notify_all()

    def _store_rows(self) -> None:
        """The database writer (a thread): inserts synced lines' rows in batches, in order."""
        while True:
            with self._cond:
                while not self._closing and not (self._rows and self._rows[0].id <= self._synced):
                    self._cond.wait()
                self._cond.wait_for(lambda: self._closing or self._store_now, self.DB_BATCH_SECONDS)
                self._store_now = False
                batch = [e for e in self._rows if e.id <= self._synced]
                if not batch:
                    return  # closing, nothing left that can be stored
            try:
                # Core, not the ORM: a third less CPU per event (docs/audit.md, "Cost").
                with self.db.engine.begin() as conn:
                    conn.execute(insert(AuditEvent), [e.values() for e in batch])
            except Exception as exc:
                self._db_error = (
                    f"{len(self._rows)} audit events wait for the database "
                    f"({type(exc).__name__}: {exc})"
                )
                log.error("audit log: %s; retrying", self._db_error)
                with self._cond:
                    if self._closing:
                        log.error(
                            "audit log: %d events are in %s but not in the database; they "
                            "are restored from it at the next start",
                            len(self._rows),
                            self.path,
                        )
                        return
                    self._cond.wait(self.DB_RETRY_SECONDS)
                continue
            with self._cond:
                del self._rows[: len(batch)]
                self._stored = batch[-1].id
                self._db_error = None
                self._cond.notify_all()

    def ingest_pending(self) -> int:
        """Record the events other processes queued (`queue_pending`), oldest first.

        A queued file is removed only once its event is durable here; one that cannot be
        read is set aside as ``*.bad`` and reported, never silently dropped.
        """
        directory = self.path.parent / PENDING_DIR
        try:
            names = sorted(n for n in os.listdir(directory) if n.endswith(".json"))
        except FileNotFoundError:
            return 0
        done = 0
        for name in names:
            file = directory / name
            try:
                fields = json.loads(file.read_bytes())
                event_at = parse_at(fields.pop("at"))
                action = Action(fields.pop("action"))
                outcome = Outcome(fields.pop("outcome", Outcome.OK))
                actor = str(fields.pop("actor"))
                kw = {k: fields[k] for k in ("job_id", "printer", "detail") if k in fields}
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.error("audit: queued event %s cannot be read (%s); set aside", file, exc)
                with contextlib.suppress(OSError):
                    os.rename(file, file.with_suffix(".bad"))
                continue
            if self.record(actor, action, outcome=outcome, at=event_at, **kw) is None:
                break  # not durable: keep it queued for the next try
            file.unlink()
            done += 1
        if done:
            _fsync_dir(directory)
        return done

    def sync(self, timeout: float = 10.0) -> bool:
        """Wait until every event recorded so far is in the database (read your writes)."""
        with self._cond:
            target = self._written
            self._store_now = True
            self._cond.notify_all()
            return self._cond.wait_for(lambda: self._stored >= target, timeout)

    def close(self, timeout: float = 15.0) -> None:
        """Sync the file, let the database writer finish, close the file."""
        with self._lock:
            if self._fd is not None:
                try:
                    os.fsync(self._fd)
                    with self._cond:
                        self._synced = self._written
                except OSError as exc:
                    log.error("audit log %s: final fsync failed: %s", self.path, exc.strerror)
            with self._cond:
                self._closing = True
                self._cond.notify_all()
            self._writer.join(timeout)
            if self._writer.is_alive():
                log.error("audit log: the database writer did not finish in %.0f s", timeout)
            with self._cond:
                self._cond.wait_for(lambda: not self._syncing)
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    # -- start-up ------------------------------------------------------------------------

    def _recover(self) -> None:
        """Continue the chain from the last good line; repair what a crash can leave."""
        assert self._fd is not None
        fd = self._fd
        size = os.fstat(fd).st_size
        good_end = _last_newline_end(fd, size)
        last: Event | None = None
        for offset, raw in _lines_backward(fd, good_end):
            try:
                last = Event.parse(raw)
                break
            except ValueError:
                good_end = offset  # a damaged last line: set aside with the torn tail
        notes: list[str] = []
        if good_end < size:
            notes.append(self._set_aside(good_end, size))
        self._size = good_end
        if last is not None:
            self._head, last_id = last.hash, last.id
        else:
            self._head, last_id = GENESIS, 0
        with self.db.session(write=False) as s:
            db_max = int(s.scalar(select(func.max(AuditEvent.id))) or 0)
        if last_id > db_max:
            restored = self._restore(db_max)
            notes.append(f"restored {restored} events to the database from the file")
        elif db_max > last_id:
            self._error = (
                f"the database has audit events up to id {db_max}, the file only up to "
                f"{last_id}: run 'spoolvault audit verify'"
            )
            log.error("audit log %s: %s", self.path, self._error)
        self._next_id = max(last_id, db_max) + 1
        self._written = self._synced = self._stored = self._next_id - 1
        if notes:
            detail = "; ".join(notes)
            log.warning("audit log %s recovered: %s", self.path, detail)
            self.record(SYSTEM, Action.AUDIT_RECOVERED, detail=detail)

    def _set_aside(self, start: int, end: int) -> str:
        assert self._fd is not None
        tail = os.pread(self._fd, end - start, start)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        aside = self.path.with_name(f"{self.path.name}.torn-{stamp}")
        out = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.write(out, tail)
            os.fsync(out)
        finally:
            os.close(out)
        os.ftruncate(self._fd, start)
        os.fsync(self._fd)
        _fsync_dir(self.path.parent)
        log.error(
            "audit log %s did not end with a whole event (a crash while writing, or damage): "
            "moved its last %d bytes to %s",
            self.path,
            len(tail),
            aside,
        )
        return f"moved {len(tail)} bytes after the last whole line (byte {start}) to {aside.name}"

    def _restore(self, db_max: int) -> int:
        """Insert the file's last lines whose rows a crash kept from the database."""
        assert self._fd is not None
        events: list[Event] = []
        for _, raw in _lines_backward(self._fd, self._size):
            try:
                event = Event.parse(raw)
            except ValueError as exc:
                self._error = f"a damaged line among the last ones: {exc}"
                log.error("audit log %s: %s; run 'spoolvault audit verify'", self.path, exc)
                break
            if event.id <= db_max:
                break
            events.append(event)
        if events:
            with self.db.engine.begin() as conn:
                conn.execute(insert(AuditEvent), [e.values() for e in reversed(events)])
        return len(events)


# -- reading -------------------------------------------------------------------------------


def list_events(
    db: Database,
    *,
    limit: int = 100,
    before_id: int | None = None,
    job_id: int | None = None,
    actor: str | None = None,
    action: str | None = None,
) -> list[Event]:
    """Events from the database, newest first, filtered; page with ``before_id``."""
    query = select(AuditEvent)
    if before_id is not None:
        query = query.where(AuditEvent.id < before_id)
    if job_id is not None:
        query = query.where(AuditEvent.job_id == job_id)
    if actor is not None:
        query = query.where(AuditEvent.actor == actor)
    if action is not None:
        query = query.where(AuditEvent.action == action)
    with db.session(write=False) as s:
        rows = s.scalars(query.order_by(AuditEvent.id.desc()).limit(limit))
        return [Event.from_row(row) for row in rows]


@dataclass(frozen=True)
class Verification:
    """What ``verify`` found: how many lines check out, the head hash, the first problem."""

    events: int
    head: str
    problem: str | None = None
    line: int | None = None
    # The problem is at the end of the file and may be the server writing right now.
    transient: bool = False
    anchor_found: bool = False

    @property
    def ok(self) -> bool:
        return self.problem is None

    @property
    def message(self) -> str:
        """``line N: what is wrong`` (empty when all is well)."""
        return "" if self.problem is None else f"line {self.line}: {self.problem}"


def verify(path: Path, db: Database, *, anchor: str | None = None) -> Verification:
    """Check the file's hash chain, and that it and the database hold the same events.

    Stops at the first problem, with its line number. ``anchor`` is a head hash recorded
    earlier: the chain must still pass through it.
    """
    with db.session(write=False) as s:
        # The query runs first: every row it sees had its line written (and synced) before
        # it was committed, so a missing line is never the server being mid-write.
        rows = s.scalars(
            select(AuditEvent).order_by(AuditEvent.id).execution_options(yield_per=1000)
        )
        try:
            result, pending = _verify_file(path, (Event.from_row(r) for r in rows), anchor)
        finally:
            rows.close()  # a PostgreSQL server-side cursor, when verification stops early
    if result.problem is not None or not pending:
        return result
    # Lines past the end of the query's snapshot: committed since, or missing.
    with db.session(write=False) as s:
        later = {
            row.id: Event.from_row(row)
            for row in s.scalars(select(AuditEvent).where(AuditEvent.id >= pending[0][1].id))
        }
    for lineno, event in pending:
        row = later.get(event.id)
        if row is None:
            return _failed(result, lineno, f"event {event.id} is not in the database", True)
        if problem := _compare(event, row):
            return _failed(result, lineno, problem)
    return result


def _failed(
    result: Verification, lineno: int, problem: str, transient: bool = False
) -> Verification:
    return Verification(result.events, result.head, problem, lineno, transient, result.anchor_found)


def _compare(line: Event, row: Event) -> str | None:
    differ = [name for name in (*FIELDS, "hash") if getattr(line, name) != getattr(row, name)]
    if differ:
        return f"differs from database event {row.id} in {', '.join(differ)}"
    return None


def _verify_file(
    path: Path, in_db: Iterator[Event], anchor: str | None
) -> tuple[Verification, list[tuple[int, Event]]]:
    """The chain and the cross-check in one pass; lines past the database's last row are
    returned to be checked again (the server may have committed them since)."""
    prev, last_id, count = GENESIS, 0, 0
    found = anchor is None or anchor == GENESIS
    pending: list[tuple[int, Event]] = []
    row = next(in_db, None)

    def failed(lineno: int, problem: str, transient: bool = False) -> Verification:
        return Verification(count, prev, problem, lineno, transient, found)

    try:
        handle = path.open("rb")
    except FileNotFoundError:
        if row is not None:
            return failed(1, f"the audit file {path} is missing; the database has events"), []
        return Verification(0, GENESIS, anchor_found=found), []
    lineno = 0
    with handle:
        for lineno, raw in enumerate(handle, start=1):
            problem = None
            if not raw.endswith(b"\n"):
                return failed(
                    lineno,
                    "incomplete: the file was cut in the middle of a line (or the server is "
                    "writing it right now)",
                    transient=True,
                ), []
            try:
                event = Event.parse(raw[:-1])
            except ValueError as exc:
                return failed(lineno, f"not an audit event: {exc}"), []
            if event.line() != raw:
                problem = "not in canonical form: the line was edited"
            elif event.computed_hash() != event.hash:
                problem = "its hash does not match its content: the line was edited"
            elif event.prev != prev:
                where = "64 zeros" if lineno == 1 else f"the hash of line {lineno - 1}"
                problem = f"prev is not {where}: a line was deleted, inserted or moved here"
            elif event.id <= last_id:
                problem = f"event {event.id} comes after event {last_id}"
            elif row is not None and row.id < event.id:
                problem = f"database event {row.id} is missing from the file before this line"
            elif row is not None and row.id > event.id:
                problem = f"event {event.id} is not in the database"
            elif row is not None:
                problem = _compare(event, row)
                row = next(in_db, None)
            else:
                pending.append((lineno, event))
            if problem is not None:
                return failed(lineno, problem), []
            prev, last_id, count = event.hash, event.id, count + 1
            found = found or event.hash == anchor
    if row is not None:
        return failed(
            lineno + 1,
            f"database event {row.id} is missing from the file, which ends after line "
            f"{lineno}: lines were removed from its end",
        ), []
    result = Verification(count, prev, anchor_found=found)
    if not found:
        return _failed(
            result, lineno, f"the anchor {anchor} is not in the chain: history was rewritten"
        ), []
    return result, pending


def wait_and_verify(
    path: Path, db: Database, *, anchor: str | None = None, retry_after: float = 1.0
) -> Verification:
    """``verify``, once more after ``retry_after`` seconds if the problem may be transient."""
    result = verify(path, db, anchor=anchor)
    if result.transient:
        time.sleep(retry_after)
        result = verify(path, db, anchor=anchor)
    return result
