"""Raw 9100 and LPD intake: real sockets against the real listeners, plus fuzzing.

Most tests start `serve_raw` / `serve_lpd` in-process over a real data directory (so they
can shorten the idle timeout and watch the connection count); one starts `spoolvault run`
with --raw and --lpd. The LPD client here follows RFC 1179 byte for byte; `rlpr` (Debian
package rlpr) is used too when it is installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import re
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from harness.server import start_server
from spoolvault.cli.run import _bind
from spoolvault.db import Database, Job, JobState, database_url
from spoolvault.documents.pjl import MAX_LINE, SCAN_LIMIT, UEL, PjlScanner, scan
from spoolvault.intake import IntakeServer
from spoolvault.intake.lpd import (
    LpdError,
    LpdLimits,
    parse_command,
    parse_control_file,
    parse_subcommand,
    serve_lpd,
)
from spoolvault.intake.raw import RawLimits, serve_raw
from spoolvault.jobs.service import JobService
from spoolvault.netaddr import HostPort
from spoolvault.runtime import Runtime
from spoolvault.util.text import clean_text

T = TypeVar("T")

MARKER = b"TOP-SECRET-ACQUISITION-PLAN-91c4"
RAW_LIMITS = RawLimits(idle_timeout=0.5, max_connections=8)
LPD_LIMITS = LpdLimits(idle_timeout=0.5, max_connections=128)
WAIT = 5.0  # seconds any single client step may take before the test fails

Scenario = Callable[[IntakeServer, int], Awaitable[T]]


# -- harness ------------------------------------------------------------------------------


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    with Runtime.open(tmp_path / "data", None, create=True) as runtime:
        yield runtime


def run_server(
    rt: Runtime,
    kind: str,
    scenario: Scenario[T],
    limits: object = None,
    service: type[JobService] = JobService,
) -> T:
    """Start the raw or LPD listener on 127.0.0.1:<ephemeral>, run ``scenario``, stop it."""

    async def main() -> T:
        jobs = service(rt.db, rt.store)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind(("127.0.0.1", 0))
            sock.listen(128)
            port = sock.getsockname()[1]
            if kind == "raw":
                assert limits is None or isinstance(limits, RawLimits)
                server = await serve_raw(jobs, sock, limits=limits or RAW_LIMITS)
            else:
                assert limits is None or isinstance(limits, LpdLimits)
                server = await serve_lpd(jobs, sock, limits=limits or LPD_LIMITS)
        except BaseException:
            sock.close()
            raise
        assert isinstance(server, IntakeServer)
        try:
            async with asyncio.timeout(60):
                return await scenario(server, port)
        finally:
            server.close()
            await server.wait_closed()

    return asyncio.run(main())


def held(rt: Runtime) -> list[Job]:
    return JobService(rt.db, rt.store).list()


def document(rt: Runtime, job: Job) -> bytes:
    assert job.spool_name is not None
    return rt.store.spool(job.encrypted).read_all(job.spool_name)


def spool_entries(rt: Runtime) -> set[str]:
    """Every file in the spool directories (committed, temporary, anything), but the lock."""
    found = set()
    for directory in (rt.data.encrypted_spool, rt.data.plain_spool):
        for path in directory.rglob("*"):
            if path.is_file() and not path.name.startswith("."):
                found.add(str(path.relative_to(rt.data.root)))
    return found


async def until(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def connect(
    port: int, source: str | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection to the listener, from ``source`` (another loopback address) if given."""
    local = (source, 0) if source else None
    return await asyncio.open_connection("127.0.0.1", port, local_addr=local)


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


async def reset(writer: asyncio.StreamWriter) -> None:
    """Close with an RST, as a crashing client or a pulled cable would."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


async def outcome(reader: asyncio.StreamReader) -> str:
    """How the server ended the connection: "closed" (FIN: job kept) or "reset"."""
    try:
        async with asyncio.timeout(WAIT):
            rest = await reader.read()
    except ConnectionResetError:
        return "reset"
    assert rest == b"", rest
    return "closed"


async def raw_print(port: int, data: bytes, chunk: int = 50_000) -> str:
    reader, writer = await connect(port)
    try:
        for i in range(0, len(data), chunk):
            writer.write(data[i : i + chunk])
            await writer.drain()
        writer.write_eof()
        return await outcome(reader)
    finally:
        await close(writer)


def pjl_job(user: str, title: str, body: bytes, eol: bytes = b"\r\n") -> bytes:
    return (
        UEL
        + b'@PJL JOB NAME="'
        + title.encode()
        + b'"'
        + eol
        + b'@PJL SET USERNAME="'
        + user.encode()
        + b'"'
        + eol
        + b"@PJL ENTER LANGUAGE=PCL"
        + eol
        + body
        + UEL
        + b"@PJL EOJ"
        + eol
        + UEL
    )


def secret_body(size: int = 300_000) -> bytes:
    rng = random.Random(9100)
    filler = bytes(rng.getrandbits(8) for _ in range(4096))
    body = bytearray()
    while len(body) < size:
        body += b"\x1bE" + MARKER + filler
    return bytes(body)


# -- PJL ----------------------------------------------------------------------------------

# Headers as drivers send them (see the sources named in documents/pjl.py).
HP_WINDOWS = (
    UEL + b"@PJL SET STRINGCODESET=UTF8\n"
    b'@PJL JOB NAME="Quarterly.docx"\n'
    b'@PJL COMMENT "Username: wuxingj; App Filename: Quarterly.docx; 12-28-2018"\n'
    b'@PJL SET JOBATTR="JobAcct1=wuxingj"\n'
    b'@PJL SET JOBATTR="JobAcct2=WUXINGJ16"\n'
    b'@PJL SET JOBATTR="JobAcct9="\n'
    b'@PJL SET USERNAME="WUXINGJ"\n'
    b"@PJL ENTER LANGUAGE=PCLXL\n" + b"\x00\xff binary PCL XL"
)
HPCUPS = (
    UEL + b"@PJL\r\n"
    b'@PJL JOB NAME = "paper.pdf" DISPLAY = "15 wiwang paper.pdf"\r\n'
    b'@PJL SET USERNAME = "wiwang"\r\n'
    b"@PJL ENTER LANGUAGE = PostScript\r\n%!PS-Adobe-3.0\n"
)
FOO2XQX = (
    UEL + b"@PJL\r\n@PJL SET TIMESTAMP=2015/09/14 21:15:14\r\n"
    b"@PJL SET FILENAME=test - Notepad\r\n@PJL SET COMPRESS=JBIG\r\n"
    b"@PJL SET USERNAME=IEUser\r\n@PJL SET COVER=OFF\r\n"
)
FUJI_XEROX = UEL + b'@PJL JOB MODE=PRINTER\n@PJL SET JOBATTR="@LUNA=kenji"\n@PJL SET QTY=1\n'
# foo2lava/foo2zjs: one JOB line per option, each behind its own UEL.
FOO2LAVA = (
    UEL
    + b'@PJL JOB NAME="report.pdf"\n'
    + UEL
    + b'@PJL JOB USERNAME="alice"\n'
    + UEL
    + b'@PJL JOB TIMESTAMP="05/31/2022"\n'
    + UEL
    + b"@PJL ENTER LANGUAGE=LAVAFLOW\n"
)
# Line ends of CR alone: the document after them is not taken for PJL.
CR_ONLY = b'@PJL SET USERNAME="alice"\r@PJL JOB NAME="t"\r@PJL ENTER LANGUAGE=PCL\r\x1bE page\x0c'
PRACC = (
    b"\x04" + UEL + b"@PJL JOB\n"
    b'@PJL COMMENT "Username: UNTITLED; App Filename: Testseite; 12-13-2003"\n'
    b"@PJL SET RESOLUTION=600\n@PJL ENTER LANGUAGE=POSTSCRIPT\n%!PS-Adobe-3.0\n"
)


@pytest.mark.parametrize(
    ("stream", "owner", "title"),
    [
        (HP_WINDOWS, "wuxingj", "Quarterly.docx"),
        (HPCUPS, "wiwang", "paper.pdf"),
        (FOO2XQX, "IEUser", "test - Notepad"),
        (FUJI_XEROX, "kenji", None),
        (PRACC, "UNTITLED", "Testseite"),
        (FOO2LAVA, "alice", "report.pdf"),
        (CR_ONLY, "alice", "t"),
        (b"@PJL SET USERNAME=bob\r@PJL SET JOBNAME=memo\r\x1bE text\x0c", "bob", "memo"),
        (b'@pjl set username=alice smith\n@pjl set jobname="x y"\n', "alice smith", "x y"),
        (b"%PDF-1.7\n@PJL SET USERNAME=mallory\n", None, None),
        (UEL + b"%!PS-Adobe-3.0\n@PJL SET USERNAME=mallory\n", None, None),
        (UEL + b"@PJL ENTER LANGUAGE=PCL\n@PJL SET USERNAME=mallory\n", None, None),
        (UEL + b'@PJL SET USERNAME="ev\x1b[31mil\x07"\n', "ev[31mil", None),
        (UEL + b'@PJL SET USERNAME="J\xc3\xbcrgen"\n', "J\u00fcrgen", None),
        (UEL + b'@PJL SET USERNAME="J\xfcrgen"\n', "J\u00fcrgen", None),
        (UEL + b'@PJL SET USERNAME="\xe2\x80\xaeevil"\n', "evil", None),
    ],
)
def test_pjl_owner_and_title(stream: bytes, owner: str | None, title: str | None) -> None:
    info = scan(stream)
    assert (info.owner, info.title) == (owner, title)
    # Byte by byte gives the same answer: the scanner is incremental.
    scanner = PjlScanner()
    for i in range(len(stream)):
        scanner.feed(stream[i : i + 1])
    assert scanner.result() == info


def test_pjl_names_are_capped_and_scanning_is_bounded() -> None:
    info = scan(UEL + b'@PJL SET USERNAME="' + "\u00e9".encode() * 400 + b'"\n')
    assert info.owner is not None and len(info.owner.encode()) <= 255
    assert info.owner == "\u00e9" * 127  # cut on a character boundary

    scanner = PjlScanner()
    assert not scanner.feed(UEL + b"@PJL COMMENT " + b"x" * (MAX_LINE - 40))
    assert scanner.feed(b"y" * 100)  # a line longer than any PJL line: not PJL, stop
    endless = PjlScanner()
    line = b"@PJL SET COPIES=1\r\n"
    fed = 0
    while not endless.feed(UEL + line * 100):
        fed += len(UEL + line * 100)
    assert fed < SCAN_LIMIT


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000), st.lists(st.integers(min_value=1, max_value=400), max_size=20))
def test_pjl_scanner_never_fails_and_chunking_does_not_matter(data: bytes, cuts: list[int]) -> None:
    whole = scan(data)
    scanner = PjlScanner()
    pos = 0
    for cut in cuts:
        scanner.feed(data[pos : pos + cut])
        pos += cut
    scanner.feed(data[pos:])
    assert scanner.result() == whole


_words = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters='"\r\n'),
    min_size=1,
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(
    user=_words,
    title=_words,
    eol=st.sampled_from([b"\n", b"\r\n"]),
    quoted=st.booleans(),
    case=st.sampled_from([str.upper, str.lower, str.title]),
    junk=st.binary(max_size=200),
)
def test_pjl_headers_in_any_spelling(
    user: str,
    title: str,
    eol: bytes,
    quoted: bool,
    case: Callable[[str], str],
    junk: bytes,
) -> None:
    value = f'"{user}"' if quoted else user.strip()
    header = (
        UEL
        + case("@pjl set stringcodeset=utf8").encode()
        + eol
        + case("@pjl job name = ").encode()
        + f'"{title}"'.encode()
        + eol
        + case("@pjl set username=").encode()
        + value.encode()
        + eol
        + case("@pjl enter language=pdf").encode()
        + eol
        + junk
    )
    info = scan(header)
    assert info.owner == (clean_text(user if quoted else user.strip()) or None)
    assert info.title == (clean_text(title) or None)


# -- raw 9100 -----------------------------------------------------------------------------


def test_raw_job_with_pjl_is_held_encrypted_and_byte_identical(rt: Runtime) -> None:
    data = pjl_job("alice", "Quarterly report", secret_body())

    async def scenario(server: IntakeServer, port: int) -> str:
        return await raw_print(port, data)

    assert run_server(rt, "raw", scenario) == "closed"
    [job] = held(rt)
    assert (job.owner, job.title, job.queue, job.state) == (
        "alice",
        "Quarterly report",
        "secure",
        JobState.HELD,
    )
    assert job.originating_host == "127.0.0.1"
    assert job.encrypted and job.size == len(data)
    assert document(rt, job) == data
    for path in rt.data.root.rglob("*"):
        if path.is_file():
            assert MARKER not in path.read_bytes(), path


def _has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _has_ipv6(), reason="no IPv6 loopback")
@pytest.mark.parametrize("serve", [serve_raw, serve_lpd])
def test_intake_listens_on_ipv6(rt: Runtime, serve: Callable[..., Any]) -> None:
    async def main() -> None:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        sock.bind(("::1", 0))
        sock.listen(8)
        port = sock.getsockname()[1]
        server = await serve(JobService(rt.db, rt.store), sock)
        try:
            reader, writer = await asyncio.open_connection("::1", port)
            if serve is serve_raw:
                writer.write(pjl_job("ivy", "v6", b"over IPv6"))
                writer.write_eof()
                assert await outcome(reader) == "closed"
            else:
                writer.write(b"\x01secure\n")
                assert await reader.read(1) == b"\x00"
            await close(writer)
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(main())
    if serve is serve_raw:
        [job] = held(rt)
        assert (job.owner, job.originating_host) == ("ivy", "::1")


def test_raw_job_without_pjl_is_held_for_unknown_with_a_warning(
    rt: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    data = b"%!PS-Adobe-3.0\n/Helvetica findfont 12 scalefont setfont\nshowpage\n"

    async def scenario(server: IntakeServer, port: int) -> str:
        return await raw_print(port, data)

    with caplog.at_level(logging.WARNING, logger="spoolvault.intake.raw"):
        assert run_server(rt, "raw", scenario) == "closed"
    [job] = held(rt)
    assert (job.owner, job.title) == ("unknown", "raw job from 127.0.0.1")
    assert document(rt, job) == data
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("no owner" in m and "administrator" in m for m in warnings), warnings


def test_raw_job_with_cr_only_pjl_lines_is_held_not_taken_for_a_query(rt: Runtime) -> None:
    """A header whose lines end in CR alone: the page after it is a document, not more PJL
    (it was taken for a PJL-only status query and dropped, its client hearing success)."""

    async def scenario(server: IntakeServer, port: int) -> str:
        return await raw_print(port, CR_ONLY)

    assert run_server(rt, "raw", scenario) == "closed"
    [job] = held(rt)
    assert (job.owner, job.title) == ("alice", "t")
    assert document(rt, job) == CR_ONLY


def test_raw_connections_without_a_document_make_no_job(rt: Runtime) -> None:
    async def scenario(server: IntakeServer, port: int) -> list[str]:
        results = []
        reader, writer = await connect(port)
        writer.write_eof()
        results.append(await outcome(reader))
        await close(writer)
        # A status query, as drivers and printer monitors send them: PJL and nothing else.
        query = UEL + b"@PJL\r\n@PJL INFO STATUS\r\n@PJL USTATUS DEVICE=ON\r\n" + UEL
        results.append(await raw_print(port, query))
        _, writer = await connect(port)
        await reset(writer)
        await until(lambda: server.active == 0, "the reset connection to end")
        return results

    assert run_server(rt, "raw", scenario) == ["closed", "closed"]
    assert held(rt) == []
    assert spool_entries(rt) == set()


def test_raw_client_reset_mid_job_leaves_nothing(rt: Runtime) -> None:
    async def scenario(server: IntakeServer, port: int) -> None:
        _, writer = await connect(port)
        writer.write(pjl_job("alice", "half", secret_body(600_000))[:400_000])
        await writer.drain()
        await until(lambda: server.active == 1, "the connection")
        await asyncio.sleep(0.1)  # let the server spool some of it
        await reset(writer)
        await until(lambda: server.active == 0, "the server to drop the job")

    run_server(rt, "raw", scenario)
    assert held(rt) == []
    assert spool_entries(rt) == set()


@pytest.mark.parametrize("kind", ["raw", "lpd"])
def test_a_connection_resets_from_the_moment_it_is_accepted(rt: Runtime, kind: str) -> None:
    """The kernel's close of a socket no session has seen yet is a reset, not a FIN.

    asyncio may accept a connection and read all of its bytes before the session's first
    line runs. If the process dies then (SIGKILL), the kernel closes that socket; with
    nothing left unread and the default linger that close is a FIN, which a raw client
    takes for "job accepted". The crash drill lost raw jobs that way (docs/reliability.md).
    Here the test accepts from the server's listening socket itself while the event loop
    is held, reads everything, and closes the socket as the kernel would at a death.
    """

    async def scenario(server: IntakeServer, port: int) -> bytes | str:
        listener = server.sockets[0]
        with (
            socket.socket(fileno=os.dup(listener.fileno())) as stolen,
            socket.create_connection(("127.0.0.1", port), timeout=WAIT) as client,
        ):
            client.sendall(pjl_job("alice", "unseen", b"never kept\n"))
            client.shutdown(socket.SHUT_WR)
            # The event loop does not run until this coroutine awaits: it cannot take the
            # connection first.
            stolen.settimeout(WAIT)  # (non-blocking, as asyncio left it, with a wait)
            conn, _ = stolen.accept()
            with conn:
                conn.settimeout(WAIT)
                while conn.recv(65536):
                    pass
            try:
                return client.recv(1)  # b"": a FIN
            except ConnectionResetError:
                return "reset"

    assert run_server(rt, kind, scenario) == "reset"
    assert held(rt) == []


def test_spoolvault_run_binds_raw_and_lpd_to_reset_before_it_listens() -> None:
    """A connection the kernel accepts while the server is still starting (a client
    retrying after a crash) must be born with the reset too, so `spoolvault run` sets it
    before listen(); its HTTP port keeps ordinary closes."""
    linger = struct.calcsize("ii")
    for reset in (True, False):
        with _bind(HostPort("127.0.0.1", 0), "--raw", reset=reset) as listener:
            with socket.create_connection(listener.getsockname(), timeout=WAIT):
                conn, _ = listener.accept()
                with conn:
                    got = struct.unpack(
                        "ii", conn.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                    )
            assert got == ((1, 0) if reset else (0, 0))


def test_raw_idle_client_is_dropped_and_its_job_discarded(rt: Runtime) -> None:
    async def scenario(server: IntakeServer, port: int) -> str:
        reader, writer = await connect(port)
        try:
            writer.write(pjl_job("alice", "stalled", b"x" * 1000)[:500])
            await writer.drain()
            return await outcome(reader)  # no half-close: the server must give up
        finally:
            await close(writer)

    assert run_server(rt, "raw", scenario) == "reset"
    assert held(rt) == []
    assert spool_entries(rt) == set()


def test_raw_connection_cap_resets_the_excess(rt: Runtime) -> None:
    limits = RawLimits(idle_timeout=5, max_connections=2)

    async def scenario(server: IntakeServer, port: int) -> str:
        first = [await connect(port) for _ in range(2)]
        for _, writer in first:
            writer.write(b"%!PS partial")
            await writer.drain()
        await until(lambda: server.active == 2, "two connections")
        reader, writer = await connect(port)
        try:
            refused = await outcome(reader)
        finally:
            await close(writer)
        assert server.active == 2
        for reader, writer in first:
            writer.write(b" rest\n")
            writer.write_eof()
            assert await outcome(reader) == "closed"
            await close(writer)
        return refused

    assert run_server(rt, "raw", scenario, limits) == "reset"
    assert [job.size for job in held(rt)] == [len(b"%!PS partial rest\n")] * 2


def test_raw_server_close_aborts_jobs_in_flight(rt: Runtime) -> None:
    async def scenario(server: IntakeServer, port: int) -> str:
        reader, writer = await connect(port)
        try:
            writer.write(pjl_job("alice", "interrupted", b"y" * 200_000)[:150_000])
            await writer.drain()
            await until(lambda: server.active == 1, "the connection")
            await asyncio.sleep(0.1)  # the server is spooling it now
            server.close()
            await server.wait_closed()
            return await outcome(reader)
        finally:
            await close(writer)

    assert run_server(rt, "raw", scenario) == "reset"
    assert held(rt) == []
    assert spool_entries(rt) == set()


class SlowCommit(JobService):
    """A job service whose commit step takes a while, to stop the server in the middle."""

    committing: threading.Event

    def _record_batch(self, *args: Any, **kwargs: Any) -> None:
        SlowCommit.committing.set()
        time.sleep(0.3)
        super()._record_batch(*args, **kwargs)


def test_raw_server_close_lets_a_complete_job_commit(rt: Runtime) -> None:
    data = pjl_job("alice", "complete", b"z" * 100_000)

    async def scenario(server: IntakeServer, port: int) -> str:
        SlowCommit.committing = threading.Event()
        reader, writer = await connect(port)
        try:
            writer.write(data)
            writer.write_eof()
            assert await asyncio.to_thread(SlowCommit.committing.wait, WAIT)
            server.close()
            await server.wait_closed()
            return await outcome(reader)
        finally:
            await close(writer)

    assert run_server(rt, "raw", scenario, service=SlowCommit) == "closed"
    [job] = held(rt)
    assert document(rt, job) == data


# -- LPD: a faithful RFC 1179 client ------------------------------------------------------


class Lpd:
    """One connection to an LPD server, speaking RFC 1179 as BSD lpr does."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int, source: str | None = None) -> Lpd:
        return cls(*await connect(port, source))

    async def ack(self) -> bytes:
        async with asyncio.timeout(WAIT):
            return await self.reader.read(1)

    async def line(self, code: int, text: str | bytes) -> bytes:
        raw = text.encode() if isinstance(text, str) else text
        self.writer.write(bytes([code]) + raw + b"\n")
        await self.writer.drain()
        return await self.ack()

    async def send_file(self, code: int, name: str, content: bytes) -> list[bytes]:
        """Subcommand, its ack, the content and NUL, the second ack: [ack, ack]."""
        first = await self.line(code, f"{len(content)} {name}")
        if first != b"\x00":
            return [first]
        self.writer.write(content + b"\x00")
        await self.writer.drain()
        return [first, await self.ack()]

    async def control(self, name: str, content: bytes) -> list[bytes]:
        return await self.send_file(2, name, content)

    async def data(self, name: str, content: bytes) -> list[bytes]:
        return await self.send_file(3, name, content)

    async def text(self) -> str:
        async with asyncio.timeout(WAIT):
            return (await self.reader.read()).decode()

    async def close(self) -> None:
        await close(self.writer)


def control_file(
    files: list[tuple[str, str]],
    *,
    user: str | None = "alice",
    banner: str | None = None,
    job: str | None = "Budget 2027",
    letter: str = "l",
) -> bytes:
    """A control file as BSD lpr writes it: H P J L, then per file: print line, U, N."""
    lines = ["Hclient.example"]
    if user is not None:
        lines.append(f"P{user}")
    if job is not None:
        lines.append(f"J{job}")
    if banner is not None:
        lines.append(f"L{banner}")
    for name, source in files:
        lines += [f"{letter}{name}", f"U{name}", f"N{source}"]
    return ("\n".join(lines) + "\n").encode()


async def lpr(
    port: int,
    files: dict[str, bytes],
    cf: bytes,
    *,
    data_first: bool = False,
    queue: str = "secure",
) -> list[bytes]:
    """Send one job; return every acknowledgement octet received, in order."""
    client = await Lpd.open(port)
    try:
        acks = [await client.line(2, queue)]
        if acks[0] != b"\x00":
            return acks
        if not data_first:
            acks += await client.control("cfA123client.example", cf)
        for name, content in files.items():
            acks += await client.data(name, content)
        if data_first:
            acks += await client.control("cfA123client.example", cf)
        return acks
    finally:
        await client.close()


# -- LPD ----------------------------------------------------------------------------------


@pytest.mark.parametrize("data_first", [False, True], ids=["control-first", "data-first"])
def test_lpd_job_is_held_for_the_p_user(rt: Runtime, data_first: bool) -> None:
    body = secret_body(400_000)
    cf = control_file([("dfA123client.example", "budget.pcl")])
    cf += b"ldfA123client.example\n"  # lpr -#2: the same file printed twice is one job

    async def scenario(server: IntakeServer, port: int) -> list[bytes]:
        return await lpr(port, {"dfA123client.example": body}, cf, data_first=data_first)

    assert run_server(rt, "lpd", scenario) == [b"\x00"] * 5
    [job] = held(rt)
    assert (job.owner, job.title, job.queue) == ("alice", "Budget 2027", "secure")
    assert job.encrypted and document(rt, job) == body
    assert job.originating_host == "127.0.0.1"
    for path in rt.data.root.rglob("*"):
        if path.is_file():
            assert MARKER not in path.read_bytes(), path


def test_lpd_several_data_files_and_jobs_on_one_connection(rt: Runtime) -> None:
    """BSD lpd forwarding: data, control, data, control on one receive-job command."""

    async def scenario(server: IntakeServer, port: int) -> list[bytes]:
        client = await Lpd.open(port)
        try:
            acks = [await client.line(2, "SECURE")]
            acks += await client.data("dfA001h", b"first document")
            acks += await client.data("dfB001h", b"second document")
            acks += await client.control(
                "cfA001h", control_file([("dfA001h", "a.txt"), ("dfB001h", "b.txt")], user="bob")
            )
            acks += await client.data("dfA002h", b"third document")
            acks += await client.control(
                "cfA002h", control_file([("dfA002h", "c.txt")], user=None, banner="carol", job=None)
            )
            return acks
        finally:
            await client.close()

    assert run_server(rt, "lpd", scenario) == [b"\x00"] * 11
    jobs = held(rt)
    assert [(j.owner, j.title) for j in jobs] == [
        ("bob", "a.txt"),
        ("bob", "b.txt"),
        ("carol", "c.txt"),
    ]
    assert [document(rt, j) for j in jobs] == [
        b"first document",
        b"second document",
        b"third document",
    ]


def test_lpd_owner_falls_back_to_pjl_then_unknown(
    rt: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    with_pjl = pjl_job("dave", "From PJL", b"PCL data")

    async def scenario(server: IntakeServer, port: int) -> None:
        cf = control_file([("dfA1h", "x")], user=None, job=None)
        assert await lpr(port, {"dfA1h": with_pjl}, cf) == [b"\x00"] * 5
        cf = control_file([("dfA2h", "")], user=None, job=None)
        assert await lpr(port, {"dfA2h": b"plain"}, cf) == [b"\x00"] * 5

    with caplog.at_level(logging.WARNING, logger="spoolvault.intake.lpd"):
        run_server(rt, "lpd", scenario)
    assert [(j.owner, j.title) for j in held(rt)] == [
        ("dave", "x"),
        ("unknown", "LPD job from 127.0.0.1"),
    ]
    assert any("no owner" in r.getMessage() for r in caplog.records)


def test_lpd_data_file_of_unknown_length_runs_to_the_end(rt: Runtime) -> None:
    async def scenario(server: IntakeServer, port: int) -> tuple[list[bytes], list[bytes]]:
        client = await Lpd.open(port)
        acks = [await client.line(2, "secure")]
        acks += await client.control("cfA9h", control_file([("dfA9h", "stream")]))
        acks.append(await client.line(3, "0 dfA9h"))
        client.writer.write(b"streamed until close")
        client.writer.write_eof()
        acks.append(await client.ack())
        await client.close()
        # Unknown length before the control file: nothing could follow it; refused.
        client = await Lpd.open(port)
        refused = [await client.line(2, "secure"), await client.line(3, "0 dfA9h")]
        await client.close()
        return acks, refused

    acks, refused = run_server(rt, "lpd", scenario)
    assert acks == [b"\x00"] * 5
    assert refused == [b"\x00", b"\x01"]
    [job] = held(rt)
    assert document(rt, job) == b"streamed until close"


def test_lpd_abort_subcommand_keeps_nothing(rt: Runtime) -> None:
    async def scenario(server: IntakeServer, port: int) -> bytes:
        client = await Lpd.open(port)
        try:
            assert await client.line(2, "secure") == b"\x00"
            assert await client.data("dfA5h", b"doomed" * 1000) == [b"\x00", b"\x00"]
            return await client.line(1, "")
        finally:
            await client.close()

    assert run_server(rt, "lpd", scenario) == b""  # no answer; the connection is closed
    assert held(rt) == []
    assert spool_entries(rt) == set()


@pytest.mark.parametrize(
    ("exchange", "expected"),
    [
        ([b"\x02nosuchqueue\n"], [b"\x01"]),
        ([b"\x01nosuchqueue\n"], [b"\x01"]),
        ([b"\x01secure\n"], [b"\x00"]),
        ([b"\x09secure\n"], [b"\x01"]),
        ([b"\x02\n"], [b"\x01"]),
        ([b"\x02secure\n", b"\x02" + b"70000 cfA1h\n"], [b"\x00", b"\x01"]),
        ([b"\x02secure\n", b"\x02" + b"0 cfA1h\n"], [b"\x00", b"\x01"]),
        ([b"\x02secure\n", b"\x03" + b"12x dfA1h\n"], [b"\x00", b"\x01"]),
        ([b"\x02secure\n", b"\x03" + b"5\n"], [b"\x00", b"\x01"]),
        ([b"\x02secure\n", b"\x07" + b"5 dfA1h\n"], [b"\x00", b"\x01"]),
        ([b"\x02secure\n", b"\x03" + b"5 dfA1h\n", b"hello!"], [b"\x00", b"\x00", b"\x01"]),
        ([b"\x02secure\n", b"\x03" + b"9" * 21 + b" dfA1h\n"], [b"\x00", b"\x01"]),
        ([b"\x02" + b"q" * 2000 + b"\n"], [b"\x01"]),
        (
            [b"\x02secure\n", b"\x02" + b"1100 cfA1h\n", b"P" + b"a" * 1098 + b"\n\x00"],
            [b"\x00", b"\x00", b"\x01"],
        ),
    ],
)
def test_lpd_malformed_requests_get_a_negative_ack(
    rt: Runtime, exchange: list[bytes], expected: list[bytes]
) -> None:
    async def scenario(server: IntakeServer, port: int) -> list[bytes]:
        client = await Lpd.open(port)
        try:
            answers = []
            for part in exchange:
                client.writer.write(part)
                await client.writer.drain()
                answers.append(await client.ack())
            return answers
        finally:
            await client.close()

    assert run_server(rt, "lpd", scenario) == expected
    assert held(rt) == []
    assert spool_entries(rt) == set()


def test_lpd_queue_state_lists_only_the_named_users_jobs(rt: Runtime) -> None:
    async def scenario(server: IntakeServer, port: int) -> dict[str, str]:
        await lpr(port, {"dfA1h": b"a" * 10}, control_file([("dfA1h", "a")], job="Alice plan"))
        await lpr(
            port, {"dfA2h": b"b" * 20}, control_file([("dfA2h", "b")], user="bob", job="Bob memo")
        )
        replies = {}
        for key, code, text in [
            ("short", 3, "secure alice"),
            ("long", 4, "secure alice"),
            ("nobody", 3, "secure"),
            ("byid", 3, "secure alice 2"),
            ("unknown", 3, "other alice"),
        ]:
            client = await Lpd.open(port)
            client.writer.write(bytes([code]) + text.encode() + b"\n")
            replies[key] = await client.text()
            await client.close()
        return replies

    replies = run_server(rt, "lpd", scenario)
    alice = next(j for j in held(rt) if j.owner == "alice")
    assert re.search(rf"1st\s+alice\s+{alice.id}\s+Alice plan\s+10 bytes", replies["short"])
    assert "Bob memo" not in replies["short"] and "bob" not in replies["short"]
    assert f"[job {alice.id} held]" in replies["long"] and "Alice plan" in replies["long"]
    assert "2 held job(s)" in replies["nobody"] and "Alice plan" not in replies["nobody"]
    assert "no entries" in replies["byid"]  # job 2 is bob's
    assert "no queue named other" in replies["unknown"]


def test_lpd_remove_is_limited_to_the_agents_own_jobs(rt: Runtime) -> None:
    async def remove(port: int, text: str, source: str | None = None) -> str:
        client = await Lpd.open(port, source)
        client.writer.write(b"\x05" + text.encode() + b"\n")
        try:
            return await client.text()
        finally:
            await client.close()

    async def scenario(server: IntakeServer, port: int) -> list[str]:
        for n, user in enumerate(["alice", "alice", "bob", "alice"], start=1):
            await lpr(port, {f"dfA{n}h": b"doc"}, control_file([(f"dfA{n}h", "d")], user=user))
        return [
            # The claim "alice" from another host (127.0.0.2) removes nothing.
            await remove(port, "secure alice 1", source="127.0.0.2"),
            await remove(port, "secure bob 1"),
            await remove(port, "secure root 1 alice"),
            await remove(port, "secure alice 1"),
            await remove(port, "secure alice alice"),
            await remove(port, "secure alice"),
        ]

    replies = run_server(rt, "lpd", scenario)
    assert "submitted from another host" in replies.pop(0)
    assert "no such job of bob" in replies[0]
    assert "may remove only their own jobs" in replies[1] and "no such job of root" in replies[1]
    assert replies[2] == "job 1 removed\n"
    assert replies[3] == "job 2 removed\njob 4 removed\n"
    assert "name the job numbers" in replies[4]
    states = {j.id: (j.owner, j.state) for j in held(rt)}
    assert states == {
        1: ("alice", JobState.CANCELLED),
        2: ("alice", JobState.CANCELLED),
        3: ("bob", JobState.HELD),
        4: ("alice", JobState.CANCELLED),
    }


def test_lpd_user_names_act_on_no_job_while_ipp_authentication_is_required(
    rt: Runtime,
) -> None:
    """An LPD user name is a claim: once IPP needs authentication, a job's owner may be a
    proven identity, so LPD neither lists nor removes anybody's jobs; hidden titles stay
    hidden in listings either way."""

    async def ask(port: int, code: int, text: str) -> str:
        client = await Lpd.open(port)
        client.writer.write(bytes([code]) + text.encode() + b"\n")
        try:
            return await client.text()
        finally:
            await client.close()

    async def first(server: IntakeServer, port: int) -> str:
        await lpr(port, {"dfA1h": b"a" * 10}, control_file([("dfA1h", "a")], job="Salary plan"))
        return await ask(port, 3, "secure alice")

    async def then(server: IntakeServer, port: int) -> list[str]:
        return [
            await ask(port, 3, "secure alice"),
            await ask(port, 4, "secure alice 1"),
            await ask(port, 5, "secure alice 1"),
            await ask(port, 5, "secure alice alice"),
        ]

    rt.db.update_settings("primary", {"hide_document_names": True})
    hidden = run_server(rt, "lpd", first)
    rt.db.update_settings("primary", {"ipp_authentication_required": True})
    short, long, by_id, by_name = run_server(rt, "lpd", then)
    [job] = held(rt)
    assert re.search(rf"1st\s+alice\s+{job.id}\s+\(hidden\)\s+10 bytes", hidden), hidden
    for listing in (short, long):
        assert "1 held job(s)" in listing and "listing a user's jobs over LPD is off" in listing
        assert "alice" not in listing and "Salary" not in listing
    for reply in (by_id, by_name):
        assert "removing jobs over LPD is off" in reply
        assert not re.search(r"job \d+ removed", reply)
    assert job.state is JobState.HELD


def test_lpd_survives_a_flood_of_garbage(rt: Runtime) -> None:
    rng = random.Random(1179)
    payloads = [bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 300))) for _ in range(40)]
    # Garbage that starts like a real job, so the subcommand and file paths see it too.
    payloads += [b"\x02secure\n" + p for p in payloads[:20]]
    payloads += [
        b"\x02secure\n\x03" + str(rng.randint(1, 99)).encode() + b" dfA\n" + p
        for p in payloads[:10]
    ]

    async def one(port: int, payload: bytes) -> None:
        reader, writer = await connect(port)
        try:
            writer.write(payload)
            writer.write_eof()
            async with asyncio.timeout(WAIT):
                with contextlib.suppress(ConnectionResetError):
                    await reader.read()
        finally:
            await close(writer)

    async def scenario(server: IntakeServer, port: int) -> list[bytes]:
        await asyncio.gather(*(one(port, p) for p in payloads))
        await until(lambda: server.active == 0, "every garbage connection to end")
        return await lpr(port, {"dfA1h": b"still fine"}, control_file([("dfA1h", "ok")]))

    assert run_server(rt, "lpd", scenario) == [b"\x00"] * 5
    [job] = held(rt)
    assert document(rt, job) == b"still fine"
    assert len(spool_entries(rt)) == 1


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_lpd_parsers_raise_only_lpd_errors(line: bytes) -> None:
    for parse in (parse_command, parse_subcommand):
        with contextlib.suppress(LpdError):
            parse(line)
    with contextlib.suppress(LpdError):
        parse_control_file(line * 20, max_line=100)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from("HPJLNClfopUMSTW1xyz\x00 "), st.text(max_size=30)), max_size=30
    )
)
def test_lpd_control_file_fields_are_clean(lines: list[tuple[str, str]]) -> None:
    data = "".join(f"{letter}{value}\n" for letter, value in lines).encode("utf-8", "replace")
    try:
        cf = parse_control_file(data)
    except LpdError:
        return
    for value in (cf.host, cf.user, cf.banner_user, cf.job_name):
        assert value == clean_text(value)
        assert len(value.encode()) <= 255
    assert len(set(cf.data_names)) == len(cf.data_names)


# -- real clients and the real server -----------------------------------------------------


@pytest.mark.skipif(shutil.which("rlpr") is None, reason="needs rlpr (Debian package rlpr)")
def test_lpd_with_rlpr(rt: Runtime, tmp_path: Path) -> None:
    doc = tmp_path / "memo.txt"
    doc.write_bytes(b"printed with rlpr\n" + MARKER)

    async def scenario(server: IntakeServer, port: int) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(
            subprocess.run,
            ["rlpr", "-H127.0.0.1", f"--port={port}", "-Psecure", "-Uerin", "-JMemo", str(doc)],
            capture_output=True,
            text=True,
            timeout=20,
        )

    result = run_server(rt, "lpd", scenario)
    assert result.returncode == 0, result.stderr
    [job] = held(rt)
    assert (job.owner, job.title) == ("erin", "Memo")
    assert document(rt, job) == doc.read_bytes()


def test_spoolvault_run_serves_raw_and_lpd(tmp_path: Path) -> None:
    srv = start_server(
        tmp_path / "data",
        "--raw",
        "127.0.0.1:0",
        "--lpd",
        "127.0.0.1:0",
        env={"SPOOLVAULT_ADMIN_PASSWORD": "admin-pw"},
    )
    try:
        ports: dict[str, int] = {}
        deadline = time.monotonic() + 10
        while len(ports) < 2 and time.monotonic() < deadline:
            for line in list(srv.first_lines):
                if m := re.search(r"(raw|lpd) intake on \S+:(\d+)", line):
                    ports[m.group(1)] = int(m.group(2))
            time.sleep(0.05)
        if len(ports) < 2:
            pytest.skip("spoolvault run does not announce --raw/--lpd intake (wiring not in yet)")

        async def clients() -> tuple[str, list[bytes]]:
            raw = await raw_print(ports["raw"], pjl_job("frank", "Via 9100", b"raw body"))
            acks = await lpr(
                ports["lpd"], {"dfA1h": b"lpd body"}, control_file([("dfA1h", "l")], user="gina")
            )
            return raw, acks

        raw, acks = asyncio.run(clients())
        assert raw == "closed" and acks == [b"\x00"] * 5
    finally:
        assert srv.stop() == 0
    db = Database.open(database_url(None, tmp_path / "data" / "spoolvault.db"))
    try:
        with db.session(write=False) as s:
            jobs = list(s.scalars(select(Job).order_by(Job.id)))
    finally:
        db.close()
    assert [(j.owner, j.title) for j in jobs] == [("frank", "Via 9100"), ("gina", "Budget 2027")]
