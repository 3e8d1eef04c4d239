"""A private OpenLDAP slapd for tests: its own config, database and ephemeral port.

Configured with a slapd.conf file (``-f``), not the machine's cn=config, so it never
touches /etc/ldap/slapd.d or a running system slapd; ``-d 0`` keeps it in the foreground,
where the test can stop it. Skips the test when slapd is not installed (Debian package
``slapd``; scripts/install-system-deps.sh installs it).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import ldap3
import pytest

from harness.cupsd import free_port

SLAPD = shutil.which("slapd") or ("/usr/sbin/slapd" if Path("/usr/sbin/slapd").exists() else None)
SCHEMA_DIR = Path("/etc/ldap/schema")
MODULE_DIR = Path("/usr/lib/ldap")
SUFFIX = "dc=example,dc=org"
ROOT_DN = f"cn=admin,{SUFFIX}"
ROOT_PW = "slapd-test-secret"

CONF = """\
include {schema}/core.schema
include {schema}/cosine.schema
include {schema}/nis.schema
include {schema}/inetorgperson.schema
modulepath {modules}
moduleload back_mdb
pidfile {work}/slapd.pid
argsfile {work}/slapd.args
database mdb
maxsize 16777216
suffix "{suffix}"
rootdn "{root_dn}"
rootpw {root_pw}
directory {work}/db
index objectClass eq
"""


@dataclass
class Slapd:
    proc: subprocess.Popen[bytes]
    port: int
    work: Path

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    def connect(self) -> ldap3.Connection:
        server = ldap3.Server(self.url, get_info=ldap3.NONE)
        return ldap3.Connection(server, ROOT_DN, ROOT_PW, auto_bind=True, raise_exceptions=True)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_slapd(work: Path) -> Slapd:
    if SLAPD is None or not (MODULE_DIR / "back_mdb.la").exists():
        pytest.skip("slapd is not installed (Debian package slapd)")
    (work / "db").mkdir(parents=True, exist_ok=True)
    conf = work / "slapd.conf"
    conf.write_text(
        CONF.format(
            schema=SCHEMA_DIR,
            modules=MODULE_DIR,
            work=work,
            suffix=SUFFIX,
            root_dn=ROOT_DN,
            root_pw=ROOT_PW,
        )
    )
    port = free_port()
    log = (work / "slapd.log").open("wb")
    proc = subprocess.Popen(
        [SLAPD, "-f", str(conf), "-h", f"ldap://127.0.0.1:{port}/", "-d", "0"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    deadline = time.monotonic() + 20
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"slapd exited:\n{(work / 'slapd.log').read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise AssertionError("slapd did not start listening") from None
            time.sleep(0.05)
    return Slapd(proc, port, work)
