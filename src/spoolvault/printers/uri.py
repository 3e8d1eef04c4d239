"""Printer device URIs: ipp://, ipps://, socket:// and lpd://, parsed once for every user
(the printer registry, delivery, health checks)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

DEFAULT_PORTS = {"ipp": 631, "ipps": 631, "socket": 9100, "lpd": 515}


@dataclass(frozen=True)
class PrinterUri:
    """A parsed printer URI. ``path`` is the HTTP request target for ipp/ipps (with any
    query), the queue name for lpd, and empty for socket."""

    uri: str
    scheme: str
    host: str
    port: int
    path: str

    @property
    def hostport(self) -> str:
        """host:port as in an HTTP Host field (IPv6 literals bracketed)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def tls(self) -> bool:
        return self.scheme == "ipps"

    @property
    def display(self) -> str:
        """The URI with its port spelled out, for messages and the audit log."""
        if self.scheme == "socket":
            return f"socket://{self.hostport}"
        if self.scheme == "lpd":
            return f"lpd://{self.hostport}/{self.path}"
        return f"{self.scheme}://{self.hostport}{self.path}"


def parse_printer_uri(uri: str) -> PrinterUri:
    """Parse ipp://, ipps://, socket:// or lpd:// URIs; ValueError says what is wrong."""
    if not isinstance(uri, str) or not uri or any(c.isspace() for c in uri):
        raise ValueError(f"printer URI {uri!r} is empty or contains white space")
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"printer URI {uri!r} is malformed: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        known = ", ".join(f"{s}://" for s in DEFAULT_PORTS)
        given = f"{parts.scheme}://" if parts.scheme else "(none)"
        raise ValueError(
            f"printer URI {uri!r}: unsupported scheme {given} (spoolvault delivers to {known})"
        )
    if not parts.hostname:
        raise ValueError(f"printer URI {uri!r} names no host")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"printer URI {uri!r}: user names and passwords in URIs are not supported")
    if parts.fragment:
        raise ValueError(f"printer URI {uri!r}: a printer URI has no #fragment")
    if port == 0:
        raise ValueError(f"printer URI {uri!r}: port 0 is not a port")
    port = port or DEFAULT_PORTS[scheme]
    if scheme in ("ipp", "ipps"):
        if not parts.path.startswith("/"):
            raise ValueError(
                f"printer URI {uri!r} names no printer path (for example {scheme}://"
                f"{parts.netloc}/ipp/print)"
            )
        path = parts.path + (f"?{parts.query}" if parts.query else "")
    elif scheme == "socket":
        if parts.path not in ("", "/") or parts.query:
            raise ValueError(
                f"printer URI {uri!r}: a socket:// URI is socket://host[:port], without a "
                f"path or options"
            )
        path = ""
    else:
        queue = unquote(parts.path[1:]) if parts.path.startswith("/") else ""
        if not queue or parts.query:
            raise ValueError(
                f"printer URI {uri!r}: an lpd:// URI is lpd://host[:port]/queue, without options"
            )
        if "/" in queue or any(c.isspace() or not c.isprintable() for c in queue):
            raise ValueError(f"printer URI {uri!r}: the LPD queue name {queue!r} is not valid")
        path = queue
    return PrinterUri(uri, scheme, parts.hostname, port, path)
