"""Who may see, release and cancel which held job: the owner, and those the owner delegated to.

Every front end (REST release sessions, MFD devices, the web release station) asks here,
so the rule is one: a job that is neither the user's nor delegated to them does not exist
for them (404, the same answer as for a job that does not exist), and a refused release
is still audited.
"""

from __future__ import annotations

from spoolvault.audit import Action, Outcome
from spoolvault.db import Job, JobState
from spoolvault.identity import IdentityService
from spoolvault.jobs.errors import JobNotFound
from spoolvault.jobs.release import FIND_ME_QUEUES, Released, ReleaseService
from spoolvault.jobs.service import JobService
from spoolvault.util.threads import in_thread

LISTED_STATES = (JobState.HELD, JobState.FAILED)


class NotYourJob(JobNotFound):
    """The job does not exist, or is neither the user's nor delegated to them (404)."""

    def __init__(self, job_id: int) -> None:
        super().__init__(f"you have no job {job_id}")
        self.job_id = job_id


def visible_jobs(jobs: JobService, identity: IdentityService, actor: str) -> list[Job]:
    """The held and failed jobs of the actor and of everyone who delegated to them."""
    found: list[Job] = []
    for owner in identity.releasable_owners(actor):
        found += jobs.list(owner=owner, states=LISTED_STATES)
    return sorted(found, key=lambda j: j.id)


def accessible_job(jobs: JobService, identity: IdentityService, actor: str, job_id: int) -> Job:
    """The job if ``actor`` may act on it, else NotYourJob (blocking)."""
    try:
        job = jobs.get(job_id)
    except JobNotFound:
        raise NotYourJob(job_id) from None
    if not identity.may_release(actor, job.owner):
        raise NotYourJob(job_id)
    return job


def releasable_at(job: Job, printer: str) -> bool:
    """True if the job's queue lets it print on ``printer`` (Find-Me, or its own queue)."""
    return job.queue in FIND_ME_QUEUES or job.queue == printer


async def release_for(
    actor: str,
    job_id: int,
    printer: str,
    *,
    jobs: JobService,
    release: ReleaseService,
    identity: IdentityService,
    fast: bool = False,
    job_pin: str | None = None,
) -> Released:
    """Release one job for ``actor`` (owner or delegate); audited whatever happens."""
    try:
        await in_thread(accessible_job, jobs, identity, actor, job_id)
    except NotYourJob:
        await in_thread(
            lambda: jobs.record_event(
                actor,
                Action.JOB_RELEASE_FAILED,
                job_id=job_id,
                printer=printer,
                outcome=Outcome.REFUSED,
                detail=f"not {actor}'s job, nor delegated to them (or no such job)",
            )
        )
        raise
    return await release.release(job_id, printer, actor=actor, fast=fast, job_pin=job_pin)


async def cancel_for(
    actor: str, job_id: int, *, jobs: JobService, identity: IdentityService, where: str
) -> Job:
    """Cancel one held job for ``actor`` (owner or delegate); its file is crypto-shredded."""
    job = await in_thread(accessible_job, jobs, identity, actor, job_id)
    on_behalf = "" if job.owner == actor else f" for {job.owner}"
    return await in_thread(
        lambda: jobs.cancel(job_id, reason=f"cancelled by {actor}{on_behalf} {where}", actor=actor)
    )
