"""Threads that handle queued work a batch at a time, for coroutines that wait on it.

Intake makes every job durable before its client hears success: an fsync of the spool
file and of its directory, a database commit, an fsync of the audit line. Done in one
worker thread per job, each job costs several thread hand-offs, and concurrent jobs
contend for the GIL (about 70 context switches per job, bench/intake.py). A
``BatchWorker`` instead has one thread take everything queued so far and handle it in
one pass (one directory fsync, one transaction, one audit fsync for all), and wakes each
event loop once per batch. Two workers make a pipeline: the first passes what it has
done on to the second (``put``) and takes its next batch while the second works.

There is no timer: a lone item is handled at once, and items queued while the thread
works form the next batch. The thread starts with the first item and ends after
``idle`` seconds without one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


@dataclass(eq=False)
class Waiter(Generic[T, R]):
    """A queued item, and the future (on its event loop) of the coroutine waiting for it."""

    item: T
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[R]


class BatchWorker(Generic[T, R]):
    """One thread that runs ``handle(waiters)`` on everything queued so far.

    ``handle`` must ``settle`` each waiter or ``put`` it to another worker. If it raises,
    or no thread can be started, ``fail(waiters, exc)`` gets every waiter concerned: it
    cleans up what they left and settles them (by default it only settles them).
    """

    def __init__(
        self,
        handle: Callable[[list[Waiter[T, R]]], None],
        *,
        name: str,
        fail: Callable[[list[Waiter[T, R]], BaseException], None] | None = None,
        max_batch: int = 256,
        idle: float = 5.0,
    ) -> None:
        self._handle = handle
        self._fail = fail or _settle_all
        self.name = name
        self.max_batch = max_batch
        self.idle = idle
        self._cond = threading.Condition()
        self._queue: list[Waiter[T, R]] = []
        self._running = False  # a thread is started and not ended
        self._busy = False  # it is inside handle

    async def run(self, item: T) -> R:
        """Queue ``item`` and return its result (or raise its exception).

        As ``in_thread``: a cancelled caller still waits until the item is handled, so
        nothing it started is left half-way.
        """
        loop = asyncio.get_running_loop()
        waiter: Waiter[T, R] = Waiter(item, loop, loop.create_future())
        self.put([waiter])
        return await settled(waiter.future)

    def put(self, waiters: list[Waiter[T, R]]) -> None:
        """Queue these waiters (any thread may call; never raises)."""
        with self._cond:
            self._queue.extend(waiters)
            if self._running:
                self._cond.notify_all()  # the thread, and any wait_idle
                return
            self._running = True
        try:
            threading.Thread(target=self._run, name=self.name, daemon=True).start()
        except BaseException as exc:  # e.g. no more threads: fail all that wait, not hang
            with self._cond:
                self._running = False
                stranded, self._queue = self._queue, []
            log.error("%s: cannot start its thread: %s", self.name, exc)
            self._fail(stranded, exc)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until nothing is queued or being handled; False if ``timeout`` ran out."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._queue and not self._busy, timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._busy = False
                self._cond.notify_all()  # for wait_idle
                if not self._queue:
                    self._cond.wait(self.idle)
                if not self._queue:
                    self._running = False
                    return
                batch = self._queue[: self.max_batch]
                del self._queue[: self.max_batch]
                self._busy = True
            try:
                self._handle(batch)
            except BaseException as exc:  # a bug: fail this batch, keep the thread
                log.exception("%s: a batch of %d failed", self.name, len(batch))
                self._fail(batch, exc)


def _settle_all(waiters: list[Waiter[Any, Any]], exc: BaseException) -> None:
    settle((w, exc) for w in waiters)


def settle(outcomes: Iterable[tuple[Waiter[Any, R], R | BaseException]]) -> None:
    """Give waiters their results or exceptions: one wake-up per event loop (any thread)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[R], object]]] = {}
    for waiter, result in outcomes:
        by_loop.setdefault(waiter.loop, []).append((waiter.future, result))
    for loop, results in by_loop.items():
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
            loop.call_soon_threadsafe(_set, results)


def _set(results: list[tuple[asyncio.Future[Any], object]]) -> None:
    for future, result in results:
        if future.done():
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)


async def settled(future: asyncio.Future[R]) -> R:
    """Await ``future``; if cancelled meanwhile, wait for it to be done, then re-raise."""
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        while not future.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait({future})
        raise
