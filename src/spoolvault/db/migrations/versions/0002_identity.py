"""Identity: users' names, ID numbers, cards and PINs; groups, delegation, release devices.

Revision ID: 0002
Revises: 0002_queue_options
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0002_queue_options"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copy of the enum as of this revision.
SOURCES = ("local", "ldap")


def _source(name: str) -> sa.Enum:
    return sa.Enum(*SOURCES, name=name, native_enum=False, create_constraint=True, length=16)


def upgrade() -> None:
    op.create_table(
        "groups",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("source", _source("group_source"), nullable=False),
        sa.Column("external_id", sa.String(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_groups")),
        sa.UniqueConstraint("name", name=op.f("uq_groups_name")),
    )
    op.create_table(
        "delegations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=False),
        sa.Column("delegate_user_id", sa.Integer(), nullable=True),
        sa.Column("delegate_group_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "(delegate_user_id IS NULL) <> (delegate_group_id IS NULL)",
            name=op.f("ck_delegations_one_delegate"),
        ),
        sa.ForeignKeyConstraint(
            ["delegate_group_id"],
            ["groups.id"],
            name=op.f("fk_delegations_delegate_group_id_groups"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["delegate_user_id"],
            ["users.id"],
            name=op.f("fk_delegations_delegate_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["owner_id"],
            ["users.id"],
            name=op.f("fk_delegations_owner_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_delegations")),
    )
    op.create_index("ix_delegations_owner_id", "delegations", ["owner_id"])
    op.create_index("ix_delegations_delegate_user_id", "delegations", ["delegate_user_id"])
    op.create_index("ix_delegations_delegate_group_id", "delegations", ["delegate_group_id"])
    op.create_table(
        "devices",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("printer", sa.String(length=64), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["printer"],
            ["printers.name"],
            name=op.f("fk_devices_printer_printers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_devices")),
        sa.UniqueConstraint("name", name=op.f("uq_devices_name")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_devices_token_hash")),
    )
    op.create_table(
        "group_members",
        sa.Column("group_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["group_id"],
            ["groups.id"],
            name=op.f("fk_group_members_group_id_groups"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_group_members_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("group_id", "user_id", name=op.f("pk_group_members")),
    )
    op.create_index("ix_group_members_user_id", "group_members", ["user_id"])

    # Existing users become local, enabled users without card, PIN or ID number.
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("full_name", sa.String(), nullable=True))
        batch.add_column(sa.Column("email", sa.String(), nullable=True))
        batch.add_column(sa.Column("id_number", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("card_hash", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("pin_hash", sa.String(), nullable=True))
        batch.add_column(
            sa.Column("source", _source("user_source"), server_default="local", nullable=False)
        )
        batch.add_column(sa.Column("external_id", sa.String(), nullable=True))
        batch.add_column(
            sa.Column("disabled", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch.create_unique_constraint(op.f("uq_users_card_hash"), ["card_hash"])
        batch.create_unique_constraint(op.f("uq_users_id_number"), ["id_number"])


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        # SQLite's batch copy keeps the CHECK of a dropped column unless it is dropped too.
        batch.drop_constraint(op.f("ck_users_user_source"), type_="check")
        batch.drop_constraint(op.f("uq_users_id_number"), type_="unique")
        batch.drop_constraint(op.f("uq_users_card_hash"), type_="unique")
        for column in (
            "disabled",
            "external_id",
            "source",
            "pin_hash",
            "card_hash",
            "id_number",
            "email",
            "full_name",
        ):
            batch.drop_column(column)
    op.drop_index("ix_group_members_user_id", table_name="group_members")
    op.drop_table("group_members")
    op.drop_table("devices")
    op.drop_index("ix_delegations_delegate_group_id", table_name="delegations")
    op.drop_index("ix_delegations_delegate_user_id", table_name="delegations")
    op.drop_index("ix_delegations_owner_id", table_name="delegations")
    op.drop_table("delegations")
    op.drop_table("groups")
