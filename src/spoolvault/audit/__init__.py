"""The audit log: every submit, release, cancel, expiry, settings change and admin view,
in the database and in a hash-chained JSON-lines file (docs/audit.md)."""

from __future__ import annotations

from spoolvault.audit.log import (
    GENESIS,
    SYSTEM,
    Action,
    AuditBusy,
    AuditEntry,
    AuditLog,
    Event,
    Outcome,
    QueuedAudit,
    Verification,
    audit_path,
    list_events,
    open_for_command,
    queue_pending,
    record_offline,
    verify,
    wait_and_verify,
)

__all__ = [
    "GENESIS",
    "SYSTEM",
    "Action",
    "AuditBusy",
    "AuditEntry",
    "AuditLog",
    "Event",
    "Outcome",
    "QueuedAudit",
    "Verification",
    "audit_path",
    "list_events",
    "open_for_command",
    "queue_pending",
    "record_offline",
    "verify",
    "wait_and_verify",
]
