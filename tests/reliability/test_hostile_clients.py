"""Hostile clients: hundreds of idle and trickling connections (slowloris) on every port,
oversized heads, attributes and bodies; a normal client still prints within a bound.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from harness import drills
from spoolvault.ipp.constants import Operation, Status, ValueTag

# Within this many seconds a normal client's job is acknowledged while the ports are
# flooded (it takes about 0.05 s on an idle server).
BOUND = 5.0
HEADER_TIMEOUT = 2.0
CONF = f"""\
HttpHeaderTimeout={HEADER_TIMEOUT}
HttpBodyTimeout=2
IntakeIdleTimeout=120
MaxJobSize=1048576
"""


@pytest.fixture
def srv(tmp_path: Path):  # type: ignore[no-untyped-def]
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "print-provider.conf").write_text(CONF)
    s = drills.start(data_dir, tmp_path / "tmp", "--lpd", "127.0.0.1:0")
    try:
        yield s
    finally:
        s.stop()


def test_slowloris_on_every_port_does_not_starve_a_normal_client(srv: drills.Server) -> None:
    http, raw, lpd = (
        drills.http_addr(srv),
        drills.server_address(srv, "raw"),
        drills.server_address(srv, "lpd"),
    )
    hostile = drills.Hostile()
    try:
        n = 0
        for _ in range(150):
            hostile.open(http)  # connects, sends nothing
        http_idle = hostile.sockets[n:]
        n = len(hostile.sockets)
        for _ in range(150):  # a request head that never ends
            hostile.open(http, b"POST /printers/secure HTTP/1.1\r\nHost: x\r\nX-A: ", trickle=True)
        http_slow = hostile.sockets[n:]
        n = len(hostile.sockets)
        head = drills.ipp_message(srv, Operation.PRINT_JOB)
        body = (
            b"POST /printers/secure HTTP/1.1\r\nHost: x\r\nContent-Type: application/ipp\r\n"
            b"Content-Length: 10000000\r\n\r\n" + drills.encode(head) + drills.MARKER * 100
        )
        for _ in range(30):  # a body that stops
            hostile.open(http, body)
        http_stalled = hostile.sockets[n:]
        for _ in range(150):  # raw: connect and say nothing, or trickle
            hostile.open(raw, b"\x1b%-12345X@PJL", trickle=len(hostile.trickle) % 2 == 0)
        for _ in range(150):
            hostile.open(lpd, b"\x02sec", trickle=len(hostile.trickle) % 2 == 0)
        hostile.start_trickling()
        time.sleep(2.5)  # every hostile connection is older than IntakeEvictAfter

        job, ipp_s = drills.timed(lambda: drills.ipp_print(srv, "normal-ipp", b"hello\n"))
        assert isinstance(job, int), job
        raw_job = drills.pjl_wrapped("bob", "normal-raw", b"raw hello\n")
        ok, raw_s = drills.timed(lambda: drills.raw_print(raw, raw_job, timeout=BOUND))
        assert ok is True
        ok, lpd_s = drills.timed(
            lambda: drills.lpd_print(lpd, "carol", "normal-lpd", b"lpd hello\n", timeout=BOUND)
        )
        assert ok is True
        assert max(ipp_s, raw_s, lpd_s) < BOUND, (ipp_s, raw_s, lpd_s)
        print(f"normal client under flood: ipp {ipp_s:.3f} s, raw {raw_s:.3f}, lpd {lpd_s:.3f}")

        # The HTTP header and body timeouts closed every hostile HTTP connection.
        open_ = {"idle": http_idle, "slow head": http_slow, "stalled body": http_stalled}
        deadline = time.monotonic() + HEADER_TIMEOUT + 3
        while any(open_.values()) and time.monotonic() < deadline:
            open_ = {k: [s for s in g if not _dead(s)] for k, g in open_.items()}
            time.sleep(0.2)
        assert {k: len(g) for k, g in open_.items()} == {k: 0 for k in open_}
    finally:
        hostile.close()
    jobs = drills.all_jobs(srv.data_dir)
    assert sorted(j.title for j in jobs) == ["normal-ipp", "normal-lpd", "normal-raw"]
    enc, _ = drills.spools(srv.data_dir)
    assert [p.name for p in enc.directory.iterdir() if p.name.startswith(".tmp-")] == []
    assert drills.find_plaintext([srv.data_dir]) == []


def _dead(s: drills.socket.socket) -> bool:
    try:
        return s.recv(65536) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def test_oversized_heads_attributes_and_bodies_get_clear_errors(srv: drills.Server) -> None:
    addr = drills.http_addr(srv)
    # A request head beyond HttpMaxHeaderBytes (64 KiB): HTTP 431.
    conn = drills.http.client.HTTPConnection(*addr, timeout=10)
    try:
        conn.request("POST", "/printers/secure", b"", {"X-Big": "a" * 100_000})
        assert conn.getresponse().status == 431
    finally:
        conn.close()
    # Attributes beyond 1 MiB: refused by the codec before any document is read.
    huge = drills.ipp_message(srv, Operation.PRINT_JOB)
    group = huge.add_group(drills.GroupTag.JOB)
    for i in range(40):
        group.add(f"x-attr-{i}", ValueTag.TEXT, "v" * 30000)
    _, resp = drills.ipp_call(addr, huge, b"doc")
    assert resp is not None and resp.code == Status.CLIENT_ERROR_REQUEST_ENTITY_TOO_LARGE, resp
    # A document beyond MaxJobSize (1 MiB here): refused, nothing kept.
    before = len(drills.all_jobs(srv.data_dir))
    msg = drills.ipp_message(srv, Operation.PRINT_JOB)
    _, resp = drills.ipp_call(addr, msg, drills.MARKER * (2 * 1048576 // len(drills.MARKER)))
    assert resp is not None and resp.code == Status.CLIENT_ERROR_REQUEST_ENTITY_TOO_LARGE, resp
    message = resp.operation.get("status-message")
    assert message is not None and "MaxJobSize" in str(message.value)
    assert len(drills.all_jobs(srv.data_dir)) == before
    enc, _ = drills.spools(srv.data_dir)
    assert [p.name for p in enc.directory.iterdir() if p.name.startswith(".tmp-")] == []
    # Raw and LPD refuse it too (a reset, a negative acknowledgement).
    big = drills.pjl_wrapped("bob", "too-big", os.urandom(2 * 1048576))
    assert drills.raw_print(drills.server_address(srv, "raw"), big) is False
    lpd = drills.server_address(srv, "lpd")
    assert drills.lpd_print(lpd, "bob", "too-big", big, timeout=10) is False
    assert len(drills.all_jobs(srv.data_dir)) == before
    # And the server still serves.
    assert drills.ipp_print(srv, "after", b"small\n") is not None


def test_a_full_house_of_tricklers_makes_room_for_a_sender(tmp_path: Path) -> None:
    """Every raw slot held by a client that sends a byte every 0.5 s (never silent for the
    2 s eviction delay): the slowest still makes room, by its rate (under 1 KiB/s)."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "print-provider.conf").write_text("IntakeMaxConnections=8\n")
    srv = drills.start(data_dir, tmp_path / "tmp")
    hostile = drills.Hostile()
    try:
        raw = drills.server_address(srv, "raw")
        for _ in range(8):
            hostile.open(raw, b"\x1b%-12345X@PJL", trickle=True)
        hostile.start_trickling(every=0.5, byte=b" ")
        time.sleep(2.5)
        body = drills.pjl_wrapped("bob", "sender", b"a real job\n" * 1000)
        assert drills.raw_print(raw, body, timeout=BOUND) is True
        assert [j.title for j in drills.all_jobs(srv.data_dir)] == ["sender"]
        assert sum(_dead(s) for s in hostile.sockets) == 1  # exactly one made room
    finally:
        hostile.close()
        srv.stop()
