"""Admin pages: everyone's held and failed jobs, released to a printer or cancelled."""

from __future__ import annotations

from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response

from spoolvault.admin import actions
from spoolvault.admin.web_common import AdminBase, Form, Notice, when
from spoolvault.db import JobState
from spoolvault.errors import Refused, SpoolvaultError
from spoolvault.jobs.release import PrinterBlocked, ReleaseFailed
from spoolvault.printers.registry import list_printers
from spoolvault.settings import HIDDEN_TITLE, HIDE_DOCUMENT_NAMES
from spoolvault.util.threads import in_thread
from spoolvault.web.pages import form_field, size
from spoolvault.web.sessions import WebSession

MAX_LISTED = 500  # jobs on one page


class JobPages(AdminBase):
    """Everyone's held jobs."""

    async def held_jobs(self, request: Request, session: WebSession, form: Form) -> Response:
        """Everyone's held and failed jobs; POST releases one to a printer or cancels it."""
        owner = request.query_params.get("owner", "").strip() or None
        here = "/admin/jobs" + (f"?{urlencode({'owner': owner})}" if owner else "")
        if form is not None:
            action, _, job_text = form_field(form, "do").partition(":")
            if not job_text.isdigit() or len(job_text) > 12:
                return self._error(session, 400, "Unknown form", "That is not a form of ours.")
            job_id = int(job_text)
            if action == "release":
                target = form_field(form, f"printer-{job_id}")
                session.flash = await self._release(session.user, job_id, target)
            elif action == "cancel":
                session.flash = await self._cancel(session.user, job_id)
            return self._redirect(here)
        found = await in_thread(
            lambda: actions.list_jobs(
                self.jobs,
                session.user,
                "admin web interface",
                what="held jobs",
                owner=owner,
                states=(JobState.HELD, JobState.FAILED),
                limit=MAX_LISTED,
            )
        )
        hide = bool((await in_thread(self.jobs.settings))[HIDE_DOCUMENT_NAMES])
        timeouts = await in_thread(self.jobs.hold_timeouts)
        rows = [
            {
                "id": j.id,
                "owner": j.owner,
                "title": HIDDEN_TITLE if hide and j.title else (j.title or f"job {j.id}"),
                "queue": j.queue,
                "state": j.state.value,
                "reason": j.state_reason or "",
                "size": size(j.size),
                "pages": j.pages,
                "encrypted": j.encrypted,
                "submitted": when(j.created_at),
                "expires": when(self.jobs.expires_at(j, timeouts))
                if j.state is JobState.HELD
                else "",
                "default_printer": None if j.queue == "secure" else j.queue,
            }
            for j in found
        ]
        printers = [p.name for p in await in_thread(list_printers, self.db)]
        return await self._show(
            session,
            "jobs.html",
            "jobs",
            jobs=rows,
            printers=printers,
            owner=owner or "",
            truncated=len(found) >= MAX_LISTED,
        )

    async def _release(self, actor: str, job_id: int, target: str) -> Notice:
        if not target:
            return Notice(f"Job {job_id}: choose a printer first.", ok=False)
        try:
            done = await actions.release_job(self.release, actor, job_id, target)
        except PrinterBlocked as exc:
            return Notice(
                f"Job {job_id} not sent, still held: {target} is in error ({exc.health.message}).",
                ok=False,
            )
        except ReleaseFailed as exc:
            return Notice(f"Job {job_id} not printed: {exc.reason}", ok=False)
        except SpoolvaultError as exc:
            return Notice(f"Job {job_id} not sent: {exc}", ok=False)
        said = done.delivered.printer_job_id
        return Notice(
            f"Job {job_id} sent to {target}" + (f" (printer job {said})." if said else ".")
        )

    async def _cancel(self, actor: str, job_id: int) -> Notice:
        where = "in the admin web interface"
        try:
            await in_thread(lambda: actions.cancel_job(self.jobs, actor, job_id, where=where))
        except Refused as exc:
            return Notice(f"Job {job_id} not cancelled: {exc}", ok=False)
        return Notice(f"Job {job_id} cancelled; its spool file is destroyed.")
