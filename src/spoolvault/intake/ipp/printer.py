"""The IPP operations on a queue (RFC 8011 §4.2, PWG 5100.11/13), as pappl's printer-ipp.c:
Print-Job, Validate-Job, Create-Job, Get-Jobs, Cancel-My-Jobs, Get-Printer-Attributes, and
the validation of a new job's attributes.
"""

from __future__ import annotations

import functools
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from spoolvault.db import JobState as DbState
from spoolvault.errors import Refused
from spoolvault.intake.ipp import policy
from spoolvault.intake.ipp.jobs import hold_value, job_created, job_group, template_ok
from spoolvault.intake.ipp.request import (
    Context,
    IppError,
    accepted,
    check_compression,
    reply,
    requested_attributes,
    text_of,
)
from spoolvault.ipp import attributes as A
from spoolvault.ipp.codec import Attribute, AttributeGroup, IppMessage
from spoolvault.ipp.constants import GroupTag, PrinterState, Status, ValueTag
from spoolvault.jobs.intake import Submission
from spoolvault.jobs.pins import hash_pin, pin_digest
from spoolvault.settings import HIDE_DOCUMENT_NAMES, IPP_AUTHENTICATION_REQUIRED
from spoolvault.util.threads import in_thread

if TYPE_CHECKING:
    from spoolvault.intake.ipp.server import IppServer

log = logging.getLogger(__name__)
T = ValueTag


def submission(ctx: Context) -> Submission:
    """Validate the job creation attributes of Print-Job / Create-Job / Validate-Job."""
    assert ctx.queue is not None
    op = ctx.op
    fmt = op.get("document-format")
    document_format = str(fmt.value) if fmt is not None else ctx.queue.default_format
    if document_format not in ctx.queue.formats:
        raise IppError(
            Status.CLIENT_ERROR_DOCUMENT_FORMAT_NOT_SUPPORTED,
            f"document-format {document_format} is not supported",
            [Attribute("document-format", [fmt.values[0]])] if fmt else [],
        )
    check_compression(op)
    name = op.get("job-name")
    template_group = ctx.msg.group(GroupTag.JOB)
    template: list[Attribute] = []
    hold: str | None = None
    fidelity = op.get("ipp-attribute-fidelity")
    strict = fidelity is not None and fidelity.value is True
    for attr in template_group.attributes if template_group else []:
        if attr.name == "job-hold-until":
            hold = _client_hold(ctx, attr, hold)
            continue
        if attr.name not in A.JOB_TEMPLATE or not template_ok(attr):
            ctx.unsupported.append(attr)
            continue
        template.append(attr)
    op_hold = op.get("job-hold-until")
    if op_hold is not None:
        hold = _client_hold(ctx, op_hold, hold)
    if strict and ctx.unsupported:
        raise IppError(
            Status.CLIENT_ERROR_ATTRIBUTES_OR_VALUES_NOT_SUPPORTED,
            "unsupported job attributes with ipp-attribute-fidelity",
            ctx.unsupported,
        )
    pin_hash = None
    password = op.get("job-password")
    if password is not None:
        if not isinstance(password.value, (bytes, str)) or not password.value:
            raise IppError(Status.CLIENT_ERROR_BAD_REQUEST, "job-password is malformed")
        raw = password.value if isinstance(password.value, bytes) else password.value.encode()
        if len(raw) > A.JOB_PASSWORD_MAX:
            raise IppError(Status.CLIENT_ERROR_REQUEST_VALUE_TOO_LONG, "job-password too long")
        enc = op.get("job-password-encryption")
        encryption = str(enc.value) if enc is not None else "none"
        if encryption == "none" and len(raw) < A.JOB_PASSWORD_MIN:
            # job-password-length-supported; the PIN itself is never echoed back.
            raise IppError(
                Status.CLIENT_ERROR_ATTRIBUTES_OR_VALUES_NOT_SUPPORTED,
                f"job-password must be {A.JOB_PASSWORD_MIN} to {A.JOB_PASSWORD_MAX} octets",
            )
        try:
            pin_hash = hash_pin(pin_digest(raw, encryption))
        except Refused as exc:
            # An unknown encryption is named; a bad digest is job-password's fault, and
            # a password is never echoed back.
            known = encryption in A.JOB_PASSWORD_ENCRYPTIONS
            raise IppError(
                Status.CLIENT_ERROR_ATTRIBUTES_OR_VALUES_NOT_SUPPORTED,
                str(exc),
                [enc] if enc is not None and not known else [],
            ) from None
    impressions = template_group.get("job-impressions") if template_group else None
    host = ctx.request.client.host if ctx.request.client else None
    title = (text_of(name.value) or "")[:255] if name is not None else ""
    return Submission(
        owner=ctx.requesting_user(),
        queue=ctx.queue.name,
        title=title,
        document_format=document_format,
        pages=impressions.value if impressions and isinstance(impressions.value, int) else None,
        pin_hash=pin_hash,
        client_hold=hold,
        attributes=A.attributes_to_json(template),
        originating_host=host,
    )


def _client_hold(ctx: Context, attr: Attribute, hold: str | None) -> str | None:
    """job-hold-until of a new job: a value we do not support is ignored and reported
    (successful-ok-ignored-or-substituted-attributes), or refused with
    ipp-attribute-fidelity (RFC 8011 §4.1.7), as any other job template attribute."""
    try:
        return hold_value(attr)
    except IppError:
        ctx.unsupported.append(attr)
        return hold


# -- operations ------------------------------------------------------------------------


async def print_job(srv: IppServer, ctx: Context) -> IppMessage:
    sub = submission(ctx)
    job = await srv.jobs.submit(sub, ctx.document)
    if ctx.queue is not None and ctx.queue.mode == "direct":
        srv.release_direct(job)
    log.info(
        "job %d held for %s on %s (%d bytes%s)",
        job.id,
        job.owner,
        job.queue,
        job.size,
        ", encrypted" if job.encrypted else "",
    )
    return job_created(ctx, job)


async def validate_job(srv: IppServer, ctx: Context) -> IppMessage:
    submission(ctx)
    return accepted(ctx)


async def create_job(srv: IppServer, ctx: Context) -> IppMessage:
    sub = submission(ctx)
    job = await in_thread(srv.jobs.create, sub)
    return job_created(ctx, job)


def _job_ids(attr: Attribute) -> list[int]:
    """The integers of a job-ids operation attribute (PWG 5100.11)."""
    return [v.value for v in attr.values if isinstance(v.value, int)]


async def cancel_my_jobs(srv: IppServer, ctx: Context) -> IppMessage:
    assert ctx.queue is not None
    user = ctx.requesting_user()
    ids_attr = ctx.op.get("job-ids")
    pending = [DbState.INCOMING, DbState.HELD, DbState.FAILED]
    jobs = await in_thread(
        lambda: srv.jobs.list(
            queue=ctx.queue.name if ctx.queue else None, owner=user, states=pending
        )
    )
    if ids_attr is not None:
        wanted = set(_job_ids(ids_attr))
        found = {j.id for j in jobs}
        missing = wanted - found
        if missing:
            raise IppError(
                Status.CLIENT_ERROR_NOT_POSSIBLE,
                f"not your pending jobs: {sorted(missing)}",
                [ids_attr],
            )
        jobs = [j for j in jobs if j.id in wanted]
    # A claim (no authentication) cancels only jobs it submitted from this address; if
    # any of them came from elsewhere, nothing is cancelled and the client is challenged.
    for job in jobs:
        policy.may_change(ctx, job)
    reason = f"cancelled by {user} (Cancel-My-Jobs)"
    for job in jobs:
        await in_thread(functools.partial(srv.jobs.cancel, job.id, reason=reason, actor=user))
    return reply(ctx)


_WHICH: dict[str, list[DbState] | None] = {
    "not-completed": [DbState.INCOMING, DbState.HELD, DbState.RELEASING, DbState.FAILED],
    "pending": [],
    "pending-held": [DbState.INCOMING, DbState.HELD, DbState.FAILED],
    "processing": [DbState.RELEASING],
    "completed": [DbState.PRINTED, DbState.CANCELLED, DbState.EXPIRED, DbState.ABORTED],
    "canceled": [DbState.CANCELLED, DbState.EXPIRED],
    "aborted": [DbState.ABORTED],
    "all": None,
}


def _positive(op: AttributeGroup, name: str) -> int | None:
    """An optional integer(1:MAX) operation attribute."""
    attr = op.get(name)
    if attr is None:
        return None
    if attr.tag != T.INTEGER or not isinstance(attr.value, int) or attr.value < 1:
        raise IppError(
            Status.CLIENT_ERROR_ATTRIBUTES_OR_VALUES_NOT_SUPPORTED,
            f"{name} must be a positive integer",
            [attr],
        )
    return attr.value


async def get_jobs(srv: IppServer, ctx: Context) -> IppMessage:
    op = ctx.op
    which_attr = op.get("which-jobs")
    which = str(which_attr.value) if which_attr is not None else "not-completed"
    if which not in _WHICH:
        raise IppError(
            Status.CLIENT_ERROR_ATTRIBUTES_OR_VALUES_NOT_SUPPORTED,
            f"which-jobs {which} is not supported",
            [which_attr] if which_attr else [],
        )
    my_jobs = op.get("my-jobs")
    owner = ctx.requesting_user() if my_jobs is not None and my_jobs.value is True else None
    limit = _positive(op, "limit")
    first = _positive(op, "first-index")  # PWG 5100.13: paging, 1 is the first job
    ids_attr = op.get("job-ids")
    # PWG 5100.11 §4.1: only the jobs named, whatever their state.
    ids = _job_ids(ids_attr) if ids_attr else None
    states = None if ids is not None else _WHICH[which]
    queue = ctx.queue.name if ctx.queue else None
    jobs = await in_thread(
        lambda: srv.jobs.list(
            queue=queue,
            owner=owner,
            states=states,
            limit=limit,
            newest_first=which == "completed",
            ids=ids,
            offset=(first or 1) - 1,
        )
    )
    requested = requested_attributes(ctx)
    hide = bool((await srv.settings())[HIDE_DOCUMENT_NAMES])
    resp = reply(ctx)
    for job in jobs:
        group = policy.visible_job(ctx, job, job_group(ctx, job), hide_titles=hide)
        resp.groups.append(A.select_job(group, requested, A.JOB_DESCRIPTION_DEFAULT))
    return resp


async def get_printer_attributes(srv: IppServer, ctx: Context) -> IppMessage:
    assert ctx.queue is not None
    queue = ctx.queue
    queued = await in_thread(
        lambda: srv.jobs.count(
            queue=queue.name, states=[DbState.HELD, DbState.INCOMING, DbState.FAILED]
        )
    )
    uri = ctx.printer_uri(queue.name)
    secure = uri.startswith("ipps://")
    auth = (
        "basic" if (await srv.settings())[IPP_AUTHENTICATION_REQUIRED] else "requesting-user-name"
    )
    group = A.printer_attributes(
        queue,
        # One URI only: CUPS's lp joins several with commas into one URI and gets a 404
        # (tried with /ipp/print/<queue>, DNS-SD's rp, as a second value).
        uris=[(uri, "tls" if secure else "none", auth)],
        state=PrinterState.IDLE,
        queued=queued,
        up_since=srv.started,
        now=datetime.now(UTC),
    )
    resp = reply(ctx)
    resp.groups.append(A.select_printer(group, requested_attributes(ctx)))
    return resp
