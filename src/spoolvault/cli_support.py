"""What every command-line verb shares: the consoles, the error exit, common options."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console

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


def _fail(message: str, code: int = 2) -> NoReturn:
    """Print ``error: message`` on stderr and exit with ``code``."""
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)
