"""``spoolvault settings``: show and change a server's settings (audited)."""

from __future__ import annotations

from typing import Annotated

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

ServerOpt = Annotated[str, typer.Option("--server", help="The server whose settings these are.")]

settings_app = typer.Typer(help="Per-server settings: show, set.", no_args_is_help=True)


# -- settings -------------------------------------------------------------------------


@settings_app.command("show")
def settings_show(
    data_dir: DataDirOpt = DEFAULT_DATA_DIR,
    database: DatabaseOpt = None,
    server: ServerOpt = "primary",
) -> None:
    """Show a server's settings."""
    from spoolvault.settings import SETTINGS

    with services(data_dir, database) as (rt, _, _):
        try:
            values = rt.db.get_settings(server)
        except SpoolvaultError as exc:
            fail(str(exc))
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
    from spoolvault.admin import actions
    from spoolvault.settings import BY_NAME

    if name not in BY_NAME:
        fail(f"unknown setting {name!r} (known: {', '.join(sorted(BY_NAME))})")
    with services(data_dir, database) as (_, jobs, _):
        try:
            detail = actions.set_setting(jobs, actor(), server, name, value)
        except SpoolvaultError as exc:
            fail(str(exc))
        out.print(detail, highlight=False)
        queued_note(jobs)
