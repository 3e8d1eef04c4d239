"""Database URLs: from ``--database`` (or its absence) to the SQLAlchemy URL we open.

Two backends: the embedded SQLite file in the data directory (the default) and PostgreSQL
through psycopg 3 (``postgresql://`` and Heroku-style ``postgres://`` both mean it). Any
other scheme is refused with a ConfigError that names it. A URL is shown to people only
through ``mask_url``: passwords never reach a log line, an error message or a ``repr``.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from spoolvault.errors import ConfigError

_PG_SCHEMES = frozenset({"postgresql", "postgres", "postgresql+psycopg"})
_SQLITE_SCHEMES = frozenset({"sqlite", "sqlite+pysqlite"})
_EXAMPLE = "postgresql://user:password@host:5432/dbname"


def mask_url(url: str) -> str:
    """``url`` with the password replaced by ``***``; safe to log even if it is malformed."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        # Not a URL we can take apart; it may still hold a secret, so show only its shape.
        return "<unparseable URL>" if "@" in url else url
    end = rest.find("?")
    at = rest.rfind("@", 0, end if end >= 0 else len(rest))
    if at < 0:
        return url
    user, colon, _password = rest[:at].partition(":")
    if not colon:
        return url
    return f"{scheme}://{user}:***@{rest[at + 1 :]}"


def normalize_url(url: str) -> str:
    """Check a user-given database URL and return the SQLAlchemy URL that opens it.

    ``postgresql://`` and ``postgres://`` become ``postgresql+psycopg://`` (psycopg 3 is the
    driver we ship). ``sqlite:///path`` is accepted as is; in-memory SQLite is refused,
    since it would lose every held job on exit.
    """
    if not url.strip():
        raise ConfigError(f"the database URL is empty; give {_EXAMPLE} or leave it out")
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep:
        raise ConfigError(f"database URL {mask_url(url)!r} is not a URL; expected {_EXAMPLE}")
    if scheme in _PG_SCHEMES:
        normalized = f"postgresql+psycopg://{rest}"
    elif scheme in _SQLITE_SCHEMES:
        normalized = f"sqlite://{rest}"
    else:
        driver_hint = (
            " (spoolvault uses the psycopg 3 driver: write postgresql://...)"
            if scheme.startswith("postgres")
            else ""
        )
        raise ConfigError(
            f"unsupported database URL scheme {scheme!r} in {mask_url(url)}{driver_hint}; "
            f"spoolvault supports PostgreSQL ({_EXAMPLE}) and, by default, SQLite in the "
            f"data directory"
        )
    try:
        parsed = make_url(normalized)
    except (ArgumentError, ValueError):
        # SQLAlchemy's message quotes the whole URL, password included: do not pass it on.
        raise ConfigError(f"database URL {mask_url(url)} cannot be parsed") from None
    if parsed.drivername.startswith("sqlite") and parsed.database in (None, "", ":memory:"):
        raise ConfigError(
            f"database URL {mask_url(url)} is an in-memory SQLite database, which would lose "
            f"every job on exit; give a file (sqlite:///path/to/spoolvault.db)"
        )
    return normalized


def database_url(url: str | None, data_dir_db_path: Path) -> str:
    """The SQLAlchemy URL for ``--database``: None means SQLite at ``data_dir_db_path``."""
    if url is None:
        path = data_dir_db_path.expanduser().absolute()
        return URL.create("sqlite", database=str(path)).render_as_string(hide_password=False)
    return normalize_url(url)
