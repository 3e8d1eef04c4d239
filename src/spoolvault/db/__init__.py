"""The database layer: models, migrations, and the ``Database`` the servers use.

See docs/database.md for the backends, URLs, durability choices and tables.
"""

from __future__ import annotations

from spoolvault.db.database import (
    ADMIN_USERNAME,
    PRIMARY_SERVER,
    CommitUnknown,
    Database,
    UnknownServer,
    UserExists,
    alembic_config,
    brief_error,
)
from spoolvault.db.models import (
    FILE_STATES,
    AppInstance,
    AuditEvent,
    Base,
    Delegation,
    Device,
    Group,
    GroupMember,
    Job,
    JobState,
    Printer,
    PrinterMode,
    Provider,
    Server,
    ServerKind,
    ServerSetting,
    User,
    UserSource,
)
from spoolvault.db.url import database_url, mask_url, normalize_url

__all__ = [
    "ADMIN_USERNAME",
    "FILE_STATES",
    "PRIMARY_SERVER",
    "AppInstance",
    "AuditEvent",
    "Base",
    "CommitUnknown",
    "Database",
    "Delegation",
    "Device",
    "Group",
    "GroupMember",
    "Job",
    "JobState",
    "Printer",
    "PrinterMode",
    "Provider",
    "Server",
    "ServerKind",
    "ServerSetting",
    "UnknownServer",
    "User",
    "UserExists",
    "UserSource",
    "alembic_config",
    "brief_error",
    "database_url",
    "mask_url",
    "normalize_url",
]
