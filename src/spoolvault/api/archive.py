"""REST: the print archive (only the approved administrators of print_archive_viewers)."""

# No "from __future__ import annotations": FastAPI must see the real annotations.

from datetime import datetime
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel

from spoolvault.api.auth import Recorder, UserDependency
from spoolvault.archive import Archive, NoPreview, NotArchived, download_name, viewers
from spoolvault.audit import Action, Outcome
from spoolvault.db import Job
from spoolvault.jobs.errors import JobNotFound
from spoolvault.jobs.service import JobService
from spoolvault.settings import PRINT_ARCHIVE_VIEWERS
from spoolvault.util.threads import in_thread


class ArchivedOut(BaseModel):
    id: int
    owner: str
    title: str
    queue: str
    printer: str | None
    size: int
    pages: int | None
    document_format: str
    submitted: datetime
    printed: datetime | None


def _archived_out(job: Job) -> ArchivedOut:
    return ArchivedOut(
        id=job.id,
        owner=job.owner,
        title=job.title,
        queue=job.queue,
        printer=job.printer,
        size=job.size,
        pages=job.pages,
        document_format=job.document_format,
        submitted=job.created_at,
        printed=job.completed_at,
    )


def create_archive_router(
    jobs: JobService, *, admin: UserDependency, record: Recorder
) -> APIRouter:
    """``/archive``: list archived documents, download one, preview its first page."""
    router = APIRouter()
    db = jobs.db

    async def archive_viewer(user: Annotated[str, Depends(admin)]) -> str:
        allowed = viewers(str((await in_thread(db.get_settings))[PRINT_ARCHIVE_VIEWERS]))
        if user not in allowed:
            await record(
                user,
                Action.ARCHIVE_VIEW,
                outcome=Outcome.REFUSED,
                detail="not an approved administrator of the print archive",
            )
            raise HTTPException(
                403, "only approved administrators (setting print_archive_viewers) may do this"
            )
        return user

    def the_archive() -> Archive:
        if jobs.archive is None:
            raise HTTPException(404, "this server keeps no print archive")
        return jobs.archive

    async def archived_job(job_id: int, user: str) -> tuple[Job, Path]:
        try:
            job = await in_thread(jobs.get, job_id)
            path = the_archive().document(job)
        except (JobNotFound, NotArchived):
            await record(
                user,
                Action.ARCHIVE_VIEW,
                job_id=job_id,
                outcome=Outcome.REFUSED,
                detail="no archived document",
            )
            raise HTTPException(404, f"job {job_id} has no archived document") from None
        return job, path

    @router.get("/archive", response_model=list[ArchivedOut])
    async def list_archive(
        user: Annotated[str, Depends(archive_viewer)],
        owner: str | None = None,
        printer: str | None = None,
        title: Annotated[str | None, Query(description="Part of the document name.")] = None,
        since: datetime | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        before_id: Annotated[int | None, Query(ge=1)] = None,
    ) -> list[ArchivedOut]:
        """Archived documents, newest first (only while Print Archiving keeps them)."""
        archive = the_archive()
        found = await in_thread(
            lambda: archive.list(
                owner=owner,
                printer=printer,
                title=title,
                since=since,
                limit=limit,
                before_id=before_id,
            )
        )
        await record(user, Action.ARCHIVE_VIEW, detail=f"listed {len(found)} documents")
        return [_archived_out(j) for j in found]

    @router.get("/archive/{job_id}/document")
    async def archived_document(
        job_id: int, user: Annotated[str, Depends(archive_viewer)]
    ) -> FileResponse:
        """The archived document, as it was printed."""
        job, path = await archived_job(job_id, user)
        await record(user, Action.ARCHIVE_VIEW, job_id=job_id, detail="downloaded the document")
        return FileResponse(
            path,
            media_type=job.document_format,
            filename=download_name(job),
        )

    @router.get(
        "/archive/{job_id}/preview.png",
        responses={200: {"content": {"image/png": {}}}},
        response_class=Response,
    )
    async def archived_preview(
        job_id: int, user: Annotated[str, Depends(archive_viewer)]
    ) -> Response:
        """The document's first page as a PNG (Ghostscript, for PDF and PostScript)."""
        job, _ = await archived_job(job_id, user)
        try:
            png = await in_thread(the_archive().preview, job)
        except NoPreview as exc:
            await record(user, Action.ARCHIVE_VIEW, job_id=job_id, detail=str(exc))
            raise HTTPException(404, str(exc)) from None
        await record(user, Action.ARCHIVE_VIEW, job_id=job_id, detail="previewed the first page")
        return Response(png, media_type="image/png")

    return router
