"""Release benchmark: release latency, delivery throughput, and listing held jobs at scale.

    .venv/bin/python bench/release.py [--dir /var/tmp] [--printer-dir /dev/shm] [--parts 1,2,3]
        [--releases 50] [--job-kib 100] [--big-mib 100] [--repeat 3] [--rows 100000]
        [--owners 1000] [--list-calls 200] [--profile auto|always|never] [--py-spy PATH]

A real ``spoolvault run`` process (tests/harness/server.py ``start_server``) with jobs submitted
over IPP to ``/printers/secure`` and released over REST (docs/release.md). Three parts
(docs/benchmarks.md, "Release", explains each number):

1. Release latency, ``--releases`` releases of a ``--job-kib`` KiB job, one after another,
   to a ``socket://`` (AppSocket) printer that is a TCP listener in this process: it stamps
   the arrival of the first document byte (time.perf_counter, the clock the REST call is
   timed with), reads to EOF and closes. Reported: first byte at the printer and the whole
   call (until HTTP 200), both from the moment the call is sent. The same releases to a
   real ``ippeveprinter`` give call latency only (its first byte is not observable).
2. Delivery throughput: one ``--big-mib`` MiB text/plain job released to ``ippeveprinter``
   (``-c /bin/cat -k``), against ``ipptool -f FILE -d filetype=text/plain URI
   print-job.test`` sending the same file to the same printer, ``--repeat`` times
   interleaved (the order alternates), after one unrecorded warm-up of each; medians.
   The release is timed from the call to its HTTP 200 (the printer accepted the job),
   ipptool from its start to its exit. Before each run: the printer idle, its kept files
   deleted (they live on tmpfs, ``--printer-dir``), ``sync``. The server's log lines split
   each release into before the delivery / the delivery / marking printed and shredding /
   the answer. When the ratio misses the target (or with ``--profile always``) the
   release's file steps are timed in this process and py-spy samples 3 more releases.
3. Listing one user's held jobs (``GET /api/v1/release/jobs``) with ``--rows`` held jobs in
   the SQLite database, spread round-robin over ``--owners`` owners (inserted with
   SQLAlchemy Core before the server starts; their spool files do not exist), timed
   ``--list-calls`` times after a warm-up. When the p95 misses the target (or with
   ``--profile always``) the server is sampled with py-spy during a second burst of calls,
   and the handler's steps are timed one by one in this process on the same database.

Progress goes to stderr; one JSON line with every sample goes to stdout at the end.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import platform
import queue
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from harness import ippeve
from harness.server import ADMIN, Server, start_server
from harness.web_helpers import add_printer, add_user, api, login, submit

KIB = 1 << 10
MIB = 1 << 20
IPPTOOL = "ipptool"
IPPTOOL_ARGS = (IPPTOOL, "-T", "300")
SUITES = Path("/usr/share/cups/ipptool")
USER = "alice"
RATIO_TARGET = 0.9
LIST_P95_TARGET_MS = 20.0
PROFILE_RELEASES = 3  # extra 100 MiB releases sampled by py-spy when the ratio is missed
PY_SPY_RATE = 1000  # samples per second
_DELIVERED_RE = re.compile(r"delivered (\S+).* in ([0-9.]+) s")
_LOG_TIME_RE = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    s = sorted(values)
    if len(s) == 1:
        return s[0]
    pos = (len(s) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def stats_ms(seconds: list[float], keep_samples: bool = True) -> dict[str, Any]:
    ms = [v * 1000 for v in seconds]
    out: dict[str, Any] = {
        "n": len(ms),
        "p50": round(percentile(ms, 50), 2),
        "p95": round(percentile(ms, 95), 2),
        "min": round(min(ms), 2),
        "max": round(max(ms), 2),
        "mean": round(statistics.fmean(ms), 2),
    }
    if keep_samples:
        out["samples"] = [round(v, 2) for v in ms]
    return out


# --------------------------------------------------------------------------- machine facts


def _run_text(*cmd: str) -> str | None:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def source_state() -> dict[str, Any]:
    """The code measured: the commit, and the uncommitted changes under src/ (others may be
    editing the working tree while this runs)."""
    import hashlib

    root = Path(__file__).resolve().parent.parent
    head = _run_text("git", "-C", str(root), "rev-parse", "--short", "HEAD")
    try:
        status = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
        diff = subprocess.run(
            ["git", "-C", str(root), "diff", "HEAD", "--", "src"], capture_output=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError):
        status, diff = "", b""
    return {
        "git_head": head,
        "src_uncommitted": [line[3:] for line in status.splitlines()],
        "src_diff_sha256": hashlib.sha256(diff).hexdigest()[:16] if diff else None,
    }


def machine(directory: Path, printer_dir: Path) -> dict[str, Any]:
    import fastapi
    import pydantic
    import sqlalchemy
    import uvicorn

    cpu_model = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    mem_mib = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_mib = int(line.split()[1]) // 1024
    os_name = None
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip('"')
    import sqlite3

    cups = _run_text(IPPTOOL, "--version")
    df = _run_text("df", "-T", str(directory))
    pdf = _run_text("df", "-T", str(printer_dir))
    return {
        "cpu_count": os.cpu_count(),
        "cpu_usable": len(os.sched_getaffinity(0)),
        "cpu_model": cpu_model,
        "mem_total_mib": mem_mib,
        "os": os_name,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "sqlalchemy": sqlalchemy.__version__,
        "fastapi": fastapi.__version__,
        "pydantic": pydantic.VERSION,
        "uvicorn": uvicorn.__version__,
        "httpx": httpx.__version__,
        "cups_ipptool": cups.splitlines()[0] if cups else None,
        "dir_df": df.splitlines()[-1] if df else None,
        "printer_dir_df": pdf.splitlines()[-1] if pdf else None,
        "euid": os.geteuid(),
        "loadavg_at_start": list(os.getloadavg()),
    }


# --------------------------------------------------------------------------- peers


def _ensure_dnssd_no_kill() -> None:
    """ippeveprinter needs avahi on the system D-Bus. Start the daemons when they are absent;
    unlike tests/harness/ippeve.py never stop one (they may belong to someone else)."""

    def running(name: str) -> bool:
        return subprocess.run(["pgrep", "-x", name], capture_output=True).returncode == 0

    socket_file = Path("/run/dbus/system_bus_socket")
    if not running("dbus-daemon"):
        Path("/run/dbus").mkdir(parents=True, exist_ok=True)
        Path("/run/dbus/pid").unlink(missing_ok=True)
        subprocess.run(["dbus-daemon", "--system", "--fork"], check=False, capture_output=True)
    elif not socket_file.exists():
        raise SystemExit(
            "a dbus-daemon runs but /run/dbus/system_bus_socket is gone; ippeveprinter "
            "cannot register. Restart dbus-daemon and avahi-daemon, then run again"
        )
    if not running("avahi-daemon"):
        subprocess.run(["avahi-daemon", "-D", "--no-drop-root"], check=False, capture_output=True)
        time.sleep(0.5)


ippeve.ensure_dnssd = _ensure_dnssd_no_kill


class SocketPrinter:
    """An AppSocket printer: accepts one connection at a time, stamps the first byte that
    arrives (time.perf_counter), reads to EOF, closes, and reports (first, last, bytes)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.records: queue.Queue[tuple[float, float, int]] = queue.Queue()
        self._stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def uri(self) -> str:
        return f"socket://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            first = 0.0
            total = 0
            with conn:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * MIB)
                while True:
                    data = conn.recv(1 * MIB)
                    if not data:
                        break
                    if not total:
                        first = time.perf_counter()
                    total += len(data)
                last = time.perf_counter()
            self.records.put((first, last, total))

    def close(self) -> None:
        self._stop = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(timeout=5)


def printer_idle(printer: ippeve.Printer, timeout: float = 120) -> None:
    """Wait until ippeveprinter has no job processing (its /bin/cat done)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(
            [IPPTOOL, "-T", "5", "-tv", printer.uri, "get-printer-attributes.test"],
            capture_output=True,
            text=True,
            cwd=SUITES,
        ).stdout
        m = re.search(r"printer-state \(enum\) = (\S+)", out)
        if m and m.group(1) == "idle":
            return
        time.sleep(0.1)
    raise RuntimeError("ippeveprinter did not become idle")


def _log_time(line: str) -> float:
    """The wall-clock time of a server log line (its asctime has millisecond resolution)."""
    m = _LOG_TIME_RE.match(line)
    if m is None:
        raise ValueError(f"no time stamp in {line!r}")
    return datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()


def release_phases(
    lines: list[str], job_id: int, start: float, end: float
) -> dict[str, float] | None:
    """Split one release call (wall clock ``start``..``end``) at the server's log lines:
    before the delivery (HTTP, look-ups, verify, claim), the delivery itself (as the server
    timed it), marking it printed plus the crypto-shred, and the answer reaching us."""
    delivered = [(line, m) for line in lines if (m := _DELIVERED_RE.search(line))]
    released = [line for line in lines if f"job {job_id} released by" in line]
    if len(delivered) != 1 or len(released) != 1:
        return None
    line, m = delivered[0]
    t_delivered = _log_time(line)
    t_released = _log_time(released[0])
    return {
        "before_delivery_s": round(t_delivered - float(m.group(2)) - start, 4),
        "delivery_s": float(m.group(2)),
        "printed_and_shred_s": round(t_released - t_delivered, 4),
        "answer_s": round(end - t_released, 4),
    }


def server_deliveries(srv: Server) -> list[float]:
    """Seconds of every "delivered ... in X s" line the server logged so far."""
    return [
        float(m.group(2)) for line in list(srv.first_lines) if (m := _DELIVERED_RE.search(line))
    ]


@contextlib.contextmanager
def running_server(data_dir: Path) -> Iterator[Server]:
    srv = start_server(data_dir, env={"SPOOLVAULT_ADMIN_PASSWORD": ADMIN[1]})
    try:
        yield srv
    finally:
        status = srv.stop()
        if status not in (0, -signal.SIGTERM):
            log(f"  server exited with {status}; last lines:\n{''.join(srv.first_lines[-20:])}")


def release(c: httpx.Client, session: dict[str, str], job_id: int, printer: str) -> float:
    """One release call; returns its start time (perf_counter). Raises on a non-200."""
    t0 = time.perf_counter()
    r = c.post(f"/release/jobs/{job_id}", json={"printer": printer}, headers=session)
    if r.status_code != 200:
        raise RuntimeError(f"release of job {job_id} to {printer}: {r.status_code} {r.text}")
    return t0


# --------------------------------------------------------------------------- part 1


def part_latency(
    args: argparse.Namespace, work: Path, ipp: ippeve.Printer | None
) -> dict[str, Any]:
    log(f"[1] release latency: {args.releases} releases of {args.job_kib} KiB")
    body = os.urandom(args.job_kib * KIB)
    printer = SocketPrinter()
    out: dict[str, Any] = {"job_bytes": len(body), "releases": args.releases, "warmup": 3}
    try:
        with running_server(work / "data-latency") as srv:
            add_printer(srv, "appsocket", printer.uri)
            if ipp is not None:
                add_printer(srv, "ippeve", ipp.uri)
            add_user(srv, USER)
            n = args.releases + 3
            ids = [submit(srv, USER, body, "text/plain") for _ in range(n)]
            ipp_ids = [submit(srv, USER, body, "text/plain") for _ in range(n)] if ipp else []
            session = login(srv, USER)
            first: list[float] = []
            last: list[float] = []
            call: list[float] = []
            with api(srv) as c:
                for i, job_id in enumerate(ids):
                    t0 = release(c, session, job_id, "appsocket")
                    t1 = time.perf_counter()
                    f, lst, total = printer.records.get(timeout=10)
                    if total != len(body):
                        raise RuntimeError(f"socket printer got {total} of {len(body)} bytes")
                    if i >= 3:
                        first.append(f - t0)
                        last.append(lst - t0)
                        call.append(t1 - t0)
                out["socket"] = {
                    "uri": "socket://127.0.0.1 (listener in the benchmark process)",
                    "first_byte_ms": stats_ms(first),
                    "last_byte_ms": stats_ms(last),
                    "call_ms": stats_ms(call),
                    "call_after_last_byte_ms": stats_ms(
                        [c_ - lb for c_, lb in zip(call, last, strict=True)], keep_samples=False
                    ),
                }
                log(
                    f"    socket: first byte p50 {out['socket']['first_byte_ms']['p50']} ms "
                    f"p95 {out['socket']['first_byte_ms']['p95']} ms; call p50 "
                    f"{out['socket']['call_ms']['p50']} ms p95 {out['socket']['call_ms']['p95']} ms"
                )
                if ipp is not None:
                    calls = []
                    before = len(server_deliveries(srv))
                    for i, job_id in enumerate(ipp_ids):
                        t0 = release(c, session, job_id, "ippeve")
                        if i >= 3:
                            calls.append(time.perf_counter() - t0)
                    delivered = server_deliveries(srv)[before + 3 :]
                    out["ippeve"] = {
                        "uri": "ipp://127.0.0.1:PORT/ipp/print (ippeveprinter -c /bin/cat -k)",
                        "call_ms": stats_ms(calls),
                        "server_logged_delivery_ms": stats_ms(delivered, keep_samples=False)
                        if delivered
                        else None,
                    }
                    log(
                        f"    ippeve: call p50 {out['ippeve']['call_ms']['p50']} ms "
                        f"p95 {out['ippeve']['call_ms']['p95']} ms"
                    )
    finally:
        printer.close()
    return out


# --------------------------------------------------------------------------- part 2


def part_throughput(args: argparse.Namespace, work: Path, ipp: ippeve.Printer) -> dict[str, Any]:
    size = args.big_mib * MIB
    log(f"[2] delivery throughput: {args.big_mib} MiB to ippeveprinter, {args.repeat} repeats")
    doc = work / "big.txt"
    body = os.urandom(size)
    doc.write_bytes(body)
    release_s: list[float] = []
    server_s: list[float] = []
    ipptool_s: list[float] = []
    order: list[str] = []
    steps: dict[str, Any] | None = None
    phases: list[dict[str, float]] = []
    recorded_phases: list[dict[str, float]] = []
    profile: dict[str, Any] | None = None

    def settle() -> None:
        # Before each timed run: the printer idle, its kept files gone (they are on tmpfs by
        # default), and dirty pages written out, so no run pays for an earlier one's writeback.
        printer_idle(ipp)
        for f in ipp.files():
            f.unlink(missing_ok=True)
        subprocess.run(["sync"], check=False)

    def run_ipptool() -> float:
        settle()
        t0 = time.perf_counter()
        p = subprocess.run(
            [*IPPTOOL_ARGS, "-f", str(doc), "-d", "filetype=text/plain", ipp.uri, "print-job.test"],
            capture_output=True,
            text=True,
            cwd=SUITES,
        )
        elapsed = time.perf_counter() - t0
        if p.returncode != 0:
            raise RuntimeError(f"ipptool failed ({p.returncode}): {p.stdout}{p.stderr}")
        return elapsed

    with running_server(work / "data-throughput") as srv:
        add_printer(srv, "ippeve", ipp.uri)
        add_user(srv, USER)
        ids = []
        profiled = PROFILE_RELEASES if args.profile != "never" else 0
        for i in range(1 + args.repeat + profiled):  # a warm-up, the repeats, the profile
            t0 = time.perf_counter()
            ids.append(submit(srv, USER, body, "text/plain"))
            log(f"    submitted {args.big_mib} MiB job {i + 1} in {time.perf_counter() - t0:.2f} s")
        del body
        session = login(srv, USER)
        with httpx.Client(base_url=srv.url + "/api/v1", timeout=600) as c:

            def run_release(job_id: int) -> tuple[float, float | None]:
                settle()
                before = len(srv.first_lines)
                start = time.time()
                t0 = release(c, session, job_id, "ippeve")
                elapsed = time.perf_counter() - t0
                end = time.time()
                time.sleep(0.2)  # let the server's log lines reach us
                lines = srv.first_lines[before:]
                ph = release_phases(lines, job_id, start, end)
                if ph is not None:
                    phases.append(ph)
                logged = [float(m.group(2)) for x in lines if (m := _DELIVERED_RE.search(x))]
                return elapsed, (logged[-1] if logged else None)

            log("    warm-up (unrecorded): release, ipptool")
            run_release(ids[0])
            run_ipptool()
            phases.clear()
            for i in range(args.repeat):
                pair = ("release", "ipptool") if i % 2 == 0 else ("ipptool", "release")
                for step in pair:
                    order.append(step)
                    if step == "release":
                        elapsed, logged = run_release(ids[i + 1])
                        release_s.append(elapsed)
                        if logged is not None:
                            server_s.append(logged)
                        log(f"    release {elapsed:.3f} s ({size / elapsed / 1e6:.0f} MB/s)")
                    else:
                        elapsed = run_ipptool()
                        ipptool_s.append(elapsed)
                        log(f"    ipptool {elapsed:.3f} s ({size / elapsed / 1e6:.0f} MB/s)")
            recorded_phases = list(phases)
            ratio = statistics.median(ipptool_s) / statistics.median(release_s)
            if args.profile == "always" or (args.profile == "auto" and ratio < RATIO_TARGET):
                log("    timing the release's steps in-process on the last job's spool file")
                steps = release_steps(srv.data_dir, ids[-1], work)
                log(f"    profiling the server with py-spy during {profiled} more releases")

                def profiled_releases() -> None:
                    for job_id in ids[1 + args.repeat :]:
                        run_release(job_id)

                settle()
                profile = py_spy_profile(
                    args.py_spy,
                    srv.proc.pid,
                    profiled_releases,
                    work / "py-spy-release.txt",
                    _RELEASE_BUCKETS,
                )
                if args.keep_profile:
                    with contextlib.suppress(OSError):
                        shutil.copy(work / "py-spy-release.txt", f"{args.keep_profile}.release")
    printer_idle(ipp)
    doc.unlink()

    def rates(samples: list[float]) -> dict[str, Any]:
        med = statistics.median(samples)
        return {
            "seconds": [round(s, 3) for s in samples],
            "median_s": round(med, 3),
            "mb_s": round(size / med / 1e6, 1),
            "mib_s": round(size / med / MIB, 1),
        }

    rel = rates(release_s)
    ipt = rates(ipptool_s)
    out: dict[str, Any] = {
        "size_bytes": size,
        "document_format": "text/plain",
        "order": order,
        "release": rel,
        "ipptool": ipt,
        "ratio_release_to_ipptool": round(ipt["median_s"] / rel["median_s"], 3),
        # Cross-check, robust to a run slowed by other work on the machine: best vs best.
        "ratio_of_minimums": round(min(ipptool_s) / min(release_s), 3),
        "paired_ratios": [round(b / a, 3) for a, b in zip(release_s, ipptool_s, strict=True)],
    }
    if recorded_phases:
        out["release_phases_median_s"] = {
            k: round(statistics.median(ph[k] for ph in recorded_phases), 4)
            for k in recorded_phases[0]
        }
        out["release_phases"] = recorded_phases
    if steps is not None:
        out["steps_in_process"] = steps
    if profile is not None:
        out["py_spy"] = profile
    if server_s:
        out["server_logged_delivery"] = rates(server_s)
        out["release_minus_delivery_median_s"] = round(
            statistics.median(release_s) - statistics.median(server_s), 3
        )
    log(
        f"    release {rel['mb_s']} MB/s, ipptool {ipt['mb_s']} MB/s, "
        f"ratio {out['ratio_release_to_ipptool']}"
    )
    return out


# --------------------------------------------------------------------------- part 3


def populate(data_dir: Path, rows: int, owners: int, now: datetime) -> dict[str, Any]:
    """Create the data directory and its database, and insert ``rows`` held jobs."""
    from sqlalchemy import insert

    from spoolvault.config import DataDir
    from spoolvault.db import Database, Job, database_url

    data = DataDir.open(data_dir, create=True)
    t0 = time.perf_counter()
    with Database.open(database_url(None, data.database)) as db:
        batch: list[dict[str, Any]] = []
        with db.engine.begin() as conn:
            for i in range(rows):
                created = now - timedelta(seconds=(rows - i) * 3600 / rows)  # the last hour
                batch.append(
                    {
                        "owner": f"user{i % owners:04d}",
                        "title": f"document-{i}.pdf",
                        "queue": "secure",
                        "state": "held",
                        "state_reason": None,
                        "size": 102400,
                        "pages": 1 + i % 7,
                        "encrypted": True,
                        "key_id": None,
                        "format_version": 1,
                        "spool_name": f"{i:032x}",
                        "document_format": "application/pdf",
                        "attributes": "[]",
                        "originating_host": "10.0.0.1",
                        "created_at": created,
                        "updated_at": created,
                        "server": "primary",
                    }
                )
                if len(batch) == 10_000:
                    conn.execute(insert(Job), batch)
                    batch = []
            if batch:
                conn.execute(insert(Job), batch)
    return {
        "insert_s": round(time.perf_counter() - t0, 2),
        "db_bytes": data.database.stat().st_size,
    }


def py_spy_profile(
    exe: str | None,
    pid: int,
    seconds_fn: Callable[[], object],
    out_path: Path,
    buckets: list[tuple[str, tuple[str, ...]]],
) -> dict[str, Any]:
    """Sample the server with py-spy while ``seconds_fn`` runs; summarise collapsed stacks."""
    if exe is None or not Path(exe).exists():
        return {"available": False, "reason": "py-spy not found (.venv/bin/pip install py-spy)"}
    rest = ["--output", str(out_path), "--nonblocking"]
    proc = subprocess.Popen(
        [
            exe,
            "record",
            "--pid",
            str(pid),
            "--rate",
            str(PY_SPY_RATE),
            "--format",
            "raw",
            "--gil",
            *rest,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    time.sleep(1.0)  # py-spy attaches
    if proc.poll() is not None:
        return {"available": False, "reason": (proc.stdout.read() if proc.stdout else "")[-500:]}
    t0 = time.perf_counter()
    try:
        seconds_fn()
    finally:
        wall = time.perf_counter() - t0
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if not out_path.exists():
        return {"available": False, "reason": "py-spy wrote no output"}
    summary = summarise_stacks(out_path.read_text(), buckets)
    summary["rate_hz"] = PY_SPY_RATE
    summary["wall_s"] = round(wall, 3)
    # --gil: only the thread holding the GIL is sampled, so samples / (rate x wall) is the
    # share of the time the server ran Python code at all.
    summary["gil_held_pct_of_wall"] = round(100 * summary["samples"] / (PY_SPY_RATE * wall), 1)
    return summary


# Inclusive buckets: the first marker (in this order) found anywhere in a stack wins.
_LIST_BUCKETS: list[tuple[str, tuple[str, ...]]] = [
    ("argon2/session", ("argon2",)),
    ("sqlite execute (the query itself)", ("execute (sqlite3", "do_execute (sqlalchemy")),
    (
        "sqlite fetch (rows from the cursor)",
        ("fetchall (sqlalchemy/engine/cursor", "_fetchall_impl"),
    ),
    ("ORM: rows to Job objects", ("sqlalchemy/orm/loading",)),
    ("SQLAlchemy statement compile/cache", ("sqlalchemy/sql/compiler", "_compile_w_cache")),
    (
        "SQLAlchemy session/transaction/connection",
        ("sqlalchemy/orm/session", "sqlalchemy/engine", "sqlalchemy/pool"),
    ),
    ("_job_out (JobOut per row)", ("_job_out (",)),
    (
        "FastAPI response_model validate/serialize",
        ("serialize_response", "_prepare_response_content"),
    ),
    ("JSON rendering", ("render (starlette/responses", "render (fastapi/responses")),
    ("thread hand-off (anyio to_thread)", ("anyio/to_thread", "anyio/_backends")),
    ("uvicorn/HTTP parsing and sending", ("uvicorn/protocols",)),
    (
        "FastAPI routing/dependencies",
        ("fastapi/routing", "fastapi/dependencies", "starlette/routing"),
    ),
    ("asyncio event loop", ("asyncio/base_events", "asyncio/events", "asyncio/runners", "uvloop")),
]


_RELEASE_BUCKETS: list[tuple[str, tuple[str, ...]]] = [
    ("verify: whole-file authenticated decryption before sending", ("verify (spoolvault/spool",)),
    ("crypto-shred and unlink (spool.delete)", ("delete (spoolvault/spool",)),
    (
        "decryption while sending (spool.read in the source)",
        ("spool/format", "read (spoolvault/spool"),
    ),
    ("_batched: joining chunks to 1 MiB", ("_batched (spoolvault/jobs/release",)),
    ("delivery: frames and socket writes", ("spoolvault/printers/delivery",)),
    ("database", ("sqlalchemy", "sqlite3")),
    ("thread hand-off (anyio to_thread)", ("anyio/",)),
    ("asyncio event loop", ("asyncio/", "uvloop")),
]


def release_steps(data_dir: Path, job_id: int, work: Path) -> dict[str, Any]:
    """Time, in this process, what a release does to the job's spool file besides sending it:
    the verify pass, the decrypting read as the release source does it (_batched to 1 MiB,
    without the thread hops and the network), and the crypto-shred of a copy."""
    from harness.server import jobs_in
    from spoolvault.config import DataDir
    from spoolvault.jobs.release import _batched
    from spoolvault.spool.keys import KeyFileProvider
    from spoolvault.spool.store import EncryptedSpool

    data = DataDir.open(data_dir, create=False)
    [job] = [j for j in jobs_in(data_dir) if j.id == job_id]
    assert job.spool_name is not None and job.encrypted
    keys = KeyFileProvider(data.key_file)
    spool = EncryptedSpool(data.encrypted_spool, keys)
    name = job.spool_name

    def timed(fn: Callable[[], object], n: int = 3) -> list[float]:
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            out.append(round(time.perf_counter() - t0, 4))
        return out

    def read_batched() -> int:
        return sum(len(b) for b in _batched(spool.read(name)))

    def read_joined_once() -> int:
        # The proposed alternative: gather ~1 MiB of chunks in a list, join once (one copy).
        total = 0
        pieces: list[bytes] = []
        size = 0
        for chunk in spool.read(name):
            pieces.append(chunk)
            size += len(chunk)
            if size >= 1 << 20:
                total += len(b"".join(pieces))
                pieces, size = [], 0
        return total + len(b"".join(pieces))

    copies = work / "shred-copies"
    copies.mkdir(exist_ok=True)
    copy_spool = EncryptedSpool(copies, keys)
    shred = []
    for _ in range(3):
        shutil.copy(spool.path(name), copy_spool.path(name))
        subprocess.run(["sync"], check=False)
        t0 = time.perf_counter()
        copy_spool.delete(name)
        shred.append(round(time.perf_counter() - t0, 4))

    def faults(fn: Callable[[], object]) -> int:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        fn()
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    # Besides the unlink, the shred is an 80-byte pwrite over the header's key block and two
    # fsyncs (file, directory); the unlink of a file this size is timed alone on other copies.
    unlink = []
    for i in range(3):
        copy = copies / f"plain-copy-{i}"
        shutil.copy(spool.path(name), copy)
        subprocess.run(["sync"], check=False)
        t0 = time.perf_counter()
        copy.unlink()
        unlink.append(round(time.perf_counter() - t0, 4))
    verify = timed(lambda: spool.verify(name))
    read = timed(read_batched)
    read_faults = faults(read_batched)
    joined = timed(read_joined_once)
    joined_faults = faults(read_joined_once)
    return {
        "file_bytes": spool.path(name).stat().st_size,
        "verify_s": verify,
        "read_batched_s": read,
        "read_joined_once_s": joined,
        "read_batched_minor_faults": read_faults,
        "read_joined_once_minor_faults": joined_faults,
        "shred_copy_s": shred,
        "unlink_copy_s": unlink,
        "verify_median_s": statistics.median(verify),
        "read_batched_median_s": statistics.median(read),
        "read_joined_once_median_s": statistics.median(joined),
        "shred_median_s": statistics.median(shred),
        "unlink_median_s": statistics.median(unlink),
    }


def summarise_stacks(raw: str, bucket_list: list[tuple[str, tuple[str, ...]]]) -> dict[str, Any]:
    total = 0
    buckets: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    for line in raw.splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        total += count
        frames = stack.split(";")
        leaves[frames[-1]] += count
        for name, markers in bucket_list:
            if any(m in stack for m in markers):
                buckets[name] += count
                break
        else:
            buckets["other"] += count
    if not total:
        return {"available": True, "samples": 0}
    return {
        "available": True,
        "samples": total,
        "note": "py-spy --gil: share of samples of the GIL-holding thread; a stack is "
        "counted in the first bucket it matches",
        "buckets_pct": {k: round(100 * v / total, 1) for k, v in buckets.most_common()},
        "top_leaf_frames_pct": {k: round(100 * v / total, 1) for k, v in leaves.most_common(12)},
    }


def breakdown(db_path: Path, owner: str, reps: int) -> dict[str, Any]:
    """Time the handler's steps one by one, in this process, on the same database."""
    import sqlite3

    from pydantic import TypeAdapter

    from spoolvault.api.models import JobOut
    from spoolvault.api.models import job_out as _job_out
    from spoolvault.db import Database, JobState, database_url
    from spoolvault.jobs.service import JobService

    states = [JobState.HELD, JobState.FAILED]

    def timed(fn: Callable[[], object]) -> dict[str, Any]:
        for _ in range(10):
            fn()
        samples = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - t0)
        return stats_ms(samples, keep_samples=False)

    out: dict[str, Any] = {"reps": reps}
    with Database.open(database_url(None, db_path)) as db:
        fake = SimpleNamespace(db=db)

        def orm_list() -> list[Any]:
            return JobService.list(fake, owner=owner, states=states)  # type: ignore[arg-type]

        jobs = orm_list()
        out["rows_returned"] = len(jobs)
        out["orm_list_ms"] = timed(orm_list)
        outs = [_job_out(j) for j in jobs]
        out["job_out_ms"] = timed(lambda: [_job_out(j) for j in jobs])
        ta = TypeAdapter(list[JobOut])

        def response_path() -> bytes:
            # What FastAPI does with response_model=list[JobOut]: dump each returned model,
            # validate the list again, serialize in JSON mode, json.dumps.
            value = ta.validate_python([o.model_dump() for o in outs])
            body = ta.dump_python(value, mode="json")
            return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()

        out["response_model_and_json_ms"] = timed(response_path)
        out["response_bytes"] = len(response_path())

    conn = sqlite3.connect(db_path)
    try:
        sql = "SELECT * FROM jobs WHERE jobs.owner = ? AND jobs.state IN (?, ?) ORDER BY jobs.id"
        params = (owner, "held", "failed")
        out["raw_sql"] = sql
        out["raw_sqlite_fetchall_ms"] = timed(lambda: conn.execute(sql, params).fetchall())
        out["query_plan"] = [r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql, params)]
        out["indexes"] = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type='index' AND tbl_name='jobs'"
            )
        ]
    finally:
        conn.close()
    return out


def part_listing(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    log(f"[3] listing: {args.rows} held jobs, {args.owners} owners, {args.list_calls} calls")
    owner = "user0042"
    data_dir = work / "data-listing"
    pop = populate(data_dir, args.rows, args.owners, datetime.now(UTC))
    log(f"    inserted {args.rows} rows in {pop['insert_s']} s")
    out: dict[str, Any] = {
        "rows": args.rows,
        "owners": args.owners,
        "owner": owner,
        "owner_jobs": len(range(42, args.rows, args.owners)),
        **pop,
    }
    with running_server(data_dir) as srv:
        add_user(srv, owner)
        session = login(srv, owner)
        with api(srv) as c:

            def call() -> float:
                t0 = time.perf_counter()
                r = c.get("/release/jobs", headers=session)
                elapsed = time.perf_counter() - t0
                if r.status_code != 200:
                    raise RuntimeError(f"listing: {r.status_code} {r.text}")
                return elapsed

            r = c.get("/release/jobs", headers=session)
            out["returned"] = len(r.json())
            out["response_bytes"] = len(r.content)
            for _ in range(args.list_warmup):
                call()
            samples = [call() for _ in range(args.list_calls)]
            out["warmup"] = args.list_warmup
            out["ms"] = stats_ms(samples)
            log(f"    p50 {out['ms']['p50']} ms, p95 {out['ms']['p95']} ms")

            # The same path without the query: a rejected token (401), for the fixed cost.
            bad = {"Authorization": "Bearer not-a-session"}
            base = []
            for _ in range(args.list_calls):
                t0 = time.perf_counter()
                c.get("/release/jobs", headers=bad)
                base.append(time.perf_counter() - t0)
            out["baseline_401_ms"] = stats_ms(base, keep_samples=False)

            missed = out["ms"]["p95"] > LIST_P95_TARGET_MS
            if args.profile == "always" or (args.profile == "auto" and missed):
                log("    profiling the server with py-spy during 3x the calls")

                def burst() -> None:
                    for _ in range(args.list_calls * 3):
                        call()

                out["py_spy"] = py_spy_profile(
                    args.py_spy, srv.proc.pid, burst, work / "py-spy.txt", _LIST_BUCKETS
                )
                if args.keep_profile:
                    shutil.copy(work / "py-spy.txt", args.keep_profile)
    if args.profile == "always" or (args.profile == "auto" and missed):
        log("    timing the handler's steps in-process")
        out["breakdown"] = breakdown(data_dir / "spoolvault.db", owner, args.list_calls)
    return out


# --------------------------------------------------------------------------- main


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", type=Path, default=Path("/var/tmp"))
    p.add_argument(
        "--printer-dir",
        type=Path,
        default=Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir()),
        help="where ippeveprinter keeps what it receives (default tmpfs: a printer's disk "
        "writes must not delay the server's fsyncs on --dir)",
    )
    p.add_argument("--parts", default="1,2,3")
    p.add_argument("--releases", type=int, default=50)
    p.add_argument("--job-kib", type=int, default=100)
    p.add_argument("--big-mib", type=int, default=100)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--owners", type=int, default=1000)
    p.add_argument("--list-calls", type=int, default=200)
    p.add_argument("--list-warmup", type=int, default=20)
    p.add_argument("--profile", choices=("auto", "always", "never"), default="auto")
    p.add_argument("--keep-profile", type=Path, help="copy py-spy's collapsed stacks here")
    p.add_argument(
        "--py-spy",
        default=shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy")),
        help="the py-spy executable (default: on PATH, else next to this Python)",
    )
    args = p.parse_args()
    parts = {int(x) for x in args.parts.split(",") if x.strip()}

    started = time.time()
    if (load := os.getloadavg()[0]) > 0.5:
        log(f"warning: load average {load:.2f} before the start: other work competes for the CPUs")
    result: dict[str, Any] = {
        "benchmark": "spoolvault release",
        "started_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(args.dir, args.printer_dir),
        "source": source_state(),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    work = Path(tempfile.mkdtemp(prefix="spoolvault-bench-release-", dir=args.dir))
    printer_root = Path(tempfile.mkdtemp(prefix="spoolvault-bench-printer-", dir=args.printer_dir))
    ipp: ippeve.Printer | None = None
    try:
        if parts & {1, 2}:
            if ippeve.IPPEVEPRINTER is None:
                log("ippeveprinter not found (cups-ipp-utils): its measurements are skipped")
            else:
                ipp = ippeve.start_printer(printer_root / "spool", name="benchprinter")
                log(f"ippeveprinter on {ipp.uri}")
        if 1 in parts:
            result["latency"] = part_latency(args, work, ipp)
        if 2 in parts and ipp is not None:
            result["throughput"] = part_throughput(args, work, ipp)
        if 3 in parts:
            result["listing"] = part_listing(args, work)
    finally:
        if ipp is not None:
            ipp.stop()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(printer_root, ignore_errors=True)

    targets: dict[str, Any] = {}
    if "throughput" in result:
        ratio = result["throughput"]["ratio_release_to_ipptool"]
        targets.update(
            {
                "throughput_ratio_min": RATIO_TARGET,
                "throughput_ratio": ratio,
                "throughput_ratio_met": ratio >= RATIO_TARGET,
            }
        )
    if "listing" in result:
        p95 = result["listing"]["ms"]["p95"]
        targets.update(
            {
                "listing_p95_max_ms": LIST_P95_TARGET_MS,
                "listing_p95_ms": p95,
                "listing_p95_met": p95 <= LIST_P95_TARGET_MS,
            }
        )
    met = [v for k, v in targets.items() if k.endswith("_met")]
    targets["all_met"] = bool(met) and all(met)
    result["targets"] = targets
    result["seconds"] = round(time.time() - started, 1)
    result["machine"]["loadavg_at_end"] = list(os.getloadavg())
    print(json.dumps(result, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
