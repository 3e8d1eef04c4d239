"""The printers jobs are released to: add, list, look up (REST, CLI and IPP share these)."""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from spoolvault.db import Database, Printer, PrinterMode
from spoolvault.errors import ClientError
from spoolvault.printers.uri import parse_printer_uri

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
RESERVED = {"secure"}  # the Find-Me queue


class InvalidPrinter(ClientError):
    """A printer definition that cannot work (HTTP 422)."""


class PrinterExists(ClientError):
    """A printer of that name exists already (HTTP 409)."""


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
) -> Printer:
    """Create a printer; its queue is /printers/<name>."""
    if not _NAME_RE.fullmatch(name):
        raise InvalidPrinter(
            f"printer name {name!r}: 1 to 64 letters, digits, '.', '_' or '-', "
            f"starting with a letter or digit"
        )
    if name in RESERVED:
        raise InvalidPrinter(f"printer name {name!r} is reserved for the Find-Me queue")
    try:
        printer_mode = PrinterMode(mode)
    except ValueError:
        modes = ", ".join(m.value for m in PrinterMode)
        raise InvalidPrinter(f"mode {mode!r}: one of {modes}") from None
    printer = Printer(
        name=name,
        uri=check_uri(uri),
        mode=printer_mode,
        block_release_on_error=block_release_on_error,
        group=group,
        snmp_community=snmp_community,
    )
    try:
        with db.session() as s:
            s.add(printer)
    except IntegrityError:
        raise PrinterExists(f"a printer named {name!r} exists already") from None
    return printer


def list_printers(db: Database) -> list[Printer]:
    with db.session(write=False) as s:
        return list(s.scalars(select(Printer).order_by(Printer.name)))


def find_printer(db: Database, name: str) -> Printer | None:
    with db.session(write=False) as s:
        return s.scalar(select(Printer).where(Printer.name == name))
