"""Directory sync: users and groups from LDAP or Active Directory, with ``ldap3``.

``spoolvault user ldap-sync`` reads every user entry under the base DN (paged, so Active
Directory's 1000-entry limit does not cut the list), and every group entry, then in one
transaction:

- creates the directory's users that are new here (``source`` = ``ldap``, no password:
  they log in with their card, or an ID number and PIN, or a password an administrator
  sets), and updates full name, e-mail, card and ID number of those synced before;
- re-enables synced users found again, and disables synced users gone from the directory
  (never deletes them: their jobs and audit history keep their names);
- makes the directory's groups' memberships exactly the directory's (direct members);
  memberships of local groups are left alone;
- never takes over a local user of the same name (reported, skipped).

A card number in the directory (``--card-attribute``, e.g. ``employeeNumber`` or a custom
``cardNumber``) is stored as its HMAC like any other (cardkey.py). A card value shared by
two entries, or already enrolled to a local user, is skipped and reported.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import ldap3
from ldap3.core.exceptions import LDAPBindError, LDAPException, LDAPInvalidCredentialsResult
from ldap3.utils.conv import escape_filter_chars
from sqlalchemy import delete, select

from spoolvault.db import Group, GroupMember, User, UserSource
from spoolvault.errors import DirectoryUnavailable, OperatorError
from spoolvault.identity.users import (
    InvalidIdentity,
    Users,
    check_card,
    check_email,
    check_group,
    check_id_number,
    check_text,
    check_username,
)

log = logging.getLogger(__name__)

OPENLDAP_GROUPS = (
    "(|(objectClass=groupOfNames)(objectClass=groupOfUniqueNames)(objectClass=posixGroup))"
)
PAGE_SIZE = 500


class LdapSyncError(OperatorError):
    """The directory could not be read (unreachable, bind refused, bad base DN or filter)."""


@dataclass(frozen=True)
class LdapConfig:
    """Where the directory is and how its entries map to users. The password is hidden."""

    url: str  # ldap://host[:389] or ldaps://host[:636]
    base_dn: str
    bind_dn: str | None = None
    bind_password: str | None = field(default=None, repr=False)
    start_tls: bool = False
    user_filter: str = "(objectClass=inetOrgPerson)"
    username_attribute: str = "uid"
    full_name_attribute: str = "cn"
    email_attribute: str = "mail"
    card_attribute: str | None = None
    id_number_attribute: str | None = None
    group_base_dn: str | None = None  # default: base_dn
    group_filter: str = OPENLDAP_GROUPS
    group_name_attribute: str = "cn"
    timeout: int = 10

    @classmethod
    def active_directory(cls, url: str, base_dn: str, **overrides: Any) -> LdapConfig:
        """Defaults for Active Directory: sAMAccountName, displayName, groups by member DN."""
        values: dict[str, Any] = {
            "user_filter": "(&(objectCategory=person)(objectClass=user))",
            "username_attribute": "sAMAccountName",
            "full_name_attribute": "displayName",
            "group_filter": "(objectClass=group)",
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(url=url, base_dn=base_dn, **values)


@dataclass
class SyncResult:
    """What a sync changed, and what it skipped (with reasons, never secrets)."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    disabled: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{len(self.added)} added, {len(self.updated)} updated, "
            f"{len(self.disabled)} disabled, {len(self.groups)} groups, "
            f"{len(self.skipped)} skipped"
        )


@dataclass
class _Entry:
    dn: str
    username: str
    full_name: str | None
    email: str | None
    card_hash: str | None
    id_number: str | None


def _first(attributes: dict[str, Any], name: str | None) -> str | None:
    if not name:
        return None
    value = attributes.get(name)
    if value is None:
        # ldap3 keys attributes as the server spells them: match case-insensitively.
        lowered = {k.lower(): v for k, v in attributes.items()}
        value = lowered.get(name.lower())
    if isinstance(value, list | tuple):
        value = value[0] if value else None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _all(attributes: dict[str, Any], name: str) -> list[str]:
    lowered = {k.lower(): v for k, v in attributes.items()}
    value = lowered.get(name.lower(), [])
    values = value if isinstance(value, list | tuple) else [value]
    return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in values]


def _close(conn: ldap3.Connection) -> None:
    """Close the socket of a connection that failed to open (ldap3 leaves it open)."""
    sock = getattr(conn, "socket", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.close()


def _bind(cfg: LdapConfig, dn: str | None, password: str | None) -> ldap3.Connection:
    """A connection to the directory, StartTLS'd when set, bound as ``dn`` (None:
    anonymous). On any failure its socket is closed and the LDAP error raised."""
    server = ldap3.Server(cfg.url, connect_timeout=cfg.timeout, get_info=ldap3.NONE)
    conn = ldap3.Connection(
        server,
        user=dn,
        password=password,
        read_only=True,
        receive_timeout=cfg.timeout,
        raise_exceptions=True,
    )
    try:
        conn.open()
        if cfg.start_tls:
            conn.start_tls()
        conn.bind()
    except LDAPException:
        with contextlib.suppress(LDAPException):
            conn.unbind()  # closes the socket
        _close(conn)
        raise
    return conn


def _connect(cfg: LdapConfig) -> ldap3.Connection:
    """The service account's connection (anonymous without a bind DN)."""
    try:
        return _bind(cfg, cfg.bind_dn, cfg.bind_password)
    except LDAPException as exc:
        # ldap3's messages name the server and the result, never the password.
        who = cfg.bind_dn or "anonymous"
        raise LdapSyncError(f"cannot bind to {cfg.url} as {who}: {exc}") from None


def _search(
    conn: ldap3.Connection, base: str, query: str, attributes: list[str]
) -> Iterator[tuple[str, dict[str, Any]]]:
    for entry in conn.extend.standard.paged_search(
        base,
        query,
        search_scope=ldap3.SUBTREE,
        attributes=attributes,
        paged_size=PAGE_SIZE,
        generator=True,
    ):
        if entry.get("type") == "searchResEntry":
            yield entry["dn"], dict(entry.get("attributes") or {})


def read_directory(
    cfg: LdapConfig, users: Users, result: SyncResult
) -> tuple[list[_Entry], dict[str, set[str]]]:
    """Users and groups (name -> member user names) from the directory."""
    conn = _connect(cfg)
    try:
        wanted = [
            a
            for a in (
                cfg.username_attribute,
                cfg.full_name_attribute,
                cfg.email_attribute,
                cfg.card_attribute,
                cfg.id_number_attribute,
            )
            if a
        ]
        entries: list[_Entry] = []
        for dn, attrs in _search(conn, cfg.base_dn, cfg.user_filter, wanted):
            try:
                entries.append(_entry(cfg, users, dn, attrs, result))
            except InvalidIdentity as exc:
                result.skipped.append(f"{dn}: {exc}")
        members = ["member", "uniqueMember", "memberUid"]
        groups: dict[str, set[str]] = {}
        by_dn = {e.dn.lower(): e.username for e in entries}
        known = {e.username for e in entries}
        for dn, attrs in _search(
            conn,
            cfg.group_base_dn or cfg.base_dn,
            cfg.group_filter,
            [cfg.group_name_attribute, *members],
        ):
            name = _first(attrs, cfg.group_name_attribute)
            try:
                name = check_group(name)
            except InvalidIdentity:
                result.skipped.append(f"{dn}: group without a usable {cfg.group_name_attribute}")
                continue
            names = {by_dn[m.lower()] for m in _all(attrs, "member") if m.lower() in by_dn}
            names |= {by_dn[m.lower()] for m in _all(attrs, "uniqueMember") if m.lower() in by_dn}
            names |= {m for m in _all(attrs, "memberUid") if m in known}
            groups.setdefault(name, set()).update(names)
    except LDAPException as exc:
        raise LdapSyncError(f"reading {cfg.url} under {cfg.base_dn}: {exc}") from None
    finally:
        conn.unbind()
    return entries, groups


def _entry(
    cfg: LdapConfig, users: Users, dn: str, attrs: dict[str, Any], result: SyncResult
) -> _Entry:
    username = _first(attrs, cfg.username_attribute)
    if username is None:
        raise InvalidIdentity(f"no {cfg.username_attribute}")
    check_username(username)
    card_hash = None
    card = _first(attrs, cfg.card_attribute)
    if card is not None:
        try:
            card_hash = users.card_key.card_hash(check_card(card))
        except InvalidIdentity as exc:
            result.skipped.append(f"{dn}: card not synced: {exc}")
    id_number = _first(attrs, cfg.id_number_attribute)
    if id_number is not None:
        try:
            check_id_number(id_number)
        except InvalidIdentity as exc:
            result.skipped.append(f"{dn}: ID number not synced: {exc}")
            id_number = None
    try:
        email = check_email(_first(attrs, cfg.email_attribute))
    except InvalidIdentity:
        email = None
    try:
        full_name = check_text("a full name", _first(attrs, cfg.full_name_attribute))
    except InvalidIdentity:
        full_name = None
    return _Entry(dn, username, full_name, email, card_hash, id_number)


def sync(users: Users, cfg: LdapConfig) -> SyncResult:
    """Read the directory, then apply it in one transaction (see the module docstring)."""
    result = SyncResult()
    entries, groups = read_directory(cfg, users, result)
    _dedupe(entries, "card_hash", "card", result)
    _dedupe(entries, "id_number", "ID number", result)
    with users.db.session() as s:
        stored = {u.username: u for u in s.scalars(select(User))}
        taken_cards = {u.card_hash: u.username for u in stored.values() if u.card_hash is not None}
        taken_ids = {u.id_number: u.username for u in stored.values() if u.id_number is not None}
        synced: dict[str, User] = {}
        for e in entries:
            user = stored.get(e.username)
            if user is not None and user.source != UserSource.LDAP:
                result.skipped.append(
                    f"{e.dn}: a local user named {e.username!r} exists; not taken over"
                )
                continue
            if e.card_hash and taken_cards.get(e.card_hash, e.username) != e.username:
                result.skipped.append(f"{e.dn}: card not synced: enrolled to another user")
                e.card_hash = None
            if e.id_number and taken_ids.get(e.id_number, e.username) != e.username:
                result.skipped.append(f"{e.dn}: ID number not synced: another user's")
                e.id_number = None
            values = {
                "full_name": e.full_name,
                "email": e.email,
                "card_hash": e.card_hash,
                "id_number": e.id_number,
                "external_id": e.dn,
                "disabled": False,
            }
            if user is None:
                user = users.insert(s, e.username, values, source=UserSource.LDAP)
                result.added.append(e.username)
            else:
                changed = any(getattr(user, k) != v for k, v in values.items())
                for key, value in values.items():
                    setattr(user, key, value)
                if changed:
                    result.updated.append(e.username)
            synced[e.username] = user
        s.flush()
        for name, user in stored.items():
            if user.source == UserSource.LDAP and name not in synced and not user.disabled:
                user.disabled = True
                result.disabled.append(name)
        # Directory groups: memberships become exactly the directory's.
        ldap_groups = {
            g.name: g for g in s.scalars(select(Group).where(Group.source == UserSource.LDAP))
        }
        for name, member_names in sorted(groups.items()):
            group = ldap_groups.get(name) or s.scalar(select(Group).where(Group.name == name))
            if group is None:
                group = Users.group(s, name, UserSource.LDAP)
            elif group.source != UserSource.LDAP:
                result.skipped.append(f"group {name!r}: a local group of that name exists")
                continue
            s.execute(delete(GroupMember).where(GroupMember.group_id == group.id))
            for member in sorted(member_names):
                if member in synced:
                    s.add(GroupMember(group_id=group.id, user_id=synced[member].id))
            result.groups.append(name)
        for name, group in ldap_groups.items():
            if name not in groups:  # gone from the directory: empty it, keep delegations
                s.execute(delete(GroupMember).where(GroupMember.group_id == group.id))
    log.info("directory sync from %s: %s", cfg.url, result.summary())
    return result


def _dedupe(entries: list[_Entry], attr: str, what: str, result: SyncResult) -> None:
    """A value two entries share goes to neither (which one is right is not ours to guess)."""
    counts: dict[str, int] = {}
    for e in entries:
        value = getattr(e, attr)
        if value:
            counts[value] = counts.get(value, 0) + 1
    for e in entries:
        if getattr(e, attr) and counts[getattr(e, attr)] > 1:
            result.skipped.append(f"{e.dn}: {what} not synced: shared with another entry")
            setattr(e, attr, None)


# -- login by a bind as the user -------------------------------------------------------

AD_ENABLED = "(!(userAccountControl:1.2.840.113556.1.4.803:=2))"  # AD: not disabled
BIND_PASSWORD_ENV = "SPOOLVAULT_LDAP_PASSWORD"  # noqa: S105 (a variable name)
BIND_PASSWORD_FILE_ENV = "SPOOLVAULT_LDAP_PASSWORD_FILE"  # noqa: S105


def bind_password(env: Mapping[str, str] | None = None) -> str | None:
    """The service account's password: from a file named in the environment, or the
    environment itself; never from the database or a page."""
    env = os.environ if env is None else env
    path = env.get(BIND_PASSWORD_FILE_ENV)
    if path:
        try:
            with open(path, encoding="utf-8") as f:
                return f.read().strip()
        except OSError as exc:
            raise LdapSyncError(f"cannot read the LDAP bind password file {path}: {exc}") from None
    return env.get(BIND_PASSWORD_ENV) or None


def config_from_settings(
    settings: Mapping[str, Any], env: Mapping[str, str] | None = None
) -> LdapConfig | None:
    """The directory connection of the server settings (ldap_*); None when not set."""
    url, base = settings.get("ldap_url") or "", settings.get("ldap_base_dn") or ""
    if not url or not base:
        return None
    overrides: dict[str, Any] = {
        "bind_dn": settings.get("ldap_bind_dn") or None,
        "bind_password": bind_password(env),
        "start_tls": bool(settings.get("ldap_start_tls")),
        "user_filter": settings.get("ldap_user_filter") or None,
        "username_attribute": settings.get("ldap_username_attribute") or None,
    }
    if settings.get("ldap_ad"):
        return LdapConfig.active_directory(url, base, **overrides)
    return LdapConfig(
        url=url, base_dn=base, **{k: v for k, v in overrides.items() if v is not None}
    )


def authenticate(cfg: LdapConfig, username: str, password: str, *, ad: bool = False) -> bool:
    """Whether ``password`` is the directory password of ``username``: search its DN (as the
    service account), then bind as that DN. A deleted or disabled entry, or one no longer
    matched by the user filter, is refused; the directory down raises DirectoryUnavailable.
    """
    if not password:
        return False  # an empty password would be an unauthenticated bind: it "succeeds"
    try:
        conn = _connect(cfg)
    except LdapSyncError as exc:
        raise DirectoryUnavailable(str(exc)) from None
    try:
        who = f"({cfg.username_attribute}={escape_filter_chars(username)})"
        extra = AD_ENABLED if ad or cfg.username_attribute == "sAMAccountName" else ""
        conn.search(
            cfg.base_dn,
            f"(&{cfg.user_filter}{who}{extra})",
            search_scope=ldap3.SUBTREE,
            attributes=[],
            size_limit=2,
        )
        found = [e["dn"] for e in conn.response or [] if e.get("type") == "searchResEntry"]
    except LDAPException as exc:
        raise DirectoryUnavailable(f"search failed: {exc}") from None
    finally:
        with contextlib.suppress(LDAPException):
            conn.unbind()
    if len(found) != 1:
        return False
    try:
        user = _bind(cfg, found[0], password)
    except (LDAPInvalidCredentialsResult, LDAPBindError):
        return False
    except LDAPException as exc:
        raise DirectoryUnavailable(f"bind failed: {exc}") from None
    with contextlib.suppress(LDAPException):
        user.unbind()
    return True
