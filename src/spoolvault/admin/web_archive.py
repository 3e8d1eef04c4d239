"""Admin pages: the Print Archive, for the approved administrators of print_archive_viewers."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, Response

from spoolvault.admin.web_common import AdminBase, Form, when
from spoolvault.archive import NoPreview, NotArchived, download_name
from spoolvault.audit import Action, Outcome
from spoolvault.db import Job
from spoolvault.jobs.errors import JobNotFound
from spoolvault.settings import PRINT_ARCHIVING
from spoolvault.util.threads import in_thread
from spoolvault.web.pages import size
from spoolvault.web.sessions import WebSession

PREVIEW_CACHE = 16  # rendered first pages kept in memory (the page and its <img> ask twice)


def _archived_row(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "owner": job.owner,
        "title": job.title or f"job {job.id}",
        "queue": job.queue,
        "printer": job.printer or "",
        "size": size(job.size),
        "pages": job.pages,
        "format": job.document_format,
        "submitted": when(job.created_at),
        "printed": when(job.completed_at),
    }


class ArchivePages(AdminBase):
    """The print archive."""

    async def _archive_refused(self, session: WebSession, job_id: int | None = None) -> Response:
        if await self._archive_allowed(session.user):
            if self.jobs.archive is None:
                return self._error(
                    session, 404, "No print archive", "This server keeps no print archive."
                )
            return self._error(
                session,
                404,
                "Not archived",
                f"Job {job_id} has no archived document (purged, never kept, or not printed).",
            )
        # The same event as the REST API's refusal.
        await self._record(
            session.user,
            Action.ARCHIVE_VIEW,
            outcome=Outcome.REFUSED,
            detail="not an approved administrator of the print archive",
        )
        return self._error(
            session,
            403,
            "Approved administrators only",
            "Only the administrators named in the setting 'Approved administrators (Print "
            "Archive)' (print_archive_viewers) may see the print archive.",
        )

    async def archive(self, request: Request, session: WebSession, form: Form) -> Response:
        """Archived documents, newest first, with filters."""
        archive = self.jobs.archive
        if archive is None or not await self._archive_allowed(session.user):
            return await self._archive_refused(session)
        q = request.query_params
        filters = {k: q.get(k, "").strip() for k in ("owner", "printer", "title", "since")}
        since: datetime | None = None
        error = ""
        if filters["since"]:
            try:
                since = datetime.fromisoformat(filters["since"])
                if since.tzinfo is None:
                    since = since.astimezone()  # the server's local time, as people mean it
            except ValueError:
                error = f"since {filters['since']!r}: a date such as 2026-11-24"
        found: list[Job] = []
        if not error:
            found = await in_thread(
                lambda: archive.list(
                    owner=filters["owner"] or None,
                    printer=filters["printer"] or None,
                    title=filters["title"] or None,
                    since=since,
                    limit=200,
                )
            )
        await self._record(
            session.user, Action.ARCHIVE_VIEW, detail=f"listed {len(found)} documents"
        )
        settings = await in_thread(self.db.get_settings)
        return await self._show(
            session,
            "archive.html",
            "archive",
            422 if error else 200,
            documents=[_archived_row(j) for j in found],
            filters=filters,
            error=error,
            archiving=bool(settings[PRINT_ARCHIVING]),
        )

    async def _archived_job(self, session: WebSession, job_id: int) -> Job | Response:
        archive = self.jobs.archive
        if archive is None or not await self._archive_allowed(session.user):
            return await self._archive_refused(session, job_id)
        try:
            job = await in_thread(self.jobs.get, job_id)
            await in_thread(archive.document, job)
        except (JobNotFound, NotArchived):
            await self._record(
                session.user,
                Action.ARCHIVE_VIEW,
                job_id=job_id,
                outcome=Outcome.REFUSED,
                detail="no archived document",
            )
            return await self._archive_refused(session, job_id)
        return job

    async def _preview(self, session: WebSession, job: Job) -> bytes:
        """The first page as PNG (rendered once, then kept briefly); NoPreview says why not."""
        cached = self._previews.get(job.id)
        if cached is not None:
            return cached
        archive = self.jobs.archive
        assert archive is not None
        try:
            png = await in_thread(archive.preview, job)
        except NoPreview as exc:
            await self._record(session.user, Action.ARCHIVE_VIEW, job_id=job.id, detail=str(exc))
            raise
        await self._record(
            session.user, Action.ARCHIVE_VIEW, job_id=job.id, detail="previewed the first page"
        )
        self._previews[job.id] = png
        while len(self._previews) > PREVIEW_CACHE:
            self._previews.popitem(last=False)
        return png

    async def archived(self, request: Request, session: WebSession, form: Form) -> Response:
        """One archived document: its metadata, first-page preview and download."""
        found = await self._archived_job(session, request.path_params["job_id"])
        if isinstance(found, Response):
            return found
        no_preview = ""
        try:
            await self._preview(session, found)
        except NoPreview as exc:
            no_preview = str(exc)
        return await self._show(
            session, "archived.html", "archive", doc=_archived_row(found), no_preview=no_preview
        )

    async def preview(self, request: Request, session: WebSession, form: Form) -> Response:
        found = await self._archived_job(session, request.path_params["job_id"])
        if isinstance(found, Response):
            return found
        try:
            png = await self._preview(session, found)
        except NoPreview as exc:
            return Response(str(exc), status_code=404, media_type="text/plain")
        self._previews.pop(found.id, None)  # shown: the next look renders (and audits) again
        return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})

    async def document(self, request: Request, session: WebSession, form: Form) -> Response:
        found = await self._archived_job(session, request.path_params["job_id"])
        if isinstance(found, Response):
            return found
        archive = self.jobs.archive
        assert archive is not None
        path = await in_thread(archive.document, found)
        await self._record(
            session.user, Action.ARCHIVE_VIEW, job_id=found.id, detail="downloaded the document"
        )
        return FileResponse(
            path,
            media_type=found.document_format,
            filename=download_name(found),
            headers={"Cache-Control": "no-store"},
        )
