"""Server-side sessions and CSRF tokens for the server-rendered pages (release station, admin).

The cookie holds only a random token; everything else stays in this process. A session
ends after ``idle`` seconds without a request and after ``max_age`` whatever happens, and
logging in always opens a new one (no fixation). Logged in, a form's CSRF token is the
session's own random token; on a login form it is an HMAC of a per-browser nonce cookie
with a per-process secret (``LoginTokens``), so a login cannot be forced from another site.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

SESSION_MAX_SECONDS = 30 * 60  # a session ends after this, however busy
MAX_SESSIONS = 10_000  # memory bound: the oldest sessions go first


@dataclass(eq=False)
class WebSession:
    """One logged-in user at one browser."""

    user: str
    is_admin: bool
    token: str = field(repr=False)
    csrf: str = field(repr=False)
    created: float
    seen: float
    flash: Any = None  # shown once on the page after a POST (post/redirect/get)

    def csrf_ok(self, sent: str) -> bool:
        """True if a form's token is this session's (constant time)."""
        return hmac.compare_digest(sent.encode(), self.csrf.encode())


class SessionStore:
    """Server-side sessions with idle and absolute expiry (event-loop thread only)."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        *,
        max_age: float = SESSION_MAX_SECONDS,
        max_sessions: int = MAX_SESSIONS,
    ) -> None:
        self.clock = clock
        self.max_age = max_age
        self.max_sessions = max_sessions
        self._sessions: dict[str, WebSession] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def open(self, user: str, *, is_admin: bool, idle: float) -> WebSession:
        """A new session with fresh random tokens."""
        now = self.clock()
        for token in [t for t, s in self._sessions.items() if self._expired(s, now, idle)]:
            del self._sessions[token]
        while len(self._sessions) >= self.max_sessions:
            del self._sessions[next(iter(self._sessions))]  # dicts keep insertion order
        session = WebSession(
            user=user,
            is_admin=is_admin,
            token=secrets.token_urlsafe(32),
            csrf=secrets.token_urlsafe(32),
            created=now,
            seen=now,
        )
        self._sessions[session.token] = session
        return session

    def _expired(self, session: WebSession, now: float, idle: float) -> bool:
        return now - session.seen > idle or now - session.created > self.max_age

    def get(self, token: str | None, *, idle: float) -> WebSession | None:
        """The live session of ``token`` (its idle clock restarts), or None once expired."""
        session = self._sessions.get(token) if token else None
        if session is None:
            return None
        now = self.clock()
        if self._expired(session, now, idle):
            del self._sessions[session.token]
            return None
        session.seen = now
        return session

    def close(self, session: WebSession) -> None:
        self._sessions.pop(session.token, None)


class LoginTokens:
    """CSRF tokens for login forms: an HMAC of a per-browser nonce with a per-process secret."""

    def __init__(self) -> None:
        self._secret = secrets.token_bytes(32)

    def __repr__(self) -> str:
        return "LoginTokens()"

    @staticmethod
    def usable_nonce(nonce: str) -> bool:
        """A nonce cookie this server could have set (else a fresh one is set)."""
        return 16 <= len(nonce) <= 64 and nonce.isascii()

    @staticmethod
    def new_nonce() -> str:
        return secrets.token_urlsafe(32)

    def token(self, nonce: str) -> str:
        return hmac.new(self._secret, nonce.encode(), hashlib.sha256).hexdigest()

    def check(self, nonce: str, sent: str) -> bool:
        return bool(nonce) and hmac.compare_digest(sent.encode(), self.token(nonce).encode())
