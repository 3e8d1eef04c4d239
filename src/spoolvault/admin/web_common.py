"""What every admin page shares: the services, the page frame, notices, the session rules.

The pages themselves are one module per area (web_settings, web_printers, web_jobs,
web_users, web_audit, web_archive), each a mixin over ``AdminBase``; ``web.AdminPages``
puts them together with the routes, the login and the status page.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from starlette.datastructures import FormData
from starlette.responses import HTMLResponse

from spoolvault.archive import viewers
from spoolvault.audit import Action, AuditLog
from spoolvault.identity import IdentityService
from spoolvault.jobs.release import ReleaseService
from spoolvault.jobs.service import JobService
from spoolvault.runtime import Runtime
from spoolvault.settings import PRINT_ARCHIVE_VIEWERS
from spoolvault.util.threads import in_thread
from spoolvault.web.pages import PageSet
from spoolvault.web.sessions import LoginTokens, SessionStore, WebSession

Form = FormData | None  # a page handler's form: None for GET

SESSION_COOKIE = "spoolvault_admin"
LOGIN_COOKIE = "spoolvault_admin_login"
COOKIE_PATH = "/admin"
ADMIN_IDLE_SECONDS = 15 * 60  # an administrator's session ends after this without a request
ADMIN_MAX_SECONDS = 8 * 60 * 60  # and after a working day in any case
MAX_FORM_BYTES = 32 * 1024
_HERE = Path(__file__).parent
_STATIC = {"admin.css": "text/css", "admin.js": "text/javascript"}


@dataclass
class Notice:
    """One message for the next page (post/redirect/get)."""

    text: str
    ok: bool = True


def when(at: datetime | None) -> str:
    """A time as the administrator reads it: local, to the minute; blank for none."""
    return "" if at is None else at.astimezone().strftime("%Y-%m-%d %H:%M")


class AdminBase(PageSet):
    """The admin web interface's services and page frame (the area mixins build on it)."""

    def __init__(
        self,
        rt: Runtime,
        jobs: JobService,
        release: ReleaseService,
        identity: IdentityService,
        audit: AuditLog | None,
        *,
        tls: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rt = rt
        self.jobs = jobs
        self.release = release
        self.identity = identity
        self.audit = audit
        self.db = jobs.db
        super().__init__(_HERE, _STATIC, tls=tls, cookie_path=COOKIE_PATH)
        self.sessions = SessionStore(clock, max_age=ADMIN_MAX_SECONDS)
        self.login_tokens = LoginTokens()
        self._previews: OrderedDict[int, bytes] = OrderedDict()

    # -- responses ---------------------------------------------------------------------

    async def _context(self, session: WebSession, nav: str) -> dict[str, Any]:
        """What every page's frame needs."""
        notice, session.flash = session.flash, None
        allowed = await self._archive_allowed(session.user)
        return {
            "user": session.user,
            "csrf": session.csrf,
            "nav": nav,
            "archive_viewer": allowed,
            "notice": notice,
        }

    async def _show(
        self, session: WebSession, template: str, nav: str, status: int = 200, **context: Any
    ) -> HTMLResponse:
        frame = await self._context(session, nav)
        return self._render(template, status, **frame, **context)

    def _error(
        self, session: WebSession | None, status: int, title: str, message: str
    ) -> HTMLResponse:
        return self._render(
            "error.html",
            status,
            title=title,
            message=message,
            user=session.user if session else None,
            csrf=session.csrf if session else "",
            nav="",
            archive_viewer=False,
            notice=None,
        )

    async def _record(self, actor: str, action: Action, **details: Any) -> None:
        await in_thread(lambda: self.jobs.record_event(actor, action, **details))

    async def _archive_allowed(self, user: str) -> bool:
        settings = await in_thread(self.db.get_settings)
        return user in viewers(str(settings[PRINT_ARCHIVE_VIEWERS]))
