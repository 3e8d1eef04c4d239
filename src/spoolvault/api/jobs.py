"""REST: everyone's jobs, as an administrator sees them (the look is audited)."""

# No "from __future__ import annotations": FastAPI must see the real annotations.

from typing import Annotated

from fastapi import APIRouter, Depends

from spoolvault.admin import actions
from spoolvault.api.auth import UserDependency
from spoolvault.api.models import JobOut, job_out
from spoolvault.jobs.service import JobService
from spoolvault.servers.registry import availability
from spoolvault.settings import HIDE_DOCUMENT_NAMES
from spoolvault.util.threads import in_thread


def create_jobs_router(jobs: JobService, *, admin: UserDependency) -> APIRouter:
    """``GET /jobs``."""
    router = APIRouter()

    @router.get("/jobs", response_model=list[JobOut])
    async def get_jobs(user: Annotated[str, Depends(admin)]) -> list[JobOut]:
        found = await in_thread(actions.list_jobs, jobs, user, "GET /api/v1/jobs")
        up = await in_thread(availability, jobs.db)
        hide = bool((await in_thread(jobs.settings))[HIDE_DOCUMENT_NAMES])
        return [job_out(j, up, hide_title=hide) for j in found]

    return router
