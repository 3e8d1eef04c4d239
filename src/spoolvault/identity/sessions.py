"""Release sessions: a random bearer token for a user who logged in at a station or device.

A session expires ``ttl`` seconds after it was opened (a release station is used for a
minute, not a day), and an MFD session is bound to the device it was opened on: its token
is refused when another device presents it. Sessions are kept in memory, per application
server; the clock is injectable so tests can expire one without sleeping.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

SESSION_SECONDS = 300  # long enough to pick jobs at a printer, no longer
MAX_SESSIONS = 100_000


@dataclass(frozen=True)
class Session:
    """Who is logged in, where, until when (monotonic seconds). The token is not kept here."""

    username: str
    station: str
    expires: float
    device: str | None = None


class SessionStore:
    """Tokens to sessions, with expiry (thread-safe)."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, *, ttl: int = SESSION_SECONDS
    ) -> None:
        self.clock = clock
        self.ttl = ttl
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SessionStore(ttl={self.ttl}, sessions=<{len(self._sessions)} hidden>)"

    def open(self, username: str, *, station: str, device: str | None = None) -> str:
        """Start a session; return its token (256 random bits, URL-safe)."""
        token = secrets.token_urlsafe(32)
        now = self.clock()
        with self._lock:
            for key in [k for k, v in self._sessions.items() if v.expires <= now]:
                del self._sessions[key]
            if len(self._sessions) >= MAX_SESSIONS:
                oldest = min(self._sessions, key=lambda k: self._sessions[k].expires)
                del self._sessions[oldest]
            self._sessions[token] = Session(username, station, now + self.ttl, device)
        return token

    def get(self, token: str | None, *, device: str | None = None) -> Session | None:
        """The live session of ``token``; None if unknown, expired or from another device."""
        if not token:
            return None
        with self._lock:
            session = self._sessions.get(token)
            if session is None:
                return None
            if session.expires <= self.clock():
                del self._sessions[token]
                return None
        if session.device != device:
            return None
        return session

    def close(self, token: str) -> None:
        """End a session (log out)."""
        with self._lock:
            self._sessions.pop(token, None)
