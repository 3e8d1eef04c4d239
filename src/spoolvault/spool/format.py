"""The encrypted spool file format, version 1 (docs/spool-format.md is the specification).

Pure functions over bytes: header packing and authentication, key derivation, and the
chunked AES-256-GCM STREAM construction. No file I/O here; see store.py.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from spoolvault.errors import SpoolDecryptError, SpoolError, UnsupportedSpoolFormat

MAGIC = b"\x89SPV\r\n\x1a\n"
VERSION = 1
HEADER_LEN = 112
CHUNK_SIZE = 64 * 1024
MIN_CHUNK_SIZE = 4096
MAX_CHUNK_SIZE = 16 * 1024 * 1024
TAG_LEN = 16
DATA_KEY_LEN = 32
FILE_NONCE_LEN = 16
KEK_ID_LEN = 8
WRAPPED_KEY_LEN = 40
MAC_LEN = 32
# Offsets of the fields that key rotation rewrites and shredding destroys.
KEY_BLOCK_START = 32
KEY_BLOCK_END = HEADER_LEN

_FIXED = struct.Struct(">8sHHI16s8s40s")  # everything the MAC covers
assert _FIXED.size + MAC_LEN == HEADER_LEN

_INFO_HEADER = b"spoolvault v1 header"
_INFO_PAYLOAD = b"spoolvault v1 payload"


def _hkdf(data_key: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(data_key)


@dataclass(frozen=True, repr=False)
class Header:
    """A parsed header. Holds the wrapped (never the plain) data key."""

    chunk_size: int
    file_nonce: bytes
    kek_id: bytes
    wrapped_key: bytes
    mac: bytes
    version: int = VERSION

    def __repr__(self) -> str:
        return f"Header(v{self.version}, kek_id={self.kek_id.hex()}, chunk_size={self.chunk_size})"

    def authenticated_bytes(self) -> bytes:
        """Bytes 0..79: what the MAC covers."""
        return _FIXED.pack(
            MAGIC,
            self.version,
            HEADER_LEN,
            self.chunk_size,
            self.file_nonce,
            self.kek_id,
            self.wrapped_key,
        )

    def to_bytes(self) -> bytes:
        return self.authenticated_bytes() + self.mac

    def check_mac(self, data_key: bytes) -> None:
        """Raise SpoolDecryptError unless the MAC matches under ``data_key``."""
        hk = _hkdf(data_key, self.file_nonce, _INFO_HEADER)
        want = hmac.new(hk, self.authenticated_bytes(), hashlib.sha256).digest()
        if not hmac.compare_digest(want, self.mac):
            raise SpoolDecryptError()


def seal_header(
    *,
    data_key: bytes,
    file_nonce: bytes,
    kek_id: bytes,
    wrapped_key: bytes,
    chunk_size: int = CHUNK_SIZE,
) -> Header:
    """Build a header and compute its MAC under ``data_key``."""
    unsigned = Header(chunk_size, file_nonce, kek_id, wrapped_key, mac=b"")
    hk = _hkdf(data_key, file_nonce, _INFO_HEADER)
    mac = hmac.new(hk, unsigned.authenticated_bytes(), hashlib.sha256).digest()
    return Header(chunk_size, file_nonce, kek_id, wrapped_key, mac)


def parse_header(raw: bytes) -> Header:
    """Parse the first HEADER_LEN bytes of a file. Does not authenticate (needs the key)."""
    if raw[:8] != MAGIC:
        raise SpoolError("not a spoolvault encrypted spool file (bad magic)")
    if len(raw) < 10:
        raise SpoolDecryptError()  # truncated inside the version field
    (version,) = struct.unpack_from(">H", raw, 8)
    if version != VERSION:
        raise UnsupportedSpoolFormat(version)
    if len(raw) < HEADER_LEN:
        raise SpoolDecryptError()
    _, _, header_len, chunk_size, file_nonce, kek_id, wrapped = _FIXED.unpack_from(raw)
    if header_len != HEADER_LEN or not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise SpoolDecryptError()
    return Header(chunk_size, file_nonce, kek_id, wrapped, raw[80:HEADER_LEN], version)


def _nonce(counter: int, last: bool) -> bytes:
    return counter.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


class ChunkSealer:
    """Seals plaintext chunks in order (STREAM): chunk i gets nonce N(i, last)."""

    __slots__ = ("_aead", "_counter", "_done")

    def __init__(self, data_key: bytes, file_nonce: bytes) -> None:
        self._aead = AESGCM(_hkdf(data_key, file_nonce, _INFO_PAYLOAD))
        self._counter = 0
        self._done = False

    def __repr__(self) -> str:
        return f"ChunkSealer(counter={self._counter})"

    def seal_into(
        self, chunk: bytes | bytearray | memoryview, out: memoryview, *, last: bool
    ) -> None:
        """Seal ``chunk`` into ``out``, which must be exactly ``len(chunk) + TAG_LEN`` long."""
        if self._done:
            raise RuntimeError("a STREAM is finished after its last chunk")
        self._aead.encrypt_into(_nonce(self._counter, last), chunk, None, out)
        self._counter += 1
        self._done = last

    def seal(self, chunk: bytes | memoryview, *, last: bool) -> bytes:
        """Seal ``chunk`` into a new bytes object (seal_into avoids the allocation)."""
        out = bytearray(len(chunk) + TAG_LEN)
        with memoryview(out) as view:
            self.seal_into(chunk, view, last=last)
        return bytes(out)


class ChunkOpener:
    """Opens sealed chunks in order; any failure is the opaque SpoolDecryptError."""

    __slots__ = ("_aead", "_counter", "_done")

    def __init__(self, data_key: bytes, file_nonce: bytes) -> None:
        self._aead = AESGCM(_hkdf(data_key, file_nonce, _INFO_PAYLOAD))
        self._counter = 0
        self._done = False

    def __repr__(self) -> str:
        return f"ChunkOpener(counter={self._counter})"

    def open(self, sealed: bytes, *, last: bool) -> bytes:
        if self._done:
            raise SpoolDecryptError()
        try:
            plain = self._aead.decrypt(_nonce(self._counter, last), sealed, None)
        except InvalidTag:
            raise SpoolDecryptError() from None
        # Only an empty document has an empty last chunk (age.md: "the last chunk MAY be
        # empty only if the whole payload is empty").
        if last and not plain and self._counter != 0:
            raise SpoolDecryptError()
        self._counter += 1
        self._done = last
        return plain


def iter_open(stream: BinaryIO, opener: ChunkOpener, chunk_size: int) -> Iterator[bytes]:
    """Yield authenticated plaintext chunks from ``stream`` positioned after the header.

    A chunk is last when the stream ends right after it; a header with no chunk at all
    is a truncated file.
    """
    sealed_len = chunk_size + TAG_LEN
    block = stream.read(sealed_len)
    if len(block) < TAG_LEN:
        raise SpoolDecryptError()
    while True:
        if len(block) < sealed_len:
            yield opener.open(block, last=True)
            return
        following = stream.read(sealed_len)
        if not following:
            yield opener.open(block, last=True)
            return
        yield opener.open(block, last=False)
        block = following
