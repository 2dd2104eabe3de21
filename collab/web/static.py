"""Serving the built web editor: ``/`` (the page), ``/web/<file>`` (its bundle and styles)
and ``/web/config.json`` (what the page must know before anyone signs in)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

__all__ = ["WEB_DIST", "web_routes"]

Route = tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]

WEB_DIST = Path(__file__).resolve().parent / "dist"
"""Where ``npm run build`` (run by ``make run`` and ``make test``) puts the built app."""

_NOT_BUILT = (
    "The web editor is not built: run `make run`, or `npm ci && npm run build` in collab/web, "
    "then reload this page.\n"
)
# the page and its bundle change with every build: browsers must check before reusing them
_HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
# the page loads and connects to this server alone: what a peer slips into the page (a
# cursor's style, say) can make it fetch nothing from elsewhere. Styles may be inline, as the
# editor and its cursors set them.
_PAGE_HEADERS = {
    **_HEADERS,
    "Content-Security-Policy": "; ".join(
        [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self' 'unsafe-inline'",
            "img-src 'self' data:",
            "connect-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
        ]
    ),
    "Referrer-Policy": "no-referrer",
}


def web_routes(*, dev_mode: bool, dist: Path = WEB_DIST) -> list[Route]:
    """The web editor's routes, for a server in dev mode or not (the sign-in form asks for a
    name in dev mode, for a token otherwise)."""

    async def page(request: web.Request) -> web.StreamResponse:
        return _file(dist, "index.html", _PAGE_HEADERS)

    async def asset(request: web.Request) -> web.StreamResponse:
        return _file(dist, request.match_info["name"])

    async def config(request: web.Request) -> web.Response:
        # the sign-in form asks for a name in dev mode, for a token otherwise
        return web.json_response({"dev_mode": dev_mode}, headers=_HEADERS)

    return [
        ("GET", "/", page),
        ("GET", "/web/config.json", config),
        ("GET", "/web/{name}", asset),
    ]


def _file(dist: Path, name: str, headers: dict[str, str] = _HEADERS) -> web.StreamResponse:
    """``dist/name``, a plain file directly in ``dist`` (nothing else is reachable), or 404;
    503 with what to do when the app has not been built."""
    if not (dist / "index.html").is_file():
        return web.Response(status=503, text=_NOT_BUILT, headers=_HEADERS)
    if name.startswith(".") or "/" in name or "\\" in name or "\0" in name:
        raise web.HTTPNotFound()
    path = dist / name
    if not path.is_file():
        raise web.HTTPNotFound()
    return web.FileResponse(path, headers=headers)
