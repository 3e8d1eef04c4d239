"""IPP/2.0 on the hold queues (RFC 8011, PWG 5100.11/12), over HTTP POST: the entry.

Every request is authenticated (HTTP Basic, checked by the identity service), parsed with
our codec, checked (version, request-id, charset and language first: RFC 8011 §4.1.4),
dispatched to one handler (printer.py: operations on a queue; jobs.py: on one job), and
answered with an IPP response. Any client mistake becomes an IPP status with a
status-message; an unexpected exception becomes server-error-internal-error and a log line,
never a dropped connection.

Hold semantics: Hold-Job, Release-Job and job-hold-until change only the client's own hold
(``client_hold``). The job stays pending-held with ``job-release-wait`` until its owner
authenticates at a release station: IPP never bypasses release.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from urllib.parse import urlsplit

from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response

from spoolvault.audit import SYSTEM
from spoolvault.db import Job, Printer
from spoolvault.db import JobState as DbState
from spoolvault.errors import (
    DirectoryUnavailable,
    LockedOut,
    Refused,
    SpoolWriteError,
    TemporaryFailure,
)
from spoolvault.identity import IdentityService
from spoolvault.intake.ipp import jobs as job_ops
from spoolvault.intake.ipp import policy
from spoolvault.intake.ipp import printer as printer_ops
from spoolvault.intake.ipp.request import Context, Handler, IppError, reply
from spoolvault.ipp import attributes as A
from spoolvault.ipp.codec import AttributeGroup, IppMessage, IppParseError, Limits, Parser, encode
from spoolvault.ipp.constants import GroupTag, Operation, Status, ValueTag
from spoolvault.jobs.release import PrinterBlocked, ReleaseFailed, ReleaseRefused, ReleaseService
from spoolvault.jobs.service import JobService
from spoolvault.printers.http import LOOP_HEADER, LOOP_TOKEN
from spoolvault.printers.registry import find_printer
from spoolvault.runtime import Runtime
from spoolvault.settings import IPP_AUTHENTICATION_REQUIRED
from spoolvault.util.threads import in_thread

log = logging.getLogger(__name__)
T = ValueTag

SUPPORTED_VERSIONS = {(1, 0), (1, 1), (2, 0), (2, 1), (2, 2)}
DEFAULT_QUEUE = A.DEFAULT_QUEUE
_CHALLENGE = 'Basic realm="spoolvault"'
AUTH_CACHE_SECONDS = 60.0
FORMATS_TTL = 300.0  # seconds a printer's document-format-supported is trusted
FORMATS_RETRY = 30.0  # ... and how soon to ask again a printer that did not say
FORMATS_ASK_TIMEOUT = 2.0  # an intake never waits longer than this on the printer
# A direct queue's job that its printer did not take (unreachable, in error, refused for
# the moment) is sent again after each of these delays (seconds), then left held.
DIRECT_RETRY_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)


class IppServer:
    """The IPP front end over the job service."""

    def __init__(
        self,
        rt: Runtime,
        jobs: JobService,
        identity: IdentityService,
        *,
        release: ReleaseService | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.rt = rt
        self.jobs = jobs
        self.identity = identity
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
                "Unauthorized\n", 401, headers={"WWW-Authenticate": _CHALLENGE}
            )
        except LockedOut as exc:  # the identity service's lockout, as on every login path
            return PlainTextResponse(f"{exc}\n", 429, headers=exc.headers())
        except DirectoryUnavailable as exc:  # a directory user's password cannot be checked
            return PlainTextResponse(f"{exc}\n", 503, headers={"Retry-After": "30"})
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

        policy.clean_request(msg)
        ctx = Context(request, msg, user, None, _base_uri(request), document(), admin=admin)
        if request.headers.get(LOOP_HEADER) == LOOP_TOKEN:
            # Our own delivery came back: a printer's URI is one of our queues.
            log.warning(
                "IPP %s from our own delivery refused: a printer loops back here",
                _op_name(msg.code),
            )
            resp = reply(
                ctx,
                Status.CLIENT_ERROR_NOT_POSSIBLE,
                "this printer's URI is a queue of the same server (a loop)",
            )
            return _ipp_response(resp)
        resp = await self.dispatch(ctx)
        if resp.code == Status.CLIENT_ERROR_NOT_AUTHENTICATED:
            # A claim that may not change this job (policy.py): challenge, so that lp and
            # the like ask for a password and try again authenticated (as cupsd does).
            return PlainTextResponse(
                "Unauthorized\n", 401, headers={"WWW-Authenticate": _CHALLENGE}
            )
        return _ipp_response(resp)

    async def authenticated(self, request: Request) -> tuple[str | None, bool]:
        """The HTTP Basic user and whether an administrator; (None, False) if none or wrong."""
        try:
            return await self._authenticate(request)
        except IppError:
            return None, False

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
        client = request.client.host if request.client else None
        user = await in_thread(
            lambda: self.identity.check_password(
                username, password, client=client, method="IPP Basic"
            )
        )
        if user is None:
            raise IppError(Status.CLIENT_ERROR_NOT_AUTHENTICATED, "bad credentials")
        admin = user.is_admin
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
            resp = reply(ctx, exc.status, exc.message)
            if exc.unsupported:
                resp.groups.append(AttributeGroup(GroupTag.UNSUPPORTED, exc.unsupported))
        except (Refused, TemporaryFailure, SpoolWriteError) as exc:
            # Each error class carries its IPP status (errors.py draws the tree).
            if not isinstance(exc, Refused):
                log.error("IPP %s: %s", _op_name(msg.code), exc)
            resp = reply(ctx, exc.ipp_status, str(exc))
        except ClientDisconnect:
            # The document was cut off: nothing of it was kept (the writer aborted).
            log.info("IPP %s: client disconnected mid-request", _op_name(msg.code))
            resp = reply(ctx, Status.CLIENT_ERROR_BAD_REQUEST, "client disconnected")
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("IPP %s failed", _op_name(msg.code))
            resp = reply(ctx, Status.SERVER_ERROR_INTERNAL_ERROR, "internal error")
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


HANDLERS: dict[int, Handler] = {
    Operation.PRINT_JOB: printer_ops.print_job,
    Operation.VALIDATE_JOB: printer_ops.validate_job,
    Operation.CREATE_JOB: printer_ops.create_job,
    Operation.SEND_DOCUMENT: job_ops.send_document,
    Operation.CLOSE_JOB: job_ops.close_job,
    Operation.CANCEL_JOB: job_ops.cancel_job,
    Operation.CANCEL_MY_JOBS: printer_ops.cancel_my_jobs,
    Operation.GET_JOB_ATTRIBUTES: job_ops.get_job_attributes,
    Operation.GET_JOBS: printer_ops.get_jobs,
    Operation.GET_PRINTER_ATTRIBUTES: printer_ops.get_printer_attributes,
    Operation.HOLD_JOB: job_ops.hold_job,
    Operation.RELEASE_JOB: job_ops.release_job,
    Operation.SET_JOB_ATTRIBUTES: job_ops.set_job_attributes,
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
