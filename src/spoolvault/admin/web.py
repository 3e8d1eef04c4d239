"""The admin web interface: server-rendered pages under ``/admin`` (docs/admin.md).

Options > General per server, printers, held jobs of everyone, users and cards, the audit
log (with a CSV export), server status, and the Print Archive for approved administrators.
The pages are a front end over the same services as the REST API: settings, printer and
user changes go through ``admin.actions`` (one audit event, whoever asked), releases
through ``ReleaseService``, cancels through ``JobService``, logins through
``IdentityService`` (lockout, ``auth.login`` events). This module has the routes, the
login and the status page; each area's pages are a module beside it (web_settings,
web_printers, web_jobs, web_users, web_audit, web_archive; web_common: what they share).

Security, as at the release station (the session and CSRF machinery is shared:
``spoolvault.web``): server-side sessions behind an ``HttpOnly``, ``SameSite=Strict``
cookie (``Secure`` over TLS, path ``/admin``) that end after ADMIN_IDLE_SECONDS without a
request and after ADMIN_MAX_SECONDS in any case; a CSRF token in every POST form; every
request re-checks that the user is still an enabled administrator. Secrets (passwords,
PINs, card numbers, SNMP communities) are write-only: no page ever shows them.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from spoolvault import __version__
from spoolvault.admin.web_archive import ArchivePages
from spoolvault.admin.web_audit import AuditPages
from spoolvault.admin.web_common import (
    ADMIN_IDLE_SECONDS,
    COOKIE_PATH,
    LOGIN_COOKIE,
    MAX_FORM_BYTES,
    SESSION_COOKIE,
    Form,
)
from spoolvault.admin.web_jobs import JobPages
from spoolvault.admin.web_printers import PrinterPages
from spoolvault.admin.web_settings import SettingsPages
from spoolvault.admin.web_users import UserPages
from spoolvault.audit import Action, AuditLog, Outcome
from spoolvault.db import JobState
from spoolvault.errors import AuthenticationFailed, DirectoryUnavailable, LockedOut
from spoolvault.identity import IdentityService
from spoolvault.jobs.release import ReleaseService
from spoolvault.jobs.service import JobService
from spoolvault.printers.registry import list_printers
from spoolvault.runtime import Runtime
from spoolvault.settings import PRINT_ARCHIVING, SPOOL_FILE_ENCRYPTION
from spoolvault.stations.web import printer_states
from spoolvault.util.threads import in_thread
from spoolvault.web.pages import form_field, size
from spoolvault.web.sessions import LoginTokens, WebSession

log = logging.getLogger(__name__)


class AdminPages(SettingsPages, PrinterPages, JobPages, UserPages, AuditPages, ArchivePages):
    """The admin web interface over the app's services: every area's pages, their routes."""

    def routes(self) -> list[BaseRoute]:
        """The routes to add to the application (static files first)."""
        page = self._page
        return [
            Route("/admin/-/{name}", self.static, methods=["GET"]),
            Route("/admin", self.home, methods=["GET"]),
            Route("/admin/login", self.login, methods=["GET", "POST"]),
            Route("/admin/logout", page(self.logout), methods=["POST"]),
            Route("/admin/status", page(self.status), methods=["GET"]),
            Route("/admin/servers", page(self.servers), methods=["GET"]),
            Route("/admin/servers/{server}/settings", page(self.settings), methods=["GET", "POST"]),
            Route("/admin/printers", page(self.printers), methods=["GET", "POST"]),
            Route("/admin/printers/{name}", page(self.printer), methods=["GET", "POST"]),
            Route("/admin/jobs", page(self.held_jobs), methods=["GET", "POST"]),
            Route("/admin/users", page(self.users), methods=["GET", "POST"]),
            Route("/admin/users/{name}", page(self.user), methods=["GET", "POST"]),
            Route("/admin/audit", page(self.audit_log), methods=["GET"]),
            Route("/admin/audit.csv", page(self.audit_csv), methods=["GET"]),
            Route("/admin/archive", page(self.archive), methods=["GET"]),
            Route("/admin/archive/{job_id:int}", page(self.archived), methods=["GET"]),
            Route("/admin/archive/{job_id:int}/preview.png", page(self.preview), methods=["GET"]),
            Route("/admin/archive/{job_id:int}/document", page(self.document), methods=["GET"]),
        ]

    # -- sessions ----------------------------------------------------------------------

    def _page(
        self, handler: Callable[[Request, WebSession, FormData | None], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        """Wrap a page: a live administrator's session, and for POST a form with its token."""

        async def endpoint(request: Request) -> Response:
            token = request.cookies.get(SESSION_COOKIE)
            session = self.sessions.get(token, idle=ADMIN_IDLE_SECONDS)
            if session is not None and not await in_thread(self.db.is_admin, session.user):
                self.sessions.close(session)  # demoted or disabled since logging in
                session = None
            if session is None:
                if request.method == "POST":
                    # Nothing is done; the login page says why.
                    return self._redirect("/admin/login?expired=1")
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                response = self._redirect("/admin/login?" + urlencode({"next": target}))
                if token:
                    response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH)
                return response
            if request.method != "POST":
                return await handler(request, session, None)
            length = request.headers.get("content-length", "")
            if not length.isdigit() or int(length) > MAX_FORM_BYTES:
                return self._error(session, 413, "Form too large", "That is not a form of ours.")
            async with request.form(max_files=0, max_fields=200, max_part_size=8192) as form:
                if not session.csrf_ok(form_field(form, "csrf")):
                    return self._error(
                        session,
                        403,
                        "This form has expired",
                        "The form you sent did not come from this admin page, or it is too "
                        "old (missing or wrong security token). Nothing was changed. Open the "
                        "page again and repeat the change.",
                    )
                return await handler(request, session, form)

        return endpoint

    async def home(self, request: Request) -> Response:
        return self._redirect("/admin/status")

    def _login_page(
        self, request: Request, *, error: str = "", notice: str = "", status: int = 200
    ) -> Response:
        nonce = request.cookies.get(LOGIN_COOKIE, "")
        fresh = not LoginTokens.usable_nonce(nonce)
        if fresh:
            nonce = LoginTokens.new_nonce()
        next_url = request.query_params.get("next", "")
        response = self._render(
            "login.html",
            status,
            csrf=self.login_tokens.token(nonce),
            error=error,
            login_notice=notice,
            notice=None,
            next=next_url if _local_admin_url(next_url) else "",
            user=None,
            nav="",
            archive_viewer=False,
        )
        if fresh:
            self._set_cookie(request, response, LOGIN_COOKIE, nonce)
        return response

    async def login(self, request: Request) -> Response:
        """GET: the login form; POST: log an administrator in (lockout by the identity service)."""
        if request.method == "GET":
            notice = ""
            if request.query_params.get("expired"):
                notice = "Your session ended (logged out, or idle too long). Log in again."
            elif request.query_params.get("logged_out"):
                notice = "You are logged out."
            return self._login_page(request, notice=notice)
        length = request.headers.get("content-length", "")
        if not length.isdigit() or int(length) > MAX_FORM_BYTES:
            return self._error(None, 413, "Form too large", "That is not a login form.")
        async with request.form(max_files=0, max_fields=10, max_part_size=4096) as form:
            nonce = request.cookies.get(LOGIN_COOKIE, "")
            if not self.login_tokens.check(nonce, form_field(form, "csrf")):
                return self._login_page(
                    request,
                    error="The login form expired (missing or wrong security token). Try again.",
                    status=403,
                )
            username = form_field(form, "username")[:255]
            password = form_field(form, "password")[:1024]
            next_url = form_field(form, "next")
        client = request.client.host if request.client else "unknown"
        try:
            user = await in_thread(
                lambda: self.identity.login_password(
                    username, password, station=f"admin web interface ({client})", client=client
                )
            )
        except AuthenticationFailed:
            return self._login_page(
                request, error="Login failed: unknown user or wrong password.", status=401
            )
        except DirectoryUnavailable as exc:
            return self._login_page(request, error=f"Login failed: {exc}.", status=503)
        except LockedOut as exc:
            response = self._login_page(
                request,
                error=f"Too many failed logins. Try again in {exc.retry_after} seconds.",
                status=429,
            )
            response.headers["Retry-After"] = str(exc.retry_after)
            return response
        if not await in_thread(self.db.is_admin, user):
            await self._record(
                user,
                Action.AUTH_LOGIN,
                outcome=Outcome.REFUSED,
                detail=f"admin web interface ({client}): not an administrator",
            )
            return self._login_page(
                request,
                error="This account is not an administrator. Users release their jobs at "
                "the release station (/release).",
                status=403,
            )
        session = self.sessions.open(user, is_admin=True, idle=ADMIN_IDLE_SECONDS)
        response = self._redirect(next_url if _local_admin_url(next_url) else "/admin/status")
        self._set_cookie(request, response, SESSION_COOKIE, session.token)
        return response

    async def logout(self, request: Request, session: WebSession, form: Form) -> Response:
        self.sessions.close(session)
        response = self._redirect("/admin/login?logged_out=1")
        response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH)
        return response

    # -- status ------------------------------------------------------------------------

    async def status(self, request: Request, session: WebSession, form: Form) -> Response:
        def gather() -> dict[str, Any]:
            rt = self.rt
            held = {True: [0, 0], False: [0, 0]}
            for job in self.jobs.list(states=(JobState.HELD, JobState.FAILED)):
                held[job.encrypted][0] += 1
                held[job.encrypted][1] += job.size
            spools = []
            for label, directory, (count, total) in (
                ("encrypted", rt.store.encrypted.directory, held[True]),
                ("plain", rt.store.plain.directory, held[False]),
            ):
                disk = shutil.disk_usage(directory)
                spools.append(
                    {
                        "label": label,
                        "path": str(directory),
                        "jobs": count,
                        "bytes": size(total),
                        "free": size(disk.free),
                        "disk": size(disk.total),
                    }
                )
            servers = [
                {
                    "name": s.name,
                    "kind": s.kind.value,
                    "encryption": bool(self.db.get_settings(s.name)[SPOOL_FILE_ENCRYPTION]),
                    "archiving": bool(self.db.get_settings(s.name)[PRINT_ARCHIVING]),
                }
                for s in self.db.servers()
            ]
            return {
                "version": __version__,
                "schema": self.db.schema_revision(),
                "key_id": rt.keys.current().id.hex(),
                "spools": spools,
                "servers": servers,
                "audit_status": self.audit.status if self.audit else "off",
                "audit_error": self.audit.error if self.audit else None,
                "data_dir": str(rt.data.root),
            }

        info = await in_thread(gather)
        printers = await in_thread(list_printers, self.db)
        states = await printer_states(self.release, printers)
        return await self._show(session, "status.html", "status", printers=states, **info)


# -- login redirects -------------------------------------------------------------------------


def _local_admin_url(url: str) -> bool:
    """Only our own admin pages are redirect targets after login (no open redirect)."""
    return url.startswith("/admin/") and not url.startswith("//") and "\\" not in url


def create_admin(
    rt: Runtime,
    jobs: JobService,
    release: ReleaseService,
    identity: IdentityService,
    audit: AuditLog | None,
    *,
    tls: bool = False,
) -> AdminPages:
    """The admin pages over the app's services (spoolvault.app adds their routes)."""
    return AdminPages(rt, jobs, release, identity, audit, tls=tls)
