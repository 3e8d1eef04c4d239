"""A real `spoolvault run` process on an ephemeral port, the CLI, and IPP requests to it."""

from __future__ import annotations

import http.client
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from spoolvault.config import DataDir
from spoolvault.db import Database, Job, database_url
from spoolvault.ipp.codec import AttributeGroup, IppMessage, decode, encode
from spoolvault.ipp.constants import GroupTag, ValueTag

SPOOLVAULT = [sys.executable, "-m", "spoolvault"]
ADMIN = ("admin", "admin-pw-123")  # the administrator of servers started by `srv`
_LISTEN_RE = re.compile(r"listening on (https?://\S+)")


def spoolvault(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run one `spoolvault …` command to completion and capture its output."""
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        [*SPOOLVAULT, *args], capture_output=True, text=True, timeout=120, **kwargs
    )


@dataclass
class Server:
    """A running `spoolvault run` process."""

    proc: subprocess.Popen[str]
    url: str
    data_dir: Path
    first_lines: list[str]
    drain: threading.Thread

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        """Signal the server, wait for it, and close its pipe; return its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.drain.join(timeout=5)
            assert self.proc.stdout is not None
            self.proc.stdout.close()


def _drain(proc: subprocess.Popen[str], lines: list[str]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)


def start_server(data_dir: Path, *extra: str, env: dict[str, str] | None = None) -> Server:
    """Start `spoolvault run` and wait for its "listening on" line."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    proc = subprocess.Popen(
        [
            *SPOOLVAULT,
            "run",
            "--data-dir",
            str(data_dir),
            "--http",
            "127.0.0.1:0",
            "--raw",
            "off",
            "--no-dnssd",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=full_env,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if m := _LISTEN_RE.search(line):
            # Keep draining output so a chatty server never blocks on a full pipe.
            drain = threading.Thread(target=_drain, args=(proc, lines), daemon=True)
            drain.start()
            return Server(proc, m.group(1), data_dir, lines, drain)
    proc.kill()
    proc.wait()
    proc.stdout.close()
    raise AssertionError("spoolvault run did not start:\n" + "".join(lines))


# -- IPP requests and the job records they leave ----------------------------------------


def queue_uri(srv: Server, queue: str = "secure") -> str:
    """The printer-uri of ``queue`` on ``srv`` (ipps:// when it serves TLS)."""
    scheme, rest = srv.url.split("://", 1)
    return f"{'ipps' if scheme == 'https' else 'ipp'}://{rest}/printers/{queue}"


def jobs_in(data_dir: Path) -> list[Job]:
    """Every job record in the server's database, by id."""
    data = DataDir.open(data_dir, create=False)
    db = Database.open(database_url(None, data.database))
    try:
        with db.session(write=False) as s:
            return list(s.query(Job).order_by(Job.id))
    finally:
        db.close()


def ipp_request(
    srv: Server,
    msg: IppMessage,
    body: bytes = b"",
    path: str = "/printers/secure",
    headers: dict[str, str] | None = None,
) -> tuple[int, IppMessage | None]:
    """POST one IPP request; (HTTP status, decoded IPP response or None)."""
    parts = urlsplit(srv.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request(
            "POST", path, encode(msg) + body, {"Content-Type": "application/ipp", **(headers or {})}
        )
        resp = conn.getresponse()
        data = resp.read()
    finally:
        conn.close()
    if resp.status != 200:
        return resp.status, None
    return resp.status, decode(data)[0]


def new_request(op: int, srv: Server, user: str = "alice", request_id: int = 1) -> IppMessage:
    """An IPP 2.0 request for ``op`` to the secure queue, as ``user``."""
    msg = IppMessage((2, 0), op, request_id, [])
    g = msg.operation
    g.add("attributes-charset", ValueTag.CHARSET, "utf-8")
    g.add("attributes-natural-language", ValueTag.NATURAL_LANGUAGE, "en")
    g.add("printer-uri", ValueTag.URI, queue_uri(srv))
    g.add("requesting-user-name", ValueTag.NAME, user)
    return msg


def job_group(msg: IppMessage) -> AttributeGroup:
    """The job attributes group of a response (there must be one)."""
    group = msg.group(GroupTag.JOB)
    assert group is not None, msg
    return group
