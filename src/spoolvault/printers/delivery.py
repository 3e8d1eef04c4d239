"""Delivery of a released job to its printer: IPP/IPPS, AppSocket (port 9100) and LPD clients.

    deliver(uri, source, ...) --> Delivered           the printer accepted the job
                              --> DeliveryFailed      it did not: nothing printed, the job
                                                      stays held; ``retryable`` says whether
                                                      trying again later can help
                              --> DeliveryUncertain   nobody can know whether it printed:
                                                      never send it again automatically

The document comes from ``source``, a callable that opens a fresh stream of the plaintext
each time it is called (a retry re-reads the spool file from its start). It is streamed to
the printer in ~256 KiB socket writes and never held in memory whole. An exception raised
by the stream itself (a spool file that fails authentication half way) propagates
unchanged, with a note, after the connection was reset (RST) so that the printer sees a
broken request rather than a short one. A document that turns out to be empty is never
sent: ``DeliveryFailed(retryable=False)`` before any connection is made.

Cut-off requests. libcups-based printers (CUPS, ippeveprinter, PAPPL printer applications)
take a connection closed at a chunk boundary, with a FIN, for the end of the document and
print what they got (seen with ippeveprinter: the first 1 MiB of a cut-off request came out
as a completed job). So an IPP request that must not complete is always ended with an RST
while the printer is inside chunk data: every frame we write stops one byte short of its
chunk (the byte leads the next frame), and SO_LINGER 0 is set from the start, so that even
this process dying half way resets the connection. A read error there aborts the job.

Schemes (docs/delivery.md has the details):

``ipp://host[:631]/path``, ``ipps://host[:631]/path``
    One Print-Job request (RFC 8011 §4.2.1) per attempt, over HTTP/1.1 with the document as
    a chunked request body behind the IPP header. ``ipps`` is IPP over TLS (RFC 7472);
    printers carry self-signed certificates, so the default context does not verify them
    (pass ``ssl_context`` to verify). server-error-busy and server-error-service-unavailable
    (and HTTP 503) are retried with backoff until ``busy_timeout``; a printer that refuses
    IPP/2.0 (version-not-supported or bad-request) is asked once more in IPP/1.1, as the
    CUPS ipp backend does.
``socket://host[:9100]``
    AppSocket/JetDirect: connect, write every byte, shut the write side down, then wait for
    the printer to close (or, if it keeps the connection open, until the kernel reports
    every byte acknowledged and a short linger passed).
``lpd://host[:515]/queue``
    RFC 1179 client: receive-job, control file (H, P, J, N, l lines), data file. The data
    file's length goes in front of it, so the document is read twice: once to count, once
    to send.

Why our own HTTP/1.1 client and not httpx: delivery must tell "the printer may have the
whole request" (DeliveryUncertain) from "it cannot have it" (DeliveryFailed), which depends
on exactly when the terminating chunk went out and what failed after it; httpx reports
neither precisely. It must watch for an early answer while it uploads (RFC 9112 §9.5: a
server may answer, e.g. server-error-busy, before it read the body) and stop sending then.
And it must choose how an unfinished request ends (the held-back byte and the RST above),
which no HTTP library lets a caller do. A one-request HTTP/1.1 client over asyncio streams
is a few hundred lines here, adds no dependency, and does all three exactly.

Performance: chunks from the source are gathered to WRITE_SIZE (256 KiB) and written with one
``transport.write`` each (chunk header and data joined: one copy per byte); the transport's
high-water mark is 1 MiB, so the next batch is produced while the kernel sends the last. No
Python work is done per byte. Time to first byte: the source is opened and its first chunk
read *before* connecting (a slow or failing spool file never holds a printer connection
open); the HTTP header, the IPP request and that first chunk then leave in one write, so the
printer can answer (busy, format refused) while the rest is read. For LPD the counting pass
comes first: the first byte waits for one full read of the document.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import re
import secrets
import socket
import ssl
import struct
import termios
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from spoolvault import __version__
from spoolvault.intake import clean_text
from spoolvault.ipp.codec import Attribute, IppMessage, IppParseError, decode, encode
from spoolvault.ipp.constants import GroupTag, Operation, Status, ValueTag, status_name
from spoolvault.printers.uri import DEFAULT_PORTS, PrinterUri, parse_printer_uri

__all__ = [
    "DEFAULT_PORTS",
    "IO_TIMEOUT",
    "WRITE_SIZE",
    "Delivered",
    "DeliveryError",
    "DeliveryFailed",
    "DeliveryUncertain",
    "DocumentSource",
    "PrinterUri",
    "deliver",
    "parse_printer_uri",
]

log = logging.getLogger(__name__)

DocumentSource = Callable[[], AsyncIterator[bytes]]
"""Each call opens a fresh stream of the document (a retry re-reads it from the start)."""

WRITE_SIZE = 256 * 1024  # bytes per socket write
HIGH_WATER = 1024 * 1024  # transport buffer before a write waits for the kernel
IO_TIMEOUT = 300.0  # seconds without progress (printer not reading, not answering)
BUSY_FIRST_DELAY = 0.25  # seconds before the first retry of a busy printer, doubling ...
BUSY_MAX_DELAY = 2.0  # ... up to this
SOCKET_LINGER = 1.0  # socket://: wait this long for the printer to close once all is acked
SOCKET_POLL = 0.05  # socket://: how often the send queue is looked at meanwhile
CLOSE_TIMEOUT = 2.0  # a graceful close (TLS close_notify) that takes longer is cut off
SETTLE_TIMEOUT = 1.0  # before resetting an unfinished request, let what was written arrive
MAX_ANSWER = 1024 * 1024  # an IPP answer to Print-Job is a few hundred bytes
MAX_ANSWER_HEAD = 64 * 1024  # HTTP status line and header fields

# RFC 1179 §7: the longest H, P, J and N operands a server must accept.
LPD_HOST_MAX, LPD_USER_MAX, LPD_JOB_MAX, LPD_SOURCE_MAX = 31, 31, 99, 131

# RFC 8011 §4.1.6 and Appendix B.1.6.8: server-error-busy means "try the identical request
# again later". B.1.6.3: server-error-service-unavailable is "temporary overloading or
# maintenance ... alleviated after some delay"; the CUPS ipp backend retries both the same
# way ("The printer is in use."), and so do we. Neither created a job, so a retry cannot
# print twice.
RETRY_NOW = frozenset({Status.SERVER_ERROR_BUSY, Status.SERVER_ERROR_SERVICE_UNAVAILABLE})
# Server errors that the same request will meet again: retrying later cannot help.
_SERVER_ERRORS_FINAL = frozenset(
    {
        Status.SERVER_ERROR_OPERATION_NOT_SUPPORTED,
        Status.SERVER_ERROR_VERSION_NOT_SUPPORTED,
        Status.SERVER_ERROR_JOB_CANCELED,
        Status.SERVER_ERROR_MULTIPLE_DOCUMENT_JOBS_NOT_SUPPORTED,
    }
)
# Client errors that may go away by themselves (RFC 8011 B.1.5.6: the client was too slow).
_CLIENT_ERRORS_TRANSIENT = frozenset({Status.CLIENT_ERROR_TIMEOUT})
# RFC 8011 §4.1.7: refusals that name what the printer does not support; asked again without.
_UNSUPPORTED = frozenset(
    {
        Status.CLIENT_ERROR_ATTRIBUTES_OR_VALUES_NOT_SUPPORTED,
        Status.CLIENT_ERROR_DOCUMENT_FORMAT_NOT_SUPPORTED,
    }
)
# RFC 8011 §5.1.10: the printer detects the document's format itself.
_AUTO_FORMAT = "application/octet-stream"
# The operation attributes we set; the same names among ``attributes`` are dropped.
_OPERATION_NAMES = frozenset(
    {
        "attributes-charset",
        "attributes-natural-language",
        "printer-uri",
        "requesting-user-name",
        "job-name",
        "document-format",
    }
)
_MIME_RE = re.compile(r"[A-Za-z0-9][\w!#$&^.+-]*/[A-Za-z0-9][\w!#$&^.+-]*(;.*)?")
_STATUS_LINE_RE = re.compile(rb"HTTP/1\.[01] ([1-5][0-9][0-9])(?: ([^\r\n]*))?")
_LPD_HOST_RE = re.compile(r"[^A-Za-z0-9.-]")


# --------------------------------------------------------------------------- outcomes


@dataclass(frozen=True)
class Delivered:
    """The printer accepted the job."""

    printer_job_id: int | None  # IPP job-id at the printer, when there is one
    detail: str  # for the audit log, e.g. "ipp://host:631/ipp/print job 12"


class DeliveryError(Exception):
    """Base of `DeliveryFailed` and `DeliveryUncertain`; ``reason`` is for people."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class DeliveryFailed(DeliveryError):
    """The printer did not accept the job. ``accepted`` is always False: nothing printed,
    safe to retry later.

    ``retryable`` is True when the same request may succeed later without anybody changing
    anything (printer busy, unreachable, out of paper); False when it will fail the same way
    (the printer refuses the format, needs credentials, the document is empty). ``status``
    is the printer's answer as a keyword ("server-error-busy", "http-404") when it gave one.
    """

    accepted = False

    def __init__(self, reason: str, *, retryable: bool, status: str | None = None) -> None:
        super().__init__(reason)
        self.retryable = retryable
        self.status = status


class DeliveryUncertain(DeliveryError):
    """We cannot know whether the printer accepted the job (e.g. the connection dropped
    after the whole document was sent and before the answer). The caller must NOT send it
    again automatically (at-most-once)."""


# --------------------------------------------------------------------------- entry point


async def deliver(
    uri: str,
    source: DocumentSource,
    *,
    job_name: str,
    user: str,
    document_format: str = "application/octet-stream",
    attributes: Sequence[Attribute] = (),
    busy_timeout: float = 120.0,
    connect_timeout: float = 10.0,
    io_timeout: float = IO_TIMEOUT,
    ssl_context: ssl.SSLContext | None = None,
) -> Delivered:
    """Send one document to the printer at ``uri``; see the module docstring.

    ``attributes`` are job template attributes (copies, sides, media-col, ...), sent in the
    job group of an IPP Print-Job; socket:// and lpd:// cannot carry them. ``busy_timeout``
    bounds how long a busy IPP printer is retried; ``connect_timeout`` bounds name lookup,
    TCP connect and TLS handshake; ``io_timeout`` is how long the printer may read nothing,
    or take to answer, before we give up. ``ssl_context`` (ipps:// only) replaces the
    default context, which does not verify the printer's certificate.

    Raises ValueError for an unusable URI or argument, before anything is sent.
    """
    target = parse_printer_uri(uri)
    for name, value in (
        ("busy_timeout", busy_timeout),
        ("connect_timeout", connect_timeout),
        ("io_timeout", io_timeout),
    ):
        if not value >= 0:
            raise ValueError(f"{name} must be a number of seconds >= 0, not {value!r}")
    if ssl_context is not None and target.scheme != "ipps":
        raise ValueError(f"ssl_context applies to ipps:// URIs only, not {target.scheme}://")
    if target.scheme in ("ipp", "ipps"):
        if not _MIME_RE.fullmatch(document_format):
            raise ValueError(f"document_format {document_format!r} is not a MIME media type")
        tls = None
        if target.scheme == "ipps":
            tls = ssl_context if ssl_context is not None else _printer_tls()
        return await _IppDelivery(
            target,
            source,
            job_name=job_name,
            user=user,
            document_format=document_format,
            attributes=attributes,
            tls=tls,
            busy_timeout=busy_timeout,
            connect_timeout=connect_timeout,
            io_timeout=io_timeout,
        ).run()
    if attributes:
        log.info(
            "%s: %d job template attribute(s) cannot be sent over %s:// and are left out",
            target.display,
            len(attributes),
            target.scheme,
        )
    if target.scheme == "socket":
        return await _deliver_socket(target, source, connect_timeout, io_timeout)
    return await _deliver_lpd(target, source, job_name, user, connect_timeout, io_timeout)


def _printer_tls() -> ssl.SSLContext:
    """TLS as printers offer it: self-signed certificates, so encryption without identity."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


# --------------------------------------------------------------------------- shared plumbing


class _Lost(Exception):
    """The connection failed (or stalled past io_timeout) while we were using it."""


@contextlib.asynccontextmanager
async def _open(source: DocumentSource) -> AsyncIterator[AsyncIterator[bytes]]:
    """Open one stream of the document and always close it (async generators included)."""
    stream = source()
    try:
        yield stream
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            try:
                await aclose()
            except Exception:
                # The outcome at the printer is what matters; a source that fails to close
                # must not turn a delivered job into an error.
                log.warning("closing the document stream failed", exc_info=True)


def _empty() -> DeliveryFailed:
    return DeliveryFailed(
        "the document is empty (0 bytes); a zero-byte job is never sent to a printer",
        retryable=False,
    )


async def _first_chunk(stream: AsyncIterator[bytes]) -> bytes:
    """The first non-empty chunk; DeliveryFailed if the document is empty."""
    async for chunk in stream:
        if chunk:
            return chunk
    raise _empty()


def _note_source_error(exc: BaseException, target: PrinterUri, sent: int, effect: str) -> None:
    if isinstance(exc, Exception) and not isinstance(exc, DeliveryError):
        exc.add_note(f"delivery to {target.display} stopped after {sent} bytes; {effect}")


async def _connect(
    target: PrinterUri, *, tls: ssl.SSLContext | None, timeout: float
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Resolve, connect (every address in turn) and handshake within ``timeout`` seconds.

    Every failure is DeliveryFailed(retryable=True): nothing was sent.
    """
    where = f"{target.host} port {target.port}"
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            try:
                infos = await loop.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
            except socket.gaierror as exc:
                raise DeliveryFailed(
                    f"cannot resolve the printer's host name {target.host!r}: {exc.strerror}",
                    retryable=True,
                ) from None
            errors: list[OSError] = []
            for family, kind, proto, _, address in infos:
                sock = socket.socket(family, kind, proto)
                try:
                    sock.setblocking(False)
                    await loop.sock_connect(sock, address)
                except OSError as exc:
                    sock.close()
                    errors.append(exc)
                    continue
                except BaseException:
                    sock.close()
                    raise
                break
            else:
                raise DeliveryFailed(_connect_error(where, errors), retryable=True)
            try:
                reader, writer = await asyncio.open_connection(
                    sock=sock,
                    ssl=tls,
                    server_hostname=target.host if tls is not None else None,
                    ssl_handshake_timeout=timeout if tls is not None else None,
                    limit=MAX_ANSWER_HEAD,
                )
            except BaseException:
                sock.close()
                raise
    except TimeoutError:
        raise DeliveryFailed(
            f"no connection to {where} within {timeout:g} s", retryable=True
        ) from None
    except ssl.SSLError as exc:
        raise DeliveryFailed(
            f"TLS handshake with {where} failed: {exc.reason or exc}", retryable=True
        ) from None
    except OSError as exc:
        raise DeliveryFailed(
            f"connection to {where} failed: {exc.strerror or exc}", retryable=True
        ) from None
    writer.transport.set_write_buffer_limits(high=HIGH_WATER)
    return reader, writer


def _connect_error(where: str, errors: list[OSError]) -> str:
    if errors and all(e.errno == errno.ECONNREFUSED for e in errors):
        return f"connection refused by {where} (nothing listens there)"
    if not errors:
        return f"no address found for {where}"
    last = errors[-1]
    return f"cannot connect to {where}: {last.strerror or last}"


def _linger(writer: asyncio.StreamWriter, *, reset: bool) -> None:
    """SO_LINGER 0 (``reset``): closing sends an RST and drops unsent data; else the default
    (a FIN after the data), as a graceful close needs."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        # ValueError: under uvloop a transport the peer already reset hands out a pseudo
        # socket without a descriptor (found by tests/reliability: a printer that died
        # mid-document turned a retryable failure into an "interrupted" release).
        with contextlib.suppress(OSError, ValueError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", reset, 0))


async def _close(writer: asyncio.StreamWriter, *, abort: bool) -> None:
    """Close gracefully (FIN), or reset (RST: an unfinished request must look unfinished).

    A FIN after part of a body reads as a clean end of the document to libcups-based
    printers (CUPS, ippeveprinter, PAPPL printer applications): ippeveprinter printed the
    first 1 MiB of a request cut off that way. An RST in the middle of chunk data is a read
    error there, and the job is aborted.
    """
    _linger(writer, reset=abort)
    if abort:
        writer.transport.abort()
    else:
        writer.close()
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await writer.wait_closed()
    except TimeoutError:
        _linger(writer, reset=True)
        writer.transport.abort()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    except Exception:  # noqa: S110 - the outcome is decided already; the close is tidying
        pass


async def _settle(writer: asyncio.StreamWriter, timeout: float) -> None:
    """Wait (at most ``timeout`` s) until the kernel has nothing left to send: a reset then
    cuts the stream where our last write ended, not at some byte of it still in flight."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not writer.transport.is_closing() and loop.time() < deadline:
        unsent = _kernel_unsent(writer)
        if not unsent and not writer.transport.get_write_buffer_size():
            return
        await asyncio.sleep(0.01)


async def _drain(
    writer: asyncio.StreamWriter, io_timeout: float, watch: asyncio.Future[Any] | None = None
) -> bool:
    """Wait until the transport buffer is below its high-water mark.

    Returns False if ``watch`` (the printer's answer) completed first. Raises _Lost if the
    connection failed or the printer read nothing for ``io_timeout`` seconds.
    """
    drain = asyncio.ensure_future(writer.drain())
    waiting: set[asyncio.Future[Any]] = {drain}
    if watch is not None:
        waiting.add(watch)
    try:
        done, _ = await asyncio.wait(
            waiting, timeout=io_timeout, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        if not drain.done():
            drain.cancel()
            await asyncio.wait({drain})
    if drain in done:
        try:
            drain.result()
        except (OSError, RuntimeError) as exc:
            raise _Lost(_os_reason(exc)) from None
        return True
    if not drain.cancelled():
        with contextlib.suppress(Exception):
            drain.result()
    if watch is not None and watch in done:
        return False
    raise _Lost(f"the printer read nothing for {io_timeout:g} s")


def _write(writer: asyncio.StreamWriter, data: bytes) -> None:
    """writer.write, with a connection the printer already dropped reported as _Lost.

    asyncio's own transport ignores such writes, uvloop's (the server's loop) raises
    RuntimeError; found by tests/reliability/test_release_faults.py: a printer that died
    mid-document made the release "interrupted, may have printed" instead of "not printed,
    retry".
    """
    if writer.transport.is_closing():
        raise _Lost("the printer closed the connection")
    try:
        writer.write(data)
    except RuntimeError as exc:
        raise _Lost(f"the printer closed the connection ({exc})") from None


def _os_reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


# --------------------------------------------------------------------------- IPP


class _NoAnswer(Exception):
    """The printer closed the connection, or what it sent is not an HTTP/IPP answer."""


@dataclass
class _Reply:
    """What the printer answered: an HTTP status, and the IPP message when it was 200."""

    http_status: int
    http_reason: str
    headers: dict[str, str]
    ipp: IppMessage | None

    @property
    def refuses(self) -> bool:
        """True if this answer means the job was not accepted."""
        return self.ipp is None or not _successful(self.ipp.code)


async def _read_reply(reader: asyncio.StreamReader) -> _Reply:
    """Read one HTTP response (skipping 1xx) and decode its IPP body if it is a 200."""
    started = False
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            started = True
            lines = head[:-4].split(b"\r\n")
            match = _STATUS_LINE_RE.fullmatch(lines[0])
            if match is None:
                raise _NoAnswer(f"the printer's answer is not HTTP: {lines[0][:60]!r}")
            status = int(match[1])
            headers: dict[str, str] = {}
            for line in lines[1:]:
                name, sep, value = line.partition(b":")
                if not sep:
                    raise _NoAnswer(f"malformed HTTP header field {line[:60]!r}")
                headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
            if 100 <= status < 200 and status != 101:
                continue  # 100 Continue and friends: the real answer follows
            reason = (match[2] or b"").decode("latin-1")
            break
        body = await _read_body(reader, headers)
    except asyncio.IncompleteReadError:
        if started:
            raise _NoAnswer("the connection closed in the middle of the printer's answer") from None
        raise _NoAnswer("the printer closed the connection without answering") from None
    except asyncio.LimitOverrunError:
        raise _NoAnswer("the printer's answer header is too long") from None
    except (OSError, ValueError) as exc:
        raise _NoAnswer(f"reading the printer's answer failed: {_os_reason(exc)}") from None
    ipp = None
    if status == 200:
        try:
            ipp, _ = decode(body)
        except IppParseError as exc:
            raise _NoAnswer(f"the printer's answer is not a valid IPP message: {exc}") from None
    return _Reply(status, reason, headers, ipp)


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    """An HTTP/1.1 message body (RFC 9112 §6.3): chunked, by length, or until close."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        parts: list[bytes] = []
        total = 0
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":
                    pass  # trailer fields
                return b"".join(parts)
            total += size
            if total > MAX_ANSWER:
                raise ValueError(f"answer longer than {MAX_ANSWER} bytes")
            parts.append(await reader.readexactly(size))
            if await reader.readexactly(2) != b"\r\n":
                raise ValueError("malformed chunked answer")
    if "content-length" in headers:
        length = int(headers["content-length"])
        if not 0 <= length <= MAX_ANSWER:
            raise ValueError(f"answer length {length} out of range")
        return await reader.readexactly(length)
    data = bytearray()
    while chunk := await reader.read(64 * 1024):
        data += chunk
        if len(data) > MAX_ANSWER:
            raise ValueError(f"answer longer than {MAX_ANSWER} bytes")
    return bytes(data)


def _successful(status: int) -> bool:
    return 0 <= status < 0x0100  # RFC 8011 §4.1.6: successful-ok*


def _retryable(status: int) -> bool:
    if 0x0500 <= status <= 0x05FF:
        return status not in _SERVER_ERRORS_FINAL
    return status in _CLIENT_ERRORS_TRANSIENT


def _message(msg: IppMessage) -> str:
    op = msg.group(GroupTag.OPERATION)
    attr = op.get("status-message") if op is not None else None
    if attr is None or not attr.values or not isinstance(attr.value, str):
        return ""
    return clean_text(attr.value)


def _job_id(msg: IppMessage) -> int | None:
    for group in msg.groups_of(GroupTag.JOB):
        attr = group.get("job-id")
        if attr is not None and attr.values and attr.tag == ValueTag.INTEGER:
            value = attr.value
            if isinstance(value, int) and not isinstance(value, bool):
                return value
    return None


def _http_refusal(reply: _Reply, target: PrinterUri) -> DeliveryFailed:
    code = reply.http_status
    what = f"HTTP {code} {reply.http_reason}".rstrip()
    status = f"http-{code}"
    if code == 401:
        reason = f"the printer wants authentication ({what}); spoolvault sends no credentials"
    elif code == 403:
        reason = f"the printer refuses us ({what})"
    elif code == 404:
        reason = f"no printer at {target.path} on {target.hostport} ({what})"
    elif code == 426:
        reason = f"the printer requires TLS ({what}): use an ipps:// URI"
    elif 300 <= code < 400:
        where = reply.headers.get("location", "")
        reason = f"the printer redirects ({what}{', to ' + where if where else ''})"
    else:
        reason = f"the printer answered {what}"
    return DeliveryFailed(reason, retryable=code >= 500, status=status)


class _IppDelivery:
    """Print-Job with retries: one connection and one fresh document stream per attempt."""

    def __init__(
        self,
        target: PrinterUri,
        source: DocumentSource,
        *,
        job_name: str,
        user: str,
        document_format: str,
        attributes: Sequence[Attribute],
        tls: ssl.SSLContext | None,
        busy_timeout: float,
        connect_timeout: float,
        io_timeout: float,
    ) -> None:
        self.target = target
        self.source = source
        self.job_name = clean_text(job_name) or "untitled"
        self.user = clean_text(user)
        self.document_format = document_format
        self.attributes = [a for a in attributes if a.name not in _OPERATION_NAMES]
        if len(self.attributes) != len(attributes):
            log.warning(
                "%s: operation attributes among the job template attributes left out",
                target.display,
            )
        self.tls = tls
        self.busy_timeout = busy_timeout
        self.connect_timeout = connect_timeout
        self.io_timeout = io_timeout
        self.sent = 0  # document bytes handed to the transport in the current attempt
        self.substituted: list[str] = []  # what the printer refused and we left out
        try:
            self._request(2, 0)  # an attribute that cannot be encoded: ValueError up front
        except (TypeError, ValueError) as exc:
            raise ValueError(f"cannot encode the Print-Job request: {exc}") from None

    def _request(self, major: int, minor: int) -> bytes:
        # RFC 8011 §4.1.4: charset and natural language come first; §4.2.1: Print-Job.
        msg = IppMessage((major, minor), Operation.PRINT_JOB, secrets.randbelow(1 << 30) + 1)
        op = msg.operation
        op.add("attributes-charset", ValueTag.CHARSET, "utf-8")
        op.add("attributes-natural-language", ValueTag.NATURAL_LANGUAGE, "en")
        op.add("printer-uri", ValueTag.URI, self.target.uri)
        op.add("requesting-user-name", ValueTag.NAME, self.user)
        op.add("job-name", ValueTag.NAME, self.job_name)
        op.add("document-format", ValueTag.MIME_MEDIA_TYPE, self.document_format)
        if self.attributes:
            msg.add_group(GroupTag.JOB).attributes.extend(self.attributes)
        return encode(msg)

    def _http_head(self) -> bytes:
        return (
            f"POST {self.target.path} HTTP/1.1\r\n"
            f"Host: {self.target.hostport}\r\n"
            f"Content-Type: application/ipp\r\n"
            f"Transfer-Encoding: chunked\r\n"
            f"User-Agent: spoolvault/{__version__} IPP/2.0\r\n"
            f"Connection: close\r\n\r\n"
        ).encode("latin-1")

    async def run(self) -> Delivered:
        loop = asyncio.get_running_loop()
        started = loop.time()
        version = (2, 0)
        delay = BUSY_FIRST_DELAY
        busy = 0
        while True:
            reply = await self._attempt(version)
            msg = reply.ipp
            code: int
            if msg is None:
                if reply.http_status != 503:
                    raise _http_refusal(reply, self.target)
                # HTTP 503 Service Unavailable: the same as IPP's service-unavailable.
                code, keyword = Status.SERVER_ERROR_SERVICE_UNAVAILABLE, "http-503"
            else:
                code, keyword = msg.code, status_name(msg.code)
                if _successful(code):
                    return self._delivered(msg, busy, loop.time() - started)
                if version == (2, 0) and code in (
                    Status.SERVER_ERROR_VERSION_NOT_SUPPORTED,
                    Status.CLIENT_ERROR_BAD_REQUEST,
                ):
                    log.info(
                        "%s answered %s to IPP/2.0; asking in IPP/1.1", self.target.display, keyword
                    )
                    version = (1, 1)
                    continue
            text = _message(msg) if msg is not None else ""
            described = f"{keyword} ({text})" if text else keyword
            if msg is not None and code in _UNSUPPORTED and self._substitute(msg, described):
                continue
            if code in RETRY_NOW:
                elapsed = loop.time() - started
                remaining = self.busy_timeout - elapsed
                if remaining <= 0:
                    raise DeliveryFailed(
                        f"printer busy for {elapsed:.1f} s ({described}); not sent",
                        retryable=True,
                        status=keyword,
                    )
                busy += 1
                pause = min(delay, remaining)  # one last try when busy_timeout is up
                log.info(
                    "%s is busy (%s); trying again in %.2f s (retry %d)",
                    self.target.display,
                    described,
                    pause,
                    busy,
                )
                await asyncio.sleep(pause)
                delay = min(delay * 2, BUSY_MAX_DELAY)
                continue
            raise DeliveryFailed(
                f"printer answered {described}", retryable=_retryable(code), status=keyword
            )

    def _substitute(self, msg: IppMessage, described: str) -> bool:
        """Leave out what the printer said it does not support; True if there is a retry.

        RFC 8011 §4.1.7: a printer refusing a job for unsupported attributes or values
        names them in the Unsupported Attributes group, and §4.2.1.2: a job without
        ``ipp-attribute-fidelity`` should print with them ignored. The CUPS ipp backend
        drops them and asks again; so do we. A job the user released should print one-sided
        on a printer without a duplexer, not stay held. A refusal created no job, so the
        new request cannot print twice.
        """
        named = {a.name for g in msg.groups_of(GroupTag.UNSUPPORTED) for a in g.attributes}
        if msg.code == Status.CLIENT_ERROR_DOCUMENT_FORMAT_NOT_SUPPORTED:
            named.add("document-format")
        dropped = sorted(n for n in named if any(a.name == n for a in self.attributes))
        self.attributes = [a for a in self.attributes if a.name not in named]
        fallback = "document-format" in named and self.document_format != _AUTO_FORMAT
        if fallback:
            dropped.append(f"document-format {self.document_format}")
            self.document_format = _AUTO_FORMAT
        if not dropped:
            return False
        log.info(
            "%s answered %s; asking again without %s",
            self.target.display,
            described,
            ", ".join(dropped),
        )
        self.substituted.extend(dropped)
        return True

    def _delivered(self, msg: IppMessage, busy: int, elapsed: float) -> Delivered:
        job_id = _job_id(msg)
        if msg.code != Status.SUCCESSFUL_OK:
            log.info("%s accepted the job with %s", self.target.display, status_name(msg.code))
        detail = f"{self.target.display} job {job_id if job_id is not None else '(no job-id)'}"
        detail += f", {self.sent} bytes"
        if busy:
            detail += f", after {busy} busy answer{'s' if busy > 1 else ''}"
        if self.substituted:
            detail += f", without {', '.join(self.substituted)} (not supported by the printer)"
        rate = self.sent / elapsed / 1e6 if elapsed > 0 else 0.0
        log.info("delivered %s in %.3f s (%.0f MB/s)", detail, elapsed, rate)
        return Delivered(job_id, detail)

    async def _attempt(self, version: tuple[int, int]) -> _Reply:
        """One Print-Job: returns the printer's reply, whatever it says; raises
        DeliveryFailed / DeliveryUncertain when there is no usable reply."""
        request = self._request(*version)
        self.sent = 0
        async with _open(self.source) as stream:
            first = await _first_chunk(stream)
            reader, writer = await _connect(self.target, tls=self.tls, timeout=self.connect_timeout)
            # Should this process die half way, the kernel resets the connection (see
            # _close); a graceful close restores the FIN.
            _linger(writer, reset=True)
            answer: asyncio.Future[_Reply] = asyncio.ensure_future(_read_reply(reader))
            complete = False  # the terminating chunk went out: the printer may have it all
            graceful = False
            try:
                try:
                    early = await self._send(writer, stream, request, first, answer)
                    if early is not None:
                        graceful = True
                        return early
                    complete = True
                    reply = await self._wait(answer)
                except _Lost as exc:
                    raise self._lost(str(exc), complete, answer) from None
                except _NoAnswer as exc:
                    raise DeliveryUncertain(
                        f"{self.target.display}: the whole document ({self.sent} bytes) was "
                        f"sent, then {exc}; the printer may print it"
                    ) from None
                except BaseException as exc:
                    if complete:
                        log.warning(
                            "%s: delivery interrupted after the whole document was sent; "
                            "the printer may print it",
                            self.target.display,
                        )
                    else:
                        _note_source_error(
                            exc,
                            self.target,
                            self.sent,
                            "the request was cut off, so the printer gets no complete job",
                        )
                    raise
                graceful = True
                return reply
            finally:
                if not answer.done():
                    answer.cancel()
                await asyncio.wait({answer})
                if not answer.cancelled():
                    answer.exception()  # retrieved: no "exception never retrieved" log
                if not graceful:
                    await _settle(writer, SETTLE_TIMEOUT)
                await _close(writer, abort=not graceful)

    async def _send(
        self,
        writer: asyncio.StreamWriter,
        stream: AsyncIterator[bytes],
        request: bytes,
        first: bytes,
        answer: asyncio.Future[_Reply],
    ) -> _Reply | None:
        """Send header, IPP request and document; return an early refusal, else None."""
        head = self._http_head()
        pieces = [request, first]
        size = len(request) + len(first)
        document = len(first)  # document bytes among the pieces
        held = b""  # the last byte of the previous chunk: it goes out with the next frame
        accepted_early = False

        async def flush() -> _Reply | None:
            nonlocal head, pieces, size, document, held
            # Each frame ends one byte short of its chunk, so between writes the printer is
            # always inside chunk data: a connection cut there is a read error for it, never
            # a chunk boundary that libcups would take for the end of the document.
            last = memoryview(pieces[-1])
            frame: list[bytes | memoryview] = [head, held, b"\r\n" if held else b""]
            frame.append(b"%x\r\n" % size)
            frame += pieces[:-1]
            frame.append(last[:-1])
            _write(writer, b"".join(frame))
            self.sent += document
            held = bytes(last[-1:])
            head, pieces, size, document = b"", [], 0, 0
            watching = None if accepted_early else answer
            if await _drain(writer, self.io_timeout, watching):
                return None
            return self._early(answer)

        # The header, the IPP request and the first chunk leave at once: the printer can
        # start on the request (or say it is busy) while the rest is read.
        early = await flush()
        if early is not None:
            return early
        accepted_early = answer.done()
        async for chunk in stream:
            if not chunk:
                continue
            pieces.append(chunk)
            size += len(chunk)
            document += len(chunk)
            if size >= WRITE_SIZE:
                early = await flush()
                if early is not None:
                    return early
                accepted_early = answer.done()
        if size:
            early = await flush()
            if early is not None:
                return early
        if writer.transport.is_closing():
            raise _Lost("the connection closed before the end of the document")
        # The held byte, the end of its chunk, and the last chunk (RFC 9112 §7.1): from here
        # on the printer may have the whole request, and the outcome is uncertain.
        _write(writer, held + b"\r\n0\r\n\r\n")
        return None

    def _early(self, answer: asyncio.Future[_Reply]) -> _Reply | None:
        """The printer answered before the document was all sent (RFC 9112 §9.5)."""
        try:
            reply = answer.result()
        except _NoAnswer as exc:
            raise _Lost(str(exc)) from None
        if reply.refuses:
            log.info(
                "%s answered after %d bytes of the document; stopped sending",
                self.target.display,
                self.sent,
            )
            return reply
        # Accepted before the end: keep sending; the job is the printer's from now on.
        return None

    async def _wait(self, answer: asyncio.Future[_Reply]) -> _Reply:
        """The answer, once the whole request is out."""
        done, _ = await asyncio.wait({answer}, timeout=self.io_timeout)
        if not done:
            raise _NoAnswer(f"no answer came within {self.io_timeout:g} s")
        return answer.result()

    def _lost(self, reason: str, complete: bool, answer: asyncio.Future[_Reply]) -> DeliveryError:
        accepted = (
            answer.done()
            and not answer.cancelled()
            and answer.exception() is None
            and not answer.result().refuses
        )
        if complete or accepted:
            return DeliveryUncertain(
                f"{self.target.display}: the connection failed after "
                f"{'the whole document' if complete else 'the printer accepted the job and'} "
                f"({self.sent} bytes) was sent: {reason}; the printer may print it"
            )
        return DeliveryFailed(
            f"{self.target.display}: the connection failed after {self.sent} bytes of the "
            f"document, before the request was complete: {reason}",
            retryable=True,
        )


# --------------------------------------------------------------------------- AppSocket


def _kernel_unsent(writer: asyncio.StreamWriter) -> int | None:
    """Bytes in the socket's send queue not yet acknowledged by the peer (Linux SIOCOUTQ)."""
    sock = writer.get_extra_info("socket")
    if sock is None:
        return None
    try:
        raw = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
    except (OSError, AttributeError, ValueError):
        return None
    value: int = struct.unpack("i", raw)[0]
    return value


async def _pump(
    writer: asyncio.StreamWriter,
    stream: AsyncIterator[bytes],
    first: bytes,
    io_timeout: float,
    progress: list[int],
    limit: int | None = None,
) -> None:
    """Write the document raw in WRITE_SIZE batches; ``progress[0]`` counts bytes written.

    With ``limit``, the document must be exactly that long (LPD announced its length).
    """
    pieces = [first] if first else []
    size = len(first)

    async def flush() -> None:
        nonlocal pieces, size
        if limit is not None and progress[0] + size > limit:
            raise DeliveryFailed(
                f"the document grew between two reads (more than the {limit} bytes "
                f"announced); not sent",
                retryable=False,
            )
        _write(writer, pieces[0] if len(pieces) == 1 else b"".join(pieces))
        progress[0] += size
        pieces, size = [], 0
        await _drain(writer, io_timeout)

    if size:
        await flush()  # the first byte leaves at once
    async for chunk in stream:
        if not chunk:
            continue
        pieces.append(chunk)
        size += len(chunk)
        if size >= WRITE_SIZE:
            await flush()
    if size:
        await flush()
    if limit is not None and progress[0] != limit:
        raise DeliveryFailed(
            f"the document shrank between two reads ({progress[0]} of the {limit} bytes "
            f"announced); not sent",
            retryable=False,
        )


async def _deliver_socket(
    target: PrinterUri, source: DocumentSource, connect_timeout: float, io_timeout: float
) -> Delivered:
    """AppSocket: all bytes, then shutdown(SHUT_WR), then the printer's close or acks."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    progress = [0]
    async with _open(source) as stream:
        first = await _first_chunk(stream)
        reader, writer = await _connect(target, tls=None, timeout=connect_timeout)
        graceful = False
        try:
            try:
                await _pump(writer, stream, first, io_timeout, progress)
                how = await _socket_finish(reader, writer, io_timeout)
            except _Lost as exc:
                raise DeliveryUncertain(
                    f"{target.display}: the connection failed after {progress[0]} bytes were "
                    f"sent: {exc}; a raw printer may print what it got"
                ) from None
            except BaseException as exc:
                _note_source_error(
                    exc,
                    target,
                    progress[0],
                    "the connection was reset; a raw printer may print the part it received",
                )
                raise
            graceful = True
        finally:
            await _close(writer, abort=not graceful)
    elapsed = loop.time() - started
    detail = f"{target.display}, {progress[0]} bytes, {how}"
    log.info("delivered %s in %.3f s", detail, elapsed)
    return Delivered(None, detail)


async def _socket_finish(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, io_timeout: float
) -> str:
    """After the last byte: shut our side down, wait for the printer to close, or for every
    byte to be acknowledged and SOCKET_LINGER to pass. Back-channel bytes are ignored."""
    loop = asyncio.get_running_loop()
    writer.write_eof()
    last_unsent = -1
    last_change = loop.time()
    all_acked_at: float | None = None
    while True:
        try:
            async with asyncio.timeout(SOCKET_POLL):
                data = await reader.read(64 * 1024)
            if not data:
                return "the printer closed the connection"
            continue  # status bytes (PJL USTATUS, ...) from the printer
        except TimeoutError:
            pass
        except OSError as exc:
            raise _Lost(f"the printer reset the connection ({_os_reason(exc)})") from None
        now = loop.time()
        kernel = _kernel_unsent(writer)
        unsent = writer.transport.get_write_buffer_size() + (kernel or 0)
        if unsent == 0:
            all_acked_at = now if all_acked_at is None else all_acked_at
            if now - all_acked_at >= SOCKET_LINGER:
                if kernel is None:
                    return "the printer kept the connection open"
                return "all bytes acknowledged; the printer kept the connection open"
            continue
        all_acked_at = None
        if unsent != last_unsent:
            last_unsent, last_change = unsent, now
        elif now - last_change >= io_timeout:
            raise _Lost(f"the printer stopped reading with {unsent} bytes not yet taken")


# --------------------------------------------------------------------------- LPD


class _Refused(Exception):
    """An LPD negative acknowledgement."""


def _lpd_host() -> str:
    host = _LPD_HOST_RE.sub("", socket.gethostname().split(".")[0]) or "spoolvault"
    return host[:LPD_HOST_MAX]


def _control_file(host: str, user: str, job_name: str, data_name: str) -> bytes:
    """RFC 1179 §7: H host, P user, J job name, N source name, l (print raw) data file."""
    title = clean_text(job_name)
    lines = [
        f"H{host}",
        f"P{clean_text(user, LPD_USER_MAX)}",
        f"J{clean_text(title, LPD_JOB_MAX)}",
        f"N{clean_text(title, LPD_SOURCE_MAX)}",
        f"l{data_name}",
    ]
    return ("\n".join(lines) + "\n").encode("utf-8")


async def _lpd_ack(reader: asyncio.StreamReader, io_timeout: float, what: str) -> None:
    try:
        async with asyncio.timeout(io_timeout):
            ack = await reader.readexactly(1)
    except TimeoutError:
        raise _Lost(f"no acknowledgement of {what} within {io_timeout:g} s") from None
    except asyncio.IncompleteReadError:
        raise _Lost(f"the server closed the connection instead of acknowledging {what}") from None
    except OSError as exc:
        raise _Lost(_os_reason(exc)) from None
    if ack != b"\0":
        raise _Refused(f"the LPD server refused {what} (answered 0x{ack[0]:02x})")


async def _count(source: DocumentSource) -> int:
    """The document's length: LPD announces it before the data file."""
    total = 0
    async with _open(source) as stream:
        async for chunk in stream:
            total += len(chunk)
    if total == 0:
        raise _empty()
    return total


async def _deliver_lpd(
    target: PrinterUri,
    source: DocumentSource,
    job_name: str,
    user: str,
    connect_timeout: float,
    io_timeout: float,
) -> Delivered:
    """RFC 1179 §5.2 receive job: control file first (as the CUPS lpd backend), then data.

    Our source port is not one of RFC 1179's reserved 721-731: that needs root, and
    printers do not check it (BSD lpd does; serve such a queue through its printer).
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    size = await _count(source)
    host = _lpd_host()
    number = f"{secrets.randbelow(1000):03d}"
    control_name, data_name = f"cfA{number}{host}", f"dfA{number}{host}"
    control = _control_file(host, user, job_name, data_name)
    progress = [0]
    data_complete = False
    reader, writer = await _connect(target, tls=None, timeout=connect_timeout)
    graceful = False
    try:
        try:
            queue = target.path.encode("utf-8")
            _write(writer, b"\x02" + queue + b"\n")
            await _lpd_ack(reader, io_timeout, f"a job for queue {target.path!r}")
            _write(writer, b"\x02%d %s\n" % (len(control), control_name.encode()))
            await _lpd_ack(reader, io_timeout, "the control file")
            _write(writer, control + b"\0")
            await _lpd_ack(reader, io_timeout, "the control file's contents")
            _write(writer, b"\x03%d %s\n" % (size, data_name.encode()))
            await _lpd_ack(reader, io_timeout, "the data file")
            async with _open(source) as stream:
                await _pump(writer, stream, b"", io_timeout, progress, limit=size)
            if writer.transport.is_closing():
                raise _Lost("the connection closed before the end of the data file")
            _write(writer, b"\0")  # RFC 1179 §6.3: the file is complete; from here on, uncertain
            data_complete = True
            await _lpd_ack(reader, io_timeout, "the data file's contents")
        except _Lost as exc:
            if data_complete:
                raise DeliveryUncertain(
                    f"{target.display}: the whole data file ({size} bytes) was sent, then "
                    f"{exc}; the printer may print it"
                ) from None
            raise DeliveryFailed(
                f"{target.display}: the connection failed after {progress[0]} of {size} bytes, "
                f"before the job was complete: {exc}",
                retryable=True,
            ) from None
        except _Refused as exc:
            raise DeliveryFailed(f"{target.display}: {exc}", retryable=True) from None
        except BaseException as exc:
            _note_source_error(
                exc, target, progress[0], "the data file was cut off, so no job was complete"
            )
            raise
        graceful = True
    finally:
        await _close(writer, abort=not graceful)
    elapsed = loop.time() - started
    detail = f"{target.display} as {control_name}, {size} bytes"
    log.info("delivered %s in %.3f s", detail, elapsed)
    return Delivered(None, detail)
