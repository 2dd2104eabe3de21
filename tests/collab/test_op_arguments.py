"""An operation takes the arguments it names: any other, a misspelt ``no_ff`` say, is
refused with MALFORMED before anything is done, over ``/ws`` and HTTP alike, and the
refusal names the arguments the operation takes."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
from gitcli import git

from collab import Client, ClientError, CollabServer
from protocol.errors import ErrorCode


async def test_a_misspelt_argument_is_refused_and_nothing_is_merged(
    server: CollabServer, repos: Path
) -> None:
    demo = repos / "demo"
    async with Client(server.url, user="alice") as alice:
        await alice.join("demo")  # (her own branch, made at her first open, is there first)
        await alice.fork("demo", "main", "topic")
        doc = await alice.open("demo/topic:README.md")
        doc.insert(0, "topic ")
        await alice.flush()
        await alice.commit("demo", "topic")
        main = git(demo, "rev-parse", "main").strip()
        with pytest.raises(ClientError) as refused:
            await alice.call("merge.apply", repo="demo", source="topic", target="main", noff=True)
        assert refused.value.code == ErrorCode.MALFORMED
        assert "'noff'" in refused.value.message and "no_ff" in refused.value.message
        assert git(demo, "rev-parse", "main").strip() == main
        branches = await alice.branches("demo")
        with pytest.raises(ClientError) as refused:
            await alice.call("branch.join", repo="demo", form="topic")
        assert refused.value.code == ErrorCode.MALFORMED and "'form'" in refused.value.message
        assert await alice.branches("demo") == branches
        result = await alice.call(
            "merge.apply", repo="demo", source="topic", target="main", no_ff=True
        )
        assert result["applied"] and not result["fast_forward"]


@pytest.mark.parametrize(
    ("op", "body"),
    [
        ("branch.log", {"repo": "demo", "limt": 1}),
        ("server.status", {"repo": "demo", "verbose": True}),
        ("complete", {"doc": "demo/main:README.md", "index": 0, "mod": "block"}),
    ],
)
async def test_an_unknown_argument_over_http_is_a_400(
    server: CollabServer, op: str, body: dict[str, object]
) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"http://127.0.0.1:{server.port}/api/{op}", params={"user": "alice"}, json=body
        ) as response,
    ):
        assert response.status == 400
        error = (await response.json())["error"]
        assert error["name"] == "MALFORMED"
        unknown = next(name for name in body if name not in ("repo", "doc", "index"))
        assert f"unknown argument {unknown!r} for {op}" in error["message"]


async def test_a_streamed_completion_refuses_an_unknown_argument(server: CollabServer) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"http://127.0.0.1:{server.port}/api/complete/stream",
            params={"user": "alice"},
            json={"doc": "demo/main:README.md", "index": 0, "max_token": 5},
        ) as response,
    ):
        assert response.status == 400
        assert "'max_token'" in (await response.json())["error"]["message"]
