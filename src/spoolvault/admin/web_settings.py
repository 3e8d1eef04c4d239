"""Admin pages: the servers, and Options > General of each (the SETTINGS table)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from spoolvault.admin import actions
from spoolvault.admin.web_common import AdminBase, Form, Notice
from spoolvault.errors import Refused
from spoolvault.settings import (
    PRINT_ARCHIVING,
    SETTINGS,
    SPOOL_FILE_ENCRYPTION,
    InvalidSetting,
    SettingsConflict,
)
from spoolvault.util.threads import in_thread
from spoolvault.web.pages import form_field
from spoolvault.web.sessions import WebSession

EXCLUSION_REASON = (
    "Print Archiving keeps a readable copy of every printed document, so it needs "
    "unencrypted spool files: it cannot be on together with Spool File Encryption."
)
APPLIES_TO_NEW_JOBS = (
    "Saved settings apply to new jobs: jobs already held keep their format and stay releasable."
)
# String settings whose names say they hold a secret (the audit log's rule) are
# write-only on the page, like passwords.
SECRET_SETTINGS = frozenset(s.name for s in SETTINGS if s.type is str and actions.is_secret(s.name))


class SettingsPages(AdminBase):
    """The servers and their settings."""

    async def servers(self, request: Request, session: WebSession, form: Form) -> Response:
        servers = await in_thread(self.db.servers)
        return await self._show(session, "servers.html", "settings", servers=servers)

    async def settings(self, request: Request, session: WebSession, form: Form) -> Response:
        """Options > General of one server: every setting of the SETTINGS table."""
        server = request.path_params["server"]
        known = [s.name for s in await in_thread(self.db.servers)]
        if server not in known:
            return self._error(session, 404, "No such server", f"There is no server {server!r}.")
        current = await in_thread(self.db.get_settings, server)
        if form is None:
            return await self._settings_page(session, server, known, current)
        new: dict[str, Any] = {}
        problems: list[str] = []
        for setting in SETTINGS:
            if setting.type is bool:
                new[setting.name] = "true" in form.getlist(setting.name)
                continue
            text = form_field(form, setting.name)
            if setting.name in SECRET_SETTINGS and not text:
                new[setting.name] = current.get(setting.name)  # write-only: empty keeps it
                continue
            try:
                new[setting.name] = setting.parse(text) if setting.type is int else text.strip()
            except InvalidSetting as exc:
                problems.append(f"{setting.label}: {exc}")
        if problems:
            return await self._settings_page(
                session, server, known, current, error="; ".join(problems), status=422
            )
        changes = {k: v for k, v in new.items() if v != current.get(k)}
        if not changes:
            session.flash = Notice("Nothing changed.")
            return self._redirect(request.url.path)
        try:
            await in_thread(actions.change_settings, self.jobs, session.user, server, changes)
        except SettingsConflict as exc:
            return await self._settings_page(
                session, server, known, current, error=f"Not saved: {exc}", status=409
            )
        except Refused as exc:
            return await self._settings_page(
                session, server, known, current, error=f"Not saved: {exc}", status=422
            )
        labels = ", ".join(s.label for s in SETTINGS if s.name in changes)
        session.flash = Notice(f"Saved: {labels}. {APPLIES_TO_NEW_JOBS}")
        return self._redirect(request.url.path)

    async def _settings_page(
        self,
        session: WebSession,
        server: str,
        servers: list[str],
        current: Mapping[str, Any],
        *,
        error: str = "",
        status: int = 200,
    ) -> Response:
        # The box that would conflict with the one that is on is disabled, with the reason.
        blocked: dict[str, str] = {}
        if current[SPOOL_FILE_ENCRYPTION]:
            blocked[PRINT_ARCHIVING] = (
                "Disabled because Spool File Encryption is on. "
                + EXCLUSION_REASON
                + " Turn encryption off and save first."
            )
        elif current[PRINT_ARCHIVING]:
            blocked[SPOOL_FILE_ENCRYPTION] = (
                "Disabled because Print Archiving is on. "
                + EXCLUSION_REASON
                + " Turn archiving off and save first."
            )
        return await self._show(
            session,
            "settings.html",
            "settings",
            status,
            server=server,
            servers=servers,
            settings=SETTINGS,
            values=current,
            blocked=blocked,
            error=error,
            exclusion=EXCLUSION_REASON,
            applies=APPLIES_TO_NEW_JOBS,
            secret=SECRET_SETTINGS,
        )
