"""Reliability soak: the drills of tests/reliability, longer (not part of `make test`).

    .venv/bin/python bench/soak.py [--crash-rounds 20] [--fuzz-count 1000000]
                                   [--release-rounds 10] [--seed N] [--only crash,...]

1. crash: SIGKILL `spoolvault run` at a random moment while eight clients submit (five
   IPP Print-Job, one Create-Job + Send-Document, two raw 9100), restart, check every
   acknowledged job (present, held, byte-identical), no half job, no orphan
   (`spoolvault spool orphans --min-age 0`), no plaintext marker under the data dir or
   the server's TMPDIR; ``--crash-rounds`` times on one data directory;
2. slowloris: idle and trickling connections on HTTP, raw 9100 and LPD; a normal client's
   time to an acknowledged job on each, flooded and not, and how long the server takes
   to close the hostile HTTP connections;
3. release: SIGKILL the server at a random moment of a release to a slow printer, restart;
   a job is never printed twice and never resent by itself;
4. fuzz: ``--fuzz-count`` mutated inputs each to the IPP codec, the LPD parsers and the
   PJL scanner.

Progress goes to stderr; one JSON line with every number goes to stdout at the end. Exit
status 1 if any drill found a problem.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import httpx

from harness import drills, fuzz
from harness.fakeprinter import FakePrinter
from spoolvault.db import JobState
from spoolvault.ipp.constants import Operation


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def crash(work: Path, rounds: int, seed: int) -> dict[str, Any]:
    def report(r: drills.CrashRound) -> None:
        say(
            f"crash round {r.round}: killed after {r.load_s} s, {r.acked} acked of "
            f"{r.attempts} attempts, {r.jobs} jobs, restart {r.restart_s} s, "
            f"problems: {r.problems or 'none'}"
        )

    t0 = time.monotonic()
    srv, acked, results = drills.crash_rounds(work, rounds, seed=seed, report=report)
    try:
        # Every acknowledged job still held at the end reads back byte-identical (checked in
        # each round); release a sample for real, to a printer that keeps what it gets.
        sample = [a for a in acked if a.kind != "raw"][-20:]
        released = release_sample(srv, sample)
    finally:
        srv.stop()
    problems = [p for r in results for p in r.problems]
    return {
        "rounds": rounds,
        "acknowledged": len(acked),
        "acknowledged_by_kind": {k: sum(a.kind == k for a in acked) for k in drills.KINDS},
        "attempts": sum(r.attempts for r in results),
        "failed_attempts": sum(r.failures for r in results),
        "restart_s_median": statistics.median(r.restart_s for r in results),
        "released_sample": released,
        "problems": problems,
        "seconds": round(time.monotonic() - t0, 1),
    }


def release_sample(srv: drills.Server, sample: list[drills.Ack]) -> int:
    printer = FakePrinter(["accept"]).start()
    admin = ("admin", drills.ADMIN_PASSWORD)
    try:
        with httpx.Client(base_url=srv.url + "/api/v1", timeout=60) as c:
            c.post("/printers", json={"name": "sample", "uri": printer.uri}, auth=admin)
            c.post("/users", json={"username": drills.OWNER, "password": "pw-12345"}, auth=admin)
            r = c.post("/release/session", json={"username": drills.OWNER, "password": "pw-12345"})
            token = {"Authorization": f"Bearer {r.json()['token']}"}
            for ack in sample:
                r = c.post(f"/release/jobs/{ack.job_id}", json={"printer": "sample"}, headers=token)
                assert r.status_code == 200, r.text
    finally:
        printer.stop()
    assert sorted(printer.complete) == sorted(a.body for a in sample), "released != acked"
    return len(sample)


def slowloris(work: Path, counts: dict[str, int], header_timeout: float) -> dict[str, Any]:
    data_dir = work / "data"
    data_dir.mkdir(parents=True)
    (data_dir / "print-provider.conf").write_text(
        f"HttpHeaderTimeout={header_timeout}\nHttpBodyTimeout={header_timeout}\n"
    )
    srv = drills.start(data_dir, work / "tmp", "--lpd", "127.0.0.1:0")
    http, raw, lpd = (
        drills.http_addr(srv),
        drills.server_address(srv, "raw"),
        drills.server_address(srv, "lpd"),
    )
    n = [0]

    def normal(samples: int) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {"ipp": [], "raw": [], "lpd": []}
        for _ in range(samples):
            n[0] += 1
            job, s = drills.timed(lambda: drills.ipp_print(srv, f"n{n[0]}", b"x\n", timeout=60))
            assert job is not None
            out["ipp"].append(s)
            body = drills.pjl_wrapped("bob", f"r{n[0]}", b"x\n")
            ok, s = drills.timed(lambda body=body: drills.raw_print(raw, body, timeout=60))
            assert ok is True
            out["raw"].append(s)
            ok, s = drills.timed(lambda: drills.lpd_print(lpd, "c", f"l{n[0]}", b"x\n", 60))
            assert ok is True
            out["lpd"].append(s)
        return out

    def summary(times: dict[str, list[float]]) -> dict[str, dict[str, float]]:
        return {
            k: {"p50_ms": round(statistics.median(v) * 1000, 1), "max_ms": round(max(v) * 1000, 1)}
            for k, v in times.items()
        }

    hostile = drills.Hostile()
    try:
        quiet = summary(normal(20))
        t0 = time.monotonic()
        for _ in range(counts["http_idle"]):
            hostile.open(http)
        for _ in range(counts["http_slow_head"]):
            hostile.open(http, b"POST /printers/secure HTTP/1.1\r\nHost: x\r\nX-A: ", trickle=True)
        head = drills.encode(drills.ipp_message(srv, Operation.PRINT_JOB))
        stalled = (
            b"POST /printers/secure HTTP/1.1\r\nHost: x\r\nContent-Type: application/ipp\r\n"
            b"Content-Length: 10000000\r\n\r\n" + head + drills.MARKER * 100
        )
        for _ in range(counts["http_stalled_body"]):
            hostile.open(http, stalled)
        http_hostile = list(hostile.sockets)
        for i in range(counts["raw"]):
            hostile.open(raw, b"\x1b%-12345X@PJL", trickle=i % 2 == 0)
        for i in range(counts["lpd"]):
            hostile.open(lpd, b"\x02sec", trickle=i % 2 == 0)
        intake_hostile = hostile.sockets[len(http_hostile) :]
        hostile.start_trickling()
        opened_s = time.monotonic() - t0
        time.sleep(2.5)
        intake_open_before = sum(not _dead(s) for s in intake_hostile)
        flooded = summary(normal(20))
        intake_open_after = sum(not _dead(s) for s in intake_hostile)
        left = http_hostile
        while left and time.monotonic() - t0 < header_timeout + 30:
            left = [s for s in left if not _dead(s)]
            time.sleep(0.1)
        closed_after = time.monotonic() - t0
    finally:
        hostile.close()
        srv.stop()
    hostile_jobs = [
        j.title for j in drills.all_jobs(data_dir) if not j.title.startswith(("n", "r", "l"))
    ]
    return {
        "hostile_connections": counts,
        "opened_in_s": round(opened_s, 2),
        # raw + LPD hostile connections still open before and after the 20 normal jobs on
        # each (the rest were reset at the cap, or evicted to make room for normal ones).
        "intake_hostile_open_before": intake_open_before,
        "intake_hostile_open_after": intake_open_after,
        "normal_client_quiet": quiet,
        "normal_client_flooded": flooded,
        "http_header_timeout_s": header_timeout,
        "hostile_http_still_open": len(left),
        "hostile_http_all_closed_after_s": round(closed_after, 1),
        "problems": ([f"{len(left)} hostile HTTP connections still open"] if left else [])
        + [f"hostile job recorded: {t}" for t in hostile_jobs],
    }


def _dead(s: drills.socket.socket) -> bool:
    try:
        return s.recv(65536) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def release_kills(work: Path, rounds: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    printer = FakePrinter(["slow"], slow_rate=4 << 20).start()
    srv = drills.start(work / "data", work / "tmp")
    admin = ("admin", drills.ADMIN_PASSWORD)
    with httpx.Client(base_url=srv.url + "/api/v1", timeout=60, auth=admin) as c:
        c.post("/printers", json={"name": "slow", "uri": printer.uri})
        c.post("/users", json={"username": drills.OWNER, "password": "pw-12345"})
    outcomes: dict[str, int] = {}
    problems: list[str] = []
    bodies: dict[int, bytes] = {}
    try:
        for n in range(1, rounds + 1):
            body = drills.MARKER + os.urandom(rng.randint(1, 12) << 20)
            job_id = drills.ipp_print(srv, f"release-{n}", body)
            assert job_id is not None
            bodies[job_id] = body

            def go(job_id: int = job_id, srv: drills.Server = srv) -> None:
                with (
                    contextlib.suppress(httpx.HTTPError),
                    httpx.Client(base_url=srv.url + "/api/v1", timeout=60) as c,
                ):
                    r = c.post(
                        "/release/session",
                        json={"username": drills.OWNER, "password": "pw-12345"},
                    )
                    token = {"Authorization": f"Bearer {r.json()['token']}"}
                    c.post(f"/release/jobs/{job_id}", json={"printer": "slow"}, headers=token)

            t = threading.Thread(target=go, daemon=True)
            t.start()
            time.sleep(rng.uniform(0.05, 3.5))
            drills.kill(srv)
            t.join(timeout=60)
            complete_before = list(printer.complete)
            connections = printer.connections
            srv = drills.start(work / "data", work / "tmp")
            time.sleep(1.0)
            (job,) = [j for j in drills.all_jobs(srv.data_dir) if j.id == job_id]
            had_it = body in complete_before
            key = f"{job.state.value}, printer {'has' if had_it else 'does not have'} it"
            outcomes[key] = outcomes.get(key, 0) + 1
            if printer.connections != connections:
                problems.append(f"job {job_id} was sent again after the restart")
            if had_it and job.state is JobState.HELD:
                problems.append(f"job {job_id} held (would print again) though the printer has it")
            if not had_it and job.state is JobState.PRINTED:
                problems.append(f"job {job_id} printed, but the printer never had it whole")
            say(f"release round {n}: {key}")
        for doc in printer.complete:
            if printer.complete.count(doc) > 1:
                problems.append("a document reached the printer whole twice")
                break
    finally:
        srv.stop()
        printer.stop()
    return {"rounds": rounds, "outcomes": outcomes, "problems": problems}


def fuzzing(count: int, seed: int) -> dict[str, Any]:
    out: dict[str, Any] = {"problems": []}
    for target in ("ipp", "lpd", "pjl"):
        stats = fuzz.fuzz(target, count, seed)
        say(
            f"fuzz {target}: {stats.inputs} inputs in {stats.seconds:.1f} s "
            f"({stats.rate:,.0f}/s), {stats.accepted} accepted, {stats.refused} refused, "
            f"slowest {stats.slowest_s * 1000:.1f} ms, {len(stats.findings)} findings"
        )
        out[target] = {
            "inputs": stats.inputs,
            "seconds": round(stats.seconds, 1),
            "per_second": round(stats.rate),
            "accepted": stats.accepted,
            "refused": stats.refused,
            "slowest_ms": round(stats.slowest_s * 1000, 2),
            "findings": stats.findings,
        }
        out["problems"] += stats.findings
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--crash-rounds", type=int, default=20)
    parser.add_argument("--release-rounds", type=int, default=10)
    parser.add_argument("--fuzz-count", type=int, default=1_000_000)
    parser.add_argument("--header-timeout", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--only", default="crash,slowloris,release,fuzz")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    only = set(args.only.split(","))
    say(f"seed {seed}; load average {os.getloadavg()[0]:.2f}")
    results: dict[str, Any] = {"seed": seed, "load_average_start": os.getloadavg()[0]}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="spoolvault-soak-") as tmp:
        work = Path(tmp)
        if "crash" in only:
            results["crash"] = crash(work / "crash", args.crash_rounds, seed)
        if "slowloris" in only:
            counts = {
                "http_idle": 300,
                "http_slow_head": 300,
                "http_stalled_body": 100,
                "raw": 300,
                "lpd": 300,
            }
            results["slowloris"] = slowloris(work / "slowloris", counts, args.header_timeout)
            say(f"slowloris: {json.dumps(results['slowloris'])}")
        if "release" in only:
            results["release"] = release_kills(work / "release", args.release_rounds, seed)
        if "fuzz" in only:
            results["fuzz"] = fuzzing(args.fuzz_count, seed)
    results["seconds"] = round(time.monotonic() - started, 1)
    problems = [p for part in results.values() if isinstance(part, dict) for p in part["problems"]]
    results["problems"] = len(problems)
    print(json.dumps(results))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
