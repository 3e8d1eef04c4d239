"""LPD intake: the Line Printer Daemon protocol of RFC 1179, as a hold queue.

One command per connection (RFC 1179 §3; cups-lpd does the same). A command is one octet,
the queue name and operands separated by spaces, and LF:

    01 queue LF                  print any waiting jobs: acknowledged, nothing to start
    02 queue LF                  receive a job, then subcommands (§6):
       01 LF                       abort: forget everything received on this connection
       02 count SP cfname LF       control file: count octets + NUL, acknowledged
       03 count SP dfname LF       data file: count octets + NUL, acknowledged
    03 queue SP list LF          queue state, short form: a text listing (§5.3)
    04 queue SP list LF          queue state, long form (§5.4)
    05 queue SP agent SP list LF remove jobs (§5.5)

Acknowledgements are one octet: 0 for yes, anything else for no (§6; we send 1). A
malformed or refused command or subcommand gets a 1 and the connection is closed; a client
that resets the connection or stays silent for ``idle_timeout`` seconds loses what it sent
on that connection (its spooled files are deleted), never the server.

Jobs. Files may come in either order (§6: "the control file ... and the data files ... may
be sent in any order"): BSD lpd and LPRng send the data files first, Windows' LPR port
monitor and the CUPS lpd backend the control file first. Each data file streams straight
into an (encrypted) spool file as it arrives; it is never held in memory. When the control
file and every data file it names have arrived, one held job is recorded per data file, and
only then is the last file acknowledged (durable before acknowledged). More jobs may follow
on the same connection (BSD lpd forwards a whole queue that way). At the end of the
connection anything incomplete (a control file whose data files never came, data files no
control file named) is deleted and logged.

Data file length. RFC 1179 §7 (data file): "The total number of bytes in the stream may be
sent as the first operand, otherwise the field should be cleared to 0." cups-lpd reads a 0
as an empty file; LPRng and Brooksnet's RPM read everything until the client closes the
connection, and so do we -- as do we for an impossibly large count (>= 1 TiB): Windows'
Standard TCP/IP port sends one when "LPR Byte Counting Enabled" is off, then closes after
the data. Such a data file must come after the control file (nothing can follow it), is
stored as received (no NUL is stripped) and ends the connection.

Owner and title. The control file's ``P`` line (user identification) is the owner, else its
``L`` line (banner user name), else the user name in the data file's PJL header, else
"unknown" with a warning (held for an administrator). The title is the ``J`` line, else the
``N`` line (source file name), else the PJL job name, else "LPD job from <address>".
Print lines (``c d f g l n o p r t v``, §7.2) name the data files; a file named by several
print lines (copies, from ``lpr -#n``) is one job. Every document is stored as
application/octet-stream and delivered unchanged.

Queue state lists the named users' held jobs (job number, owner, title, size); with no user
named it only says how many jobs are held. Remove jobs cancels only jobs owned by the agent
(the requesting user): by job number, or all of them when the agent names itself. RFC 1179
lets the agent "root" remove anybody's jobs; there is no authentication in LPD, so we give
"root" no such power.

Security: nothing in LPD is authenticated. The owner name is what the client claims; it
decides whose release station shows the job, and releasing still needs that owner's
credentials at the printer (docs/intake.md).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import unicodedata
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

from spoolvault.db import Job, JobState
from spoolvault.documents.pjl import PjlInfo, PjlScanner
from spoolvault.errors import ClientError, SpoolvaultError
from spoolvault.intake import IntakeServer, close_connection, finish_durably, peer_host
from spoolvault.jobs.errors import JobNotFound, JobNotPossible
from spoolvault.jobs.intake import UNKNOWN_OWNER, Scan, Submission
from spoolvault.jobs.service import JobService
from spoolvault.netaddr import same_address
from spoolvault.settings import HIDDEN_TITLE, HIDE_DOCUMENT_NAMES, IPP_AUTHENTICATION_REQUIRED
from spoolvault.spool.store import SpoolFile
from spoolvault.util.text import MAX_NAME_BYTES, clean_text, decode_text
from spoolvault.util.threads import in_thread

log = logging.getLogger(__name__)

ACK = b"\x00"
NAK = b"\x01"

# RFC 1179 §7.2: the print-file lines ("c" CIF, "d" DVI, "f" formatted, "g" plot, "l" leave
# control characters, "n" ditroff, "o" PostScript, "p" pr, "r" FORTRAN, "t" troff, "v"
# raster). The same set cups-lpd accepts.
PRINT_LETTERS = frozenset("cdfglnoprtv")
# A data file count this large is a client that does not know the length (see above).
UNKNOWN_LENGTH = 1 << 40
MAX_COUNT_DIGITS = 20
MAX_OPERANDS = 64
LISTED_JOBS = 100  # per user in a queue-state reply
HELD_STATES = (JobState.HELD, JobState.FAILED)
REMOVABLE_STATES = (JobState.HELD, JobState.FAILED, JobState.INCOMING)


class LpdError(ClientError):
    """A malformed or refused LPD command: answered with a negative acknowledgement."""


@dataclass(frozen=True)
class LpdLimits:
    """Bounds of the LPD listener, so no client can hold it (or memory) hostage."""

    idle_timeout: float = 300.0  # seconds without a byte before the connection is dropped
    max_connections: int = 64  # concurrent connections (see evict_idle_after)
    # At the cap, a new connection replaces the slowest one open this long (seconds) that
    # is silent as long or trickles (IntakeServer); otherwise the new one is reset at once.
    evict_after: float = 2.0
    max_line: int = 1024  # octets in a command, subcommand or control file line
    max_control_file: int = 64 * 1024  # octets in a control file
    max_data_files: int = 64  # data files received and not yet recorded, per connection
    read_size: int = 256 * 1024  # octets per socket read of a data file


@dataclass(frozen=True)
class Command:
    """A daemon command (RFC 1179 §5)."""

    code: int
    queue: str
    operands: tuple[str, ...] = ()


@dataclass(frozen=True)
class Subcommand:
    """A receive-job subcommand (RFC 1179 §6): abort (1), control file (2), data file (3)."""

    code: int
    count: int = 0
    name: str = ""


@dataclass
class Document:
    """One data file a control file asks to print."""

    name: str
    letter: str  # the print line's letter ("l", "o", "f", ...)
    source: str = ""  # the "N" line: the file name on the client


@dataclass
class ControlFile:
    """What a control file (RFC 1179 §7) says about a job."""

    host: str = ""
    user: str = ""  # P
    banner_user: str = ""  # L
    job_name: str = ""  # J
    documents: list[Document] = field(default_factory=list)

    @property
    def data_names(self) -> list[str]:
        """The data files it names, each once, in order."""
        return [doc.name for doc in self.documents]


def _has_controls(text: str) -> bool:
    return any(unicodedata.category(ch) == "Cc" for ch in text)


def _token(text: str, what: str) -> str:
    if len(text.encode("utf-8")) > MAX_NAME_BYTES:
        raise LpdError(f"{what} is longer than {MAX_NAME_BYTES} octets")
    if _has_controls(text):
        raise LpdError(f"{what} contains control characters")
    return text


def parse_command(line: bytes) -> Command:
    """Parse a daemon command line (without its LF); LpdError if it is malformed."""
    if not line:
        raise LpdError("empty command")
    code = line[0]
    if code not in (1, 2, 3, 4, 5):
        raise LpdError(f"unknown command 0x{code:02x}")
    parts = decode_text(line[1:].rstrip(b"\r")).split()
    if not parts:
        raise LpdError("command names no queue")
    if len(parts) > MAX_OPERANDS + 1:
        raise LpdError(f"more than {MAX_OPERANDS} operands")
    queue = _token(parts[0], "queue name")
    operands = tuple(_token(op, "operand") for op in parts[1:])
    if code in (1, 2):
        operands = ()  # RFC 1179 §5.1, §5.2: the queue is the only operand
    if code == 5 and not operands:
        raise LpdError("remove-jobs command names no user (agent)")
    return Command(code, queue, operands)


def parse_subcommand(line: bytes) -> Subcommand:
    """Parse a receive-job subcommand line (without its LF); LpdError if it is malformed."""
    if not line:
        raise LpdError("empty subcommand")
    code = line[0]
    if code == 1:
        return Subcommand(1)
    if code not in (2, 3):
        raise LpdError(f"unknown receive-job subcommand 0x{code:02x}")
    parts = decode_text(line[1:].rstrip(b"\r")).split()
    if len(parts) != 2:
        raise LpdError("file subcommand needs a byte count and a file name")
    count, name = parts
    if not (count.isascii() and count.isdigit()) or len(count) > MAX_COUNT_DIGITS:
        raise LpdError("file subcommand has a malformed byte count")
    return Subcommand(code, int(count), _token(name, "file name"))


def parse_control_file(data: bytes, *, max_line: int = LpdLimits.max_line) -> ControlFile:
    """Parse a control file (RFC 1179 §7); unknown lines are ignored, as the RFC asks."""
    cf = ControlFile()
    by_name: dict[str, Document] = {}
    pending_source = ""
    last: Document | None = None
    lines = data.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()
    for raw in lines:
        raw = raw.rstrip(b"\r")
        if len(raw) > max_line:
            raise LpdError(f"control file line longer than {max_line} octets")
        if not raw:
            continue
        letter, operand = chr(raw[0]), raw[1:]
        if letter in PRINT_LETTERS:
            name = decode_text(operand).strip()
            if not name:
                continue
            doc = by_name.get(name)
            if doc is None:
                doc = by_name[name] = Document(name, letter, pending_source)
                cf.documents.append(doc)
                pending_source = ""
            last = doc
        elif letter == "N":
            # BSD lpr and the CUPS lpd backend write N after a file's print lines, cups-lpd
            # reads it as naming the next one: take it for the last file still unnamed,
            # else keep it for the next print line.
            source = clean_text(operand)
            if last is not None and not last.source:
                last.source = source
            else:
                pending_source = source
        elif letter == "H" and not cf.host:
            cf.host = clean_text(operand)
        elif letter == "P" and not cf.user:
            cf.user = clean_text(operand)
        elif letter == "L" and not cf.banner_user:
            cf.banner_user = clean_text(operand)
        elif letter == "J" and not cf.job_name:
            cf.job_name = clean_text(operand)
    return cf


async def serve_lpd(
    jobs: JobService,
    sock: socket.socket,
    *,
    queue: str = "secure",
    limits: LpdLimits | None = None,
) -> asyncio.AbstractServer:
    """Serve LPD intake on the bound, listening ``sock``; jobs go to ``queue``.

    Clients may name the queue ``secure`` or ``queue`` (case-insensitive); any other queue
    name is refused.
    """
    limits = limits or LpdLimits()
    accepted = frozenset({"secure", queue.lower()})
    server = IntakeServer("LPD", limits.max_connections, limits.evict_after)

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _Session(jobs, queue, accepted, limits, reader, writer).run()

    return await server.start(session, sock, limit=max(limits.max_control_file, 64 * 1024))


@dataclass
class _Data:
    """A received data file, already committed to the spool."""

    spool_file: SpoolFile
    scan: Scan
    pjl: PjlInfo


class _Progress:
    consumed = False


async def _record_spooled(
    jobs: JobService, sub: Submission, spool_file: SpoolFile, scan: Scan
) -> Job:
    """Record a held job for a file already spooled (a data file that came first)."""
    return await jobs.record(sub, spool_file, scan)


class _Session:
    """One LPD connection: one command, and for "receive job" its files and jobs."""

    def __init__(
        self,
        jobs: JobService,
        queue: str,
        accepted: frozenset[str],
        limits: LpdLimits,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.jobs = jobs
        self.queue = queue
        self.accepted = accepted
        self.limits = limits
        self.reader = reader
        self.writer = writer
        self.peer = peer_host(writer)
        self.control: ControlFile | None = None
        self.data: dict[str, _Data] = {}

    async def run(self) -> None:
        graceful = False
        try:
            await self._serve()
            graceful = True
        except asyncio.CancelledError:
            log.info(
                "LPD connection from %s ended by the server (stopping, or making room)",
                self.peer,
            )
            raise
        except LpdError as exc:
            log.warning("LPD request from %s refused: %s", self.peer, exc)
            graceful = await self._send(NAK)
        except TimeoutError:
            log.warning(
                "LPD connection from %s idle for %g s; dropped", self.peer, self.limits.idle_timeout
            )
        except OSError as exc:
            log.warning("LPD connection from %s failed: %s", self.peer, exc)
        except SpoolvaultError as exc:
            log.error("LPD job from %s could not be kept: %s", self.peer, exc)
            graceful = await self._send(NAK)
        except Exception:
            log.exception("LPD request from %s: internal error", self.peer)
            graceful = await self._send(NAK)
        finally:
            self._discard("the transfer did not complete")
            await close_connection(self.writer, graceful=graceful)

    async def _serve(self) -> None:
        line = await self._line()
        if line is None:
            return  # connected and closed: nothing asked
        cmd = parse_command(line)
        if cmd.code in (1, 2) and not self._known(cmd.queue):
            raise LpdError(f"no queue named {cmd.queue!r}")
        if cmd.code == 1:
            await self._send(ACK)  # RFC 1179 §5.1; a held queue has nothing to start
        elif cmd.code == 2:
            await self._receive_job()
        elif cmd.code in (3, 4):
            await self._reply(await self._queue_state(cmd, long=cmd.code == 4))
        else:
            await self._reply(await self._remove(cmd))

    def _known(self, queue: str) -> bool:
        return queue.lower() in self.accepted

    # -- I/O ---------------------------------------------------------------------------

    async def _send(self, data: bytes) -> bool:
        """Write to the client; False if it is gone."""
        try:
            self.writer.write(data)
            async with asyncio.timeout(self.limits.idle_timeout):
                await self.writer.drain()
        except OSError:
            return False
        return True

    async def _reply(self, text: str) -> None:
        await self._send(text.encode("utf-8"))

    async def _line(self) -> bytes | None:
        """The next LF-terminated line, without LF; None at a clean end of the connection."""
        try:
            async with asyncio.timeout(self.limits.idle_timeout):
                line = await self.reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                raise LpdError("connection closed in the middle of a command") from None
            return None
        except asyncio.LimitOverrunError:
            raise LpdError(f"command longer than {self.limits.max_line} octets") from None
        if len(line) - 1 > self.limits.max_line:
            raise LpdError(f"command longer than {self.limits.max_line} octets")
        return line[:-1]

    async def _exactly(self, n: int, what: str) -> bytes:
        try:
            async with asyncio.timeout(self.limits.idle_timeout):
                return await self.reader.readexactly(n)
        except asyncio.IncompleteReadError:
            raise LpdError(f"connection closed in the middle of {what}") from None

    async def _read(self, n: int) -> bytes:
        async with asyncio.timeout(self.limits.idle_timeout):
            return await self.reader.read(n)

    async def _nul(self, what: str) -> None:
        # RFC 1179 §6.2, §6.3: the file's octets are followed by one zero octet.
        if await self._exactly(1, what) != b"\x00":
            raise LpdError(f"{what} is not followed by a zero octet")

    # -- receive job (RFC 1179 §5.2, §6) -----------------------------------------------

    async def _receive_job(self) -> None:
        await self._send(ACK)
        while True:
            line = await self._line()
            if line is None:
                break
            sub = parse_subcommand(line)
            if sub.code == 1:
                log.info("LPD job from %s aborted by the client", self.peer)
                self._discard(None)
                return
            if sub.code == 2:
                await self._control_file(sub)
            elif await self._data_file(sub):
                break  # a data file of unknown length ran to the end of the connection
        self._end_of_transfer()

    async def _control_file(self, sub: Subcommand) -> None:
        if self.control is not None:
            raise LpdError("a second control file before the first one's data files")
        if not 0 < sub.count <= self.limits.max_control_file:
            raise LpdError(
                f"control file of {sub.count} octets (1 to {self.limits.max_control_file})"
            )
        await self._send(ACK)
        data = await self._exactly(sub.count, "a control file")
        await self._nul("control file")
        self.control = parse_control_file(data, max_line=self.limits.max_line)
        await self._record_if_complete()
        await self._send(ACK)

    async def _data_file(self, sub: Subcommand) -> bool:
        """Receive a data file; True if it ran to the end of the connection."""
        if sub.name in self.data:
            raise LpdError(f"data file {sub.name} sent twice")
        if len(self.data) >= self.limits.max_data_files:
            raise LpdError(f"more than {self.limits.max_data_files} data files")
        until_close = sub.count == 0 or sub.count >= UNKNOWN_LENGTH
        if until_close and self.control is None:
            raise LpdError(
                "a data file of unknown length (count 0) must come after the control file"
            )
        await self._send(ACK)
        self.data[sub.name] = await self._spool(None if until_close else sub.count)
        await self._record_if_complete()
        await self._send(ACK)
        return until_close

    async def _spool(self, count: int | None) -> _Data:
        """Stream ``count`` octets and their NUL (or all until the client closes) to a file."""
        scanner = PjlScanner()
        progress = _Progress()
        read_size = self.limits.read_size

        async def chunks() -> AsyncIterator[bytes]:
            if count is None:
                while chunk := await self._read(read_size):
                    scanner.feed(chunk)
                    yield chunk
            else:
                remaining = count
                while remaining:
                    chunk = await self._read(min(remaining, read_size))
                    if not chunk:
                        raise LpdError(
                            f"connection closed after {count - remaining} of {count} octets "
                            f"of a data file"
                        )
                    remaining -= len(chunk)
                    scanner.feed(chunk)
                    yield chunk
                await self._nul("data file")
            progress.consumed = True

        task = asyncio.ensure_future(self.jobs.spool(chunks()))
        spool_file, scan = await finish_durably(task, lambda: progress.consumed)
        return _Data(spool_file, scan, scanner.result())

    def _complete(self) -> bool:
        return self.control is not None and all(n in self.data for n in self.control.data_names)

    async def _record_if_complete(self) -> None:
        """Hold one job per data file once the control file and all its files are here."""
        if not self._complete():
            return
        control = self.control
        assert control is not None
        docs = control.documents
        if not docs:
            log.warning(
                "LPD control file from %s names no data file to print; nothing held", self.peer
            )
        for i, doc in enumerate(docs, start=1):
            data = self.data.pop(doc.name)
            if data.spool_file.size == 0:
                log.warning("LPD data file %s from %s is empty; no job", doc.name, self.peer)
                self._delete([data])
                continue
            sub = self._submission(control, doc, data.pjl, i, len(docs))
            job = await finish_durably(
                asyncio.ensure_future(_record_spooled(self.jobs, sub, data.spool_file, data.scan)),
                lambda: True,
            )
            if job.owner == UNKNOWN_OWNER:
                log.warning(
                    "LPD job %d from %s has no owner (no P or L line in its control file, "
                    "no PJL user name); it is held as %r for an administrator",
                    job.id,
                    self.peer,
                    UNKNOWN_OWNER,
                )
            else:
                log.info(
                    "LPD job %d from %s held for %s (%d bytes)",
                    job.id,
                    self.peer,
                    job.owner,
                    job.size,
                )
        self.control = None
        self._discard("no control file names them")

    def _submission(
        self, control: ControlFile, doc: Document, pjl: PjlInfo, index: int, total: int
    ) -> Submission:
        owner = control.user or control.banner_user or pjl.owner or UNKNOWN_OWNER
        default = control.job_name or f"LPD job from {self.peer}"
        if total == 1:
            title = control.job_name or doc.source or pjl.title or default
        else:
            title = doc.source or pjl.title or f"{default} ({index} of {total})"
        return Submission(
            owner=owner,
            queue=self.queue,
            title=clean_text(title),
            originating_host=self.peer,
        )

    def _end_of_transfer(self) -> None:
        if self.control is not None:
            missing = [n for n in self.control.data_names if n not in self.data]
            log.warning(
                "LPD job from %s discarded: its data file(s) %s never came",
                self.peer,
                ", ".join(missing),
            )
            self.control = None
        self._discard("no control file named them")

    def _discard(self, why: str | None) -> None:
        """Delete the data files received and not recorded (their jobs were not accepted)."""
        if not self.data:
            return
        if why is not None:
            log.warning(
                "LPD data file(s) %s from %s deleted: %s", ", ".join(self.data), self.peer, why
            )
        files = list(self.data.values())
        self.data.clear()
        self._delete(files)

    def _delete(self, files: Iterable[_Data]) -> None:
        # On the event loop, not in a thread: this runs on error paths and during a
        # cancellation, where an await could be interrupted and leave a file behind.
        for data in files:
            sf = data.spool_file
            try:
                self.jobs.store.spool(sf.encrypted).delete(sf.name, missing_ok=True)
            except (OSError, SpoolvaultError) as exc:
                log.error("could not delete spool file %s: %s (an orphan now)", sf.name, exc)

    # -- queue state and removal (RFC 1179 §5.3 - §5.5) --------------------------------

    def _split(self, operands: Iterable[str]) -> tuple[list[str], set[int]]:
        users: list[str] = []
        ids: set[int] = set()
        for op in operands:
            if op.isascii() and op.isdigit() and len(op) <= 12:
                ids.add(int(op))
            elif op not in users:
                users.append(op)
        return users, ids

    async def _settings(self) -> dict[str, Any]:
        return await in_thread(self.jobs.settings)

    async def _queue_state(self, cmd: Command, *, long: bool) -> str:
        if not self._known(cmd.queue):
            return f"spoolvault: no queue named {clean_text(cmd.queue)}\n"
        users, ids = self._split(cmd.operands)
        header = f"{self.queue}: jobs are held until their owner releases them at a printer\n"
        settings = await self._settings()
        refused = bool(users) and _claims_refused(settings)
        if refused or not users:
            count = await in_thread(
                functools.partial(self.jobs.count, queue=self.queue, states=HELD_STATES)
            )
            if refused:
                return (
                    f"{header}{count} held job(s); listing a user's jobs over LPD is off, as "
                    "printing over IPP needs authentication here: see them at a release "
                    "station\n"
                )
            return (
                f"{header}{count} held job(s); name a user to list theirs "
                f"(lpq -P {self.queue} USER)\n"
            )
        hide = bool(settings[HIDE_DOCUMENT_NAMES])
        found: list[Job] = []
        for user in users:
            found += await in_thread(
                functools.partial(
                    self.jobs.list,
                    queue=self.queue,
                    owner=user,
                    states=HELD_STATES,
                    limit=LISTED_JOBS,
                )
            )
        found = sorted((j for j in found if not ids or j.id in ids), key=lambda j: j.id)
        if not found:
            return f"{header}no entries\n"
        lines = [header]
        if not long:
            lines.append(f"{'Rank':<7} {'Owner':<10} {'Job':<7} {'File(s)':<32} Total Size\n")
        for rank, job in enumerate(found, start=1):
            title = HIDDEN_TITLE if hide else clean_text(job.title) or "(untitled)"
            owner = clean_text(job.owner)
            state = "held" if job.state is JobState.HELD else job.state.value
            if long:
                lines.append(f"\n{owner}: {_ordinal(rank):<33} [job {job.id} {state}]\n")
                lines.append(f"        {title[:39]:<39} {job.size} bytes\n")
            else:
                lines.append(
                    f"{_ordinal(rank):<7} {owner[:10]:<10} {job.id:<7} {title[:32]:<32} "
                    f"{job.size} bytes\n"
                )
        return "".join(lines)

    async def _remove(self, cmd: Command) -> str:
        if not self._known(cmd.queue):
            return f"spoolvault: no queue named {clean_text(cmd.queue)}\n"
        if _claims_refused(await self._settings()):
            return (
                "spoolvault: removing jobs over LPD is off, as printing over IPP needs "
                "authentication here (an LPD user name is only a claim): cancel them at a "
                "release station or over authenticated IPP\n"
            )
        agent, *rest = cmd.operands
        users, ids = self._split(rest)
        agent_text = clean_text(agent)
        out: list[str] = []
        for user in users:
            if user != agent:
                out.append(
                    f"spoolvault: {agent_text} may remove only their own jobs, "
                    f"not those of {clean_text(user)}\n"
                )
        if agent in users:
            mine = await in_thread(
                functools.partial(
                    self.jobs.list, queue=self.queue, owner=agent, states=REMOVABLE_STATES
                )
            )
            ids |= {job.id for job in mine}
        if not ids and not users:
            return (
                "spoolvault: no job is printing on a hold queue; name the job numbers to "
                "remove, or your user name to remove all your held jobs\n"
            )
        for job_id in sorted(ids):
            out.append(await in_thread(self._remove_one, job_id, agent))
        return "".join(out)

    def _remove_one(self, job_id: int, agent: str) -> str:
        try:
            job = self.jobs.get(job_id)
            if job.owner != agent or job.queue != self.queue:
                raise JobNotFound(f"job {job_id} does not exist")
            if not same_address(job.originating_host, self.peer):
                # An LPD user name is only a claim: it removes a job only from the host
                # that submitted it (docs/security.md "Claimed owners").
                log.info(
                    "LPD: job %d not removed: %s asked from %s, not the submitting host",
                    job_id,
                    clean_text(agent),
                    self.peer,
                )
                return (
                    f"job {job_id}: not removed: it was submitted from another host; "
                    "cancel it at a release station or over authenticated IPP\n"
                )
            self.jobs.cancel(
                job_id,
                actor=agent,
                reason=f"removed over LPD by {clean_text(agent)} from {self.peer}",
            )
        except JobNotFound:
            return f"job {job_id}: no such job of {clean_text(agent)} on {self.queue}\n"
        except JobNotPossible as exc:
            return f"job {job_id}: not removed: {exc}\n"
        log.info("LPD: job %d removed by %s from %s", job_id, clean_text(agent), self.peer)
        return f"job {job_id} removed\n"


def _claims_refused(settings: dict[str, Any]) -> bool:
    """Whether an LPD user name may not act on jobs: IPP authentication is required, so a
    job's owner may be a proven identity, and LPD's user name is only a claim."""
    return bool(settings[IPP_AUTHENTICATION_REQUIRED])


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"
