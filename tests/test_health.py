"""Printer health against real peers: ippeveprinter, a private cupsd, net-snmp's snmpd."""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

import pytest

from harness import cupsd
from harness.ippeve import EvePrinter as Printer
from harness.ippeve import start_printer
from harness.snmpd import Snmpd, start_snmpd
from spoolvault.ipp.codec import IppMessage, decode, encode
from spoolvault.ipp.constants import GroupTag, Status, ValueTag
from spoolvault.printers.health import (
    DEFAULT_BLOCKING,
    SNMP_CONDITIONS,
    Health,
    HealthCache,
    check,
    decode_error_state,
    describe_condition,
    encode_error_state,
    ipp_health,
    snmp_health,
)

T = TypeVar("T")
SNMP_TIMEOUT = 0.5  # for checks that are meant to get no answer


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


def timed(coro: Awaitable[T]) -> tuple[T, float]:
    start = time.monotonic()
    result = run(coro)
    return result, time.monotonic() - start


def closed_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on (connections are refused)."""
    return cupsd.free_port()


# --------------------------------------------------------------------------- peers


@pytest.fixture(scope="module")
def printer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Printer]:
    if shutil.which("ippeveprinter") is None:
        pytest.skip("needs cups-ipp-utils (ippeveprinter)")
    p = start_printer(tmp_path_factory.mktemp("ippeve") / "spool", name="health-test")
    try:
        yield p
    finally:
        p.stop()


@pytest.fixture(scope="module")
def cups() -> Iterator[cupsd.Cupsd]:
    if not Path(cupsd.CUPSD).exists():
        pytest.skip("needs cups (cupsd)")
    # cupsd's helpers run as lp: the root must be traversable by lp, so not under /tmp/pytest-*.
    root = Path(tempfile.mkdtemp(prefix="spoolvault-health-", dir="/var/tmp"))
    root.chmod(0o755)
    server = cupsd.start_cupsd(root)
    try:
        for queue in ("stopped", "stopped-why", "ready", "rejecting"):
            server.run("lpadmin", "-p", queue, "-E", "-v", "file:///dev/null", "-m", "raw")
        server.run("cupsdisable", "stopped")
        server.run("cupsdisable", "-r", "out of toner, call Bob", "stopped-why")
        server.run("cupsreject", "rejecting")
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def snmpd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Snmpd]:
    server = start_snmpd(tmp_path_factory.mktemp("snmpd"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def agent(snmpd: Snmpd) -> Iterator[Snmpd]:
    """The shared snmpd, its printer healthy and idle at the start of each test."""
    snmpd.set_state()
    yield snmpd
    snmpd.set_state()


def snmp(server: Snmpd, **kwargs: object) -> Health:
    return run(snmp_health("127.0.0.1", port=server.port, **kwargs))  # type: ignore[arg-type]


# --------------------------------------------------------------------------- IPP


def test_healthy_ippeveprinter_is_idle_and_usable(printer: Printer) -> None:
    before = time.monotonic()
    health = run(ipp_health(printer.uri))
    assert health.state == "idle"
    assert not health.in_error
    assert health.conditions == ()
    assert health.source == "ipp"
    assert health.message == "ready"
    assert before <= health.checked_at <= time.monotonic()


def test_ipps_with_the_printers_self_signed_certificate(printer: Printer) -> None:
    health = run(ipp_health(printer.uri.replace("ipp://", "ipps://")))
    assert (health.state, health.in_error, health.source) == ("idle", False, "ipp")


def _supplies(printer: Printer, query: str = "") -> str:
    url = f"http://127.0.0.1:{printer.port}/supplies{query}"
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


def test_report_severity_does_not_block_but_is_shown(printer: Printer) -> None:
    # ippeveprinter's own web page sets supply levels; an empty toner becomes a
    # "toner-empty-report" reason while the printer stays idle.
    levels = dict(re.findall(r'name="(supply\d+)" size="3" value="(\d+)"', _supplies(printer)))
    assert levels, "ippeveprinter's supplies page changed"
    empty = {**levels, **{name: "0" for name in list(levels)[-1:]}}
    try:
        _supplies(printer, "?" + "&".join(f"{k}={v}" for k, v in empty.items()))
        health = run(ipp_health(printer.uri))
        assert health.state == "idle"
        assert "toner-empty-report" in health.conditions
        assert not health.in_error  # a report, and noToner is not blocking by default
        assert "toner-empty-report (out of toner)" in health.message
        assert health.message.startswith("ready; printer reports: ")
        # An administrator can block on the exact keyword.
        strict = run(check(printer.uri, blocking=(*DEFAULT_BLOCKING, "toner-empty-report")))
        assert strict.in_error
    finally:
        _supplies(printer, "?" + "&".join(f"{k}={v}" for k, v in levels.items()))
    assert run(ipp_health(printer.uri)).conditions == ()


def test_cups_queue_stopped_with_cupsdisable_is_in_error(cups: cupsd.Cupsd) -> None:
    health = run(ipp_health(f"ipp://{cups.host}/printers/stopped"))
    assert health.state == "stopped"
    assert health.in_error
    assert health.conditions == ("paused",)  # what CUPS reports for a disabled queue
    assert health.source == "ipp"
    assert health.message == "printer stopped: paused (paused by an operator)"


def test_the_operators_reason_is_passed_on(cups: cupsd.Cupsd) -> None:
    health = run(ipp_health(f"ipp://{cups.host}/printers/stopped-why"))
    assert health.in_error
    assert health.message == (
        "printer stopped: paused (paused by an operator); printer says: out of toner, call Bob"
    )


def test_enabled_cups_queue_is_fine_and_rejecting_one_is_not(cups: cupsd.Cupsd) -> None:
    ready = run(ipp_health(f"ipp://{cups.host}/printers/ready"))
    assert (ready.state, ready.in_error) == ("idle", False)
    rejecting = run(ipp_health(f"ipp://{cups.host}/printers/rejecting"))
    assert rejecting.in_error  # a release there would fail: not accepting jobs
    assert "not accepting jobs" in rejecting.message


def test_closed_port_is_offline_fast() -> None:
    health, elapsed = timed(ipp_health(f"ipp://127.0.0.1:{closed_port()}/ipp/print", timeout=3))
    assert health.state == "offline"
    assert health.in_error
    assert health.conditions == ("offline",)
    assert health.source == "ipp"
    assert health.message == "unreachable: connection refused"
    assert elapsed < 1.0


def test_a_printer_that_never_answers_is_offline_after_the_timeout() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()  # the kernel accepts; nobody ever answers
        port = listener.getsockname()[1]
        for scheme in ("ipp", "ipps"):
            health, elapsed = timed(ipp_health(f"{scheme}://127.0.0.1:{port}/", timeout=0.4))
            assert (health.state, health.in_error) == ("offline", True)
            assert health.message == "unreachable: no answer within 0.4 s"
            assert 0.35 < elapsed < 1.5


@asynccontextmanager
async def http_peer(answer: bytes) -> AsyncIterator[int]:
    """A TCP server that reads whatever comes and sends `answer` (raw bytes), then closes."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.read(65536)
            writer.write(answer)
            await writer.drain()
        finally:
            writer.close()
            await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


def test_tls_failure_is_offline() -> None:
    async def scenario() -> Health:
        async with http_peer(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n") as port:
            return await ipp_health(f"ipps://127.0.0.1:{port}/ipp/print", timeout=2)

    health = run(scenario())
    assert (health.state, health.in_error) == ("offline", True)
    assert health.message.startswith("unreachable: TLS failure")


def test_an_answer_that_is_not_printer_state_is_unknown_not_an_error() -> None:
    async def scenario() -> Health:
        answer = b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found"
        async with http_peer(answer) as port:
            return await ipp_health(f"ipp://127.0.0.1:{port}/ipp/print", timeout=2)

    health = run(scenario())
    assert (health.state, health.in_error, health.source) == ("unknown", False, "none")
    assert health.message == "IPP: HTTP 404 to Get-Printer-Attributes"


def test_wrong_printer_path_is_unknown(printer: Printer) -> None:
    health = run(ipp_health(printer.uri.replace("/ipp/print", "/ipp/nothere")))
    assert (health.state, health.in_error) == ("unknown", False)
    assert "client-error-not-found" in health.message


def _ipp_answer(state: int, reasons: list[str], accepting: bool, chunked: bool) -> bytes:
    msg = IppMessage((2, 0), Status.SUCCESSFUL_OK, 1)
    op = msg.add_group(GroupTag.OPERATION)
    op.add("attributes-charset", ValueTag.CHARSET, "utf-8")
    op.add("attributes-natural-language", ValueTag.NATURAL_LANGUAGE, "en")
    printer = msg.add_group(GroupTag.PRINTER)
    printer.add("printer-state", ValueTag.ENUM, state)
    printer.add("printer-state-reasons", ValueTag.KEYWORD, *reasons)
    printer.add("printer-state-message", ValueTag.TEXT, "")
    printer.add("printer-is-accepting-jobs", ValueTag.BOOLEAN, accepting)
    body = encode(msg)
    if chunked:  # what many printers send, split in two chunks
        half = len(body) // 2
        framed = b"".join(
            b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:half], body[half:])
        )
        return (
            b"HTTP/1.1 200 OK\r\nContent-Type: application/ipp\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + framed + b"0\r\n\r\n"
        )
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/ipp\r\nContent-Length: %d\r\n\r\n"
    return head % len(body) + body


@pytest.mark.parametrize(
    ("state", "reasons", "accepting", "in_error", "message"),
    [
        (3, ["none"], True, False, "ready"),
        (3, ["media-empty-error"], True, True, "printer reports: media-empty-error (out of paper)"),
        (4, ["toner-low-warning"], True, False,
         "printing; printer reports: toner-low-warning (toner low)"),
        # No suffix: blocking when it means a blocking Printer MIB condition (noPaper) …
        (3, ["media-empty"], True, True, "printer reports: media-empty (out of paper)"),
        # … and not when it does not (noToner is not blocking by default), nor for states.
        (3, ["toner-empty"], True, False, "ready; printer reports: toner-empty (out of toner)"),
        (4, ["connecting-to-device"], True, False,
         "printing; printer reports: connecting-to-device (connecting to the device)"),
        # A warning about a blocking condition is still only a warning.
        (4, ["media-jam-warning"], True, False,
         "printing; printer reports: media-jam-warning (paper jam)"),
        # CUPS says "offline-report" for a device it cannot reach.
        (3, ["offline-report"], True, True, "printer reports: offline-report (offline)"),
        (5, ["none"], True, True, "printer stopped"),
        (3, ["none"], False, True, "printer is not accepting jobs"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_ipp_rules(
    state: int, reasons: list[str], accepting: bool, in_error: bool, message: str, chunked: bool
) -> None:
    async def scenario() -> Health:
        async with http_peer(_ipp_answer(state, reasons, accepting, chunked)) as port:
            return await ipp_health(f"ipp://127.0.0.1:{port}/ipp/print", timeout=2)

    health = run(scenario())
    assert health.in_error is in_error
    assert health.message == message
    assert health.conditions == tuple(r for r in reasons if r != "none")


def _good_answer_made_malformed(fault: str) -> bytes:
    """A healthy printer's answer, with one fault in its HTTP framing."""
    answer = _ipp_answer(3, ["none"], True, chunked=fault == "chunk-without-crlf")
    if fault == "chunk-without-crlf":
        # The first chunk's data is followed by two bytes that are not its CRLF.
        head, _, framed = answer.partition(b"\r\n\r\n")
        size_line, _, rest = framed.partition(b"\r\n")
        size = int(size_line, 16)
        assert rest[size : size + 2] == b"\r\n"
        return head + b"\r\n\r\n" + size_line + b"\r\n" + rest[:size] + b"XX" + rest[size + 2 :]
    assert fault == "header-without-colon"
    return answer.replace(b"Content-Type:", b"X-Garbage\r\nContent-Type:", 1)


@pytest.mark.parametrize("fault", ["chunk-without-crlf", "header-without-colon"])
def test_malformed_http_is_a_bad_answer_not_printer_state(fault: str) -> None:
    """The one HTTP client is strict for health as for delivery: a chunk not followed by
    its CRLF, or a header line that is not a field, makes the answer unusable (unknown),
    even though the IPP message inside would say "idle"."""

    async def scenario() -> Health:
        async with http_peer(_good_answer_made_malformed(fault)) as port:
            return await ipp_health(f"ipp://127.0.0.1:{port}/ipp/print", timeout=2)

    health = run(scenario())
    assert (health.state, health.in_error, health.source) == ("unknown", False, "none")
    assert health.message.startswith("IPP: the printer's answer is not valid HTTP/1.1: ")


def test_an_answer_cut_short_is_a_bad_answer() -> None:
    async def scenario() -> Health:
        whole = _ipp_answer(3, ["none"], True, chunked=False)
        async with http_peer(whole[:-5]) as port:
            return await ipp_health(f"ipp://127.0.0.1:{port}/ipp/print", timeout=2)

    health = run(scenario())
    assert (health.state, health.in_error, health.source) == ("unknown", False, "none")
    assert health.message == "IPP: the connection closed in the middle of the printer's answer"


def test_the_request_is_a_proper_get_printer_attributes() -> None:
    seen: list[bytes] = []

    async def scenario() -> Health:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
            seen.append(head + await reader.readexactly(length))
            writer.write(_ipp_answer(3, ["none"], True, chunked=False))
            await writer.drain()
            writer.close()
            await writer.wait_closed()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        async with server:
            port = server.sockets[0].getsockname()[1]
            return await ipp_health(f"ipp://127.0.0.1:{port}/printers/x", timeout=2)

    assert run(scenario()).state == "idle"
    head, _, body = seen[0].partition(b"\r\n\r\n")
    assert head.startswith(b"POST /printers/x HTTP/1.1\r\n")
    assert b"Content-Type: application/ipp" in head
    request, _ = decode(body)
    assert request.code == 0x000B  # Get-Printer-Attributes
    op = request.operation
    assert [a.name for a in op][:2] == ["attributes-charset", "attributes-natural-language"]
    printer_uri = op.get("printer-uri")
    assert printer_uri is not None
    assert printer_uri.value.endswith("/printers/x")  # type: ignore[attr-defined]
    requested = op.get("requested-attributes")
    assert requested is not None
    wanted = {"printer-state", "printer-state-reasons", "printer-state-message"}
    assert wanted <= set(requested.python_values)


# --------------------------------------------------------------------------- SNMP


def test_error_state_bits_follow_rfc_2790() -> None:
    # RFC 2790: bit 0 is the most significant bit of the first octet.
    assert decode_error_state(b"\x80") == ("lowPaper",)
    assert decode_error_state(b"\x40\x00") == ("noPaper",)
    assert decode_error_state(b"\x08") == ("doorOpen",)
    assert decode_error_state(b"\x04") == ("jammed",)
    assert decode_error_state(b"\x02") == ("offline",)
    assert decode_error_state(b"\x00\x80") == ("inputTrayMissing",)
    assert decode_error_state(b"\x00\x08") == ("outputFull",)
    assert decode_error_state(b"\x00\x02") == ("overduePreventMaint",)
    assert decode_error_state(b"\x00\x01\xff") == ()  # bits past 14 are not defined
    assert decode_error_state(b"") == ()
    assert decode_error_state(b"\xff\xfe") == SNMP_CONDITIONS
    for name in SNMP_CONDITIONS:
        assert decode_error_state(encode_error_state([name])) == (name,)
    assert describe_condition("noPaper") == "noPaper (out of paper)"
    assert describe_condition("media-jam-error") == "media-jam-error (paper jam)"
    assert describe_condition("vendor-thing") == "vendor-thing"


def test_snmp_no_paper_is_in_error(agent: Snmpd) -> None:
    agent.set_state(["noPaper"], status=1)  # LaserJets say other(1) when out of paper
    health = snmp(agent)
    assert health.in_error
    assert health.state == "stopped"
    assert health.conditions == ("noPaper",)
    assert health.source == "snmp"
    assert health.message == "printer reports: noPaper (out of paper)"


def test_snmp_door_open(agent: Snmpd) -> None:
    agent.set_state(["lowToner", "doorOpen"])
    health = snmp(agent)
    assert health.in_error
    assert health.conditions == ("lowToner", "doorOpen")
    assert "doorOpen (door open)" in health.message


def test_snmp_second_octet_condition(agent: Snmpd) -> None:
    agent.set_state(["outputFull"], status=4)
    health = snmp(agent)
    assert health.in_error
    assert "output tray full" in health.message


def test_snmp_low_paper_alone_is_not_blocking(agent: Snmpd) -> None:
    agent.set_state(["lowPaper"], status=4)
    health = snmp(agent)
    assert not health.in_error
    assert health.state == "processing"
    assert health.message == "printing; printer reports: lowPaper (paper low)"


def test_snmp_healthy(agent: Snmpd) -> None:
    health = snmp(agent)
    assert (health.state, health.in_error, health.conditions) == ("idle", False, ())
    assert health.message == "ready"


def test_snmp_custom_blocking_list(agent: Snmpd) -> None:
    agent.set_state(["lowToner"])
    assert snmp(agent, blocking=("lowToner",)).in_error
    assert not snmp(agent).in_error
    agent.set_state(["noPaper"])
    assert not snmp(agent, blocking=("lowToner",)).in_error
    assert not snmp(agent, blocking=()).in_error


def test_snmp_finds_the_printer_row_whatever_its_index(agent: Snmpd) -> None:
    agent.set_state(["jammed"], index=3)
    health = snmp(agent)
    assert health.conditions == ("jammed",)
    assert health.in_error
    assert "paper jam" in health.message


def test_snmp_one_octet_error_state(agent: Snmpd) -> None:
    agent.set_state(raw=b"\x40")  # many printers send a single octet
    assert snmp(agent).conditions == ("noPaper",)


def test_snmp_agent_without_printer_table_is_unknown(agent: Snmpd) -> None:
    agent.set_state(table=False)
    health = snmp(agent)
    assert (health.state, health.in_error, health.source) == ("unknown", False, "none")
    assert "no hrPrinterTable" in health.message


def test_snmp_wrong_community_is_unknown_not_error(agent: Snmpd) -> None:
    health, elapsed = timed(
        snmp_health("127.0.0.1", port=agent.port, community="private", timeout=SNMP_TIMEOUT)
    )
    assert (health.state, health.in_error, health.source) == ("unknown", False, "none")
    assert "no answer" in health.message
    assert elapsed < SNMP_TIMEOUT + 0.5


def test_snmp_state_change_is_seen_within_max_age(agent: Snmpd) -> None:
    async def scenario() -> list[Health]:
        cache = HealthCache(max_age=0.3)

        async def poll() -> Health:
            return await cache.get("p1", lambda: snmp_health("127.0.0.1", port=agent.port))

        first = await poll()
        agent.set_state()  # paper loaded
        again = await poll()  # still within max_age: the cached answer
        direct = await snmp_health("127.0.0.1", port=agent.port)  # the agent knows already
        await asyncio.sleep(0.35)
        return [first, again, direct, await poll()]

    agent.set_state(["noPaper"])
    first, again, direct, later = run(scenario())
    assert first.in_error and again is first
    assert not direct.in_error
    assert not later.in_error and later.conditions == ()


def test_snmpd_stopped_is_unknown_not_error(tmp_path: Path) -> None:
    server = start_snmpd(tmp_path / "snmpd")
    try:
        server.set_state(["noPaper"])
        assert snmp(server).in_error
    finally:
        server.stop()
    health = snmp(server, timeout=SNMP_TIMEOUT)
    assert (health.state, health.in_error, health.source) == ("unknown", False, "none")
    assert health.message.startswith(f"SNMP: no answer from 127.0.0.1:{server.port}")


# --------------------------------------------------------------------------- check()


def test_check_combines_healthy_ipp_with_snmp_no_paper(printer: Printer, agent: Snmpd) -> None:
    agent.set_state(["noPaper"])
    health = run(check(printer.uri, snmp_host="127.0.0.1", snmp_port=agent.port))
    assert health.in_error
    assert health.source == "ipp+snmp"
    assert health.state == "stopped"
    assert health.conditions == ("noPaper",)
    assert health.message == "printer reports: noPaper (out of paper)"


def test_check_both_healthy(printer: Printer, agent: Snmpd) -> None:
    health = run(check(printer.uri, snmp_host="127.0.0.1", snmp_port=agent.port))
    assert (health.state, health.in_error, health.source) == ("idle", False, "ipp+snmp")
    assert health.message == "ready"


def test_check_passes_blocking_to_snmp(printer: Printer, agent: Snmpd) -> None:
    agent.set_state(["lowToner"])
    kwargs = {"snmp_host": "127.0.0.1", "snmp_port": agent.port}
    assert not run(check(printer.uri, **kwargs)).in_error  # type: ignore[arg-type]
    assert run(check(printer.uri, blocking=("lowToner",), **kwargs)).in_error  # type: ignore[arg-type]


def test_check_ipp_only_and_snmp_silent(printer: Printer, agent: Snmpd) -> None:
    # SNMP without an answer never makes a healthy IPP printer unusable.
    health = run(
        check(
            printer.uri,
            snmp_host="127.0.0.1",
            snmp_port=agent.port,
            snmp_community="wrong",
            timeout=SNMP_TIMEOUT,
        )
    )
    assert (health.state, health.in_error, health.source) == ("idle", False, "ipp")
    assert run(check(printer.uri)).source == "ipp"


def test_check_asks_both_at_once_and_offline_wins(agent: Snmpd) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        silent = f"ipp://127.0.0.1:{listener.getsockname()[1]}/ipp/print"
        health, elapsed = timed(
            check(silent, snmp_host="127.0.0.1", snmp_port=agent.port, snmp_community="x",
                  timeout=0.6)
        )  # fmt: skip
    assert (health.state, health.in_error, health.source) == ("offline", True, "ipp")
    assert health.message == "unreachable: no answer within 0.6 s"
    assert elapsed < 1.1  # concurrent: not 0.6 + 0.6


def test_check_unreachable_ipp_with_snmp_answering(agent: Snmpd) -> None:
    agent.set_state(["doorOpen"])
    uri = f"ipp://127.0.0.1:{closed_port()}/ipp/print"
    health = run(check(uri, snmp_host="127.0.0.1", snmp_port=agent.port))
    assert (health.state, health.in_error, health.source) == ("offline", True, "ipp+snmp")
    assert health.conditions == ("offline", "doorOpen")
    assert health.message == (
        "unreachable: connection refused; printer reports: doorOpen (door open)"
    )


def test_check_socket_and_lpd_printers(agent: Snmpd) -> None:
    refused = run(check(f"socket://127.0.0.1:{closed_port()}"))
    assert (refused.state, refused.in_error, refused.source) == ("offline", True, "none")
    assert refused.message == "unreachable: connection refused"
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        open_port = listener.getsockname()[1]
        reachable = run(check(f"socket://127.0.0.1:{open_port}"))
        assert (reachable.state, reachable.in_error) == ("unknown", False)
        assert f"port {open_port} accepts connections" in reachable.message
        lpd = run(check(f"lpd://127.0.0.1:{open_port}/queue"))
        assert (lpd.state, lpd.in_error) == ("unknown", False)
    agent.set_state(["jammed"])
    jammed = run(check("lpd://printer.invalid/queue", snmp_host="127.0.0.1", snmp_port=agent.port))
    assert (jammed.in_error, jammed.source, jammed.conditions) == (True, "snmp", ("jammed",))


def test_check_refuses_what_it_cannot_check() -> None:
    with pytest.raises(ValueError, match="no health check"):
        run(check("usb://printer"))
    with pytest.raises(ValueError, match="names no host"):
        run(check("ipp:///no-host"))


# --------------------------------------------------------------------------- cache


def _health(checked_at: float | None = None, message: str = "ready") -> Health:
    return Health(
        "idle", (), False, message, "ipp", time.monotonic() if checked_at is None else checked_at
    )


def test_cache_runs_one_probe_for_concurrent_callers() -> None:
    calls = 0

    async def probe() -> Health:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return _health()

    async def scenario() -> list[Health]:
        cache = HealthCache()
        return await asyncio.gather(*(cache.get("p1", probe) for _ in range(20)))

    results = run(scenario())
    assert calls == 1
    assert all(r is results[0] for r in results)


def test_cache_reuses_fresh_results_and_reprobes_stale_ones() -> None:
    calls: list[str] = []

    def probe_for(key: str, age: float) -> Callable[[], Awaitable[Health]]:
        async def probe() -> Health:
            calls.append(key)
            return _health(time.monotonic() - age)

        return probe

    async def scenario() -> None:
        cache = HealthCache(max_age=2.0)
        fresh = await cache.get("a", probe_for("a", 0))
        assert await cache.get("a", probe_for("a", 0)) is fresh  # reused
        await cache.get("b", probe_for("b", 0))  # another printer: its own poll
        await cache.get("old", probe_for("old", 5.0))  # older than max_age when it came back
        await cache.get("old", probe_for("old", 5.0))

    run(scenario())
    assert calls == ["a", "b", "old", "old"]


def test_cache_max_age_zero_still_shares_a_poll_in_flight() -> None:
    calls = 0

    async def probe() -> Health:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.02)
        return _health()

    async def scenario() -> None:
        cache = HealthCache(max_age=0)
        await asyncio.gather(cache.get("p", probe), cache.get("p", probe))
        await asyncio.sleep(0.001)
        await cache.get("p", probe)

    run(scenario())
    assert calls == 2


def test_cache_does_not_keep_failures_and_survives_a_cancelled_caller() -> None:
    calls = 0

    async def failing() -> Health:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        raise RuntimeError("probe broke")

    async def slow() -> Health:
        await asyncio.sleep(0.05)
        return _health(message="slow")

    async def scenario() -> Health:
        cache = HealthCache()
        results = await asyncio.gather(
            cache.get("p", failing), cache.get("p", failing), return_exceptions=True
        )
        assert all(isinstance(r, RuntimeError) for r in results)
        with pytest.raises(RuntimeError):
            await cache.get("p", failing)  # not cached: probed again
        first = asyncio.create_task(cache.get("q", slow))
        second = asyncio.create_task(cache.get("q", slow))
        await asyncio.sleep(0.01)
        first.cancel()  # one caller goes away; the poll goes on for the other
        with pytest.raises(asyncio.CancelledError):
            await first
        return await second

    assert run(scenario()).message == "slow"
    assert calls == 2  # one shared poll for the two concurrent callers, one more after


def test_cache_rejects_negative_max_age() -> None:
    with pytest.raises(ValueError, match="max_age"):
        HealthCache(max_age=-1)
