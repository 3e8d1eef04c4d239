"""uvicorn's HTTP protocol with the limits it lacks: header timeout, body idle timeout, header size.

uvicorn (0.54) times out only idle keep-alive connections *between* requests. A client that
connects and sends nothing, or sends its headers a byte at a time (slowloris), or stops in
the middle of a request body, holds its connection, its task and, for an IPP job, an open
spool file forever; the request head may also grow without bound. The reliability drill
(tests/reliability/test_hostile_clients.py) kept hundreds of such connections open.

This protocol adds, per connection (print-provider.conf, docs/configuration.md):

- ``HttpHeaderTimeout``: the request line and headers must be complete this many seconds
  after the connection opens or the request's first byte arrives, else the connection is
  closed;
- ``HttpBodyTimeout``: a request body that gets no byte for this long is cut off; the
  application sees the client disconnect (an IPP job being received is discarded). Time
  during which *we* stopped reading (flow control, a slow disk) does not count;
- ``HttpMaxHeaderBytes``: a longer request head gets HTTP 431 and the connection closes.

``HttpMaxConnections`` is uvicorn's own ``limit_concurrency`` (HTTP 503 beyond it).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from spoolvault.config import Limits

log = logging.getLogger(__name__)


class GuardedHttpProtocol(HttpToolsProtocol):
    """HttpToolsProtocol plus header and body timeouts and a request-head size limit."""

    limits: Limits = Limits()

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._in_head = True  # reading a request line and headers
        self._in_body = False  # reading a request body
        self._head_bytes = 0  # bytes read while in the head, before the current read
        self._counted = 0  # request line and header bytes the parser reported
        self._refused = False
        self._timer: asyncio.TimerHandle | None = None

    @classmethod
    def with_limits(cls, limits: Limits) -> type[GuardedHttpProtocol]:
        """A subclass bound to ``limits`` (uvicorn instantiates the class it is given)."""
        return type("GuardedHttpProtocol", (cls,), {"limits": limits})

    # -- timers --------------------------------------------------------------------------

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        if self._in_body and self.flow.read_paused:
            # We stopped reading (the application is busy): not the client's fault.
            self._arm(self.limits.http_body_timeout)
            return
        what = "request headers" if self._in_head else "request body"
        log.warning(
            "HTTP client %s: no complete %s within %g s; connection closed",
            _peer(self.client),
            what,
            self.limits.http_header_timeout if self._in_head else self.limits.http_body_timeout,
        )
        self.transport.close()

    # -- protocol events -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.limits.http_header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._in_head:
            if self._timer is None:  # the first byte of a further request on this connection
                self._arm(self.limits.http_header_timeout)
            # httptools buffers a header line whole before on_header sees it: count what came
            # before this read too (a read may end the head and start the body, so this one
            # is not counted yet), so one endless line is refused as well.
            if self._head_bytes > self.limits.http_max_header_bytes:
                self._refuse_head()
                return
            self._head_bytes += len(data)
        elif self._in_body:
            self._arm(self.limits.http_body_timeout)
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._counted = 0

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def _count(self, n: int) -> None:
        self._counted += n
        if self._counted > self.limits.http_max_header_bytes:
            self._refuse_head()
            raise _HeadTooLarge  # stops the parser; uvicorn's 400 is suppressed below

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._in_body = True
        self._head_bytes = 0
        self._arm(self.limits.http_body_timeout)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_body = False
        self._disarm()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Between requests uvicorn's keep-alive timeout applies; ours starts again with the
        # next request's first byte (data_received).
        self._in_head = True
        self._head_bytes = 0

    def send_400_response(self, msg: str) -> None:
        if not self._refused:
            super().send_400_response(msg)

    def _refuse_head(self) -> None:
        if self._refused:
            return
        self._refused = True
        log.warning(
            "HTTP client %s: request head over %d bytes; answered 431",
            _peer(self.client),
            self.limits.http_max_header_bytes,
        )
        msg = b"request header fields too large\n"
        self.transport.write(
            STATUS_LINE[431]
            + b"content-type: text/plain; charset=utf-8\r\n"
            + b"content-length: "
            + str(len(msg)).encode()
            + b"\r\nconnection: close\r\n\r\n"
            + msg
        )
        self._disarm()
        self.transport.close()


class _HeadTooLarge(Exception):
    """Raised from a parser callback to stop parsing a request head that is too long."""


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "?"
