"""REST: the servers (primary, sites, print providers) and each server's settings."""

# No "from __future__ import annotations": FastAPI must see the real annotations.

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from spoolvault.admin import actions
from spoolvault.api.auth import UserDependency
from spoolvault.jobs.service import JobService
from spoolvault.servers.registry import servers_overview, warnings_for
from spoolvault.util.threads import in_thread


def _warning_header(warnings: list[str]) -> dict[str, str]:
    # RFC 7234 §5.5 Warning (199: miscellaneous); the body stays the settings object.
    text = "; ".join(w.replace('"', "'") for w in warnings)
    return {"Warning": f'199 spoolvault "{text}"'} if warnings else {}


def create_servers_router(jobs: JobService, *, admin: UserDependency) -> APIRouter:
    """``/servers`` and ``/servers/{name}/settings``."""
    router = APIRouter()
    db = jobs.db

    @router.get("/servers")
    async def get_servers(_: Annotated[str, Depends(admin)]) -> list[dict[str, Any]]:
        """Primary and site servers with their print providers and heartbeat state.

        ``warnings`` lists why a server's settings do not reach some providers' jobs.
        """
        return await in_thread(servers_overview, db)

    @router.get("/servers/{name}/settings")
    async def get_settings(name: str, _: Annotated[str, Depends(admin)]) -> JSONResponse:
        values = await in_thread(db.get_settings, name)
        warnings = await in_thread(warnings_for, db, name, values)
        return JSONResponse(values, headers=_warning_header(warnings))

    @router.patch("/servers/{name}/settings")
    async def patch_settings(
        name: str, changes: dict[str, Any], user: Annotated[str, Depends(admin)]
    ) -> JSONResponse:
        new = await in_thread(actions.change_settings, jobs, user, name, changes)
        warnings = await in_thread(warnings_for, db, name, new)
        return JSONResponse(new, headers=_warning_header(warnings))

    return router
