"""The application server's side of its print providers: secrets, heartbeats, job copies.

A provider keeps its jobs (records and spool files) itself and reports them in its
heartbeat; this module keeps the application server's copy of those records up to date in
the ``jobs`` table (``provider`` set, no spool file), so release stations list them like
local jobs. Losing this copy loses nothing: the next full heartbeat rebuilds it.

Secrets: ``add_provider`` returns a provider's secret once; only its SHA-256 is stored.
A secret has 256 random bits, so a slow password hash would add nothing but heartbeat
latency. Nothing here logs a secret. Application servers sign what they ask providers to
do (servers/signing.py); only their public keys are stored.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy import delete, select, update

from spoolvault.db import FILE_STATES, AppInstance, Database, Job, JobState, Printer, Provider
from spoolvault.db.models import utcnow
from spoolvault.errors import ClientError, Conflict, NotFound
from spoolvault.servers.signing import AppKey
from spoolvault.settings import SPOOL_FILE_ENCRYPTION
from spoolvault.spool.format import VERSION as SPOOL_FORMAT_VERSION

log = logging.getLogger(__name__)

SECRET_PREFIX: Final = "svp_"  # noqa: S105 (a prefix, not a secret)
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# A provider that missed this many heartbeats (plus a grace period) is unavailable.
MISSED_HEARTBEATS: Final = 3
GRACE_SECONDS: Final = 5.0
APP_KEY_TTL: Final = timedelta(minutes=10)
# Fields of a provider's job report copied onto the application server's record.
_JOB_FIELDS: Final = (
    "owner",
    "title",
    "queue",
    "state_reason",
    "size",
    "pages",
    "encrypted",
    "format_version",
    "document_format",
    "printer",
    "printer_job_id",
)
_TIME_FIELDS: Final = ("created_at", "updated_at", "completed_at")


class ProviderExists(Conflict):
    """A provider of that name is registered already (HTTP 409)."""


class UnknownProvider(NotFound):
    """No provider of that name (HTTP 404)."""


def hash_secret(secret: str) -> str:
    """SHA-256 hex of a provider secret."""
    return hashlib.sha256(secret.encode()).hexdigest()


def add_provider(db: Database, name: str, server: str = "primary", *, rotate: bool = False) -> str:
    """Register a provider of ``server`` (or give it a new secret); return the secret once."""
    if not _NAME_RE.fullmatch(name):
        raise ClientError(
            f"provider name {name!r}: 1 to 64 letters, digits, '.', '_' or '-', "
            f"starting with a letter or digit"
        )
    db.get_settings(server)  # UnknownServer when there is no such server
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    with db.session() as s:
        row = s.get(Provider, name)
        if row is not None and not rotate:
            raise ProviderExists(
                f"a provider named {name!r} is registered already "
                f"(give it a new secret with --rotate)"
            )
        if row is None:
            s.add(
                Provider(
                    name=name,
                    server=server,
                    secret_hash=hash_secret(secret),
                    status="{}",
                    created_at=db.clock(),
                )
            )
        else:
            row.secret_hash = hash_secret(secret)
            row.server = server
    return secret


def authenticate(db: Database, name: str, secret: str) -> Provider | None:
    """The provider if ``secret`` is its secret, else None (constant-time comparison)."""
    with db.session(write=False) as s:
        row = s.get(Provider, name)
    expected = row.secret_hash if row is not None else hash_secret(secrets.token_hex(8))
    ok = hmac.compare_digest(expected, hash_secret(secret))
    return row if ok and row is not None else None


def list_providers(db: Database) -> list[Provider]:
    with db.session(write=False) as s:
        return list(s.scalars(select(Provider).order_by(Provider.name)))


def get_provider(db: Database, name: str) -> Provider:
    with db.session(write=False) as s:
        row = s.get(Provider, name)
    if row is None:
        raise UnknownProvider(f"no provider named {name!r}")
    return row


def status_of(provider: Provider) -> dict[str, Any]:
    """The provider's last heartbeat (without its job lists), or {} before the first."""
    try:
        value = json.loads(provider.status or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def is_available(provider: Provider, now: datetime | None = None) -> bool:
    """True while heartbeats arrive: at most MISSED_HEARTBEATS intervals (+ grace) ago."""
    if provider.last_seen is None or not provider.url:
        return False
    interval = float(status_of(provider).get("interval", 10.0))
    limit = timedelta(seconds=MISSED_HEARTBEATS * interval + GRACE_SECONDS)
    return (now or utcnow()) - provider.last_seen <= limit


def availability(db: Database, now: datetime | None = None) -> dict[str, bool]:
    """Every provider's name and whether it is available now."""
    now = now or utcnow()
    return {p.name: is_available(p, now) for p in list_providers(db)}


# -- heartbeats -------------------------------------------------------------------------


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    at = datetime.fromisoformat(value)
    if at.tzinfo is None:
        raise ValueError(f"time without a time zone: {value!r}")
    return at


def _apply(job: Job, report: Mapping[str, Any]) -> None:
    for name in _JOB_FIELDS:
        if name in report:
            setattr(job, name, report[name])
    state = JobState(report["state"])
    # A release in progress there is "releasing" here too: nobody starts a second one.
    job.state = state
    for name in _TIME_FIELDS:
        if name in report:
            at = _parse_time(report[name])
            if at is not None or name == "completed_at":
                setattr(job, name, at)


def record_heartbeat(db: Database, name: str, beat: Mapping[str, Any]) -> Recorded:
    """Store a provider's heartbeat and bring the copies of its jobs up to date.

    ``beat["jobs"]`` holds the jobs that changed since the provider's last acknowledged
    heartbeat; ``beat["live"]`` (when present) every job id that still holds a file there.
    A copy that is live here but neither changed nor live there is marked cancelled: its
    provider no longer has it (a restore from an older backup, say).
    """
    now = db.clock()
    reports = {int(j["id"]): j for j in beat.get("jobs", [])}
    live = None if beat.get("live") is None else {int(i) for i in beat["live"]}
    status = {k: v for k, v in beat.items() if k not in ("jobs", "live")}
    written = 0
    with db.session() as s:
        provider = s.get(Provider, name, with_for_update=True)
        if provider is None:
            raise UnknownProvider(f"no provider named {name!r}")
        provider.status = json.dumps(status, sort_keys=True)
        provider.url = str(beat["url"]) if beat.get("url") else provider.url
        provider.last_seen = now
        server = provider.server
        existing: dict[int, Job] = {}
        ids = sorted(reports)
        for start in range(0, len(ids), 500):
            part = ids[start : start + 500]
            for job in s.scalars(
                select(Job).where(Job.provider == name, Job.provider_job_id.in_(part))
            ):
                assert job.provider_job_id is not None
                existing[job.provider_job_id] = job
        for job_id, report in reports.items():
            found = existing.get(job_id)
            if found is None:
                found = Job(
                    provider=name,
                    provider_job_id=job_id,
                    server=server,
                    spool_name=None,
                    attributes="[]",
                )
                s.add(found)
            _apply(found, report)
            written += 1
        resync = False
        if live is not None:
            # Ids only: a heartbeat of a provider with thousands of held jobs stays cheap.
            known = {
                int(i)
                for i in s.scalars(
                    select(Job.provider_job_id).where(
                        Job.provider == name,
                        Job.state.in_(sorted(st.value for st in FILE_STATES)),
                    )
                )
                if i is not None
            }
            gone = sorted(known - live - set(reports))
            for start in range(0, len(gone), 500):
                result = s.execute(
                    update(Job)
                    .where(Job.provider == name, Job.provider_job_id.in_(gone[start : start + 500]))
                    .values(
                        state=JobState.CANCELLED,
                        state_reason=f"no longer held on provider {name}",
                        updated_at=now,
                        completed_at=now,
                    )
                )
                written += int(getattr(result, "rowcount", 0) or 0)
            # Jobs it holds that we have no copy of (a restored database): ask for them all.
            resync = bool(live - known - set(reports))
    return Recorded(written, resync)


@dataclass(frozen=True)
class Recorded:
    """What a heartbeat changed: job records written; whether a full report is needed."""

    written: int
    resync: bool


def heartbeat_answer(db: Database, name: str) -> dict[str, Any]:
    """What a provider needs back: its server's settings, the printers, app server keys."""
    provider = get_provider(db, name)
    cutoff = db.clock() - APP_KEY_TTL
    with db.session(write=False) as s:
        printers = list(s.scalars(select(Printer).order_by(Printer.name)))
        keys = {
            row.id: row.public_key
            for row in s.scalars(select(AppInstance).where(AppInstance.last_seen >= cutoff))
        }
    return {
        "server": provider.server,
        "settings": db.get_settings(provider.server),
        "printers": [printer_dict(p) for p in printers],
        "app_keys": keys,
    }


def printer_dict(p: Printer) -> dict[str, Any]:
    """A printer's definition as sent to a provider (which releases to it)."""
    return {
        "name": p.name,
        "uri": p.uri,
        "mode": p.mode.value,
        "block_release_on_error": p.block_release_on_error,
        "group": p.group,
        "snmp_community": p.snmp_community,
        "snmp_host": p.snmp_host,
        "snmp_port": p.snmp_port,
        "hold_timeout_minutes": p.hold_timeout_minutes,
    }


# -- application server instances --------------------------------------------------------


def register_app(db: Database) -> AppKey:
    """Make this process's signing key, record its public half, forget long-gone ones."""
    me = AppKey.generate()
    now = db.clock()
    with db.session() as s:
        s.execute(delete(AppInstance).where(AppInstance.last_seen < now - timedelta(days=1)))
        s.add(AppInstance(id=me.id, public_key=me.public_hex, started_at=now, last_seen=now))
    return me


def touch_app(db: Database, me: AppKey) -> None:
    """Keep this process's key in heartbeat answers (those seen within APP_KEY_TTL)."""
    with db.session() as s:
        row = s.get(AppInstance, me.id)
        if row is None:
            now = db.clock()
            s.add(AppInstance(id=me.id, public_key=me.public_hex, started_at=now, last_seen=now))
        else:
            row.last_seen = db.clock()


# -- what administrators see ------------------------------------------------------------


def warnings_for(db: Database, server: str, settings: Mapping[str, Any] | None = None) -> list[str]:
    """Why a server's settings do not reach some of its providers' jobs."""
    values = settings if settings is not None else db.get_settings(server)
    out: list[str] = []
    if not values.get(SPOOL_FILE_ENCRYPTION):
        return out
    for p in list_providers(db):
        if p.server != server:
            continue
        status = status_of(p)
        if not status:
            out.append(f"provider {p.name} has not reported yet: whether it can encrypt is unknown")
            continue
        caps = status.get("capabilities") or {}
        formats = status.get("formats") or {}
        write = formats.get("write")
        if not caps.get("encrypt"):
            out.append(
                f"spool file encryption is on, but provider {p.name} cannot encrypt "
                f"({caps.get('encrypt_reason') or 'no reason given'}): this setting does not "
                f"affect jobs on provider {p.name}"
            )
        elif not isinstance(write, int) or write < SPOOL_FORMAT_VERSION:
            out.append(
                f"provider {p.name} writes spool format version {write}, older than "
                f"version {SPOOL_FORMAT_VERSION}: this setting does not affect jobs on "
                f"provider {p.name} as it does on the others; upgrade it"
            )
    return out


def servers_overview(db: Database, now: datetime | None = None) -> list[dict[str, Any]]:
    """``GET /api/v1/servers``: primary and site servers, their providers, heartbeat state."""
    now = now or utcnow()
    providers = list_providers(db)
    held = _held_counts(db)
    out = []
    for srv in db.servers():
        settings = db.get_settings(srv.name)
        mine = []
        for p in providers:
            if p.server != srv.name:
                continue
            status = status_of(p)
            mine.append(
                {
                    "name": p.name,
                    "url": p.url,
                    "available": is_available(p, now),
                    "last_heartbeat": p.last_seen.isoformat() if p.last_seen else None,
                    "version": status.get("version"),
                    "formats": status.get("formats"),
                    "capabilities": status.get("capabilities"),
                    "spool": status.get("spool"),
                    "printers": status.get("printers"),
                    "held_jobs": held.get(p.name, 0),
                }
            )
        out.append(
            {
                "name": srv.name,
                "kind": srv.kind.value,
                "spool_file_encryption": settings[SPOOL_FILE_ENCRYPTION],
                "providers": mine,
                "warnings": warnings_for(db, srv.name, settings),
            }
        )
    return out


def _held_counts(db: Database) -> dict[str, int]:
    from sqlalchemy import func

    with db.session(write=False) as s:
        rows = s.execute(
            select(Job.provider, func.count())
            .where(Job.provider.is_not(None), Job.state.in_([JobState.HELD.value]))
            .group_by(Job.provider)
        ).all()
    return {str(name): int(n) for name, n in rows}


def job_report(job: Job) -> dict[str, Any]:
    """A provider's report of one of its jobs (metadata only, never content or PIN hash)."""
    return {
        "id": job.id,
        "owner": job.owner,
        "title": job.title,
        "queue": job.queue,
        "state": job.state.value,
        "state_reason": job.state_reason,
        "size": job.size,
        "pages": job.pages,
        "encrypted": job.encrypted,
        "format_version": job.format_version,
        "document_format": job.document_format,
        "printer": job.printer,
        "printer_job_id": job.printer_job_id,
        "created_at": job.created_at.isoformat(),
        "updated_at": job.updated_at.isoformat(),
        "completed_at": job.completed_at.isoformat() if job.completed_at else None,
    }


def apply_job_report(db: Database, name: str, report: Mapping[str, Any]) -> Job | None:
    """Update one copy from a provider's answer to a release or cancel request."""
    with db.session() as s:
        job = s.scalar(
            select(Job).where(Job.provider == name, Job.provider_job_id == int(report["id"]))
        )
        if job is None:
            return None
        _apply(job, report)
    return job


def provider_jobs(db: Database, name: str, states: Iterable[JobState]) -> list[Job]:
    with db.session(write=False) as s:
        return list(
            s.scalars(
                select(Job)
                .where(Job.provider == name, Job.state.in_([st.value for st in states]))
                .order_by(Job.id)
            )
        )
