"""What the server-rendered pages share: headers, templates, forms, sizes."""

from __future__ import annotations

from pathlib import Path

import jinja2
from starlette.datastructures import FormData

# Pages are never cached (the back button after a logout must not show the last user's
# data), framed by nobody, and load scripts, styles and images only from this server.
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def templates(*directories: Path) -> jinja2.Environment:
    """A Jinja2 environment over ``directories`` (autoescaped, strict about names)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(d) for d in directories]),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["size"] = size
    return env


def form_field(form: FormData, name: str) -> str:
    """A text field of a form, or "" (a missing field, or a file where text was expected)."""
    value = form.get(name)
    return value if isinstance(value, str) else ""


def size(n: int) -> str:
    """Bytes for people: 13 bytes, 2.5 MB, 140 MB."""
    units = ("bytes", "KB", "MB", "GB", "TB")
    value, unit = float(n), 0
    while value >= 1000 and unit < len(units) - 1:
        value, unit = value / 1000, unit + 1
    if unit == 0:
        return f"{n} bytes"
    return f"{value:.1f} {units[unit]}" if value < 10 else f"{value:.0f} {units[unit]}"
