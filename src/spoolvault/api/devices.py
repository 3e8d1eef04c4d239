"""REST: MFD apps and Fast Release terminals, registered by an administrator for one printer
(docs/mfd-api.md); what a device then calls is in stations/mfd.py and stations/fast.py."""

# No "from __future__ import annotations": FastAPI must see the real annotations.

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from spoolvault.api.auth import Recorder, UserDependency
from spoolvault.audit import Action
from spoolvault.identity import Devices
from spoolvault.jobs.service import JobService
from spoolvault.util.threads import in_thread


class DeviceIn(BaseModel):
    name: str = Field(description="1 to 64 letters, digits, '.', '_', '-'.")
    printer: str = Field(description="The printer this device releases to.")


class DeviceOut(BaseModel):
    name: str
    printer: str


class NewDeviceOut(DeviceOut):
    token: str = Field(repr=False, description="The device token: shown once, stored hashed.")


def create_devices_router(
    jobs: JobService, *, admin: UserDependency, record: Recorder
) -> APIRouter:
    """``/devices``: register, list and remove devices."""
    devices = Devices(jobs.db)
    router = APIRouter()

    @router.post("/devices", status_code=201, response_model=NewDeviceOut, tags=["devices"])
    async def register_device(body: DeviceIn, user: Annotated[str, Depends(admin)]) -> Any:
        """Register an MFD app or Fast Release terminal for a printer; its token is shown once."""
        new = await in_thread(devices.register, body.name, body.printer)
        await record(
            user,
            Action.DEVICE_CHANGE,
            printer=new.printer,
            detail=f"registered device {new.name} for printer {new.printer}",
        )
        return NewDeviceOut(name=new.name, printer=new.printer, token=new.token)

    @router.get("/devices", response_model=list[DeviceOut], tags=["devices"])
    async def list_devices(_: Annotated[str, Depends(admin)]) -> Any:
        return [DeviceOut(name=d.name, printer=d.printer) for d in await in_thread(devices.list)]

    @router.delete("/devices/{name}", status_code=204, tags=["devices"])
    async def remove_device(name: str, user: Annotated[str, Depends(admin)]) -> None:
        """Remove a device: its token stops working at once."""
        await in_thread(devices.remove, name)
        await record(user, Action.DEVICE_CHANGE, detail=f"removed device {name}")

    return router
