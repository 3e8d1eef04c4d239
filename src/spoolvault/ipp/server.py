"""IPP/2.0 operations of the hold queues (RFC 8011, PWG 5100.11/12), over HTTP POST.

Every request is parsed with our codec, checked (version, request-id, charset and
language first: RFC 8011 §4.1.4), dispatched to one handler, and answered with an IPP
response. Any client mistake becomes an IPP status with a status-message; an unexpected
exception becomes server-error-internal-error and a log line, never a dropped connection.

Hold semantics: Hold-Job, Release-Job and job-hold-until change only the client's own hold
(``client_hold``). The job stays pending-held with ``job-release-wait`` until its owner
authenticates at a release station: IPP never bypasses release.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import hashlib
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlsplit

from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response

from spoolvault.audit import SYSTEM, Action, Outcome
from spoolvault.db import Job, Printer
from spoolvault.db import JobState as DbState
from spoolvault.errors import Refused, SpoolvaultError, SpoolWriteError, TemporaryFailure
from spoolvault.ipp import attributes as A
from spoolvault.ipp.codec import (
    Attribute,
    AttributeGroup,
    IppMessage,
    IppParseError,
    Limits,
    Parser,
    StringWithLanguage,
    encode,
)
from spoolvault.ipp.constants import GroupTag, Operation, PrinterState, Status, ValueTag
from spoolvault.jobs.release import PrinterBlocked, ReleaseFailed, ReleaseRefused, ReleaseService
from spoolvault.jobs.service import (
    FINISHED_STATES,
    KEEP,
    JobNotFound,
    JobService,
    Submission,
    hash_pin,
    pin_digest,
)
from spoolvault.printers.registry import find_printer
from spoolvault.runtime import Runtime
from spoolvault.settings import IPP_AUTHENTICATION_REQUIRED
from spoolvault.util.threads import in_thread

log = logging.getLogger(__name__)
T = ValueTag

SUPPORTED_VERSIONS = {(1, 0), (1, 1), (2, 0), (2, 1), (2, 2)}
DEFAULT_QUEUE = A.DEFAULT_QUEUE
# A time of day in job-hold-until, as CUPS's lp -H sends it.
_HOLD_TIME = re.compile(r"([01]?\d|2[0-3]):[0-5]\d(?::[0-5]\d)?")


def _text(value: object) -> str | None:
    """The string of a name or text value, with or without language (RFC 8011 §5.1.2-3)."""
    if isinstance(value, StringWithLanguage):
        return value.text
    return value if isinstance(value, str) else None


ANONYMOUS = "anonymous"
AUTH_CACHE_SECONDS = 60.0
FORMATS_TTL = 300.0  # seconds a printer's document-format-supported is trusted
FORMATS_RETRY = 30.0  # ... and how soon to ask again a printer that did not say
FORMATS_ASK_TIMEOUT = 2.0  # an intake never waits longer than this on the printer
# A direct queue's job that its printer did not take (unreachable, in error, refused for
# the moment) is sent again after each of these delays (seconds), then left held.
DIRECT_RETRY_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)


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
        name = _text(attr.value) if attr is not None else None
        if name and name.strip():
            return name.strip()[:255]
        return ANONYMOUS

    def printer_uri(self, queue: str) -> str:
        return f"{self.base}/printers/{queue}"

    def job_uri(self, job_id: int) -> str:
        return f"{self.base}/jobs/{job_id}"


Handler = Callable[["IppServer", Context], Awaitable[IppMessage]]


def _response(
    ctx: Context, status: int = Status.SUCCESSFUL_OK, message: str | None = None
) -> IppMessage:
    resp = IppMessage.response(ctx.msg, status, message)
    return resp


def _check_compression(op: AttributeGroup) -> None:
    """compression-supported is only none (RFC 8011 §4.2.1.1, §4.3.1)."""
    compression = op.get("compression")
    if compression is not None and compression.value != "none":
        raise IppError(
            Status.CLIENT_ERROR_COMPRESSION_NOT_SUPPORTED,
            f"compression {compression.value} is not supported",
            [compression],
        )


def _accepted(ctx: Context) -> IppMessage:
    """Success, with the attributes we ignored returned in the unsupported group (RFC 8011
    §4.1.7: successful-ok-ignored-or-substituted-attributes)."""
    if not ctx.unsupported:
        return _response(ctx)
    resp = _response(ctx, Status.SUCCESSFUL_OK_IGNORED_OR_SUBSTITUTED_ATTRIBUTES)
    resp.groups.append(AttributeGroup(GroupTag.UNSUPPORTED, ctx.unsupported))
    return resp


def _requested(ctx: Context) -> list[str] | None:
    attr = ctx.op.get("requested-attributes")
    if attr is None:
        return None
    return [str(v.value) for v in attr.values if isinstance(v.value, str)]


class IppServer:
    """The IPP front end over the job service."""

    def __init__(
        self,
        rt: Runtime,
        jobs: JobService,
        *,
        release: ReleaseService | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.rt = rt
        self.jobs = jobs
        self.release = release
        self._direct: set[asyncio.Task[None]] = set()
        self._formats: dict[str, tuple[float, tuple[str, ...]]] = {}  # printer -> (until, formats)
        self.limits = limits or Limits()
        self.started = datetime.now(UTC)
        self.queues = {
            DEFAULT_QUEUE: A.Queue(
                DEFAULT_QUEUE,
                "Secure print: release your jobs at any printer",
                uuid=A.queue_uuid(rt.data.instance, DEFAULT_QUEUE),
            ),
        }
        # sha256(user, password) -> (user, is administrator, expiry): argon2 is slow on purpose.
        self._auth_cache: dict[str, tuple[str, bool, float]] = {}

    async def settings(self) -> dict[str, object]:
        """The primary server's settings (cached by the job service)."""
        values = self.jobs.cached_settings()
        return values if values is not None else await in_thread(self.jobs.settings)

    # -- HTTP ------------------------------------------------------------------------

    async def http_post(self, request: Request) -> Response:
        """POST application/ipp to /printers/<queue>, /ipp/print, /jobs/<id>."""
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/ipp":
            return PlainTextResponse(
                "IPP requests must be POSTed with Content-Type: application/ipp\n", 400
            )
        try:
            user, admin = await self._authenticate(request)
            if user is None and (await self.settings())[IPP_AUTHENTICATION_REQUIRED]:
                raise IppError(Status.CLIENT_ERROR_NOT_AUTHENTICATED, "authentication required")
        except IppError:
            # RFC 8010 §4.2: authentication happens at the HTTP layer; clients (lp, macOS)
            # ask the user for a password on this challenge.
            return PlainTextResponse(
                "Unauthorized\n", 401, headers={"WWW-Authenticate": 'Basic realm="spoolvault"'}
            )
        body = request.stream()
        parser = Parser(self.limits)
        msg: IppMessage | None = None
        try:
            async for chunk in body:
                msg = parser.feed(chunk)
                if msg is not None:
                    break
            if msg is None:
                parser.finish()
                raise AssertionError("Parser.finish() must raise without a message")
        except IppParseError as exc:
            log.info("bad IPP request from %s: %s", _peer(request), exc)
            err = IppMessage(exc.version, exc.status, exc.request_id, [])
            err.operation.add("attributes-charset", T.CHARSET, "utf-8")
            err.operation.add("attributes-natural-language", T.NATURAL_LANGUAGE, "en")
            err.operation.add("status-message", T.TEXT, str(exc)[:255])
            return _ipp_response(err)

        async def document() -> AsyncIterator[bytes]:
            if parser.rest:
                yield parser.rest
            async for chunk in body:
                if chunk:
                    yield chunk

        ctx = Context(request, msg, user, None, _base_uri(request), document(), admin=admin)
        resp = await self.dispatch(ctx)
        return _ipp_response(resp)

    async def _authenticate(self, request: Request) -> tuple[str | None, bool]:
        """The HTTP Basic user and whether they are an administrator; (None, False) if none."""
        header = request.headers.get("authorization")
        if not header:
            return None, False
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() != "basic":
            return None, False
        try:
            username, _, password = base64.b64decode(credentials).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise IppError(Status.CLIENT_ERROR_NOT_AUTHENTICATED, "bad credentials") from None
        key = hashlib.sha256(f"{username}\0{password}".encode()).hexdigest()
        cached = self._auth_cache.get(key)
        if cached and cached[2] > time.monotonic():
            return cached[0], cached[1]
        ok = await in_thread(self.rt.db.verify_password, username, password)
        if not ok:
            raise IppError(Status.CLIENT_ERROR_NOT_AUTHENTICATED, "bad credentials")
        admin = await in_thread(self.rt.db.is_admin, username)
        self._auth_cache[key] = (username, admin, time.monotonic() + AUTH_CACHE_SECONDS)
        return username, admin

    # -- dispatch --------------------------------------------------------------------

    async def dispatch(self, ctx: Context) -> IppMessage:
        msg = ctx.msg
        try:
            self._check_request(ctx)
            handler = HANDLERS.get(msg.code)
            if handler is None:
                raise IppError(
                    Status.SERVER_ERROR_OPERATION_NOT_SUPPORTED,
                    f"operation 0x{msg.code:04x} is not supported",
                )
            ctx.queue = await self._target_queue(ctx)
            resp = await handler(self, ctx)
        except IppError as exc:
            resp = _response(ctx, exc.status, exc.message)
            if exc.unsupported:
                resp.groups.append(AttributeGroup(GroupTag.UNSUPPORTED, exc.unsupported))
        except (Refused, TemporaryFailure, SpoolWriteError) as exc:
            # Each error class carries its IPP status (errors.py draws the tree).
            if not isinstance(exc, Refused):
                log.error("IPP %s: %s", _op_name(msg.code), exc)
            resp = _response(ctx, exc.ipp_status, str(exc))
        except ClientDisconnect:
            # The document was cut off: nothing of it was kept (the writer aborted).
            log.info("IPP %s: client disconnected mid-request", _op_name(msg.code))
            resp = _response(ctx, Status.CLIENT_ERROR_BAD_REQUEST, "client disconnected")
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("IPP %s failed", _op_name(msg.code))
            resp = _response(ctx, Status.SERVER_ERROR_INTERNAL_ERROR, "internal error")
        return resp

    def _check_request(self, ctx: Context) -> None:
        msg = ctx.msg
        if tuple(msg.version) not in SUPPORTED_VERSIONS:
            raise IppError(
                Status.SERVER_ERROR_VERSION_NOT_SUPPORTED,
                f"IPP version {msg.version[0]}.{msg.version[1]} is not supported",
            )
        if msg.request_id <= 0:
            raise IppError(Status.CLIENT_ERROR_BAD_REQUEST, "request-id must be 1 or more")
        group = msg.group(GroupTag.OPERATION)
        first = msg.groups[0] if msg.groups else None
        if group is None or first is not group:
            raise IppError(Status.CLIENT_ERROR_BAD_REQUEST, "no operation attributes")
        attrs = group.attributes
        # RFC 8011 §4.1.4: attributes-charset first, attributes-natural-language second.
        if len(attrs) < 2 or attrs[0].name != "attributes-charset":
            raise IppError(
                Status.CLIENT_ERROR_BAD_REQUEST,
                "attributes-charset must be the first operation attribute",
            )
        if attrs[1].name != "attributes-natural-language":
            raise IppError(
                Status.CLIENT_ERROR_BAD_REQUEST,
                "attributes-natural-language must be the second operation attribute",
            )
        if attrs[0].tag != T.CHARSET or len(attrs[0].values) != 1:
            raise IppError(Status.CLIENT_ERROR_BAD_REQUEST, "attributes-charset is malformed")
        if str(attrs[0].value).lower() not in ("utf-8", "us-ascii"):
            raise IppError(
                Status.CLIENT_ERROR_CHARSET_NOT_SUPPORTED,
                f"charset {attrs[0].value} is not supported (use utf-8)",
            )
        if attrs[1].tag != T.NATURAL_LANGUAGE or len(attrs[1].values) != 1:
            raise IppError(
                Status.CLIENT_ERROR_BAD_REQUEST, "attributes-natural-language is malformed"
            )
        for attr in attrs:
            if attr.name in ("printer-uri", "job-uri") and (
                attr.tag != T.URI or len(attr.values) != 1
            ):
                raise IppError(Status.CLIENT_ERROR_BAD_REQUEST, f"{attr.name} is malformed")

    async def _target_queue(self, ctx: Context) -> A.Queue | None:
        """The queue named by printer-uri (or job-uri's job), else the HTTP path's."""
        uri = ctx.op.get("printer-uri")
        if uri is None:
            if ctx.op.get("job-uri") is not None:
                return None
            raise IppError(Status.CLIENT_ERROR_BAD_REQUEST, "printer-uri is required")
        path = urlsplit(str(uri.value)).path.rstrip("/")
        if path in ("/ipp/print", ""):
            name = DEFAULT_QUEUE
        elif path.startswith("/printers/"):
            name = path.removeprefix("/printers/")
        elif path.startswith("/ipp/print/"):  # IPP Everywhere's form (DNS-SD rp)
            name = path.removeprefix("/ipp/print/")
        else:
            raise IppError(Status.CLIENT_ERROR_NOT_FOUND, f"no printer at {uri.value}")
        queue = self.queues.get(name)
        if queue is None:
            printer = await in_thread(find_printer, self.rt.db, name)
            if printer is None:
                raise IppError(Status.CLIENT_ERROR_NOT_FOUND, f"no queue named {name!r}")
            queue = A.Queue(
                printer.name,
                f"{printer.name} ({printer.mode.value})",
                uuid=A.queue_uuid(self.rt.data.instance, printer.name),
                mode=printer.mode.value,
                formats=await self._printer_formats(printer),
            )
        return queue

    async def _printer_formats(self, printer: Printer) -> tuple[str, ...]:
        """The document formats a printer's own queue accepts: those its printer takes.

        A job the printer cannot print is refused at submission (RFC 8011 §4.1.6.2
        client-error-document-format-not-supported), not discovered at release. The list is
        the printer's IPP document-format-supported, asked with the health check and kept
        for FORMATS_TTL; a printer that does not say (offline, socket://, lpd://) gets our
        generic list, asked again after FORMATS_RETRY, so intake never waits on it.
        """
        now = time.monotonic()
        cached = self._formats.get(printer.name)
        if cached is not None and cached[0] > now:
            return cached[1]
        formats: tuple[str, ...] = ()
        if self.release is not None and printer.uri.startswith(("ipp://", "ipps://")):
            try:
                async with asyncio.timeout(FORMATS_ASK_TIMEOUT):
                    formats = (await self.release.printer_health(printer)).formats
            except TimeoutError:
                pass
        ttl = FORMATS_TTL if formats else FORMATS_RETRY
        found = formats or A.DOCUMENT_FORMATS
        self._formats[printer.name] = (now + ttl, found)
        return found

    def release_direct(self, job: Job) -> None:
        """A direct queue does not hold: release the job to its printer now, in the background.

        A printer that is unreachable, refuses for the moment or is in error gets the job
        again after each of DIRECT_RETRY_DELAYS; then the job stays held, with the reason,
        for a release station or an administrator.
        """
        if self.release is None:
            return
        release = self.release

        async def run() -> None:
            failure: Exception | None = None
            for delay in (0, *DIRECT_RETRY_DELAYS):
                await asyncio.sleep(delay)
                try:
                    await release.release(job.id, job.queue, actor=SYSTEM, is_admin=True)
                    return
                except (ReleaseFailed, PrinterBlocked) as exc:
                    failure = exc
                    now = await in_thread(self.jobs.db.get_job, job.id)
                    if now is None or now.state is not DbState.HELD:
                        break  # failed for good (marked failed), or cancelled meanwhile
                    log.info("direct job %d not printed yet (%s); trying again", job.id, exc)
                except ReleaseRefused:
                    return  # no longer held: released at a station, cancelled, or expired
                except Exception as exc:
                    failure = exc
                    break
            log.warning("direct job %d not printed: %s", job.id, failure)

        task = asyncio.create_task(run())
        self._direct.add(task)
        task.add_done_callback(self._direct.discard)

    # -- helpers shared by handlers --------------------------------------------------

    def _job_id(self, ctx: Context) -> int:
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
        if not path.startswith("/jobs/") or not tail.isdigit():
            raise IppError(Status.CLIENT_ERROR_NOT_FOUND, f"no job at {uri.value}")
        return int(tail)

    async def _job(self, ctx: Context) -> Job:
        job_id = self._job_id(ctx)
        job = await in_thread(self.jobs.get, job_id)
        if ctx.queue is not None and job.queue != ctx.queue.name:
            raise JobNotFound(f"job {job_id} is not on {ctx.queue.name}")
        return job

    def _check_owner(self, ctx: Context, job: Job) -> None:
        user = ctx.requesting_user()
        if user != job.owner and not self._is_admin(ctx):
            raise IppError(
                Status.CLIENT_ERROR_NOT_AUTHORIZED, f"job {job.id} belongs to another user"
            )

    def _is_admin(self, ctx: Context) -> bool:
        """An authenticated administrator (any user with is_admin, not only 'admin')."""
        return ctx.admin

    def _job_group(self, ctx: Context, job: Job) -> AttributeGroup:
        return A.job_attributes(
            job,
            job_uri=ctx.job_uri(job.id),
            printer_uri=ctx.printer_uri(job.queue),
            now=datetime.now(UTC),
        )

    def _job_created_response(self, ctx: Context, job: Job) -> IppMessage:
        resp = _accepted(ctx)
        resp.groups.append(A.job_created_attributes(job, job_uri=ctx.job_uri(job.id)))
        return resp

    def _submission(self, ctx: Context) -> Submission:
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
        _check_compression(op)
        name = op.get("job-name")
        job_group = ctx.msg.group(GroupTag.JOB)
        template: list[Attribute] = []
        hold: str | None = None
        fidelity = op.get("ipp-attribute-fidelity")
        strict = fidelity is not None and fidelity.value is True
        for attr in job_group.attributes if job_group else []:
            if attr.name == "job-hold-until":
                hold = self._client_hold(ctx, attr, hold)
                continue
            if attr.name not in A.JOB_TEMPLATE or not self._template_ok(attr):
                ctx.unsupported.append(attr)
                continue
            template.append(attr)
        op_hold = op.get("job-hold-until")
        if op_hold is not None:
            hold = self._client_hold(ctx, op_hold, hold)
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
        impressions = job_group.get("job-impressions") if job_group else None
        host = ctx.request.client.host if ctx.request.client else None
        title = (_text(name.value) or "")[:255] if name is not None else ""
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

    @staticmethod
    def _hold_value(attr: Attribute) -> str | None:
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

    def _client_hold(self, ctx: Context, attr: Attribute, hold: str | None) -> str | None:
        """job-hold-until of a new job: a value we do not support is ignored and reported
        (successful-ok-ignored-or-substituted-attributes), or refused with
        ipp-attribute-fidelity (RFC 8011 §4.1.7), as any other job template attribute."""
        try:
            return self._hold_value(attr)
        except IppError:
            ctx.unsupported.append(attr)
            return hold

    @staticmethod
    def _template_ok(attr: Attribute) -> bool:
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


async def print_job(srv: IppServer, ctx: Context) -> IppMessage:
    sub = srv._submission(ctx)
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
    return srv._job_created_response(ctx, job)


async def validate_job(srv: IppServer, ctx: Context) -> IppMessage:
    srv._submission(ctx)
    return _accepted(ctx)


async def create_job(srv: IppServer, ctx: Context) -> IppMessage:
    sub = srv._submission(ctx)
    job = await in_thread(srv.jobs.create, sub)
    return srv._job_created_response(ctx, job)


async def send_document(srv: IppServer, ctx: Context) -> IppMessage:
    job = await srv._job(ctx)
    srv._check_owner(ctx, job)
    last = ctx.op.get("last-document")
    if last is None or last.tag != T.BOOLEAN:
        raise IppError(Status.CLIENT_ERROR_BAD_REQUEST, "last-document is required")
    if job.state is not DbState.INCOMING:
        if job.spool_name is not None and job.state not in FINISHED_STATES:
            # RFC 8011 §4.3.2: a client may close its job with an empty last Send-Document.
            if last.value is True and await anext(ctx.document, None) is None:
                return srv._job_created_response(ctx, job)
            raise IppError(
                Status.SERVER_ERROR_MULTIPLE_DOCUMENT_JOBS_NOT_SUPPORTED, "a job holds one document"
            )
        raise IppError(Status.CLIENT_ERROR_NOT_POSSIBLE, f"job {job.id} is {job.state.value}")
    _check_compression(ctx.op)
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
        return srv._job_created_response(ctx, job)  # still waiting for its document
    sub = Submission(owner=job.owner, queue=job.queue, document_format=document_format)
    job = await srv.jobs.add_document(job.id, sub, _chained(first, ctx.document))
    if ctx.queue is not None and ctx.queue.mode == "direct":
        srv.release_direct(job)
    return srv._job_created_response(ctx, job)


async def _chained(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield first
    async for chunk in rest:
        yield chunk


async def close_job(srv: IppServer, ctx: Context) -> IppMessage:
    job = await srv._job(ctx)
    srv._check_owner(ctx, job)
    if job.state is DbState.INCOMING:
        job = await in_thread(
            lambda: srv.jobs.cancel(
                job.id,
                state=DbState.ABORTED,
                reason="closed without a document",
                actor=ctx.requesting_user(),
            )
        )
    return srv._job_created_response(ctx, job)


async def cancel_job(srv: IppServer, ctx: Context) -> IppMessage:
    job = await srv._job(ctx)
    user = ctx.requesting_user()
    try:
        srv._check_owner(ctx, job)
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
    return _response(ctx)


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
    reason = f"cancelled by {user} (Cancel-My-Jobs)"
    for job in jobs:
        await in_thread(functools.partial(srv.jobs.cancel, job.id, reason=reason, actor=user))
    return _response(ctx)


async def get_job_attributes(srv: IppServer, ctx: Context) -> IppMessage:
    job = await srv._job(ctx)
    resp = _response(ctx)
    resp.groups.append(A.select_job(srv._job_group(ctx, job), _requested(ctx), ["all"]))
    return resp


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
    requested = _requested(ctx)
    resp = _response(ctx)
    for job in jobs:
        resp.groups.append(
            A.select_job(srv._job_group(ctx, job), requested, A.JOB_DESCRIPTION_DEFAULT)
        )
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
    resp = _response(ctx)
    resp.groups.append(A.select_printer(group, _requested(ctx)))
    return resp


async def hold_job(srv: IppServer, ctx: Context) -> IppMessage:
    job = await srv._job(ctx)
    srv._check_owner(ctx, job)
    hold_attr = ctx.op.get("job-hold-until")
    hold = srv._hold_value(hold_attr) if hold_attr is not None else "indefinite"
    await in_thread(srv.jobs.set_client_hold, job.id, hold or "indefinite")
    return _response(ctx)


async def release_job(srv: IppServer, ctx: Context) -> IppMessage:
    job = await srv._job(ctx)
    srv._check_owner(ctx, job)
    # Only the client's own hold goes: printing still waits for release at a printer.
    await in_thread(srv.jobs.set_client_hold, job.id, None)
    return _response(
        ctx,
        Status.SUCCESSFUL_OK,
        "job released by the client; it prints when you release it at a printer",
    )


async def set_job_attributes(srv: IppServer, ctx: Context) -> IppMessage:
    job = await srv._job(ctx)
    srv._check_owner(ctx, job)
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
    hold = srv._hold_value(hold_attr) if hold_attr is not None else None
    template = [a for a in group.attributes if a.name != "job-hold-until"]
    bad = [a for a in template if not srv._template_ok(a)]
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
    return _response(ctx)


HANDLERS: dict[int, Handler] = {
    Operation.PRINT_JOB: print_job,
    Operation.VALIDATE_JOB: validate_job,
    Operation.CREATE_JOB: create_job,
    Operation.SEND_DOCUMENT: send_document,
    Operation.CLOSE_JOB: close_job,
    Operation.CANCEL_JOB: cancel_job,
    Operation.CANCEL_MY_JOBS: cancel_my_jobs,
    Operation.GET_JOB_ATTRIBUTES: get_job_attributes,
    Operation.GET_JOBS: get_jobs,
    Operation.GET_PRINTER_ATTRIBUTES: get_printer_attributes,
    Operation.HOLD_JOB: hold_job,
    Operation.RELEASE_JOB: release_job,
    Operation.SET_JOB_ATTRIBUTES: set_job_attributes,
}


def _op_name(code: int) -> str:
    try:
        return Operation(code).name
    except ValueError:
        return f"0x{code:04x}"


def _peer(request: Request) -> str:
    return f"{request.client.host}:{request.client.port}" if request.client else "?"


def _base_uri(request: Request) -> str:
    host = request.headers.get("host") or (
        f"{request.url.hostname}:{request.url.port}"
        if request.url.port
        else str(request.url.hostname)
    )
    scheme = "ipps" if request.url.scheme == "https" else "ipp"
    return f"{scheme}://{host}"


def _ipp_response(msg: IppMessage) -> Response:
    try:
        body = encode(msg)
    except ValueError:
        # A bug of ours, never the client's: answer with a bare internal error.
        log.exception("cannot encode the IPP response")
        err = IppMessage(msg.version, Status.SERVER_ERROR_INTERNAL_ERROR, msg.request_id, [])
        err.operation.add("attributes-charset", T.CHARSET, "utf-8")
        err.operation.add("attributes-natural-language", T.NATURAL_LANGUAGE, "en")
        body = encode(err)
    return Response(body, media_type="application/ipp")
