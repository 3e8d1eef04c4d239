"""Users, their cards, PINs and ID numbers, groups and delegation, in the database.

What is stored (docs/identity.md): passwords and PINs as argon2id hashes; card numbers as
an HMAC-SHA256 under the card secret (cardkey.py), so a tap is one indexed lookup yet the
database alone does not reveal a card; ID numbers as given (they identify, like a user
name; the PIN is the secret). Nothing here logs or returns a secret or a hash.
"""

from __future__ import annotations

import contextlib
import functools
import re
import secrets
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import delete, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from spoolvault.db import Database, Delegation, Group, GroupMember, User, UserExists, UserSource
from spoolvault.db.models import utcnow
from spoolvault.errors import Conflict, Invalid, NotFound
from spoolvault.identity.cardkey import CardKey, normalize_card

_hasher = PasswordHasher()  # argon2id (RFC 9106 low-memory profile), as for passwords

_PIN_RE = re.compile(r"[0-9]{4,16}")
_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
_CARD_RE = re.compile(r"[\x21-\x7e]{1,128}")  # printable ASCII, no blanks
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MIN_PASSWORD = 8

# The fields an administrator may change (PATCH /api/v1/users/{name}, CSV import).
FIELDS = frozenset(
    {
        "password",
        "card_number",
        "pin",
        "full_name",
        "email",
        "id_number",
        "groups",
        "is_admin",
        "disabled",
    }
)


class InvalidIdentity(Invalid):
    """A malformed user name, password, card number, PIN, ID number, e-mail or group (422)."""


class IdentityConflict(Conflict):
    """A card or ID number is already someone else's (409)."""


class UserNotFound(NotFound):
    """No user of that name (404; administrators only: stations never see this)."""


@dataclass(frozen=True)
class UserInfo:
    """What may be shown about a user: never a secret or a hash, only whether one is set."""

    username: str
    full_name: str | None
    email: str | None
    id_number: str | None
    is_admin: bool
    source: str
    disabled: bool
    has_password: bool
    has_card: bool
    has_pin: bool
    groups: list[str] = field(default_factory=list)
    delegates: list[str] = field(default_factory=list)
    delegate_groups: list[str] = field(default_factory=list)


# -- validation -------------------------------------------------------------------------


def check_username(username: object) -> str:
    if (
        not isinstance(username, str)
        or not username
        or len(username) > 255
        or username != username.strip()
        or _CONTROL.search(username)
    ):
        raise InvalidIdentity("a user name is 1 to 255 characters without surrounding spaces")
    return username


def check_password(password: object) -> str:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        raise InvalidIdentity(f"a password has at least {MIN_PASSWORD} characters")
    return password


def check_pin(pin: object) -> str:
    if not isinstance(pin, str) or not _PIN_RE.fullmatch(pin):
        raise InvalidIdentity("a PIN is 4 to 16 digits")
    return pin


def check_card(card_number: object) -> str:
    if not isinstance(card_number, str) or not _CARD_RE.fullmatch(normalize_card(card_number)):
        raise InvalidIdentity("a card number is 1 to 128 printable characters without spaces")
    return normalize_card(card_number)


def check_id_number(id_number: object) -> str:
    if not isinstance(id_number, str) or not _ID_RE.fullmatch(id_number):
        raise InvalidIdentity("an ID number is 1 to 64 letters, digits, '.', '_' or '-'")
    return id_number


def check_group(name: object) -> str:
    if (
        not isinstance(name, str)
        or not name
        or len(name) > 255
        or name != name.strip()
        or _CONTROL.search(name)
    ):
        raise InvalidIdentity("a group name is 1 to 255 characters without surrounding spaces")
    return name


def check_text(name: str, value: object, limit: int = 255) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit or _CONTROL.search(value):
        raise InvalidIdentity(f"{name} is text of at most {limit} characters")
    return value.strip() or None


def check_email(value: object) -> str | None:
    email = check_text("an e-mail address", value, 254)
    if email is not None and (email.count("@") != 1 or " " in email):
        raise InvalidIdentity("an e-mail address looks like name@example.org")
    return email


def check_names(what: str, names: object, check: Any) -> list[str]:
    if not isinstance(names, list | tuple):
        raise InvalidIdentity(f"{what} is a list of names")
    return sorted({check(n) for n in names})


# -- hashing ------------------------------------------------------------------------------


def hash_secret(secret: str) -> str:
    """argon2id PHC string of a password or PIN."""
    return _hasher.hash(secret)


@functools.cache
def _dummy_hash() -> str:
    return _hasher.hash(secrets.token_urlsafe(16))


def verify_secret(stored: str | None, given: str) -> bool:
    """True if ``given`` matches ``stored``; with nothing stored, spend the same time."""
    if stored is None:
        with contextlib.suppress(VerificationError, InvalidHashError):
            _hasher.verify(_dummy_hash(), given)
        return False
    try:
        return _hasher.verify(stored, given)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored: str) -> bool:
    return _hasher.check_needs_rehash(stored)


# -- the directory ------------------------------------------------------------------------


class Users:
    """Users, cards, PINs, groups and delegation over the database."""

    def __init__(self, db: Database, card_key: CardKey) -> None:
        self.db = db
        self.card_key = card_key

    def __repr__(self) -> str:
        return f"Users(db={self.db!r})"

    # -- look-ups ---------------------------------------------------------------------

    def get(self, username: str) -> User | None:
        with self.db.session(write=False) as s:
            return s.scalar(select(User).where(User.username == username))

    def by_card(self, card_number: str) -> User | None:
        """The user whose card this is: one indexed equality on the card's HMAC."""
        digest = self.card_key.card_hash(card_number)
        with self.db.session(write=False) as s:
            return s.scalar(select(User).where(User.card_hash == digest))

    def by_id_number(self, id_number: str) -> User | None:
        with self.db.session(write=False) as s:
            return s.scalar(select(User).where(User.id_number == id_number))

    def set_password_hash(self, user_id: int, new_hash: str) -> None:
        with self.db.session() as s:
            s.get_one(User, user_id).password_hash = new_hash

    def set_pin_hash(self, user_id: int, new_hash: str) -> None:
        with self.db.session() as s:
            s.get_one(User, user_id).pin_hash = new_hash

    # -- changes ----------------------------------------------------------------------

    def prepare(self, changes: Mapping[str, object]) -> dict[str, Any]:
        """Validate ``changes`` and hash their secrets (slow: outside any transaction).

        Returns column values (``password_hash``, ``card_hash``, ...) plus ``groups``.
        A value of None clears a field (the password, card, PIN, ID number, name, e-mail).
        """
        unknown = set(changes) - FIELDS
        if unknown:
            names, known = ", ".join(sorted(unknown)), ", ".join(sorted(FIELDS))
            raise InvalidIdentity(f"unknown user field {names} (known: {known})")
        out: dict[str, Any] = {}
        for name, value in changes.items():
            if name == "password":
                out["password_hash"] = None if value is None else hash_secret(check_password(value))
            elif name == "pin":
                out["pin_hash"] = None if value is None else hash_secret(check_pin(value))
            elif name == "card_number":
                out["card_hash"] = (
                    None if value is None else self.card_key.card_hash(check_card(value))
                )
            elif name == "id_number":
                out["id_number"] = None if value is None else check_id_number(value)
            elif name == "full_name":
                out["full_name"] = check_text("a full name", value)
            elif name == "email":
                out["email"] = check_email(value)
            elif name == "groups":
                out["groups"] = check_names("groups", value, check_group)
            elif name in ("is_admin", "disabled"):
                if type(value) is not bool:
                    raise InvalidIdentity(f"{name} is true or false")
                out[name] = value
        return out

    def add(
        self,
        username: str,
        changes: Mapping[str, object] | None = None,
        *,
        source: UserSource = UserSource.LOCAL,
        external_id: str | None = None,
    ) -> UserInfo:
        """Create a user with the given fields (``password``, ``card_number``, ``pin``, ...)."""
        check_username(username)
        values = self.prepare(changes or {})
        with self._writing(username), self.db.session() as s:
            self.insert(s, username, values, source=source, external_id=external_id)
        return self.info(username)

    def insert(
        self,
        s: Session,
        username: str,
        values: Mapping[str, Any],
        *,
        source: UserSource = UserSource.LOCAL,
        external_id: str | None = None,
    ) -> User:
        """Add a user in an open session (``values`` from ``prepare``)."""
        if s.scalar(select(User.id).where(User.username == username)) is not None:
            raise UserExists(f"a user named {username!r} exists already")
        columns: dict[str, Any] = {"external_id": external_id}
        columns.update((k, v) for k, v in values.items() if k != "groups")
        user = User(username=username, source=source, created_at=utcnow(), **columns)
        s.add(user)
        s.flush()
        if "groups" in values:
            self.set_groups(s, user, values["groups"])
        return user

    def update(self, username: str, changes: Mapping[str, object]) -> UserInfo:
        """Change some fields of a user (None clears one)."""
        values = self.prepare(changes)
        with self._writing(username), self.db.session() as s:
            user = self._one(s, username)
            self.apply(s, user, values)
        return self.info(username)

    def apply(self, s: Session, user: User, values: Mapping[str, Any]) -> None:
        for key, value in values.items():
            if key == "groups":
                self.set_groups(s, user, value)
            else:
                setattr(user, key, value)

    @contextlib.contextmanager
    def _writing(self, username: str) -> Iterator[None]:
        try:
            yield
        except IntegrityError as exc:
            text = str(exc.orig).lower()
            if "card_hash" in text:
                raise IdentityConflict("that card is already enrolled to another user") from None
            if "id_number" in text:
                raise IdentityConflict("that ID number is already another user's") from None
            if "username" in text:
                raise UserExists(f"a user named {username!r} exists already") from None
            raise

    @staticmethod
    def _one(s: Session, username: str) -> User:
        user = s.scalar(select(User).where(User.username == username))
        if user is None:
            raise UserNotFound(f"no user named {username!r}")
        return user

    @staticmethod
    def group(s: Session, name: str, source: UserSource = UserSource.LOCAL) -> Group:
        """The group of that name, created if needed."""
        group = s.scalar(select(Group).where(Group.name == name))
        if group is None:
            group = Group(name=name, source=source, created_at=utcnow())
            s.add(group)
            s.flush()
        return group

    def set_groups(self, s: Session, user: User, names: Iterable[str]) -> None:
        """Make ``names`` exactly the user's groups (creating local groups as needed)."""
        s.execute(delete(GroupMember).where(GroupMember.user_id == user.id))
        for name in sorted(set(names)):
            s.add(GroupMember(group_id=self.group(s, name).id, user_id=user.id))

    # -- delegation -------------------------------------------------------------------

    def set_delegates(self, owner: str, users: Sequence[str], groups: Sequence[str]) -> UserInfo:
        """Let exactly these users and these groups' members release ``owner``'s jobs."""
        user_names = check_names("delegates", list(users), check_username)
        group_names = check_names("delegate groups", list(groups), check_group)
        if owner in user_names:
            raise InvalidIdentity("a user always releases their own jobs: no need to delegate")
        with self.db.session() as s:
            me = self._one(s, owner)
            ids = []
            for name in user_names:
                found = s.scalar(select(User.id).where(User.username == name))
                if found is None:
                    raise InvalidIdentity(f"no user named {name!r} to delegate to")
                ids.append(found)
            s.execute(delete(Delegation).where(Delegation.owner_id == me.id))
            now = utcnow()
            for uid in ids:
                s.add(Delegation(owner_id=me.id, delegate_user_id=uid, created_at=now))
            for name in group_names:
                gid = self.group(s, name).id
                s.add(Delegation(owner_id=me.id, delegate_group_id=gid, created_at=now))
        return self.info(owner)

    def _delegated_by(self, actor_id: int) -> Any:
        """The condition "this delegation is to the actor or to a group the actor is in"."""
        in_groups = select(GroupMember.group_id).where(GroupMember.user_id == actor_id)
        return or_(
            Delegation.delegate_user_id == actor_id,
            Delegation.delegate_group_id.in_(in_groups),
        )

    def may_release(self, actor: str, owner: str) -> bool:
        """True if ``actor`` is ``owner``, or ``owner`` delegated to them or their group."""
        if actor == owner:
            return True
        with self.db.session(write=False) as s:
            actor_id = s.scalar(
                select(User.id).where(User.username == actor, User.disabled.is_(False))
            )
            if actor_id is None:
                return False
            found = s.scalar(
                select(Delegation.id)
                .join(User, User.id == Delegation.owner_id)
                .where(User.username == owner, self._delegated_by(actor_id))
                .limit(1)
            )
            return found is not None

    def releasable_owners(self, actor: str) -> list[str]:
        """The actor, then (sorted) everyone who delegated to the actor or the actor's groups."""
        with self.db.session(write=False) as s:
            actor_id = s.scalar(
                select(User.id).where(User.username == actor, User.disabled.is_(False))
            )
            if actor_id is None:
                return [actor]
            owners = s.scalars(
                select(User.username)
                .join(Delegation, User.id == Delegation.owner_id)
                .where(self._delegated_by(actor_id))
                .distinct()
            )
            return [actor, *sorted(set(owners) - {actor})]

    # -- reading ----------------------------------------------------------------------

    def info(self, username: str) -> UserInfo:
        with self.db.session(write=False) as s:
            return self._info(s, self._one(s, username))

    def list(self) -> list[UserInfo]:
        with self.db.session(write=False) as s:
            return [self._info(s, u) for u in s.scalars(select(User).order_by(User.username))]

    @staticmethod
    def _info(s: Session, user: User) -> UserInfo:
        groups = s.scalars(
            select(Group.name)
            .join(GroupMember, GroupMember.group_id == Group.id)
            .where(GroupMember.user_id == user.id)
            .order_by(Group.name)
        )
        delegate_users = s.scalars(
            select(User.username)
            .join(Delegation, Delegation.delegate_user_id == User.id)
            .where(Delegation.owner_id == user.id)
            .order_by(User.username)
        )
        delegate_groups = s.scalars(
            select(Group.name)
            .join(Delegation, Delegation.delegate_group_id == Group.id)
            .where(Delegation.owner_id == user.id)
            .order_by(Group.name)
        )
        return UserInfo(
            username=user.username,
            full_name=user.full_name,
            email=user.email,
            id_number=user.id_number,
            is_admin=user.is_admin,
            source=UserSource(user.source).value,
            disabled=user.disabled,
            has_password=user.password_hash is not None,
            has_card=user.card_hash is not None,
            has_pin=user.pin_hash is not None,
            groups=list(groups),
            delegates=list(delegate_users),
            delegate_groups=list(delegate_groups),
        )
