"""print-provider.conf parsing, path resolution and the data directory."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.tmpfs import mounted_tmpfs
from spoolvault.config import (
    CONF_KEYS,
    DataDir,
    default_conf_text,
    parse_conf,
    resolve_dir,
)
from spoolvault.errors import ConfigError
from spoolvault.netaddr import HostPort, parse_hostport

SEED_DRIVE = r"EncryptedSpoolDir=D:\print\encryptedspools"
SEED_UNC = r"EncryptedSpoolDir=\\print-server\encryptedspools"


def test_seed_examples_parse_with_backslashes_kept() -> None:
    drive = parse_conf([SEED_DRIVE])
    unc = parse_conf([SEED_UNC])
    assert drive.raw("EncryptedSpoolDir") == "D:\\print\\encryptedspools"
    assert unc.raw("EncryptedSpoolDir") == "\\\\print-server\\encryptedspools"


def test_seed_examples_are_usable_on_windows(tmp_path: Path) -> None:
    drive = resolve_dir("EncryptedSpoolDir", r"D:\print\encryptedspools", tmp_path, windows=True)
    unc = resolve_dir(
        "EncryptedSpoolDir", r"\\print-server\encryptedspools", tmp_path, windows=True
    )
    # Used exactly as written: not joined to the data dir, backslashes intact.
    assert str(drive) == r"D:\print\encryptedspools"
    assert str(unc) == r"\\print-server\encryptedspools"


def test_unc_path_on_posix_tells_operator_to_mount(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        resolve_dir("EncryptedSpoolDir", r"\\print-server\encryptedspools", tmp_path, windows=False)
    msg = str(exc.value)
    assert "EncryptedSpoolDir" in msg
    assert r"\\print-server\encryptedspools" in msg
    assert "Mount the share" in msg and "mount point" in msg


def test_drive_path_on_posix_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="Windows drive path"):
        resolve_dir("EncryptedSpoolDir", r"D:\print\encryptedspools", tmp_path, windows=False)


def test_comments_blank_lines_whitespace_and_literal_values() -> None:
    conf = parse_conf(
        [
            "# a comment",
            "   # an indented comment",
            "",
            "  SpoolDir =  /var/spool/sv#1  ",
            r"EncryptedSpoolDir=/mnt/share\with\backslashes",
        ]
    )
    assert conf.raw("SpoolDir") == "/var/spool/sv#1"
    assert conf.raw("EncryptedSpoolDir") == "/mnt/share\\with\\backslashes"
    assert conf.warnings == ()


def test_keys_are_case_sensitive_and_unknown_keys_warn(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        conf = parse_conf(["encryptedspooldir=/x", "Colour=blue"], source="p.conf")
    assert conf.raw("EncryptedSpoolDir") == "spool/encrypted"  # the default: key not matched
    assert len(conf.warnings) == 2
    assert "p.conf:1" in conf.warnings[0] and "encryptedspooldir" in conf.warnings[0]
    assert "Colour" in caplog.text


def test_line_without_equals_is_an_error_naming_file_and_line() -> None:
    with pytest.raises(ConfigError, match=r"p\.conf:2: expected key=value"):
        parse_conf(["SpoolDir=/a", "EncryptedSpoolDir /b"], source="p.conf")


def test_empty_value_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="SpoolDir is empty"):
        resolve_dir("SpoolDir", "", tmp_path, windows=False)


def test_defaults_are_documented_in_generated_file() -> None:
    text = default_conf_text()
    parsed = parse_conf(text.splitlines())
    for key in CONF_KEYS:
        assert parsed.raw(key.name) == key.default
        assert key.help in text


def test_every_key_is_documented() -> None:
    doc = (Path(__file__).parents[1] / "docs" / "configuration.md").read_text()
    for key in CONF_KEYS:
        assert f"`{key.name}`" in doc


def test_first_start_creates_private_data_dir(tmp_path: Path) -> None:
    root = tmp_path / "data"
    data = DataDir.open(root)
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert data.conf_path.is_file()
    assert data.encrypted_spool == root / "spool" / "encrypted"
    assert data.plain_spool == root / "spool" / "plain"
    assert data.encrypted_spool.is_dir() and data.plain_spool.is_dir()
    assert stat.S_IMODE(data.encrypted_spool.stat().st_mode) == 0o700


def test_absolute_spool_dirs_from_conf(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    enc, plain = tmp_path / "mnt" / "enc", tmp_path / "var" / "plain"
    (root / "print-provider.conf").write_text(f"EncryptedSpoolDir={enc}\nSpoolDir={plain}\n")
    data = DataDir.open(root)
    assert data.encrypted_spool == enc and enc.is_dir()
    assert data.plain_spool == plain and plain.is_dir()


def test_unusable_spool_dir_names_key_and_path(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    (root / "print-provider.conf").write_text(f"EncryptedSpoolDir={blocker}\n")
    with pytest.raises(ConfigError) as exc:
        DataDir.open(root)
    assert "EncryptedSpoolDir" in str(exc.value) and str(blocker) in str(exc.value)


@pytest.fixture
def readonly_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory this process cannot write to, even as root (a read-only tmpfs)."""
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    if os.geteuid() != 0:
        yield ro
        return
    with mounted_tmpfs(ro, "ro,size=1m") as mounted:
        yield mounted


def test_unwritable_spool_dir_is_a_startup_error(tmp_path: Path, readonly_dir: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    (root / "print-provider.conf").write_text(f"SpoolDir={readonly_dir}\n")
    with pytest.raises(ConfigError, match=r"SpoolDir.*not writable"):
        DataDir.open(root)


def test_same_dir_for_both_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    (root / "print-provider.conf").write_text("EncryptedSpoolDir=spool\nSpoolDir=spool\n")
    with pytest.raises(ConfigError, match="same directory"):
        DataDir.open(root)


def test_existing_data_dir_without_create_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        DataDir.open(tmp_path / "nope", create=False)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:8631", HostPort("127.0.0.1", 8631)),
        ("0.0.0.0:0", HostPort("0.0.0.0", 0)),
        ("[::1]:631", HostPort("::1", 631)),
        ("print.example:9100", HostPort("print.example", 9100)),
    ],
)
def test_hostport_parses(value: str, expected: HostPort) -> None:
    assert parse_hostport(value, "--http") == expected


@pytest.mark.parametrize("value", ["8631", "host:", ":80", "h:99999", "h:x", "::1:80", "[::1]80"])
def test_hostport_rejects_with_option_name(value: str) -> None:
    with pytest.raises(ConfigError, match="--raw"):
        parse_hostport(value, "--raw", allow_off=True)


def test_hostport_off() -> None:
    assert parse_hostport("off", "--lpd", allow_off=True) is None
    with pytest.raises(ConfigError):
        parse_hostport("off", "--http")


def test_instance_id_is_made_once_and_a_damaged_one_is_a_clear_error(tmp_path: Path) -> None:
    first = DataDir.open(tmp_path / "d").instance
    assert DataDir.open(tmp_path / "d").instance == first
    assert DataDir.open(tmp_path / "other").instance != first
    (tmp_path / "d" / "instance-id").write_text("not a uuid\n")
    with pytest.raises(ConfigError, match="does not hold a UUID"):
        DataDir.open(tmp_path / "d")
