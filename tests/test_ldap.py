"""Directory sync against a real OpenLDAP slapd that the test starts on an ephemeral port."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import ldap3
import pytest

from harness.server import spoolvault
from harness.slapd import ROOT_DN, ROOT_PW, SUFFIX, Slapd, start_slapd
from spoolvault.db import Database, database_url
from spoolvault.errors import AuthenticationFailed
from spoolvault.identity import CardKey, IdentityService, open_card_key
from spoolvault.identity.ldap import LdapConfig, LdapSyncError, sync
from spoolvault.runtime import Runtime

PEOPLE = f"ou=people,{SUFFIX}"
GROUPS = f"ou=groups,{SUFFIX}"


def person(uid: str | None, cn: str, **extra: str) -> tuple[str, dict[str, object]]:
    rdn = f"uid={uid}" if uid else f"cn={cn}"
    attrs: dict[str, object] = {"cn": cn, "sn": cn.split()[-1], **extra}
    if uid:
        attrs["uid"] = uid
    return f"{rdn},{PEOPLE}", attrs


@pytest.fixture
def directory(tmp_path: Path) -> Iterator[Slapd]:
    server = start_slapd(tmp_path / "slapd")
    try:
        c = server.connect()
        assert c.add(SUFFIX, ["dcObject", "organization"], {"o": "Example", "dc": "example"})
        for ou in (PEOPLE, GROUPS):
            assert c.add(ou, ["organizationalUnit"])
        for dn, attrs in (
            person(
                "alice",
                "Alice Liddell",
                mail="alice@example.org",
                employeeNumber="card-a1",
                employeeType="E1001",
            ),
            person("bob", "Bob Builder", mail="bob@example.org"),
            person("carol", "Carol Shared", employeeNumber="SHARED-9"),
            person("dave", "Dave Shared", employeeNumber="SHARED-9"),
            person("mallory", "Mallory Local"),
            person(None, "No Uid"),
        ):
            assert c.add(dn, ["inetOrgPerson"], attrs), c.result
        assert c.add(
            f"cn=printing,{GROUPS}",
            ["groupOfNames"],
            {"member": [f"uid=alice,{PEOPLE}", f"uid=bob,{PEOPLE}", f"uid=ghost,{PEOPLE}"]},
        )
        assert c.add(
            f"cn=staff,{GROUPS}", ["posixGroup"], {"gidNumber": "500", "memberUid": ["carol"]}
        )
        c.unbind()
        yield server
    finally:
        server.stop()


def config(server: Slapd, **overrides: object) -> LdapConfig:
    values: dict[str, object] = {
        "url": server.url,
        "base_dn": PEOPLE,
        "bind_dn": ROOT_DN,
        "bind_password": ROOT_PW,
        "card_attribute": "employeeNumber",
        "id_number_attribute": "employeeType",
        "group_base_dn": GROUPS,
    }
    values.update(overrides)
    return LdapConfig(**values)  # type: ignore[arg-type]


def test_sync_creates_updates_and_disables_users_and_groups(
    directory: Slapd, tmp_path: Path
) -> None:
    with Database.open(database_url(None, tmp_path / "spoolvault.db")) as db:
        ident = IdentityService(db, CardKey.generate())
        ident.users.add("mallory", {"password": "local-password"})
        result = sync(ident.users, config(directory))
        assert sorted(result.added) == ["alice", "bob", "carol", "dave"]
        assert result.groups == ["printing", "staff"]
        skipped = "\n".join(result.skipped)
        assert "local user named 'mallory' exists; not taken over" in skipped
        assert "cn=No Uid" in skipped and "no uid" in skipped
        assert skipped.count("card not synced: shared with another entry") == 2
        assert "SHARED-9" not in skipped and "card-a1" not in skipped

        alice = ident.users.info("alice")
        assert (alice.full_name, alice.email, alice.id_number) == (
            "Alice Liddell",
            "alice@example.org",
            "E1001",
        )
        assert alice.source == "ldap" and alice.has_card and not alice.has_password
        assert alice.groups == ["printing"]
        assert ident.users.info("carol").groups == ["staff"]
        assert not ident.users.info("carol").has_card
        assert ident.users.info("mallory").source == "local"
        assert ident.login_card("CARD-A1", None, station="t") == "alice"

        # Delegation to a directory group; an administrator sets a PIN for a synced user.
        ident.users.set_delegates("dave", [], ["printing"])
        ident.users.update("bob", {"pin": "5150"})
        assert ident.may_release("bob", "dave")

        # The directory changes: bob leaves, alice leaves the group and gets a new card.
        c = directory.connect()
        assert c.delete(f"uid=bob,{PEOPLE}")
        assert c.modify(
            f"cn=printing,{GROUPS}",
            {"member": [(ldap3.MODIFY_DELETE, [f"uid=alice,{PEOPLE}"])]},
        )
        assert c.modify(
            f"uid=alice,{PEOPLE}", {"employeeNumber": [(ldap3.MODIFY_REPLACE, ["card-a2"])]}
        )
        c.unbind()
        again = sync(ident.users, config(directory))
        assert again.added == [] and again.disabled == ["bob"] and again.updated == ["alice"]
        assert ident.users.info("bob").disabled
        with pytest.raises(AuthenticationFailed):
            ident.login_card("CARD-A1", None, station="t2")
        assert ident.login_card("card-a2", None, station="t2") == "alice"
        assert ident.users.info("alice").groups == []
        assert not ident.may_release("bob", "dave")  # disabled
        assert ident.users.info("dave").delegate_groups == ["printing"]  # kept

        # A third run changes nothing.
        third = sync(ident.users, config(directory))
        assert (third.added, third.updated, third.disabled) == ([], [], [])


def test_sync_errors_name_the_server_never_the_password(directory: Slapd, tmp_path: Path) -> None:
    with Database.open(database_url(None, tmp_path / "spoolvault.db")) as db:
        users = IdentityService(db, CardKey.generate()).users
        with pytest.raises(LdapSyncError) as failed:
            sync(users, config(directory, bind_password="wrong-secret-77"))
        assert directory.url in str(failed.value) and "wrong-secret-77" not in str(failed.value)
        with pytest.raises(LdapSyncError, match="reading"):
            sync(users, config(directory, base_dn=f"ou=nowhere,{SUFFIX}"))
        assert users.list() == []
        assert "wrong-secret-77" not in repr(config(directory, bind_password="wrong-secret-77"))


def test_ldap_sync_cli(directory: Slapd, tmp_path: Path) -> None:
    data = tmp_path / "data"
    with Runtime.open(data, None, create=True) as rt:
        open_card_key(rt.data.root, rt.db)  # as the server's first start does
    args = [
        *("user", "ldap-sync", "--data-dir", str(data), "--url", directory.url),
        *("--base-dn", PEOPLE, "--bind-dn", ROOT_DN, "--card-attribute", "employeeNumber"),
        *("--group-base-dn", GROUPS),
    ]
    done = spoolvault(*args, env={**os.environ, "SPOOLVAULT_LDAP_PASSWORD": ROOT_PW})
    assert done.returncode == 0, done.stderr
    assert "5 added" in done.stdout and "2 groups" in done.stdout
    assert "not taken over" not in done.stderr  # no local mallory here
    listed = spoolvault("user", "list", "--data-dir", str(data))
    assert listed.returncode == 0 and "Alice Liddell" in listed.stdout
    assert "card-a1" not in listed.stdout
    bad = spoolvault(*args, env={**os.environ, "SPOOLVAULT_LDAP_PASSWORD": "nope-nope"})
    assert bad.returncode == 2 and "cannot bind" in bad.stderr and "nope-nope" not in bad.stderr
