"""Admin pages in process: document names hidden from audit details, safe CSV cells,
redirects after login only to our own pages."""

from __future__ import annotations

from spoolvault.admin.web import _local_admin_url
from spoolvault.admin.web_audit import _cell, hide_titles


def test_document_names_are_hidden_from_audit_details_however_they_are_quoted() -> None:
    detail = "queue secure, title 'Redundancy J. Smith.pdf', 1200 bytes, text/plain, encrypted"
    assert hide_titles(detail) == (
        "queue secure, title (hidden), 1200 bytes, text/plain, encrypted"
    )
    quoted = """queue secure, title "Bob's \\"plan\\".txt", 3 bytes"""
    assert hide_titles(quoted) == "queue secure, title (hidden), 3 bytes"
    escaped = "queue q, title 'it\\'s, here', 3 bytes"
    assert hide_titles(escaped) == "queue q, title (hidden), 3 bytes"
    assert hide_titles("server primary: hold_timeout_minutes 240 -> 30") == (
        "server primary: hold_timeout_minutes 240 -> 30"
    )


def test_csv_cells_that_a_spreadsheet_would_run_are_defused() -> None:
    assert _cell('=HYPERLINK("http://x")') == '\'=HYPERLINK("http://x")'
    assert _cell("+1") == "'+1" and _cell("@a") == "'@a" and _cell("-2") == "'-2"
    assert _cell("queue secure") == "queue secure" and _cell("") == ""


def test_login_redirects_only_to_admin_pages() -> None:
    assert _local_admin_url("/admin/jobs?owner=a")
    for url in (
        "",
        "/release",
        "//evil.example/admin/",
        "https://evil.example/admin/",
        "/admin\\x",
    ):
        assert not _local_admin_url(url)
