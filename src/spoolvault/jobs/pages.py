"""A cheap page count, scanned while a document streams in (no parsing, no rendering).

PDF: the largest ``/Count`` of a ``/Type /Pages`` node (the page tree root), else the
number of ``/Type /Page`` objects. PostScript: the DSC ``%%Pages: N`` comment, else the
number of ``%%Page:`` comments. Anything else (PCL, raster, text), or a PDF whose page tree
sits in compressed object streams: unknown (None). Only a bounded tail of the previous chunk
is kept, so memory stays flat.
"""

from __future__ import annotations

import re

_OVERLAP = 128
_PDF_PAGE = re.compile(rb"/Type\s*/Page(?![a-zA-Z])")
_PDF_COUNT = re.compile(
    rb"/Type\s*/Pages\b[^>]{0,200}?/Count\s+(\d{1,7})|/Count\s+(\d{1,7})[^>]{0,200}?/Type\s*/Pages\b"
)
_PS_PAGES = re.compile(rb"%%Pages:\s*(\d{1,7})")
_PS_PAGE = re.compile(rb"(?:^|[\r\n])%%Page:")


class PageCounter:
    """Feed the document's chunks in order; ``result()`` is the page count or None."""

    def __init__(self) -> None:
        self._kind: str | None = None
        self._head = b""
        self._tail = b""
        self._pages = 0
        self._count = 0
        self._dsc_pages: int | None = None

    def feed(self, chunk: bytes) -> None:
        if self._kind is None:
            self._head += chunk[:1024]
            if len(self._head) < 16 and len(chunk) < 16:
                return
            head = self._head[:1024]
            # A PJL job header (@PJL ... ENTER LANGUAGE) may precede the PDL.
            if b"%PDF-" in head:
                self._kind = "pdf"
            elif b"%!PS" in head:
                self._kind = "ps"
            else:
                self._kind = "other"
        if self._kind == "other":
            return
        data = self._tail + chunk
        # Count only matches that end in the new part, so the overlap is never counted twice.
        start = max(0, len(self._tail) - _OVERLAP)
        fresh_from = len(self._tail)
        if self._kind == "pdf":
            for m in _PDF_PAGE.finditer(data, start):
                if m.end() > fresh_from:
                    self._pages += 1
            for m in _PDF_COUNT.finditer(data, start):
                if m.end() > fresh_from:
                    self._count = max(self._count, int(m.group(1) or m.group(2)))
        else:
            for m in _PS_PAGE.finditer(data, start):
                if m.end() > fresh_from:
                    self._pages += 1
            for m in _PS_PAGES.finditer(data, start):
                if m.end() > fresh_from and self._dsc_pages is None:
                    self._dsc_pages = int(m.group(1))
        self._tail = data[-_OVERLAP:]

    def result(self) -> int | None:
        if self._kind == "pdf":
            return self._count or self._pages or None
        if self._kind == "ps":
            return self._dsc_pages or self._pages or None
        return None
