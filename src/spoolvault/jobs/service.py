"""Jobs: intake (spool the document, then record the job), hold, cancel.

One service used by every front end (IPP, raw 9100, LPD, the release stations, the REST
API, the admin web interface and the command line). The order of intake is what makes
"durable before acknowledged" hold:

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
import dataclasses
import hashlib
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import ColumnElement, func, or_, select, true, update

from spoolvault.archive import Archive
from spoolvault.audit import SYSTEM, Action, AuditEntry, AuditLog, Outcome, QueuedAudit
from spoolvault.db import CommitUnknown, Database, Job, JobState, Printer, brief_error
from spoolvault.db.models import utcnow
from spoolvault.documents.pages import PageCounter
from spoolvault.errors import ClientError, Conflict, NotFound, Refused, SpoolError, SpoolWriteError
from spoolvault.ipp.constants import Status
from spoolvault.metrics import Metrics
from spoolvault.settings import (
    ARCHIVE_RETENTION_DAYS,
    HIDDEN_TITLE,
    HIDE_DOCUMENT_NAMES,
    HOLD_TIMEOUT_MINUTES,
    REDACT_DOCUMENT_NAMES_AFTER_DAYS,
    SPOOL_FILE_ENCRYPTION,
)
from spoolvault.spool.store import SpoolFile, SpoolStore, SpoolWriter
from spoolvault.util.batch import BatchWorker, Waiter, settle, settled
from spoolvault.util.fs import fsync_dir
from spoolvault.util.threads import in_thread as in_thread  # re-exported for now
from spoolvault.util.threads import start_in_thread

log = logging.getLogger(__name__)
# How often a Send-Document upload still arriving marks its job as alive (seconds; well
# under multiple-operation-time-out).
INCOMING_KEEPALIVE = 30.0

# Hand the writer about this much at a time: big enough that thread hops cost nothing next
# to the disk, small enough that memory stays flat whatever the job size.
WRITE_BATCH = 1024 * 1024  # bytes received per hand-over to the writer's thread
SETTINGS_TTL = 2.0  # seconds a settings read is reused for new jobs
ARCHIVE_PURGE_EVERY = 3600.0  # seconds between looks for archived documents to purge
UNKNOWN_OWNER = "unknown"
_pin_hasher = PasswordHasher()

FINISHED_STATES = frozenset(
    {JobState.PRINTED, JobState.CANCELLED, JobState.EXPIRED, JobState.ABORTED}
)
_CANCEL_ACTIONS = {
    JobState.CANCELLED: Action.JOB_CANCEL,
    JobState.EXPIRED: Action.JOB_EXPIRE,
    JobState.ABORTED: Action.JOB_ABORT,
}


@dataclass(eq=False)
class _Intake:
    """A received document on its way to becoming a durable held job (``_commit``)."""

    sub: Submission
    pages: int | None
    job_id: int | None = None  # an INCOMING job (Create-Job) that gets this document
    document: list[bytes] | None = None  # a small document, for the write thread
    spool_file: SpoolFile | None = None  # the document, committed (for the record thread)
    recorded: bool = False  # its job record is committed
    update_sent: bool = False  # Send-Document: the job's update reached its COMMIT


class JobNotFound(NotFound):
    """No job with that id (on this queue)."""


class JobNotPossible(Conflict):
    """The job is in a state where the operation makes no sense (e.g. already printed)."""


class JobTooLarge(ClientError):
    """The document is larger than the server's MaxJobSize."""

    http_status: int = 413
    ipp_status: int = Status.CLIENT_ERROR_REQUEST_ENTITY_TOO_LARGE


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


def hash_pin(digest: bytes) -> str:
    """argon2id of a PIN's SHA-256 digest (PWG 5100.11 sends either the PIN or that digest)."""
    return _pin_hasher.hash(digest.hex())


def pin_digest(pin: bytes, encryption: str) -> bytes:
    """The SHA-256 digest of a job-password as sent with ``job-password-encryption``."""
    if encryption == "none":
        return hashlib.sha256(pin).digest()
    if encryption == "sha2-256":
        if len(pin) != 32:
            raise ClientError("job-password with sha2-256 must be a 32-octet SHA-256 digest")
        return pin
    raise ClientError(f"job-password-encryption {encryption!r} is not supported")


def check_pin(pin_hash: str, pin: str) -> bool:
    """True if ``pin`` (as typed at a release station) is the job's PIN."""
    try:
        return _pin_hasher.verify(pin_hash, hashlib.sha256(pin.encode()).hexdigest())
    except (VerificationError, InvalidHashError):
        return False


class _Keep:
    """The type of KEEP: leave a value as it is."""


KEEP = _Keep()


class JobService:
    """Intake and lifecycle of jobs, over the spool store and the database."""

    def __init__(
        self,
        db: Database,
        store: SpoolStore,
        *,
        clock: Callable[[], datetime] = utcnow,
        audit: AuditLog | QueuedAudit | None = None,
        max_job_size: int = 0,
    ) -> None:
        self.db = db
        self.max_job_size = max_job_size  # bytes per document; 0: no limit (MaxJobSize)
        self.store = store
        self.clock = clock
        self._settings: tuple[dict[str, Any], float] = ({}, 0.0)
        self._settings_changes = 0  # forget_settings calls: a read begun before one is stale
        self._settings_lock = threading.Lock()
        self.audit = audit  # None: nothing is audited (tests of other parts)
        self.archive: Archive | None = None  # set by the server: Print Archiving
        self.metrics = Metrics(db)
        self._purged_at = self._redacted_at = -ARCHIVE_PURGE_EVERY
        # Called from the intake-record thread (must not block) once new jobs are durable:
        # a print provider then reports them to its application server at once
        # (servers/provider.py).
        self.on_submit: Callable[[], None] | None = None
        # Set on an application server: cancels a job held on a print provider there
        # (job, reason, actor) -> the job as the provider reports it (servers/remote.py).
        self.forward_cancel: Callable[[Job, str, str], Job] | None = None
        # Make received documents durable held jobs, every job waiting in one pass: a
        # pipeline of two threads, one writing small documents, one recording jobs.
        self._writing: BatchWorker[_Intake, Job] = BatchWorker(
            self._write_batch, name="intake-write", fail=self._fail_intakes, max_batch=64
        )
        self._recording: BatchWorker[_Intake, Job] = BatchWorker(
            self._record_batch, name="intake-record", fail=self._fail_intakes
        )
        self._committing = 0  # large documents being committed in worker threads
        self._committing_lock = threading.Lock()

    def record_event(
        self,
        actor: str,
        action: Action,
        *,
        job_id: int | None = None,
        printer: str | None = None,
        outcome: Outcome = Outcome.OK,
        detail: str = "",
    ) -> None:
        """Record an audit event at this service's clock (blocking; never raises)."""
        self.record_events([AuditEntry(actor, action, job_id, printer, outcome, detail)])

    def record_events(self, entries: list[AuditEntry]) -> None:
        """Record audit events in order, with one fsync (blocking; never raises).

        An entry without a time gets this service's clock.
        """
        for e in entries:
            self.metrics.event(e.action.value, e.outcome.value)
        if self.audit is not None:
            now = self.clock()
            self.audit.record_many(
                [e if e.at is not None else dataclasses.replace(e, at=now) for e in entries]
            )

    def settings(self) -> dict[str, Any]:
        """The primary server's settings, re-read at most every SETTINGS_TTL seconds.

        Reading them for every job was 15 % of intake CPU (bench/intake.py); a change
        applies to jobs received SETTINGS_TTL seconds after it at the latest.
        """
        values = self.cached_settings()
        if values is None:
            changes = self._settings_changes
            values = self.db.get_settings()
            with self._settings_lock:
                if changes == self._settings_changes:  # else a change came in meanwhile
                    self._settings = (values, time.monotonic() + SETTINGS_TTL)
        return values

    def cached_settings(self) -> dict[str, Any] | None:
        """The settings as last read, if still fresh (no database read: for the event loop)."""
        values, expires = self._settings
        return values if expires > time.monotonic() else None

    def forget_settings(self) -> None:
        """Read the settings afresh for the next job (after this process changed them)."""
        with self._settings_lock:
            self._settings_changes += 1
            self._settings = ({}, 0.0)

    def encryption_enabled(self) -> bool:
        """Spool File Encryption for new jobs, per the primary server's setting."""
        return bool(self.settings()[SPOOL_FILE_ENCRYPTION])

    # -- intake ------------------------------------------------------------------------

    async def _receive(
        self, chunks: AsyncIterator[bytes]
    ) -> tuple[SpoolWriter | None, list[bytes], int | None]:
        """Receive a document: (writer, the rest, page count).

        A document that ends within its first batch (WRITE_BATCH bytes) comes back whole,
        with no writer (nothing is on disk yet), for the write thread. A larger one is
        streamed into a new, uncommitted writer a batch at a time, each batch handed over
        by reference (no copy) in one thread call that runs while the next batch is
        received: at most two batches are in memory. The rest, its last batch, is not
        written yet.
        """
        pages = PageCounter()
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
        return writer, batch, pages.result()

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

    async def spool(self, chunks: AsyncIterator[bytes]) -> tuple[SpoolFile, int | None]:
        """Stream a document into a new, committed spool file; return it and a page count.

        The file has no job yet: ``record`` it (LPD, whose control file may come last).
        """
        writer, rest, pages = await self._receive(chunks)
        return await in_thread(self._write_and_commit, writer, rest), pages

    async def record(self, sub: Submission, spool_file: SpoolFile, pages: int | None) -> Job:
        """Record a held job for a committed spool file; shred the file if that fails."""
        return await self._recording.run(_Intake(sub, pages, spool_file=spool_file))

    async def submit(self, sub: Submission, chunks: AsyncIterator[bytes]) -> Job:
        """Spool a document and record it as a held job; return the durable job."""
        writer, rest, pages = await self._receive(chunks)
        return await self._commit(_Intake(sub, pages), writer, rest)

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
                    detail=_submitted(job, hide_title=hide),
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
            pages=sub.pages if sub.pages is not None else intake.pages,
            state=JobState.HELD,
            created_at=self.clock(),
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
        writer, rest, pages = await self._receive(self._keeping_alive(job_id, chunks))
        return await self._commit(_Intake(sub, pages, job_id=job_id), writer, rest)

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
        job_id, sub, spool_file, pages = intake.job_id, intake.sub, intake.spool_file, intake.pages
        assert job_id is not None and spool_file is not None
        values: dict[str, Any] = {
            "spool_name": spool_file.name,
            "size": spool_file.size,
            "encrypted": spool_file.encrypted,
            "key_id": spool_file.key_id,
            "format_version": spool_file.format_version,
            "state": JobState.HELD,
            "updated_at": self.clock(),
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

    # -- queries and changes -------------------------------------------------------------

    def get(self, job_id: int) -> Job:
        job = self.db.get_job(job_id)
        if job is None:
            raise JobNotFound(f"job {job_id} does not exist")
        return job

    def list(
        self,
        *,
        queue: str | None = None,
        owner: str | None = None,
        states: Iterable[JobState] | None = None,
        limit: int | None = None,
        newest_first: bool = False,
        ids: Iterable[int] | None = None,
        offset: int = 0,
    ) -> list[Job]:
        query = select(Job)
        if ids is not None:
            query = query.where(Job.id.in_(list(ids)))
        if queue is not None:
            query = query.where(Job.queue == queue)
        if owner is not None:
            query = query.where(Job.owner == owner)
        if states is not None:
            query = query.where(Job.state.in_([s.value for s in states]))
        query = query.order_by(Job.id.desc() if newest_first else Job.id)
        if offset:
            query = query.offset(offset)
        if limit is not None:
            query = query.limit(limit)
        with self.db.session(write=False) as s:
            return list(s.scalars(query))

    def count(self, *, queue: str | None = None, states: Iterable[JobState]) -> int:
        query = (
            select(func.count()).select_from(Job).where(Job.state.in_([s.value for s in states]))
        )
        if queue is not None:
            query = query.where(Job.queue == queue)
        with self.db.session(write=False) as s:
            return int(s.scalar(query) or 0)

    def set_client_hold(self, job_id: int, hold: str | None) -> Job:
        """Record the client's own job-hold-until; the job stays held for release either way."""
        return self.set_client_attributes(job_id, (), hold=hold)

    def set_client_attributes(
        self, job_id: int, entries: Iterable[Any], *, hold: str | _Keep | None = KEEP
    ) -> Job:
        """IPP Set-Job-Attributes, all or nothing (RFC 3380): replace job template
        attributes (``entries`` as ``attributes_to_json`` makes them) and, unless ``hold`` is
        KEEP, the client's own hold, of a job that has not printed."""
        with self.db.session() as s:
            job = s.get(Job, job_id)
            if job is None:
                raise JobNotFound(f"job {job_id} does not exist")
            if job.state in FINISHED_STATES or job.state is JobState.RELEASING:
                raise JobNotPossible(f"job {job_id} is {job.state.value}; it cannot be changed")
            new = list(entries)
            if new:
                names = {name for name, _ in new}
                kept = [e for e in json.loads(job.attributes or "[]") if e[0] not in names]
                job.attributes = json.dumps(kept + new)
            if not isinstance(hold, _Keep):
                job.client_hold = hold
            job.updated_at = self.clock()
        return job

    def cancel(
        self,
        job_id: int,
        *,
        state: JobState = JobState.CANCELLED,
        reason: str,
        actor: str = SYSTEM,
    ) -> Job:
        """Cancel a job that has not printed, then crypto-shred its file (``actor`` audited)."""
        if self.forward_cancel is not None:
            held = self.db.get_job(job_id)
            if held is not None and held.provider is not None:
                # Its file is on that provider: the provider cancels and shreds it.
                gone = self.forward_cancel(held, reason, actor)
                detail = f"on provider {held.provider}: {reason}"
                self.record_event(actor, _CANCEL_ACTIONS[state], job_id=job_id, detail=detail)
                return gone
        with self.db.session() as s:
            job = s.get(Job, job_id)
            if job is None:
                raise JobNotFound(f"job {job_id} does not exist")
            if job.state in FINISHED_STATES or job.state is JobState.RELEASING:
                raise JobNotPossible(f"job {job_id} is {job.state.value}; it cannot be cancelled")
            now = self.clock()
            job.state, job.state_reason = state, reason
            job.updated_at = job.completed_at = now
            name, encrypted = job.spool_name, job.encrypted
        # The record says cancelled first: a crash now leaves an orphan file, never a job
        # that claims a document it no longer has.
        if name is not None:
            try:
                self.store.spool(encrypted).delete(name, missing_ok=True)
            except (OSError, SpoolError) as exc:
                log.error("job %d cancelled, but its spool file %s remains: %s", job_id, name, exc)
        action = _CANCEL_ACTIONS.get(state, Action.JOB_CANCEL)
        self.record_event(actor, action, job_id=job_id, detail=reason)
        return job

    def hold_timeouts(self) -> tuple[int, dict[str, int]]:
        """The server's hold timeout in minutes, and the printer queues that override it."""
        default = int(self.db.get_settings()[HOLD_TIMEOUT_MINUTES])
        with self.db.session(write=False) as s:
            rows = s.execute(
                select(Printer.name, Printer.hold_timeout_minutes).where(
                    Printer.hold_timeout_minutes.is_not(None)
                )
            ).all()
        return default, {name: minutes for name, minutes in rows if minutes is not None}

    def expires_at(self, job: Job, timeouts: tuple[int, dict[str, int]] | None = None) -> datetime:
        """When a held job expires: its queue's hold timeout after submission, or later if
        its owner extended the hold."""
        default, per_queue = timeouts or self.hold_timeouts()
        at = job.created_at + timedelta(minutes=per_queue.get(job.queue, default))
        if job.hold_extended_until is not None and job.hold_extended_until > at:
            return job.hold_extended_until
        return at

    def extend_hold(self, job_id: int, *, actor: str) -> Job:
        """Give a held job one more hold timeout from now; once per job (a reminder's link)."""
        now = self.clock()
        with self.db.session() as s:
            job = s.get(Job, job_id)
            if job is None:
                raise JobNotFound(f"job {job_id} does not exist")
            if job.state is not JobState.HELD:
                raise JobNotPossible(f"job {job_id} is {job.state.value}, not held")
            if job.hold_extended_until is not None:
                raise JobNotPossible(f"the hold of job {job_id} was extended once already")
            default, per_queue = self.hold_timeouts()
            minutes = per_queue.get(job.queue, default)
            job.hold_extended_until = now + timedelta(minutes=minutes)
            job.updated_at = now
            until = job.hold_extended_until
        self.record_event(
            actor,
            Action.JOB_HOLD_EXTENDED,
            job_id=job_id,
            detail=f"held until {until.isoformat(timespec='seconds')} ({minutes} more minutes)",
        )
        return job

    def expire_held(self, batch: int = 500) -> int:
        """Cancel and crypto-shred held jobs older than their hold timeout; return how many.

        One indexed query (state, created_at) per hold timeout in use (the server's, and
        each printer queue that overrides it) finds them however many jobs are held; a job
        whose owner extended the hold waits until then. The clock is injectable.
        """
        default, per_queue = self.hold_timeouts()
        now = self.clock()
        groups: list[tuple[int, ColumnElement[bool]]] = [
            (minutes, Job.queue == queue) for queue, minutes in per_queue.items()
        ]
        groups.append((default, Job.queue.not_in(list(per_queue)) if per_queue else true()))
        expired = 0
        for minutes, in_queues in groups:
            cutoff = now - timedelta(minutes=minutes)
            while True:
                with self.db.session(write=False) as s:
                    ids = list(
                        s.scalars(
                            select(Job.id)
                            .where(
                                Job.state == JobState.HELD.value,
                                # A copy of a provider's job expires there, not here.
                                Job.provider.is_(None),
                                Job.created_at < cutoff,
                                in_queues,
                                or_(
                                    Job.hold_extended_until.is_(None),
                                    Job.hold_extended_until < now,
                                ),
                            )
                            .order_by(Job.created_at)
                            .limit(batch)
                        )
                    )
                for job_id in ids:
                    try:
                        self.cancel(
                            job_id,
                            state=JobState.EXPIRED,
                            reason=f"not released within {minutes} minutes",
                        )
                        expired += 1
                    except (JobNotFound, JobNotPossible):
                        continue  # released or cancelled meanwhile
                if len(ids) < batch:
                    break
        return expired

    def purge_archive(self) -> int:
        """Remove archived documents past the retention (looked at hourly)."""
        if self.archive is None or time.monotonic() - self._purged_at < ARCHIVE_PURGE_EVERY:
            return 0
        self._purged_at = time.monotonic()
        days = int(self.db.get_settings()[ARCHIVE_RETENTION_DAYS])
        removed = self.archive.purge(self.clock() - timedelta(days=days))
        if removed:
            self.record_event(
                SYSTEM,
                Action.ARCHIVE_PURGE,
                detail=f"removed {removed} archived documents older than {days} days",
            )
        return removed

    def redact_titles(self) -> int:
        """Erase the document names of jobs older than redact_document_names_after_days
        (looked at hourly); return how many."""
        if time.monotonic() - self._redacted_at < ARCHIVE_PURGE_EVERY:
            return 0
        self._redacted_at = time.monotonic()
        days = int(self.db.get_settings()[REDACT_DOCUMENT_NAMES_AFTER_DAYS])
        if days == 0:
            return 0
        cutoff = self.clock() - timedelta(days=days)
        with self.db.session() as s:
            result = s.execute(
                update(Job).where(Job.created_at < cutoff, Job.title != "").values(title="")
            )
            count = int(getattr(result, "rowcount", 0) or 0)
        if count:
            self.record_event(
                SYSTEM,
                Action.JOB_REDACT,
                detail=f"erased the document names of {count} jobs older than {days} days",
            )
        return count

    def abort_stale_incoming(self, older_than: timedelta) -> int:
        """Abort Create-Job jobs whose document never came: no operation on them (Create-Job,
        the start of a Send-Document, or its upload, see ``_keeping_alive``) for
        ``older_than`` (multiple-operation-time-out)."""
        cutoff = self.clock() - older_than
        with self.db.session() as s:
            result = s.execute(
                update(Job)
                .where(Job.state == JobState.INCOMING.value, Job.updated_at < cutoff)
                .values(
                    state=JobState.ABORTED,
                    state_reason="no document received in time",
                    updated_at=self.clock(),
                    completed_at=self.clock(),
                )
            )
            return int(getattr(result, "rowcount", 0) or 0)


def _submitted(job: Job, *, hide_title: bool = False) -> str:
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


async def housekeeping(
    jobs: JobService,
    *,
    incoming_timeout: timedelta,
    every: float = 10.0,
    send_reminders: Callable[[], Awaitable[int]] | None = None,
) -> None:
    """The one scheduler for time-based job changes (never a task per job): abort Create-Job
    jobs whose document never came, expire held jobs past the hold timeout."""
    steps: list[tuple[Callable[[], int], str]] = [
        (
            lambda: jobs.abort_stale_incoming(incoming_timeout),
            "aborted %d jobs whose document never arrived",
        ),
        (jobs.expire_held, "expired %d held jobs (hold timeout)"),
        (jobs.purge_archive, "removed %d archived documents past their retention"),
        (jobs.redact_titles, "erased the document names of %d old jobs"),
    ]
    if jobs.audit is not None:
        steps.append((jobs.audit.ingest_pending, "recorded %d audit events queued by commands"))
    while True:
        for step, message in steps:
            try:
                if n := await in_thread(step):
                    log.info(message, n)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("job housekeeping failed")
        if send_reminders is not None:
            try:
                if n := await send_reminders():
                    log.info("mailed %d expiry reminders", n)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("expiry reminders failed")
        await asyncio.sleep(every)
