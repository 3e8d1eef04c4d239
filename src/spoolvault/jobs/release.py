"""Release: a held job goes to a printer, at most once.

    held/failed --(claim)--> releasing --deliver--> printed (file crypto-shredded)
                                 |                 \\-> held again, with the reason (not accepted)
                                 |                 \\-> failed, "may have printed" (uncertain)
                                 \\--(whole file fails authentication)--> failed, kept for an admin

Order of checks (docs/release.md): the printer's health first when it blocks on error (Fast
Release never blocks), then the whole spool file is verified before any byte reaches the
printer, so a tampered, truncated or undecryptable file never produces a partial or
zero-byte job. The claim (held -> releasing) is one conditional UPDATE, so two release
stations racing for one job cannot both send it.

Every attempt is audited: ``job.release`` when the printer accepted the job, else
``job.release_failed``, ``refused`` (blocked printer, wrong state or queue: nothing was
sent) or ``failed`` (the file failed verification, delivery failed or is uncertain).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy import update

from spoolvault.audit import Action, Outcome
from spoolvault.db import Job, JobState, Printer
from spoolvault.db.models import PrinterMode, utcnow
from spoolvault.documents.convert import ConversionFailed, NoConversion
from spoolvault.errors import ClientError, Conflict, PrinterFailure, Refused, SpoolError
from spoolvault.ipp.attributes import attributes_from_json
from spoolvault.ipp.constants import Status
from spoolvault.jobs.convert import Delivery, prepare
from spoolvault.jobs.errors import JobNotFound
from spoolvault.jobs.pins import pin_matches
from spoolvault.jobs.service import JobService
from spoolvault.printers.delivery import Delivered, DeliveryFailed, DeliveryUncertain, deliver
from spoolvault.printers.health import Health, HealthCache, check
from spoolvault.printers.registry import PrinterNotFound, find_printer
from spoolvault.settings import PRINT_ARCHIVING
from spoolvault.spool.store import PlainSpool, Spool
from spoolvault.util.threads import in_thread

log = logging.getLogger(__name__)

RELEASABLE = (JobState.HELD, JobState.FAILED)
_STREAM_BATCH = 1 << 20
# Virtual (Find-Me) queues: their jobs can be released at any printer.
FIND_ME_QUEUES = frozenset({"secure"})


JOB_PIN_TRIES = 5  # wrong job PINs in a row ...
JOB_PIN_LOCK_SECONDS = 300.0  # ... before the job refuses PINs for this long


class JobPinRequired(ClientError):
    """A PIN-protected job released without its PIN, or with a wrong one (HTTP 403)."""

    http_status: int = 403
    ipp_status: int = Status.CLIENT_ERROR_NOT_AUTHORIZED


class JobPinLocked(ClientError):
    """Too many wrong PINs for a job: it takes none for a while (HTTP 429)."""

    http_status: int = 429
    ipp_status: int = Status.CLIENT_ERROR_NOT_AUTHORIZED

    def __init__(self, job_id: int, retry_after: float) -> None:
        self.retry_after = max(1, round(retry_after))
        super().__init__(f"too many wrong PINs for job {job_id}: try again in {self.retry_after} s")

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class PrinterBlocked(Conflict):
    """The printer is in error and blocks release (HTTP 409)."""

    def __init__(self, printer: str, health: Health) -> None:
        super().__init__(
            f"printer {printer} is in error and blocks release: {health.message}; "
            f"your job stays held, release it at another printer or try again later"
        )
        self.health = health


class ReleaseRefused(Conflict):
    """The job cannot be released now (state, mode or ownership)."""


class ReleaseFailed(PrinterFailure):
    """The job did not reach the printer; it is kept with ``reason`` (HTTP 502)."""

    def __init__(self, job_id: int, reason: str) -> None:
        super().__init__(f"job {job_id} was not printed: {reason}")
        self.reason = reason


@dataclass(frozen=True)
class Released:
    job: Job
    delivered: Delivered


Checker = Callable[[Printer], Awaitable[Health]]


class RemoteSender(Protocol):
    """Releases a job held on a print provider, by that provider (servers/remote.py)."""

    async def send(
        self,
        job: Job,
        printer_name: str,
        *,
        actor: str,
        is_admin: bool,
        fast: bool,
        job_pin: str | None,
    ) -> Released: ...


class ReleaseService:
    """Releases held jobs to printers: health gate, verification, delivery, shredding."""

    def __init__(
        self,
        jobs: JobService,
        *,
        health: HealthCache | None = None,
        checker: Checker | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.jobs = jobs
        self.db = jobs.db
        self.health = health or HealthCache()
        self.checker = checker or self._check
        self.clock = clock
        self._unlinks: set[asyncio.Task[None]] = set()  # shredded files being unlinked
        self._pin_failures: dict[int, tuple[int, float]] = {}  # job -> (wrong PINs, locked until)
        # Set on an application server: jobs held on print providers are released there.
        self.remote: RemoteSender | None = None

    @staticmethod
    async def _check(printer: Printer) -> Health:
        return await check(
            printer.uri,
            snmp_community=printer.snmp_community or "public",
            snmp_host=(printer.snmp_host or _host_of(printer.uri))
            if printer.snmp_community
            else None,
            snmp_port=printer.snmp_port or 161,
        )

    async def drain(self) -> None:
        """Wait for the unlinks of shredded files still running (before the loop ends)."""
        if self._unlinks:
            await asyncio.gather(*self._unlinks, return_exceptions=True)

    # -- printers --------------------------------------------------------------------

    def printer(self, name: str) -> Printer:
        printer = find_printer(self.db, name)
        if printer is None:
            raise PrinterNotFound(f"no printer named {name!r}")
        return printer

    async def printer_health(self, printer: Printer) -> Health:
        """Fresh at release time: polled on demand, reused for a couple of seconds."""
        return await self.health.get(printer.name, lambda: self.checker(printer))

    # -- release ---------------------------------------------------------------------

    async def release(
        self,
        job_id: int,
        printer_name: str,
        *,
        actor: str,
        is_admin: bool = False,
        fast: bool = False,
        job_pin: str | None = None,
    ) -> Released:
        """Send one held job to a printer. ``fast`` (Fast Release) ignores printer errors.

        A job submitted with a PIN (PWG 5100.11 job-password) needs ``job_pin`` unless an
        administrator releases it; wrong PINs are counted per job (JobPinLocked).
        """
        record = functools.partial(self._record, actor, job_id, printer_name)
        started = time.monotonic()
        outcome = Outcome.FAILED
        try:
            done = await self._release(
                job_id, printer_name, actor, is_admin=is_admin, fast=fast, job_pin=job_pin
            )
            outcome = Outcome.OK
        except Refused as exc:  # blocked, refused, no such printer or job: nothing sent
            outcome = Outcome.REFUSED
            if isinstance(exc, PrinterBlocked):
                self.jobs.metrics.printer_errors.labels(printer_name).inc()
            await record(Action.JOB_RELEASE_FAILED, Outcome.REFUSED, str(exc))
            raise
        except ReleaseFailed as exc:
            await record(Action.JOB_RELEASE_FAILED, Outcome.FAILED, exc.reason)
            raise
        except BaseException as exc:  # cancelled (shutdown, client gone), or a bug
            reason = f"interrupted ({type(exc).__name__})"
            await record(Action.JOB_RELEASE_FAILED, Outcome.FAILED, reason)
            raise
        finally:
            elapsed = time.monotonic() - started
            self.jobs.metrics.release_seconds.labels(outcome.value).observe(elapsed)
        detail = ("fast release: " if fast else "") + done.delivered.detail
        await record(Action.JOB_RELEASE, Outcome.OK, detail)
        return done

    async def _record(
        self, actor: str, job_id: int, printer: str, action: Action, outcome: Outcome, detail: str
    ) -> None:
        self.jobs.metrics.event(action.value, outcome.value)
        audit = self.jobs.audit
        if audit is not None:
            at = self.clock()
            await in_thread(
                functools.partial(
                    audit.record,
                    actor,
                    action,
                    job_id=job_id,
                    printer=printer,
                    outcome=outcome,
                    detail=detail,
                    at=at,
                )
            )

    async def _release(
        self,
        job_id: int,
        printer_name: str,
        actor: str,
        *,
        is_admin: bool,
        fast: bool,
        job_pin: str | None,
    ) -> Released:
        printer = await in_thread(self.printer, printer_name)
        job = await in_thread(self.jobs.get, job_id)
        if job.provider is not None:
            # Its spool file is on that provider, which releases it (docs/deployment.md).
            if self.remote is None:
                raise ReleaseRefused(
                    f"job {job_id} is held on print provider {job.provider}; release it "
                    f"through an application server"
                )
            return await self.remote.send(
                job, printer.name, actor=actor, is_admin=is_admin, fast=fast, job_pin=job_pin
            )
        if job.state not in RELEASABLE:
            raise ReleaseRefused(f"job {job_id} is {job.state.value}, not held")
        queue_printer = None if job.queue in FIND_ME_QUEUES else job.queue
        if queue_printer is not None and queue_printer != printer.name and not is_admin:
            raise ReleaseRefused(
                f"job {job_id} was printed to {queue_printer}'s queue; release it there"
            )
        if queue_printer is not None and not is_admin:
            own = await in_thread(self.printer, queue_printer)
            if own.mode is PrinterMode.ADMIN_RELEASE:
                raise ReleaseRefused(f"jobs on {queue_printer} are released by an administrator")
        if job.spool_name is None or job.size == 0:
            # Never send a zero-byte job: a printer would eject a blank page or nothing,
            # and the user would think the document printed.
            await in_thread(self._mark, job_id, JobState.FAILED, "the job has no document")
            raise ReleaseFailed(job_id, "the job has no document (empty), it was not sent")
        if printer.block_release_on_error and not fast:
            health = await self.printer_health(printer)
            if health.in_error:
                raise PrinterBlocked(printer.name, health)
        if job.pin_hash is not None and not is_admin:
            # After the health gate: nobody spends a PIN try on a printer that cannot print.
            await in_thread(self._check_job_pin, job, job_pin)
        spool = self.jobs.store.spool(job.encrypted)
        name = job.spool_name
        try:
            await in_thread(spool.verify, name)
        except SpoolError as exc:
            reason = f"spool file cannot be used: {exc}"
            log.error("job %d: %s; not sent to %s", job_id, reason, printer.name)
            await in_thread(self._mark, job_id, JobState.FAILED, reason)
            raise ReleaseFailed(job_id, reason) from None
        # Before the claim: a job that cannot be made into the printer's format stays held.
        sending = await self._delivery(job, printer)
        if not await in_thread(self._claim, job_id, printer.name):
            raise ReleaseRefused(f"job {job_id} is being released elsewhere")

        async def source() -> AsyncIterator[bytes]:
            # Decrypt in a worker thread, about 1 MiB per hop: the event loop never waits on
            # the disk or AES, and the thread hops cost nothing next to the network.
            batches = _batched(spool.read(name))
            while (batch := await in_thread(next, batches, None)) is not None:
                yield batch

        try:
            delivered = await deliver(
                printer.uri,
                sending.source(source),
                job_name=job.title or f"job {job.id}",
                user=job.owner,
                document_format=sending.document_format,
                attributes=attributes_from_json(job.attributes),
            )
        except (ConversionFailed, NoConversion) as exc:
            # The converter failed before its output ended: the printer never got a whole job.
            await in_thread(self._mark, job_id, JobState.HELD, f"not printed: {exc}")
            raise ReleaseFailed(job_id, str(exc)) from None
        except DeliveryFailed as exc:
            await in_thread(self._mark, job_id, JobState.HELD, f"not printed: {exc}")
            raise ReleaseFailed(job_id, str(exc)) from None
        except DeliveryUncertain as exc:
            reason = f"delivery to {printer.name} uncertain, it may have printed: {exc}"
            await in_thread(self._mark, job_id, JobState.FAILED, reason)
            raise ReleaseFailed(job_id, reason) from None
        except BaseException:
            # Interrupted (shutdown, a bug) at a moment we cannot place: the printer may
            # have the whole job. At most once: keep it for a person to decide, never resend.
            await in_thread(
                self._mark,
                job_id,
                JobState.FAILED,
                "release interrupted; it may have printed: check the printer first",
            )
            raise
        if sending.chain is not None:
            delivered = Delivered(
                delivered.printer_job_id, f"{delivered.detail}; {sending.describe()}"
            )
        job = await in_thread(self._printed, job_id, delivered)
        if await in_thread(self._archived, job, spool):
            log.info("job %d released by %s to %s, archived", job_id, actor, printer.name)
            return Released(job, delivered)
        # Shredded before the answer; the blocks are freed after it (~20 ms per 100 MiB).
        later = await in_thread(lambda: spool.delete(name, missing_ok=True, defer_unlink=True))
        if later is not None:
            task = asyncio.create_task(in_thread(spool.discard, later))
            self._unlinks.add(task)
            task.add_done_callback(self._unlinks.discard)
        log.info("job %d released by %s to %s (%s)", job_id, actor, printer.name, delivered.detail)
        return Released(job, delivered)

    async def _delivery(self, job: Job, printer: Printer) -> Delivery:
        """The format the printer gets and the conversion (jobs/convert.py), or NoConversion."""
        reported: tuple[str, ...] = ()
        if printer.uri.startswith(("ipp://", "ipps://")) and not printer.document_formats:
            reported = (await self.printer_health(printer)).formats
        return prepare(
            job, printer, reported, attributes_from_json(job.attributes), self.jobs.settings()
        )

    def _check_job_pin(self, job: Job, pin: str | None) -> None:
        """The job's PIN, or JobPinRequired / JobPinLocked (argon2id: blocking)."""
        assert job.pin_hash is not None
        now = time.monotonic()
        failures, until = self._pin_failures.get(job.id, (0, 0.0))
        if until > now:
            raise JobPinLocked(job.id, until - now)
        if pin is None or pin == "":
            raise JobPinRequired(f"job {job.id} is protected by a job PIN: enter it to release")
        if pin_matches(job.pin_hash, pin):
            self._pin_failures.pop(job.id, None)
            return
        failures += 1
        lock = JOB_PIN_LOCK_SECONDS if failures >= JOB_PIN_TRIES else 0.0
        self._pin_failures[job.id] = (0 if lock else failures, now + lock)
        if lock:
            raise JobPinLocked(job.id, lock)
        raise JobPinRequired(f"wrong job PIN for job {job.id}")

    def _archived(self, job: Job, spool: Spool) -> bool:
        """Keep a printed plain job's document in the Print Archive, when it is on."""
        archive = self.jobs.archive
        if archive is None or job.encrypted or not isinstance(spool, PlainSpool):
            return False
        if not self.jobs.settings()[PRINT_ARCHIVING] or job.spool_name is None:
            return False
        try:
            archive.keep(spool, job.spool_name)
        except OSError as exc:  # printed all the same: never fail a release for the archive
            log.error("job %d printed but not archived: %s", job.id, exc)
            return False
        return True

    def _claim(self, job_id: int, printer: str) -> bool:
        """held/failed -> releasing, atomically: only one release can win."""
        with self.db.session() as s:
            result = s.execute(
                update(Job)
                .where(Job.id == job_id, Job.state.in_([st.value for st in RELEASABLE]))
                .values(state=JobState.RELEASING, printer=printer, updated_at=self.clock())
            )
            return bool(getattr(result, "rowcount", 0))

    def _mark(self, job_id: int, state: JobState, reason: str) -> None:
        with self.db.session() as s:
            job = s.get(Job, job_id)
            if job is None:
                raise JobNotFound(f"job {job_id} does not exist")
            job.state, job.state_reason, job.updated_at = state, reason[:500], self.clock()

    def _printed(self, job_id: int, delivered: Delivered) -> Job:
        with self.db.session() as s:
            job = s.get_one(Job, job_id)
            now = self.clock()
            job.state, job.state_reason = JobState.PRINTED, delivered.detail[:500]
            job.printer_job_id = delivered.printer_job_id
            job.updated_at = job.completed_at = now
        return job

    def recover_interrupted(self) -> int:
        """At start-up: a job left 'releasing' by a crash may have printed; never resend it."""
        with self.db.session() as s:
            result = s.execute(
                update(Job)
                # A provider's job being released is that provider's to recover.
                .where(Job.state == JobState.RELEASING.value, Job.provider.is_(None))
                .values(
                    state=JobState.FAILED,
                    state_reason="the server stopped while sending this job; it may have "
                    "printed: check the printer before releasing it again",
                    updated_at=self.clock(),
                )
            )
            return int(getattr(result, "rowcount", 0) or 0)


def _batched(chunks: Iterator[bytes], size: int = _STREAM_BATCH) -> Iterator[bytes]:
    # A list joined once: growing a bytearray re-faults its pages on every batch.
    parts: list[bytes] = []
    held = 0
    for chunk in chunks:
        parts.append(chunk)
        held += len(chunk)
        if held >= size:
            yield b"".join(parts)
            parts, held = [], 0
    if parts:
        yield b"".join(parts)


def _host_of(uri: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(uri).hostname or ""
