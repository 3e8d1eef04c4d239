"""IdentityService: who is at the release station, and whose jobs they may release.

The one interface every release front end uses (REST release sessions, the MFD API, Fast
Release, the web release station), and the one password check of every front end
(``check_password``: IPP and REST administration HTTP Basic too). Each login method returns
the user name or raises:

- ``AuthenticationFailed``: one message whether the user, card or ID number is unknown,
  the account is disabled, or the password or PIN is wrong (no user enumeration). Unknown
  names take as long to refuse as wrong passwords (a dummy argon2 check).
- ``LockedOut``: the (account, client address) pair, the account across addresses or the
  address across accounts failed too often (lockout.py); checked before the credentials,
  so a locked pair cannot be guessed at.

Every attempt is an ``auth.login`` audit event: ``ok``, or ``refused`` with the method and
station, never the secret, and never the name typed for an unknown user (people type
passwords into the user-name field).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime

from spoolvault.audit import Action, AuditLog, Outcome
from spoolvault.db import Database, User, UserSource
from spoolvault.db.models import utcnow
from spoolvault.errors import AuthenticationFailed, LockedOut
from spoolvault.identity.cardkey import CardKey, normalize_card
from spoolvault.identity.ldap import LdapConfig
from spoolvault.identity.ldap import authenticate as ldap_authenticate
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
        clock: Callable[[], float] = time.time,
        wall_clock: Callable[[], datetime] = utcnow,
        lockout: Lockout | None = None,
        session_ttl: int = SESSION_SECONDS,
    ) -> None:
        self.db = db
        self.users = Users(db, card_key)
        self.audit = audit
        self.wall_clock = wall_clock
        self.lockout = lockout or Lockout(db, clock)
        self.sessions = SessionStore(db, clock, ttl=session_ttl)
        # The directory connection (server settings ldap_*); None: no directory logins.
        self.directory: Callable[[], LdapConfig | None] | None = None

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

        ``station`` names where (audit); ``client``, the network address, is what the
        lockout counts (the station stands for it when there is none, e.g. a device).
        """
        user = self.users.get(username)

        def check(found: User | None) -> bool:
            return self._password_matches(found, password)

        return self._login(
            "password", f"user:{username}", user, check, station, printer=printer, client=client
        )

    def check_password(
        self,
        username: str,
        password: str,
        *,
        client: str | None = None,
        method: str = "HTTP Basic",
    ) -> User | None:
        """The user, if ``username`` is an enabled account whose password is ``password``.

        The one password check of every front end that takes a user name and password with
        each request: IPP and REST administration HTTP Basic. It is under the same lockout
        as the logins (``client`` is the caller's address) and raises ``LockedOut``; refusals
        and lockouts are ``auth.login`` audit events, successes are not (HTTP Basic comes
        with every request). It takes as long for an unknown user as for a wrong password.
        """
        user = self.users.get(username)
        address = client or "unknown"
        try:
            self._login(
                method,
                f"user:{username}",
                user,
                lambda found: self._password_matches(found, password),
                f"{method} ({address})",
                client=address,
                record_ok=False,
            )
        except AuthenticationFailed:
            return None
        return user

    def _password_matches(self, user: User | None, password: str) -> bool:
        """The argon2 check of ``password`` against the user's hash (a dummy one without).

        A user synced from the directory (source ``ldap``) is checked by a bind as
        themselves when a directory is configured (``self.directory``); the directory
        down raises DirectoryUnavailable, never a fall-back to a local hash.
        """
        cfg = self.directory() if self.directory is not None else None
        if user is not None and user.source == UserSource.LDAP and cfg is not None:
            return ldap_authenticate(cfg, user.username, password)
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

    def card_owner(
        self,
        card_number: str,
        *,
        station: str,
        printer: str | None = None,
        pin: str | None = None,
        require_pin: bool = False,
    ) -> str:
        """Fast Release: whose card this is, by the card alone (a tap), or with
        ``require_pin`` (setting ``fast_release_require_pin``) and the user's PIN for users
        who have one; users without a PIN still release by the card alone."""
        user = self.users.by_card(card_number) if card_number.strip() else None
        key = (
            f"user:{user.username}"
            if user is not None
            else "card:" + self.users.card_key.card_hash(normalize_card(card_number))[:32]
        )

        def check(found: User | None) -> bool:
            if found is None:
                return False
            if require_pin and found.pin_hash is not None:
                return pin is not None and verify_secret(found.pin_hash, pin)
            return True

        method = "card and PIN (fast release)" if require_pin else "card (fast release)"
        return self._login(method, key, user, check, station, printer=printer)

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
        record_ok: bool = True,
    ) -> str:
        station = station[:MAX_STATION]
        # The client's address when known (a station name the client chose could change
        # at every guess); else the station, e.g. a registered device, is the address.
        keys = Lockout.keys(account, client or station)
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
        if record_ok:
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
