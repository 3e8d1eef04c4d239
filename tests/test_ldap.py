"""Directory sync against a real OpenLDAP slapd that the test starts on an ephemeral port."""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import ldap3
import pytest

from harness.server import ADMIN, ipp_request, new_request, spoolvault, start_server
from harness.slapd import ROOT_DN, ROOT_PW, SUFFIX, Slapd, start_slapd
from spoolvault.db import Database, database_url
from spoolvault.errors import AuthenticationFailed, DirectoryUnavailable
from spoolvault.identity import CardKey, IdentityService, open_card_key
from spoolvault.identity.ldap import (
    BIND_PASSWORD_FILE_ENV,
    LdapConfig,
    LdapSyncError,
    config_from_settings,
    sync,
)
from spoolvault.ipp.constants import Operation
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


# -- login with the directory password --------------------------------------------------


def test_directory_users_log_in_by_a_bind_as_themselves(directory: Slapd, tmp_path: Path) -> None:
    c = directory.connect()
    alice = f"uid=alice,{PEOPLE}"
    assert c.modify(alice, {"userPassword": [(ldap3.MODIFY_REPLACE, ["dir-pass-1"])]})
    with Database.open(database_url(None, tmp_path / "spoolvault.db")) as db:
        ident = IdentityService(db, CardKey.generate())
        sync(ident.users, config(directory))
        cfg = config(directory)
        ident.directory = lambda: cfg
        assert ident.login_password("alice", "dir-pass-1", station="s", client="a") == "alice"
        user = ident.check_password("alice", "dir-pass-1", client="b")  # HTTP Basic too
        assert user is not None and user.username == "alice"
        for wrong in ("dir-pass-2", ""):
            with pytest.raises(AuthenticationFailed):
                ident.login_password("alice", wrong, station="s", client="c")
        # Changed in the directory: the next login takes the new one, refuses the old.
        assert c.modify(alice, {"userPassword": [(ldap3.MODIFY_REPLACE, ["dir-pass-2"])]})
        with pytest.raises(AuthenticationFailed):
            ident.login_password("alice", "dir-pass-1", station="s", client="d")
        assert ident.login_password("alice", "dir-pass-2", station="s", client="d") == "alice"
        # Gone from the directory (deleted, or out of the user filter): refused at once.
        assert c.delete(alice)
        with pytest.raises(AuthenticationFailed):
            ident.login_password("alice", "dir-pass-2", station="s", client="e")
        # A local user is not sent to the directory.
        ident.users.add("zed", {"password": "local-password"})
        assert ident.login_password("zed", "local-password", station="s", client="f") == "zed"
        # The directory down: 503 "directory unavailable", never a fall-back.
        c.unbind()
        directory.stop()
        with pytest.raises(DirectoryUnavailable, match="directory unavailable") as down:
            ident.login_password("bob", "anything", station="s", client="g")
        assert down.value.http_status == 503
        assert ident.lockout.failures(ident.lockout.pair_key("user:bob", "g")) == 0


def test_directory_settings_and_bind_password_from_a_file(tmp_path: Path) -> None:
    assert config_from_settings({"ldap_url": "", "ldap_base_dn": "dc=x"}) is None
    secret = tmp_path / "bind-password"
    secret.write_text("file-secret-1\n")
    cfg = config_from_settings(
        {"ldap_url": "ldaps://dc.example.org", "ldap_base_dn": "dc=example", "ldap_ad": True},
        {BIND_PASSWORD_FILE_ENV: str(secret)},
    )
    assert cfg is not None and cfg.username_attribute == "sAMAccountName"
    assert cfg.bind_password == "file-secret-1" and "file-secret-1" not in repr(cfg)


def test_directory_login_at_a_running_server_station_admin_pages_and_ipp(
    directory: Slapd, tmp_path: Path
) -> None:
    c = directory.connect()
    alice = f"uid=alice,{PEOPLE}"
    assert c.modify(alice, {"userPassword": [(ldap3.MODIFY_REPLACE, ["dir-pass-1"])]})
    env = {"SPOOLVAULT_ADMIN_PASSWORD": ADMIN[1], "SPOOLVAULT_LDAP_PASSWORD": ROOT_PW}
    srv = start_server(tmp_path / "data", env=env)
    try:
        api = httpx.Client(base_url=srv.url + "/api/v1", auth=ADMIN, timeout=60)
        r = api.patch(
            "/servers/primary/settings",
            json={"ldap_url": directory.url, "ldap_base_dn": PEOPLE, "ldap_bind_dn": ROOT_DN},
        )
        assert r.status_code == 200, r.text
        # ldap-sync without flags: the settings' directory, the password from the env.
        done = spoolvault(
            *("user", "ldap-sync", "--data-dir", str(srv.data_dir)),
            env={**os.environ, "SPOOLVAULT_LDAP_PASSWORD": ROOT_PW},
        )
        assert done.returncode == 0, done.stderr
        assert "added" in done.stdout and directory.url in done.stdout
        assert api.patch("/users/alice", json={"is_admin": True}).status_code == 200

        def station(password: str) -> httpx.Response:
            with httpx.Client(base_url=srv.url + "/api/v1", timeout=60) as anon:
                body = {"username": "alice", "password": password}
                return anon.post("/release/session", json=body)

        def admin_pages(password: str) -> httpx.Response:
            with httpx.Client(base_url=srv.url, timeout=60) as web:
                token = re.search(r'name="csrf" value="([^"]+)"', web.get("/admin/login").text)
                assert token is not None
                form = {"csrf": token.group(1), "username": "alice", "password": password}
                return web.post("/admin/login", data=form)

        def ipp(password: str) -> int:
            basic = base64.b64encode(f"alice:{password}".encode()).decode()
            msg = new_request(Operation.GET_PRINTER_ATTRIBUTES, srv, user="alice")
            status, _ = ipp_request(srv, msg, headers={"Authorization": f"Basic {basic}"})
            return status

        assert station("dir-pass-1").status_code == 200
        assert admin_pages("dir-pass-1").status_code in (302, 303)
        assert ipp("dir-pass-1") == 200
        assert station("wrong-pass").status_code == 401
        assert admin_pages("wrong-pass").status_code == 401
        assert ipp("wrong-pass") == 401
        assert c.modify(alice, {"userPassword": [(ldap3.MODIFY_REPLACE, ["dir-pass-2"])]})
        assert station("dir-pass-1").status_code == 401  # the old one, at the next login
        assert station("dir-pass-2").status_code == 200
        c.unbind()
        directory.stop()
        r = station("dir-pass-2")
        assert r.status_code == 503 and "directory unavailable" in r.json()["detail"]
        r = admin_pages("dir-pass-2")
        assert r.status_code == 503 and "directory unavailable" in r.text
        assert ipp("dir-pass-2") == 503
        api.close()
    finally:
        srv.stop()
