"""A real IPP Everywhere printer for tests: CUPS's ippeveprinter, printing to a directory.

ippeveprinter registers with avahi over D-Bus and exits without it. As root, each printer
runs in its own mount and PID namespace with its own dbus-daemon and avahi-daemon (under
names no `pkill -x avahi-daemon` matches), so tests never touch the machine's daemons and
everything dies with the namespace. Not as root, an already-running avahi is used, or the
test is skipped.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.cupsd import free_port
from spoolvault.ipp.codec import IppMessage, decode, encode
from spoolvault.ipp.constants import GroupTag, Operation, PrinterState, Status, ValueTag

IPPEVEPRINTER = shutil.which("ippeveprinter")
# ippeveprinter sniffs application/octet-stream and refuses what it cannot type.
FORMATS = "application/pdf,application/octet-stream,text/plain"


AVAHI_CONF = """\
[server]
use-ipv4=yes
use-ipv6=no
allow-interfaces=lo
enable-dbus=yes
[wide-area]
enable-wide-area=no
[reflector]
enable-reflector=no
"""

# Run inside `unshare --mount --pid --fork --kill-child`: a private /run/dbus and
# /run/avahi-daemon, the daemons under names no `pkill -x avahi-daemon` matches, then the
# printer in the foreground. When the unshare process dies, the namespace dies whole.
ISOLATED = """\
set -e
mkdir -p /run/dbus /run/avahi-daemon
mount -t tmpfs tmpfs /run/dbus
mount -t tmpfs tmpfs /run/avahi-daemon
{dbus} --system --fork
{avahi} -f {conf} --no-drop-root --no-chroot --no-rlimits >{avahi_log} 2>&1 &
i=0
# Not `avahi-daemon --check`: that only finds the pid file, and a printer whose avahi client
# connects before the daemon serves aborts (avahi client state 101, an assertion in
# avahi_entry_group_add_service_strlst), as it did in a full test run.
until grep -q "Server startup complete" {avahi_log}; do
  i=$((i + 1)); [ $i -lt 200 ] || {{ echo "avahi-daemon did not start" >&2; exit 3; }}
  sleep 0.05
done
{printer}
"""


@dataclass
class EvePrinter:
    """A running ippeveprinter."""

    proc: subprocess.Popen[bytes]
    port: int
    spool: Path
    log: Path

    @property
    def uri(self) -> str:
        return f"ipp://127.0.0.1:{self.port}/ipp/print"

    def call(self, op: int, *attrs: tuple[Any, ...]) -> IppMessage:
        """One IPP request over httpx; extra operation attributes as (name, tag, values...)."""
        msg = IppMessage((2, 0), op, 1)
        group = msg.operation
        group.add("attributes-charset", ValueTag.CHARSET, "utf-8")
        group.add("attributes-natural-language", ValueTag.NATURAL_LANGUAGE, "en")
        group.add("printer-uri", ValueTag.URI, self.uri)
        for name, tag, *values in attrs:
            group.add(name, tag, *values)
        answer = httpx.post(
            f"http://127.0.0.1:{self.port}/ipp/print",
            content=encode(msg),
            headers={"Content-Type": "application/ipp"},
            timeout=5,
        )
        answer.raise_for_status()
        return decode(answer.content)[0]

    def state(self) -> int:
        reply = self.call(
            Operation.GET_PRINTER_ATTRIBUTES,
            ("requested-attributes", ValueTag.KEYWORD, "printer-state"),
        )
        group = reply.group(GroupTag.PRINTER)
        assert group is not None
        attr = group.get("printer-state")
        assert attr is not None
        value = attr.value
        assert isinstance(value, int)
        return value

    def wait_idle(self, timeout: float = 15) -> None:
        """Until the previous job is done: the next Print-Job will not be answered busy."""
        deadline = time.monotonic() + timeout
        while self.state() != PrinterState.IDLE:
            assert time.monotonic() < deadline, "ippeveprinter stayed busy"
            time.sleep(0.05)

    def job_file(self, job_id: int) -> Path:
        """The document of a job: "<id>-<job name>.<ext>" (the ".prn" is /bin/cat's output)."""
        found = [p for p in self.spool.glob(f"{job_id}-*") if p.suffix != ".prn"]
        assert len(found) == 1, (job_id, sorted(p.name for p in self.spool.iterdir()))
        return found[0]

    def job(self, job_id: int) -> dict[str, object]:
        reply = self.call(
            Operation.GET_JOB_ATTRIBUTES,
            ("job-id", ValueTag.INTEGER, job_id),
            ("requested-attributes", ValueTag.KEYWORD, "all"),
        )
        assert reply.code == Status.SUCCESSFUL_OK, hex(reply.code)
        group = reply.group(GroupTag.JOB)
        assert group is not None
        return {a.name: a.value for a in group}

    def jobs_named(self, name: str) -> list[dict[str, object]]:
        reply = self.call(
            Operation.GET_JOBS,
            ("which-jobs", ValueTag.KEYWORD, "all"),
            ("requested-attributes", ValueTag.KEYWORD, "job-id", "job-name", "job-state"),
        )
        jobs = [{a.name: a.value for a in g} for g in reply.groups_of(GroupTag.JOB)]
        return [j for j in jobs if j.get("job-name") == name]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def files(self) -> list[Path]:
        """Every document the printer received so far (not /bin/cat's .prn output)."""
        return sorted(p for p in self.spool.iterdir() if p.is_file() and p.suffix != ".prn")

    def wait_for_body(self, body: bytes, timeout: float = 30) -> None:
        """Until a document the printer received is ``body``, byte for byte."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(f.read_bytes() == body for f in self.files()):
                return
            time.sleep(0.1)
        raise AssertionError(f"the document never arrived byte-identical: {self.files()}")

    def stop(self) -> None:
        _stop(self.proc)


def avahi_running() -> bool:
    """An avahi-daemon already runs (its pid file names a live process). For a daemon just
    started, wait for its log's "Server startup complete" instead (ISOLATED)."""
    if shutil.which("avahi-daemon") is None:
        return False
    check = subprocess.run(["avahi-daemon", "--check"], capture_output=True, check=False)
    return check.returncode == 0


def _printer_command(port: int, spool: Path, name: str, formats: str = FORMATS) -> list[str]:
    assert IPPEVEPRINTER is not None
    return [
        *(IPPEVEPRINTER, "-p", str(port), "-n", "localhost", "-k", "-d", str(spool)),
        *("-c", "/bin/cat", "-f", formats, name),
    ]


def _isolated_command(work: Path, printer: list[str]) -> list[str] | None:
    tools = [shutil.which(t) for t in ("unshare", "dbus-daemon", "avahi-daemon")]
    if os.geteuid() != 0 or None in tools:
        return None
    _, dbus, avahi = (t for t in tools if t is not None)
    (work / "sv-dbus-daemon").symlink_to(dbus)
    (work / "sv-avahi-daemon").symlink_to(avahi)
    (work / "avahi.conf").write_text(AVAHI_CONF)
    script = work / "isolated.sh"
    script.write_text(
        ISOLATED.format(
            dbus=shlex.quote(str(work / "sv-dbus-daemon")),
            avahi=shlex.quote(str(work / "sv-avahi-daemon")),
            conf=shlex.quote(str(work / "avahi.conf")),
            avahi_log=shlex.quote(str(work / "avahi.log")),
            printer=shlex.join(printer),
        )
    )
    unshare = ["unshare", "--mount", "--pid", "--fork", "--kill-child", "--propagation", "private"]
    return [*unshare, "sh", str(script)]


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        # unshare --fork ignores SIGTERM; its SIGKILL takes the whole namespace down.
        if proc.args[0] == "unshare":  # type: ignore[index]
            proc.kill()
        else:
            proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _start_printer(work: Path, command: list[str], port: int) -> EvePrinter:
    spool = work / "spool"
    spool.mkdir(exist_ok=True)
    log = work / "printer.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    printer = EvePrinter(proc, port, spool, log)
    deadline = time.monotonic() + 20
    while True:
        if not printer.alive() or time.monotonic() > deadline:
            _stop(proc)
            raise RuntimeError(f"ippeveprinter did not come up:\n{log.read_text()}")
        with contextlib.suppress(httpx.HTTPError):
            if printer.state():
                return printer
        time.sleep(0.1)


def start_printer(
    work: Path, name: str = "testprinter", port: int | None = None, formats: str = FORMATS
) -> EvePrinter:
    """Start ippeveprinter with its spool in ``work/spool`` (jobs "print" with /bin/cat),
    on ``port`` or a free one, taking ``formats`` (its -f list)."""
    if IPPEVEPRINTER is None:
        pytest.skip("ippeveprinter not installed (Debian package cups-ipp-utils)")
    work.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    plain = _printer_command(port, work / "spool", name, formats)
    command = _isolated_command(work, plain)
    if command is None:
        if not avahi_running():
            pytest.skip("ippeveprinter needs DNS-SD: no avahi-daemon running, and not root")
        command = plain
    return _start_printer(work, command, port)
