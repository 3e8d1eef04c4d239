"""Run CUPS's ipptool suites against a server and read their results.

ipptool can exit 0 after stopping early, so results come from its plist output (-X), one
entry per test step, not from the exit status.
"""

from __future__ import annotations

import plistlib
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

SUITES = Path("/usr/share/cups/ipptool")


def minimal_pdf(pages: int = 1, marker: str = "") -> bytes:
    """A small, valid PDF with ``pages`` blank A4 pages (and an optional text marker)."""
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>"]
    kids = " ".join(f"{3 + i} 0 R" for i in range(pages))
    objs.append(f"<< /Type /Pages /Kids [{kids}] /Count {pages} >>".encode())
    for _ in range(pages):
        objs.append(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] >>")
    out = bytearray(b"%PDF-1.4\n")
    if marker:
        out += f"% {marker}\n".encode()
    offsets = []
    for n, body in enumerate(objs, start=1):
        offsets.append(len(out))
        out += f"{n} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode()
    for off in offsets:
        out += f"{off:010d} 00000 n \n".encode()
    out += f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def minimal_ps(pages: int = 1) -> bytes:
    body = "".join(f"%%Page: {i} {i}\nshowpage\n" for i in range(1, pages + 1))
    return f"%!PS-Adobe-3.0\n%%Pages: {pages}\n%%EndComments\n{body}%%EOF\n".encode()


def prepare(workdir: Path) -> Path:
    """Copy the suites and the sample documents they reference into ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    for test in SUITES.glob("*.test"):
        shutil.copy(test, workdir / test.name)
    (workdir / "document-a4.pdf").write_bytes(minimal_pdf(2))
    (workdir / "document-letter.pdf").write_bytes(minimal_pdf(1))
    (workdir / "document-a4.ps").write_bytes(minimal_ps(2))
    (workdir / "document-letter.ps").write_bytes(minimal_ps(1))
    # Not real JPEG images: a hold queue stores and forwards bytes, it never decodes them.
    jpeg = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + bytes(512)
    (workdir / "color.jpg").write_bytes(jpeg + b"\xff\xd9")
    (workdir / "gray.jpg").write_bytes(jpeg + b"\xff\xd9")
    (workdir / "testfile.txt").write_text("spoolvault ipptool test page\n")
    return workdir


@dataclass
class Step:
    name: str
    passed: bool
    skipped: bool
    errors: list[str]


@dataclass
class Result:
    steps: list[Step]
    stdout: bytes
    stderr: str
    returncode: int

    @property
    def failed(self) -> list[Step]:
        return [s for s in self.steps if not s.passed and not s.skipped]


def run(uri: str, test: str, workdir: Path, *args: str, timeout: float = 120) -> Result:
    """Run one suite with -X (plist) and return its steps."""
    proc = subprocess.run(
        ["ipptool", "-X", "-T", "30", *args, uri, test],
        cwd=workdir,
        capture_output=True,
        timeout=timeout,
    )
    steps: list[Step] = []
    # A suite that INCLUDEs another prints one plist per file, back to back, and leaves
    # the included file's plist unclosed (ipptool 2.4). Anything after a document's
    # </plist> (a status line ipptool may print) is dropped.
    docs = []
    for part in proc.stdout.split(b"<?xml"):
        if not part.strip():
            continue
        if b"</plist>" in part:
            body = part.split(b"</plist>")[0] + b"</plist>"
        else:
            body = part + b"</array>\n</dict>\n</plist>\n"
        docs.append(b"<?xml" + body)
    if not docs:
        raise AssertionError(f"ipptool {test} printed no plist: {proc.stderr!r}")
    for doc in docs:
        try:
            plist = plistlib.loads(doc)
        except Exception as exc:
            raise AssertionError(
                f"ipptool {test} printed a bad plist ({exc}): {doc[:2000]!r} {proc.stderr!r}"
            ) from None
        for entry in plist.get("Tests", []):
            steps.append(
                Step(
                    name=entry.get("Name", "?"),
                    passed=bool(entry.get("Successful")),
                    skipped=bool(entry.get("Skipped")),
                    errors=[str(e) for e in entry.get("Errors", [])],
                )
            )
    return Result(steps, proc.stdout, proc.stderr.decode(errors="replace"), proc.returncode)
