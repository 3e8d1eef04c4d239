"""Spool throughput and memory benchmark: encrypted vs plain spool files.

    .venv/bin/python bench/spool_throughput.py [--dir DIR] [--size-mib 256] [--repeat 5]

Measures, for one job of ``--size-mib`` MiB (docs/benchmarks.md explains each number):

1. write throughput, EncryptedSpool vs PlainSpool, including commit() (fsync of the file
   and of the directory), fed from a reused in-memory buffer of random bytes in 64 KiB
   and in 1 MiB write() calls, encrypted and plain runs interleaved;
2. read throughput of the same files through ``spool.read()`` (authenticated decryption
   for the encrypted ones), warm (from the page cache) and, when running as root, cold
   (after ``sync`` and ``echo 3 > /proc/sys/vm/drop_caches``);
3. the encrypted/plain ratios;
4. peak RSS (VmHWM) of a fresh child process that writes then reads back an encrypted
   1 MiB job, and one that does the same with a 1 GiB job.

Throughput is in MiB/s: 2**20 bytes of *document* (plaintext) per second, for both kinds,
so the ratio compares the same useful work (an encrypted file is 0.02 % larger).
Progress goes to stderr; one JSON line with every sample goes to stdout at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cryptography

from spoolvault.spool import format as fmt
from spoolvault.spool.keys import KeyFileProvider
from spoolvault.spool.store import EncryptedSpool, PlainSpool, Spool, SpoolFile

MIB = 1 << 20
KIB = 1 << 10
FEED_BUFFER = 4 * MIB  # random bytes generated once, reused for every write() call
CHILD_FEED_BUFFER = MIB
CHILD_WRITE_SIZE = 64 * KIB
WRITE_SIZES = (64 * KIB, MIB)
PRIMARY_WRITE_SIZE = 64 * KIB  # the write-ratio target is judged on this one
RSS_SIZES = (MIB, 1024 * MIB)
WRITE_RATIO_TARGET = 0.95
RSS_GROWTH_TARGET_MIB = 64.0
DROP_CACHES = Path("/proc/sys/vm/drop_caches")
MODES = ("encrypted", "plain")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def size_label(n: int) -> str:
    if n % MIB == 0:
        return f"{n // MIB}MiB" if n < 1024 * MIB else f"{n // (1024 * MIB)}GiB"
    return f"{n // KIB}KiB"


def feed(write: Callable[[memoryview], object], pattern: memoryview, size: int, block: int) -> None:
    """Call ``write`` with ``size`` bytes in ``block``-sized slices of ``pattern``, cycled."""
    plen = len(pattern)
    sent = 0
    while sent < size:
        off = sent % plen
        n = min(block, plen - off, size - sent)
        write(pattern[off : off + n])
        sent += n


def mib_s(nbytes: int, seconds: float) -> float:
    return nbytes / MIB / seconds


def rnd(x: float, digits: int = 1) -> float:
    return round(x, digits)


# -- machine facts ----------------------------------------------------------------------


def _run(cmd: list[str]) -> str | None:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def mount_of(path: Path) -> dict[str, str]:
    """The /proc/self/mountinfo entry whose mount point holds ``path`` (longest match)."""
    real = os.path.realpath(path)
    best: dict[str, str] = {}
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, rfields = left.split(), right.split()
            mnt = fields[4].replace("\\040", " ")
            inside = real == mnt or real.startswith(mnt.rstrip("/") + "/")
            if inside and len(mnt) >= len(best.get("mount_point", "")):
                best = {
                    "mount_point": mnt,
                    "fstype": rfields[0],
                    "source": rfields[1],
                    "mount_options": fields[5],
                    "super_options": rfields[2] if len(rfields) > 2 else "",
                }
    return best


def filesystem_facts(path: Path) -> dict[str, Any]:
    facts: dict[str, Any] = dict(mount_of(path))
    facts["stat_f_type"] = _run(["stat", "-f", "-c", "%T", str(path)])
    facts["df"] = _run(["df", "-T", "-h", str(path)])
    return facts


def _read_text(path: str) -> str | None:
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError:
        return None


def machine_facts(directory: Path) -> dict[str, Any]:
    cpu_model = None
    for line in (_read_text("/proc/cpuinfo") or "").splitlines():
        if line.startswith("model name"):
            cpu_model = line.split(":", 1)[1].strip()
            break
    mem_total_mib = None
    for line in (_read_text("/proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            mem_total_mib = int(line.split()[1]) // 1024
    os_name = None
    for line in (_read_text("/etc/os-release") or "").splitlines():
        if line.startswith("PRETTY_NAME="):
            os_name = line.split("=", 1)[1].strip('"')
    try:
        from cryptography.hazmat.backends.openssl import backend

        openssl = backend.openssl_version_text()
    except Exception:  # informational only
        openssl = None
    tmp_fs = mount_of(Path("/tmp")).get("fstype")
    return {
        "cpu_count": os.cpu_count(),
        "cpu_usable": len(os.sched_getaffinity(0)),
        "cpu_model": cpu_model,
        "mem_total_mib": mem_total_mib,
        "os": os_name,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "cryptography": cryptography.__version__,
        "openssl": openssl,
        "dir_filesystem": filesystem_facts(directory),
        "tmp_fstype": tmp_fs,
        "euid": os.geteuid(),
        "vm_dirty_background_ratio": _read_text("/proc/sys/vm/dirty_background_ratio"),
        "vm_dirty_ratio": _read_text("/proc/sys/vm/dirty_ratio"),
    }


# -- page cache -----------------------------------------------------------------------


def drop_caches() -> bool:
    """sync, then drop the page cache (root only). False when not permitted."""
    os.sync()
    try:
        DROP_CACHES.write_text("3\n", encoding="ascii")
    except OSError:
        return False
    return True


def cached_fraction(path: Path) -> float | None:
    """Fraction of ``path`` resident in the page cache (util-linux fincore), if known."""
    out = _run(["fincore", "--bytes", "--noheadings", "--raw", "--output", "RES,SIZE", str(path)])
    if not out:
        return None
    res, size = (int(x) for x in out.split())
    return res / size if size else 1.0


# -- the measurements -----------------------------------------------------------------


def timed_write(spool: Spool, pattern: memoryview, size: int, block: int) -> dict[str, Any]:
    """One job written and committed; times for the write() calls and for commit()."""
    os.sync()  # nothing left over from earlier runs is flushed on our clock
    t0 = time.perf_counter()
    with spool.create() as writer:
        feed(writer.write, pattern, size, block)
        t1 = time.perf_counter()
        info = writer.commit()
    t2 = time.perf_counter()
    assert info.size == size
    return {"info": info, "total": t2 - t0, "feed": t1 - t0, "commit": t2 - t1}


def timed_read(spool: Spool, name: str, size: int) -> float:
    t0 = time.perf_counter()
    n = 0
    for chunk in spool.read(name):
        n += len(chunk)
    dt = time.perf_counter() - t0
    if n != size:
        raise RuntimeError(f"read {n} bytes back, expected {size}")
    return dt


def read_digest(spool: Spool, name: str) -> str:
    h = hashlib.sha256()
    for chunk in spool.read(name):
        h.update(chunk)
    return h.hexdigest()


def feed_only(pattern: memoryview, size: int, block: int) -> float:
    """MiB/s of the feeding loop alone (write() is a no-op): must be far above the disk."""

    def sink(_: memoryview) -> None:
        return None

    t0 = time.perf_counter()
    feed(sink, pattern, size, block)
    return mib_s(size, time.perf_counter() - t0)


def summary(samples: list[float]) -> dict[str, Any]:
    return {
        "median": rnd(statistics.median(samples)),
        "min": rnd(min(samples)),
        "max": rnd(max(samples)),
        "samples": [rnd(s) for s in samples],
    }


def ratios(enc: list[float], plain: list[float]) -> dict[str, Any]:
    paired = [e / p for e, p in zip(enc, plain, strict=True)]
    return {
        "ratio_of_medians": round(statistics.median(enc) / statistics.median(plain), 3),
        "median_of_paired_ratios": round(statistics.median(paired), 3),
        "paired_ratios": [round(r, 3) for r in paired],
    }


def run_throughput(workdir: Path, size: int, repeat: int) -> dict[str, Any]:
    keys = KeyFileProvider.open_or_create(workdir / "keys.json")
    spools: dict[str, Spool] = {
        "encrypted": EncryptedSpool(workdir / "encrypted", keys),
        "plain": PlainSpool(workdir / "plain"),
    }
    for spool in spools.values():
        spool.directory.mkdir(mode=0o700)

    pattern = memoryview(os.urandom(FEED_BUFFER))
    expected = hashlib.sha256()
    feed(expected.update, pattern, size, MIB)
    expected_digest = expected.hexdigest()

    feed_rates = {size_label(b): rnd(feed_only(pattern, size, b)) for b in WRITE_SIZES}
    log(f"feeding loop alone (no-op write): {feed_rates} MiB/s")

    can_drop = drop_caches()
    if not can_drop:
        log("cannot write /proc/sys/vm/drop_caches (not root?): no cold-read measurement")

    writes: dict[str, dict[str, dict[str, list[float]]]] = {
        size_label(b): {m: {"total": [], "feed": [], "commit": []} for m in MODES}
        for b in WRITE_SIZES
    }
    reads: dict[str, dict[str, list[float]]] = {
        kind: {m: [] for m in MODES} for kind in ("warm", "cold")
    }
    resident: dict[str, dict[str, list[float | None]]] = {
        kind: {m: [] for m in MODES} for kind in ("warm", "cold")
    }
    checked: set[str] = set()

    log("warm-up: one unrecorded encrypted and plain write")
    for mode in MODES:
        spool = spools[mode]
        spool.delete(timed_write(spool, pattern, size, PRIMARY_WRITE_SIZE)["info"].name)

    for rep in range(repeat):
        for block in WRITE_SIZES:
            for mode in MODES:  # interleaved: encrypted, plain, encrypted, plain, ...
                spool = spools[mode]
                w = timed_write(spool, pattern, size, block)
                info: SpoolFile = w["info"]
                path = spool.path(info.name)
                for phase in ("total", "feed", "commit"):
                    writes[size_label(block)][mode][phase].append(w[phase])
                msg = (
                    f"[{rep + 1}/{repeat}] {mode:9} write {size_label(block):>5} calls: "
                    f"{mib_s(size, w['total']):7.1f} MiB/s "
                    f"(write() calls {w['feed']:.2f}s, commit {w['commit']:.2f}s)"
                )
                resident["warm"][mode].append(cached_fraction(path))
                warm = mib_s(size, timed_read(spool, info.name, size))
                reads["warm"][mode].append(warm)
                msg += f"; read warm {warm:7.1f}"
                if can_drop:
                    drop_caches()
                    resident["cold"][mode].append(cached_fraction(path))
                    cold = mib_s(size, timed_read(spool, info.name, size))
                    reads["cold"][mode].append(cold)
                    msg += f", cold {cold:7.1f}"
                log(msg + " MiB/s")
                if mode not in checked:  # once per mode, off the clock
                    if read_digest(spool, info.name) != expected_digest:
                        raise RuntimeError(f"{mode} spool returned different bytes")
                    checked.add(mode)
                spool.delete(info.name)
                os.sync()

    result: dict[str, Any] = {"feed_only_mib_s": feed_rates, "write": {}, "read": {}}
    for label, by_mode in writes.items():
        entry: dict[str, Any] = {}
        for mode in MODES:
            rates = [mib_s(size, t) for t in by_mode[mode]["total"]]
            entry[mode] = summary(rates)
            entry[mode]["write_calls_s"] = [round(t, 3) for t in by_mode[mode]["feed"]]
            entry[mode]["commit_s"] = [round(t, 3) for t in by_mode[mode]["commit"]]
        entry.update(
            ratios(
                [mib_s(size, t) for t in by_mode["encrypted"]["total"]],
                [mib_s(size, t) for t in by_mode["plain"]["total"]],
            )
        )
        result["write"][label] = entry
    for kind in ("warm", "cold"):
        if not reads[kind]["plain"]:
            result["read"][kind] = None
            continue
        entry = {
            "source": "page cache (file fully resident)"
            if kind == "warm"
            else "block device, after sync + drop_caches (a VM host may still cache it)"
        }
        for mode in MODES:
            entry[mode] = summary(reads[kind][mode])
            fractions = [f for f in resident[kind][mode] if f is not None]
            entry[mode]["page_cache_resident_fraction"] = (
                [round(min(fractions), 3), round(max(fractions), 3)] if fractions else None
            )
        entry.update(ratios(reads[kind]["encrypted"], reads[kind]["plain"]))
        result["read"][kind] = entry
    result["cold_read_available"] = can_drop
    return result


# -- peak RSS -------------------------------------------------------------------------


def proc_status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def child_rss(size: int, workdir: Path) -> None:
    """Hidden --child-rss mode: write then read back one encrypted job; print VmHWM."""
    keys = KeyFileProvider.open_or_create(workdir / "keys.json")
    spool = EncryptedSpool(workdir / "rss", keys)
    spool.directory.mkdir(mode=0o700, exist_ok=True)
    pattern = memoryview(os.urandom(CHILD_FEED_BUFFER))
    hwm_before = proc_status_kib("VmHWM")
    with spool.create() as writer:
        feed(writer.write, pattern, size, CHILD_WRITE_SIZE)
        info = writer.commit()
    hwm_after_write = proc_status_kib("VmHWM")
    n = 0
    for chunk in spool.read(info.name):
        n += len(chunk)
    if n != size:
        raise RuntimeError(f"read {n} bytes back, expected {size}")
    spool.delete(info.name)
    print(
        json.dumps(
            {
                "size_bytes": size,
                "vm_hwm_before_job_kib": hwm_before,
                "vm_hwm_after_write_kib": hwm_after_write,
                "vm_hwm_kib": proc_status_kib("VmHWM"),
                "vm_rss_end_kib": proc_status_kib("VmRSS"),
            }
        )
    )


def run_rss(workdir: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for size in RSS_SIZES:
        log(f"peak RSS: fresh child writing then reading an encrypted {size_label(size)} job")
        t0 = time.perf_counter()
        proc = subprocess.run(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "--child-rss",
                str(size),
                "--dir",
                str(workdir),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"RSS child failed:\n{proc.stderr}")
        data = json.loads(proc.stdout.strip().splitlines()[-1])
        data["vm_hwm_mib"] = round(data["vm_hwm_kib"] / 1024, 1)
        data["seconds"] = round(time.perf_counter() - t0, 2)
        log(f"  VmHWM {data['vm_hwm_mib']} MiB ({data['seconds']} s)")
        out[size_label(size)] = data
    small, large = (out[size_label(s)]["vm_hwm_kib"] for s in RSS_SIZES)
    out["growth_mib"] = round((large - small) / 1024, 1)
    return out


# -- main -----------------------------------------------------------------------------


@contextlib.contextmanager
def work_directory(parent: Path) -> Iterator[Path]:
    parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="spoolvault-bench-", dir=parent))
    try:
        yield workdir
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--dir",
        type=Path,
        default=Path("/var/tmp"),
        help="where to create the temporary spool directories (a real disk, not tmpfs; "
        "default /var/tmp); everything is removed afterwards",
    )
    p.add_argument("--size-mib", type=int, default=256, help="job size in MiB (default 256)")
    p.add_argument("--repeat", type=int, default=5, help="samples per configuration (default 5)")
    p.add_argument("--skip-rss", action="store_true", help="skip the peak-RSS children")
    p.add_argument("--child-rss", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.size_mib < 1 or args.repeat < 1:
        p.error("--size-mib and --repeat must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child_rss is not None:
        child_rss(args.child_rss, args.dir)
        return 0

    size = args.size_mib * MIB
    started = datetime.now(UTC)
    with work_directory(args.dir) as workdir:
        facts = machine_facts(workdir)
        fs = facts["dir_filesystem"]
        log(
            f"benchmark directory {workdir}: {fs.get('fstype')} on {fs.get('source')}; "
            f"{facts['cpu_usable']} CPUs, Python {facts['python']}, "
            f"cryptography {facts['cryptography']}"
        )
        if fs.get("fstype") in {"tmpfs", "ramfs"}:
            log("WARNING: this directory is in memory, not on a disk: fsync costs nothing")
        log(f"job size {size_label(size)}, {args.repeat} repeats, throughput in MiB/s")
        throughput = run_throughput(workdir, size, args.repeat)
        rss = None if args.skip_rss else run_rss(workdir)

    primary = throughput["write"][size_label(PRIMARY_WRITE_SIZE)]["ratio_of_medians"]
    targets: dict[str, Any] = {
        "write_ratio_min": WRITE_RATIO_TARGET,
        "write_ratio_judged_on": f"ratio of medians, {size_label(PRIMARY_WRITE_SIZE)} writes",
        "write_ratio": primary,
        "write_ratio_met": primary >= WRITE_RATIO_TARGET,
        "write_ratio_met_by_write_size": {
            label: entry["ratio_of_medians"] >= WRITE_RATIO_TARGET
            for label, entry in throughput["write"].items()
        },
        "rss_growth_max_mib": RSS_GROWTH_TARGET_MIB,
        "rss_growth_mib": rss["growth_mib"] if rss else None,
        "rss_growth_met": (rss["growth_mib"] < RSS_GROWTH_TARGET_MIB) if rss else None,
    }
    targets["all_met"] = (
        None if rss is None else bool(targets["write_ratio_met"] and targets["rss_growth_met"])
    )
    result = {
        "benchmark": "spoolvault spool_throughput",
        "started_utc": started.isoformat(timespec="seconds"),
        "seconds": round((datetime.now(UTC) - started).total_seconds(), 1),
        "unit": "MiB/s = 2**20 document (plaintext) bytes per second",
        "machine": facts,
        "config": {
            "size_mib": args.size_mib,
            "repeat": args.repeat,
            "write_call_sizes": [size_label(b) for b in WRITE_SIZES],
            "feed_buffer": size_label(FEED_BUFFER),
            "chunk_size": fmt.CHUNK_SIZE,
            "order": "one unrecorded warm-up write per kind, then per repeat and "
            "write-call size: encrypted then plain",
            "write_timing": "create() + write() calls + commit() (fsync file, rename, "
            "fsync dir); sync before each run",
            "read_samples": "one warm and one cold read of every file written",
            "rss_sizes": [size_label(s) for s in RSS_SIZES],
            "rss_write_call_size": size_label(CHILD_WRITE_SIZE),
        },
        **throughput,
        "rss": rss,
        "targets": targets,
    }
    verdict = {True: "met", False: "MISSED", None: "not measured"}
    log(
        f"write ratio {primary} (target >= {WRITE_RATIO_TARGET}): "
        f"{verdict[targets['write_ratio_met']]}; RSS growth "
        f"{targets['rss_growth_mib']} MiB (target < {RSS_GROWTH_TARGET_MIB:g}): "
        f"{verdict[targets['rss_growth_met']]}"
    )
    print(json.dumps(result, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
