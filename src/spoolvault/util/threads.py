"""Blocking work off the event loop: the one way every coroutine runs a blocking call.

Database sessions, spool reads and writes, password hashing, audit fsyncs: every
front end and service awaits them through ``in_thread``. It runs the call in a shared pool
of worker threads and, if the awaiting task is cancelled, still waits for the call to end
before re-raising (a thread cannot be stopped): without that wait, clean-up code (aborting
a writer, deleting a file) would race the thread still using them.

A plain executor, not ``anyio.to_thread.run_sync`` (nor Starlette's ``run_in_threadpool``,
which wraps it): it costs a third as much per call (no capacity limiter or cancel scope),
and intake makes several calls per job. The pool's size is the limit on concurrent blocking
calls. Context variables are not copied into the thread (spoolvault uses none).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from typing import Any, TypeVar

from spoolvault.util.batch import settled

T = TypeVar("T")

WORKERS = 40  # threads in the pool: at most this many blocking calls run at once
_POOL = concurrent.futures.ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="spoolvault")


async def in_thread(fn: Callable[..., T], *args: Any) -> T:
    """Run a blocking step in a worker thread, and wait for it to end even if cancelled.

    Cancelling the awaiting task does not stop a thread: without the wait, clean-up code
    (aborting a writer, deleting a file) would race the thread still using them. Pass
    keyword arguments with ``functools.partial`` or a lambda.
    """
    return await settled(asyncio.get_running_loop().run_in_executor(_POOL, fn, *args))


def start_in_thread(fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
    """Start a blocking step in a worker thread without waiting for it (the pool of
    ``in_thread``); the caller arranges how it hears the outcome."""
    return asyncio.get_running_loop().run_in_executor(_POOL, fn, *args)
