"""``spoolvault spool``: check the spool files (verify) and find the ones no job names."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from spoolvault.cli.common import DEFAULT_DATA_DIR, DatabaseOpt, DataDirOpt, fail, out
from spoolvault.errors import SpoolError, SpoolvaultError

ORPHAN_MIN_AGE = 300.0

spool_app = typer.Typer(help="Spool files: verify, find orphans.", no_args_is_help=True)


@spool_app.command("verify")
def spool_verify(
    data_dir: DataDirOpt = DEFAULT_DATA_DIR,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only failures.")] = False,
) -> None:
    """Authenticate every encrypted spool file end to end (nothing is decrypted to disk)."""
    from spoolvault.runtime import Runtime

    try:
        _, _, store = Runtime.open_files(data_dir, create=False)
    except SpoolvaultError as exc:
        fail(str(exc))
    table = Table("spool file", "kind", "bytes", "result")
    ok = bad = 0
    for spool in (store.encrypted, store.plain):
        kind = "encrypted" if spool.encrypted else "plain"
        for name in spool.names():
            try:
                size = spool.verify(name)
            except SpoolError as exc:
                bad += 1
                table.add_row(name, kind, "", f"[red]FAILED[/]: {exc}")
                continue
            ok += 1
            if not quiet:
                table.add_row(name, kind, str(size), "ok")
    if table.row_count:
        out.print(table)
    out.print(f"{ok} spool files verified, {bad} failed", highlight=False)
    if bad:
        raise typer.Exit(1)


@spool_app.command("orphans")
def spool_orphans(
    data_dir: DataDirOpt = DEFAULT_DATA_DIR,
    database: DatabaseOpt = None,
    delete: Annotated[
        bool, typer.Option("--delete", help="Remove them (encrypted ones are crypto-shredded).")
    ] = False,
    min_age: Annotated[
        float,
        typer.Option(
            "--min-age",
            help="Ignore files younger than this many seconds: a running server commits a "
            "file just before its job record.",
        ),
    ] = ORPHAN_MIN_AGE,
) -> None:
    """List spool files that no job record names (and abandoned temp files)."""
    from spoolvault.runtime import Runtime

    try:
        with Runtime.open(data_dir, database) as rt:
            found = []
            for spool in (rt.store.encrypted, rt.store.plain):
                known = rt.db.spool_names(encrypted=spool.encrypted)
                found += [(spool, o) for o in spool.orphans(known, min_age=min_age)]
            table = Table("file", "kind", "bytes", "age (s)")
            for _, orphan in found:
                table.add_row(
                    str(orphan.path), orphan.kind, str(orphan.size), f"{orphan.age_seconds:.0f}"
                )
            if found:
                out.print(table)
            if delete:
                for spool, orphan in found:
                    spool.remove_orphan(orphan)
    except SpoolvaultError as exc:
        fail(str(exc))
    verb = "removed" if delete else "found"
    out.print(f"{len(found)} orphan files {verb}", highlight=False)
