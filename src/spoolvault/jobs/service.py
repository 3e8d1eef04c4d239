"""Jobs: the one service every front end uses (IPP, raw 9100, LPD, the release stations,
the REST API, the admin web interface and the command line).

``JobService`` is the façade. Its parts live beside it: the intake pipeline (``jobs.intake``:
spool the document, then record the job, durable before acknowledged), the periodic work
(``jobs.housekeeping``: hold timeouts, stale Create-Jobs, archive retention), and job PINs
(``jobs.pins``). The lifecycle of a job once it is held (hold, client attributes, cancel,
hold extension) is here; its release to a printer is ``jobs.release``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from spoolvault.archive import Archive
from spoolvault.audit import SYSTEM, Action, AuditEntry, AuditLog, Outcome, QueuedAudit
from spoolvault.db import Database, Job, JobState, Printer
from spoolvault.db.models import utcnow
from spoolvault.errors import SpoolError
from spoolvault.jobs.errors import JobNotFound, JobNotPossible
from spoolvault.jobs.housekeeping import ARCHIVE_PURGE_EVERY, JobHousekeeping
from spoolvault.jobs.intake import JobIntake
from spoolvault.metrics import Metrics
from spoolvault.settings import HOLD_TIMEOUT_MINUTES, SPOOL_FILE_ENCRYPTION
from spoolvault.spool.store import SpoolStore

log = logging.getLogger(__name__)

SETTINGS_TTL = 2.0  # seconds a settings read is reused for new jobs

FINISHED_STATES = frozenset(
    {JobState.PRINTED, JobState.CANCELLED, JobState.EXPIRED, JobState.ABORTED}
)
_CANCEL_ACTIONS = {
    JobState.CANCELLED: Action.JOB_CANCEL,
    JobState.EXPIRED: Action.JOB_EXPIRE,
    JobState.ABORTED: Action.JOB_ABORT,
}


class _Keep:
    """The type of KEEP: leave a value as it is."""


KEEP = _Keep()


class JobService(JobIntake, JobHousekeeping):
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
        self._start_intake()

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
