"""At release: does the printer take the job's format, and if not, how it is converted.

The release service (jobs/release.py) asks ``prepare`` before it claims the job, so a
refusal (no path, too large for the conversion memory limit, no memory-only workspace)
leaves the job held and sends nothing. docs/formats.md has the rules and the matrix.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

from spoolvault.db import Job, Printer
from spoolvault.documents import formats as F
from spoolvault.documents.convert import Chain, NoConversion, Options, Run, plan, sandbox_available
from spoolvault.ipp.message import Attribute
from spoolvault.settings import CONVERSION_MEMORY_MB, CONVERSION_TIMEOUT_SECONDS

Source = Callable[[], AsyncIterator[bytes]]


def accepted_formats(printer: Printer, reported: Sequence[str]) -> tuple[str, ...] | None:
    """What a printer takes: the admin's list, else an IPP printer's
    document-format-supported, else (socket/lpd) PostScript and PCL. None: not known
    (an IPP printer that did not answer): the job is sent as it is."""
    if printer.document_formats:
        return tuple(printer.document_formats.split(","))
    if printer.uri.startswith(("ipp://", "ipps://")):
        return tuple(reported) or None
    return F.DEFAULT_RAW_FORMATS


def options_of(attributes: Sequence[Attribute]) -> Options:
    values = {a.name: a.python_values for a in attributes}

    def first(name: str) -> object:
        found = values.get(name) or [None]
        return found[0]

    copies = first("copies")
    sides = first("sides")
    media = first("media")
    color = first("print-color-mode")
    return Options(
        copies=copies if isinstance(copies, int) and 1 <= copies <= 999 else 1,
        sides=sides if isinstance(sides, str) else None,
        media=media if isinstance(media, str) else None,
        color=color not in ("monochrome", "process-monochrome", "auto-monochrome"),
    )


@dataclass(frozen=True)
class Delivery:
    """What the printer is sent: the format named in the job, and how it is made."""

    document_format: str
    chain: Chain | None = None
    limit: int = 0
    timeout: float = 0.0

    def source(self, plain: Source) -> Source:
        """The document source delivery reads (converted, when there is a chain)."""
        chain = self.chain
        if chain is None:
            return plain

        def converted() -> AsyncIterator[bytes]:
            return Run(chain, self.limit, self.timeout, sandbox=sandbox_available()).stream(plain())

        return converted

    def describe(self) -> str:
        return f"converted {self.chain.describe()}" if self.chain else self.document_format


def prepare(
    job: Job,
    printer: Printer,
    reported: Sequence[str],
    attributes: Sequence[Attribute],
    settings: dict[str, object],
) -> Delivery:
    """How the job goes to the printer, or NoConversion (nothing sent, the job stays held)."""
    fmt = F.effective(job.document_format, job.detected_format)
    accepted = accepted_formats(printer, reported)
    if accepted is None or fmt in accepted:
        return Delivery(fmt if accepted is not None else job.document_format)
    raw = not printer.uri.startswith(("ipp://", "ipps://"))
    chain = plan(fmt, accepted, options_of(attributes), raw=raw)
    if chain is None:
        if fmt == F.UNKNOWN and F.UNKNOWN in accepted:
            return Delivery(F.UNKNOWN)  # neither we nor the client know: the printer senses it
        raise NoConversion(
            f"job {job.id} is {fmt}, which printer {printer.name} does not take "
            f"({', '.join(accepted)}), and it cannot be converted to any of those; "
            f"it stays held: release it at a printer that takes {fmt}"
        )
    limit = int(str(settings.get(CONVERSION_MEMORY_MB, 256))) << 20
    if chain.needs_memory and job.size > limit:
        raise NoConversion(
            f"job {job.id} ({fmt}, {job.size} bytes) must be converted for printer "
            f"{printer.name} ({chain.describe()}), which holds it in memory, and it is over "
            f"the conversion memory limit of {limit >> 20} MiB (conversion_memory_mb); "
            f"it stays held"
        )
    if job.encrypted and not sandbox_available():
        raise NoConversion(
            f"job {job.id} ({fmt}) must be converted for printer {printer.name}, but this "
            f"server cannot give converters a memory-only workspace (user namespaces with "
            f"`unshare` are unavailable) and the job is encrypted; it stays held"
        )
    timeout = float(str(settings.get(CONVERSION_TIMEOUT_SECONDS, 600)))
    return Delivery(chain.target, chain, limit, timeout)
