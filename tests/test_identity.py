"""Identity in process, on a real SQLite database: cards, PINs, logins, lockout, delegation,
sessions, CSV import, the card secret file and the 0001 -> 0002 migration."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select, text

from spoolvault.audit import Action, AuditLog, list_events
from spoolvault.db import Database, User, alembic_config, database_url
from spoolvault.errors import AuthenticationFailed, KeyStoreError, LockedOut
from spoolvault.identity import (
    CardKey,
    IdentityConflict,
    IdentityService,
    InvalidIdentity,
    Lockout,
    SessionStore,
    card_key_path,
    open_card_key,
)
from spoolvault.identity.csvimport import ImportFailed, import_users
from spoolvault.identity.lockout import ACCOUNT, ADDRESS, PAIR, Policy
from test_db import head_revision

CARD = "04A1B2C3D4E5F6"
PIN = "482910"


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    with Database.open(database_url(None, tmp_path / "spoolvault.db")) as database:
        yield database


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def audit(tmp_path: Path, db: Database) -> Iterator[AuditLog]:
    log = AuditLog.open(tmp_path / "audit" / "audit.jsonl", db)
    try:
        yield log
    finally:
        log.close()


@pytest.fixture
def ident(db: Database, clock: Clock, audit: AuditLog) -> IdentityService:
    return IdentityService(db, CardKey.generate(), audit=audit, clock=clock)


def events(db: Database, audit: AuditLog, action: Action) -> list[tuple[str, str, str]]:
    audit.sync()
    return [(e.actor, e.outcome, e.detail) for e in list_events(db, action=action.value)][::-1]


# -- storing ------------------------------------------------------------------------------


def test_card_and_pin_are_stored_hashed_and_card_is_found_exactly(
    ident: IdentityService, db: Database, tmp_path: Path
) -> None:
    info = ident.users.add(
        "alice",
        {"card_number": CARD, "pin": PIN, "full_name": "Alice Liddell", "email": "a@example.org"},
    )
    assert info.has_card and info.has_pin and not info.has_password
    assert info.full_name == "Alice Liddell"
    with db.session(write=False) as s:
        user = s.scalars(select(User)).one()
        assert user.card_hash is not None and len(user.card_hash) == 64
        assert CARD not in user.card_hash and user.pin_hash and PIN not in user.pin_hash
        assert user.pin_hash.startswith("$argon2id$")
        assert "hash" not in repr(user) and CARD not in repr(user)
    # Nothing in the database file holds the card number or the PIN in the clear.
    raw = (tmp_path / "spoolvault.db").read_bytes()
    wal = tmp_path / "spoolvault.db-wal"
    raw += wal.read_bytes() if wal.exists() else b""
    assert CARD.encode() not in raw and CARD.lower().encode() not in raw
    found = ident.users.by_card(" " + CARD.lower() + "\n")  # readers differ in case and blanks
    assert found is not None and found.username == "alice"
    assert ident.users.by_card("04A1B2C3D4E5F7") is None
    # The same card number under another server's secret is another hash.
    assert CardKey.generate().card_hash(CARD) != ident.users.card_key.card_hash(CARD)


def test_bad_fields_are_refused_without_echoing_secrets(ident: IdentityService) -> None:
    for fields, match in [
        ({"pin": "12"}, "PIN is 4 to 16 digits"),
        ({"pin": "12ab"}, "PIN is 4 to 16 digits"),
        ({"password": "short"}, "at least 8"),
        ({"card_number": "has space inside"}, "card number"),
        ({"id_number": "no/slash"}, "ID number"),
        ({"email": "not-an-address"}, "e-mail"),
        ({"groups": ["ok", " padded"]}, "group name"),
        ({"colour": "blue"}, "unknown user field colour"),
    ]:
        with pytest.raises(InvalidIdentity, match=match) as caught:
            ident.users.add("bob", fields)
        for value in fields.values():
            if isinstance(value, str) and len(value) > 3:
                assert value not in str(caught.value) or "colour" in fields
    assert ident.users.list() == []


def test_card_and_id_number_belong_to_one_user(ident: IdentityService) -> None:
    ident.users.add("alice", {"card_number": CARD, "id_number": "E1001"})
    with pytest.raises(IdentityConflict, match="card is already enrolled"):
        ident.users.add("bob", {"card_number": CARD.lower()})
    with pytest.raises(IdentityConflict, match="ID number"):
        ident.users.add("bob", {"id_number": "E1001"})
    ident.users.add("bob", {})
    with pytest.raises(IdentityConflict, match="card"):
        ident.users.update("bob", {"card_number": CARD})
    assert not ident.users.info("bob").has_card
    ident.users.update("alice", {"card_number": None})
    ident.users.update("bob", {"card_number": CARD})
    found = ident.users.by_card(CARD)
    assert found is not None and found.username == "bob"


# -- logins -------------------------------------------------------------------------------


def test_logins_by_password_card_card_and_pin_and_id_number(
    ident: IdentityService, db: Database, audit: AuditLog
) -> None:
    ident.users.add("alice", {"password": "alice-password", "card_number": CARD})
    ident.users.add("bob", {"card_number": "B0B", "pin": PIN, "id_number": "E2002"})
    assert ident.login_password("alice", "alice-password", station="lobby") == "alice"
    assert ident.login_card(CARD, None, station="lobby") == "alice"
    assert ident.login_card("b0b", PIN, station="lobby") == "bob"
    assert ident.login_id_pin("E2002", PIN, station="lobby") == "bob"
    refused = [
        lambda: ident.login_password("alice", "wrong-password", station="lobby"),
        lambda: ident.login_password("nobody", "alice-password", station="lobby"),
        lambda: ident.login_card("B0B", None, station="lobby"),  # bob has a PIN: required
        lambda: ident.login_card("B0B", "000000", station="lobby"),
        lambda: ident.login_card(CARD, PIN, station="lobby"),  # alice has no PIN
        lambda: ident.login_card("UNKNOWN", PIN, station="lobby"),
        lambda: ident.login_id_pin("E2002", "111111", station="lobby"),
        lambda: ident.login_id_pin("E9999", PIN, station="lobby"),
        lambda: ident.login_password("bob", "", station="lobby"),  # no password set
    ]
    messages = set()
    for attempt in refused:
        with pytest.raises(AuthenticationFailed) as caught:
            attempt()
        messages.add(str(caught.value))
    assert messages == {AuthenticationFailed.MESSAGE}  # one answer: no enumeration
    assert db.verify_password("alice", "alice-password")  # IPP and admin logins too
    ident.users.update("alice", {"disabled": True, "is_admin": True})
    with pytest.raises(AuthenticationFailed):
        ident.login_password("alice", "alice-password", station="lobby")
    assert not db.verify_password("alice", "alice-password") and not db.is_admin("alice")
    logged = events(db, audit, Action.AUTH_LOGIN)
    assert [o for _, o, _ in logged] == ["ok"] * 4 + ["refused"] * 10
    assert ("unknown", "refused", "password at lobby: refused") in logged
    text_all = repr(logged)
    for secret in (CARD, "B0B", PIN, "alice-password", "wrong-password", "nobody", "E9999"):
        assert secret not in text_all


def test_pair_lockout_backs_off_exponentially_and_is_checked_first(
    ident: IdentityService, clock: Clock
) -> None:
    ident.users.add("bob", {"card_number": "B0B", "pin": PIN})
    for _ in range(PAIR.threshold - 1):
        with pytest.raises(AuthenticationFailed):
            ident.login_card("B0B", "000000", station="kiosk", client="10.0.0.9")
    with pytest.raises(AuthenticationFailed):  # the 5th failure starts a 30 s lock
        ident.login_card("B0B", "000000", station="kiosk", client="10.0.0.9")
    with pytest.raises(LockedOut) as locked:  # now even the right PIN is not checked
        ident.login_card("B0B", PIN, station="renamed", client="10.0.0.9")
    assert locked.value.retry_after == 30
    # The owner at another address is not locked out by the guesser.
    assert ident.login_card("B0B", PIN, station="kiosk", client="10.0.0.7") == "bob"
    clock.now += 29.5
    with pytest.raises(LockedOut) as locked:
        ident.login_card("B0B", PIN, station="kiosk", client="10.0.0.9")
    assert locked.value.retry_after == 1
    clock.now += 1
    with pytest.raises(AuthenticationFailed):  # lock over; a 6th failure: 60 s
        ident.login_card("B0B", "000000", station="kiosk", client="10.0.0.9")
    with pytest.raises(LockedOut) as locked:
        ident.login_card("B0B", PIN, station="kiosk", client="10.0.0.9")
    assert locked.value.retry_after == 60
    clock.now += 61
    assert ident.login_card("B0B", PIN, station="kiosk", client="10.0.0.9") == "bob"
    assert ident.lockout.failures(Lockout.pair_key("user:bob", "10.0.0.9")) == 0  # cleared
    assert ident.lockout.failures(Lockout.account_key("user:bob")) == 6  # not by one success


def test_many_addresses_on_one_account_slow_it_down_without_a_long_lock(
    ident: IdentityService, clock: Clock
) -> None:
    ident.users.add("alice", {"password": "alice-password"})
    for n in range(ACCOUNT.threshold):  # one failure from each of 25 addresses
        with pytest.raises(AuthenticationFailed):
            ident.login_password("alice", "wrong", station="s", client=f"10.1.0.{n}")
    with pytest.raises(LockedOut) as locked:  # everyone waits a little, the owner too
        ident.login_password("alice", "alice-password", station="s", client="10.9.9.9")
    assert locked.value.retry_after == ACCOUNT.base
    for _ in range(20):  # the backoff doubles, but never past the cap
        clock.now += ACCOUNT.cap + 1  # wait out the last backoff, then fail again
        with pytest.raises(AuthenticationFailed):
            ident.login_password("alice", "wrong", station="s", client=f"10.2.0.{_}")
    with pytest.raises(LockedOut) as locked:
        ident.login_password("alice", "alice-password", station="s", client="10.9.9.9")
    assert locked.value.retry_after == ACCOUNT.cap
    clock.now += ACCOUNT.cap
    assert ident.login_password("alice", "alice-password", station="s", client="10.9.9.9")


def test_unknown_accounts_lock_like_known_ones(ident: IdentityService) -> None:
    ident.users.add("alice", {"password": "alice-password"})
    for name in ("alice", "ghost"):
        for i in range(5):
            with pytest.raises(AuthenticationFailed):
                ident.login_password(name, "wrong-password", station=f"{name}-{i}", client="h")
        with pytest.raises(LockedOut) as locked:
            ident.login_password(name, "wrong-password", station="other", client="h")
        assert locked.value.retry_after == 30


def test_address_lockout_across_many_cards(ident: IdentityService, clock: Clock) -> None:
    ident.users.add("alice", {"card_number": CARD})
    for n in range(ADDRESS.threshold):  # a card-guessing run at one reader
        with pytest.raises(AuthenticationFailed):
            ident.login_card(f"GUESS{n}", None, station="reader-1")
    with pytest.raises(LockedOut):
        ident.login_card(CARD, None, station="reader-1")
    assert ident.login_card(CARD, None, station="reader-2") == "alice"  # other stations work
    clock.now += 31
    assert ident.login_card(CARD, None, station="reader-1") == "alice"


def test_http_basic_check_is_under_the_same_lockout(
    ident: IdentityService, db: Database, audit: AuditLog
) -> None:
    ident.users.add("admin2", {"password": "admin-password", "is_admin": True})
    for _ in range(PAIR.threshold):
        assert ident.check_password("admin2", "nope", client="10.0.0.5") is None
    with pytest.raises(LockedOut):
        ident.check_password("admin2", "admin-password", client="10.0.0.5")
    user = ident.check_password("admin2", "admin-password", client="10.0.0.6")
    assert user is not None and user.username == "admin2"
    logged = events(db, audit, Action.AUTH_LOGIN)
    assert [o for _, o, _ in logged] == ["refused"] * (PAIR.threshold + 1)  # no ok per request


def test_lockout_forgets_old_failures(db: Database, clock: Clock) -> None:
    lockout = Lockout(db, clock, pair=Policy(3, 30.0, 3600.0), forget_after=600)
    key = Lockout.pair_key("user:x", "h")
    lockout.failed([key])
    lockout.failed([key])
    clock.now += 601
    lockout.failed([key])
    lockout.check([key])  # one recent failure only: not locked
    assert lockout.failures(key) == 1
    clock.now += 601
    assert lockout.purge() == 1 and lockout.failures(key) == 0


# -- delegation ---------------------------------------------------------------------------


def test_delegation_to_users_and_groups(ident: IdentityService) -> None:
    for name, groups in [("alice", []), ("bob", []), ("carol", ["assistants"]), ("dave", [])]:
        ident.users.add(name, {"groups": groups})
    assert ident.releasable_owners("bob") == ["bob"]
    assert not ident.may_release("bob", "alice")
    ident.users.set_delegates("alice", ["bob"], ["assistants"])
    assert ident.may_release("bob", "alice") and ident.may_release("carol", "alice")
    assert not ident.may_release("dave", "alice") and not ident.may_release("alice", "bob")
    assert ident.releasable_owners("carol") == ["carol", "alice"]
    ident.users.update("dave", {"groups": ["assistants"]})
    assert ident.may_release("dave", "alice")
    ident.users.update("dave", {"disabled": True})
    assert not ident.may_release("dave", "alice")
    ident.users.set_delegates("alice", [], [])
    assert not ident.may_release("bob", "alice") and ident.releasable_owners("carol") == ["carol"]
    with pytest.raises(InvalidIdentity, match="no user named 'ghost'"):
        ident.users.set_delegates("alice", ["ghost"], [])
    assert ident.may_release("zed", "zed")  # one's own jobs, user record or not


# -- sessions -----------------------------------------------------------------------------


def test_sessions_expire_and_are_bound_to_their_device(db: Database, clock: Clock) -> None:
    store = SessionStore(db, clock, ttl=300)
    web = store.open("alice", station="lobby")
    mfd = store.open("alice", station="device:mfd-1", device="mfd-1")
    s = store.get(web)
    assert s is not None and s.username == "alice"
    assert store.get(mfd) is None  # a device session is no release-station session
    assert store.get(mfd, device="mfd-2") is None
    assert store.get(mfd, device="mfd-1") is not None
    assert web not in repr(store)
    clock.now += 300
    assert store.get(web) is None and store.get(mfd, device="mfd-1") is None


# -- the card secret ----------------------------------------------------------------------


def test_card_secret_file_is_created_0600_and_checked(tmp_path: Path, db: Database) -> None:
    key = open_card_key(tmp_path, db)
    path = card_key_path(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "hidden" in repr(key) and path.read_text().split("\n")[1] not in repr(key)
    again = open_card_key(tmp_path, db)
    assert again.card_hash(CARD) == key.card_hash(CARD)  # the same secret on every start
    path.chmod(0o644)
    with pytest.raises(KeyStoreError, match="chmod 600"):
        open_card_key(tmp_path, db)
    path.chmod(0o600)
    path.write_bytes(b"garbage")
    with pytest.raises(KeyStoreError, match="not a spoolvault card secret"):
        open_card_key(tmp_path, db)
    # Lost while cards are enrolled: an error, never a silent new secret.
    path.unlink()
    IdentityService(db, key).users.add("alice", {"card_number": CARD})
    with pytest.raises(KeyStoreError, match="enroll every card again"):
        open_card_key(tmp_path, db)
    assert not path.exists()


# -- CSV import ---------------------------------------------------------------------------


def test_csv_import_reports_every_bad_line_and_imports_nothing(ident: IdentityService) -> None:
    ident.users.add("existing", {"card_number": "EXIST1"})
    bad = (
        "username,full_name,card_number,pin,id_number,groups,email\n"
        "alice,Alice,C1,1234,E1,staff;print,alice@example.org\n"
        "bob,Bob,C2,12,E2,,\n"  # line 3: bad PIN
        "\n"
        "alice,Alice again,C3,,,,\n"  # line 5: duplicate user name
        "carol,Carol,C1,,,,\n"  # line 6: same card as line 2
        "dave,Dave,,,,,\n"
        'erin,"Erin, the\nsecond",C4,,E1,,\n'  # lines 8-9: same ID as line 2
        "frank,Frank\n"  # line 10: too few fields
        "existing,Again,,,,,\n"  # line 11: exists already (second pass)
    )
    with pytest.raises(ImportFailed) as failed:
        import_users(ident.users, bad)
    errors = failed.value.errors
    assert [e.split(":")[0] for e in errors] == [
        "line 3",
        "line 5",
        "line 6",
        "line 8",
        "line 10",
    ]
    assert "PIN is 4 to 16 digits" in errors[0] and "same card number as line 2" in errors[2]
    assert "C1" not in str(failed.value) and "12," not in str(failed.value)
    assert [u.username for u in ident.users.list()] == ["existing"]

    second = "username,card_number\nnew,C9\nexisting,\nother,exist1\n"
    with pytest.raises(ImportFailed) as failed:
        import_users(ident.users, second)
    assert failed.value.errors == [
        "line 3: a user named 'existing' exists already",
        "line 4: that card is already enrolled to another user",
    ]
    assert [u.username for u in ident.users.list()] == ["existing"]

    good = (
        "\ufeffUsername,Full_Name,Card_Number,PIN,Groups,is_admin\n"
        "alice,Alice,C1,1234,staff;print,\n"
        "bob,,C2,,,true\n"
    )
    result = import_users(ident.users, good)
    assert result.added == ["alice", "bob"]
    alice = ident.users.info("alice")
    assert alice.has_card and alice.has_pin and alice.groups == ["print", "staff"]
    assert ident.users.info("bob").is_admin
    assert ident.login_card("c1", "1234", station="t") == "alice"


def test_csv_header_problems(ident: IdentityService) -> None:
    for text_, match in [
        ("", "header line is required"),
        ("full_name,card\nx,y\n", "unknown column"),
        ("full_name\nx\n", "username is required"),
        ("username,username\nx,y\n", "named twice"),
    ]:
        with pytest.raises(ImportFailed, match=match):
            import_users(ident.users, text_)


# -- migration ----------------------------------------------------------------------------


def test_upgrade_from_0001_keeps_users_and_passwords(tmp_path: Path) -> None:
    from alembic import command

    url = database_url(None, tmp_path / "old.db")
    engine = create_engine(url)
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "0001")
        conn.execute(
            text(
                "INSERT INTO users (username, password_hash, is_admin, created_at) "
                "VALUES ('old', :h, 1, '2026-01-01 00:00:00')"
            ),
            {"h": "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"},
        )
    engine.dispose()
    with Database.open(url) as db:
        assert db.schema_revision() == head_revision()  # through 0002 and any later one
        users = IdentityService(db, CardKey.generate()).users
        old = users.info("old")
        assert old.is_admin and old.has_password and old.source == "local"
        assert not old.disabled and not old.has_card
        users.update("old", {"card_number": CARD, "groups": ["admins"]})
        assert users.info("old").groups == ["admins"]
    os.remove(tmp_path / "old.db")


def test_every_audit_action_is_documented() -> None:
    doc = (Path(__file__).parent.parent / "docs" / "audit.md").read_text()
    missing = [a.value for a in Action if f"`{a.value}`" not in doc]
    assert missing == []


def test_request_bodies_never_show_secrets() -> None:
    from spoolvault.api.release import SessionIn
    from spoolvault.api.users import UserIn, UserPatch
    from spoolvault.identity.devices import NewDevice
    from spoolvault.stations.fast import FastReleaseIn
    from spoolvault.stations.mfd import MfdLogin

    bodies = [
        SessionIn(username="a", password="pw-secret-1", card_number=CARD, pin=PIN),
        UserIn(username="a", password="pw-secret-1", card_number=CARD, pin=PIN),
        UserPatch(password="pw-secret-1", card_number=CARD, pin=PIN),
        MfdLogin(card_number=CARD, pin=PIN, password="pw-secret-1"),
        FastReleaseIn(card_number=CARD),
        NewDevice("d", "p", "svd_secret-token"),
    ]
    for body in bodies:
        for shown in (repr(body), str(body)):
            for secret in ("pw-secret-1", CARD, PIN, "svd_secret-token"):
                assert secret not in shown
