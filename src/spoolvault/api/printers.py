"""REST: the printers (administrators)."""

# No "from __future__ import annotations": FastAPI must see the real annotations.

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, Field

from spoolvault.admin import actions
from spoolvault.api.auth import UserDependency
from spoolvault.db import Printer
from spoolvault.jobs.service import JobService
from spoolvault.printers.registry import list_printers
from spoolvault.util.threads import in_thread
from spoolvault.web.hosts import points_here

_FORMATS_HELP = (
    "MIME types the printer takes (socket:// and lpd://: default PostScript and PCL; IPP: "
    "default its document-format-supported). Jobs in other formats are converted at release "
    "(docs/formats.md)."
)


def _formats_in(fields: dict[str, Any]) -> dict[str, Any]:
    if fields.get("document_formats") is not None:
        fields["document_formats"] = ",".join(fields["document_formats"]) or None
    return fields


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
    document_formats: list[str] | None = Field(None, description=_FORMATS_HELP)


class PrinterChange(BaseModel):
    uri: str | None = None
    block_release_on_error: bool | None = None
    mode: Literal["hold", "admin-release", "direct"] | None = None
    group: str | None = None
    snmp_community: str | None = None
    snmp_host: str | None = None
    snmp_port: int | None = None
    hold_timeout_minutes: int | None = None
    document_formats: list[str] | None = Field(None, description=_FORMATS_HELP)


class PrinterOut(BaseModel):
    name: str
    uri: str
    block_release_on_error: bool
    mode: str
    group: str
    queue: str
    snmp: bool = Field(description="Health is also asked over SNMP.")
    hold_timeout_minutes: int | None
    document_formats: list[str] | None = Field(
        None, description="Set by an administrator; null: the default (see PrinterIn)."
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
        document_formats=p.document_formats.split(",") if p.document_formats else None,
    )


def _no_loop(uri: str, request: Request) -> None:
    """A printer whose URI is this server itself would print each job to itself for ever."""
    server = request.scope.get("server")
    if points_here(uri, tuple(server) if server else None):
        raise HTTPException(
            400, f"{uri} is this server itself: a queue cannot print to its own server (a loop)"
        )


def create_printers_router(jobs: JobService, *, admin: UserDependency) -> APIRouter:
    """``/printers``: add, change, remove and list printers."""
    router = APIRouter()

    @router.post("/printers", status_code=201, response_model=PrinterOut)
    async def create_printer(
        body: PrinterIn, request: Request, user: Annotated[str, Depends(admin)]
    ) -> PrinterOut:
        _no_loop(body.uri, request)
        printer = await in_thread(actions.add_printer, jobs, user, _formats_in(body.model_dump()))
        return _printer_out(printer)

    @router.patch("/printers/{name}", response_model=PrinterOut)
    async def change_printer(
        name: str, body: PrinterChange, request: Request, user: Annotated[str, Depends(admin)]
    ) -> PrinterOut:
        """Change a printer's settings; only the fields sent change."""
        changes = _formats_in(body.model_dump(exclude_unset=True))
        if isinstance(changes.get("uri"), str):
            _no_loop(changes["uri"], request)
        return _printer_out(await in_thread(actions.change_printer, jobs, user, name, changes))

    @router.delete("/printers/{name}", response_model=PrinterOut)
    async def delete_printer(name: str, user: Annotated[str, Depends(admin)]) -> PrinterOut:
        """Remove a printer; 409 while jobs are held on its own queue."""
        return _printer_out(await in_thread(actions.remove_printer, jobs, user, name))

    @router.get("/printers", response_model=list[PrinterOut])
    async def get_printers(_: Annotated[str, Depends(admin)]) -> list[PrinterOut]:
        return [_printer_out(p) for p in await in_thread(list_printers, jobs.db)]

    return router
