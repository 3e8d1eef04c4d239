"""The REST API under /api/v1 (CONTRACT.md), with its OpenAPI document at /api/v1/openapi.json.

Administration uses HTTP Basic with an administrator's password; release stations open a
session with the user's own credentials and send ``Authorization: Bearer <token>``.
Every error is a JSON body with a ``detail`` a person can read. Settings changes and
administrators' views of jobs and of the audit log are audited (docs/audit.md).
"""

# No "from __future__ import annotations": FastAPI must see the real objects in the
# annotations of the handlers below (closures over this module's dependencies).

import functools
import secrets
import time
from dataclasses import dataclass
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
from spoolvault.archive import Archive, NoPreview, NotArchived, viewers
from spoolvault.audit import (
    Action,
    Outcome,
    describe_refused_settings,
    describe_settings_change,
    list_events,
)
from spoolvault.db import Job, JobState, Printer, UserExists
from spoolvault.errors import ClientError
from spoolvault.jobs.release import (
    PrinterBlocked,
    ReleaseFailed,
    ReleaseRefused,
    ReleaseService,
)
from spoolvault.jobs.service import JobNotFound, JobNotPossible, JobService, in_thread
from spoolvault.printers.registry import (
    InvalidPrinter,
    PrinterExists,
    PrinterInUse,
    PrinterNotFound,
    add_printer,
    list_printers,
    remove_printer,
    update_printer,
)
from spoolvault.settings import (
    HIDDEN_TITLE,
    HIDE_DOCUMENT_NAMES,
    PRINT_ARCHIVE_VIEWERS,
    InvalidSetting,
    SettingsConflict,
)

SESSION_SECONDS = 300  # a release station session: long enough to pick jobs, no longer

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
    password: str | None = None
    card_number: str | None = None
    pin: str | None = None


class UserOut(BaseModel):
    username: str
    is_admin: bool


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


class SessionIn(BaseModel):
    username: str
    password: str


class SessionOut(BaseModel):
    token: str
    expires_in: int


class ReleaseIn(BaseModel):
    printer: str = Field(description="The printer to print on (its name).")


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


def _download_name(job: Job) -> str:
    ext = {"application/pdf": ".pdf", "application/postscript": ".ps", "text/plain": ".txt"}
    base = "".join(c if c.isalnum() or c in " ._-" else "_" for c in job.title)[:80].strip()
    return f"{base or f'job-{job.id}'}{ext.get(job.document_format, '')}"


def _job_out(job: Job, *, hide_title: bool = False) -> JobOut:
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


@dataclass
class _Session:
    username: str
    expires: float


def create_api(jobs: JobService, release: ReleaseService) -> FastAPI:
    """The /api/v1 application (mounted by web.app)."""
    db = jobs.db
    sessions: dict[str, _Session] = {}
    api = FastAPI(
        title="spoolvault",
        version=__version__,
        description="Secure print release: held jobs, printers, release stations.",
        openapi_url="/openapi.json",
        docs_url=None,
        redoc_url=None,
    )

    @api.exception_handler(ClientError)
    async def client_error(request: Request, exc: ClientError) -> JSONResponse:
        status = 400
        if isinstance(exc, JobNotFound | PrinterNotFound):
            status = 404
        elif isinstance(
            exc,
            PrinterBlocked
            | SettingsConflict
            | PrinterExists
            | PrinterInUse
            | JobNotPossible
            | UserExists,
        ):
            status = 409
        elif isinstance(exc, InvalidPrinter | InvalidSetting):
            status = 422
        elif isinstance(exc, ReleaseRefused):
            status = 409
        return JSONResponse({"detail": str(exc)}, status_code=status)

    @api.exception_handler(ReleaseFailed)
    async def release_failed(request: Request, exc: ReleaseFailed) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=502)

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
        session = sessions.get(creds.credentials) if creds else None
        if session is None or session.expires < time.monotonic():
            raise HTTPException(
                401, "log in at the release station first (session missing or expired)"
            )
        return session.username

    # -- administration ----------------------------------------------------------------

    @api.post("/printers", status_code=201, response_model=PrinterOut)
    async def create_printer(body: PrinterIn, user: Annotated[str, Depends(admin)]) -> PrinterOut:
        printer = await in_thread(lambda: add_printer(db, **body.model_dump()))
        await record(
            user, Action.PRINTER_CHANGE, printer=printer.name, detail=f"added {printer.uri}"
        )
        return _printer_out(printer)

    @api.patch("/printers/{name}", response_model=PrinterOut)
    async def change_printer(
        name: str, body: PrinterChange, user: Annotated[str, Depends(admin)]
    ) -> PrinterOut:
        """Change a printer's settings; only the fields sent change."""
        changes = body.model_dump(exclude_unset=True)
        printer, detail = await in_thread(update_printer, db, name, changes)
        await record(user, Action.PRINTER_CHANGE, printer=name, detail=detail)
        return _printer_out(printer)

    @api.delete("/printers/{name}", response_model=PrinterOut)
    async def delete_printer(name: str, user: Annotated[str, Depends(admin)]) -> PrinterOut:
        """Remove a printer; 409 while jobs are held on its own queue."""
        printer = await in_thread(remove_printer, db, name)
        await record(user, Action.PRINTER_CHANGE, printer=name, detail="removed")
        return _printer_out(printer)

    @api.get("/printers", response_model=list[PrinterOut])
    async def get_printers(_: Annotated[str, Depends(admin)]) -> list[PrinterOut]:
        return [_printer_out(p) for p in await in_thread(list_printers, db)]

    @api.post("/users", status_code=201, response_model=UserOut)
    async def create_user(body: UserIn, _: Annotated[str, Depends(admin)]) -> UserOut:
        if body.card_number is not None or body.pin is not None:
            raise HTTPException(422, "cards and PINs are not supported by this version yet")
        user = await in_thread(db.add_user, body.username, body.password)
        return UserOut(username=user.username, is_admin=user.is_admin)

    async def record(actor: str, action: Action, **details: Any) -> None:
        await in_thread(functools.partial(jobs.record_event, actor, action, **details))

    @api.get("/jobs", response_model=list[JobOut])
    async def get_jobs(user: Annotated[str, Depends(admin)]) -> list[JobOut]:
        found = await in_thread(lambda: jobs.list(newest_first=True))
        await record(user, Action.ADMIN_VIEW, detail=f"GET /api/v1/jobs: {len(found)} jobs")
        hide = bool((await in_thread(jobs.settings))[HIDE_DOCUMENT_NAMES])
        return [_job_out(j, hide_title=hide) for j in found]

    @api.get("/servers/{name}/settings")
    async def get_settings(name: str, _: Annotated[str, Depends(admin)]) -> dict[str, Any]:
        return await in_thread(db.get_settings, name)

    @api.patch("/servers/{name}/settings")
    async def patch_settings(
        name: str, changes: dict[str, Any], user: Annotated[str, Depends(admin)]
    ) -> dict[str, Any]:
        def change() -> dict[str, Any]:
            try:
                old = db.get_settings(name)
                new = db.update_settings(name, changes)
            except ClientError as exc:
                detail = describe_refused_settings(name, list(changes), str(exc))
                jobs.record_event(
                    user, Action.SETTINGS_CHANGE, outcome=Outcome.REFUSED, detail=detail
                )
                raise
            detail = describe_settings_change(name, old, new, list(changes))
            jobs.record_event(user, Action.SETTINGS_CHANGE, detail=detail)
            return new

        return await in_thread(change)

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
            filename=_download_name(job),
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
    async def open_session(body: SessionIn) -> SessionOut:
        if not await in_thread(db.verify_password, body.username, body.password):
            # One answer for unknown users and wrong passwords: no user enumeration.
            raise HTTPException(401, "wrong user name or password")
        token = secrets.token_urlsafe(32)
        now = time.monotonic()
        for key in [k for k, v in sessions.items() if v.expires < now]:
            del sessions[key]
        sessions[token] = _Session(body.username, now + SESSION_SECONDS)
        return SessionOut(token=token, expires_in=SESSION_SECONDS)

    @api.get("/release/jobs", response_model=list[JobOut])
    async def my_jobs(user: Annotated[str, Depends(station_user)]) -> list[JobOut]:
        held = await in_thread(
            lambda: jobs.list(owner=user, states=[JobState.HELD, JobState.FAILED])
        )
        return [_job_out(j) for j in held]

    async def own_job(job_id: int, user: str) -> Job:
        try:
            job = await in_thread(jobs.get, job_id)
        except JobNotFound:
            job = None
        if job is None or job.owner != user:
            # The same answer whether the job does not exist or is someone else's.
            raise HTTPException(404, f"you have no job {job_id}")
        return job

    @api.post("/release/jobs/{job_id}", response_model=ReleaseOut)
    async def release_job(
        job_id: int, body: ReleaseIn, user: Annotated[str, Depends(station_user)]
    ) -> ReleaseOut:
        await own_job(job_id, user)
        done = await release.release(job_id, body.printer, actor=user)
        return ReleaseOut(
            job=_job_out(done.job),
            printer_job_id=done.delivered.printer_job_id,
            detail=done.delivered.detail,
        )

    @api.delete("/release/jobs/{job_id}", response_model=JobOut)
    async def cancel_job(job_id: int, user: Annotated[str, Depends(station_user)]) -> JobOut:
        await own_job(job_id, user)
        job = await in_thread(
            lambda: jobs.cancel(
                job_id, reason=f"cancelled by {user} at a release station", actor=user
            )
        )
        return _job_out(job)

    return api
