"""HOST:PORT arguments of the command line (``--http``, ``--raw``, ``--lpd``), and
whether two client addresses are one host."""

from __future__ import annotations

import contextlib
import ipaddress
from dataclasses import dataclass

from spoolvault.errors import ConfigError


@dataclass(frozen=True)
class HostPort:
    """A listening address. ``port`` 0 asks the OS for a free port (tests use it)."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def url(self, scheme: str = "http") -> str:
        return f"{scheme}://{self}"


def parse_hostport(value: str, option: str, *, allow_off: bool = False) -> HostPort | None:
    """Parse ``HOST:PORT``, ``[IPv6]:PORT`` or (when allowed) ``off``."""
    if allow_off and value.strip().lower() == "off":
        return None
    text = value.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ConfigError(f"{option} {value!r}: expected [IPV6]:PORT")
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or ":" in host:
            hint = " or off" if allow_off else ""
            raise ConfigError(f"{option} {value!r}: expected HOST:PORT{hint}")
    if not host:
        raise ConfigError(f"{option} {value!r}: the host is missing (use 0.0.0.0 for all)")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"{option} {value!r}: the port must be a number from 0 to 65535")
    return HostPort(host, int(port_text))


def same_address(a: str | None, b: str | None) -> bool:
    """Whether two client addresses are one host (IPv4-mapped IPv6 as IPv4)."""
    if not a or not b:
        return False
    return _normal(a) == _normal(b)


def _normal(host: str) -> str:
    with contextlib.suppress(ValueError):
        addr = ipaddress.ip_address(host.split("%", 1)[0])
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(addr)
    return host.lower()
