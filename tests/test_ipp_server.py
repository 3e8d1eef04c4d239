"""The IPP hold queue, driven by real clients: CUPS's ipptool suites and `lp`."""

from __future__ import annotations

import base64
import http.client
import json
import os
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from harness import cupsd, ipptool
from harness.server import (
    Server,
    ipp_request,
    job_group,
    jobs_in,
    new_request,
    queue_uri,
    start_server,
)
from harness.tmpfs import mounted_tmpfs
from spoolvault.config import DataDir
from spoolvault.db import Database, Job, JobState, database_url
from spoolvault.ipp.codec import IppMessage, StringWithLanguage, decode, encode
from spoolvault.ipp.constants import GroupTag, Operation, Status, ValueTag
from spoolvault.jobs.pins import pin_matches
from spoolvault.spool.keys import KeyFileProvider
from spoolvault.spool.store import EncryptedSpool

pytestmark = pytest.mark.skipif(shutil.which("ipptool") is None, reason="needs cups-ipp-utils")

MARKER = b"TOP-SECRET-MERGER-PLAN-5d1c"

# A held job never completes by itself (it waits for its owner at a printer), so the
# steps of ipp-1.1.test that need a completed job fail; these, and only these.
NEEDS_COMPLETED_JOB = {
    "Get-Job-Attributes Until Job Complete",
    "RFC 8011 section 4.2.6: Get-Jobs Operation (which-jobs=completed)",
    "RFC 8011 section 4.2.6: Get-Jobs Operation (which-jobs, requested-attributes)",
    "RFC 8011 section 4.3.3: Cancel-Job Operation (completed job)",
}


@pytest.fixture(scope="module")
def suites(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ipptool.prepare(tmp_path_factory.mktemp("ipptool"))


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(
        tmp_path_factory.mktemp("ipp") / "data", env={"SPOOLVAULT_ADMIN_PASSWORD": "admin-pw"}
    )
    try:
        yield srv
    finally:
        srv.stop()


# -- ipptool's own suites --------------------------------------------------------------


def test_ipp_everywhere_2_0_suite_passes_but_for_completion(
    shared_server: Server, suites: Path
) -> None:
    """ipp-2.0.test (which includes ipp-1.1.test) against the secure hold queue."""
    result = ipptool.run(
        queue_uri(shared_server), "ipp-2.0.test", suites, "-I", "-f", "document-a4.pdf", timeout=600
    )
    names = [s.name for s in result.steps]
    assert "PWG 5100.12 section 6.2 - Required Printer Description Attributes" in names
    assert len([s for s in result.steps if s.passed]) >= 40
    failed = {s.name: s.errors for s in result.failed}
    assert set(failed) == NEEDS_COMPLETED_JOB, failed


@pytest.mark.parametrize(
    "suite",
    [
        "print-job-hold.test",
        "get-jobs.test",
        "validate-job.test",
        "print-job-password.test",
        "create-job.test",
        "get-printer-attributes.test",
    ],
)
def test_ipptool_suite_passes(shared_server: Server, suites: Path, suite: str) -> None:
    result = ipptool.run(queue_uri(shared_server), suite, suites, "-I", "-f", "document-a4.pdf")
    assert result.steps, result.stderr
    assert result.failed == [], [(s.name, s.errors) for s in result.failed]


def test_get_job_attributes_by_job_uri(shared_server: Server, suites: Path) -> None:
    _, resp = ipp_request(
        shared_server, new_request(Operation.PRINT_JOB, shared_server), b"%PDF-1.4\n"
    )
    assert resp is not None and resp.code == Status.SUCCESSFUL_OK
    job_uri = job_group(resp).get("job-uri")
    assert job_uri is not None
    uri = str(job_uri.value).replace("localhost", "127.0.0.1")
    result = ipptool.run(uri, "get-job-attributes.test", suites)
    assert result.steps and result.failed == [], [(s.name, s.errors) for s in result.failed]


# -- hold semantics ---------------------------------------------------------------------


def test_jobs_stay_held_whatever_the_client_says(shared_server: Server) -> None:
    req = new_request(Operation.PRINT_JOB, shared_server)
    req.operation.add("job-name", ValueTag.NAME, "quarterly.pdf")
    _, resp = ipp_request(shared_server, req, b"%PDF-1.4\nbody\n")
    assert resp is not None and resp.code == Status.SUCCESSFUL_OK
    job_id = job_group(resp).get("job-id")
    assert job_id is not None
    for op in (Operation.RELEASE_JOB, Operation.HOLD_JOB, Operation.RELEASE_JOB):
        req = new_request(op, shared_server)
        req.operation.add("job-id", ValueTag.INTEGER, job_id.value)
        _, r = ipp_request(shared_server, req)
        assert r is not None and r.code == Status.SUCCESSFUL_OK, r
    req = new_request(Operation.GET_JOB_ATTRIBUTES, shared_server)
    req.operation.add("job-id", ValueTag.INTEGER, job_id.value)
    _, r = ipp_request(shared_server, req)
    assert r is not None
    attrs = job_group(r)
    state, reasons = attrs.get("job-state"), attrs.get("job-state-reasons")
    assert state is not None and state.value == 4  # pending-held
    assert reasons is not None and "job-release-wait" in reasons.python_values
    job = next(j for j in jobs_in(shared_server.data_dir) if j.id == job_id.value)
    assert job.state is JobState.HELD and job.owner == "alice" and job.title == "quarterly.pdf"


def test_names_with_a_language_name_the_owner_and_the_title(shared_server: Server) -> None:
    """RFC 8011 §5.1.3: a 'name' may come as nameWithLanguage; its text is the name (it
    was ignored, and the job went to "anonymous", whom anybody could claim to be)."""
    req = IppMessage((2, 0), Operation.PRINT_JOB, 1, [])
    req.operation.add("attributes-charset", ValueTag.CHARSET, "utf-8")
    req.operation.add("attributes-natural-language", ValueTag.NATURAL_LANGUAGE, "en")
    req.operation.add("printer-uri", ValueTag.URI, queue_uri(shared_server))
    lara = StringWithLanguage("de", "lara")
    req.operation.add("requesting-user-name", ValueTag.NAME_WITH_LANGUAGE, lara)
    title = StringWithLanguage("de", "Bericht.pdf")
    req.operation.add("job-name", ValueTag.NAME_WITH_LANGUAGE, title)
    _, resp = ipp_request(shared_server, req, b"%PDF-1.4\n")
    assert resp is not None and resp.code == Status.SUCCESSFUL_OK, resp
    job_id = job_group(resp).get("job-id")
    assert job_id is not None
    job = next(j for j in jobs_in(shared_server.data_dir) if j.id == job_id.value)
    assert (job.owner, job.title) == ("lara", "Bericht.pdf")
    # job-name is a Job Description attribute (RFC 8011 §5.3.5), not a Job Template one.
    for group, has_name in (("job-description", True), ("job-template", False)):
        req = new_request(Operation.GET_JOB_ATTRIBUTES, shared_server, user="lara")
        req.operation.add("job-id", ValueTag.INTEGER, job_id.value)
        req.operation.add("requested-attributes", ValueTag.KEYWORD, group)
        _, resp = ipp_request(shared_server, req)
        assert resp is not None and resp.code == Status.SUCCESSFUL_OK
        assert (job_group(resp).get("job-name") is not None) is has_name, group


def test_send_document_closing_the_job_empty_and_compression(shared_server: Server) -> None:
    """RFC 8011 §4.3.2: an empty last Send-Document closes a job; compression is checked
    as for Print-Job (only none)."""

    def send(job_id: object, last: bool, body: bytes, compression: str | None = None) -> int:
        req = new_request(Operation.SEND_DOCUMENT, shared_server)
        req.operation.add("job-id", ValueTag.INTEGER, job_id)
        req.operation.add("last-document", ValueTag.BOOLEAN, last)
        if compression is not None:
            req.operation.add("compression", ValueTag.KEYWORD, compression)
        _, resp = ipp_request(shared_server, req, body)
        assert resp is not None
        return resp.code

    _, created = ipp_request(shared_server, new_request(Operation.CREATE_JOB, shared_server))
    assert created is not None and created.code == Status.SUCCESSFUL_OK
    job_id = job_group(created).get("job-id")
    assert job_id is not None
    assert send(job_id.value, False, b"x", "gzip") == Status.CLIENT_ERROR_COMPRESSION_NOT_SUPPORTED
    assert send(job_id.value, False, b"%PDF-1.4\n") == Status.SUCCESSFUL_OK
    assert send(job_id.value, True, b"") == Status.SUCCESSFUL_OK
    assert (
        send(job_id.value, True, b"more")
        == Status.SERVER_ERROR_MULTIPLE_DOCUMENT_JOBS_NOT_SUPPORTED
    )
    job = next(j for j in jobs_in(shared_server.data_dir) if j.id == job_id.value)
    assert (job.state, job.size) == (JobState.HELD, len(b"%PDF-1.4\n"))
    # A job that never got a document: an empty last Send-Document closes it as Close-Job
    # does (aborted), not into a held job of 0 bytes; an empty non-last one changes nothing.
    _, created = ipp_request(shared_server, new_request(Operation.CREATE_JOB, shared_server))
    assert created is not None
    empty_id = job_group(created).get("job-id")
    assert empty_id is not None
    assert send(empty_id.value, False, b"") == Status.SUCCESSFUL_OK
    job = next(j for j in jobs_in(shared_server.data_dir) if j.id == empty_id.value)
    assert job.state is JobState.INCOMING
    assert send(empty_id.value, True, b"") == Status.SUCCESSFUL_OK
    job = next(j for j in jobs_in(shared_server.data_dir) if j.id == empty_id.value)
    assert (job.state, job.spool_name) == (JobState.ABORTED, None)


def test_an_unsupported_hold_value_is_ignored_unless_fidelity_is_asked(
    shared_server: Server,
) -> None:
    """RFC 8011 §4.1.7: without ipp-attribute-fidelity, a value we do not support is
    ignored and returned in the unsupported group; with it, the job is refused."""
    for fidelity, status in (
        (False, Status.SUCCESSFUL_OK_IGNORED_OR_SUBSTITUTED_ATTRIBUTES),
        (True, Status.CLIENT_ERROR_ATTRIBUTES_OR_VALUES_NOT_SUPPORTED),
    ):
        req = new_request(Operation.PRINT_JOB, shared_server)
        req.operation.add("ipp-attribute-fidelity", ValueTag.BOOLEAN, fidelity)
        req.add_group(GroupTag.JOB).add("job-hold-until", ValueTag.KEYWORD, "next-tuesday")
        _, resp = ipp_request(shared_server, req, b"%PDF-1.4\n")
        assert resp is not None and resp.code == status
        unsupported = resp.group(GroupTag.UNSUPPORTED)
        assert unsupported is not None and unsupported.get("job-hold-until") is not None


@pytest.mark.skipif(shutil.which("cancel") is None, reason="needs cups-client")
def test_cups_lp_with_a_hold_time_and_cups_cancel(shared_server: Server, tmp_path: Path) -> None:
    """lp -H HH:MM (a client hold at a time of day: held for release all the same) and
    CUPS's cancel, which POSTs to "/jobs/" (a redirect made it loop for ever)."""
    host = urlsplit(shared_server.url).netloc
    doc = tmp_path / "memo.txt"
    doc.write_text("memo\n")
    res = subprocess.run(
        ["lp", "-h", host, "-d", "secure", "-U", "frank", "-H", "23:00", str(doc)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    job_id = int(res.stdout.split("request id is secure-", 1)[1].split()[0])
    job = next(j for j in jobs_in(shared_server.data_dir) if j.id == job_id)
    assert (job.owner, job.state, job.client_hold) == ("frank", JobState.HELD, "23:00")
    req = new_request(Operation.GET_JOB_ATTRIBUTES, shared_server, user="frank")
    req.operation.add("job-id", ValueTag.INTEGER, job_id)
    _, resp = ipp_request(shared_server, req)
    assert resp is not None
    hold = job_group(resp).get("job-hold-until")
    assert hold is not None and (hold.tag, hold.value) == (ValueTag.NAME, "23:00")  # not a keyword
    # -H immediate: job-hold-until no-hold and job-priority 100 (job-settable-attributes).
    res = subprocess.run(
        ["lp", "-h", host, "-U", "frank", "-i", f"secure-{job_id}", "-H", "immediate"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    job = next(j for j in jobs_in(shared_server.data_dir) if j.id == job_id)
    assert (job.state, job.client_hold) == (JobState.HELD, None)  # still waits for release
    assert ["job-priority", [[ValueTag.INTEGER, 100]]] in json.loads(job.attributes)
    res = subprocess.run(
        ["cancel", "-h", host, "-U", "frank", f"secure-{job_id}"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    job = next(j for j in jobs_in(shared_server.data_dir) if j.id == job_id)
    assert job.state is JobState.CANCELLED


def test_get_jobs_by_job_ids_and_by_pages(shared_server: Server) -> None:
    """job-ids (PWG 5100.11) returns only the jobs named; first-index (PWG 5100.13) pages
    through the list instead of repeating its first page."""
    ids = []
    for _ in range(3):
        req = new_request(Operation.PRINT_JOB, shared_server, user="paula")
        _, resp = ipp_request(shared_server, req, b"%PDF-1.4\n")
        assert resp is not None
        job_id = job_group(resp).get("job-id")
        assert job_id is not None
        ids.append(job_id.value)

    def listed(**ops: object) -> list[object]:
        req = new_request(Operation.GET_JOBS, shared_server, user="paula")
        req.operation.add("my-jobs", ValueTag.BOOLEAN, True)
        for name, value in ops.items():
            values = value if isinstance(value, list) else [value]
            req.operation.add(name.replace("_", "-"), ValueTag.INTEGER, *values)
        req.operation.add("requested-attributes", ValueTag.KEYWORD, "job-id")
        _, resp = ipp_request(shared_server, req)
        assert resp is not None and resp.code == Status.SUCCESSFUL_OK, resp
        return [g.get("job-id").value for g in resp.groups_of(GroupTag.JOB)]  # type: ignore[union-attr]

    assert listed() == ids
    assert listed(job_ids=[ids[2], ids[0]]) == [ids[0], ids[2]]
    assert listed(limit=2) == ids[:2]
    assert listed(limit=2, first_index=3) == ids[2:]
    assert listed(first_index=4) == []


def test_cancel_my_jobs_by_job_ids_takes_only_the_users_own(shared_server: Server) -> None:
    ids = {}
    for user in ("quinn", "quinn", "rita"):
        req = new_request(Operation.PRINT_JOB, shared_server, user=user)
        _, resp = ipp_request(shared_server, req, b"%PDF-1.4\n")
        assert resp is not None
        job_id = job_group(resp).get("job-id")
        assert job_id is not None
        ids.setdefault(user, []).append(job_id.value)

    def cancel_mine(*job_ids: object) -> int:
        req = new_request(Operation.CANCEL_MY_JOBS, shared_server, user="quinn")
        req.operation.add("job-ids", ValueTag.INTEGER, *job_ids)
        _, resp = ipp_request(shared_server, req)
        assert resp is not None
        return resp.code

    def state(job_id: object) -> JobState:
        return next(j for j in jobs_in(shared_server.data_dir) if j.id == job_id).state

    # Someone else's id among them: nothing is cancelled.
    assert cancel_mine(ids["quinn"][0], ids["rita"][0]) == Status.CLIENT_ERROR_NOT_POSSIBLE
    assert state(ids["quinn"][0]) is state(ids["rita"][0]) is JobState.HELD
    assert cancel_mine(ids["quinn"][0]) == Status.SUCCESSFUL_OK
    assert state(ids["quinn"][0]) is JobState.CANCELLED
    assert state(ids["quinn"][1]) is state(ids["rita"][0]) is JobState.HELD


def test_another_user_cannot_cancel_or_release(shared_server: Server) -> None:
    _, resp = ipp_request(
        shared_server, new_request(Operation.PRINT_JOB, shared_server), b"%PDF-1.4\n"
    )
    assert resp is not None
    job_id = job_group(resp).get("job-id")
    assert job_id is not None
    for op in (Operation.CANCEL_JOB, Operation.RELEASE_JOB, Operation.HOLD_JOB):
        req = new_request(op, shared_server, user="mallory")
        req.operation.add("job-id", ValueTag.INTEGER, job_id.value)
        _, r = ipp_request(shared_server, req)
        assert r is not None and r.code == Status.CLIENT_ERROR_NOT_AUTHORIZED
    job = next(j for j in jobs_in(shared_server.data_dir) if j.id == job_id.value)
    assert job.state is JobState.HELD


def test_basic_auth_user_is_the_owner_and_bad_password_is_401(shared_server: Server) -> None:
    good = "Basic " + base64.b64encode(b"admin:admin-pw").decode()
    _, resp = ipp_request(
        shared_server,
        new_request(Operation.PRINT_JOB, shared_server, "bob"),
        b"data",
        headers={"Authorization": good},
    )
    assert resp is not None and resp.code == Status.SUCCESSFUL_OK
    job_id = job_group(resp).get("job-id")
    assert job_id is not None
    job = next(j for j in jobs_in(shared_server.data_dir) if j.id == job_id.value)
    assert job.owner == "admin"  # the authenticated user, not requesting-user-name
    bad = "Basic " + base64.b64encode(b"admin:wrong").decode()
    status, _ = ipp_request(
        shared_server,
        new_request(Operation.PRINT_JOB, shared_server),
        b"data",
        headers={"Authorization": bad},
    )
    assert status == 401


def test_pin_is_stored_only_as_a_hash(shared_server: Server) -> None:
    req = new_request(Operation.PRINT_JOB, shared_server)
    req.operation.add("job-password", ValueTag.OCTET_STRING, b"4711")
    req.operation.add("job-password-encryption", ValueTag.KEYWORD, "none")
    _, resp = ipp_request(shared_server, req, b"%PDF-1.4\n")
    assert resp is not None and resp.code == Status.SUCCESSFUL_OK
    job_id = job_group(resp).get("job-id")
    assert job_id is not None
    job = next(j for j in jobs_in(shared_server.data_dir) if j.id == job_id.value)
    assert job.pin_hash is not None and "4711" not in job.pin_hash
    assert pin_matches(job.pin_hash, "4711") and not pin_matches(job.pin_hash, "4712")
    reasons = job_group(resp).get("job-state-reasons")
    assert reasons is not None and "job-password-wait" in reasons.python_values
    # Shorter than job-password-length-supported (4): refused, and never echoed back.
    for pin, encryption in ((b"12", "none"), (b"short digest", "sha2-256")):
        req = new_request(Operation.PRINT_JOB, shared_server)
        req.operation.add("job-password", ValueTag.OCTET_STRING, pin)
        req.operation.add("job-password-encryption", ValueTag.KEYWORD, encryption)
        _, resp = ipp_request(shared_server, req, b"%PDF-1.4\n")
        assert (
            resp is not None and resp.code == Status.CLIENT_ERROR_ATTRIBUTES_OR_VALUES_NOT_SUPPORTED
        )
        assert pin not in encode(resp)


# -- clear errors for bad input ----------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\x02",
        b"\x02\x00\x00\x0b\x00\x00\x00\x01",
        os.urandom(64),
        b"\x02\x00\x00\x0b\x00\x00\x00\x01\x01\x47\xff\xff",
    ],
)
def test_malformed_requests_get_an_ipp_error_and_the_server_lives(
    shared_server: Server, body: bytes
) -> None:
    parts = urlsplit(shared_server.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    conn.request("POST", "/printers/secure", body, {"Content-Type": "application/ipp"})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    assert resp.status == 200
    msg, _ = decode(data)
    assert 0x0400 <= msg.code < 0x0600
    message = msg.operation.get("status-message")
    assert message is not None and str(message.value)
    _, ok = ipp_request(shared_server, new_request(Operation.GET_PRINTER_ATTRIBUTES, shared_server))
    assert ok is not None and ok.code == Status.SUCCESSFUL_OK


def test_a_queue_answers_at_its_ipp_everywhere_path_too(shared_server: Server) -> None:
    """DNS-SD's rp is ipp/print/<queue> (and ipp/print for secure): clients that build the
    printer-uri from it reach the same queue, with or without a trailing slash."""
    base = queue_uri(shared_server).rsplit("/printers/", 1)[0]
    for path in ("/ipp/print/secure", "/ipp/print/secure/", "/ipp/print"):
        req = new_request(Operation.GET_PRINTER_ATTRIBUTES, shared_server)
        req.operation.set("printer-uri", ValueTag.URI, base + path)
        req.operation.add("requested-attributes", ValueTag.KEYWORD, "printer-name")
        _, resp = ipp_request(shared_server, req, path=path)
        assert resp is not None and resp.code == Status.SUCCESSFUL_OK, path
        group = resp.group(GroupTag.PRINTER)
        name = group.get("printer-name") if group is not None else None
        assert name is not None and name.value == "secure", path


def test_unknown_queue_and_wrong_content_type(shared_server: Server) -> None:
    req = new_request(Operation.GET_PRINTER_ATTRIBUTES, shared_server)
    req.operation.set("printer-uri", ValueTag.URI, queue_uri(shared_server, "nope"))
    _, resp = ipp_request(shared_server, req, path="/printers/nope")
    assert resp is not None and resp.code == Status.CLIENT_ERROR_NOT_FOUND
    parts = urlsplit(shared_server.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    conn.request("POST", "/printers/secure", b"x", {"Content-Type": "text/plain"})
    r = conn.getresponse()
    assert r.status == 400 and b"application/ipp" in r.read()
    conn.close()


# -- CUPS lp, and what reaches the disk ---------------------------------------------------


def test_each_installation_has_its_own_printer_uuid(shared_server: Server, tmp_path: Path) -> None:
    """printer-uuid (and so DNS-SD's UUID) comes from the data directory's instance-id: two
    servers' `secure` queues differ, and one server keeps its own across restarts."""

    def printer_uuid(srv: Server) -> object:
        req = new_request(Operation.GET_PRINTER_ATTRIBUTES, srv)
        req.operation.add("requested-attributes", ValueTag.KEYWORD, "printer-uuid")
        _, reply = ipp_request(srv, req)
        assert reply is not None and reply.code == Status.SUCCESSFUL_OK
        group = reply.group(GroupTag.PRINTER)
        attr = group.get("printer-uuid") if group is not None else None
        assert attr is not None
        return attr.value

    uuids = []
    for _ in range(2):
        srv = start_server(tmp_path / "data")
        try:
            uuids.append(printer_uuid(srv))
        finally:
            srv.stop()
    assert (tmp_path / "data" / "instance-id").is_file()
    assert uuids[0] == uuids[1] != printer_uuid(shared_server)
    assert str(uuids[0]).startswith("urn:uuid:")


@pytest.mark.skipif(shutil.which("lp") is None, reason="needs cups-client")
def test_cups_lp_job_is_accepted_held_and_encrypted(tmp_path: Path) -> None:
    srv = start_server(tmp_path / "data")
    try:
        doc = tmp_path / "payroll.txt"
        doc.write_bytes(MARKER * 5000 + b"\n")
        host = urlsplit(srv.url).netloc
        res = subprocess.run(
            ["lp", "-h", host, "-d", "secure", "-U", "alice", "-t", "payroll", str(doc)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert res.returncode == 0, res.stderr
        assert "request id is secure-" in res.stdout
        [job] = jobs_in(srv.data_dir)
        assert (job.owner, job.title, job.state) == ("alice", "payroll", JobState.HELD)
        assert job.encrypted and job.size == doc.stat().st_size
        data = DataDir.open(srv.data_dir, create=False)
        spool = EncryptedSpool(data.encrypted_spool, KeyFileProvider(data.key_file))
        assert job.spool_name is not None
        assert spool.read_all(job.spool_name) == doc.read_bytes()
    finally:
        assert srv.stop() == 0
    for path in srv.data_dir.rglob("*"):
        if path.is_file():
            assert MARKER not in path.read_bytes(), path
            assert MARKER[:12] not in path.read_bytes(), path


def test_ipps_with_a_certificate_generated_on_first_start(tmp_path: Path, suites: Path) -> None:
    srv = start_server(tmp_path / "data", "--tls")
    try:
        assert srv.url.startswith("https://")
        assert (srv.data_dir / "tls" / "server.crt").is_file()
        assert stat.S_IMODE((srv.data_dir / "tls" / "server.key").stat().st_mode) == 0o600
        uri = queue_uri(srv)
        assert uri.startswith("ipps://")
        result = ipptool.run(uri, "print-job-hold.test", suites, "-f", "document-a4.pdf")
        assert result.steps and result.failed == [], [(s.name, s.errors) for s in result.failed]
        attrs = ipptool.run(uri, "get-printer-attributes.test", suites)
        assert attrs.failed == []
        assert b"ipps://" in attrs.stdout and b"<string>tls</string>" in attrs.stdout
        [job] = jobs_in(srv.data_dir)
        assert job.state is JobState.HELD
    finally:
        assert srv.stop() == 0


@pytest.mark.skipif(not Path(cupsd.CUPSD).exists(), reason="needs cups")
def test_cupsd_ipp_queue_forwards_a_job_that_we_hold(tmp_path: Path) -> None:
    """CUPS in front of us: its ipp backend delivers the job, we hold it for its owner."""
    srv = start_server(tmp_path / "data")
    # cupsd's backends run as user lp, which cannot enter pytest's private tmp_path.
    cups_root = Path(tempfile.mkdtemp(prefix="spoolvault-cupsd-", dir="/var/tmp"))
    cups_root.chmod(0o755)
    cups = cupsd.start_cupsd(cups_root)
    try:
        device = queue_uri(srv).replace("localhost", "127.0.0.1") + "?waitjob=false"
        made = cups.run("lpadmin", "-p", "fwd", "-E", "-v", device, "-m", "raw", check=False)
        assert made.returncode == 0, made.stderr
        doc = tmp_path / "report.pdf"
        doc.write_bytes(ipptool.minimal_pdf(3, marker="forwarded"))
        sent = cups.run("lp", "-d", "fwd", "-U", "carol", "-t", "report", str(doc))
        assert "request id is fwd-" in sent.stdout
        deadline = time.monotonic() + 60
        jobs: list[Job] = []
        while time.monotonic() < deadline:
            jobs = jobs_in(srv.data_dir)
            if jobs and jobs[0].state is not JobState.INCOMING:
                break  # Create-Job came first; Send-Document has now arrived too
            time.sleep(0.5)
        assert jobs, cups.error_log()[-3000:]
        [job] = jobs
        assert (job.owner, job.state, job.pages) == ("carol", JobState.HELD, 3)
        data = DataDir.open(srv.data_dir, create=False)
        spool = EncryptedSpool(data.encrypted_spool, KeyFileProvider(data.key_file))
        assert job.spool_name is not None
        assert spool.read_all(job.spool_name) == doc.read_bytes()
    finally:
        cups.stop()
        shutil.rmtree(cups_root, ignore_errors=True)
        assert srv.stop() == 0


@pytest.fixture
def tiny_spool(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs to be the EncryptedSpoolDir: a real full disk, not a simulated one."""
    with mounted_tmpfs(tmp_path / "tiny", "size=1m,mode=0700") as mnt:
        yield mnt


def test_disk_full_is_a_clear_ipp_error_and_leaves_nothing(
    tmp_path: Path, tiny_spool: Path
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "print-provider.conf").write_text(f"EncryptedSpoolDir={tiny_spool}\n")
    srv = start_server(data_dir)
    try:
        _, small = ipp_request(srv, new_request(Operation.PRINT_JOB, srv), b"%PDF-1.4 small\n")
        assert small is not None and small.code == Status.SUCCESSFUL_OK
        before = sorted(p.name for p in tiny_spool.iterdir())

        _, full = ipp_request(srv, new_request(Operation.PRINT_JOB, srv), os.urandom(3 << 20))
        assert full is not None and full.code == Status.SERVER_ERROR_TEMPORARY_ERROR
        message = full.operation.get("status-message")
        assert message is not None and "no space left" in str(message.value)
        assert sorted(p.name for p in tiny_spool.iterdir()) == before  # nothing partial

        _, again = ipp_request(srv, new_request(Operation.PRINT_JOB, srv), b"%PDF-1.4 after\n")
        assert again is not None and again.code == Status.SUCCESSFUL_OK
        held = jobs_in(srv.data_dir)
        assert [j.state for j in held] == [JobState.HELD, JobState.HELD]
        data = DataDir.open(srv.data_dir, create=False)
        spool = EncryptedSpool(data.encrypted_spool, KeyFileProvider(data.key_file))
        assert held[0].spool_name is not None
        assert spool.read_all(held[0].spool_name) == b"%PDF-1.4 small\n"
    finally:
        assert srv.stop() == 0


def test_queue_can_require_authentication(tmp_path: Path, suites: Path) -> None:
    srv = start_server(tmp_path / "data", env={"SPOOLVAULT_ADMIN_PASSWORD": "s3cret-pw"})
    try:
        data = DataDir.open(srv.data_dir, create=False)
        db = Database.open(database_url(None, data.database))
        try:
            db.update_settings("primary", {"ipp_authentication_required": True})
        finally:
            db.close()
        time.sleep(2.5)  # the server re-reads settings every 2 s
        status, _ = ipp_request(srv, new_request(Operation.PRINT_JOB, srv), b"data")
        assert status == 401
        assert jobs_in(srv.data_dir) == []
        uri = queue_uri(srv).replace("://", "://admin:s3cret-pw@", 1)
        result = ipptool.run(uri, "print-job-hold.test", suites, "-f", "document-a4.pdf")
        assert result.steps and result.failed == [], [(s.name, s.errors) for s in result.failed]
        [job] = jobs_in(srv.data_dir)
        assert job.owner == "admin"  # the authenticated user, whatever the client claims
        attrs = ipptool.run(uri, "get-printer-attributes.test", suites)
        assert b"<string>basic</string>" in attrs.stdout
    finally:
        assert srv.stop() == 0


def test_any_administrator_may_cancel_another_users_job(shared_server: Server) -> None:
    data = DataDir.open(shared_server.data_dir, create=False)
    db = Database.open(database_url(None, data.database))
    try:
        db.add_user("boss", "boss-password", is_admin=True)
        db.add_user("clerk", "clerk-password")
    finally:
        db.close()
    _, resp = ipp_request(
        shared_server, new_request(Operation.PRINT_JOB, shared_server), b"%PDF-1.4\n"
    )
    assert resp is not None
    job_id = job_group(resp).get("job-id")
    assert job_id is not None
    for user, password, expected in (
        ("clerk", "clerk-password", Status.CLIENT_ERROR_NOT_AUTHORIZED),
        ("boss", "boss-password", Status.SUCCESSFUL_OK),
    ):
        req = new_request(Operation.CANCEL_JOB, shared_server, user=user)
        req.operation.add("job-id", ValueTag.INTEGER, job_id.value)
        auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        _, r = ipp_request(shared_server, req, headers={"Authorization": auth})
        assert r is not None and r.code == expected, (user, r)
    job = next(j for j in jobs_in(shared_server.data_dir) if j.id == job_id.value)
    assert job.state is JobState.CANCELLED
