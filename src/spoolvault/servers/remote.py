"""Releases the application server hands to the print provider that holds the job.

The application server decides who may release what (the same rules as for its own jobs:
ownership, the job's queue, admin-release printers); the provider that holds the spool file
does the rest (printer health, verification, decryption, delivery, shredding) and answers
with the job's new state. Nothing is sent when the provider is unavailable: the job stays
held there, shown as unavailable, and can be released once its provider is back.

At most once still holds across servers: the provider claims the job in its own database
before sending it, so two application servers asking at once cannot both print it, and a
request whose answer is lost is never retried blindly (the next heartbeat tells the truth).
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from spoolvault.db import Job
from spoolvault.db.models import PrinterMode
from spoolvault.errors import SpoolvaultError, Unavailable
from spoolvault.jobs.errors import JobNotFound, JobNotPossible
from spoolvault.jobs.release import (
    FIND_ME_QUEUES,
    RELEASABLE,
    JobPinLocked,
    JobPinRequired,
    Released,
    ReleaseFailed,
    ReleaseRefused,
)
from spoolvault.jobs.service import JobService
from spoolvault.printers.delivery import Delivered
from spoolvault.printers.registry import PrinterNotFound, find_printer
from spoolvault.servers.registry import (
    apply_job_report,
    get_provider,
    is_available,
    printer_dict,
)
from spoolvault.servers.signing import AppKey
from spoolvault.util.threads import in_thread

RELEASE_TIMEOUT = httpx.Timeout(600.0, connect=5.0)  # a big job takes a while to send


class ProviderUnavailable(Unavailable):
    """The job's provider cannot be reached now; the job is kept there (HTTP 503)."""

    def __init__(self, job_id: int, provider: str, why: str = "") -> None:
        super().__init__(
            f"job {job_id} is held on print provider {provider}, which is not reachable now"
            f"{f' ({why})' if why else ''}; the job is kept there and can be released when "
            f"the provider is back"
        )
        self.provider = provider


class RemoteRelease:
    """Hands releases and cancellations of provider-held jobs to their providers.

    ``ReleaseService`` calls ``send`` for such jobs (and audits the outcome as for its
    own), ``JobService.cancel`` calls ``cancel_blocking``: every front end (release
    stations, MFDs, Fast Release, the CLI) reaches providers the same way.
    """

    def __init__(self, jobs: JobService, me: AppKey) -> None:
        self.jobs = jobs
        self.db = jobs.db
        self.me = me

    def _request(
        self, job: Job, method: str, path: str, body: dict[str, Any]
    ) -> tuple[str, bytes, dict[str, str]]:
        """The URL, body and signed headers of a request to the job's provider."""
        assert job.provider is not None
        provider = get_provider(self.db, job.provider)
        if not is_available(provider) or not provider.url:
            raise ProviderUnavailable(job.id, provider.name, "no heartbeat lately")
        full = f"/provider/v1/jobs/{job.provider_job_id}{path}"
        content = json.dumps(body).encode()
        headers = {
            "Content-Type": "application/json",
            **self.me.sign(provider.name, method, full, content),
        }
        return provider.url.rstrip("/") + full, content, headers

    def _unreachable(self, job: Job, exc: httpx.HTTPError) -> SpoolvaultError:
        if isinstance(exc, httpx.ConnectError):
            # Never connected: nothing was asked, nothing changed.
            return ProviderUnavailable(job.id, str(job.provider), type(exc).__name__)
        # Asked, but the answer was lost: the provider may have acted. It never sends a
        # job twice, and its next heartbeat reports what happened.
        return ReleaseFailed(
            job.id,
            f"no answer from provider {job.provider} ({type(exc).__name__}); the job may "
            f"have printed: its state shows after the provider's next heartbeat",
        )

    def _update(self, job: Job, answer: httpx.Response) -> Job:
        assert job.provider is not None
        try:
            report = answer.json().get("job")
        except ValueError:
            report = None
        if isinstance(report, dict):
            updated = apply_job_report(self.db, job.provider, report)
            if updated is not None:
                return updated
        return job

    async def send(
        self,
        job: Job,
        printer_name: str,
        *,
        actor: str,
        is_admin: bool,
        fast: bool,
        job_pin: str | None,
    ) -> Released:
        """Check who may release it here, then have its provider send it to the printer.

        The provider checks the job's PIN (it alone has its hash) and counts wrong ones.
        """
        printer = await in_thread(find_printer, self.db, printer_name)
        if printer is None:
            raise PrinterNotFound(f"no printer named {printer_name!r}")
        if job.state not in RELEASABLE:
            raise ReleaseRefused(f"job {job.id} is {job.state.value}, not held")
        queue_printer = None if job.queue in FIND_ME_QUEUES else job.queue
        if queue_printer is not None and not is_admin:
            if queue_printer != printer.name:
                raise ReleaseRefused(
                    f"job {job.id} was printed to {queue_printer}'s queue; release it there"
                )
            own = await in_thread(find_printer, self.db, queue_printer)
            if own is not None and own.mode is PrinterMode.ADMIN_RELEASE:
                raise ReleaseRefused(f"jobs on {queue_printer} are released by an administrator")
        body = {
            "printer": printer_dict(printer),
            "actor": actor,
            "fast": fast,
            "is_admin": is_admin,
            "job_pin": job_pin,
        }
        url, content, headers = await in_thread(self._request, job, "POST", "/release", body)
        try:
            async with httpx.AsyncClient(timeout=RELEASE_TIMEOUT) as client:
                answer = await client.post(url, content=content, headers=headers)
        except httpx.HTTPError as exc:
            raise self._unreachable(job, exc) from None
        updated = await in_thread(self._update, job, answer)
        detail = _detail(answer)
        if answer.status_code == 200:
            data = answer.json()
            sent = f"on provider {job.provider}: {data.get('detail', '')}"
            return Released(updated, Delivered(data.get("printer_job_id"), sent))
        self._refusal(job, answer.status_code, detail, _field(answer, "retry_after"))
        raise ReleaseFailed(job.id, f"provider {job.provider}: {detail}")

    def cancel_blocking(self, job: Job, reason: str, actor: str) -> Job:
        """Have the job's provider cancel it and shred its file (from a worker thread)."""
        url, content, headers = self._request(job, "DELETE", "", {"actor": actor, "reason": reason})
        try:
            with httpx.Client(timeout=RELEASE_TIMEOUT) as client:
                answer = client.request("DELETE", url, content=content, headers=headers)
        except httpx.HTTPError as exc:
            raise self._unreachable(job, exc) from None
        updated = self._update(job, answer)
        if answer.status_code == 200:
            return updated
        detail = _detail(answer)
        self._refusal(job, answer.status_code, detail)
        raise JobNotPossible(detail)

    @staticmethod
    def _refusal(job: Job, status: int, detail: str, retry_after: object = None) -> None:
        if status == 401:
            raise ProviderUnavailable(
                job.id, str(job.provider), f"it refused this application server: {detail}"
            )
        if status == 404:
            raise JobNotFound(f"job {job.id} is not on provider {job.provider}: {detail}")
        if status == 409:
            raise ReleaseRefused(detail)
        if status == 403:
            raise JobPinRequired(detail)
        if status == 429:
            retry = retry_after if isinstance(retry_after, int | float) else 60.0
            raise JobPinLocked(job.id, float(retry))


def _field(r: httpx.Response, name: str) -> object:
    try:
        body = r.json()
    except ValueError:
        return None
    return body.get(name) if isinstance(body, dict) else None


def _detail(r: httpx.Response) -> str:
    try:
        return str(r.json().get("detail", r.text))[:500]
    except ValueError:
        return r.text[:500] or f"HTTP {r.status_code}"
