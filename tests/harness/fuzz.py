"""Mutation fuzzing of the three parsers that read bytes from the network unauthenticated:
the IPP codec (RFC 8010), the LPD command, subcommand and control file parsers (RFC 1179),
and the PJL header scanner.

A finding is any exception other than the parser's own refusal (IppParseError, LpdError;
the PJL scanner never raises), a disagreement between whole and piecewise parsing, a
decoded IPP message that does not re-encode to itself, or one input taking longer than
``SLOW`` seconds (a hang: a watchdog alarm also interrupts a true infinite loop).
"""

from __future__ import annotations

import math
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType

from spoolvault.documents.pjl import PjlScanner, scan
from spoolvault.intake.lpd import LpdError, parse_command, parse_control_file, parse_subcommand
from spoolvault.ipp.codec import (
    Collection,
    IppMessage,
    IppParseError,
    Parser,
    Range,
    Resolution,
    StringWithLanguage,
    decode,
    encode,
)
from spoolvault.ipp.constants import GroupTag, Operation, Status, ValueTag

SLOW = 1.0  # seconds for one input: anything slower is reported
WATCHDOG = 30  # seconds without finishing an input: the run is interrupted as a hang

T = ValueTag


def ipp_seeds() -> list[bytes]:
    """Valid messages with every kind of value: what mutations start from."""
    msg = IppMessage((2, 0), Operation.PRINT_JOB, 42)
    op = msg.operation
    op.add("attributes-charset", T.CHARSET, "utf-8")
    op.add("attributes-natural-language", T.NATURAL_LANGUAGE, "en-us")
    op.add("printer-uri", T.URI, "ipp://print.example.com:631/printers/secure")
    op.add("requesting-user-name", T.NAME, "alice")
    op.add("job-name", T.NAME_WITH_LANGUAGE, StringWithLanguage("fr", "Rapport été"))
    op.add("document-format", T.MIME_MEDIA_TYPE, "application/pdf")
    op.add("job-password", T.OCTET_STRING, b"1234")
    job = msg.add_group(GroupTag.JOB)
    job.add("copies", T.INTEGER, 2)
    job.add("sides", T.KEYWORD, "two-sided-long-edge")
    job.add("print-quality", T.ENUM, 4)
    job.add("page-ranges", T.RANGE_OF_INTEGER, Range(1, 12), Range(20, 22))
    job.add("printer-resolution", T.RESOLUTION, Resolution(600, 600, 3))
    job.add("job-hold-until", T.KEYWORD, "indefinite")
    job.add("fit", T.BOOLEAN, True)
    size = Collection()
    size.add("x-dimension", T.INTEGER, 21000)
    size.add("y-dimension", T.INTEGER, 29700)
    media = Collection()
    media.add("media-size", T.BEGIN_COLLECTION, size)
    media.add("media-source", T.KEYWORD, "auto")
    job.add("media-col", T.BEGIN_COLLECTION, media, media)
    resp = IppMessage.response(msg, Status.SUCCESSFUL_OK, "ok")
    jobs = IppMessage((1, 1), Operation.GET_JOBS, 7)
    jobs.operation.add("attributes-charset", T.CHARSET, "utf-8")
    jobs.operation.add("attributes-natural-language", T.NATURAL_LANGUAGE, "en")
    jobs.operation.add("requested-attributes", T.KEYWORD, "job-id", "job-state", "job-name")
    return [encode(msg) + b"%PDF-1.7 document", encode(resp), encode(jobs)]


LPD_SEEDS = [
    b"\x02secure",
    b"\x01secure",
    b"\x03secure alice 12 bob",
    b"\x04secure alice",
    b"\x05secure alice 3 4 alice",
    b"\x02123 cfA001host",
    b"\x03 999999999999 dfA001host",
    b"\x01",
]
CONTROL_SEEDS = [
    b"Hhost\nPalice\nJReport\nLalice\nldfA001host\nNreport.pdf\nUdfA001host\n",
    b"Hh\nPbob\nfdfA002h\nfdfA002h\nodfB002h\nNb.ps\nNa.txt\n",
    b"N\xc3\xa9t\xc3\xa9\nP\xe9\nJ\x1b[31m\n",
]
PJL_SEEDS = [
    b'\x1b%-12345X@PJL JOB NAME="Report.docx"\r\n@PJL SET USERNAME="alice"\r\n'
    b"@PJL ENTER LANGUAGE=POSTSCRIPT\r\n%!PS-Adobe-3.0\n",
    b'\x1b%-12345X@PJL\n@PJL SET JOBATTR="JobAcct1=wuxingj"\n@PJL SET JOBATTR="@LUNA=x"\n'
    b'@PJL COMMENT "Username: bob; App Filename: a.pdf; 1/1/2024"\n@PJL ENTER LANGUAGE=PCL\n',
    b"\x00\x04\r\n@pjl set username = carol\n@PJL INFO STATUS\n",
    b"%PDF-1.7\n",
]
TOKENS = [
    b"\x1b%-12345X",
    b"@PJL ",
    b"SET USERNAME=",
    b"JOBATTR=",
    b"ENTER LANGUAGE=",
    b'"',
    b"\r\n",
    b"\n",
    b"\x00",
    b" ",
    b"=",
    b"\xff\xfe",
    b"\x4a",
    b"\x7f\xff\xff\xff",
    b"\xff\xff",
    b"\x00\x00",
    bytes([0x34]),
    bytes([0x37]),
    bytes([0x03]),
]


def mutate(rng: random.Random, data: bytes, seeds: list[bytes]) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 5)):
        kind = rng.randrange(8)
        at = rng.randrange(len(out) + 1)
        if kind == 0 and out:
            out[at % len(out)] ^= 1 << rng.randrange(8)
        elif kind == 1:
            del out[at:]
        elif kind == 2:
            out[at:at] = rng.randbytes(rng.randint(1, 8))
        elif kind == 3:
            del out[at : at + rng.randint(1, 8)]
        elif kind == 4 and out:
            out[at % len(out)] = rng.choice((0, 0xFF, 0x7F, 0x80, rng.randrange(256)))
        elif kind == 5:
            out[at:at] = rng.choice(TOKENS)
        elif kind == 6:
            other = rng.choice(seeds)
            cut = rng.randrange(len(other) + 1)
            out[at:] = other[cut:]  # splice
        else:
            span = out[at : at + rng.randint(1, 16)]
            out[at:at] = span * rng.randint(1, 50)  # repeat a piece
    return bytes(out)


@dataclass
class Stats:
    inputs: int = 0
    accepted: int = 0
    refused: int = 0
    findings: list[str] = field(default_factory=list)
    slowest_s: float = 0.0
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.inputs / self.seconds if self.seconds else 0.0


class Hang(Exception):
    """The watchdog fired: one input ran for WATCHDOG seconds."""


def _alarm(signum: int, frame: FrameType | None) -> None:
    raise Hang(f"no input finished within {WATCHDOG} s")


def _ipp_outcome(fn: Callable[[], IppMessage]) -> tuple[str, object]:
    try:
        return "ok", fn()
    except IppParseError as exc:
        return "error", exc.status


def _pieces(rng: random.Random, data: bytes) -> IppMessage:
    parser = Parser()
    pos = 0
    while pos < len(data):
        step = rng.randint(1, 64)
        msg = parser.feed(data[pos : pos + step])
        pos += step
        if msg is not None:
            return msg
    parser.finish()
    raise AssertionError("Parser.finish() returned without a message")


def one_ipp(rng: random.Random, data: bytes) -> bool:
    whole = _ipp_outcome(lambda: decode(data)[0])
    split = _ipp_outcome(lambda: _pieces(rng, data))
    if whole != split:
        raise AssertionError(f"decode gave {whole[0]}, Parser gave {split[0]}")
    if whole[0] == "ok":
        msg = whole[1]
        assert isinstance(msg, IppMessage)
        if decode(encode(msg))[0] != msg:
            raise AssertionError("decoded message does not re-encode to itself")
        return True
    return False


def one_lpd(rng: random.Random, data: bytes) -> bool:
    ok = False
    for parse in (parse_command, parse_subcommand):
        try:
            parse(data)
            ok = True
        except LpdError:
            pass
    try:
        parse_control_file(data)
        ok = True
    except LpdError:
        pass
    return ok


def one_pjl(rng: random.Random, data: bytes) -> bool:
    whole = scan(data)
    scanner = PjlScanner()
    pos = 0
    while pos < len(data):
        step = rng.randint(1, 32)
        scanner.feed(data[pos : pos + step])
        pos += step
    if scanner.result() != whole:
        raise AssertionError(f"whole {whole} != piecewise {scanner.result()}")
    return whole.owner is not None


TARGETS: dict[str, tuple[Callable[[random.Random, bytes], bool], Callable[[], list[bytes]]]] = {
    "ipp": (one_ipp, ipp_seeds),
    "lpd": (one_lpd, lambda: LPD_SEEDS + CONTROL_SEEDS),
    "pjl": (one_pjl, lambda: PJL_SEEDS),
}


def fuzz(
    target: str,
    count: int,
    seed: int,
    *,
    max_findings: int = 20,
    seconds: float | None = None,
    seeds: list[bytes] | None = None,
) -> Stats:
    """Run ``count`` mutated inputs through ``target``, fewer if ``seconds`` run out first;
    never raises for a finding (the first ``max_findings`` are kept).

    ``seeds`` replaces the target's own valid inputs (bench/ipp_codec_fuzz.py's messages).
    """
    one, make_seeds = TARGETS[target]
    if seeds is None:
        seeds = make_seeds()
    rng = random.Random(seed)
    stats = Stats()
    previous = signal.signal(signal.SIGALRM, _alarm)
    started = time.perf_counter()
    deadline = math.inf if seconds is None else started + seconds
    try:
        for i in range(count):
            data = mutate(rng, rng.choice(seeds), seeds)
            if i % 1000 == 0:
                signal.alarm(WATCHDOG)
            t0 = time.perf_counter()
            if t0 >= deadline:
                break
            try:
                if one(rng, data):
                    stats.accepted += 1
                else:
                    stats.refused += 1
            except Exception as exc:  # a finding: keep going
                if len(stats.findings) < max_findings:
                    stats.findings.append(f"{type(exc).__name__}: {exc} input={data.hex()}")
            took = time.perf_counter() - t0
            stats.slowest_s = max(stats.slowest_s, took)
            if took > SLOW and len(stats.findings) < max_findings:
                stats.findings.append(f"slow input ({took:.2f} s): {data.hex()}")
            stats.inputs += 1
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        stats.seconds = time.perf_counter() - started
    return stats
