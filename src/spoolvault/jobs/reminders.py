"""Expiry reminders: an e-mail to a job's owner shortly before the job expires.

The housekeeping loop asks `Reminders.send_due` every pass. A held job gets at most one
reminder, ``expiry_reminder_minutes`` before its expiry (its queue's hold timeout), when
its owner has an e-mail address and the server has an SMTP relay (``smtp_host``). The
mail carries a link that keeps the job one more hold timeout, once
(`JobService.extend_hold`); the link is the job id and an HMAC under the server's card
secret (domain-separated), so it cannot be made for another job. Mail goes out with
aiosmtplib; while the relay fails, sending pauses for `RETRY_AFTER` seconds and the
reminders stay due (docs/reminders.md).
"""

from __future__ import annotations

import hmac
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage

import aiosmtplib
from sqlalchemy import select, update

from spoolvault.audit import SYSTEM, Action, Outcome
from spoolvault.db import Job, JobState, User
from spoolvault.identity.cardkey import CardKey
from spoolvault.jobs.service import JobService
from spoolvault.settings import (
    EXPIRY_REMINDER_MINUTES,
    PUBLIC_URL,
    SMTP_FROM,
    SMTP_HOST,
    SMTP_PORT,
)
from spoolvault.util.threads import in_thread

log = logging.getLogger(__name__)

RETRY_AFTER = 300.0  # seconds without sending after the relay failed
SMTP_TIMEOUT = 20.0
BATCH = 200  # reminders looked at per pass
_LINK_PURPOSE = b"spoolvault extend-hold link v1\n"


@dataclass(frozen=True)
class Due:
    job_id: int
    owner: str
    email: str
    title: str
    queue: str
    expires: datetime


def link_token(key: CardKey, job: Job) -> str:
    """``<job id>.<mac>``: what the reminder's link carries (no other secret is needed)."""
    return f"{job.id}.{_mac(key, job.id, job.owner, job.created_at)}"


def check_token(key: CardKey, job: Job, token: str) -> bool:
    """True if ``token`` was made by `link_token` for this very job."""
    job_part, _, mac = token.partition(".")
    if job_part != str(job.id):
        return False
    return hmac.compare_digest(mac, _mac(key, job.id, job.owner, job.created_at))


def token_job_id(token: str) -> int | None:
    job_part, dot, _ = token.partition(".")
    return int(job_part) if dot and job_part.isdigit() and len(job_part) < 19 else None


def _mac(key: CardKey, job_id: int, owner: str, created: datetime) -> str:
    message = _LINK_PURPOSE + f"{job_id}\n{owner}\n{created.isoformat()}".encode()
    return key.mac(message)[:32]


class Reminders:
    """Finds the held jobs due for a reminder and mails their owners."""

    def __init__(self, jobs: JobService, key: CardKey) -> None:
        self.jobs = jobs
        self.key = key
        self._paused_until = 0.0

    def due(self) -> list[Due]:
        """Held jobs whose expiry is within ``expiry_reminder_minutes`` and not reminded."""
        settings = self.jobs.db.get_settings()
        before = int(settings[EXPIRY_REMINDER_MINUTES])
        if not settings[SMTP_HOST] or before == 0:
            return []
        now = self.jobs.clock()
        timeouts = self.jobs.hold_timeouts()
        default, per_queue = timeouts
        # A job is due once created before now + before - its timeout; the shortest timeout
        # in use bounds the query, the exact expiry is checked per job.
        shortest = min([default, *per_queue.values()])
        horizon = now + timedelta(minutes=before) - timedelta(minutes=shortest)
        with self.jobs.db.session(write=False) as s:
            rows = s.execute(
                select(Job, User.email)
                .join(User, User.username == Job.owner)
                .where(
                    Job.state == JobState.HELD.value,
                    Job.reminder_sent_at.is_(None),
                    Job.hold_extended_until.is_(None),
                    Job.created_at < horizon,
                    User.email.is_not(None),
                )
                .order_by(Job.created_at)
                .limit(BATCH)
            ).all()
        out = []
        for job, email in rows:
            expires = self.jobs.expires_at(job, timeouts)
            if expires - now <= timedelta(minutes=before) and expires > now and email:
                out.append(Due(job.id, job.owner, email, job.title, job.queue, expires))
        return out

    async def send_due(self) -> int:
        """Send every due reminder; return how many went out."""
        if time.monotonic() < self._paused_until:
            return 0
        due = await in_thread(self.due)
        if not due:
            return 0
        settings = await in_thread(self.jobs.db.get_settings)
        sent = 0
        try:
            async with aiosmtplib.SMTP(
                hostname=str(settings[SMTP_HOST]),
                port=int(settings[SMTP_PORT]),
                timeout=SMTP_TIMEOUT,
                start_tls=False,
            ) as smtp:
                for item in due:
                    message = await in_thread(self.compose, item, settings)
                    await smtp.send_message(message)
                    await in_thread(self._sent, item)
                    sent += 1
        except (aiosmtplib.SMTPException, OSError) as exc:
            self._paused_until = time.monotonic() + RETRY_AFTER
            log.warning(
                "expiry reminders: the mail relay failed (%s); %d sent, trying again in %.0f s",
                exc,
                sent,
                RETRY_AFTER,
            )
            detail = f"mail relay {settings[SMTP_HOST]}:{settings[SMTP_PORT]}: {exc}"
            await in_thread(
                lambda: self.jobs.record_event(
                    SYSTEM, Action.JOB_REMIND, outcome=Outcome.FAILED, detail=detail
                )
            )
        return sent

    def compose(self, item: Due, settings: dict[str, object]) -> EmailMessage:
        job = self.jobs.get(item.job_id)
        minutes = max(1, round((item.expires - self.jobs.clock()).total_seconds() / 60))
        default, per_queue = self.jobs.hold_timeouts()
        extra = per_queue.get(job.queue, default)
        title = item.title or f"job {item.job_id}"
        msg = EmailMessage()
        msg["From"] = str(settings[SMTP_FROM])
        msg["To"] = item.email
        msg["Subject"] = f"Your print job expires in {minutes} minutes: {title}"[:200]
        lines = [
            f"Hello {item.owner},",
            "",
            f'your print job "{title}" (queue {item.queue}) is waiting for you, and will be',
            f"deleted at {item.expires:%Y-%m-%d %H:%M} UTC, in about {minutes} minutes, unless",
            "you release it at a printer's release station before then.",
        ]
        base = str(settings[PUBLIC_URL]).rstrip("/")
        if base:
            lines += [
                "",
                f"To keep it {extra} minutes longer (once), open:",
                f"{base}/hold/extend/{link_token(self.key, job)}",
            ]
        lines += ["", "-- spoolvault secure printing"]
        msg.set_content("\n".join(lines))
        return msg

    def _sent(self, item: Due) -> None:
        with self.jobs.db.session() as s:
            s.execute(
                update(Job)
                .where(Job.id == item.job_id, Job.reminder_sent_at.is_(None))
                .values(reminder_sent_at=self.jobs.clock())
            )
        self.jobs.record_event(
            SYSTEM,
            Action.JOB_REMIND,
            job_id=item.job_id,
            detail=f"reminder mailed to {item.owner}; expires {item.expires.isoformat()}",
        )
