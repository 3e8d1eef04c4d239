"""Document formats: detection at intake from the first bytes (documents/formats.py), the
formats a printer takes, and conversion at release (documents/convert.py, docs/formats.md)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import pytest

from harness import ippeve
from harness.ipptool import minimal_pdf
from harness.server import Server, jobs_in
from harness.web_helpers import (
    add_printer,
    add_user,
    api,
    audit,
    client,
    login,
    submit,
    wait_for_files,
)
from spoolvault.db import Job, JobState
from spoolvault.documents import formats as F
from spoolvault.documents.formats import FormatSniffer, detect

PJL = b'\x1b%-12345X@PJL JOB NAME="r"\r\n@PJL SET USERNAME="alice"\r\n'
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj", F.PDF),
        (b"%PDF-1.7\n%PCLm 1.0\n", F.PCLM),
        (b"\x04%!PS-Adobe-3.0\n", F.POSTSCRIPT),
        (PJL + b"@PJL ENTER LANGUAGE=POSTSCRIPT\r\n%!PS-Adobe-3.0\n", F.POSTSCRIPT),
        (PJL + b"@PJL ENTER LANGUAGE=PCL\r\n\x1bE\x1b&l0O", F.PCL),
        (PJL + b"@PJL ENTER LANGUAGE=PDF\n%PDF-1.4\n", F.PDF),
        (PJL + b"%PDF-1.4\n", F.PDF),
        (b"\x1bE\x1b&l0O\x1b&l2A", F.PCL),
        (b") HP-PCL XL;2;0\r\n", F.PCLXL),
        (b"RaS2PwgRaster\x00" + bytes(100), F.PWG_RASTER),
        (b"UNIRAST\x00\x00\x00\x00\x01", F.URF),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", F.JPEG),
        (PNG, F.PNG),
        (b"hello\tworld\r\n\x0cpage two\n", F.TEXT),
        ("Grüße, naïve café\n".encode(), F.TEXT),
        ("Grüße\n".encode("latin-1"), F.TEXT),
        (b"\x00\x01\x02\x03binary", F.UNKNOWN),
        (b"", F.UNKNOWN),
    ],
)
def test_detects_each_format_from_its_first_bytes(head: bytes, expected: str) -> None:
    assert detect(head) == expected


def test_detection_on_streamed_chunks_matches_the_whole_head() -> None:
    body = PJL + b"@PJL ENTER LANGUAGE=POSTSCRIPT\r\n%!PS-Adobe-3.0\n" + b"x" * 5000
    for size in (1, 7, 100, 4096):
        sniffer = FormatSniffer()
        for i in range(0, len(body), size):
            sniffer.feed(body[i : i + size])
        assert sniffer.result() == F.POSTSCRIPT, size


def test_a_huge_text_job_keeps_only_a_bounded_head() -> None:
    sniffer = FormatSniffer()
    for _ in range(100):
        sniffer.feed(b"line of text\n" * 1000)
    assert sniffer.result() == F.TEXT
    assert len(sniffer._head) == 0  # decided early, nothing kept


def test_a_pjl_header_that_never_ends_is_unknown_not_unbounded() -> None:
    sniffer = FormatSniffer()
    for _ in range(200):
        sniffer.feed(b"@PJL SET X=1\r\n" * 100)
    assert len(sniffer._head) <= F.HEAD_LIMIT
    assert sniffer.result() in (F.UNKNOWN, F.TEXT)


def test_the_bytes_win_over_the_declaration() -> None:
    assert F.effective("application/pdf", F.POSTSCRIPT) == F.POSTSCRIPT
    assert F.effective("image/urf", F.UNKNOWN) == "image/urf"
    assert F.same("application/pdf", F.PCLM)
    assert not F.same("application/pdf", F.TEXT)
    assert F.generic("application/octet-stream")


# -- end to end: ippeveprinter restricted with -f to one format --------------------------

needs_eve = pytest.mark.skipif(ippeve.IPPEVEPRINTER is None, reason="needs cups-ipp-utils")


def _eve(factory: pytest.TempPathFactory, fmt: str) -> Iterator[ippeve.EvePrinter]:
    p = ippeve.start_printer(factory.mktemp("eve"), name=fmt.split("/")[1], formats=fmt)
    try:
        yield p
    finally:
        p.stop()


@pytest.fixture(scope="module")
def pdf_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ippeve.EvePrinter]:
    yield from _eve(tmp_path_factory, "application/pdf")


@pytest.fixture(scope="module")
def ps_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ippeve.EvePrinter]:
    yield from _eve(tmp_path_factory, "application/postscript")


@pytest.fixture(scope="module")
def pwg_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ippeve.EvePrinter]:
    yield from _eve(tmp_path_factory, "image/pwg-raster")


def _release(srv: Server, job_id: int, printer: str) -> httpx.Response:
    """alice releases her job at a release station (REST)."""
    with api(srv) as c:
        if c.get("/users").status_code == 200 and "alice" not in c.get("/users").text:
            add_user(srv, "alice")
    with client(srv) as c:
        return c.post(
            f"/release/jobs/{job_id}", json={"printer": printer}, headers=login(srv, "alice")
        )


def _arrived(printer: ippeve.EvePrinter, before: int) -> bytes:
    files = wait_for_files(printer, before + 1)
    return files[-1].read_bytes() if len(files) == before + 1 else max(files).read_bytes()


def _one_job(srv: Server) -> Job:
    [job] = jobs_in(srv.data_dir)
    return job


@needs_eve
def test_lp_text_reaches_a_pdf_only_printer_as_pdf(
    srv: Server, pdf_only: ippeve.EvePrinter, tmp_path: Path
) -> None:
    add_printer(srv, "pdfonly", pdf_only.uri)
    notes = tmp_path / "notes.txt"
    notes.write_text("Minutes of the meeting\n" * 50)
    host = srv.url.removeprefix("http://")
    done = subprocess.run(
        ["lp", "-h", host, "-d", "secure", "-U", "alice", str(notes)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    deadline = time.monotonic() + 30
    while not jobs_in(srv.data_dir) and time.monotonic() < deadline:
        time.sleep(0.1)
    job = _one_job(srv)
    assert job.document_format == "application/octet-stream"  # what CUPS lp declares
    assert job.detected_format == F.TEXT
    before = len(pdf_only.files())
    r = _release(srv, job.id, "pdfonly")
    assert r.status_code == 200, r.text
    assert _arrived(pdf_only, before).startswith(b"%PDF-")
    [event] = [e for e in audit(srv, action="job.release") if e["job_id"] == job.id]
    assert "text/plain -> application/pdf (texttopdf)" in str(event["detail"])


@needs_eve
def test_a_pdf_reaches_a_postscript_only_printer_as_postscript(
    srv: Server, ps_only: ippeve.EvePrinter
) -> None:
    add_printer(srv, "psonly", ps_only.uri)
    job_id = submit(srv, "alice", minimal_pdf(3, marker="to ps"), fmt="application/pdf")
    before = len(ps_only.files())
    r = _release(srv, job_id, "psonly")
    assert r.status_code == 200, r.text
    assert _arrived(ps_only, before).startswith(b"%!")


@needs_eve
def test_a_pdf_and_a_jpeg_reach_a_pwg_raster_printer_as_raster(
    srv: Server, pwg_only: ippeve.EvePrinter, tmp_path: Path
) -> None:
    add_printer(srv, "rasteronly", pwg_only.uri)
    jpeg = _jpeg(tmp_path)
    for body, fmt in ((minimal_pdf(2), "application/pdf"), (jpeg, "image/jpeg")):
        job_id = submit(srv, "alice", body, fmt=fmt)
        before = len(pwg_only.files())
        r = _release(srv, job_id, "rasteronly")
        assert r.status_code == 200, r.text
        assert _arrived(pwg_only, before).startswith(b"RaS2PwgRaster")
        pwg_only.wait_idle()


@needs_eve
def test_a_jpeg_reaches_a_pdf_only_printer_as_pdf(
    srv: Server, pdf_only: ippeve.EvePrinter, tmp_path: Path
) -> None:
    add_printer(srv, "pdfonly", pdf_only.uri)
    # Declared wrongly: the bytes win.
    job_id = submit(srv, "alice", _jpeg(tmp_path), fmt="application/pdf")
    assert _one_job(srv).detected_format == F.JPEG
    before = len(pdf_only.files())
    r = _release(srv, job_id, "pdfonly")
    assert r.status_code == 200, r.text
    assert _arrived(pdf_only, before).startswith(b"%PDF-")
    assert "declared application/pdf but its bytes are image/jpeg" in "".join(srv.first_lines)


@needs_eve
def test_urf_to_a_pdf_printer_is_refused_clearly_and_stays_held(
    srv: Server, pdf_only: ippeve.EvePrinter
) -> None:
    add_printer(srv, "pdfonly", pdf_only.uri)
    job_id = submit(srv, "alice", b"UNIRAST\x00\x00\x00\x00\x01" + bytes(4000), fmt="image/urf")
    before = len(pdf_only.files())
    r = _release(srv, job_id, "pdfonly")
    assert r.status_code == 409, r.text
    detail = r.json()["detail"]
    assert "image/urf" in detail and "pdfonly" in detail and "stays held" in detail
    assert _one_job(srv).state is JobState.HELD
    assert len(pdf_only.files()) == before


def test_a_pdf_reaches_a_socket_printer_set_to_pcl_as_pcl(srv: Server) -> None:
    got = bytearray()
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            while data := conn.recv(65536):
                got.extend(data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    add_printer(
        srv, "laser", f"socket://127.0.0.1:{port}", document_formats=["application/vnd.hp-pcl"]
    )
    job_id = submit(srv, "alice", minimal_pdf(2), fmt="application/pdf")
    r = _release(srv, job_id, "laser")
    assert r.status_code == 200, r.text
    thread.join(10)
    listener.close()
    assert bytes(got).startswith(b"\x1bE")  # gs ljet4: PCL 5 reset
    with api(srv) as c:
        [p] = [p for p in c.get("/printers").json() if p["name"] == "laser"]
    assert p["document_formats"] == ["application/vnd.hp-pcl"]


# Made per run, so this file (or a checkout under /tmp) never holds it.
MARKER = "zq-formats-marker-" + os.urandom(6).hex()
WATCHED = ("/tmp", "/var/tmp", "/dev/shm")


def _marker_files(roots: Sequence[Path]) -> list[Path]:
    found = []
    needle = MARKER.encode()
    for root in roots:
        for path in root.rglob("*"):
            with contextlib.suppress(OSError):
                small = path.is_file() and not path.is_symlink() and path.stat().st_size < 64 << 20
                if small and needle in path.read_bytes():
                    found.append(path)
    return found


@needs_eve
def test_a_converted_document_is_nowhere_on_disk_during_and_after_conversion(
    srv: Server, pdf_only: ippeve.EvePrinter
) -> None:
    add_printer(srv, "pdfonly", pdf_only.uri)
    # Text: texttopdf makes a PDF (held in a memfd) with the marker in it.
    job_id = submit(srv, "alice", (MARKER + " line\n").encode() * 20000, fmt="text/plain")
    roots = [srv.data_dir, *(Path(d) for d in WATCHED)]
    seen: list[Path] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            seen.extend(_marker_files(roots))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        r = _release(srv, job_id, "pdfonly")
    finally:
        stop.set()
        watcher.join(60)
    assert r.status_code == 200, r.text
    # The printer's own spool (ippeveprinter under pytest's tmp) has the PDF: not ours.
    ours = [p for p in seen + _marker_files(roots) if pdf_only.spool not in p.parents]
    assert ours == []


@needs_eve
def test_a_converter_killed_mid_job_leaves_the_job_held(
    srv: Server, pwg_only: ippeve.EvePrinter
) -> None:
    add_printer(srv, "rasteronly", pwg_only.uri)
    job_id = submit(srv, "alice", minimal_pdf(400), fmt="application/pdf")
    killed: list[int] = []

    def kill_converter() -> None:
        deadline = time.monotonic() + 30
        while not killed and time.monotonic() < deadline:
            for pid in _descendants(srv.proc.pid):
                with contextlib.suppress(OSError):
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                    if cmd and cmd[0].endswith(b"gs") and b"-sDEVICE=pwgraster" in cmd:
                        time.sleep(0.3)  # mid-job: some pages are out
                        os.kill(pid, signal.SIGKILL)
                        killed.append(pid)
                        break
            time.sleep(0.02)

    killer = threading.Thread(target=kill_converter, daemon=True)
    killer.start()
    r = _release(srv, job_id, "rasteronly")
    killer.join(30)
    assert killed, "no converter was seen running"
    assert r.status_code == 502, r.text
    assert "killed by signal 9" in r.json()["detail"]
    job = _one_job(srv)
    assert job.state is JobState.HELD and "gs pwgraster" in (job.state_reason or "")


def _descendants(pid: int) -> list[int]:
    out: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{parent}/task").iterdir():
                children = (task / "children").read_text().split()
                kids = [int(c) for c in children]
                out += kids
                todo += kids
    return out


def _jpeg(tmp_path: Path) -> bytes:
    src = tmp_path / "in.pdf"
    src.write_bytes(minimal_pdf(1))
    out = tmp_path / "photo.jpg"
    subprocess.run(
        [
            "gs",
            "-q",
            "-dSAFER",
            "-dBATCH",
            "-dNOPAUSE",
            "-sDEVICE=jpeg",
            "-r30",
            f"-sOutputFile={out}",
            str(src),
        ],
        check=True,
        capture_output=True,
    )
    return out.read_bytes()


@needs_eve
def test_a_pdf_over_the_conversion_memory_limit_is_refused_before_any_byte(
    srv: Server, ps_only: ippeve.EvePrinter
) -> None:
    add_printer(srv, "psonly", ps_only.uri)
    with api(srv) as c:
        r = c.patch("/servers/primary/settings", json={"conversion_memory_mb": 1})
        assert r.status_code == 200, r.text
    big = minimal_pdf(1, marker="big") + b"%" + b"x" * (2 << 20) + b"\n"
    job_id = submit(srv, "alice", big, fmt="application/pdf")
    before = len(ps_only.files())
    r = _release(srv, job_id, "psonly")
    assert r.status_code == 409, r.text
    detail = r.json()["detail"]
    assert "application/pdf" in detail and "psonly" in detail and "1 MiB" in detail
    assert _one_job(srv).state is JobState.HELD
    assert len(ps_only.files()) == before


def test_the_plan_follows_the_matrix_of_docs_formats() -> None:
    from spoolvault.documents.convert import deliverable, plan

    def tools(source: str, accepted: list[str]) -> str | None:
        chain = plan(source, accepted)
        return None if chain is None else " | ".join(s.tool for s in chain.steps)

    assert tools(F.PDF, [F.POSTSCRIPT]) == "gs ps2write"
    assert tools(F.PDF, [F.PWG_RASTER]) == "gs pwgraster"
    assert tools(F.TEXT, [F.PDF]) == "texttopdf"
    assert tools(F.TEXT, [F.PCL]) == "texttopdf | gs ljet4"
    assert tools(F.JPEG, [F.URF]) == "imagetopdf | gs urf"
    assert tools(F.PWG_RASTER, [F.PDF]) == "rastertopdf"
    assert tools(F.POSTSCRIPT, [F.PCL, F.PDF]) == "gs pdfwrite"  # PDF first
    for none in (F.URF, F.PCL, F.PCLXL, F.UNKNOWN):
        assert tools(none, [F.PDF, F.POSTSCRIPT]) is None
    takes = (F.POSTSCRIPT, F.PCL)
    assert deliverable(takes, (F.UNKNOWN, F.PDF, F.URF, F.JPEG)) == (F.UNKNOWN, F.PDF, F.JPEG)
