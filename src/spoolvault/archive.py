"""Print Archiving: a readable copy of each printed document, for approved administrators.

Only while Spool File Encryption is off (the two exclude each other: settings.py). When a
plain job prints, its spool file is not deleted but moved into ``<data-dir>/archive/``
under the same name; the job's row (owner, title, queue, printer, size, pages, format,
times) is the archive's metadata, so nothing is kept twice. Files older than
``archive_retention_days`` are removed by the daily purge. Listing, downloading and
previewing are for the users named in ``print_archive_viewers``, and every access is an
audit event (docs/archive.md).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import subprocess
import tempfile
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from spoolvault.db import Database, Job, JobState
from spoolvault.errors import NotFound
from spoolvault.spool.store import SUFFIX, PlainSpool
from spoolvault.util.fs import fsync_dir

log = logging.getLogger(__name__)

ARCHIVE_DIR = "archive"
PREVIEW_FORMATS = frozenset({"application/pdf", "application/postscript"})
PREVIEW_TIMEOUT = 30.0  # seconds Ghostscript may take for one first page
PREVIEW_DPI = 60  # a readable thumbnail of an A4/Letter page: about 500 x 700 pixels


class NotArchived(NotFound):
    """The job has no archived document (HTTP 404)."""


class NoPreview(NotFound):
    """No first-page preview can be made for this document (HTTP 404, with the reason)."""


def archive_dir(data_root: Path) -> Path:
    return data_root / ARCHIVE_DIR


def viewers(setting: str) -> frozenset[str]:
    """The approved administrators named by the ``print_archive_viewers`` setting."""
    return frozenset(name.strip() for name in setting.split(",") if name.strip())


class Archive:
    """The archive directory of one server, next to its plain spool."""

    def __init__(self, directory: Path, db: Database) -> None:
        self.directory = directory
        self.db = db
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(directory, 0o700)

    def path(self, spool_name: str) -> Path:
        return self.directory / f"{spool_name}{SUFFIX}"

    def keep(self, spool: PlainSpool, spool_name: str) -> Path:
        """Move a printed job's plain spool file into the archive (a copy across devices)."""
        source, target = spool.path(spool_name), self.path(spool_name)
        try:
            os.rename(source, target)
        except OSError as exc:
            if exc.errno != errno.EXDEV:  # SpoolDir on another file system than the archive
                raise
            tmp = self.directory / f".tmp-{spool_name}{SUFFIX}"
            with open(source, "rb") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
                dst.flush()
                os.fsync(dst.fileno())
            os.rename(tmp, target)
            source.unlink()
            fsync_dir(spool.directory)
        fsync_dir(self.directory)
        return target

    def document(self, job: Job) -> Path:
        """The archived document of a printed plain job, or NotArchived."""
        if job.state is not JobState.PRINTED or job.encrypted or job.spool_name is None:
            raise NotArchived(f"job {job.id} has no archived document")
        path = self.path(job.spool_name)
        if not path.is_file():
            raise NotArchived(f"job {job.id} has no archived document (purged or never kept)")
        return path

    def list(
        self,
        *,
        owner: str | None = None,
        printer: str | None = None,
        title: str | None = None,
        since: datetime | None = None,
        limit: int = 100,
        before_id: int | None = None,
    ) -> list[Job]:
        """Archived jobs, newest first, filtered; only those whose document is still kept."""
        query = select(Job).where(Job.state == JobState.PRINTED.value, Job.encrypted.is_(False))
        if owner is not None:
            query = query.where(Job.owner == owner)
        if printer is not None:
            query = query.where(Job.printer == printer)
        if title is not None:
            query = query.where(Job.title.contains(title, autoescape=True))
        if since is not None:
            query = query.where(Job.completed_at >= since)
        if before_id is not None:
            query = query.where(Job.id < before_id)
        found: list[Job] = []
        batch = max(limit, 50)
        while len(found) < limit:
            with self.db.session(write=False) as s:
                rows = list(s.scalars(query.order_by(Job.id.desc()).limit(batch)))
            found += [j for j in rows if j.spool_name and self.path(j.spool_name).is_file()]
            if len(rows) < batch:
                break
            query = query.where(Job.id < rows[-1].id)
        return found[:limit]

    def purge(self, older_than: datetime) -> int:
        """Remove documents of jobs printed before ``older_than``; return how many."""
        removed = 0
        with self.db.session(write=False) as s:
            names = list(
                s.scalars(
                    select(Job.spool_name).where(
                        Job.state == JobState.PRINTED.value,
                        Job.encrypted.is_(False),
                        Job.completed_at < older_than,
                        Job.spool_name.is_not(None),
                    )
                )
            )
        for name in names:
            if name is None:
                continue
            with contextlib.suppress(FileNotFoundError):
                self.path(name).unlink()
                removed += 1
        if removed:
            fsync_dir(self.directory)
        return removed

    def preview(self, job: Job) -> bytes:
        """A PNG of the document's first page, rendered by Ghostscript, or NoPreview."""
        path = self.document(job)
        if job.document_format not in PREVIEW_FORMATS and not _looks_like_pdf_or_ps(path):
            raise NoPreview(f"no preview: {job.document_format} documents are not rendered")
        gs = shutil.which("gs")
        if gs is None:
            raise NoPreview("no preview: Ghostscript (gs) is not installed on this server")
        with tempfile.TemporaryDirectory(prefix="spoolvault-preview-") as tmp:
            out = Path(tmp) / "page1.png"
            cmd = [
                gs,
                "-q",
                "-dSAFER",  # the document cannot read or write files, or run programs
                "-dBATCH",
                "-dNOPAUSE",
                "-dFirstPage=1",
                "-dLastPage=1",
                "-sDEVICE=png16m",
                f"-r{PREVIEW_DPI}",
                f"-sOutputFile={out}",
                str(path),
            ]
            try:
                done = subprocess.run(
                    cmd, capture_output=True, timeout=PREVIEW_TIMEOUT, check=False
                )
            except subprocess.TimeoutExpired:
                raise NoPreview(
                    f"no preview: Ghostscript took over {PREVIEW_TIMEOUT:g} s"
                ) from None
            if done.returncode != 0 or not out.is_file():
                reason = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
                log.warning("preview of job %d failed: %s", job.id, reason[0])
                raise NoPreview("no preview: Ghostscript could not render the document")
            return out.read_bytes()


def _looks_like_pdf_or_ps(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(1024)
    return head.startswith((b"%PDF", b"%!")) or b"%PDF-" in head


def download_name(job: Job) -> str:
    """A file name for a downloaded archived document: its title, made safe."""
    ext = {"application/pdf": ".pdf", "application/postscript": ".ps", "text/plain": ".txt"}
    base = "".join(c if c.isalnum() or c in " ._-" else "_" for c in job.title)[:80].strip()
    return f"{base or f'job-{job.id}'}{ext.get(job.document_format, '')}"


def cutoff(now: datetime, days: int) -> datetime:
    return now - timedelta(days=days)
