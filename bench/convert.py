"""Conversion at release: pages/s of spoolvault's chain next to CUPS's own, peak RSS.

    PYTHONPATH=src python bench/convert.py [--pages 100]

A PDF of N text pages (made by texttopdf) is converted to PWG raster at 300 dpi and to
PostScript by spoolvault's documents/convert.py (the document in a memfd, gs in its
private namespace, output read from a pipe) and, on the same file in the same run, by
CUPS's chain through ``cupsfilter`` (pdftopdf, then gstoraster / pdftops, as cupsd runs
them). Peak RSS is the largest of the converter processes (RUSAGE_CHILDREN maxrss).
Time to first byte: from the start of the release until the first converted byte.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import subprocess
import time
from collections.abc import AsyncIterator

from spoolvault.documents import formats as F
from spoolvault.documents.convert import FILTER_DIR as FILTERS
from spoolvault.documents.convert import Run, plan, sandbox_available


def make_pdf(pages: int) -> bytes:
    text = "".join(
        f"Page {p}\n" + "The quick brown fox jumps over the lazy dog. " * 40 + "\n\f"
        for p in range(pages)
    )
    done = subprocess.run(
        ["/usr/lib/cups/filter/texttopdf", "1", "bench", "bench", "1", ""],
        input=text.encode(),
        capture_output=True,
        check=True,
    )
    return done.stdout


async def ours(pdf: bytes, target: str) -> tuple[float, float, int]:
    chain = plan(F.PDF, [target])
    assert chain is not None
    run = Run(chain, limit=512 << 20, timeout=300, sandbox=sandbox_available())

    async def source() -> AsyncIterator[bytes]:
        for i in range(0, len(pdf), 1 << 20):
            yield pdf[i : i + (1 << 20)]

    started = time.perf_counter()
    first = 0.0
    size = 0
    async for chunk in run.stream(source()):
        if not size:
            first = time.perf_counter() - started
        size += len(chunk)
    return time.perf_counter() - started, first, size


def cups(pdf_path: str, target: str) -> tuple[float, int]:
    """CUPS's chain: cupsfilter to PWG raster; pdftopdf | pdftops (no PPD: cupsfilter has
    no PostScript target without one) for PostScript."""
    started = time.perf_counter()
    if target == F.PWG_RASTER:
        argv = ["cupsfilter", "-i", "application/pdf", "-m", "image/pwg-raster"]
        done = subprocess.run(
            [*argv, "-o", "Resolution=300dpi", pdf_path], capture_output=True, check=False
        )
    else:
        shell = f"{FILTERS}/pdftopdf 1 b t 1 '' {pdf_path} | {FILTERS}/pdftops 1 b t 1 ''"
        done = subprocess.run(["sh", "-c", shell], capture_output=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"CUPS chain failed: {done.stderr[-500:]!r}")
    return time.perf_counter() - started, len(done.stdout)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pages", type=int, default=100)
    args = ap.parse_args()
    pdf = make_pdf(args.pages)
    path = f"/dev/shm/sv-bench-{os.getpid()}.pdf"  # the benchmark's own test file, not a job
    with open(path, "wb") as f:
        f.write(pdf)
    print(
        f"{args.pages}-page PDF, {len(pdf)} bytes; sandbox: {sandbox_available()}; "
        f"cupsfilter: {shutil.which('cupsfilter')}"
    )
    print("| conversion | spoolvault s | pages/s | first byte s | CUPS cupsfilter s | pages/s |")
    print("| --- | --- | --- | --- | --- | --- |")
    try:
        for target, name in (
            (F.PWG_RASTER, "PDF -> PWG raster 300 dpi"),
            (F.POSTSCRIPT, "PDF -> PostScript"),
        ):
            secs, first, size = asyncio.run(ours(pdf, target))
            csecs, csize = cups(path, target)
            print(f"  ({name}: spoolvault {size} bytes, CUPS {csize} bytes)")
            print(
                f"| {name} | {secs:.2f} | {args.pages / secs:.1f} | {first:.3f} "
                f"| {csecs:.2f} | {args.pages / csecs:.1f} |"
            )
    finally:
        os.unlink(path)
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(f"peak RSS of a converter process: {rss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
