"""A private cupsd for tests: its own config, spool and port, started and stopped by the test."""

from __future__ import annotations

import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

CUPSD = "/usr/sbin/cupsd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Cupsd:
    proc: subprocess.Popen[bytes]
    port: int
    root: Path

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a CUPS client command (lpadmin, lp, lpstat, …) against this cupsd."""
        return subprocess.run(
            [cmd[0], "-h", self.host, *cmd[1:]],
            capture_output=True,
            text=True,
            timeout=60,
            check=check,
        )

    def error_log(self) -> str:
        path = self.root / "log" / "error_log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_cupsd(root: Path) -> Cupsd:
    """Start cupsd in the foreground with everything under ``root``."""
    port = free_port()
    for sub in ("spool", "cache", "state", "log", "ppd", "ssl"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    tmp = root / "spool" / "tmp"
    tmp.mkdir(exist_ok=True)
    tmp.chmod(0o1777)
    (root / "cups-files.conf").write_text(
        f"""User lp
Group lp
SystemGroup root
ServerRoot {root}
RequestRoot {root}/spool
TempDir {tmp}
CacheDir {root}/cache
StateDir {root}/state
ServerBin /usr/lib/cups
DataDir /usr/share/cups
DocumentRoot /usr/share/cups/doc-root
AccessLog {root}/log/access_log
ErrorLog {root}/log/error_log
PageLog {root}/log/page_log
FileDevice Yes
"""
    )
    (root / "cupsd.conf").write_text(
        f"""Listen 127.0.0.1:{port}
LogLevel info
Browsing No
DefaultAuthType None
WebInterface No
MaxJobs 0
<Location />
  Order allow,deny
  Allow all
</Location>
<Policy default>
  <Limit All>
    Order deny,allow
  </Limit>
</Policy>
"""
    )
    # cupsd drops to User lp for backends and needs to read/write its dirs.
    subprocess.run(["chown", "-R", "lp:lp", str(root / "spool"), str(root / "cache")], check=False)
    proc = subprocess.Popen(
        [CUPSD, "-f", "-c", str(root / "cupsd.conf"), "-s", str(root / "cups-files.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise AssertionError(f"cupsd exited: {err}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        raise AssertionError("cupsd did not start listening")
    if proc.stderr is not None:
        proc.stderr.close()
    return Cupsd(proc, port, root)
