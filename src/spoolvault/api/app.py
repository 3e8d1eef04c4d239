"""The REST API under /api/v1, with its OpenAPI document at /api/v1/openapi.json.

The calls operators and scripts rely on, and that stay stable, are in docs/contract.md.

Administration uses HTTP Basic with an administrator's password; release stations open a
session with the user's own credentials (password, card with or without PIN, ID number and
PIN: spoolvault.identity) and send ``Authorization: Bearer <token>``; a user sees and
releases their own jobs and those delegated to them. MFD devices and Fast Release terminals
authenticate with a device token (stations/mfd.py, stations/fast.py).
Every error is a JSON body with a ``detail`` a person can read. Settings changes and
administrators' views of jobs and of the audit log are audited (docs/audit.md).
"""

# No "from __future__ import annotations": FastAPI must see the real objects in the
# annotations of the handlers below (closures over this module's dependencies).

import functools
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import (
    HTTPAuthorizationCredentials,
    HTTPBasic,
    HTTPBasicCredentials,
    HTTPBearer,
)
from pydantic import BaseModel, Field

from spoolvault import __version__
from spoolvault.admin import actions
from spoolvault.archive import Archive, NoPreview, NotArchived, download_name, viewers
from spoolvault.audit import (
    Action,
    Outcome,
    list_events,
)
from spoolvault.db import Job, Printer
from spoolvault.errors import Refused, SpoolvaultError
from spoolvault.identity import (
    IdentityService,
    InvalidIdentity,
    UserInfo,
)
from spoolvault.identity.sessions import SESSION_SECONDS
from spoolvault.jobs.release import (
    ReleaseFailed,
    ReleaseService,
)
from spoolvault.jobs.service import JobNotFound, JobService
from spoolvault.printers.registry import (
    list_printers,
)
from spoolvault.servers.registry import (
    authenticate,
    availability,
    heartbeat_answer,
    record_heartbeat,
    servers_overview,
    warnings_for,
)
from spoolvault.settings import (
    HIDDEN_TITLE,
    HIDE_DOCUMENT_NAMES,
    PRINT_ARCHIVE_VIEWERS,
)
from spoolvault.stations.access import cancel_for, release_for, visible_jobs
from spoolvault.util.threads import in_thread

__all__ = ["SESSION_SECONDS", "create_api"]

_basic = HTTPBasic(auto_error=False, realm="spoolvault")
_bearer = HTTPBearer(auto_error=False)


class PrinterIn(BaseModel):
    name: str
    uri: str
    block_release_on_error: bool = False
    mode: Literal["hold", "admin-release", "direct"] = "hold"
    group: str = "default"
    snmp_community: str | None = None
    snmp_host: str | None = Field(None, description="Default: the host of the printer's URI.")
    snmp_port: int | None = Field(None, description="Default: 161.")
    hold_timeout_minutes: int | None = Field(
        None, description="Hold timeout of this printer's own queue; default: the server's."
    )


class PrinterChange(BaseModel):
    uri: str | None = None
    block_release_on_error: bool | None = None
    mode: Literal["hold", "admin-release", "direct"] | None = None
    group: str | None = None
    snmp_community: str | None = None
    snmp_host: str | None = None
    snmp_port: int | None = None
    hold_timeout_minutes: int | None = None


class UserIn(BaseModel):
    username: str
    password: str | None = Field(None, repr=False)
    card_number: str | None = Field(None, repr=False, description="Stored as a keyed hash.")
    pin: str | None = Field(None, repr=False, description="4 to 16 digits; stored hashed.")
    id_number: str | None = Field(None, description="For ID number + PIN login.")
    full_name: str | None = None
    email: str | None = None
    groups: list[str] | None = None
    is_admin: bool | None = None


class UserPatch(BaseModel):
    """Fields to change; null clears one (password, card, PIN, ID number, name, e-mail)."""

    password: str | None = Field(None, repr=False)
    card_number: str | None = Field(None, repr=False)
    pin: str | None = Field(None, repr=False)
    id_number: str | None = None
    full_name: str | None = None
    email: str | None = None
    groups: list[str] | None = None
    is_admin: bool | None = None
    disabled: bool | None = None


class DelegatesIn(BaseModel):
    users: list[str] = Field(default_factory=list, description="User names.")
    groups: list[str] = Field(default_factory=list, description="Group names.")


class DelegatesOut(BaseModel):
    users: list[str]
    groups: list[str]


class UserOut(BaseModel):
    username: str
    is_admin: bool
    full_name: str | None = None
    email: str | None = None
    id_number: str | None = None
    source: str = "local"
    disabled: bool = False
    has_password: bool = False
    has_card: bool = False
    has_pin: bool = False
    groups: list[str] = Field(default_factory=list)
    delegates: list[str] = Field(default_factory=list)
    delegate_groups: list[str] = Field(default_factory=list)


def _user_out(info: UserInfo) -> UserOut:
    return UserOut(**vars(info))


class PrinterOut(BaseModel):
    name: str
    uri: str
    block_release_on_error: bool
    mode: str
    group: str
    queue: str
    snmp: bool = Field(description="Health is also asked over SNMP.")
    hold_timeout_minutes: int | None


class JobOut(BaseModel):
    id: int
    owner: str
    title: str
    queue: str
    state: str
    state_reason: str | None
    size: int
    pages: int | None
    encrypted: bool
    created: datetime
    printer: str | None
    pin_protected: bool = Field(False, description="Printed with a job PIN (job-password).")
    provider: str | None = Field(
        None, description="The print provider that holds the job; null: this server."
    )
    available: bool = Field(
        True,
        description="False while the job's provider is unreachable: the job is kept there "
        "and can be released when it is back.",
    )


class SessionIn(BaseModel):
    """One of: username + password; card_number (+ pin); id_number + pin."""

    username: str | None = None
    password: str | None = Field(None, repr=False)
    card_number: str | None = Field(None, repr=False)
    pin: str | None = Field(None, repr=False)
    id_number: str | None = None
    station: str | None = Field(
        None, description="The release station's name (lockout and audit); default: its address."
    )


def login(
    identity: IdentityService,
    body: Any,
    station: str,
    printer: str | None = None,
    client: str | None = None,
) -> str:
    """Check one of the three credential forms (blocking); return the user name."""
    where: dict[str, Any] = {"station": station, "printer": printer, "client": client}
    if body.username is not None and body.password is not None:
        if body.card_number is not None or body.id_number is not None:
            raise InvalidIdentity("give one of: username and password, card_number, id_number")
        return identity.login_password(body.username, body.password, **where)
    if body.card_number is not None and body.username is None and body.id_number is None:
        return identity.login_card(body.card_number, body.pin, **where)
    if body.id_number is not None and body.pin is not None and body.username is None:
        return identity.login_id_pin(body.id_number, body.pin, **where)
    raise InvalidIdentity(
        "give one of: username and password; card_number (and pin); id_number and pin"
    )


class SessionOut(BaseModel):
    token: str = Field(repr=False)
    expires_in: int


class ReleaseIn(BaseModel):
    printer: str = Field(description="The printer to print on (its name).")
    job_pin: str | None = Field(
        None, repr=False, description="The job's PIN, for a job printed with one (job-password)."
    )


class ReleaseOut(BaseModel):
    job: JobOut
    printer_job_id: int | None
    detail: str


class AuditEventOut(BaseModel):
    """One audit event: the same fields and values as its line in the audit file."""

    id: int
    at: str = Field(description="UTC, e.g. 2026-11-24T09:00:00.000000Z")
    actor: str
    action: str
    job_id: int | None
    printer: str | None
    outcome: str
    detail: str
    prev: str = Field(description="The previous event's hash (64 zeros for the first).")
    hash: str = Field(description="SHA-256 of the event's canonical JSON without hash.")


class ArchivedOut(BaseModel):
    id: int
    owner: str
    title: str
    queue: str
    printer: str | None
    size: int
    pages: int | None
    document_format: str
    submitted: datetime
    printed: datetime | None


def _archived_out(job: Job) -> ArchivedOut:
    return ArchivedOut(
        id=job.id,
        owner=job.owner,
        title=job.title,
        queue=job.queue,
        printer=job.printer,
        size=job.size,
        pages=job.pages,
        document_format=job.document_format,
        submitted=job.created_at,
        printed=job.completed_at,
    )


def _job_out(
    job: Job, available: dict[str, bool] | None = None, *, hide_title: bool = False
) -> JobOut:
    return JobOut(
        id=job.id,
        owner=job.owner,
        title=HIDDEN_TITLE if hide_title and job.title else job.title,
        queue=job.queue,
        state=job.state.value,
        state_reason=job.state_reason,
        size=job.size,
        pages=job.pages,
        encrypted=job.encrypted,
        created=job.created_at,
        printer=job.printer,
        pin_protected=job.pin_hash is not None,
        provider=job.provider,
        available=job.provider is None or bool((available or {}).get(job.provider)),
    )


def _printer_out(p: Printer) -> PrinterOut:
    return PrinterOut(
        name=p.name,
        uri=p.uri,
        block_release_on_error=p.block_release_on_error,
        mode=p.mode.value,
        group=p.group,
        queue=f"/printers/{p.name}",
        snmp=p.snmp_community is not None,
        hold_timeout_minutes=p.hold_timeout_minutes,
    )


def _warning_header(warnings: list[str]) -> dict[str, str]:
    # RFC 7234 §5.5 Warning (199: miscellaneous); the body stays the settings object.
    text = "; ".join(w.replace('"', "'") for w in warnings)
    return {"Warning": f'199 spoolvault "{text}"'} if warnings else {}


def create_api(
    jobs: JobService,
    release: ReleaseService,
    identity: IdentityService,
    *,
    providers: bool = False,
) -> FastAPI:
    """The /api/v1 application (mounted by spoolvault.app).

    With ``providers`` this server is an application server for print providers: it takes
    their heartbeats (docs/deployment.md); releases of their jobs go through ``release``.
    """
    from spoolvault.stations.fast import create_fast_release_router
    from spoolvault.stations.mfd import create_mfd_router

    db = jobs.db
    sessions = identity.sessions
    api = FastAPI(
        title="spoolvault",
        version=__version__,
        description="Secure print release: held jobs, printers, release stations.",
        openapi_url="/openapi.json",
        docs_url=None,
        redoc_url=None,
    )

    @api.exception_handler(Refused)
    @api.exception_handler(ReleaseFailed)
    async def refused(request: Request, exc: SpoolvaultError) -> JSONResponse:
        # Each error class carries its HTTP status (errors.py draws the tree).
        return JSONResponse(
            {"detail": str(exc)}, status_code=exc.http_status, headers=exc.headers()
        )

    async def admin(
        creds: Annotated[HTTPBasicCredentials | None, Depends(_basic)],
    ) -> str:
        unauthorized = HTTPException(
            401, "administrator credentials required", {"WWW-Authenticate": "Basic"}
        )
        if creds is None:
            raise unauthorized
        ok = await in_thread(db.verify_password, creds.username, creds.password)
        if not ok or not await in_thread(db.is_admin, creds.username):
            raise unauthorized
        return creds.username

    async def station_user(
        creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> str:
        session = sessions.get(creds.credentials if creds else None)
        if session is None:
            raise HTTPException(
                401, "log in at the release station first (session missing or expired)"
            )
        return session.username

    # -- administration ----------------------------------------------------------------

    @api.post("/printers", status_code=201, response_model=PrinterOut)
    async def create_printer(body: PrinterIn, user: Annotated[str, Depends(admin)]) -> PrinterOut:
        printer = await in_thread(actions.add_printer, jobs, user, body.model_dump())
        return _printer_out(printer)

    @api.patch("/printers/{name}", response_model=PrinterOut)
    async def change_printer(
        name: str, body: PrinterChange, user: Annotated[str, Depends(admin)]
    ) -> PrinterOut:
        """Change a printer's settings; only the fields sent change."""
        changes = body.model_dump(exclude_unset=True)
        return _printer_out(await in_thread(actions.change_printer, jobs, user, name, changes))

    @api.delete("/printers/{name}", response_model=PrinterOut)
    async def delete_printer(name: str, user: Annotated[str, Depends(admin)]) -> PrinterOut:
        """Remove a printer; 409 while jobs are held on its own queue."""
        return _printer_out(await in_thread(actions.remove_printer, jobs, user, name))

    @api.get("/printers", response_model=list[PrinterOut])
    async def get_printers(_: Annotated[str, Depends(admin)]) -> list[PrinterOut]:
        return [_printer_out(p) for p in await in_thread(list_printers, db)]

    async def record(actor: str, action: Action, **details: Any) -> None:
        await in_thread(functools.partial(jobs.record_event, actor, action, **details))

    @api.post("/users", status_code=201, response_model=UserOut)
    async def create_user(body: UserIn, user: Annotated[str, Depends(admin)]) -> UserOut:
        """Create a user; card numbers, PINs and passwords are stored hashed only."""
        fields = body.model_dump(exclude_unset=True, exclude_none=True, exclude={"username"})
        info = await in_thread(actions.add_user, jobs, identity.users, user, body.username, fields)
        return _user_out(info)

    @api.get("/users", response_model=list[UserOut])
    async def get_users(_: Annotated[str, Depends(admin)]) -> list[UserOut]:
        return [_user_out(u) for u in await in_thread(identity.users.list)]

    @api.get("/users/{username}", response_model=UserOut)
    async def get_user(username: str, _: Annotated[str, Depends(admin)]) -> UserOut:
        return _user_out(await in_thread(identity.users.info, username))

    @api.patch("/users/{username}", response_model=UserOut)
    async def patch_user(
        username: str, body: UserPatch, user: Annotated[str, Depends(admin)]
    ) -> UserOut:
        """Set or clear a user's card, PIN, password, ID number, name, e-mail, groups."""
        fields = body.model_dump(exclude_unset=True)
        info = await in_thread(actions.change_user, jobs, identity.users, user, username, fields)
        return _user_out(info)

    @api.put("/users/{username}/delegates", response_model=DelegatesOut)
    async def put_delegates(
        username: str, body: DelegatesIn, user: Annotated[str, Depends(admin)]
    ) -> DelegatesOut:
        """Exactly these users and groups' members may release ``username``'s jobs."""
        info = await in_thread(
            actions.set_delegates, jobs, identity.users, user, username, body.users, body.groups
        )
        return DelegatesOut(users=info.delegates, groups=info.delegate_groups)

    @api.get("/jobs", response_model=list[JobOut])
    async def get_jobs(user: Annotated[str, Depends(admin)]) -> list[JobOut]:
        found = await in_thread(actions.list_jobs, jobs, user, "GET /api/v1/jobs")
        up = await in_thread(availability, db)
        hide = bool((await in_thread(jobs.settings))[HIDE_DOCUMENT_NAMES])
        return [_job_out(j, up, hide_title=hide) for j in found]

    @api.get("/servers")
    async def get_servers(_: Annotated[str, Depends(admin)]) -> list[dict[str, Any]]:
        """Primary and site servers with their print providers and heartbeat state.

        ``warnings`` lists why a server's settings do not reach some providers' jobs.
        """
        return await in_thread(servers_overview, db)

    @api.get("/servers/{name}/settings")
    async def get_settings(name: str, _: Annotated[str, Depends(admin)]) -> JSONResponse:
        values = await in_thread(db.get_settings, name)
        warnings = await in_thread(warnings_for, db, name, values)
        return JSONResponse(values, headers=_warning_header(warnings))

    @api.patch("/servers/{name}/settings")
    async def patch_settings(
        name: str, changes: dict[str, Any], user: Annotated[str, Depends(admin)]
    ) -> JSONResponse:
        new = await in_thread(actions.change_settings, jobs, user, name, changes)
        warnings = await in_thread(warnings_for, db, name, new)
        return JSONResponse(new, headers=_warning_header(warnings))

    @api.get("/audit", response_model=list[AuditEventOut])
    async def get_audit(
        user: Annotated[str, Depends(admin)],
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        before_id: Annotated[int | None, Query(ge=1, description="Older than this id.")] = None,
        job_id: int | None = None,
        actor: str | None = None,
        action: Annotated[str | None, Query(description="job.submit, job.release, ...")] = None,
    ) -> list[AuditEventOut]:
        """Audit events, newest first; page with ``before_id`` (the last id you got)."""
        if action is not None and action not in {a.value for a in Action}:
            known = ", ".join(a.value for a in Action)
            raise HTTPException(422, f"unknown action {action!r} (known: {known})")
        if jobs.audit is not None:
            await in_thread(jobs.audit.ingest_pending)  # queued by command-line tools
            await in_thread(jobs.audit.sync)  # what was just recorded, too
        events = await in_thread(
            lambda: list_events(
                db, limit=limit, before_id=before_id, job_id=job_id, actor=actor, action=action
            )
        )
        # Recorded after the query: the answer shows what was there before this look.
        await record(user, Action.ADMIN_VIEW, detail=f"GET /api/v1/audit: {len(events)} events")
        return [AuditEventOut(**vars(e)) for e in events]

    # -- print archive (approved administrators) ----------------------------------------

    async def archive_viewer(user: Annotated[str, Depends(admin)]) -> str:
        allowed = viewers(str((await in_thread(db.get_settings))[PRINT_ARCHIVE_VIEWERS]))
        if user not in allowed:
            await record(
                user,
                Action.ARCHIVE_VIEW,
                outcome=Outcome.REFUSED,
                detail="not an approved administrator of the print archive",
            )
            raise HTTPException(
                403, "only approved administrators (setting print_archive_viewers) may do this"
            )
        return user

    def the_archive() -> Archive:
        if jobs.archive is None:
            raise HTTPException(404, "this server keeps no print archive")
        return jobs.archive

    async def archived_job(job_id: int, user: str) -> tuple[Job, Path]:
        try:
            job = await in_thread(jobs.get, job_id)
            path = the_archive().document(job)
        except (JobNotFound, NotArchived):
            await record(
                user,
                Action.ARCHIVE_VIEW,
                job_id=job_id,
                outcome=Outcome.REFUSED,
                detail="no archived document",
            )
            raise HTTPException(404, f"job {job_id} has no archived document") from None
        return job, path

    @api.get("/archive", response_model=list[ArchivedOut])
    async def list_archive(
        user: Annotated[str, Depends(archive_viewer)],
        owner: str | None = None,
        printer: str | None = None,
        title: Annotated[str | None, Query(description="Part of the document name.")] = None,
        since: datetime | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        before_id: Annotated[int | None, Query(ge=1)] = None,
    ) -> list[ArchivedOut]:
        """Archived documents, newest first (only while Print Archiving keeps them)."""
        archive = the_archive()
        found = await in_thread(
            lambda: archive.list(
                owner=owner,
                printer=printer,
                title=title,
                since=since,
                limit=limit,
                before_id=before_id,
            )
        )
        await record(user, Action.ARCHIVE_VIEW, detail=f"listed {len(found)} documents")
        return [_archived_out(j) for j in found]

    @api.get("/archive/{job_id}/document")
    async def archived_document(
        job_id: int, user: Annotated[str, Depends(archive_viewer)]
    ) -> FileResponse:
        """The archived document, as it was printed."""
        job, path = await archived_job(job_id, user)
        await record(user, Action.ARCHIVE_VIEW, job_id=job_id, detail="downloaded the document")
        return FileResponse(
            path,
            media_type=job.document_format,
            filename=download_name(job),
        )

    @api.get(
        "/archive/{job_id}/preview.png",
        responses={200: {"content": {"image/png": {}}}},
        response_class=Response,
    )
    async def archived_preview(
        job_id: int, user: Annotated[str, Depends(archive_viewer)]
    ) -> Response:
        """The document's first page as a PNG (Ghostscript, for PDF and PostScript)."""
        job, _ = await archived_job(job_id, user)
        try:
            png = await in_thread(the_archive().preview, job)
        except NoPreview as exc:
            await record(user, Action.ARCHIVE_VIEW, job_id=job_id, detail=str(exc))
            raise HTTPException(404, str(exc)) from None
        await record(user, Action.ARCHIVE_VIEW, job_id=job_id, detail="previewed the first page")
        return Response(png, media_type="image/png")

    # -- release stations --------------------------------------------------------------

    @api.post("/release/session", response_model=SessionOut)
    async def open_session(body: SessionIn, request: Request) -> SessionOut:
        """Log in at a release station: password, card (+ PIN) or ID number + PIN.

        401 with one message for every wrong credential (no user enumeration); 429 with
        Retry-After when the account or the station is locked out after repeated failures.
        """
        client = request.client.host if request.client else "unknown"
        station = body.station or f"api:{client}"
        username = await in_thread(login, identity, body, station, None, client)
        token = sessions.open(username, station=station)
        return SessionOut(token=token, expires_in=sessions.ttl)

    @api.delete("/release/session", status_code=204)
    async def close_session(
        creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> None:
        if creds is not None:
            sessions.close(creds.credentials)

    @api.get("/release/jobs", response_model=list[JobOut])
    async def my_jobs(user: Annotated[str, Depends(station_user)]) -> list[JobOut]:
        """The user's own held and failed jobs, and those of users who delegated to them.

        ``available`` is false for a job whose print provider is unreachable now.
        """
        found = await in_thread(visible_jobs, jobs, identity, user)
        up = await in_thread(availability, db) if providers else {}
        return [_job_out(j, up) for j in found]

    @api.post("/release/jobs/{job_id}", response_model=ReleaseOut)
    async def release_job(
        job_id: int, body: ReleaseIn, user: Annotated[str, Depends(station_user)]
    ) -> ReleaseOut:
        done = await release_for(
            user,
            job_id,
            body.printer,
            jobs=jobs,
            release=release,
            identity=identity,
            job_pin=body.job_pin,
        )
        return ReleaseOut(
            job=_job_out(done.job),
            printer_job_id=done.delivered.printer_job_id,
            detail=done.delivered.detail,
        )

    @api.delete("/release/jobs/{job_id}", response_model=JobOut)
    async def cancel_job(job_id: int, user: Annotated[str, Depends(station_user)]) -> JobOut:
        job = await cancel_for(
            user, job_id, jobs=jobs, identity=identity, where="at a release station"
        )
        return _job_out(job)

    @api.get("/release/delegates", response_model=DelegatesOut)
    async def my_delegates(user: Annotated[str, Depends(station_user)]) -> DelegatesOut:
        """Who may release the logged-in user's jobs."""
        info = await in_thread(identity.users.info, user)
        return DelegatesOut(users=info.delegates, groups=info.delegate_groups)

    @api.put("/release/delegates", response_model=DelegatesOut)
    async def set_my_delegates(
        body: DelegatesIn, user: Annotated[str, Depends(station_user)]
    ) -> DelegatesOut:
        """Let exactly these users, and these groups' members, release my jobs."""
        info = await in_thread(
            actions.set_delegates, jobs, identity.users, user, user, body.users, body.groups
        )
        return DelegatesOut(users=info.delegates, groups=info.delegate_groups)

    api.include_router(
        create_mfd_router(jobs, release, identity, admin=admin, record=record, login=login)
    )
    api.include_router(create_fast_release_router(jobs, release, identity))

    # -- print providers (docs/deployment.md) ------------------------------------------

    if providers:

        @api.post("/providers/heartbeat", include_in_schema=False)
        async def heartbeat(
            request: Request, creds: Annotated[HTTPBasicCredentials | None, Depends(_basic)]
        ) -> dict[str, Any]:
            """A print provider's heartbeat (HTTP Basic: its name and secret)."""
            provider = (
                await in_thread(authenticate, db, creds.username, creds.password)
                if creds is not None
                else None
            )
            if provider is None:
                raise HTTPException(
                    401, "unknown print provider or wrong secret", {"WWW-Authenticate": "Basic"}
                )
            beat = await request.json()
            if not isinstance(beat, dict):
                raise HTTPException(422, "a heartbeat is a JSON object")
            try:
                done = await in_thread(record_heartbeat, db, provider.name, beat)
            except (KeyError, TypeError, ValueError) as exc:
                raise HTTPException(422, f"malformed heartbeat: {exc}") from None
            answer = await in_thread(heartbeat_answer, db, provider.name)
            answer["resync"] = done.resync
            return answer

    return api
