"""Reference IPP servers for bench/intake.py: how fast can a server be here at all?

    python bench/ipp_sink.py MODE --dir DIR --port PORT

Each mode answers every POST (any IPP operation) with ``successful-ok``, a ``job-id``
and ``job-state`` pending-held, after doing only the durability work named below, and
nothing else: no IPP parsing beyond the request id, no encryption, no database, no
audit. They run on the same HTTP stack as spoolvault (uvicorn with httptools), so
bench/intake.py's ipptool clients drive them exactly as they drive spoolvault and cupsd.

- ``discard``: reads the request and answers. The ceiling of the clients and the HTTP
  stack.
- ``files``: every request body (the IPP header and the document) goes to its own file:
  written, then in a batch thread fsynced and renamed, with one directory fsync per
  batch. spoolvault's way of making a document durable (docs/intake.md), minus the
  encryption.
- ``log``: every request body is appended to one file, one fdatasync per batch: no file
  is created per job.
- ``log-record``: as ``log``, then a second thread appends one record line per job to a
  second file with one fdatasync per batch, and the answer waits for both: the cheapest
  form of intake's rule that a job's record is written after its document is durable,
  and its client hears success only after both (docs/intake.md).

Bodies larger than ``SMALL`` go to their own file in every durable mode (as spoolvault
streams a large document to its own spool file). ``GET /count`` answers the number of
requests made durable (or, for ``discard``, answered), which bench/intake.py checks.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import struct
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

MODES = ("discard", "files", "log", "log-record")
SMALL = 1 << 20

Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def _attr(tag: int, name: str, value: bytes) -> bytes:
    raw = name.encode()
    return bytes([tag]) + struct.pack(">H", len(raw)) + raw + struct.pack(">H", len(value)) + value


def ipp_ok(request_id: bytes, job_id: int) -> bytes:
    """successful-ok (IPP/2.0) with the job's id and state pending-held (4)."""
    return b"".join(
        [
            b"\x02\x00\x00\x00",
            request_id,
            b"\x01",
            _attr(0x47, "attributes-charset", b"utf-8"),
            _attr(0x48, "attributes-natural-language", b"en"),
            b"\x02",
            _attr(0x21, "job-id", struct.pack(">i", job_id)),
            _attr(0x23, "job-state", struct.pack(">i", 4)),
            b"\x03",
        ]
    )


class Stage:
    """A thread that runs ``handle`` on everything queued so far, then resolves each item's
    future (group commit, as spoolvault's BatchWorker)."""

    def __init__(self, handle: Callable[[list[Any]], None], then: Stage | None = None) -> None:
        self.handle, self.then = handle, then
        self.cond = threading.Condition()
        self.queue: list[tuple[Any, asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        threading.Thread(target=self._run, daemon=True).start()

    def put(self, items: list[tuple[Any, asyncio.AbstractEventLoop, asyncio.Future[None]]]) -> None:
        with self.cond:
            self.queue.extend(items)
            self.cond.notify()

    def _run(self) -> None:
        while True:
            with self.cond:
                while not self.queue:
                    self.cond.wait()
                batch, self.queue = self.queue, []
            self.handle([item for item, _, _ in batch])
            if self.then is not None:
                self.then.put(batch)
                continue
            for _, loop, future in batch:
                loop.call_soon_threadsafe(future.set_result, None)


class Sink:
    def __init__(self, mode: str, directory: Path) -> None:
        self.mode, self.dir = mode, directory
        self.ids = itertools.count(1)
        self.durable = 0
        self.lock = threading.Lock()
        self.log_fd = os.open(directory / "log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self.rec_fd = os.open(directory / "records", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self.record = Stage(self._records) if mode == "log-record" else None
        self.files = Stage(self._files, then=self.record)
        self.log = Stage(self._log, then=self.record)

    def _done(self, count: int) -> None:
        with self.lock:
            self.durable += count

    def _files(self, items: list[tuple[int, int]]) -> None:
        for job_id, fd in items:
            os.fsync(fd)
            os.close(fd)
            os.rename(self.dir / f".tmp-{job_id}", self.dir / f"job-{job_id}")
        dir_fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        if self.record is None:
            self._done(len(items))

    def _log(self, items: list[tuple[int, bytes]]) -> None:
        os.write(self.log_fd, b"".join(body for _, body in items))
        os.fdatasync(self.log_fd)
        if self.record is None:
            self._done(len(items))

    def _records(self, items: list[tuple[int, object]]) -> None:
        os.write(self.rec_fd, b"".join(b"job %d\n" % job_id for job_id, _ in items))
        os.fdatasync(self.rec_fd)
        self._done(len(items))

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["method"] == "GET":
            await _answer(send, b"text/plain", str(self.durable).encode())
            return
        job_id = next(self.ids)
        head = b""
        parts: list[bytes] = []
        size = 0
        fd: int | None = None
        while True:
            message = await receive()
            chunk = message.get("body", b"")
            if len(head) < 8:
                head += chunk[: 8 - len(head)]
            if self.mode != "discard" and chunk:
                size += len(chunk)
                if fd is None and (self.mode == "files" or size > SMALL):
                    fd = os.open(self.dir / f".tmp-{job_id}", os.O_WRONLY | os.O_CREAT | os.O_EXCL)
                    os.write(fd, b"".join(parts))
                    parts = []
                if fd is not None:
                    os.write(fd, chunk)
                else:
                    parts.append(chunk)
            if not message.get("more_body"):
                break
        if self.mode != "discard":
            loop = asyncio.get_running_loop()
            future = loop.create_future()
            if fd is not None:
                self.files.put([((job_id, fd), loop, future)])
            else:
                self.log.put([((job_id, b"".join(parts)), loop, future)])
            await future
        else:
            self._done(1)
        await _answer(send, b"application/ipp", ipp_ok(head[4:8], job_id))


async def _answer(send: Send, content_type: bytes, body: bytes) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    import uvicorn

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("mode", choices=MODES)
    ap.add_argument("--dir", type=Path, required=True, help="where durable modes write")
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    uvicorn.run(
        Sink(args.mode, args.dir),
        host="127.0.0.1",
        port=args.port,
        http="httptools",
        lifespan="off",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
