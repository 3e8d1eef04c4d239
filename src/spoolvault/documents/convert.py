"""Conversion of a document to a format its printer takes, at release (docs/formats.md).

The tools are the field's own: cups-filters (texttopdf, imagetopdf, rastertopdf) turn
text, images and raster into PDF; Ghostscript turns PDF and PostScript into what the
printer speaks (pdfwrite, ps2write, pxlmono/pxlcolor, ljet4, pwgraster, urf, pclm). A chain
is at most two steps: a cups-filters step to PDF, then one Ghostscript step.

Plaintext never touches disk:

- the decrypted document reaches a tool on a pipe, or, where the tool needs random access
  (PDF for Ghostscript, images for imagetopdf), in a memfd (``os.memfd_create``) passed as
  ``/dev/fd/N``; a PDF made by the first step is held in a memfd too. What is held in
  memory is bounded by ``limit`` (the ``conversion_memory_mb`` setting);
- the output streams from the last tool's pipe into delivery;
- every tool runs in its own user and mount namespace (``unshare``) with fresh tmpfs
  mounts on /tmp, /var/tmp and /dev/shm and TMPDIR=/tmp, so the temporary files
  Ghostscript's pdfwrite and ps2write write are in memory and vanish with the tool. Where
  namespaces are not available a job from the encrypted spool is not converted.

Failures: a tool that exits non-zero, dies, or writes nothing for ``timeout`` seconds
raises ConversionFailed; the last chunk of output is only handed on once the tool exited
successfully, so a delivery never completes on a partial conversion.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from spoolvault.documents import formats as F
from spoolvault.errors import Conflict, PrinterFailure

FILTER_DIR = "/usr/lib/cups/filter"
READ_SIZE = 256 * 1024

# What the printer is sent when it takes several of these (first found wins): the vector
# languages first (smaller, the printer renders), raster last.
TARGET_ORDER = (F.PDF, F.POSTSCRIPT, F.PCLXL, F.PCL, F.PWG_RASTER, F.URF, F.PCLM)
# Sources Ghostscript reads itself; the others are made PDF first by a cups-filters tool.
_PRE_FILTERS = {
    F.TEXT: ("texttopdf", False),  # (tool, needs a file)
    F.JPEG: ("imagetopdf", True),
    F.PNG: ("imagetopdf", True),
    F.PWG_RASTER: ("rastertopdf", False),
    F.CUPS_RASTER: ("rastertopdf", False),
}
_GS_SOURCES = frozenset({F.PDF, F.PCLM, F.POSTSCRIPT})
_NEEDS_FILE = frozenset({F.PDF, F.PCLM})


class NoConversion(Conflict):
    """The job cannot be made into a format the printer takes (no path, too large, no
    memory-only workspace); refused before any byte is sent, the job stays held (409)."""


class ConversionFailed(PrinterFailure):
    """A converter crashed, failed or stalled; nothing was delivered as printed (502)."""


@dataclass(frozen=True)
class Options:
    """Job options a tool can carry (those the printer cannot be told otherwise)."""

    copies: int = 1
    sides: str | None = None  # one-sided, two-sided-long-edge, two-sided-short-edge
    media: str | None = None  # PWG media name, e.g. iso_a4_210x297mm
    color: bool = True
    resolution: int = 300


@dataclass(frozen=True)
class Step:
    argv: tuple[str, ...]
    needs_file: bool  # the input must be seekable: given as /dev/fd/N of a memfd

    @property
    def tool(self) -> str:
        name = os.path.basename(self.argv[0])
        if name == "gs":
            device = next(a for a in self.argv if a.startswith("-sDEVICE="))
            return f"gs {device.split('=', 1)[1]}"
        return name


@dataclass(frozen=True)
class Chain:
    """The steps that make ``source`` into ``target``."""

    source: str
    target: str
    steps: tuple[Step, ...] = field(default=())

    def describe(self) -> str:
        return f"{self.source} -> {self.target} ({' | '.join(s.tool for s in self.steps)})"

    @property
    def needs_memory(self) -> bool:
        """The document itself (not just a tool's output) is held in memory."""
        return self.steps[0].needs_file


_PAPER = {
    "iso_a4_210x297mm": "a4",
    "iso_a3_297x420mm": "a3",
    "iso_a5_148x210mm": "a5",
    "na_letter_8.5x11in": "letter",
    "na_legal_8.5x14in": "legal",
}


def _gs(target: str, opts: Options, *, raw: bool) -> tuple[str, ...]:
    gs = shutil.which("gs") or "gs"
    common = [gs, "-q", "-dSAFER", "-dBATCH", "-dNOPAUSE", "-sstdout=%stderr"]
    if target == F.PDF:
        device = ["-sDEVICE=pdfwrite"]
    elif target == F.POSTSCRIPT:
        device = ["-sDEVICE=ps2write"]
    elif target == F.PCLXL:
        device = ["-sDEVICE=" + ("pxlcolor" if opts.color else "pxlmono")]
    elif target == F.PCL:
        device = ["-sDEVICE=ljet4", "-r300"]
    elif target == F.PWG_RASTER:
        space = "19" if opts.color else "18"  # sRGB / sGray (cups_cspace_t)
        device = ["-sDEVICE=pwgraster", f"-r{opts.resolution}", f"-dcupsColorSpace={space}"]
        device.append("-dcupsBitsPerColor=8")
    elif target == F.URF:
        device = ["-sDEVICE=urf", f"-r{opts.resolution}"]
    else:
        device = ["-sDEVICE=pclm", f"-r{opts.resolution}"]
    extra = []
    if opts.media in _PAPER:
        extra += [f"-sPAPERSIZE={_PAPER[opts.media]}", "-dFIXEDMEDIA", "-dPDFFitPage"]
    if opts.sides and opts.sides.startswith("two-sided"):
        extra.append("-dDuplex=true")
        if opts.sides.endswith("short-edge"):
            extra.append("-dTumble=true")
    if raw and opts.copies > 1 and target in (F.POSTSCRIPT, F.PDF, F.PCLXL, F.PCL):
        # A raw printer cannot be told; an IPP printer gets copies in the job instead.
        extra.append(f"-dNumCopies={opts.copies}")
    return (*common, *device, *extra, "-sOutputFile=-")


def plan(
    source: str, accepted: Sequence[str], opts: Options = Options(), *, raw: bool = False
) -> Chain | None:
    """How to make ``source`` into a format in ``accepted``: a Chain, or None (no path).

    ``source`` already in ``accepted`` is the caller's business (no conversion needed).
    ``raw``: the printer is socket:// or lpd:// (job options only reach it in the data).
    """
    if source in _PRE_FILTERS:
        tool, needs_file = _PRE_FILTERS[source]
        pre: Step | None = Step((os.path.join(FILTER_DIR, tool),), needs_file)
        middle = F.PDF
    elif source in _GS_SOURCES:
        pre, middle = None, source
    else:
        return None  # PCL, PCL XL, URF, unknown: no tool here reads them
    for target in TARGET_ORDER:
        if target not in accepted:
            continue
        steps: list[Step] = [pre] if pre is not None else []
        if not (middle == F.PDF and target == F.PDF and pre is not None):
            steps.append(Step(_gs(target, opts, raw=raw), middle in _NEEDS_FILE or bool(pre)))
        return Chain(source, target, tuple(steps))
    return None


def deliverable(accepted: Sequence[str], offered: Sequence[str]) -> tuple[str, ...]:
    """Of ``offered``, those a printer taking ``accepted`` can be sent: directly or
    converted (``application/octet-stream`` stays: the bytes decide at intake)."""
    return tuple(
        f for f in offered if f in accepted or f == F.UNKNOWN or plan(f, accepted) is not None
    )


# --------------------------------------------------------------------------- sandbox

_SANDBOX = (
    "for d in /tmp /var/tmp /dev/shm; do mount -t tmpfs -o size={size}m,mode=1777 "
    'sv-convert "$d" || exit 97; done; cd /tmp && exec "$@"'
)


@functools.cache
def sandbox_available() -> bool:
    """Can tools run with private, memory-only /tmp, /var/tmp and /dev/shm here?"""
    unshare = shutil.which("unshare")
    if unshare is None:
        return False
    try:
        done = subprocess.run(
            [*_sandbox_prefix(16), "true"], capture_output=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def _sandbox_prefix(size_mb: int) -> list[str]:
    unshare = shutil.which("unshare") or "unshare"
    return [
        *(unshare, "--user", "--map-root-user", "--mount", "--propagation", "private"),
        *("sh", "-c", _SANDBOX.format(size=size_mb), "sv-convert"),
    ]


def _env(tmpdir: str, target: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "TMPDIR": tmpdir,
        "HOME": tmpdir,
        "CONTENT_TYPE": "application/octet-stream",
        "FINAL_CONTENT_TYPE": target,
    }


# --------------------------------------------------------------------------- running


@dataclass
class Run:
    """Runs one chain; ``stream(source)`` yields the converted document."""

    chain: Chain
    limit: int  # bytes held in memory at most (a memfd's contents)
    timeout: float  # seconds a tool may write nothing
    sandbox: bool = True
    pids: list[int] = field(default_factory=list)  # the tools running (tests kill them)

    async def stream(self, source: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        steps = self.chain.steps
        data: AsyncIterator[bytes] = source
        held: int | None = None  # a memfd holding the input
        try:
            for i, step in enumerate(steps):
                last = i == len(steps) - 1
                if step.needs_file and held is None:
                    held = await self._hold(data)
                if last:
                    async for chunk in self._run(step, data, held):
                        yield chunk
                else:
                    out = self._run(step, data, held)
                    with_close = held
                    held = await self._hold(out)
                    if with_close is not None:
                        os.close(with_close)
        finally:
            if held is not None:
                with contextlib.suppress(OSError):
                    os.close(held)

    async def _hold(self, data: AsyncIterator[bytes]) -> int:
        fd = os.memfd_create("sv-convert", os.MFD_CLOEXEC)
        size = 0
        try:
            async for chunk in data:
                size += len(chunk)
                if size > self.limit:
                    raise NoConversion(
                        f"the document needs more than the conversion memory limit "
                        f"({self.limit // (1 << 20)} MiB, setting conversion_memory_mb) "
                        f"to convert {self.chain.describe()}"
                    )
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view) :]
        except BaseException:
            os.close(fd)
            raise
        os.lseek(fd, 0, os.SEEK_SET)
        return fd

    async def _run(
        self, step: Step, data: AsyncIterator[bytes], held: int | None
    ) -> AsyncIterator[bytes]:
        argv = list(step.argv)
        if step.argv[0].startswith(FILTER_DIR):
            argv += [
                "1",
                "spoolvault",
                "job",
                "1",
                "",
            ]  # CUPS filter: job user title copies options
        pass_fds: tuple[int, ...] = ()
        if step.needs_file:
            assert held is not None
            os.lseek(held, 0, os.SEEK_SET)
            argv.append(f"/dev/fd/{held}")
            pass_fds = (held,)
        elif argv[0].endswith("gs"):
            argv.append("-")
        private: tempfile.TemporaryDirectory[str] | None = None
        if self.sandbox:
            argv = _sandbox_prefix(max(16, self.limit >> 20)) + argv
            tmpdir = "/tmp"  # noqa: S108 - a private tmpfs inside the tool's namespace
        else:
            private = tempfile.TemporaryDirectory(prefix="sv-convert-")
            tmpdir = private.name
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=subprocess.DEVNULL if step.needs_file else subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=pass_fds,
            env=_env(tmpdir, self.chain.target),
            start_new_session=True,  # its own process group: killed whole
        )
        self.pids.append(proc.pid)
        errors = bytearray()
        feeder = None if step.needs_file else asyncio.ensure_future(self._feed(proc, data))
        reader = asyncio.ensure_future(_drain(proc, errors))
        ok = False
        try:
            assert proc.stdout is not None
            pending: bytes | None = None
            while True:
                try:
                    chunk = await asyncio.wait_for(proc.stdout.read(READ_SIZE), self.timeout)
                except TimeoutError:
                    raise ConversionFailed(
                        f"{step.tool} wrote nothing for {self.timeout:.0f} s converting "
                        f"{self.chain.describe()}; stopped"
                    ) from None
                if feeder is not None and feeder.done() and feeder.exception() is not None:
                    raise feeder.exception()  # type: ignore[misc]
                if not chunk:
                    break
                if pending is not None:
                    yield pending
                pending = chunk
            code = await asyncio.wait_for(proc.wait(), self.timeout)
            if feeder is not None:
                await feeder
            await reader
            if code != 0:
                how = f"was killed by signal {-code}" if code < 0 else f"exited with {code}"
                said = _last_error(bytes(errors))
                raise ConversionFailed(
                    f"{step.tool} {how} converting {self.chain.describe()}"
                    + (f": {said}" if said else "")
                )
            if pending is None:
                raise ConversionFailed(f"{step.tool} produced nothing from the document")
            ok = True
            yield pending
        finally:
            if not ok or proc.returncode is None:
                _kill(proc)
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(proc.wait(), 5)
            for task in (feeder, reader):
                if task is not None and not task.done():
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        await task
            if private is not None:
                private.cleanup()

    async def _feed(self, proc: asyncio.subprocess.Process, data: AsyncIterator[bytes]) -> None:
        assert proc.stdin is not None
        try:
            async for chunk in data:
                proc.stdin.write(chunk)
                await proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            return  # the tool stopped reading: its exit status tells
        finally:
            with contextlib.suppress(OSError, RuntimeError):
                proc.stdin.close()


async def _drain(proc: asyncio.subprocess.Process, errors: bytearray) -> None:
    assert proc.stderr is not None
    while chunk := await proc.stderr.read(65536):
        errors += chunk
        del errors[:-4096]  # the end says what went wrong


def _last_error(text: bytes) -> str:
    lines = [ln for ln in text.decode("utf-8", "replace").splitlines() if ln.strip()]
    wanted = [ln for ln in lines if ln.startswith("ERROR") or "Error" in ln] or lines[-1:]
    return "; ".join(wanted[-2:])[:300]


def _kill(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
