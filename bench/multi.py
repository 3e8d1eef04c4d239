"""Many providers against one application server on PostgreSQL: heartbeat load, release lists.

    .venv/bin/python bench/multi.py [--database URL] [--providers 20] [--jobs 5000]
                                    [--interval 10] [--duration 60]

A real ``spoolvault run --role app`` process on a fresh PostgreSQL database (made in the
server of ``--database``, default ``$SPOOLVAULT_TEST_PG_URL``, and dropped at the end).
The providers are simulated: one client sends, for each of ``--providers`` providers, the
heartbeats a provider with ``--jobs`` held jobs sends (the same HTTP call, body and
authentication as servers/provider.py), so the numbers are the application server's
(docs/benchmarks.md, "Multi-server", explains each):

1. initial sync: each provider's first heartbeat reports all its held jobs;
2. steady state for ``--duration`` seconds: every provider heartbeats every ``--interval``
   seconds (spread evenly), each with its ``live`` job ids and 5 changed jobs; latency
   of each heartbeat, and the app server's CPU time (utime+stime from /proc) per heartbeat;
3. release lists: ``GET /api/v1/release/jobs`` of users with 50 held jobs each (spread over
   the providers), while the heartbeats of 2. go on, and again with no heartbeats.

Progress goes to stderr; one JSON line goes to stdout at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg import sql
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from spoolvault.db import Database, Job
from spoolvault.servers.registry import add_provider

ADMIN_PW = "bench-admin-pw"
USER_PW = "bench-user-pw"
JOBS_PER_USER = 50
CHANGED_PER_BEAT = 5


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def summary(ms: list[float]) -> dict[str, float | int]:
    return {
        "n": len(ms),
        "p50_ms": round(statistics.median(ms), 2),
        "p95_ms": round(pct(ms, 95), 2),
        "max_ms": round(max(ms), 2),
    }


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def job_report(job_id: int, owner: str, at: datetime) -> dict[str, Any]:
    return {
        "id": job_id,
        "owner": owner,
        "title": f"document {job_id}.pdf",
        "queue": "secure",
        "state": "held",
        "state_reason": None,
        "size": 250_000,
        "pages": 3,
        "encrypted": True,
        "format_version": 1,
        "document_format": "application/pdf",
        "printer": None,
        "printer_job_id": None,
        "created_at": at.isoformat(),
        "updated_at": at.isoformat(),
        "completed_at": None,
    }


class Fleet:
    """The simulated providers: names, secrets, held jobs."""

    def __init__(self, url: str, secrets_: dict[str, str], jobs: int, users: int) -> None:
        self.url = url
        self.secrets = secrets_
        self.jobs = jobs
        self.users = users
        self.at = datetime.now(UTC) - timedelta(minutes=5)

    def owner(self, provider_index: int, job_id: int) -> str:
        return f"user{(provider_index * self.jobs + job_id) % self.users}"

    def beat(self, index: int, name: str, full: bool, seq: int = 0) -> dict[str, Any]:
        ids = range(1, self.jobs + 1)
        if full:
            changed = [job_report(i, self.owner(index, i), self.at) for i in ids]
        else:
            first = 1 + (seq * CHANGED_PER_BEAT) % (self.jobs - CHANGED_PER_BEAT)
            changed = [
                job_report(i, self.owner(index, i), self.at)
                for i in range(first, first + CHANGED_PER_BEAT)
            ]
        return {
            "name": name,
            "version": "bench",
            "url": "http://127.0.0.1:9",
            "interval": 10,
            "formats": {"read": [1], "write": 1},
            "capabilities": {"encrypt": True},
            "spool": {"encrypted": {"files": self.jobs, "bytes": self.jobs * 250_000}},
            "printers": {},
            "jobs": changed,
            "live": list(ids),
        }

    def send(self, client: httpx.Client, index: int, full: bool, seq: int = 0) -> float:
        name = f"p{index:02d}"
        body = self.beat(index, name, full, seq)
        t0 = time.perf_counter()
        r = client.post(
            f"{self.url}/api/v1/providers/heartbeat", json=body, auth=(name, self.secrets[name])
        )
        elapsed = (time.perf_counter() - t0) * 1000
        r.raise_for_status()
        if r.json().get("resync"):
            raise AssertionError(f"{name}: the app server asked for a resync")
        return elapsed


def _drain(proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    for _ in proc.stdout:
        pass  # a chatty server must never block on a full pipe


def start_app(data_dir: Path, database: str) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "SPOOLVAULT_ADMIN_PASSWORD": ADMIN_PW}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "spoolvault",
            "run",
            "--role",
            "app",
            "--data-dir",
            str(data_dir),
            "--http",
            "127.0.0.1:0",
            "--database",
            database,
            "--no-dnssd",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if m := re.search(r"listening on (http://\S+)", line):
            threading.Thread(target=_drain, args=(proc,), daemon=True).start()
            return proc, m.group(1)
    raise RuntimeError("the application server did not start")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--database", default=os.environ.get("SPOOLVAULT_TEST_PG_URL"))
    ap.add_argument("--providers", type=int, default=20)
    ap.add_argument("--jobs", type=int, default=5000, help="held jobs per provider")
    ap.add_argument("--interval", type=float, default=10.0)
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--sample-users", type=int, default=20)
    args = ap.parse_args()
    if not args.database:
        sys.exit("give --database postgresql://... (or set SPOOLVAULT_TEST_PG_URL)")

    base = make_url(args.database).set(drivername="postgresql")
    admin_conninfo = base.render_as_string(hide_password=False)
    dbname = f"spoolvault_bench_{secrets.token_hex(4)}"
    with psycopg.connect(admin_conninfo, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    url = base.set(database=dbname).render_as_string(hide_password=False)
    total_jobs = args.providers * args.jobs
    users = max(1, total_jobs // JOBS_PER_USER)
    proc = None
    try:
        with tempfile.TemporaryDirectory(prefix="spoolvault-bench-multi-") as tmp:
            proc, app_url = start_app(Path(tmp) / "app", url)
            log(f"app server {app_url} on {dbname}")
            with Database.open(url) as db:
                keys = {f"p{i:02d}": add_provider(db, f"p{i:02d}") for i in range(args.providers)}
                sampled = [f"user{k}" for k in range(0, users, max(1, users // args.sample_users))]
                sampled = sampled[: args.sample_users]
                for name in sampled:
                    db.add_user(name, USER_PW)
            fleet = Fleet(app_url, keys, args.jobs, users)
            result: dict[str, Any] = {
                "bench": "multi",
                "at": datetime.now(UTC).isoformat(timespec="seconds"),
                "host": platform.node(),
                "cpus": os.cpu_count(),
                "providers": args.providers,
                "jobs_per_provider": args.jobs,
                "held_jobs": total_jobs,
                "users": users,
                "jobs_per_user": JOBS_PER_USER,
                "interval_s": args.interval,
            }
            with httpx.Client(timeout=300) as client:
                # 1. initial sync, one provider after the other
                log("initial sync ...")
                cpu0, t0 = cpu_seconds(proc.pid), time.perf_counter()
                first = [fleet.send(client, i, full=True) for i in range(args.providers)]
                result["initial_sync"] = {
                    **summary(first),
                    "total_s": round(time.perf_counter() - t0, 2),
                    "app_cpu_s": round(cpu_seconds(proc.pid) - cpu0, 2),
                }
                log(f"initial sync: {result['initial_sync']}")
                with Database.open(url) as db, db.session(write=False) as s:
                    copies = s.scalar(select(func.count()).select_from(Job))
                assert copies == total_jobs, copies
                with httpx.Client(base_url=app_url + "/api/v1", timeout=60) as c:
                    sessions = []
                    for name in sampled:
                        r = c.post("/release/session", json={"username": name, "password": USER_PW})
                        r.raise_for_status()
                        sessions.append({"Authorization": f"Bearer {r.json()['token']}"})
                    r = c.get("/release/jobs", headers=sessions[0])
                    assert len(r.json()) == JOBS_PER_USER, len(r.json())

                def listing(stop: threading.Event, out: list[float]) -> None:
                    with httpx.Client(base_url=app_url + "/api/v1", timeout=60) as c:
                        n = 0
                        while not stop.is_set():
                            t = time.perf_counter()
                            r = c.get("/release/jobs", headers=sessions[n % len(sessions)])
                            out.append((time.perf_counter() - t) * 1000)
                            r.raise_for_status()
                            n += 1
                            time.sleep(0.05)

                # 3a. release lists with no heartbeats
                idle: list[float] = []
                stop = threading.Event()
                th = threading.Thread(target=listing, args=(stop, idle))
                th.start()
                time.sleep(min(10.0, args.duration / 3))
                stop.set()
                th.join()
                result["release_list_idle"] = summary(idle)
                log(f"release list, no heartbeats: {result['release_list_idle']}")

                # 2. + 3b. steady heartbeats, release lists meanwhile
                log(f"steady state for {args.duration:.0f} s ...")
                busy: list[float] = []
                stop = threading.Event()
                th = threading.Thread(target=listing, args=(stop, busy))
                beats: list[float] = []
                late = 0
                step = args.interval / args.providers
                cpu0, start = cpu_seconds(proc.pid), time.perf_counter()
                th.start()
                seq = 0
                while (now := time.perf_counter() - start) < args.duration:
                    due = seq * step
                    if due > now:
                        time.sleep(due - now)
                    elif now - due > args.interval:
                        late += 1
                    beats.append(fleet.send(client, seq % args.providers, full=False, seq=seq))
                    seq += 1
                elapsed = time.perf_counter() - start
                cpu = cpu_seconds(proc.pid) - cpu0
                stop.set()
                th.join()
                result["heartbeats"] = {
                    **summary(beats),
                    "per_s": round(len(beats) / elapsed, 2),
                    "late_beyond_one_interval": late,
                    # Includes the release-list requests served meanwhile (below).
                    "app_cpu_s": round(cpu, 2),
                    "app_cpu_pct": round(100 * cpu / elapsed, 1),
                }
                result["release_list_with_heartbeats"] = summary(busy)
                log(f"heartbeats: {result['heartbeats']}")
                log(f"release list, with heartbeats: {result['release_list_with_heartbeats']}")
            print(json.dumps(result), flush=True)
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        with psycopg.connect(admin_conninfo, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname))
            )


if __name__ == "__main__":
    main()
