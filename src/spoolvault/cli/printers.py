"""``spoolvault printer``: add, list, change and remove printers (audited)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from spoolvault.cli.common import (
    DEFAULT_DATA_DIR,
    DatabaseOpt,
    DataDirOpt,
    actor,
    fail,
    out,
    queued_note,
    services,
)
from spoolvault.errors import SpoolvaultError

printer_app = typer.Typer(help="Printers: add, list, change, remove.", no_args_is_help=True)


_FORMATS_HELP = (
    "Comma-separated MIME types it takes (socket/lpd default: application/postscript,"
    "application/vnd.hp-pcl); others are converted at release."
)


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
    formats: Annotated[str | None, typer.Option(help=_FORMATS_HELP)] = None,
) -> None:
    """Add a printer; its queue is /printers/NAME."""
    from spoolvault.admin import actions

    fields = {
        "name": name,
        "uri": uri,
        "mode": mode,
        "group": group,
        "block_release_on_error": block_release_on_error,
        "snmp_community": snmp_community,
        "snmp_host": snmp_host,
        "snmp_port": snmp_port,
        "hold_timeout_minutes": hold_timeout_minutes,
        "document_formats": formats,
    }
    with services(data_dir, database) as (_, jobs, _):
        try:
            printer = actions.add_printer(jobs, actor(), fields)
        except SpoolvaultError as exc:
            fail(str(exc))
        out.print(_printer_table([printer]))
        queued_note(jobs)


@printer_app.command("list")
def printer_list(data_dir: DataDirOpt = DEFAULT_DATA_DIR, database: DatabaseOpt = None) -> None:
    """List the printers."""
    from spoolvault.printers.registry import list_printers

    with services(data_dir, database) as (rt, _, _):
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
    formats: Annotated[str | None, typer.Option(help=_FORMATS_HELP)] = None,
    default_formats: Annotated[
        bool, typer.Option("--default-formats", help="Back to the default formats.")
    ] = False,
    no_snmp: Annotated[bool, typer.Option("--no-snmp", help="Stop asking SNMP.")] = False,
    server_hold_timeout: Annotated[
        bool, typer.Option("--server-hold-timeout", help="Use the server's hold timeout.")
    ] = False,
) -> None:
    """Change a printer's settings (only those given)."""
    from spoolvault.admin import actions

    given = {
        "uri": uri,
        "mode": mode,
        "group": group,
        "block_release_on_error": block_release_on_error,
        "snmp_community": snmp_community,
        "snmp_host": snmp_host,
        "snmp_port": snmp_port,
        "hold_timeout_minutes": hold_timeout_minutes,
        "document_formats": formats,
    }
    changes: dict[str, object] = {k: v for k, v in given.items() if v is not None}
    if no_snmp:
        changes.update(snmp_community=None, snmp_host=None, snmp_port=None)
    if server_hold_timeout:
        changes["hold_timeout_minutes"] = None
    if default_formats:
        changes["document_formats"] = None
    if not changes:
        fail("nothing to change: give at least one option (see --help)")
    with services(data_dir, database) as (_, jobs, _):
        try:
            printer = actions.change_printer(jobs, actor(), name, changes)
        except SpoolvaultError as exc:
            fail(str(exc))
        out.print(_printer_table([printer]))
        queued_note(jobs)


@printer_app.command("remove")
def printer_remove(
    name: str, data_dir: DataDirOpt = DEFAULT_DATA_DIR, database: DatabaseOpt = None
) -> None:
    """Remove a printer (refused while jobs are held on its queue)."""
    from spoolvault.admin import actions

    with services(data_dir, database) as (_, jobs, _):
        try:
            actions.remove_printer(jobs, actor(), name)
        except SpoolvaultError as exc:
            fail(str(exc))
        out.print(f"printer {escape(name)} removed")
        queued_note(jobs)
