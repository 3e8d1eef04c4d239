"""Identity: users, cards, PINs, groups, delegation, lockout, sessions, directory sync.

Front ends (REST release sessions, the MFD API, Fast Release, the web release station) use
``IdentityService``; administration uses ``Users`` and ``Devices``. See docs/identity.md.
"""

from __future__ import annotations

from pathlib import Path

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


def open_card_key(data_root: Path) -> CardKey:
    """The data directory's card secret, created on first use (0600, like the key file)."""
    return CardKey.open(card_key_path(data_root), create=True)


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
