"""Database engines that fail on cue, for the job-record commit paths.

PostgreSQL's COMMIT is ambiguous when the connection drops during it: the server may or may
not have committed, and the client hears an error either way. No real server can be made
to do that on cue, so ``LostCommit`` wraps the real engine (what it commits really is
committed) and raises when the transaction ends.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import OperationalError


def connection_lost() -> OperationalError:
    return OperationalError("COMMIT", {}, Exception("server closed the connection unexpectedly"))


class LostCommit:
    """``begin()`` as the real engine's, but the next ``lost`` transactions end with a lost
    connection: committed (``landed``) or rolled back, the caller cannot tell."""

    def __init__(
        self, engine: Engine, *, lost: int = 1, landed: bool = True, then_down: bool = False
    ) -> None:
        self.engine = engine
        self.lost = lost
        self.landed = landed
        self.then_down = then_down  # after those: no connection at all (a definite failure)

    @contextlib.contextmanager
    def begin(self) -> Iterator[Connection]:
        if self.lost <= 0:
            if self.then_down:
                raise connection_lost()
            with self.engine.begin() as conn:
                yield conn
            return
        self.lost -= 1
        if self.landed:
            with self.engine.begin() as conn:
                yield conn
        else:
            with self.engine.connect() as conn:
                yield conn
                conn.rollback()
        raise connection_lost()


class Unreachable:
    """An engine whose every connection fails (the database went away)."""

    def connect(self) -> Connection:
        raise connection_lost()

    def begin(self) -> Connection:
        raise connection_lost()
