"""What every command-line verb shares: the consoles, the error exit, common options, and
the services an administration verb works through."""

from __future__ import annotations

import contextlib
import getpass
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console

from spoolvault.errors import SpoolvaultError

if TYPE_CHECKING:
    from spoolvault.config import DataDir
    from spoolvault.db import Database
    from spoolvault.jobs.service import JobService

# Not a terminal (a pipe, a log, a test): wide enough that ids and paths are never cut.
out = Console(width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 200)

DEFAULT_DATA_DIR = Path("./spoolvault-data")

DataDirOpt = Annotated[
    Path,
    typer.Option("--data-dir", help="The server's data directory.", show_default=True),
]
DatabaseOpt = Annotated[
    str | None,
    typer.Option(
        "--database",
        help="Database URL: postgresql://… for PostgreSQL; default SQLite in the data dir.",
    ),
]


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``error: message`` on stderr and exit with ``code``."""
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def actor() -> str:
    """Who the audit log says did it: ``cli:<login>``."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


@contextlib.contextmanager
def open_database(data_dir: Path, database: str | None) -> Iterator[tuple[DataDir, Database]]:
    """The data directory and its database, server running or not."""
    from spoolvault.config import DataDir
    from spoolvault.db import Database, database_url

    data = DataDir.open(data_dir, create=False)
    with Database.open(database_url(database, data.database)) as db:
        yield data, db


@contextlib.contextmanager
def services(data_dir: Path, database: str | None) -> Iterator[Any]:
    """The runtime, a job service whose audit events reach the log, and a release service.

    The audit events are recorded by the command itself when no server runs, or queued for
    the running server to record (`spoolvault.audit.open_for_command`).
    """
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
        fail(str(exc))


def queued_note(jobs: JobService) -> None:
    """Say so when the running server, not this command, records the audit event."""
    from spoolvault.audit import QueuedAudit

    if isinstance(jobs.audit, QueuedAudit):
        err.print("(the running server records the audit event within seconds)")
