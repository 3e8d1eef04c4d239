"""A thread that handles queued work a batch at a time, for coroutines that wait on it.

Intake makes every job durable before its client hears success: an fsync of the spool
file and of its directory, a database commit, an fsync of the audit line. Done in one
worker thread per job, each job costs several thread hand-offs, and concurrent jobs
contend for the GIL (about 70 context switches per job, bench/intake.py). A
``BatchWorker`` instead has one thread take everything queued so far, handle it in one
pass (one directory fsync, one transaction, one audit fsync for all), and wake the event
loop once per batch.

There is no timer: a lone item is handled at once, and items queued while the thread
works form the next batch. The thread starts with the first item and ends after
``idle`` seconds without one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

# (item, the loop of the coroutine that waits for it, its future)
_Entry = tuple[T, asyncio.AbstractEventLoop, "asyncio.Future[R]"]


class BatchWorker(Generic[T, R]):
    """Runs ``handle(items) -> results`` (a result or an exception per item, in order)."""

    def __init__(
        self,
        handle: Callable[[list[T]], Sequence[R | BaseException]],
        *,
        name: str,
        idle: float = 5.0,
    ) -> None:
        self._handle = handle
        self.name = name
        self.idle = idle
        self._cond = threading.Condition()
        self._queue: list[_Entry[T, R]] = []
        self._running = False

    async def run(self, item: T) -> R:
        """Queue ``item`` and return its result (or raise its exception).

        As ``in_thread``: a cancelled caller still waits until the item is handled, so
        nothing it started is left half-way.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self.enqueue(item, loop, future)
        return await settled(future)

    def enqueue(self, item: T, loop: asyncio.AbstractEventLoop, future: asyncio.Future[R]) -> None:
        """Queue ``item``; its result goes to ``future`` on ``loop`` (any thread may call)."""
        with self._cond:
            self._queue.append((item, loop, future))
            if self._running:
                self._cond.notify()
                return
            self._running = True
        threading.Thread(target=self._run, name=self.name, daemon=True).start()

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._queue:
                    self._cond.wait(self.idle)
                if not self._queue:
                    self._running = False
                    return
                batch, self._queue = self._queue, []
            items = [item for item, _, _ in batch]
            try:
                results = list(self._handle(items))
                if len(results) != len(items):
                    raise RuntimeError(f"{self.name}: {len(results)} results for {len(items)}")
            except BaseException as exc:  # a bug: fail this batch, keep the thread
                log.exception("%s: a batch of %d failed", self.name, len(items))
                results = [exc] * len(items)
            by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[R], object]]] = {}
            for (_, loop, future), result in zip(batch, results, strict=True):
                by_loop.setdefault(loop, []).append((future, result))
            for loop, outcomes in by_loop.items():
                with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                    loop.call_soon_threadsafe(_settle, outcomes)


def _settle(outcomes: list[tuple[asyncio.Future[R], object]]) -> None:
    for future, result in outcomes:
        if future.done():
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)  # type: ignore[arg-type]  # R, as handle returned it


async def settled(future: asyncio.Future[R]) -> R:
    """Await ``future``; if cancelled meanwhile, wait for it to be done, then re-raise."""
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        while not future.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait({future})
        raise
