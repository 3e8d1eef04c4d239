"""The page behind an expiry reminder's link: keep a held job one more hold timeout, once.

GET shows the job and a button; only the POST changes anything, so a mail scanner that
follows links does not spend the one extension. The link itself is the credential
(`spoolvault.jobs.reminders.link_token`): no login, and nothing else it can do.
"""

from __future__ import annotations

import html

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from spoolvault.identity.cardkey import CardKey
from spoolvault.jobs.errors import JobNotFound, JobNotPossible
from spoolvault.jobs.reminders import check_token, token_job_id
from spoolvault.jobs.service import JobService
from spoolvault.util.threads import in_thread

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:34rem;margin:2rem auto;padding:0 1rem;"
    "line-height:1.5}button{font-size:1.2rem;padding:.7rem 1.4rem}"
)


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width,initial-scale=1'>"
        f"<title>{html.escape(title)} - spoolvault</title><style>{_STYLE}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>{body}</body></html>",
        status_code=status,
        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
    )


def hold_routes(jobs: JobService, key: CardKey) -> list[Route]:
    """``/hold/extend/{token}`` (GET: the job and a button; POST: keep it longer)."""

    async def extend(request: Request) -> Response:
        token = request.path_params["token"]
        job_id = token_job_id(token)
        try:
            job = await in_thread(jobs.get, job_id) if job_id is not None else None
        except JobNotFound:
            job = None
        if job is None or not check_token(key, job, token):
            return _page("Link not valid", "<p>This link is not valid.</p>", 404)
        name = html.escape(job.title or f"job {job.id}")
        if request.method == "POST":
            job_id, owner = job.id, job.owner
            try:
                kept = await in_thread(lambda: jobs.extend_hold(job_id, actor=owner))
            except JobNotPossible as exc:
                return _page("Not kept longer", f"<p>{html.escape(str(exc))}.</p>", 409)
            until = kept.hold_extended_until
            shown = f"{until:%Y-%m-%d %H:%M} UTC" if until else "later"
            return _page("Kept longer", f"<p>“{name}” is now held until {shown}.</p>")
        expires = await in_thread(jobs.expires_at, job)
        return _page(
            "Keep your print job longer?",
            f"<p>“{name}” (queue {html.escape(job.queue)}) is held until "
            f"{expires:%Y-%m-%d %H:%M} UTC, state {html.escape(job.state.value)}.</p>"
            "<form method=post><button type=submit>Keep it longer</button></form>"
            "<p>This can be done once per job.</p>",
        )

    return [Route("/hold/extend/{token}", extend, methods=["GET", "POST"])]
