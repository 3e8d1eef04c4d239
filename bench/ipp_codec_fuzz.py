"""IPP codec speed and a long, time-bounded mutation fuzz run.

    .venv/bin/python bench/ipp_codec_fuzz.py [--seconds 30] [--seed N] [--repeat 20000]

1. speed: decode, Parser.feed in 1 KiB chunks, and encode of a typical ~500-byte
   Print-Job request (the shape CUPS sends), and decode/encode of a Get-Printer-Attributes
   style response of ~8 KB with 1setOf collections; best of 5 runs of ``--repeat`` each;
2. fuzz: the test suite's mutation fuzzer (tests/harness/fuzz.py) over the two
   messages above: mutated inputs fed both to ``decode`` and, in random pieces, to
   ``Parser``; anything but IppParseError, a disagreement between the two, a message that
   does not re-encode, or an input slower than 1 s is a finding (the first 20 are printed
   with the input in hex, and the exit status is 1).

The test suite runs the same checks for a few seconds; this runs them for longer.
Progress goes to stderr; one JSON line with the results goes to stdout at the end.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import timeit
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from harness import fuzz
from spoolvault.ipp.codec import (
    Collection,
    IppMessage,
    Parser,
    Range,
    Resolution,
    StringWithLanguage,
    decode,
    encode,
)
from spoolvault.ipp.constants import GroupTag, Operation, PrinterState, Status, ValueTag

T = ValueTag


def print_job_request() -> IppMessage:
    """A Print-Job as CUPS's ipp backend / lp sends it (about 500 bytes)."""
    msg = IppMessage((2, 0), Operation.PRINT_JOB, 42)
    op = msg.operation
    op.add("attributes-charset", T.CHARSET, "utf-8")
    op.add("attributes-natural-language", T.NATURAL_LANGUAGE, "en-us")
    op.add("printer-uri", T.URI, "ipp://print.example.com:631/ipp/print/secure")
    op.add("requesting-user-name", T.NAME, "alice")
    op.add("job-name", T.NAME, "Quarterly report.pdf")
    op.add("document-format", T.MIME_MEDIA_TYPE, "application/pdf")
    op.add("compression", T.KEYWORD, "none")
    job = msg.add_group(GroupTag.JOB)
    job.add("copies", T.INTEGER, 2)
    job.add("sides", T.KEYWORD, "two-sided-long-edge")
    job.add("print-color-mode", T.KEYWORD, "monochrome")
    job.add("print-quality", T.ENUM, 4)
    job.add("page-ranges", T.RANGE_OF_INTEGER, Range(1, 12))
    job.add("printer-resolution", T.RESOLUTION, Resolution(600, 600, 3))
    job.add("job-hold-until", T.KEYWORD, "indefinite")
    size = Collection()
    size.add("x-dimension", T.INTEGER, 21000)
    size.add("y-dimension", T.INTEGER, 29700)
    media = Collection()
    media.add("media-size", T.BEGIN_COLLECTION, size)
    media.add("media-source", T.KEYWORD, "auto")
    job.add("media-col", T.BEGIN_COLLECTION, media)
    return msg


def printer_attributes_response() -> IppMessage:
    """A Get-Printer-Attributes response with a media-col-database (about 8 KB)."""
    msg = IppMessage.response(print_job_request(), Status.SUCCESSFUL_OK)
    printer = msg.add_group(GroupTag.PRINTER)
    printer.add("printer-state", T.ENUM, PrinterState.IDLE)
    printer.add("printer-name", T.NAME_WITH_LANGUAGE, StringWithLanguage("en", "Secure queue"))
    printer.add("printer-current-time", T.DATETIME, datetime(2024, 3, 5, 10, 20, 30, tzinfo=UTC))
    printer.add("operations-supported", T.ENUM, *range(2, 60))
    printer.add(
        "document-format-supported", T.MIME_MEDIA_TYPE, "application/pdf", "image/pwg-raster"
    )
    database = []
    for x, y in [(21000, 29700), (21590, 27940), (21590, 35560), (14800, 21000)] * 12:
        size = Collection()
        size.add("x-dimension", T.INTEGER, x)
        size.add("y-dimension", T.INTEGER, y)
        col = Collection()
        col.add("media-size", T.BEGIN_COLLECTION, size)
        col.add("media-type", T.KEYWORD, "stationery")
        col.add("media-source", T.KEYWORD, "tray-1")
        database.append(col)
    printer.add("media-col-database", T.BEGIN_COLLECTION, *database)
    return msg


def best_us(func: Callable[[], object], repeat: int) -> float:
    return min(timeit.repeat(func, number=repeat, repeat=5)) / repeat * 1e6


def chunked(data: bytes, size: int) -> IppMessage | None:
    parser = Parser()
    result = None
    for i in range(0, len(data), size):
        result = parser.feed(data[i : i + size])
        if result is not None:
            break
    return result


def speed(repeat: int) -> dict[str, float]:
    results: dict[str, float] = {}
    for label, msg in (
        ("print_job", print_job_request()),
        ("printer_attrs", printer_attributes_response()),
    ):
        data = encode(msg)
        assert decode(data)[0] == msg
        results[f"{label}_bytes"] = len(data)
        n = repeat if label == "print_job" else max(1, repeat // 20)
        results[f"{label}_decode_us"] = best_us(lambda data=data: decode(data), n)
        results[f"{label}_parser_1k_us"] = best_us(lambda data=data: chunked(data, 1024), n)
        results[f"{label}_encode_us"] = best_us(lambda msg=msg: encode(msg), n)
        print(
            f"{label}: {len(data)} B, decode {results[f'{label}_decode_us']:.1f} us, "
            f"Parser (1 KiB chunks) {results[f'{label}_parser_1k_us']:.1f} us, "
            f"encode {results[f'{label}_encode_us']:.1f} us",
            file=sys.stderr,
        )
    return results


def fuzzing(seconds: float, seed: int) -> dict[str, int]:
    seeds = [encode(print_job_request()), encode(printer_attributes_response())]
    stats = fuzz.fuzz("ipp", sys.maxsize, seed, seconds=seconds, seeds=seeds)
    for finding in stats.findings:
        print(f"FINDING {finding}", file=sys.stderr)
    print(
        f"fuzz: {stats.inputs} inputs in {seconds:.0f} s, {stats.accepted} accepted, "
        f"{stats.refused} refused, {len(stats.findings)} findings",
        file=sys.stderr,
    )
    return {
        "inputs": stats.inputs,
        "accepted": stats.accepted,
        "refused": stats.refused,
        "findings": len(stats.findings),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="fuzzing time")
    parser.add_argument("--seed", type=int, default=None, help="fuzzing seed (random)")
    parser.add_argument("--repeat", type=int, default=20000, help="timing loop size")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 32)
    print(f"seed {seed}", file=sys.stderr)
    results: dict[str, object] = {"seed": seed, **speed(args.repeat), **fuzzing(args.seconds, seed)}
    print(json.dumps(results))
    return 1 if results["findings"] else 0


if __name__ == "__main__":
    sys.exit(main())
