"""IPP codec speed and a long, time-bounded mutation fuzz run.

    .venv/bin/python bench/ipp_codec_fuzz.py [--seconds 30] [--seed N] [--repeat 20000]

1. speed: decode, Parser.feed in 1 KiB chunks, and encode of a typical ~500-byte
   Print-Job request (the shape CUPS sends), and decode/encode of a Get-Printer-Attributes
   style response of ~8 KB with 1setOf collections; best of 5 runs of ``--repeat`` each;
2. fuzz: random bit flips, truncations, insertions, deletions and overwrites of several
   valid messages, fed both to ``decode`` and, in random pieces, to ``Parser``; anything
   but IppParseError, a disagreement between the two, or a message that does not
   re-encode is a finding (printed with the input in hex, and exit status 1).

The test suite runs the same checks for a few seconds; this runs them for longer.
Progress goes to stderr; one JSON line with the results goes to stdout at the end.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import timeit
from collections.abc import Callable
from datetime import UTC, datetime

from spoolvault.ipp.codec import (
    Collection,
    IppMessage,
    IppParseError,
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


def mutate(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        kind = rng.choice(("flip", "truncate", "insert", "delete", "set"))
        at = rng.randrange(len(out) + 1)
        if kind == "flip" and out:
            out[at % len(out)] ^= 1 << rng.randrange(8)
        elif kind == "truncate":
            del out[at:]
        elif kind == "insert":
            out[at:at] = rng.randbytes(rng.randint(1, 6))
        elif kind == "delete":
            del out[at : at + rng.randint(1, 6)]
        elif kind == "set" and out:
            out[at % len(out)] = rng.randrange(256)
    return bytes(out)


def outcome(func: Callable[[], IppMessage]) -> tuple[str, object]:
    try:
        return "ok", func()
    except IppParseError as exc:
        return "error", exc.status


def via_parser(rng: random.Random, data: bytes) -> IppMessage:
    parser = Parser()
    pos = 0
    while pos < len(data):
        size = rng.randint(1, 64)
        msg = parser.feed(data[pos : pos + size])
        pos += size
        if msg is not None:
            return msg
    parser.finish()
    raise AssertionError("Parser.finish() returned without a message")


def fuzz(seconds: float, seed: int) -> dict[str, int]:
    rng = random.Random(seed)
    seeds = [encode(print_job_request()), encode(printer_attributes_response())]
    counts = {"inputs": 0, "accepted": 0, "refused": 0, "findings": 0}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        data = mutate(rng, rng.choice(seeds))
        counts["inputs"] += 1
        try:
            whole = outcome(lambda data=data: decode(data)[0])
            split = outcome(lambda data=data: via_parser(rng, data))
            if whole != split:
                raise AssertionError(f"decode gave {whole[0]}, Parser gave {split[0]}")
            if whole[0] == "ok":
                msg = whole[1]
                assert isinstance(msg, IppMessage)
                assert decode(encode(msg))[0] == msg
                counts["accepted"] += 1
            else:
                counts["refused"] += 1
        except Exception as exc:  # a finding: report it and go on
            counts["findings"] += 1
            print(f"FINDING {type(exc).__name__}: {exc}\n  input: {data.hex()}", file=sys.stderr)
    print(
        f"fuzz: {counts['inputs']} inputs in {seconds:.0f} s, {counts['accepted']} accepted, "
        f"{counts['refused']} refused, {counts['findings']} findings",
        file=sys.stderr,
    )
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="fuzzing time")
    parser.add_argument("--seed", type=int, default=None, help="fuzzing seed (random)")
    parser.add_argument("--repeat", type=int, default=20000, help="timing loop size")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 32)
    print(f"seed {seed}", file=sys.stderr)
    results: dict[str, object] = {"seed": seed, **speed(args.repeat), **fuzz(args.seconds, seed)}
    print(json.dumps(results))
    return 1 if results["findings"] else 0


if __name__ == "__main__":
    sys.exit(main())
