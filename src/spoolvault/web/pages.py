"""What the server-rendered pages share: headers, templates, forms, sizes."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

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


class PageSet:
    """What the admin pages and the release station do alike: render a template, redirect,
    set a cookie, serve their static files.

    ``here`` is the package directory with ``templates/`` and ``static/`` (whose files,
    ``static`` names -> media types, are read once); cookies are scoped to ``cookie_path``.
    """

    def __init__(
        self, here: Path, static: Mapping[str, str], *, tls: bool, cookie_path: str
    ) -> None:
        self.tls = tls
        self.cookie_path = cookie_path
        self.templates = templates(here / "templates")
        self._static = {
            name: ((here / "static" / name).read_bytes(), media) for name, media in static.items()
        }

    def _render(self, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        body = self.templates.get_template(template).render(**context)
        return HTMLResponse(body, status_code=status, headers=SECURITY_HEADERS)

    def _redirect(self, url: str) -> RedirectResponse:
        return RedirectResponse(url, status_code=303, headers=SECURITY_HEADERS)

    def _secure(self, request: Request) -> bool:
        return self.tls or request.url.scheme == "https"

    def _set_cookie(self, request: Request, response: Response, name: str, value: str) -> None:
        response.set_cookie(
            name,
            value,
            path=self.cookie_path,
            secure=self._secure(request),
            httponly=True,
            samesite="strict",
        )

    async def static(self, request: Request) -> Response:
        found = self._static.get(request.path_params["name"])
        if found is None:
            return Response("not found", status_code=404, media_type="text/plain")
        body, media = found
        return Response(body, media_type=media, headers={"Cache-Control": "max-age=3600"})


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
