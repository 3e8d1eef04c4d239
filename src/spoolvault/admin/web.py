"""The admin web interface: server-rendered pages under ``/admin`` (docs/admin.md).

Options > General per server, printers, held jobs of everyone, users and cards, the audit
log (with a CSV export), server status, and the Print Archive for approved administrators.
The pages are a front end over the same services as the REST API: settings, printer and
user changes go through ``admin.actions`` (one audit event, whoever asked), releases
through ``ReleaseService``, cancels through ``JobService``, logins through
``IdentityService`` (lockout, ``auth.login`` events).

Security, as at the release station (the session and CSRF machinery is shared:
``spoolvault.web``): server-side sessions behind an ``HttpOnly``, ``SameSite=Strict``
cookie (``Secure`` over TLS, path ``/admin``) that end after ADMIN_IDLE_SECONDS without a
request and after ADMIN_MAX_SECONDS in any case; a CSRF token in every POST form; every
request re-checks that the user is still an enabled administrator. Secrets (passwords,
PINs, card numbers, SNMP communities) are write-only: no page ever shows them.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import re
import shutil
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from spoolvault import __version__
from spoolvault.admin import actions
from spoolvault.archive import NoPreview, NotArchived, download_name, viewers
from spoolvault.audit import Action, AuditLog, Event, Outcome, list_events
from spoolvault.db import Job, JobState, PrinterMode
from spoolvault.errors import AuthenticationFailed, ClientError, LockedOut, Refused, SpoolvaultError
from spoolvault.identity import IdentityService, UserInfo
from spoolvault.jobs.release import PrinterBlocked, ReleaseFailed, ReleaseService
from spoolvault.jobs.service import JobNotFound, JobService
from spoolvault.printers.registry import find_printer, list_printers
from spoolvault.runtime import Runtime
from spoolvault.settings import (
    HIDDEN_TITLE,
    HIDE_DOCUMENT_NAMES,
    PRINT_ARCHIVE_VIEWERS,
    PRINT_ARCHIVING,
    SETTINGS,
    SPOOL_FILE_ENCRYPTION,
    InvalidSetting,
    SettingsConflict,
)
from spoolvault.stations.web import printer_states
from spoolvault.util.threads import in_thread
from spoolvault.web.pages import SECURITY_HEADERS, PageSet, form_field, size
from spoolvault.web.sessions import LoginTokens, SessionStore, WebSession

log = logging.getLogger(__name__)

Form = FormData | None  # a page handler's form: None for GET

SESSION_COOKIE = "spoolvault_admin"
LOGIN_COOKIE = "spoolvault_admin_login"
COOKIE_PATH = "/admin"
ADMIN_IDLE_SECONDS = 15 * 60  # an administrator's session ends after this without a request
ADMIN_MAX_SECONDS = 8 * 60 * 60  # and after a working day in any case
MAX_FORM_BYTES = 32 * 1024
MAX_LISTED = 500  # jobs on one page
AUDIT_PAGE = 100
AUDIT_EXPORT_MAX = 100_000
PREVIEW_CACHE = 16  # rendered first pages kept in memory (the page and its <img> ask twice)
_HERE = Path(__file__).parent
_STATIC = {"admin.css": "text/css", "admin.js": "text/javascript"}
_TITLE_IN_DETAIL = re.compile(r"title (?:'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")")

EXCLUSION_REASON = (
    "Print Archiving keeps a readable copy of every printed document, so it needs "
    "unencrypted spool files: it cannot be on together with Spool File Encryption."
)
APPLIES_TO_NEW_JOBS = (
    "Saved settings apply to new jobs: jobs already held keep their format and stay releasable."
)
FAST_RELEASE_NOTE = (
    "Fast Release terminals cannot block: a card tap releases all of the user's jobs at "
    "once, whatever the printer's state."
)
# String settings whose names say they hold a secret (the audit log's rule) are
# write-only on the page, like passwords.
SECRET_SETTINGS = frozenset(s.name for s in SETTINGS if s.type is str and actions.is_secret(s.name))
MODES = {
    PrinterMode.HOLD.value: "hold: jobs wait until their owner releases them",
    PrinterMode.ADMIN_RELEASE.value: "admin-release: only an administrator releases jobs",
    PrinterMode.DIRECT.value: "direct: jobs print at once, without holding",
}


@dataclass
class Notice:
    """One message for the next page (post/redirect/get)."""

    text: str
    ok: bool = True


def hide_titles(detail: str) -> str:
    """An audit detail with the document names it quotes replaced by (hidden)."""
    return _TITLE_IN_DETAIL.sub(f"title {HIDDEN_TITLE}", detail)


def _names(text: str) -> list[str]:
    """Comma- or space-separated names, in order, without repeats."""
    seen: dict[str, None] = {}
    for name in re.split(r"[,\s]+", text):
        if name:
            seen[name] = None
    return list(seen)


def _when(at: datetime | None) -> str:
    return "" if at is None else at.astimezone().strftime("%Y-%m-%d %H:%M")


class AdminPages(PageSet):
    """The admin web interface over the app's services."""

    def __init__(
        self,
        rt: Runtime,
        jobs: JobService,
        release: ReleaseService,
        identity: IdentityService,
        audit: AuditLog | None,
        *,
        tls: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rt = rt
        self.jobs = jobs
        self.release = release
        self.identity = identity
        self.audit = audit
        self.db = jobs.db
        super().__init__(_HERE, _STATIC, tls=tls, cookie_path=COOKIE_PATH)
        self.sessions = SessionStore(clock, max_age=ADMIN_MAX_SECONDS)
        self.login_tokens = LoginTokens()
        self._previews: OrderedDict[int, bytes] = OrderedDict()

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

    # -- responses ---------------------------------------------------------------------

    async def _context(self, session: WebSession, nav: str) -> dict[str, Any]:
        """What every page's frame needs."""
        notice, session.flash = session.flash, None
        allowed = await self._archive_allowed(session.user)
        return {
            "user": session.user,
            "csrf": session.csrf,
            "nav": nav,
            "archive_viewer": allowed,
            "notice": notice,
        }

    async def _show(
        self, session: WebSession, template: str, nav: str, status: int = 200, **context: Any
    ) -> HTMLResponse:
        frame = await self._context(session, nav)
        return self._render(template, status, **frame, **context)

    def _error(
        self, session: WebSession | None, status: int, title: str, message: str
    ) -> HTMLResponse:
        return self._render(
            "error.html",
            status,
            title=title,
            message=message,
            user=session.user if session else None,
            csrf=session.csrf if session else "",
            nav="",
            archive_viewer=False,
            notice=None,
        )

    async def _record(self, actor: str, action: Action, **details: Any) -> None:
        await in_thread(lambda: self.jobs.record_event(actor, action, **details))

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

    # -- settings ----------------------------------------------------------------------

    async def servers(self, request: Request, session: WebSession, form: Form) -> Response:
        servers = await in_thread(self.db.servers)
        return await self._show(session, "servers.html", "settings", servers=servers)

    async def settings(self, request: Request, session: WebSession, form: Form) -> Response:
        """Options > General of one server: every setting of the SETTINGS table."""
        server = request.path_params["server"]
        known = [s.name for s in await in_thread(self.db.servers)]
        if server not in known:
            return self._error(session, 404, "No such server", f"There is no server {server!r}.")
        current = await in_thread(self.db.get_settings, server)
        if form is None:
            return await self._settings_page(session, server, known, current)
        new: dict[str, Any] = {}
        problems: list[str] = []
        for setting in SETTINGS:
            if setting.type is bool:
                new[setting.name] = "true" in form.getlist(setting.name)
                continue
            text = form_field(form, setting.name)
            if setting.name in SECRET_SETTINGS and not text:
                new[setting.name] = current.get(setting.name)  # write-only: empty keeps it
                continue
            try:
                new[setting.name] = setting.parse(text) if setting.type is int else text.strip()
            except InvalidSetting as exc:
                problems.append(f"{setting.label}: {exc}")
        if problems:
            return await self._settings_page(
                session, server, known, current, error="; ".join(problems), status=422
            )
        changes = {k: v for k, v in new.items() if v != current.get(k)}
        if not changes:
            session.flash = Notice("Nothing changed.")
            return self._redirect(request.url.path)
        try:
            await in_thread(actions.change_settings, self.jobs, session.user, server, changes)
        except SettingsConflict as exc:
            return await self._settings_page(
                session, server, known, current, error=f"Not saved: {exc}", status=409
            )
        except Refused as exc:
            return await self._settings_page(
                session, server, known, current, error=f"Not saved: {exc}", status=422
            )
        labels = ", ".join(s.label for s in SETTINGS if s.name in changes)
        session.flash = Notice(f"Saved: {labels}. {APPLIES_TO_NEW_JOBS}")
        return self._redirect(request.url.path)

    async def _settings_page(
        self,
        session: WebSession,
        server: str,
        servers: list[str],
        current: Mapping[str, Any],
        *,
        error: str = "",
        status: int = 200,
    ) -> Response:
        # The box that would conflict with the one that is on is disabled, with the reason.
        blocked: dict[str, str] = {}
        if current[SPOOL_FILE_ENCRYPTION]:
            blocked[PRINT_ARCHIVING] = (
                "Disabled because Spool File Encryption is on. "
                + EXCLUSION_REASON
                + " Turn encryption off and save first."
            )
        elif current[PRINT_ARCHIVING]:
            blocked[SPOOL_FILE_ENCRYPTION] = (
                "Disabled because Print Archiving is on. "
                + EXCLUSION_REASON
                + " Turn archiving off and save first."
            )
        return await self._show(
            session,
            "settings.html",
            "settings",
            status,
            server=server,
            servers=servers,
            settings=SETTINGS,
            values=current,
            blocked=blocked,
            error=error,
            exclusion=EXCLUSION_REASON,
            applies=APPLIES_TO_NEW_JOBS,
            secret=SECRET_SETTINGS,
        )

    # -- printers ----------------------------------------------------------------------

    async def printers(self, request: Request, session: WebSession, form: Form) -> Response:
        """The printers with their health; POST adds one."""
        error = ""
        entered: dict[str, str] = {}
        if form is not None:
            entered = {k: form_field(form, k) for k in _PRINTER_FIELDS if k != "snmp_community"}
            try:
                fields = _printer_fields(form, adding=True)
                printer = await in_thread(actions.add_printer, self.jobs, session.user, fields)
            except Refused as exc:
                error = f"Not added: {exc}"
            else:
                session.flash = Notice(
                    f"Printer {printer.name} added; its queue is /printers/{printer.name}."
                )
                return self._redirect("/admin/printers")
        printers = await in_thread(list_printers, self.db)
        states = {s.name: s for s in await printer_states(self.release, printers)}
        return await self._show(
            session,
            "printers.html",
            "printers",
            422 if error else 200,
            printers=printers,
            states=states,
            modes=MODES,
            error=error,
            entered=entered,
            fast_note=FAST_RELEASE_NOTE,
        )

    async def printer(self, request: Request, session: WebSession, form: Form) -> Response:
        """One printer's settings; POST changes or removes it."""
        name = request.path_params["name"]
        printer = await in_thread(find_printer, self.db, name)
        if printer is None:
            return self._error(session, 404, "No such printer", f"There is no printer {name!r}.")
        error = ""
        if form is not None:
            try:
                if form_field(form, "do") == "remove":
                    await in_thread(actions.remove_printer, self.jobs, session.user, name)
                    session.flash = Notice(f"Printer {name} removed.")
                    return self._redirect("/admin/printers")
                fields = _printer_fields(form, adding=False)
                changes = {k: v for k, v in fields.items() if getattr(printer, k) != v}
                if changes:
                    await in_thread(actions.change_printer, self.jobs, session.user, name, changes)
                    session.flash = Notice(f"Printer {name} saved.")
                else:
                    session.flash = Notice("Nothing changed.")
                return self._redirect(f"/admin/printers/{quote(name)}")
            except Refused as exc:
                error = f"Not saved: {exc}"
        [state] = await printer_states(self.release, [printer])
        return await self._show(
            session,
            "printer.html",
            "printers",
            422 if error else 200,
            printer=printer,
            state=state,
            modes=MODES,
            error=error,
            fast_note=FAST_RELEASE_NOTE,
        )

    # -- held jobs ---------------------------------------------------------------------

    async def held_jobs(self, request: Request, session: WebSession, form: Form) -> Response:
        """Everyone's held and failed jobs; POST releases one to a printer or cancels it."""
        owner = request.query_params.get("owner", "").strip() or None
        here = "/admin/jobs" + (f"?{urlencode({'owner': owner})}" if owner else "")
        if form is not None:
            action, _, job_text = form_field(form, "do").partition(":")
            if not job_text.isdigit() or len(job_text) > 12:
                return self._error(session, 400, "Unknown form", "That is not a form of ours.")
            job_id = int(job_text)
            if action == "release":
                target = form_field(form, f"printer-{job_id}")
                session.flash = await self._release(session.user, job_id, target)
            elif action == "cancel":
                session.flash = await self._cancel(session.user, job_id)
            return self._redirect(here)
        found = await in_thread(
            lambda: actions.list_jobs(
                self.jobs,
                session.user,
                "admin web interface",
                what="held jobs",
                owner=owner,
                states=(JobState.HELD, JobState.FAILED),
                limit=MAX_LISTED,
            )
        )
        hide = bool((await in_thread(self.jobs.settings))[HIDE_DOCUMENT_NAMES])
        timeouts = await in_thread(self.jobs.hold_timeouts)
        rows = [
            {
                "id": j.id,
                "owner": j.owner,
                "title": HIDDEN_TITLE if hide and j.title else (j.title or f"job {j.id}"),
                "queue": j.queue,
                "state": j.state.value,
                "reason": j.state_reason or "",
                "size": size(j.size),
                "pages": j.pages,
                "encrypted": j.encrypted,
                "submitted": _when(j.created_at),
                "expires": _when(self.jobs.expires_at(j, timeouts))
                if j.state is JobState.HELD
                else "",
                "default_printer": None if j.queue == "secure" else j.queue,
            }
            for j in found
        ]
        printers = [p.name for p in await in_thread(list_printers, self.db)]
        return await self._show(
            session,
            "jobs.html",
            "jobs",
            jobs=rows,
            printers=printers,
            owner=owner or "",
            truncated=len(found) >= MAX_LISTED,
        )

    async def _release(self, actor: str, job_id: int, target: str) -> Notice:
        if not target:
            return Notice(f"Job {job_id}: choose a printer first.", ok=False)
        try:
            done = await actions.release_job(self.release, actor, job_id, target)
        except PrinterBlocked as exc:
            return Notice(
                f"Job {job_id} not sent, still held: {target} is in error ({exc.health.message}).",
                ok=False,
            )
        except ReleaseFailed as exc:
            return Notice(f"Job {job_id} not printed: {exc.reason}", ok=False)
        except SpoolvaultError as exc:
            return Notice(f"Job {job_id} not sent: {exc}", ok=False)
        said = done.delivered.printer_job_id
        return Notice(
            f"Job {job_id} sent to {target}" + (f" (printer job {said})." if said else ".")
        )

    async def _cancel(self, actor: str, job_id: int) -> Notice:
        where = "in the admin web interface"
        try:
            await in_thread(lambda: actions.cancel_job(self.jobs, actor, job_id, where=where))
        except Refused as exc:
            return Notice(f"Job {job_id} not cancelled: {exc}", ok=False)
        return Notice(f"Job {job_id} cancelled; its spool file is destroyed.")

    # -- users -------------------------------------------------------------------------

    async def users(self, request: Request, session: WebSession, form: Form) -> Response:
        """Users with what they have (never the secrets); POST adds one."""
        error = ""
        entered: dict[str, str] = {}
        if form is not None:
            username = form_field(form, "username").strip()
            entered = {k: form_field(form, k) for k in ("username", "full_name", "email")}
            fields: dict[str, Any] = {}
            for key in ("password", "card_number", "pin"):  # write-only
                if value := form_field(form, key):
                    fields[key] = value
            for key in ("full_name", "email"):
                if value := form_field(form, key).strip():
                    fields[key] = value
            if groups := _names(form_field(form, "groups")):
                fields["groups"] = groups
            if form_field(form, "is_admin") == "true":
                fields["is_admin"] = True
            try:
                await in_thread(
                    actions.add_user, self.jobs, self.identity.users, session.user, username, fields
                )
            except Refused as exc:
                error = f"Not added: {exc}"
            else:
                session.flash = Notice(f"User {username} added.")
                return self._redirect("/admin/users")
        found = await in_thread(self.identity.users.list)
        return await self._show(
            session,
            "users.html",
            "users",
            422 if error else 200,
            users=found,
            error=error,
            entered=entered,
        )

    async def user(self, request: Request, session: WebSession, form: Form) -> Response:
        """One user: card, PIN, password (write-only), details, groups, delegates."""
        name = request.path_params["name"]
        try:
            info = await in_thread(self.identity.users.info, name)
        except Refused:
            return self._error(session, 404, "No such user", f"There is no user {name!r}.")
        error = ""
        if form is not None:
            try:
                notice = await self._change_user(session, info, form)
            except Refused as exc:
                error = f"Not saved: {exc}"
            else:
                session.flash = Notice(notice)
                return self._redirect(f"/admin/users/{quote(name)}")
            info = await in_thread(self.identity.users.info, name)
        return await self._show(
            session, "user.html", "users", 422 if error else 200, info=info, error=error
        )

    async def _change_user(self, session: WebSession, info: UserInfo, form: FormData) -> str:
        fields: dict[str, Any] = {}
        for key in ("password", "card_number", "pin"):  # write-only: empty keeps
            if value := form_field(form, key):
                fields[key] = value
        if form_field(form, "clear_card") == "true":
            fields["card_number"] = None
        if form_field(form, "clear_pin") == "true":
            fields["pin"] = None
        for key in ("full_name", "email", "id_number"):
            text: str | None = form_field(form, key).strip() or None
            if text != getattr(info, key):
                fields[key] = text
        groups = _names(form_field(form, "groups"))
        if groups != info.groups:
            fields["groups"] = groups
        for key in ("is_admin", "disabled"):
            flag = form_field(form, key) == "true"
            if flag != getattr(info, key):
                fields[key] = flag
        if info.username == session.user and (
            fields.get("is_admin") is False or fields.get("disabled") is True
        ):
            raise ClientError(
                "you cannot take away your own administrator rights or disable yourself here "
                "(another administrator can)"
            )
        users, groups_ = (
            _names(form_field(form, "delegates")),
            _names(form_field(form, "delegate_groups")),
        )
        said = []
        if fields:
            await in_thread(
                actions.change_user,
                self.jobs,
                self.identity.users,
                session.user,
                info.username,
                fields,
            )
            said.append(actions.changed_fields(set(fields)))
        if users != info.delegates or groups_ != info.delegate_groups:
            await in_thread(
                actions.set_delegates,
                self.jobs,
                self.identity.users,
                session.user,
                info.username,
                users,
                groups_,
            )
            said.append("delegates")
        return f"User {info.username} saved: {', '.join(said)}." if said else "Nothing changed."

    # -- audit -------------------------------------------------------------------------

    def _audit_filters(self, request: Request) -> tuple[dict[str, Any], str]:
        q = request.query_params
        filters: dict[str, Any] = {}
        if actor := q.get("actor", "").strip():
            filters["actor"] = actor
        action = q.get("action", "").strip()
        if action:
            if action not in {a.value for a in Action}:
                return filters, f"unknown action {action!r}"
            filters["action"] = action
        job = q.get("job_id", "").strip()
        if job:
            if not job.isdigit() or len(job) > 12:
                return filters, f"job {job!r}: a job number"
            filters["job_id"] = int(job)
        return filters, ""

    async def _events(self, limit: int, before_id: int | None, **filters: Any) -> list[Event]:
        if self.audit is not None:
            await in_thread(self.audit.ingest_pending)  # queued by command-line tools
            await in_thread(self.audit.sync)
        return await in_thread(
            lambda: list_events(self.db, limit=limit, before_id=before_id, **filters)
        )

    async def audit_log(self, request: Request, session: WebSession, form: Form) -> Response:
        filters, error = self._audit_filters(request)
        before = request.query_params.get("before_id", "")
        before_id = int(before) if before.isdigit() and len(before) < 12 else None
        events = [] if error else await self._events(AUDIT_PAGE, before_id, **filters)
        await self._record(
            session.user,
            Action.ADMIN_VIEW,
            detail=f"admin web interface: audit log, {len(events)} events",
        )
        hide = bool((await in_thread(self.jobs.settings))[HIDE_DOCUMENT_NAMES])
        if hide:
            events = [_hidden(e) for e in events]
        query = {k: str(v) for k, v in filters.items()}
        older = (
            "/admin/audit?" + urlencode({**query, "before_id": events[-1].id})
            if len(events) == AUDIT_PAGE
            else ""
        )
        return await self._show(
            session,
            "audit.html",
            "audit",
            422 if error else 200,
            events=events,
            filters=query,
            actions=[a.value for a in Action],
            error=error,
            older=older,
            export="/admin/audit.csv" + (f"?{urlencode(query)}" if query else ""),
            hidden=hide,
        )

    async def audit_csv(self, request: Request, session: WebSession, form: Form) -> Response:
        """The filtered audit log as CSV (document names hidden with hide_document_names)."""
        filters, error = self._audit_filters(request)
        if error:
            return self._error(session, 422, "Cannot export", error)
        events = await self._events(AUDIT_EXPORT_MAX, None, **filters)
        hide = bool((await in_thread(self.jobs.settings))[HIDE_DOCUMENT_NAMES])
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(
            ["id", "at", "actor", "action", "job_id", "printer", "outcome", "detail", "hash"]
        )
        for e in events:
            e = _hidden(e) if hide else e
            writer.writerow(
                [
                    e.id,
                    e.at,
                    _cell(e.actor),
                    e.action,
                    "" if e.job_id is None else e.job_id,
                    _cell(e.printer or ""),
                    e.outcome,
                    _cell(e.detail),
                    e.hash,
                ]
            )
        await self._record(
            session.user,
            Action.ADMIN_VIEW,
            detail=f"admin web interface: audit export, {len(events)} events"
            + (" (document names hidden)" if hide else ""),
        )
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        return Response(
            out.getvalue(),
            media_type="text/csv; charset=utf-8",
            headers={
                **SECURITY_HEADERS,
                "Content-Disposition": f'attachment; filename="spoolvault-audit-{stamp}.csv"',
            },
        )

    # -- print archive -----------------------------------------------------------------

    async def _archive_allowed(self, user: str) -> bool:
        settings = await in_thread(self.db.get_settings)
        return user in viewers(str(settings[PRINT_ARCHIVE_VIEWERS]))

    async def _archive_refused(self, session: WebSession, job_id: int | None = None) -> Response:
        if await self._archive_allowed(session.user):
            if self.jobs.archive is None:
                return self._error(
                    session, 404, "No print archive", "This server keeps no print archive."
                )
            return self._error(
                session,
                404,
                "Not archived",
                f"Job {job_id} has no archived document (purged, never kept, or not printed).",
            )
        # The same event as the REST API's refusal.
        await self._record(
            session.user,
            Action.ARCHIVE_VIEW,
            outcome=Outcome.REFUSED,
            detail="not an approved administrator of the print archive",
        )
        return self._error(
            session,
            403,
            "Approved administrators only",
            "Only the administrators named in the setting 'Approved administrators (Print "
            "Archive)' (print_archive_viewers) may see the print archive.",
        )

    async def archive(self, request: Request, session: WebSession, form: Form) -> Response:
        """Archived documents, newest first, with filters."""
        archive = self.jobs.archive
        if archive is None or not await self._archive_allowed(session.user):
            return await self._archive_refused(session)
        q = request.query_params
        filters = {k: q.get(k, "").strip() for k in ("owner", "printer", "title", "since")}
        since: datetime | None = None
        error = ""
        if filters["since"]:
            try:
                since = datetime.fromisoformat(filters["since"])
                if since.tzinfo is None:
                    since = since.astimezone()  # the server's local time, as people mean it
            except ValueError:
                error = f"since {filters['since']!r}: a date such as 2026-11-24"
        found: list[Job] = []
        if not error:
            found = await in_thread(
                lambda: archive.list(
                    owner=filters["owner"] or None,
                    printer=filters["printer"] or None,
                    title=filters["title"] or None,
                    since=since,
                    limit=200,
                )
            )
        await self._record(
            session.user, Action.ARCHIVE_VIEW, detail=f"listed {len(found)} documents"
        )
        settings = await in_thread(self.db.get_settings)
        return await self._show(
            session,
            "archive.html",
            "archive",
            422 if error else 200,
            documents=[_archived_row(j) for j in found],
            filters=filters,
            error=error,
            archiving=bool(settings[PRINT_ARCHIVING]),
        )

    async def _archived_job(self, session: WebSession, job_id: int) -> Job | Response:
        archive = self.jobs.archive
        if archive is None or not await self._archive_allowed(session.user):
            return await self._archive_refused(session, job_id)
        try:
            job = await in_thread(self.jobs.get, job_id)
            await in_thread(archive.document, job)
        except (JobNotFound, NotArchived):
            await self._record(
                session.user,
                Action.ARCHIVE_VIEW,
                job_id=job_id,
                outcome=Outcome.REFUSED,
                detail="no archived document",
            )
            return await self._archive_refused(session, job_id)
        return job

    async def _preview(self, session: WebSession, job: Job) -> bytes:
        """The first page as PNG (rendered once, then kept briefly); NoPreview says why not."""
        cached = self._previews.get(job.id)
        if cached is not None:
            return cached
        archive = self.jobs.archive
        assert archive is not None
        try:
            png = await in_thread(archive.preview, job)
        except NoPreview as exc:
            await self._record(session.user, Action.ARCHIVE_VIEW, job_id=job.id, detail=str(exc))
            raise
        await self._record(
            session.user, Action.ARCHIVE_VIEW, job_id=job.id, detail="previewed the first page"
        )
        self._previews[job.id] = png
        while len(self._previews) > PREVIEW_CACHE:
            self._previews.popitem(last=False)
        return png

    async def archived(self, request: Request, session: WebSession, form: Form) -> Response:
        """One archived document: its metadata, first-page preview and download."""
        found = await self._archived_job(session, request.path_params["job_id"])
        if isinstance(found, Response):
            return found
        no_preview = ""
        try:
            await self._preview(session, found)
        except NoPreview as exc:
            no_preview = str(exc)
        return await self._show(
            session, "archived.html", "archive", doc=_archived_row(found), no_preview=no_preview
        )

    async def preview(self, request: Request, session: WebSession, form: Form) -> Response:
        found = await self._archived_job(session, request.path_params["job_id"])
        if isinstance(found, Response):
            return found
        try:
            png = await self._preview(session, found)
        except NoPreview as exc:
            return Response(str(exc), status_code=404, media_type="text/plain")
        self._previews.pop(found.id, None)  # shown: the next look renders (and audits) again
        return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})

    async def document(self, request: Request, session: WebSession, form: Form) -> Response:
        found = await self._archived_job(session, request.path_params["job_id"])
        if isinstance(found, Response):
            return found
        archive = self.jobs.archive
        assert archive is not None
        path = await in_thread(archive.document, found)
        await self._record(
            session.user, Action.ARCHIVE_VIEW, job_id=found.id, detail="downloaded the document"
        )
        return FileResponse(
            path,
            media_type=found.document_format,
            filename=download_name(found),
            headers={"Cache-Control": "no-store"},
        )


# -- forms and rows -------------------------------------------------------------------------

_PRINTER_FIELDS = (
    "name",
    "uri",
    "mode",
    "group",
    "snmp_community",
    "snmp_host",
    "snmp_port",
    "hold_timeout_minutes",
)


def _optional_int(form: FormData, name: str, label: str) -> int | None:
    text = form_field(form, name).strip()
    if not text:
        return None
    if not text.isdigit() or len(text) > 9:
        raise ClientError(f"{label}: a whole number, not {text!r}")
    return int(text)


def _printer_fields(form: FormData, *, adding: bool) -> dict[str, Any]:
    """A printer form's values as the registry takes them (blank: the default)."""
    fields: dict[str, Any] = {
        "uri": form_field(form, "uri").strip(),
        "mode": form_field(form, "mode") or PrinterMode.HOLD.value,
        "group": form_field(form, "group").strip() or "default",
        "block_release_on_error": form_field(form, "block_release_on_error") == "true",
        "snmp_host": form_field(form, "snmp_host").strip() or None,
        "snmp_port": _optional_int(form, "snmp_port", "SNMP port"),
        "hold_timeout_minutes": _optional_int(form, "hold_timeout_minutes", "Hold timeout"),
    }
    community = form_field(form, "snmp_community")  # write-only: empty keeps it
    if adding:
        fields["name"] = form_field(form, "name").strip()
        fields["snmp_community"] = community or None
    elif form_field(form, "clear_snmp_community") == "true":
        fields["snmp_community"] = None
    elif community:
        fields["snmp_community"] = community
    return fields


def _archived_row(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "owner": job.owner,
        "title": job.title or f"job {job.id}",
        "queue": job.queue,
        "printer": job.printer or "",
        "size": size(job.size),
        "pages": job.pages,
        "format": job.document_format,
        "submitted": _when(job.created_at),
        "printed": _when(job.completed_at),
    }


def _hidden(event: Event) -> Event:
    return dataclasses.replace(event, detail=hide_titles(event.detail))


def _cell(text: str) -> str:
    """A CSV cell a spreadsheet will not run as a formula (names come from clients)."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


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
