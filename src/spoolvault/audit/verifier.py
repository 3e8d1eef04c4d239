"""``spoolvault audit verify``: the file's hash chain checked, and checked against the
database copy, line by line, while the server may be writing (docs/audit.md)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from spoolvault.audit.events import FIELDS, GENESIS, Event
from spoolvault.db import AuditEvent, Database


@dataclass(frozen=True)
class Verification:
    """What ``verify`` found: how many lines check out, the head hash, the first problem."""

    events: int
    head: str
    problem: str | None = None
    line: int | None = None
    # The problem is at the end of the file and may be the server writing right now.
    transient: bool = False
    anchor_found: bool = False

    @property
    def ok(self) -> bool:
        return self.problem is None

    @property
    def message(self) -> str:
        """``line N: what is wrong`` (empty when all is well)."""
        return "" if self.problem is None else f"line {self.line}: {self.problem}"


def verify(path: Path, db: Database, *, anchor: str | None = None) -> Verification:
    """Check the file's hash chain, and that it and the database hold the same events.

    Stops at the first problem, with its line number. ``anchor`` is a head hash recorded
    earlier: the chain must still pass through it.
    """
    with db.session(write=False) as s:
        # The query runs first: every row it sees had its line written (and synced) before
        # it was committed, so a missing line is never the server being mid-write.
        rows = s.scalars(
            select(AuditEvent).order_by(AuditEvent.id).execution_options(yield_per=1000)
        )
        try:
            result, pending = _verify_file(path, (Event.from_row(r) for r in rows), anchor)
        finally:
            rows.close()  # a PostgreSQL server-side cursor, when verification stops early
    if result.problem is not None or not pending:
        return result
    # Lines past the end of the query's snapshot: committed since, or missing.
    with db.session(write=False) as s:
        later = {
            row.id: Event.from_row(row)
            for row in s.scalars(select(AuditEvent).where(AuditEvent.id >= pending[0][1].id))
        }
    for lineno, event in pending:
        row = later.get(event.id)
        if row is None:
            return _failed(result, lineno, f"event {event.id} is not in the database", True)
        if problem := _compare(event, row):
            return _failed(result, lineno, problem)
    return result


def _failed(
    result: Verification, lineno: int, problem: str, transient: bool = False
) -> Verification:
    return Verification(result.events, result.head, problem, lineno, transient, result.anchor_found)


def _compare(line: Event, row: Event) -> str | None:
    differ = [name for name in (*FIELDS, "hash") if getattr(line, name) != getattr(row, name)]
    if differ:
        return f"differs from database event {row.id} in {', '.join(differ)}"
    return None


def _verify_file(
    path: Path, in_db: Iterator[Event], anchor: str | None
) -> tuple[Verification, list[tuple[int, Event]]]:
    """The chain and the cross-check in one pass; lines past the database's last row are
    returned to be checked again (the server may have committed them since)."""
    prev, last_id, count = GENESIS, 0, 0
    found = anchor is None or anchor == GENESIS
    pending: list[tuple[int, Event]] = []
    row = next(in_db, None)

    def failed(lineno: int, problem: str, transient: bool = False) -> Verification:
        return Verification(count, prev, problem, lineno, transient, found)

    try:
        handle = path.open("rb")
    except FileNotFoundError:
        if row is not None:
            return failed(1, f"the audit file {path} is missing; the database has events"), []
        return Verification(0, GENESIS, anchor_found=found), []
    lineno = 0
    with handle:
        for lineno, raw in enumerate(handle, start=1):
            problem = None
            if not raw.endswith(b"\n"):
                return failed(
                    lineno,
                    "incomplete: the file was cut in the middle of a line (or the server is "
                    "writing it right now)",
                    transient=True,
                ), []
            try:
                event = Event.parse(raw[:-1])
            except ValueError as exc:
                return failed(lineno, f"not an audit event: {exc}"), []
            if event.line() != raw:
                problem = "not in canonical form: the line was edited"
            elif event.computed_hash() != event.hash:
                problem = "its hash does not match its content: the line was edited"
            elif event.prev != prev:
                where = "64 zeros" if lineno == 1 else f"the hash of line {lineno - 1}"
                problem = f"prev is not {where}: a line was deleted, inserted or moved here"
            elif event.id <= last_id:
                problem = f"event {event.id} comes after event {last_id}"
            elif row is not None and row.id < event.id:
                problem = f"database event {row.id} is missing from the file before this line"
            elif row is not None and row.id > event.id:
                problem = f"event {event.id} is not in the database"
            elif row is not None:
                problem = _compare(event, row)
                row = next(in_db, None)
            else:
                pending.append((lineno, event))
            if problem is not None:
                return failed(lineno, problem), []
            prev, last_id, count = event.hash, event.id, count + 1
            found = found or event.hash == anchor
    if row is not None:
        return failed(
            lineno + 1,
            f"database event {row.id} is missing from the file, which ends after line "
            f"{lineno}: lines were removed from its end",
        ), []
    result = Verification(count, prev, anchor_found=found)
    if not found:
        return _failed(
            result, lineno, f"the anchor {anchor} is not in the chain: history was rewritten"
        ), []
    return result, pending


def wait_and_verify(
    path: Path, db: Database, *, anchor: str | None = None, retry_after: float = 1.0
) -> Verification:
    """``verify``, once more after ``retry_after`` seconds if the problem may be transient."""
    result = verify(path, db, anchor=anchor)
    if result.transient:
        time.sleep(retry_after)
        result = verify(path, db, anchor=anchor)
    return result
