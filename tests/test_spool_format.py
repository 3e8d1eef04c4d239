"""Attacks on the encrypted spool format (docs/spool-format.md), with real files.

Every test writes real spool files with EncryptedSpool, mutates their bytes on disk the
way an attacker with the disk could, and checks the reader refuses them with exactly the
error the specification names. A small chunk size (4096, the smallest a reader accepts)
makes many-chunk files cheap; some tests use the default 64 KiB.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import logging
import os
import random
import struct
import uuid
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap, aes_key_wrap
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spoolvault.errors import SpoolDecryptError, SpoolError, UnsupportedSpoolFormat
from spoolvault.spool import format as fmt
from spoolvault.spool.keys import KeyFileProvider
from spoolvault.spool.store import EncryptedSpool, PlainSpool, SpoolFile

CS = 4096  # the smallest chunk size a reader accepts: many chunks for few bytes
SEALED = CS + fmt.TAG_LEN
HDR = fmt.HEADER_LEN


# -- helpers ---------------------------------------------------------------------------


def doc(size: int, seed: int = 0) -> bytes:
    """Deterministic incompressible-looking bytes (distinct per seed)."""
    return random.Random(f"{seed}:{size}").randbytes(size)


def store(spool: EncryptedSpool | PlainSpool, data: bytes, pieces: int = 1) -> SpoolFile:
    """Write ``data`` in ``pieces`` write() calls and commit."""
    step = max(1, -(-len(data) // pieces))
    with spool.create() as w:
        for i in range(0, len(data), step):
            w.write(data[i : i + step])
        return w.commit()


def key_materials(key_file: Path) -> dict[bytes, bytes]:
    """KEK id -> material, read straight from the key file (as an independent reader)."""
    doc_ = json.loads(key_file.read_text())
    return {
        bytes.fromhex(e["id"]): base64.b64decode(e["material"])
        for e in doc_["keys"]
        if "material" in e
    }


def chunks_of(raw: bytes, chunk_size: int = CS) -> list[bytes]:
    """Split a file's payload into its stored chunks."""
    payload = raw[HDR:]
    sealed = chunk_size + fmt.TAG_LEN
    return [payload[i : i + sealed] for i in range(0, len(payload), sealed)]


def new_name(raw: bytes = b"") -> str:
    """The name a writer gives a file: the hex of its file nonce (random if too short)."""
    return raw[16:32].hex() if len(raw) >= 32 else uuid.uuid4().hex


def put(spool: EncryptedSpool, raw: bytes, name: str | None = None) -> str:
    """Place raw bytes as a committed spool file under the name its header claims."""
    name = name or new_name(raw)
    spool.path(name).write_bytes(raw)
    return name


def error_of(spool: EncryptedSpool, name: str) -> BaseException | None:
    try:
        spool.verify(name)
    except Exception as exc:
        return exc
    return None


@pytest.fixture
def big_spool(tmp_path: Path, keys: KeyFileProvider) -> EncryptedSpool:
    directory = tmp_path / "encrypted-64k"
    directory.mkdir()
    return EncryptedSpool(directory, keys)


@pytest.fixture
def plain(tmp_path: Path) -> PlainSpool:
    directory = tmp_path / "plain"
    directory.mkdir()
    return PlainSpool(directory)


# -- the layout is the one the specification describes -----------------------------------


def spec_open(raw: bytes, materials: dict[bytes, bytes]) -> bytes:
    """An independent reader written from docs/spool-format.md alone."""
    magic, version, header_len, cs, file_nonce, kek_id, wrapped = struct.unpack(
        ">8sHHI16s8s40s", raw[:80]
    )
    assert magic == bytes.fromhex("895350560d0a1a0a") == b"\x89SPV\r\n\x1a\n"
    assert (version, header_len) == (1, 112)
    assert 4096 <= cs <= 16 * 1024 * 1024
    dk = aes_key_unwrap(materials[kek_id], wrapped)
    assert len(dk) == 32

    def hkdf(info: bytes) -> bytes:
        return HKDF(hashes.SHA256(), 32, salt=file_nonce, info=info).derive(dk)

    want = hmac.new(hkdf(b"spoolvault v1 header"), raw[:80], hashlib.sha256).digest()
    assert hmac.compare_digest(want, raw[80:112])
    aead = AESGCM(hkdf(b"spoolvault v1 payload"))
    stored = chunks_of(raw, cs)
    assert stored, "there is always a last chunk"
    out = []
    for i, sealed in enumerate(stored):
        last = i == len(stored) - 1
        if not last:
            assert len(sealed) == cs + 16
        nonce = i.to_bytes(11, "big") + (b"\x01" if last else b"\x00")
        out.append(aead.decrypt(nonce, sealed, b""))
    return b"".join(out)


def spec_seal(data: bytes, kek_id: bytes, material: bytes, cs: int = CS) -> bytes:
    """An independent writer written from docs/spool-format.md alone."""
    dk, file_nonce = os.urandom(32), os.urandom(16)

    def hkdf(info: bytes) -> bytes:
        return HKDF(hashes.SHA256(), 32, salt=file_nonce, info=info).derive(dk)

    fixed = struct.pack(
        ">8sHHI16s8s40s",
        b"\x89SPV\r\n\x1a\n",
        1,
        112,
        cs,
        file_nonce,
        kek_id,
        aes_key_wrap(material, dk),
    )
    header = fixed + hmac.new(hkdf(b"spoolvault v1 header"), fixed, hashlib.sha256).digest()
    aead = AESGCM(hkdf(b"spoolvault v1 payload"))
    pieces = [data[i : i + cs] for i in range(0, len(data), cs)] or [b""]
    body = b"".join(
        aead.encrypt(i.to_bytes(11, "big") + bytes([i == len(pieces) - 1]), p, b"")
        for i, p in enumerate(pieces)
    )
    return header + body


def test_constants_match_the_specification() -> None:
    assert fmt.MAGIC == b"\x89SPV\r\n\x1a\n"
    assert (fmt.VERSION, fmt.HEADER_LEN, fmt.CHUNK_SIZE) == (1, 112, 65536)
    assert (fmt.MIN_CHUNK_SIZE, fmt.MAX_CHUNK_SIZE) == (4096, 16 * 1024 * 1024)
    assert (fmt.KEY_BLOCK_START, fmt.KEY_BLOCK_END) == (32, 112)


@pytest.mark.parametrize("size", [0, 1, CS - 1, CS, CS + 1, 3 * CS, 5 * CS + 7])
def test_written_file_is_exactly_the_specified_layout(
    spool: EncryptedSpool, key_file: Path, size: int
) -> None:
    data = doc(size)
    info = store(spool, data)
    raw = spool.path(info.name).read_bytes()
    assert raw[:8] == b"\x89SPV\r\n\x1a\n"
    assert struct.unpack(">HHI", raw[8:16]) == (1, 112, CS)
    assert raw[32:40].hex() == info.key_id
    stored = chunks_of(raw)
    n = max(1, -(-size // CS))
    assert len(stored) == n
    assert all(len(c) == SEALED for c in stored[:-1])
    assert len(stored[-1]) == (size - (n - 1) * CS) + 16
    assert len(raw) == HDR + size + 16 * n
    assert spec_open(raw, key_materials(key_file)) == data


def test_default_chunk_size_is_64k_and_readable_by_the_spec_reader(
    big_spool: EncryptedSpool, key_file: Path
) -> None:
    data = doc(2 * 65536 + 5)
    raw = big_spool.path(store(big_spool, data).name).read_bytes()
    assert struct.unpack(">I", raw[12:16]) == (65536,)
    assert len(chunks_of(raw, 65536)) == 3
    assert spec_open(raw, key_materials(key_file)) == data


@pytest.mark.parametrize("size", [0, 1, CS, 2 * CS, 2 * CS + 9])
@pytest.mark.parametrize("cs", [4096, 65536])
def test_a_file_made_by_an_independent_writer_is_read(
    spool: EncryptedSpool, keys: KeyFileProvider, key_file: Path, size: int, cs: int
) -> None:
    kek_id = keys.current().id
    data = doc(size, seed=cs)
    name = put(spool, spec_seal(data, kek_id, key_materials(key_file)[kek_id], cs))
    assert spool.read_all(name) == data
    assert spool.verify(name) == size


def test_a_written_header_is_not_all_fresh_bytes_twice(spool: EncryptedSpool) -> None:
    """Fresh data key and file nonce per file: two files of the same content differ."""
    a = spool.path(store(spool, b"same").name).read_bytes()
    b = spool.path(store(spool, b"same").name).read_bytes()
    assert a[16:32] != b[16:32]  # file nonce
    assert a[40:80] != b[40:80]  # wrapped data key
    assert a[HDR:] != b[HDR:]


# -- round trips --------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, CS - 1, CS, CS + 1, 2 * CS, 37 * CS + 1234])
@pytest.mark.parametrize("pieces", [1, 3, 1000])
def test_round_trip_small_chunks(spool: EncryptedSpool, size: int, pieces: int) -> None:
    data = doc(size)
    info = store(spool, data, pieces)
    assert info.size == size
    assert info.encrypted and info.format_version == 1
    assert info.key_id == spool.header(info.name).kek_id.hex()
    assert spool.read_all(info.name) == data
    assert spool.verify(info.name) == size
    assert all(len(c) <= CS for c in spool.read(info.name))


@pytest.mark.parametrize("size", [0, 1, 65535, 65536, 65537, 5 * 65536 + 3])
def test_round_trip_default_chunks(big_spool: EncryptedSpool, size: int) -> None:
    data = doc(size)
    info = store(big_spool, data, pieces=7)
    assert info.size == size
    assert big_spool.read_all(info.name) == data
    assert big_spool.verify(info.name) == size


@pytest.mark.parametrize("size", [0, 1, 65535, 65536, 65537, 5 * 65536 + 3])
def test_round_trip_plain(plain: PlainSpool, size: int) -> None:
    data = doc(size)
    info = store(plain, data, pieces=5)
    assert info == SpoolFile(info.name, encrypted=False, size=size)
    assert plain.path(info.name).read_bytes() == data  # stored as written
    assert plain.read_all(info.name) == data
    assert plain.verify(info.name) == size


def test_writes_of_bytearray_and_memoryview(spool: EncryptedSpool) -> None:
    data = doc(3 * CS + 1)
    with spool.create() as w:
        w.write(bytearray(data[:100]))
        w.write(memoryview(data)[100:])
        info = w.commit()
    assert spool.read_all(info.name) == data


@pytest.fixture(scope="module")
def hyp_spool(tmp_path_factory: pytest.TempPathFactory) -> EncryptedSpool:
    base = tmp_path_factory.mktemp("hypothesis")
    (base / "spool").mkdir()
    return EncryptedSpool(base / "spool", KeyFileProvider.create(base / "keys.json"), chunk_size=CS)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(size=st.integers(0, 6 * CS + 1), cuts=st.lists(st.integers(0, 6 * CS + 1), max_size=12))
def test_round_trip_random_split_points(
    hyp_spool: EncryptedSpool, size: int, cuts: list[int]
) -> None:
    data = doc(size, seed=len(cuts))
    bounds = sorted({0, size, *(c for c in cuts if c <= size)})
    with hyp_spool.create() as w:
        for a, b in itertools.pairwise(bounds):
            w.write(data[a:b])
        w.write(b"")  # empty writes are harmless anywhere
        info = w.commit()
    try:
        assert info.size == size
        assert hyp_spool.read_all(info.name) == data
        n = max(1, -(-size // CS))
        assert hyp_spool.path(info.name).stat().st_size == HDR + size + 16 * n
    finally:
        hyp_spool.delete(info.name)


@settings(max_examples=100, deadline=None)
@given(pieces=st.lists(st.binary(max_size=2 * CS + 3), max_size=8))
def test_round_trip_random_data(hyp_spool: EncryptedSpool, pieces: list[bytes]) -> None:
    with hyp_spool.create() as w:
        for p in pieces:
            w.write(p)
        info = w.commit()
    try:
        assert hyp_spool.read_all(info.name) == b"".join(pieces)
        assert info.size == sum(map(len, pieces))
    finally:
        hyp_spool.delete(info.name)


def test_writer_never_makes_a_file_its_reader_refuses(
    tmp_path: Path, keys: KeyFileProvider
) -> None:
    """Readers accept chunk sizes 4096..16 MiB, so a writer must not use another size.

    Bug: EncryptedSpool accepts any chunk_size and writes files that fail with the
    opaque SpoolDecryptError forever (or divides by zero for chunk_size=0).
    """
    for bad in (1024, fmt.MAX_CHUNK_SIZE + 1):
        try:
            spool = EncryptedSpool(tmp_path, keys, chunk_size=bad)
        except ValueError:
            continue
        info = store(spool, b"a document")
        assert spool.read_all(info.name) == b"a document", f"chunk_size={bad}"


# -- the header ---------------------------------------------------------------------------


def test_header_round_trips_and_authenticates() -> None:
    dk, nonce = os.urandom(32), os.urandom(16)
    header = fmt.seal_header(
        data_key=dk, file_nonce=nonce, kek_id=b"K" * 8, wrapped_key=b"W" * 40, chunk_size=CS
    )
    raw = header.to_bytes()
    assert len(raw) == HDR
    parsed = fmt.parse_header(raw + b"payload is ignored")
    assert parsed == header
    parsed.check_mac(dk)
    with pytest.raises(SpoolDecryptError):
        parsed.check_mac(os.urandom(32))


def test_unknown_version_is_reported_as_such_and_nothing_is_yielded(
    spool: EncryptedSpool,
) -> None:
    raw = bytearray(spool.path(store(spool, doc(2 * CS)).name).read_bytes())
    for version in (0, 2, 0xFFFF):
        raw[8:10] = version.to_bytes(2, "big")
        name = put(spool, bytes(raw))
        got: list[bytes] = []
        with pytest.raises(UnsupportedSpoolFormat) as exc:
            got.extend(spool.read(name))
        assert got == []
        assert exc.value.version == version
        assert f"version {version}" in str(exc.value)
        assert not isinstance(exc.value, SpoolDecryptError)
        with pytest.raises(UnsupportedSpoolFormat):
            spool.header(name)


def test_chunk_size_limits_of_the_reader(spool: EncryptedSpool) -> None:
    for cs, ok in [(4095, False), (4096, True), (2**24, True), (2**24 + 1, False), (0, False)]:
        dk, nonce = os.urandom(32), os.urandom(16)
        header = fmt.seal_header(
            data_key=dk, file_nonce=nonce, kek_id=b"K" * 8, wrapped_key=b"W" * 40, chunk_size=cs
        )
        if ok:
            assert fmt.parse_header(header.to_bytes()).chunk_size == cs
        else:
            with pytest.raises(SpoolDecryptError):
                fmt.parse_header(header.to_bytes())


# -- every single-byte flip ---------------------------------------------------------------


def expected_error(offset: int) -> type[SpoolError]:
    """The error the specification names for a change at ``offset``."""
    if offset < 8:
        return SpoolError  # magic: "not a spool file"
    if offset < 10:
        return UnsupportedSpoolFormat  # version: said as such, never the opaque error
    return SpoolDecryptError  # everything from the header length on


def test_every_byte_flip_is_detected(spool: EncryptedSpool) -> None:
    info = store(spool, doc(3 * CS + 1000))
    path = spool.path(info.name)
    raw = path.read_bytes()
    assert len(raw) == HDR + 3 * SEALED + 1016
    wrong: list[tuple[int, int, str]] = []
    fd = os.open(path, os.O_WRONLY)
    try:
        for offset in range(len(raw)):
            for mask in (0xFF, 1 << (offset % 8)):
                os.pwrite(fd, bytes([raw[offset] ^ mask]), offset)
                exc = error_of(spool, info.name)
                want = expected_error(offset)
                ok = type(exc) is want and (
                    "bad magic" in str(exc)
                    if want is SpoolError
                    else want is UnsupportedSpoolFormat or str(exc) == SpoolDecryptError.MESSAGE
                )
                if not ok:
                    wrong.append((offset, mask, repr(exc)))
            os.pwrite(fd, raw[offset : offset + 1], offset)
    finally:
        os.close(fd)
    assert wrong == []
    assert spool.read_all(info.name) == doc(3 * CS + 1000)  # restored: the loop was sound


# -- truncation and appending ---------------------------------------------------------------


def test_truncation_at_and_off_every_chunk_boundary(spool: EncryptedSpool) -> None:
    size = 4 * CS + 100
    raw = spool.path(store(spool, doc(size)).name).read_bytes()
    ends = {HDR + i * SEALED for i in range(5)}  # header only, then each full chunk
    ends |= {e + d for e in list(ends) for d in (-17, -16, -15, -1, 1, 15, 16, 17)}
    ends |= {HDR + 4 * SEALED + 116 - 1, HDR + 4 * SEALED + 1}
    ends |= set(range(10, HDR + 1))  # inside the header, after the version field
    name = new_name(raw)
    wrong = []
    for end in sorted(e for e in ends if 10 <= e < len(raw)):
        put(spool, raw[:end], name)
        exc = error_of(spool, name)
        if type(exc) is not SpoolDecryptError:
            wrong.append((end, repr(exc)))
    assert wrong == []


def test_truncated_to_less_than_the_magic_is_not_a_spool_file(spool: EncryptedSpool) -> None:
    raw = spool.path(store(spool, b"x").name).read_bytes()
    for end in range(8):
        name = put(spool, raw[:end])
        with pytest.raises(SpoolError, match="bad magic") as exc:
            spool.verify(name)
        assert type(exc.value) is SpoolError


def test_truncated_inside_the_version_field_is_the_opaque_error(spool: EncryptedSpool) -> None:
    """8 or 9 bytes: the magic is right, so this is a truncated spool file.

    Bug: parse_header reports "bad magic" (a plain SpoolError) for a file whose magic is
    intact; the specification makes every truncation the opaque SpoolDecryptError.
    """
    raw = spool.path(store(spool, b"x").name).read_bytes()
    for end in (8, 9):
        name = put(spool, raw[:end])
        with pytest.raises(SpoolDecryptError):
            spool.verify(name)


def test_header_only_is_refused(spool: EncryptedSpool) -> None:
    for size in (0, 1, CS):
        raw = spool.path(store(spool, doc(size)).name).read_bytes()
        name = put(spool, raw[:HDR])
        with pytest.raises(SpoolDecryptError):
            spool.verify(name)


@pytest.mark.parametrize("size", [0, 1, CS - 1, CS, 3 * CS, 3 * CS + 5])
def test_appending_is_detected(spool: EncryptedSpool, size: int) -> None:
    raw = spool.path(store(spool, doc(size)).name).read_bytes()
    stored = chunks_of(raw)
    tails = [b"\x00", b"x" * 15, b"x" * 16, b"x" * 17, os.urandom(SEALED), os.urandom(CS)]
    tails += [c for c in stored]  # a copy of each chunk, the last one included
    for tail in tails:
        name = put(spool, raw + tail)
        with pytest.raises(SpoolDecryptError):
            spool.verify(name)


def test_an_empty_last_chunk_after_other_chunks_is_refused(
    spool: EncryptedSpool, keys: KeyFileProvider
) -> None:
    """The one extension a writer never makes: a full chunk, then an empty last one."""
    dk, nonce = os.urandom(32), os.urandom(16)
    kek_id, wrapped = keys.wrap(dk)
    header = fmt.seal_header(
        data_key=dk, file_nonce=nonce, kek_id=kek_id, wrapped_key=wrapped, chunk_size=CS
    )
    sealer = fmt.ChunkSealer(dk, nonce)
    body = sealer.seal(doc(CS), last=False) + sealer.seal(b"", last=True)
    name = put(spool, header.to_bytes() + body)
    got: list[bytes] = []
    with pytest.raises(SpoolDecryptError):
        got.extend(spool.read(name))
    assert got == [doc(CS)]  # the full chunk was authentic; the empty last one is not


# -- reordering, duplicating and splicing chunks and headers ------------------------------------


def test_every_reordering_duplication_and_removal_of_chunks_is_detected(
    spool: EncryptedSpool,
) -> None:
    raw = spool.path(store(spool, doc(3 * CS + 77)).name).read_bytes()
    header, stored = raw[:HDR], chunks_of(raw)
    assert len(stored) == 4
    layouts: set[tuple[int, ...]] = set(itertools.permutations(range(4)))
    for i in range(4):
        for j in range(5):
            with_dup = list(range(4))
            with_dup.insert(j, i)
            layouts.add(tuple(with_dup))
        layouts.add(tuple(k for k in range(4) if k != i))
    layouts.discard((0, 1, 2, 3))
    name = new_name(header)
    accepted = []
    for layout in sorted(layouts):
        put(spool, header + b"".join(stored[k] for k in layout), name)
        if type(error_of(spool, name)) is not SpoolDecryptError:
            accepted.append(layout)
    assert accepted == []


def test_chunks_moved_between_files_under_the_same_kek_are_detected(
    spool: EncryptedSpool,
) -> None:
    raw_a = spool.path(store(spool, doc(3 * CS + 50, seed=1)).name).read_bytes()
    raw_b = spool.path(store(spool, doc(3 * CS + 50, seed=2)).name).read_bytes()
    assert raw_a[32:40] == raw_b[32:40]  # same KEK
    a, b = chunks_of(raw_a), chunks_of(raw_b)
    name = new_name(raw_a)
    for i in range(len(a)):
        spliced = a.copy()
        spliced[i] = b[i]
        put(spool, raw_a[:HDR] + b"".join(spliced), name)
        with pytest.raises(SpoolDecryptError):
            spool.verify(name)


def test_headers_swapped_between_files_are_detected(spool: EncryptedSpool) -> None:
    for size in (0, 5, 2 * CS + 5):
        raw_a = spool.path(store(spool, doc(size, seed=1)).name).read_bytes()
        raw_b = spool.path(store(spool, doc(size, seed=2)).name).read_bytes()
        swapped_a = put(spool, raw_b[:HDR] + raw_a[HDR:])
        swapped_b = put(spool, raw_a[:HDR] + raw_b[HDR:])
        for name in (swapped_a, swapped_b):
            got: list[bytes] = []
            with pytest.raises(SpoolDecryptError):
                got.extend(spool.read(name))
            assert got == []
        # Only the key block moved (the file nonces kept): the header MAC fails.
        mixed = put(spool, raw_a[:32] + raw_b[32:HDR] + raw_a[HDR:])
        with pytest.raises(SpoolDecryptError):
            spool.verify(mixed)


# -- read() yields only authenticated plaintext ----------------------------------------------


def collect(spool: EncryptedSpool, name: str) -> tuple[list[bytes], BaseException | None]:
    got: list[bytes] = []
    try:
        for chunk in spool.read(name):
            got.append(chunk)
    except SpoolError as exc:
        return got, exc
    return got, None


def test_a_tampered_last_chunk_fails_after_the_authentic_chunks(spool: EncryptedSpool) -> None:
    data = doc(3 * CS + 10)
    raw = bytearray(spool.path(store(spool, data).name).read_bytes())
    raw[-1] ^= 1
    got, exc = collect(spool, put(spool, bytes(raw)))
    assert type(exc) is SpoolDecryptError
    assert got == [data[:CS], data[CS : 2 * CS], data[2 * CS : 3 * CS]]


def test_a_tampered_first_chunk_yields_nothing(spool: EncryptedSpool) -> None:
    raw = bytearray(spool.path(store(spool, doc(3 * CS + 10)).name).read_bytes())
    raw[HDR + 5] ^= 0x80
    got, exc = collect(spool, put(spool, bytes(raw)))
    assert type(exc) is SpoolDecryptError
    assert got == []


def test_a_tampered_middle_chunk_yields_only_what_precedes_it(spool: EncryptedSpool) -> None:
    data = doc(5 * CS)
    raw = bytearray(spool.path(store(spool, data).name).read_bytes())
    for k in range(5):
        tampered = bytearray(raw)
        tampered[HDR + k * SEALED + SEALED - 1] ^= 1  # the tag of chunk k
        got, exc = collect(spool, put(spool, bytes(tampered)))
        assert type(exc) is SpoolDecryptError
        assert b"".join(got) == data[: k * CS]


# -- wrong, missing and retired keys ------------------------------------------------------------


def wrong_material_key_file(key_file: Path, target: Path) -> Path:
    """The same key ids with different material."""
    content = json.loads(key_file.read_text())
    for entry in content["keys"]:
        entry["material"] = base64.b64encode(os.urandom(32)).decode()
    target.write_text(json.dumps(content))
    target.chmod(0o600)
    return target


def test_wrong_missing_and_retired_keys_are_one_opaque_error(
    spool: EncryptedSpool, key_file: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="spoolvault")
    info = store(spool, doc(2 * CS))
    kek_id = bytes.fromhex(info.key_id or "")
    materials = key_materials(key_file)
    errors: dict[str, SpoolError] = {}

    wrong = KeyFileProvider(wrong_material_key_file(key_file, tmp_path / "wrong.json"))
    assert wrong.current().id == kek_id
    missing = KeyFileProvider.create(tmp_path / "other.json")
    for label, provider in [("wrong", wrong), ("missing", missing)]:
        with pytest.raises(SpoolDecryptError) as exc:
            EncryptedSpool(spool.directory, provider, chunk_size=CS).verify(info.name)
        errors[label] = exc.value

    keys = KeyFileProvider(key_file)
    keys.rotate()
    keys.retire(info.key_id or "")
    with pytest.raises(SpoolDecryptError) as exc:
        EncryptedSpool(spool.directory, keys).verify(info.name)
    errors["retired"] = exc.value

    key_id, material = kek_id.hex(), materials[kek_id]
    secrets = [
        key_id,
        key_id.upper(),
        material.hex(),
        material.hex().upper(),
        base64.b64encode(material).decode(),
    ]
    for label, err in errors.items():
        assert type(err) is SpoolDecryptError, label
        assert str(err) == SpoolDecryptError.MESSAGE, label
        assert err.args == (SpoolDecryptError.MESSAGE,), label
        assert err.__cause__ is None, label
        for secret in secrets:
            assert secret not in str(err) and secret not in repr(err), label
    # The reasons, and only they, go to the log (with the key id, never the material).
    assert "did not unwrap under key" in caplog.text
    assert "unknown to this key file" in caplog.text
    assert "which is retired" in caplog.text
    for secret in secrets[2:]:
        assert secret not in caplog.text


def test_the_stream_primitives_refuse_misuse() -> None:
    dk, nonce = os.urandom(32), os.urandom(16)
    sealer = fmt.ChunkSealer(dk, nonce)
    first = sealer.seal(b"a" * CS, last=False)
    last = sealer.seal(b"end", last=True)
    with pytest.raises(RuntimeError):
        sealer.seal(b"more", last=True)
    opener = fmt.ChunkOpener(dk, nonce)
    assert opener.open(first, last=False) == b"a" * CS
    assert opener.open(last, last=True) == b"end"
    with pytest.raises(SpoolDecryptError):
        opener.open(last, last=True)  # nothing follows the last chunk
    # The same chunk under another file nonce (another file) fails.
    with pytest.raises(SpoolDecryptError):
        fmt.ChunkOpener(dk, os.urandom(16)).open(first, last=False)
    # A sealed chunk shorter than a tag fails cleanly.
    with pytest.raises(SpoolDecryptError):
        fmt.ChunkOpener(dk, nonce).open(b"short", last=True)


def test_iter_open_reads_one_chunk_at_a_time(spool: EncryptedSpool) -> None:
    """Bounded memory: no yielded piece is larger than one chunk, whatever the size."""
    info = store(spool, doc(20 * CS + 3))
    sizes = [len(c) for c in spool.read(info.name)]
    assert sizes == [CS] * 20 + [3]


def test_whole_files_swapped_between_jobs_are_detected(spool: EncryptedSpool) -> None:
    """A file's name is its authenticated nonce: moving a valid file to another job's name
    (to have someone else's document released as one's own) fails authentication."""
    a = store(spool, doc(CS + 10, seed=1)).name
    b = store(spool, doc(CS + 20, seed=2)).name
    raw_a, raw_b = spool.path(a).read_bytes(), spool.path(b).read_bytes()
    spool.path(a).write_bytes(raw_b)
    spool.path(b).write_bytes(raw_a)
    for name in (a, b):
        with pytest.raises(SpoolDecryptError):
            spool.verify(name)
        with pytest.raises(SpoolDecryptError):
            next(iter(spool.read(name)))
