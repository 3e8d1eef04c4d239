"""Alembic migrations of the spoolvault schema; run by ``spoolvault.db.Database.open``."""
