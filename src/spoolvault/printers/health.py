"""Printer health: may a job be released to this printer now?

Two standard sources, asked on demand at release time (docs/printer-health.md):

- **IPP** (RFC 8011): Get-Printer-Attributes for ``printer-state``,
  ``printer-state-reasons``, ``printer-state-message`` and ``printer-is-accepting-jobs``.
- **SNMP** (Host Resources MIB, RFC 2790, on which the Printer MIB v2, RFC 3805, builds):
  ``hrPrinterStatus`` and the ``hrPrinterDetectedErrorState`` bit mask, read with one
  SNMPv2c GETNEXT on both columns of ``hrPrinterTable`` (so the printer's row is found
  whatever its ``hrDeviceIndex``).

`check` asks both at once when SNMP is configured and combines the answers; `HealthCache`
keeps one poll in flight per printer and reuses a result for a couple of seconds.

Rules (who is "in error"):

- IPP ``printer-state`` stopped, an IPP reason with the ``-error`` suffix (RFC 8011
  §5.4.12), or ``printer-is-accepting-jobs`` false.
- A printer that cannot be reached (refused, timed out, TLS failure) is ``offline``.
- A condition named in ``blocking`` (Printer MIB names such as ``noPaper``): from SNMP
  whenever its bit is set; from IPP when a reason without a severity suffix maps to it
  (``media-empty`` -> ``noPaper``), and ``offline`` at any severity, because CUPS reports
  an unreachable device as ``offline-report``. ``-warning`` and ``-report`` reasons never
  block unless ``blocking`` names the exact keyword.
- No SNMP answer is "unknown", never an error by itself: a printer without SNMP must stay
  usable.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from pysnmp.error import PySnmpError  # type: ignore[import-untyped]
from pysnmp.hlapi.v1arch.asyncio import (  # type: ignore[import-untyped]
    CommunityData,
    SnmpDispatcher,
    Udp6TransportTarget,
    UdpTransportTarget,
    next_cmd,
)
from pysnmp.proto.rfc1902 import Null, ObjectName  # type: ignore[import-untyped]

from spoolvault.ipp.codec import IppMessage, encode
from spoolvault.ipp.constants import GroupTag, Operation, PrinterState, Status, ValueTag
from spoolvault.ipp.constants import status_name as ipp_status_name
from spoolvault.printers import http
from spoolvault.printers.http import BadAnswer
from spoolvault.printers.uri import PrinterUri, parse_printer_uri

__all__ = [
    "DEFAULT_BLOCKING",
    "SNMP_CONDITIONS",
    "Health",
    "HealthCache",
    "check",
    "decode_error_state",
    "describe_condition",
    "encode_error_state",
    "ipp_health",
    "snmp_health",
]

State = Literal["idle", "processing", "stopped", "offline", "unknown"]
Source = Literal["ipp", "snmp", "ipp+snmp", "none"]

DEFAULT_BLOCKING: tuple[str, ...] = (
    "noPaper",
    "doorOpen",
    "jammed",
    "offline",
    "inputTrayMissing",
    "outputTrayMissing",
    "markerSupplyMissing",
    "outputFull",
)


@dataclass(frozen=True)
class Health:
    """What a printer reported (or that it could not be asked), at one moment."""

    state: State
    # IPP printer-state-reasons (minus "none") and/or SNMP hrPrinterDetectedErrorState names.
    conditions: tuple[str, ...]
    in_error: bool
    message: str  # for people: "printer reports: media-empty-error (out of paper)"
    source: Source  # which protocol(s) the verdict rests on; "none" when none answered
    checked_at: float  # time.monotonic() when the answer came
    # IPP document-format-supported, when the printer said (empty for SNMP-only answers).
    formats: tuple[str, ...] = ()


# --------------------------------------------------------------------------- vocabulary

# RFC 2790 hrPrinterDetectedErrorState (bits 8-14 added with the Printer MIB v2, RFC 3805):
# bit 0 is the most significant bit of the first octet, bit 8 that of the second.
SNMP_CONDITIONS: tuple[str, ...] = (
    "lowPaper",
    "noPaper",
    "lowToner",
    "noToner",
    "doorOpen",
    "jammed",
    "offline",
    "serviceRequested",
    "inputTrayMissing",
    "outputTrayMissing",
    "markerSupplyMissing",
    "outputNearFull",
    "outputFull",
    "inputTrayEmpty",
    "overduePreventMaint",
)

_SNMP_TEXT: dict[str, str] = {
    "lowPaper": "paper low",
    "noPaper": "out of paper",
    "lowToner": "toner low",
    "noToner": "out of toner",
    "doorOpen": "door open",
    "jammed": "paper jam",
    "offline": "offline",
    "serviceRequested": "service requested",
    "inputTrayMissing": "paper tray missing",
    "outputTrayMissing": "output tray missing",
    "markerSupplyMissing": "toner or ink cartridge missing",
    "outputNearFull": "output tray almost full",
    "outputFull": "output tray full",
    "inputTrayEmpty": "paper tray empty",
    "overduePreventMaint": "maintenance overdue",
}

# RFC 8011 §5.4.12 and the IANA registry: printer-state-reasons keywords, without suffix.
_IPP_TEXT: dict[str, str] = {
    "other": "other problem",
    "media-empty": "out of paper",
    "media-needed": "paper needed",
    "media-low": "paper low",
    "media-jam": "paper jam",
    "door-open": "door open",
    "cover-open": "cover open",
    "interlock-open": "interlock open",
    "toner-empty": "out of toner",
    "toner-low": "toner low",
    "marker-supply-empty": "out of ink or toner",
    "marker-supply-low": "ink or toner low",
    "marker-supply-missing": "toner or ink cartridge missing",
    "marker-waste-full": "waste container full",
    "marker-waste-almost-full": "waste container almost full",
    "developer-empty": "out of developer",
    "developer-low": "developer low",
    "opc-life-over": "drum at end of life",
    "opc-near-eol": "drum near end of life",
    "fuser-over-temp": "fuser too hot",
    "fuser-under-temp": "fuser too cold",
    "input-tray-missing": "paper tray missing",
    "output-tray-missing": "output tray missing",
    "output-area-full": "output tray full",
    "output-area-almost-full": "output tray almost full",
    "spool-area-full": "printer memory full",
    "offline": "offline",
    "paused": "paused by an operator",
    "moving-to-paused": "pausing",
    "shutdown": "shut down",
    "stopping": "stopping",
    "stopped-partly": "partly stopped",
    "timed-out": "not responding",
    "connecting-to-device": "connecting to the device",
    "deactivated": "deactivated",
    "identify-printer-requested": "identify requested",
}

# IPP reason (without suffix) -> the Printer MIB condition it means, for `blocking`.
_IPP_TO_SNMP: dict[str, str] = {
    "media-empty": "noPaper",
    "media-needed": "noPaper",
    "media-low": "lowPaper",
    "toner-empty": "noToner",
    "marker-supply-empty": "noToner",
    "toner-low": "lowToner",
    "marker-supply-low": "lowToner",
    "door-open": "doorOpen",
    "cover-open": "doorOpen",
    "interlock-open": "doorOpen",
    "media-jam": "jammed",
    "offline": "offline",
    "input-tray-missing": "inputTrayMissing",
    "output-tray-missing": "outputTrayMissing",
    "marker-supply-missing": "markerSupplyMissing",
    "output-area-almost-full": "outputNearFull",
    "output-area-full": "outputFull",
}

_SUFFIXES = ("-error", "-warning", "-report")


def _split_reason(reason: str) -> tuple[str, str | None]:
    """("media-empty-error") -> ("media-empty", "error"); no suffix -> severity None."""
    for suffix in _SUFFIXES:
        if reason.endswith(suffix) and len(reason) > len(suffix):
            return reason[: -len(suffix)], suffix[1:]
    return reason, None


def describe_condition(condition: str) -> str:
    """A condition for people: "media-empty-error (out of paper)", "noPaper (out of paper)"."""
    text = _SNMP_TEXT.get(condition) or _IPP_TEXT.get(_split_reason(condition)[0])
    return f"{condition} ({text})" if text else condition


def decode_error_state(octets: bytes) -> tuple[str, ...]:
    """The conditions set in an hrPrinterDetectedErrorState value (RFC 2790), in bit order.

    Missing octets read as zero (many printers send one octet); bits past 14 are ignored.
    """
    return tuple(
        name
        for bit, name in enumerate(SNMP_CONDITIONS)
        if bit // 8 < len(octets) and octets[bit // 8] & (0x80 >> (bit % 8))
    )


def encode_error_state(conditions: Iterable[str]) -> bytes:
    """The two-octet hrPrinterDetectedErrorState value with these conditions set."""
    out = bytearray(2)
    for name in conditions:
        bit = SNMP_CONDITIONS.index(name)  # ValueError for an unknown name
        out[bit // 8] |= 0x80 >> (bit % 8)
    return bytes(out)


# --------------------------------------------------------------------------- verdicts

_RANK: dict[str, int] = {"unknown": 0, "idle": 1, "processing": 2, "stopped": 3, "offline": 4}
_STATE_WORDS: dict[str, str] = {
    "idle": "ready",
    "processing": "printing",
    "stopped": "printer stopped",
    "unknown": "state unknown",
}


@dataclass(frozen=True)
class _Probe:
    """One protocol's answer, before it is turned into (or combined into) a `Health`."""

    state: State
    conditions: tuple[str, ...] = ()
    in_error: bool = False
    source: Literal["ipp", "snmp", "none"] = "none"
    detail: str = ""  # printer-state-message
    failure: str = ""  # why there is no answer: "unreachable: connection refused"
    not_accepting: bool = False
    formats: tuple[str, ...] = ()


def _offline(reason: str, source: Literal["ipp", "snmp", "none"]) -> _Probe:
    return _Probe("offline", ("offline",), True, source=source, failure=f"unreachable: {reason}")


def _health(*probes: _Probe) -> Health:
    """Combine answers: the worst state wins, conditions are merged, any error is an error."""
    state: State = max((p.state for p in probes), key=_RANK.__getitem__)
    conditions = tuple(dict.fromkeys(c for p in probes for c in p.conditions))
    in_error = any(p.in_error for p in probes)
    sources = {p.source for p in probes} - {"none"}
    source: Source = "none"
    if sources == {"ipp", "snmp"}:
        source = "ipp+snmp"
    elif sources == {"ipp"}:
        source = "ipp"
    elif sources == {"snmp"}:
        source = "snmp"
    parts = [p.failure for p in probes if p.state == "offline" and p.failure]
    # "offline" is said by the failure already ("unreachable: …").
    shown = [c for c in conditions if not (state == "offline" and c == "offline")]
    items = ", ".join(describe_condition(c) for c in shown)
    # "printer stopped" when IPP says so; SNMP conditions only ever make it "reports".
    if state == "stopped" and any(p.source == "ipp" and p.state == "stopped" for p in probes):
        parts.append(f"printer stopped: {items}" if items else "printer stopped")
    elif state == "stopped" or (items and (in_error or state not in ("idle", "processing"))):
        parts.append(f"printer reports: {items}")
    elif items:
        parts.append(f"{_STATE_WORDS[state]}; printer reports: {items}")
    elif state in ("idle", "processing") and not in_error:
        parts.append(_STATE_WORDS[state])
    if any(p.not_accepting for p in probes):
        parts.append("printer is not accepting jobs")
    if in_error:
        said = {c.lower() for c in conditions} | {state}
        for p in probes:
            if not p.in_error:
                continue
            detail = p.detail.strip()
            if detail and detail.lower().rstrip(".") not in said:
                parts.append(f"printer says: {detail}")
    if state == "unknown":
        parts += [p.failure for p in probes if p.failure]
    message = "; ".join(dict.fromkeys(p for p in parts if p)) or _STATE_WORDS["unknown"]
    formats = next((p.formats for p in probes if p.formats), ())
    return Health(state, conditions, in_error, message, source, time.monotonic(), formats)


# --------------------------------------------------------------------------- IPP

_MAX_RESPONSE = 1 << 20  # five attributes fit in a few kilobytes
_REQUESTED = (
    "printer-state",
    "printer-state-reasons",
    "printer-state-message",
    "printer-is-accepting-jobs",
    "document-format-supported",
)
_MAX_FORMATS = 64  # more document formats than any printer has: the rest is ignored


def _endpoint(uri: str) -> PrinterUri:
    """An ipp:// or ipps:// URI (RFC 3510, RFC 7472: default port 631), or ValueError."""
    endpoint = parse_printer_uri(uri)
    if endpoint.scheme not in ("ipp", "ipps"):
        raise ValueError(f"not an ipp:// or ipps:// printer URI: {uri!r}")
    return endpoint


def _ipp_request(uri: str, version: tuple[int, int]) -> bytes:
    msg = http.ipp_request(Operation.GET_PRINTER_ATTRIBUTES, version, 1, uri, "spoolvault")
    msg.operation.add("requested-attributes", ValueTag.KEYWORD, *_REQUESTED)
    return encode(msg)


async def _post(endpoint: PrinterUri, body: bytes, timeout: float) -> http.Answer:
    """One HTTP/1.1 POST of an IPP request on a connection of its own."""
    reader, writer = await asyncio.open_connection(
        endpoint.host,
        endpoint.port,
        ssl=http.printer_tls() if endpoint.tls else None,
        server_hostname=endpoint.host if endpoint.tls else None,
        ssl_handshake_timeout=timeout if endpoint.tls else None,
    )
    try:
        exchange = http.Exchange(endpoint, length=len(body))
        writer.write(exchange.head() + exchange.data(body) + exchange.end())
        await writer.drain()
        return await exchange.answer(reader, max_body=_MAX_RESPONSE)
    finally:
        # A status read needs no orderly TLS shutdown: abort closes at once, even when the
        # printer has stopped talking, and leaves nothing behind on a cancelled poll.
        writer.transport.abort()


async def _get_printer_attributes(uri: str, timeout: float) -> IppMessage:
    endpoint = _endpoint(uri)
    version = (2, 0)
    while True:
        answer = await _post(endpoint, _ipp_request(uri, version), timeout)
        if answer.status == 426 and not endpoint.tls:
            # 426 Upgrade Required (RFC 7231 §6.5.15): this printer speaks IPP over TLS
            # only; CUPS-style servers accept TLS on the same port.
            endpoint = dataclasses.replace(endpoint, scheme="ipps")
            continue
        if answer.status != 200:
            raise BadAnswer(f"HTTP {answer.status} to Get-Printer-Attributes")
        msg = http.ipp_answer(answer)
        if msg.code == Status.SERVER_ERROR_VERSION_NOT_SUPPORTED and version == (2, 0):
            version = (1, 1)  # an IPP/1.1-only printer
            continue
        if msg.code >= 0x0100:
            raise BadAnswer(f"Get-Printer-Attributes failed: {ipp_status_name(msg.code)}")
        return msg


_IPP_STATES: dict[int, State] = {
    PrinterState.IDLE: "idle",
    PrinterState.PROCESSING: "processing",
    PrinterState.STOPPED: "stopped",
}


def _interpret_ipp(msg: IppMessage, blocking: frozenset[str]) -> _Probe:
    printer = msg.group(GroupTag.PRINTER)
    if printer is None:
        return _Probe("unknown", failure="IPP: the answer holds no printer attributes")
    attr = printer.get("printer-state")
    value = attr.value if attr is not None and attr.values else None
    state = _IPP_STATES.get(value, "unknown") if isinstance(value, int) else "unknown"
    reasons_attr = printer.get("printer-state-reasons")
    reasons = tuple(
        v
        for v in (reasons_attr.python_values if reasons_attr is not None else [])
        if isinstance(v, str) and _split_reason(v)[0] != "none"
    )
    message_attr = printer.get("printer-state-message")
    detail = ""
    if message_attr is not None and message_attr.values:
        raw = message_attr.value
        detail = raw if isinstance(raw, str) else getattr(raw, "text", "")
    accepting_attr = printer.get("printer-is-accepting-jobs")
    not_accepting = accepting_attr is not None and accepting_attr.value is False
    in_error = state == "stopped" or not_accepting or any(_ipp_blocks(r, blocking) for r in reasons)
    formats_attr = printer.get("document-format-supported")
    formats = tuple(
        dict.fromkeys(
            v
            for v in (formats_attr.python_values if formats_attr is not None else [])
            if isinstance(v, str) and "/" in v and len(v) <= 255
        )
    )[:_MAX_FORMATS]
    return _Probe(
        state,
        reasons,
        in_error,
        "ipp",
        detail=detail,
        not_accepting=not_accepting,
        formats=formats,
    )


def _ipp_blocks(reason: str, blocking: frozenset[str]) -> bool:
    if reason in blocking:
        return True
    base, severity = _split_reason(reason)
    if severity == "error":
        return True  # RFC 8011 §5.4.12: an error; the printer must be stopped anyway
    if severity is None and base in blocking:
        return True
    mapped = _IPP_TO_SNMP.get(base)
    # A reason without suffix has no stated severity (RFC 8011 says assume "error", but
    # printers send "paused", "toner-low" … bare): block when it means a blocking condition.
    # CUPS reports an unreachable device as "offline-report", so offline blocks at any level.
    return mapped in blocking and (severity is None or base == "offline")


async def _ipp_probe(uri: str, timeout: float, blocking: frozenset[str]) -> _Probe:
    _endpoint(uri)  # a malformed URI is the caller's error, not the printer's
    try:
        async with asyncio.timeout(timeout):
            msg = await _get_printer_attributes(uri, timeout)
    except TimeoutError:
        return _offline(f"no answer within {timeout:g} s", "ipp")
    except BadAnswer as exc:
        return _Probe("unknown", failure=f"IPP: {exc}")
    except OSError as exc:  # refused, reset, unroutable, name not found, TLS (ssl.SSLError)
        return _offline(http.os_reason(exc), "ipp")
    return _interpret_ipp(msg, blocking)


async def ipp_health(uri: str, *, timeout: float = 3.0) -> Health:
    """Ask an ipp:// or ipps:// printer for its state (Get-Printer-Attributes)."""
    return _health(await _ipp_probe(uri, timeout, frozenset(DEFAULT_BLOCKING)))


# --------------------------------------------------------------------------- SNMP

_HR_PRINTER_STATUS = (1, 3, 6, 1, 2, 1, 25, 3, 5, 1, 1)
_HR_PRINTER_ERROR_STATE = (1, 3, 6, 1, 2, 1, 25, 3, 5, 1, 2)
# hrPrinterStatus (RFC 2790): other(1), unknown(2), idle(3), printing(4), warmup(5).
_HR_STATUS: dict[int, State] = {3: "idle", 4: "processing", 5: "processing"}


def _row(oid: Iterable[int], column: tuple[int, ...]) -> tuple[int, ...] | None:
    """The index of `oid` in that table column, or None when GETNEXT left the column."""
    parts = tuple(oid)
    if len(parts) > len(column) and parts[: len(column)] == column:
        return tuple(int(p) for p in parts[len(column) :])
    return None


async def _snmp_getnext(
    host: str, port: int, community: str, timeout: float
) -> tuple[Any, Any, tuple[Any, ...]]:
    """One SNMPv2c GETNEXT for the first row of hrPrinterStatus and hrPrinterDetectedErrorState.

    GETNEXT on the two column OIDs answers with the printer's row whatever its
    hrDeviceIndex (often 1), in one round trip.
    """
    dispatcher = SnmpDispatcher()
    try:
        target_class = Udp6TransportTarget if ":" in host else UdpTransportTarget
        # Two tries within the budget: one lost UDP datagram is not an outage.
        target = await target_class.create((host, port), timeout=timeout * 0.45, retries=1)
        error_indication, error_status, _, var_binds = await next_cmd(
            dispatcher,
            # SNMPv2c, read-only: what printers speak. Nothing but state is read with it.
            CommunityData(community, mpModel=1),  # noqa: S508
            target,
            (ObjectName(_HR_PRINTER_STATUS), Null("")),
            (ObjectName(_HR_PRINTER_ERROR_STATE), Null("")),
            lookupMib=False,
        )
        return error_indication, error_status, tuple(var_binds)
    finally:
        # pysnmp 7.1's close() calls a pending request's callback with one argument too
        # few (a poll cancelled mid-request); its sockets are closed before that happens.
        with contextlib.suppress(TypeError):
            dispatcher.close()


async def _snmp_probe(
    host: str, port: int, community: str, timeout: float, blocking: frozenset[str]
) -> _Probe:
    where = f"{host}:{port}"
    try:
        # pysnmp times the tries itself; this bound only guards against a stuck request.
        async with asyncio.timeout(timeout + 0.5):
            error_indication, error_status, var_binds = await _snmp_getnext(
                host, port, community, timeout
            )
    except TimeoutError:
        error_indication, error_status, var_binds = "timeout", 0, ()
    except PySnmpError as exc:
        return _Probe("unknown", failure=f"SNMP: {where}: {exc}")
    if error_indication:
        return _Probe(
            "unknown",
            failure=f"SNMP: no answer from {where} within {timeout:g} s "
            "(SNMP off, another community, or host down)",
        )
    if error_status:
        return _Probe("unknown", failure=f"SNMP: {where} answered {error_status.prettyPrint()}")
    if len(var_binds) != 2:
        return _Probe("unknown", failure=f"SNMP: {where} sent a malformed answer")
    (status_oid, status_value), (state_oid, state_value) = var_binds
    index = _row(state_oid, _HR_PRINTER_ERROR_STATE)
    if index is None or not hasattr(state_value, "asOctets"):
        return _Probe(
            "unknown",
            failure=f"SNMP: {where} has no hrPrinterTable (not a printer, or its "
            "Host Resources MIB is turned off)",
        )
    conditions = decode_error_state(bytes(state_value.asOctets()))
    state: State = "unknown"
    if _row(status_oid, _HR_PRINTER_STATUS) == index:
        with contextlib.suppress(TypeError, ValueError):
            state = _HR_STATUS.get(int(status_value), "unknown")
    in_error = any(c in blocking for c in conditions)
    if in_error:
        state = "stopped"
    return _Probe(state, conditions, in_error, "snmp")


async def snmp_health(
    host: str,
    *,
    port: int = 161,
    community: str = "public",
    timeout: float = 2.0,
    blocking: Sequence[str] = DEFAULT_BLOCKING,
) -> Health:
    """Read hrPrinterStatus and hrPrinterDetectedErrorState over SNMPv2c.

    In error when a condition in `blocking` is set. No answer is "unknown", not an error.
    """
    return _health(await _snmp_probe(host, port, community, timeout, frozenset(blocking)))


# --------------------------------------------------------------------------- combined


async def _tcp_probe(host: str, port: int, timeout: float) -> _Probe:
    """Without SNMP, a socket:// or lpd:// printer can only be told apart as reachable or not."""
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port)
    except TimeoutError:
        return _offline(f"no answer within {timeout:g} s", "none")
    except OSError as exc:
        return _offline(http.os_reason(exc), "none")
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return _Probe(
        "unknown",
        failure=f"port {port} accepts connections; set up SNMP to see paper, door and jam state",
    )


async def check(
    uri: str,
    *,
    snmp_host: str | None = None,
    snmp_community: str = "public",
    snmp_port: int = 161,
    blocking: Sequence[str] = DEFAULT_BLOCKING,
    timeout: float = 3.0,
) -> Health:
    """The health of the printer behind a device URI: IPP and SNMP at once, combined.

    ipp:// and ipps:// printers are asked over IPP, and over SNMP too when `snmp_host` is
    set. socket:// and lpd:// printers are asked over SNMP when it is set, else they get a
    TCP connect check (refused or silent: offline).
    """
    blocked = frozenset(blocking)
    scheme = urlsplit(uri).scheme.lower()
    if scheme in ("ipp", "ipps"):
        _endpoint(uri)  # raise on a malformed URI before anything starts
        ipp = _ipp_probe(uri, timeout, blocked)
        if not snmp_host:
            return _health(await ipp)
        snmp = _snmp_probe(snmp_host, snmp_port, snmp_community, timeout, blocked)
        return _health(*await asyncio.gather(ipp, snmp))
    if scheme in ("socket", "lpd"):
        target = parse_printer_uri(uri)
        if snmp_host:
            return _health(
                await _snmp_probe(snmp_host, snmp_port, snmp_community, timeout, blocked)
            )
        return _health(await _tcp_probe(target.host, target.port, timeout))
    raise ValueError(f"device URI {uri!r}: no health check for scheme {scheme!r}")


# --------------------------------------------------------------------------- cache


class HealthCache:
    """Fresh state at release time, polled on demand.

    At most one poll is in flight per printer (concurrent callers share it), and a result
    is reused while it is at most `max_age` seconds old (by its `checked_at`). A poll that
    raises is not cached; a caller that is cancelled does not cancel the poll for others.
    """

    def __init__(self, *, max_age: float = 2.0) -> None:
        if max_age < 0:
            raise ValueError("max_age must not be negative")
        self.max_age = max_age
        self._results: dict[str, Health] = {}
        self._polls: dict[str, asyncio.Task[Health]] = {}

    async def get(self, key: str, probe: Callable[[], Awaitable[Health]]) -> Health:
        """The cached health of `key` if fresh, else the result of (one shared) `probe()`."""
        cached = self._results.get(key)
        if cached is not None and time.monotonic() - cached.checked_at <= self.max_age:
            return cached
        poll = self._polls.get(key)
        if poll is None:

            async def run() -> Health:
                return await probe()

            poll = asyncio.create_task(run(), name=f"health:{key}")
            self._polls[key] = poll
            poll.add_done_callback(functools.partial(self._finished, key))
        return await asyncio.shield(poll)

    def _finished(self, key: str, poll: asyncio.Task[Health]) -> None:
        if self._polls.get(key) is poll:
            del self._polls[key]
        if poll.cancelled():
            return
        if poll.exception() is None:  # also marks an error as retrieved when nobody waits
            self._results[key] = poll.result()
