"""Everything one server (or one CLI command) opens from a data directory, in one place."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from spoolvault.config import DataDir
from spoolvault.db import Database, database_url
from spoolvault.spool.keys import KeyFileProvider, KeyProvider
from spoolvault.spool.store import EncryptedSpool, PlainSpool, SpoolStore


@dataclass
class Runtime:
    """The data directory, its keys, its spool store and the database."""

    data: DataDir
    keys: KeyProvider
    store: SpoolStore
    db: Database
    # What start-up cleaned up after a crash, for the audit log once it is open.
    recovered: list[str] = field(default_factory=list)

    @classmethod
    def open_files(cls, data_dir: Path, *, create: bool) -> tuple[DataDir, KeyProvider, SpoolStore]:
        """Open the data directory, key file and spool store (no database)."""
        data = DataDir.open(data_dir, create=create)
        keys: KeyProvider = (
            KeyFileProvider.open_or_create(data.key_file)
            if create
            else KeyFileProvider(data.key_file)
        )
        store = SpoolStore(
            encrypted=EncryptedSpool(data.encrypted_spool, keys),
            plain=PlainSpool(data.plain_spool),
        )
        return data, keys, store

    @classmethod
    @contextlib.contextmanager
    def open(
        cls, data_dir: Path, database: str | None, *, create: bool = False
    ) -> Iterator[Runtime]:
        """Open everything; ``create`` is for the server's first start."""
        data, keys, store = cls.open_files(data_dir, create=create)
        db = Database.open(database_url(database, data.database))
        try:
            yield cls(data, keys, store, db)
        finally:
            db.close()
