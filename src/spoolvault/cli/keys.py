"""``spoolvault key``: the key-encryption keys of the spool (list, rotate, retire)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from spoolvault.cli.common import DEFAULT_DATA_DIR, DataDirOpt, err, fail, out
from spoolvault.errors import OperatorError, SpoolvaultError

key_app = typer.Typer(help="Key-encryption keys: list, rotate, retire.", no_args_is_help=True)


@key_app.command("list")
def key_list(data_dir: DataDirOpt = DEFAULT_DATA_DIR) -> None:
    """List key-encryption keys (ids and states, never material) and how many files use each."""
    from spoolvault.runtime import Runtime

    try:
        _, keys, store = Runtime.open_files(data_dir, create=False)
        usage = store.encrypted.key_usage()
        table = Table("key id", "state", "created", "retired", "files")
        for info in keys.list_keys():
            table.add_row(
                info.id, info.state, info.created, info.retired or "", str(usage.get(info.id, 0))
            )
    except SpoolvaultError as exc:
        fail(str(exc))
    out.print(table)


@key_app.command("rotate")
def key_rotate(data_dir: DataDirOpt = DEFAULT_DATA_DIR) -> None:
    """Make a new current key and rewrap every spool file's header (payloads untouched)."""
    from spoolvault.runtime import Runtime
    from spoolvault.spool.store import rotate_keys

    try:
        _, _, store = Runtime.open_files(data_dir, create=False)
        report = rotate_keys(store.encrypted)
    except SpoolvaultError as exc:
        fail(str(exc))
    out.print(f"new current key: {report.new_key}", highlight=False)
    out.print(
        f"rewrapped {report.rewrapped} spool files; {report.unchanged} already used it",
        highlight=False,
    )
    for kid in report.retired:
        out.print(f"retired key {kid} (no file uses it; its material is erased)", highlight=False)
    for kid, count in report.still_used.items():
        out.print(
            f"key {kid} is still used by {count} files and stays active; "
            f"run 'spoolvault key rotate' again later to retire it",
            highlight=False,
        )
    for name, reason in report.failed.items():
        err.print(f"could not rewrap {name}: {reason}", highlight=False)
    if report.failed:
        raise typer.Exit(1)


@key_app.command("retire")
def key_retire(
    key_id: Annotated[str, typer.Argument(help="The key id (16 hex digits).")],
    data_dir: DataDirOpt = DEFAULT_DATA_DIR,
    force: Annotated[
        bool, typer.Option("--force", help="Retire even if files use it (they become unreadable).")
    ] = False,
) -> None:
    """Erase a non-current key. Refused while any spool file still uses it, unless --force."""
    from spoolvault.runtime import Runtime

    try:
        _, keys, store = Runtime.open_files(data_dir, create=False)
        with keys.exclusive():
            used = store.encrypted.key_usage().get(key_id, 0)
            if used and not force:
                raise OperatorError(
                    f"key {key_id} is still used by {used} spool files; run "
                    f"'spoolvault key rotate' to rewrap them first"
                )
            keys.retire(key_id)
    except SpoolvaultError as exc:
        fail(str(exc))
    out.print(f"retired key {key_id}", highlight=False)
