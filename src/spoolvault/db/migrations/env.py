"""Alembic environment: runs the migrations on the connection spoolvault hands it.

There is no alembic.ini: ``spoolvault.db.alembic_config`` builds the configuration in code
and passes an open connection in ``config.attributes["connection"]``, so migrations run on
the same engine (and the same SQLite PRAGMAs) as the server, inside its transaction.
"""

from __future__ import annotations

from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext

from spoolvault.db.models import Base, UTCDateTime

config = context.config


def _render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    # Revision scripts must not import the models (they change); write the plain type
    # (script.py.mako imports sqlalchemy as sa).
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def run_migrations() -> None:
    """Run the migrations on the connection given by spoolvault (online mode only)."""
    connection = config.attributes.get("connection")
    if connection is None:
        raise RuntimeError(
            "spoolvault migrations run through spoolvault.db (Database.open or "
            "alembic_config(connection)); offline SQL generation is not supported"
        )
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        # SQLite cannot ALTER most things: batch mode copies the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        # SQLite rolls DDL back like any statement; spoolvault runs the whole upgrade in
        # one transaction (BEGIN IMMEDIATE), so a failed migration leaves the old schema.
        transactional_ddl=True,
        compare_type=True,
        render_item=_render_item,
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
