"""Multi-server: print providers, application server instances, jobs held on a provider.

Revision ID: 0003_multi
Revises: 0002
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_multi"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "providers",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("server", sa.String(length=64), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("url", sa.String(), nullable=True),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["server"], ["servers.name"], name="fk_providers_server_servers", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("name", name="pk_providers"),
    )
    op.create_table(
        "app_instances",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("public_key", sa.String(length=64), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_app_instances"),
    )
    # Plain ADD COLUMN and CREATE INDEX work on SQLite without batch mode.
    op.add_column("jobs", sa.Column("provider", sa.String(length=64), nullable=True))
    op.add_column("jobs", sa.Column("provider_job_id", sa.Integer(), nullable=True))
    op.create_index(
        "ix_jobs_provider_provider_job_id", "jobs", ["provider", "provider_job_id"], unique=True
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_provider_provider_job_id", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("provider_job_id")
        batch.drop_column("provider")
    op.drop_table("app_instances")
    op.drop_table("providers")
