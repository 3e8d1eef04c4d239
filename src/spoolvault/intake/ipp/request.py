"""One IPP request as the operations see it: its context, its error, its answers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from starlette.requests import Request

from spoolvault.errors import SpoolvaultError
from spoolvault.ipp import attributes as A
from spoolvault.ipp.codec import Attribute, AttributeGroup, IppMessage, StringWithLanguage
from spoolvault.ipp.constants import GroupTag, Status

if TYPE_CHECKING:
    from spoolvault.intake.ipp.server import IppServer

ANONYMOUS = "anonymous"


def text_of(value: object) -> str | None:
    """The string of a name or text value, with or without language (RFC 8011 §5.1.2-3)."""
    if isinstance(value, StringWithLanguage):
        return value.text
    return value if isinstance(value, str) else None


class IppError(SpoolvaultError):
    """Answer the request with this IPP status (and optionally unsupported attributes)."""

    def __init__(self, status: int, message: str, unsupported: list[Attribute] | None = None):
        super().__init__(message)
        self.status = self.ipp_status = status
        self.message = message
        self.unsupported = unsupported or []


@dataclass
class Context:
    """One request: who asks, on which queue, with which URIs."""

    request: Request
    msg: IppMessage
    user: str | None  # HTTP-authenticated user, if any
    queue: A.Queue | None
    base: str  # ipp://host:port
    document: AsyncIterator[bytes]
    unsupported: list[Attribute] = field(default_factory=list)
    admin: bool = False  # the authenticated user is an administrator

    @property
    def op(self) -> AttributeGroup:
        return self.msg.operation

    def requesting_user(self) -> str:
        """RFC 8011 §9.3: the authenticated user, else requesting-user-name."""
        if self.user:
            return self.user
        attr = self.op.get("requesting-user-name")
        name = text_of(attr.value) if attr is not None else None
        if name and name.strip():
            return name.strip()[:255]
        return ANONYMOUS

    def printer_uri(self, queue: str) -> str:
        return f"{self.base}/printers/{queue}"

    def job_uri(self, job_id: int) -> str:
        return f"{self.base}/jobs/{job_id}"


Handler = Callable[["IppServer", Context], Awaitable[IppMessage]]


def reply(
    ctx: Context, status: int = Status.SUCCESSFUL_OK, message: str | None = None
) -> IppMessage:
    resp = IppMessage.response(ctx.msg, status, message)
    return resp


def check_compression(op: AttributeGroup) -> None:
    """compression-supported is only none (RFC 8011 §4.2.1.1, §4.3.1)."""
    compression = op.get("compression")
    if compression is not None and compression.value != "none":
        raise IppError(
            Status.CLIENT_ERROR_COMPRESSION_NOT_SUPPORTED,
            f"compression {compression.value} is not supported",
            [compression],
        )


def accepted(ctx: Context) -> IppMessage:
    """Success, with the attributes we ignored returned in the unsupported group (RFC 8011
    §4.1.7: successful-ok-ignored-or-substituted-attributes)."""
    if not ctx.unsupported:
        return reply(ctx)
    resp = reply(ctx, Status.SUCCESSFUL_OK_IGNORED_OR_SUBSTITUTED_ATTRIBUTES)
    resp.groups.append(AttributeGroup(GroupTag.UNSUPPORTED, ctx.unsupported))
    return resp


def requested_attributes(ctx: Context) -> list[str] | None:
    attr = ctx.op.get("requested-attributes")
    if attr is None:
        return None
    return [str(v.value) for v in attr.values if isinstance(v.value, str)]
