"""DNS-SD advertisement of the hold queues, found by real mDNS browsers.

The Advertiser runs in-process on the loopback interface (what `--http 127.0.0.1:PORT`
gives), and is looked for by a separate python-zeroconf browser and by Debian's
`avahi-browse` through an avahi-daemon that this module starts on loopback only. The
wildcard mode (`--http 0.0.0.0:PORT`) is checked between two network namespaces joined by
a veth pair, so nothing of it reaches the machine's real network either.

Multicast on loopback needs no set-up on Linux: lo has no MULTICAST flag and no multicast
route, but a socket whose IP_MULTICAST_IF is 127.0.0.1 sends to 224.0.0.251 through lo
and the kernel loops it back to every member of the group on lo.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from zeroconf import IPVersion, ServiceStateChange
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from harness.ippeve import avahi_running
from spoolvault.discovery import dnssd
from spoolvault.discovery.dnssd import IPP, IPPS, Advertiser
from spoolvault.ipp import attributes as A
from spoolvault.ipp.constants import PrinterState

PORT = 48631  # advertised only, never connected to


def _queue() -> A.Queue:
    """A queue with a name no other advertisement on this machine has."""
    return A.Queue(f"t{secrets.token_hex(4)}", "test queue", location="Room 101")


async def _until(pred: Callable[[], bool], timeout: float, what: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what()}")
        await asyncio.sleep(0.05)


def _check_txt(txt: dict[str, str], queue: A.Queue, *, tls: bool) -> None:
    """The PWG 5100.14 §4.2 keys, with the values of the queue's printer attributes."""
    now = datetime.now(UTC)
    attrs = A.printer_attributes(
        queue,
        uris=[("ipp://h/", "none", "none")],
        state=PrinterState.IDLE,
        queued=0,
        up_since=now,
        now=now,
    )

    def values(name: str) -> list[object]:
        attr = attrs.get(name)
        assert attr is not None, name
        return [v.value for v in attr.values]

    assert txt["txtvers"] == "1"
    assert txt["qtotal"] == "1"
    assert txt["rp"] == ("ipp/print" if queue.name == "secure" else f"ipp/print/{queue.name}")
    assert txt["ty"] == values("printer-make-and-model")[0]
    assert txt["product"] == "(spoolvault)"
    assert txt["note"] == values("printer-location")[0] == "Room 101"
    assert txt["priority"] == "0"
    assert txt["kind"] == "document"
    assert txt["UUID"] == queue.printer_uuid().removeprefix("urn:uuid:")
    assert txt["Color"] == ("T" if values("color-supported") == [True] else "F")
    two_sided = any(str(v).startswith("two-sided") for v in values("sides-supported"))
    assert txt["Duplex"] == ("T" if two_sided else "F")
    formats = values("document-format-supported")
    pdl = txt["pdl"].split(",")
    assert set(pdl) == set(formats) - {"application/octet-stream"}
    assert pdl[0] == "application/pdf"
    if "image/urf" in pdl:  # then URF must say what Apple raster the queue takes
        assert {"V1.4", "SRGB24", "W8", "RS300-600", "DM1"} <= set(txt["URF"].split(","))
        assert txt["URF"].split(",") == values("urf-supported")  # and IPP says the same
    else:
        assert "URF" not in txt
        assert attrs.get("urf-supported") is None
    if "image/pwg-raster" in pdl:  # PWG 5100.14 §5.4: the raster a client may send
        assert {r.x for r in values("pwg-raster-document-resolution-supported")} == {300, 600}  # type: ignore[attr-defined]
        assert values("pwg-raster-document-type-supported") == ["sgray_8", "srgb_8"]
        assert values("pwg-raster-document-sheet-back") == ["normal"]
    scheme = "https" if tls else "http"
    assert re.fullmatch(rf"{scheme}://[A-Za-z0-9-]+-spoolvault\.local:{PORT}/", txt["adminurl"])
    if tls:
        assert txt["TLS"] == "1.2"
    else:
        assert "TLS" not in txt
    assert all(len(f"{k}={v}".encode()) <= 255 for k, v in txt.items())


class _Sniffer:
    """Every frame on the machine's interfaces other than lo that carries ``needle``.

    Proves that a loopback-only advertisement stays on loopback. Needs CAP_NET_RAW
    (root); without it, `leaks` is None and nothing is checked.
    """

    def __init__(self, needle: bytes) -> None:
        self.needle = needle
        self.leaks: list[str] | None = None
        self.on_loopback = 0  # frames with the needle seen on lo: the sniffer works
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        try:
            self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
        except (AttributeError, OSError):  # not Linux, or no CAP_NET_RAW
            return
        self._sock.settimeout(0.1)
        self.leaks = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        assert self.leaks is not None
        while not self._stop.is_set():
            try:
                data, addr = self._sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            if self.needle in data:
                if addr[0] == "lo":
                    self.on_loopback += 1
                else:
                    self.leaks.append(addr[0])

    def stop(self) -> list[str] | None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(5)
            self._sock.close()
        return self.leaks


# -- pure functions ----------------------------------------------------------------


def test_instance_name_is_one_label_of_at_most_63_bytes() -> None:
    assert dnssd.instance_name("secure", "printsrv") == "spoolvault secure @ printsrv"
    assert dnssd.instance_name("floor.2", "h") == "spoolvault floor-2 @ h"  # no label split
    long = dnssd.instance_name("é" * 60, "printsrv")
    assert len(long.encode()) <= 63
    assert long.endswith(" @ printsrv")
    long.encode().decode()  # never cut inside a character


def test_pdl_keeps_whole_formats_and_fits_one_txt_string() -> None:
    formats = ["application/octet-stream", "text/plain", "image/urf", "application/pdf"]
    assert dnssd.pdl(formats) == "application/pdf,image/urf,text/plain"
    many = [f"application/vnd.example-{i:03d}" for i in range(40)] + ["image/pwg-raster"]
    value = dnssd.pdl(many)
    assert len(f"pdl={value}".encode()) <= 255
    assert value.startswith("image/pwg-raster,")  # the IPP Everywhere format survives the cut
    assert set(value.split(",")) <= set(many)


def test_txt_record_mirrors_the_queue_attributes() -> None:
    queue = _queue()
    admin = f"http://h-spoolvault.local:{PORT}/"
    _check_txt(dnssd.txt_record(queue, tls=False, admin_url=admin), queue, tls=False)
    admin = f"https://h-spoolvault.local:{PORT}/"
    _check_txt(dnssd.txt_record(queue, tls=True, admin_url=admin), queue, tls=True)
    assert "air" not in dnssd.txt_record(queue, tls=True, admin_url=admin)
    # ipp_authentication_required: clients learn that they must ask for a password.
    assert dnssd.txt_record(queue, tls=True, admin_url=admin, auth=True)["air"] == (
        "username,password"
    )
    plain = A.Queue("q", "info", location="Room 101", formats=("application/pdf",))
    _check_txt(dnssd.txt_record(plain, tls=True, admin_url=admin), plain, tls=True)
    long = A.Queue("q", "info", location="🖨" * 127)  # 508 bytes of UTF-8
    note = dnssd.txt_record(long, tls=False, admin_url=admin)["note"]
    assert len(f"note={note}".encode()) <= 255
    assert set(note) == {"🖨"}


@pytest.mark.parametrize(
    ("host", "scope", "addresses"),
    [
        ("127.0.0.1", "loopback only", ["127.0.0.1"]),
        ("::1", "loopback only", ["::1"]),
        ("[::1]", "loopback only", ["::1"]),
    ],
)
def test_loopback_host_advertises_on_loopback_only(
    host: str, scope: str, addresses: list[str]
) -> None:
    plan = asyncio.run(dnssd._plan(host))
    assert (plan.interfaces, plan.scope, plan.addresses) == (["127.0.0.1"], scope, addresses)


def test_wildcard_host_advertises_every_network_address() -> None:
    plan = asyncio.run(dnssd._plan("0.0.0.0"))
    if plan.scope == "loopback only":
        assert plan.addresses == ["127.0.0.1"]  # a machine with no network
        return
    assert plan.scope == "all interfaces"
    assert plan.addresses
    assert all(":" not in a and not a.startswith("127.") for a in plan.addresses)


async def _start_and_close(host: str) -> None:
    adv = Advertiser(queues=[_queue()], port=PORT, tls=False, host=host)
    await adv.start()
    await adv.close()


def test_a_host_that_is_not_ours_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="spoolvault.discovery")
    asyncio.run(_start_and_close("198.51.100.7"))  # TEST-NET-2: no interface of ours has it
    assert [r.getMessage() for r in caplog.records] == [
        "DNS-SD is off, the queues are not advertised: "
        "198.51.100.7 is not an address of this machine"
    ]


def test_port_5353_held_exclusively_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    """A responder that binds port 5353 without SO_REUSEADDR: the server runs on."""
    caplog.set_level(logging.WARNING)
    blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        try:
            blocker.bind(("0.0.0.0", 5353))
        except OSError as exc:
            assert exc.errno == errno.EADDRINUSE
            pytest.skip("an mDNS responder already holds port 5353; cannot hold it exclusively")
        asyncio.run(_start_and_close("127.0.0.1"))
    finally:
        blocker.close()
    assert [r.getMessage() for r in caplog.records] == [
        "DNS-SD is off, the queues are not advertised: cannot use UDP port 5353 for mDNS: "
        "another mDNS responder holds it and does not share it"
    ]


# -- found by python-zeroconf --------------------------------------------------------


def test_found_by_zeroconf_browser_with_subtypes_txt_and_goodbye() -> None:
    plain, secure = _queue(), _queue()
    sniffer = _Sniffer(plain.name.encode())

    async def scenario() -> None:
        browser_zc = AsyncZeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
        events: list[tuple[str, str, ServiceStateChange]] = []

        def on_change(
            zeroconf: object, service_type: str, name: str, state_change: ServiceStateChange
        ) -> None:
            events.append((service_type, name, state_change))

        types = [IPP, IPPS, *(f"{sub}._sub.{t}" for t in (IPP, IPPS) for sub in dnssd.SUBTYPES)]
        browser = AsyncServiceBrowser(browser_zc.zeroconf, types, handlers=[on_change])
        adv = Advertiser(queues=[plain], port=PORT, tls=False, host="127.0.0.1")
        adv_tls = Advertiser(queues=[secure], port=PORT, tls=True, host="127.0.0.1")
        try:
            await adv.start()
            await adv_tls.start()
            name = f"{adv.names[plain.name]}.{IPP}"
            name_tls = f"{adv_tls.names[secure.name]}.{IPPS}"
            assert name.startswith(f"spoolvault {plain.name} @ ")
            want = {(t, name) for t in (IPP, *(f"{s}._sub.{IPP}" for s in dnssd.SUBTYPES))}
            want |= {(t, name_tls) for t in (IPPS, *(f"{s}._sub.{IPPS}" for s in dnssd.SUBTYPES))}

            def found() -> set[tuple[str, str]]:
                return {(t, n) for t, n, s in events if s is ServiceStateChange.Added}

            await _until(lambda: want <= found(), 10, lambda: f"{sorted(want - found())}")

            for type_, full, queue, tls in (
                (IPP, name, plain, False),
                (IPPS, name_tls, secure, True),
            ):
                info = AsyncServiceInfo(type_, full)
                assert await info.async_request(browser_zc.zeroconf, 3000)
                assert info.port == PORT
                assert info.parsed_addresses() == ["127.0.0.1"]
                assert info.server is not None and info.server.endswith("-spoolvault.local.")
                txt = {k: v or "" for k, v in info.decoded_properties.items()}
                _check_txt(txt, queue, tls=tls)
                assert next(iter(txt)) == "txtvers"  # RFC 6763 §6.7

            # Loopback only: the port-5353 socket does not hear groups joined elsewhere.
            assert adv._zc is not None
            sockets = [r.sock for r in adv._zc.zeroconf.engine.readers]
            assert sockets
            for sock in sockets:
                assert sock.getsockopt(socket.IPPROTO_IP, dnssd.IP_MULTICAST_ALL) == 0

            # --tls: the port speaks only TLS, so there is no plain _ipp._tcp instance.
            assert not any(n == f"{adv_tls.names[secure.name]}.{IPP}" for _, n, _ in events)
            assert (
                await browser_zc.async_get_service_info(IPP, name_tls.replace(IPPS, IPP), 500)
                is None
            )
        finally:
            await adv.close()
            await adv_tls.close()

        def removed() -> set[tuple[str, str]]:
            return {(t, n) for t, n, s in events if s is ServiceStateChange.Removed}

        try:
            await _until(
                lambda: want <= removed(), 5, lambda: f"goodbyes for {sorted(want - removed())}"
            )
        finally:
            await browser.async_cancel()
            await browser_zc.async_close()

    try:
        asyncio.run(scenario())
    finally:
        leaks = sniffer.stop()
    if leaks is not None:  # root: the frames were watched
        assert sniffer.on_loopback > 0
        assert leaks == [], f"the loopback-only advertisement was sent on {sorted(set(leaks))}"


# -- found by avahi-browse through avahi-daemon --------------------------------------

AVAHI_CONF = """\
[server]
use-ipv4=yes
use-ipv6=no
allow-interfaces=lo
enable-dbus=yes
[wide-area]
enable-wide-area=no
[publish]
disable-publishing=yes
[reflector]
enable-reflector=no
"""


def _bus_running() -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect("/run/dbus/system_bus_socket")
        except OSError:
            return False
    return True


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def _stop_bus(pid: int) -> None:
    """Stop the system bus we started, and remove the files it leaves (they stop a restart)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if not _bus_running():
        for stale in ("/run/dbus/pid", "/run/dbus/system_bus_socket"):
            Path(stale).unlink(missing_ok=True)


@pytest.fixture(scope="module")
def avahi(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """An avahi-daemon to browse through: the running one, or one started on lo only."""
    missing = [c for c in ("avahi-browse", "avahi-daemon", "dbus-daemon") if not shutil.which(c)]
    if missing:
        pytest.skip(
            f"{', '.join(missing)} not installed (Debian packages avahi-utils, avahi-daemon, dbus)"
        )
    if avahi_running():
        yield  # a running daemon; avahi uses lo unless its allow-interfaces leaves lo out
        return
    if os.geteuid() != 0:
        pytest.skip("avahi-daemon is not running, and starting it needs root")
    dbus_pid = None
    if not _bus_running():
        for stale in ("/run/dbus/pid", "/run/dbus/system_bus_socket"):
            Path(stale).unlink(missing_ok=True)
        Path("/run/dbus").mkdir(parents=True, exist_ok=True)
        out = subprocess.run(
            ["dbus-daemon", "--system", "--fork", "--print-pid"],
            capture_output=True,
            text=True,
            check=False,
            timeout=10,
        )
        if out.returncode != 0:
            pytest.fail(f"dbus-daemon --system did not start: {out.stderr.strip()}")
        dbus_pid = int(out.stdout.split()[0])
    workdir = tmp_path_factory.mktemp("avahi")
    conf, log = workdir / "avahi-daemon.conf", workdir / "avahi-daemon.log"
    conf.write_text(AVAHI_CONF)  # lo only: nothing of the tests goes to the real network
    with log.open("wb") as log_file:
        daemon = subprocess.Popen(
            ["avahi-daemon", "-f", str(conf), "--no-drop-root", "--no-chroot"],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        # Its log, not `avahi-daemon --check` (which sees only the pid file): a client that
        # connects before "Server startup complete" can be refused (tests/harness/ippeve.py).
        deadline = time.monotonic() + 10
        while b"Server startup complete" not in log.read_bytes():
            if daemon.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"avahi-daemon did not start:\n{log.read_text()}")
            time.sleep(0.1)
        yield
    finally:
        daemon.terminate()
        try:
            daemon.wait(10)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
        if dbus_pid is not None:
            _stop_bus(dbus_pid)


class _AvahiBrowse:
    """`avahi-browse -rp TYPE` running: its parsed lines, as they come."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[list[str]] = []
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, service_type: str) -> _AvahiBrowse:
        proc = await asyncio.create_subprocess_exec(
            "avahi-browse",
            "-rp",
            service_type,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        return cls(proc)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            self.lines.append(raw.decode().rstrip("\n").split(";", 9))

    def events(self, instance: str) -> list[list[str]]:
        return [f for f in self.lines if len(f) > 3 and _avahi_unescape(f[3]) == instance]

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.terminate()
        await self.proc.wait()
        await self._reader


def _avahi_unescape(text: str) -> str:
    """avahi-browse -p writes some characters of names as \\DDD (decimal) or \\c."""
    return re.sub(r"\\(\d{3}|.)", lambda m: chr(int(m[1])) if len(m[1]) == 3 else m[1], text)


def test_found_by_avahi_browse_under_type_and_print_subtype(avahi: None) -> None:
    queue = _queue()

    async def scenario() -> None:
        browsers = {t: await _AvahiBrowse.start(t) for t in ("_ipp._tcp", "_print._sub._ipp._tcp")}
        adv = Advertiser(queues=[queue], port=PORT, tls=False, host="127.0.0.1")
        instance = ""
        try:
            await adv.start()
            instance = adv.names[queue.name]
            for service_type, browser in browsers.items():
                await _until(
                    lambda b=browser: any(f[0] == "=" for f in b.events(instance)),
                    10,
                    lambda b=browser, t=service_type: f"{instance!r} resolved as {t}: {b.lines}",
                )
                resolved = next(f for f in browser.events(instance) if f[0] == "=")
                _, iface, proto, _, _, domain, host, address, port, txt_field = resolved
                assert (iface, proto, domain, address, port) == (
                    "lo",
                    "IPv4",
                    "local",
                    "127.0.0.1",
                    str(PORT),
                )
                assert host.endswith("-spoolvault.local")
                strings = re.findall(r'"((?:[^"\\]|\\.)*)"', txt_field)
                txt = dict(s.split("=", 1) for s in strings)
                _check_txt(txt, queue, tls=False)
        finally:
            await adv.close()
        try:
            for service_type, browser in browsers.items():
                await _until(
                    lambda b=browser: any(f[0] == "-" for f in b.events(instance)),
                    5,
                    lambda b=browser, t=service_type: f"{instance!r} to go from {t}: {b.lines}",
                )
        finally:
            for browser in browsers.values():
                await browser.stop()

    asyncio.run(scenario())


# -- the wildcard mode, between two network namespaces ---------------------------------

ADVERTISE = """
import asyncio, sys
from spoolvault.discovery.dnssd import Advertiser
from spoolvault.ipp.attributes import Queue

async def main() -> None:
    adv = Advertiser(queues=[Queue(sys.argv[1], "q")], port=int(sys.argv[2]), tls=False,
                     host=sys.argv[3])
    await adv.start()
    print(adv.names[sys.argv[1]], flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    await adv.close()

asyncio.run(main())
"""

BROWSE = """
import asyncio, json, sys
from zeroconf import ServiceStateChange
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

async def main() -> None:
    zc = AsyncZeroconf(interfaces=[sys.argv[1]])
    seen = asyncio.Queue()
    def on_change(zeroconf, service_type, name, state_change):
        seen.put_nowait((service_type, name, state_change))
    browser = AsyncServiceBrowser(zc.zeroconf, ["_print._sub._ipp._tcp.local."],
                                  handlers=[on_change])
    _, name, change = await seen.get()
    assert change is ServiceStateChange.Added, change
    info = AsyncServiceInfo("_ipp._tcp.local.", name)
    await info.async_request(zc.zeroconf, 3000)
    print(json.dumps({"name": name, "port": info.port, "addresses": info.parsed_addresses(),
                      "rp": info.decoded_properties.get("rp")}), flush=True)
    _, gone, change = await seen.get()
    print(json.dumps({"name": gone, "change": change.name}), flush=True)
    await browser.async_cancel()
    await zc.async_close()

asyncio.run(main())
"""


@pytest.fixture
def two_hosts() -> Iterator[tuple[list[str], list[str]]]:
    """Two network namespaces joined by a veth pair: (command prefix, address) of each."""
    if os.geteuid() != 0 or not shutil.which("ip"):
        pytest.skip("network namespaces need root and iproute2")
    tag = f"{os.getpid() % 100000}{secrets.token_hex(2)}"
    a, b = f"svA{tag}", f"svB{tag}"
    # 198.18.0.0/15 (RFC 2544, benchmarking) and a ULA: our own two hosts, in our namespaces.
    setup = [
        ["ip", "netns", "add", a],
        ["ip", "netns", "add", b],
        [
            "ip",
            "link",
            "add",
            f"va{tag}",
            "netns",
            a,
            "type",
            "veth",
            "peer",
            f"vb{tag}",
            "netns",
            b,
        ],
        ["ip", "-n", a, "addr", "add", "198.18.7.1/24", "dev", f"va{tag}"],
        ["ip", "-n", b, "addr", "add", "198.18.7.2/24", "dev", f"vb{tag}"],
        ["ip", "-n", a, "-6", "addr", "add", "fd00:7::1/64", "dev", f"va{tag}", "nodad"],
        ["ip", "-n", b, "-6", "addr", "add", "fd00:7::2/64", "dev", f"vb{tag}", "nodad"],
        ["ip", "-n", a, "link", "set", f"va{tag}", "up"],
        ["ip", "-n", b, "link", "set", f"vb{tag}", "up"],
        ["ip", "-n", a, "link", "set", "lo", "up"],
        ["ip", "-n", b, "link", "set", "lo", "up"],
    ]
    try:
        for cmd in setup:
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                pytest.skip(f"cannot make test hosts here: {' '.join(cmd)}: {done.stderr.strip()}")
        yield ["ip", "netns", "exec", a], ["ip", "netns", "exec", b]
    finally:
        for ns in (a, b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


@pytest.mark.parametrize(
    ("host", "addresses"),
    [("0.0.0.0", ["198.18.7.1"]), ("::", ["198.18.7.1", "fd00:7::1"])],
)
def test_wildcard_host_is_found_from_another_host(
    two_hosts: tuple[list[str], list[str]], host: str, addresses: list[str]
) -> None:
    """`--http 0.0.0.0:PORT` or `[::]:PORT`: the network addresses, never loopback nor fe80::."""
    in_a, in_b = two_hosts
    queue = f"t{secrets.token_hex(4)}"

    async def scenario() -> None:
        async def run(prefix: list[str], code: str, *args: str) -> asyncio.subprocess.Process:
            return await asyncio.create_subprocess_exec(
                *prefix,
                sys.executable,
                "-c",
                textwrap.dedent(code),
                *args,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )

        async def line(proc: asyncio.subprocess.Process, what: str) -> str:
            assert proc.stdout is not None
            out = await asyncio.wait_for(proc.stdout.readline(), 10)
            assert out, f"{what}: the process ended (status {await proc.wait()})"
            return out.decode()

        browser = await run(in_b, BROWSE, "198.18.7.2")
        advertiser = await run(in_a, ADVERTISE, queue, str(PORT), host)
        try:
            instance = (await line(advertiser, "advertiser")).strip()
            found = json.loads(await line(browser, "browser"))
            assert found == {
                "name": f"{instance}._ipp._tcp.local.",
                "port": PORT,
                "addresses": addresses,
                "rp": f"ipp/print/{queue}",
            }
            assert advertiser.stdin is not None
            advertiser.stdin.write(b"\n")  # close(): goodbye packets
            await advertiser.stdin.drain()
            gone = json.loads(await line(browser, "browser"))
            assert gone == {"name": found["name"], "change": "Removed"}
        finally:
            for proc in (advertiser, browser):
                if proc.returncode is None:
                    proc.kill()
                await proc.communicate()

    asyncio.run(scenario())
