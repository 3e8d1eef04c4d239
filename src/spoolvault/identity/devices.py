"""Release devices: MFD embedded apps and Fast Release terminals, each bound to one printer.

An administrator registers a device for a printer and is shown its token once. The token
is 256 random bits; only its SHA-256 is stored, so a stolen database gives no usable token,
and the token is found by one indexed equality (a slow hash is not needed for random
secrets). A device's token authorizes release to its own printer only (docs/mfd-api.md).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from spoolvault.db import Database, Device, Printer
from spoolvault.db.models import utcnow
from spoolvault.errors import Conflict, NotFound
from spoolvault.identity.users import InvalidIdentity

_NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
TOKEN_PREFIX = "svd_"  # noqa: S105 (a prefix, not a secret) recognizable in a leaked config file or a secret scanner


class DeviceExists(Conflict):
    """A device of that name is registered already (409)."""


class DeviceNotFound(NotFound):
    """No device of that name (404)."""


@dataclass(frozen=True)
class DeviceInfo:
    """A registered device; never its token."""

    name: str
    printer: str


@dataclass(frozen=True)
class NewDevice:
    """A device just registered, with the token shown this once."""

    name: str
    printer: str
    token: str

    def __repr__(self) -> str:
        return f"NewDevice(name={self.name!r}, printer={self.printer!r}, token=<hidden>)"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Devices:
    """The registry of release devices."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def register(self, name: str, printer: str) -> NewDevice:
        """Register a device for ``printer``; return it with its token (shown once)."""
        if not _NAME_RE.fullmatch(name):
            raise InvalidIdentity("a device name is 1 to 64 letters, digits, '.', '_' or '-'")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        try:
            with self.db.session() as s:
                if s.scalar(select(Printer.id).where(Printer.name == printer)) is None:
                    raise InvalidIdentity(f"no printer named {printer!r}")
                if s.scalar(select(Device.id).where(Device.name == name)) is not None:
                    raise DeviceExists(f"a device named {name!r} exists already")
                s.add(
                    Device(
                        name=name, printer=printer, token_hash=_digest(token), created_at=utcnow()
                    )
                )
        except IntegrityError:
            raise DeviceExists(f"a device named {name!r} exists already") from None
        return NewDevice(name, printer, token)

    def authenticate(self, token: str | None) -> DeviceInfo | None:
        """The device this token belongs to, or None."""
        if not token:
            return None
        with self.db.session(write=False) as s:
            device = s.scalar(select(Device).where(Device.token_hash == _digest(token)))
        return None if device is None else DeviceInfo(device.name, device.printer)

    def list(self) -> list[DeviceInfo]:
        with self.db.session(write=False) as s:
            return [
                DeviceInfo(d.name, d.printer)
                for d in s.scalars(select(Device).order_by(Device.name))
            ]

    def remove(self, name: str) -> None:
        with self.db.session() as s:
            result = s.execute(delete(Device).where(Device.name == name))
            if not getattr(result, "rowcount", 0):
                raise DeviceNotFound(f"no device named {name!r}")
