"""A cheap page count, scanned while a document streams in (no parsing, no rendering).

A wrong count is worse than none (it is shown to users and kept in the records), so each
rule below answers "unknown" (None) where a scan without parsing cannot be sure.

PDF: the largest ``/Count`` of a ``/Type /Pages`` node (the page-tree root), else the
number of ``/Type /Page`` objects. A PDF changed by incremental updates has several
revisions (each ends in ``%%EOF``), and a later one may write page-tree nodes or pages
again:

- ``/Count``: the largest of the last revision that has one, if no earlier revision had a
  larger one. An update that adds pages writes a new root with the larger count; a smaller
  one may be a root after pages were deleted or an inner node that was changed, which a
  scan cannot tell apart: unknown. Only if every ``/Type /Pages`` node's ``/Count`` was
  read (a root with nested dictionaries or a long ``/Kids`` hides it, while inner nodes
  show theirs); else the pages are counted:
- ``/Type /Page`` objects: counted only if they all sit in one revision (an update that
  rewrites a page writes its object again), and only if the file has no compressed object
  streams (``/Type /ObjStm``), where pages can hide.

PostScript: the DSC ``%%Pages: N`` comment of the header; if that says ``(atend)``, the
trailer's; else the number of ``%%Page:`` comments. Comments of embedded documents
(``%%BeginDocument`` ... ``%%EndDocument``, e.g. an EPS figure with its own
``%%Pages: 1``) are skipped; an embedded document that never ends leaves only the header's
count.

A PJL job header (``@PJL ... ENTER LANGUAGE=``, or PJL lines and then a line that starts
``%PDF-`` or ``%!PS``) may come first: the document type is taken from what follows it,
looking at most ``HEAD_LIMIT`` bytes in. The head is looked at again only every
``HEAD_STEP`` bytes, so a client trickling it a byte at a time costs no more than one
that sends it whole. Anything else (PCL,
raster, text): unknown. Memory stays flat: at most the head, then a bounded tail of the
previous chunk.
"""

from __future__ import annotations

import re

from spoolvault.documents.pjl import LEADING_JUNK, UEL

HEAD_LIMIT = 64 * 1024
HEAD_STEP = 1024
_OVERLAP = 320  # longer than any token below, and than _COUNT_REACH
_COUNT_REACH = 230  # how far after /Type /Pages its /Count is looked for (200 + "/Count N")
_PDF_TOKENS = re.compile(
    rb"/Type\s*/Page[^a-zA-Z]"
    rb"|/Type\s*/Pages\b[^>]{0,200}?/Count\s+(\d{1,7})[^0-9]"
    rb"|/Count\s+(\d{1,7})[^>]{0,200}?/Type\s*/Pages\b"
    rb"|(/Type\s*/Pages\b)"  # a page-tree node whose /Count the scan cannot read
    rb"|%%EOF"
    rb"|/Type\s*/ObjStm\b"
)
_PS_TOKENS = re.compile(
    rb"[\r\n]%%(?:Pages:[ \t]*(\(atend\)|\d{1,7}[^0-9])|Page:|(BeginDocument)|(EndDocument))"
)
_ENTER = re.compile(rb"@PJL[ \t]+ENTER[ \t]+LANGUAGE[ \t]*=[^\r\n]*(?:\r\n|\r|\n)", re.I)
_PDL_LINE = re.compile(rb"[\r\n](?:" + re.escape(UEL) + rb")?(%PDF-|%!PS)")


def _kind(head: bytes | bytearray, final: bool) -> str | None:
    """pdf, ps or other; None while ``head`` is too short to tell (and not ``final``)."""
    rest = head.lstrip(LEADING_JUNK)
    if rest.startswith(UEL) or rest[:4].upper() == b"@PJL":
        if (m := _ENTER.search(head)) is not None:
            head = head[m.end() :]
        elif (m := _PDL_LINE.search(head)) is not None:  # PJL lines, then the document
            head = head[m.start(1) :]
        else:
            return "other" if final else None
    if b"%PDF-" in head[:1024]:
        return "pdf"
    if b"%!PS" in head[:1024]:
        return "ps"
    return "other" if final or len(head) >= 1024 else None


class PageCounter:
    """Feed the document's chunks in order; ``result()`` is the page count or None."""

    def __init__(self) -> None:
        self._kind: str | None = None
        self._head = bytearray()
        self._looked = 0  # the head's length when _kind last looked at it
        self._tail = b""
        # PDF: per revision (ended by %%EOF), the largest /Count and the /Page objects.
        self._revisions: list[tuple[int, int]] = []
        self._count = 0
        self._pages = 0
        self._hidden_counts = False  # a /Type /Pages node whose /Count was not read
        self._object_streams = False
        # PostScript
        self._dsc_pages: int | None = None  # the header's %%Pages: N
        self._atend = False
        self._trailer_pages: int | None = None
        self._ps_pages = 0
        self._depth = 0  # inside %%BeginDocument ... %%EndDocument

    def feed(self, chunk: bytes) -> None:
        if self._kind is None:
            room = HEAD_LIMIT - len(self._head)
            self._head += chunk[:room]
            final = len(self._head) >= HEAD_LIMIT
            if not final and len(self._head) - self._looked < HEAD_STEP and self._looked:
                return  # look again once HEAD_STEP more bytes came
            self._looked = len(self._head)
            kind = _kind(self._head, final=final)
            if kind is None:
                return
            self._kind, chunk = kind, bytes(self._head) + chunk[room:]
            self._head = bytearray()
        if self._kind == "other":
            return
        data = self._tail + chunk
        # Take only tokens that end in the new part, so the overlap is never seen twice.
        start = max(0, len(self._tail) - _OVERLAP)
        fresh_from = len(self._tail)
        scan = self._pdf if self._kind == "pdf" else self._ps
        pattern = _PDF_TOKENS if self._kind == "pdf" else _PS_TOKENS
        for m in pattern.finditer(data, start):
            end = m.end()
            if self._kind == "pdf" and m.group(3):
                # A /Pages node without its /Count so far: settled at its dictionary's end
                # or once the /Count could no longer follow; until then its /Count may be
                # in the next chunk (and the node is seen again, from the tail).
                close = data.find(b">", end, end + _COUNT_REACH)
                end = close + 1 if close >= 0 else end + _COUNT_REACH
                if end > len(data):
                    continue
            if end > fresh_from:
                scan(m)
        self._tail = data[-_OVERLAP:]

    def _pdf(self, m: re.Match[bytes]) -> None:
        token = m.group(0)
        if token == b"%%EOF":
            if self._count or self._pages:
                self._revisions.append((self._count, self._pages))
            self._count = self._pages = 0
        elif count := m.group(1) or m.group(2):
            self._count = max(self._count, int(count))
        elif m.group(3):
            self._hidden_counts = True
        elif token.endswith(b"ObjStm"):
            self._object_streams = True
        else:
            self._pages += 1

    def _ps(self, m: re.Match[bytes]) -> None:
        if m.group(2):
            self._depth += 1
        elif m.group(3):
            self._depth = max(0, self._depth - 1)
        elif self._depth:
            return  # an embedded document's own comments
        elif (value := m.group(1)) is None:
            self._ps_pages += 1
        elif value == b"(atend)":
            if self._dsc_pages is None:
                self._atend = True
        elif self._dsc_pages is None and not self._atend:
            self._dsc_pages = int(value[:-1])
        elif self._atend:
            self._trailer_pages = int(value[:-1])

    def result(self) -> int | None:
        if self._kind is None and self._head:
            self._kind = _kind(self._head, final=True)
            head, self._head = bytes(self._head), bytearray()
            if self._kind != "other":
                self.feed(head)
        if self._kind == "pdf":
            return self._pdf_result()
        if self._kind == "ps":
            if self._dsc_pages is not None:
                return self._dsc_pages or None
            if self._depth:  # an embedded document never ended: the rest was skipped
                return None
            if self._atend and self._trailer_pages is not None:
                return self._trailer_pages or None
            return self._ps_pages or None
        return None

    def _pdf_result(self) -> int | None:
        revisions = [*self._revisions, (self._count, self._pages)]
        counts = [count for count, _ in revisions if count]
        if counts and not self._hidden_counts:
            return counts[-1] if counts[-1] == max(counts) else None
        with_pages = [pages for _, pages in revisions if pages]
        if len(with_pages) == 1 and not self._object_streams:
            return with_pages[0]
        return None
