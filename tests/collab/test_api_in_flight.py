"""HTTP operations are bounded per user as ``/ws`` calls are per connection: one user's calls in
flight past ``max_user_api_calls`` are answered 429 ``RATE_LIMITED``, others' still run; and the
branch list's writability, worked out once per call, is ``Identity.can_write_branch``'s."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from servers import make_config

from collab import CollabServer
from collab.server.auth import Identity, Role
from gitsync.naming import participant_branch
from protocol.errors import ErrorCode

LIMIT = 3


@pytest.fixture
async def bounded(repos: Path, tmp_path: Path) -> AsyncIterator[CollabServer]:
    config = make_config(repos, tmp_path / "data", store="memory", max_user_api_calls=LIMIT)
    async with CollabServer(config) as srv:
        yield srv


async def _held_call(port: int, user: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A ``branch.list`` call whose headers are sent and whose body is held back: in flight."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"POST /api/branch.list?user={user} HTTP/1.1\r\nHost: x\r\n"
        "Content-Type: application/json\r\nContent-Length: 17\r\n\r\n".encode()
    )
    await writer.drain()
    return reader, writer


async def _post(session: aiohttp.ClientSession, port: int, user: str) -> tuple[int, dict]:
    async with session.post(
        f"http://127.0.0.1:{port}/api/branch.list", params={"user": user}, json={"repo": "demo"}
    ) as response:
        return response.status, await response.json()


async def test_calls_past_the_limit_are_refused_per_user(bounded: CollabServer) -> None:
    port = bounded.port
    held = [await _held_call(port, "alice") for _ in range(LIMIT)]
    async with aiohttp.ClientSession() as session:
        async with asyncio.timeout(10):  # until the server has read the held calls' headers
            while (answer := await _post(session, port, "alice"))[0] != 429:
                assert answer[0] == 200
                await asyncio.sleep(0.02)
        error = answer[1]["error"]
        assert error["code"] == ErrorCode.RATE_LIMITED and error["name"] == "RATE_LIMITED"
        assert "too many calls in flight" in error["message"]
        assert (await _post(session, port, "bob"))[0] == 200  # another user is not held up
        for reader, writer in held:  # the held calls end, and alice may call again
            writer.write(b'{"repo": "demo"} ')
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 ")
            writer.close()
        assert (await _post(session, port, "alice"))[0] == 200


async def test_held_calls_that_fail_free_their_place(bounded: CollabServer) -> None:
    port = bounded.port
    async with aiohttp.ClientSession() as session:
        for _ in range(LIMIT + 2):  # each refused (no such repository), none left counted
            async with session.post(
                f"http://127.0.0.1:{port}/api/branch.list",
                params={"user": "carol"},
                json={"repo": "nothing-here"},
            ) as response:
                assert response.status == 404
        assert (await _post(session, port, "carol"))[0] == 200


NAMES = [
    "main",
    "feature",
    participant_branch("alice"),
    participant_branch("alice") + "-fork-1",
    participant_branch("bob"),
    participant_branch("bob") + "-fork-1",
    participant_branch("alice-2bd806c9-x"),  # (begins as alice's forks do: not hers)
    participant_branch("alice-2bd806c9-x") + "-fork-1",
    "alice",
]


@pytest.mark.parametrize("role", [Role.READ, Role.WRITE])
@pytest.mark.parametrize("repo", ["demo", "*"])
def test_branch_writability_is_can_write_branch(role: Role, repo: str) -> None:
    identity = Identity("alice", role, repo)
    for target in ("demo", "other"):
        writable = identity.branch_writability(target)
        assert [writable(name) for name in NAMES] == [
            identity.can_write_branch(target, name) for name in NAMES
        ]
