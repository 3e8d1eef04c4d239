"""The SQLAlchemy models: the one schema both backends (SQLite, PostgreSQL) share.

The tables are created and changed only by the Alembic migrations in ``migrations/``;
a test checks that the migrations produce exactly this metadata. Change a model, then add
a migration (docs/database.md says how).

Nothing here holds document content: job titles and owners are metadata. Spool files hold
the documents, encrypted or not (docs/spool-format.md). Nor secrets: passwords and PINs are
argon2id hashes, and audit events never name one (docs/audit.md).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    Dialect,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, validates

_SPOOL_NAME_RE = re.compile(r"[0-9a-f]{32}")
_HEX_RE = re.compile(r"[0-9a-f]+")

# Named constraints and indexes: SQLite cannot ALTER a constraint, so Alembic's batch mode
# recreates the table, and it can only drop or rename a constraint it can name.
NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware datetime stored as UTC, read back aware in UTC, on both backends.

    PostgreSQL keeps ``timestamptz``; SQLite has no time zones, so the UTC wall time is
    stored and UTC is attached on the way out. A naive datetime is refused rather than
    guessed at: a local time stored as UTC would expire held jobs hours early or late.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: give a timezone-aware (UTC) datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class JobState(StrEnum):
    """Where a job is in its life. Stored as the value (``"held"``, ...)."""

    INCOMING = "incoming"  # created (IPP Create-Job), its document not yet received
    HELD = "held"  # waiting for its owner at a release station
    RELEASING = "releasing"  # being sent to a printer right now (at-most-once guard)
    PRINTED = "printed"  # the printer accepted it; the spool file is shredded
    CANCELLED = "cancelled"  # by its owner or an administrator; file shredded
    EXPIRED = "expired"  # not released within hold_timeout_minutes; file shredded
    FAILED = "failed"  # delivery or decryption failed; kept, with state_reason, for retry
    ABORTED = "aborted"  # intake never completed (no document in time, client gone)

    @property
    def holds_file(self) -> bool:
        """True while the job's spool file must exist (it has not been shredded)."""
        return self in FILE_STATES


FILE_STATES: frozenset[JobState] = frozenset({JobState.HELD, JobState.RELEASING, JobState.FAILED})


class PrinterMode(StrEnum):
    """How a printer's own queue (``/printers/<name>``) treats jobs."""

    HOLD = "hold"  # held until the owner releases it (the default)
    ADMIN_RELEASE = "admin-release"  # held until an administrator releases it
    DIRECT = "direct"  # no hold: released to the printer as soon as it is spooled


class ServerKind(StrEnum):
    """The role of a server in a multi-server installation."""

    PRIMARY = "primary"
    SITE = "site"


def _str_enum(cls: type[StrEnum], name: str) -> Enum:
    # VARCHAR + CHECK, not a PostgreSQL ENUM type: adding a state later is then an ordinary
    # (batch) migration on both backends, and the values stored are the enum's values.
    return Enum(
        cls,
        name=name,
        native_enum=False,
        length=16,
        create_constraint=True,
        validate_strings=True,
        values_callable=lambda members: [m.value for m in members],
    )


class Base(DeclarativeBase):
    """Declarative base; its ``metadata`` is what the migrations must produce."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Job(Base):
    """A print job. Its ``id`` is the IPP job-id and the REST API's job id."""

    __tablename__ = "jobs"
    __table_args__ = (
        # One user's held jobs at a release station; expiry of old held jobs in one query.
        Index("ix_jobs_owner_state", "owner", "state"),
        Index("ix_jobs_state_created_at", "state", "created_at"),
        # On an application server: the record of a job held on a print provider.
        Index("ix_jobs_provider_provider_job_id", "provider", "provider_job_id", unique=True),
        # AUTOINCREMENT: SQLite would otherwise reuse the id of the newest job once it is
        # deleted, and an old IPP job-id or audit entry would then name a different job.
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    owner: Mapped[str] = mapped_column(String)
    title: Mapped[str] = mapped_column(String, default="")
    queue: Mapped[str] = mapped_column(String)
    state: Mapped[JobState] = mapped_column(_str_enum(JobState, "job_state"), default=JobState.HELD)
    state_reason: Mapped[str | None] = mapped_column(String)
    size: Mapped[int] = mapped_column(BigInteger)  # plaintext bytes
    pages: Mapped[int | None] = mapped_column(Integer)
    encrypted: Mapped[bool]
    key_id: Mapped[str | None] = mapped_column(String)  # hex id of the KEK that wraps its key
    format_version: Mapped[int | None] = mapped_column(Integer)
    # NULL only while the job is INCOMING (no document yet) or ABORTED.
    spool_name: Mapped[str | None] = mapped_column(String(32), unique=True, index=True)
    document_format: Mapped[str] = mapped_column(String, default="application/octet-stream")
    # What its first bytes show (documents/formats.py); NULL for jobs spooled before 0005.
    detected_format: Mapped[str | None] = mapped_column(String(64))
    # argon2id of SHA-256 of the job's PIN (PWG 5100.11 job-password), when it has one.
    pin_hash: Mapped[str | None] = mapped_column(String)
    # The client's own job-hold-until (RFC 8011 §5.2.2); release still needs the owner.
    client_hold: Mapped[str | None] = mapped_column(String)
    # Job template attributes to pass on to the printer at release (JSON object).
    attributes: Mapped[str] = mapped_column(Text, default="[]")
    originating_host: Mapped[str | None] = mapped_column(String)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Where it was (or is being) released, and the job-id the printer gave it.
    printer: Mapped[str | None] = mapped_column(String(64))
    printer_job_id: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    server: Mapped[str] = mapped_column(String, default="primary")
    # Held until at least then (the owner extended the hold once, from a reminder's link).
    hold_extended_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When the owner was told the job is about to expire (one reminder per job).
    reminder_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # NULL: the job and its spool file are on this server. Else the print provider that
    # holds them, and the job's id there: this row is the application server's copy of the
    # provider's record (docs/deployment.md), and the spool file never leaves the provider.
    provider: Mapped[str | None] = mapped_column(String(64))
    provider_job_id: Mapped[int | None] = mapped_column(Integer)

    @validates("state")
    def _check_state(self, key: str, value: Any) -> JobState:
        try:
            return JobState(value)
        except ValueError:
            known = ", ".join(s.value for s in JobState)
            raise ValueError(f"invalid job state {value!r} (one of: {known})") from None

    @validates("spool_name")
    def _check_spool_name(self, key: str, value: str | None) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or not _SPOOL_NAME_RE.fullmatch(value):
            raise ValueError(f"invalid spool file name {value!r} (32 lowercase hex digits)")
        return value

    @validates(
        "created_at", "updated_at", "completed_at", "hold_extended_until", "reminder_sent_at"
    )
    def _check_aware(self, key: str, value: datetime | None) -> datetime | None:
        if value is None and key not in ("created_at", "updated_at"):
            return None
        assert value is not None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"{key} must be a timezone-aware datetime, got {value!r}")
        return value

    @validates("key_id")
    def _check_key_id(self, key: str, value: str | None) -> str | None:
        if value is not None and not _HEX_RE.fullmatch(value):
            raise ValueError(f"invalid key id {value!r} (lowercase hex)")
        return value

    @validates("size")
    def _check_size(self, key: str, value: int) -> int:
        if value < 0:
            raise ValueError(f"job size must not be negative, got {value}")
        return value

    def __repr__(self) -> str:
        return (
            f"Job(id={self.id}, owner={self.owner!r}, state={self.state}, "
            f"encrypted={self.encrypted}, spool_name={self.spool_name})"
        )


class Printer(Base):
    """A printer jobs are released to, with its own queue ``/printers/<name>``."""

    __tablename__ = "printers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    uri: Mapped[str] = mapped_column(String)  # ipp://, ipps://, socket://, lpd://
    mode: Mapped[PrinterMode] = mapped_column(
        _str_enum(PrinterMode, "printer_mode"), default=PrinterMode.HOLD
    )
    block_release_on_error: Mapped[bool] = mapped_column(default=False)
    # Find-Me: a job on a virtual queue can be released at any printer of the queue's group.
    group: Mapped[str] = mapped_column(String(64), default="default")
    snmp_community: Mapped[str | None] = mapped_column(String)  # SNMP health when set
    # Where the SNMP agent answers, when not on the printer URI's host at port 161.
    snmp_host: Mapped[str | None] = mapped_column(String)
    snmp_port: Mapped[int | None] = mapped_column(Integer)
    # Held jobs on this printer's own queue expire after this; NULL: the server's setting.
    hold_timeout_minutes: Mapped[int | None] = mapped_column(Integer)
    # socket:// and lpd://: the formats it takes, comma-separated MIME types; NULL: PostScript
    # and PCL. IPP printers say theirs (document-format-supported); set, it overrides them.
    document_formats: Mapped[str | None] = mapped_column(String)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    def __repr__(self) -> str:
        return f"Printer(name={self.name!r}, uri={self.uri!r}, mode={self.mode})"


class Server(Base):
    """The primary server and each site server; settings are kept per server."""

    __tablename__ = "servers"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[ServerKind] = mapped_column(_str_enum(ServerKind, "server_kind"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    def __repr__(self) -> str:
        return f"Server(name={self.name!r}, kind={self.kind})"


class ServerSetting(Base):
    """One stored setting of one server; unset settings take the default in settings.py."""

    __tablename__ = "server_settings"

    server: Mapped[str] = mapped_column(
        String(64), ForeignKey("servers.name", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)  # JSON

    def __repr__(self) -> str:
        return f"ServerSetting(server={self.server!r}, key={self.key!r}, value={self.value})"


class UserSource(StrEnum):
    """Where a user (or group) comes from: made here, or kept in step with a directory."""

    LOCAL = "local"
    LDAP = "ldap"


class Provider(Base):
    """A print provider registered with the application servers (docs/deployment.md)."""

    __tablename__ = "providers"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    server: Mapped[str] = mapped_column(String(64), ForeignKey("servers.name", ondelete="CASCADE"))
    # SHA-256 of the provider's secret (256 random bits: a slow hash adds nothing).
    secret_hash: Mapped[str] = mapped_column(String(64))
    url: Mapped[str | None] = mapped_column(String)  # where it takes release requests
    status: Mapped[str] = mapped_column(Text, default="{}")  # the last heartbeat (JSON)
    last_seen: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    def __repr__(self) -> str:
        return f"Provider(name={self.name!r}, server={self.server!r}, url={self.url!r})"


class AppInstance(Base):
    """A running application server process; providers accept requests it signs."""

    __tablename__ = "app_instances"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    # Its Ed25519 public key, hex (the private key is in its memory only; servers/signing.py).
    public_key: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    def __repr__(self) -> str:
        return f"AppInstance(id={self.id!r})"


class LoginCounter(Base):
    """Failed logins under one lockout key (identity/lockout.py), shared by every app server.

    Times are wall-clock seconds since the epoch, so that every server reads them alike.
    """

    __tablename__ = "login_counters"

    key: Mapped[str] = mapped_column(String(320), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[float] = mapped_column(Float, default=0.0)
    last: Mapped[float] = mapped_column(Float, index=True)

    def __repr__(self) -> str:
        return f"LoginCounter(key={self.key!r}, failures={self.failures})"


class ReleaseSession(Base):
    """A release or MFD session (identity/sessions.py): the SHA-256 of its token, never it."""

    __tablename__ = "release_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    username: Mapped[str] = mapped_column(String(255))
    station: Mapped[str] = mapped_column(String(255))
    device: Mapped[str | None] = mapped_column(String(255), nullable=True)
    expires: Mapped[float] = mapped_column(Float, index=True)

    def __repr__(self) -> str:
        return f"ReleaseSession(username={self.username!r}, station={self.station!r})"


class User(Base):
    """A person who prints and releases; ``admin`` is created on first start.

    Secrets are never stored as given (docs/identity.md): the password and PIN are argon2id
    hashes; the card number is an HMAC-SHA256 under a server secret kept outside the
    database, so it can be looked up exactly (one indexed equality) yet a stolen database
    or backup alone does not reveal it.
    """

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String, unique=True)
    password_hash: Mapped[str | None] = mapped_column(String)  # argon2id, PHC string
    is_admin: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    full_name: Mapped[str | None] = mapped_column(String)
    email: Mapped[str | None] = mapped_column(String)
    # An ID number typed at a release station with a PIN (employee or student number).
    id_number: Mapped[str | None] = mapped_column(String(64), unique=True)
    card_hash: Mapped[str | None] = mapped_column(String(64), unique=True)  # HMAC-SHA256, hex
    pin_hash: Mapped[str | None] = mapped_column(String)  # argon2id, PHC string
    source: Mapped[UserSource] = mapped_column(
        _str_enum(UserSource, "user_source"), default=UserSource.LOCAL, server_default="local"
    )
    external_id: Mapped[str | None] = mapped_column(String)  # the directory entry's DN
    # Disabled users cannot log in (a directory sync disables users gone from it).
    disabled: Mapped[bool] = mapped_column(default=False, server_default=false())

    def __repr__(self) -> str:
        # Never the hashes: they are offline-guessing targets.
        return f"User(id={self.id}, username={self.username!r}, is_admin={self.is_admin})"


class Group(Base):
    """A named set of users: delegation to a group lets each member release."""

    __tablename__ = "groups"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    source: Mapped[UserSource] = mapped_column(
        _str_enum(UserSource, "group_source"), default=UserSource.LOCAL
    )
    external_id: Mapped[str | None] = mapped_column(String)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    def __repr__(self) -> str:
        return f"Group(id={self.id}, name={self.name!r}, source={self.source})"


class GroupMember(Base):
    """One user in one group."""

    __tablename__ = "group_members"
    __table_args__ = (Index("ix_group_members_user_id", "user_id"),)

    group_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )


class Delegation(Base):
    """``owner`` lets one user, or every member of one group, release the owner's jobs."""

    __tablename__ = "delegations"
    __table_args__ = (
        CheckConstraint(
            "(delegate_user_id IS NULL) <> (delegate_group_id IS NULL)", name="one_delegate"
        ),
        Index("ix_delegations_owner_id", "owner_id"),
        Index("ix_delegations_delegate_user_id", "delegate_user_id"),
        Index("ix_delegations_delegate_group_id", "delegate_group_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner_id: Mapped[int] = mapped_column(Integer, ForeignKey("users.id", ondelete="CASCADE"))
    delegate_user_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("users.id", ondelete="CASCADE")
    )
    delegate_group_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("groups.id", ondelete="CASCADE")
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Device(Base):
    """An MFD release app (or Fast Release terminal), bound to one printer.

    Only the SHA-256 of its token is stored: the token is 256 random bits, so a plain hash
    is as good as a slow one and can be looked up by equality.
    """

    __tablename__ = "devices"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    printer: Mapped[str] = mapped_column(
        String(64), ForeignKey("printers.name", ondelete="CASCADE")
    )
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    def __repr__(self) -> str:
        return f"Device(name={self.name!r}, printer={self.printer!r})"


class AuditEvent(Base):
    """One audit log event; the same event is a line of the hash-chained file (docs/audit.md).

    ``action`` and ``outcome`` are plain strings, not CHECK-constrained enums: the vocabulary
    (``spoolvault.audit.Action``) grows with features, and an old row must stay readable.
    """

    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_job_id", "job_id"),
        Index("ix_audit_events_actor", "actor"),
    )

    # Given by the audit log, not the database: the file line is written (and synced) before
    # the row, and carries the same id.
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(String)  # a user name, or "system"
    action: Mapped[str] = mapped_column(String(32))  # job.submit, job.release, ...
    job_id: Mapped[int | None] = mapped_column(Integer)  # no foreign key: events outlive jobs
    printer: Mapped[str | None] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(16))  # ok, refused, failed
    detail: Mapped[str] = mapped_column(Text, default="")
    prev_hash: Mapped[str] = mapped_column(String(64))  # "prev" in the file
    hash: Mapped[str] = mapped_column(String(64))

    def __repr__(self) -> str:
        return (
            f"AuditEvent(id={self.id}, action={self.action!r}, actor={self.actor!r}, "
            f"job_id={self.job_id}, outcome={self.outcome!r})"
        )
