"""What an audit event is: the vocabulary (Action, Outcome), an entry to record, and the
event exactly as its line holds it, in canonical JSON with its hash (docs/audit.md).

The writer (``audit.log``), the offline queue (``audit.queue``) and the verifier
(``audit.verifier``) all build on these; nothing here touches a file or the database.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Final

from spoolvault.db import AuditEvent

SYSTEM: Final = "system"  # the actor of what nobody asked for: expiry, direct queues
GENESIS: Final = "0" * 64  # the first line's prev
MAX_ACTOR = 255
MAX_DETAIL = 2000
_AT_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
_AT_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
_HASH_RE = re.compile(r"[0-9a-f]{64}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


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
