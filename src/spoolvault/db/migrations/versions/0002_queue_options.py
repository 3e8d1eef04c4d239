"""Per-printer SNMP address and hold timeout; hold extensions and expiry reminders on jobs.

Revision ID: 0002_queue_options
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_queue_options"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD COLUMN (nullable, no constraint) works on SQLite without batch mode.
    op.add_column("printers", sa.Column("snmp_host", sa.String(), nullable=True))
    op.add_column("printers", sa.Column("snmp_port", sa.Integer(), nullable=True))
    op.add_column("printers", sa.Column("hold_timeout_minutes", sa.Integer(), nullable=True))
    op.add_column(
        "jobs", sa.Column("hold_extended_until", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column("jobs", sa.Column("reminder_sent_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("reminder_sent_at")
        batch.drop_column("hold_extended_until")
    with op.batch_alter_table("printers") as batch:
        batch.drop_column("hold_timeout_minutes")
        batch.drop_column("snmp_port")
        batch.drop_column("snmp_host")
