"""Stock JavaScript Yjs clients on participants' branches: continuous commits read back with
the real git CLI, with authors and trailers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from gitcli import git, show, until
from jsfleet import JsFleet, require_js
from servers import make_config

from collab import Client, CollabServer
from gitsync.naming import participant_branch

pytestmark = pytest.mark.js


@pytest.fixture(autouse=True)
def _require_js() -> None:
    require_js()


@pytest.fixture
async def fast_server(repos: Path, tmp_path: Path) -> AsyncIterator[CollabServer]:
    config = make_config(repos, tmp_path / "data", commit_idle=0.2, commit_max_lag=2.0)
    async with CollabServer(config) as srv:
        yield srv


async def test_js_and_python_clients_on_two_participants_branches(
    fast_server: CollabServer, repos: Path
) -> None:
    demo = repos / "demo"
    url = f"{fast_server.url}/yjs"
    ann = participant_branch("ann")
    ben = participant_branch("ben")
    async with JsFleet() as fleet, Client(fast_server.url, user="pia") as pia:
        # Opening a file of a repository gives the participant their own branch, from the
        # branch they opened; here each opens main first, then edits on their own branch.
        for name in ("ann", "ben"):
            await fleet.call_ok(
                "open",
                client=f"{name}-main",
                url=url,
                room="demo/main:README.md",
                params={"user": name},
            )

        def branches() -> str:
            return git(demo, "branch", "--list")

        await until(lambda: ann in branches() and ben in branches())
        await fleet.call_ok(
            "open", client="ann", url=url, room=f"demo/{ann}:src/app.py", params={"user": "ann"}
        )
        await fleet.call_ok(
            "open",
            client="ben",
            url=url,
            room=f"demo/{ben}:docs/unicode.txt",
            params={"user": "ben"},
        )
        py = await pia.open(f"demo/{ann}:src/app.py")  # pia hops into ann's branch
        await fleet.call_ok("insert", client="ann", index=0, text="# ann: é 🎉\n")
        await fleet.call_ok("insert", client="ben", index=0, text="ben 世界\n")
        await until(lambda: "ann" in str(py.text))
        py.insert(len(str(py.text)), "# pia\n")
        await pia.flush()
        ann_reply = await fleet.call(
            "wait_text", client="ann", contains=["# pia"], timeout_ms=10000
        )
        assert ann_reply["ok"], ann_reply
        ann_text = str((await fleet.call_ok("text", client="ann"))["text"])
        ben_text = str((await fleet.call_ok("text", client="ben"))["text"])
        await until(lambda: show(demo, ann, "src/app.py") == ann_text)
        await until(lambda: show(demo, ben, "docs/unicode.txt") == ben_text)
        assert show(demo, "main", "src/app.py") == "print('hello')\n"
        people = set()
        for line in git(demo, "log", "--format=author: %an%n%b", f"main..{ann}").splitlines():
            if line.startswith(("author: ", "Co-authored-by: ")):
                people.add(line.split(": ", 1)[1].split(" <")[0])
        assert people == {"ann", "pia"}
        assert git(demo, "log", "-1", "--format=%an", ben).strip() == "ben"
    git(demo, "fsck", "--full", "--strict")
