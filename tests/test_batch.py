"""BatchWorker: one thread handles everything queued so far, and wakes the waiters."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from spoolvault.util.batch import BatchWorker, Waiter, settle

WAIT = 10.0


class Recorder:
    """A handle that records its batches, and can be held inside one."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.threads: set[str] = set()
        self.inside = threading.Event()
        self.go_on = threading.Event()
        self.go_on.set()

    def __call__(self, waiters: list[Waiter[int, int]]) -> None:
        self.batches.append([w.item for w in waiters])
        self.threads.add(threading.current_thread().name)
        self.inside.set()
        assert self.go_on.wait(WAIT)
        settle((w, w.item * 10) for w in waiters)


def test_items_queued_while_it_works_form_the_next_batch() -> None:
    handle = Recorder()
    worker: BatchWorker[int, int] = BatchWorker(handle, name="test-batch")

    async def main() -> list[int]:
        handle.go_on.clear()
        first = asyncio.ensure_future(worker.run(1))
        assert await asyncio.to_thread(handle.inside.wait, WAIT)
        # The thread is inside the first batch: these three wait for the next one.
        rest = [asyncio.ensure_future(worker.run(n)) for n in (2, 3, 4)]
        await asyncio.sleep(0.05)
        handle.go_on.set()
        return await asyncio.gather(first, *rest)

    assert asyncio.run(main()) == [10, 20, 30, 40]
    assert handle.batches == [[1], [2, 3, 4]]
    assert handle.threads == {"test-batch"}


def test_a_failing_batch_fails_its_waiters_and_the_thread_goes_on() -> None:
    calls: list[list[int]] = []

    def handle(waiters: list[Waiter[int, int]]) -> None:
        calls.append([w.item for w in waiters])
        if any(w.item < 0 for w in waiters):
            raise ValueError("negative")
        settle((w, w.item) for w in waiters)

    worker: BatchWorker[int, int] = BatchWorker(handle, name="test-batch")

    async def main() -> int:
        with pytest.raises(ValueError, match="negative"):
            await worker.run(-1)
        return await worker.run(5)

    assert asyncio.run(main()) == 5
    assert calls == [[-1], [5]]


def test_an_exception_result_is_raised_to_its_waiter_only() -> None:
    def handle(waiters: list[Waiter[int, int]]) -> None:
        settle((w, KeyError(w.item) if w.item == 2 else w.item) for w in waiters)

    worker: BatchWorker[int, int] = BatchWorker(handle, name="test-batch")

    async def main() -> list[object]:
        return await asyncio.gather(*(worker.run(n) for n in (1, 2, 3)), return_exceptions=True)

    one, two, three = asyncio.run(main())
    assert (one, three) == (1, 3)
    assert isinstance(two, KeyError)


def test_a_cancelled_waiter_waits_until_its_item_is_handled() -> None:
    handle = Recorder()
    worker: BatchWorker[int, int] = BatchWorker(handle, name="test-batch")

    async def main() -> float:
        handle.go_on.clear()
        task = asyncio.ensure_future(worker.run(7))
        assert await asyncio.to_thread(handle.inside.wait, WAIT)
        task.cancel()
        threading.Timer(0.2, handle.go_on.set).start()
        started = time.monotonic()
        with pytest.raises(asyncio.CancelledError):
            await task
        return time.monotonic() - started

    # The cancelled caller returned only once the batch was done, about 0.2 s later.
    assert asyncio.run(main()) >= 0.15
    assert handle.batches == [[7]]


def test_the_thread_ends_when_idle_and_starts_again() -> None:
    handle = Recorder()
    worker: BatchWorker[int, int] = BatchWorker(handle, name="test-batch-idle", idle=0.05)

    def alive() -> int:
        return sum(t.name == "test-batch-idle" for t in threading.enumerate())

    assert asyncio.run(worker.run(1)) == 10
    deadline = time.monotonic() + WAIT
    while alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert alive() == 0
    assert asyncio.run(worker.run(2)) == 20
    assert handle.batches == [[1], [2]]


def test_no_thread_fails_every_waiter_instead_of_hanging(monkeypatch: pytest.MonkeyPatch) -> None:
    failed: list[tuple[list[int], str]] = []

    def fail(waiters: list[Waiter[int, int]], exc: BaseException) -> None:
        failed.append(([w.item for w in waiters], str(exc)))
        settle((w, exc) for w in waiters)

    def no_thread(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    worker: BatchWorker[int, int] = BatchWorker(lambda ws: None, name="test-batch", fail=fail)
    monkeypatch.setattr(threading.Thread, "start", no_thread)

    async def main() -> None:
        with pytest.raises(RuntimeError, match="can't start new thread"):
            await asyncio.wait_for(worker.run(3), WAIT)

    asyncio.run(main())
    assert failed == [([3], "can't start new thread")]
