"""What a delivery ends with: `Delivered`, or a `DeliveryError` that says whether the
printer may have the job (`DeliveryUncertain`) or certainly not (`DeliveryFailed`)."""

from __future__ import annotations

from dataclasses import dataclass

from spoolvault.errors import PrinterFailure

__all__ = ["Delivered", "DeliveryError", "DeliveryFailed", "DeliveryUncertain"]


@dataclass(frozen=True)
class Delivered:
    """The printer accepted the job."""

    printer_job_id: int | None  # IPP job-id at the printer, when there is one
    detail: str  # for the audit log, e.g. "ipp://host:631/ipp/print job 12"


class DeliveryError(PrinterFailure):
    """Base of `DeliveryFailed` and `DeliveryUncertain`; ``reason`` is for people."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class DeliveryFailed(DeliveryError):
    """The printer did not accept the job. ``accepted`` is always False: nothing printed,
    safe to retry later.

    ``retryable`` is True when the same request may succeed later without anybody changing
    anything (printer busy, unreachable, out of paper); False when it will fail the same way
    (the printer refuses the format, needs credentials, the document is empty). ``status``
    is the printer's answer as a keyword ("server-error-busy", "http-404") when it gave one.
    """

    accepted = False

    def __init__(self, reason: str, *, retryable: bool, status: str | None = None) -> None:
        super().__init__(reason)
        self.retryable = retryable
        self.status = status


class DeliveryUncertain(DeliveryError):
    """We cannot know whether the printer accepted the job (e.g. the connection dropped
    after the whole document was sent and before the answer). The caller must NOT send it
    again automatically (at-most-once)."""
