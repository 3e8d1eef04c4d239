"""Identity shared by every app server: lockout counters and release/MFD sessions.

Revision ID: 0006_identity
Revises: 0005_formats
Create Date: 2026-12-08
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_identity"
down_revision: str | None = "0005_formats"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "login_counters",
        sa.Column("key", sa.String(length=320), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("locked_until", sa.Float(), nullable=False),
        sa.Column("last", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_login_counters"),
    )
    op.create_index("ix_login_counters_last", "login_counters", ["last"])
    op.create_table(
        "release_sessions",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("username", sa.String(length=255), nullable=False),
        sa.Column("station", sa.String(length=255), nullable=False),
        sa.Column("device", sa.String(length=255), nullable=True),
        sa.Column("expires", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("token_hash", name="pk_release_sessions"),
    )
    op.create_index("ix_release_sessions_expires", "release_sessions", ["expires"])


def downgrade() -> None:
    op.drop_index("ix_release_sessions_expires", table_name="release_sessions")
    op.drop_table("release_sessions")
    op.drop_index("ix_login_counters_last", table_name="login_counters")
    op.drop_table("login_counters")
