"""REST: print providers' heartbeats to their application server (docs/deployment.md).

Not in the OpenAPI document: the caller is another spoolvault, not an operator's script.
"""

# No "from __future__ import annotations": FastAPI must see the real annotations.

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.security import HTTPBasicCredentials

from spoolvault.api.auth import basic
from spoolvault.db import Database
from spoolvault.servers.registry import authenticate, heartbeat_answer, record_heartbeat
from spoolvault.util.threads import in_thread


def create_providers_router(db: Database) -> APIRouter:
    """``POST /providers/heartbeat``."""
    router = APIRouter()

    @router.post("/providers/heartbeat", include_in_schema=False)
    async def heartbeat(
        request: Request, creds: Annotated[HTTPBasicCredentials | None, Depends(basic)]
    ) -> dict[str, Any]:
        """A print provider's heartbeat (HTTP Basic: its name and secret)."""
        provider = (
            await in_thread(authenticate, db, creds.username, creds.password)
            if creds is not None
            else None
        )
        if provider is None:
            raise HTTPException(
                401, "unknown print provider or wrong secret", {"WWW-Authenticate": "Basic"}
            )
        beat = await request.json()
        if not isinstance(beat, dict):
            raise HTTPException(422, "a heartbeat is a JSON object")
        try:
            done = await in_thread(record_heartbeat, db, provider.name, beat)
        except (KeyError, TypeError, ValueError) as exc:
            raise HTTPException(422, f"malformed heartbeat: {exc}") from None
        answer = await in_thread(heartbeat_answer, db, provider.name)
        answer["resync"] = done.resync
        return answer

    return router
