"""``spoolvault user import FILE.csv``: many users at once, all or nothing.

The file is UTF-8 CSV (a byte-order mark, as Excel writes, is fine) with a header line.
``username`` is required; the other columns are optional and may come in any order:
``password``, ``card_number``, ``pin``, ``id_number``, ``full_name``, ``email``, ``groups``
(names separated by ``;``), ``is_admin`` (true/false). An empty cell means "not set".

Every line is checked before anything is stored, and every problem is reported with its
line number; if there is any, nothing is imported. Then all users are stored in one
transaction, so a failure there leaves nothing half-imported either.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from spoolvault.db import User
from spoolvault.errors import ClientError
from spoolvault.identity.users import (
    IdentityConflict,
    InvalidIdentity,
    Users,
    check_card,
    check_id_number,
    check_username,
)

COLUMNS = (
    "username",
    "password",
    "card_number",
    "pin",
    "id_number",
    "full_name",
    "email",
    "groups",
    "is_admin",
)
MAX_ERRORS = 100  # reported; the rest are counted
_TRUE = {"true", "yes", "1"}
_FALSE = {"false", "no", "0", ""}


class ImportFailed(ClientError):
    """The file has problems; ``errors`` names each with its line. Nothing was imported."""

    def __init__(self, errors: list[str], total: int | None = None) -> None:
        total = len(errors) if total is None else total
        shown = errors[:MAX_ERRORS]
        more = f"\n... and {total - len(shown)} more" if total > len(shown) else ""
        super().__init__(f"{total} problem(s), nothing was imported:\n" + "\n".join(shown) + more)
        self.errors = errors


@dataclass
class ImportResult:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)


@dataclass
class _Row:
    line: int
    username: str
    values: dict[str, Any]


def read_csv(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise ImportFailed([f"{path}: cannot read: {exc.strerror}"]) from None
    except UnicodeDecodeError as exc:
        raise ImportFailed([f"{path}: not UTF-8 text (byte {exc.start})"]) from None


def _lines(text: str) -> Iterable[tuple[int, list[str]]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    start = 1
    for cells in reader:
        yield start, cells
        start = reader.line_num + 1


def import_users(users: Users, text: str, *, update: bool = False) -> ImportResult:
    """Check every line, then store them all in one transaction (or raise ImportFailed)."""
    errors: list[str] = []
    text = text.removeprefix("\ufeff")  # Excel's byte-order mark
    try:
        lines = list(_lines(text))
    except csv.Error as exc:
        raise ImportFailed([f"not valid CSV: {exc}"]) from None
    if not lines or not any(c.strip() for c in lines[0][1]):
        raise ImportFailed(
            ["line 1: a header line is required, e.g. username,full_name,card_number"]
        )
    header = [c.strip().lower() for c in lines[0][1]]
    unknown = [c for c in header if c not in COLUMNS]
    if unknown:
        errors.append(
            f"line 1: unknown column(s) {', '.join(unknown)} (known: {', '.join(COLUMNS)})"
        )
    if "username" not in header:
        errors.append("line 1: the column username is required")
    if len(set(header)) != len(header):
        errors.append("line 1: a column is named twice")
    if errors:
        raise ImportFailed(errors)

    rows: list[_Row] = []
    seen: dict[str, dict[str, int]] = {"username": {}, "card_number": {}, "id_number": {}}
    for line, cells in lines[1:]:
        if not any(c.strip() for c in cells):
            continue  # blank line
        if len(cells) != len(header):
            errors.append(f"line {line}: {len(cells)} fields, the header has {len(header)}")
            continue
        record = {name: cell.strip() for name, cell in zip(header, cells, strict=True)}
        try:
            rows.append(_check_row(users, line, record, seen))
        except (InvalidIdentity, IdentityConflict) as exc:
            errors.append(f"line {line}: {exc}")
    if errors:
        raise ImportFailed(errors)

    # Against what is stored already (one query per kind, not per line).
    with users.db.session(write=False) as s:
        existing = {u.username: u for u in s.scalars(select(User))}
    by_card = {u.card_hash: u.username for u in existing.values() if u.card_hash}
    by_id = {u.id_number: u.username for u in existing.values() if u.id_number}
    for row in rows:
        if row.username in existing and not update:
            errors.append(f"line {row.line}: a user named {row.username!r} exists already")
        card = row.values.get("card_hash")
        if card and by_card.get(card, row.username) != row.username:
            errors.append(f"line {row.line}: that card is already enrolled to another user")
        id_number = row.values.get("id_number")
        if id_number and by_id.get(id_number, row.username) != row.username:
            errors.append(f"line {row.line}: that ID number is already another user's")
    if errors:
        raise ImportFailed(errors)

    result = ImportResult()
    try:
        with users.db.session() as s:
            for row in rows:
                found = s.scalar(select(User).where(User.username == row.username))
                if found is None:
                    users.insert(s, row.username, row.values)
                    result.added.append(row.username)
                else:
                    users.apply(s, found, row.values)
                    result.updated.append(row.username)
    except Exception as exc:  # rolled back: nothing of the file is stored
        raise ImportFailed([f"storing the users failed, nothing was imported: {exc}"]) from None
    return result


def _check_row(
    users: Users, line: int, record: dict[str, str], seen: dict[str, dict[str, int]]
) -> _Row:
    username = check_username(record["username"])
    changes: dict[str, object] = {}
    for name in ("password", "pin", "full_name", "email"):
        if record.get(name):
            changes[name] = record[name]
    if record.get("card_number"):
        changes["card_number"] = check_card(record["card_number"])
    if record.get("id_number"):
        changes["id_number"] = check_id_number(record["id_number"])
    if record.get("groups"):
        changes["groups"] = [g.strip() for g in record["groups"].split(";") if g.strip()]
    flag = record.get("is_admin", "").lower()
    if flag not in _TRUE | _FALSE:
        raise InvalidIdentity("is_admin is true or false")
    if flag in _TRUE:
        changes["is_admin"] = True
    for name, value in (
        ("username", username),
        ("card_number", changes.get("card_number")),
        ("id_number", changes.get("id_number")),
    ):
        if not isinstance(value, str):
            continue
        first = seen[name].setdefault(value, line)
        if first != line:
            what = {"username": "user name", "card_number": "card number"}.get(name, "ID number")
            raise IdentityConflict(f"the same {what} as line {first}")
    return _Row(line, username, users.prepare(changes))


def import_file(users: Users, path: Path, *, update: bool = False) -> ImportResult:
    """Import a CSV file (see the module docstring)."""
    return import_users(users, read_csv(path), update=update)
