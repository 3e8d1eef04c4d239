"""The IPP operations on one job (RFC 8011 §4.3, RFC 3380, PWG 5100.11), as pappl's
job-ipp.c: Send-Document, Close-Job, Cancel-Job, Get-Job-Attributes, Hold-Job, Release-Job,
Set-Job-Attributes, with the helpers the printer's operations share (printer.py).

Hold-Job, Release-Job and job-hold-until change only the client's own hold: a job still
prints only when its owner releases it at a printer.
"""

from __future__ import annotations

import functools
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from spoolvault.audit import Action, Outcome
from spoolvault.db import Job
from spoolvault.db import JobState as DbState
from spoolvault.intake.ipp import policy
from spoolvault.intake.ipp.request import (
    Context,
    IppError,
    accepted,
    check_compression,
    reply,
    requested_attributes,
)
from spoolvault.ipp import attributes as A
from spoolvault.ipp.codec import Attribute, AttributeGroup, IppMessage
from spoolvault.ipp.constants import GroupTag, Status, ValueTag
from spoolvault.jobs.errors import JobNotFound
from spoolvault.jobs.intake import Submission
from spoolvault.jobs.service import FINISHED_STATES, KEEP
from spoolvault.settings import HIDE_DOCUMENT_NAMES
from spoolvault.util.threads import in_thread

if TYPE_CHECKING:
    from spoolvault.intake.ipp.server import IppServer

T = ValueTag
# A time of day in job-hold-until, as CUPS's lp -H sends it.
_HOLD_TIME = re.compile(r"([01]?\d|2[0-3]):[0-5]\d(?::[0-5]\d)?")


# -- helpers shared by the operations ---------------------------------------------------


def job_id_of(ctx: Context) -> int:
    """The job an operation names: job-id with printer-uri, or job-uri (RFC 8011 §4.3)."""
    attr = ctx.op.get("job-id")
    if attr is not None:
        if attr.tag != T.INTEGER or not isinstance(attr.value, int) or attr.value < 1:
            raise IppError(Status.CLIENT_ERROR_BAD_REQUEST, "job-id must be a positive integer")
        if ctx.op.get("printer-uri") is None:
            raise IppError(Status.CLIENT_ERROR_BAD_REQUEST, "job-id needs printer-uri")
        return attr.value
    uri = ctx.op.get("job-uri")
    if uri is None:
        raise IppError(Status.CLIENT_ERROR_BAD_REQUEST, "job-id or job-uri is required")
    path = urlsplit(str(uri.value)).path
    tail = path.rstrip("/").rsplit("/", 1)[-1]
    if not path.startswith("/jobs/") or not (tail.isascii() and tail.isdigit()):
        raise IppError(Status.CLIENT_ERROR_NOT_FOUND, f"no job at {uri.value}")
    return int(tail)


async def find_job(srv: IppServer, ctx: Context) -> Job:
    """That job, on the queue the request targets (another queue's job is not found)."""
    job_id = job_id_of(ctx)
    job = await in_thread(srv.jobs.get, job_id)
    if ctx.queue is not None and job.queue != ctx.queue.name:
        raise JobNotFound(f"job {job_id} is not on {ctx.queue.name}")
    return job


def check_owner(ctx: Context, job: Job) -> None:
    """Only the owner (authenticated, or claimed from the submitting address), or an
    authenticated administrator: policy.may_change."""
    policy.may_change(ctx, job)


def job_group(ctx: Context, job: Job) -> AttributeGroup:
    """The job's description attributes, with its URIs as this request reached us."""
    return A.job_attributes(
        job,
        job_uri=ctx.job_uri(job.id),
        printer_uri=ctx.printer_uri(job.queue),
        now=datetime.now(UTC),
    )


def job_created(ctx: Context, job: Job) -> IppMessage:
    """The answer of an operation that made or filled a job: its job-id, URI and state."""
    resp = accepted(ctx)
    resp.groups.append(A.job_created_attributes(job, job_uri=ctx.job_uri(job.id)))
    return resp


def hold_value(attr: Attribute) -> str | None:
    """The client's own hold: a job-hold-until keyword, or a time of day as CUPS takes
    it (name "HH:MM" or "HH:MM:SS", UTC). On a hold queue it only adds to the hold."""
    if attr.tag not in (T.KEYWORD, T.NAME) or not isinstance(attr.value, str):
        raise IppError(
            Status.CLIENT_ERROR_ATTRIBUTES_OR_VALUES_NOT_SUPPORTED,
            "job-hold-until must be a keyword",
            [attr],
        )
    if attr.value not in A.JOB_HOLD_UNTIL and not _HOLD_TIME.fullmatch(attr.value):
        raise IppError(
            Status.CLIENT_ERROR_ATTRIBUTES_OR_VALUES_NOT_SUPPORTED,
            f"job-hold-until {attr.value} is not supported",
            [attr],
        )
    return None if attr.value == "no-hold" else attr.value


def template_ok(attr: Attribute) -> bool:
    """A job template value we support (else it is ignored, or refused with fidelity)."""
    v = attr.value
    if attr.name == "copies":
        return attr.tag == T.INTEGER and isinstance(v, int) and 1 <= v <= A.MAX_COPIES
    if attr.name == "sides":
        return attr.tag == T.KEYWORD and v in A.SIDES
    if attr.name == "media":
        return attr.tag in (T.KEYWORD, T.NAME) and v in A.MEDIA
    if attr.name in ("print-quality",):
        return attr.tag == T.ENUM and v in (3, 4, 5)
    if attr.name == "orientation-requested":
        return attr.tag == T.ENUM and v in (3, 4, 5, 6)
    if attr.name == "job-priority":
        return attr.tag == T.INTEGER and isinstance(v, int) and 1 <= v <= 100
    return True


# -- operations ------------------------------------------------------------------------


async def send_document(srv: IppServer, ctx: Context) -> IppMessage:
    job = await find_job(srv, ctx)
    check_owner(ctx, job)
    last = ctx.op.get("last-document")
    if last is None or last.tag != T.BOOLEAN:
        raise IppError(Status.CLIENT_ERROR_BAD_REQUEST, "last-document is required")
    if job.state is not DbState.INCOMING:
        if job.spool_name is not None and job.state not in FINISHED_STATES:
            # RFC 8011 §4.3.2: a client may close its job with an empty last Send-Document.
            if last.value is True and await anext(ctx.document, None) is None:
                return job_created(ctx, job)
            raise IppError(
                Status.SERVER_ERROR_MULTIPLE_DOCUMENT_JOBS_NOT_SUPPORTED, "a job holds one document"
            )
        raise IppError(Status.CLIENT_ERROR_NOT_POSSIBLE, f"job {job.id} is {job.state.value}")
    check_compression(ctx.op)
    fmt = ctx.op.get("document-format")
    document_format = str(fmt.value) if fmt is not None else job.document_format
    if document_format not in (ctx.queue.formats if ctx.queue else A.DOCUMENT_FORMATS):
        raise IppError(
            Status.CLIENT_ERROR_DOCUMENT_FORMAT_NOT_SUPPORTED,
            f"document-format {document_format} is not supported",
        )
    first = await anext(ctx.document, None)
    if first is None:  # no document data
        if last.value is True:  # the client closes a job it never sent a document for
            return await close_job(srv, ctx)
        return job_created(ctx, job)  # still waiting for its document
    sub = Submission(owner=job.owner, queue=job.queue, document_format=document_format)
    job = await srv.jobs.add_document(job.id, sub, _chained(first, ctx.document))
    if ctx.queue is not None and ctx.queue.mode == "direct":
        srv.release_direct(job)
    return job_created(ctx, job)


async def _chained(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield first
    async for chunk in rest:
        yield chunk


async def close_job(srv: IppServer, ctx: Context) -> IppMessage:
    job = await find_job(srv, ctx)
    check_owner(ctx, job)
    if job.state is DbState.INCOMING:
        job = await in_thread(
            lambda: srv.jobs.cancel(
                job.id,
                state=DbState.ABORTED,
                reason="closed without a document",
                actor=ctx.requesting_user(),
            )
        )
    return job_created(ctx, job)


async def cancel_job(srv: IppServer, ctx: Context) -> IppMessage:
    job = await find_job(srv, ctx)
    user = ctx.requesting_user()
    try:
        check_owner(ctx, job)
    except IppError as exc:
        # Someone trying to cancel another user's job is worth an audit line.
        await in_thread(
            functools.partial(
                srv.jobs.record_event,
                user,
                Action.JOB_CANCEL,
                job_id=job.id,
                outcome=Outcome.REFUSED,
                detail=f"IPP Cancel-Job: {exc.message}",
            )
        )
        raise
    await in_thread(
        lambda: srv.jobs.cancel(job.id, reason=f"cancelled by {user} (IPP)", actor=user)
    )
    return reply(ctx)


async def get_job_attributes(srv: IppServer, ctx: Context) -> IppMessage:
    job = await find_job(srv, ctx)
    hide = bool((await srv.settings())[HIDE_DOCUMENT_NAMES])
    group = policy.visible_job(ctx, job, job_group(ctx, job), hide_titles=hide)
    resp = reply(ctx)
    resp.groups.append(A.select_job(group, requested_attributes(ctx), ["all"]))
    return resp


async def hold_job(srv: IppServer, ctx: Context) -> IppMessage:
    job = await find_job(srv, ctx)
    check_owner(ctx, job)
    hold_attr = ctx.op.get("job-hold-until")
    hold = hold_value(hold_attr) if hold_attr is not None else "indefinite"
    await in_thread(srv.jobs.set_client_hold, job.id, hold or "indefinite")
    return reply(ctx)


async def release_job(srv: IppServer, ctx: Context) -> IppMessage:
    job = await find_job(srv, ctx)
    check_owner(ctx, job)
    # Only the client's own hold goes: printing still waits for release at a printer.
    await in_thread(srv.jobs.set_client_hold, job.id, None)
    return reply(
        ctx,
        Status.SUCCESSFUL_OK,
        "job released by the client; it prints when you release it at a printer",
    )


async def set_job_attributes(srv: IppServer, ctx: Context) -> IppMessage:
    job = await find_job(srv, ctx)
    check_owner(ctx, job)
    group = ctx.msg.group(GroupTag.JOB)
    if group is None or not group.attributes:
        raise IppError(Status.CLIENT_ERROR_BAD_REQUEST, "no job attributes to set")
    others = [a for a in group.attributes if a.name not in A.JOB_SETTABLE]
    if others:
        raise IppError(
            Status.CLIENT_ERROR_ATTRIBUTES_NOT_SETTABLE,
            f"only {' and '.join(A.JOB_SETTABLE)} can be changed",
            others,
        )
    # RFC 3380 §3.2: all or nothing, so every value is checked before anything changes.
    hold_attr = group.get("job-hold-until")
    hold = hold_value(hold_attr) if hold_attr is not None else None
    template = [a for a in group.attributes if a.name != "job-hold-until"]
    bad = [a for a in template if not template_ok(a)]
    if bad:
        raise IppError(
            Status.CLIENT_ERROR_ATTRIBUTES_OR_VALUES_NOT_SUPPORTED, "unsupported values", bad
        )
    # lp -i ID -H immediate sets job-priority along with job-hold-until.
    entries = A.attributes_to_json(template)
    await in_thread(
        functools.partial(
            srv.jobs.set_client_attributes,
            job.id,
            entries,
            hold=hold if hold_attr is not None else KEEP,
        )
    )
    return reply(ctx)
