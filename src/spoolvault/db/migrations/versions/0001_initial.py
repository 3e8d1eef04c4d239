"""Initial schema: jobs, servers (with the primary server), server settings, users, audit.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the enums as of this revision: a later state needs a new migration.
JOB_STATES = (
    "incoming",
    "held",
    "releasing",
    "printed",
    "cancelled",
    "expired",
    "failed",
    "aborted",
)
SERVER_KINDS = ("primary", "site")
PRINTER_MODES = ("hold", "admin-release", "direct")


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("owner", sa.String(), nullable=False),
        sa.Column("title", sa.String(), nullable=False),
        sa.Column("queue", sa.String(), nullable=False),
        sa.Column(
            "state",
            sa.Enum(
                *JOB_STATES, name="job_state", native_enum=False, create_constraint=True, length=16
            ),
            nullable=False,
        ),
        sa.Column("state_reason", sa.String(), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("pages", sa.Integer(), nullable=True),
        sa.Column("encrypted", sa.Boolean(), nullable=False),
        sa.Column("key_id", sa.String(), nullable=True),
        sa.Column("format_version", sa.Integer(), nullable=True),
        sa.Column("spool_name", sa.String(length=32), nullable=True),
        sa.Column("document_format", sa.String(), nullable=False),
        sa.Column("pin_hash", sa.String(), nullable=True),
        sa.Column("client_hold", sa.String(), nullable=True),
        sa.Column("attributes", sa.Text(), nullable=False),
        sa.Column("originating_host", sa.String(), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("printer", sa.String(length=64), nullable=True),
        sa.Column("printer_job_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("server", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
        # Job ids are IPP job-ids: never reuse one (see models.Job).
        sqlite_autoincrement=True,
    )
    op.create_index("ix_jobs_owner_state", "jobs", ["owner", "state"], unique=False)
    op.create_index("ix_jobs_state_created_at", "jobs", ["state", "created_at"], unique=False)
    op.create_index(op.f("ix_jobs_spool_name"), "jobs", ["spool_name"], unique=True)

    op.create_table(
        "printers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("uri", sa.String(), nullable=False),
        sa.Column(
            "mode",
            sa.Enum(
                *PRINTER_MODES,
                name="printer_mode",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("block_release_on_error", sa.Boolean(), nullable=False),
        sa.Column("group", sa.String(length=64), nullable=False),
        sa.Column("snmp_community", sa.String(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_printers")),
        sa.UniqueConstraint("name", name=op.f("uq_printers_name")),
    )
    servers = op.create_table(
        "servers",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column(
            "kind",
            sa.Enum(
                *SERVER_KINDS,
                name="server_kind",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_servers")),
    )
    op.create_table(
        "server_settings",
        sa.Column("server", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["server"],
            ["servers.name"],
            name=op.f("fk_server_settings_server_servers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("server", "key", name=op.f("pk_server_settings")),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(), nullable=False),
        sa.Column("password_hash", sa.String(), nullable=True),
        sa.Column("is_admin", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("username", name=op.f("uq_users_username")),
    )
    op.create_table(
        "audit_events",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("printer", sa.String(length=64), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
    )
    op.create_index("ix_audit_events_job_id", "audit_events", ["job_id"], unique=False)
    op.create_index("ix_audit_events_actor", "audit_events", ["actor"], unique=False)

    # Every installation has its primary server; its settings start at their defaults
    # (nothing stored). SQLite keeps the UTC wall time, PostgreSQL the aware timestamp.
    now = datetime.now(UTC)
    if op.get_bind().dialect.name == "sqlite":
        now = now.replace(tzinfo=None)
    op.bulk_insert(servers, [{"name": "primary", "kind": "primary", "created_at": now}])


def downgrade() -> None:
    op.drop_index("ix_audit_events_actor", table_name="audit_events")
    op.drop_index("ix_audit_events_job_id", table_name="audit_events")
    op.drop_table("audit_events")
    op.drop_table("printers")
    op.drop_table("users")
    op.drop_table("server_settings")
    op.drop_table("servers")
    op.drop_index(op.f("ix_jobs_spool_name"), table_name="jobs")
    op.drop_index("ix_jobs_state_created_at", table_name="jobs")
    op.drop_index("ix_jobs_owner_state", table_name="jobs")
    op.drop_table("jobs")
