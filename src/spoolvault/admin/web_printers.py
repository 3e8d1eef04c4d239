"""Admin pages: the printers with their health; add, change and remove one."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response

from spoolvault.admin import actions
from spoolvault.admin.web_common import AdminBase, Form, Notice
from spoolvault.db import PrinterMode
from spoolvault.errors import ClientError, Refused
from spoolvault.printers.registry import find_printer, list_printers
from spoolvault.stations.web import printer_states
from spoolvault.util.threads import in_thread
from spoolvault.web.pages import form_field
from spoolvault.web.sessions import WebSession

FAST_RELEASE_NOTE = (
    "Fast Release terminals cannot block: a card tap releases all of the user's jobs at "
    "once, whatever the printer's state."
)
MODES = {
    PrinterMode.HOLD.value: "hold: jobs wait until their owner releases them",
    PrinterMode.ADMIN_RELEASE.value: "admin-release: only an administrator releases jobs",
    PrinterMode.DIRECT.value: "direct: jobs print at once, without holding",
}


class PrinterPages(AdminBase):
    """The printers."""

    async def printers(self, request: Request, session: WebSession, form: Form) -> Response:
        """The printers with their health; POST adds one."""
        error = ""
        entered: dict[str, str] = {}
        if form is not None:
            entered = {k: form_field(form, k) for k in _PRINTER_FIELDS if k != "snmp_community"}
            try:
                fields = _printer_fields(form, adding=True)
                printer = await in_thread(actions.add_printer, self.jobs, session.user, fields)
            except Refused as exc:
                error = f"Not added: {exc}"
            else:
                session.flash = Notice(
                    f"Printer {printer.name} added; its queue is /printers/{printer.name}."
                )
                return self._redirect("/admin/printers")
        printers = await in_thread(list_printers, self.db)
        states = {s.name: s for s in await printer_states(self.release, printers)}
        return await self._show(
            session,
            "printers.html",
            "printers",
            422 if error else 200,
            printers=printers,
            states=states,
            modes=MODES,
            error=error,
            entered=entered,
            fast_note=FAST_RELEASE_NOTE,
        )

    async def printer(self, request: Request, session: WebSession, form: Form) -> Response:
        """One printer's settings; POST changes or removes it."""
        name = request.path_params["name"]
        printer = await in_thread(find_printer, self.db, name)
        if printer is None:
            return self._error(session, 404, "No such printer", f"There is no printer {name!r}.")
        error = ""
        if form is not None:
            try:
                if form_field(form, "do") == "remove":
                    await in_thread(actions.remove_printer, self.jobs, session.user, name)
                    session.flash = Notice(f"Printer {name} removed.")
                    return self._redirect("/admin/printers")
                fields = _printer_fields(form, adding=False)
                changes = {k: v for k, v in fields.items() if getattr(printer, k) != v}
                if changes:
                    await in_thread(actions.change_printer, self.jobs, session.user, name, changes)
                    session.flash = Notice(f"Printer {name} saved.")
                else:
                    session.flash = Notice("Nothing changed.")
                return self._redirect(f"/admin/printers/{quote(name)}")
            except Refused as exc:
                error = f"Not saved: {exc}"
        [state] = await printer_states(self.release, [printer])
        return await self._show(
            session,
            "printer.html",
            "printers",
            422 if error else 200,
            printer=printer,
            state=state,
            modes=MODES,
            error=error,
            fast_note=FAST_RELEASE_NOTE,
        )


# -- the printer form ---------------------------------------------------------------------

_PRINTER_FIELDS = (
    "name",
    "uri",
    "mode",
    "group",
    "snmp_community",
    "snmp_host",
    "snmp_port",
    "hold_timeout_minutes",
    "document_formats",
)


def _optional_int(form: FormData, name: str, label: str) -> int | None:
    text = form_field(form, name).strip()
    if not text:
        return None
    if not text.isdigit() or len(text) > 9:
        raise ClientError(f"{label}: a whole number, not {text!r}")
    return int(text)


def _printer_fields(form: FormData, *, adding: bool) -> dict[str, Any]:
    """A printer form's values as the registry takes them (blank: the default)."""
    fields: dict[str, Any] = {
        "uri": form_field(form, "uri").strip(),
        "mode": form_field(form, "mode") or PrinterMode.HOLD.value,
        "group": form_field(form, "group").strip() or "default",
        "block_release_on_error": form_field(form, "block_release_on_error") == "true",
        "snmp_host": form_field(form, "snmp_host").strip() or None,
        "snmp_port": _optional_int(form, "snmp_port", "SNMP port"),
        "hold_timeout_minutes": _optional_int(form, "hold_timeout_minutes", "Hold timeout"),
        "document_formats": form_field(form, "document_formats").strip() or None,
    }
    community = form_field(form, "snmp_community")  # write-only: empty keeps it
    if adding:
        fields["name"] = form_field(form, "name").strip()
        fields["snmp_community"] = community or None
    elif form_field(form, "clear_snmp_community") == "true":
        fields["snmp_community"] = None
    elif community:
        fields["snmp_community"] = community
    return fields
