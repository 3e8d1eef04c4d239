"""A real net-snmp snmpd for tests, serving a printer's hrPrinterTable from a state file.

snmpd runs with its own config on a free UDP port on 127.0.0.1, its built-in
hrPrinterTable turned off (``-I -hr_print``), and hrPrinterEntry
(.1.3.6.1.2.1.25.3.5.1) handed to a ``pass_persist`` script that reads the state file
on every request: a test changes the printer's state by rewriting that file, and sees it
at once (``pass`` would cache answers; ``pass_persist`` does not).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from spoolvault.printers.health import encode_error_state

SNMPD = shutil.which("snmpd") or "/usr/sbin/snmpd"
HR_PRINTER_ENTRY = ".1.3.6.1.2.1.25.3.5.1"

# The pass_persist protocol (snmpd.conf(5)): "PING" -> "PONG"; "get"/"getnext" then an OID
# -> OID, type, value (three lines) or "NONE"; "set" then OID and "type value" -> an error.
PASS_PERSIST = """\
import json
import sys

STATE = sys.argv[1]
ENTRY = (1, 3, 6, 1, 2, 1, 25, 3, 5, 1)


def rows():
    with open(STATE) as f:
        state = json.load(f)
    if not state.get("table", True):
        return []
    index = state.get("index", 1)
    octets = bytes.fromhex(state.get("error_state", ""))
    return [
        (ENTRY + (1, index), "integer", str(state.get("status", 3))),
        # "octet": hex octets, so any bit pattern survives (a "string" would be text)
        (ENTRY + (2, index), "octet", " ".join(f"{b:02x}" for b in octets)),
    ]


def answer(command, oid):
    table = rows()
    if command == "get":
        hits = [row for row in table if row[0] == oid]
    else:
        hits = [row for row in table if row[0] > oid][:1]
    if not hits:
        return "NONE\\n"
    name, kind, value = hits[0]
    return "." + ".".join(map(str, name)) + "\\n" + kind + "\\n" + value + "\\n"


for line in sys.stdin:
    command = line.strip()
    if command == "PING":
        sys.stdout.write("PONG\\n")
    elif command in ("get", "getnext"):
        text = sys.stdin.readline().strip().strip(".")
        oid = tuple(int(part) for part in text.split(".") if part)
        sys.stdout.write(answer(command, oid))
    elif command == "set":
        sys.stdin.readline()
        sys.stdin.readline()
        sys.stdout.write("not-writable\\n")
    else:
        break
    sys.stdout.flush()
"""


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_state(
    path: Path, *, status: int = 3, index: int = 1, table: bool = True, octets: bytes = b""
) -> None:
    state = {"status": status, "index": index, "table": table, "error_state": octets.hex()}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, path)  # the agent never reads half a file


@dataclass
class Snmpd:
    """A running snmpd and the state file its printer table is read from."""

    proc: subprocess.Popen[bytes]
    port: int
    root: Path
    community: str

    @property
    def state_file(self) -> Path:
        return self.root / "printer-state.json"

    def set_state(
        self,
        conditions: Iterable[str] = (),
        *,
        status: int = 3,
        index: int = 1,
        table: bool = True,
        raw: bytes | None = None,
    ) -> None:
        """Set hrPrinterStatus (3 idle, 4 printing, …) and hrPrinterDetectedErrorState.

        `raw` replaces the encoded conditions with exact octets; `table=False` makes the
        agent answer as one without a printer table.
        """
        octets = raw if raw is not None else encode_error_state(conditions)
        write_state(self.state_file, status=status, index=index, table=table, octets=octets)

    def log(self) -> str:
        path = self.root / "snmpd.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_snmpd(root: Path, community: str = "public") -> Snmpd:
    """Start snmpd in the foreground, read-only `community`, on 127.0.0.1:<free port>."""
    if not Path(SNMPD).exists():
        raise AssertionError("snmpd is not installed (Debian package snmpd)")
    root.mkdir(parents=True, exist_ok=True)
    script = root / "hr-printer-pass.py"
    script.write_text(PASS_PERSIST)
    state_file = root / "printer-state.json"
    write_state(state_file)
    port = free_udp_port()
    conf = root / "snmpd.conf"
    conf.write_text(
        f"rocommunity {community} 127.0.0.1\n"
        f"pass_persist {HR_PRINTER_ENTRY} {sys.executable} {script} {state_file}\n"
    )
    env = {
        **os.environ,
        "SNMP_PERSISTENT_DIR": str(root / "persist"),  # not /var/lib/snmp
        "MIBS": "",  # numeric OIDs only: no MIB files to load or complain about
    }
    with (root / "snmpd.log").open("wb") as log:
        proc = subprocess.Popen(
            [SNMPD, "-f", "-Lo", "-C", "-c", str(conf), "-I", "-hr_print",
             f"udp:127.0.0.1:{port}"],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )  # fmt: skip
    server = Snmpd(proc, port, root, community)
    assert server.state_file == state_file
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise AssertionError(f"snmpd exited with {server.proc.returncode}:\n{server.log()}")
        if "NET-SNMP version" in server.log():  # logged once it listens
            return server
        time.sleep(0.05)
    server.stop()
    raise AssertionError(f"snmpd did not start:\n{server.log()}")
