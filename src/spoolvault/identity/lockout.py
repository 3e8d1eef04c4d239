"""Lockout: one set of failure counters for every login path, shared by every app server.

Every login (station password, card, card + PIN, ID number + PIN, MFD, Fast Release device,
admin pages, REST and IPP HTTP Basic) names its *account* (a user name; for a card or ID
number that matches nobody, that card or number) and its *address* (the client's network
address; a release device's name where the device, not a browser, is the client). Three
counters are consulted, each with its own threshold and backoff:

=========================  =========  ===========================  ===========================
counter                    threshold  after that, each failure     meaning
=========================  =========  ===========================  ===========================
pair (account, address)    5          locks the pair 30 s, doubling  a guesser locks only
                                      up to 1 h                    themselves, for that account
account (any address)      25         slows the account: 2 s,      many addresses on one
                                      doubling up to 60 s          account: backoff, never a
                                                                   long lock of the owner
address (any account)      20         locks the address 30 s,      one address trying many
                                      doubling up to 1 h           accounts or cards
=========================  =========  ===========================  ===========================

While any counter is locked, logins are refused with ``LockedOut`` (429, ``Retry-After``)
*before* the credentials are checked, so a locked pair cannot be guessed at. A success
clears the pair's counter only: one person logging in does not excuse a guesser elsewhere.
A counter untouched for ``forget_after`` seconds (1 h) is forgotten. Unknown names and cards
are counted like known ones, under their own key: the answer never tells whether an
account exists.

The counters live in the database (``login_counters``), so failures on several app
servers add up to one count. Times are wall-clock seconds; the clock is injectable so
tests move time instead of sleeping.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from spoolvault.db import Database
from spoolvault.db.models import LoginCounter
from spoolvault.errors import LockedOut


@dataclass(frozen=True)
class Policy:
    """One counter kind's numbers: failures before it acts, then base * 2**n up to cap."""

    threshold: int
    base: float
    cap: float


PAIR = Policy(threshold=5, base=30.0, cap=3600.0)
ACCOUNT = Policy(threshold=25, base=2.0, cap=60.0)
ADDRESS = Policy(threshold=20, base=30.0, cap=3600.0)
FORGET_SECONDS = 3600.0
PURGE_EVERY = 200  # failures between deletions of forgotten counters
MAX_KEY = 320


class Lockout:
    """Failure counters with exponential backoff, in the database."""

    def __init__(
        self,
        db: Database,
        clock: Callable[[], float] = time.time,
        *,
        pair: Policy = PAIR,
        account: Policy = ACCOUNT,
        address: Policy = ADDRESS,
        forget_after: float = FORGET_SECONDS,
    ) -> None:
        self.db = db
        self.clock = clock
        self.policies = {"pair": pair, "account": account, "address": address}
        self.forget_after = forget_after
        self._since_purge = 0

    def __repr__(self) -> str:
        return f"Lockout(db={self.db!r})"

    # -- keys -------------------------------------------------------------------------

    @staticmethod
    def pair_key(account: str, address: str) -> str:
        return f"pair:{account}|{address}"[:MAX_KEY]

    @staticmethod
    def account_key(account: str) -> str:
        return f"account:{account}"[:MAX_KEY]

    @staticmethod
    def address_key(address: str) -> str:
        return f"address:{address}"[:MAX_KEY]

    @classmethod
    def keys(cls, account: str, address: str) -> list[str]:
        """The three counters of a login: pair first (the one a success clears)."""
        return [cls.pair_key(account, address), cls.account_key(account), cls.address_key(address)]

    def _policy(self, key: str) -> Policy:
        return self.policies[key.partition(":")[0]]

    # -- checks -----------------------------------------------------------------------

    def check(self, keys: Iterable[str]) -> None:
        """Raise LockedOut if any of ``keys`` is locked now (the longest wait is given)."""
        keys = list(keys)
        now = self.clock()
        with self.db.session(write=False) as s:
            until = s.scalars(
                select(LoginCounter.locked_until).where(
                    LoginCounter.key.in_(keys),
                    LoginCounter.locked_until > now,
                    LoginCounter.last > now - self.forget_after,
                )
            ).all()
        if until:
            raise LockedOut(max(1, math.ceil(max(until) - now)))

    def failed(self, keys: Iterable[str]) -> float:
        """Count one failure on each key; return the longest lock it started (0: none)."""
        keys = sorted(set(keys))  # one order on every server: no deadlock between them
        for attempt in range(3):
            try:
                return self._failed(keys)
            except IntegrityError:  # another server inserted the same key first
                if attempt == 2:
                    raise
        return 0.0  # pragma: no cover

    def _failed(self, keys: list[str]) -> float:
        now = self.clock()
        longest = 0.0
        with self.db.session() as s:
            rows = {
                row.key: row
                for row in s.scalars(
                    select(LoginCounter)
                    .where(LoginCounter.key.in_(keys))
                    .order_by(LoginCounter.key)
                    .with_for_update()
                )
            }
            for key in keys:
                row = rows.get(key)
                if row is None:
                    row = LoginCounter(key=key, failures=0, locked_until=0.0, last=now)
                    s.add(row)
                elif now - row.last >= self.forget_after and row.locked_until <= now:
                    row.failures, row.locked_until = 0, 0.0
                row.failures += 1
                row.last = now
                policy = self._policy(key)
                over = row.failures - policy.threshold
                if over >= 0:
                    seconds = min(policy.cap, policy.base * 2.0 ** min(over, 32))
                    row.locked_until = now + seconds
                    longest = max(longest, seconds)
        self._since_purge += 1
        if self._since_purge >= PURGE_EVERY:
            self._since_purge = 0
            self.purge()
        return longest

    def succeeded(self, key: str) -> None:
        """Clear a pair's counter after a successful login."""
        with self.db.session() as s:
            s.execute(delete(LoginCounter).where(LoginCounter.key == key))

    def purge(self) -> int:
        """Delete forgotten counters; return how many."""
        now = self.clock()
        with self.db.session() as s:
            result = s.execute(
                delete(LoginCounter).where(
                    LoginCounter.last <= now - self.forget_after, LoginCounter.locked_until <= now
                )
            )
        return int(getattr(result, "rowcount", 0) or 0)

    def failures(self, key: str) -> int:
        """How many failures ``key`` has now (for tests and the admin view)."""
        now = self.clock()
        with self.db.session(write=False) as s:
            row = s.get(LoginCounter, key)
        if row is None or (now - row.last >= self.forget_after and row.locked_until <= now):
            return 0
        return row.failures
