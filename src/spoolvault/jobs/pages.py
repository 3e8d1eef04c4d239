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
  scan cannot tell apart: unknown.
- ``/Type /Page`` objects: counted only if they all sit in one revision (an update that
  rewrites a page writes its object again), and only if the file has no compressed object
  streams (``/Type /ObjStm``), where pages can hide.

PostScript: the DSC ``%%Pages: N`` comment of the header; if that says ``(atend)``, the
trailer's; else the number of ``%%Page:`` comments. Comments of embedded documents
(``%%BeginDocument`` ... ``%%EndDocument``, e.g. an EPS figure with its own
``%%Pages: 1``) are skipped.

A PJL job header (``@PJL ... ENTER LANGUAGE=``) may come first: the document type is
taken from what follows it, looking at most ``HEAD_LIMIT`` bytes in. Anything else (PCL,
raster, text): unknown. Memory stays flat: at most the head, then a bounded tail of the
previous chunk.
"""

from __future__ import annotations

import re

HEAD_LIMIT = 64 * 1024
_OVERLAP = 320  # longer than any token below
_PDF_TOKENS = re.compile(
    rb"/Type\s*/Page[^a-zA-Z]"
    rb"|/Type\s*/Pages\b[^>]{0,200}?/Count\s+(\d{1,7})[^0-9]"
    rb"|/Count\s+(\d{1,7})[^>]{0,200}?/Type\s*/Pages\b"
    rb"|%%EOF"
    rb"|/Type\s*/ObjStm\b"
)
_PS_TOKENS = re.compile(
    rb"[\r\n]%%(?:Pages:[ \t]*(\(atend\)|\d{1,7}[^0-9])|Page:|(BeginDocument)|(EndDocument))"
)
_PJL_JUNK = b"\x00\x04 \t\r\n"
_UEL = b"\x1b%-12345X"
_ENTER = re.compile(rb"@PJL[ \t]+ENTER[ \t]+LANGUAGE[ \t]*=[^\r\n]*(?:\r\n|\r|\n)", re.I)


def _kind(head: bytes, final: bool) -> str | None:
    """pdf, ps or other; None while ``head`` is too short to tell (and not ``final``)."""
    rest = head.lstrip(_PJL_JUNK)
    if rest.startswith(_UEL) or rest[:4].upper() == b"@PJL":
        if (m := _ENTER.search(head)) is None:
            return "other" if final else None
        head = head[m.end() :]
    if b"%PDF-" in head[:1024]:
        return "pdf"
    if b"%!PS" in head[:1024]:
        return "ps"
    return "other" if final or len(head) >= 1024 else None


class PageCounter:
    """Feed the document's chunks in order; ``result()`` is the page count or None."""

    def __init__(self) -> None:
        self._kind: str | None = None
        self._head = b""
        self._tail = b""
        # PDF: per revision (ended by %%EOF), the largest /Count and the /Page objects.
        self._revisions: list[tuple[int, int]] = []
        self._count = 0
        self._pages = 0
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
            kind = _kind(self._head, final=len(self._head) >= HEAD_LIMIT)
            if kind is None:
                return
            self._kind, chunk, self._head = kind, self._head + chunk[room:], b""
        if self._kind == "other":
            return
        data = self._tail + chunk
        # Take only tokens that end in the new part, so the overlap is never seen twice.
        start = max(0, len(self._tail) - _OVERLAP)
        fresh_from = len(self._tail)
        scan = self._pdf if self._kind == "pdf" else self._ps
        pattern = _PDF_TOKENS if self._kind == "pdf" else _PS_TOKENS
        for m in pattern.finditer(data, start):
            if m.end() > fresh_from:
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
            head, self._head = self._head, b""
            if self._kind != "other":
                self.feed(head)
        if self._kind == "pdf":
            return self._pdf_result()
        if self._kind == "ps":
            if self._dsc_pages is not None:
                return self._dsc_pages or None
            if self._atend and self._trailer_pages is not None:
                return self._trailer_pages or None
            return self._ps_pages or None
        return None

    def _pdf_result(self) -> int | None:
        revisions = [*self._revisions, (self._count, self._pages)]
        counts = [count for count, _ in revisions if count]
        if counts:
            return counts[-1] if counts[-1] == max(counts) else None
        with_pages = [pages for _, pages in revisions if pages]
        if len(with_pages) == 1 and not self._object_streams:
            return with_pages[0]
        return None
