"""socket://host[:9100]: AppSocket/JetDirect, raw bytes to the printer.

Connect, write every byte, shut the write side down, then wait for the printer to close
(or, if it keeps the connection open, until the kernel reports every byte acknowledged and
a short linger passed). AppSocket has no framing and no acknowledgement: a connection that
cannot be opened is a failure; one that breaks after bytes were sent is uncertain, since a
raw printer may print what it received.
"""

from __future__ import annotations

import asyncio
import logging

from spoolvault.printers.delivery.outcome import Delivered
from spoolvault.printers.delivery.wire import (
    DocumentSource,
    Link,
    first_chunk,
    kernel_unsent,
    open_document,
)
from spoolvault.printers.http import os_reason
from spoolvault.printers.uri import PrinterUri

log = logging.getLogger(__package__)

SOCKET_LINGER = 1.0  # wait this long for the printer to close once all is acked
SOCKET_POLL = 0.05  # how often the send queue is looked at meanwhile


class _Raw(Link):
    """An AppSocket connection: from its first byte on, the printer may print."""

    cut_off = "the connection was reset; a raw printer may print the part it received"

    @property
    def may_have_it(self) -> bool:
        return True

    def uncertain_reason(self, reason: str) -> str:
        return (
            f"{self.target.display}: the connection failed after {self.sent} bytes were "
            f"sent: {reason}; a raw printer may print what it got"
        )

    async def finish(self) -> str:
        """After the last byte: shut our side down, wait for the printer to close, or for
        every byte to be acknowledged and SOCKET_LINGER to pass. Back-channel bytes are
        ignored."""
        loop = asyncio.get_running_loop()
        self.writer.write_eof()
        last_unsent = -1
        last_change = loop.time()
        all_acked_at: float | None = None
        while True:
            try:
                async with asyncio.timeout(SOCKET_POLL):
                    data = await self.reader.read(64 * 1024)
                if not data:
                    return "the printer closed the connection"
                continue  # status bytes (PJL USTATUS, ...) from the printer
            except TimeoutError:
                pass
            except OSError as exc:
                raise self.lost(f"the printer reset the connection ({os_reason(exc)})") from None
            now = loop.time()
            kernel = kernel_unsent(self.writer)
            unsent = self.writer.transport.get_write_buffer_size() + (kernel or 0)
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
            elif now - last_change >= self.io_timeout:
                raise self.lost(f"the printer stopped reading with {unsent} bytes not yet taken")


async def deliver_socket(
    target: PrinterUri, source: DocumentSource, connect_timeout: float, io_timeout: float
) -> Delivered:
    """AppSocket: all bytes, then shutdown(SHUT_WR), then the printer's close or acks."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with open_document(source) as stream:
        first = await first_chunk(stream)
        async with _Raw(target, connect_timeout=connect_timeout, io_timeout=io_timeout) as link:
            await link.pump(stream, first)
            link.complete = True
            how = await link.finish()
    elapsed = loop.time() - started
    detail = f"{target.display}, {link.sent} bytes, {how}"
    log.info("delivered %s in %.3f s", detail, elapsed)
    return Delivered(None, detail)
