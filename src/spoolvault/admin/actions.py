"""Administrators' changes and views, audited once: the admin pages, the REST API and the
command line all call these.

Each function does the change through the owning service or registry and records the same
audit event whichever front end asked, so the audit log cannot tell a page from an API
call or a command except by its actor and detail. They are blocking (run them with
``in_thread`` from async code), except ``release_job``, which awaits the release service.

A front end keeps only what is its own: reading its input, its wording of the answer and
its status codes. The checks and the audit wording are here.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

from spoolvault import settings
from spoolvault.audit import Action, Outcome
from spoolvault.db import Job, JobState, Printer
from spoolvault.errors import Refused
from spoolvault.identity import UserInfo, Users
from spoolvault.jobs.service import JobService
from spoolvault.printers import registry

if TYPE_CHECKING:
    from spoolvault.identity.csvimport import ImportResult
    from spoolvault.identity.ldap import LdapConfig, SyncResult
    from spoolvault.jobs.release import Released, ReleaseService

# Setting names with these words never have their values recorded, nor shown back.
SECRET_WORDS: Final = frozenset({"password", "secret", "pin", "token", "key", "credential"})


class Recorder(Protocol):
    """Where an action's audit event goes: a JobService, or a command's offline recorder."""

    def record_event(
        self,
        actor: str,
        action: Action,
        *,
        job_id: int | None = None,
        printer: str | None = None,
        outcome: Outcome = Outcome.OK,
        detail: str = "",
    ) -> None: ...


def is_secret(name: str) -> bool:
    """Whether the setting ``name`` holds a secret (its value is never recorded)."""
    return bool(SECRET_WORDS & set(name.lower().split("_")))


def changed_fields(fields: set[str]) -> str:
    """``user.change`` detail: which fields, never their values."""
    return ", ".join(sorted(fields)) or "nothing"


# -- settings ---------------------------------------------------------------------------


def describe_settings_change(
    server: str, old: Mapping[str, object], new: Mapping[str, object], names: list[str]
) -> str:
    """``server primary: hold_timeout_minutes 240 -> 30, ...``; secret-like values hidden."""
    parts = []
    for name in names:
        if is_secret(name):
            parts.append(f"{name} changed (value not recorded)")
        else:
            parts.append(f"{name} {json.dumps(old.get(name))} -> {json.dumps(new.get(name))}")
    return f"server {server}: " + ", ".join(parts)


def describe_refused_settings(server: str, names: list[str], reason: str) -> str:
    """The names and why; the reason may quote a value, so not for secret-like names."""
    if any(is_secret(name) for name in names):
        reason = "refused (reason not recorded: it may quote a secret value)"
    return f"server {server}: {', '.join(names) or 'nothing'}: {reason}"


@contextlib.contextmanager
def _refusal_audited(jobs: JobService, actor: str, server: str, names: list[str]) -> Iterator[None]:
    """A refusal inside is a refused ``settings.change``: audited, then re-raised."""
    try:
        yield
    except Refused as exc:
        detail = describe_refused_settings(server, names, str(exc))
        jobs.record_event(actor, Action.SETTINGS_CHANGE, outcome=Outcome.REFUSED, detail=detail)
        raise


def _change_settings(
    jobs: JobService, actor: str, server: str, changes: Mapping[str, Any]
) -> tuple[dict[str, Any], str]:
    db = jobs.db
    with _refusal_audited(jobs, actor, server, list(changes)):
        old = db.get_settings(server)
        new = db.update_settings(server, changes)
    jobs.forget_settings()  # this process's next job follows the change at once
    detail = describe_settings_change(server, old, new, list(changes))
    jobs.record_event(actor, Action.SETTINGS_CHANGE, detail=detail)
    return new, detail


def change_settings(
    jobs: JobService, actor: str, server: str, changes: Mapping[str, Any]
) -> dict[str, Any]:
    """Store a partial settings change of ``server``; a refusal is audited and re-raised."""
    return _change_settings(jobs, actor, server, changes)[0]


def set_setting(jobs: JobService, actor: str, server: str, name: str, text: str) -> str:
    """Change one setting given as text (``true``, ``240``); return the audit detail.

    A value that does not parse is refused and audited like one that does not validate.
    """
    with _refusal_audited(jobs, actor, server, [name]):
        value = settings.get(name).parse(text)
    return _change_settings(jobs, actor, server, {name: value})[1]


# -- printers ---------------------------------------------------------------------------


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


# -- users ------------------------------------------------------------------------------


def add_user(
    audit: Recorder, users: Users, actor: str, username: str, fields: Mapping[str, Any]
) -> UserInfo:
    """Create a user; card numbers, PINs and passwords are stored hashed only."""
    info = users.add(username, fields)
    audit.record_event(
        actor, Action.USER_CHANGE, detail=f"created {username}: {changed_fields(set(fields))}"
    )
    return info


def change_user(
    audit: Recorder, users: Users, actor: str, username: str, fields: Mapping[str, Any]
) -> UserInfo:
    """Set or clear some of a user's fields (None clears one)."""
    info = users.update(username, fields)
    audit.record_event(
        actor, Action.USER_CHANGE, detail=f"{username}: {changed_fields(set(fields))}"
    )
    return info


def set_delegates(
    audit: Recorder,
    users: Users,
    actor: str,
    username: str,
    delegates: Sequence[str],
    groups: Sequence[str],
    *,
    name_them: bool = True,
) -> UserInfo:
    """Exactly these users and groups' members may release ``username``'s jobs.

    ``name_them=False`` records only that the delegates changed, as the command line
    always has (the pages and the REST API name them).
    """
    info = users.set_delegates(username, delegates, groups)
    if name_them:
        detail = f"{username} delegates to users {info.delegates}, groups {info.delegate_groups}"
    else:
        detail = f"{username}: {changed_fields({'delegates'})}"
    audit.record_event(actor, Action.USER_CHANGE, detail=detail)
    return info


def import_users(
    audit: Recorder, users: Users, actor: str, path: Path, *, update: bool = False
) -> ImportResult:
    """Import users from a CSV file (docs/identity.md): all of it, or none on any error."""
    from spoolvault.identity.csvimport import import_file

    result = import_file(users, path, update=update)
    detail = f"imported {path.name}: {len(result.added)} added, {len(result.updated)} updated"
    audit.record_event(actor, Action.USER_CHANGE, detail=detail)
    return result


def sync_directory(audit: Recorder, users: Users, actor: str, cfg: LdapConfig) -> SyncResult:
    """Create, update and disable users, and set their groups, from LDAP or AD."""
    from spoolvault.identity.ldap import sync

    result = sync(users, cfg)
    audit.record_event(actor, Action.USER_CHANGE, detail=f"synced {cfg.url}: {result.summary()}")
    return result


# -- jobs -------------------------------------------------------------------------------


def list_jobs(
    jobs: JobService,
    actor: str,
    where: str,
    *,
    what: str = "jobs",
    owner: str | None = None,
    states: Iterable[JobState] | None = None,
    limit: int | None = None,
) -> list[Job]:
    """Jobs, newest first, as an administrator sees them: the look is audited
    (``admin.view``, ``WHERE: N WHAT``)."""
    found = jobs.list(owner=owner, states=states, limit=limit, newest_first=True)
    jobs.record_event(actor, Action.ADMIN_VIEW, detail=f"{where}: {len(found)} {what}")
    return found


def cancel_job(
    jobs: JobService, actor: str, job_id: int, *, where: str = "", reason: str = ""
) -> Job:
    """Cancel a held or failed job; its spool file is crypto-shredded.

    The job service records the cancel with ``reason`` as its detail: by default
    ``cancelled by ACTOR`` and, when given, ``WHERE``.
    """
    if not reason:
        reason = f"cancelled by {actor}" + (f" {where}" if where else "")
    return jobs.cancel(job_id, reason=reason, actor=actor)


async def release_job(release: ReleaseService, actor: str, job_id: int, printer: str) -> Released:
    """Release a held job to a printer as an administrator (the release service audits it)."""
    return await release.release(job_id, printer, actor=actor, is_admin=True)
