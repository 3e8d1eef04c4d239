"""A database engine whose COMMIT lands and then reports a lost connection.

PostgreSQL's COMMIT is ambiguous when the connection drops during it: the server may have
committed, the client hears an error. No real server can be made to do that on cue, so
this wraps the real engine (the rows really are committed) and raises afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import OperationalError


def connection_lost() -> OperationalError:
    return OperationalError("COMMIT", {}, Exception("server closed the connection unexpectedly"))


class CommitLostAfterLanding:
    """``begin()`` commits for real, then raises for the first ``lost`` transactions;
    with ``ask_fails``, ``connect()`` (asking what landed) fails too."""

    def __init__(self, engine: Engine, *, lost: int = 1, ask_fails: bool = False) -> None:
        self.engine = engine
        self.lost = lost
        self.ask_fails = ask_fails

    @contextlib.contextmanager
    def begin(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn
        if self.lost > 0:
            self.lost -= 1
            raise connection_lost()

    def connect(self) -> Any:
        if self.ask_fails:
            raise connection_lost()
        return self.engine.connect()
