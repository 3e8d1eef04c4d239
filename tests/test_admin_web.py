"""The admin web interface in a real browser: Debian's Chromium driven by Playwright, against
a real `spoolvault run`, releasing to a real ippeveprinter.

Set SPOOLVAULT_SCREENSHOTS=DIR to save the pages shown in docs/admin.md.
"""

from __future__ import annotations

import csv
import io
import os
import re
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from harness import ippeve
from harness.server import ADMIN, Server
from harness.web_helpers import (
    DESKTOP,
    NEEDS_CHROMIUM_AND_PRINTER,
    PASSWORD,
    add_user,
    api,
    audit,
    fill_login,
    lobby_server,
    screenshots,
    submit,
)

playwright_sync = pytest.importorskip("playwright.sync_api")
from playwright.sync_api import BrowserContext, Page, expect  # noqa: E402

expect.set_options(timeout=15_000)  # two shared cores: slow, not wrong

TABLET = {"width": 820, "height": 1180}

pytestmark = NEEDS_CHROMIUM_AND_PRINTER


# -- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, printer: ippeve.EvePrinter) -> Iterator[Server]:
    """One server for the module; the tests use their own users and printers."""
    with lobby_server(tmp_path_factory.mktemp("admin") / "data", printer.uri) as s:
        yield s


@pytest.fixture
def admin(srv: Server, context: BrowserContext) -> Page:
    """A page logged in as the administrator."""
    page = context.new_page()
    login(page, srv, *ADMIN)
    expect(page.locator("#user")).to_have_text("admin")
    return page


# -- helpers ------------------------------------------------------------------------------


def settings(srv: Server) -> dict[str, object]:
    with api(srv) as c:
        got: dict[str, object] = c.get("/servers/primary/settings").json()
        return got


def patch_settings(srv: Server, **changes: object) -> None:
    with api(srv) as c:
        r = c.patch("/servers/primary/settings", json=changes)
        assert r.status_code == 200, r.text


def jobs(srv: Server) -> dict[int, dict[str, object]]:
    with api(srv) as c:
        return {j["id"]: j for j in c.get("/jobs").json()}


def spool_files(srv: Server, kind: str) -> set[Path]:
    return set((srv.data_dir / "spool" / kind).glob("*.spool"))


def text_pdf(*lines: str) -> bytes:
    """A one-page A4 PDF that shows ``lines`` in large Helvetica (a preview has ink)."""
    text = " ".join(
        f"BT /F1 28 Tf 60 {760 - 40 * n} Td ({line}) Tj ET" for n, line in enumerate(lines)
    ).encode()
    objs = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] "
        b"/Resources << /Font << /F1 5 0 R >> >> /Contents 4 0 R >>",
        b"<< /Length %d >>\nstream\n" % len(text) + text + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for n, body in enumerate(objs, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % n + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    for off in offsets:
        out += b"%010d 00000 n \n" % off
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)
    return bytes(out)


def dark_pixels(png: bytes) -> int:
    """How many pixels of an 8-bit RGB PNG (Ghostscript's png16m) are not near white."""
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        kind, data = png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", data[:10])
            assert (depth, color) == (8, 2), "expected 8-bit RGB"
        elif kind == b"IDAT":
            idat += data
        pos += 12 + length
    raw, stride, bpp = zlib.decompress(idat), width * 3, 3
    prev, dark = bytearray(stride), 0
    for y in range(height):
        kind, row = (
            raw[y * (stride + 1)],
            bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)]),
        )
        for i in range(stride):
            a = row[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if kind == 1:
                row[i] = (row[i] + a) & 0xFF
            elif kind == 2:
                row[i] = (row[i] + b) & 0xFF
            elif kind == 3:
                row[i] = (row[i] + (a + b) // 2) & 0xFF
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                row[i] = (row[i] + pred) & 0xFF
        dark += sum(1 for x in range(0, stride, 3) if min(row[x : x + 3]) < 128)
        prev = row
    return dark


def login(page: Page, srv: Server, user: str, password: str) -> None:
    page.goto(srv.url + "/admin/login")
    fill_login(page, "#login", user, password)


def shot(page: Page, name: str) -> None:
    """Save the page at laptop and tablet sizes when SPOOLVAULT_SCREENSHOTS is set."""
    screenshots(page, f"admin-{name}", {"laptop": DESKTOP, "tablet": TABLET})


# -- tests --------------------------------------------------------------------------------


def test_only_administrators_log_in_and_sessions_are_strict(
    srv: Server, context: BrowserContext
) -> None:
    add_user(srv, "nina")
    page = context.new_page()
    page.goto(srv.url + "/admin/jobs")  # not logged in: the login page, then back here
    expect(page.locator("h1")).to_have_text("Administrator login")
    login(page, srv, "nina", "wrong-password")
    expect(page.locator("#error")).to_have_text("Login failed: unknown user or wrong password.")
    login(page, srv, "nina", PASSWORD)  # the right password, but not an administrator
    expect(page.locator("#error")).to_contain_text("not an administrator")
    assert page.locator("#user").count() == 0
    page.goto(srv.url + "/admin/users")
    expect(page.locator("h1")).to_have_text("Administrator login")
    refused = audit(srv, action="auth.login", actor="nina")
    # Newest first: not an administrator (after the password matched), a wrong password.
    assert [e["outcome"] for e in refused[:3]] == ["refused", "ok", "refused"]
    assert "not an administrator" in str(refused[0]["detail"])
    assert not any(PASSWORD in str(e["detail"]) for e in refused)

    page.goto(srv.url + "/admin/jobs")
    fill_login(page, "#login", *ADMIN)
    expect(page.locator("h1")).to_contain_text("Held jobs of all users")  # where it was going
    cookie = {c["name"]: c for c in context.cookies()}["spoolvault_admin"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/admin"
    assert not cookie["secure"]  # plain HTTP in this test; Secure under --tls

    # A session cookie alone (as another site's form would send it) changes nothing, and
    # neither does a form with a forged token.
    with httpx.Client(base_url=srv.url, cookies={"spoolvault_admin": cookie["value"]}) as c:
        r = c.post("/admin/printers", data={"name": "evil", "uri": "ipp://203.0.113.9/ipp"})
        assert r.status_code == 403 and "This form has expired" in r.text
        r = c.post(
            "/admin/servers/primary/settings",
            data={"csrf": "forged", "spool_file_encryption": "false"},
        )
        assert r.status_code == 403
    page.goto(srv.url + "/admin/printers")
    page.fill("#name", "evil")
    page.fill("#uri", "ipp://203.0.113.9/ipp/print")
    page.eval_on_selector("#add-printer input[name=csrf]", "e => e.value = 'forged'")
    page.click("#add-printer button[type=submit]")
    expect(page.locator("h1")).to_have_text("This form has expired")
    with api(srv) as c:
        assert "evil" not in {p["name"] for p in c.get("/printers").json()}
    assert settings(srv)["spool_file_encryption"] is True

    page.goto(srv.url + "/admin/status")
    expect(page.locator("#version")).not_to_be_empty()
    expect(page.locator("#key-id")).to_have_text(
        httpx.get(srv.url + "/healthz").json()["current_key_id"]
    )
    expect(page.locator("#audit-status")).to_have_text("ok")
    expect(page.locator("#printer-health li[data-printer='lobby']")).to_be_visible()
    page.click("#logout button")
    expect(page.locator("#login-notice")).to_have_text("You are logged out.")
    page.go_back()
    expect(page.locator("h1")).to_have_text("Administrator login")


def test_settings_page_shows_that_encryption_and_archiving_exclude_each_other(
    srv: Server, admin: Page
) -> None:
    before = settings(srv)
    assert before["spool_file_encryption"] is True and before["print_archiving"] is False
    admin.goto(srv.url + "/admin/servers/primary/settings")
    encryption, archiving = (
        admin.locator("#spool_file_encryption"),
        admin.locator("#print_archiving"),
    )
    expect(admin.locator("label[for=spool_file_encryption]")).to_have_text(
        "Enable Spool File Encryption"
    )
    expect(admin.locator("label[for=print_archiving]")).to_have_text("Enable Print Archiving")
    expect(encryption).to_be_checked()
    expect(archiving).to_be_disabled()
    why = admin.locator("#print_archiving-why")
    expect(why).to_be_visible()
    expect(why).to_contain_text("needs unencrypted spool files")
    expect(why).to_contain_text("Spool File Encryption is on")
    expect(admin.locator("#applies")).to_contain_text(
        "jobs already held keep their format and stay releasable"
    )
    # Every setting of the table is on the page, with its help text.
    for name in before:
        expect(admin.locator(f"#setting-{name} .help").first).not_to_be_empty()
    shot(admin, "settings")

    # Unticking encryption frees the archiving box at once (and ticking it again locks it).
    encryption.uncheck()
    expect(archiving).to_be_enabled()
    expect(why).to_be_hidden()
    encryption.check()
    expect(archiving).to_be_disabled()

    # A forced submit of both (the disabled box re-enabled by hand) is refused with the
    # reason, and nothing is stored: not even the other change in the same form.
    admin.eval_on_selector("#print_archiving", "e => { e.disabled = false; e.checked = true; }")
    admin.fill("#hold_timeout_minutes", "99")
    admin.click("#save")
    error = admin.locator("#error")
    expect(error).to_contain_text("cannot both be enabled")
    expect(error).to_contain_text("needs unencrypted spool files")
    assert settings(srv) == before
    [refused] = audit(srv, action="settings.change")[:1]
    assert refused["outcome"] == "refused" and refused["actor"] == "admin"
    # The page shows what is stored, with the box disabled again.
    expect(admin.locator("#print_archiving")).to_be_disabled()
    expect(admin.locator("#hold_timeout_minutes")).to_have_value(
        str(before["hold_timeout_minutes"])
    )


def test_switching_encryption_in_the_page_applies_to_the_next_job(
    srv: Server, admin: Page, printer: ippeve.EvePrinter
) -> None:
    add_user(srv, "otto")
    held = b"held while encryption was on\n" * 40
    first = submit(srv, "otto", held, "otto 1.txt")
    admin.goto(srv.url + "/admin/servers/primary/settings")
    admin.locator("#spool_file_encryption").uncheck()
    admin.click("#save")
    expect(admin.locator("#notice")).to_contain_text("Saved: Enable Spool File Encryption")
    expect(admin.locator("#notice")).to_contain_text("jobs already held keep their format")
    assert settings(srv)["spool_file_encryption"] is False
    try:
        plain_before = spool_files(srv, "plain")
        body = b"otto's plain document, readable on disk\n" * 50
        second = submit(srv, "otto", body, "otto 2.txt")  # no wait: applies at once
        [new_file] = spool_files(srv, "plain") - plain_before
        assert new_file.read_bytes() == body
        assert jobs(srv)[second]["encrypted"] is False
        assert jobs(srv)[first]["encrypted"] is True
    finally:
        admin.goto(srv.url + "/admin/servers/primary/settings")
        admin.locator("#spool_file_encryption").check()
        admin.click("#save")
        expect(admin.locator("#notice")).to_contain_text("Saved")
    assert settings(srv)["spool_file_encryption"] is True
    encrypted_before = spool_files(srv, "encrypted")
    third_body = b"otto's third, encrypted again\n" * 50
    third = submit(srv, "otto", third_body, "otto 3.txt")
    [sealed] = spool_files(srv, "encrypted") - encrypted_before
    assert b"encrypted again" not in sealed.read_bytes()
    assert jobs(srv)[third]["encrypted"] is True
    [change] = [
        e for e in audit(srv, action="settings.change", actor="admin") if e["outcome"] == "ok"
    ][:1]
    assert "spool_file_encryption false -> true" in str(change["detail"])
    # The job held encrypted while encryption was off is still releasable, and prints.
    with httpx.Client(base_url=srv.url + "/api/v1", timeout=60) as c:
        r = c.post("/release/session", json={"username": "otto", "password": PASSWORD})
        token = r.json()["token"]
        r = c.post(
            f"/release/jobs/{first}",
            json={"printer": "lobby"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert r.status_code == 200, r.text
    printer.wait_for_body(held)


def test_printers_page_adds_edits_and_removes_printers(
    srv: Server, admin: Page, printer: ippeve.EvePrinter
) -> None:
    admin.goto(srv.url + "/admin/printers")
    lobby = admin.locator("#printer-lobby")
    expect(lobby.locator("td.health")).to_have_class("health good")
    admin.fill("#name", "annex")
    admin.fill("#uri", printer.uri)
    admin.select_option("#mode", "admin-release")
    admin.fill("#group", "floor3")
    admin.check("#block_release_on_error")
    admin.fill("#hold_timeout_minutes", "45")
    admin.fill("#snmp_community", "s3cret-community")
    admin.fill("#snmp_port", "16161")
    expect(admin.locator("#fast-release-note")).to_contain_text(
        "Fast Release terminals cannot block"
    )
    admin.click("#add-printer button[type=submit]")
    expect(admin.locator("#notice")).to_contain_text("Printer annex added")
    row = admin.locator("#printer-annex")
    expect(row.locator(".mode")).to_have_text("admin-release")
    expect(row.locator(".group")).to_have_text("floor3")
    expect(row.locator(".block")).to_have_text("yes")
    shot(admin, "printers")
    assert "s3cret-community" not in admin.content()

    admin.click("#printer-annex a")
    expect(admin.locator("h1")).to_have_text("Printer annex")
    expect(admin.locator("#mode")).to_have_value("admin-release")
    expect(admin.locator("#snmp_community")).to_have_value("")  # write-only
    assert "s3cret-community" not in admin.content()
    admin.select_option("#mode", "direct")
    admin.uncheck("#block_release_on_error")
    admin.fill("#hold_timeout_minutes", "")
    admin.check("#clear_snmp_community")
    admin.click("#save")
    expect(admin.locator("#notice")).to_have_text("Printer annex saved.")
    with api(srv) as c:
        [annex] = [p for p in c.get("/printers").json() if p["name"] == "annex"]
    assert annex["mode"] == "direct" and annex["block_release_on_error"] is False
    assert annex["hold_timeout_minutes"] is None and annex["snmp"] is False
    [changed] = audit(srv, action="printer.change", printer="annex")[:1]
    assert changed["actor"] == "admin" and "mode admin-release -> direct" in str(changed["detail"])
    assert "s3cret" not in str(audit(srv, action="printer.change"))

    # A bad URI is refused with the registry's words, and nothing changes.
    admin.fill("#uri", "ftp://annex/")
    admin.click("#save")
    expect(admin.locator("#error")).to_contain_text("Not saved")
    admin.goto(srv.url + "/admin/printers/annex")
    admin.check("#confirm-remove")
    admin.click("#remove-printer button")
    expect(admin.locator("#notice")).to_have_text("Printer annex removed.")
    expect(admin.locator("#printer-annex")).to_have_count(0)


def test_jobs_page_releases_to_a_real_printer_and_cancels(
    srv: Server, admin: Page, printer: ippeve.EvePrinter
) -> None:
    add_user(srv, "pia")
    add_user(srv, "rolf")
    body = os.urandom(200_000)
    release_me = submit(srv, "pia", body, "pia report.pdf")
    cancel_me = submit(srv, "rolf", b"rolf's draft\n", "rolf draft.txt")
    admin.goto(srv.url + "/admin/jobs")
    row = admin.locator(f"#job-{release_me}")
    expect(row.locator(".owner")).to_have_text("pia")
    expect(row.locator(".title")).to_contain_text("pia report.pdf")
    expect(admin.locator(f"#job-{cancel_me} .owner")).to_have_text("rolf")
    shot(admin, "jobs")
    row.locator("select").select_option("lobby")
    row.locator("button.release").click()
    expect(admin.locator("#notice")).to_contain_text(f"Job {release_me} sent to lobby")
    printer.wait_for_body(body)
    admin.locator(f"#job-{cancel_me} button.cancel").click()
    expect(admin.locator("#notice")).to_contain_text(f"Job {cancel_me} cancelled")
    expect(admin.locator(f"#job-{cancel_me}")).to_have_count(0)
    states = jobs(srv)
    assert states[release_me]["state"] == "printed" and states[cancel_me]["state"] == "cancelled"
    [released] = audit(srv, action="job.release", job_id=str(release_me))
    [cancelled] = audit(srv, action="job.cancel", job_id=str(cancel_me))
    assert released["actor"] == cancelled["actor"] == "admin"

    # With hide_document_names on, the list and the audit export show no document names.
    patch_settings(srv, hide_document_names=True)
    try:
        hidden = submit(srv, "rolf", b"x\n", "rolf salary.txt")
        admin.goto(srv.url + "/admin/jobs?owner=rolf")
        expect(admin.locator(f"#job-{hidden} .title")).to_have_text("(hidden)")
        admin.goto(srv.url + "/admin/audit?action=job.submit")
        expect(admin.locator("#names-hidden")).to_be_visible()
        assert "rolf salary" not in admin.content() and "pia report" not in admin.content()
        with admin.expect_download() as download:
            admin.click("#export")
        rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
        assert rows and all(r["action"] == "job.submit" for r in rows)
        assert not any("rolf salary" in r["detail"] for r in rows)
        assert any("title (hidden)" in r["detail"] for r in rows)
    finally:
        patch_settings(srv, hide_document_names=False)
    # Without it, the filters narrow the log and the export keeps the names.
    admin.goto(srv.url + f"/admin/audit?actor=admin&job_id={release_me}")
    expect(admin.locator("#events tbody tr")).to_have_count(1)
    expect(admin.locator("#events .action")).to_have_text("job.release")
    with admin.expect_download() as download:
        admin.goto(srv.url + "/admin/audit?action=job.submit")
        admin.click("#export")
    text = Path(download.value.path()).read_text()
    assert "pia report.pdf" in text


def test_users_page_sets_cards_pins_and_delegates_without_showing_them(
    srv: Server, admin: Page
) -> None:
    admin.goto(srv.url + "/admin/users")
    admin.fill("#username", "sara")
    admin.fill("#full_name", "Sara Lind")
    admin.fill("#card_number", "04C0FFEE")
    admin.fill("#pin", "2468")
    admin.click("#add-user button[type=submit]")
    expect(admin.locator("#notice")).to_have_text("User sara added.")
    expect(admin.locator("#user-sara .has-card")).to_have_text("enrolled")
    expect(admin.locator("#user-sara .has-pin")).to_have_text("set")
    admin.click("#user-sara a")
    admin.fill("#card_number", "04BEEF01")
    admin.fill("#delegates", "admin")
    admin.click("#save")
    expect(admin.locator("#notice")).to_contain_text("User sara saved: card_number, delegates.")
    expect(admin.locator("#delegates")).to_have_value("admin")
    for secret in ("04C0FFEE", "04BEEF01", "2468"):
        assert secret not in admin.content()
        assert secret not in str(audit(srv, action="user.change"))
    # The new card logs in at the release station with the PIN; the old one does not.
    with httpx.Client(base_url=srv.url + "/api/v1", timeout=30) as c:
        ok = c.post("/release/session", json={"card_number": "04BEEF01", "pin": "2468"})
        assert ok.status_code == 200, ok.text
        old = c.post("/release/session", json={"card_number": "04C0FFEE", "pin": "2468"})
        assert old.status_code == 401


def test_archive_page_lists_and_previews_archived_documents(
    srv: Server, admin: Page, printer: ippeve.EvePrinter
) -> None:
    add_user(srv, "tove")
    admin.goto(srv.url + "/admin/archive")
    expect(admin.locator("h1")).to_have_text("Approved administrators only")  # not yet named
    patch_settings(srv, spool_file_encryption=False)
    patch_settings(srv, print_archiving=True, print_archive_viewers="admin")
    try:
        time.sleep(2.1)  # the server re-reads settings changed over the API within 2 s
        pdf = text_pdf("Minutes of the board", "24 November 2026", "Confidential")
        archived = submit(srv, "tove", pdf, "Tove minutes.pdf", "application/pdf")
        text = submit(srv, "tove", b"plain words\n", "Tove note.txt")
        admin.goto(srv.url + "/admin/jobs?owner=tove")
        for job_id in (archived, text):
            admin.locator(f"#job-{job_id} select").select_option("lobby")
            admin.locator(f"#job-{job_id} button.release").click()
            expect(admin.locator("#notice")).to_contain_text(f"Job {job_id} sent to lobby")
        printer.wait_for_body(pdf)

        admin.goto(srv.url + "/admin/archive?owner=tove")
        expect(admin.locator("#documents tbody tr")).to_have_count(2)
        admin.click(f"#doc-{archived} a >> text=Tove minutes.pdf")
        image = admin.locator("#preview-image")
        expect(image).to_be_visible()
        admin.wait_for_function(
            "() => { const i = document.getElementById('preview-image');"
            " return i.complete && i.naturalWidth > 100; }"
        )
        shot(admin, "archive-preview")
        # The image is the document's first page, with its text: not a blank page.
        png = admin.request.get(srv.url + f"/admin/archive/{archived}/preview.png")
        assert png.ok and png.headers["content-type"] == "image/png"
        assert dark_pixels(png.body()) > 500
        with admin.expect_download() as download:
            admin.click("#download")
        assert Path(download.value.path()).read_bytes() == pdf

        admin.goto(srv.url + f"/admin/archive/{text}")
        expect(admin.locator("#no-preview")).to_contain_text("No preview of this document")
        expect(admin.locator("#no-preview")).to_contain_text("text/plain")
        expect(admin.locator("#preview-image")).to_have_count(0)
        views = audit(srv, action="archive.view", job_id=str(archived))
        assert {e["detail"] for e in views} >= {
            "previewed the first page",
            "downloaded the document",
        }
    finally:
        patch_settings(srv, print_archiving=False, print_archive_viewers="")
        patch_settings(srv, spool_file_encryption=True)


def test_repeated_wrong_passwords_lock_the_admin_login(srv: Server) -> None:
    add_user(srv, "ulla", is_admin=True)
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        statuses = []
        for _ in range(7):
            page = c.get("/admin/login")
            token = re.search(r'name="csrf" value="([^"]+)"', page.text)
            assert token is not None
            form = {"csrf": token.group(1), "username": "ulla", "password": "not-it"}
            statuses.append(c.post("/admin/login", data=form).status_code)
            if statuses[-1] == 429:
                break
        assert statuses[0] == 401 and statuses[-1] == 429, statuses
        # Locked: the right password is refused too, with the wait.
        token = re.search(r'name="csrf" value="([^"]+)"', c.get("/admin/login").text)
        assert token is not None
        r = c.post(
            "/admin/login", data={"csrf": token.group(1), "username": "ulla", "password": PASSWORD}
        )
        assert r.status_code == 429 and r.headers["retry-after"].isdigit()
        assert "Too many failed logins" in r.text
        assert "spoolvault_admin" not in r.cookies
