"""Who may read and change which job over IPP: the rule of docs/security.md "Job privacy".

CUPS's default policy (conf/cupsd.conf.in: ``JobPrivateAccess default``, ``JobPrivateValues
default``; scheduler/ipp.c ``copy_job_attrs``, ``validate_user``) is the floor:

- **Owner**: the HTTP-authenticated user whose name is the job's owner; or, when the
  request is not authenticated, a ``requesting-user-name`` claim of that owner sent *from
  the address that submitted the job* (``originating_host``). A claim from anywhere else
  is no one's; for an operation that changes a job it is answered 401 with a challenge so
  the client may authenticate (CUPS refuses Cancel-My-Jobs, Hold, Release and Set by claim
  altogether; ``lp -i ID -H resume`` from the submitting host keeps working here).
- **Administrator**: an authenticated user with is_admin.
- **Anyone else** sees another user's job without its identifying values: only the
  attributes in PUBLIC_JOB_ATTRIBUTES (state, size, times), never job-name, the owner, the
  originating host, the state message or the client's own template values.

``hide_document_names`` hides job-name over IPP from administrators too (the owner still
sees their own, as at a release station).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from spoolvault.ipp.codec import Attribute, AttributeGroup, IppMessage, StringWithLanguage
from spoolvault.ipp.constants import GroupTag, Status, ValueTag
from spoolvault.ipp.message import Value
from spoolvault.netaddr import same_address
from spoolvault.settings import HIDDEN_TITLE
from spoolvault.util.text import clean_text

if TYPE_CHECKING:
    from spoolvault.db import Job
    from spoolvault.intake.ipp.request import Context

T = ValueTag

# What another user may see of a job (CUPS's default gave job-k-octets and the state):
# nothing that names it, its owner or where it came from.
PUBLIC_JOB_ATTRIBUTES = frozenset(
    {
        "job-id",
        "job-uri",
        "job-uuid",
        "job-printer-uri",
        "job-state",
        "job-state-reasons",
        "job-k-octets",
        "job-printer-up-time",
        "time-at-creation",
        "time-at-processing",
        "time-at-completed",
        "date-time-at-creation",
        "number-of-documents",
        "number-of-intervening-jobs",
    }
)

# CUPS's JobPrivateValues default list, plus what we add: never shown to another user.
PRIVATE_JOB_ATTRIBUTES = frozenset(
    {
        "job-name",
        "job-originating-host-name",
        "job-originating-user-name",
        "phone",
        "job-state-message",
        "job-printer-state-message",
    }
)

_TEXT_TAGS = frozenset({T.NAME, T.TEXT, T.NAME_WITH_LANGUAGE, T.TEXT_WITH_LANGUAGE})


def peer_address(ctx: Context) -> str | None:
    client = ctx.request.client
    return client.host if client else None


def is_owner(ctx: Context, job: Job) -> bool:
    """The authenticated owner, or the owner's claim from the address that submitted it."""
    if ctx.user:
        return ctx.user == job.owner
    return ctx.requesting_user() == job.owner and same_address(
        peer_address(ctx), job.originating_host
    )


def may_change(ctx: Context, job: Job) -> None:
    """Raise unless this request may change the job (module docstring)."""
    from spoolvault.intake.ipp.request import IppError

    if ctx.admin or is_owner(ctx, job):
        return
    if ctx.user is None and ctx.requesting_user() == job.owner:
        raise IppError(
            Status.CLIENT_ERROR_NOT_AUTHENTICATED,
            f"job {job.id} was submitted from another address: authenticate to change it",
        )
    raise IppError(Status.CLIENT_ERROR_NOT_AUTHORIZED, f"job {job.id} belongs to another user")


def visible_job(
    ctx: Context, job: Job, group: AttributeGroup, *, hide_titles: bool
) -> AttributeGroup:
    """The job's attributes as this requester may see them."""
    if is_owner(ctx, job):
        return group
    if ctx.admin:
        if hide_titles:
            group.set("job-name", T.NAME, HIDDEN_TITLE)
        return group
    return AttributeGroup(
        group.tag, [a for a in group.attributes if a.name in PUBLIC_JOB_ATTRIBUTES]
    )


# -- names and text (PWG 5100.14 §8.1) --------------------------------------------------


def clean_request(msg: IppMessage) -> None:
    """Every name and text value of a request's operation and job groups, cleaned in place:
    no control characters (LF, CR, ESC), bidi overrides or zero-width characters reach a
    job, a log line or a reply (util.text.clean_text, as for PJL and LPD names)."""
    for group in msg.groups:
        if group.tag in (GroupTag.OPERATION, GroupTag.JOB):
            for attr in group.attributes:
                _clean_attribute(attr)


def _clean_attribute(attr: Attribute) -> None:
    if not any(v.tag in _TEXT_TAGS for v in attr.values):
        return
    limit = 1023 if attr.values[0].tag in (T.TEXT, T.TEXT_WITH_LANGUAGE) else 255
    cleaned: list[Value] = []
    for v in attr.values:
        if isinstance(v.value, str) and v.tag in _TEXT_TAGS:
            cleaned.append(Value(v.tag, clean_text(v.value, limit)))
        elif isinstance(v.value, StringWithLanguage):
            text = clean_text(v.value.text, limit)
            cleaned.append(Value(v.tag, StringWithLanguage(v.value.language, text)))
        else:
            cleaned.append(v)
    attr.values[:] = cleaned
