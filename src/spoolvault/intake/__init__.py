"""Intake: the listeners jobs arrive on. IPP is the subpackage `ipp`; here are what raw
"port 9100" (`raw`) and LPD (`lpd`) share.

    client --9100--> raw.serve_raw --+
                                     +--> JobService.submit / spool --> held job
    client --515---> lpd.serve_lpd --+
                         (owner and title from PJL, from the LPD control file)

Both listeners are asyncio servers over a socket the caller has bound. What they share lives
here: the peer's address, a server object that caps its connections and ends them when it
is closed, and the "finish what is durable" rule for a connection that is cancelled while
its job is being committed. What their streams say (PJL, page counts) is read by
``documents``; client-supplied names are cleaned by ``util.text``.

Neither protocol authenticates anybody: an owner name from PJL or from an LPD control file
is a claim. It decides whose release station shows the job; releasing still needs the
owner's credentials at the printer (docs/intake.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import struct
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import SupportsIndex, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

Session = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def peer_host(writer: asyncio.StreamWriter) -> str:
    """The client's IP address as text (an IPv4-mapped IPv6 address as plain IPv4)."""
    peer = writer.get_extra_info("peername")
    if not isinstance(peer, tuple) or not peer:
        return "unknown host"
    host = str(peer[0])
    with contextlib.suppress(ValueError):
        addr = ipaddress.ip_address(host.split("%", 1)[0])
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
    return host


async def close_connection(writer: asyncio.StreamWriter, *, graceful: bool) -> None:
    """Close a client connection: FIN when ``graceful``, else RST (``transport.abort``).

    On raw 9100 the FIN is the only "accepted" a client ever gets (the CUPS socket backend
    waits for it), so every failure resets the connection instead.
    """
    if graceful:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            # Undo reset_by_default(): only this deliberate close ends with a FIN.
            with contextlib.suppress(OSError, ValueError):  # uvloop: no fd once reset
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 0, 0))
        writer.close()
    else:
        reset_connection(writer)
    with contextlib.suppress(OSError):
        await writer.wait_closed()


def reset_by_default(listener: socket.socket) -> None:
    """Make any close but close_connection(graceful=True) a reset, even the kernel's own.

    When the process dies (SIGKILL, OOM, power), the kernel closes its sockets, and a plain
    close of a connection whose bytes were all read sends a FIN: to a raw 9100 client that
    reads as "job accepted" (found by the crash drill, tests/reliability). With SO_LINGER 0
    the kernel resets them instead, so a client is never told a job was kept that was not
    made durable. It is set on the listening socket, whose connections inherit it when the
    kernel accepts them: asyncio may read a new connection's first bytes before any code
    of ours sees its socket (the crash drill caught exactly that, under strace). Call it
    before ``listen()`` (``spoolvault run`` does), or connections queued before the call
    go without; ``IntakeServer.start`` calls it again for listeners made elsewhere.
    """
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def reset_connection(writer: asyncio.StreamWriter) -> None:
    """Drop a connection with an RST (SO_LINGER 0): the client sees an error, not an end."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError, ValueError):  # uvloop: no fd once reset
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def finish_durably(task: asyncio.Future[T], consumed: Callable[[], bool]) -> T:
    """Await an intake ``task``; if cancelled once the whole document was read, let it finish.

    JobService commits the spool file and the job record in worker threads. A cancellation
    at that point would abandon a thread half-way (the file deleted while the record is
    being written), so a server shutting down waits for a complete document's commit and only
    then stops. A document still streaming in is aborted: nothing of it remains.
    """
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        if not consumed():
            task.cancel()
        # asyncio.wait never cancels what it waits for, however often we are cancelled.
        while not task.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait({task})
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.warning("intake stopped while a job was being committed: %s", exc)
        raise


class _ActiveReader(asyncio.StreamReader):
    """A StreamReader that counts what its client sent, and remembers when."""

    connected = 0.0
    last_active = 0.0
    received = 0

    def feed_data(self, data: Iterable[SupportsIndex]) -> None:
        self.last_active = time.monotonic()
        self.received += len(data)  # type: ignore[arg-type]
        super().feed_data(data)

    def rate(self, now: float) -> float:
        """Average bytes per second since the connection opened."""
        return self.received / max(now - self.connected, 1e-3)


# At the cap, a connection this slow on average (bytes/s) may be dropped for a new one even
# if it is not silent: a slowloris trickles a byte now and then, a real sender does not.
EVICT_BELOW_RATE = 1024.0


class IntakeServer(asyncio.AbstractServer):
    """An asyncio server with a connection cap, whose ``close()`` also ends its connections.

    At ``max_connections``, a new connection takes the place of the slowest one (lowest
    average bytes per second) among those open for ``evict_after`` seconds that are silent
    for that long or trickle under EVICT_BELOW_RATE: its session is cancelled as at shutdown
    (a complete document is still committed, anything else is discarded). Without such a
    connection the new one is reset at once (not closed gracefully: to a raw client a
    graceful close would mean "job accepted"). So hundreds of idle or trickling connections
    (slowloris) cannot lock out a client that sends. ``close()``
    stops listening and cancels the sessions; a session whose document is complete finishes
    committing it first (``finish_durably``), every other one is aborted and leaves nothing
    behind.
    """

    def __init__(self, name: str, max_connections: int, evict_after: float = 2.0) -> None:
        self.name = name
        self.max_connections = max_connections
        self.evict_after = evict_after
        self._server: asyncio.Server | None = None
        self._sessions: dict[asyncio.Task[object], _ActiveReader] = {}
        self._evicting: set[asyncio.Task[object]] = set()  # cancelled, still finishing
        self.evicted = 0

    def _evict_one(self) -> bool:
        """Cancel the worst connection to make room; True if there was one to cancel.

        Candidates are connections open for at least ``evict_after`` seconds that have been
        silent that long or average under EVICT_BELOW_RATE; the slowest goes.
        """
        now = time.monotonic()
        candidates = [
            (reader.rate(now), task, reader)
            for task, reader in self._sessions.items()
            if now - reader.connected >= self.evict_after
            and (
                now - reader.last_active >= self.evict_after or reader.rate(now) < EVICT_BELOW_RATE
            )
        ]
        if not candidates:
            return False
        rate, task, reader = min(candidates, key=lambda c: c[0])
        log.warning(
            "%s intake: %d connections open; dropping one silent for %.1f s (%.0f bytes/s) "
            "to make room",
            self.name,
            len(self._sessions),
            now - reader.last_active,
            rate,
        )
        task.cancel()
        del self._sessions[task]  # no longer counted: it is going
        self._evicting.add(task)
        task.add_done_callback(self._evicting.discard)
        self.evicted += 1
        return True

    async def start(self, session: Session, sock: socket.socket, *, limit: int) -> IntakeServer:
        """Start serving ``session`` (one call per connection) on the bound, listening ``sock``."""

        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            assert isinstance(reader, _ActiveReader)
            if len(self._sessions) >= self.max_connections and not self._evict_one():
                log.warning(
                    "%s intake: %d connections already open; refusing one from %s",
                    self.name,
                    len(self._sessions),
                    peer_host(writer),
                )
                reset_connection(writer)
                return
            task: asyncio.Task[object] = asyncio.ensure_future(session(reader, writer))
            self._sessions[task] = reader
            task.add_done_callback(lambda t: self._sessions.pop(t, None))
            # The session runs in its own task, which close() cancels and which re-raises
            # CancelledError. This wrapper, the task asyncio.start_server made, always ends
            # normally once the session has: Python 3.11's start_server calls
            # task.exception() on it, which for a cancelled task logs a spurious error.
            while not task.done():
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait({task})
                if not task.done():
                    task.cancel()
            if not task.cancelled() and (exc := task.exception()) is not None:
                log.error("%s intake session failed: %r", self.name, exc)
            if not writer.transport.is_closing():
                # Cancelled before it ran a line (close() right after the connect): the
                # session never got to close its connection.
                reset_connection(writer)
                with contextlib.suppress(OSError):
                    await writer.wait_closed()

        loop = asyncio.get_running_loop()
        reset_by_default(sock)

        def protocol() -> asyncio.StreamReaderProtocol:
            # What asyncio.start_server does, with a reader that records activity.
            reader = _ActiveReader(limit=limit, loop=loop)
            reader.connected = reader.last_active = time.monotonic()
            return asyncio.StreamReaderProtocol(reader, on_connect, loop=loop)

        self._server = await loop.create_server(protocol, sock=sock)
        return self

    @property
    def server(self) -> asyncio.Server:
        if self._server is None:
            raise RuntimeError(f"{self.name} intake server was not started")
        return self._server

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        """The listening sockets (as ``asyncio.Server.sockets``)."""
        return tuple(self.server.sockets)

    @property
    def active(self) -> int:
        """How many client connections are being served right now."""
        return len(self._sessions)

    def close(self) -> None:
        self.server.close()
        for task in list(self._sessions):
            task.cancel()

    async def wait_closed(self) -> None:
        await self.server.wait_closed()
        if self._sessions or self._evicting:
            await asyncio.wait(set(self._sessions) | self._evicting)

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self.server.get_loop()

    def is_serving(self) -> bool:
        return self.server.is_serving()

    async def start_serving(self) -> None:
        await self.server.start_serving()

    async def serve_forever(self) -> None:
        await self.server.serve_forever()
