"""lpd://host[:515]/queue: an RFC 1179 client ("receive job", §5.2 and §6).

The control file goes first (as the CUPS lpd backend does), with H, P, J, N and l lines,
then the data file. The data file's length goes in front of it and the document is a
stream of unknown length, so the document is read twice: once to count, once to send (a
different length the second time fails the delivery). The NUL that ends the data file is
the request's last byte: before it, a lost connection is a failure; after it, without the
final acknowledgement, uncertain. A negative acknowledgement at any step is a failure.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import socket

from spoolvault.printers.delivery.outcome import Delivered, DeliveryFailed
from spoolvault.printers.delivery.wire import DocumentSource, Link, empty, open_document
from spoolvault.printers.http import os_reason
from spoolvault.printers.uri import PrinterUri
from spoolvault.util.text import clean_text

log = logging.getLogger(__package__)

# RFC 1179 §7: the longest H, P, J and N operands a server must accept.
LPD_HOST_MAX, LPD_USER_MAX, LPD_JOB_MAX, LPD_SOURCE_MAX = 31, 31, 99, 131
_LPD_HOST_RE = re.compile(r"[^A-Za-z0-9.-]")


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


async def _count(source: DocumentSource) -> int:
    """The document's length: LPD announces it before the data file."""
    total = 0
    async with open_document(source) as stream:
        async for chunk in stream:
            total += len(chunk)
    if total == 0:
        raise empty()
    return total


class _LpdJob(Link):
    """One receive-job conversation; ``size`` is the data file's announced length."""

    cut_off = "the data file was cut off, so no job was complete"
    size = 0

    def failed_reason(self, reason: str) -> str:
        return (
            f"{self.target.display}: the connection failed after {self.sent} of {self.size} "
            f"bytes, before the job was complete: {reason}"
        )

    def uncertain_reason(self, reason: str) -> str:
        return (
            f"{self.target.display}: the whole data file ({self.size} bytes) was sent, then "
            f"{reason}; the printer may print it"
        )

    async def ack(self, what: str) -> None:
        """One acknowledgement octet: 0 is yes (RFC 1179 §7); anything else a refusal."""
        try:
            async with asyncio.timeout(self.io_timeout):
                ack = await self.reader.readexactly(1)
        except TimeoutError:
            raise self.lost(f"no acknowledgement of {what} within {self.io_timeout:g} s") from None
        except asyncio.IncompleteReadError:
            raise self.lost(
                f"the server closed the connection instead of acknowledging {what}"
            ) from None
        except OSError as exc:
            raise self.lost(os_reason(exc)) from None
        if ack != b"\0":
            raise DeliveryFailed(
                f"{self.target.display}: the LPD server refused {what} (answered 0x{ack[0]:02x})",
                retryable=True,
            )


async def deliver_lpd(
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
    async with _LpdJob(target, connect_timeout=connect_timeout, io_timeout=io_timeout) as link:
        link.size = size
        link.write(b"\x02" + target.path.encode("utf-8") + b"\n")
        await link.ack(f"a job for queue {target.path!r}")
        link.write(b"\x02%d %s\n" % (len(control), control_name.encode()))
        await link.ack("the control file")
        link.write(control + b"\0")
        await link.ack("the control file's contents")
        link.write(b"\x03%d %s\n" % (size, data_name.encode()))
        await link.ack("the data file")
        async with open_document(source) as stream:
            await link.pump(stream, b"", limit=size)
        if link.writer.transport.is_closing():
            raise link.lost("the connection closed before the end of the data file")
        link.write(b"\0")  # RFC 1179 §6.3: the file is complete; from here on, uncertain
        link.complete = True
        await link.ack("the data file's contents")
    elapsed = loop.time() - started
    detail = f"{target.display} as {control_name}, {size} bytes"
    log.info("delivered %s in %.3f s", detail, elapsed)
    return Delivered(None, detail)
