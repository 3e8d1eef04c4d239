"""Document formats: the format detected from a job's bytes, the formats a printer takes.

Revision ID: 0005_formats
Revises: 0003_multi
Create Date: 2026-12-08
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_formats"
down_revision: str | None = "0003_multi"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("detected_format", sa.String(length=64), nullable=True))
    op.add_column("printers", sa.Column("document_formats", sa.String(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("printers") as batch:
        batch.drop_column("document_formats")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("detected_format")
