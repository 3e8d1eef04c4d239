"""Raw "port 9100" intake (HP JetDirect / AppSocket): one connection, one job.

The protocol has no protocol: the client connects, sends the print stream and shuts down its
side of the connection. So:

- the bytes until the client's half-close are the document, spooled as they arrive and kept
  byte-identical (PJL header included: the printer needs it);
- the owner and title come from the stream's PJL header (``documents.pjl``); without an owner
  the job is held under ``unknown`` for an administrator, with a warning in the log; without
  a title it is "raw job from <client address>";
- the only answer a client gets is how the connection ends: a graceful close (FIN) once the
  job is durable (spool file and record committed), a reset (RST) when it was not kept --
  the CUPS socket backend and Windows' Standard TCP/IP port then report an error and retry;
- a connection that sends nothing makes no job, and neither does one that sends only PJL
  commands (a driver's or a monitor's "@PJL INFO STATUS" query: there is no document, and
  printer status is not answered here); one idle for ``idle_timeout`` seconds, or reset by
  the client, is discarded whole (JobService aborts the spool writer: no file).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

from spoolvault.db import Job
from spoolvault.documents.pjl import PjlScanner
from spoolvault.errors import SpoolvaultError
from spoolvault.intake import IntakeServer, close_connection, finish_durably, peer_host
from spoolvault.jobs.intake import UNKNOWN_OWNER, Submission
from spoolvault.jobs.service import JobService

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RawLimits:
    """Bounds of the raw listener, so no client can hold it (or memory) hostage."""

    idle_timeout: float = 300.0  # seconds without a byte before the job is discarded
    max_connections: int = 64  # concurrent connections (see evict_idle_after)
    # At the cap, a new connection replaces the slowest one open this long (seconds) that
    # is silent as long or trickles (IntakeServer); otherwise the new one is reset at once.
    evict_after: float = 2.0
    read_size: int = 64 * 1024  # bytes per socket read (and the most kept before spooling)


async def serve_raw(
    jobs: JobService,
    sock: socket.socket,
    *,
    queue: str = "secure",
    limits: RawLimits | None = None,
) -> asyncio.AbstractServer:
    """Serve raw 9100 intake on the bound, listening ``sock``; jobs go to ``queue``."""
    limits = limits or RawLimits()
    server = IntakeServer("raw", limits.max_connections, limits.evict_after)
    session = functools.partial(_session, jobs, queue, limits)
    return await server.start(session, sock, limit=limits.read_size)


async def _session(
    jobs: JobService,
    queue: str,
    limits: RawLimits,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
) -> None:
    peer = peer_host(writer)
    progress = _Progress()
    kept = False
    try:
        await _receive(jobs, queue, limits, reader, peer, progress)
        kept = True
    except asyncio.CancelledError:
        # A complete document is committed before the cancellation goes on (finish_durably):
        # then the client is told it was kept.
        kept = progress.kept()
        log.info(
            "raw job from %s: connection ended by the server (stopping, or making room for "
            "another client); job kept: %s",
            peer,
            kept,
        )
        raise
    except TimeoutError:
        log.warning(
            "raw job from %s: no data for %g s; the job was discarded", peer, limits.idle_timeout
        )
    except OSError as exc:
        log.warning("raw job from %s: connection failed (%s); the job was discarded", peer, exc)
    except SpoolvaultError as exc:
        log.error("raw job from %s could not be kept: %s", peer, exc)
    except Exception:
        log.exception("raw job from %s: internal error; the job was discarded", peer)
    finally:
        await close_connection(writer, graceful=kept)


class _Progress:
    """How far one connection's job got."""

    def __init__(self) -> None:
        self.consumed = False  # the whole document was read from the client
        self.task: asyncio.Future[Job] | None = None  # spooling and recording it

    def kept(self) -> bool:
        """True once the job is durable (its spool file and record are committed)."""
        task = self.task
        return task is not None and task.done() and not task.cancelled() and not task.exception()


async def _read(reader: asyncio.StreamReader, limits: RawLimits) -> bytes:
    async with asyncio.timeout(limits.idle_timeout):
        return await reader.read(limits.read_size)


async def _receive(
    jobs: JobService,
    queue: str,
    limits: RawLimits,
    reader: asyncio.StreamReader,
    peer: str,
    progress: _Progress,
) -> Job | None:
    """Read one raw job and hold it; None if the client sent nothing."""
    # Read until the PJL header is over (at most pjl.SCAN_LIMIT plus one read), so that the
    # owner is known before the job is recorded; these bytes are spooled first, unchanged.
    scanner = PjlScanner()
    head: list[bytes] = []
    while not scanner.done:
        chunk = await _read(reader, limits)
        if not chunk:
            progress.consumed = True
            break
        head.append(chunk)
        scanner.feed(chunk)
    if not head:
        log.debug("raw connection from %s sent nothing; no job", peer)
        return None
    info = scanner.result()
    if info.pjl_only:
        # A driver's or monitor's PJL query (@PJL INFO STATUS, USTATUS ...), no document.
        log.info("raw connection from %s sent only PJL commands; no job", peer)
        return None

    async def chunks() -> AsyncIterator[bytes]:
        while head:
            yield head.pop(0)
        while not progress.consumed:
            chunk = await _read(reader, limits)
            if not chunk:
                progress.consumed = True
                break
            yield chunk

    sub = Submission(
        owner=info.owner or UNKNOWN_OWNER,
        queue=queue,
        title=info.title or f"raw job from {peer}",
        originating_host=peer,
    )
    progress.task = asyncio.ensure_future(jobs.submit(sub, chunks()))
    job = await finish_durably(progress.task, lambda: progress.consumed)
    if info.owner is None:
        log.warning(
            "raw job %d from %s has no owner (no user name in a PJL header); "
            "it is held as %r for an administrator to release or cancel",
            job.id,
            peer,
            UNKNOWN_OWNER,
        )
    else:
        log.info("raw job %d from %s held for %s (%d bytes)", job.id, peer, job.owner, job.size)
    return job
