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

One module per scheme, over shared wire code (docs/delivery.md has the details):

    outcome.py     Delivered, DeliveryError, DeliveryFailed, DeliveryUncertain
    wire.py        connect, write, drain, pump, reset vs graceful close, and the
                   at-most-once rule (`Link`) that sorts a lost connection into failed
                   (before the request's last byte) or uncertain (after it)
    ipp.py         ipp:// and ipps://: Print-Job over HTTP/1.1 (printers/http.py), retries
    appsocket.py   socket://: AppSocket/JetDirect
    lpd.py         lpd://: RFC 1179

Time to first byte: the source is opened and its first chunk read *before* connecting (a
slow or failing spool file never holds a printer connection open), and that first chunk
leaves in the first write. For LPD the counting pass comes first: the first byte waits for
one full read of the document.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Sequence

from spoolvault.ipp.codec import Attribute
from spoolvault.printers.delivery.appsocket import deliver_socket
from spoolvault.printers.delivery.ipp import IppDelivery
from spoolvault.printers.delivery.lpd import deliver_lpd
from spoolvault.printers.delivery.outcome import (
    Delivered,
    DeliveryError,
    DeliveryFailed,
    DeliveryUncertain,
)
from spoolvault.printers.delivery.wire import IO_TIMEOUT, WRITE_SIZE, DocumentSource
from spoolvault.printers.http import printer_tls
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
        tls = None
        if target.tls:
            tls = ssl_context if ssl_context is not None else printer_tls()
        return await IppDelivery(
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
        return await deliver_socket(target, source, connect_timeout, io_timeout)
    return await deliver_lpd(target, source, job_name, user, connect_timeout, io_timeout)
