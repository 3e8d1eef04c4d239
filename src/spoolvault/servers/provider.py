"""The print provider's side: heartbeats to the application server, release requests from it.

A provider records every job in its own database (SQLite in its data directory by default)
before it acknowledges the client, exactly as the all-in-one server does: the application
server being down never loses or refuses a job. Its heartbeat carries what it is (version,
spool formats, whether it can encrypt), its spool usage and printer health, and the jobs
that changed since the last heartbeat the application server acknowledged. The answer
carries the settings of the provider's server (encryption on or off), the printers, and
the public keys of the running application servers.

Release requests come from an application server (``POST /provider/v1/jobs/{id}/release``,
signed: servers/signing.py): the provider verifies, decrypts and sends its own spool file;
the file never leaves this machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

import httpx
from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from spoolvault import __version__
from spoolvault.config import DataDir
from spoolvault.db import FILE_STATES, Database, Job, JobState, Printer, PrinterMode
from spoolvault.db.models import utcnow
from spoolvault.errors import ConfigError, Refused, SpoolvaultError
from spoolvault.jobs.errors import JobNotFound, JobNotPossible
from spoolvault.jobs.release import (
    JobPinLocked,
    JobPinRequired,
    PrinterBlocked,
    ReleaseFailed,
    ReleaseService,
)
from spoolvault.jobs.service import JobService
from spoolvault.printers.health import Health
from spoolvault.printers.registry import PrinterNotFound, add_printer, list_printers
from spoolvault.servers.registry import job_report
from spoolvault.servers.signing import Verifier
from spoolvault.settings import SETTINGS
from spoolvault.spool.format import VERSION as SPOOL_FORMAT_VERSION
from spoolvault.util.threads import in_thread

log = logging.getLogger(__name__)

SECRET_ENV: Final = "SPOOLVAULT_PROVIDER_SECRET"  # noqa: S105 (a variable name)
NAME_ENV: Final = "SPOOLVAULT_PROVIDER_NAME"
URL_ENV: Final = "SPOOLVAULT_PROVIDER_URL"
INTERVAL_ENV: Final = "SPOOLVAULT_HEARTBEAT_SECONDS"
DEFAULT_INTERVAL: Final = 10.0
HEALTH_EVERY: Final = 30.0  # seconds between printer health polls for the heartbeat
# Report again what changed this long before the last acknowledged heartbeat: a job
# updated while the snapshot was being taken is never missed.
OVERLAP: Final = timedelta(seconds=5)
# The first heartbeat after a start also reports jobs that finished this long ago.
FIRST_LOOKBACK: Final = timedelta(days=1)


@dataclass(frozen=True)
class ProviderIdentity:
    """Who this provider is and where its application server is; repr hides the secret."""

    name: str
    secret: str
    app_url: str
    url: str | None = None  # where application servers reach it; default: the --http address
    interval: float = DEFAULT_INTERVAL

    def __repr__(self) -> str:
        return f"ProviderIdentity(name={self.name!r}, app_url={self.app_url!r}, url={self.url!r})"

    @classmethod
    def load(cls, data: DataDir, app_url: str | None) -> ProviderIdentity:
        """From the environment first, then print-provider.conf (docs/deployment.md)."""
        conf = data.conf.values
        app = app_url or conf.get("ApplicationServer", "")
        if not app:
            raise ConfigError(
                "--role provider needs --app-server URL (or ApplicationServer= in "
                f"{data.conf_path})"
            )
        if not app.startswith(("http://", "https://")):
            raise ConfigError(f"--app-server {app!r}: give an http:// or https:// URL")
        name = os.environ.get(NAME_ENV) or conf.get("ProviderName", "")
        secret = os.environ.get(SECRET_ENV) or conf.get("ProviderSecret", "")
        if not name or not secret:
            raise ConfigError(
                f"--role provider needs its name and secret: set {NAME_ENV} and {SECRET_ENV}, "
                f"or ProviderName= and ProviderSecret= in {data.conf_path} (run "
                f"'spoolvault provider add NAME' on the application server for the secret)"
            )
        raw = os.environ.get(INTERVAL_ENV, "")
        try:
            interval = float(raw) if raw else DEFAULT_INTERVAL
        except ValueError:
            raise ConfigError(f"{INTERVAL_ENV}={raw!r}: give a number of seconds") from None
        if not 0.1 <= interval <= 600:
            raise ConfigError(f"{INTERVAL_ENV}={raw}: 0.1 to 600 seconds")
        url = os.environ.get(URL_ENV) or conf.get("ProviderURL") or None
        return cls(name, secret, app.rstrip("/"), url, interval)


def _dir_usage(path: os.PathLike[str] | str) -> dict[str, int]:
    files = size = 0
    with contextlib.suppress(OSError), os.scandir(path) as entries:
        for entry in entries:
            with contextlib.suppress(OSError):
                # Spool files only: not the lock file, temp or shredded files.
                if entry.name.endswith(".spool") and entry.is_file(follow_symlinks=False):
                    files += 1
                    size += entry.stat(follow_symlinks=False).st_size
    return {"files": files, "bytes": size}


@dataclass
class ProviderLink:
    """The provider's connection to its application server: heartbeats and their answers."""

    identity: ProviderIdentity
    jobs: JobService
    release: ReleaseService
    clock: Callable[[], datetime] = utcnow
    url: str | None = None
    verifier: Verifier = field(init=False)
    connected: bool = False
    last_error: str | None = None
    health: dict[str, dict[str, Any]] = field(default_factory=dict)
    _cursor: datetime | None = None
    _wake: asyncio.Event | None = None
    _loop: asyncio.AbstractEventLoop | None = None

    def __post_init__(self) -> None:
        self.verifier = Verifier(self.identity.name)

    @property
    def db(self) -> Database:
        return self.jobs.db

    def wake(self) -> None:
        """Send a heartbeat now (a job arrived); safe from any thread."""
        event, loop = self._wake, self._loop
        if event is not None and loop is not None:
            loop.call_soon_threadsafe(event.set)

    # -- heartbeat ---------------------------------------------------------------------

    def capabilities(self) -> dict[str, Any]:
        try:
            self.jobs.store.encrypted.keys.current()
        except Exception as exc:  # any reason it cannot encrypt: reported, not raised
            return {"encrypt": False, "encrypt_reason": str(exc)[:200]}
        return {"encrypt": True}

    def snapshot(self) -> tuple[dict[str, Any], datetime]:
        """The heartbeat body, and the time it was taken (the next cursor)."""
        taken = self.clock()
        since = self._cursor - OVERLAP if self._cursor else taken - FIRST_LOOKBACK
        first = self._cursor is None
        with self.db.session(write=False) as s:
            local = Job.provider.is_(None)
            live_states = sorted(st.value for st in FILE_STATES)
            query = select(Job).where(local, Job.state != JobState.INCOMING.value)
            if first:
                # Every job that holds a file, and what finished lately.
                query = query.where((Job.state.in_(live_states)) | (Job.updated_at >= since))
            else:
                query = query.where(Job.updated_at >= since)
            changed = [job_report(j) for j in s.scalars(query.order_by(Job.id))]
            live = list(s.scalars(select(Job.id).where(local, Job.state.in_(live_states))))
        store = self.jobs.store
        spool: dict[str, Any] = {
            "encrypted": _dir_usage(store.encrypted.directory),
            "plain": _dir_usage(store.plain.directory),
        }
        with contextlib.suppress(OSError):
            spool["free_bytes"] = shutil.disk_usage(store.encrypted.directory).free
        body = {
            "name": self.identity.name,
            "version": __version__,
            "url": self.url,
            "interval": self.identity.interval,
            "formats": {"read": [SPOOL_FORMAT_VERSION], "write": SPOOL_FORMAT_VERSION},
            "capabilities": self.capabilities(),
            "spool": spool,
            "printers": dict(self.health),
            "jobs": changed,
            "live": live,
        }
        return body, taken

    def apply(self, answer: Mapping[str, Any]) -> None:
        """Take the settings, printers and app server keys from a heartbeat answer."""
        known = {st.name for st in SETTINGS}
        wanted = {k: v for k, v in dict(answer.get("settings") or {}).items() if k in known}
        current = self.db.get_settings()
        changes = {k: v for k, v in wanted.items() if current.get(k) != v}
        if changes:
            self.db.update_settings("primary", changes)
            log.info("settings from the application server: %s", sorted(changes))
        sync_printers(self.db, answer.get("printers") or [])
        self.verifier.keys = {str(k): str(v) for k, v in dict(answer.get("app_keys") or {}).items()}
        if answer.get("resync"):
            self._cursor = None

    async def beat(self, client: httpx.AsyncClient) -> None:
        """One heartbeat; raises on failure (the caller logs and retries)."""
        body, taken = await in_thread(self.snapshot)
        r = await client.post(
            f"{self.identity.app_url}/api/v1/providers/heartbeat",
            json=body,
            auth=(self.identity.name, self.identity.secret),
        )
        if r.status_code != 200:
            detail = _detail(r)
            raise ConnectionError(f"application server answered {r.status_code}: {detail}")
        answer = r.json()
        await in_thread(self.apply, answer)
        if not answer.get("resync"):
            self._cursor = taken

    async def poll_health(self) -> None:
        """Printer health for the heartbeat: each printer every HEALTH_EVERY seconds, a
        printer the application server just defined at once (never blocks heartbeats)."""
        polled: dict[str, float] = {}
        while True:
            for printer in await in_thread(list_printers, self.db):
                if time.monotonic() - polled.get(printer.name, -HEALTH_EVERY) < HEALTH_EVERY:
                    continue
                polled[printer.name] = time.monotonic()
                try:
                    h: Health = await asyncio.wait_for(self.release.printer_health(printer), 10)
                    self.health[printer.name] = {
                        "in_error": h.in_error,
                        "state": str(h.state),
                        "message": h.message,
                    }
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self.health[printer.name] = {"in_error": True, "message": f"not asked: {exc}"}
            await asyncio.sleep(1.0)

    async def run(self) -> None:
        """Heartbeat every interval, or at once when woken, until cancelled."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        health = asyncio.create_task(self.poll_health())
        timeout = httpx.Timeout(30.0, connect=5.0)
        try:
            async with httpx.AsyncClient(timeout=timeout) as client:
                while True:
                    self._wake.clear()
                    try:
                        await self.beat(client)
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:
                        reason = f"{type(exc).__name__}: {exc}"
                        if self.connected or self.last_error != reason:
                            log.warning(
                                "heartbeat to %s failed (%s); jobs are still accepted and "
                                "kept, retrying",
                                self.identity.app_url,
                                reason,
                            )
                        self.connected, self.last_error = False, reason
                    else:
                        if not self.connected:
                            log.info("connected to application server %s", self.identity.app_url)
                        self.connected, self.last_error = True, None
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self.identity.interval)
        finally:
            health.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await health

    # -- requests from application servers ---------------------------------------------

    async def refused(self, request: Request) -> Response | None:
        """None if an application server signed this request, else the 401 answer."""
        body = await request.body()
        why = self.verifier.check(request.method, request.url.path, body, request.headers)
        if why is None:
            return None
        log.warning("refused %s %s: %s", request.method, request.url.path, why)
        return JSONResponse({"detail": why}, status_code=401)

    def routes(self) -> list[Route]:
        """``/provider/v1/...``: what application servers call."""

        async def release(request: Request) -> Response:
            if (denied := await self.refused(request)) is not None:
                return denied
            job_id = _int(request.path_params["job_id"])
            body = await request.json()
            printer = body.get("printer") or {}
            actor = str(body.get("actor") or "unknown")
            try:
                await in_thread(sync_printers, self.db, [printer])
                done = await self.release.release(
                    job_id,
                    str(printer.get("name")),
                    actor=actor,
                    # The application server checked who may release it; queue rules and
                    # the job's PIN are checked here too (the PIN hash never leaves).
                    is_admin=bool(body.get("is_admin")),
                    fast=bool(body.get("fast")),
                    job_pin=None if body.get("job_pin") is None else str(body["job_pin"]),
                )
            except ReleaseFailed as exc:
                return await self._error(job_id, 502, str(exc))
            except JobPinLocked as exc:
                return await self._error(job_id, 429, str(exc), "pin", exc.retry_after)
            except JobPinRequired as exc:
                return await self._error(job_id, 403, str(exc), "pin")
            except Refused as exc:
                status = 404 if isinstance(exc, JobNotFound | PrinterNotFound) else 409
                kind = "blocked" if isinstance(exc, PrinterBlocked) else "refused"
                return await self._error(job_id, status, str(exc), kind)
            self.wake()
            return JSONResponse(
                {
                    "job": job_report(done.job),
                    "printer_job_id": done.delivered.printer_job_id,
                    "detail": done.delivered.detail,
                }
            )

        async def cancel(request: Request) -> Response:
            if (denied := await self.refused(request)) is not None:
                return denied
            job_id = _int(request.path_params["job_id"])
            body = await request.json()
            actor = str(body.get("actor") or "unknown")
            reason = str(body.get("reason") or f"cancelled by {actor}")
            try:
                job = await in_thread(lambda: self.jobs.cancel(job_id, reason=reason, actor=actor))
            except JobNotPossible as exc:
                return await self._error(job_id, 409, str(exc))
            except JobNotFound as exc:
                return await self._error(job_id, 404, str(exc))
            self.wake()
            return JSONResponse({"job": job_report(job)})

        return [
            Route("/provider/v1/jobs/{job_id}/release", release, methods=["POST"]),
            Route("/provider/v1/jobs/{job_id}", cancel, methods=["DELETE"]),
        ]

    async def _error(
        self,
        job_id: int,
        status: int,
        detail: str,
        kind: str = "failed",
        retry_after: float | None = None,
    ) -> JSONResponse:
        body: dict[str, Any] = {"detail": detail, "kind": kind}
        if retry_after is not None:
            body["retry_after"] = retry_after
        with contextlib.suppress(SpoolvaultError):
            job = await in_thread(self.jobs.get, job_id)
            body["job"] = job_report(job)
        return JSONResponse(body, status_code=status)


def _int(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise JobNotFound(f"job {value!r} does not exist") from None


def _detail(r: httpx.Response) -> str:
    try:
        return str(r.json().get("detail", r.text))[:300]
    except ValueError:
        return r.text[:300]


def sync_printers(db: Database, printers: list[Mapping[str, Any]]) -> None:
    """Create or update the printers the application server defined (by name)."""
    for p in printers:
        name = str(p.get("name") or "")
        if not name:
            continue
        values: dict[str, Any] = {
            "uri": str(p["uri"]),
            "mode": PrinterMode(p.get("mode") or PrinterMode.HOLD.value),
            "block_release_on_error": bool(p.get("block_release_on_error")),
            "group": str(p.get("group") or "default"),
            "snmp_community": p.get("snmp_community"),
            "snmp_host": p.get("snmp_host"),
            "snmp_port": p.get("snmp_port"),
            "hold_timeout_minutes": p.get("hold_timeout_minutes"),
        }
        with db.session() as s:
            row = s.scalar(select(Printer).where(Printer.name == name))
            if row is not None:
                for key, value in values.items():
                    if getattr(row, key) != value:
                        setattr(row, key, value)
                continue
        add_printer(db, name=name, **values)
