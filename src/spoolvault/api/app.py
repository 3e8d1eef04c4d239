"""The REST API under /api/v1, with its OpenAPI document at /api/v1/openapi.json.

The calls operators and scripts rely on, and that stay stable, are in docs/contract.md.

Administration uses HTTP Basic with an administrator's password; release stations open a
session with the user's own credentials (password, card with or without PIN, ID number and
PIN: spoolvault.identity) and send ``Authorization: Bearer <token>``; a user sees and
releases their own jobs and those delegated to them. MFD devices and Fast Release terminals
authenticate with a device token (stations/mfd.py, stations/fast.py).
Every error is a JSON body with a ``detail`` a person can read. Settings changes and
administrators' views of jobs and of the audit log are audited (docs/audit.md).

One router per area, each in its module: printers, users, jobs, servers (and their
settings), audit, archive, release (sessions), devices, then the stations' MFD and Fast
Release routers, and print providers' heartbeats; auth.py holds the shared dependencies.
"""

# No "from __future__ import annotations": FastAPI must see the real objects in the
# annotations of the handlers below (closures over this module's dependencies).

import functools
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from spoolvault import __version__
from spoolvault.api.archive import create_archive_router
from spoolvault.api.audit import create_audit_router
from spoolvault.api.auth import admin_dependency, station_dependency
from spoolvault.api.devices import create_devices_router
from spoolvault.api.jobs import create_jobs_router
from spoolvault.api.printers import create_printers_router
from spoolvault.api.providers import create_providers_router
from spoolvault.api.release import create_release_router, login
from spoolvault.api.servers import create_servers_router
from spoolvault.api.users import create_users_router
from spoolvault.audit import Action
from spoolvault.errors import Refused, SpoolvaultError
from spoolvault.identity import IdentityService
from spoolvault.identity.sessions import SESSION_SECONDS
from spoolvault.jobs.release import ReleaseFailed, ReleaseService
from spoolvault.jobs.service import JobService
from spoolvault.stations.fast import create_fast_release_router
from spoolvault.stations.mfd import create_mfd_router
from spoolvault.util.threads import in_thread

__all__ = ["SESSION_SECONDS", "create_api"]


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

    admin = admin_dependency(identity)
    station_user = station_dependency(identity.sessions)

    async def record(actor: str, action: Action, **details: Any) -> None:
        await in_thread(functools.partial(jobs.record_event, actor, action, **details))

    # The order of the routers is the order of the OpenAPI document's paths.
    api.include_router(create_printers_router(jobs, admin=admin))
    api.include_router(create_users_router(jobs, identity, admin=admin))
    api.include_router(create_jobs_router(jobs, admin=admin))
    api.include_router(create_servers_router(jobs, admin=admin))
    api.include_router(create_audit_router(jobs, admin=admin, record=record))
    api.include_router(create_archive_router(jobs, admin=admin, record=record))
    api.include_router(
        create_release_router(
            jobs, release, identity, station_user=station_user, providers=providers
        )
    )
    api.include_router(create_devices_router(jobs, admin=admin, record=record))
    api.include_router(create_mfd_router(jobs, release, identity, login=login))
    api.include_router(create_fast_release_router(jobs, release, identity))
    if providers:
        api.include_router(create_providers_router(jobs.db))
    return api
