"""IdentityService: who is at the release station, and whose jobs they may release.

The one interface every release front end uses (REST release sessions, the MFD API, Fast
Release, the web release station), and the one password check of every front end
(``check_password``: IPP and REST administration HTTP Basic too). Each login method returns
the user name or raises:

- ``AuthenticationFailed``: one message whether the user, card or ID number is unknown,
  the account is disabled, or the password or PIN is wrong (no user enumeration). Unknown
  names take as long to refuse as wrong passwords (a dummy argon2 check).
- ``LockedOut``: the account or the station failed too often (lockout.py); checked before
  the credentials, so a locked account cannot be guessed at.

Every attempt is an ``auth.login`` audit event: ``ok``, or ``refused`` with the method and
station, never the secret, and never the name typed for an unknown user (people type
passwords into the user-name field).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime

from spoolvault.audit import Action, AuditLog, Outcome
from spoolvault.db import Database, User
from spoolvault.db.models import utcnow
from spoolvault.errors import AuthenticationFailed, LockedOut
from spoolvault.identity.cardkey import CardKey, normalize_card
from spoolvault.identity.lockout import Lockout
from spoolvault.identity.sessions import SESSION_SECONDS, SessionStore
from spoolvault.identity.users import Users, hash_secret, needs_rehash, verify_secret

UNKNOWN_ACTOR = "unknown"  # the audit actor of a login whose user does not exist
MAX_STATION = 128


class IdentityService:
    """Logins (password, card with or without PIN, ID number + PIN), lockout, delegation."""

    def __init__(
        self,
        db: Database,
        card_key: CardKey,
        *,
        audit: AuditLog | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = utcnow,
        lockout: Lockout | None = None,
        session_ttl: int = SESSION_SECONDS,
    ) -> None:
        self.db = db
        self.users = Users(db, card_key)
        self.audit = audit
        self.wall_clock = wall_clock
        self.lockout = lockout or Lockout(clock)
        self.sessions = SessionStore(clock, ttl=session_ttl)

    def __repr__(self) -> str:
        return f"IdentityService(db={self.db!r})"

    # -- logins -----------------------------------------------------------------------

    def login_password(
        self,
        username: str,
        password: str,
        *,
        station: str,
        printer: str | None = None,
        client: str | None = None,
    ) -> str:
        """Log in with user name and password; return the user name.

        ``station`` names where (lockout, audit); ``client``, the network address, is
        counted as a station too where the station name comes from the client itself.
        """
        user = self.users.get(username)

        def check(found: User | None) -> bool:
            return self._password_matches(found, password)

        return self._login(
            "password", f"user:{username}", user, check, station, printer=printer, client=client
        )

    def check_password(self, username: str, password: str) -> User | None:
        """The user, if ``username`` is an enabled account whose password is ``password``.

        The one password check of every front end that takes a user name and password:
        IPP and REST administration HTTP Basic call it directly, ``login_password`` (release
        stations, the admin pages) through the same ``_password_matches``. It takes as long
        for an unknown user as for a wrong password. Unlike the logins it neither counts
        failures for lockout nor records an audit event: HTTP Basic is sent with every
        request, and whether lockout applies to it is not decided here yet.
        """
        user = self.users.get(username)
        if self._password_matches(user, password) and user is not None and not user.disabled:
            return user
        return None

    def _password_matches(self, user: User | None, password: str) -> bool:
        """The argon2 check of ``password`` against the user's hash (a dummy one without)."""
        stored = user.password_hash if user is not None else None
        ok = verify_secret(stored, password)
        if ok and user is not None and stored is not None and needs_rehash(stored):
            # The hashing parameters were raised since this hash was made.
            self.users.set_password_hash(user.id, hash_secret(password))
        return ok

    def login_card(
        self,
        card_number: str,
        pin: str | None,
        *,
        station: str,
        printer: str | None = None,
        client: str | None = None,
    ) -> str:
        """Log in with a card, and the user's PIN when they have one; return the user name.

        A user with a PIN must give it; a PIN given for a user without one is refused (a
        station that asks for PINs expects every user to have one).
        """
        user = self.users.by_card(card_number) if card_number.strip() else None
        key = (
            f"user:{user.username}"
            if user is not None
            else "card:" + self.users.card_key.card_hash(normalize_card(card_number))[:32]
        )

        def check(found: User | None) -> bool:
            stored = found.pin_hash if found is not None else None
            if pin is None:
                return found is not None and stored is None
            return verify_secret(stored, pin)

        method = "card" if pin is None else "card and PIN"
        return self._login(method, key, user, check, station, printer=printer, client=client)

    def login_id_pin(
        self,
        id_number: str,
        pin: str,
        *,
        station: str,
        printer: str | None = None,
        client: str | None = None,
    ) -> str:
        """Log in with an ID number and PIN; return the user name."""
        user = self.users.by_id_number(id_number)
        key = f"user:{user.username}" if user is not None else f"id:{id_number[:64]}"

        def check(found: User | None) -> bool:
            return verify_secret(found.pin_hash if found is not None else None, pin)

        return self._login(
            "ID number and PIN", key, user, check, station, printer=printer, client=client
        )

    def card_owner(self, card_number: str, *, station: str, printer: str | None = None) -> str:
        """Fast Release: whose card this is, by the card alone (a tap, no PIN by design)."""
        user = self.users.by_card(card_number) if card_number.strip() else None
        key = (
            f"user:{user.username}"
            if user is not None
            else "card:" + self.users.card_key.card_hash(normalize_card(card_number))[:32]
        )
        return self._login(
            "card (fast release)", key, user, lambda u: u is not None, station, printer=printer
        )

    def _login(
        self,
        method: str,
        account: str,
        user: User | None,
        check: Callable[[User | None], bool],
        station: str,
        *,
        printer: str | None = None,
        client: str | None = None,
    ) -> str:
        station = station[:MAX_STATION]
        keys = [Lockout.account(account), Lockout.station(station)]
        if client is not None and f"api:{client}" != station:
            # A station name the client chose could be changed at every guess: its address
            # is counted too.
            keys.append(Lockout.station(f"api:{client}"))
        actor = user.username if user is not None else UNKNOWN_ACTOR
        try:
            self.lockout.check(keys)
        except LockedOut as exc:
            self._record(
                actor,
                Outcome.REFUSED,
                f"{method} at {station}: locked out, retry in {exc.retry_after} s",
                printer,
            )
            raise
        ok = check(user)  # run even for unknown or disabled users: the same time
        if not ok or user is None or user.disabled:
            locked = self.lockout.failed(keys)
            detail = f"{method} at {station}: refused"
            if locked:
                detail += f"; locked for {int(locked)} s after repeated failures"
            self._record(actor, Outcome.REFUSED, detail, printer)
            raise AuthenticationFailed()
        self.lockout.succeeded(keys[0])
        self._record(user.username, Outcome.OK, f"{method} at {station}", printer)
        return user.username

    def _record(self, actor: str, outcome: Outcome, detail: str, printer: str | None) -> None:
        if self.audit is not None:
            self.audit.record(
                actor,
                Action.AUTH_LOGIN,
                printer=printer,
                outcome=outcome,
                detail=detail,
                at=self.wall_clock(),
            )

    # -- delegation -------------------------------------------------------------------

    def may_release(self, actor: str, owner: str) -> bool:
        """True if ``actor`` may see, release and cancel ``owner``'s held jobs."""
        return self.users.may_release(actor, owner)

    def releasable_owners(self, actor: str) -> list[str]:
        """The actor plus everyone who delegated to them (directly or to their group)."""
        return self.users.releasable_owners(actor)
