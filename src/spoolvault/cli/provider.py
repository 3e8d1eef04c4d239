"""``spoolvault provider``: register print providers on the application server, list
them, and drain one of its encrypted held jobs before a downgrade."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from spoolvault.cli.common import (
    DEFAULT_DATA_DIR,
    DatabaseOpt,
    DataDirOpt,
    actor,
    err,
    fail,
    open_database,
    out,
    queued_note,
    services,
)
from spoolvault.errors import SpoolvaultError

if TYPE_CHECKING:
    from spoolvault.db import Job
    from spoolvault.jobs.release import ReleaseService
    from spoolvault.jobs.service import JobService
    from spoolvault.runtime import Runtime

provider_app = typer.Typer(
    help="Print providers: register them (application server), drain one before a downgrade.",
    no_args_is_help=True,
)


@provider_app.command("add")
def provider_add(
    name: Annotated[str, typer.Argument(help="The provider's name (letters, digits, . _ -).")],
    data_dir: DataDirOpt = DEFAULT_DATA_DIR,
    database: DatabaseOpt = None,
    server: Annotated[
        str, typer.Option("--server", help="The primary or site server it belongs to.")
    ] = "primary",
    site: Annotated[
        str | None,
        typer.Option(
            "--site",
            help="It belongs to this site server, registered now if new (a site server "
            "itself is added this way: spoolvault provider add NAME --site NAME).",
        ),
    ] = None,
    rotate: Annotated[
        bool, typer.Option("--rotate", help="Give an existing provider a new secret.")
    ] = False,
) -> None:
    """Register a print provider on the application server and print its secret once."""
    from spoolvault.servers.provider import NAME_ENV, SECRET_ENV
    from spoolvault.servers.registry import add_provider

    try:
        with open_database(data_dir, database) as (_, db):
            if site is not None:
                server = site
                if site not in {srv.name for srv in db.servers()}:
                    db.add_server(site)
                    out.print(f"site server {site} registered", highlight=False)
            secret = add_provider(db, name, server, rotate=rotate)
    except SpoolvaultError as exc:
        fail(str(exc))
    # Shown once: only its SHA-256 is stored. Never logged.
    out.print(f"provider {name} registered with server {server}", highlight=False)
    out.print(f"secret (shown once): {secret}", highlight=False)
    out.print(
        f"on the provider: {NAME_ENV}={name} {SECRET_ENV}=<secret> spoolvault run "
        f"--role provider --app-server URL (or ProviderName=/ProviderSecret= in its "
        f"print-provider.conf)",
        highlight=False,
    )


@provider_app.command("list")
def provider_list(data_dir: DataDirOpt = DEFAULT_DATA_DIR, database: DatabaseOpt = None) -> None:
    """List the registered print providers and their last heartbeat."""
    from spoolvault.servers.registry import is_available, list_providers, status_of

    try:
        with open_database(data_dir, database) as (_, db):
            providers = list_providers(db)
    except SpoolvaultError as exc:
        fail(str(exc))
    table = Table(
        "name", "server", "url", "state", "last heartbeat", "version", "format", "encrypt"
    )
    for p in providers:
        st = status_of(p)
        formats = st.get("formats") or {}
        caps = st.get("capabilities") or {}
        cells = (
            p.name,
            p.server,
            p.url or "",
            "available" if is_available(p) else "unavailable",
            p.last_seen.isoformat(timespec="seconds") if p.last_seen else "never",
            str(st.get("version", "")),
            str(formats.get("write", "")),
            "" if "encrypt" not in caps else ("yes" if caps["encrypt"] else "no"),
        )
        table.add_row(*(escape(c) for c in cells))
    out.print(table)


@provider_app.command("drain")
def provider_drain(
    data_dir: DataDirOpt = DEFAULT_DATA_DIR,
    database: DatabaseOpt = None,
    printer: Annotated[
        str | None,
        typer.Option("--printer", help="Release every encrypted held job to this printer."),
    ] = None,
    cancel: Annotated[
        bool, typer.Option("--cancel", help="Cancel (crypto-shred) every encrypted held job.")
    ] = False,
) -> None:
    """Before a downgrade: list, release (--printer) or cancel (--cancel) every encrypted
    held job of this provider; exit 0 and say "safe" only when none remains.

    Works whether or not the provider runs. A running provider may take new encrypted jobs
    meanwhile: they are counted too, so switch encryption off for its server (or stop its
    intake) first; docs/deployment.md.
    """
    import asyncio

    if printer is not None and cancel:
        fail("give --printer or --cancel, not both")
    with services(data_dir, database) as (rt, jobs, release):
        if printer is not None or cancel:
            asyncio.run(_drain(rt, jobs, release, printer, actor()))
            queued_note(jobs)
        try:
            remaining = _encrypted_held(rt)
        except SpoolvaultError as exc:
            fail(str(exc))
    if remaining:
        table = Table("job", "owner", "title", "state", "reason")
        for job in remaining:
            cells = (str(job.id), job.owner, job.title, job.state.value, job.state_reason or "")
            table.add_row(*(escape(c) for c in cells))
        out.print(table)
        out.print(
            f"NOT safe to downgrade: {len(remaining)} encrypted held jobs remain "
            f"(release them with --printer NAME or cancel them with --cancel)",
            highlight=False,
        )
        raise typer.Exit(1)
    out.print("safe: no encrypted held jobs remain on this provider", highlight=False)


def _encrypted_held(rt: Runtime) -> list[Job]:
    from sqlalchemy import select

    from spoolvault.db import FILE_STATES, Job

    with rt.db.session(write=False) as s:
        return list(
            s.scalars(
                select(Job)
                .where(
                    Job.provider.is_(None),
                    Job.encrypted.is_(True),
                    Job.state.in_(sorted(st.value for st in FILE_STATES)),
                )
                .order_by(Job.id)
            )
        )


async def _drain(
    rt: Runtime, jobs: JobService, release: ReleaseService, printer: str | None, actor: str
) -> None:
    import functools

    from spoolvault.admin import actions
    from spoolvault.util.threads import in_thread

    try:
        for job in await in_thread(_encrypted_held, rt):
            try:
                if printer is not None:
                    done = await actions.release_job(release, actor, job.id, printer)
                    out.print(
                        f"job {job.id}: released to {printer} ({done.delivered.detail})",
                        highlight=False,
                    )
                else:
                    await in_thread(
                        functools.partial(
                            actions.cancel_job,
                            jobs,
                            actor,
                            job.id,
                            reason="cancelled before a downgrade (provider drain)",
                        )
                    )
                    out.print(f"job {job.id}: cancelled", highlight=False)
            except SpoolvaultError as exc:
                err.print(f"job {job.id}: kept: {exc}", highlight=False, soft_wrap=True)
    finally:
        await release.drain()
