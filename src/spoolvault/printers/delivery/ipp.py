"""ipp:// and ipps://: one Print-Job request (RFC 8011 §4.2.1) per attempt, with retries.

Each attempt is one HTTP/1.1 connection (a `_PrintJob` link, see ``wire.py``) carrying the
IPP request and the document as one chunked request body (RFC 9112 §7.1). ``ipps`` is IPP
over TLS (RFC 7472); printers carry self-signed certificates, so the default context does
not verify them. server-error-busy and server-error-service-unavailable (and HTTP 503) are
retried with backoff until ``busy_timeout``; a printer that refuses IPP/2.0
(version-not-supported or bad-request) is asked once more in IPP/1.1, as the CUPS ipp
backend does; attributes or a document format it names as unsupported are left out and
the job asked again (RFC 8011 §4.1.7).

Cut-off requests. libcups-based printers (CUPS, ippeveprinter, PAPPL printer applications)
take a connection closed at a chunk boundary, with a FIN, for the end of the document and
print what they got (seen with ippeveprinter: the first 1 MiB of a cut-off request came out
as a completed job). So an IPP request that must not complete is always ended with an RST
while the printer is inside chunk data: every frame we write stops one byte short of its
chunk (the byte leads the next frame), and SO_LINGER 0 is set from the start, so that even
this process dying half way resets the connection.

The HTTP is the shared client's (``printers/http.py``, on h11): the request head, the
terminating chunk and the whole answer. The chunk frames of the body are written here,
because no HTTP library (h11 included) writes a frame that ends one byte short of its
chunk. While the body goes out, the answer is read at the same time: a printer may answer
before it read the body (RFC 9112 §9.5, e.g. server-error-busy), and then we stop sending.
Whether a failure is "failed" or "uncertain" depends on exactly when the terminating chunk
went out, which is why the sending stays in our hands.

Performance: chunks from the source are gathered to WRITE_SIZE (256 KiB) and written with
one ``transport.write`` each (chunk header and data joined: one copy per byte); the
transport's high-water mark is 1 MiB, so the next batch is produced while the kernel sends
the last. The HTTP head, the IPP request and the document's first chunk leave in one write.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import ssl
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from spoolvault.ipp.codec import Attribute, IppMessage, encode
from spoolvault.ipp.constants import GroupTag, Operation, Status, ValueTag, status_name
from spoolvault.printers import http
from spoolvault.printers.delivery.outcome import Delivered, DeliveryFailed
from spoolvault.printers.delivery.wire import (
    WRITE_SIZE,
    DocumentSource,
    Link,
    first_chunk,
    open_document,
)
from spoolvault.printers.http import BadAnswer, Exchange
from spoolvault.printers.uri import PrinterUri
from spoolvault.util.text import clean_text

log = logging.getLogger(__package__)

BUSY_FIRST_DELAY = 0.25  # seconds before the first retry of a busy printer, doubling ...
BUSY_MAX_DELAY = 2.0  # ... up to this
MAX_ANSWER = 1024 * 1024  # an IPP answer to Print-Job is a few hundred bytes

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


async def _read_reply(exchange: Exchange, reader: asyncio.StreamReader) -> _Reply:
    """Read the printer's answer and decode its IPP body if it is a 200; BadAnswer if
    there is none to use."""
    try:
        answer = await exchange.answer(reader, max_body=MAX_ANSWER)
    except OSError as exc:
        raise BadAnswer(f"reading the printer's answer failed: {http.os_reason(exc)}") from None
    ipp = http.ipp_answer(answer) if answer.status == 200 else None
    return _Reply(answer.status, answer.reason, answer.headers, ipp)


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


class IppDelivery:
    """Print-Job with retries: one connection and one fresh document stream per attempt.

    ValueError up front for a document format that is not a MIME type, or an attribute
    that cannot be encoded; `run` delivers.
    """

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
        if not _MIME_RE.fullmatch(document_format):
            raise ValueError(f"document_format {document_format!r} is not a MIME media type")
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
        self.link: _PrintJob | None = None  # the current (last) attempt's connection
        self.substituted: list[str] = []  # what the printer refused and we left out
        try:
            self._request(2, 0)  # an attribute that cannot be encoded: ValueError up front
        except (TypeError, ValueError) as exc:
            raise ValueError(f"cannot encode the Print-Job request: {exc}") from None

    def _request(self, major: int, minor: int) -> bytes:
        # RFC 8011 §4.2.1: Print-Job, with the job's name and format after the common four.
        msg = http.ipp_request(
            Operation.PRINT_JOB,
            (major, minor),
            secrets.randbelow(1 << 30) + 1,
            self.target.uri,
            self.user,
        )
        msg.operation.add("job-name", ValueTag.NAME, self.job_name)
        msg.operation.add("document-format", ValueTag.MIME_MEDIA_TYPE, self.document_format)
        if self.attributes:
            msg.add_group(GroupTag.JOB).attributes.extend(self.attributes)
        return encode(msg)

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
        sent = self.link.sent if self.link is not None else 0
        detail += f", {sent} bytes"
        if busy:
            detail += f", after {busy} busy answer{'s' if busy > 1 else ''}"
        if self.substituted:
            detail += f", without {', '.join(self.substituted)} (not supported by the printer)"
        rate = sent / elapsed / 1e6 if elapsed > 0 else 0.0
        log.info("delivered %s in %.3f s (%.0f MB/s)", detail, elapsed, rate)
        return Delivered(job_id, detail)

    async def _attempt(self, version: tuple[int, int]) -> _Reply:
        """One Print-Job: returns the printer's reply, whatever it says; raises
        DeliveryFailed / DeliveryUncertain when there is no usable reply."""
        request = self._request(*version)
        exchange = Exchange(self.target, length=None)
        async with open_document(self.source) as stream:
            first = await first_chunk(stream)
            link = _PrintJob(
                self.target,
                tls=self.tls,
                connect_timeout=self.connect_timeout,
                io_timeout=self.io_timeout,
            )
            self.link = link
            async with link:
                answer = asyncio.ensure_future(_read_reply(exchange, link.reader))
                link.answer = answer
                try:
                    early = await self._send(link, exchange, stream, request, first)
                    if early is not None:
                        return early
                    return await self._wait(link, answer)
                finally:
                    if not answer.done():
                        answer.cancel()
                    await asyncio.wait({answer})
                    if not answer.cancelled():
                        answer.exception()  # retrieved: no "exception never retrieved" log

    async def _send(
        self,
        link: _PrintJob,
        exchange: Exchange,
        stream: AsyncIterator[bytes],
        request: bytes,
        first: bytes,
    ) -> _Reply | None:
        """Send header, IPP request and document; return an early refusal, else None."""
        answer = link.answer
        assert answer is not None
        head = exchange.head()
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
            link.write(b"".join(frame))
            link.sent += document
            held = bytes(last[-1:])
            head, pieces, size, document = b"", [], 0, 0
            watching = None if accepted_early else answer
            if await link.drain(watching):
                return None
            return self._early(link, answer)

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
        if link.writer.transport.is_closing():
            raise link.lost("the connection closed before the end of the document")
        # The held byte, the end of its chunk, and the last chunk (RFC 9112 §7.1): from here
        # on the printer may have the whole request, and the outcome is uncertain.
        link.write(held + b"\r\n" + exchange.end())
        link.complete = True
        return None

    def _early(self, link: _PrintJob, answer: asyncio.Future[_Reply]) -> _Reply | None:
        """The printer answered before the document was all sent (RFC 9112 §9.5)."""
        try:
            reply = answer.result()
        except BadAnswer as exc:
            raise link.lost(str(exc)) from None
        if reply.refuses:
            log.info(
                "%s answered after %d bytes of the document; stopped sending",
                self.target.display,
                link.sent,
            )
            return reply
        # Accepted before the end: keep sending; the job is the printer's from now on.
        return None

    async def _wait(self, link: _PrintJob, answer: asyncio.Future[_Reply]) -> _Reply:
        """The answer, once the whole request is out."""
        done, _ = await asyncio.wait({answer}, timeout=self.io_timeout)
        if not done:
            raise link.lost(f"no answer came within {self.io_timeout:g} s")
        try:
            return answer.result()
        except BadAnswer as exc:
            raise link.lost(str(exc)) from None


class _PrintJob(Link):
    """The connection of one Print-Job attempt; ``answer`` is the printer's, being read."""

    reset_from_start = True
    settle_before_reset = True
    cut_off = "the request was cut off, so the printer gets no complete job"
    answer: asyncio.Future[_Reply] | None = None

    @property
    def may_have_it(self) -> bool:
        # A printer that accepted the job before the end of the document has it too.
        answer = self.answer
        accepted = (
            answer is not None
            and answer.done()
            and not answer.cancelled()
            and answer.exception() is None
            and not answer.result().refuses
        )
        return self.complete or accepted

    def failed_reason(self, reason: str) -> str:
        return (
            f"{self.target.display}: the connection failed after {self.sent} bytes of the "
            f"document, before the request was complete: {reason}"
        )

    def uncertain_reason(self, reason: str) -> str:
        if self.complete:
            return (
                f"{self.target.display}: the whole document ({self.sent} bytes) was sent, "
                f"then {reason}; the printer may print it"
            )
        return (
            f"{self.target.display}: the connection failed after the printer accepted the "
            f"job and ({self.sent} bytes) was sent: {reason}; the printer may print it"
        )
