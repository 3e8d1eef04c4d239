"""The intake pipeline of the job service: spool the document, then record the job.

``JobService`` (jobs/service.py) is the one object the front ends use; this is its intake
half (submit, spool and record, Create-Job and Send-Document). The order of intake is what
makes "durable before acknowledged" hold:

1. the document is received: whole in memory if it ends within its first MiB, else
   streamed into a spool writer (encrypted when the server's setting says so) a MiB at a
   time in worker threads, so the event loop never blocks on disk;
2. the writer commits: file fsynced, renamed, directory fsynced (small documents by the
   intake-write thread, every one waiting in one pass; docs/intake.md);
3. the job record is committed (SQLite synchronous=FULL / PostgreSQL) by the intake-record
   thread, every job waiting in one transaction;
4. the ``job.submit`` audit events are recorded, one fsync for the batch (docs/audit.md);
5. only then is the client told the job is accepted.

A failure at 1 or 2 leaves nothing; a failure at 3 deletes (crypto-shreds) the file. A crash
between 2 and 3 leaves a file no record names: an orphan, found by recovery tools, never a
half-visible job.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import update

from spoolvault.audit import Action, AuditEntry
from spoolvault.db import CommitUnknown, Database, Job, JobState, brief_error
from spoolvault.documents.formats import FormatSniffer, generic, same
from spoolvault.documents.pages import PageCounter
from spoolvault.errors import Refused, SpoolWriteError
from spoolvault.jobs.errors import JobNotPossible, JobTooLarge
from spoolvault.metrics import Metrics
from spoolvault.settings import HIDDEN_TITLE, HIDE_DOCUMENT_NAMES
from spoolvault.spool.store import SpoolFile, SpoolStore, SpoolWriter
from spoolvault.util.batch import BatchWorker, Waiter, settle, settled
from spoolvault.util.fs import fsync_dir
from spoolvault.util.threads import in_thread, start_in_thread

log = logging.getLogger(__name__)
# How often a Send-Document upload still arriving marks its job as alive (seconds; well
# under multiple-operation-time-out).
INCOMING_KEEPALIVE = 30.0

# Hand the writer about this much at a time: big enough that thread hops cost nothing next
# to the disk, small enough that memory stays flat whatever the job size.
WRITE_BATCH = 1024 * 1024  # bytes received per hand-over to the writer's thread
UNKNOWN_OWNER = "unknown"


@dataclass
class Submission:
    """What a client said about a job it submits (metadata only, never content)."""

    owner: str
    queue: str
    title: str = ""
    document_format: str = "application/octet-stream"
    pages: int | None = None
    pin_hash: str | None = None
    client_hold: str | None = None
    # Job template attributes, JSON-able, every value tag kept (ipp.attributes).
    attributes: list[Any] = field(default_factory=list)
    originating_host: str | None = None


@dataclass(frozen=True)
class Scan:
    """What was learnt from a document's bytes as it streamed in."""

    pages: int | None = None
    detected: str | None = None  # documents.formats: the MIME type its first bytes show


@dataclass(eq=False)
class _Intake:
    """A received document on its way to becoming a durable held job (``_commit``)."""

    sub: Submission
    scan: Scan
    job_id: int | None = None  # an INCOMING job (Create-Job) that gets this document
    document: list[bytes] | None = None  # a small document, for the write thread
    spool_file: SpoolFile | None = None  # the document, committed (for the record thread)
    recorded: bool = False  # its job record is committed
    update_sent: bool = False  # Send-Document: the job's update reached its COMMIT


class JobIntake:
    """Intake of jobs: the part of ``JobService`` that makes received documents held jobs.

    A base of ``JobService``, which sets the attributes below and calls ``_start_intake``.
    """

    db: Database
    store: SpoolStore
    clock: Callable[[], datetime]
    max_job_size: int
    metrics: Metrics
    on_submit: Callable[[], None] | None

    if TYPE_CHECKING:  # defined by JobService

        def settings(self) -> dict[str, Any]: ...
        def encryption_enabled(self) -> bool: ...
        def record_events(self, entries: list[AuditEntry]) -> None: ...
        def get(self, job_id: int) -> Job: ...

    def _start_intake(self) -> None:
        """Make received documents durable held jobs, every job waiting in one pass: a
        pipeline of two threads, one writing small documents, one recording jobs."""
        self._writing: BatchWorker[_Intake, Job] = BatchWorker(
            self._write_batch, name="intake-write", fail=self._fail_intakes, max_batch=64
        )
        self._recording: BatchWorker[_Intake, Job] = BatchWorker(
            self._record_batch, name="intake-record", fail=self._fail_intakes
        )
        self._committing = 0  # large documents being committed in worker threads
        self._committing_lock = threading.Lock()

    async def _receive(
        self, chunks: AsyncIterator[bytes]
    ) -> tuple[SpoolWriter | None, list[bytes], Scan]:
        """Receive a document: (writer, the rest, its page count and detected format).

        A document that ends within its first batch (WRITE_BATCH bytes) comes back whole,
        with no writer (nothing is on disk yet), for the write thread. A larger one is
        streamed into a new, uncommitted writer a batch at a time, each batch handed over
        by reference (no copy) in one thread call that runs while the next batch is
        received: at most two batches are in memory. The rest, its last batch, is not
        written yet.
        """
        pages = PageCounter()
        sniffer = FormatSniffer()
        writer: SpoolWriter | None = None
        pending: asyncio.Future[SpoolWriter] | None = None
        try:
            batch: list[bytes] = []
            held = 0
            size, limit = 0, self.max_job_size
            async for chunk in chunks:
                size += len(chunk)
                if limit and size > limit:
                    raise JobTooLarge(
                        f"the document is larger than this server's limit of {limit} bytes "
                        f"(MaxJobSize)"
                    )
                pages.feed(chunk)
                sniffer.feed(chunk)
                batch.append(chunk)
                held += len(chunk)
                if held >= WRITE_BATCH:
                    if pending is not None:
                        # Shielded: a cancelled request must still learn the writer (made
                        # by the first batch's thread) to abort it below.
                        writer = await asyncio.shield(pending)
                    pending = asyncio.ensure_future(in_thread(self._write, writer, batch))
                    batch, held = [], 0
            if pending is not None:
                writer, pending = await asyncio.shield(pending), None
        except BaseException:
            # Client gone, disk full, shutdown: nothing of this job may remain. A write
            # still running in its thread ends first: the writer is not shared.
            if pending is not None:
                with contextlib.suppress(BaseException):
                    writer = await asyncio.shield(pending)
            if writer is not None:
                await in_thread(writer.abort)
            raise
        return writer, batch, Scan(pages.result(), sniffer.result())

    def _write(self, writer: SpoolWriter | None, chunks: list[bytes]) -> SpoolWriter:
        """Append ``chunks`` to ``writer`` (a new one if None); abort it if that fails."""
        if writer is None:
            writer = self.store.create(encrypted=self.encryption_enabled())
        try:
            for chunk in chunks:
                writer.write(chunk)
        except BaseException:
            writer.abort()
            raise
        return writer

    def _write_and_commit(
        self, writer: SpoolWriter | None, chunks: list[bytes], *, sync_dir: bool = True
    ) -> SpoolFile:
        """Write the rest of a document and commit its file (see SpoolWriter.commit)."""
        writer = self._write(writer, chunks)
        try:
            return writer.commit(sync_dir=sync_dir)
        except BaseException:
            writer.abort()
            raise

    async def spool(self, chunks: AsyncIterator[bytes]) -> tuple[SpoolFile, Scan]:
        """Stream a document into a new, committed spool file; return it and a page count.

        The file has no job yet: ``record`` it (LPD, whose control file may come last).
        """
        writer, rest, scan = await self._receive(chunks)
        return await in_thread(self._write_and_commit, writer, rest), scan

    async def record(self, sub: Submission, spool_file: SpoolFile, scan: Scan) -> Job:
        """Record a held job for a committed spool file; shred the file if that fails."""
        return await self._recording.run(_Intake(sub, scan, spool_file=spool_file))

    async def submit(self, sub: Submission, chunks: AsyncIterator[bytes]) -> Job:
        """Spool a document and record it as a held job; return the durable job."""
        writer, rest, scan = await self._receive(chunks)
        return await self._commit(_Intake(sub, scan), writer, rest)

    async def _commit(self, intake: _Intake, writer: SpoolWriter | None, rest: list[bytes]) -> Job:
        """Make a received document a durable held job (see ``_write_batch``)."""
        if writer is None:
            # A small document: the write thread writes it, with the others of its batch.
            intake.document = rest
            return await self._writing.run(intake)
        # A large one is committed in a worker thread (its fsync may take a while and must
        # not hold up the small ones), which then queues it for the record thread itself.
        # Only the job's future is awaited, so a request cancelled meanwhile still waits
        # until its job is recorded or refused: never a file without a record.
        loop = asyncio.get_running_loop()
        waiter: Waiter[_Intake, Job] = Waiter(intake, loop, loop.create_future())

        def commit_and_queue() -> None:
            try:
                intake.spool_file = self._write_and_commit(writer, rest)
            except BaseException as exc:
                settle([(waiter, exc)])
            else:
                self._recording.put([waiter])
            finally:
                with self._committing_lock:
                    self._committing -= 1

        with self._committing_lock:
            self._committing += 1
        try:
            start_in_thread(commit_and_queue)
        except BaseException:
            with self._committing_lock:
                self._committing -= 1
            await in_thread(writer.abort)
            raise
        return await settled(waiter.future)

    def drain(self, timeout: float = 30.0) -> bool:
        """Wait until every document received so far is recorded or refused (at shutdown,
        before the audit log closes); False if ``timeout`` ran out first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # The write thread and large commits hand on to the record thread: all three
            # idle, and the first still idle after the others, means nothing is in flight.
            if (
                self._writing.wait_idle(0.05)
                and self._committing == 0
                and self._recording.wait_idle(0.05)
                and self._writing.wait_idle(0)
                and self._committing == 0
            ):
                return True
        log.error("intake: jobs still being made durable after %.0f s at shutdown", timeout)
        return False

    def _write_batch(self, waiters: list[Waiter[_Intake, Job]]) -> None:
        """The write thread's pass over every small document waiting (BatchWorker).

        All are written (sealed, and on their way to the disk) before the first fsync
        waits; each is committed; one fsync of the spool directory makes all the renames
        durable. Then they go to the record thread (``_record_batch``), and this thread
        takes the next batch meanwhile. A document that fails gets its error at once.
        """
        failed: list[tuple[Waiter[_Intake, Job], BaseException]] = []
        ended: list[tuple[Waiter[_Intake, Job], SpoolWriter]] = []
        for w in waiters:
            document, w.item.document = w.item.document, None
            assert document is not None
            writer = None
            try:
                writer = self._write(None, document)
                writer.end()
            except BaseException as exc:
                if writer is not None:
                    writer.abort()
                failed.append((w, exc))
            else:
                ended.append((w, writer))
        unsynced: dict[bool, list[Waiter[_Intake, Job]]] = {}  # encrypted -> renamed
        for w, writer in ended:
            try:
                w.item.spool_file = spool_file = writer.commit(sync_dir=False)
            except BaseException as exc:
                writer.abort()
                failed.append((w, exc))
            else:
                unsynced.setdefault(spool_file.encrypted, []).append(w)
        done: list[Waiter[_Intake, Job]] = []
        for encrypted, synced in unsynced.items():
            directory = self.store.spool(encrypted).directory
            try:
                fsync_dir(directory)
            except OSError as exc:
                error = SpoolWriteError(f"cannot sync the spool directory {directory}: {exc}")
                for w in synced:
                    self._remove_file(w.item)
                    failed.append((w, error))
            else:
                done += synced
        settle(failed)
        if done:
            self._recording.put(done)

    def _record_batch(self, waiters: list[Waiter[_Intake, Job]]) -> None:
        """The record thread's pass over every committed document waiting (BatchWorker):
        the new jobs recorded in one transaction, documents attached to their INCOMING
        jobs, all audited with one fsync. A job that fails gets its error, and its file is
        removed; the others go on."""
        results: list[Job | BaseException | None] = [None] * len(waiters)
        new: list[tuple[int, Job]] = []
        for i, w in enumerate(waiters):
            if w.item.job_id is None:
                try:
                    new.append((i, self._new_job(w.item)))
                except Exception as exc:
                    results[i] = exc
                continue
            try:
                results[i] = self._attach(w.item)
            except Refused as exc:  # the job is no longer waiting: nothing was changed
                results[i] = exc
            except Exception as exc:
                results[i] = self._attached_after_all(w.item, exc)
        if new:
            try:
                errors = self.db.add_jobs([job for _, job in new])
            except Exception as exc:
                errors = [exc] * len(new)
            for (i, job), error in zip(new, errors, strict=True):
                results[i] = error if error is not None else job
        outcomes: list[tuple[Waiter[_Intake, Job], Job | BaseException]] = []
        for w, result in zip(waiters, results, strict=True):
            assert result is not None
            if isinstance(result, CommitUnknown):
                # Perhaps recorded after all: its file stays (an orphan goes at the next start).
                log.error("job of %s: %s; its spool file is kept", w.item.sub.owner, result)
            elif isinstance(result, BaseException):
                self._remove_file(w.item)
            else:
                w.item.recorded = True
            outcomes.append((w, result))
        self._submitted([r for _, r in outcomes if isinstance(r, Job)])
        settle(outcomes)

    def _attached_after_all(self, intake: _Intake, exc: Exception) -> Job | BaseException:
        """After a failed attach: its job, if the update landed all the same (a COMMIT whose
        answer was lost) or lands when sent once more; else the error. CommitUnknown when
        the database cannot tell: the file is then kept, as a job must never name a file
        that is gone (one that no job names is removed at the next start)."""
        if not intake.update_sent:  # failed before its update was sent: nothing changed
            return exc
        log.warning("job %s: its document's update failed (%r); checking", intake.job_id, exc)
        try:
            if (job := self._holding(intake)) is not None:
                return job
            try:
                return self._attach(intake)  # it did not land (yet): once more
            except Refused as refused:
                # No longer waiting: the first update landed late, or the job ended.
                return self._holding(intake) or refused
        except Exception as again:
            log.error(
                "job %s: cannot tell whether its document is recorded (%r)", intake.job_id, again
            )
            return CommitUnknown(
                "the job's document was received, but the database could not tell whether "
                "it was recorded; the document is kept"
            )

    def _holding(self, intake: _Intake) -> Job | None:
        """The job of a Send-Document, if it names this document's file."""
        assert intake.job_id is not None and intake.spool_file is not None
        job = self.db.get_job(intake.job_id)
        return job if job is not None and job.spool_name == intake.spool_file.name else None

    def _fail_intakes(self, waiters: list[Waiter[_Intake, Job]], exc: BaseException) -> None:
        """A batch that could not be handled (a bug, or no thread): the jobs not recorded
        lose their files, and every request hears the error."""
        for w in waiters:
            if not w.item.recorded:
                self._remove_file(w.item)
        settle((w, exc) for w in waiters)

    def _remove_file(self, intake: _Intake) -> None:
        """Remove the committed file of a job that will not be recorded (never raises;
        a file left behind is removed at the next start, as no job names it)."""
        spool_file = intake.spool_file
        if spool_file is not None:
            try:
                self.store.spool(spool_file.encrypted).delete(spool_file.name, missing_ok=True)
            except Exception:
                log.exception("could not remove spool file %s of a refused job", spool_file.name)

    def _submitted(self, jobs: list[Job]) -> None:
        """Audit and count newly held jobs (one audit fsync for all). Never raises: the
        jobs are durable, and their clients hear so whatever fails here (logged)."""
        if not jobs:
            return
        try:
            hide = bool(self.settings()[HIDE_DOCUMENT_NAMES])
        except Exception:
            log.exception("cannot read the settings: document names hidden in the audit")
            hide = True
        self.record_events(
            [
                AuditEntry(
                    job.owner,
                    Action.JOB_SUBMIT,
                    job_id=job.id,
                    detail=_submit_detail(job, hide_title=hide),
                )
                for job in jobs
            ]
        )
        try:
            for job in jobs:
                self.metrics.spooled(job.size, job.encrypted)
            if self.on_submit is not None:
                self.on_submit()
        except Exception:
            log.exception("could not count or report %d submitted jobs", len(jobs))

    def _new_job(self, intake: _Intake) -> Job:
        sub, spool_file = intake.sub, intake.spool_file
        assert spool_file is not None
        return self.db.new_job(
            owner=sub.owner,
            queue=sub.queue,
            title=sub.title,
            spool_name=spool_file.name,
            size=spool_file.size,
            encrypted=spool_file.encrypted,
            key_id=spool_file.key_id,
            format_version=spool_file.format_version,
            pages=sub.pages if sub.pages is not None else intake.scan.pages,
            state=JobState.HELD,
            created_at=self.clock(),
            detected_format=_detected(sub, intake.scan),
            **self._extra(sub),
        )

    @staticmethod
    def _extra(sub: Submission) -> dict[str, Any]:
        return {
            "document_format": sub.document_format,
            "pin_hash": sub.pin_hash,
            "client_hold": sub.client_hold,
            "attributes": json.dumps(sub.attributes),
            "originating_host": sub.originating_host,
        }

    def create(self, sub: Submission) -> Job:
        """Record a job that has no document yet (IPP Create-Job)."""
        return self.db.add_job(
            owner=sub.owner,
            queue=sub.queue,
            title=sub.title,
            spool_name=None,
            size=0,
            encrypted=False,
            pages=sub.pages,
            state=JobState.INCOMING,
            created_at=self.clock(),
            **self._extra(sub),
        )

    async def add_document(self, job_id: int, sub: Submission, chunks: AsyncIterator[bytes]) -> Job:
        """Receive the document of an INCOMING job (IPP Send-Document); it becomes held."""
        job = await in_thread(self.get, job_id)
        if job.state is not JobState.INCOMING:
            raise JobNotPossible(f"job {job_id} already has its document or is finished")
        # The time-out counts from this operation. A Send-Document right after its
        # Create-Job (CUPS, macOS) needs no mark: its job is younger than the keep-alive
        # interval, so its marks while the data arrives come in time.
        if self.clock() - job.updated_at >= timedelta(seconds=INCOMING_KEEPALIVE):
            await in_thread(self._touch_incoming, job_id)
        writer, rest, scan = await self._receive(self._keeping_alive(job_id, chunks))
        return await self._commit(_Intake(sub, scan, job_id=job_id), writer, rest)

    async def _keeping_alive(
        self, job_id: int, chunks: AsyncIterator[bytes]
    ) -> AsyncIterator[bytes]:
        """The chunks of a Send-Document, the job touched every INCOMING_KEEPALIVE seconds:
        multiple-operation-time-out is the wait between operations (RFC 8011 §5.4.31), so
        an upload still arriving is never aborted as stale (``abort_stale_incoming``)."""
        touched = time.monotonic()
        async for chunk in chunks:
            if time.monotonic() - touched >= INCOMING_KEEPALIVE:
                await in_thread(self._touch_incoming, job_id)
                touched = time.monotonic()
            yield chunk

    def _touch_incoming(self, job_id: int) -> None:
        """Mark a job's Send-Document as under way (never raises: if the database cannot
        take it, the job's time-out counts from its last mark, and the attach tells)."""
        try:
            with self.db.session() as s:
                s.execute(
                    update(Job)
                    .where(Job.id == job_id, Job.state == JobState.INCOMING.value)
                    .values(updated_at=self.clock())
                )
        except Exception as exc:
            log.warning("job %d: cannot mark its document arriving: %s", job_id, brief_error(exc))

    def _attach(self, intake: _Intake) -> Job:
        job_id, sub, spool_file = intake.job_id, intake.sub, intake.spool_file
        pages = intake.scan.pages
        assert job_id is not None and spool_file is not None
        values: dict[str, Any] = {
            "spool_name": spool_file.name,
            "size": spool_file.size,
            "encrypted": spool_file.encrypted,
            "key_id": spool_file.key_id,
            "format_version": spool_file.format_version,
            "state": JobState.HELD,
            "updated_at": self.clock(),
            "detected_format": _detected(sub, intake.scan, job_id),
        }
        if sub.document_format != "application/octet-stream":
            values["document_format"] = sub.document_format
        with self.db.session() as s:
            job = s.get(Job, job_id)
            if job is None or job.state is not JobState.INCOMING:
                raise JobNotPossible(f"job {job_id} is no longer waiting for its document")
            if job.pages is None:
                values["pages"] = pages
            for key, value in values.items():
                setattr(job, key, value)
            intake.update_sent = True  # what fails from here on may have landed
        return job


def _detected(sub: Submission, scan: Scan, job_id: int | None = None) -> str | None:
    """The detected format, a declaration the bytes contradict logged (the bytes win)."""
    found = scan.detected
    if (
        found is not None
        and not generic(sub.document_format)
        and not same(sub.document_format, found)
    ):
        log.warning(
            "%s from %s: declared %s but its bytes are %s; treated as %s",
            f"job {job_id}" if job_id is not None else "a job",
            sub.owner,
            sub.document_format,
            found,
            found,
        )
    return found


def _submit_detail(job: Job, *, hide_title: bool = False) -> str:
    """The audit detail of a submitted job: metadata only."""
    parts = [
        f"queue {job.queue}",
        f"title {HIDDEN_TITLE}" if hide_title else f"title {job.title!r}",
        f"{job.size} bytes",
        job.document_format,
        "encrypted" if job.encrypted else "not encrypted",
    ]
    if job.pages is not None:
        parts.insert(3, f"{job.pages} pages")
    if job.pin_hash is not None:
        parts.append("PIN-protected")
    if job.originating_host:
        parts.append(f"from {job.originating_host}")
    return ", ".join(parts)
