"""Who sent a raw print stream, and what it is called: read from its PJL job header.

Drivers that print to a raw socket (9100) or over LPD wrap the page description (PCL,
PostScript, PDF, ...) in HP's Printer Job Language:

    ESC%-12345X@PJL JOB NAME="Report.docx"            <- UEL, then PJL lines
    @PJL SET USERNAME="alice"
    @PJL ENTER LANGUAGE=POSTSCRIPT                     <- the header ends here
    %!PS-Adobe-3.0 ...                                 <- the document proper

This module only *looks* at the first bytes (at most ``SCAN_LIMIT``) of such a stream: the
caller keeps passing every byte, unchanged, to the spool, so the job reaches the printer
byte-identical. The scanner is incremental (feed it chunks as they arrive), bounded (it
keeps at most one unfinished line) and never raises on any input.

Syntax (HP PJL Technical Reference Manual, ch. 2 "PJL Command Syntax and Format"): a line is
``@PJL command [options]``, ended by LF, optionally preceded by CR (a CR alone ends a
line too: some drivers send CR-only line ends, and a line end missed would swallow the
document into the header, see ``PjlInfo.pjl_only``); keywords are
case-insensitive (we accept a lower-case ``@pjl`` too); string values are in double quotes
and contain neither quotes nor line ends; ``=`` may have spaces around it. The Universal
Exit Language ``ESC%-12345X`` may precede the first ``@PJL`` on the same line.

Which lines name the owner, in order of preference (first one present wins):

1. ``@PJL SET JOBATTR="JobAcct1=<user>"`` -- HP's Windows drivers (PCL 6 / PostScript,
   Unidrv-based) put the Windows logon name here with its real case, while their
   ``SET USERNAME`` is upper-cased (e.g. ``JobAcct1=wuxingj`` and ``USERNAME="WUXINGJ"``
   in a published capture of the HP Color LaserJet Pro M452 PCL 6 driver; JobAcct2 is
   the computer, JobAcct3 the domain, JobAcct4 the time).
2. ``@PJL SET USERNAME="<user>"`` (quoted or not) -- HP drivers, hpcups/CUPS PPD JCL
   (``@PJL SET USERNAME = "..."`` beside ``@PJL JOB NAME = "..." DISPLAY = "..."``),
   foo2xqx and other open drivers, the job-retention feature of HP printers; then
   ``@PJL JOB USERNAME="<user>"`` (foo2lava, foo2zjs: one JOB line per option, each after
   its own UEL).
3. ``@PJL SET JOBATTR="@LUNA=<user>"`` (Fuji Xerox DocuPrint Windows driver, "login user
   name") and ``@PJL SET JOBATTR="@OWNR=<user>"`` (Fuji Xerox-built HBPL printers such as
   the Dell 1320c).
4. ``@PJL COMMENT "Username: <user>; App Filename: <doc>; <date>"`` -- HP Windows drivers
   send it (it appears in the same captures as JobAcct1).

The job name: ``@PJL JOB NAME="..."`` (the PJL JOB command), then ``@PJL SET JOBNAME=``,
then the COMMENT's ``App Filename:``, then ``@PJL SET FILENAME=`` (foo2xqx, Samsung/Xerox).

PJL's default string code set is HP Roman-8; drivers that send non-ASCII names announce
``@PJL SET STRINGCODESET=UTF8``. We decode UTF-8 and fall back to Latin-1 (a Roman-8 name
with accents is then shown with the wrong accents, never refused).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from spoolvault.util.text import MAX_NAME_BYTES, clean_text, decode_text

UEL = b"\x1b%-12345X"
# Look at no more than this much of a stream; real PJL headers are a few hundred bytes to a
# few KiB (HP drivers: ~2 KiB with all the JobAcct lines).
SCAN_LIMIT = 64 * 1024
# A PJL line longer than this is not PJL (PJL lines are short); stop scanning.
MAX_LINE = 4096
# Bytes that may come before the first UEL: NUL padding, a PostScript ^D, blank lines.
LEADING_JUNK = b"\x00\x04 \t\r\n"

_OWNER_KEYS = ("JOBACCT1", "USERNAME", "JOB-USERNAME", "@LUNA", "@OWNR", "COMMENT-USERNAME")
_TITLE_KEYS = ("JOB-NAME", "JOBNAME", "COMMENT-APPFILENAME", "FILENAME")
_SET_KEYS = {"USERNAME": "USERNAME", "JOBNAME": "JOBNAME", "FILENAME": "FILENAME"}
_JOBATTR_KEYS = {"JOBACCT1": "JOBACCT1", "@LUNA": "@LUNA", "@OWNR": "@OWNR"}

_SET = re.compile(r"\s+SET\s+([A-Za-z0-9_]+)\s*=\s*(.*)\Z", re.IGNORECASE | re.DOTALL)
_JOB = re.compile(r"\s+JOB(?:\s+(.*))?\Z", re.IGNORECASE | re.DOTALL)
_COMMENT = re.compile(r"\s+COMMENT\b(.*)\Z", re.IGNORECASE | re.DOTALL)
_ENTER = re.compile(r"\s+ENTER\s+LANGUAGE\s*=\s*(\S*)", re.IGNORECASE)
_OPTION = re.compile(r'\s*([A-Za-z][A-Za-z0-9_]*)\s*(?:=\s*("[^"]*"?|[^\s"=]+))?')
_COMMENT_USER = re.compile(r"\bUser\s*name\s*:\s*([^;\"]*)", re.IGNORECASE)
_COMMENT_APP = re.compile(r"\bApp\s*Filename\s*:\s*([^;\"]*)", re.IGNORECASE)


@dataclass(frozen=True)
class PjlInfo:
    """What the PJL header said (None where it said nothing usable)."""

    owner: str | None = None
    title: str | None = None
    pjl: bool = False  # the stream began with a PJL header
    language: str | None = None  # from @PJL ENTER LANGUAGE=
    # Nothing but PJL commands up to where result() was asked (at the end of a stream: no
    # document at all, e.g. a driver's "@PJL INFO STATUS" query).
    pjl_only: bool = False


def _value(text: str) -> str:
    """A PJL value: the quoted string (to its closing quote), else the rest of the line."""
    text = text.strip()
    if text.startswith('"'):
        end = text.find('"', 1)
        return text[1:] if end < 0 else text[1:end]
    return text


class PjlScanner:
    """Incremental reader of a stream's PJL header; ``feed`` chunks, then ``result()``."""

    def __init__(self, limit: int = SCAN_LIMIT) -> None:
        self.limit = limit
        self.done = False
        self._seen = 0
        self._buf = bytearray()
        self._started = False
        self._language: str | None = None
        self._fields: dict[str, str] = {}
        self._result: PjlInfo | None = None

    def feed(self, data: bytes | bytearray | memoryview) -> bool:
        """Look at the next bytes of the stream; True once the header is over (or absent)."""
        if self.done:
            return True
        room = self.limit - self._seen
        view = memoryview(data)[:room]
        self._seen += len(view)
        self._buf += view
        self._process()
        if not self.done and self._seen >= self.limit:
            self._finish()
        return self.done

    def result(self) -> PjlInfo:
        """What the header said; ends the scan (an unfinished last line counts too)."""
        if self._result is None:
            if not self.done and self._started and self._buf:
                self._line(bytes(self._buf))
            pjl_only = self._started and not self.done
            self._finish()
            self._result = PjlInfo(
                owner=self._first(_OWNER_KEYS),
                title=self._first(_TITLE_KEYS),
                pjl=self._started,
                language=self._language,
                pjl_only=pjl_only,
            )
        return self._result

    # -- internals ---------------------------------------------------------------------

    def _first(self, keys: tuple[str, ...]) -> str | None:
        for key in keys:
            if value := self._fields.get(key):
                return value
        return None

    def _finish(self) -> None:
        self.done = True
        self._buf = bytearray()

    def _process(self) -> None:
        if not self._started:
            rest = bytes(self._buf).lstrip(LEADING_JUNK)
            if rest.startswith(UEL) or rest[:4].upper() == b"@PJL":
                self._started = True
                self._buf = bytearray(rest)
            elif UEL.startswith(rest) or b"@PJL".startswith(rest.upper()):
                if len(self._buf) > MAX_LINE:
                    self._finish()
                return  # too few bytes yet to tell
            else:
                self._finish()  # PDF, PostScript, PCL without PJL: nothing to read
                return
        while not self.done:
            end = _line_end(self._buf)
            if end < 0:
                if len(self._buf) > MAX_LINE:
                    self._finish()
                return
            line = bytes(self._buf[:end])
            del self._buf[: end + 1]
            self._line(line)

    def _line(self, line: bytes) -> None:
        line = line.rstrip(b"\r")
        while line.startswith(UEL):
            line = line[len(UEL) :]
        if not line.strip(b" \t\r\x00"):
            return  # blank lines between PJL commands are harmless
        if line[:4].upper() != b"@PJL":
            self._finish()  # the document proper has begun
            return
        self._command(decode_text(line[4:]))

    def _command(self, text: str) -> None:
        if not text or not text[0].isspace():
            return  # "@PJL" alone (a no-op), or not a command we know
        if m := _ENTER.match(text):
            self._language = clean_text(m.group(1), 64) or None
            self._finish()
        elif m := _SET.match(text):
            self._set(m.group(1).upper(), _value(m.group(2)))
        elif m := _JOB.match(text):
            for key, value in self._options(m.group(1) or ""):
                if key == "NAME":
                    self._keep("JOB-NAME", value)
                elif key == "USERNAME":
                    self._keep("JOB-USERNAME", value)
        elif m := _COMMENT.match(text):
            comment = m.group(1)
            if u := _COMMENT_USER.search(comment):
                self._keep("COMMENT-USERNAME", u.group(1))
            if a := _COMMENT_APP.search(comment):
                self._keep("COMMENT-APPFILENAME", a.group(1))

    def _set(self, variable: str, value: str) -> None:
        if variable in _SET_KEYS:
            self._keep(_SET_KEYS[variable], value)
        elif variable == "JOBATTR":
            name, sep, attr = value.partition("=")
            key = name.strip().upper()
            if sep and key in _JOBATTR_KEYS:
                self._keep(_JOBATTR_KEYS[key], attr)

    @staticmethod
    def _options(text: str) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        pos = 0
        while pos < len(text):
            m = _OPTION.match(text, pos)
            if m is None or m.end() == pos:
                break
            found.append((m.group(1).upper(), _value(m.group(2) or "")))
            pos = m.end()
        return found

    def _keep(self, key: str, value: str) -> None:
        # The first occurrence wins: drivers repeat some lines, and a later one may be a
        # per-document override in a multi-document job.
        if key not in self._fields:
            cleaned = clean_text(value, MAX_NAME_BYTES)
            if cleaned:
                self._fields[key] = cleaned


def _line_end(buf: bytearray) -> int:
    """Where the first line of ``buf`` ends: its first LF or CR (-1: not yet). A CRLF
    leaves an empty line behind its CR, which is skipped as blank."""
    lf, cr = buf.find(b"\n"), buf.find(b"\r")
    return lf if cr < 0 or 0 <= lf < cr else cr


def scan(data: bytes) -> PjlInfo:
    """The PJL header information of a complete (or leading part of a) stream."""
    scanner = PjlScanner()
    scanner.feed(data)
    return scanner.result()
