"""Lockout: exponential backoff after repeated failed logins, per account and per station.

Two counters are consulted for every login: the account's (a user name; for a card or ID
number that matches nobody, that card or number) and the station's (a release station, an
MFD, a client address). Each counts failures; once a counter reaches its threshold, every
further failure locks it for ``base * 2**(failures - threshold)`` seconds, up to ``cap``.
While locked, logins are refused with ``LockedOut`` *before* the credentials are checked,
so a locked account cannot be guessed at. A success clears the account's counter (not the
station's: one person logging in does not excuse a guesser at the same station); a counter
untouched for ``forget_after`` seconds is forgotten.

Unknown names and cards are counted like known ones, under their own key, and lock at the
same threshold: the answer never tells whether an account exists.

The state is kept in memory per application server (several servers each count on their
own), bounded in size. The clock is injectable: tests move time instead of sleeping.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from spoolvault.errors import LockedOut

ACCOUNT_THRESHOLD = 5  # failures before an account locks
STATION_THRESHOLD = 20  # a station serves many people: it takes more to lock it
BASE_SECONDS = 30.0
CAP_SECONDS = 3600.0
FORGET_SECONDS = 3600.0
MAX_ENTRIES = 100_000  # memory bound: the oldest counters are dropped first


@dataclass
class _Counter:
    failures: int = 0
    locked_until: float = 0.0
    last: float = 0.0


class Lockout:
    """Failure counters with exponential backoff (thread-safe)."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        *,
        account_threshold: int = ACCOUNT_THRESHOLD,
        station_threshold: int = STATION_THRESHOLD,
        base: float = BASE_SECONDS,
        cap: float = CAP_SECONDS,
        forget_after: float = FORGET_SECONDS,
        max_entries: int = MAX_ENTRIES,
    ) -> None:
        self.clock = clock
        self.account_threshold = account_threshold
        self.station_threshold = station_threshold
        self.base = base
        self.cap = cap
        self.forget_after = forget_after
        self.max_entries = max_entries
        self._counters: OrderedDict[str, _Counter] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def account(key: str) -> str:
        return f"account:{key}"

    @staticmethod
    def station(name: str) -> str:
        return f"station:{name}"

    def _threshold(self, key: str) -> int:
        return self.station_threshold if key.startswith("station:") else self.account_threshold

    def _get(self, key: str, now: float) -> _Counter | None:
        counter = self._counters.get(key)
        idle = counter is not None and now - counter.last >= self.forget_after
        if counter is not None and counter.locked_until <= now and idle:
            del self._counters[key]
            return None
        return counter

    def check(self, keys: Iterable[str]) -> None:
        """Raise LockedOut if any of ``keys`` is locked now (the longest wait is given)."""
        now = self.clock()
        wait = 0.0
        with self._lock:
            for key in keys:
                counter = self._get(key, now)
                if counter is not None and counter.locked_until > now:
                    wait = max(wait, counter.locked_until - now)
        if wait > 0:
            raise LockedOut(max(1, math.ceil(wait)))

    def failed(self, keys: Iterable[str]) -> float:
        """Count one failure on each key; return the longest lock it started (0: none)."""
        now = self.clock()
        longest = 0.0
        with self._lock:
            for key in keys:
                counter = self._get(key, now) or _Counter()
                counter.failures += 1
                counter.last = now
                over = counter.failures - self._threshold(key)
                if over >= 0:
                    seconds = min(self.cap, self.base * 2.0 ** min(over, 32))
                    counter.locked_until = now + seconds
                    longest = max(longest, seconds)
                self._counters[key] = counter
                self._counters.move_to_end(key)
            while len(self._counters) > self.max_entries:
                self._counters.popitem(last=False)
        return longest

    def succeeded(self, key: str) -> None:
        """Clear an account's counter after a successful login."""
        with self._lock:
            self._counters.pop(key, None)

    def failures(self, key: str) -> int:
        """How many failures ``key`` has now (for tests and the admin view)."""
        with self._lock:
            counter = self._get(key, self.clock())
            return 0 if counter is None else counter.failures
