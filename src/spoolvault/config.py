"""print-provider.conf: the print provider's key=value file, and the data directory it lives in.

Format (docs/configuration.md): one ``key=value`` per line; a line whose first non-blank
character is ``#`` is a comment; keys are case-sensitive; values are literal, so backslashes
in Windows paths (``D:\\print\\encryptedspools``, ``\\\\print-server\\encryptedspools``) are
kept as written. Only surrounding whitespace is stripped. An unknown key is a warning, a line
without ``=`` is an error that names the file and line.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PureWindowsPath

from spoolvault.errors import ConfigError
from spoolvault.util.fs import create_exclusive

log = logging.getLogger(__name__)

CONF_NAME = "print-provider.conf"


@dataclass(frozen=True)
class ConfKey:
    """One key of print-provider.conf: its name, default (relative to the data dir), help."""

    name: str
    default: str
    help: str


# Declared once: drives parsing, the generated file and docs/configuration.md.
CONF_KEYS: tuple[ConfKey, ...] = (
    ConfKey(
        "EncryptedSpoolDir",
        "spool/encrypted",
        "Directory for encrypted spool files: a local path or a mounted network share. "
        "Relative paths are relative to the data directory.",
    ),
    ConfKey(
        "SpoolDir",
        "spool/plain",
        "Directory for plain spool files, used while Spool File Encryption is off.",
    ),
    ConfKey(
        "HttpHeaderTimeout",
        "30",
        "Seconds an HTTP/IPP client has to send a whole request line and headers, from "
        "when it connects or starts a request; slower clients are disconnected.",
    ),
    ConfKey(
        "HttpBodyTimeout",
        "300",
        "Seconds an HTTP/IPP request body may go without a byte before the request is "
        "dropped (and its unfinished job discarded). Generous: a client may stream a "
        "document while its filters are still rendering it.",
    ),
    ConfKey(
        "HttpMaxHeaderBytes",
        "65536",
        "Most bytes of HTTP request line and headers; more gets HTTP 431.",
    ),
    ConfKey(
        "HttpMaxConnections",
        "1000",
        "Concurrent HTTP connections; requests beyond get HTTP 503 (IPP clients retry).",
    ),
    ConfKey(
        "IntakeIdleTimeout",
        "300",
        "Seconds a raw 9100 or LPD connection may stay silent before it is dropped and its "
        "unfinished job discarded.",
    ),
    ConfKey(
        "IntakeMaxConnections",
        "64",
        "Concurrent raw 9100 (and, separately, LPD) connections.",
    ),
    ConfKey(
        "IntakeEvictAfter",
        "2",
        "When raw or LPD connections are at their cap, a new one takes the place of the "
        "slowest connection open this many seconds that is silent as long or trickles "
        "(under 1 KiB/s on average); otherwise the new one is reset.",
    ),
    ConfKey(
        "MaxJobSize",
        "4294967296",
        "Largest document in bytes (0: no limit); a larger one is refused "
        "(IPP client-error-request-entity-too-large, raw reset, LPD negative acknowledgement).",
    ),
    ConfKey(
        "ServerAlias",
        "",
        "More names this server answers to (spaces or commas between; * for any): a "
        "request whose Host header is not an IP address, localhost, this machine's name, "
        "or one of these gets HTTP 400 (DNS rebinding).",
    ),
    # Only for `spoolvault run --role provider` (docs/deployment.md); empty: not set.
    ConfKey(
        "ApplicationServer",
        "",
        "Role provider: the application server's URL, when --app-server is not given.",
    ),
    ConfKey(
        "ProviderName",
        "",
        "Role provider: this provider's name, as registered with 'spoolvault provider add' "
        "(the SPOOLVAULT_PROVIDER_NAME environment variable wins).",
    ),
    ConfKey(
        "ProviderSecret",
        "",
        "Role provider: the secret 'spoolvault provider add' printed (the "
        "SPOOLVAULT_PROVIDER_SECRET environment variable wins; keep this file private).",
    ),
    ConfKey(
        "ProviderURL",
        "",
        "Role provider: the URL application servers reach this provider at; default: the "
        "--http address (set it when listening on 0.0.0.0 or behind NAT).",
    ),
)


@dataclass(frozen=True)
class Limit:
    """A connection or size limit (print-provider.conf): its key, attribute, kind, bounds."""

    key: str
    attr: str
    kind: type[int] | type[float]
    minimum: float


@dataclass(frozen=True)
class Limits:
    """Per-connection timeouts and caps, so no client can hold the server hostage.

    docs/configuration.md and docs/reliability.md; the defaults are the keys' defaults.
    """

    http_header_timeout: float = 30.0
    http_body_timeout: float = 300.0
    http_max_header_bytes: int = 64 * 1024
    http_max_connections: int = 1000
    intake_idle_timeout: float = 300.0
    intake_max_connections: int = 64
    intake_evict_after: float = 2.0
    max_job_size: int = 4 << 30


LIMITS: tuple[Limit, ...] = (
    Limit("HttpHeaderTimeout", "http_header_timeout", float, 0.1),
    Limit("HttpBodyTimeout", "http_body_timeout", float, 0.1),
    Limit("HttpMaxHeaderBytes", "http_max_header_bytes", int, 1024),
    Limit("HttpMaxConnections", "http_max_connections", int, 1),
    Limit("IntakeIdleTimeout", "intake_idle_timeout", float, 0.1),
    Limit("IntakeMaxConnections", "intake_max_connections", int, 1),
    Limit("IntakeEvictAfter", "intake_evict_after", float, 0.0),
    Limit("MaxJobSize", "max_job_size", int, 0),
)

_KNOWN = {k.name: k for k in CONF_KEYS}


def parse_limits(conf: ProviderConf) -> Limits:
    """The limits print-provider.conf sets; ConfigError naming the key for a bad value."""
    values: dict[str, int | float] = {}
    for limit in LIMITS:
        text = conf.raw(limit.key)
        try:
            value = limit.kind(text)
        except ValueError:
            raise ConfigError(
                f"{limit.key}={text} is not a{'n integer' if limit.kind is int else ' number'}"
            ) from None
        if not limit.minimum <= value < float("inf"):  # also refuses nan
            raise ConfigError(f"{limit.key}={text} must be at least {limit.minimum:g}")
        values[limit.attr] = value
    return Limits(**values)  # type: ignore[arg-type]


@dataclass(frozen=True)
class ProviderConf:
    """The parsed file: raw values as written, plus the warnings parsing produced."""

    values: dict[str, str]
    source: str = CONF_NAME
    warnings: tuple[str, ...] = field(default=())

    def raw(self, key: str) -> str:
        """The value as written, or the key's default."""
        return self.values.get(key, _KNOWN[key].default)

    def __repr__(self) -> str:
        shown = {k: ("***" if "Secret" in k else v) for k, v in self.values.items()}
        return f"ProviderConf(values={shown!r}, source={self.source!r})"


def parse_conf(lines: Iterable[str], source: str = CONF_NAME) -> ProviderConf:
    """Parse print-provider.conf lines. Raises ConfigError for a line that is not key=value."""
    values: dict[str, str] = {}
    warnings: list[str] = []
    for lineno, line in enumerate(lines, start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        key, sep, value = stripped.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            raise ConfigError(f"{source}:{lineno}: expected key=value, got {stripped!r}")
        if key not in _KNOWN:
            msg = f"{source}:{lineno}: unknown key {key!r} ignored (known: {', '.join(_KNOWN)})"
            log.warning(msg)
            warnings.append(msg)
        if key in values:
            warnings.append(f"{source}:{lineno}: {key} given again; the last value wins")
        values[key] = value
    return ProviderConf(values=values, source=source, warnings=tuple(warnings))


def load_conf(path: Path) -> ProviderConf:
    """Read and parse a print-provider.conf file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text: {exc}") from exc
    return parse_conf(text.splitlines(), source=str(path))


def _is_unc(value: str) -> bool:
    return value.startswith(("\\\\", "//")) and len(value) > 2 and value[2] not in "\\/"


def resolve_dir(key: str, value: str, base: Path, *, windows: bool | None = None) -> Path:
    """Turn a configured directory into a path usable on this host.

    On Windows, drive and UNC paths are used as written. Elsewhere a UNC path cannot be
    opened directly: the share must be mounted and its mount point given instead.
    """
    windows = os.name == "nt" if windows is None else windows
    if not value:
        raise ConfigError(f"{key} is empty; give a directory or remove the line for the default")
    if windows:
        return Path(value) if PureWindowsPath(value).is_absolute() else base / value
    if _is_unc(value):
        raise ConfigError(
            f"{key}={value} is a Windows network (UNC) path, which this host cannot open "
            f"directly. Mount the share (for example with mount.cifs or NFS) and set {key} "
            f"to its mount point, e.g. {key}=/mnt/encryptedspools"
        )
    if PureWindowsPath(value).drive:
        raise ConfigError(
            f"{key}={value} is a Windows drive path; on this host give a POSIX directory "
            f"such as {key}=/var/spool/spoolvault/encrypted"
        )
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def make_private(what: str, path: Path, mode: int = 0o700) -> None:
    """Tighten a directory (0700) or file (0600) that group or others may read, saying so
    in the log; refuse to start (ConfigError) if it cannot be tightened."""
    st = path.stat()
    if not st.st_mode & 0o077:
        return
    try:
        path.chmod(mode)
    except OSError as exc:
        raise ConfigError(
            f"{what} {path} is readable by group or others (mode {st.st_mode & 0o777:o}) "
            f"and cannot be made {mode:o}: {exc.strerror or exc}"
        ) from exc
    log.warning(
        "%s %s was readable by group or others (mode %o): made %o",
        what,
        path,
        st.st_mode & 0o777,
        mode,
    )


def ensure_dir(key: str, path: Path, mode: int = 0o700) -> Path:
    """Create ``path`` if needed and prove it is a writable directory, or raise ConfigError."""
    try:
        # Missing parents get ``mode`` too (mkdir(parents=True) would make them 0755).
        for parent in reversed([p for p in path.absolute().parents if not p.exists()]):
            parent.mkdir(mode=mode, exist_ok=True)
        path.mkdir(mode=mode, exist_ok=True)
    except FileExistsError as exc:
        raise ConfigError(f"{key}={path} exists and is not a directory") from exc
    except OSError as exc:
        raise ConfigError(f"{key}={path} cannot be created: {exc.strerror}") from exc
    if not path.is_dir():
        raise ConfigError(f"{key}={path} is not a directory")
    try:
        with tempfile.TemporaryFile(dir=path, prefix=".probe-"):
            pass
    except OSError as exc:
        raise ConfigError(f"{key}={path} is not writable: {exc.strerror}") from exc
    return path


def default_conf_text() -> str:
    """The print-provider.conf written on first start: every key, commented, with its default."""
    out = [
        "# spoolvault print provider configuration: key=value, '#' starts a comment line.",
        "# Values are literal (backslashes are kept). Relative paths are relative to the",
        "# data directory. See docs/configuration.md.",
        "",
    ]
    for key in CONF_KEYS:
        out.append(f"# {key.help}")
        # A key without a default is written commented out: an empty value means "not set".
        out.append(f"{key.name}={key.default}" if key.default else f"#{key.name}=")
        out.append("")
    return "\n".join(out)


@dataclass(frozen=True)
class DataDir:
    """The server's data directory and the paths inside it, created on first start."""

    root: Path
    encrypted_spool: Path
    plain_spool: Path
    conf: ProviderConf
    limits: Limits = field(default_factory=Limits)
    # This installation's identity: its queues' printer-uuid derive from it (instance_id).
    instance: uuid.UUID = field(default_factory=uuid.uuid4)

    @property
    def key_file(self) -> Path:
        return self.root / "keys.json"

    @property
    def database(self) -> Path:
        return self.root / "spoolvault.db"

    @property
    def conf_path(self) -> Path:
        return self.root / CONF_NAME

    @classmethod
    def open(cls, root: Path, *, create: bool = True) -> DataDir:
        """Open (and on first start create, mode 0700) the data directory."""
        root = root.expanduser().absolute()
        if not root.exists():
            if not create:
                raise ConfigError(f"data directory {root} does not exist (start the server once)")
            try:
                root.mkdir(mode=0o700, parents=True)
            except OSError as exc:
                raise ConfigError(f"data directory {root} cannot be created: {exc}") from exc
        elif not root.is_dir():
            raise ConfigError(f"data directory {root} is not a directory")
        if create:
            make_private("data directory", root)
        conf_path = root / CONF_NAME
        if not conf_path.exists():
            if not create:
                raise ConfigError(f"{conf_path} is missing")
            create_exclusive(conf_path, default_conf_text().encode("utf-8"), mode=0o600)
        conf = load_conf(conf_path)
        enc = resolve_dir("EncryptedSpoolDir", conf.raw("EncryptedSpoolDir"), root)
        plain = resolve_dir("SpoolDir", conf.raw("SpoolDir"), root)
        if enc.absolute() == plain.absolute():
            raise ConfigError(
                f"EncryptedSpoolDir and SpoolDir are the same directory ({enc}); "
                f"they must differ so plain and encrypted files never mix"
            )
        encrypted_spool = ensure_dir("EncryptedSpoolDir", enc)
        plain_spool = ensure_dir("SpoolDir", plain)
        if create:
            for key, spool in (("EncryptedSpoolDir", encrypted_spool), ("SpoolDir", plain_spool)):
                make_private(key, spool)
                # mkdir(parents=True) made any directory between with the default mode.
                for parent in spool.absolute().parents:
                    if parent == root or root not in parent.parents:
                        break
                    make_private(key, parent)
            for path in (conf_path, root / INSTANCE_NAME):
                with contextlib.suppress(FileNotFoundError):
                    make_private(path.name, path, mode=0o600)
        return cls(
            root=root,
            encrypted_spool=encrypted_spool,
            plain_spool=plain_spool,
            conf=conf,
            limits=parse_limits(conf),
            instance=instance_id(root, create=create),
        )


INSTANCE_NAME = "instance-id"


def instance_id(root: Path, *, create: bool) -> uuid.UUID:
    """The data directory's random identity (file ``instance-id``), made on first start.

    Every installation's queues must have their own printer-uuid (RFC 8011 §5.4.28 via PWG
    5100.13; DNS-SD's UUID key): clients that find two servers' ``secure`` queues on one
    network tell them apart by it. Without ``create``, a missing file gives an identity
    derived from the directory's path, and nothing is written.
    """
    path = root / INSTANCE_NAME
    if create and not path.exists():
        try:
            if create_exclusive(path, f"{uuid.uuid4()}\n".encode(), mode=0o600):
                log.info("created the instance id %s", path)
        except OSError as exc:
            raise ConfigError(f"cannot create {path}: {exc.strerror or exc}") from exc
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return uuid.uuid5(uuid.NAMESPACE_URL, f"file://{root}")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    try:
        return uuid.UUID(text)
    except ValueError:
        raise ConfigError(
            f"{path} does not hold a UUID; remove it to have a new one made at the next start"
        ) from None
