"""Administrators' changes, audited once: the REST API and the admin pages both call these.

Each function is blocking (run it with ``in_thread`` from async code), does the change
through the owning service or registry, and records the same audit event whichever front
end asked, so the audit log cannot tell a page from an API call except by its detail.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from spoolvault.audit import Action, Outcome, describe_refused_settings, describe_settings_change
from spoolvault.db import Printer
from spoolvault.errors import Refused
from spoolvault.identity import IdentityService, UserInfo
from spoolvault.jobs.service import JobService
from spoolvault.printers import registry


def changed_fields(fields: set[str]) -> str:
    """``user.change`` detail: which fields, never their values."""
    return ", ".join(sorted(fields)) or "nothing"


def change_settings(
    jobs: JobService, actor: str, server: str, changes: Mapping[str, Any]
) -> dict[str, Any]:
    """Store a partial settings change of ``server``; a refusal is audited and re-raised."""
    db = jobs.db
    try:
        old = db.get_settings(server)
        new = db.update_settings(server, changes)
    except Refused as exc:
        detail = describe_refused_settings(server, list(changes), str(exc))
        jobs.record_event(actor, Action.SETTINGS_CHANGE, outcome=Outcome.REFUSED, detail=detail)
        raise
    jobs.forget_settings()  # this process's next job follows the change at once
    detail = describe_settings_change(server, old, new, list(changes))
    jobs.record_event(actor, Action.SETTINGS_CHANGE, detail=detail)
    return new


def add_printer(jobs: JobService, actor: str, fields: Mapping[str, Any]) -> Printer:
    printer = registry.add_printer(jobs.db, **fields)
    jobs.record_event(
        actor, Action.PRINTER_CHANGE, printer=printer.name, detail=f"added {printer.uri}"
    )
    return printer


def change_printer(jobs: JobService, actor: str, name: str, changes: Mapping[str, Any]) -> Printer:
    printer, detail = registry.update_printer(jobs.db, name, changes)
    jobs.record_event(actor, Action.PRINTER_CHANGE, printer=name, detail=detail)
    return printer


def remove_printer(jobs: JobService, actor: str, name: str) -> Printer:
    printer = registry.remove_printer(jobs.db, name)
    jobs.record_event(actor, Action.PRINTER_CHANGE, printer=name, detail="removed")
    return printer


def add_user(
    jobs: JobService,
    identity: IdentityService,
    actor: str,
    username: str,
    fields: Mapping[str, Any],
) -> UserInfo:
    """Create a user; card numbers, PINs and passwords are stored hashed only."""
    info = identity.users.add(username, fields)
    jobs.record_event(
        actor, Action.USER_CHANGE, detail=f"created {username}: {changed_fields(set(fields))}"
    )
    return info


def change_user(
    jobs: JobService,
    identity: IdentityService,
    actor: str,
    username: str,
    fields: Mapping[str, Any],
) -> UserInfo:
    info = identity.users.update(username, fields)
    jobs.record_event(
        actor, Action.USER_CHANGE, detail=f"{username}: {changed_fields(set(fields))}"
    )
    return info


def set_delegates(
    jobs: JobService,
    identity: IdentityService,
    actor: str,
    username: str,
    users: Sequence[str],
    groups: Sequence[str],
) -> UserInfo:
    info = identity.users.set_delegates(username, users, groups)
    detail = f"{username} delegates to users {info.delegates}, groups {info.delegate_groups}"
    jobs.record_event(actor, Action.USER_CHANGE, detail=detail)
    return info
