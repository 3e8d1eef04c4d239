"""The card secret: the HMAC key that turns card numbers into what the database stores.

Why a keyed hash, and why the key lives outside the database (docs/identity.md):

- A card number must be found exactly and fast at every tap: one indexed equality on
  ``users.card_hash``. A salted slow hash (argon2) cannot be looked up, only tried against
  every user in turn.
- A card number has little entropy (often 8 to 10 decimal digits). A plain SHA-256 of it
  would be reversed from a stolen database or backup in seconds by trying every number.
- HMAC-SHA256 under a 256-bit server secret is deterministic (so it can be indexed) and
  cannot be computed, let alone reversed, without the secret. The secret is a 0600 file
  in the data directory, never in the database, so a database dump or backup alone gives
  away no card number. Losing the file means every card must be enrolled again, so back it
  up with the key file, separately from the database.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import stat
from pathlib import Path

from spoolvault.errors import KeyStoreError
from spoolvault.util.fs import create_exclusive

log = logging.getLogger(__name__)

CARD_KEY_FILE = "card-secret.key"
_FORMAT = b"spoolvault-card-secret-v1\n"
_LEN = 32


def card_key_path(data_root: Path) -> Path:
    """The card secret file of a data directory."""
    return data_root / CARD_KEY_FILE


def normalize_card(card_number: str) -> str:
    """The form a card number is hashed in: no surrounding blanks, hex digits upper-case.

    Readers differ in letter case for hexadecimal UIDs; a number enrolled from one and read
    by another must still match.
    """
    return card_number.strip().upper()


class CardKey:
    """The HMAC key for card numbers. Its material never appears in a repr or a message."""

    __slots__ = ("_key", "path")

    def __init__(self, key: bytes, path: Path | None = None) -> None:
        if len(key) != _LEN:
            raise ValueError("a card secret is 32 bytes")
        self._key = key
        self.path = path

    def __repr__(self) -> str:
        return f"CardKey(path={str(self.path)!r}, key=<hidden>)"

    __str__ = __repr__

    def card_hash(self, card_number: str) -> str:
        """HMAC-SHA256 of the normalized card number, lowercase hex (what the database keeps)."""
        digest = hmac.new(self._key, normalize_card(card_number).encode(), hashlib.sha256)
        return digest.hexdigest()

    def mac(self, message: bytes) -> str:
        """HMAC-SHA256 of ``message`` under a subkey for other uses than card numbers
        (links in mails), lowercase hex; callers put their purpose in the message."""
        subkey = hmac.new(self._key, b"spoolvault: not a card number", hashlib.sha256).digest()
        return hmac.new(subkey, message, hashlib.sha256).hexdigest()

    @classmethod
    def generate(cls) -> CardKey:
        """A fresh key in memory (tests)."""
        return cls(secrets.token_bytes(_LEN))

    @classmethod
    def open(cls, path: Path, *, create: bool) -> CardKey:
        """Read the secret file, checked like the key file; ``create`` makes it if missing."""
        if not path.exists():
            if not create:
                raise KeyStoreError(
                    f"card secret {path} is missing: without it no card can log in "
                    f"(restore it from your backup, or enroll every card again)"
                )
            # Two processes starting together (a server and a ``user`` command) must not each
            # make a secret: cards enrolled under the loser's would stop working.
            if create_exclusive(path, _FORMAT + secrets.token_bytes(_LEN).hex().encode() + b"\n"):
                log.info("created the card secret %s", path)
        try:
            st = os.stat(path)
            if st.st_mode & 0o077:
                raise KeyStoreError(
                    f"card secret {path} is accessible to other users "
                    f"(mode {stat.filemode(st.st_mode)}); run: chmod 600 {path}"
                )
            raw = path.read_bytes()
        except OSError as exc:
            raise KeyStoreError(f"cannot read the card secret {path}: {exc.strerror}") from None
        if not raw.startswith(_FORMAT):
            raise KeyStoreError(f"card secret {path} is not a spoolvault card secret file")
        try:
            key = bytes.fromhex(raw[len(_FORMAT) :].decode("ascii").strip())
        except (UnicodeDecodeError, ValueError):
            key = b""
        if len(key) != _LEN:
            # Never echo the content: it is the secret.
            raise KeyStoreError(f"card secret {path} is malformed")
        return cls(key, path)
