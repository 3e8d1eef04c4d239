"""Job PINs (PWG 5100.11 job-password): what a client sends, how it is kept, how it is checked.

A job's PIN is never stored: the record keeps argon2id of its SHA-256 digest, which is
what a client may send instead of the PIN itself (``job-password-encryption``).
"""

from __future__ import annotations

import hashlib

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from spoolvault.errors import ClientError

_pin_hasher = PasswordHasher()


def hash_pin(digest: bytes) -> str:
    """argon2id of a PIN's SHA-256 digest (PWG 5100.11 sends either the PIN or that digest)."""
    return _pin_hasher.hash(digest.hex())


def pin_digest(pin: bytes, encryption: str) -> bytes:
    """The SHA-256 digest of a job-password as sent with ``job-password-encryption``."""
    if encryption == "none":
        return hashlib.sha256(pin).digest()
    if encryption == "sha2-256":
        if len(pin) != 32:
            raise ClientError("job-password with sha2-256 must be a 32-octet SHA-256 digest")
        return pin
    raise ClientError(f"job-password-encryption {encryption!r} is not supported")


def pin_matches(pin_hash: str, pin: str) -> bool:
    """True if ``pin`` (as typed at a release station) is the job's PIN."""
    try:
        return _pin_hasher.verify(pin_hash, hashlib.sha256(pin.encode()).hexdigest())
    except (VerificationError, InvalidHashError):
        return False
