"""The web release station in a real browser: Debian's Chromium driven by Playwright, against
a real `spoolvault run`, releasing to a real ippeveprinter (and a stopped cupsd queue).

Set SPOOLVAULT_SCREENSHOTS=DIR to save the pages shown in docs/release-station.md.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from harness import cupsd, ippeve, ipptool
from harness.server import ADMIN, Server, start_server
from harness.web_helpers import (
    DESKTOP,
    NEEDS_CHROMIUM_AND_PRINTER,
    PASSWORD,
    add_printer,
    add_user,
    api,
    audit,
    fill_login,
    lobby_server,
    screenshots,
    submit,
)

playwright_sync = pytest.importorskip("playwright.sync_api")
from playwright.sync_api import Browser, BrowserContext, Page, expect  # noqa: E402

# Two cores shared with other test runs: a page that asks three printers for their state
# can take more than Playwright's default 5 s. Failures still fail, only later.
expect.set_options(timeout=15_000)

PHONE = {"width": 390, "height": 844}

pytestmark = NEEDS_CHROMIUM_AND_PRINTER


# -- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, printer: ippeve.EvePrinter) -> Iterator[Server]:
    """One server for the module (conftest's is per test); each test uses its own users,
    so jobs never mix. ``printer`` is conftest's ippeveprinter."""
    with lobby_server(tmp_path_factory.mktemp("station") / "data", printer.uri) as s:
        yield s


# -- helpers ------------------------------------------------------------------------------


def job_states(srv: Server) -> dict[int, str]:
    with api(srv) as c:
        return {j["id"]: j["state"] for j in c.get("/jobs").json()}


def login(page: Page, url: str, user: str, password: str = PASSWORD) -> None:
    page.goto(url)
    fill_login(page, "#password-login", user, password)


def shot(page: Page, name: str) -> None:
    """Save the page at desktop and phone sizes when SPOOLVAULT_SCREENSHOTS is set."""
    screenshots(page, name, {"desktop": DESKTOP, "phone": PHONE})


# -- tests --------------------------------------------------------------------------------


def test_login_shows_only_your_own_jobs_and_refuses_without_telling_who_exists(
    srv: Server, context: BrowserContext
) -> None:
    add_user(srv, "ada")
    add_user(srv, "bert")
    mine = submit(srv, "ada", b"ada's report\n", "Quarterly report.txt")
    pdf = ipptool.minimal_pdf(3, marker="minutes")
    minutes = submit(srv, "ada", pdf, "Minutes 2026-11-24.pdf", "application/pdf")
    theirs = submit(srv, "bert", b"bert's secret\n", "Bert private.pdf")
    page = context.new_page()
    page.goto(srv.url + "/release/lobby")
    expect(page.locator("#card")).to_be_focused()  # a card reader types into it at once
    shot(page, "login")

    # Wrong password and unknown user: the same answer.
    login(page, srv.url + "/release/lobby", "ada", "wrong-password")
    wrong = page.locator("#error").inner_text()
    login(page, srv.url + "/release/lobby", "nobody-here", "wrong-password")
    assert page.locator("#error").inner_text() == wrong
    assert "Login failed" in wrong and "ada" not in wrong
    refused = audit(srv, action="auth.login")
    assert [e["outcome"] for e in refused[:2]] == ["refused", "refused"]
    assert {e["actor"] for e in refused[:2]} == {"ada", "unknown"}
    assert not any("wrong-password" in str(e["detail"]) for e in refused)

    login(page, srv.url + "/release/lobby", "ada")
    expect(page.locator("#user")).to_have_text("ada")
    job = page.locator(f"#job-{mine}")
    expect(job).to_contain_text("Quarterly report.txt")
    expect(job).to_contain_text("13 bytes")
    expect(job).to_contain_text("queue secure")
    expect(job).to_contain_text("deleted in 3 h 59 min")  # hold_timeout_minutes: 240
    expect(page.locator(f"#job-{minutes}")).to_contain_text("3 pages")
    assert page.locator(f"#job-{theirs}").count() == 0
    assert "Bert private" not in page.content()
    shot(page, "jobs")

    # A forged button for someone else's job: refused like a job that does not exist.
    page.eval_on_selector(f"#job-{mine} button.print", f"e => e.value = 'release:{theirs}'")
    page.click(f"#job-{mine} button.print")
    expect(page.locator(f"#results li[data-job-id='{theirs}']")).to_contain_text("no such job")
    assert "Bert private" not in page.content()
    assert job_states(srv)[theirs] == "held"
    [refused_release] = audit(srv, action="job.release_failed", job_id=str(theirs))
    assert refused_release["actor"] == "ada" and refused_release["outcome"] == "refused"

    cookies = {c["name"]: c for c in context.cookies()}
    session = cookies["spoolvault_station"]
    assert session["httpOnly"] and session["sameSite"] == "Strict"
    assert not session["secure"]  # plain HTTP here; see the TLS test
    assert session["path"] == "/release"
    # After logging out, the back button shows no jobs: the pages are never cached.
    page.click("#logout button")
    expect(page.locator("#notice")).to_have_text("You are logged out.")
    page.go_back()
    assert "Quarterly report.txt" not in page.content()


def test_release_one_arrives_byte_identical_then_cancel_and_release_all(
    srv: Server, context: BrowserContext, printer: ippeve.EvePrinter
) -> None:
    add_user(srv, "cleo")
    bodies = {
        submit(srv, "cleo", body, f"cleo {n}.txt"): body
        for n, body in enumerate(
            [os.urandom(300_000), b"second\n" * 5000, b"third\n" * 7000, b"fourth\n" * 100]
        )
    }
    first, second, third, fourth = bodies
    page = context.new_page()
    login(page, srv.url + "/release/lobby", "cleo")
    page.click(f"#job-{first} button.print")
    result = page.locator(f"#results li[data-job-id='{first}']")
    expect(result).to_contain_text("sent to lobby")
    expect(result).to_have_class("ok")
    printer.wait_for_body(bodies[first])
    expect(page.locator(f"#job-{first}")).to_have_count(0)

    page.click(f"#job-{second} button.cancel")
    expect(page.locator(f"#results li[data-job-id='{second}']")).to_contain_text("cancelled")
    expect(page.locator(f"#job-{second}")).to_have_count(0)

    page.click(f"#job-{third} button.extend")  # once per job
    expect(page.locator(f"#results li[data-job-id='{third}']")).to_contain_text("kept longer")
    expect(page.locator(f"#job-{third} button.extend")).to_have_count(0)
    [extended] = audit(srv, action="job.hold_extend", job_id=str(third))
    assert extended["actor"] == "cleo"

    expect(page.locator("#release-all")).to_have_text("Print all (2)")
    page.click("#release-all")
    for job_id in (third, fourth):
        item = page.locator(f"#results li[data-job-id='{job_id}']")
        expect(item).to_contain_text("sent to lobby")
        printer.wait_for_body(bodies[job_id])
    expect(page.locator("#no-jobs")).to_be_visible()
    states = job_states(srv)
    assert [states[j] for j in (first, second, third, fourth)] == [
        "printed",
        "cancelled",
        "printed",
        "printed",
    ]
    released = audit(srv, action="job.release", actor="cleo")
    assert sorted(e["job_id"] for e in released) == sorted([first, third, fourth])  # type: ignore[type-var]


def test_a_job_printed_with_a_pin_needs_it_beside_the_print_button(
    srv: Server, context: BrowserContext, printer: ippeve.EvePrinter
) -> None:
    add_user(srv, "nina")
    body = b"nina's payslip\n" * 30
    job_id = submit(srv, "nina", body, "payslip.txt", pin=b"2468")
    page = context.new_page()
    login(page, srv.url + "/release/lobby", "nina")
    page.click("#release-all")  # no PIN typed: refused, and no PIN try spent
    result = page.locator(f"#results li[data-job-id='{job_id}']")
    expect(result).to_contain_text("protected by a job PIN")
    page.fill(f"input[name='pin-{job_id}']", "1111")
    page.click(f"#job-{job_id} button.print")
    expect(result).to_contain_text("wrong job PIN")
    assert job_states(srv)[job_id] == "held"
    page.fill(f"input[name='pin-{job_id}']", "2468")
    page.click(f"#job-{job_id} button.print")
    expect(result).to_contain_text("sent to lobby")
    printer.wait_for_body(body)
    assert not any("2468" in str(e["detail"]) for e in audit(srv, job_id=str(job_id)))


def test_blocked_printer_names_the_error_and_offers_the_groups_other_printers(
    srv: Server, context: BrowserContext, printer: ippeve.EvePrinter
) -> None:
    root = Path(tempfile.mkdtemp(prefix="spoolvault-cupsd-", dir="/var/tmp"))
    root.chmod(0o755)
    cups = cupsd.start_cupsd(root)
    try:
        cups.run("lpadmin", "-p", "stopped", "-E", "-v", "file:///dev/null", "-m", "raw")
        cups.run("cupsdisable", "-r", "paper jam in tray 2", "stopped")
        add_printer(
            srv,
            "jammed",
            f"ipp://{cups.host}/printers/stopped",
            block_release_on_error=True,
            group="floor2",
        )
        gone = f"ipp://127.0.0.1:{cupsd.free_port()}/ipp/print"
        add_printer(srv, "gone", gone, group="floor2")
        add_printer(srv, "annex", printer.uri, group="annex", hold_timeout_minutes=30)
        add_user(srv, "dora")
        annexed = submit(srv, "dora", b"for the annex\n", "annex.txt", queue="annex")
        body = b"dora needs this printed\n" * 100
        job_id = submit(srv, "dora", body, "dora.txt")
        page = context.new_page()
        login(page, srv.url + "/release/jammed", "dora")
        annex_job = page.locator(f"#job-{annexed}")
        expect(annex_job).to_contain_text("deleted in 29 min")  # the annex queue's own timeout
        expect(annex_job).to_contain_text("Prints only on annex")
        blocked = page.locator("#blocked")
        expect(blocked).to_contain_text("jammed cannot print right now")
        expect(blocked).to_contain_text("paper jam in tray 2")  # the printer's own words
        expect(blocked).to_contain_text("group floor2")
        lobby = page.locator("#alternatives li[data-printer='lobby']")
        expect(lobby).to_have_class("good")
        expect(lobby).to_contain_text("ready")
        expect(page.locator("#alternatives li[data-printer='gone']")).to_contain_text("unreachable")
        assert page.locator("#alternatives li[data-printer='annex']").count() == 0
        shot(page, "blocked")
        # The release goes to the chosen alternative, never to the blocked printer.
        # Offered: the group's printers that are not in error themselves.
        assert page.locator("#printer option").all_inner_texts() == ["lobby"]
        page.click(f"#job-{job_id} button.print")
        expect(page.locator(f"#results li[data-job-id='{job_id}']")).to_contain_text(
            "sent to lobby"
        )
        printer.wait_for_body(body)

        # At /release (the user chooses), a release to the blocked printer is refused,
        # the job stays held, and the same message and alternatives appear.
        held = submit(srv, "dora", b"second try\n", "dora 2.txt")
        page.goto(srv.url + "/release")
        page.select_option("#printer", "jammed")
        page.click(f"#job-{held} button.print")
        item = page.locator(f"#results li[data-job-id='{held}']")
        expect(item).to_have_class("fail")
        expect(item).to_contain_text("still held")
        expect(page.locator("#blocked")).to_contain_text("paper jam in tray 2")
        assert job_states(srv)[held] == "held"
        [refused] = audit(srv, action="job.release_failed", job_id=str(held))
        assert refused["outcome"] == "refused" and refused["printer"] == "jammed"
    finally:
        cups.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_forms_without_the_right_csrf_token_are_refused(
    srv: Server, context: BrowserContext
) -> None:
    add_user(srv, "emil")
    job_id = submit(srv, "emil", b"keep me\n", "emil.txt")
    page = context.new_page()
    login(page, srv.url + "/release/lobby", "emil")
    page.eval_on_selector("#jobs input[name=csrf]", "e => e.value = 'forged'")
    page.click(f"#job-{job_id} button.print")
    expect(page.locator("h1")).to_have_text("This form has expired")
    assert "security token" in page.content()
    page.goto(srv.url + "/release/lobby")
    page.eval_on_selector("#jobs input[name=csrf]", "e => e.remove()")
    page.click(f"#job-{job_id} button.cancel")
    expect(page.locator("h1")).to_have_text("This form has expired")
    assert job_states(srv)[job_id] == "held"

    # Another site posting with the user's session cookie (as a lax cookie would allow),
    # and a login posted without the login page's token.
    [cookie] = [c for c in context.cookies() if c["name"] == "spoolvault_station"]
    jar = {"spoolvault_station": cookie["value"]}
    with httpx.Client(base_url=srv.url, timeout=30, cookies=jar) as c:
        r = c.post("/release/lobby", data={"do": f"release:{job_id}", "printer": "lobby"})
        assert r.status_code == 403 and "This form has expired" in r.text
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        r = c.post(
            "/release/lobby",
            data={"do": "login", "method": "password", "username": "emil", "password": PASSWORD},
        )
        assert r.status_code == 403
    assert job_states(srv)[job_id] == "held"


def test_manager_mode_lists_and_releases_everyones_jobs(
    srv: Server, context: BrowserContext, printer: ippeve.EvePrinter
) -> None:
    add_user(srv, "fay")
    body = b"fay's held job\n" * 50
    job_id = submit(srv, "fay", body, "fay.txt")
    page = context.new_page()
    # A user who is not an administrator gets their own jobs only, whatever the URL says.
    login(page, srv.url + "/release/lobby", "fay")
    page.goto(srv.url + "/release/lobby?manager=1")
    expect(page.locator("#manager-on")).to_have_count(0)
    expect(page.locator("h1")).to_contain_text("Your held jobs")
    page.click("#logout button")

    login(page, srv.url + "/release/lobby", *ADMIN)
    expect(page.locator(f"#job-{job_id}")).to_have_count(0)  # not the admin's own
    page.click("#manager-on")
    expect(page.locator("h1")).to_contain_text("All held jobs")
    item = page.locator(f"#job-{job_id}")
    expect(item).to_contain_text("fay")
    page.click(f"#job-{job_id} button.print")
    expect(page.locator(f"#results li[data-job-id='{job_id}']")).to_contain_text("sent to lobby")
    expect(page.locator("h1")).to_contain_text("All held jobs")  # still in manager mode
    printer.wait_for_body(body)
    [released] = audit(srv, action="job.release", job_id=str(job_id))
    assert released["actor"] == "admin"
    assert any("manager mode" in str(e["detail"]) for e in audit(srv, action="admin.view"))

    # With hide_document_names, a manager sees other people's jobs without their titles.
    other = submit(srv, "fay", b"fay's second\n", "Fay salary review.txt")
    with api(srv) as c:
        assert c.patch("/servers/primary/settings", json={"hide_document_names": True}).is_success
    try:
        time.sleep(2.1)  # settings are re-read at most every 2 s
        page.reload()
        expect(page.locator(f"#job-{other} .title")).to_have_text("(hidden)")
        assert "salary" not in page.content()
    finally:
        with api(srv) as c:
            c.patch("/servers/primary/settings", json={"hide_document_names": False})


def test_card_alone_and_card_with_pin_as_a_card_reader_types_them(
    srv: Server, context: BrowserContext
) -> None:
    add_user(srv, "hana", card_number="04A1B2C3")
    add_user(srv, "ivo", card_number="04D5E6F7", pin="4711")
    job_id = submit(srv, "hana", b"hana's job\n", "hana.txt")
    page = context.new_page()
    page.goto(srv.url + "/release/lobby")
    expect(page.locator("#card")).to_be_focused()  # autofocus lands after the load event
    page.keyboard.type("04A1B2C3")  # the card field has the focus: a reader just types
    page.keyboard.press("Enter")
    expect(page.locator("#user")).to_have_text("hana")
    expect(page.locator(f"#job-{job_id}")).to_be_visible()
    page.click("#logout button")

    # A user with a PIN must give it; the PIN is checked with the card.
    page.fill("#card", "04D5E6F7")
    page.press("#card", "Enter")
    expect(page.locator("#error")).to_contain_text("Login failed")
    page.fill("#card", "04D5E6F7")
    page.fill("#pin", "4711")
    page.click("#card-login button")
    expect(page.locator("#user")).to_have_text("ivo")
    page.click("#logout button")

    # An unknown card: the same answer as a wrong password.
    page.fill("#card", "DEADBEEF")
    page.press("#card", "Enter")
    expect(page.locator("#error")).to_have_text(
        "Login failed: unknown user or card, or wrong password or PIN."
    )
    logins = audit(srv, action="auth.login")
    assert not any(
        secret in str(e["detail"]) for e in logins for secret in ("04A1B2C3", "4711", "DEADBEEF")
    )
    page.goto(srv.url + "/release/no-such-printer")
    expect(page.locator("h1")).to_have_text("No such printer")


def test_repeated_failures_lock_the_account_out(srv: Server, context: BrowserContext) -> None:
    # The account locks after 5 failures; this client's station only after 20, which the
    # whole module stays under (so the other tests can still log in from 127.0.0.1).
    add_user(srv, "jon")
    page = context.new_page()
    for _ in range(8):
        login(page, srv.url + "/release/lobby", "jon", "not-his-password")
        if "Too many failed logins" in page.locator("#error").inner_text():
            break
    else:
        raise AssertionError("no lockout after 8 failed logins")
    # Locked: even the right password is refused, with the wait, before it is checked.
    with page.expect_response(lambda r: r.request.method == "POST") as answer:
        login(page, srv.url + "/release/lobby", "jon")
    assert answer.value.status == 429 and answer.value.headers["retry-after"].isdigit()
    expect(page.locator("#error")).to_contain_text("Too many failed logins. Try again in")
    assert page.locator("#user").count() == 0


def test_jobs_delegated_to_you_are_listed_with_their_owner(
    srv: Server, context: BrowserContext, printer: ippeve.EvePrinter
) -> None:
    add_user(srv, "kim")
    add_user(srv, "lea")
    add_user(srv, "max")
    with api(srv) as c:
        r = c.put("/users/lea/delegates", json={"users": ["kim"]})
        assert r.status_code == 200, r.text
    own = submit(srv, "kim", b"kim's own\n", "kim.txt")
    body = b"lea lets kim collect this\n" * 20
    delegated = submit(srv, "lea", body, "lea.txt")
    private = submit(srv, "max", b"max only\n", "max.txt")
    page = context.new_page()
    login(page, srv.url + "/release/lobby", "kim")
    expect(page.locator(f"#job-{own} .owner")).to_have_text("kim")
    expect(page.locator(f"#job-{delegated} .owner")).to_have_text("lea")
    assert page.locator(f"#job-{private}").count() == 0
    page.click(f"#job-{delegated} button.print")
    expect(page.locator(f"#results li[data-job-id='{delegated}']")).to_contain_text("sent to lobby")
    printer.wait_for_body(body)
    [released] = audit(srv, action="job.release", job_id=str(delegated))
    assert released["actor"] == "kim"


def test_idle_logout_in_the_browser_and_on_the_server_over_tls(
    tmp_path: Path, browser: Browser, printer: ippeve.EvePrinter
) -> None:
    """With idle logout at 5 s: the page logs itself out; without JavaScript the server
    still refuses the session. Over TLS the session cookie is Secure."""
    srv = start_server(tmp_path / "data", "--tls", env={"SPOOLVAULT_ADMIN_PASSWORD": ADMIN[1]})
    try:
        assert srv.url.startswith("https://")
        with api(srv) as c:
            r = c.patch("/servers/primary/settings", json={"release_station_idle_seconds": 5})
            assert r.status_code == 200, r.text
            assert c.post("/printers", json={"name": "lobby", "uri": printer.uri}).is_success
            r = c.post("/users", json={"username": "gus", "password": PASSWORD})
            assert r.status_code == 201
        time.sleep(2.1)  # settings are re-read at most every 2 s
        job_id = submit(srv, "gus", b"not after idle\n", "gus.txt")
        scripted = browser.new_context(viewport=DESKTOP, ignore_https_errors=True)
        plain = browser.new_context(
            viewport=DESKTOP, ignore_https_errors=True, java_script_enabled=False
        )
        try:
            page = scripted.new_page()
            login(page, srv.url + "/release/lobby", "gus")
            expect(page.locator(f"#job-{job_id}")).to_be_visible()
            started = time.monotonic()  # the page's idle timer runs from its last input
            [cookie] = [c for c in scripted.cookies() if c["name"] == "spoolvault_station"]
            assert cookie["secure"] and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
            idle_page = plain.new_page()
            login(idle_page, srv.url + "/release/lobby", "gus")
            expect(idle_page.locator(f"#job-{job_id}")).to_be_visible()
            csrf = idle_page.locator("#jobs input[name=csrf]").get_attribute("value")
            [stale] = [c for c in plain.cookies() if c["name"] == "spoolvault_station"]
            jar = {"spoolvault_station": stale["value"]}
            with httpx.Client(base_url=srv.url, cookies=jar, verify=False) as c:  # noqa: S501
                assert "gus.txt" in c.get("/release/lobby").text  # alive
                seen = time.monotonic()
                # The scripted page logs out by itself after 5 s without input.
                expect(page.locator("#notice")).to_contain_text(
                    "logged out after 5 seconds", timeout=12_000
                )
                assert time.monotonic() - started >= 3.5
                assert page.locator(f"#job-{job_id}").count() == 0
                # The server ends a session 5 s after its last request, whatever the
                # browser does: a valid form is not acted on.
                time.sleep(max(0.0, 5.5 - (time.monotonic() - seen)))
                r = c.post(
                    "/release/lobby",
                    data={"csrf": csrf or "", "do": f"release:{job_id}", "printer": "lobby"},
                )
                assert r.status_code == 303
                after = c.get("/release/lobby").text
                assert "logged out after 5 seconds" in after and "gus.txt" not in after
            # Without JavaScript, the page's refresh brings the login page back by itself.
            expect(idle_page.locator("#username")).to_be_visible(timeout=5_000)
        finally:
            scripted.close()
            plain.close()
        assert job_states(srv)[job_id] == "held"
    finally:
        srv.stop()
