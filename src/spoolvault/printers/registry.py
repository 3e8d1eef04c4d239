"""The printers jobs are released to: add, list, look up (REST, CLI and IPP share these)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from spoolvault.db import FILE_STATES, Database, Job, Printer, PrinterMode
from spoolvault.errors import Conflict, Invalid, NotFound
from spoolvault.printers.uri import parse_printer_uri

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_HOST_RE = re.compile(r"[A-Za-z0-9:.%_-]{1,253}")
RESERVED = {"secure"}  # the Find-Me queue
MAX_HOLD_MINUTES = 525_600  # as the hold_timeout_minutes setting


class InvalidPrinter(Invalid):
    """A printer definition that cannot work (HTTP 422)."""


class PrinterExists(Conflict):
    """A printer of that name exists already (HTTP 409)."""


class PrinterNotFound(NotFound):
    """No printer of that name (HTTP 404)."""


class PrinterInUse(Conflict):
    """The printer still has jobs on its queue (HTTP 409)."""


def check_uri(uri: str) -> str:
    """Accept ipp://, ipps://, socket://host[:port] and lpd://host[:port]/queue."""
    try:
        parse_printer_uri(uri)
    except ValueError as exc:
        raise InvalidPrinter(str(exc)) from None
    return uri


def add_printer(
    db: Database,
    *,
    name: str,
    uri: str,
    mode: str = PrinterMode.HOLD,
    block_release_on_error: bool = False,
    group: str = "default",
    snmp_community: str | None = None,
    snmp_host: str | None = None,
    snmp_port: int | None = None,
    hold_timeout_minutes: int | None = None,
    document_formats: str | None = None,
) -> Printer:
    """Create a printer; its queue is /printers/<name>.

    SNMP health is asked when ``snmp_community`` is set, of ``snmp_host`` (default: the
    URI's host) at ``snmp_port`` (default 161). ``hold_timeout_minutes`` overrides the
    server's hold timeout for jobs held on this printer's own queue. ``document_formats``
    (comma-separated MIME types) is what it takes: for socket:// and lpd:// printers
    (default PostScript and PCL), over what an IPP printer says it takes.
    """
    if not _NAME_RE.fullmatch(name):
        raise InvalidPrinter(
            f"printer name {name!r}: 1 to 64 letters, digits, '.', '_' or '-', "
            f"starting with a letter or digit"
        )
    if name in RESERVED:
        raise InvalidPrinter(f"printer name {name!r} is reserved for the Find-Me queue")
    printer_mode = _mode(mode)
    _check_options(snmp_host=snmp_host, snmp_port=snmp_port, hold_timeout=hold_timeout_minutes)
    printer = Printer(
        name=name,
        uri=check_uri(uri),
        mode=printer_mode,
        block_release_on_error=block_release_on_error,
        group=group,
        snmp_community=snmp_community,
        snmp_host=snmp_host,
        snmp_port=snmp_port,
        hold_timeout_minutes=hold_timeout_minutes,
        document_formats=check_formats(document_formats),
    )
    try:
        with db.session() as s:
            s.add(printer)
    except IntegrityError:
        raise PrinterExists(f"a printer named {name!r} exists already") from None
    return printer


def _mode(mode: str) -> PrinterMode:
    try:
        return PrinterMode(mode)
    except ValueError:
        modes = ", ".join(m.value for m in PrinterMode)
        raise InvalidPrinter(f"mode {mode!r}: one of {modes}") from None


def _check_options(
    *, snmp_host: str | None, snmp_port: int | None, hold_timeout: int | None
) -> None:
    if snmp_port is not None and not 1 <= snmp_port <= 65535:
        raise InvalidPrinter(f"snmp_port {snmp_port}: a UDP port, 1 to 65535")
    if snmp_host is not None and not _HOST_RE.fullmatch(snmp_host):
        raise InvalidPrinter(f"snmp_host {snmp_host!r}: a host name or IP address")
    if hold_timeout is not None and not 1 <= hold_timeout <= MAX_HOLD_MINUTES:
        raise InvalidPrinter(
            f"hold_timeout_minutes {hold_timeout}: 1 to {MAX_HOLD_MINUTES} (one year)"
        )


_MIME_RE = re.compile(
    r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,63}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,63}"
)


def check_formats(formats: str | None) -> str | None:
    """A comma-separated list of MIME types, normalised (``None`` or empty: the default)."""
    if formats is None:
        return None
    items = [f.strip() for f in formats.split(",") if f.strip()]
    if not items:
        return None
    for item in items:
        if not _MIME_RE.fullmatch(item):
            raise InvalidPrinter(
                f"document format {item!r}: a MIME type such as application/postscript"
            )
    return ",".join(dict.fromkeys(items))


# What update_printer may change (the name is the queue's name: it stays).
CHANGEABLE = (
    "uri",
    "mode",
    "block_release_on_error",
    "group",
    "snmp_community",
    "snmp_host",
    "snmp_port",
    "hold_timeout_minutes",
    "document_formats",
)
REQUIRED = frozenset({"uri", "mode", "block_release_on_error", "group"})


def update_printer(db: Database, name: str, changes: Mapping[str, Any]) -> tuple[Printer, str]:
    """Change some of a printer's settings; return it and a description of the change."""
    unknown = sorted(set(changes) - set(CHANGEABLE))
    if unknown:
        raise InvalidPrinter(
            f"cannot change {', '.join(unknown)} (changeable: {', '.join(CHANGEABLE)})"
        )
    cleared = sorted(k for k in REQUIRED if k in changes and changes[k] is None)
    if cleared:
        raise InvalidPrinter(f"{', '.join(cleared)} cannot be empty")
    with db.session() as s:
        printer = s.scalar(select(Printer).where(Printer.name == name))
        if printer is None:
            raise PrinterNotFound(f"no printer named {name!r}")
        values = {k: getattr(printer, k) for k in CHANGEABLE} | dict(changes)
        if "uri" in changes:
            check_uri(str(values["uri"]))
        values["mode"] = _mode(str(values["mode"]))
        values["document_formats"] = check_formats(values["document_formats"])
        _check_options(
            snmp_host=values["snmp_host"],
            snmp_port=values["snmp_port"],
            hold_timeout=values["hold_timeout_minutes"],
        )
        said = []
        for key in CHANGEABLE:
            old, new = getattr(printer, key), values[key]
            if old != new:
                shown = "***" if key == "snmp_community" else f"{old} -> {new}"
                said.append(f"{key} {shown}")
                setattr(printer, key, new)
    return printer, f"printer {name}: " + (", ".join(said) or "no change")


def remove_printer(db: Database, name: str) -> Printer:
    """Remove a printer. Refused while jobs are held on its own queue (they would be lost)."""
    with db.session() as s:
        printer = s.scalar(select(Printer).where(Printer.name == name))
        if printer is None:
            raise PrinterNotFound(f"no printer named {name!r}")
        waiting = s.scalar(
            select(func.count())
            .select_from(Job)
            .where(Job.queue == name, Job.state.in_([st.value for st in FILE_STATES]))
        )
        if waiting:
            raise PrinterInUse(
                f"printer {name} has {waiting} jobs held or failed on its queue; release or "
                f"cancel them first"
            )
        s.delete(printer)
    return printer


def list_printers(db: Database) -> list[Printer]:
    with db.session(write=False) as s:
        return list(s.scalars(select(Printer).order_by(Printer.name)))


def find_printer(db: Database, name: str) -> Printer | None:
    with db.session(write=False) as s:
        return s.scalar(select(Printer).where(Printer.name == name))
