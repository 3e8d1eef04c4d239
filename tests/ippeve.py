"""A real IPP Everywhere printer for tests: CUPS's ippeveprinter, printing to a directory."""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from cupsd import free_port

IPPEVEPRINTER = shutil.which("ippeveprinter")


def ensure_dnssd() -> None:
    """ippeveprinter registers with avahi over the system D-Bus and exits without it.

    A dbus-daemon whose socket file is gone (removed by another test's clean-up) is as
    good as none: restart both daemons then.
    """
    socket_file = Path("/run/dbus/system_bus_socket")
    dbus_up = subprocess.run(["pgrep", "-x", "dbus-daemon"], capture_output=True).returncode == 0
    if dbus_up and not socket_file.exists():
        subprocess.run(["pkill", "-x", "avahi-daemon"], check=False)
        subprocess.run(["pkill", "-x", "dbus-daemon"], check=False)
        time.sleep(0.3)
        dbus_up = False
    if not dbus_up:
        Path("/run/dbus").mkdir(parents=True, exist_ok=True)
        Path("/run/dbus/pid").unlink(missing_ok=True)
        subprocess.run(["dbus-daemon", "--system", "--fork"], check=False, capture_output=True)
    if subprocess.run(["pgrep", "-x", "avahi-daemon"], capture_output=True).returncode != 0:
        subprocess.run(["avahi-daemon", "-D", "--no-drop-root"], check=False, capture_output=True)
        time.sleep(0.5)


@dataclass
class Printer:
    proc: subprocess.Popen[bytes]
    port: int
    spool: Path
    name: str

    @property
    def uri(self) -> str:
        return f"ipp://127.0.0.1:{self.port}/ipp/print"

    def files(self) -> list[Path]:
        return sorted(p for p in self.spool.rglob("*") if p.is_file())

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_printer(spool: Path, name: str = "testprinter") -> Printer:
    """Start ippeveprinter (jobs 'print' with /bin/cat, in well under a second; kept in spool)."""
    assert IPPEVEPRINTER is not None
    ensure_dnssd()
    spool.mkdir(parents=True, exist_ok=True)
    port = free_port()
    proc = subprocess.Popen(
        [
            IPPEVEPRINTER,
            "-p",
            str(port),
            "-n",
            "localhost",
            "-k",
            "-d",
            str(spool),
            "-c",
            "/bin/cat",
            "-f",
            "application/pdf,application/octet-stream,text/plain",
            name,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    printer = Printer(proc, port, spool, name)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"ippeveprinter exited with {proc.returncode}")
        probe = subprocess.run(
            ["ipptool", "-T", "2", printer.uri, "get-printer-attributes.test"],
            capture_output=True,
            cwd="/usr/share/cups/ipptool",
        )
        if probe.returncode == 0:
            return printer
        time.sleep(0.2)
    printer.stop()
    raise AssertionError("ippeveprinter did not come up")
