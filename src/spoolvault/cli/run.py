"""``spoolvault run``: bind the listeners, then serve the application under uvicorn.

The sockets are bound before anything starts, so a busy port is a clear startup error
(exit 2), and a SIGTERM or SIGINT stops the server gracefully with exit 0.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import ssl
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from spoolvault import __version__
from spoolvault.cli.common import DEFAULT_DATA_DIR, DatabaseOpt, DataDirOpt, fail, out
from spoolvault.errors import OperatorError, SpoolvaultError
from spoolvault.netaddr import HostPort, parse_hostport

log = logging.getLogger("spoolvault")
ADMIN_PASSWORD_FILE = "initial-admin-password"  # noqa: S105 (a file name)


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
    """What `run` listens on and announces (docs/configuration.md)."""

    http: HostPort
    raw: HostPort | None
    lpd: HostPort | None
    tls: bool = False
    tls_cert: Path | None = None
    tls_key: Path | None = None
    dnssd: bool = True


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
        fail(str(exc))


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

    from spoolvault.app import Sockets, create_app
    from spoolvault.runtime import Runtime
    from spoolvault.servers.provider import ProviderIdentity
    from spoolvault.tls import server_certificate

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
            # Shown once, on the first start only; only its argon2id hash is stored. Not
            # into a log (systemd's journal, a redirected file): a 0600 file instead.
            if sys.stdout.isatty():
                out.print(f"admin password (shown once): {generated}", highlight=False)
            else:
                from spoolvault.util.fs import create_exclusive

                path = rt.data.root / ADMIN_PASSWORD_FILE
                create_exclusive(path, f"{generated}\n".encode(), mode=0o600)
                out.print(
                    f"admin password written to {path} (mode 0600): read it, then delete it",
                    highlight=False,
                )
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
