"""The Standard Release Station: web pages at ``/release`` and ``/release/<printer>``.

A kiosk beside a printer (``/release/<printer>``) or a phone anywhere (``/release``, which
lets the user choose the printer). Server-rendered with Jinja2; one small script does the
idle logout and nothing else, so the pages work without it (docs/release-station.md).

Security, in the order a request meets it:

- **Sessions are server-side**: the cookie holds only a random token (``HttpOnly``,
  ``SameSite=Strict``, ``Secure`` over TLS, path ``/release``). A session ends after
  ``release_station_idle_seconds`` without a request, and after SESSION_MAX_SECONDS
  whatever happens; logging in always starts a new one (no fixation).
- **CSRF**: every POST form carries a token. Logged in, it is the session's own random
  token; on the login form it is an HMAC of a per-browser nonce cookie with a per-process
  secret, so a login cannot be forced from another site either. A missing or wrong token
  is a 403 page that says what to do.
- **No user enumeration**: one message for an unknown user or card and a wrong password
  or PIN. Lockout after repeated failures comes from the identity service (429).
- **Audit**: logins (ok and refused) by the identity service; every release attempt by
  ``ReleaseService``, including attempts on jobs the user may not see; cancels by
  ``JobService``; manager-mode views as ``admin.view``.
- Pages are ``Cache-Control: no-store`` (the back button after a logout on a kiosk must
  not show the last user's jobs), framed by nobody, and scripts come only from here.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from spoolvault.audit import Action, Outcome
from spoolvault.db import Job, JobState, Printer
from spoolvault.db.models import utcnow
from spoolvault.errors import (
    AuthenticationFailed,
    ClientError,
    DirectoryUnavailable,
    LockedOut,
    Refused,
    SpoolvaultError,
)
from spoolvault.identity import IdentityService
from spoolvault.jobs.errors import JobNotFound
from spoolvault.jobs.release import (
    FIND_ME_QUEUES,
    PrinterBlocked,
    ReleaseFailed,
    ReleaseService,
)
from spoolvault.jobs.service import JobService
from spoolvault.printers.health import Health
from spoolvault.printers.registry import find_printer, list_printers
from spoolvault.settings import (
    HIDDEN_TITLE,
    HIDE_DOCUMENT_NAMES,
    RELEASE_STATION_CARD_PIN,
    RELEASE_STATION_IDLE_SECONDS,
)
from spoolvault.stations.access import accessible_job
from spoolvault.util.threads import in_thread
from spoolvault.web.pages import PageSet, form_field, size
from spoolvault.web.sessions import (
    SESSION_MAX_SECONDS,
    LoginTokens,
    SessionStore,
    WebSession,
)

log = logging.getLogger(__name__)

StationSession = WebSession  # the name the station's tests and modules know
__all__ = [
    "SESSION_MAX_SECONDS",
    "PrinterState",
    "SessionStore",
    "Station",
    "StationSession",
    "create_station",
    "printer_states",
]

SESSION_COOKIE = "spoolvault_station"
LOGIN_COOKIE = "spoolvault_station_login"
COOKIE_PATH = "/release"
MAX_FORM_BYTES = 16 * 1024
MAX_LISTED = 200  # jobs shown on one page (a manager may face thousands)
LISTED_STATES = (JobState.HELD, JobState.FAILED)
HEALTH_TIMEOUT = 4.0  # seconds a page waits for printers' state (checks time out at 3)
_FIELD_LIMITS = {"username": 255, "password": 1024, "card": 128, "pin": 64}
_HERE = Path(__file__).parent
_STATIC = {"station.css": "text/css", "station.js": "text/javascript"}


# --------------------------------------------------------------------------- sessions


@dataclass
class ResultRow:
    """What happened to one job after a release or cancel, for the next page."""

    job_id: int
    title: str
    ok: bool
    text: str


@dataclass
class Flash:
    """Shown once, on the page after a POST (post/redirect/get)."""

    notice: str = ""
    results: list[ResultRow] = field(default_factory=list)
    blocked: str | None = None  # a printer a release just found in error


# --------------------------------------------------------------------------- presentation


def _time_left(seconds: float) -> str:
    if seconds < 60:
        return "less than a minute"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{hours // 24} days"


def _submitted(at: datetime, now: datetime) -> str:
    local = at.astimezone()
    if local.date() == now.astimezone().date():
        return local.strftime("%H:%M")
    return local.strftime("%d %b %H:%M").lstrip("0")


@dataclass(frozen=True)
class JobRow:
    """One held job as the page shows it."""

    id: int
    owner: str
    title: str
    pages: str
    size: str
    submitted: str
    queue: str
    state: str
    reason: str
    time_left: str
    only_at: str | None  # the printer its queue ties it to, if not a Find-Me queue
    extendable: bool  # held, and its hold not yet extended (once per job)
    pin: bool  # printed with a job PIN (PWG 5100.11 job-password): asked at release


def _job_row(job: Job, *, now: datetime, expires: datetime) -> JobRow:
    left = ""
    if job.state is JobState.HELD:
        left = _time_left(max(0.0, (expires - now).total_seconds()))
    return JobRow(
        id=job.id,
        owner=job.owner,
        title=job.title or f"job {job.id}",
        pages="" if job.pages is None else f"{job.pages} page" + ("" if job.pages == 1 else "s"),
        size=size(job.size),
        submitted=_submitted(job.created_at, now),
        queue=job.queue,
        state=job.state.value,
        reason=job.state_reason or "",
        time_left=left,
        only_at=None if job.queue in FIND_ME_QUEUES else job.queue,
        extendable=job.state is JobState.HELD and job.hold_extended_until is None,
        pin=job.pin_hash is not None,
    )


@dataclass(frozen=True)
class PrinterState:
    """A printer and, when asked, its health, as the page shows them."""

    name: str
    group: str
    in_error: bool | None  # None: not checked
    message: str


def _printer_state(printer: Printer, health: Health | None, failure: str = "") -> PrinterState:
    if health is None:
        return PrinterState(printer.name, printer.group, None, failure or "state not checked")
    return PrinterState(printer.name, printer.group, health.in_error, health.message)


async def printer_states(release: ReleaseService, printers: list[Printer]) -> list[PrinterState]:
    """The printers' health, asked all at once; one that does not answer in time says so."""

    async def one(p: Printer) -> PrinterState:
        try:
            async with asyncio.timeout(HEALTH_TIMEOUT):
                return _printer_state(p, await release.printer_health(p))
        except TimeoutError:
            return _printer_state(p, None, "no answer in time")
        except (ValueError, OSError) as exc:
            return _printer_state(p, None, f"cannot be checked: {exc}")

    return list(await asyncio.gather(*(one(p) for p in printers)))


# --------------------------------------------------------------------------- the station


class Station(PageSet):
    """The release station pages over the job and release services."""

    def __init__(
        self,
        jobs: JobService,
        release: ReleaseService,
        identity: IdentityService,
        *,
        tls: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.jobs = jobs
        self.release = release
        self.identity = identity
        self.db = jobs.db
        super().__init__(_HERE, _STATIC, tls=tls, cookie_path=COOKIE_PATH)
        self.sessions = SessionStore(clock)
        self.login_tokens = LoginTokens()  # login-form CSRF tokens, per process

    def routes(self) -> list[BaseRoute]:
        """The routes to add to the application (static files first)."""
        return [
            Route("/release/-/{name}", self.static, methods=["GET"]),
            Route("/release", self.page, methods=["GET", "POST"]),
            Route("/release/{printer}", self.page, methods=["GET", "POST"]),
        ]

    # -- responses ---------------------------------------------------------------------

    def _error(self, status: int, title: str, message: str, back: str) -> HTMLResponse:
        return self._render(
            "error.html", status, title=title, message=message, back=back, printer=None
        )

    # -- the one page ------------------------------------------------------------------

    async def page(self, request: Request) -> Response:
        """GET: the login page or the user's jobs; POST: log in, release, cancel, log out."""
        name = request.path_params.get("printer")
        printer: Printer | None = None
        if name is not None:
            printer = await in_thread(find_printer, self.db, name)
            if printer is None:
                return self._error(
                    404,
                    "No such printer",
                    f"There is no printer named {name!r}. Choose a printer instead.",
                    "/release",
                )
        settings = await in_thread(self.jobs.settings)
        idle = int(settings[RELEASE_STATION_IDLE_SECONDS])
        token = request.cookies.get(SESSION_COOKIE)
        session = self.sessions.get(token, idle=idle)
        here = "/release" + (f"/{quote(printer.name)}" if printer else "")
        if request.method == "POST":
            return await self._post(request, printer, session, here, settings)
        if session is None:
            notice = ""
            logged_out = request.query_params.get("logged_out")
            if token or logged_out == "idle":  # the browser had a session that ended
                notice = f"You were logged out after {idle} seconds without activity."
            elif logged_out:
                notice = "You are logged out."
            response = self._login_page(request, printer, settings, notice=notice)
            if token:
                response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH)
            return response
        return await self._jobs_page(request, printer, session, settings, here)

    # -- login ---------------------------------------------------------------------------

    def _login_page(
        self,
        request: Request,
        printer: Printer | None,
        settings: Mapping[str, Any],
        *,
        notice: str = "",
        error: str = "",
        status: int = 200,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        nonce = request.cookies.get(LOGIN_COOKIE, "")
        fresh = not LoginTokens.usable_nonce(nonce)
        if fresh:
            nonce = LoginTokens.new_nonce()
        response = self._render(
            "login.html",
            status,
            printer=printer,
            csrf=self.login_tokens.token(nonce),
            notice=notice,
            error=error,
            card_pin=bool(settings[RELEASE_STATION_CARD_PIN]),
            idle=int(settings[RELEASE_STATION_IDLE_SECONDS]),
        )
        if headers:
            response.headers.update(headers)
        if fresh:
            self._set_cookie(request, response, LOGIN_COOKIE, nonce)
        return response

    @staticmethod
    def _where(request: Request, printer: Printer | None) -> dict[str, Any]:
        """The identity service's station, printer and client of a login from this page.

        The station is named with the client's address: phones share ``/release``, and one
        guesser must not lock everybody's station (lockout counts per station).
        """
        client = request.client.host if request.client else "unknown"
        where = printer.name if printer else "any printer"
        return {
            "station": f"web release station {where} ({client})",
            "printer": printer.name if printer else None,
            "client": client,
        }

    async def _login(
        self, request: Request, form: FormData, printer: Printer | None, settings: Mapping[str, Any]
    ) -> Response:
        nonce = request.cookies.get(LOGIN_COOKIE, "")
        if not self.login_tokens.check(nonce, _field(form, "csrf")):
            return self._csrf_refused(printer)
        method = _field(form, "method")
        values = {k: _field(form, k) for k in _FIELD_LIMITS}
        where = self._where(request, printer)
        too_long = any(len(values[k]) > limit for k, limit in _FIELD_LIMITS.items())
        try:
            if too_long:
                raise AuthenticationFailed()
            if method == "card":
                if not values["card"].strip():
                    raise ClientError("Present your card or type its number.")
                if settings[RELEASE_STATION_CARD_PIN] and not values["pin"]:
                    raise ClientError("Enter your PIN as well as your card.")
                pin = values["pin"] or None
                user = await in_thread(
                    lambda: self.identity.login_card(values["card"], pin, **where)
                )
            elif method == "password":
                user = await in_thread(
                    lambda: self.identity.login_password(
                        values["username"], values["password"], **where
                    )
                )
            else:
                return self._error(400, "Unknown form", "That is not a login form.", "")
        except AuthenticationFailed:
            return self._login_page(
                request,
                printer,
                settings,
                error="Login failed: unknown user or card, or wrong password or PIN.",
            )
        except LockedOut as exc:
            return self._login_page(
                request,
                printer,
                settings,
                error=f"Too many failed logins. Try again in {exc.retry_after} seconds.",
                status=429,
                headers={"Retry-After": str(exc.retry_after)},
            )
        except DirectoryUnavailable as exc:  # a directory user's password: no fall-back
            return self._login_page(request, printer, settings, error=str(exc), status=503)
        except Refused as exc:  # a missing field, a malformed card number
            return self._login_page(request, printer, settings, error=str(exc))
        is_admin = await in_thread(self.db.is_admin, user)
        idle = int(settings[RELEASE_STATION_IDLE_SECONDS])
        session = self.sessions.open(user, is_admin=is_admin, idle=idle)
        response = self._redirect(self._url(printer))
        self._set_cookie(request, response, SESSION_COOKIE, session.token)
        return response

    def _csrf_refused(self, printer: Printer | None) -> HTMLResponse:
        return self._error(
            403,
            "This form has expired",
            "The form you sent did not come from this release station page, or it is too "
            "old (missing or wrong security token). Nothing was done. Go back to the "
            "station and try again.",
            self._url(printer),
        )

    @staticmethod
    def _url(printer: Printer | None, *, manager: bool = False) -> str:
        url = "/release" + (f"/{quote(printer.name)}" if printer else "")
        return url + ("?manager=1" if manager else "")

    # -- actions -------------------------------------------------------------------------

    async def _post(
        self,
        request: Request,
        printer: Printer | None,
        session: StationSession | None,
        here: str,
        settings: Mapping[str, Any],
    ) -> Response:
        length = request.headers.get("content-length", "")
        if not length.isdigit() or int(length) > MAX_FORM_BYTES:
            # A browser always sends the length of a form; these are a few hundred bytes.
            return self._error(413, "Form too large", "That is not a form of this page.", here)
        fields = MAX_LISTED + 20  # a job PIN field per listed job, and the form's own
        async with request.form(max_files=0, max_fields=fields, max_part_size=8192) as form:
            # One form, many buttons: each button sends do=release:<id>, cancel:<id>, ...
            action, _, job_text = _field(form, "do").partition(":")
            job_id = int(job_text) if job_text.isdigit() and len(job_text) < 12 else None
            if action == "login":
                return await self._login(request, form, printer, settings)
            if session is None:
                # Ended (idle, logged out elsewhere) or never was: nothing is done, and the
                # login page says why.
                return self._redirect(here)
            if not session.csrf_ok(_field(form, "csrf")):
                return self._csrf_refused(printer)
            manager = (
                session.is_admin
                and _field(form, "manager") == "1"
                and await in_thread(self.db.is_admin, session.user)  # still an administrator
            )
            target = _field(form, "printer") or (printer.name if printer else "")
            if action == "logout":
                self.sessions.close(session)
                why = "idle" if _field(form, "idle") else "yes"
                response = self._redirect(f"{here}?logged_out={why}")
                response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH)
                return response
            flash = Flash()
            hide = manager and bool(settings[HIDE_DOCUMENT_NAMES])
            # Job PINs, typed beside the jobs that have one (administrators need none).
            pins = {
                int(key[4:]): value
                for key, value in form.multi_items()
                if key.startswith("pin-") and key[4:].isdigit() and isinstance(value, str)
            }
            if action == "release" and job_id is not None:
                await self._release(
                    session, [job_id], target, flash, manager=manager, hide=hide, pins=pins
                )
            elif action == "release-all":
                held = await in_thread(lambda: self._visible(session, manager, (JobState.HELD,)))
                ids = [j.id for j in held]
                if not ids:
                    flash.notice = "You have no held jobs to print."
                await self._release(
                    session, ids, target, flash, manager=manager, hide=hide, pins=pins
                )
            elif action == "cancel" and job_id is not None:
                await self._cancel(session, job_id, printer, flash, manager=manager, hide=hide)
            elif action == "extend" and job_id is not None:
                await self._extend(session, job_id, flash, manager=manager, hide=hide)
            session.flash = flash
            return self._redirect(self._url(printer, manager=manager))

    def _visible(
        self, session: StationSession, manager: bool, states: Iterable[JobState] = LISTED_STATES
    ) -> list[Job]:
        """The jobs this user may see here (blocking): own and delegated, or all (manager)."""
        states = tuple(states)
        if manager:
            return self.jobs.list(states=states, limit=MAX_LISTED, newest_first=True)
        found: list[Job] = []
        for owner in self.identity.releasable_owners(session.user):
            found += self.jobs.list(owner=owner, states=states, limit=MAX_LISTED)
        return sorted(found, key=lambda j: j.id)[:MAX_LISTED]

    def _accessible(self, session: StationSession, job_id: int, manager: bool) -> Job | None:
        """The job if this user may act on it here (blocking); None as for no such job."""
        try:
            if manager:
                return self.jobs.get(job_id)
            # The one rule of every front end: the owner, or whom the owner delegated to.
            return accessible_job(self.jobs, self.identity, session.user, job_id)
        except JobNotFound:  # NotYourJob too
            return None

    @staticmethod
    def _title(session: StationSession, job: Job, hide: bool) -> str:
        """A job's title for this page: others' titles hidden when ``hide`` (manager mode
        with hide_document_names on)."""
        if hide and job.owner != session.user:
            return HIDDEN_TITLE
        return job.title or f"job {job.id}"

    async def _release(
        self,
        session: StationSession,
        ids: list[int],
        target: str,
        flash: Flash,
        *,
        manager: bool,
        hide: bool = False,
        pins: Mapping[int, str] | None = None,
    ) -> None:
        if ids and not target:
            flash.notice = "Choose a printer first."
            return
        blocked: str | None = None
        for job_id in ids:
            job = await in_thread(self._accessible, session, job_id, manager)
            if job is None:
                await in_thread(
                    lambda job_id=job_id: self.jobs.record_event(
                        session.user,
                        Action.JOB_RELEASE_FAILED,
                        job_id=job_id,
                        printer=target,
                        outcome=Outcome.REFUSED,
                        detail=f"not {session.user}'s job, nor delegated to them (or no such "
                        "job): web release station",
                    )
                )
                flash.results.append(ResultRow(job_id, f"job {job_id}", False, "no such job"))
                continue
            title = self._title(session, job, hide)
            if blocked is not None:
                flash.results.append(
                    ResultRow(job_id, title, False, f"not sent: {blocked} is in error")
                )
                continue
            try:
                done = await self.release.release(
                    job_id,
                    target,
                    actor=session.user,
                    is_admin=manager,
                    job_pin=(pins or {}).get(job_id) or None,
                )
            except PrinterBlocked as exc:
                blocked = flash.blocked = target
                flash.results.append(
                    ResultRow(job_id, title, False, f"not sent, still held: {exc.health.message}")
                )
            except ReleaseFailed as exc:
                flash.results.append(ResultRow(job_id, title, False, f"failed: {exc.reason}"))
            except SpoolvaultError as exc:  # refused: state, queue, no such printer
                flash.results.append(ResultRow(job_id, title, False, f"not sent: {exc}"))
            else:
                said = done.delivered.printer_job_id
                text = f"sent to {target}" + (f" (printer job {said})" if said else "")
                flash.results.append(ResultRow(job_id, title, True, text))

    async def _cancel(
        self,
        session: StationSession,
        job_id: int,
        printer: Printer | None,
        flash: Flash,
        *,
        manager: bool,
        hide: bool = False,
    ) -> None:
        job = await in_thread(self._accessible, session, job_id, manager)
        if job is None:
            flash.results.append(ResultRow(job_id, f"job {job_id}", False, "no such job"))
            return
        title = self._title(session, job, hide)
        where = f"web release station {printer.name if printer else 'any printer'}"
        on_behalf = "" if job.owner == session.user else f" for {job.owner}"
        reason = f"cancelled by {session.user}{on_behalf} at {where}"
        try:
            await in_thread(lambda: self.jobs.cancel(job_id, reason=reason, actor=session.user))
        except Refused as exc:
            flash.results.append(ResultRow(job_id, title, False, f"not cancelled: {exc}"))
        else:
            flash.results.append(ResultRow(job_id, title, True, "cancelled and deleted"))

    async def _extend(
        self,
        session: StationSession,
        job_id: int,
        flash: Flash,
        *,
        manager: bool,
        hide: bool = False,
    ) -> None:
        job = await in_thread(self._accessible, session, job_id, manager)
        if job is None:
            flash.results.append(ResultRow(job_id, f"job {job_id}", False, "no such job"))
            return
        title = self._title(session, job, hide)
        try:
            done = await in_thread(lambda: self.jobs.extend_hold(job_id, actor=session.user))
        except Refused as exc:
            flash.results.append(ResultRow(job_id, title, False, f"not kept longer: {exc}"))
            return
        until = self.jobs.expires_at(done)
        left = _time_left(max(0.0, (until - utcnow()).total_seconds()))
        flash.results.append(ResultRow(job_id, title, True, f"kept longer: deleted in {left}"))

    # -- the jobs page -------------------------------------------------------------------

    async def _health(self, printers: list[Printer]) -> list[PrinterState]:
        return await printer_states(self.release, printers)

    async def _jobs_page(
        self,
        request: Request,
        printer: Printer | None,
        session: StationSession,
        settings: Mapping[str, Any],
        here: str,
    ) -> Response:
        flash, session.flash = session.flash, None
        manager = session.is_admin and request.query_params.get("manager") == "1"
        found = await in_thread(lambda: self._visible(session, manager))
        if manager:
            await in_thread(
                lambda: self.jobs.record_event(
                    session.user,
                    Action.ADMIN_VIEW,
                    detail=f"web release station manager mode: {len(found)} jobs",
                )
            )
        timeouts = await in_thread(self.jobs.hold_timeouts)
        now = utcnow()
        rows = [_job_row(j, now=now, expires=self.jobs.expires_at(j, timeouts)) for j in found]
        if manager and settings[HIDE_DOCUMENT_NAMES]:
            # An administrator's list of other people's jobs (docs/operations.md); users
            # still see their own titles.
            rows = [
                r if r.owner == session.user else dataclasses.replace(r, title=HIDDEN_TITLE)
                for r in rows
            ]
        printers = await in_thread(list_printers, self.db)
        # Is the printer the jobs would go to in error, and does it block?
        suspect = flash.blocked if flash and flash.blocked else None
        if suspect is None and printer is not None and printer.block_release_on_error:
            suspect = printer.name
        blocked: PrinterState | None = None
        alternatives: list[PrinterState] = []
        by_name = {p.name: p for p in printers}
        if suspect is not None and suspect in by_name:
            [state] = await self._health([by_name[suspect]])
            if state.in_error:
                blocked = state
                group = by_name[suspect].group
                others = [p for p in printers if p.group == group and p.name != suspect]
                alternatives = sorted(
                    await self._health(others), key=lambda s: (s.in_error is not False, s.name)
                )
        # Where a release goes: the station's printer, else a choice.
        choices: list[str] = []
        if blocked is not None:  # only printers that are not in error themselves
            choices = [a.name for a in alternatives if a.in_error is not True]
        elif printer is None:
            choices = [p.name for p in printers]
        target = printer.name if printer is not None and blocked is None else None
        return self._render(
            "jobs.html",
            printer=printer,
            user=session.user,
            is_admin=session.is_admin,
            manager=manager,
            csrf=session.csrf,
            jobs=rows,
            owners=len({r.owner for r in rows}) > 1 or manager,
            held=sum(1 for r in rows if r.state == JobState.HELD.value),
            flash=flash,
            blocked=blocked,
            alternatives=alternatives,
            choices=choices,
            target=target,
            here=here,
            idle=int(settings[RELEASE_STATION_IDLE_SECONDS]),
            truncated=len(found) >= MAX_LISTED,
        )


_field = form_field


def create_station(
    jobs: JobService,
    release: ReleaseService,
    *,
    identity: IdentityService,
    tls: bool = False,
) -> Station:
    """The release station over the app's services (spoolvault.app adds its routes)."""
    return Station(jobs, release, identity, tls=tls)
