"""Administration verbs of the command line: ``spoolvault printer|settings|jobs …``.

Each works on a data directory whether or not its server runs (CONTRACT.md): the
database takes concurrent writers, and the audit events they cause are recorded by the
command itself when no server runs, or queued for the running server to record
(`spoolvault.audit.open_for_command`). The actor in the audit log is ``cli:<login>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from spoolvault.cli_support import DEFAULT_DATA_DIR, DatabaseOpt, DataDirOpt, _fail, err, out
from spoolvault.errors import SpoolvaultError

ServerOpt = Annotated[str, typer.Option("--server", help="The server whose settings these are.")]

printer_app = typer.Typer(help="Printers: add, list, change, remove.", no_args_is_help=True)
settings_app = typer.Typer(help="Per-server settings: show, set.", no_args_is_help=True)
jobs_app = typer.Typer(help="Jobs: list, cancel, release.", no_args_is_help=True)


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


@contextlib.contextmanager
def _services(data_dir: Path, database: str | None) -> Iterator[Any]:
    """The runtime, a job service whose audit events reach the log, and a release service."""
    from spoolvault.archive import Archive, archive_dir
    from spoolvault.audit import audit_path, open_for_command
    from spoolvault.jobs.release import ReleaseService
    from spoolvault.jobs.service import JobService
    from spoolvault.runtime import Runtime

    try:
        with Runtime.open(data_dir, database) as rt:
            audit = open_for_command(audit_path(rt.data.root), rt.db)
            try:
                jobs = JobService(rt.db, rt.store, audit=audit)
                jobs.archive = Archive(archive_dir(rt.data.root), rt.db)
                yield rt, jobs, ReleaseService(jobs)
            finally:
                audit.close()
    except SpoolvaultError as exc:
        _fail(str(exc))


def _record(jobs: Any, action: Any, **kw: Any) -> None:
    jobs.record_event(_actor(), action, **kw)


def _queued_note(jobs: Any) -> None:
    from spoolvault.audit import QueuedAudit

    if isinstance(jobs.audit, QueuedAudit):
        err.print("(the running server records the audit event within seconds)")


# -- printer --------------------------------------------------------------------------


def _printer_table(printers: list[Any]) -> Table:
    table = Table("name", "uri", "mode", "group", "blocks on error", "snmp", "hold timeout")
    for p in printers:
        snmp = ""
        if p.snmp_community is not None:
            snmp = f"{p.snmp_host or '(uri host)'}:{p.snmp_port or 161}"
        table.add_row(
            escape(p.name),
            escape(p.uri),
            p.mode.value,
            escape(p.group),
            "yes" if p.block_release_on_error else "no",
            snmp,
            "" if p.hold_timeout_minutes is None else f"{p.hold_timeout_minutes} min",
        )
    return table


@printer_app.command("add")
def printer_add(
    name: str,
    uri: Annotated[str, typer.Argument(help="ipp://, ipps://, socket:// or lpd:// URI.")],
    data_dir: DataDirOpt = DEFAULT_DATA_DIR,
    database: DatabaseOpt = None,
    mode: Annotated[str, typer.Option(help="hold, admin-release or direct.")] = "hold",
    group: Annotated[str, typer.Option(help="Find-Me group.")] = "default",
    block_release_on_error: Annotated[
        bool, typer.Option(help="Refuse releases while the printer is in error.")
    ] = False,
    snmp_community: Annotated[
        str | None, typer.Option(help="Also ask health over SNMP, with this community.")
    ] = None,
    snmp_host: Annotated[str | None, typer.Option(help="Default: the URI's host.")] = None,
    snmp_port: Annotated[int | None, typer.Option(help="Default: 161.")] = None,
    hold_timeout_minutes: Annotated[
        int | None, typer.Option(help="This queue's hold timeout; default: the server's.")
    ] = None,
) -> None:
    """Add a printer; its queue is /printers/NAME."""
    from spoolvault.audit import Action
    from spoolvault.printers.registry import add_printer

    with _services(data_dir, database) as (rt, jobs, _):
        try:
            printer = add_printer(
                rt.db,
                name=name,
                uri=uri,
                mode=mode,
                group=group,
                block_release_on_error=block_release_on_error,
                snmp_community=snmp_community,
                snmp_host=snmp_host,
                snmp_port=snmp_port,
                hold_timeout_minutes=hold_timeout_minutes,
            )
        except SpoolvaultError as exc:
            _fail(str(exc))
        _record(jobs, Action.PRINTER_CHANGE, printer=name, detail=f"added {printer.uri}")
        out.print(_printer_table([printer]))
        _queued_note(jobs)


@printer_app.command("list")
def printer_list(data_dir: DataDirOpt = DEFAULT_DATA_DIR, database: DatabaseOpt = None) -> None:
    """List the printers."""
    from spoolvault.printers.registry import list_printers

    with _services(data_dir, database) as (rt, _, _):
        out.print(_printer_table(list_printers(rt.db)))


@printer_app.command("set")
def printer_set(
    name: str,
    data_dir: DataDirOpt = DEFAULT_DATA_DIR,
    database: DatabaseOpt = None,
    uri: Annotated[str | None, typer.Option()] = None,
    mode: Annotated[str | None, typer.Option(help="hold, admin-release or direct.")] = None,
    group: Annotated[str | None, typer.Option()] = None,
    block_release_on_error: Annotated[bool | None, typer.Option()] = None,
    snmp_community: Annotated[str | None, typer.Option()] = None,
    snmp_host: Annotated[str | None, typer.Option()] = None,
    snmp_port: Annotated[int | None, typer.Option()] = None,
    hold_timeout_minutes: Annotated[int | None, typer.Option()] = None,
    no_snmp: Annotated[bool, typer.Option("--no-snmp", help="Stop asking SNMP.")] = False,
    server_hold_timeout: Annotated[
        bool, typer.Option("--server-hold-timeout", help="Use the server's hold timeout.")
    ] = False,
) -> None:
    """Change a printer's settings (only those given)."""
    from spoolvault.audit import Action
    from spoolvault.printers.registry import update_printer

    given = {
        "uri": uri,
        "mode": mode,
        "group": group,
        "block_release_on_error": block_release_on_error,
        "snmp_community": snmp_community,
        "snmp_host": snmp_host,
        "snmp_port": snmp_port,
        "hold_timeout_minutes": hold_timeout_minutes,
    }
    changes: dict[str, object] = {k: v for k, v in given.items() if v is not None}
    if no_snmp:
        changes.update(snmp_community=None, snmp_host=None, snmp_port=None)
    if server_hold_timeout:
        changes["hold_timeout_minutes"] = None
    if not changes:
        _fail("nothing to change: give at least one option (see --help)")
    with _services(data_dir, database) as (rt, jobs, _):
        try:
            printer, detail = update_printer(rt.db, name, changes)
        except SpoolvaultError as exc:
            _fail(str(exc))
        _record(jobs, Action.PRINTER_CHANGE, printer=name, detail=detail)
        out.print(_printer_table([printer]))
        _queued_note(jobs)


@printer_app.command("remove")
def printer_remove(
    name: str, data_dir: DataDirOpt = DEFAULT_DATA_DIR, database: DatabaseOpt = None
) -> None:
    """Remove a printer (refused while jobs are held on its queue)."""
    from spoolvault.audit import Action
    from spoolvault.printers.registry import remove_printer

    with _services(data_dir, database) as (rt, jobs, _):
        try:
            remove_printer(rt.db, name)
        except SpoolvaultError as exc:
            _fail(str(exc))
        _record(jobs, Action.PRINTER_CHANGE, printer=name, detail="removed")
        out.print(f"printer {escape(name)} removed")
        _queued_note(jobs)


# -- settings -------------------------------------------------------------------------


@settings_app.command("show")
def settings_show(
    data_dir: DataDirOpt = DEFAULT_DATA_DIR,
    database: DatabaseOpt = None,
    server: ServerOpt = "primary",
) -> None:
    """Show a server's settings."""
    from spoolvault.settings import SETTINGS

    with _services(data_dir, database) as (rt, _, _):
        try:
            values = rt.db.get_settings(server)
        except SpoolvaultError as exc:
            _fail(str(exc))
        table = Table("setting", "value", "meaning")
        for setting in SETTINGS:
            value = values[setting.name]
            shown = str(value).lower() if isinstance(value, bool) else str(value)
            table.add_row(setting.name, shown, escape(setting.help))
        out.print(table)


@settings_app.command("set")
def settings_set(
    name: str,
    value: str,
    data_dir: DataDirOpt = DEFAULT_DATA_DIR,
    database: DatabaseOpt = None,
    server: ServerOpt = "primary",
) -> None:
    """Change one setting of a server (e.g. `settings set hold_timeout_minutes 60`)."""
    from spoolvault.audit import (
        Action,
        Outcome,
        describe_refused_settings,
        describe_settings_change,
    )
    from spoolvault.errors import ClientError
    from spoolvault.settings import BY_NAME

    setting = BY_NAME.get(name)
    if setting is None:
        _fail(f"unknown setting {name!r} (known: {', '.join(sorted(BY_NAME))})")
    with _services(data_dir, database) as (rt, jobs, _):
        try:
            parsed = setting.parse(value)
            old = rt.db.get_settings(server)
            new = rt.db.update_settings(server, {name: parsed})
        except ClientError as exc:
            detail = describe_refused_settings(server, [name], str(exc))
            _record(jobs, Action.SETTINGS_CHANGE, outcome=Outcome.REFUSED, detail=detail)
            _fail(str(exc))
        except SpoolvaultError as exc:
            _fail(str(exc))
        detail = describe_settings_change(server, old, new, [name])
        _record(jobs, Action.SETTINGS_CHANGE, detail=detail)
        out.print(detail, highlight=False)
        _queued_note(jobs)


# -- jobs -----------------------------------------------------------------------------


@jobs_app.command("list")
def jobs_list(
    data_dir: DataDirOpt = DEFAULT_DATA_DIR,
    database: DatabaseOpt = None,
    state: Annotated[
        list[str] | None, typer.Option("--state", help="held, failed, printed, ... (repeat).")
    ] = None,
    owner: Annotated[str | None, typer.Option(help="Only this user's jobs.")] = None,
) -> None:
    """List jobs, newest first (an administrator's view: audited)."""
    from spoolvault.audit import Action
    from spoolvault.db import JobState
    from spoolvault.settings import HIDDEN_TITLE, HIDE_DOCUMENT_NAMES

    try:
        states = [JobState(s) for s in state] if state else None
    except ValueError as exc:
        _fail(f"{exc} (one of: {', '.join(s.value for s in JobState)})")
    with _services(data_dir, database) as (_, jobs, _):
        found = jobs.list(owner=owner, states=states, newest_first=True)
        hide = bool(jobs.settings()[HIDE_DOCUMENT_NAMES])
        table = Table("id", "owner", "title", "queue", "state", "bytes", "pages", "created (UTC)")
        for j in found:
            table.add_row(
                str(j.id),
                escape(j.owner),
                HIDDEN_TITLE if hide and j.title else escape(j.title),
                escape(j.queue),
                j.state.value + (f" ({escape(j.state_reason)})" if j.state_reason else ""),
                str(j.size),
                "" if j.pages is None else str(j.pages),
                j.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            )
        out.print(table)
        _record(jobs, Action.ADMIN_VIEW, detail=f"spoolvault jobs list: {len(found)} jobs")


@jobs_app.command("cancel")
def jobs_cancel(
    job_id: int, data_dir: DataDirOpt = DEFAULT_DATA_DIR, database: DatabaseOpt = None
) -> None:
    """Cancel a held or failed job; its spool file is crypto-shredded."""

    actor = _actor()
    with _services(data_dir, database) as (_, jobs, _):
        try:
            job = jobs.cancel(job_id, reason=f"cancelled by {actor}", actor=actor)
        except SpoolvaultError as exc:
            _fail(str(exc))
        out.print(f"job {job.id} {job.state.value}")
        _queued_note(jobs)


@jobs_app.command("release")
def jobs_release(
    job_id: int,
    printer: Annotated[str, typer.Option("--printer", help="The printer to print on.")],
    data_dir: DataDirOpt = DEFAULT_DATA_DIR,
    database: DatabaseOpt = None,
) -> None:
    """Release a held job to a printer, as an administrator (verified, then sent)."""
    from spoolvault.errors import ClientError
    from spoolvault.jobs.release import ReleaseFailed

    with _services(data_dir, database) as (_, jobs, release):

        async def go() -> Any:
            try:
                return await release.release(job_id, printer, actor=_actor(), is_admin=True)
            finally:
                await release.drain()

        try:
            done = asyncio.run(go())
        except (ClientError, ReleaseFailed) as exc:
            _fail(str(exc), code=1)
        out.print(f"job {job_id} printed: {escape(done.delivered.detail)}", highlight=False)
        _queued_note(jobs)
