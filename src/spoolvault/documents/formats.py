"""What a document really is, from its first bytes (as CUPS's mime.types and ippeveprinter's
auto-typing do), and which formats a printer takes.

Clients often say nothing useful: CUPS ``lp`` sends ``application/octet-stream`` for
everything, raw 9100 and LPD say nothing at all, and a driver may name one format and send
another. The bytes decide (docs/formats.md); the declared format is kept beside the
detected one, and a contradiction is logged by the intake.

Rules, first match wins (offsets are after leading NULs/^D/white space and after a PJL job
header, ``ESC%-12345X@PJL ... @PJL ENTER LANGUAGE=X``, which is skipped):

- ``%PDF-`` and a ``%PCLm`` comment in the first lines: ``application/PCLm`` (PWG 5102.4);
- ``%PDF-`` within the first KiB: ``application/pdf``;
- ``%!``: ``application/postscript``;
- ``RaS2`` followed by ``PwgRaster``: ``image/pwg-raster`` (PWG 5102.4); other CUPS raster
  sync words (``RaS2``/``RaS3``/``3SaR``/``2SaR``): ``application/vnd.cups-raster``;
- ``UNIRAST``: ``image/urf`` (Apple raster);
- ``FF D8 FF``: ``image/jpeg``; the PNG signature: ``image/png``;
- ``) HP-PCL XL``: ``application/vnd.hp-pclxl``; ``ESC E`` / ``ESC &`` / ``ESC *`` /
  ``ESC (`` or a PJL ``ENTER LANGUAGE=PCL``: ``application/vnd.hp-pcl``;
- printable text (UTF-8 or Latin-1, tabs, line ends and form feeds) in the first KiB:
  ``text/plain``;
- anything else: ``application/octet-stream`` (unknown).

``FormatSniffer`` is fed the stream's chunks; it keeps at most ``HEAD_LIMIT`` bytes and
stops looking once it has decided.
"""

from __future__ import annotations

import re

from spoolvault.documents.pjl import LEADING_JUNK, UEL

PDF = "application/pdf"
POSTSCRIPT = "application/postscript"
PCL = "application/vnd.hp-pcl"
PCLXL = "application/vnd.hp-pclxl"
PCLM = "application/PCLm"
PWG_RASTER = "image/pwg-raster"
CUPS_RASTER = "application/vnd.cups-raster"
URF = "image/urf"
JPEG = "image/jpeg"
PNG = "image/png"
TEXT = "text/plain"
UNKNOWN = "application/octet-stream"

# Every format the detector can name, in the order of docs/formats.md.
DETECTED = (PDF, POSTSCRIPT, PCL, PCLXL, PCLM, PWG_RASTER, URF, JPEG, PNG, TEXT, UNKNOWN)

# What a socket:// or lpd:// printer is taken to accept when its admin said nothing.
DEFAULT_RAW_FORMATS = (POSTSCRIPT, PCL)

HEAD_LIMIT = 64 * 1024  # a PJL header may be a few KiB; the document's own magic follows
_STEP = 512  # look again only once this much more arrived
_LOOK = 1024  # bytes of the document proper needed to decide
_ENTER = re.compile(
    rb"@PJL[ \t]+ENTER[ \t]+LANGUAGE[ \t]*=[ \t]*([A-Za-z0-9_-]*)[^\r\n]*(\r\n|\r|\n)?", re.I
)
_PJL_LINE_END = re.compile(rb"\r\n|\r|\n")
_LANGUAGES = {b"PCL": PCL, b"POSTSCRIPT": POSTSCRIPT, b"PDF": PDF, b"PCLXL": PCLXL}
_PNG = b"\x89PNG\r\n\x1a\n"
_TEXT_BAD = re.compile(rb"[\x00-\x07\x0e-\x1a\x1c-\x1f\x7f]")
_ESC_PCL = re.compile(rb"\x1b[E&*(%)]")


def _skip_pjl(head: bytes, final: bool) -> tuple[bytes, str | None] | None:
    """The document after a PJL header and the language it names; None: need more bytes."""
    m = _ENTER.search(head)
    if m is not None and (m.group(2) or final):
        return head[m.end() :], _LANGUAGES.get(m.group(1).upper())
    # PJL lines with no ENTER: the document starts at the first line that is not PJL.
    pos = 0
    while True:
        end = _PJL_LINE_END.search(head, pos)
        if end is None:
            return (head[pos:], None) if final else None
        line = head[pos : end.start()]
        if line.startswith(UEL):
            line = line[len(UEL) :]
        pos = end.end()
        if line[:4].upper() != b"@PJL" and line.strip():
            return head[end.start() - len(line) :], None


def detect(head: bytes, *, final: bool = True) -> str | None:
    """The MIME type of a document from its first bytes; None while more bytes could
    change the answer (only when ``final`` is False)."""
    data = head.lstrip(LEADING_JUNK)
    language = None
    if data.startswith(UEL) or data[:4].upper() == b"@PJL":
        skipped = _skip_pjl(data, final or len(head) >= HEAD_LIMIT)
        if skipped is None:
            return None
        data, language = skipped
        data = data.lstrip(LEADING_JUNK)
        if data.startswith(UEL):
            data = data[len(UEL) :]
    if len(data) < _LOOK and not final:
        return None
    found = _magic(data[:_LOOK])
    if found == UNKNOWN and language is not None:
        return language
    return found


def _magic(data: bytes) -> str:
    if data.startswith(b"%PDF-") or b"%PDF-" in data[:_LOOK]:
        if b"%PCLm" in data[:256]:
            return PCLM
        return PDF
    if data.startswith(b"%!"):
        return POSTSCRIPT
    if data.startswith(b"RaS2PwgRaster"):
        return PWG_RASTER
    if data[:4] in (b"RaS2", b"RaS3", b"3SaR", b"2SaR", b"RaSt", b"tSaR"):
        return CUPS_RASTER
    if data.startswith(b"UNIRAST"):
        return URF
    if data.startswith(b"\xff\xd8\xff"):
        return JPEG
    if data.startswith(_PNG):
        return PNG
    if data.startswith(b") HP-PCL XL"):
        return PCLXL
    if _ESC_PCL.match(data):
        return PCL
    if data and _printable(data):
        return TEXT
    return UNKNOWN


def _printable(data: bytes) -> bool:
    if _TEXT_BAD.search(data) or b"\x1b" in data:
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(data) - 3:  # not just a character cut at the end of the head
            # Latin-1 text: bytes 0x80-0x9f are C1 controls, never in text.
            return not re.search(rb"[\x80-\x9f]", data)
    return True


class FormatSniffer:
    """Feed a document's chunks in order; ``result()`` is its detected MIME type."""

    def __init__(self) -> None:
        self._head = bytearray()
        self._found: str | None = None
        self._looked = 0  # the head's length when it was last looked at

    def feed(self, chunk: bytes) -> None:
        if self._found is not None:
            return
        room = HEAD_LIMIT - len(self._head)
        if room > 0:
            self._head += chunk[:room]
        final = len(self._head) >= HEAD_LIMIT
        if not final and self._looked and len(self._head) - self._looked < _STEP:
            return  # a client trickling bytes costs no more than one sending them whole
        self._looked = len(self._head)
        self._found = detect(bytes(self._head), final=final)
        if self._found is not None:
            self._head = bytearray()

    def result(self) -> str:
        if self._found is None:
            self._found = detect(bytes(self._head), final=True) or UNKNOWN
            self._head = bytearray()
        return self._found


def generic(declared: str | None) -> bool:
    """A declaration that says nothing about the format (detection decides alone)."""
    base = (declared or "").split(";")[0].strip().lower()
    return base in ("", UNKNOWN, "application/vnd.cups-raw")


def effective(declared: str | None, detected: str | None) -> str:
    """The format a job is delivered as: the bytes win, the declaration when they are unknown."""
    if detected and detected != UNKNOWN:
        return detected
    return declared or UNKNOWN


def same(declared: str, detected: str) -> bool:
    """Does a declaration agree with the bytes? (PCLm is a PDF; types compare case-blind)."""
    a = declared.split(";")[0].strip().lower()
    b = detected.lower()
    return a == b or (a == PDF and b == PCLM.lower())
