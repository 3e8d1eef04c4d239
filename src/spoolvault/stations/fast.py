"""Fast Release: a card reader beside a printer releases all of the card owner's held jobs.

``POST /api/v1/fast-release/{printer}`` with ``{"card_number": "..."}`` and the terminal's
device token (``Authorization: Bearer``), registered for that printer: a token of another
printer's device is refused (403). The card alone identifies the user (a tap), unless the
setting ``fast_release_require_pin`` is on: then a user who has a PIN must send it too
(``"pin"``). Fast Release never blocks on printer error (docs/release.md): a printer in error
still gets the jobs, and what it does not accept stays held with the reason. Each job's release
is audited; so is every refused card or device.
"""

# No "from __future__ import annotations": FastAPI must see the real annotations.

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, Field

from spoolvault.audit import Action, Outcome
from spoolvault.db import JobState
from spoolvault.errors import Refused
from spoolvault.identity import Devices, IdentityService
from spoolvault.identity.devices import DeviceInfo
from spoolvault.jobs.release import ReleaseFailed, ReleaseService
from spoolvault.jobs.service import JobService
from spoolvault.settings import FAST_RELEASE_REQUIRE_PIN
from spoolvault.stations.access import releasable_at
from spoolvault.stations.mfd import device_dependency
from spoolvault.util.threads import in_thread


class FastReleaseIn(BaseModel):
    card_number: str = Field(repr=False)
    pin: str | None = Field(
        None,
        repr=False,
        description="The user's PIN: required when the setting fast_release_require_pin is "
        "on and the user has one.",
    )


class FastReleased(BaseModel):
    id: int
    printer_job_id: int | None
    detail: str


class FastReleaseOut(BaseModel):
    username: str
    released: list[FastReleased]
    failed: list[dict[str, Any]] = Field(description='[{"id": 7, "detail": "why"}]')


def create_fast_release_router(
    jobs: JobService, release: ReleaseService, identity: IdentityService
) -> APIRouter:
    """``POST /fast-release/{printer}``."""
    router = APIRouter()
    device_auth = device_dependency(Devices(jobs.db))

    @router.post("/fast-release/{printer}", response_model=FastReleaseOut, tags=["fast release"])
    async def fast_release(
        printer: str,
        body: FastReleaseIn,
        device: Annotated[DeviceInfo, Depends(device_auth)],
    ) -> Any:
        """Release every held job of the card's owner to ``printer``; never blocked by error."""
        if device.printer != printer:
            detail = f"device {device.name} releases to {device.printer} only, not {printer}"
            await in_thread(
                lambda: jobs.record_event(
                    f"device:{device.name}",
                    Action.JOB_RELEASE_FAILED,
                    printer=printer,
                    outcome=Outcome.REFUSED,
                    detail=f"fast release refused: {detail}",
                )
            )
            raise HTTPException(403, detail)
        station = f"device:{device.name}"
        require_pin = bool((await in_thread(jobs.settings))[FAST_RELEASE_REQUIRE_PIN])
        owner = await in_thread(
            lambda: identity.card_owner(
                body.card_number,
                station=station,
                printer=printer,
                pin=body.pin,
                require_pin=require_pin,
            )
        )
        held = await in_thread(lambda: jobs.list(owner=owner, states=[JobState.HELD]))
        released: list[FastReleased] = []
        failed: list[dict[str, Any]] = []
        for job in held:
            if not releasable_at(job, printer):
                continue  # printed to another printer's own queue: released there
            try:
                done = await release.release(job.id, printer, actor=owner, fast=True)
            except (Refused, ReleaseFailed) as exc:
                failed.append({"id": job.id, "detail": str(exc)})
                continue
            released.append(
                FastReleased(
                    id=job.id,
                    printer_job_id=done.delivered.printer_job_id,
                    detail=done.delivered.detail,
                )
            )
        return FastReleaseOut(username=owner, released=released, failed=failed)

    return router
