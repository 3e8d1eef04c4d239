"""Release sessions: a random bearer token for a user who logged in at a station or device.

A session expires ``ttl`` seconds after it was opened (a release station is used for a
minute, not a day), and an MFD session is bound to the device it was opened on: its token
is refused when another device presents it. Sessions live in the database
(``release_sessions``, keyed by the token's SHA-256, never the token), so a token opened on
one app server works on every other. Times are wall-clock seconds; the clock is injectable
so tests can expire one without sleeping.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import delete, func, select

from spoolvault.db import Database
from spoolvault.db.models import ReleaseSession

SESSION_SECONDS = 300  # long enough to pick jobs at a printer, no longer
MAX_TOKEN = 512


@dataclass(frozen=True)
class Session:
    """Who is logged in, where, until when (epoch seconds). The token is not kept here."""

    username: str
    station: str
    expires: float
    device: str | None = None


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class SessionStore:
    """Tokens to sessions, with expiry, in the database (every app server sees them)."""

    def __init__(
        self, db: Database, clock: Callable[[], float] = time.time, *, ttl: int = SESSION_SECONDS
    ) -> None:
        self.db = db
        self.clock = clock
        self.ttl = ttl

    def __repr__(self) -> str:
        return f"SessionStore(ttl={self.ttl}, db={self.db!r})"

    def open(self, username: str, *, station: str, device: str | None = None) -> str:
        """Start a session; return its token (256 random bits, URL-safe)."""
        token = secrets.token_urlsafe(32)
        now = self.clock()
        with self.db.session() as s:
            s.execute(delete(ReleaseSession).where(ReleaseSession.expires <= now))
            s.add(
                ReleaseSession(
                    token_hash=_hash(token),
                    username=username,
                    station=station[:255],
                    device=device,
                    expires=now + self.ttl,
                )
            )
        return token

    def get(self, token: str | None, *, device: str | None = None) -> Session | None:
        """The live session of ``token``; None if unknown, expired or from another device."""
        if not token or len(token) > MAX_TOKEN:
            return None
        with self.db.session(write=False) as s:
            row = s.get(ReleaseSession, _hash(token))
        if row is None or row.expires <= self.clock() or row.device != device:
            return None
        return Session(row.username, row.station, row.expires, row.device)

    def close(self, token: str) -> None:
        """End a session (log out)."""
        if token and len(token) <= MAX_TOKEN:
            with self.db.session() as s:
                s.execute(delete(ReleaseSession).where(ReleaseSession.token_hash == _hash(token)))

    def count(self) -> int:
        """Live sessions (for tests and metrics)."""
        with self.db.session(write=False) as s:
            return int(
                s.scalar(
                    select(func.count())
                    .select_from(ReleaseSession)
                    .where(ReleaseSession.expires > self.clock())
                )
                or 0
            )
