"""The spool store with real files: atomic writes, crashes, shredding, rotation, orphans.

No mocks: crashes are real processes killed mid-write, a full disk is a real tiny tmpfs
(when the tests may mount one), and every check reads the bytes left on disk.
"""

from __future__ import annotations

import base64
import errno
import fcntl
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.tmpfs import mounted_tmpfs
from spoolvault.errors import (
    OperatorError,
    SpoolDecryptError,
    SpoolError,
    SpoolFileMissing,
    SpoolWriteError,
)
from spoolvault.spool import format as fmt
from spoolvault.spool.keys import KeyFileProvider
from spoolvault.spool.store import (
    EncryptedSpool,
    PlainSpool,
    Spool,
    SpoolFile,
    SpoolStore,
    rotate_keys,
)

CS = 4096
HDR = fmt.HEADER_LEN
MARKER = b"SECRET-MARKER-"


def doc(size: int, seed: int = 0) -> bytes:
    return hashlib.shake_256(f"{seed}:{size}".encode()).digest(size) if size else b""


def store(spool: Spool, data: bytes, pieces: int = 3) -> SpoolFile:
    step = max(1, -(-len(data) // pieces))
    with spool.create() as w:
        for i in range(0, len(data), step):
            w.write(data[i : i + step])
        return w.commit()


def listing(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


def files_containing(directory: Path, needle: bytes) -> list[str]:
    """Every file under ``directory`` whose bytes contain ``needle`` (a grep -r)."""
    hits = []
    for root, _dirs, names in os.walk(directory):
        for n in names:
            path = Path(root, n)
            if needle in path.read_bytes():
                hits.append(str(path.relative_to(directory)))
    return sorted(hits)


def material_of(key_file: Path, key_id: str) -> bytes:
    for entry in json.loads(key_file.read_text())["keys"]:
        if entry["id"] == key_id:
            return base64.b64decode(entry["material"])
    raise KeyError(key_id)


def make_old(path: Path, seconds: float = 3600) -> None:
    t = time.time() - seconds
    os.utime(path, (t, t))


@pytest.fixture
def plain(tmp_path: Path) -> PlainSpool:
    directory = tmp_path / "plain"
    directory.mkdir()
    return PlainSpool(directory)


@pytest.fixture(params=["encrypted", "plain"])
def any_spool(request: pytest.FixtureRequest, spool: EncryptedSpool, plain: PlainSpool) -> Spool:
    return spool if request.param == "encrypted" else plain


# -- visibility, names and deletion -------------------------------------------------------------


def test_a_file_is_visible_only_after_commit(any_spool: Spool) -> None:
    with any_spool.create() as w:
        w.write(doc(3 * CS))
        assert any_spool.names() == []
        assert listing(any_spool.directory) == [w.tmp_path.name]
        assert w.tmp_path.name == f".tmp-{w.name}.spool"
        assert (w.tmp_path.stat().st_mode & 0o777) == 0o600
        info = w.commit()
    assert any_spool.names() == [info.name]
    assert listing(any_spool.directory) == [f"{info.name}.spool"]
    assert (any_spool.path(info.name).stat().st_mode & 0o777) == 0o600


def test_names_ignores_everything_but_committed_files(any_spool: Spool) -> None:
    info = store(any_spool, b"x")
    d = any_spool.directory
    for junk in ("notes.txt", "ABCDEF0123456789ABCDEF0123456789.spool", "abc.spool", ".lock"):
        (d / junk).write_bytes(b"")
    (d / f".rewrap-{info.name}.spool").write_bytes(b"")
    assert any_spool.names() == [info.name]


@pytest.mark.parametrize("name", ["", "../etc/passwd", "a" * 31, "A" * 32, "g" * 32, "a" * 33])
def test_invalid_names_are_refused(any_spool: Spool, name: str) -> None:
    with pytest.raises(SpoolError, match="invalid spool file name"):
        any_spool.path(name)
    with pytest.raises(SpoolError, match="invalid spool file name"):
        any_spool.read_all(name)


def test_missing_files(any_spool: Spool) -> None:
    name = uuid.uuid4().hex
    with pytest.raises(SpoolFileMissing):
        any_spool.read_all(name)
    with pytest.raises(SpoolFileMissing):
        any_spool.delete(name)
    any_spool.delete(name, missing_ok=True)


def test_delete_removes_the_file(any_spool: Spool) -> None:
    info = store(any_spool, doc(CS + 1))
    any_spool.delete(info.name)
    assert listing(any_spool.directory) == []
    with pytest.raises(SpoolFileMissing):
        any_spool.read_all(info.name)


# -- crypto-shredding ------------------------------------------------------------------------


def test_delete_destroys_the_wrapped_key_in_place_before_unlinking(spool: EncryptedSpool) -> None:
    """A hard link keeps the inode alive: it shows what delete left in the file's blocks."""
    info = store(spool, doc(3 * CS))
    before = spool.path(info.name).read_bytes()
    witness = uuid.uuid4().hex
    os.link(spool.path(info.name), spool.path(witness))
    spool.delete(info.name)
    assert not spool.path(info.name).exists()
    after = spool.path(witness).read_bytes()
    assert after[fmt.KEY_BLOCK_START : fmt.KEY_BLOCK_END] == bytes(80)
    assert after[:32] == before[:32] and after[HDR:] == before[HDR:]  # only the key block
    with pytest.raises(SpoolDecryptError):
        spool.verify(witness)
    # The witness is now exactly a shredded leftover (zeroed, crash before the unlink).
    report = spool.recover()
    assert report.shredded_removed == 1
    assert listing(spool.directory) == []


def test_recover_removes_shredded_leftovers_and_nothing_else(spool: EncryptedSpool) -> None:
    keep = store(spool, doc(2 * CS), pieces=1)
    shredded = store(spool, doc(2 * CS, seed=1))
    fd = os.open(spool.path(shredded.name), os.O_WRONLY)
    os.pwrite(fd, bytes(80), 32)
    os.close(fd)
    report = spool.recover()
    assert (report.shredded_removed, report.temp_files_removed) == (1, 0)
    assert spool.names() == [keep.name]
    assert spool.read_all(keep.name) == doc(2 * CS)


def test_deferred_unlink_shreds_before_returning(spool: EncryptedSpool) -> None:
    """A release answers once the key is gone; the blocks are freed afterwards."""
    keep = store(spool, doc(2 * CS), pieces=1)
    info = store(spool, doc(3 * CS, seed=2))
    before = spool.path(info.name).read_bytes()
    later = spool.delete(info.name, defer_unlink=True)
    assert later is not None and later.exists() and not spool.path(info.name).exists()
    after = later.read_bytes()
    assert after[fmt.KEY_BLOCK_START : fmt.KEY_BLOCK_END] == bytes(80)
    assert after[HDR:] == before[HDR:]
    assert spool.names() == [keep.name]  # set aside: not a job file, not an orphan
    assert spool.orphans([keep.name], min_age=0) == []
    spool.discard(later)
    assert not later.exists()
    spool.discard(later)  # twice is harmless
    # Should the process die before the unlink, recovery removes what was set aside.
    other = store(spool, doc(CS, seed=3))
    left = spool.delete(other.name, defer_unlink=True)
    assert left is not None
    report = spool.recover()
    assert report.shredded_removed == 1
    assert spool.names() == [keep.name]
    assert not left.exists()


def test_deferred_unlink_of_a_plain_file_is_immediate(plain: PlainSpool) -> None:
    info = store(plain, doc(CS))
    assert plain.delete(info.name, defer_unlink=True) is None
    assert plain.names() == []


def test_shredding_a_file_shorter_than_its_header(spool: EncryptedSpool) -> None:
    for size in (0, 10, 40):
        name = uuid.uuid4().hex
        spool.path(name).write_bytes(b"\x01" * size)
        spool.delete(name)
        assert not spool.path(name).exists()


# -- aborted writes -----------------------------------------------------------------------------


class Boom(Exception):
    pass


def test_an_exception_inside_the_writer_leaves_nothing(any_spool: Spool) -> None:
    with pytest.raises(Boom), any_spool.create() as w:
        w.write(doc(5 * CS))
        raise Boom
    assert listing(any_spool.directory) == []
    assert any_spool.names() == []


def test_abort_twice_and_commit_after_abort(any_spool: Spool) -> None:
    w = any_spool.create()
    w.write(b"data")
    w.abort()
    w.abort()
    with pytest.raises(RuntimeError):
        w.commit()
    assert listing(any_spool.directory) == []


def test_commit_twice_is_refused_and_keeps_the_file(any_spool: Spool) -> None:
    with any_spool.create() as w:
        w.write(b"data")
        info = w.commit()
        with pytest.raises(RuntimeError):
            w.commit()
    assert any_spool.read_all(info.name) == b"data"


def test_write_after_abort_is_refused_cleanly(any_spool: Spool) -> None:
    """Bug: write() after abort() (or after a failed write) trips an assert (or, under
    python -O, a TypeError from os.write(None, ...)); the encrypted writer even buffers a
    small write silently. It should raise like commit() does."""
    w = any_spool.create()
    w.abort()
    with pytest.raises((RuntimeError, SpoolWriteError)):
        w.write(doc(3 * CS))
    assert listing(any_spool.directory) == []


# -- a full disk, for real ---------------------------------------------------------------------


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs: writes there really fail with ENOSPC."""
    with mounted_tmpfs(tmp_path / "tiny", "size=256k,mode=0700") as mnt:
        yield mnt


@pytest.fixture(params=["encrypted", "plain"])
def full_spool(request: pytest.FixtureRequest, tiny_fs: Path, keys: KeyFileProvider) -> Spool:
    if request.param == "plain":
        return PlainSpool(tiny_fs)
    return EncryptedSpool(tiny_fs, keys, chunk_size=CS)


def test_disk_full_while_writing_is_a_spool_write_error_and_leaves_nothing(
    full_spool: Spool,
) -> None:
    w = full_spool.create()
    with pytest.raises(SpoolWriteError, match="no space left on device") as exc:
        for _ in range(64):
            w.write(doc(16 * 1024))  # 1 MiB in all, into 256 KiB
    assert isinstance(exc.value.__cause__, OSError)
    assert exc.value.__cause__.errno == errno.ENOSPC
    assert listing(full_spool.directory) == []
    w.abort()  # harmless after the failure
    with pytest.raises(RuntimeError):
        w.commit()
    # The space came back: the next job is written normally.
    info = store(full_spool, doc(10_000))
    assert full_spool.read_all(info.name) == doc(10_000)


def test_disk_full_inside_a_with_block_leaves_nothing(full_spool: Spool) -> None:
    with pytest.raises(SpoolWriteError), full_spool.create() as w:
        w.write(doc(1 << 20))
        w.commit()
    assert listing(full_spool.directory) == []


def fill(directory: Path, leave: int) -> None:
    """Fill the filesystem, then free ``leave`` bytes."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            try:
                os.write(fd, bytes(4096))
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                break
        os.ftruncate(fd, os.fstat(fd).st_size - leave)
    finally:
        os.close(fd)


def test_disk_full_at_commit_leaves_nothing(tiny_fs: Path, keys: KeyFileProvider) -> None:
    """The encrypted writer holds the last chunk back, so the failure can come at commit."""
    full = EncryptedSpool(tiny_fs, keys)  # 64 KiB chunks: 6,000 bytes stay in memory
    fill(tiny_fs, leave=4096)  # one page: room for the header only
    w = full.create()
    w.write(doc(3000))
    w.write(doc(3000, seed=1))
    assert w.tmp_path.stat().st_size == HDR  # sealed chunks wait in the writer's batch
    with pytest.raises(SpoolWriteError, match="no space left"):
        w.commit()
    assert listing(tiny_fs) == ["filler"]
    assert full.names() == []


# -- a crash between write and rename ---------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from spoolvault.spool.keys import KeyFileProvider
    from spoolvault.spool.store import EncryptedSpool, PlainSpool

    directory, key_file, kind, how = sys.argv[1:5]
    if kind == "encrypted":
        spool = EncryptedSpool(Path(directory), KeyFileProvider(Path(key_file)), chunk_size=4096)
    else:
        spool = PlainSpool(Path(directory))
    w = spool.create()
    for _ in range(5):
        w.write(b"SECRET-MARKER-" * 1000)
    print(w.tmp_path.name, flush=True)
    if how == "exit":
        os._exit(0)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def crash_while_writing(spool: Spool, key_file: Path, how: str) -> tuple[int, str]:
    kind = "encrypted" if spool.encrypted else "plain"
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(spool.directory), str(key_file), kind, how],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.stderr == ""
    return done.returncode, done.stdout.strip()


@pytest.mark.parametrize("how", ["exit", "kill"])
def test_a_crash_before_commit_leaves_no_job_and_no_plaintext(
    spool: EncryptedSpool, key_file: Path, how: str
) -> None:
    code, tmp_name = crash_while_writing(spool, key_file, how)
    assert code == (0 if how == "exit" else -signal.SIGKILL)
    assert spool.names() == []
    assert listing(spool.directory) == [tmp_name]
    leftover = (spool.directory / tmp_name).read_bytes()
    # 70,000 bytes written: 17 full chunks sealed, one held back in memory. The writer
    # batches its writes, so some sealed chunks may not have reached the file, and the one
    # in flight may be cut anywhere: Linux ends a write() short at a page boundary when the
    # process is exiting (generic_perform_write stops on a fatal signal; seen here as 32,768
    # bytes under load). Whatever reached the file is ciphertext, never plaintext.
    sealed = len(leftover) - HDR
    assert 0 <= sealed <= 17 * (CS + fmt.TAG_LEN)
    assert leftover[:8] == fmt.MAGIC
    assert files_containing(spool.directory, MARKER) == []
    assert files_containing(spool.directory, MARKER[:8]) == []
    report = spool.recover()
    assert report.temp_files_removed == 1
    assert listing(spool.directory) == []


def test_a_crash_before_commit_of_a_plain_file_leaves_no_job(
    plain: PlainSpool, key_file: Path
) -> None:
    code, tmp_name = crash_while_writing(plain, key_file, "kill")
    assert code == -signal.SIGKILL
    assert plain.names() == []
    assert listing(plain.directory) == [tmp_name]
    assert files_containing(plain.directory, MARKER) == [tmp_name]  # the grep works
    assert plain.recover().temp_files_removed == 1
    assert listing(plain.directory) == []


def test_recover_respects_min_age(any_spool: Spool) -> None:
    w = any_spool.create()
    w.write(b"in progress")
    assert any_spool.recover(min_age=60).temp_files_removed == 0
    assert w.tmp_path.exists()
    make_old(w.tmp_path)
    assert any_spool.recover(min_age=60).temp_files_removed == 1
    assert listing(any_spool.directory) == []
    w.abort()


def test_only_ciphertext_reaches_the_disk(
    spool: EncryptedSpool, plain: PlainSpool, tmp_path: Path
) -> None:
    data = MARKER * 5000
    enc = store(spool, data, pieces=7)
    store(plain, data, pieces=7)
    assert spool.read_all(enc.name) == data
    assert files_containing(spool.directory, MARKER) == []
    assert files_containing(spool.directory, MARKER[:8]) == []
    assert files_containing(plain.directory, MARKER) != []  # control: the grep works
    assert "encrypted" not in {p.split("/")[0] for p in files_containing(tmp_path, MARKER)}


# -- key rotation ---------------------------------------------------------------------------


def test_rotation_rewraps_headers_only_and_retires_the_old_key(
    spool: EncryptedSpool, key_file: Path
) -> None:
    datas = [doc(0), doc(1, 1), doc(CS, 2), doc(7 * CS + 3, 3)]
    infos = [store(spool, d) for d in datas]
    old_id = infos[0].key_id
    assert old_id is not None and {i.key_id for i in infos} == {old_id}
    old_material = material_of(key_file, old_id)
    before = {i.name: spool.path(i.name).read_bytes() for i in infos}

    report = rotate_keys(spool)

    assert report.new_key != old_id
    assert (report.rewrapped, report.unchanged) == (4, 4)
    assert report.failed == {} and report.still_used == {}
    assert report.retired == [old_id]
    for info, data in zip(infos, datas, strict=True):
        after = spool.path(info.name).read_bytes()
        assert after[:32] == before[info.name][:32]
        assert after[HDR:] == before[info.name][HDR:]  # the payload is untouched
        assert after[32:40].hex() == report.new_key == spool.header(info.name).kek_id.hex()
        assert spool.read_all(info.name) == data
        # A fresh provider on the same key file reads it too.
        fresh = EncryptedSpool(spool.directory, KeyFileProvider(key_file))
        assert fresh.read_all(info.name) == data
    states = {k.id: k.state for k in spool.keys.list_keys()}
    assert states == {report.new_key: "current", old_id: "retired"}
    text = key_file.read_text()
    assert base64.b64encode(old_material).decode() not in text
    assert old_material.hex() not in text
    assert (key_file.stat().st_mode & 0o777) == 0o600
    assert [n for n in listing(spool.directory) if n.startswith(".")] == []

    again = rotate_keys(spool)
    assert (again.rewrapped, again.unchanged, again.retired) == (4, 4, [report.new_key])


def test_rotation_of_an_empty_spool_retires_the_old_key(spool: EncryptedSpool) -> None:
    old = spool.keys.current().id.hex()
    report = rotate_keys(spool)
    assert (report.rewrapped, report.unchanged, report.retired) == (0, 0, [old])


def test_a_file_that_fails_to_rewrap_keeps_its_key_from_retirement(
    spool: EncryptedSpool,
) -> None:
    good = store(spool, doc(2 * CS))
    bad = store(spool, doc(2 * CS, 1))
    old_id = good.key_id
    fd = os.open(spool.path(bad.name), os.O_WRONLY)
    os.pwrite(fd, b"\x00", 100)  # inside the header MAC: the key id is still readable
    os.close(fd)

    report = rotate_keys(spool)

    assert report.failed == {bad.name: SpoolDecryptError.MESSAGE}
    assert report.still_used == {old_id: 1}
    assert report.retired == []
    assert (report.rewrapped, report.unchanged) == (1, 1)
    states = {k.id: k.state for k in spool.keys.list_keys()}
    assert states == {report.new_key: "current", old_id: "active"}
    assert spool.header(good.name).kek_id.hex() == report.new_key
    assert spool.header(bad.name).kek_id.hex() == old_id
    assert spool.read_all(good.name) == doc(2 * CS)

    # Once the broken file is gone, the next rotation retires the old key.
    spool.delete(bad.name)
    later = rotate_keys(spool)
    assert sorted(later.retired) == sorted([old_id, report.new_key])


def test_a_file_being_written_keeps_its_key_from_retirement(spool: EncryptedSpool) -> None:
    w = spool.create()
    w.write(doc(3 * CS))
    old_id = spool.keys.current().id.hex()
    report = rotate_keys(spool)
    assert report.retired == [] and report.still_used == {old_id: 1}
    info = w.commit()
    assert info.key_id == old_id
    assert spool.read_all(info.name) == doc(3 * CS)
    later = rotate_keys(spool)
    assert (later.rewrapped, sorted(later.retired)) == (1, sorted([old_id, report.new_key]))
    assert spool.read_all(info.name) == doc(3 * CS)


def new_header(spool: EncryptedSpool, name: str) -> bytes:
    """The header rewrap() would write for ``name`` under the current KEK."""
    header = fmt.parse_header(spool.path(name).read_bytes()[:HDR])
    dk = spool.keys.unwrap(header.kek_id, header.wrapped_key)
    current = spool.keys.current()
    return fmt.seal_header(
        data_key=dk,
        file_nonce=header.file_nonce,
        kek_id=current.id,
        wrapped_key=current.wrap(dk),
        chunk_size=header.chunk_size,
    ).to_bytes()


def journal_path(spool: EncryptedSpool, name: str) -> Path:
    return spool.directory / f".rewrap-{name}.spool"


@pytest.mark.parametrize("torn_in_place", [0, 1, 40, 79, 80])
def test_recover_completes_an_intact_journal(spool: EncryptedSpool, torn_in_place: int) -> None:
    """Crash after the journal was fsynced, before or during the in-place write."""
    data = doc(4 * CS + 1)
    info = store(spool, data)
    before = spool.path(info.name).read_bytes()
    spool.keys.rotate()
    new = new_header(spool, info.name)
    journal_path(spool, info.name).write_bytes(new + hashlib.sha256(new).digest())
    if torn_in_place:
        fd = os.open(spool.path(info.name), os.O_WRONLY)
        os.pwrite(fd, new[32 : 32 + torn_in_place], 32)
        os.close(fd)

    report = spool.recover()

    assert (report.rewraps_completed, report.rewraps_discarded) == (1, 0)
    assert not journal_path(spool, info.name).exists()
    after = spool.path(info.name).read_bytes()
    assert after[:HDR] == new
    assert after[HDR:] == before[HDR:]
    assert spool.header(info.name).kek_id == spool.keys.current().id
    assert spool.read_all(info.name) == data


@pytest.mark.parametrize("journal", ["short", "garbage", "empty", "bad-digest"])
def test_recover_discards_a_torn_journal(spool: EncryptedSpool, journal: str) -> None:
    data = doc(2 * CS + 5)
    info = store(spool, data)
    before = spool.path(info.name).read_bytes()
    spool.keys.rotate()
    new = new_header(spool, info.name)
    content = {
        "short": (new + hashlib.sha256(new).digest())[:70],
        "garbage": os.urandom(HDR + 32),
        "empty": b"",
        "bad-digest": new + hashlib.sha256(new[:-1]).digest(),
    }[journal]
    journal_path(spool, info.name).write_bytes(content)

    report = spool.recover()

    assert (report.rewraps_completed, report.rewraps_discarded) == (0, 1)
    assert not journal_path(spool, info.name).exists()
    assert spool.path(info.name).read_bytes() == before
    assert spool.read_all(info.name) == data


def test_recover_removes_a_journal_torn_inside_its_own_atomic_write(
    spool: EncryptedSpool,
) -> None:
    info = store(spool, doc(CS))
    temp_journal = spool.directory / f".tmp-.rewrap-{info.name}.spool.12345"
    temp_journal.write_bytes(b"partial")
    report = spool.recover()
    assert report.temp_files_removed == 1
    assert listing(spool.directory) == [f"{info.name}.spool"]
    assert spool.read_all(info.name) == doc(CS)


def test_a_reader_waits_out_an_in_place_header_write(spool: EncryptedSpool) -> None:
    """A reader that meets a half-written header while the rotation journal exists must
    re-read the header from the disk.

    Bug: EncryptedSpool._open_header re-reads with f.seek(0); f.read(HEADER_LEN) on a file
    opened with a 1 MiB buffer, so the retry returns the same stale bytes from the buffer
    and the reader fails although the header on disk is complete by then.

    The rotation finishing "during the reader's wait" is played by a logging handler on
    the key provider's warning, which fires after the reader's first read and before its
    retry: a real interleaving, with no code replaced.
    """
    data = doc(3 * CS)
    info = store(spool, data)
    path = spool.path(info.name)
    spool.keys.rotate()
    new = new_header(spool, info.name)
    journal_path(spool, info.name).write_bytes(new + hashlib.sha256(new).digest())
    fd = os.open(path, os.O_WRONLY)
    os.pwrite(fd, new[32:72], 32)  # the rotation is half-way through its in-place write

    class FinishRotation(logging.Handler):
        fired = False

        def emit(self, record: logging.LogRecord) -> None:
            if not self.fired and "did not unwrap" in record.getMessage():
                self.fired = True
                os.pwrite(fd, new[32:], 32)
                os.fsync(fd)

    key_log = logging.getLogger("spoolvault.spool.keys")
    handler, level = FinishRotation(), key_log.level
    key_log.addHandler(handler)
    key_log.setLevel(logging.WARNING)
    try:
        assert spool.verify(info.name) == len(data)
    finally:
        key_log.removeHandler(handler)
        key_log.setLevel(level)
        os.close(fd)
    assert handler.fired


def test_a_rotation_between_wrap_and_header_write_does_not_strand_the_file(
    spool: EncryptedSpool, key_file: Path
) -> None:
    """A writer wraps its data key, then writes the header; a rotation in another process
    may run in between (the server writes jobs while `spoolvault key rotate` runs).

    Bug: key_usage() skips a temp file whose header is not written yet, so rotate_keys
    retires the KEK the writer just used, and the job is committed under a retired key:
    unreadable forever. The interleaving is forced with a provider whose wrap() runs the
    other process's rotation (its own provider instance, lock and spool object) right
    after wrapping.
    """

    class RotatedMeanwhile(KeyFileProvider):
        reports: list[object] = []  # noqa: RUF012

        def wrap(self, data_key: bytes) -> tuple[bytes, bytes]:
            out = super().wrap(data_key)
            if not self.reports:
                other = EncryptedSpool(spool.directory, KeyFileProvider(self.path))
                self.reports.append(rotate_keys(other))
            return out

    racing = EncryptedSpool(spool.directory, RotatedMeanwhile(key_file), chunk_size=CS)
    data = doc(2 * CS + 3)
    info = store(racing, data)
    assert RotatedMeanwhile.reports
    assert EncryptedSpool(spool.directory, KeyFileProvider(key_file)).read_all(info.name) == data


# -- orphans -----------------------------------------------------------------------------------


def test_orphans_are_old_unknown_files_and_temp_files(any_spool: Spool) -> None:
    d = any_spool.directory
    known = store(any_spool, doc(CS, 1))
    old_unknown = store(any_spool, doc(2 * CS, 2))
    fresh_unknown = store(any_spool, doc(CS, 3))
    old_writer = any_spool.create()
    old_writer.write(doc(CS + 1, 4))
    fresh_writer = any_spool.create()
    fresh_writer.write(b"x")
    (d / "notes.txt").write_bytes(b"not ours")
    (d / f".rewrap-{known.name}.spool").write_bytes(b"")
    for path in (
        any_spool.path(known.name),
        any_spool.path(old_unknown.name),
        old_writer.tmp_path,
        d / "notes.txt",
        d / f".rewrap-{known.name}.spool",
    ):
        make_old(path)

    found = any_spool.orphans([known.name], min_age=60)

    assert [(o.path, o.kind) for o in found] == sorted(
        [(any_spool.path(old_unknown.name), "spool"), (old_writer.tmp_path, "temp")],
        key=lambda t: t[0].name,
    )
    for o in found:
        assert o.size == o.path.stat().st_size and o.age_seconds >= 3500
    everything = any_spool.orphans([known.name], min_age=0)
    assert {o.path for o in everything} == {
        any_spool.path(old_unknown.name),
        any_spool.path(fresh_unknown.name),
        old_writer.tmp_path,
        fresh_writer.tmp_path,
    }

    # Removing an orphan shreds it when encrypted: a hard link shows its blocks.
    witness = d / "witness"
    os.link(any_spool.path(old_unknown.name), witness)
    for o in found:
        any_spool.remove_orphan(o)
        any_spool.remove_orphan(o)  # already gone: fine
    assert not any_spool.path(old_unknown.name).exists() and not old_writer.tmp_path.exists()
    key_block = witness.read_bytes()[32:HDR]
    if any_spool.encrypted:
        assert key_block == bytes(80)
    else:
        assert key_block == doc(2 * CS, 2)[32:HDR]
    witness.unlink()
    assert {o.path for o in any_spool.orphans([known.name], min_age=0)} == {
        any_spool.path(fresh_unknown.name),
        fresh_writer.tmp_path,
    }
    assert any_spool.read_all(known.name) == doc(CS, 1)
    fresh_writer.abort()
    old_writer.abort()


# -- the server lock ---------------------------------------------------------------------------


def test_a_second_server_lock_in_the_same_process_is_refused(any_spool: Spool) -> None:
    with (
        any_spool.server_lock(),
        pytest.raises(OperatorError, match="in use by another spoolvault server"),
        any_spool.server_lock(),
    ):
        pass
    with any_spool.server_lock():  # released on exit
        pass


LOCK_HOLDER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from spoolvault.spool.store import PlainSpool
    with PlainSpool(Path(sys.argv[1])).server_lock():
        print("locked", flush=True)
        sys.stdin.read()
    """
)


def test_a_second_server_lock_in_another_process_is_refused(plain: PlainSpool) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(plain.directory)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        with pytest.raises(OperatorError) as exc, plain.server_lock():
            pass
        assert str(plain.directory) in str(exc.value)
        fd = os.open(plain.directory / ".lock", os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        assert holder.wait(timeout=30) == 0
        assert holder.stdout is not None
        holder.stdout.close()
    with plain.server_lock():  # the holder exited: the lock is free
        pass


def test_the_store_locks_both_directories(spool: EncryptedSpool, plain: PlainSpool) -> None:
    both = SpoolStore(spool, plain)
    with both.server_lock():
        for one in (spool, plain):
            with pytest.raises(OperatorError), one.server_lock():
                pass
    assert both.spool(True) is spool and both.spool(False) is plain
    w = both.create(encrypted=True)
    w.write(b"x")
    make_old(w.tmp_path)
    enc, pl = both.recover()
    assert (enc.temp_files_removed, pl.temp_files_removed) == (1, 0)
    w.abort()
