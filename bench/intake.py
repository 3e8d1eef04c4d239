"""IPP intake benchmark: spoolvault (Spool File Encryption on) next to a private cupsd.

    .venv/bin/python bench/intake.py [--dir DIR] [--jobs 400] [--clients 8] [--rounds 6]

Both servers get the same work, with the same ipptool clients (docs/benchmarks.md,
"Intake", explains each number):

1. jobs/s: ``--jobs`` Print-Job requests of one ``--job-kib`` KiB document of random
   bytes (document-format application/octet-stream, job-hold-until indefinite), sent by
   ``--clients`` ipptool processes in parallel. Each process runs one generated .test file
   with its share of Print-Job steps over one HTTP connection. Only successful-ok answers
   count; afterwards Get-Jobs (and, for spoolvault, its SQLite database) must show every
   submitted job held.
2. MiB/s: one Print-Job of a ``--big-mib`` MiB document, from the start of ipptool to its
   exit after the response (2**20 document bytes per second).
3. spoolvault's RSS (VmRSS, VmHWM from /proc/PID/status) after the small jobs and after
   the big one, the peak (VmHWM) reset before each phase: memory must not grow with the
   job size.

Every round starts a fresh spoolvault and a fresh cupsd (each with empty spool
directories), and the order of the servers alternates from round to round. cupsd holds
jobs submitted with job-hold-until=indefinite, so no filter or backend runs.
Progress goes to stderr; one JSON line with every sample goes to stdout at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import plistlib
import re
import resource
import secrets
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

KIB = 1 << 10
MIB = 1 << 20
CUPSD = "/usr/sbin/cupsd"
IPPTOOL = "ipptool"
QUEUE_CUPS = "bench"
USER = "bench"
JOB_STATE_PENDING_HELD = 4
TARGET_RATIO = 1.0
_LISTEN_RE = re.compile(r"listening on (https?://\S+)")
_CLK_TCK = os.sysconf("SC_CLK_TCK")

PRINT_JOB_STEP = """{{
  NAME "Print-Job {n}"
  OPERATION Print-Job
  GROUP operation-attributes-tag
  ATTR charset attributes-charset utf-8
  ATTR naturalLanguage attributes-natural-language en
  ATTR uri printer-uri $uri
  ATTR name requesting-user-name {user}
  ATTR name job-name bench-{n}
  ATTR mimeMediaType document-format application/octet-stream
  GROUP job-attributes-tag
  ATTR keyword job-hold-until indefinite
  FILE $filename
  STATUS successful-ok
}}
"""

GET_JOBS_STEP = """{{
  NAME "Get-Jobs"
  OPERATION Get-Jobs
  GROUP operation-attributes-tag
  ATTR charset attributes-charset utf-8
  ATTR naturalLanguage attributes-natural-language en
  ATTR uri printer-uri $uri
  ATTR name requesting-user-name {user}
  ATTR keyword which-jobs not-completed
  ATTR keyword requested-attributes job-id,job-state
  STATUS successful-ok
}}
"""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def rnd(x: float | None, digits: int = 1) -> float | None:
    return None if x is None else round(x, digits)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode} while starting")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout:.0f} s")


# -- /proc ------------------------------------------------------------------------------


def rss(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM of ``pid`` in MiB."""
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = round(int(value.split()[0]) / KIB, 1)
    return out


def reset_peak_rss(pid: int) -> bool:
    """Reset VmHWM to the current RSS (clear_refs 5, Linux 4.0+; needs ptrace rights)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5\n", encoding="ascii")
    except OSError:
        return False
    return True


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (all its threads), in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# -- ipptool ----------------------------------------------------------------------------


def plist_tests(raw: bytes) -> list[dict[str, Any]]:
    """The test entries of ipptool -X output (one plist per .test file)."""
    tests: list[dict[str, Any]] = []
    for part in raw.split(b"<?xml"):
        if b"</plist>" not in part:
            continue
        doc = b"<?xml" + part.split(b"</plist>")[0] + b"</plist>"
        tests.extend(plistlib.loads(doc).get("Tests", []))
    return tests


def count_ok(tests: list[dict[str, Any]]) -> int:
    return sum(1 for t in tests if t.get("StatusCode") == "successful-ok")


def ipptool_cmd(uri: str, test: Path, document: Path, timeout_s: int) -> list[str]:
    # -C: chunked requests (ipptool's default, the faster of -C/-L for both servers here);
    # -I: keep going after a failed step, so every answer is counted.
    return [IPPTOOL, "-X", "-I", "-C", "-T", str(timeout_s), "-f", str(document), uri, str(test)]


def run_ipptool(uri: str, test: Path, document: Path, timeout_s: int = 60) -> list[dict[str, Any]]:
    proc = subprocess.run(
        ipptool_cmd(uri, test, document, timeout_s), capture_output=True, timeout=timeout_s + 60
    )
    tests = plist_tests(proc.stdout)
    if not tests:
        raise RuntimeError(f"ipptool {test.name} printed no result: {proc.stderr[-2000:]!r}")
    return tests


@dataclass
class Batch:
    """What a set of parallel ipptool clients did."""

    seconds: float
    ok: int
    failed: int
    statuses: dict[str, int]
    client_cpu_s: float


def run_clients(
    uri: str, tests: list[Path], document: Path, out_dir: Path, timeout_s: int
) -> Batch:
    """Start one ipptool per .test file at once; time until the last one exits."""
    outs = [out_dir / f"{t.stem}.out" for t in tests]
    errs = [out_dir / f"{t.stem}.err" for t in tests]
    handles: list[tuple[Any, Any]] = []
    procs: list[subprocess.Popen[bytes]] = []
    cpu0 = children_cpu()
    try:
        for out, err in zip(outs, errs, strict=True):
            handles.append((out.open("wb"), err.open("wb")))
        t0 = time.perf_counter()
        for test, (fo, fe) in zip(tests, handles, strict=True):
            procs.append(
                subprocess.Popen(ipptool_cmd(uri, test, document, timeout_s), stdout=fo, stderr=fe)
            )
        for p in procs:
            p.wait(timeout=timeout_s + 120)
        seconds = time.perf_counter() - t0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for fo, fe in handles:
            fo.close()
            fe.close()
    client_cpu = children_cpu() - cpu0
    ok = failed = 0
    statuses: dict[str, int] = {}
    for out, err in zip(outs, errs, strict=True):
        entries = plist_tests(out.read_bytes())
        if not entries:
            raise RuntimeError(f"ipptool printed no result: {err.read_text(errors='replace')}")
        for entry in entries:
            status = str(entry.get("StatusCode", "no-answer"))
            statuses[status] = statuses.get(status, 0) + 1
            if status == "successful-ok":
                ok += 1
            else:
                failed += 1
    return Batch(seconds, ok, failed, statuses, client_cpu)


def held_jobs(uri: str, get_jobs: Path, document: Path) -> int:
    """Jobs in job-state pending-held (4), by Get-Jobs which-jobs=not-completed."""
    tests = run_ipptool(uri, get_jobs, document)
    if count_ok(tests) != 1:
        raise RuntimeError(f"Get-Jobs failed: {tests[0].get('StatusCode')}")
    held = 0
    for group in tests[0].get("ResponseAttributes", []):
        if isinstance(group, dict) and group.get("job-state") == JOB_STATE_PENDING_HELD:
            held += 1
    return held


# -- servers ----------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    root: Path
    proc: subprocess.Popen[bytes] | None = None
    uri: str = ""
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    @property
    def spool_dir(self) -> Path:
        """Where the server keeps the documents of its jobs."""
        raise NotImplementedError

    def verify(self, uri_test: Path, document: Path, expected: int) -> dict[str, Any]:
        held = held_jobs(self.uri, uri_test, document)
        return {"held_get_jobs": held, "ok": held == expected}


def spoolvault_env(src: Path | None) -> dict[str, str]:
    """The environment of the spoolvault server (and of the version probe)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(src), env.get("PYTHONPATH")]))
    return env


class Spoolvault(Server):
    """``spoolvault run`` with the default settings (Spool File Encryption on)."""

    def __init__(self, name: str, root: Path, *, src: Path | None = None) -> None:
        super().__init__(name, root)
        self.src = src

    @property
    def spool_dir(self) -> Path:
        return self.root / "data" / "spool"

    def start(self) -> None:
        self.root.mkdir(parents=True)
        data = self.root / "data"
        # A known admin password, so the server does not print a generated one.
        env = {**spoolvault_env(self.src), "SPOOLVAULT_ADMIN_PASSWORD": secrets.token_urlsafe(16)}
        cmd = [sys.executable, "-m", "spoolvault", "run", "--data-dir", str(data)]
        cmd += ["--http", "127.0.0.1:0", "--raw", "off", "--no-dnssd"]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        self.proc = proc
        assert proc.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline().decode(errors="replace")
            if not line:
                break
            lines.append(line)
            if m := _LISTEN_RE.search(line):
                base = m.group(1)
                self.uri = base.replace("http://", "ipp://", 1) + "/printers/secure"
                self.facts["health"] = json.loads(
                    urllib.request.urlopen(base + "/healthz", timeout=10).read()  # noqa: S310
                )
                # Keep reading its log so a full pipe never blocks the server.
                log_path = self.root / "server.log"
                threading.Thread(target=_drain, args=(proc, log_path, lines), daemon=True).start()
                return
        self.stop()
        raise RuntimeError("spoolvault did not start:\n" + "".join(lines))

    def verify(self, uri_test: Path, document: Path, expected: int) -> dict[str, Any]:
        out = super().verify(uri_test, document, expected)
        db = self.root / "data" / "spoolvault.db"
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
            held, encrypted = con.execute(
                "SELECT count(*), coalesce(sum(encrypted), 0) FROM jobs WHERE state = 'held'"
            ).fetchone()
        out["held_db"] = held
        out["encrypted_db"] = encrypted
        out["ok"] = out["ok"] and held == expected and encrypted == expected
        return out


def _drain(proc: subprocess.Popen[bytes], path: Path, first: list[str]) -> None:
    assert proc.stdout is not None
    with path.open("wb") as f:
        f.write("".join(first).encode())
        for line in proc.stdout:
            f.write(line)


class Cupsd(Server):
    """A private cupsd (foreground child) with its own directories and one raw queue."""

    def __init__(self, name: str, root: Path, *, sync: bool = False) -> None:
        super().__init__(name, root)
        self.sync = sync

    @property
    def spool_dir(self) -> Path:
        return self.root / "spool"

    def start(self) -> None:
        root = self.root
        for sub in ("spool", "cache", "state", "log", "ppd", "ssl"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        tmp = root / "spool" / "tmp"
        tmp.mkdir(exist_ok=True)
        tmp.chmod(0o1777)
        port = free_port()
        # cups-files.conf: cupsd refuses User root, so it is lp, as in Debian's package.
        sync = "SyncOnClose Yes\n" if self.sync else ""
        (root / "cups-files.conf").write_text(
            f"User lp\nGroup lp\nSystemGroup root\n"
            f"ServerRoot {root}\nRequestRoot {root}/spool\nTempDir {tmp}\n"
            f"CacheDir {root}/cache\nStateDir {root}/state\n"
            "ServerBin /usr/lib/cups\nDataDir /usr/share/cups\n"
            "DocumentRoot /usr/share/cups/doc-root\n"
            f"AccessLog {root}/log/access_log\nErrorLog {root}/log/error_log\n"
            f"PageLog {root}/log/page_log\nFileDevice Yes\n{sync}"
        )
        dirty = "DirtyCleanInterval 0\n" if self.sync else ""
        (root / "cupsd.conf").write_text(
            f"Listen 127.0.0.1:{port}\nLogLevel warn\nBrowsing No\nDefaultAuthType None\n"
            f"WebInterface No\nMaxJobs 0\n{dirty}"
            "<Location />\n  Order allow,deny\n  Allow all\n</Location>\n"
            "<Policy default>\n  <Limit All>\n    Order deny,allow\n  </Limit>\n</Policy>\n"
        )
        subprocess.run(
            ["chown", "-R", "lp:lp", str(root / "spool"), str(root / "cache")], check=True
        )
        with (root / "log" / "stderr").open("wb") as stderr:
            self.proc = subprocess.Popen(
                [CUPSD, "-f", "-c", str(root / "cupsd.conf"), "-s", str(root / "cups-files.conf")],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        wait_port(port, self.proc, "cupsd")
        host = f"127.0.0.1:{port}"
        for cmd in (
            ["lpadmin", "-h", host, "-p", QUEUE_CUPS, "-E", "-v", "file:///dev/null"],
            ["cupsaccept", "-h", host, QUEUE_CUPS],
            ["cupsenable", "-h", host, QUEUE_CUPS],
        ):
            subprocess.run(cmd, check=True, capture_output=True, timeout=60)
        self.uri = f"ipp://{host}/printers/{QUEUE_CUPS}"
        self.facts["sync_on_close"] = self.sync
        self.facts["dirty_clean_interval_s"] = 0 if self.sync else 30


SINKS = ("sink-discard", "sink-files", "sink-log", "sink-log-record")


class Sink(Server):
    """A reference server of bench/ipp_sink.py: the floor of a mode's durability work."""

    @property
    def spool_dir(self) -> Path:
        return self.root / "data"

    def start(self) -> None:
        self.root.mkdir(parents=True)
        port = free_port()
        mode = self.name.removeprefix("sink-")
        script = Path(__file__).with_name("ipp_sink.py")
        cmd = [sys.executable, str(script), mode, "--dir", str(self.spool_dir)]
        with (self.root / "stderr").open("wb") as stderr:
            self.proc = subprocess.Popen([*cmd, "--port", str(port)], stderr=stderr)
        wait_port(port, self.proc, self.name)
        self.uri = f"ipp://127.0.0.1:{port}/printers/sink"

    def verify(self, uri_test: Path, document: Path, expected: int) -> dict[str, Any]:
        """Every request answered was made durable (or, for discard, answered)."""
        url = self.uri.replace("ipp://", "http://", 1).rsplit("/printers/", 1)[0] + "/count"
        count = int(urllib.request.urlopen(url, timeout=10).read())  # noqa: S310
        return {"durable": count, "ok": count == expected}


# -- the benchmark ----------------------------------------------------------------------


def write_random(path: Path, size: int) -> None:
    with path.open("wb") as f:
        left = size
        while left:
            n = min(left, 4 * MIB)
            f.write(os.urandom(n))
            left -= n


def prefault(work: Path, mib: int) -> None:
    """Write ``mib`` MiB to a scratch file and delete it, right before a timed phase.

    On this VM, writing 200 MiB into memory the guest had not used for a few seconds ran
    at about 450 MiB/s, into page cache freed moments before at about 6 GiB/s. Likely
    cause: the balloon device has free page reporting, so the host takes back pages that
    stay free for about 2 s and the guest faults them in again on next use. Which server
    got the warm pages then depended on timing. With this, both write into memory freed
    well under a second before. The scratch file is deleted before writeback normally
    starts, so it leaves no dirty data behind.
    """
    scratch = work / "prefault.bin"
    block = bytes(4 * MIB)
    with scratch.open("wb") as f:
        for _ in range(max(1, mib // 4)):
            f.write(block)
    scratch.unlink()


def release_page_cache(root: Path) -> None:
    """Truncate the files under ``root``, so page cache does not pile up round by round.

    Truncated, not deleted: after thousands of files were deleted, one file creation here
    took up to about 1 ms of kernel CPU instead of 0.02 to 0.4 ms, charged to whichever
    server ran next (likely because ext4 without a journal skips inodes deleted in the
    last 60 to 360 seconds, fs/ext4/ialloc.c recently_deleted()). The files are deleted
    at the end, after the measurements (with --keep, they stay, empty).
    """
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            path = os.path.join(dirpath, name)
            if os.path.isfile(path) and not os.path.islink(path):
                with contextlib.suppress(OSError):
                    os.truncate(path, 0)
    os.sync()


def write_tests(work: Path, jobs: int, clients: int) -> list[Path]:
    """One .test file per client, the jobs shared out as evenly as possible."""
    tests: list[Path] = []
    for c in range(clients):
        share = jobs // clients + (1 if c < jobs % clients else 0)
        if share == 0:
            continue
        body = "".join(PRINT_JOB_STEP.format(n=i + 1, user=USER) for i in range(share))
        path = work / f"client-{c}.test"
        path.write_text(body)
        tests.append(path)
    return tests


def run_server(
    srv: Server,
    args: argparse.Namespace,
    files: dict[str, Path],
    client_tests: list[Path],
) -> dict[str, Any]:
    """One round on one fresh server: warm-up, the small jobs, the big job."""
    rec: dict[str, Any] = {}
    try:
        srv.start()
        rec.update(uri=srv.uri, **srv.facts)
        out_dir = srv.root / "ipptool"
        out_dir.mkdir()
        # Warm-up, unrecorded: one small job (it stays held and is counted below).
        warm = count_ok(run_ipptool(srv.uri, files["one"], files["small"]))
        expected = warm
        rec["rss_mib_idle"] = rss(srv.pid)

        # VmHWM after each phase is then the peak of that phase, not of the start-up.
        rec["peak_rss_reset"] = reset_peak_rss(srv.pid)
        os.sync()
        prefault(srv.root.parent, args.jobs * args.job_kib // KIB + 64)
        cpu0 = cpu_seconds(srv.pid)
        batch = run_clients(srv.uri, client_tests, files["small"], out_dir, args.timeout)
        server_cpu = cpu_seconds(srv.pid) - cpu0
        expected += batch.ok
        rec["small"] = {
            "seconds": round(batch.seconds, 4),
            "submitted": args.jobs,
            "successful_ok": batch.ok,
            "failed": batch.failed,
            # Steps with no answer at all (an ipptool that stopped early).
            "missing": args.jobs - batch.ok - batch.failed,
            "statuses": batch.statuses,
            "jobs_per_s": round(batch.ok / batch.seconds, 1),
            "server_cpu_s": round(server_cpu, 2),
            "server_cpu_ms_per_job": round(1000 * server_cpu / max(batch.ok, 1), 2),
            "clients_cpu_s": round(batch.client_cpu_s, 2),
            "clients_cpu_ms_per_job": round(1000 * batch.client_cpu_s / max(batch.ok, 1), 2),
        }
        rec["small"]["verify"] = srv.verify(files["get_jobs"], files["small"], expected)
        rec["rss_mib_after_small"] = rss(srv.pid)

        reset_peak_rss(srv.pid)
        os.sync()
        prefault(srv.root.parent, args.big_mib + 64)
        cpu0 = cpu_seconds(srv.pid)
        t0 = time.perf_counter()
        tests = run_ipptool(srv.uri, files["one"], files["big"], timeout_s=args.timeout)
        seconds = time.perf_counter() - t0
        server_cpu = cpu_seconds(srv.pid) - cpu0
        ok = count_ok(tests)
        expected += ok
        big_bytes = args.big_mib * MIB
        rec["big"] = {
            "seconds": round(seconds, 4),
            "bytes": big_bytes,
            "successful_ok": ok,
            "status": tests[0].get("StatusCode"),
            "mib_per_s": round(big_bytes / MIB / seconds, 1) if ok else None,
            "server_cpu_s": round(server_cpu, 2),
        }
        rec["big"]["verify"] = srv.verify(files["get_jobs"], files["small"], expected)
        rec["rss_mib_after_big"] = rss(srv.pid)
    finally:
        srv.stop()
    return rec


def median_or_none(values: list[float | None]) -> float | None:
    real = [v for v in values if v is not None]
    return statistics.median(real) if real else None


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def _version(cmd: list[str]) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except OSError:
        return None
    return (out.stdout or out.stderr).strip() or None


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError:
        return ""


def machine_facts(directory: Path) -> dict[str, Any]:
    cpu_model = next(
        (
            line.split(":", 1)[1].strip()
            for line in _read("/proc/cpuinfo").splitlines()
            if line.startswith("model name")
        ),
        None,
    )
    mem = next(
        (
            int(line.split()[1]) // KIB
            for line in _read("/proc/meminfo").splitlines()
            if line.startswith("MemTotal:")
        ),
        None,
    )
    os_name = next(
        (
            line.split("=", 1)[1].strip('"')
            for line in _read("/etc/os-release").splitlines()
            if line.startswith("PRETTY_NAME=")
        ),
        None,
    )
    try:
        from importlib.metadata import version

        versions = {
            pkg: version(pkg)
            for pkg in ("spoolvault", "uvicorn", "httptools", "starlette", "SQLAlchemy")
        }
    except Exception:  # informational only
        versions = {}
    return {
        "cpu_count": os.cpu_count(),
        "cpu_usable": len(os.sched_getaffinity(0)),
        "cpu_model": cpu_model,
        "mem_total_mib": mem,
        "os": os_name,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": versions,
        "cups": _version(["dpkg-query", "-W", "-f", "${Version}", "cups-daemon"]),
        "ipptool": _version([IPPTOOL, "--version"]),
        "dir_fstype": _version(["stat", "-f", "-c", "%T", str(directory)]),
        "euid": os.geteuid(),
    }


def source_facts(src: Path | None) -> dict[str, Any]:
    """Which spoolvault the server ran: its package directory, and the repository state."""
    probe = subprocess.run(
        [sys.executable, "-c", "import spoolvault; print(spoolvault.__file__)"],
        capture_output=True,
        text=True,
        env=spoolvault_env(src),
        cwd="/",
        check=False,
    )
    module = Path(probe.stdout.strip()).parent if probe.returncode == 0 else None
    facts: dict[str, Any] = {"package_dir": str(module) if module else None}
    repo = Path(__file__).resolve().parent.parent

    def git(*cmd: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(repo), *cmd], capture_output=True, text=True)
        except OSError:
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    # The HEAD of this benchmark's repository; it is the commit of the server only when the
    # server runs from this repository's src/ (then src_modified_vs_head says if it is
    # exactly that commit).
    facts["bench_repo_head"] = git("rev-parse", "HEAD")
    facts["from_bench_repo"] = module == repo / "src" / "spoolvault"
    if facts["from_bench_repo"]:
        status = git("status", "--porcelain", "--", "src")
        facts["src_modified_vs_head"] = None if status is None else bool(status)
    return facts


@contextlib.contextmanager
def workdir(parent: Path, keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="spoolvault-intake-", dir=parent))
    path.chmod(0o755)  # cupsd checks its directories; lp must be able to reach them
    try:
        yield path
    finally:
        if keep:
            log(f"kept {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


def make_server(kind: str, root: Path, src: Path | None) -> Server:
    if kind == "spoolvault":
        return Spoolvault(kind, root, src=src)
    if kind == "cupsd":
        return Cupsd(kind, root)
    if kind == "cupsd-sync":
        return Cupsd(kind, root, sync=True)
    if kind in SINKS:
        return Sink(kind, root)
    raise ValueError(kind)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--dir", type=Path, default=Path("/var/tmp"), help="parent of the work dir")
    ap.add_argument("--jobs", type=int, default=400, help="small jobs per round (default 400)")
    ap.add_argument("--clients", type=int, default=8, help="parallel ipptool processes")
    ap.add_argument("--job-kib", type=int, default=100, help="small document size in KiB")
    ap.add_argument("--big-mib", type=int, default=200, help="big document size in MiB")
    ap.add_argument("--rounds", type=int, default=6, help="rounds (server order alternates)")
    ap.add_argument(
        "--servers",
        default="spoolvault,cupsd",
        help="comma list of spoolvault, cupsd, and references: cupsd-sync (cupsd with "
        "SyncOnClose Yes and DirtyCleanInterval 0), sink-discard, sink-files, sink-log, "
        "sink-log-record (bench/ipp_sink.py), or sinks for all four",
    )
    ap.add_argument(
        "--spoolvault-src",
        type=Path,
        help="run spoolvault from this directory (put first on PYTHONPATH), e.g. the src/ "
        "of a `git archive` export of one commit; default: the installed package",
    )
    ap.add_argument("--timeout", type=int, default=300, help="ipptool -T timeout in seconds")
    ap.add_argument(
        "--keep",
        action="store_true",
        help="keep the work directory (logs, ipptool output; the spool files are truncated "
        "after each round either way)",
    )
    args = ap.parse_args(argv)
    kinds = [k.strip() for k in args.servers.split(",") if k.strip()]
    kinds = [s for k in kinds for s in (SINKS if k == "sinks" else (k,))]
    unknown = set(kinds) - {"spoolvault", "cupsd", "cupsd-sync", *SINKS}
    if unknown:
        ap.error(f"--servers: unknown {', '.join(sorted(unknown))}")
    if "spoolvault" not in kinds or "cupsd" not in kinds:
        ap.error("--servers must include spoolvault and cupsd")
    if args.jobs < 1 or args.clients < 1 or args.rounds < 1:
        ap.error("--jobs, --clients and --rounds must be positive")
    if os.geteuid() != 0:
        log("warning: not root; a private cupsd usually needs root (it runs as User lp)")

    started = datetime.now(UTC)
    t_start = time.monotonic()
    results: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
    with workdir(args.dir, args.keep) as work:
        files = {
            "small": work / f"doc-{args.job_kib}KiB.bin",
            "big": work / f"doc-{args.big_mib}MiB.bin",
            "one": work / "print-job.test",
            "get_jobs": work / "get-jobs.test",
        }
        log(f"work dir {work}; writing documents")
        write_random(files["small"], args.job_kib * KIB)
        write_random(files["big"], args.big_mib * MIB)
        files["one"].write_text(PRINT_JOB_STEP.format(n=0, user=USER))
        files["get_jobs"].write_text(GET_JOBS_STEP.format(user=USER))
        client_tests = write_tests(work, args.jobs, args.clients)
        os.sync()
        for r in range(args.rounds):
            order = kinds if r % 2 == 0 else list(reversed(kinds))
            for kind in order:
                srv = make_server(kind, work / f"round{r}-{kind}", args.spoolvault_src)
                log(f"round {r + 1}/{args.rounds}: {kind}")
                rec = run_server(srv, args, files, client_tests)
                rec["round"] = r + 1
                rec["position"] = order.index(kind) + 1
                results[kind].append(rec)
                release_page_cache(srv.spool_dir)
                log(
                    f"  {rec['small']['jobs_per_s']} jobs/s "
                    f"({rec['small']['successful_ok']}/{args.jobs} ok, "
                    f"server CPU {rec['small']['server_cpu_ms_per_job']} ms/job), "
                    f"{rec['big']['mib_per_s']} MiB/s; RSS after small/big "
                    f"{rec['rss_mib_after_small'].get('VmRSS')}/"
                    f"{rec['rss_mib_after_big'].get('VmRSS')} MiB; "
                    f"verified {rec['small']['verify']['ok'] and rec['big']['verify']['ok']}"
                )

    summary: dict[str, Any] = {}
    for kind, recs in results.items():
        jps = [r["small"]["jobs_per_s"] for r in recs]
        mps = [r["big"]["mib_per_s"] for r in recs]
        summary[kind] = {
            "jobs_per_s_median": median_or_none(jps),
            "jobs_per_s_samples": jps,
            "mib_per_s_median": median_or_none(mps),
            "mib_per_s_samples": mps,
            "server_cpu_ms_per_job_median": median_or_none(
                [r["small"]["server_cpu_ms_per_job"] for r in recs]
            ),
            "clients_cpu_ms_per_job_median": median_or_none(
                [r["small"]["clients_cpu_ms_per_job"] for r in recs]
            ),
            "rss_mib_after_small": [r["rss_mib_after_small"] for r in recs],
            "rss_mib_after_big": [r["rss_mib_after_big"] for r in recs],
            "all_verified": all(
                r["small"]["verify"]["ok"] and r["big"]["verify"]["ok"] for r in recs
            ),
            "all_successful": all(
                r["small"]["successful_ok"] == args.jobs and r["big"]["successful_ok"] == 1
                for r in recs
            ),
        }
    sv, cups = summary["spoolvault"], summary["cupsd"]
    valid = all(s["all_verified"] and s["all_successful"] for s in summary.values())
    jobs_ratio = ratio(sv["jobs_per_s_median"], cups["jobs_per_s_median"])
    mib_ratio = ratio(sv["mib_per_s_median"], cups["mib_per_s_median"])
    growth = [
        round(b["VmRSS"] - s["VmRSS"], 1)
        for s, b in zip(sv["rss_mib_after_small"], sv["rss_mib_after_big"], strict=True)
    ]
    hwm_growth = [
        round(b["VmHWM"] - s["VmHWM"], 1)
        for s, b in zip(sv["rss_mib_after_small"], sv["rss_mib_after_big"], strict=True)
    ]
    result = {
        "benchmark": "intake",
        "started": started.isoformat(timespec="seconds"),
        "duration_s": round(time.monotonic() - t_start, 1),
        "params": {
            "jobs": args.jobs,
            "clients": args.clients,
            "job_kib": args.job_kib,
            "big_mib": args.big_mib,
            "rounds": args.rounds,
            "servers": kinds,
            "dir": str(args.dir),
        },
        "summary": summary,
        "spoolvault_rss_growth_small_to_big_mib": {"VmRSS": growth, "VmHWM": hwm_growth},
        "targets": {
            "jobs_per_s_ratio": jobs_ratio,
            "jobs_per_s_ratio_target": TARGET_RATIO,
            # Every job answered successful-ok and found held, on every server, every round.
            "valid": valid,
            "jobs_per_s_met": valid and jobs_ratio is not None and jobs_ratio >= TARGET_RATIO,
            "mib_per_s_ratio": mib_ratio,
            "mib_per_s_ratio_target": TARGET_RATIO,
            "mib_per_s_met": valid and mib_ratio is not None and mib_ratio >= TARGET_RATIO,
        },
        "spoolvault_source": source_facts(args.spoolvault_src),
        "machine": machine_facts(args.dir),
        "runs": results,
    }
    for kind in kinds:
        if kind not in ("spoolvault", "cupsd"):
            result["targets"][f"reference_{kind}"] = {
                "its_jobs_per_s_vs_cupsd": ratio(
                    summary[kind]["jobs_per_s_median"], cups["jobs_per_s_median"]
                ),
                "jobs_per_s_ratio": ratio(
                    sv["jobs_per_s_median"], summary[kind]["jobs_per_s_median"]
                ),
                "mib_per_s_ratio": ratio(sv["mib_per_s_median"], summary[kind]["mib_per_s_median"]),
            }
    log(
        f"spoolvault/cupsd: jobs/s {jobs_ratio}, MiB/s {mib_ratio} "
        f"(target >= {TARGET_RATIO}); took {result['duration_s']} s"
    )
    print(json.dumps(result, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
