"""The one HTTP/1.1 client that talks to printers: IPP over HTTP for delivery and health.

Both ``delivery`` (Print-Job) and ``health`` (Get-Printer-Attributes) send one IPP request
per connection as an HTTP POST (RFC 8010 §3.4, RFC 3510 §4) and read one answer. What they
share lives here:

- `printer_tls`, the TLS context for ``ipps://`` printers (self-signed certificates);
- `Exchange`, one request and its answer on a connection the caller owns. The protocol
  state, the request head and the parsing of the answer (status line, strict header
  fields, a body by Content-Length, chunked or read to close, 1xx answers skipped) are
  **h11**'s, a sans-IO HTTP/1.1 library: it reads and writes no socket, so the caller
  keeps full control of the connection (when to write, when to reset it);
- `ipp_request` (the operation attributes every request starts with) and `ipp_answer`;
- `os_reason`, an OS error in a few words.

What h11 does not do: write a chunked request body the way delivery must. h11 frames each
chunk whole, while delivery ends every socket write one byte short of its chunk, so that a
cut-off request always ends inside chunk data (see ``delivery/ipp.py``). Delivery therefore
writes its chunk frames itself and uses h11 for the head, the terminating chunk and the
answer; h11's chunked writer keeps no count, so the two agree.
"""

from __future__ import annotations

import asyncio
import functools
import secrets
import socket
import ssl
from dataclasses import dataclass

import h11

from spoolvault import __version__
from spoolvault.errors import PrinterFailure
from spoolvault.ipp.codec import IppMessage, IppParseError, decode
from spoolvault.ipp.constants import ValueTag
from spoolvault.printers.uri import PrinterUri

__all__ = [
    "MAX_HEAD",
    "Answer",
    "BadAnswer",
    "Exchange",
    "ipp_answer",
    "ipp_request",
    "os_reason",
    "printer_tls",
]

MAX_HEAD = 64 * 1024  # the printer's status line and header fields, at most
READ_SIZE = 64 * 1024
USER_AGENT = f"spoolvault/{__version__} IPP/2.0"
# Sent with every IPP request this process makes to a printer; its own IPP intake refuses
# a request that carries it: a printer whose URI is one of our own queues (a loop).
LOOP_HEADER = "X-Spoolvault-Loop"
LOOP_TOKEN = secrets.token_hex(16)


class BadAnswer(PrinterFailure):
    """The printer's answer is not one we can use: not HTTP/1.1, malformed, too long, or
    cut short. Caught inside ``printers`` and turned into a delivery outcome or a health
    verdict; ``str()`` says what was wrong, for people."""


@functools.cache
def printer_tls() -> ssl.SSLContext:
    """TLS as printers offer it: self-signed certificates, so encryption without identity.

    A caller that can verify (its own CA) passes its own context instead.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def os_reason(exc: BaseException) -> str:
    """Why a connection failed, in a few words, from the innermost cause."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, ssl.SSLError):
            return f"TLS failure ({cur.reason or cur})"
        if isinstance(cur, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cur, socket.gaierror):
            return f"host not found ({cur.strerror})"
        if isinstance(cur, OSError) and cur.strerror:
            return cur.strerror[0].lower() + cur.strerror[1:]
        cur = cur.__cause__ or cur.__context__
    text = str(exc)
    if "Connection refused" in text:
        return "connection refused"
    if "SSL" in text or "TLS" in text:
        return f"TLS failure ({text})"
    return text or type(exc).__name__


@dataclass(frozen=True)
class Answer:
    """One HTTP answer: its status, reason phrase, header fields (lower-case names; the
    last of repeated ones) and body."""

    status: int
    reason: str
    headers: dict[str, str]
    body: bytes


class Exchange:
    """One IPP request (an HTTP/1.1 POST) and its answer, on a connection the caller owns.

    The caller writes what `head`, `data` and `end` return, and reads the answer with
    `answer`, possibly while it is still sending (RFC 9112 §9.5: a server may answer
    before it read the whole body). ``length`` is the body's size, or None for a chunked
    body of unknown size.
    """

    def __init__(self, target: PrinterUri, *, length: int | None) -> None:
        self._h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD)
        framing = (
            ("Transfer-Encoding", "chunked") if length is None else ("Content-Length", str(length))
        )
        self._head = self._h11.send(
            h11.Request(
                method="POST",
                target=target.path,
                headers=[
                    ("Host", target.hostport),
                    ("Content-Type", "application/ipp"),
                    ("Accept", "application/ipp"),
                    framing,
                    ("User-Agent", USER_AGENT),
                    (LOOP_HEADER, LOOP_TOKEN),
                    ("Connection", "close"),
                ],
            )
        )

    def head(self) -> bytes:
        """The request line and header fields."""
        return self._head

    def data(self, body: bytes) -> bytes:
        """Body bytes, framed as the head announced."""
        return self._h11.send(h11.Data(data=body))

    def end(self) -> bytes:
        """The end of the body: nothing for a sized body, the last chunk for a chunked one."""
        return self._h11.send(h11.EndOfMessage())

    async def answer(self, reader: asyncio.StreamReader, *, max_body: int) -> Answer:
        """Read the answer (1xx answers skipped); BadAnswer if it is not a usable one.

        OSError (a reset, a TLS failure) is the caller's to word: a health check calls
        that unreachable, delivery something else.
        """
        response: h11.Response | None = None
        heard = False  # a whole head (a 1xx one too) arrived
        body = bytearray()
        closed = False
        while True:
            try:
                event = self._h11.next_event()
            except h11.RemoteProtocolError as exc:
                raise self._bad(exc, heard, closed) from None
            if event is h11.NEED_DATA:
                data = await reader.read(READ_SIZE)
                closed = not data
                self._h11.receive_data(data)
            elif isinstance(event, h11.Response):
                response, heard = event, True
            elif isinstance(event, h11.Data):
                if len(body) + len(event.data) > max_body:
                    raise BadAnswer(f"the printer's answer is longer than {max_body} bytes")
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert response is not None
                headers = {
                    name.decode("latin-1"): value.decode("latin-1")
                    for name, value in response.headers
                }
                reason = response.reason.decode("latin-1")
                return Answer(response.status_code, reason, headers, bytes(body))
            elif event is h11.PAUSED or isinstance(event, h11.ConnectionClosed):
                # Neither comes before the end of the answer; here for completeness.
                raise BadAnswer("the printer's answer ended unexpectedly")
            else:  # h11.InformationalResponse: 100 Continue and friends; the answer follows
                heard = True

    @staticmethod
    def _bad(exc: h11.RemoteProtocolError, heard: bool, closed: bool) -> BadAnswer:
        if closed:
            if not heard:
                return BadAnswer("the printer closed the connection without answering")
            return BadAnswer("the connection closed in the middle of the printer's answer")
        if exc.error_status_hint == 431:
            return BadAnswer("the printer's answer header is too long")
        return BadAnswer(f"the printer's answer is not valid HTTP/1.1: {exc}")


# --------------------------------------------------------------------------- IPP over HTTP


def ipp_request(
    operation: int, version: tuple[int, int], request_id: int, printer_uri: str, user: str
) -> IppMessage:
    """An IPP request with the operation attributes every request starts with."""
    msg = IppMessage(version, operation, request_id)
    op = msg.operation
    # RFC 8011 §4.1.4: charset and natural language come first.
    op.add("attributes-charset", ValueTag.CHARSET, "utf-8")
    op.add("attributes-natural-language", ValueTag.NATURAL_LANGUAGE, "en")
    op.add("printer-uri", ValueTag.URI, printer_uri)
    op.add("requesting-user-name", ValueTag.NAME, user)
    return msg


def ipp_answer(answer: Answer) -> IppMessage:
    """The IPP message in a 200 answer's body; BadAnswer if it is not one."""
    try:
        msg, _ = decode(answer.body)
    except IppParseError as exc:
        raise BadAnswer(f"the printer's answer is not a valid IPP message: {exc}") from None
    return msg
