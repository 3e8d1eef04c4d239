"""The Host header check (DNS rebinding), as cupsd's ``valid_host()`` (scheduler/client.c).

A page on a foreign site can make a browser send requests to this server by pointing a
name it controls at our address; the browser then sends that foreign name as ``Host``.
Every HTTP request (IPP included) whose Host is not one of this server's names gets
HTTP 400, so such a page reaches nothing and ``printer-uri-supported`` never echoes a
foreign host. Accepted, as cupsd accepts them:

- any IP address literal (a rebinding attack needs a name), with or without a port;
- ``localhost`` and names under ``.localhost``;
- this machine's host name, its fully qualified name and ``<host>.local`` (DNS-SD);
- the host of ``ProviderURL`` (print-provider.conf) and of the ``public_url`` setting;
- the names of ``ServerAlias`` (print-provider.conf, separated by spaces or commas;
  ``*`` accepts every name, as cupsd's ``ServerAlias *``).

A request without Host (HTTP/1.0) is accepted.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger(__name__)


def host_of(header: str) -> str:
    """The name or address of a Host header value, without port, brackets or final dot."""
    value = header.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    if value.count(":") == 1:
        value = value.split(":", 1)[0]
    return value.rstrip(".")


def own_names(aliases: Iterable[str] = ()) -> set[str]:
    """This machine's names (module docstring) and the aliases given."""
    names = {"localhost"}
    for name in (socket.gethostname(), socket.getfqdn()):
        name = name.lower().rstrip(".")
        if name:
            names.add(name)
            names.add(f"{name.split('.', 1)[0]}.local")
            names.add(name.split(".", 1)[0])
    names.update(a.lower().rstrip(".") for a in aliases if a)
    return names


def parse_aliases(text: str) -> list[str]:
    """ServerAlias: names separated by spaces or commas (URLs are taken by their host)."""
    out = []
    for item in text.replace(",", " ").split():
        out.append(urlsplit(item).hostname or item if "://" in item else item)
    return out


def valid_host(host: str, names: set[str]) -> bool:
    if not host or "*" in names or host in names or host.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


class HostGuard:
    """ASGI: HTTP 400 for a Host that is not this server's (module docstring)."""

    def __init__(
        self, app: ASGIApp, names: set[str], extra: Callable[[], Iterable[str]] | None = None
    ) -> None:
        self.app = app
        self.names = names
        self.extra = extra  # names known only at run time (the public_url setting)

    def allowed(self, host: str) -> bool:
        if valid_host(host, self.names):
            return True
        if self.extra is not None:
            try:
                return host in {n.lower().rstrip(".") for n in self.extra()}
            except Exception:
                log.exception("cannot read the extra server names")
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            raw = next((v for k, v in scope.get("headers", ()) if k == b"host"), None)
            if raw is not None:
                host = host_of(raw.decode("latin-1"))
                if not self.allowed(host):
                    log.info("request with a foreign Host %r refused (DNS rebinding?)", host[:80])
                    response = PlainTextResponse(
                        "Bad Request: the Host header does not name this server "
                        "(add the name to ServerAlias in print-provider.conf)\n",
                        400,
                    )
                    if scope["type"] == "http":
                        await response(scope, receive, send)
                    else:
                        await send({"type": "websocket.close", "code": 1008})
                    return
        await self.app(scope, receive, send)


_DEFAULT_PORTS = {"ipp": 631, "ipps": 631, "http": 80, "https": 443}


def points_here(uri: str, server: tuple[str, int] | None) -> bool:
    """Whether a printer URI names this server's own listener (``server``: the address
    and port the request that adds it came in on): a queue whose printer is itself."""
    if server is None:
        return False
    try:
        parts = urlsplit(uri)
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme.lower())
    except ValueError:
        return False
    if parts.scheme.lower() not in _DEFAULT_PORTS or port != server[1] or not parts.hostname:
        return False
    host = parts.hostname.lower().rstrip(".")
    if host in own_names() or host.endswith(".localhost") or host == server[0]:
        return True
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return False
    if addr.is_loopback or addr.is_unspecified:
        return True
    try:
        local = {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None)}
    except OSError:
        local = set()
    return str(addr) in local
