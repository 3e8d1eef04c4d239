"""The spool store: where held jobs' documents wait, encrypted (EncryptedSpoolDir) or plain
(SpoolDir), behind one interface.

Writes are atomic: a ``.tmp-`` file in the same directory, fsync, rename, fsync of the
directory, so a crash never leaves a visible partial file. With encryption on, only
ciphertext is written (docs/spool-format.md); plaintext exists in memory one chunk at a
time. Reads yield only authenticated plaintext; ``verify`` checks a whole file without
yielding it. Deleting an encrypted file destroys its wrapped key first (crypto-shredding).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import re
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, ClassVar, Literal, Self, TypeGuard

from spoolvault.errors import (
    OperatorError,
    SpoolDecryptError,
    SpoolError,
    SpoolFileMissing,
    SpoolWriteError,
)
from spoolvault.spool import format as fmt
from spoolvault.spool.keys import KeyProvider
from spoolvault.util.fs import fsync_dir, start_writeback, write_all, write_atomic

log = logging.getLogger(__name__)

SUFFIX = ".spool"
TMP_PREFIX = ".tmp-"
SHREDDED_PREFIX = ".shredded-"  # crypto-shredded, waiting to be unlinked
REWRAP_PREFIX = ".rewrap-"
LOCK_NAME = ".lock"
_NAME_RE = re.compile(r"[0-9a-f]{32}")
_READ_BUFFER = 1 << 20
PENDING = "pending"  # key_usage(): a temp file whose header is not written yet
PENDING_MAX_AGE = 60.0


@dataclass(frozen=True)
class SpoolFile:
    """A committed spool file: what the job record stores about it."""

    name: str
    encrypted: bool
    size: int
    key_id: str | None = None
    format_version: int | None = None


def _scan(directory: Path) -> list[os.DirEntry[str]]:
    """A directory's entries, with the scandir handle closed even on early exit."""
    with os.scandir(directory) as entries:
        return list(entries)


def _check_name(name: str) -> str:
    if not _NAME_RE.fullmatch(name):
        raise SpoolError(f"invalid spool file name {name!r}")
    return name


def _space_error(directory: Path, exc: OSError) -> SpoolWriteError:
    reason = "no space left on device" if exc.errno == errno.ENOSPC else exc.strerror
    return SpoolWriteError(f"cannot write spool file in {directory}: {reason}")


class SpoolWriter(ABC):
    """Streams one document into a new spool file; nothing is visible until commit()."""

    def __init__(self, spool: Spool, name: str) -> None:
        self.spool = spool
        self.name = name
        self.tmp_path = spool.directory / f"{TMP_PREFIX}{self.name}{SUFFIX}"
        self.size = 0
        self._fd: int | None = None
        self._finished = False
        self._ended: SpoolFile | None = None  # end() was called
        try:
            self._fd = os.open(
                self.tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600
            )
        except OSError as exc:
            raise _space_error(spool.directory, exc) from exc

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self._finished:
            self.abort()

    def _check_open(self) -> None:
        if self._finished or self._ended is not None:
            raise RuntimeError("spool writer already finished")

    def _emit(self, data: bytes | bytearray | memoryview) -> None:
        assert self._fd is not None
        try:
            write_all(self._fd, data)
        except OSError as exc:
            self.abort()
            raise _space_error(self.spool.directory, exc) from exc

    @abstractmethod
    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append document bytes."""

    @abstractmethod
    def _finish(self) -> SpoolFile:
        """Write what is held back; return the file's description."""

    def end(self) -> SpoolFile:
        """Write what is held back and start writing the file out to the disk, without
        waiting; return the file's description. No more ``write``: ``commit`` is next.

        ``commit`` ends the file itself; ending several files first lets their writes to
        the disk overlap before each commit's fsync waits (bench/intake.py).
        """
        if self._ended is None:
            self._check_open()
            self._ended = self._finish()
            assert self._fd is not None
            start_writeback(self._fd, 0, 0)  # 0 bytes: to the end of the file
        return self._ended

    def commit(self, *, sync_dir: bool = True) -> SpoolFile:
        """Make the file durable and visible under its final name; return its description.

        With ``sync_dir=False`` the rename is not yet durable: the caller fsyncs the spool
        directory (once for several files) before anybody relies on the name.
        """
        if self._finished:
            raise RuntimeError("spool writer already finished")
        info = self.end()
        assert self._fd is not None
        final = self.spool.path(self.name)
        try:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None
            os.rename(self.tmp_path, final)
            if sync_dir:
                fsync_dir(self.spool.directory)
        except OSError as exc:
            self.abort()
            final.unlink(missing_ok=True)
            raise _space_error(self.spool.directory, exc) from exc
        self._finished = True
        return info

    def abort(self) -> None:
        """Discard the file. Safe to call more than once."""
        self._finished = True
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self.tmp_path.unlink(missing_ok=True)


class _PlainWriter(SpoolWriter):
    def __init__(self, spool: PlainSpool) -> None:
        super().__init__(spool, os.urandom(16).hex())

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._check_open()
        self._emit(data)
        self.size += len(data)

    def _finish(self) -> SpoolFile:
        return SpoolFile(self.name, encrypted=False, size=self.size)


# One small pool writes sealed batches to disk while the caller seals the next batch:
# os.write and AES-GCM both release the GIL, so encryption overlaps the I/O.
_IO_POOL = ThreadPoolExecutor(max_workers=8, thread_name_prefix="spool-io")
# Batches start small (a small job allocates little) and double up to the maximum, where
# the write and the sealing overlap best (bench/spool_throughput.py measured 8, 16, 32).
_FIRST_BATCH_CHUNKS = 4
_MAX_BATCH_CHUNKS = 32


def _immutable(data: bytes | bytearray | memoryview) -> TypeGuard[bytes | memoryview]:
    """True if nobody can change these bytes after write() returns."""
    if isinstance(data, bytes):
        return True
    return isinstance(data, memoryview) and isinstance(data.obj, bytes)


class _EncryptedWriter(SpoolWriter):
    """Seals chunks into a batch buffer (no per-chunk allocation) and writes whole batches.

    Two batch buffers alternate: one is being written by the I/O pool while the other is
    filled, so at most two batches (4 MiB at 64 KiB chunks) exist per writer, whatever the
    job size.
    """

    def __init__(self, spool: EncryptedSpool) -> None:
        # The file's name is its nonce: the MAC then binds the header to the name, so whole
        # files swapped between jobs are detected (docs/spool-format.md).
        file_nonce = os.urandom(fmt.FILE_NONCE_LEN)
        super().__init__(spool, file_nonce.hex())
        try:
            data_key = os.urandom(fmt.DATA_KEY_LEN)
            self._kek_id, wrapped = spool.keys.wrap(data_key)
            header = fmt.seal_header(
                data_key=data_key,
                file_nonce=file_nonce,
                kek_id=self._kek_id,
                wrapped_key=wrapped,
                chunk_size=spool.chunk_size,
            )
        except BaseException:
            self.abort()
            raise
        self._sealer = fmt.ChunkSealer(data_key, file_nonce)
        del data_key
        self._chunk = spool.chunk_size
        # Holds back up to one chunk: a chunk is sealed only once we know whether it is last.
        self._held = bytearray()
        self._held_ref: bytes | memoryview | None = None
        self._cap = _FIRST_BATCH_CHUNKS * (self._chunk + fmt.TAG_LEN)
        self._out = bytearray(self._cap)
        self._spare = bytearray()
        self._pos = 0
        self._pending: Future[None] | None = None
        # The header goes to disk at once: key rotation must see which KEK this file uses
        # (key_usage), however long the client takes to send the document.
        self._emit(header.to_bytes())

    def _seal(self, chunk: bytes | bytearray | memoryview, *, last: bool) -> None:
        n = len(chunk) + fmt.TAG_LEN
        if self._pos + n > self._cap:
            self._flush()
        with memoryview(self._out) as out:
            self._sealer.seal_into(chunk, out[self._pos : self._pos + n], last=last)
        self._pos += n

    def _flush(self) -> None:
        """Hand the full buffer to the I/O pool and continue in the other one."""
        self._wait()
        buf, n = self._out, self._pos
        self._pending = _IO_POOL.submit(self._write_out, buf, n)
        self._cap = min(2 * self._cap, _MAX_BATCH_CHUNKS * (self._chunk + fmt.TAG_LEN))
        self._out = self._spare if len(self._spare) >= self._cap else bytearray(self._cap)
        self._spare = buf
        self._pos = 0

    def _write_out(self, buf: bytearray, n: int) -> None:
        assert self._fd is not None
        offset = os.lseek(self._fd, 0, os.SEEK_CUR)  # one write in flight: writes are in order
        with memoryview(buf) as view:
            write_all(self._fd, view[:n])
        start_writeback(self._fd, offset, n)

    def _wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is None:
            return
        try:
            pending.result()
        except OSError as exc:
            self.abort()
            raise _space_error(self.spool.directory, exc) from exc

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._check_open()
        self.size += len(data)
        chunk = self._chunk
        ref = self._held_ref
        if ref is not None:
            if not data:
                return
            # More data follows the chunk held by reference: it is not the last one.
            self._held_ref = None
            if len(ref) == chunk:
                self._seal(ref, last=False)
            else:
                self._held += ref
        held = self._held
        if not held and len(data) <= chunk and _immutable(data):
            # Hold an immutable buffer by reference rather than copying it: with writes of
            # one chunk each (the common case), this saves a copy of every byte.
            self._held_ref = data
            return
        if len(held) + len(data) <= chunk:
            held += data
            return
        with memoryview(data) as view:
            # Complete the held-back chunk: more data follows, so it is not the last.
            k = chunk - len(held)
            if held:
                held += view[:k]
                self._seal(held, last=False)
                held.clear()
                view = view[k:]
            # Seal whole chunks straight from the caller's buffer, keeping the final
            # (possibly full) chunk back.
            while len(view) > chunk:
                self._seal(view[:chunk], last=False)
                view = view[chunk:]
            held += view

    def _finish(self) -> SpoolFile:
        ref, self._held_ref = self._held_ref, None
        self._seal(ref if ref is not None else self._held, last=True)
        self._held.clear()
        # The last batch is written here: handing it to the pool only to wait for it at
        # once costs a thread round trip per job (most jobs are one batch).
        self._wait()
        with memoryview(self._out) as view:
            self._emit(view[: self._pos])
        return SpoolFile(
            self.name,
            encrypted=True,
            size=self.size,
            key_id=self._kek_id.hex(),
            format_version=fmt.VERSION,
        )

    def abort(self) -> None:
        # Never close the descriptor under a write still in flight in the pool.
        pending, self._pending = getattr(self, "_pending", None), None
        if pending is not None:
            with contextlib.suppress(OSError):
                pending.result()
        super().abort()


@dataclass
class Recovery:
    """What recover() cleaned up after a crash."""

    temp_files_removed: int = 0
    rewraps_completed: int = 0
    rewraps_discarded: int = 0
    shredded_removed: int = 0
    orphans_removed: int = 0  # committed files no job names (SpoolStore.recover with known)


@dataclass(frozen=True)
class Orphan:
    """A file in a spool directory that no job record names."""

    path: Path
    kind: Literal["spool", "temp"]
    size: int
    age_seconds: float


class Spool(ABC):
    """One spool directory. Subclasses: EncryptedSpool, PlainSpool."""

    encrypted: ClassVar[bool]

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.directory)!r})"

    def path(self, name: str) -> Path:
        return self.directory / f"{_check_name(name)}{SUFFIX}"

    @abstractmethod
    def create(self) -> SpoolWriter:
        """Start a new file; use as a context manager and call commit()."""

    @abstractmethod
    def read(self, name: str) -> Iterator[bytes]:
        """Yield the document in chunks; each chunk is authenticated before it is yielded."""

    def verify(self, name: str) -> int:
        """Check a whole file without yielding it; return its plaintext size."""
        return sum(len(chunk) for chunk in self.read(name))

    def read_all(self, name: str) -> bytes:
        """The whole document (tests and small files only: memory grows with size)."""
        return b"".join(self.read(name))

    def delete(
        self, name: str, *, missing_ok: bool = False, defer_unlink: bool = False
    ) -> Path | None:
        """Remove a file durably.

        With ``defer_unlink`` an encrypted file is crypto-shredded now (its content is
        unreadable once this returns) and renamed out of the way; the caller unlinks the
        path returned, later (`discard`). Freeing the extents of a 100 MiB file takes
        ~20 ms, which a release need not wait for. Should the process die first, start-up
        recovery removes it.
        """
        path = self.path(name)
        try:
            if defer_unlink and self.encrypted:
                self._shred(path)
                later = self.directory / f"{SHREDDED_PREFIX}{name}{SUFFIX}"
                os.rename(path, later)
                return later
            self._destroy(path)
        except FileNotFoundError:
            if not missing_ok:
                raise SpoolFileMissing(f"spool file {path} does not exist") from None
            return None
        fsync_dir(self.directory)
        return None

    def discard(self, path: Path) -> None:
        """Unlink a file that `delete(..., defer_unlink=True)` set aside."""
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        fsync_dir(self.directory)

    def _shred(self, path: Path) -> None:
        """Make the file's content unrecoverable in place; plain files cannot be."""
        return None

    def _destroy(self, path: Path) -> None:
        self._shred(path)
        path.unlink()

    def names(self) -> list[str]:
        """Names of committed files, sorted."""
        out = []
        for entry in _scan(self.directory):
            stem = entry.name.removesuffix(SUFFIX)
            if entry.name.endswith(SUFFIX) and _NAME_RE.fullmatch(stem):
                out.append(stem)
        return sorted(out)

    def _open(self, name: str) -> BinaryIO:
        path = self.path(name)
        try:
            return open(path, "rb", buffering=_READ_BUFFER)
        except FileNotFoundError:
            raise SpoolFileMissing(f"spool file {path} does not exist") from None

    @contextlib.contextmanager
    def server_lock(self) -> Iterator[None]:
        """Held by the one server that owns this directory (two would corrupt each other)."""
        fd = os.open(self.directory / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise OperatorError(
                    f"spool directory {self.directory} is in use by another spoolvault "
                    f"server; each print provider needs its own spool directories"
                ) from None
            yield
        finally:
            os.close(fd)

    def recover(self, *, min_age: float = 0.0) -> Recovery:
        """Clean up after a crash: remove temp files older than ``min_age`` seconds.

        Call at start-up with the server lock held (then ``min_age=0`` is safe: no writer
        of this directory is running).
        """
        report = Recovery()
        now = time.time()
        for entry in _scan(self.directory):
            if entry.name.startswith(SHREDDED_PREFIX):  # already unreadable: just unlink
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    report.shredded_removed += 1
            elif entry.name.startswith(TMP_PREFIX):
                with contextlib.suppress(FileNotFoundError):
                    if now - entry.stat().st_mtime >= min_age:
                        os.unlink(entry.path)
                        report.temp_files_removed += 1
        if report.temp_files_removed or report.shredded_removed:
            fsync_dir(self.directory)
            log.info(
                "%s: removed %d incomplete spool files", self.directory, report.temp_files_removed
            )
        return report

    def orphans(self, known: Iterable[str], *, min_age: float) -> list[Orphan]:
        """Committed files that no job names, and temp files, older than ``min_age`` s.

        The age guard matters while a server runs: a file is committed just before its job
        record, so a brand-new file without a record is not an orphan yet.
        """
        known_set = set(known)
        now = time.time()
        out = []
        for entry in _scan(self.directory):
            stem = entry.name.removesuffix(SUFFIX)
            kind: Literal["spool", "temp"]
            if entry.name.startswith(TMP_PREFIX):
                kind = "temp"
            elif entry.name.endswith(SUFFIX) and _NAME_RE.fullmatch(stem):
                if stem in known_set:
                    continue
                kind = "spool"
            else:
                continue
            try:
                st = entry.stat()
            except FileNotFoundError:
                continue
            age = now - st.st_mtime
            if age >= min_age:
                out.append(Orphan(Path(entry.path), kind, st.st_size, age))
        return sorted(out, key=lambda o: o.path.name)

    def remove_orphan(self, orphan: Orphan) -> None:
        """Delete an orphan found by orphans() (crypto-shredding it when encrypted)."""
        with contextlib.suppress(FileNotFoundError):
            self._destroy(orphan.path)
        fsync_dir(self.directory)


class PlainSpool(Spool):
    """SpoolDir: documents stored as written, for when Spool File Encryption is off."""

    encrypted = False

    def create(self) -> SpoolWriter:
        return _PlainWriter(self)

    def read(self, name: str) -> Iterator[bytes]:
        with self._open(name) as f:
            while chunk := f.read(fmt.CHUNK_SIZE):
                yield chunk


class EncryptedSpool(Spool):
    """EncryptedSpoolDir: every file in the format of docs/spool-format.md."""

    encrypted = True

    def __init__(self, directory: Path, keys: KeyProvider, chunk_size: int = fmt.CHUNK_SIZE):
        if not fmt.MIN_CHUNK_SIZE <= chunk_size <= fmt.MAX_CHUNK_SIZE:
            raise ValueError(
                f"chunk size must be {fmt.MIN_CHUNK_SIZE} to {fmt.MAX_CHUNK_SIZE} bytes"
            )
        super().__init__(directory)
        self.keys = keys
        self.chunk_size = chunk_size

    def create(self) -> SpoolWriter:
        return _EncryptedWriter(self)

    def _authenticate(self, name: str, raw: bytes) -> tuple[fmt.Header, bytes]:
        """Parse and authenticate a header; return it with the data key."""
        header = fmt.parse_header(raw)
        data_key = self.keys.unwrap(header.kek_id, header.wrapped_key)
        header.check_mac(data_key)
        if header.file_nonce.hex() != name:
            log.warning(
                "spool file %s holds the header of file %s (swapped or renamed)",
                name,
                header.file_nonce.hex(),
            )
            raise SpoolDecryptError()
        return header, data_key

    def _open_header(self, name: str, f: BinaryIO) -> tuple[fmt.Header, bytes]:
        raw = f.read(fmt.HEADER_LEN)
        try:
            return self._authenticate(name, raw)
        except SpoolDecryptError:
            # A key rotation may be rewriting this header right now: its journal exists
            # until the in-place write is durable. Read once more after it settles.
            if not (self.directory / f"{REWRAP_PREFIX}{name}{SUFFIX}").exists():
                log.warning("spool file %s: header failed authentication", name)
                raise
            time.sleep(0.05)
            # pread, not seek+read: the buffered file would hand back the stale bytes.
            return self._authenticate(name, os.pread(f.fileno(), fmt.HEADER_LEN, 0))

    def read(self, name: str) -> Iterator[bytes]:
        with self._open(name) as f:
            header, data_key = self._open_header(name, f)
            opener = fmt.ChunkOpener(data_key, header.file_nonce)
            del data_key
            try:
                yield from fmt.iter_open(f, opener, header.chunk_size)
            except SpoolDecryptError:
                log.warning("spool file %s: payload failed authentication", name)
                raise

    def header(self, name: str) -> fmt.Header:
        """The parsed, unauthenticated header (for listing key ids and versions)."""
        with self._open(name) as f:
            return fmt.parse_header(f.read(fmt.HEADER_LEN))

    def _shred(self, path: Path) -> None:
        """Crypto-shred: zero the KEK id, wrapped key and MAC in place, and fsync."""
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        try:
            size = os.fstat(fd).st_size
            end = min(size, fmt.KEY_BLOCK_END)
            if end > fmt.KEY_BLOCK_START:
                os.pwrite(fd, bytes(end - fmt.KEY_BLOCK_START), fmt.KEY_BLOCK_START)
                os.fsync(fd)
        finally:
            os.close(fd)

    # -- key rotation ----------------------------------------------------------------

    def rewrap(self, name: str) -> bool:
        """Rewrap one file's data key under the current KEK; False if it already was."""
        current = self.keys.current()
        path = self.path(name)
        journal = self.directory / f"{REWRAP_PREFIX}{name}{SUFFIX}"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            raise SpoolFileMissing(f"spool file {path} does not exist") from None
        try:
            raw = os.pread(fd, fmt.HEADER_LEN, 0)
            header, data_key = self._authenticate(name, raw)
            if header.kek_id == current.id:
                return False
            new = fmt.seal_header(
                data_key=data_key,
                file_nonce=header.file_nonce,
                kek_id=current.id,
                wrapped_key=current.wrap(data_key),
                chunk_size=header.chunk_size,
            ).to_bytes()
            del data_key
            write_atomic(journal, new + hashlib.sha256(new).digest())
            os.pwrite(fd, new[fmt.KEY_BLOCK_START :], fmt.KEY_BLOCK_START)
            os.fsync(fd)
        finally:
            os.close(fd)
        journal.unlink()
        fsync_dir(self.directory)
        return True

    def recover(self, *, min_age: float = 0.0) -> Recovery:
        report = super().recover(min_age=min_age)
        for entry in _scan(self.directory):
            if entry.name.startswith(REWRAP_PREFIX):
                self._finish_rewrap(Path(entry.path), report)
            elif entry.name.endswith(SUFFIX) and not entry.name.startswith("."):
                with open(entry.path, "rb") as f:
                    raw = f.read(fmt.HEADER_LEN)
                if len(raw) == fmt.HEADER_LEN and not any(
                    raw[fmt.KEY_BLOCK_START : fmt.KEY_BLOCK_END]
                ):
                    os.unlink(entry.path)  # shredded, then the crash came before unlink
                    report.shredded_removed += 1
        fsync_dir(self.directory)
        return report

    def _finish_rewrap(self, journal: Path, report: Recovery) -> None:
        data = journal.read_bytes()
        new, digest = data[: fmt.HEADER_LEN], data[fmt.HEADER_LEN :]
        target = self.directory / journal.name.removeprefix(REWRAP_PREFIX)
        if hashlib.sha256(new).digest() == digest and len(new) == fmt.HEADER_LEN:
            with contextlib.suppress(FileNotFoundError):
                fd = os.open(target, os.O_RDWR | os.O_CLOEXEC)
                try:
                    os.pwrite(fd, new[fmt.KEY_BLOCK_START :], fmt.KEY_BLOCK_START)
                    os.fsync(fd)
                finally:
                    os.close(fd)
            report.rewraps_completed += 1
        else:
            report.rewraps_discarded += 1  # torn journal: the in-place write never began
        journal.unlink()

    def key_usage(self) -> Counter[str]:
        """How many files (committed or being written) name each KEK id.

        A fresh temp file without a full header yet counts as PENDING: its writer may
        have wrapped its data key under a KEK that is about to be retired.
        """
        usage: Counter[str] = Counter()
        now = time.time()
        for entry in _scan(self.directory):
            if not entry.name.endswith(SUFFIX) or entry.name.startswith(REWRAP_PREFIX):
                continue
            try:
                with open(entry.path, "rb") as f:
                    raw = f.read(fmt.HEADER_LEN)
                    age = now - os.fstat(f.fileno()).st_mtime
            except FileNotFoundError:
                continue
            if len(raw) < fmt.HEADER_LEN and entry.name.startswith(TMP_PREFIX):
                if age < PENDING_MAX_AGE:  # older: a crashed writer, removed by recovery
                    usage[PENDING] += 1
                continue
            with contextlib.suppress(SpoolError):
                usage[fmt.parse_header(raw).kek_id.hex()] += 1
        return usage


@dataclass
class Rotation:
    """The outcome of rotate_keys()."""

    new_key: str
    rewrapped: int = 0
    unchanged: int = 0  # files already under the new key when the last pass ended
    failed: dict[str, str] = field(default_factory=dict)
    retired: list[str] = field(default_factory=list)
    still_used: dict[str, int] = field(default_factory=dict)


def rotate_keys(spool: EncryptedSpool, *, passes: int = 3) -> Rotation:
    """Make a new current KEK, rewrap every file's header, retire the old KEKs nothing uses.

    Safe while a server runs: files committed during the rotation are caught by a further
    pass; a key still named by some file (one being written, or one that failed) stays
    active and is reported, never retired.
    """
    keys = spool.keys
    with keys.exclusive():
        report = Rotation(new_key=keys.rotate().id)
        for _ in range(passes):
            changed = 0
            names = spool.names()
            for name in names:
                if name in report.failed:
                    continue
                try:
                    changed += spool.rewrap(name)
                except SpoolFileMissing:
                    continue  # released or cancelled meanwhile
                except SpoolError as exc:
                    report.failed[name] = str(exc)
            report.rewrapped += changed
            if not changed:
                report.unchanged = len(names) - len(report.failed)
                break
        usage = spool.key_usage()
        deadline = time.monotonic() + 1.0
        while usage[PENDING] and time.monotonic() < deadline:
            time.sleep(0.01)  # a writer is between wrapping its key and writing the header
            usage = spool.key_usage()
        pending = usage.pop(PENDING, 0)
        for info in keys.list_keys():
            if info.state == "active":
                if usage.get(info.id) or pending:
                    report.still_used[info.id] = usage[info.id]
                else:
                    keys.retire(info.id)
                    report.retired.append(info.id)
    return report


@dataclass(frozen=True)
class SpoolStore:
    """Both spool directories of a print provider."""

    encrypted: EncryptedSpool
    plain: PlainSpool

    def spool(self, encrypted: bool) -> Spool:
        return self.encrypted if encrypted else self.plain

    def create(self, *, encrypted: bool) -> SpoolWriter:
        return self.spool(encrypted).create()

    @contextlib.contextmanager
    def server_lock(self) -> Iterator[None]:
        with self.encrypted.server_lock(), self.plain.server_lock():
            yield

    def recover(
        self, known: Callable[[bool], Iterable[str]] | None = None
    ) -> tuple[Recovery, Recovery]:
        """Clean up both directories after a crash (server lock held, nothing serving yet).

        With ``known`` (encrypted -> the spool names job records hold), committed files that
        no job names are removed too (crypto-shredded when encrypted): a crash between a
        file's commit and its job record, or between a job's "printed" and its shred, leaves
        such a file, which no client was ever told about.
        """
        reports = []
        for spool in (self.encrypted, self.plain):
            report = spool.recover()
            if known is not None:
                names = set(known(spool.encrypted))
                for orphan in spool.orphans(names, min_age=0.0):
                    if orphan.kind == "spool":
                        spool.remove_orphan(orphan)
                        report.orphans_removed += 1
                if report.orphans_removed:
                    log.info(
                        "%s: removed %d spool files no job names (interrupted intake or shred)",
                        spool.directory,
                        report.orphans_removed,
                    )
            reports.append(report)
        return reports[0], reports[1]
