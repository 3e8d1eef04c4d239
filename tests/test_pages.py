"""The cheap page count (documents.pages): right where it answers, unknown where it cannot tell."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.ipptool import minimal_pdf, minimal_ps
from spoolvault.documents import pages
from spoolvault.documents.pages import HEAD_LIMIT, HEAD_STEP, PageCounter

UEL = b"\x1b%-12345X"


def count(data: bytes, chunk: int = 65536) -> int | None:
    counter = PageCounter()
    for i in range(0, len(data), chunk):
        counter.feed(data[i : i + chunk])
    return counter.result()


def update(base: bytes, objects: dict[int, bytes]) -> bytes:
    """``base`` with an incremental update that writes ``objects`` again (PDF 1.7 §7.5.6)."""
    out = bytearray(base)
    offsets = {}
    for number, body in sorted(objects.items()):
        offsets[number] = len(out)
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n"
    for number, offset in sorted(offsets.items()):
        out += b"%d 1\n%010d 00000 n \n" % (number, offset)
    prev = int(base.rsplit(b"startxref\n", 1)[1].split(b"\n", 1)[0])
    out += b"trailer\n<< /Size %d /Root 1 0 R /Prev %d >>\n" % (max(objects) + 1, prev)
    out += b"startxref\n%d\n%%%%EOF\n" % xref
    return bytes(out)


def pages_node(count: int, first_kid: int = 3) -> bytes:
    kids = b" ".join(b"%d 0 R" % (first_kid + i) for i in range(count))
    return b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, count)


PAGE = b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Annots [] >>"


def tree_pdf(leaves: int, per_node: int) -> bytes:
    """A PDF whose root has nested dictionaries (its /Count out of a scan's reach) above
    inner /Pages nodes whose /Count a scan reads: only the pages can be counted."""
    nodes = leaves // per_node
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>"]
    kids = " ".join(f"{3 + i} 0 R" for i in range(nodes))
    resources = "/Resources << /ProcSet [/PDF] >>"
    objs.append(f"<< /Type /Pages {resources} /Kids [{kids}] /Count {leaves} >>".encode())
    first_page = 3 + nodes
    for n in range(nodes):
        refs = " ".join(f"{first_page + n * per_node + i} 0 R" for i in range(per_node))
        objs.append(f"<< /Type /Pages /Parent 2 0 R /Kids [{refs}] /Count {per_node} >>".encode())
    objs += [PAGE] * leaves
    out = bytearray(b"%PDF-1.4\n")
    for number, body in enumerate(objs, start=1):
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    return bytes(out + b"trailer\n<< /Root 1 0 R >>\n%%EOF\n")


FIVE = minimal_pdf(5)
THIRTY = minimal_pdf(30)


def without_count(pdf: bytes) -> bytes:
    """The PDF with a page tree root whose /Count is not where a bounded scan finds it."""
    return pdf.replace(b"/Type /Pages", b"/Type /Pages /X (" + b"y" * 300 + b")")


def ps(pages: int, header: str, trailer: str = "", embedded: str = "") -> bytes:
    body = "".join(
        f"%%Page: {i} {i}\n{embedded if i == 1 else ''}showpage\n" for i in range(1, pages + 1)
    )
    trailer_text = f"%%Trailer\n{trailer}\n" if trailer else ""
    return f"%!PS-Adobe-3.0\n{header}\n%%EndComments\n{body}{trailer_text}%%EOF\n".encode()


EPS = (
    "%%BeginDocument: figure.eps\n%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n"
    "%%Pages: 1\n%%Page: 1 1\n%%EOF\n%%EndDocument\n"
)


@pytest.mark.parametrize(
    ("document", "pages"),
    [
        (FIVE, 5),
        (THIRTY, 30),
        (without_count(FIVE), 5),  # the /Type /Page objects
        # Updates: a new root with more pages is the count; one with fewer may be an inner
        # node or a root after pages went, which a scan cannot tell apart: unknown.
        (update(FIVE, {2: pages_node(6), 8: PAGE}), 6),
        (update(FIVE, {2: pages_node(3)}), None),
        (update(FIVE, {2: pages_node(5)}), 5),
        (update(FIVE, {3: PAGE}), 5),  # a page rewritten: the root's /Count still says 5
        (update(without_count(THIRTY), {3: PAGE, 4: PAGE}), None),  # pages in two revisions
        (update(without_count(THIRTY), {1: b"<< /Type /Catalog /Pages 2 0 R >>"}), 30),
        # Pages that may sit in a compressed object stream are not counted.
        (without_count(FIVE).replace(b"%PDF-1.4\n", b"%PDF-1.5\n% /Type /ObjStm\n"), None),
        (tree_pdf(100, 10), 100),  # not 10, an inner node's /Count
        (minimal_ps(7), 7),
        (ps(4, "%%Pages: (atend)", trailer="%%Pages: 4"), 4),
        (ps(4, "%%Pages: (atend)", trailer="%%Pages: 4", embedded=EPS), 4),
        (ps(3, "%%Pages: 3", embedded=EPS), 3),
        (ps(6, "%%Creator: x", embedded=EPS), 6),  # the %%Page: comments, not the EPS's
        (ps(2, "%%Pages: (atend)"), 2),  # no trailer: the %%Page: comments
        # An embedded document that never ends hides the rest: unknown, not 1.
        (ps(3, "%%Pages: (atend)", "%%Pages: 3", "%%BeginDocument: x.eps\n%%Page: 1 1\n"), None),
        (ps(3, "%%Pages: 3", embedded="%%BeginDocument: x.eps\n"), 3),  # the header says
        # A PJL job header first, short or longer than the old 1 KiB look.
        (UEL + b"@PJL ENTER LANGUAGE=PDF\r\n" + FIVE, 5),
        (
            UEL
            + b"".join(b'@PJL SET JOBATTR="JobAcct%d=%s"\r\n' % (i, b"x" * 40) for i in range(40))
            + b"@PJL ENTER LANGUAGE=POSTSCRIPT\r\n"
            + minimal_ps(9),
            9,
        ),
        (UEL + b"@PJL ENTER LANGUAGE=PCL\r\n\x1bE" + b"x" * 2000, None),
        (UEL + b"@PJL SET USERNAME=alice\r\n" + FIVE, 5),  # PJL lines, no ENTER, then PDF
        (b"\x1bE PCL text", None),
        (b"plain text\n" * 500, None),
    ],
)
def test_page_counts(document: bytes, pages: int | None) -> None:
    assert count(document) == pages
    assert count(document, chunk=7) == pages  # tokens split across chunks count once


def test_ghostscript_agrees_where_the_scan_answers(tmp_path: Path) -> None:
    """The hand-made PDFs above are real PDFs: Ghostscript counts the same pages."""
    if shutil.which("gs") is None:
        pytest.skip("Ghostscript not installed")
    pdf = tmp_path / "doc.pdf"
    documents = (
        FIVE,
        update(FIVE, {2: pages_node(6), 8: PAGE}),
        update(FIVE, {3: PAGE}),
        tree_pdf(100, 10),
    )
    for document in documents:
        pdf.write_bytes(document)
        out = subprocess.run(
            ["gs", "-q", "-dNODISPLAY", "-dNOSAFER", "-dBATCH", "-c",
             f"({pdf}) (r) file runpdfbegin pdfpagecount = quit"],
            capture_output=True, check=True, timeout=60,
        )  # fmt: skip
        assert int(out.stdout.split()[-1]) == count(document)


def test_a_pjl_header_that_never_ends_is_not_held_past_the_head_limit() -> None:
    counter = PageCounter()
    for _ in range(100):
        counter.feed(UEL + b"@PJL SET X=" + b"y" * 4096 + b"\n")
    assert len(counter._head) == 0 and len(counter._tail) == 0  # decided: "other"
    assert counter.result() is None
    assert HEAD_LIMIT < 100 * 4096


def test_a_head_trickled_a_byte_at_a_time_is_looked_at_a_bounded_number_of_times(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each look scans the whole head: looking at every byte of a trickled 64 KiB head
    would cost the square of its length (a client could burn the server's CPU so)."""
    looks = []
    real = pages._kind

    def counting(head: bytes | bytearray, final: bool) -> str | None:
        looks.append(len(head))
        return real(head, final)

    monkeypatch.setattr(pages, "_kind", counting)
    counter = PageCounter()
    for byte in UEL + b"@PJL SET X=" + b"y" * HEAD_LIMIT:
        counter.feed(bytes([byte]))
    assert counter.result() is None
    assert len(looks) <= HEAD_LIMIT // HEAD_STEP + 2


@settings(max_examples=200, deadline=None)
@given(cuts=st.lists(st.integers(min_value=1, max_value=len(FIVE) + 300), max_size=12))
def test_chunking_does_not_change_the_count(cuts: list[int]) -> None:
    document = UEL + b"@PJL ENTER LANGUAGE=PDF\n" + update(FIVE, {2: pages_node(6), 8: PAGE})
    counter = PageCounter()
    last = 0
    for cut in sorted(cuts):
        counter.feed(document[last:cut])
        last = max(last, cut)
    counter.feed(document[last:])
    assert counter.result() == 6
