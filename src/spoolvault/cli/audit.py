"""``spoolvault audit``: verify the audit log's hash chain, list its events."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from spoolvault.cli.common import (
    DEFAULT_DATA_DIR,
    DatabaseOpt,
    DataDirOpt,
    err,
    fail,
    open_database,
    out,
)
from spoolvault.errors import SpoolvaultError

audit_app = typer.Typer(
    help="The audit log: verify its hash chain, list events.", no_args_is_help=True
)


@audit_app.command("verify")
def audit_verify(
    data_dir: DataDirOpt = DEFAULT_DATA_DIR,
    database: DatabaseOpt = None,
    anchor: Annotated[
        str | None,
        typer.Option(
            "--anchor",
            help="A head hash recorded earlier (kept off this machine): fail unless the chain "
            "still passes through it.",
        ),
    ] = None,
) -> None:
    """Check the audit file's hash chain, and that it and the database hold the same events.

    Exit 0 with the number of events and the head hash (record it elsewhere: see
    docs/audit.md), 1 with the first problem and its line number.
    """
    from spoolvault.audit import audit_path, wait_and_verify

    try:
        with open_database(data_dir, database) as (data, db):
            result = wait_and_verify(audit_path(data.root), db, anchor=anchor)
    except SpoolvaultError as exc:
        fail(str(exc))
    if result.problem is not None:
        err.print(
            f"[bold red]audit log FAILED verification at[/] {escape(result.message)}",
            highlight=False,
        )
        out.print(
            f"{result.events} events verified before line {result.line}; "
            f"head hash there {result.head}",
            highlight=False,
        )
        raise typer.Exit(1)
    out.print(f"{result.events} events verified", highlight=False)
    out.print(f"head hash {result.head}", highlight=False)


@audit_app.command("list")
def audit_list(
    data_dir: DataDirOpt = DEFAULT_DATA_DIR,
    database: DatabaseOpt = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many.")] = 50,
    job: Annotated[int | None, typer.Option("--job", help="Only this job's events.")] = None,
    actor: Annotated[str | None, typer.Option("--actor", help="Only this actor's.")] = None,
    action: Annotated[
        str | None, typer.Option("--action", help="Only this action (job.submit, ...).")
    ] = None,
) -> None:
    """List audit events from the database, newest first."""
    from spoolvault.audit import list_events

    try:
        with open_database(data_dir, database) as (_, db):
            events = list_events(db, limit=limit, job_id=job, actor=actor, action=action)
    except SpoolvaultError as exc:
        fail(str(exc))
    table = Table("id", "at (UTC)", "actor", "action", "job", "printer", "outcome", "detail")
    for e in events:
        job_id = "" if e.job_id is None else str(e.job_id)
        cells = (str(e.id), e.at, e.actor, e.action, job_id, e.printer or "", e.outcome, e.detail)
        table.add_row(*(escape(c) for c in cells))  # titles may contain [brackets]
    out.print(table)
