"""The audit log: every submit, release, cancel, expiry, settings change and admin view,
in the database and in a hash-chained JSON-lines file (docs/audit.md)."""

from __future__ import annotations

from spoolvault.audit.events import GENESIS, SYSTEM, Action, AuditEntry, Event, Outcome
from spoolvault.audit.log import AuditBusy, AuditLog, audit_path, list_events
from spoolvault.audit.queue import QueuedAudit, open_for_command, queue_pending, record_offline
from spoolvault.audit.verifier import Verification, verify, wait_and_verify

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
