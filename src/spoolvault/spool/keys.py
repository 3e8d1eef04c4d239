"""Key-encryption keys (KEKs): the provider interface and the local key-file provider.

A KEK wraps each spool file's random data key (AES key wrap, RFC 3394). Several KEKs
exist by id: one is *current* (wraps new files), older ones stay *active* for unwrapping
until no file uses them, then they are *retired*: the material is erased and any file
that still names them is refused with the opaque SpoolDecryptError.

Key material never appears in a repr, a log line or an exception message.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import json
import logging
import os
import stat
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from spoolvault.errors import KeyStoreError, SpoolDecryptError
from spoolvault.spool.format import KEK_ID_LEN
from spoolvault.util.fs import write_atomic

log = logging.getLogger(__name__)

KeyState = Literal["current", "active", "retired"]
KEY_FILE_FORMAT = 1


class Kek:
    """One key-encryption key. Its material is hidden from repr and str."""

    __slots__ = ("_material", "id")

    def __init__(self, kek_id: bytes, material: bytes) -> None:
        if len(kek_id) != KEK_ID_LEN or len(material) != 32:
            raise ValueError("a KEK is an 8-byte id and 32 bytes of material")
        self.id = kek_id
        self._material = material

    def __repr__(self) -> str:
        return f"Kek(id={self.id.hex()}, material=<hidden>)"

    __str__ = __repr__

    def wrap(self, data_key: bytes) -> bytes:
        return aes_key_wrap(self._material, data_key)

    def unwrap(self, wrapped: bytes) -> bytes:
        return aes_key_unwrap(self._material, wrapped)


@dataclass(frozen=True)
class KeyInfo:
    """What may be shown about a key: never its material."""

    id: str
    state: KeyState
    created: str
    retired: str | None = None


class KeyProvider(ABC):
    """Where KEKs live. The local key file is the first; a KMS or HSM can be another."""

    @abstractmethod
    def current(self) -> Kek:
        """The KEK that wraps new data keys."""

    @abstractmethod
    def unwrap(self, kek_id: bytes, wrapped: bytes) -> bytes:
        """Unwrap a data key; any failure (unknown, retired, wrong key) is SpoolDecryptError."""

    @abstractmethod
    def rotate(self) -> KeyInfo:
        """Create a new current KEK; the previous ones stay active for unwrapping."""

    @abstractmethod
    def retire(self, kek_id: str) -> KeyInfo:
        """Erase a non-current KEK's material; files naming it can no longer be read."""

    @abstractmethod
    def list_keys(self) -> list[KeyInfo]:
        """Every key the provider knows, newest first."""

    def wrap(self, data_key: bytes) -> tuple[bytes, bytes]:
        """Wrap a data key under the current KEK: (kek id, wrapped key)."""
        kek = self.current()
        return kek.id, kek.wrap(data_key)

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold off other rotations and retirements (across processes) while inside."""
        yield


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class KeyFileProvider(KeyProvider):
    """KEKs in a JSON key file (mode 0600), re-read when another process changes it.

    The file is replaced atomically (temp file, fsync, rename), so a running server and
    `spoolvault key rotate` can share it: the server notices the new inode on its next use.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.RLock()
        self._stamp: tuple[int, int, int] | None = None
        self._current: bytes = b""
        self._keks: dict[bytes, Kek] = {}
        self._doc: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"KeyFileProvider(path={str(self.path)!r})"

    # -- file handling -------------------------------------------------------------

    @classmethod
    def create(cls, path: Path) -> KeyFileProvider:
        """Create a key file with one fresh current KEK. Refuses to overwrite one."""
        if path.exists():
            raise KeyStoreError(f"key file {path} already exists")
        kek_id = os.urandom(KEK_ID_LEN)
        doc = {
            "format": KEY_FILE_FORMAT,
            "current": kek_id.hex(),
            "keys": [_key_entry(kek_id, os.urandom(32))],
        }
        _save(path, doc)
        log.info("created key file %s with key %s", path, kek_id.hex())
        return cls(path)

    @classmethod
    def open_or_create(cls, path: Path) -> KeyFileProvider:
        provider = cls(path) if path.exists() else cls.create(path)
        provider.current()  # fail at start-up, not on the first job
        return provider

    def _refresh(self) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise KeyStoreError(
                f"key file {self.path} is missing: without it no encrypted job can be "
                f"written or released (restore it from your key backup)"
            ) from None
        # Checked on every use, not only when the file changes: a later chmod counts too.
        if st.st_mode & 0o077:
            raise KeyStoreError(
                f"key file {self.path} is accessible to other users "
                f"(mode {stat.filemode(st.st_mode)}); run: chmod 600 {self.path}"
            )
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
            keks: dict[bytes, Kek] = {}
            for entry in doc["keys"]:
                if entry.get("state") == "retired":
                    continue
                kid = bytes.fromhex(entry["id"])
                keks[kid] = Kek(kid, base64.b64decode(entry["material"], validate=True))
            current = bytes.fromhex(doc["current"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
            # Never echo the file content: it holds keys.
            raise KeyStoreError(
                f"key file {self.path} is unreadable or malformed ({type(exc).__name__})"
            ) from None
        if doc.get("format") != KEY_FILE_FORMAT:
            raise KeyStoreError(f"key file {self.path} has unknown format {doc.get('format')!r}")
        if current not in keks:
            raise KeyStoreError(f"key file {self.path}: current key {current.hex()} is missing")
        self._doc, self._keks, self._current, self._stamp = doc, keks, current, stamp

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        lock_path = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            with self._lock:
                self._stamp = None  # another process may have changed the file
                yield
        finally:
            os.close(fd)

    # -- the interface -------------------------------------------------------------

    def current(self) -> Kek:
        with self._lock:
            self._refresh()
            return self._keks[self._current]

    def unwrap(self, kek_id: bytes, wrapped: bytes) -> bytes:
        with self._lock:
            self._refresh()
            kek = self._keks.get(kek_id)
            if kek is None:
                state = self._state_of(kek_id.hex())
        if kek is None:
            log.warning("spool file names key %s, which is %s", kek_id.hex(), state)
            raise SpoolDecryptError()
        try:
            return kek.unwrap(wrapped)
        except (InvalidUnwrap, ValueError):
            log.warning(
                "data key did not unwrap under key %s (wrong key or tampered)", kek_id.hex()
            )
            raise SpoolDecryptError() from None

    def _state_of(self, kid: str) -> str:
        for entry in self._doc.get("keys", []):
            if entry["id"] == kid:
                return "retired" if entry.get("state") == "retired" else "active"
        return "unknown to this key file"

    def rotate(self) -> KeyInfo:
        with self._lock:
            self._stamp = None
            self._refresh()
            kek_id = os.urandom(KEK_ID_LEN)
            doc = dict(self._doc)
            doc["keys"] = [_key_entry(kek_id, os.urandom(32)), *self._doc["keys"]]
            doc["current"] = kek_id.hex()
            _save(self.path, doc)
            self._stamp = None
        log.info("new current key %s", kek_id.hex())
        return self._info(kek_id.hex())

    def retire(self, kek_id: str) -> KeyInfo:
        with self._lock:
            self._stamp = None
            self._refresh()
            if kek_id == self._current.hex():
                raise KeyStoreError(f"key {kek_id} is the current key; rotate first")
            entries = self._doc["keys"]
            if not any(e["id"] == kek_id for e in entries):
                raise KeyStoreError(f"no key {kek_id} in {self.path}")
            doc = dict(self._doc)
            doc["keys"] = [
                {"id": e["id"], "created": e["created"], "state": "retired", "retired": _now()}
                if e["id"] == kek_id and e.get("state") != "retired"
                else e
                for e in entries
            ]
            _save(self.path, doc)
            self._stamp = None
        log.info("retired key %s; its material is erased", kek_id)
        return self._info(kek_id)

    def list_keys(self) -> list[KeyInfo]:
        with self._lock:
            self._refresh()
            return [self._info_locked(e["id"]) for e in self._doc["keys"]]

    def _info(self, kid: str) -> KeyInfo:
        with self._lock:
            self._refresh()
            return self._info_locked(kid)

    def _info_locked(self, kid: str) -> KeyInfo:
        entry = next(e for e in self._doc["keys"] if e["id"] == kid)
        state: KeyState
        if entry.get("state") == "retired":
            state = "retired"
        elif kid == self._current.hex():
            state = "current"
        else:
            state = "active"
        return KeyInfo(kid, state, entry["created"], entry.get("retired"))


def _key_entry(kek_id: bytes, material: bytes) -> dict[str, Any]:
    return {
        "id": kek_id.hex(),
        "created": _now(),
        "state": "active",
        "material": base64.b64encode(material).decode("ascii"),
    }


def _save(path: Path, doc: dict[str, Any]) -> None:
    write_atomic(path, (json.dumps(doc, indent=2) + "\n").encode("utf-8"), mode=0o600)
