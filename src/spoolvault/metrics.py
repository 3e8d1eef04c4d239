"""Prometheus metrics at ``/metrics`` (docs/operations.md lists them).

Counters move where the audited events happen (``JobService.record_event`` and the
release service), so every audited submit, release, cancel and expiry is counted once;
the gauges (held jobs, bytes held) are read from the database when Prometheus scrapes.
No label ever carries a document name, a user name or a secret: only printer names,
actions, outcomes and states.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from spoolvault.db import Database, Job, JobState

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_GAUGE_STATES = (JobState.INCOMING, JobState.HELD, JobState.RELEASING, JobState.FAILED)


class _DatabaseGauges(Collector):
    """Jobs by state and the bytes waiting, counted by the database at scrape time."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily(
            "spoolvault_jobs", "Jobs not yet finished, by state.", labels=["state"]
        )
        held = GaugeMetricFamily(
            "spoolvault_held_bytes",
            "Document bytes of held and failed jobs, by spool kind.",
            labels=["spool"],
        )
        with self.db.session(write=False) as s:
            counts = dict(
                s.execute(
                    select(Job.state, func.count())
                    .where(Job.state.in_([st.value for st in _GAUGE_STATES]))
                    .group_by(Job.state)
                ).all()
            )
            sizes = dict(
                s.execute(
                    select(Job.encrypted, func.coalesce(func.sum(Job.size), 0))
                    .where(Job.state.in_([JobState.HELD.value, JobState.FAILED.value]))
                    .group_by(Job.encrypted)
                ).all()
            )
        for state in _GAUGE_STATES:
            jobs.add_metric([state.value], float(counts.get(state, 0)))
        held.add_metric(["encrypted"], float(sizes.get(True, 0)))
        held.add_metric(["plain"], float(sizes.get(False, 0)))
        yield jobs
        yield held


class Metrics:
    """One server's metrics, in its own registry (several servers can share a process)."""

    def __init__(self, db: Database | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.events = Counter(
            "spoolvault_events",
            "Audited events: job.submit, job.release, job.expire, job.cancel, ...",
            ["action", "outcome"],
            registry=self.registry,
        )
        self.spooled_bytes = Counter(
            "spoolvault_spooled_bytes",
            "Document bytes received and spooled.",
            ["spool"],
            registry=self.registry,
        )
        self.release_seconds = Histogram(
            "spoolvault_release_seconds",
            "Release calls, from the request to the printer's answer (or the refusal).",
            ["outcome"],
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=self.registry,
        )
        self.printer_errors = Counter(
            "spoolvault_printer_errors",
            "Releases refused because the printer was in error and blocks.",
            ["printer"],
            registry=self.registry,
        )
        if db is not None:
            self.registry.register(_DatabaseGauges(db))

    def event(self, action: str, outcome: str) -> None:
        self.events.labels(action, outcome).inc()

    def spooled(self, size: int, encrypted: bool) -> None:
        self.spooled_bytes.labels("encrypted" if encrypted else "plain").inc(size)

    def exposition(self) -> bytes:
        """The text format Prometheus scrapes."""
        return generate_latest(self.registry)
