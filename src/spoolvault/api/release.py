"""REST: release stations. A user opens a session with their own credentials, then sees,
releases and cancels their held jobs and those delegated to them, and names their delegates.
"""

# No "from __future__ import annotations": FastAPI must see the real annotations.

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel, Field

from spoolvault.admin import actions
from spoolvault.api.auth import UserDependency, bearer
from spoolvault.api.models import DelegatesIn, DelegatesOut, JobOut, job_out
from spoolvault.identity import IdentityService, InvalidIdentity
from spoolvault.jobs.release import ReleaseService
from spoolvault.jobs.service import JobService
from spoolvault.servers.registry import availability
from spoolvault.stations.access import cancel_for, release_for, visible_jobs
from spoolvault.util.threads import in_thread


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


def create_release_router(
    jobs: JobService,
    release: ReleaseService,
    identity: IdentityService,
    *,
    station_user: UserDependency,
    providers: bool = False,
) -> APIRouter:
    """``/release/...``: sessions, the user's jobs, their release and cancel, delegates."""
    router = APIRouter()
    sessions = identity.sessions

    @router.post("/release/session", response_model=SessionOut)
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

    @router.delete("/release/session", status_code=204)
    async def close_session(
        creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> None:
        if creds is not None:
            sessions.close(creds.credentials)

    @router.get("/release/jobs", response_model=list[JobOut])
    async def my_jobs(user: Annotated[str, Depends(station_user)]) -> list[JobOut]:
        """The user's own held and failed jobs, and those of users who delegated to them.

        ``available`` is false for a job whose print provider is unreachable now.
        """
        found = await in_thread(visible_jobs, jobs, identity, user)
        up = await in_thread(availability, jobs.db) if providers else {}
        return [job_out(j, up) for j in found]

    @router.post("/release/jobs/{job_id}", response_model=ReleaseOut)
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
            job=job_out(done.job),
            printer_job_id=done.delivered.printer_job_id,
            detail=done.delivered.detail,
        )

    @router.delete("/release/jobs/{job_id}", response_model=JobOut)
    async def cancel_job(job_id: int, user: Annotated[str, Depends(station_user)]) -> JobOut:
        job = await cancel_for(
            user, job_id, jobs=jobs, identity=identity, where="at a release station"
        )
        return job_out(job)

    @router.get("/release/delegates", response_model=DelegatesOut)
    async def my_delegates(user: Annotated[str, Depends(station_user)]) -> DelegatesOut:
        """Who may release the logged-in user's jobs."""
        info = await in_thread(identity.users.info, user)
        return DelegatesOut(users=info.delegates, groups=info.delegate_groups)

    @router.put("/release/delegates", response_model=DelegatesOut)
    async def set_my_delegates(
        body: DelegatesIn, user: Annotated[str, Depends(station_user)]
    ) -> DelegatesOut:
        """Let exactly these users, and these groups' members, release my jobs."""
        info = await in_thread(
            actions.set_delegates, jobs, identity.users, user, user, body.users, body.groups
        )
        return DelegatesOut(users=info.delegates, groups=info.delegate_groups)

    return router
