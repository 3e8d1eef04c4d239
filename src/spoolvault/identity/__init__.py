"""Identity: users, cards, PINs, groups, delegation, lockout, sessions, directory sync.

Front ends (REST release sessions, the MFD API, Fast Release, the web release station) use
``IdentityService``; administration uses ``Users`` and ``Devices``. See docs/identity.md.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from spoolvault.db import Database, User
from spoolvault.errors import AuthenticationFailed, LockedOut
from spoolvault.identity.cardkey import CARD_KEY_FILE, CardKey, card_key_path
from spoolvault.identity.devices import DeviceExists, DeviceNotFound, Devices
from spoolvault.identity.lockout import Lockout
from spoolvault.identity.service import IdentityService
from spoolvault.identity.sessions import Session, SessionStore
from spoolvault.identity.users import (
    IdentityConflict,
    InvalidIdentity,
    UserInfo,
    UserNotFound,
    Users,
)


def open_card_key(data_root: Path, db: Database) -> CardKey:
    """The data directory's card secret, created on first use (0600, like the key file).

    A missing secret is created only while no user has a card: with cards enrolled, a new
    secret would silently turn every card into an unknown one, so that is an error instead.
    """
    path = card_key_path(data_root)
    if not path.exists():
        with db.session(write=False) as s:
            enrolled = s.scalar(select(User.id).where(User.card_hash.is_not(None)).limit(1))
        if enrolled is not None:
            return CardKey.open(path, create=False)  # raises: names the file and what to do
    return CardKey.open(path, create=True)


__all__ = [
    "CARD_KEY_FILE",
    "AuthenticationFailed",
    "CardKey",
    "DeviceExists",
    "DeviceNotFound",
    "Devices",
    "IdentityConflict",
    "IdentityService",
    "InvalidIdentity",
    "LockedOut",
    "Lockout",
    "Session",
    "SessionStore",
    "UserInfo",
    "UserNotFound",
    "Users",
    "card_key_path",
    "open_card_key",
]
