"""Admin pages: the audit log, filtered and paged, and its CSV export (both audited)."""

from __future__ import annotations

import csv
import dataclasses
import io
import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response

from spoolvault.admin.web_common import AdminBase, Form
from spoolvault.audit import Action, Event, list_events
from spoolvault.settings import HIDDEN_TITLE, HIDE_DOCUMENT_NAMES
from spoolvault.util.threads import in_thread
from spoolvault.web.pages import SECURITY_HEADERS
from spoolvault.web.sessions import WebSession

AUDIT_PAGE = 100
AUDIT_EXPORT_MAX = 100_000
_TITLE_IN_DETAIL = re.compile(r"title (?:'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")")


def hide_titles(detail: str) -> str:
    """An audit detail with the document names it quotes replaced by (hidden)."""
    return _TITLE_IN_DETAIL.sub(f"title {HIDDEN_TITLE}", detail)


def _hidden(event: Event) -> Event:
    return dataclasses.replace(event, detail=hide_titles(event.detail))


def _cell(text: str) -> str:
    """A CSV cell a spreadsheet will not run as a formula (names come from clients)."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


class AuditPages(AdminBase):
    """The audit log."""

    def _audit_filters(self, request: Request) -> tuple[dict[str, Any], str]:
        q = request.query_params
        filters: dict[str, Any] = {}
        if actor := q.get("actor", "").strip():
            filters["actor"] = actor
        action = q.get("action", "").strip()
        if action:
            if action not in {a.value for a in Action}:
                return filters, f"unknown action {action!r}"
            filters["action"] = action
        job = q.get("job_id", "").strip()
        if job:
            if not job.isdigit() or len(job) > 12:
                return filters, f"job {job!r}: a job number"
            filters["job_id"] = int(job)
        return filters, ""

    async def _events(self, limit: int, before_id: int | None, **filters: Any) -> list[Event]:
        if self.audit is not None:
            await in_thread(self.audit.ingest_pending)  # queued by command-line tools
            await in_thread(self.audit.sync)
        return await in_thread(
            lambda: list_events(self.db, limit=limit, before_id=before_id, **filters)
        )

    async def audit_log(self, request: Request, session: WebSession, form: Form) -> Response:
        filters, error = self._audit_filters(request)
        before = request.query_params.get("before_id", "")
        before_id = int(before) if before.isdigit() and len(before) < 12 else None
        events = [] if error else await self._events(AUDIT_PAGE, before_id, **filters)
        await self._record(
            session.user,
            Action.ADMIN_VIEW,
            detail=f"admin web interface: audit log, {len(events)} events",
        )
        hide = bool((await in_thread(self.jobs.settings))[HIDE_DOCUMENT_NAMES])
        if hide:
            events = [_hidden(e) for e in events]
        query = {k: str(v) for k, v in filters.items()}
        older = (
            "/admin/audit?" + urlencode({**query, "before_id": events[-1].id})
            if len(events) == AUDIT_PAGE
            else ""
        )
        return await self._show(
            session,
            "audit.html",
            "audit",
            422 if error else 200,
            events=events,
            filters=query,
            actions=[a.value for a in Action],
            error=error,
            older=older,
            export="/admin/audit.csv" + (f"?{urlencode(query)}" if query else ""),
            hidden=hide,
        )

    async def audit_csv(self, request: Request, session: WebSession, form: Form) -> Response:
        """The filtered audit log as CSV (document names hidden with hide_document_names)."""
        filters, error = self._audit_filters(request)
        if error:
            return self._error(session, 422, "Cannot export", error)
        events = await self._events(AUDIT_EXPORT_MAX, None, **filters)
        hide = bool((await in_thread(self.jobs.settings))[HIDE_DOCUMENT_NAMES])
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(
            ["id", "at", "actor", "action", "job_id", "printer", "outcome", "detail", "hash"]
        )
        for e in events:
            e = _hidden(e) if hide else e
            writer.writerow(
                [
                    e.id,
                    e.at,
                    _cell(e.actor),
                    e.action,
                    "" if e.job_id is None else e.job_id,
                    _cell(e.printer or ""),
                    e.outcome,
                    _cell(e.detail),
                    e.hash,
                ]
            )
        await self._record(
            session.user,
            Action.ADMIN_VIEW,
            detail=f"admin web interface: audit export, {len(events)} events"
            + (" (document names hidden)" if hide else ""),
        )
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        return Response(
            out.getvalue(),
            media_type="text/csv; charset=utf-8",
            headers={
                **SECURITY_HEADERS,
                "Content-Disposition": f'attachment; filename="spoolvault-audit-{stamp}.csv"',
            },
        )
