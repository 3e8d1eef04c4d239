"""The key-encryption keys: the key file provider, with a real key file on disk.

Key material must never leave the key file: not in a repr, an exception message, a
traceback or a log line. The key file is 0600 and its loader refuses anything looser.
"""

from __future__ import annotations

import base64
import copy
import fcntl
import json
import logging
import os
import stat
import traceback
from pathlib import Path
from typing import Any

import pytest

from spoolvault.errors import KeyStoreError, SpoolDecryptError
from spoolvault.spool import format as fmt
from spoolvault.spool.keys import Kek, KeyFileProvider, KeyInfo
from spoolvault.spool.store import EncryptedSpool, rotate_keys

CS = 4096


def materials(key_file: Path) -> dict[str, bytes]:
    return {
        e["id"]: base64.b64decode(e["material"])
        for e in json.loads(key_file.read_text())["keys"]
        if "material" in e
    }


def spellings(secret: bytes) -> list[str]:
    """The ways a secret could show up in text."""
    return [
        secret.hex(),
        secret.hex().upper(),
        base64.b64encode(secret).decode(),
        base64.urlsafe_b64encode(secret).decode().rstrip("="),
        repr(secret),
    ]


def assert_hidden(text: str, secrets: list[bytes]) -> None:
    for secret in secrets:
        for spelled in spellings(secret):
            assert spelled not in text


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def write(spool: EncryptedSpool, data: bytes) -> str:
    with spool.create() as w:
        w.write(data)
        return w.commit().name


# -- creating and loading the key file -----------------------------------------------------------


def test_create_writes_a_0600_file_with_one_current_key(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    old = os.umask(0)  # whatever the umask, the file is 0600
    try:
        provider = KeyFileProvider.create(path)
    finally:
        os.umask(old)
    assert mode(path) == 0o600
    content = json.loads(path.read_text())
    assert content["format"] == 1
    [entry] = content["keys"]
    assert entry["id"] == content["current"] and len(bytes.fromhex(entry["id"])) == 8
    assert len(base64.b64decode(entry["material"])) == 32
    [info] = provider.list_keys()
    assert (info.id, info.state, info.retired) == (entry["id"], "current", None)
    assert provider.current().id.hex() == entry["id"]
    assert [p.name for p in tmp_path.iterdir()] == ["keys.json"]  # no temp file left


def test_create_refuses_to_overwrite(key_file: Path) -> None:
    before = key_file.read_bytes()
    with pytest.raises(KeyStoreError, match="already exists"):
        KeyFileProvider.create(key_file)
    assert key_file.read_bytes() == before


def test_open_or_create(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    first = KeyFileProvider.open_or_create(path)
    content = path.read_bytes()
    second = KeyFileProvider.open_or_create(path)
    assert path.read_bytes() == content
    assert first.current().id == second.current().id


def test_a_missing_key_file_says_so(tmp_path: Path) -> None:
    provider = KeyFileProvider(tmp_path / "gone.json")
    with pytest.raises(KeyStoreError, match="missing") as exc:
        provider.current()
    assert "gone.json" in str(exc.value)


@pytest.mark.parametrize("loose", [0o644, 0o640, 0o604, 0o660, 0o606, 0o700, 0o601])
def test_a_key_file_readable_by_others_is_refused(key_file: Path, loose: int) -> None:
    key_file.chmod(loose)
    if loose & 0o077 == 0:
        KeyFileProvider(key_file).current()  # 0700: only the owner; accepted
        return
    with pytest.raises(KeyStoreError) as exc:
        KeyFileProvider(key_file).current()
    assert f"chmod 600 {key_file}" in str(exc.value)
    with pytest.raises(KeyStoreError):
        KeyFileProvider.open_or_create(key_file)
    key_file.chmod(0o600)
    KeyFileProvider(key_file).current()


def _valid(key_file: Path) -> dict[str, Any]:
    return json.loads(key_file.read_text())  # type: ignore[no-any-return]


def malformed(key_file: Path, kind: str) -> bytes:
    """The key file's content spoiled in one way (keeping real key material in it)."""
    good = _valid(key_file)
    text = key_file.read_text()
    d = copy.deepcopy(good)
    if kind == "truncated":
        return text[: len(text) // 2 + 20].encode()
    if kind == "trailing garbage":
        return (text + "}").encode()
    if kind == "not utf-8":
        return text.encode() + b"\xff\xfe"
    if kind == "empty":
        return b""
    if kind == "a list":
        return json.dumps([good]).encode()
    if kind == "null":
        return b"null"
    if kind == "no keys":
        del d["keys"]
    elif kind == "keys not a list":
        d["keys"] = {"a": d["keys"][0]}
    elif kind == "key entry not an object":
        d["keys"].append("oops")
    elif kind == "key entry a list":
        d["keys"].append([d["keys"][0]["material"]])
    elif kind == "material not base64":
        d["keys"][0]["material"] = d["keys"][0]["material"][:-4] + "!!!!"
    elif kind == "material too short":
        d["keys"][0]["material"] = base64.b64encode(os.urandom(16)).decode()
    elif kind == "material missing":
        del d["keys"][0]["material"]
    elif kind == "id not hex":
        d["keys"][0]["id"] = "zz" * 8
    elif kind == "id wrong length":
        d["keys"][0]["id"] = "ab" * 4
    elif kind == "current unknown":
        d["current"] = "00" * 8
    elif kind == "current not a string":
        d["current"] = 7
    elif kind == "unknown format":
        d["format"] = 2
    else:
        raise AssertionError(kind)
    return json.dumps(d).encode()


MALFORMED = [
    "truncated",
    "trailing garbage",
    "not utf-8",
    "empty",
    "a list",
    "null",
    "no keys",
    "keys not a list",
    "key entry not an object",
    "key entry a list",
    "material not base64",
    "material too short",
    "material missing",
    "id not hex",
    "id wrong length",
    "current unknown",
    "current not a string",
    "unknown format",
]


@pytest.mark.parametrize("kind", MALFORMED)
def test_a_malformed_key_file_is_a_key_store_error_that_does_not_echo_it(
    key_file: Path, kind: str
) -> None:
    """Bug for "keys not a list", "key entry not an object" and "key entry a list":
    _refresh calls entry.get() on a str or list and lets a bare AttributeError out
    instead of KeyStoreError (AttributeError is missing from the caught exceptions)."""
    secrets = list(materials(key_file).values())
    content = malformed(key_file, kind)
    key_file.write_bytes(content)
    key_file.chmod(0o600)
    with pytest.raises(KeyStoreError) as exc:
        KeyFileProvider(key_file).current()
    message = str(exc.value)
    assert str(key_file) in message
    assert_hidden(message, secrets)
    if len(content) > 12:
        assert content.decode(errors="replace")[:40] not in message
    shown = "".join(traceback.format_exception(exc.value))
    assert_hidden(shown, secrets)


# -- rotation and retirement ---------------------------------------------------------------


def test_rotate_and_retire(keys: KeyFileProvider, key_file: Path) -> None:
    first = keys.current().id.hex()
    info = keys.rotate()
    assert isinstance(info, KeyInfo) and info.state == "current" and info.id != first
    second = keys.rotate().id
    assert [(k.id, k.state) for k in keys.list_keys()] == [
        (second, "current"),
        (info.id, "active"),
        (first, "active"),
    ]
    assert mode(key_file) == 0o600
    assert sorted(p.name for p in key_file.parent.iterdir()) == ["keys.json"]

    with pytest.raises(KeyStoreError, match="current key; rotate first"):
        keys.retire(second)
    with pytest.raises(KeyStoreError, match="no key"):
        keys.retire("00" * 8)

    gone = materials(key_file)[first]
    retired = keys.retire(first)
    assert retired.state == "retired" and retired.retired is not None
    assert retired.created == next(k.created for k in keys.list_keys() if k.id == first)
    entry = next(e for e in _valid(key_file)["keys"] if e["id"] == first)
    assert "material" not in entry and entry["state"] == "retired"
    assert_hidden(key_file.read_text(), [gone])
    assert [k.state for k in keys.list_keys()] == ["current", "active", "retired"]
    assert keys.retire(first) == retired  # again: nothing changes
    assert mode(key_file) == 0o600


def test_unwrap_failures_are_the_opaque_error(keys: KeyFileProvider) -> None:
    dk = os.urandom(32)
    kek_id, wrapped = keys.wrap(dk)
    assert keys.unwrap(kek_id, wrapped) == dk
    cases = {
        "unknown key": (os.urandom(8), wrapped),
        "tampered": (kek_id, bytes([wrapped[0] ^ 1]) + wrapped[1:]),
        "short": (kek_id, wrapped[:5]),
        "empty": (kek_id, b""),
    }
    old = keys.current().id
    keys.rotate()
    keys.retire(old.hex())
    cases["retired"] = (kek_id, wrapped)
    for label, (kid, blob) in cases.items():
        with pytest.raises(SpoolDecryptError) as exc:
            keys.unwrap(kid, blob)
        assert str(exc.value) == SpoolDecryptError.MESSAGE, label
        assert exc.value.__cause__ is None, label
        assert kid.hex() not in str(exc.value), label


def test_another_providers_rotation_is_noticed(
    key_file: Path, keys: KeyFileProvider, spool: EncryptedSpool
) -> None:
    """A running server and `spoolvault key rotate` share the key file."""
    before = write(spool, b"before the rotation")
    old = keys.current().id.hex()
    cli = KeyFileProvider(key_file)
    new = cli.rotate().id
    assert keys.current().id.hex() == new  # the server's provider re-read the file
    after = write(spool, b"after the rotation")
    assert spool.header(after).kek_id.hex() == new
    assert spool.header(before).kek_id.hex() == old
    assert spool.read_all(before) == b"before the rotation"
    assert spool.read_all(after) == b"after the rotation"

    # The other process rewraps and retires: the server follows.
    report = rotate_keys(EncryptedSpool(spool.directory, cli))
    assert sorted(report.retired) == sorted([old, new])
    assert {k.id: k.state for k in keys.list_keys()}[old] == "retired"
    assert spool.read_all(before) == b"before the rotation"
    with pytest.raises(SpoolDecryptError):
        keys.unwrap(bytes.fromhex(old), os.urandom(40))


def test_exclusive_holds_a_lock_across_processes(keys: KeyFileProvider, key_file: Path) -> None:
    lock = key_file.with_name("keys.json.lock")
    with keys.exclusive():
        assert mode(lock) == 0o600
        fd = os.open(lock, os.O_RDWR)  # another open file description: another process
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
        keys.rotate()  # rotation inside is what rotate_keys does
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)


def test_kek_refuses_wrong_sizes() -> None:
    for kid, material in [(b"1234567", b"m" * 32), (b"12345678", b"m" * 31), (b"", b"")]:
        with pytest.raises(ValueError, match="8-byte id and 32 bytes"):
            Kek(kid, material)


# -- key material never shows -----------------------------------------------------------------


def test_reprs_never_show_key_material(
    keys: KeyFileProvider, key_file: Path, spool: EncryptedSpool
) -> None:
    name = write(spool, b"document")
    kek = keys.current()
    material = materials(key_file)[kek.id.hex()]
    header = spool.header(name)
    dk = keys.unwrap(header.kek_id, header.wrapped_key)
    secrets = [material, dk]
    sealer = fmt.ChunkSealer(dk, header.file_nonce)
    opener = fmt.ChunkOpener(dk, header.file_nonce)
    sealed_header = fmt.seal_header(
        data_key=dk,
        file_nonce=header.file_nonce,
        kek_id=kek.id,
        wrapped_key=header.wrapped_key,
        chunk_size=CS,
    )
    for obj in (kek, keys, header, sealed_header, sealer, opener, spool, *keys.list_keys()):
        assert_hidden(repr(obj), secrets)
        assert_hidden(str(obj), secrets)
        assert_hidden(f"{obj!r:>10} {obj}", secrets)
    assert repr(kek) == str(kek) == f"Kek(id={kek.id.hex()}, material=<hidden>)"
    assert kek.id.hex() in repr(header)
    assert not hasattr(kek, "__dict__")  # slots: no vars() to dump


def test_logs_never_show_key_material(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    key_file = tmp_path / "keys.json"
    keys = KeyFileProvider.create(key_file)
    seen: list[bytes] = list(materials(key_file).values())
    directory = tmp_path / "spool"
    directory.mkdir()
    spool = EncryptedSpool(directory, keys, chunk_size=CS)
    name = write(spool, b"x" * 3 * CS)
    header = spool.header(name)
    seen.append(keys.unwrap(header.kek_id, header.wrapped_key))
    # Every failure path that logs: wrong material, unknown key, tampered payload.
    wrong = json.loads(key_file.read_text())
    wrong["keys"][0]["material"] = base64.b64encode(os.urandom(32)).decode()
    (tmp_path / "wrong.json").write_text(json.dumps(wrong))
    (tmp_path / "wrong.json").chmod(0o600)
    with pytest.raises(SpoolDecryptError):
        EncryptedSpool(directory, KeyFileProvider(tmp_path / "wrong.json")).verify(name)
    with pytest.raises(SpoolDecryptError):
        EncryptedSpool(directory, KeyFileProvider.create(tmp_path / "other.json")).verify(name)
    raw = bytearray(spool.path(name).read_bytes())
    raw[-1] ^= 1
    spool.path(name).write_bytes(bytes(raw))
    with pytest.raises(SpoolDecryptError):
        spool.verify(name)
    assert rotate_keys(spool).rewrapped == 1  # only the header is rewrapped
    seen += list(materials(key_file).values())
    assert caplog.records
    for record in caplog.records:
        assert_hidden(record.getMessage(), seen)
        assert_hidden(repr(record.args), seen)
