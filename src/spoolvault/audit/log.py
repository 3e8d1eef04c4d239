"""The audit log's writer: who did what to which job, on which printer, when, and how it ended.

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

The events themselves are ``audit.events``; a command-line tool beside a running server
queues its events (``audit.queue``); ``spoolvault audit verify`` is ``audit.verifier``.

Recording never breaks the operation it records: a failure is logged at ERROR, the
operation goes on, and ``AuditLog.status`` (shown by the health endpoint) says ``error``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from sqlalchemy import func, insert, select

from spoolvault.audit.events import (
    GENESIS,
    SYSTEM,
    Action,
    AuditEntry,
    Event,
    Outcome,
    new_event,
    parse_at,
)
from spoolvault.db import AuditEvent, Database
from spoolvault.db.models import utcnow
from spoolvault.errors import ConfigError, SpoolvaultError
from spoolvault.util.fs import fsync_dir

log = logging.getLogger(__name__)

AUDIT_DIR: Final = "audit"
AUDIT_FILE: Final = "audit.jsonl"
PENDING_DIR: Final = "pending"  # events queued by other processes (audit.queue)
_READ_BLOCK = 1 << 16


class AuditError(SpoolvaultError):
    """The audit log could not record an event (logged; never reaches a client)."""


class AuditBusy(ConfigError):
    """Another process (the running server) writes this audit log."""


def audit_path(data_root: Path) -> Path:
    """The audit file of a data directory."""
    return data_root / AUDIT_DIR / AUDIT_FILE


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
            fsync_dir(directory)
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
        fsync_dir(self.path.parent)
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


# -- reading ------------------------------------------------------------------------------


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
