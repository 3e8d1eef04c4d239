"""The wire under every delivery scheme, and the at-most-once rule, written once.

`Link` is one connection to a printer for one attempt. Each scheme (``ipp.py``,
``appsocket.py``, ``lpd.py``) subclasses it, says in words what a failure means at its
printer, and marks the moment its request is complete:

    async with Scheme(target, ...) as link:   connect (every failure: DeliveryFailed,
                                              retryable: nothing was sent)
        link.write / drain / pump ...         a lost connection or a stalled printer
                                              raises link.lost(reason)
        link.complete = True                  the last byte of the request went out
    # leaving normally closes gracefully (FIN, TLS close_notify); leaving by an exception
    # resets the connection (RST), so that an unfinished request looks unfinished.

How a lost connection is sorted (the rule): if the printer may have the whole request
(``link.may_have_it``: the last byte went out, or the printer accepted the job before it)
it is `DeliveryUncertain` and never sent again automatically; otherwise
`DeliveryFailed(retryable=True)`: the printer cannot have a complete job. Any other
exception (the document's source failing half way, a cancellation) propagates unchanged
after the reset, with a note saying how much was sent.

The socket plumbing beside it: a connect that tries every address in turn, writes that
report a connection the printer dropped, a drain that watches for an early answer, the
raw pump (AppSocket, LPD), SO_LINGER and the kernel's send queue (Linux SIOCOUTQ).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import socket
import ssl
import struct
import termios
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Any, Self

from spoolvault.printers.delivery.outcome import DeliveryError, DeliveryFailed, DeliveryUncertain
from spoolvault.printers.http import MAX_HEAD, os_reason
from spoolvault.printers.uri import PrinterUri

log = logging.getLogger(__package__)

DocumentSource = Callable[[], AsyncIterator[bytes]]
"""Each call opens a fresh stream of the document (a retry re-reads it from the start)."""

WRITE_SIZE = 256 * 1024  # bytes per socket write
HIGH_WATER = 1024 * 1024  # transport buffer before a write waits for the kernel
IO_TIMEOUT = 300.0  # seconds without progress (printer not reading, not answering)
CLOSE_TIMEOUT = 2.0  # a graceful close (TLS close_notify) that takes longer is cut off
SETTLE_TIMEOUT = 1.0  # before resetting an unfinished request, let what was written arrive


class _Lost(Exception):
    """The connection failed (or stalled past io_timeout) while we were using it."""


# --------------------------------------------------------------------------- the document


@contextlib.asynccontextmanager
async def open_document(source: DocumentSource) -> AsyncIterator[AsyncIterator[bytes]]:
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


def empty() -> DeliveryFailed:
    return DeliveryFailed(
        "the document is empty (0 bytes); a zero-byte job is never sent to a printer",
        retryable=False,
    )


async def first_chunk(stream: AsyncIterator[bytes]) -> bytes:
    """The first non-empty chunk; DeliveryFailed if the document is empty."""
    async for chunk in stream:
        if chunk:
            return chunk
    raise empty()


def _note_source_error(exc: BaseException, target: PrinterUri, sent: int, effect: str) -> None:
    if isinstance(exc, Exception) and not isinstance(exc, DeliveryError):
        exc.add_note(f"delivery to {target.display} stopped after {sent} bytes; {effect}")


# --------------------------------------------------------------------------- the rule


class Link:
    """One connection to a printer, for one attempt, under the at-most-once rule.

    Subclasses word the outcomes (`failed_reason`, `uncertain_reason`) and may widen
    `may_have_it`. ``sent`` counts document bytes handed to the transport.
    """

    reset_from_start = False  # SO_LINGER 0 from the connect: should we die, the kernel resets
    settle_before_reset = False  # let what was written arrive before an RST (see settle)
    cut_off = "the connection was reset"  # what a note on a source error says happened

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    def __init__(
        self,
        target: PrinterUri,
        *,
        tls: ssl.SSLContext | None = None,
        connect_timeout: float,
        io_timeout: float,
    ) -> None:
        self.target = target
        self.tls = tls
        self.connect_timeout = connect_timeout
        self.io_timeout = io_timeout
        self.sent = 0
        self.complete = False  # the last byte of the request went out

    @property
    def may_have_it(self) -> bool:
        """True once the printer may hold the whole request: a loss is then uncertain."""
        return self.complete

    def failed_reason(self, reason: str) -> str:
        return (
            f"{self.target.display}: the connection failed after {self.sent} bytes, before "
            f"the request was complete: {reason}"
        )

    def uncertain_reason(self, reason: str) -> str:
        return (
            f"{self.target.display}: the whole request ({self.sent} bytes) was sent, then "
            f"{reason}; the printer may print it"
        )

    @staticmethod
    def lost(reason: str) -> Exception:
        """The exception to raise when the connection is lost or the printer stalls."""
        return _Lost(reason)

    async def __aenter__(self) -> Self:
        self.reader, self.writer = await connect(
            self.target, tls=self.tls, timeout=self.connect_timeout
        )
        if self.reset_from_start:
            # Should this process die half way, the kernel resets the connection (see
            # close); a graceful close restores the FIN.
            linger(self.writer, reset=True)
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            await close(self.writer, abort=False)
            return
        outcome: DeliveryError | None = None
        if isinstance(exc, _Lost):
            if self.may_have_it:
                outcome = DeliveryUncertain(self.uncertain_reason(str(exc)))
            else:
                outcome = DeliveryFailed(self.failed_reason(str(exc)), retryable=True)
        elif isinstance(exc, DeliveryError):
            pass  # already an outcome (a refusal, a document that changed length)
        elif self.complete:
            log.warning(
                "%s: delivery interrupted after the whole document was sent; "
                "the printer may print it",
                self.target.display,
            )
        else:
            _note_source_error(exc, self.target, self.sent, self.cut_off)
        if self.settle_before_reset:
            await settle(self.writer, SETTLE_TIMEOUT)
        await close(self.writer, abort=True)
        if outcome is not None:
            raise outcome from None

    # -- sending

    def write(self, data: bytes) -> None:
        write(self.writer, data)

    async def drain(self, watch: asyncio.Future[Any] | None = None) -> bool:
        return await drain(self.writer, self.io_timeout, watch)

    async def pump(
        self, stream: AsyncIterator[bytes], first: bytes, limit: int | None = None
    ) -> None:
        """Write the document raw in WRITE_SIZE batches; ``sent`` counts bytes written.

        With ``limit``, the document must be exactly that long (LPD announced its length).
        """
        pieces = [first] if first else []
        size = len(first)

        async def flush() -> None:
            nonlocal pieces, size
            if limit is not None and self.sent + size > limit:
                raise DeliveryFailed(
                    f"the document grew between two reads (more than the {limit} bytes "
                    f"announced); not sent",
                    retryable=False,
                )
            self.write(pieces[0] if len(pieces) == 1 else b"".join(pieces))
            self.sent += size
            pieces, size = [], 0
            await self.drain()

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
        if limit is not None and self.sent != limit:
            raise DeliveryFailed(
                f"the document shrank between two reads ({self.sent} of the {limit} bytes "
                f"announced); not sent",
                retryable=False,
            )


# --------------------------------------------------------------------------- plumbing


async def connect(
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
                    limit=MAX_HEAD,
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


def linger(writer: asyncio.StreamWriter, *, reset: bool) -> None:
    """SO_LINGER 0 (``reset``): closing sends an RST and drops unsent data; else the default
    (a FIN after the data), as a graceful close needs."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        # ValueError: under uvloop a transport the peer already reset hands out a pseudo
        # socket without a descriptor (found by tests/reliability: a printer that died
        # mid-document turned a retryable failure into an "interrupted" release).
        with contextlib.suppress(OSError, ValueError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", reset, 0))


async def close(writer: asyncio.StreamWriter, *, abort: bool) -> None:
    """Close gracefully (FIN), or reset (RST: an unfinished request must look unfinished).

    A FIN after part of a body reads as a clean end of the document to libcups-based
    printers (CUPS, ippeveprinter, PAPPL printer applications): ippeveprinter printed the
    first 1 MiB of a request cut off that way. An RST in the middle of chunk data is a read
    error there, and the job is aborted.
    """
    linger(writer, reset=abort)
    if abort:
        writer.transport.abort()
    else:
        writer.close()
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await writer.wait_closed()
    except TimeoutError:
        linger(writer, reset=True)
        writer.transport.abort()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    except Exception:  # noqa: S110 - the outcome is decided already; the close is tidying
        pass


def kernel_unsent(writer: asyncio.StreamWriter) -> int | None:
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


async def settle(writer: asyncio.StreamWriter, timeout: float) -> None:
    """Wait (at most ``timeout`` s) until the kernel has nothing left to send: a reset then
    cuts the stream where our last write ended, not at some byte of it still in flight."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not writer.transport.is_closing() and loop.time() < deadline:
        unsent = kernel_unsent(writer)
        if not unsent and not writer.transport.get_write_buffer_size():
            return
        await asyncio.sleep(0.01)


async def drain(
    writer: asyncio.StreamWriter, io_timeout: float, watch: asyncio.Future[Any] | None = None
) -> bool:
    """Wait until the transport buffer is below its high-water mark.

    Returns False if ``watch`` (the printer's answer) completed first. Raises _Lost if the
    connection failed or the printer read nothing for ``io_timeout`` seconds.
    """
    drained = asyncio.ensure_future(writer.drain())
    waiting: set[asyncio.Future[Any]] = {drained}
    if watch is not None:
        waiting.add(watch)
    try:
        done, _ = await asyncio.wait(
            waiting, timeout=io_timeout, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        if not drained.done():
            drained.cancel()
            await asyncio.wait({drained})
    if drained in done:
        try:
            drained.result()
        except (OSError, RuntimeError) as exc:
            raise _Lost(os_reason(exc)) from None
        return True
    if not drained.cancelled():
        with contextlib.suppress(Exception):
            drained.result()
    if watch is not None and watch in done:
        return False
    raise _Lost(f"the printer read nothing for {io_timeout:g} s")


def write(writer: asyncio.StreamWriter, data: bytes) -> None:
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
