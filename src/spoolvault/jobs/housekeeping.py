"""Housekeeping: the time-based changes of jobs, one scheduler for all (never a task per job).

Create-Job jobs whose document never came are aborted, held jobs past their hold timeout
expire (cancelled and crypto-shredded), archived documents past the retention are purged,
old jobs' document names erased, and audit events queued by commands recorded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import ColumnElement, or_, select, true, update

from spoolvault.archive import Archive
from spoolvault.audit import SYSTEM, Action, AuditEntry, AuditLog, QueuedAudit
from spoolvault.db import Database, Job, JobState
from spoolvault.jobs.errors import JobNotFound, JobNotPossible
from spoolvault.settings import ARCHIVE_RETENTION_DAYS, REDACT_DOCUMENT_NAMES_AFTER_DAYS
from spoolvault.util.threads import in_thread

if TYPE_CHECKING:
    from spoolvault.jobs.service import JobService

log = logging.getLogger(__name__)

ARCHIVE_PURGE_EVERY = 3600.0  # seconds between looks for archived documents to purge


class JobHousekeeping:
    """The periodic work on jobs: the part of ``JobService`` that ``housekeeping()`` runs.

    A base of ``JobService``, which sets the attributes below.
    """

    db: Database
    clock: Callable[[], datetime]
    audit: AuditLog | QueuedAudit | None
    archive: Archive | None
    _purged_at: float
    _redacted_at: float

    if TYPE_CHECKING:  # defined by JobService

        def hold_timeouts(self) -> tuple[int, dict[str, int]]: ...
        def cancel(
            self, job_id: int, *, state: JobState = ..., reason: str, actor: str = ...
        ) -> Job: ...
        def record_events(self, entries: list[AuditEntry]) -> None: ...

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
            self.record_events(
                [
                    AuditEntry(
                        SYSTEM,
                        Action.ARCHIVE_PURGE,
                        detail=f"removed {removed} archived documents older than {days} days",
                    )
                ]
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
            self.record_events(
                [
                    AuditEntry(
                        SYSTEM,
                        Action.JOB_REDACT,
                        detail=f"erased the document names of {count} jobs older than {days} days",
                    )
                ]
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
