"""DNS-SD advertisement of the hold queues over multicast DNS (RFC 6762, RFC 6763).

Each queue is one service instance, ``spoolvault <queue> @ <host>``, of type ``_ipp._tcp``,
or ``_ipps._tcp`` when the port speaks TLS, with the ``_print`` subtype that IPP
Everywhere clients browse (PWG 5100.14 §4.2) and the ``_universal`` subtype that
AirPrint clients browse, and a TXT record (PWG 5100.14 §4.2, Bonjour Printing
Specification) built from the queue's own Get-Printer-Attributes answer, so that the
two cannot disagree. See docs/discovery.md.

CUPS and pappl advertise ``_ipp._tcp`` and ``_ipps._tcp`` on one port because their port
takes both plain HTTP and TLS. Ours takes one or the other (``--tls``), so only the type
that works on it is advertised: a client that picks ``_ipp._tcp`` must not be sent to a
TLS-only port.

Which links hear it follows the ``--http`` address (see `_plan`): a wildcard means every
interface with every non-loopback address; a loopback address means the loopback
interface only (local clients, e.g. CUPS through avahi-daemon, still find the queue;
nothing goes to the network); any other address means the interface that holds it.

The SRV records point at a host name of our own, ``<host>-spoolvault.local.``: the
machine's own ``<host>.local.`` usually belongs to avahi-daemon or mDNSResponder, and
publishing other addresses under it would make that responder see a conflict and rename
the machine (RFC 6762 §9).

python-zeroconf answers for one service type per registered instance, and its subtype
support (a ``ServiceInfo`` whose type is ``_print._sub._ipp._tcp``) loses the plain type
(python-zeroconf issues #304, #1287). So each instance is registered under its plain
type, and its subtype pointers (RFC 6763 §7.1) are added beside it in zeroconf's
registry, which answers queries for them, and are announced and withdrawn here.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import socket
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import ifaddr
from zeroconf import InterfaceChoice, IPVersion, ServiceInfo
from zeroconf._protocol.outgoing import DNSOutgoing  # exported by zeroconf, but not in __all__
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from spoolvault.ipp import attributes as A
from spoolvault.ipp.constants import PrinterState

log = logging.getLogger(__name__)

IPP = "_ipp._tcp.local."
IPPS = "_ipps._tcp.local."
# PWG 5100.14 §4.2: IPP Everywhere clients browse _print; AirPrint clients _universal.
SUBTYPES = ("_print", "_universal")
PRODUCT = "(spoolvault)"  # Bonjour Printing Specification: the PostScript product string
TLS_VERSION = "1.2"  # the version pappl advertises; Python's ssl takes 1.2 and 1.3
KIND = "document"  # printer-kind (PWG 5100.14 §4.2)
# pdl lists these first, so that a cut (255 bytes) drops legacy formats, not these.
PDL_FIRST = ("application/pdf", "image/urf", "image/pwg-raster", "image/jpeg")
# PWG 5100.14 §4.2 PaperMax: the widest media, in hundredths of millimetres.
PAPER_MAX = ((21000, "<legal-A4"), (29700, "legal-A4"), (42000, "tabloid-A3"), (59400, "isoC-A2"))

MDNS_PORT = 5353
IP_MULTICAST_ALL = 49  # Linux <linux/in.h>
IPV6_MULTICAST_ALL = 29  # Linux <linux/in6.h>
RESPONSE_FLAGS = 0x8400  # RFC 1035 §4.1.1: QR (a response) and AA (authoritative)
TXT_MAX = 255  # RFC 6763 §6.1: one key=value string of a TXT record
LABEL_MAX = 63  # RFC 1035 §2.3.4: the instance name is one DNS label
HOST_SUFFIX = "-spoolvault"
REGISTER_TIMEOUT = 20.0  # seconds for probing and announcing every instance
ANNOUNCEMENTS = 3  # like zeroconf's own, for the subtype pointers
ANNOUNCE_INTERVAL = 0.225
GOODBYES = 3
GOODBYE_INTERVAL = 0.125


def _fit(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes, never inside a character."""
    data = text.encode()
    return text if len(data) <= limit else data[:limit].decode("utf-8", "ignore")


def host_label() -> str:
    """This machine's name as one DNS label: letters, digits and hyphens."""
    first = socket.gethostname().split(".")[0]
    label = "".join(c if c.isascii() and (c.isalnum() or c == "-") else "-" for c in first)
    return label[: LABEL_MAX - len(HOST_SUFFIX)].strip("-") or "localhost"


def instance_name(queue: str, host: str) -> str:
    """``spoolvault <queue> @ <host>``, made to fit one DNS label by shortening the queue."""
    # python-zeroconf writes names dot by dot without escaping: a dot would split the label.
    queue, host = queue.replace(".", "-"), host.replace(".", "-")
    tail = f" @ {host}"
    head = _fit(f"spoolvault {queue}", max(LABEL_MAX - len(tail.encode()), len("spoolvault")))
    return _fit(head.rstrip() + tail, LABEL_MAX)


def pdl(formats: Iterable[str]) -> str:
    """The ``pdl`` value: whole format names, the most useful first, in one TXT string.

    application/octet-stream (auto-detect) is not a format a client can choose; pappl
    leaves it out too.
    """
    wanted = [f for f in dict.fromkeys(formats) if f != "application/octet-stream"]
    wanted.sort(key=lambda f: PDL_FIRST.index(f) if f in PDL_FIRST else len(PDL_FIRST))
    return _join_whole("pdl", wanted)


def _join_whole(key: str, items: Iterable[str]) -> str:
    """A comma list of whole items that fits ``key=`` in one TXT string."""
    room = TXT_MAX - len(key) - 1
    kept: list[str] = []
    for item in items:
        if len(",".join([*kept, item]).encode()) <= room:
            kept.append(item)
    return ",".join(kept)


def _paper_max(widths: Iterable[int]) -> str:
    """The PaperMax keyword for the widest media (PWG 5100.14 §4.2)."""
    widest = max(widths, default=0)
    for limit, name in PAPER_MAX:
        if widest < limit:
            return name
    return ">isoC-A2"


def txt_record(queue: A.Queue, *, tls: bool, admin_url: str, auth: bool = False) -> dict[str, str]:
    """The TXT keys of one queue (PWG 5100.14 §4.2), from its printer attributes; ``auth``:
    printing needs a user name and password (ipp_authentication_required)."""
    now = datetime.now(UTC)
    scheme = "ipps" if tls else "ipp"
    uri = f"{scheme}://localhost/printers/{queue.name}"
    attrs = A.printer_attributes(
        queue,
        uris=[(uri, "tls" if tls else "none", "basic" if auth else "none")],
        state=PrinterState.IDLE,
        queued=0,
        up_since=now,
        now=now,
    )

    def values(name: str) -> list[object]:
        attr = attrs.get(name)
        return [v.value for v in attr.values] if attr is not None else []

    formats = [str(v) for v in values("document-format-supported")]
    uuid = str((values("printer-uuid") or [queue.printer_uuid()])[0])
    urf = [str(v) for v in values("urf-supported")]
    duplex = any(str(s).startswith("two-sided") for s in values("sides-supported"))
    txt = {
        "txtvers": "1",  # RFC 6763 §6.7: first
        "qtotal": "1",
        "rp": A.resource_path(queue.name),
        "ty": str((values("printer-make-and-model") or ["spoolvault"])[0]),
        "adminurl": admin_url,
        "note": str((values("printer-location") or [""])[0]),
        "priority": "0",
        "product": PRODUCT,
        "pdl": pdl(formats),
        "UUID": uuid.removeprefix("urn:uuid:"),
        "Color": "T" if True in values("color-supported") else "F",
        "Duplex": "T" if duplex else "F",
        "PaperMax": _paper_max(x for x, _ in A.MEDIA.values()),
        "kind": KIND,
    }
    if "image/urf" in txt["pdl"].split(",") and urf:
        # Bonjour Printing Specification: URF is required with image/urf in pdl; its
        # values are the queue's urf-supported.
        txt["URF"] = _join_whole("URF", urf)
    if tls:
        txt["TLS"] = TLS_VERSION
    if auth:  # Bonjour Printing Specification: clients ask for credentials up front
        txt["air"] = "username,password"
    out: dict[str, str] = {}
    for key, value in txt.items():
        room = TXT_MAX - len(key) - 1
        if len(value.encode()) <= room:
            out[key] = value
        elif key in ("ty", "note"):  # text for people: a cut is still useful
            out[key] = _fit(value, room)
        else:
            log.warning("DNS-SD: TXT key %s of queue %s is too long and left out", key, queue.name)
    return out


@dataclass(frozen=True)
class _Plan:
    """Where to advertise: the mDNS interfaces and the addresses the A/AAAA records give."""

    interfaces: InterfaceChoice | list[str | int]
    ip_version: IPVersion | None
    addresses: list[str]
    scope: str  # for the log line


class _Unavailable(Exception):
    """Why mDNS cannot be used here, in words for the operator."""


def _adapter_addresses() -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    out = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            text = ip.ip[0] if isinstance(ip.ip, tuple) else ip.ip
            out.append(ipaddress.ip_address(text))
    return list(dict.fromkeys(out))


def _network_addresses(*, v6: bool) -> list[str]:
    """This machine's addresses worth giving to other hosts on any link."""
    return [
        str(a)
        for a in _adapter_addresses()
        if not a.is_loopback and (a.version == 4 or (v6 and not a.is_link_local))
    ]


async def _plan(host: str | None) -> _Plan:
    """Which interfaces and addresses to advertise for a server listening on ``host``."""
    if host in (None, "", "0.0.0.0", "::", "*"):  # noqa: S104 (a wildcard, not a bind)
        v6 = host == "::"
        addresses = _network_addresses(v6=v6)
        if addresses:
            version = IPVersion.All if v6 else IPVersion.V4Only
            return _Plan(InterfaceChoice.All, version, addresses, "all interfaces")
        host = "localhost"  # a machine with no network: as if listening on loopback
    assert host is not None
    try:
        ips = [ipaddress.ip_address(host.strip("[]").split("%")[0])]
    except ValueError:  # a name: what it resolves to, without blocking the loop
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
        ips = list(dict.fromkeys(ipaddress.ip_address(i[4][0]) for i in infos))
    if all(ip.is_loopback for ip in ips):
        # python-zeroconf cannot use ::1 for mDNS; IPv4 loopback carries AAAA ::1 as well.
        return _Plan(["127.0.0.1"], IPVersion.V4Only, [str(ip) for ip in ips], "loopback only")
    ips = [ip for ip in ips if not ip.is_loopback]
    local = set(_adapter_addresses())
    missing = [str(ip) for ip in ips if ip not in local]
    if missing:
        raise _Unavailable(f"{', '.join(missing)} is not an address of this machine")
    texts = [str(ip) for ip in ips]
    interfaces: list[str | int] = [*texts]
    return _Plan(interfaces, None, texts, ", ".join(texts))


def _check_mdns_port() -> None:
    """Raise if UDP port 5353 is held by a responder that does not share it.

    Checked before python-zeroconf tries, as its own failed bind leaves a socket unclosed.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        with contextlib.suppress(AttributeError, OSError):  # not on every platform
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            probe.bind(("", MDNS_PORT))
        except OSError as exc:
            why = (
                "another mDNS responder holds it and does not share it"
                if exc.errno == errno.EADDRINUSE
                else exc.strerror
            )
            raise _Unavailable(f"cannot use UDP port {MDNS_PORT} for mDNS: {why}") from None


def _hear_only_joined_groups(zc: AsyncZeroconf) -> None:
    """Make the shared port-5353 socket hear only the groups joined on our interfaces.

    By default (IP_MULTICAST_ALL) Linux hands a socket every group any program joined
    on any interface: a loopback-only advertiser would hear, and answer, the LAN's
    queries whenever another responder runs.
    """
    if not sys.platform.startswith("linux"):
        return
    for reader in zc.zeroconf.engine.readers:
        sock = reader.sock
        level, option = (
            (socket.IPPROTO_IPV6, IPV6_MULTICAST_ALL)
            if sock.family == socket.AF_INET6
            else (socket.IPPROTO_IP, IP_MULTICAST_ALL)
        )
        try:
            sock.setsockopt(level, option, 0)
        except OSError as exc:  # kernels before 4.20 lack the IPv6 option
            log.debug("DNS-SD: cannot limit %s to its own groups: %s", sock, exc)


def _pointers(subtypes: Iterable[ServiceInfo], ttl: int | None) -> DNSOutgoing:
    """A response that announces (ttl None) or withdraws (ttl 0) subtype pointers."""
    out = DNSOutgoing(RESPONSE_FLAGS)
    for info in subtypes:
        out.add_answer_at_time(info.dns_pointer(override_ttl=ttl), 0)
    return out


class Advertiser:
    """Advertises the hold queues with DNS-SD over mDNS while the server runs.

    `start` returns at once: probing and announcing (RFC 6762 §8, one to two seconds) go
    on in a task. Nothing here raises to the server: a failure is a WARNING and the
    server runs on without discovery. ``names`` maps each queue to its instance name,
    which probing may have changed (``… @ host-2``) when another host had it.
    """

    def __init__(
        self,
        *,
        queues: Sequence[A.Queue],
        port: int,
        tls: bool,
        admin_url: str | None = None,
        host: str | None = None,
        auth: bool = False,
    ) -> None:
        self.queues = list(queues)
        self.port = port
        self.tls = tls
        self.auth = auth
        self.host = host
        self.service_type = IPPS if tls else IPP
        label = host_label()
        self.server = f"{label}{HOST_SUFFIX}.local."
        scheme = "https" if tls else "http"
        self.admin_url = admin_url or f"{scheme}://{self.server.rstrip('.')}:{port}/"
        self.names = {q.name: instance_name(q.name, label) for q in self.queues}
        self._zc: AsyncZeroconf | None = None
        self._task: asyncio.Task[None] | None = None
        self._subtypes: list[ServiceInfo] = []  # in zeroconf's registry, to withdraw
        self._announcing: list[asyncio.Future[object]] = []  # zeroconf's announcement tasks
        self._closed = False

    def __repr__(self) -> str:
        return f"Advertiser(queues={list(self.names)}, port={self.port}, tls={self.tls})"

    async def start(self) -> None:
        """Open mDNS and register every queue in the background; never raises."""
        if self._zc is not None:
            return
        try:
            plan = await _plan(self.host)
            if self._closed:  # closed before, or while the host name was being resolved
                return
            _check_mdns_port()
            self._zc = AsyncZeroconf(interfaces=plan.interfaces, ip_version=plan.ip_version)
        except Exception as exc:
            # No multicast, port 5353 held by a responder that does not share it, a bad host.
            log.warning("DNS-SD is off, the queues are not advertised: %s", exc)
            return
        self._task = asyncio.create_task(self._register(plan), name="dnssd-register")

    async def close(self) -> None:
        """Withdraw every advertisement (goodbye packets, RFC 6762 §10.1) and close mDNS."""
        self._closed = True
        zc, self._zc = self._zc, None
        if zc is None:
            return
        for pending in [self._task, *self._announcing]:
            if pending is not None:
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pending
        try:
            await asyncio.gather(self._withdraw_subtypes(zc), zc.async_unregister_all_services())
        except Exception as exc:  # a socket gone bad must not stop the shutdown
            log.warning("DNS-SD: goodbye packets not sent: %s", exc)
        finally:
            await zc.async_close()

    async def _register(self, plan: _Plan) -> None:
        assert self._zc is not None
        zc = self._zc
        try:
            async with asyncio.timeout(REGISTER_TIMEOUT):
                await zc.zeroconf.async_wait_for_start()
                _hear_only_joined_groups(zc)
                if not zc.zeroconf.engine.senders:
                    log.warning(
                        "DNS-SD is off: no interface (%s) could join the mDNS group", plan.scope
                    )
                    return
                results = await asyncio.gather(
                    *(self._register_queue(zc, q, plan.addresses) for q in self.queues),
                    return_exceptions=True,
                )
                done: list[str] = []
                for queue, result in zip(self.queues, results, strict=True):
                    if isinstance(result, BaseException):
                        if isinstance(result, asyncio.CancelledError):
                            raise result
                        log.warning("DNS-SD: queue %s is not advertised: %r", queue.name, result)
                    else:
                        await result
                        done.append(self.names[queue.name])
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("DNS-SD: the queues could not be advertised: %r", exc)
            return
        if not done:
            return
        log.info(
            "DNS-SD: advertising %s as %s (%s) on port %d, %s, addresses %s",
            ", ".join(repr(n) for n in done),
            self.service_type.removesuffix(".local."),
            ", ".join(SUBTYPES),
            self.port,
            plan.scope,
            ", ".join(plan.addresses),
        )

    async def _register_queue(
        self, zc: AsyncZeroconf, queue: A.Queue, addresses: list[str]
    ) -> asyncio.Future[object]:
        """Probe and register one queue; returns what finishes its announcements."""
        info = AsyncServiceInfo(
            self.service_type,
            f"{self.names[queue.name]}.{self.service_type}",
            port=self.port,
            properties=txt_record(queue, tls=self.tls, admin_url=self.admin_url, auth=self.auth),
            server=self.server,
            parsed_addresses=addresses,
        )
        announced = asyncio.ensure_future(
            await zc.async_register_service(info, allow_name_change=True)
        )
        self._announcing.append(announced)
        self.names[queue.name] = info.name.removesuffix(f".{self.service_type}")
        subs = [
            ServiceInfo(
                f"{sub}._sub.{self.service_type}",
                info.name,
                port=info.port,
                properties=info.text,
                server=info.server,
                addresses=info.addresses_by_version(IPVersion.All),
            )
            for sub in SUBTYPES
        ]
        registry = zc.zeroconf.registry
        for sub in subs:
            registry.types.setdefault(sub.type.lower(), {})[sub.key] = sub
            self._subtypes.append(sub)
        for i in range(ANNOUNCEMENTS):
            if i:
                await asyncio.sleep(ANNOUNCE_INTERVAL)
            zc.zeroconf.async_send(_pointers(subs, None))
        return announced

    async def _withdraw_subtypes(self, zc: AsyncZeroconf) -> None:
        subs, self._subtypes = self._subtypes, []
        if not subs:
            return
        types = zc.zeroconf.registry.types
        for sub in subs:
            bucket = types.get(sub.type.lower(), {})
            bucket.pop(sub.key, None)
            if not bucket:
                types.pop(sub.type.lower(), None)
        for i in range(GOODBYES):
            if i:
                await asyncio.sleep(GOODBYE_INTERVAL)
            zc.zeroconf.async_send(_pointers(subs, 0))
