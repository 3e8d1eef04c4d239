"""REST: the audit log (administrators; every look is itself audited)."""

# No "from __future__ import annotations": FastAPI must see the real annotations.

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import BaseModel, Field

from spoolvault.api.auth import Recorder, UserDependency
from spoolvault.audit import Action, list_events
from spoolvault.jobs.service import JobService
from spoolvault.util.threads import in_thread


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


def create_audit_router(jobs: JobService, *, admin: UserDependency, record: Recorder) -> APIRouter:
    """``GET /audit``."""
    router = APIRouter()

    @router.get("/audit", response_model=list[AuditEventOut])
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
                jobs.db, limit=limit, before_id=before_id, job_id=job_id, actor=actor, action=action
            )
        )
        # Recorded after the query: the answer shows what was there before this look.
        await record(user, Action.ADMIN_VIEW, detail=f"GET /api/v1/audit: {len(events)} events")
        return [AuditEventOut(**vars(e)) for e in events]

    return router
