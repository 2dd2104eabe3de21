"""Serving the web editor: the page and its files at ``/`` and ``/web/``, nothing else of
the folder, a clear answer when it is not built, and ``--no-web``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from servers import make_config

from collab import CollabServer
from collab.cli.commands import _announce, _example, _parser
from collab.web import web_routes


@pytest.fixture
def dist(tmp_path: Path) -> Path:
    folder = tmp_path / "dist"
    folder.mkdir()
    (folder / "index.html").write_text("<!doctype html><title>collab</title>")
    (folder / "app.js").write_text("console.log('ü')")
    (folder / ".secret").write_text("no")
    (folder / "sub").mkdir()
    (folder / "sub" / "x.js").write_text("no")
    (tmp_path / "outside.txt").write_text("no")
    return folder


async def _serve(repos: Path, tmp_path: Path, dist: Path) -> CollabServer:
    server = CollabServer(make_config(repos, tmp_path / "data", web=False))
    for route in web_routes(dev_mode=server.auth.dev_mode, dist=dist):
        server.add_route(*route)
    await server.start()
    return server


@pytest.fixture
async def http(repos: Path, tmp_path: Path, dist: Path) -> AsyncIterator[str]:
    server = await _serve(repos, tmp_path, dist)
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        await server.stop()


async def test_the_page_its_files_and_its_config_are_served(http: str) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{http}/") as response:
            assert response.status == 200
            assert response.content_type == "text/html"
            assert response.headers["Cache-Control"] == "no-cache"
            assert "<title>collab</title>" in await response.text()
        async with session.get(f"{http}/web/app.js") as response:
            assert response.status == 200 and "javascript" in response.content_type
            assert await response.text() == "console.log('ü')"
        async with session.get(f"{http}/web/config.json") as response:
            assert await response.json() == {"dev_mode": True}


@pytest.mark.parametrize(
    "path", ["/web/.secret", "/web/sub/x.js", "/web/..%2Foutside.txt", "/web/missing.js", "/web/"]
)
async def test_nothing_else_is_reachable(http: str, path: str) -> None:
    async with aiohttp.ClientSession() as session, session.get(http + path) as response:
        assert response.status == 404


async def test_an_unbuilt_app_says_how_to_build_it(repos: Path, tmp_path: Path, dist: Path) -> None:
    (dist / "index.html").unlink()
    server = await _serve(repos, tmp_path, dist)
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{server.port}/") as response,
        ):
            assert response.status == 503
            assert "npm run build" in await response.text()
    finally:
        await server.stop()


async def test_no_web_serves_no_page(repos: Path, tmp_path: Path) -> None:
    assert _parser().parse_args(["serve", "--no-web"]).web is False
    assert _parser().parse_args(["serve"]).web is True
    async with (
        CollabServer(make_config(repos, tmp_path / "data", web=False)) as server,
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{server.port}/") as response,
    ):
        assert response.status == 404


async def test_serve_prints_the_web_editor_address_unless_turned_off(
    repos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for web in (True, False):
        config = make_config(repos, tmp_path / f"data-{web}", web=web)
        async with CollabServer(config) as server:
            _announce(server, await _example(server))
        lines = capsys.readouterr().out.splitlines()
        shown = [line for line in lines if "web editor" in line]
        if web:
            assert shown == [
                f"  web editor   : http://127.0.0.1:{server.port}/  "
                "(open it in two browser windows)"
            ]
        else:
            assert shown == []
