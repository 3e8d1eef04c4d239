"""Reliability drills shared by tests/reliability (short runs) and bench/soak.py (long runs).

Every drill drives a real `spoolvault run` process over real sockets: IPP over HTTP
(Print-Job, Create-Job + Send-Document), raw 9100, LPD. Documents carry a distinctive
plaintext marker (``MARKER`` plus a random token) that must never be found on disk: the
data directory, the spool directories and the server's TMPDIR are scanned for it.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import random
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from harness.server import SPOOLVAULT, Server, start_server
from harness.server import jobs_in as all_jobs  # every job record, by id
from spoolvault.config import DataDir
from spoolvault.db import FILE_STATES, Job, JobState
from spoolvault.errors import SpoolError
from spoolvault.ipp.codec import IppMessage, IppParseError, decode, encode
from spoolvault.ipp.constants import GroupTag, Operation, Status, ValueTag
from spoolvault.spool.keys import KeyFileProvider
from spoolvault.spool.store import EncryptedSpool, PlainSpool

# Never in a title, an owner or any metadata: only inside documents.
MARKER = b"SVPLAINTEXT-7f3a"
OWNER = "alice"
ADMIN_PASSWORD = "drill-admin-pw"


# -- documents -------------------------------------------------------------------------------


def document(rng: random.Random, size: int) -> bytes:
    """A document of about ``size`` bytes, the marker (with a random token) on every line."""
    token = rng.randbytes(6).hex().encode()
    line = MARKER + b"-" + token + b" confidential line of a held print job\n"
    body = line * max(1, size // len(line))
    return b"held job\n" + body


def pjl_wrapped(owner: str, name: str, body: bytes) -> bytes:
    """A raw 9100 stream as an HP driver sends it: PJL header with owner and job name."""
    head = (
        f'\x1b%-12345X@PJL JOB NAME="{name}"\r\n@PJL SET USERNAME="{owner}"\r\n'
        "@PJL ENTER LANGUAGE=POSTSCRIPT\r\n"
    ).encode()
    return head + body + b"\x1b%-12345X"


# -- clients -----------------------------------------------------------------------------------


def http_addr(srv: Server) -> tuple[str, int]:
    parts = urlsplit(srv.url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


def ipp_message(srv: Server, op: int, *, user: str = OWNER, request_id: int = 1) -> IppMessage:
    msg = IppMessage((2, 0), op, request_id, [])
    g = msg.operation
    g.add("attributes-charset", ValueTag.CHARSET, "utf-8")
    g.add("attributes-natural-language", ValueTag.NATURAL_LANGUAGE, "en")
    host, port = http_addr(srv)
    g.add("printer-uri", ValueTag.URI, f"ipp://{host}:{port}/printers/secure")
    g.add("requesting-user-name", ValueTag.NAME, user)
    return msg


def ipp_call(
    addr: tuple[str, int], msg: IppMessage, body: bytes = b"", timeout: float = 30.0
) -> tuple[int, IppMessage | None]:
    """POST one IPP request; (HTTP status, decoded IPP response or None)."""
    conn = http.client.HTTPConnection(*addr, timeout=timeout)
    try:
        conn.request(
            "POST", "/printers/secure", encode(msg) + body, {"Content-Type": "application/ipp"}
        )
        resp = conn.getresponse()
        data = resp.read()
    finally:
        conn.close()
    if resp.status != 200:
        return resp.status, None
    try:
        return resp.status, decode(data)[0]
    except IppParseError:
        return resp.status, None


def job_id_of(resp: IppMessage | None) -> int | None:
    """The job-id of a successful job-creating response, else None."""
    if resp is None or resp.code > Status.SUCCESSFUL_OK_CONFLICTING_ATTRIBUTES:
        return None
    group = resp.group(GroupTag.JOB)
    attr = group.get("job-id") if group is not None else None
    return attr.value if attr is not None and isinstance(attr.value, int) else None


def ipp_print(srv: Server, title: str, body: bytes, timeout: float = 30.0) -> int | None:
    """Print-Job; the job id when the server acknowledged the job, else None."""
    msg = ipp_message(srv, Operation.PRINT_JOB)
    msg.operation.add("job-name", ValueTag.NAME, title)
    msg.operation.add("document-format", ValueTag.MIME_MEDIA_TYPE, "text/plain")
    return job_id_of(ipp_call(http_addr(srv), msg, body, timeout)[1])


def ipp_create_and_send(srv: Server, title: str, body: bytes, timeout: float = 30.0) -> int | None:
    """Create-Job then Send-Document (as CUPS does); the job id once the document is acked."""
    addr = http_addr(srv)
    msg = ipp_message(srv, Operation.CREATE_JOB)
    msg.operation.add("job-name", ValueTag.NAME, title)
    job_id = job_id_of(ipp_call(addr, msg, b"", timeout)[1])
    if job_id is None:
        return None
    send = ipp_message(srv, Operation.SEND_DOCUMENT, request_id=2)
    send.operation.add("job-id", ValueTag.INTEGER, job_id)
    send.operation.add("last-document", ValueTag.BOOLEAN, True)
    send.operation.add("document-format", ValueTag.MIME_MEDIA_TYPE, "application/octet-stream")
    return job_id_of(ipp_call(addr, send, body, timeout)[1])


def raw_print(addr: tuple[str, int], stream: bytes, timeout: float = 30.0) -> bool:
    """Send a raw 9100 job; True if the server closed gracefully (FIN: the job is durable)."""
    try:
        with socket.create_connection(addr, timeout=timeout) as s:
            s.sendall(stream)
            s.shutdown(socket.SHUT_WR)
            while True:
                data = s.recv(4096)
                if not data:
                    return True
    except OSError:
        return False  # reset, refused, timed out: not acknowledged


def server_address(srv: Server, name: str) -> tuple[str, int]:
    """The address a listener printed at start-up ("raw intake on 127.0.0.1:PORT")."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:  # printed just after "listening on"
        for line in list(srv.first_lines):
            if line.startswith(f"{name} intake on "):
                host, _, port = line.split(" on ", 1)[1].strip().rpartition(":")
                return host, int(port)
        time.sleep(0.02)
    raise AssertionError(f"no {name} listener in {srv.first_lines}")


# -- what a client saw -------------------------------------------------------------------------


@dataclass(frozen=True)
class Ack:
    """A job the server acknowledged: how, and its exact document."""

    kind: str  # "ipp", "create-send", "raw"
    title: str
    body: bytes
    job_id: int | None = None  # IPP; raw jobs are found by title


@dataclass
class Load:
    """Clients submitting until told to stop; what they saw."""

    acked: list[Ack] = field(default_factory=list)
    attempts: int = 0
    failures: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)


def client_loop(
    load: Load, srv: Server, kind: str, tag: str, seed: int, max_size: int = 96 * 1024
) -> None:
    """One client: submit jobs of ``kind`` back to back until ``load.stop``."""
    rng = random.Random(seed)
    raw = server_address(srv, "raw") if kind == "raw" else None
    n = 0
    while not load.stop.is_set():
        n += 1
        title = f"{tag}-{kind}-{n}"
        body = document(rng, rng.randint(100, max_size))
        job_id: int | None = None
        try:
            if kind == "raw":
                assert raw is not None
                body = pjl_wrapped(OWNER, title, body)
                ok = raw_print(raw, body, timeout=10)
            elif kind == "create-send":
                job_id = ipp_create_and_send(srv, title, body, timeout=10)
                ok = job_id is not None
            else:
                job_id = ipp_print(srv, title, body, timeout=10)
                ok = job_id is not None
        except (OSError, http.client.HTTPException):
            ok = False
        with load.lock:
            load.attempts += 1
            if ok:
                load.acked.append(Ack(kind, title, body, job_id))
            else:
                load.failures += 1
        if not ok:
            time.sleep(0.02)  # the server is down: do not spin


KINDS = ("ipp", "ipp", "ipp", "ipp", "ipp", "create-send", "raw", "raw")


def start_load(load: Load, srv: Server, tag: str, seed: int) -> list[threading.Thread]:
    """Eight clients: five Print-Job, one Create-Job + Send-Document, two raw 9100."""
    threads = [
        threading.Thread(
            target=client_loop, args=(load, srv, kind, f"{tag}c{i}", seed * 100 + i), daemon=True
        )
        for i, kind in enumerate(KINDS)
    ]
    for t in threads:
        t.start()
    return threads


# -- the server ------------------------------------------------------------------------------


def start(data_dir: Path, tmp: Path, *extra: str) -> Server:
    """`spoolvault run` with raw intake on, its TMPDIR in ``tmp`` (scanned for plaintext)."""
    tmp.mkdir(parents=True, exist_ok=True)
    env = {"SPOOLVAULT_ADMIN_PASSWORD": ADMIN_PASSWORD, "TMPDIR": str(tmp)}
    srv = start_server(data_dir, "--raw", "127.0.0.1:0", *extra, env=env)
    # "listening on" comes before start-up recovery (interrupted releases) has run; the
    # first answer comes after it.
    deadline = time.monotonic() + 30
    while True:
        try:
            conn = http.client.HTTPConnection(*http_addr(srv), timeout=10)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                conn.close()
                return srv
            conn.close()
        except OSError:
            pass
        if time.monotonic() > deadline:
            srv.stop(signal.SIGKILL)
            raise AssertionError("spoolvault did not answer /healthz")
        time.sleep(0.05)


def kill(srv: Server) -> None:
    """SIGKILL: no clean-up of any kind runs."""
    srv.stop(signal.SIGKILL)


# -- checks ------------------------------------------------------------------------------------


def find_plaintext(roots: Iterable[Path], needle: bytes = MARKER) -> list[Path]:
    """Every file under ``roots`` that contains ``needle``."""
    found = []
    for root in roots:
        for dirpath, _, files in os.walk(root):
            for name in files:
                path = Path(dirpath, name)
                try:
                    with path.open("rb") as f:
                        tail = b""
                        while chunk := f.read(1 << 20):
                            if needle in tail + chunk:
                                found.append(path)
                                break
                            tail = chunk[-len(needle) :]
                except OSError:
                    continue  # vanished (a temp file removed meanwhile), a socket
    return found


def spools(data_dir: Path) -> tuple[EncryptedSpool, PlainSpool]:
    data = DataDir.open(data_dir, create=False)
    return (
        EncryptedSpool(data.encrypted_spool, KeyFileProvider(data.key_file)),
        PlainSpool(data.plain_spool),
    )


def orphans(data_dir: Path) -> str:
    """`spoolvault spool orphans --min-age 0`: its last line ("0 orphan files found")."""
    done = subprocess.run(
        [*SPOOLVAULT, "spool", "orphans", "--data-dir", str(data_dir), "--min-age", "0"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


@dataclass
class Consistency:
    """What check_consistency found (every list empty when all is well)."""

    jobs: int = 0
    held: int = 0
    lost: list[str] = field(default_factory=list)  # acknowledged, not found or not held
    corrupt: list[str] = field(default_factory=list)  # found, content differs or unreadable
    half: list[str] = field(default_factory=list)  # a record without its durable file
    orphans: str = ""
    plaintext: list[Path] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        out = [*self.lost, *self.corrupt, *self.half, *(str(p) for p in self.plaintext)]
        if not self.orphans.startswith("0 orphan"):
            out.append(self.orphans)
        return out


def check_consistency(
    data_dir: Path, acked: list[Ack], scan: Iterable[Path], *, incoming_ok: float
) -> Consistency:
    """Every acknowledged job present, held and byte-identical; no half job, orphan, plaintext.

    Run while no client submits. ``incoming_ok``: a Create-Job job still waiting for its
    document is fine only if younger than this many seconds (the multiple-operation
    time-out then aborts it), never older.
    """
    jobs = all_jobs(data_dir)
    enc, plain = spools(data_dir)
    out = Consistency(jobs=len(jobs))
    by_id = {j.id: j for j in jobs}
    by_title: dict[str, list[Job]] = {}
    for j in jobs:
        by_title.setdefault(j.title, []).append(j)
    now = time.time()
    for job in jobs:
        if job.state in FILE_STATES:
            spool = enc if job.encrypted else plain
            if job.spool_name is None or not spool.path(job.spool_name).exists():
                out.half.append(f"job {job.id} is {job.state.value} without its spool file")
        if job.state is JobState.INCOMING:
            age = now - job.created_at.timestamp()
            if job.spool_name is not None or age > incoming_ok:
                out.half.append(f"job {job.id} incoming for {age:.0f} s ({job.spool_name})")
        if job.state is JobState.HELD:
            out.held += 1
    for ack in acked:
        if ack.job_id is not None:
            job = by_id.get(ack.job_id)
            if job is not None and job.title != ack.title:
                out.lost.append(f"job {ack.job_id} is {job.title!r}, acked as {ack.title!r}")
                continue
        else:
            found = by_title.get(ack.title, [])
            job = found[0] if len(found) == 1 else None
            if len(found) > 1:
                out.corrupt.append(f"raw job {ack.title!r} recorded {len(found)} times")
                continue
        if job is None or job.state is not JobState.HELD or job.spool_name is None:
            state = job.state.value if job is not None else "missing"
            out.lost.append(f"{ack.kind} job {ack.job_id or ack.title} acknowledged, now {state}")
            continue
        spool = enc if job.encrypted else plain
        try:
            content = spool.read_all(job.spool_name)
        except SpoolError as exc:
            out.corrupt.append(f"job {job.id}: {exc}")
            continue
        if content != ack.body:
            out.corrupt.append(
                f"job {job.id}: {len(content)} bytes, sha256 {hashlib.sha256(content).hexdigest()}"
                f" != acknowledged {len(ack.body)} bytes"
            )
    out.orphans = orphans(data_dir)
    out.plaintext = find_plaintext(scan)
    return out


# -- the crash drill -----------------------------------------------------------------------------


@dataclass
class CrashRound:
    round: int
    load_s: float
    attempts: int
    acked: int
    failures: int
    jobs: int
    problems: list[str]
    restart_s: float


def crash_rounds(
    work: Path,
    rounds: int,
    *,
    seed: int,
    min_load: float = 0.3,
    max_load: float = 1.5,
    report: Callable[[CrashRound], None] | None = None,
) -> tuple[Server, list[Ack], list[CrashRound]]:
    """SIGKILL the server at a random moment under load, restart, check; ``rounds`` times.

    Returns the running server (restarted after the last kill and checked), every job
    acknowledged over all rounds, and each round's numbers.
    """
    rng = random.Random(seed)
    data_dir, tmp = work / "data", work / "tmp"
    srv = start(data_dir, tmp)
    acked: list[Ack] = []
    results: list[CrashRound] = []
    for n in range(1, rounds + 1):
        load = Load()
        threads = start_load(load, srv, f"r{n}", seed + n)
        load_s = rng.uniform(min_load, max_load)
        time.sleep(load_s)
        kill(srv)  # at a random moment: mid-request, mid-commit, mid-record
        load.stop.set()
        for t in threads:
            t.join(timeout=30)
        acked += load.acked
        # The disk as the crash left it: no plaintext, whatever was in flight.
        on_disk = find_plaintext([data_dir, tmp])
        t0 = time.monotonic()
        srv = start(data_dir, tmp)
        restart_s = time.monotonic() - t0
        found = check_consistency(data_dir, acked, [data_dir, tmp], incoming_ok=120.0)
        problems = [f"plaintext after the crash: {p}" for p in on_disk] + found.problems
        result = CrashRound(
            n,
            round(load_s, 2),
            load.attempts,
            len(load.acked),
            load.failures,
            found.jobs,
            problems,
            round(restart_s, 2),
        )
        results.append(result)
        if report is not None:
            report(result)
    return srv, acked, results


# -- hostile clients -----------------------------------------------------------------------------


def lpd_print(addr: tuple[str, int], owner: str, title: str, data: bytes, timeout: float) -> bool:
    """One LPD "receive job" (RFC 1179), control file first; True if every step was acked."""
    control = f"Hdrill\nP{owner}\nJ{title}\nldfA001drill\nNtitle\n".encode()
    try:
        with socket.create_connection(addr, timeout=timeout) as s:
            steps = [
                b"\x02secure\n",
                f"\x02{len(control)} cfA001drill\n".encode(),
                control + b"\x00",
                f"\x03{len(data)} dfA001drill\n".encode(),
                data + b"\x00",
            ]
            for step in steps:
                s.sendall(step)
                if s.recv(1) != b"\x00":
                    return False
            return True
    except OSError:
        return False


@dataclass
class Hostile:
    """Connections that hold the server's ports without ever finishing a request."""

    sockets: list[socket.socket] = field(default_factory=list)
    trickle: list[socket.socket] = field(default_factory=list)  # send a byte now and then
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    refused: int = 0  # connections the server reset at once (at its cap)

    def open(self, addr: tuple[str, int], first: bytes = b"", *, trickle: bool = False) -> None:
        try:
            s = socket.create_connection(addr, timeout=10)
            if first:
                s.sendall(first)
        except ConnectionError:
            self.refused += 1
            return
        s.setblocking(False)
        self.sockets.append(s)
        if trickle:
            self.trickle.append(s)

    def start_trickling(self, every: float = 0.5, byte: bytes = b"X") -> None:
        def run() -> None:
            while not self.stop.wait(every):
                for s in self.trickle:
                    with contextlib.suppress(OSError):  # closed by the server: good
                        s.send(byte)

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def closed_by_server(self, group: list[socket.socket]) -> int:
        """How many of ``group`` the server has closed (FIN or reset)."""
        n = 0
        for s in group:
            try:
                if s.recv(65536) == b"":
                    n += 1
            except BlockingIOError:
                continue
            except OSError:
                n += 1
        return n

    def close(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=5)
        for s in self.sockets:
            s.close()


def timed(fn: Callable[[], object]) -> tuple[object, float]:
    t0 = time.monotonic()
    result = fn()
    return result, time.monotonic() - t0
