"""The one ASGI application behind ``--http``: IPP, health, the release station pages, REST.

The composition root: it opens the services (jobs, release, identity, audit) over a runtime
and hands them to every front end (IPP intake, REST API, release stations, admin pages,
print-provider link); `spoolvault run` (cli/run.py) serves what it builds.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import html
import ipaddress
import logging
import re
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from spoolvault import __version__
from spoolvault.admin.web import create_admin
from spoolvault.api.app import create_api
from spoolvault.archive import Archive, archive_dir
from spoolvault.audit import SYSTEM, Action, AuditLog, audit_path
from spoolvault.errors import SpoolvaultError
from spoolvault.identity import IdentityService, open_card_key
from spoolvault.identity.ldap import config_from_settings
from spoolvault.intake.ipp import IppServer
from spoolvault.ipp.attributes import MULTIPLE_OPERATION_TIME_OUT
from spoolvault.jobs.housekeeping import housekeeping
from spoolvault.jobs.release import ReleaseService
from spoolvault.jobs.reminders import Reminders
from spoolvault.jobs.service import JobService
from spoolvault.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from spoolvault.netaddr import HostPort
from spoolvault.runtime import Runtime
from spoolvault.servers.provider import ProviderIdentity, ProviderLink
from spoolvault.servers.registry import register_app, touch_app
from spoolvault.servers.remote import RemoteRelease
from spoolvault.servers.signing import AppKey
from spoolvault.settings import IPP_AUTHENTICATION_REQUIRED, MONITORING_PUBLIC, PUBLIC_URL
from spoolvault.stations.web import create_station
from spoolvault.util.threads import in_thread
from spoolvault.web.hold import hold_routes
from spoolvault.web.hosts import HostGuard, own_names, parse_aliases

APP_TOUCH_SECONDS = 60.0  # keeps this application server's key in heartbeat answers
ROLES = ("all", "app", "provider")

log = logging.getLogger(__name__)


def _health(rt: Runtime, audit: AuditLog) -> dict[str, object]:
    """A cheap status summary: proves the database answers and the keys are readable.

    ``audit`` is ``error`` once an audit event could not be recorded (printing goes on; see
    docs/audit.md), with the reason in ``audit_error``.
    """
    settings = rt.db.get_settings("primary")
    body: dict[str, object] = {
        "status": "ok",
        "version": __version__,
        "schema_revision": rt.db.schema_revision(),
        "spool_file_encryption": settings["spool_file_encryption"],
        "current_key_id": rt.keys.current().id.hex(),
        "audit": audit.status,
    }
    if audit.error is not None:
        body["audit_error"] = audit.error
    return body


@dataclass(frozen=True)
class Sockets:
    """The listening sockets `spoolvault run` bound before starting (clear errors early)."""

    http: socket.socket
    raw: socket.socket | None = None
    lpd: socket.socket | None = None

    def address(self, name: str) -> HostPort:
        sock = getattr(self, name)
        host, port = sock.getsockname()[:2]
        return HostPort(host, port)


def create_app(
    rt: Runtime,
    *,
    sockets: Sockets | None = None,
    dnssd: bool = False,
    tls: bool = False,
    role: str = "all",
    provider: ProviderIdentity | None = None,
) -> ASGIApp:
    """Build the ASGI app over an opened runtime; its lifespan runs the other listeners.

    ``role`` (docs/deployment.md): ``all`` is application server and print provider in
    one; ``app`` has no intake (IPP, raw, LPD) and hands releases to providers;
    ``provider`` takes jobs and releases them when an application server asks, and
    reports to the one ``provider`` names. ``all`` with ``provider`` is a site server: it
    releases its own jobs by itself, and reports them to the primary as a provider does.
    """
    if role not in ROLES:
        raise ValueError(f"role {role!r}: one of {', '.join(ROLES)}")
    if role == "provider" and provider is None:
        raise ValueError("role provider needs a provider identity")
    if role == "app" and provider is not None:
        raise ValueError("an application server does not report to another")
    audit = AuditLog.open(audit_path(rt.data.root), rt.db)
    limits = rt.data.limits
    jobs = JobService(rt.db, rt.store, audit=audit, max_job_size=limits.max_job_size)
    jobs.archive = Archive(archive_dir(rt.data.root), rt.db)
    release = ReleaseService(jobs)
    card_key = open_card_key(rt.data.root, rt.db)
    identity = IdentityService(rt.db, card_key, audit=audit)
    identity.directory = lambda: config_from_settings(jobs.settings())
    reminders = Reminders(jobs, card_key)
    ipp = IppServer(rt, jobs, identity, release=release)
    me = register_app(rt.db) if role != "provider" else None
    if me is not None:
        # Jobs held on print providers: every front end (release stations, MFDs, Fast
        # Release, IPP) releases and cancels them through the provider that holds them.
        remote = RemoteRelease(jobs, me)
        release.remote = remote
        jobs.forward_cancel = remote.cancel_blocking
    api = create_api(jobs, release, identity, providers=me is not None)
    # Release stations belong to the application server (all-in-one or app role).
    station = create_station(jobs, release, identity=identity, tls=tls) if me else None
    # So does the admin web interface.
    admin = create_admin(rt, jobs, release, identity, audit, tls=tls) if me else None
    link: ProviderLink | None = None
    if provider is not None:
        url = provider.url
        if url is None and sockets is not None:
            url = sockets.address("http").url("https" if tls else "http")
        link = ProviderLink(provider, jobs, release, url=url)
        jobs.on_submit = link.wake
    intake = role != "app"

    async def monitoring_allowed(request: Request) -> bool:
        """monitoring_public, a loopback client, or an administrator (HTTP Basic)."""
        values = jobs.cached_settings()
        if values is None:
            values = await in_thread(jobs.settings)
        if values.get(MONITORING_PUBLIC):
            return True
        client = request.client.host if request.client else ""
        with contextlib.suppress(ValueError):
            address = ipaddress.ip_address(client.split("%", 1)[0])
            mapped = getattr(address, "ipv4_mapped", None)
            if address.is_loopback or (mapped is not None and mapped.is_loopback):
                return True
        user, admin = await ipp.authenticated(request)
        return user is not None and admin

    async def metrics(request: Request) -> Response:
        if not await monitoring_allowed(request):
            return PlainTextResponse(
                "Unauthorized\n", 401, headers={"WWW-Authenticate": 'Basic realm="spoolvault"'}
            )
        body = await in_thread(jobs.metrics.exposition)
        return Response(body, media_type=METRICS_CONTENT_TYPE)

    async def health(request: Request) -> Response:
        try:
            body = await in_thread(_health, rt, audit)
        except SpoolvaultError as exc:
            if not await monitoring_allowed(request):
                return JSONResponse({"status": "error"}, status_code=503)
            return JSONResponse({"status": "error", "detail": str(exc)}, status_code=503)
        if not await monitoring_allowed(request):
            return JSONResponse({"status": body["status"]})
        return JSONResponse(body)

    async def home(request: Request) -> Response:
        body = await in_thread(_health, rt, audit)
        if not await monitoring_allowed(request):
            body = {"status": body["status"]}
        rows = "".join(
            f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
            for k, v in body.items()
        )
        return HTMLResponse(
            "<!doctype html><html lang=en><head><meta charset=utf-8>"
            "<meta name=viewport content='width=device-width'>"
            "<title>spoolvault</title></head><body><h1>spoolvault</h1>"
            f"<table>{rows}</table></body></html>"
        )

    async def queue_page(request: Request) -> Response:
        """printer-more-info of a queue: what it is and how to print to it."""
        name = html.escape(request.path_params["queue"])
        scheme = "ipps" if request.url.scheme == "https" else "ipp"
        uri = html.escape(
            f"{scheme}://{request.url.netloc}/printers/{request.path_params['queue']}"
        )
        return HTMLResponse(
            "<!doctype html><html lang=en><head><meta charset=utf-8>"
            "<meta name=viewport content='width=device-width'>"
            f"<title>{name} - spoolvault</title></head><body><h1>{name}</h1>"
            f"<p>Print to <code>{uri}</code>. Your jobs are held, encrypted, until you "
            "release them at a printer.</p></body></html>"
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        interrupted = await in_thread(release.recover_interrupted)
        recovered = list(rt.recovered)
        if interrupted:
            log.warning(
                "%d jobs were being sent when the server stopped; kept as failed "
                "(they may have printed)",
                interrupted,
            )
            recovered.append(
                f"{interrupted} jobs being released when the server stopped kept as failed"
            )
        if recovered:
            await in_thread(
                functools.partial(
                    jobs.record_event, SYSTEM, Action.SERVER_RECOVERED, detail="; ".join(recovered)
                )
            )
        tasks = []
        if intake:
            tasks.append(
                asyncio.create_task(
                    housekeeping(
                        jobs,
                        incoming_timeout=timedelta(seconds=MULTIPLE_OPERATION_TIME_OUT),
                        send_reminders=reminders.send_due,
                    )
                )
            )
        if link is not None:
            tasks.append(asyncio.create_task(link.run()))
        if me is not None:
            tasks.append(asyncio.create_task(_keep_key(rt, me)))
        servers: list[asyncio.AbstractServer] = []
        advertiser = None
        try:
            if intake and sockets is not None and sockets.raw is not None:
                from spoolvault.intake.raw import RawLimits, serve_raw

                servers.append(
                    await serve_raw(
                        jobs,
                        sockets.raw,
                        limits=RawLimits(
                            idle_timeout=limits.intake_idle_timeout,
                            max_connections=limits.intake_max_connections,
                            evict_after=limits.intake_evict_after,
                        ),
                    )
                )
            if intake and sockets is not None and sockets.lpd is not None:
                from spoolvault.intake.lpd import LpdLimits, serve_lpd

                servers.append(
                    await serve_lpd(
                        jobs,
                        sockets.lpd,
                        limits=LpdLimits(
                            idle_timeout=limits.intake_idle_timeout,
                            max_connections=limits.intake_max_connections,
                            evict_after=limits.intake_evict_after,
                        ),
                    )
                )
            if intake and dnssd and sockets is not None:
                from spoolvault.discovery.dnssd import Advertiser

                http = sockets.address("http")
                try:  # the TXT key air (read once: a change shows at the next start)
                    auth = bool((await in_thread(jobs.settings))[IPP_AUTHENTICATION_REQUIRED])
                except Exception as exc:
                    log.warning("DNS-SD: settings unreadable (%s): advertised without air", exc)
                    auth = False
                advertiser = Advertiser(
                    queues=list(ipp.queues.values()),
                    port=http.port,
                    tls=tls,
                    host=http.host,
                    auth=auth,
                )
                await advertiser.start()
            yield
        finally:
            if advertiser is not None:
                await advertiser.close()
            for server in servers:
                server.close()
            for server in servers:
                # A document already received finishes its commit; others are discarded.
                await server.wait_closed()
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            # Jobs being recorded get their audit lines before the log closes.
            await in_thread(jobs.drain)
            await in_thread(audit.close)

    ipp_post = ipp.http_post
    routes: list[BaseRoute] = [
        Route("/", home, methods=["GET"]),
        Route("/healthz", health),
        Route("/api/v1/health", health),
        Route("/metrics", metrics),
    ]
    if intake:
        routes += [
            Route("/", ipp_post, methods=["POST"]),
            *hold_routes(jobs, card_key),
            Route("/ipp/print", ipp_post, methods=["POST"]),
            Route("/ipp/print/{queue}", ipp_post, methods=["POST"]),
            Route("/printers/{queue}", ipp_post, methods=["POST"]),
            Route("/printers/{queue}", queue_page, methods=["GET"]),
            Route("/jobs", ipp_post, methods=["POST"]),
            Route("/jobs/{job_id}", ipp_post, methods=["POST"]),
        ]
    if station is not None:
        routes += station.routes()
    if admin is not None:
        routes += admin.routes()
    if link is not None:
        routes += link.routes()
    routes.append(Mount("/api/v1", app=api))
    app = Starlette(routes=routes, lifespan=lifespan)
    front: ASGIApp = IppFront(app, ipp) if intake else app
    conf = rt.data.conf.values
    names = own_names(
        [*parse_aliases(conf.get("ServerAlias", "")), *parse_aliases(conf.get("ProviderURL", ""))]
    )

    def public_names() -> list[str]:
        values = jobs.cached_settings() or {}
        return parse_aliases(str(values.get(PUBLIC_URL) or ""))

    return HostGuard(front, names, public_names)


# The paths the IPP routes above take POSTs on, with or without a trailing slash: CUPS's
# cancel POSTs to "/jobs/", and a redirect (Starlette's answer) makes it loop for ever.
_IPP_PATHS = re.compile(r"/|(?:/ipp/print(?:/[^/]+)?|/printers/[^/]+|/jobs(?:/[^/]+)?)/?")


class IppFront:
    """IPP requests straight to the IPP server, everything else to the app.

    A POST to an IPP path skips Starlette's middleware and router, which took about a
    fifth of the server's CPU per IPP job (bench/intake.py); the routes above stay for
    the app's own use and serve the same handler.
    """

    def __init__(self, app: Starlette, ipp: IppServer) -> None:
        self.app = app
        self.ipp = ipp

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and _IPP_PATHS.fullmatch(scope["path"])
        ):
            response = await self.ipp.http_post(Request(scope, receive))
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


async def _keep_key(rt: Runtime, me: AppKey) -> None:
    while True:
        await asyncio.sleep(APP_TOUCH_SECONDS)
        try:
            await in_thread(touch_app, rt.db, me)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("could not refresh this application server's key")
