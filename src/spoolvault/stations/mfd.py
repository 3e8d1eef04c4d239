"""The MFD release API: embedded apps on multifunction printers (docs/mfd-api.md).

An administrator registers a device for one printer (``POST /api/v1/devices``) and puts
the token it is shown once into the device app. Every call of the app carries
``Authorization: Bearer <device token>``; once a user has logged in at the device, calls
for that user also carry ``X-Session-Token: <session token>``. A session is bound to the
device it was opened on, expires, and releases only to that device's printer: a token
copied to another device, or a device of another printer, gets nothing.

Release from a device is a Standard release: a printer in error that blocks release
answers 409 (Fast Release, stations/fast.py, never blocks). Every error is JSON with a
``detail`` a person can read.
"""

# No "from __future__ import annotations": FastAPI must see the real annotations.

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from spoolvault.db import Job
from spoolvault.errors import Refused
from spoolvault.identity import Devices, IdentityService
from spoolvault.identity.devices import DeviceInfo
from spoolvault.jobs.release import ReleaseFailed, ReleaseService
from spoolvault.jobs.service import JobService
from spoolvault.stations.access import (
    cancel_for,
    releasable_at,
    release_for,
    visible_jobs,
)
from spoolvault.util.threads import in_thread

_device_bearer = HTTPBearer(auto_error=False, scheme_name="device token")
SESSION_HEADER = "X-Session-Token"


class MfdDevice(BaseModel):
    name: str
    printer: str
    block_release_on_error: bool


class MfdLogin(BaseModel):
    """One of: card_number (+ pin); username + password; id_number + pin."""

    card_number: str | None = Field(None, repr=False)
    pin: str | None = Field(None, repr=False)
    username: str | None = None
    password: str | None = Field(None, repr=False)
    id_number: str | None = None


class MfdSession(BaseModel):
    token: str = Field(repr=False, description=f"Send it as {SESSION_HEADER} on the next calls.")
    expires_in: int = Field(description="Seconds until the session ends.")
    username: str
    full_name: str | None


class MfdJob(BaseModel):
    id: int
    owner: str = Field(description="The job's owner: the user, or who delegated to them.")
    title: str
    state: str = Field(description="held, or failed (with state_reason)")
    state_reason: str | None
    pages: int | None
    size: int
    created: datetime
    releasable_here: bool = Field(description="False for a job on another printer's queue.")
    pin_protected: bool = Field(description="Printed with a job PIN: ask for it to release.")


class MfdReleaseIn(BaseModel):
    job_pin: str | None = Field(None, repr=False, description="The job's PIN, if it has one.")


class MfdReleased(BaseModel):
    id: int
    state: str
    printer_job_id: int | None
    detail: str


class MfdReleaseAll(BaseModel):
    released: list[MfdReleased]
    failed: list[dict[str, Any]] = Field(description='[{"id": 7, "detail": "why"}]')


def mfd_job(job: Job, printer: str) -> MfdJob:
    return MfdJob(
        id=job.id,
        owner=job.owner,
        title=job.title,
        state=job.state.value,
        state_reason=job.state_reason,
        pages=job.pages,
        size=job.size,
        created=job.created_at,
        releasable_here=releasable_at(job, printer),
        pin_protected=job.pin_hash is not None,
    )


def device_dependency(devices: Devices) -> Callable[..., Awaitable[DeviceInfo]]:
    """A FastAPI dependency: the device whose token is in ``Authorization: Bearer``."""

    async def device(
        creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_device_bearer)],
    ) -> DeviceInfo:
        found = await in_thread(devices.authenticate, creds.credentials if creds else None)
        if found is None:
            raise HTTPException(
                401,
                "a registered device token is required (Authorization: Bearer <token>)",
                {"WWW-Authenticate": "Bearer"},
            )
        return found

    return device


def create_mfd_router(
    jobs: JobService,
    release: ReleaseService,
    identity: IdentityService,
    *,
    login: Callable[..., str],
) -> APIRouter:
    """The device app's calls (``/mfd/...``); ``login`` checks a credential form (the REST
    release session's, api/release.py). Devices are registered by api/devices.py."""
    devices = Devices(jobs.db)
    router = APIRouter()
    device_auth = device_dependency(devices)
    sessions = identity.sessions

    # -- the device app ----------------------------------------------------------------

    async def device_user(
        device: Annotated[DeviceInfo, Depends(device_auth)],
        token: Annotated[str | None, Header(alias=SESSION_HEADER)] = None,
    ) -> tuple[DeviceInfo, str]:
        session = sessions.get(token, device=device.name)
        if session is None:
            raise HTTPException(
                401, "log in at this device first (session missing, expired or from elsewhere)"
            )
        return device, session.username

    DeviceUser = Annotated[tuple[DeviceInfo, str], Depends(device_user)]

    @router.get("/mfd/device", response_model=MfdDevice, tags=["mfd"])
    async def this_device(device: Annotated[DeviceInfo, Depends(device_auth)]) -> Any:
        """Which device the token belongs to and which printer it releases to."""
        printer = await in_thread(release.printer, device.printer)
        return MfdDevice(
            name=device.name,
            printer=device.printer,
            block_release_on_error=printer.block_release_on_error,
        )

    @router.post("/mfd/session", response_model=MfdSession, tags=["mfd"])
    async def device_login(
        body: MfdLogin, device: Annotated[DeviceInfo, Depends(device_auth)]
    ) -> Any:
        """Log a user in at this device: card (+ PIN), user name + password, ID number + PIN."""
        station = f"device:{device.name}"
        username = await in_thread(login, identity, body, station, device.printer)
        info = await in_thread(identity.users.info, username)
        token = sessions.open(username, station=station, device=device.name)
        return MfdSession(
            token=token, expires_in=sessions.ttl, username=username, full_name=info.full_name
        )

    @router.delete("/mfd/session", status_code=204, tags=["mfd"])
    async def device_logout(
        device: Annotated[DeviceInfo, Depends(device_auth)],
        token: Annotated[str | None, Header(alias=SESSION_HEADER)] = None,
    ) -> None:
        if token and sessions.get(token, device=device.name) is not None:
            sessions.close(token)

    @router.get("/mfd/jobs", response_model=list[MfdJob], tags=["mfd"])
    async def device_jobs(who: DeviceUser) -> Any:
        """The user's held (and failed) jobs, and those delegated to them."""
        device, user = who
        found = await in_thread(visible_jobs, jobs, identity, user)
        return [mfd_job(j, device.printer) for j in found]

    @router.post("/mfd/jobs/{job_id}/release", response_model=MfdReleased, tags=["mfd"])
    async def device_release(job_id: int, who: DeviceUser, body: MfdReleaseIn | None = None) -> Any:
        """Release one job to this device's printer (409 if it is in error and blocks;
        403 without the right PIN for a job printed with one)."""
        device, user = who
        done = await release_for(
            user,
            job_id,
            device.printer,
            jobs=jobs,
            release=release,
            identity=identity,
            job_pin=body.job_pin if body is not None else None,
        )
        return MfdReleased(
            id=job_id,
            state=done.job.state.value,
            printer_job_id=done.delivered.printer_job_id,
            detail=done.delivered.detail,
        )

    @router.post("/mfd/jobs/release-all", response_model=MfdReleaseAll, tags=["mfd"])
    async def device_release_all(who: DeviceUser) -> Any:
        """Release every job of the user (own and delegated) that may print here."""
        device, user = who
        found = await in_thread(visible_jobs, jobs, identity, user)
        released: list[MfdReleased] = []
        failed: list[dict[str, Any]] = []
        for job in found:
            if not releasable_at(job, device.printer):
                continue
            try:
                done = await release_for(
                    user, job.id, device.printer, jobs=jobs, release=release, identity=identity
                )
            except (Refused, ReleaseFailed) as exc:
                failed.append({"id": job.id, "detail": str(exc)})
                continue
            released.append(
                MfdReleased(
                    id=job.id,
                    state=done.job.state.value,
                    printer_job_id=done.delivered.printer_job_id,
                    detail=done.delivered.detail,
                )
            )
        return MfdReleaseAll(released=released, failed=failed)

    @router.delete("/mfd/jobs/{job_id}", response_model=MfdJob, tags=["mfd"])
    async def device_cancel(job_id: int, who: DeviceUser) -> Any:
        """Cancel one held job (its file is crypto-shredded)."""
        device, user = who
        job = await cancel_for(
            user, job_id, jobs=jobs, identity=identity, where=f"at device {device.name}"
        )
        return mfd_job(job, device.printer)

    return router
