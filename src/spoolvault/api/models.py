"""Bodies more than one area of the REST API sends: jobs and delegates."""

# No "from __future__ import annotations": FastAPI and pydantic must see the real annotations.

from datetime import datetime

from pydantic import BaseModel, Field

from spoolvault.db import Job
from spoolvault.settings import HIDDEN_TITLE


class DelegatesIn(BaseModel):
    users: list[str] = Field(default_factory=list, description="User names.")
    groups: list[str] = Field(default_factory=list, description="Group names.")


class DelegatesOut(BaseModel):
    users: list[str]
    groups: list[str]


class JobOut(BaseModel):
    id: int
    owner: str
    title: str
    queue: str
    state: str
    state_reason: str | None
    size: int
    pages: int | None
    encrypted: bool
    created: datetime
    printer: str | None
    pin_protected: bool = Field(False, description="Printed with a job PIN (job-password).")
    provider: str | None = Field(
        None, description="The print provider that holds the job; null: this server."
    )
    available: bool = Field(
        True,
        description="False while the job's provider is unreachable: the job is kept there "
        "and can be released when it is back.",
    )


def job_out(
    job: Job, available: dict[str, bool] | None = None, *, hide_title: bool = False
) -> JobOut:
    """A job as the API shows it; ``available``: provider name -> reachable now."""
    return JobOut(
        id=job.id,
        owner=job.owner,
        title=HIDDEN_TITLE if hide_title and job.title else job.title,
        queue=job.queue,
        state=job.state.value,
        state_reason=job.state_reason,
        size=job.size,
        pages=job.pages,
        encrypted=job.encrypted,
        created=job.created_at,
        printer=job.printer,
        pin_protected=job.pin_hash is not None,
        provider=job.provider,
        available=job.provider is None or bool((available or {}).get(job.provider)),
    )
