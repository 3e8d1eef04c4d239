"""``spoolvault user``: local users, their cards and PINs, CSV import, LDAP/AD sync and
delegation, whether or not the server runs."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from spoolvault.cli.common import (
    DEFAULT_DATA_DIR,
    DatabaseOpt,
    DataDirOpt,
    actor,
    err,
    fail,
    open_database,
    out,
)
from spoolvault.errors import OperatorError, SpoolvaultError

if TYPE_CHECKING:
    from spoolvault.audit import Action
    from spoolvault.config import DataDir
    from spoolvault.db import Database
    from spoolvault.identity import Users

user_app = typer.Typer(
    help="Users: add, list, cards, PINs, CSV import, LDAP/AD sync, delegation.",
    no_args_is_help=True,
)


class _OfflineAudit:
    """Where a user verb's audit event goes: recorded by the command itself when no server
    runs, else queued for the running server (`record_offline`); not recorded is an error."""

    def __init__(self, data: DataDir, db: Database) -> None:
        from spoolvault.audit import audit_path

        self.audit_file = audit_path(data.root)
        self.db = db

    def record_event(self, actor: str, action: Action, **details: Any) -> None:
        from spoolvault.audit import record_offline

        record_offline(self.audit_file, self.db, actor, action, **details)


@contextlib.contextmanager
def _users(data_dir: Path, database: str | None) -> Iterator[tuple[Users, _OfflineAudit]]:
    """The data directory's users, with its card secret, and where their changes are
    audited (server running or not)."""
    from spoolvault.identity import Users, open_card_key

    with open_database(data_dir, database) as (data, db):
        yield Users(db, open_card_key(data.root, db)), _OfflineAudit(data, db)


def _update_user(
    data_dir: Path, database: str | None, username: str, field: str, value: str | None
) -> None:
    """Set one credential of a user (None removes it) and record which in the audit log."""
    from spoolvault.admin import actions

    with _users(data_dir, database) as (users, audit):
        actions.change_user(audit, users, actor(), username, {field: value})


def _secret(name: str, confirm: bool = True) -> str:
    """A password or PIN: prompted (hidden) on a terminal, else one line of stdin.

    Never an argument: arguments are visible to every user in the process list.
    """
    if sys.stdin.isatty():
        return str(typer.prompt(name, hide_input=True, confirmation_prompt=confirm))
    line = sys.stdin.readline()
    if not line:
        raise OperatorError(f"expected the {name} on standard input")
    return line.rstrip("\r\n")


def _print_user_done(verb: str, username: str) -> None:
    out.print(f"{verb} user {username}", highlight=False)


@user_app.command("add")
def user_add(
    username: Annotated[str, typer.Argument(help="The user name.")],
    data_dir: DataDirOpt = DEFAULT_DATA_DIR,
    database: DatabaseOpt = None,
    password: Annotated[
        bool, typer.Option("--password", help="Ask for a password (stdin when not a terminal).")
    ] = False,
    pin: Annotated[
        bool, typer.Option("--pin", help="Ask for a PIN (stdin when not a terminal).")
    ] = False,
    card: Annotated[str | None, typer.Option("--card", help="Card number.")] = None,
    id_number: Annotated[str | None, typer.Option("--id-number", help="ID number.")] = None,
    full_name: Annotated[str | None, typer.Option("--full-name")] = None,
    email: Annotated[str | None, typer.Option("--email")] = None,
    group: Annotated[
        list[str] | None, typer.Option("--group", help="A group (repeat for more).")
    ] = None,
    admin: Annotated[bool, typer.Option("--admin", help="Make an administrator.")] = False,
) -> None:
    """Create a local user."""
    from spoolvault.admin import actions

    try:
        fields: dict[str, object] = {}
        if password:
            fields["password"] = _secret("password")
        if pin:
            fields["pin"] = _secret("PIN")
        for name, value in (
            ("card_number", card),
            ("id_number", id_number),
            ("full_name", full_name),
            ("email", email),
        ):
            if value is not None:
                fields[name] = value
        if group:
            fields["groups"] = group
        if admin:
            fields["is_admin"] = True
        with _users(data_dir, database) as (users, audit):
            actions.add_user(audit, users, actor(), username, fields)
    except SpoolvaultError as exc:
        fail(str(exc))
    _print_user_done("added", username)


@user_app.command("list")
def user_list(data_dir: DataDirOpt = DEFAULT_DATA_DIR, database: DatabaseOpt = None) -> None:
    """List users: names, groups, delegates, and which credentials are set (never values)."""
    try:
        with _users(data_dir, database) as (users, _):
            found = users.list()
    except SpoolvaultError as exc:
        fail(str(exc))
    table = Table(
        "user", "full name", "e-mail", "ID", "card", "PIN", "password", "groups",
        "delegates", "source", "state",
    )  # fmt: skip
    for u in found:
        delegates = [*u.delegates, *(f"@{g}" for g in u.delegate_groups)]
        cells = (
            u.username + (" (admin)" if u.is_admin else ""),
            u.full_name or "",
            u.email or "",
            u.id_number or "",
            "yes" if u.has_card else "",
            "yes" if u.has_pin else "",
            "yes" if u.has_password else "",
            ", ".join(u.groups),
            ", ".join(delegates),
            u.source,
            "disabled" if u.disabled else "",
        )
        table.add_row(*(escape(c) for c in cells))
    out.print(table)


@user_app.command("set-card")
def user_set_card(
    username: Annotated[str, typer.Argument(help="The user name.")],
    card: Annotated[
        str | None, typer.Argument(help="The card number; '-' reads it from stdin.")
    ] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Remove the user's card.")] = False,
    data_dir: DataDirOpt = DEFAULT_DATA_DIR,
    database: DatabaseOpt = None,
) -> None:
    """Enroll a card for a user (stored as a keyed hash), or remove it."""
    try:
        if clear == (card is not None):
            raise OperatorError("give a card number, or --clear")
        number = _secret("card number", confirm=False) if card == "-" else card
        _update_user(data_dir, database, username, "card_number", number)
    except SpoolvaultError as exc:
        fail(str(exc))
    _print_user_done("removed the card of" if clear else "enrolled a card for", username)


@user_app.command("set-pin")
def user_set_pin(
    username: Annotated[str, typer.Argument(help="The user name.")],
    clear: Annotated[bool, typer.Option("--clear", help="Remove the user's PIN.")] = False,
    data_dir: DataDirOpt = DEFAULT_DATA_DIR,
    database: DatabaseOpt = None,
) -> None:
    """Set a user's PIN (asked for, or one line of stdin), or remove it."""
    try:
        pin = None if clear else _secret("PIN")
        _update_user(data_dir, database, username, "pin", pin)
    except SpoolvaultError as exc:
        fail(str(exc))
    _print_user_done("removed the PIN of" if clear else "set the PIN of", username)


@user_app.command("import")
def user_import(
    file: Annotated[Path, typer.Argument(help="CSV with a header line (docs/identity.md).")],
    data_dir: DataDirOpt = DEFAULT_DATA_DIR,
    database: DatabaseOpt = None,
    update: Annotated[
        bool, typer.Option("--update", help="Update users that exist instead of refusing.")
    ] = False,
) -> None:
    """Import users from CSV: every line checked first; on any error nothing is imported."""
    from spoolvault.admin import actions

    try:
        with _users(data_dir, database) as (users, audit):
            result = actions.import_users(audit, users, actor(), file, update=update)
    except SpoolvaultError as exc:
        fail(str(exc), code=1)
    out.print(
        f"imported {file}: {len(result.added)} added, {len(result.updated)} updated",
        highlight=False,
    )


@user_app.command("ldap-sync")
def user_ldap_sync(
    url: Annotated[
        str | None,
        typer.Option(
            "--url", help="ldap://host[:389] or ldaps://host[:636]; default: setting ldap_url."
        ),
    ] = None,
    base_dn: Annotated[
        str | None,
        typer.Option("--base-dn", help="Where the users are; default: setting ldap_base_dn."),
    ] = None,
    data_dir: DataDirOpt = DEFAULT_DATA_DIR,
    database: DatabaseOpt = None,
    bind_dn: Annotated[
        str | None,
        typer.Option("--bind-dn", help="Bind DN; its password from $SPOOLVAULT_LDAP_PASSWORD."),
    ] = None,
    active_directory: Annotated[
        bool, typer.Option("--ad", help="Active Directory defaults (sAMAccountName, ...).")
    ] = False,
    start_tls: Annotated[bool, typer.Option("--start-tls", help="StartTLS, then bind.")] = False,
    card_attribute: Annotated[
        str | None, typer.Option("--card-attribute", help="The attribute with the card number.")
    ] = None,
    id_attribute: Annotated[
        str | None, typer.Option("--id-attribute", help="The attribute with the ID number.")
    ] = None,
    user_filter: Annotated[str | None, typer.Option("--user-filter")] = None,
    username_attribute: Annotated[str | None, typer.Option("--username-attribute")] = None,
    full_name_attribute: Annotated[str | None, typer.Option("--full-name-attribute")] = None,
    email_attribute: Annotated[str | None, typer.Option("--email-attribute")] = None,
    group_base_dn: Annotated[str | None, typer.Option("--group-base-dn")] = None,
    group_filter: Annotated[str | None, typer.Option("--group-filter")] = None,
) -> None:
    """Create, update and disable users, and set directory groups, from LDAP or AD."""
    from spoolvault.admin import actions
    from spoolvault.identity.ldap import LdapConfig, bind_password, config_from_settings

    if url is None or base_dn is None:
        # No flags: the directory connection of the server settings (ldap_*).
        with open_database(data_dir, database) as (_data, db):
            stored = db.get_settings()
        saved = config_from_settings(stored)
        if saved is None:
            fail("no directory: give --url and --base-dn, or set ldap_url and ldap_base_dn")
        url, base_dn = url or saved.url, base_dn or saved.base_dn
        active_directory = active_directory or bool(stored.get("ldap_ad"))
        start_tls = start_tls or saved.start_tls
        bind_dn = bind_dn or saved.bind_dn
        user_filter = user_filter or stored.get("ldap_user_filter") or None
        username_attribute = username_attribute or stored.get("ldap_username_attribute") or None
    options: dict[str, Any] = {
        "bind_dn": bind_dn,
        "bind_password": bind_password(),
        "start_tls": start_tls,
        "card_attribute": card_attribute,
        "id_number_attribute": id_attribute,
        "user_filter": user_filter,
        "username_attribute": username_attribute,
        "full_name_attribute": full_name_attribute,
        "email_attribute": email_attribute,
        "group_base_dn": group_base_dn,
        "group_filter": group_filter,
    }
    given = {k: v for k, v in options.items() if v is not None}
    cfg = (
        LdapConfig.active_directory(url, base_dn, **given)
        if active_directory
        else LdapConfig(url=url, base_dn=base_dn, **given)
    )
    try:
        with _users(data_dir, database) as (users, audit):
            result = actions.sync_directory(audit, users, actor(), cfg)
    except SpoolvaultError as exc:
        fail(str(exc))
    for line in result.skipped:
        err.print(f"skipped: {escape(line)}", highlight=False)
    out.print(f"synced {url}: {result.summary()}", highlight=False)


@user_app.command("delegate")
def user_delegate(
    owner: Annotated[str, typer.Argument(help="The user whose jobs others may release.")],
    to: Annotated[list[str] | None, typer.Option("--to", help="A user (repeat for more).")] = None,
    group: Annotated[
        list[str] | None, typer.Option("--group", help="A group (repeat for more).")
    ] = None,
    data_dir: DataDirOpt = DEFAULT_DATA_DIR,
    database: DatabaseOpt = None,
) -> None:
    """Let exactly these users and groups release OWNER's jobs (none given: nobody)."""
    from spoolvault.admin import actions

    try:
        with _users(data_dir, database) as (users, audit):
            info = actions.set_delegates(
                audit, users, actor(), owner, to or [], group or [], name_them=False
            )
    except SpoolvaultError as exc:
        fail(str(exc))
    who = [*info.delegates, *(f"group {g}" for g in info.delegate_groups)]
    out.print(
        f"{owner}'s jobs may be released by: {', '.join(who) or 'only ' + owner}",
        highlight=False,
    )
