"""A small IPP printer over a real socket, for the faults ippeveprinter cannot stage on cue.

It speaks the real protocol: HTTP/1.1 with a chunked request body (what spoolvault's
delivery sends), an RFC 8010 Print-Job request, an RFC 8010 response. Each connection takes
the next behaviour of its script (the last one repeats):

- ``accept``: read the whole request, answer successful-ok with a job-id;
- ``busy``: read the whole request, answer server-error-busy (RFC 8011 B.1.6.8);
- ``cut:N``: read N bytes of the body, then reset the connection (the printer died);
- ``hang``: read the whole request, then answer nothing for ``hang_seconds``;
- ``slow``: read the body at about ``slow_rate`` bytes per second, then accept.

Every complete request is kept (``complete``): a job the printer has whole, which it would
print; ``accepted`` counts those it answered with success.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

from spoolvault.ipp.codec import IppMessage, Parser, encode
from spoolvault.ipp.constants import GroupTag, Status, ValueTag


@dataclass
class FakePrinter:
    script: list[str]
    hang_seconds: float = 30.0
    slow_rate: float = 256 * 1024
    complete: list[bytes] = field(default_factory=list)  # documents received whole
    accepted: int = 0
    connections: int = 0
    _sock: socket.socket | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> FakePrinter:
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        threading.Thread(target=self._accept_loop, daemon=True).start()
        return self

    @property
    def uri(self) -> str:
        assert self._sock is not None
        return f"ipp://127.0.0.1:{self._sock.getsockname()[1]}/ipp/print"

    def stop(self) -> None:
        self._stop.set()
        if self._sock is not None:
            self._sock.close()

    def _accept_loop(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(60)
        f = conn.makefile("rb")
        try:
            head = b""
            while not head.endswith(b"\r\n\r\n"):
                line = f.readline()
                if not line:
                    return
                head += line
            if b"transfer-encoding: chunked" not in head.lower():
                # A status request (Get-Printer-Attributes before a release): answered
                # idle, with no formats, and not one of the scripted print connections.
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                request = Parser().feed(f.read(length))
                assert request is not None, head
                conn.sendall(_status_answer(request))
                return
            with self._lock:
                self.connections += 1
                behaviour = self.script[min(self.connections, len(self.script)) - 1]
            body = bytearray()
            cut = int(behaviour.split(":")[1]) if behaviour.startswith("cut:") else None
            while True:
                size = int(f.readline().split(b";")[0], 16)
                if size == 0:
                    f.readline()
                    break
                if behaviour == "slow":
                    time.sleep(size / self.slow_rate)
                body += f.read(size)
                f.read(2)
                if cut is not None and len(body) >= cut:
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    return
            parser = Parser()
            request = parser.feed(bytes(body))
            assert request is not None
            with self._lock:
                self.complete.append(parser.rest)
            if behaviour == "hang":
                self._stop.wait(self.hang_seconds)
                return
            ok = behaviour != "busy"
            status = Status.SUCCESSFUL_OK if ok else Status.SERVER_ERROR_BUSY
            conn.sendall(_answer(request, status, job_id=len(self.complete)))
            if ok:
                with self._lock:
                    self.accepted += 1
        except OSError:
            return
        finally:
            f.close()
            with contextlib.suppress(OSError):
                conn.close()


def _status_answer(request: IppMessage) -> bytes:
    resp = IppMessage.response(request, Status.SUCCESSFUL_OK)
    resp.add_group(GroupTag.PRINTER).add("printer-state", ValueTag.ENUM, 3)
    return _http(encode(resp))


def _http(body: bytes) -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/ipp\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\nConnection: close\r\n\r\n"
        + body
    )


def _answer(request: IppMessage, status: int, job_id: int) -> bytes:
    resp = IppMessage.response(request, status)
    if status == Status.SUCCESSFUL_OK:
        job = resp.add_group(GroupTag.JOB)
        job.add("job-id", ValueTag.INTEGER, job_id)
        job.add("job-state", ValueTag.ENUM, 3)
    return _http(encode(resp))
