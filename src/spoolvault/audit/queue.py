"""Audit events from a command-line tool run beside the server that writes the log.

Only one process may append to the hash chain (the file is locked, ``AuditBusy``): a
command run while a server runs leaves its events, durably, in ``audit/pending/``, and the
server records them within seconds (``AuditLog.ingest_pending``, from its housekeeping)
or at its next start. Without a server the command opens the log itself.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from spoolvault.audit.events import Action, AuditEntry, Outcome, canonical, format_at
from spoolvault.audit.log import PENDING_DIR, AuditBusy, AuditLog
from spoolvault.db import Database
from spoolvault.db.models import utcnow
from spoolvault.errors import ConfigError
from spoolvault.util.fs import fsync_dir

log = logging.getLogger(__name__)


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
    fsync_dir(directory)
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
