"""The ``spoolvault`` command (docs/cli.md: run, key, spool, …), one module per verb group.

Every verb that works on a server's files takes ``--data-dir`` with the same default as
``run`` and works whether the server is running or not. Operator errors are printed as
one line on stderr with exit status 2, never as a traceback (`common.fail`).
"""

from __future__ import annotations

from typing import Annotated

import typer

from spoolvault import __version__, logs
from spoolvault.cli import run as run_verb
from spoolvault.cli.audit import audit_app
from spoolvault.cli.common import fail, out
from spoolvault.cli.jobs import jobs_app
from spoolvault.cli.keys import key_app
from spoolvault.cli.printers import printer_app
from spoolvault.cli.provider import provider_app
from spoolvault.cli.settings import settings_app
from spoolvault.cli.spool import spool_app
from spoolvault.cli.users import user_app

app = typer.Typer(
    help="spoolvault: secure print release with spool files encrypted at rest.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(key_app, name="key")
app.add_typer(user_app, name="user")
app.add_typer(spool_app, name="spool")
app.add_typer(audit_app, name="audit")
app.add_typer(printer_app, name="printer")
app.add_typer(settings_app, name="settings")
app.add_typer(jobs_app, name="jobs")
app.add_typer(provider_app, name="provider")


@app.callback()
def _root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
    log_format: Annotated[
        str,
        typer.Option(
            "--log-format",
            envvar="SPOOLVAULT_LOG_FORMAT",
            help="text, or json: one JSON object per line, for log collectors.",
        ),
    ] = "text",
) -> None:
    if log_format not in ("text", "json"):
        fail(f"--log-format {log_format!r}: text or json")
    logs.setup(verbose=verbose, json_lines=log_format == "json")


@app.command()
def version() -> None:
    """Print the version."""
    out.print(__version__)


app.command()(run_verb.run)


def main() -> None:
    """Console-script entry point."""
    app()
