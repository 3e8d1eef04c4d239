"""``spoolvault jobs``: an administrator lists, cancels and releases jobs (audited)."""

from __future__ import annotations

import asyncio
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

jobs_app = typer.Typer(help="Jobs: list, cancel, release.", no_args_is_help=True)


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
    from spoolvault.admin import actions
    from spoolvault.db import JobState
    from spoolvault.settings import HIDDEN_TITLE, HIDE_DOCUMENT_NAMES
    from spoolvault.util.text import clean_text

    try:
        states = [JobState(s) for s in state] if state else None
    except ValueError as exc:
        fail(f"{exc} (one of: {', '.join(s.value for s in JobState)})")
    with services(data_dir, database) as (_, jobs, _):
        found = actions.list_jobs(jobs, actor(), "spoolvault jobs list", owner=owner, states=states)
        hide = bool(jobs.settings()[HIDE_DOCUMENT_NAMES])
        table = Table("id", "owner", "title", "queue", "state", "bytes", "pages", "created (UTC)")
        for j in found:
            table.add_row(
                str(j.id),
                escape(clean_text(j.owner)),
                HIDDEN_TITLE if hide and j.title else escape(clean_text(j.title or "")),
                escape(j.queue),
                j.state.value
                + (f" ({escape(clean_text(j.state_reason, 1023))})" if j.state_reason else ""),
                str(j.size),
                "" if j.pages is None else str(j.pages),
                j.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            )
        out.print(table)


@jobs_app.command("cancel")
def jobs_cancel(
    job_id: int, data_dir: DataDirOpt = DEFAULT_DATA_DIR, database: DatabaseOpt = None
) -> None:
    """Cancel a held or failed job; its spool file is crypto-shredded."""
    from spoolvault.admin import actions

    with services(data_dir, database) as (_, jobs, _):
        try:
            job = actions.cancel_job(jobs, actor(), job_id)
        except SpoolvaultError as exc:
            fail(str(exc))
        out.print(f"job {job.id} {job.state.value}")
        queued_note(jobs)


@jobs_app.command("release")
def jobs_release(
    job_id: int,
    printer: Annotated[str, typer.Option("--printer", help="The printer to print on.")],
    data_dir: DataDirOpt = DEFAULT_DATA_DIR,
    database: DatabaseOpt = None,
) -> None:
    """Release a held job to a printer, as an administrator (verified, then sent)."""
    from spoolvault.admin import actions
    from spoolvault.errors import Refused
    from spoolvault.jobs.release import ReleaseFailed

    with services(data_dir, database) as (_, jobs, release):

        async def go() -> Any:
            try:
                return await actions.release_job(release, actor(), job_id, printer)
            finally:
                await release.drain()

        try:
            done = asyncio.run(go())
        except (Refused, ReleaseFailed) as exc:
            fail(str(exc), code=1)
        out.print(f"job {job_id} printed: {escape(done.delivered.detail)}", highlight=False)
        queued_note(jobs)
