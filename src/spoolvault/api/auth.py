"""Who calls the REST API: its security schemes and the dependencies the routers share.

Administration uses HTTP Basic with an administrator's password; release stations send the
session token they opened (``POST /release/session``) as ``Authorization: Bearer``.
"""

# No "from __future__ import annotations": FastAPI must see the real annotations.

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import (
    HTTPAuthorizationCredentials,
    HTTPBasic,
    HTTPBasicCredentials,
    HTTPBearer,
)

from spoolvault.errors import LockedOut
from spoolvault.identity import IdentityService, SessionStore
from spoolvault.util.threads import in_thread

basic = HTTPBasic(auto_error=False, realm="spoolvault")
bearer = HTTPBearer(auto_error=False)

# A FastAPI dependency that answers the caller's user name (or raises HTTPException 401).
UserDependency = Callable[..., Awaitable[str]]
# Records an audit event for the caller: record(actor, action, **details) (create_api's).
Recorder = Callable[..., Awaitable[None]]


def admin_dependency(identity: IdentityService) -> UserDependency:
    """An administrator, by HTTP Basic (the identity service's password check)."""

    async def admin(
        request: Request,
        creds: Annotated[HTTPBasicCredentials | None, Depends(basic)],
    ) -> str:
        unauthorized = HTTPException(
            401, "administrator credentials required", {"WWW-Authenticate": "Basic"}
        )
        if creds is None:
            raise unauthorized
        client = request.client.host if request.client else None
        try:
            user = await in_thread(
                lambda: identity.check_password(
                    creds.username, creds.password, client=client, method="REST Basic"
                )
            )
        except LockedOut as exc:  # the one lockout of every login path
            raise HTTPException(429, str(exc), exc.headers()) from None
        if user is None or not user.is_admin:
            raise unauthorized
        return creds.username

    return admin


def station_dependency(sessions: SessionStore) -> UserDependency:
    """The user of a release session, by its bearer token."""

    async def station_user(
        creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> str:
        session = sessions.get(creds.credentials if creds else None)
        if session is None:
            raise HTTPException(
                401, "log in at the release station first (session missing or expired)"
            )
        return session.username

    return station_user
