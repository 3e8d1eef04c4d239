"""The job service in-process: hold timeouts with an injected clock, cancellation."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from harness.db_faults import LostCommit, Unreachable, connection_lost
from spoolvault.audit import Action, AuditLog, list_events
from spoolvault.db import CommitUnknown, Job, JobState
from spoolvault.errors import SpoolWriteError
from spoolvault.jobs import intake as intake_module
from spoolvault.jobs.intake import Submission
from spoolvault.jobs.service import JobService
from spoolvault.runtime import Runtime
from spoolvault.settings import HIDDEN_TITLE
from spoolvault.spool.store import SpoolFile, SpoolWriter


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    with Runtime.open(tmp_path / "data", None, create=True) as runtime:
        yield runtime


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


def submit(jobs: JobService, owner: str, data: bytes) -> int:
    async def go() -> int:
        job = await jobs.submit(Submission(owner=owner, queue="secure"), _chunks(data))
        return job.id

    return anyio.run(go)


def test_held_jobs_expire_after_the_hold_timeout(rt: Runtime) -> None:
    clock = Clock()
    jobs = JobService(rt.db, rt.store, clock=clock)
    rt.db.update_settings("primary", {"hold_timeout_minutes": 60})
    old = submit(jobs, "alice", b"old job")
    clock.now += timedelta(minutes=50)
    young = submit(jobs, "bob", b"young job")
    assert jobs.expire_held() == 0  # nothing is 60 minutes old yet

    clock.now += timedelta(minutes=11)  # old: 61 minutes, young: 11 minutes
    assert jobs.expire_held() == 1
    expired, kept = jobs.get(old), jobs.get(young)
    assert expired.state is JobState.EXPIRED and "60 minutes" in (expired.state_reason or "")
    assert kept.state is JobState.HELD
    assert expired.spool_name not in rt.store.encrypted.names()  # crypto-shredded
    assert kept.spool_name in rt.store.encrypted.names()


def test_expiry_handles_many_jobs_in_batches(rt: Runtime) -> None:
    clock = Clock()
    jobs = JobService(rt.db, rt.store, clock=clock)
    for i in range(25):
        submit(jobs, f"user{i}", b"x" * (i + 1))
    clock.now += timedelta(minutes=241)  # the default timeout is 240 minutes
    assert jobs.expire_held(batch=7) == 25
    assert rt.store.encrypted.names() == []
    assert {j.state for j in jobs.list()} == {JobState.EXPIRED}


def submit_to(jobs: JobService, owner: str, queue: str) -> int:
    async def go() -> int:
        job = await jobs.submit(Submission(owner=owner, queue=queue), _chunks(b"doc"))
        return job.id

    return anyio.run(go)


def test_a_printer_queue_can_override_the_hold_timeout(rt: Runtime) -> None:
    from spoolvault.printers.registry import add_printer

    clock = Clock()
    jobs = JobService(rt.db, rt.store, clock=clock)
    rt.db.update_settings("primary", {"hold_timeout_minutes": 60})
    add_printer(rt.db, name="short", uri="ipp://127.0.0.1:1/ipp/print", hold_timeout_minutes=10)
    add_printer(rt.db, name="long", uri="ipp://127.0.0.1:1/ipp/print", hold_timeout_minutes=600)
    add_printer(rt.db, name="plain", uri="ipp://127.0.0.1:1/ipp/print")
    ids = {q: submit_to(jobs, "alice", q) for q in ("short", "long", "plain", "secure")}
    assert jobs.expires_at(jobs.get(ids["short"])) == clock.now + timedelta(minutes=10)
    assert jobs.expires_at(jobs.get(ids["plain"])) == clock.now + timedelta(minutes=60)

    clock.now += timedelta(minutes=11)
    assert jobs.expire_held() == 1
    assert jobs.get(ids["short"]).state is JobState.EXPIRED
    assert "10 minutes" in (jobs.get(ids["short"]).state_reason or "")

    clock.now += timedelta(minutes=50)  # 61 minutes: the server's timeout for the rest
    assert jobs.expire_held() == 2
    states = {q: jobs.get(i).state for q, i in ids.items()}
    assert states == {
        "short": JobState.EXPIRED,
        "long": JobState.HELD,
        "plain": JobState.EXPIRED,
        "secure": JobState.EXPIRED,
    }
    clock.now += timedelta(minutes=540)
    assert jobs.expire_held() == 1
    assert jobs.get(ids["long"]).state is JobState.EXPIRED


def test_an_owner_may_extend_a_hold_once(rt: Runtime) -> None:
    from spoolvault.jobs.errors import JobNotPossible

    clock = Clock()
    jobs = JobService(rt.db, rt.store, clock=clock)
    rt.db.update_settings("primary", {"hold_timeout_minutes": 60})
    job_id = submit(jobs, "alice", b"extend me")
    clock.now += timedelta(minutes=50)
    extended = jobs.extend_hold(job_id, actor="alice")
    assert extended.hold_extended_until == clock.now + timedelta(minutes=60)
    with pytest.raises(JobNotPossible, match="once"):
        jobs.extend_hold(job_id, actor="alice")
    clock.now += timedelta(minutes=59)  # 109 minutes after submission: still held
    assert jobs.expire_held() == 0
    assert jobs.expires_at(jobs.get(job_id)) == clock.now + timedelta(minutes=1)
    clock.now += timedelta(minutes=2)
    assert jobs.expire_held() == 1
    assert jobs.get(job_id).state is JobState.EXPIRED
    with pytest.raises(JobNotPossible, match="not held"):
        jobs.extend_hold(job_id, actor="alice")


def test_document_names_are_erased_after_the_set_days(rt: Runtime) -> None:
    clock = Clock()
    jobs = JobService(rt.db, rt.store, clock=clock)

    async def titled(title: str) -> int:
        sub = Submission(owner="alice", queue="secure", title=title)
        return (await jobs.submit(sub, _chunks(b"doc"))).id

    old = anyio.run(titled, "salary review.pdf")
    assert jobs.redact_titles() == 0  # 0 days: never
    rt.db.update_settings("primary", {"redact_document_names_after_days": 7})
    clock.now += timedelta(days=6)
    young = anyio.run(titled, "minutes.pdf")
    clock.now += timedelta(days=2)
    jobs._redacted_at = -1e9  # looked at hourly: look now
    assert jobs.redact_titles() == 1
    assert jobs.get(old).title == "" and jobs.get(young).title == "minutes.pdf"


class FailingSome(JobService):
    """Fails the spool write of documents starting with b"full" (as a full disk would)
    and the record of jobs titled "bad"; its first write batch waits for ``gate``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = threading.Event()
        self.batches: list[int] = []

    def _write(self, writer: SpoolWriter | None, chunks: list[bytes]) -> SpoolWriter:
        if chunks[0].startswith(b"full"):
            raise SpoolWriteError("cannot write spool file: no space left on device")
        return super()._write(writer, chunks)

    def _new_job(self, intake: Any) -> Job:
        if intake.sub.title == "bad":
            raise ValueError("this record cannot be written")
        return super()._new_job(intake)

    def _write_batch(self, waiters: list[Any]) -> None:
        self.batches.append(len(waiters))
        if len(self.batches) == 1:
            assert self.gate.wait(10)
        super()._write_batch(waiters)


def test_one_failing_job_in_a_batch_fails_alone_and_leaves_no_file(rt: Runtime) -> None:
    jobs = FailingSome(rt.db, rt.store)

    async def one(title: str, data: bytes) -> Job | BaseException:
        sub = Submission(owner="alice", queue="secure", title=title)
        try:
            return await jobs.submit(sub, _chunks(data))
        except Exception as exc:
            return exc

    async def main() -> list[Job | BaseException]:
        first = asyncio.ensure_future(one("first", b"%PDF first"))
        await asyncio.sleep(0.2)  # the write thread now waits inside the first batch
        rest = [
            asyncio.ensure_future(one(title, data))
            for title, data in (("good", b"good"), ("bad", b"bad"), ("full", b"full disk"))
        ]
        await asyncio.sleep(0.2)
        jobs.gate.set()
        return [await first, *[await r for r in rest]]

    first, good, bad, full = asyncio.run(main())
    assert jobs.batches == [1, 3]  # the three queued meanwhile shared one batch
    assert isinstance(first, Job) and isinstance(good, Job)
    assert isinstance(bad, ValueError)
    assert isinstance(full, SpoolWriteError)
    held = jobs.list(states=[JobState.HELD])
    assert [j.title for j in held] == ["first", "good"]
    # Only the recorded jobs have files: the file of the job not recorded was removed.
    assert set(rt.store.encrypted.names()) == {j.spool_name for j in held}


async def _slow_chunks(data: bytes, *, size: int = 256 * 1024) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]
        await asyncio.sleep(0)


def spool_files(rt: Runtime) -> list[str]:
    """Every file in the encrypted spool directory, temporary ones included."""
    return sorted(p.name for p in rt.store.encrypted.directory.iterdir())


class SlowWrites(JobService):
    """Each write of a batch to a spool file takes 0.3 s (a slow disk)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.writing = threading.Event()

    def _write(self, writer: SpoolWriter | None, chunks: list[bytes]) -> SpoolWriter:
        self.writing.set()
        time.sleep(0.3)
        return super()._write(writer, chunks)


def test_a_large_upload_cancelled_during_its_first_write_leaves_no_file(rt: Runtime) -> None:
    jobs = SlowWrites(rt.db, rt.store)
    data = os.urandom(3 * 1024 * 1024)

    async def main() -> None:
        task = asyncio.ensure_future(
            jobs.submit(Submission(owner="alice", queue="secure"), _slow_chunks(data))
        )
        assert await asyncio.to_thread(jobs.writing.wait, 10)
        task.cancel()  # the first MiB's thread (which made the writer) is still writing
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert spool_files(rt) == []
    assert jobs.list() == []


class SlowRecord(JobService):
    """Committing a large document takes 0.3 s, and recording a batch 0.5 s."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.committing = threading.Event()

    def _write_and_commit(
        self, writer: SpoolWriter | None, chunks: list[bytes], *, sync_dir: bool = True
    ) -> SpoolFile:
        self.committing.set()
        time.sleep(0.3)
        return super()._write_and_commit(writer, chunks, sync_dir=sync_dir)

    def _record_batch(self, waiters: list[Any]) -> None:
        time.sleep(0.5)
        super()._record_batch(waiters)


def test_a_cancelled_large_submit_returns_only_once_its_job_is_recorded(rt: Runtime) -> None:
    jobs = SlowRecord(rt.db, rt.store)
    data = os.urandom(2 * 1024 * 1024 + 1)

    async def main() -> None:
        task = asyncio.ensure_future(
            jobs.submit(Submission(owner="alice", queue="secure"), _chunks(data))
        )
        assert await asyncio.to_thread(jobs.committing.wait, 10)
        task.cancel()  # while its file is committed; its record comes after
        with pytest.raises(asyncio.CancelledError):
            await task
        # Nothing is still in flight when the cancelled call returns.
        assert [j.state for j in jobs.list()] == [JobState.HELD]

    asyncio.run(main())
    [job] = jobs.list()
    assert rt.store.encrypted.names() == [job.spool_name]
    assert jobs.drain(1.0)


class BrokenSettings(JobService):
    """The settings cannot be read once the job is recorded (a database hiccup)."""

    def _submitted(self, jobs: list[Job]) -> None:
        self.settings = self._broken  # type: ignore[method-assign]
        super()._submitted(jobs)

    def _broken(self) -> dict[str, Any]:
        raise RuntimeError("database is locked")


def test_a_recorded_job_is_accepted_and_audited_even_if_settings_fail(
    rt: Runtime, tmp_path: Path
) -> None:
    audit = AuditLog.open(tmp_path / "audit.jsonl", rt.db)
    try:
        jobs = BrokenSettings(rt.db, rt.store, audit=audit)
        job_id = submit(jobs, "alice", b"%PDF-1.4 hello")
        assert audit.sync()
    finally:
        audit.close()
    [event] = [e for e in list_events(rt.db) if e.action == Action.JOB_SUBMIT]
    assert event.job_id == job_id
    assert f"title {HIDDEN_TITLE}" in event.detail  # hidden, as the setting is unknown


def test_a_failed_directory_fsync_refuses_the_jobs_and_removes_their_files(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(directory: Path) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr("spoolvault.jobs.intake.fsync_dir", broken)
    jobs = JobService(rt.db, rt.store)
    with pytest.raises(SpoolWriteError, match=r"cannot sync the spool directory .*Input/output"):
        submit(jobs, "alice", b"%PDF-1.4 lost")
    assert spool_files(rt) == []
    assert jobs.list() == []


def test_a_job_whose_commit_is_unknown_keeps_its_file(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The record's COMMIT failed and the database could not be asked whether it landed:
    the client hears an error, but the file stays, so a record that did land is never a
    job without its document (a file no job names is removed at the next start)."""
    monkeypatch.setattr(rt.db._jobs_in, "engine", LostCommit(rt.db.engine))
    monkeypatch.setattr(rt.db._jobs_in, "read_engine", Unreachable())
    jobs = JobService(rt.db, rt.store)
    with pytest.raises(CommitUnknown):
        submit(jobs, "alice", b"%PDF-1.4 landed after all")
    [job] = jobs.list()  # it did land
    assert job.spool_name is not None
    assert rt.store.encrypted.read_all(job.spool_name) == b"%PDF-1.4 landed after all"


def test_settings_changed_during_a_read_are_not_overwritten_by_it(rt: Runtime) -> None:
    """A read of the settings that began before a change (and so returns the old values)
    must not cache them over the change: the next job follows the change at once."""
    jobs = JobService(rt.db, rt.store)
    reading, release = threading.Event(), threading.Event()
    real = rt.db.get_settings

    def slow_read(*args: Any) -> dict[str, Any]:
        values = real(*args)
        reading.set()
        assert release.wait(10)
        return values

    rt.db.get_settings = slow_read  # type: ignore[method-assign]
    old: list[dict[str, Any]] = []
    reader = threading.Thread(target=lambda: old.append(jobs.settings()))
    reader.start()
    assert reading.wait(10)
    rt.db.get_settings = real  # type: ignore[method-assign]
    rt.db.update_settings("primary", {"spool_file_encryption": False})
    jobs.forget_settings()
    release.set()
    reader.join(10)
    assert old[0]["spool_file_encryption"] is True  # read before the change
    assert jobs.settings()["spool_file_encryption"] is False
    assert not jobs.encryption_enabled()


@pytest.mark.parametrize(("lost", "landed"), [(1, True), (1, False), (2, False)])
def test_a_document_whose_attach_commit_is_lost_is_judged_by_what_landed(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch, lost: int, landed: bool
) -> None:
    """Send-Document's update of the job ends with a lost connection (``lost`` times in a
    row). If it landed, the job holds the document (removing the file would leave a held
    job without its document); if not, it is sent once more. Lost twice, the client hears
    that the outcome is unknown, and the file is kept."""
    jobs = JobService(rt.db, rt.store)
    job = jobs.create(Submission(owner="alice", queue="secure", title="two steps"))
    real = rt.db.session
    left = [lost]

    @contextlib.contextmanager
    def session(*, write: bool = True) -> Iterator[Any]:
        if not (write and left[0]):
            with real(write=write) as s:
                yield s
            return
        left[0] -= 1
        with real(write=write) as s:
            yield s
            if not landed:
                raise connection_lost()  # inside: rolled back
        raise connection_lost()

    monkeypatch.setattr(rt.db, "session", session)
    # Only the attach's update is lost here, not the mark that a document is arriving.
    monkeypatch.setattr(jobs, "_touch_incoming", lambda job_id: None)
    sub = Submission(owner="alice", queue="secure", title="two steps")
    document = b"%PDF-1.4 the second step"
    if lost == 1:
        got = asyncio.run(jobs.add_document(job.id, sub, _chunks(document)))
        assert got.id == job.id and got.state is JobState.HELD and got.spool_name
        assert rt.store.encrypted.read_all(got.spool_name) == document
    else:
        with pytest.raises(CommitUnknown):
            asyncio.run(jobs.add_document(job.id, sub, _chunks(document)))
        assert jobs.get(job.id).state is JobState.INCOMING
        assert len(spool_files(rt)) == 1  # kept: no job names it, the next start removes it


def test_a_document_still_arriving_keeps_its_job_from_the_stale_sweep(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """multiple-operation-time-out is the wait between operations (RFC 8011 §5.4.31): the
    sweep aborts a Create-Job job nobody sent a document for, never one whose Send-Document
    is still arriving, however long the upload takes."""
    clock = Clock()
    jobs = JobService(rt.db, rt.store, clock=clock)
    monkeypatch.setattr(intake_module, "INCOMING_KEEPALIVE", 0.0)  # alive at every chunk
    timeout = timedelta(seconds=120)
    forgotten = jobs.create(Submission(owner="alice", queue="secure")).id
    uploading = jobs.create(Submission(owner="alice", queue="secure")).id
    clock.now += timedelta(seconds=100)
    swept: list[int] = []

    async def slow_upload() -> AsyncIterator[bytes]:
        for part in (b"first part, ", b"second part, ", b"last part"):
            yield part
            clock.now += timedelta(seconds=100)
            swept.append(jobs.abort_stale_incoming(timeout))

    async def send() -> Job:
        return await jobs.add_document(
            uploading, Submission(owner="alice", queue="secure"), slow_upload()
        )

    job = anyio.run(send)
    assert swept == [1, 0, 0]  # the forgotten job only, at the first sweep
    assert job.state is JobState.HELD and job.size > 0
    assert jobs.get(forgotten).state is JobState.ABORTED
    clock.now += timedelta(seconds=121)
    assert jobs.abort_stale_incoming(timeout) == 0  # held now: nothing left to sweep


def test_a_send_document_right_after_its_create_job_costs_no_extra_write(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The mark that a document is arriving is a database write: a Send-Document soon after
    its Create-Job (within INCOMING_KEEPALIVE) skips it; a later one makes it."""
    clock = Clock()
    jobs = JobService(rt.db, rt.store, clock=clock)
    marks: list[int] = []
    real = jobs._touch_incoming

    def mark(job_id: int) -> None:
        marks.append(job_id)
        real(job_id)

    monkeypatch.setattr(jobs, "_touch_incoming", mark)
    sub = Submission(owner="alice", queue="secure")
    soon, late = jobs.create(sub).id, jobs.create(sub).id
    anyio.run(jobs.add_document, soon, sub, _chunks(b"%PDF-1.4 soon"))
    clock.now += timedelta(seconds=intake_module.INCOMING_KEEPALIVE + 1)
    anyio.run(jobs.add_document, late, sub, _chunks(b"%PDF-1.4 late"))
    assert marks == [late]
    assert jobs.get(soon).state is jobs.get(late).state is JobState.HELD
