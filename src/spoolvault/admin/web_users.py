"""Admin pages: users, their cards, PINs and passwords (write-only), groups, delegates."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response

from spoolvault.admin import actions
from spoolvault.admin.web_common import AdminBase, Form, Notice
from spoolvault.errors import ClientError, Refused
from spoolvault.identity import UserInfo
from spoolvault.util.threads import in_thread
from spoolvault.web.pages import form_field
from spoolvault.web.sessions import WebSession


def _names(text: str) -> list[str]:
    """Comma- or space-separated names, in order, without repeats."""
    seen: dict[str, None] = {}
    for name in re.split(r"[,\s]+", text):
        if name:
            seen[name] = None
    return list(seen)


class UserPages(AdminBase):
    """The users."""

    async def users(self, request: Request, session: WebSession, form: Form) -> Response:
        """Users with what they have (never the secrets); POST adds one."""
        error = ""
        entered: dict[str, str] = {}
        if form is not None:
            username = form_field(form, "username").strip()
            entered = {k: form_field(form, k) for k in ("username", "full_name", "email")}
            fields: dict[str, Any] = {}
            for key in ("password", "card_number", "pin"):  # write-only
                if value := form_field(form, key):
                    fields[key] = value
            for key in ("full_name", "email"):
                if value := form_field(form, key).strip():
                    fields[key] = value
            if groups := _names(form_field(form, "groups")):
                fields["groups"] = groups
            if form_field(form, "is_admin") == "true":
                fields["is_admin"] = True
            try:
                await in_thread(
                    actions.add_user, self.jobs, self.identity.users, session.user, username, fields
                )
            except Refused as exc:
                error = f"Not added: {exc}"
            else:
                session.flash = Notice(f"User {username} added.")
                return self._redirect("/admin/users")
        found = await in_thread(self.identity.users.list)
        return await self._show(
            session,
            "users.html",
            "users",
            422 if error else 200,
            users=found,
            error=error,
            entered=entered,
        )

    async def user(self, request: Request, session: WebSession, form: Form) -> Response:
        """One user: card, PIN, password (write-only), details, groups, delegates."""
        name = request.path_params["name"]
        try:
            info = await in_thread(self.identity.users.info, name)
        except Refused:
            return self._error(session, 404, "No such user", f"There is no user {name!r}.")
        error = ""
        if form is not None:
            try:
                notice = await self._change_user(session, info, form)
            except Refused as exc:
                error = f"Not saved: {exc}"
            else:
                session.flash = Notice(notice)
                return self._redirect(f"/admin/users/{quote(name)}")
            info = await in_thread(self.identity.users.info, name)
        return await self._show(
            session, "user.html", "users", 422 if error else 200, info=info, error=error
        )

    async def _change_user(self, session: WebSession, info: UserInfo, form: FormData) -> str:
        fields: dict[str, Any] = {}
        for key in ("password", "card_number", "pin"):  # write-only: empty keeps
            if value := form_field(form, key):
                fields[key] = value
        if form_field(form, "clear_card") == "true":
            fields["card_number"] = None
        if form_field(form, "clear_pin") == "true":
            fields["pin"] = None
        for key in ("full_name", "email", "id_number"):
            text: str | None = form_field(form, key).strip() or None
            if text != getattr(info, key):
                fields[key] = text
        groups = _names(form_field(form, "groups"))
        if groups != info.groups:
            fields["groups"] = groups
        for key in ("is_admin", "disabled"):
            flag = form_field(form, key) == "true"
            if flag != getattr(info, key):
                fields[key] = flag
        if info.username == session.user and (
            fields.get("is_admin") is False or fields.get("disabled") is True
        ):
            raise ClientError(
                "you cannot take away your own administrator rights or disable yourself here "
                "(another administrator can)"
            )
        users, groups_ = (
            _names(form_field(form, "delegates")),
            _names(form_field(form, "delegate_groups")),
        )
        said = []
        if fields:
            await in_thread(
                actions.change_user,
                self.jobs,
                self.identity.users,
                session.user,
                info.username,
                fields,
            )
            said.append(actions.changed_fields(set(fields)))
        if users != info.delegates or groups_ != info.delegate_groups:
            await in_thread(
                actions.set_delegates,
                self.jobs,
                self.identity.users,
                session.user,
                info.username,
                users,
                groups_,
            )
            said.append("delegates")
        return f"User {info.username} saved: {', '.join(said)}." if said else "Nothing changed."
