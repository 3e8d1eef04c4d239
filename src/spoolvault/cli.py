"""The ``spoolvault`` command (CONTRACT.md: run, key, spool, …).

Every verb that works on a server's files takes ``--data-dir`` with the same default as
``run`` and works whether the server is running or not. Operator errors are printed as
one line on stderr with exit status 2, never as a traceback.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import ssl
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from spoolvault import __version__, logs
from spoolvault.admin_cli import jobs_app, printer_app, settings_app
from spoolvault.cli_support import (
    DEFAULT_DATA_DIR,
    DatabaseOpt,
    DataDirOpt,
    _fail,
    err,
    out,
)
from spoolvault.errors import OperatorError, SpoolError, SpoolvaultError
from spoolvault.netaddr import HostPort, parse_hostport

if TYPE_CHECKING:
    from spoolvault.config import DataDir
    from spoolvault.db import Database, Job
    from spoolvault.identity import Users
    from spoolvault.jobs.release import ReleaseService
    from spoolvault.jobs.service import JobService
    from spoolvault.runtime import Runtime

log = logging.getLogger("spoolvault")
ORPHAN_MIN_AGE = 300.0


app = typer.Typer(
    help="spoolvault: secure print release with spool files encrypted at rest.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
key_app = typer.Typer(help="Key-encryption keys: list, rotate, retire.", no_args_is_help=True)
spool_app = typer.Typer(help="Spool files: verify, find orphans.", no_args_is_help=True)
audit_app = typer.Typer(
    help="The audit log: verify its hash chain, list events.", no_args_is_help=True
)
user_app = typer.Typer(
    help="Users: add, list, cards, PINs, CSV import, LDAP/AD sync, delegation.",
    no_args_is_help=True,
)
app.add_typer(key_app, name="key")
app.add_typer(user_app, name="user")
app.add_typer(spool_app, name="spool")
app.add_typer(audit_app, name="audit")
app.add_typer(printer_app, name="printer")
app.add_typer(settings_app, name="settings")
app.add_typer(jobs_app, name="jobs")
provider_app = typer.Typer(
    help="Print providers: register them (application server), drain one before a downgrade.",
    no_args_is_help=True,
)
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
        _fail(f"--log-format {log_format!r}: text or json")
    logs.setup(verbose=verbose, json_lines=log_format == "json")


@app.command()
def version() -> None:
    """Print the version."""
    out.print(__version__)


def _bind(addr: HostPort, flag: str, *, reset: bool = False) -> socket.socket:
    """Bind before starting, so a busy port is a clear startup error.

    ``reset`` (raw and LPD): connections end with a reset unless closed on purpose, from
    the first one the kernel accepts, before the server is even serving
    (``intake.reset_by_default``).
    """
    family = socket.AF_INET6 if ":" in addr.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reset:
        from spoolvault.intake import reset_by_default

        reset_by_default(sock)
    try:
        sock.bind((addr.host, addr.port))
    except OSError as exc:
        sock.close()
        raise OperatorError(f"cannot listen on {addr} ({flag}): {exc.strerror}") from None
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


@dataclass(frozen=True)
class Listeners:
    """What `run` listens on and announces (CONTRACT.md: spoolvault run)."""

    http: HostPort
    raw: HostPort | None
    lpd: HostPort | None
    tls: bool = False
    tls_cert: Path | None = None
    tls_key: Path | None = None
    dnssd: bool = True


@app.command()
def run(
    data_dir: DataDirOpt = DEFAULT_DATA_DIR,
    http: Annotated[
        str, typer.Option("--http", help="HOST:PORT for IPP, web pages and the REST API.")
    ] = "127.0.0.1:8631",
    raw: Annotated[
        str, typer.Option("--raw", help="HOST:PORT for raw 9100 intake, or off.")
    ] = "127.0.0.1:9100",
    lpd: Annotated[str, typer.Option("--lpd", help="HOST:PORT for LPD intake, or off.")] = "off",
    database: DatabaseOpt = None,
    role: Annotated[str, typer.Option("--role", help="all (default), app or provider.")] = "all",
    app_server: Annotated[
        str | None,
        typer.Option(
            "--app-server",
            help="Application server URL: role provider reports to it; role all with it is a "
            "site server of that primary.",
        ),
    ] = None,
    tls: Annotated[
        bool,
        typer.Option(
            "--tls",
            help="Serve --http over TLS (ipps:// and https://), with --tls-cert/--tls-key or "
            "a certificate generated on first start.",
        ),
    ] = False,
    tls_cert: Annotated[
        Path | None, typer.Option("--tls-cert", help="PEM certificate (chain) for --tls.")
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option("--tls-key", help="PEM private key for --tls.")
    ] = None,
    no_dnssd: Annotated[
        bool, typer.Option("--no-dnssd", help="Do not advertise the queues with DNS-SD.")
    ] = False,
) -> None:
    """Start the server: application server and print provider in one process (--role all),
    or one of them (--role app, --role provider --app-server URL; docs/deployment.md)."""
    try:
        http_addr = parse_hostport(http, "--http")
        assert http_addr is not None
        listeners = Listeners(
            http=http_addr,
            raw=parse_hostport(raw, "--raw", allow_off=True),
            lpd=parse_hostport(lpd, "--lpd", allow_off=True),
            tls=tls or tls_cert is not None,
            tls_cert=tls_cert,
            tls_key=tls_key,
            dnssd=not no_dnssd,
        )
        if role not in ("all", "app", "provider"):
            raise OperatorError(f"--role {role!r}: expected all, app or provider")
        if app_server and role == "app":
            raise OperatorError(
                "--app-server is for --role provider, or --role all on a site server"
            )
        if role == "app":
            # No intake on an application server: its providers take the jobs.
            listeners = Listeners(
                http=listeners.http,
                raw=None,
                lpd=None,
                tls=listeners.tls,
                tls_cert=tls_cert,
                tls_key=tls_key,
                dnssd=False,
            )
        _serve(data_dir, database, listeners, role=role, app_server=app_server)
    except SpoolvaultError as exc:
        _fail(str(exc))


def _config_class() -> type:
    import uvicorn

    class Config(uvicorn.Config):
        """uvicorn's config, with TLS session tickets off.

        With tickets on, Python sends TLS 1.3 NewSessionTicket messages after the handshake,
        and CUPS clients (GnuTLS: ipptool, lp, cupsd's ipps backend) then never read the
        response: every IPPS request timed out. Without tickets, TLS 1.3 works with them.
        """

        def load(self) -> None:
            super().load()
            if self.ssl is not None:
                self.ssl.num_tickets = 0
                self.ssl.minimum_version = ssl.TLSVersion.TLSv1_2

    return Config


def _server_class() -> type:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, minus re-raising SIGTERM/SIGINT after the graceful shutdown.

        uvicorn re-raises the caught signal once it has stopped serving, which kills the
        process before our own clean-up (database, spool lock) runs and exits with -15.
        We stop the same graceful way and then return, so `run` exits 0.
        """

        announce: Callable[[], None] | None = None

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            if self.should_exit and sig == signal.SIGINT:
                self.force_exit = True  # a second Ctrl-C skips waiting for connections
            self.should_exit = True

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            # After the lifespan's start-up (recovery, listeners): "listening" means ready.
            await super().startup(sockets=sockets)
            if self.started and self.announce is not None:
                self.announce()

    return Server


def _serve(
    data_dir: Path,
    database: str | None,
    listen: Listeners,
    *,
    role: str = "all",
    app_server: str | None = None,
) -> None:

    from spoolvault.runtime import Runtime
    from spoolvault.servers.provider import ProviderIdentity
    from spoolvault.tls import server_certificate
    from spoolvault.web.app import Sockets, create_app

    with Runtime.open(data_dir, database, create=True) as rt, rt.store.server_lock():
        # A site server (--role all --app-server PRIMARY) reports to its primary like a provider.
        site = role == "all" and app_server is not None
        identity = (
            ProviderIdentity.load(rt.data, app_server) if role == "provider" or site else None
        )
        for spool, report in zip(
            (rt.store.encrypted, rt.store.plain),
            rt.store.recover(known=lambda encrypted: rt.db.spool_names(encrypted)),
            strict=True,
        ):
            if any(vars(report).values()):
                log.info("recovered %s: %s", spool.directory, report)
                done = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in vars(report).items() if v)
                rt.recovered.append(f"{spool.directory}: {done}")
        tls_files: dict[str, str] = {}
        if listen.tls:
            cert, key = server_certificate(
                rt.data.root, listen.tls_cert, listen.tls_key, [listen.http.host]
            )
            tls_files = {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}
        sockets = Sockets(
            http=_bind(listen.http, "--http"),
            raw=_bind(listen.raw, "--raw", reset=True) if listen.raw else None,
            lpd=_bind(listen.lpd, "--lpd", reset=True) if listen.lpd else None,
        )
        generated = rt.db.ensure_admin(os.environ.get("SPOOLVAULT_ADMIN_PASSWORD"))
        if generated:
            # Printed once, on the first start only; only its argon2id hash is stored.
            out.print(f"admin password (shown once): {generated}", highlight=False)
        from spoolvault.web.guard import GuardedHttpProtocol

        limits = rt.data.limits
        server = _server_class()(
            _config_class()(
                create_app(
                    rt,
                    sockets=sockets,
                    dnssd=listen.dnssd,
                    tls=listen.tls,
                    role=role,
                    provider=identity,
                ),
                log_config=None,
                access_log=False,
                # No X-Forwarded-For: uvicorn would trust it from 127.0.0.1, so any local
                # process could pose as another client (lockout is per client address).
                proxy_headers=False,
                lifespan="on",
                timeout_graceful_shutdown=10,
                # Header, body and size limits uvicorn lacks (web/guard.py), and its own
                # connection cap: no client can hold the one HTTP port hostage.
                http=GuardedHttpProtocol.with_limits(limits),
                limit_concurrency=limits.http_max_connections,
                **tls_files,
            )
        )
        # From here a SIGTERM/SIGINT means a graceful stop, even before uvicorn is running.
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, server.handle_exit)
        scheme = "https" if listen.tls else "http"

        def announce() -> None:
            role_note = "" if role == "all" else f" (role {role})"
            out.print(
                f"spoolvault {__version__}{role_note} listening on "
                f"{sockets.address('http').url(scheme)}",
                highlight=False,
            )
            for name in ("raw", "lpd"):
                if getattr(sockets, name) is not None:
                    out.print(f"{name} intake on {sockets.address(name)}", highlight=False)
            sys.stdout.flush()

        server.announce = announce
        server.run(sockets=[sockets.http])
        log.info("spoolvault stopped")


# -- key ------------------------------------------------------------------------------


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
        _fail(str(exc))
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
        _fail(str(exc))
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
        _fail(str(exc))
    out.print(f"retired key {key_id}", highlight=False)


# -- spool ----------------------------------------------------------------------------


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
        _fail(str(exc))
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
        _fail(str(exc))
    verb = "removed" if delete else "found"
    out.print(f"{len(found)} orphan files {verb}", highlight=False)


# -- audit ----------------------------------------------------------------------------


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
    from spoolvault.config import DataDir
    from spoolvault.db import Database, database_url

    try:
        data = DataDir.open(data_dir, create=False)
        with Database.open(database_url(database, data.database)) as db:
            result = wait_and_verify(audit_path(data.root), db, anchor=anchor)
    except SpoolvaultError as exc:
        _fail(str(exc))
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
    from spoolvault.config import DataDir
    from spoolvault.db import Database, database_url

    try:
        data = DataDir.open(data_dir, create=False)
        with Database.open(database_url(database, data.database)) as db:
            events = list_events(db, limit=limit, job_id=job, actor=actor, action=action)
    except SpoolvaultError as exc:
        _fail(str(exc))
    table = Table("id", "at (UTC)", "actor", "action", "job", "printer", "outcome", "detail")
    for e in events:
        job_id = "" if e.job_id is None else str(e.job_id)
        cells = (str(e.id), e.at, e.actor, e.action, job_id, e.printer or "", e.outcome, e.detail)
        table.add_row(*(escape(c) for c in cells))  # titles may contain [brackets]
    out.print(table)


# -- user -----------------------------------------------------------------------------


@contextlib.contextmanager
def _database(data_dir: Path, database: str | None) -> Iterator[tuple[DataDir, Database]]:
    """The data directory and its database, server running or not."""
    from spoolvault.config import DataDir
    from spoolvault.db import Database, database_url

    data = DataDir.open(data_dir, create=False)
    with Database.open(database_url(database, data.database)) as db:
        yield data, db


@contextlib.contextmanager
def _users(data_dir: Path, database: str | None) -> Iterator[Users]:
    """The data directory's users, with its card secret (server running or not)."""
    from spoolvault.identity import Users, open_card_key

    with _database(data_dir, database) as (data, db):
        yield Users(db, open_card_key(data.root, db))


def _audit_users(data_dir: Path, database: str | None, detail: str) -> None:
    """A ``user.change`` event by ``cli:<login>`` (queued for a running server)."""
    from spoolvault.admin_cli import _actor
    from spoolvault.audit import Action, audit_path, record_offline

    with _database(data_dir, database) as (data, db):
        record_offline(audit_path(data.root), db, _actor(), Action.USER_CHANGE, detail=detail)


def _update_user(
    data_dir: Path, database: str | None, username: str, field: str, value: str | None
) -> None:
    """Set one credential of a user (None removes it) and record which in the audit log."""
    with _users(data_dir, database) as users:
        users.update(username, {field: value})
    _audit_users(data_dir, database, f"{username}: {field}")


def _secret(name: str, confirm: bool = True) -> str:
    """A password or PIN: prompted (hidden) on a terminal, else one line of stdin.

    Never an argument: arguments are visible to every user in the process list.
    """
    if sys.stdin.isatty():
        return str(typer.prompt(name, hide_input=True, confirmation_prompt=confirm))
    line = sys.stdin.readline()
    if not line:
        raise OperatorError(f"expected the {name} on standard input")
    return line.rstrip("\r\n")


def _print_user_done(verb: str, username: str) -> None:
    out.print(f"{verb} user {username}", highlight=False)


@user_app.command("add")
def user_add(
    username: Annotated[str, typer.Argument(help="The user name.")],
    data_dir: DataDirOpt = DEFAULT_DATA_DIR,
    database: DatabaseOpt = None,
    password: Annotated[
        bool, typer.Option("--password", help="Ask for a password (stdin when not a terminal).")
    ] = False,
    pin: Annotated[
        bool, typer.Option("--pin", help="Ask for a PIN (stdin when not a terminal).")
    ] = False,
    card: Annotated[str | None, typer.Option("--card", help="Card number.")] = None,
    id_number: Annotated[str | None, typer.Option("--id-number", help="ID number.")] = None,
    full_name: Annotated[str | None, typer.Option("--full-name")] = None,
    email: Annotated[str | None, typer.Option("--email")] = None,
    group: Annotated[
        list[str] | None, typer.Option("--group", help="A group (repeat for more).")
    ] = None,
    admin: Annotated[bool, typer.Option("--admin", help="Make an administrator.")] = False,
) -> None:
    """Create a local user."""
    from spoolvault.admin.actions import changed_fields

    try:
        fields: dict[str, object] = {}
        if password:
            fields["password"] = _secret("password")
        if pin:
            fields["pin"] = _secret("PIN")
        for name, value in (
            ("card_number", card),
            ("id_number", id_number),
            ("full_name", full_name),
            ("email", email),
        ):
            if value is not None:
                fields[name] = value
        if group:
            fields["groups"] = group
        if admin:
            fields["is_admin"] = True
        with _users(data_dir, database) as users:
            users.add(username, fields)
        _audit_users(data_dir, database, f"created {username}: {changed_fields(set(fields))}")
    except SpoolvaultError as exc:
        _fail(str(exc))
    _print_user_done("added", username)


@user_app.command("list")
def user_list(data_dir: DataDirOpt = DEFAULT_DATA_DIR, database: DatabaseOpt = None) -> None:
    """List users: names, groups, delegates, and which credentials are set (never values)."""
    try:
        with _users(data_dir, database) as users:
            found = users.list()
    except SpoolvaultError as exc:
        _fail(str(exc))
    table = Table(
        "user", "full name", "e-mail", "ID", "card", "PIN", "password", "groups",
        "delegates", "source", "state",
    )  # fmt: skip
    for u in found:
        delegates = [*u.delegates, *(f"@{g}" for g in u.delegate_groups)]
        cells = (
            u.username + (" (admin)" if u.is_admin else ""),
            u.full_name or "",
            u.email or "",
            u.id_number or "",
            "yes" if u.has_card else "",
            "yes" if u.has_pin else "",
            "yes" if u.has_password else "",
            ", ".join(u.groups),
            ", ".join(delegates),
            u.source,
            "disabled" if u.disabled else "",
        )
        table.add_row(*(escape(c) for c in cells))
    out.print(table)


@user_app.command("set-card")
def user_set_card(
    username: Annotated[str, typer.Argument(help="The user name.")],
    card: Annotated[
        str | None, typer.Argument(help="The card number; '-' reads it from stdin.")
    ] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Remove the user's card.")] = False,
    data_dir: DataDirOpt = DEFAULT_DATA_DIR,
    database: DatabaseOpt = None,
) -> None:
    """Enroll a card for a user (stored as a keyed hash), or remove it."""
    try:
        if clear == (card is not None):
            raise OperatorError("give a card number, or --clear")
        number = _secret("card number", confirm=False) if card == "-" else card
        _update_user(data_dir, database, username, "card_number", number)
    except SpoolvaultError as exc:
        _fail(str(exc))
    _print_user_done("removed the card of" if clear else "enrolled a card for", username)


@user_app.command("set-pin")
def user_set_pin(
    username: Annotated[str, typer.Argument(help="The user name.")],
    clear: Annotated[bool, typer.Option("--clear", help="Remove the user's PIN.")] = False,
    data_dir: DataDirOpt = DEFAULT_DATA_DIR,
    database: DatabaseOpt = None,
) -> None:
    """Set a user's PIN (asked for, or one line of stdin), or remove it."""
    try:
        pin = None if clear else _secret("PIN")
        _update_user(data_dir, database, username, "pin", pin)
    except SpoolvaultError as exc:
        _fail(str(exc))
    _print_user_done("removed the PIN of" if clear else "set the PIN of", username)


@user_app.command("import")
def user_import(
    file: Annotated[Path, typer.Argument(help="CSV with a header line (docs/identity.md).")],
    data_dir: DataDirOpt = DEFAULT_DATA_DIR,
    database: DatabaseOpt = None,
    update: Annotated[
        bool, typer.Option("--update", help="Update users that exist instead of refusing.")
    ] = False,
) -> None:
    """Import users from CSV: every line checked first; on any error nothing is imported."""
    from spoolvault.identity.csvimport import import_file

    try:
        with _users(data_dir, database) as users:
            result = import_file(users, file, update=update)
        _audit_users(
            data_dir,
            database,
            f"imported {file.name}: {len(result.added)} added, {len(result.updated)} updated",
        )
    except SpoolvaultError as exc:
        _fail(str(exc), code=1)
    out.print(
        f"imported {file}: {len(result.added)} added, {len(result.updated)} updated",
        highlight=False,
    )


@user_app.command("ldap-sync")
def user_ldap_sync(
    url: Annotated[str, typer.Option("--url", help="ldap://host[:389] or ldaps://host[:636]")],
    base_dn: Annotated[str, typer.Option("--base-dn", help="Where the users are.")],
    data_dir: DataDirOpt = DEFAULT_DATA_DIR,
    database: DatabaseOpt = None,
    bind_dn: Annotated[
        str | None,
        typer.Option("--bind-dn", help="Bind DN; its password from $SPOOLVAULT_LDAP_PASSWORD."),
    ] = None,
    active_directory: Annotated[
        bool, typer.Option("--ad", help="Active Directory defaults (sAMAccountName, ...).")
    ] = False,
    start_tls: Annotated[bool, typer.Option("--start-tls", help="StartTLS, then bind.")] = False,
    card_attribute: Annotated[
        str | None, typer.Option("--card-attribute", help="The attribute with the card number.")
    ] = None,
    id_attribute: Annotated[
        str | None, typer.Option("--id-attribute", help="The attribute with the ID number.")
    ] = None,
    user_filter: Annotated[str | None, typer.Option("--user-filter")] = None,
    username_attribute: Annotated[str | None, typer.Option("--username-attribute")] = None,
    full_name_attribute: Annotated[str | None, typer.Option("--full-name-attribute")] = None,
    email_attribute: Annotated[str | None, typer.Option("--email-attribute")] = None,
    group_base_dn: Annotated[str | None, typer.Option("--group-base-dn")] = None,
    group_filter: Annotated[str | None, typer.Option("--group-filter")] = None,
) -> None:
    """Create, update and disable users, and set directory groups, from LDAP or AD."""
    from spoolvault.identity.ldap import LdapConfig, sync

    options: dict[str, Any] = {
        "bind_dn": bind_dn,
        "bind_password": os.environ.get("SPOOLVAULT_LDAP_PASSWORD"),
        "start_tls": start_tls,
        "card_attribute": card_attribute,
        "id_number_attribute": id_attribute,
        "user_filter": user_filter,
        "username_attribute": username_attribute,
        "full_name_attribute": full_name_attribute,
        "email_attribute": email_attribute,
        "group_base_dn": group_base_dn,
        "group_filter": group_filter,
    }
    given = {k: v for k, v in options.items() if v is not None}
    cfg = (
        LdapConfig.active_directory(url, base_dn, **given)
        if active_directory
        else LdapConfig(url=url, base_dn=base_dn, **given)
    )
    try:
        with _users(data_dir, database) as users:
            result = sync(users, cfg)
        _audit_users(data_dir, database, f"synced {url}: {result.summary()}")
    except SpoolvaultError as exc:
        _fail(str(exc))
    for line in result.skipped:
        err.print(f"skipped: {escape(line)}", highlight=False)
    out.print(f"synced {url}: {result.summary()}", highlight=False)


@user_app.command("delegate")
def user_delegate(
    owner: Annotated[str, typer.Argument(help="The user whose jobs others may release.")],
    to: Annotated[list[str] | None, typer.Option("--to", help="A user (repeat for more).")] = None,
    group: Annotated[
        list[str] | None, typer.Option("--group", help="A group (repeat for more).")
    ] = None,
    data_dir: DataDirOpt = DEFAULT_DATA_DIR,
    database: DatabaseOpt = None,
) -> None:
    """Let exactly these users and groups release OWNER's jobs (none given: nobody)."""
    try:
        with _users(data_dir, database) as users:
            info = users.set_delegates(owner, to or [], group or [])
        _audit_users(data_dir, database, f"{owner}: delegates")
    except SpoolvaultError as exc:
        _fail(str(exc))
    who = [*info.delegates, *(f"group {g}" for g in info.delegate_groups)]
    out.print(
        f"{owner}'s jobs may be released by: {', '.join(who) or 'only ' + owner}",
        highlight=False,
    )


# -- provider -------------------------------------------------------------------------


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
    from spoolvault.config import DataDir
    from spoolvault.db import Database, database_url
    from spoolvault.servers.provider import NAME_ENV, SECRET_ENV
    from spoolvault.servers.registry import add_provider

    try:
        data = DataDir.open(data_dir, create=False)
        with Database.open(database_url(database, data.database)) as db:
            if site is not None:
                server = site
                if site not in {srv.name for srv in db.servers()}:
                    db.add_server(site)
                    out.print(f"site server {site} registered", highlight=False)
            secret = add_provider(db, name, server, rotate=rotate)
    except SpoolvaultError as exc:
        _fail(str(exc))
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
    from spoolvault.config import DataDir
    from spoolvault.db import Database, database_url
    from spoolvault.servers.registry import is_available, list_providers, status_of

    try:
        data = DataDir.open(data_dir, create=False)
        with Database.open(database_url(database, data.database)) as db:
            providers = list_providers(db)
    except SpoolvaultError as exc:
        _fail(str(exc))
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

    from spoolvault.admin_cli import _actor, _queued_note, _services

    if printer is not None and cancel:
        _fail("give --printer or --cancel, not both")
    with _services(data_dir, database) as (rt, jobs, release):
        if printer is not None or cancel:
            asyncio.run(_drain(rt, jobs, release, printer, _actor()))
            _queued_note(jobs)
        try:
            remaining = _encrypted_held(rt)
        except SpoolvaultError as exc:
            _fail(str(exc))
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

    from spoolvault.util.threads import in_thread

    try:
        for job in await in_thread(_encrypted_held, rt):
            try:
                if printer is not None:
                    done = await release.release(job.id, printer, actor=actor, is_admin=True)
                    out.print(
                        f"job {job.id}: released to {printer} ({done.delivered.detail})",
                        highlight=False,
                    )
                else:
                    await in_thread(
                        functools.partial(
                            jobs.cancel,
                            job.id,
                            reason="cancelled before a downgrade (provider drain)",
                            actor=actor,
                        )
                    )
                    out.print(f"job {job.id}: cancelled", highlight=False)
            except SpoolvaultError as exc:
                err.print(f"job {job.id}: kept: {exc}", highlight=False, soft_wrap=True)
    finally:
        await release.drain()


def main() -> None:
    """Console-script entry point."""
    app()
