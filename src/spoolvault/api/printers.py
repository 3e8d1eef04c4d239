"""REST: the printers (administrators)."""

# No "from __future__ import annotations": FastAPI must see the real annotations.

from typing import Annotated, Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from spoolvault.admin import actions
from spoolvault.api.auth import UserDependency
from spoolvault.db import Printer
from spoolvault.jobs.service import JobService
from spoolvault.printers.registry import list_printers
from spoolvault.util.threads import in_thread


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


class PrinterOut(BaseModel):
    name: str
    uri: str
    block_release_on_error: bool
    mode: str
    group: str
    queue: str
    snmp: bool = Field(description="Health is also asked over SNMP.")
    hold_timeout_minutes: int | None


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


def create_printers_router(jobs: JobService, *, admin: UserDependency) -> APIRouter:
    """``/printers``: add, change, remove and list printers."""
    router = APIRouter()

    @router.post("/printers", status_code=201, response_model=PrinterOut)
    async def create_printer(body: PrinterIn, user: Annotated[str, Depends(admin)]) -> PrinterOut:
        printer = await in_thread(actions.add_printer, jobs, user, body.model_dump())
        return _printer_out(printer)

    @router.patch("/printers/{name}", response_model=PrinterOut)
    async def change_printer(
        name: str, body: PrinterChange, user: Annotated[str, Depends(admin)]
    ) -> PrinterOut:
        """Change a printer's settings; only the fields sent change."""
        changes = body.model_dump(exclude_unset=True)
        return _printer_out(await in_thread(actions.change_printer, jobs, user, name, changes))

    @router.delete("/printers/{name}", response_model=PrinterOut)
    async def delete_printer(name: str, user: Annotated[str, Depends(admin)]) -> PrinterOut:
        """Remove a printer; 409 while jobs are held on its own queue."""
        return _printer_out(await in_thread(actions.remove_printer, jobs, user, name))

    @router.get("/printers", response_model=list[PrinterOut])
    async def get_printers(_: Annotated[str, Depends(admin)]) -> list[PrinterOut]:
        return [_printer_out(p) for p in await in_thread(list_printers, jobs.db)]

    return router
