"""Per-server settings: the declared table, validation, the exclusion rule, persistence."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spoolvault import settings
from spoolvault.db import Database, ServerSetting, UnknownServer, database_url
from spoolvault.errors import ClientError
from spoolvault.settings import SETTINGS, InvalidSetting, SettingsConflict

REASON = (
    "Print Archiving keeps a readable copy of every printed document for approved "
    "administrators, so it needs unencrypted spool files"
)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "spoolvault.db"


@pytest.fixture
def db(db_path: Path) -> Iterator[Database]:
    with Database.open(database_url(None, db_path)) as database:
        yield database


# -- the table ----------------------------------------------------------------------------


def test_defaults() -> None:
    assert settings.defaults() == {
        "spool_file_encryption": True,
        "print_archiving": False,
        "archive_retention_days": 30,
        "print_archive_viewers": "",
        "hold_timeout_minutes": 240,
        "conversion_memory_mb": 256,
        "conversion_timeout_seconds": 600,
        "hide_document_names": False,
        "redact_document_names_after_days": 0,
        "smtp_host": "",
        "smtp_port": 25,
        "smtp_from": "spoolvault@localhost",
        "expiry_reminder_minutes": 30,
        "public_url": "",
        "ipp_authentication_required": False,
        "release_station_idle_seconds": 60,
        "release_station_card_pin": False,
        "fast_release_require_pin": False,
        "ldap_url": "",
        "ldap_base_dn": "",
        "ldap_bind_dn": "",
        "ldap_user_filter": "",
        "ldap_username_attribute": "",
        "ldap_start_tls": False,
        "ldap_ad": False,
        "monitoring_public": False,
    }


def test_every_setting_is_documented_and_its_default_valid() -> None:
    names = [s.name for s in SETTINGS]
    assert len(names) == len(set(names))
    for setting in SETTINGS:
        assert setting.help.strip(), setting.name
        assert setting.label.strip(), setting.name
        assert setting.check(setting.default) == setting.default
        assert type(setting.default) is setting.type


def test_errors_are_client_errors() -> None:
    assert issubclass(SettingsConflict, ClientError)
    assert issubclass(InvalidSetting, ClientError)
    assert issubclass(UnknownServer, ClientError)


# -- validation ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", [1, 0, "yes", "true", None, 1.0, [True]])
def test_bool_must_be_a_real_bool(value: object) -> None:
    with pytest.raises(InvalidSetting, match="spool_file_encryption must be true or false"):
        settings.validate({"spool_file_encryption": value}, {})


@pytest.mark.parametrize("value", [True, False, "30", 30.0, None, 0, -5, 525_601])
def test_hold_timeout_type_and_range(value: object) -> None:
    with pytest.raises(InvalidSetting, match="hold_timeout_minutes must be"):
        settings.validate({"hold_timeout_minutes": value}, {})


@pytest.mark.parametrize("value", [1, 240, 525_600])
def test_hold_timeout_accepts_its_range(value: int) -> None:
    assert settings.validate({"hold_timeout_minutes": value}, {})["hold_timeout_minutes"] == value


def test_unknown_name_rejected_naming_the_known_ones() -> None:
    with pytest.raises(
        InvalidSetting, match=r"unknown setting 'encryption'.*spool_file_encryption"
    ):
        settings.validate({"encryption": False}, {})


def test_validate_returns_the_full_new_settings() -> None:
    new = settings.validate({"hold_timeout_minutes": 10}, {"spool_file_encryption": False})
    assert new == settings.defaults() | {
        "spool_file_encryption": False,
        "hold_timeout_minutes": 10,
    }


def test_archiving_while_encrypted_is_refused_with_the_reason() -> None:
    with pytest.raises(SettingsConflict) as info:
        settings.validate({"print_archiving": True}, {"spool_file_encryption": True})
    message = str(info.value)
    assert REASON in message
    assert "turn off Spool File Encryption first" in message


def test_encryption_while_archiving_is_refused_with_the_reason() -> None:
    current = {"spool_file_encryption": False, "print_archiving": True}
    with pytest.raises(SettingsConflict) as info:
        settings.validate({"spool_file_encryption": True}, current)
    assert REASON in str(info.value)
    assert "turn off Print Archiving first" in str(info.value)


def test_both_at_once_refused() -> None:
    with pytest.raises(SettingsConflict, match="cannot both be enabled"):
        settings.validate({"spool_file_encryption": True, "print_archiving": True}, {})


def test_switching_from_encryption_to_archiving_in_one_change() -> None:
    new = settings.validate({"spool_file_encryption": False, "print_archiving": True}, {})
    assert (new["spool_file_encryption"], new["print_archiving"]) == (False, True)


@given(
    current=st.fixed_dictionaries(
        {"spool_file_encryption": st.booleans(), "print_archiving": st.booleans()}
    ).filter(lambda d: not (d["spool_file_encryption"] and d["print_archiving"])),
    changes=st.dictionaries(
        st.sampled_from(["spool_file_encryption", "print_archiving"]), st.booleans()
    ),
)
def test_never_both_on(current: dict[str, bool], changes: dict[str, bool]) -> None:
    try:
        new = settings.validate(changes, current)
    except SettingsConflict:
        merged = {**current, **changes}
        assert merged["spool_file_encryption"] and merged["print_archiving"]
    else:
        assert not (new["spool_file_encryption"] and new["print_archiving"])


@pytest.mark.parametrize(
    ("name", "text", "value"),
    [
        ("print_archiving", "on", True),
        ("print_archiving", "FALSE", False),
        ("spool_file_encryption", " yes ", True),
        ("hold_timeout_minutes", "60", 60),
    ],
)
def test_parse_command_line_values(name: str, text: str, value: object) -> None:
    assert settings.get(name).parse(text) == value


@pytest.mark.parametrize(
    ("name", "text"),
    [("print_archiving", "maybe"), ("hold_timeout_minutes", "1h"), ("hold_timeout_minutes", "0")],
)
def test_parse_rejects_bad_values(name: str, text: str) -> None:
    with pytest.raises(InvalidSetting):
        settings.get(name).parse(text)


def test_from_stored_skips_unknown_and_invalid_values() -> None:
    merged = settings.from_stored(
        {"future_setting": 1, "hold_timeout_minutes": "soon", "print_archiving": False}
    )
    assert merged == settings.defaults()


# -- stored per server --------------------------------------------------------------------


def test_database_defaults(db: Database) -> None:
    assert db.get_settings() == settings.defaults()
    assert db.get_settings("primary") == settings.defaults()


def test_update_persists_across_restart(db_path: Path) -> None:
    url = database_url(None, db_path)
    with Database.open(url) as first:
        new = first.update_settings("primary", {"spool_file_encryption": False})
        assert new["spool_file_encryption"] is False
        new = first.update_settings("primary", {"print_archiving": True})
        assert new == settings.defaults() | {
            "spool_file_encryption": False,
            "print_archiving": True,
        }
    with Database.open(url) as second:
        assert second.get_settings("primary") == new


def test_refused_update_stores_nothing(db: Database) -> None:
    with pytest.raises(SettingsConflict, match="needs unencrypted spool files"):
        db.update_settings("primary", {"print_archiving": True})
    with pytest.raises(InvalidSetting):
        db.update_settings("primary", {"hold_timeout_minutes": 15, "print_archiving": 1})
    with pytest.raises(InvalidSetting):
        db.update_settings("primary", {"hold_timeout_minutes": 15, "colour": "red"})
    assert db.get_settings() == settings.defaults()
    with db.session(write=False) as s:
        assert s.query(ServerSetting).count() == 0


def test_unknown_server(db: Database) -> None:
    with pytest.raises(UnknownServer, match="no server named 'nowhere'"):
        db.update_settings("nowhere", {"print_archiving": False})


def test_unknown_stored_setting_is_kept_and_ignored(db: Database) -> None:
    with db.session() as s:
        s.add(ServerSetting(server="primary", key="from_a_newer_release", value="true"))
    assert db.get_settings() == settings.defaults()
    db.update_settings("primary", {"hold_timeout_minutes": 9})
    with db.session(write=False) as s:
        assert s.get(ServerSetting, ("primary", "from_a_newer_release")) is not None


def _race(db: Database, names: tuple[str, str]) -> list[str]:
    """Enable each of ``names`` from its own thread at the same moment; return the outcomes."""
    barrier = threading.Barrier(len(names))
    outcomes: list[str] = []

    def change(name: str) -> None:
        barrier.wait()
        try:
            db.update_settings("primary", {name: True})
            outcomes.append("ok")
        except SettingsConflict:
            outcomes.append("conflict")

    workers = [threading.Thread(target=change, args=(n,)) for n in names]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    return outcomes


def test_concurrent_exclusive_changes_cannot_both_win(db: Database) -> None:
    # One admin enables encryption while another enables archiving: exactly one succeeds.
    for _ in range(5):
        db.update_settings("primary", {"spool_file_encryption": False, "print_archiving": False})
        outcomes = _race(db, ("spool_file_encryption", "print_archiving"))
        assert sorted(outcomes) == ["conflict", "ok"]
        final = db.get_settings()
        assert not (final["spool_file_encryption"] and final["print_archiving"])
