"""``server.status`` and ``branch.log`` (and ``collab status``, ``collab log``): what a running
server serves, and a branch's commits with authors, without the git CLI in the data directory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from gitcli import git
from servers import make_config

from collab import Client, ClientError, CollabServer
from collab.cli.commands import main
from collab.server.auth import Role, TokenAuthenticator
from gitsync.naming import participant_branch
from protocol.errors import ErrorCode
from protocol.names import DocId


async def test_status_shows_branches_people_documents_and_last_commits(
    server: CollabServer, repos: Path
) -> None:
    async with Client(server.url, user="alice") as alice, Client(server.url, user="bob") as bob:
        await alice.open("demo/main:README.md")
        own = await bob.join("demo")
        await bob.open(f"demo/{own}:src/app.py")
        status = await alice.call("server.status")
    info = status["server"]
    assert info["dev_mode"] and info["store"] == "sqlite" and info["uptime"] > 0
    assert info["connections"]["ws"] == 2 and info["rooms"] == 2
    by_name = {repo["name"]: repo for repo in status["repositories"]}
    assert set(by_name) == {"demo", "other"}
    demo = by_name["demo"]
    assert demo["default_branch"] == "main"
    branches = {branch["name"]: branch for branch in demo["branches"]}
    assert branches["main"]["people"] == [{"user": "alice", "path": "README.md"}]
    assert branches[own]["people"] == [{"user": "bob", "path": "src/app.py"}]
    last = branches["main"]["last_commit"]
    assert last["commit"] == git(repos / "demo", "rev-parse", "main").strip()
    assert last["subject"] == "Initial commit" and last["author"].startswith("collab <")
    rooms = {room["doc"]: room["users"] for room in status["rooms"]}
    assert rooms == {"demo/main:README.md": ["alice"], f"demo/{own}:src/app.py": ["bob"]}


async def test_a_person_named_collab_is_listed_and_the_servers_own_holders_are_not(
    server: CollabServer,
) -> None:
    """The server borrows rooms (a merge, a completion) with a holder whose identity is named
    ``collab``; it is no one, and was left out of the lists by that name, so a person named
    ``collab`` was never listed. Now the holder is left out for what it is."""
    async with (
        Client(server.url, user="collab") as person,
        server.rooms.borrow(DocId.parse("demo/main:src/app.py")),
    ):
        await person.open("demo/main:README.md")
        status = await person.call("server.status", repo="demo")
        listed = {branch["name"]: branch for branch in await person.branches("demo")}
    rooms = {room["doc"]: room["users"] for room in status["rooms"]}
    assert rooms == {"demo/main:README.md": ["collab"], "demo/main:src/app.py": []}
    assert listed["main"]["people"] == [{"user": "collab", "path": "README.md"}]
    (demo,) = status["repositories"]
    shown = {branch["name"]: branch for branch in demo["branches"]}
    assert shown["main"]["people"] == [{"user": "collab", "path": "README.md"}]


async def test_status_shows_only_the_repositories_a_token_reads(
    secure_server: CollabServer, tokens: TokenAuthenticator
) -> None:
    token = tokens.mint(user="carol", repo="other", role=Role.READ)
    async with Client(secure_server.url, token=token) as carol:
        status = await carol.call("server.status")
        assert [repo["name"] for repo in status["repositories"]] == ["other"]
        assert not status["server"]["dev_mode"]
        with pytest.raises(ClientError) as refused:
            await carol.call("server.status", repo="demo")
        assert refused.value.code == ErrorCode.FORBIDDEN


@pytest.fixture
async def slow_commits(repos: Path, tmp_path: Path) -> AsyncIterator[CollabServer]:
    """A server that commits only when asked (within a test's time)."""
    config = make_config(repos, tmp_path / "data", commit_idle=60.0, commit_max_lag=60.0)
    async with CollabServer(config) as srv:
        yield srv


async def test_log_lists_commits_with_authors_and_co_authors(slow_commits: CollabServer) -> None:
    server = slow_commits
    async with Client(server.url, user="alice") as alice, Client(server.url, user="bob") as bob:
        mine = await alice.open("demo/main:README.md")
        theirs = await bob.open("demo/main:README.md")
        # opening creates each one's own branch from main, committing main's pending edits
        # first: wait for both, so that the edits below are committed together
        own = {participant_branch("alice"), participant_branch("bob")}
        async with asyncio.timeout(10):
            while not own <= {b["name"] for b in await alice.branches("demo")}:
                await asyncio.sleep(0.02)
        mine.insert(0, "alice\n")
        await alice.flush()
        await theirs.wait_for(lambda text: text.startswith("alice\n"))
        theirs.insert(0, "bob\n")
        await bob.flush()
        head = await alice.commit("demo", "main")
        log = await alice.call("branch.log", repo="demo")  # the default branch
        assert log["branch"] == "main" and log["head"] == head
        newest, initial = log["commits"]
        assert newest["commit"] == head and newest["parents"] == [initial["commit"]]
        assert newest["author"].startswith("alice <")
        assert [who.split(" <")[0] for who in newest["co_authors"]] == ["bob"]
        assert newest["subject"] == "Edit README.md"
        assert initial["subject"] == "Initial commit" and initial["co_authors"] == []
        one = await alice.call("branch.log", repo="demo", branch="main", limit=1)
        assert [c["commit"] for c in one["commits"]] == [head]
        for args, code in (
            ({"repo": "demo", "branch": "nope"}, ErrorCode.NOT_FOUND),
            ({"repo": "demo", "limit": 0}, ErrorCode.MALFORMED),
            ({"repo": "nope"}, ErrorCode.NOT_FOUND),
        ):
            with pytest.raises(ClientError) as refused:
                await alice.call("branch.log", **args)
            assert refused.value.code == code, args


async def test_collab_status_and_log_print_tables(
    server: CollabServer, capsys: pytest.CaptureFixture[str]
) -> None:
    url = server.url.replace("ws://", "http://")
    async with Client(server.url, user="alice") as alice:
        doc = await alice.open("demo/main:README.md")
        doc.insert(0, "hello\n")
        await alice.flush()
        await alice.commit("demo", "main")
        # opening made alice's own branch in the background; wait for it, whatever the load
        assert await alice.join("demo") == participant_branch("alice")
        assert await asyncio.to_thread(main, ["status", "--url", url, "--user", "alice"]) == 0
        status = capsys.readouterr().out
        assert await asyncio.to_thread(main, ["log", "demo", "--url", url, "--user", "bob"]) == 0
        log = capsys.readouterr().out
    assert "dev mode" in status and "1 ws" in status
    assert "repository demo: 2 branches, default main" in status  # alice's own one, and main
    assert participant_branch("alice") in status
    main_row = next(line for line in status.splitlines() if line.startswith("main "))
    assert "by alice: Edit README.md" in main_row and "alice (README.md)" in main_row
    assert "LIVE DOCUMENT" in status and "demo/main:README.md" in status
    lines = log.splitlines()
    assert lines[0].startswith("demo/main")
    assert "alice: Edit README.md" in lines[1] and "collab: Initial commit" in lines[2]


async def test_collab_log_shows_a_pushed_escape_sequence_instead_of_obeying_it(
    server: CollabServer, repos: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Commit subjects and author names are whoever pushed them: escape sequences (a new
    terminal title, a cleared screen) and bidi controls in them are printed as escapes."""
    demo = repos / "demo"
    tree = git(demo, "rev-parse", "main^{tree}").strip()
    parent = git(demo, "rev-parse", "main").strip()
    body = (
        f"tree {tree}\nparent {parent}\n"
        "author eve\x1b[2J <eve@x> 1700000000 +0000\n"
        "committer eve <eve@x> 1700000000 +0000\n\n"
        "fix\x1b]0;owned\x07 typo \u202eroc.exe\n"
    )
    commit = git(demo, "hash-object", "-t", "commit", "-w", "--stdin", input_text=body).strip()
    git(demo, "update-ref", "refs/heads/odd", commit)
    url = server.url.replace("ws://", "http://")
    assert await asyncio.to_thread(main, ["log", "demo", "odd", "--url", url, "--user", "a"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
    assert "eve\\x1b[2J" in out
    assert "fix\\x1b]0;owned\\x07 typo \\u202eroc.exe" in out


async def test_collab_merge_keeps_a_path_with_a_line_feed_on_its_own_line(
    server: CollabServer, repos: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Git allows a line feed in a file name: printed raw, one pushed name could pass for
    another row of a merge preview."""
    demo = repos / "demo"
    blob = git(demo, "hash-object", "-w", "--stdin", input_text="x\n").strip()
    listing = git(demo, "ls-tree", "-z", "main")
    forged = "notes.txt\n  modified  README.md (safe)"
    tree = git(demo, "mktree", "-z", input_text=listing + f"100644 blob {blob}\t{forged}\0").strip()
    parent = git(demo, "rev-parse", "main").strip()
    commit = git(demo, "commit-tree", tree, "-p", parent, "-m", "notes").strip()
    git(demo, "update-ref", "refs/heads/evil", commit)
    url = server.url.replace("ws://", "http://")
    args = ["merge", "evil", "main", "--repo", "demo", "--url", url, "--user", "a"]
    assert await asyncio.to_thread(main, args) == 0
    out = capsys.readouterr().out
    assert "notes.txt\\x0a  modified  README.md (safe)" in out
    assert not any(line.startswith("  modified  README.md") for line in out.splitlines())
