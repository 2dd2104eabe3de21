"""Transparent branches: participant branches, continuous commits read back with the git CLI,
hopping in, forks, merges, and moves made outside the engine."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from eventwait import Events
from gitcli import git, is_ancestor, show, until
from servers import SECRET, make_config

from collab import Client, CollabServer
from collab.client import ClientError
from collab.git.branch_sync import BranchSync
from collab.live.origin import Origin
from collab.server.auth import Role, TokenAuthenticator
from gitsync.naming import participant_branch
from protocol.errors import ErrorCode


@pytest.fixture
async def fast_server(repos: Path, tmp_path: Path) -> AsyncIterator[CollabServer]:
    config = make_config(repos, tmp_path / "data", commit_idle=0.2, commit_max_lag=2.0)
    config.ref_poll = 0.2
    async with CollabServer(config) as srv:
        yield srv


async def test_continuous_commits_on_each_participants_branch(
    fast_server: CollabServer, repos: Path
) -> None:
    demo = repos / "demo"
    async with (
        Client(fast_server.url, user="alice") as alice,
        Client(fast_server.url, user="bob") as bob,
    ):
        mine = await alice.call("branch.join", repo="demo")
        assert mine["name"] == participant_branch("alice") and mine["created"]
        assert await alice.join("demo") == mine["name"]
        with pytest.raises(ClientError) as refused:  # not "already there": no such branch
            await alice.join("demo", "nosuch")
        assert refused.value.code == ErrorCode.NOT_FOUND and "nosuch" in refused.value.message
        listed = {b["name"]: b for b in await alice.branches("demo")}
        assert listed[mine["name"]]["mine"] and not listed["main"]["mine"]
        theirs = await bob.call("branch.join", repo="demo")
        assert theirs["name"] == participant_branch("bob")
        a = await alice.open(f"demo/{mine['name']}:src/app.py")
        b = await bob.open(f"demo/{theirs['name']}:README.md")
        a.insert(0, "# alice was here é\n")
        b.insert(len(str(b.text)), "bob 🎉\n")
        await alice.flush()
        await bob.flush()
        a_text, b_text = str(a.text), str(b.text)
        await until(lambda: show(demo, mine["name"], "src/app.py") == a_text)
        await until(lambda: show(demo, theirs["name"], "README.md") == b_text)
        assert show(demo, "main", "src/app.py") == "print('hello')\n"  # main untouched
        log = git(demo, "log", "-1", "--format=%an|%s", theirs["name"])
        assert log.strip() == "bob|Edit README.md"
        head = git(demo, "rev-parse", mine["name"]).strip()
        await asyncio.sleep(0.6)  # nothing changed: no new commit
        assert git(demo, "rev-parse", mine["name"]).strip() == head
    git(demo, "fsck", "--full", "--strict")


async def test_hop_in_two_participants_on_one_branch(
    fast_server: CollabServer, repos: Path
) -> None:
    demo = repos / "demo"
    async with (
        Client(fast_server.url, user="alice") as alice,
        Client(fast_server.url, user="bob") as bob,
    ):
        branch = (await alice.call("branch.join", repo="demo"))["name"]
        doc_id = f"demo/{branch}:README.md"
        a = await alice.open(doc_id)
        b = await bob.open(doc_id)  # bob hops into alice's branch
        a.insert(0, "A1 ")
        b.insert(0, "B1 ")
        await alice.flush()
        await bob.flush()
        await until(lambda: str(a.text) == str(b.text) and "A1" in str(b.text))
        listed = {x["name"]: x for x in await bob.branches("demo")}
        assert listed[branch]["people"] == [
            {"user": "alice", "path": "README.md"},
            {"user": "bob", "path": "README.md"},
        ]
        text = str(a.text)
        await until(lambda: show(demo, branch, "README.md") == text)
        authors = git(demo, "log", "--format=%an%n%b", branch)
        assert "alice" in authors and "bob" in authors
        assert "Co-authored-by: " in authors


async def test_read_only_participant_writes_only_own_branch(
    secure_server: CollabServer, tokens: TokenAuthenticator
) -> None:
    token = tokens.mint(user="carol", repo="demo", role=Role.READ)
    async with Client(secure_server.url, token=token) as carol:
        own = (await carol.call("branch.join", repo="demo"))["name"]
        doc = await carol.open(f"demo/{own}:README.md")
        assert doc.writable
        main = await carol.open("demo/main:README.md")
        assert not main.writable
        listed = {b["name"]: b for b in await carol.branches("demo")}
        assert listed[own]["writable"] and not listed["main"]["writable"]
        with pytest.raises(ClientError) as refused:
            await carol.call("branch.create", repo="demo", name="carols-idea")
        assert refused.value.code == 4005


async def test_fork_then_merge_while_someone_types_in_the_target(
    fast_server: CollabServer, repos: Path
) -> None:
    demo = repos / "demo"
    async with (
        Client(fast_server.url, user="alice") as alice,
        Client(fast_server.url, user="typist") as typist,
    ):
        target = await typist.open("demo/main:README.md")
        assert await alice.fork("demo", "main", "feature") == "feature"
        feature = await alice.open("demo/feature:README.md")
        assert str(feature.text) == str(target.text)
        feature.insert(len(str(feature.text)), "feature line\n")
        await alice.flush()
        assert await alice.commit("demo", "feature") == git(demo, "rev-parse", "feature").strip()

        preview = await alice.merge("demo", "feature", "main", apply=False)
        assert preview["conflicts"] == [] and [f["path"] for f in preview["files"]] == ["README.md"]
        assert "+feature line" in preview["files"][0]["diff"]
        assert show(demo, "main", "README.md").count("feature line") == 0

        stop = asyncio.Event()
        typed = 0

        async def keep_typing() -> None:
            nonlocal typed
            while not stop.is_set():
                target.insert(0, f"t{typed};")
                typed += 1
                await asyncio.sleep(0.01)

        typing = asyncio.create_task(keep_typing())
        await until(lambda: typed >= 5, what="typing before the merge")
        result = await alice.merge("demo", "feature", "main")
        after_merge = typed
        await until(lambda: typed >= after_merge + 5, what="typing after the merge")
        stop.set()
        await typing
        await typist.flush()
        assert result["applied"]
        await until(lambda: "feature line" in str(target.text))
        text = str(target.text)
        assert text.count("feature line") == 1
        assert all(text.count(f"t{n};") == 1 for n in range(typed))  # every keystroke, once
        parents = git(demo, "log", "-1", "--format=%P", result["commit"]).split()
        assert len(parents) == 2
        await until(lambda: show(demo, "main", "README.md") == str(target.text))
    git(demo, "fsck", "--full", "--strict")


async def test_conflicting_merge_changes_nothing_unless_markers_asked(
    fast_server: CollabServer, repos: Path
) -> None:
    demo = repos / "demo"
    async with (
        Client(fast_server.url, user="alice") as alice,
        Client(fast_server.url, user="bob") as bob,
    ):
        await alice.call("branch.fork", repo="demo", source="main", name="left")
        await alice.call("branch.fork", repo="demo", source="main", name="right")
        left = await alice.open("demo/left:src/app.py")
        right = await bob.open("demo/right:src/app.py")
        watcher = await bob.open("demo/right:src/app.py")  # a second handle on the target
        left.delete(0, len(str(left.text)))
        left.insert(0, "print('left')\n")
        right.delete(0, len(str(right.text)))
        right.insert(0, "print('right')\n")
        await alice.flush()
        await bob.flush()
        preview = await alice.call("merge.preview", repo="demo", source="left", target="right")
        assert preview["conflicts"] == ["src/app.py"]
        head = git(demo, "rev-parse", "right").strip()
        with pytest.raises(ClientError) as refused:
            await alice.call("merge.apply", repo="demo", source="left", target="right")
        assert refused.value.code == 4015
        assert str(right.text) == "print('right')\n"
        assert git(demo, "rev-parse", "right").strip() == head

        result = await alice.call(
            "merge.apply", repo="demo", source="left", target="right", markers=True
        )
        assert result["applied"] and result["conflicts"] == ["src/app.py"]
        for doc in (right, watcher):
            await until(lambda d=doc: "<<<<<<<" in str(d.text) and ">>>>>>>" in str(d.text))
            assert "print('left')" in str(doc.text) and "print('right')" in str(doc.text)


async def test_commit_by_another_tool_is_merged_into_live_documents(
    fast_server: CollabServer, repos: Path, tmp_path: Path
) -> None:
    demo = repos / "demo"
    async with Client(fast_server.url, user="alice") as alice:
        doc = await alice.open("demo/main:README.md")
        doc.insert(0, "live edit\n")
        await alice.flush()
        await until(lambda: show(demo, "main", "README.md").startswith("live edit"))
        work = tmp_path / "work"
        subprocess.run(["git", "clone", "-q", str(demo), str(work)], check=True)
        readme = work / "README.md"
        readme.write_text(readme.read_text() + "pushed line\n")
        git(work, "-c", "user.name=tool", "-c", "user.email=t@x", "commit", "-qam", "tool")
        pushed = git(work, "rev-parse", "HEAD").strip()
        git(demo, "config", "receive.denyCurrentBranch", "ignore")  # the engine has no worktree
        git(work, "push", "-q", "origin", "main")
        doc.insert(0, "typed meanwhile\n")
        await until(lambda: "pushed line" in str(doc.text))
        assert str(doc.text).count("pushed line") == 1 and "typed meanwhile" in str(doc.text)
        await alice.flush()
        text = str(doc.text)
        await until(lambda: show(demo, "main", "README.md") == text)
        assert is_ancestor(demo, pushed, "main")


@pytest.mark.timeout(30)
async def test_a_stored_document_opened_after_its_branch_moved_outside_gets_the_move(
    repos: Path, tmp_path: Path
) -> None:
    # The ref watcher is slow here, so the move is first seen when the document loads: the
    # load merges it into the stored document (it used to wait for itself, forever).
    config = make_config(repos, tmp_path / "data", commit_idle=0.1, commit_max_lag=1.0)
    config.ref_poll = 600.0
    demo = repos / "demo"
    async with CollabServer(config) as server:
        async with Client(server.url, user="alice") as alice:
            doc = await alice.open("demo/main:README.md")
            doc.insert(0, "live edit\n")
            await alice.flush()
            await until(lambda: show(demo, "main", "README.md").startswith("live edit"))
        await until(lambda: server.rooms.get_key("demo/main:README.md") is None)
        work = tmp_path / "work"
        subprocess.run(["git", "clone", "-q", str(demo), str(work)], check=True)
        readme = work / "README.md"
        readme.write_text(readme.read_text() + "pushed line\n")
        git(work, "-c", "user.name=tool", "-c", "user.email=t@x", "commit", "-qam", "tool")
        git(demo, "config", "receive.denyCurrentBranch", "ignore")
        git(work, "push", "-q", "origin", "main")
        async with Client(server.url, user="bob") as bob:
            again = await asyncio.wait_for(bob.open("demo/main:README.md"), 15)
            text = str(again.text)
            assert text.count("pushed line") == 1 and text.count("live edit") == 1


async def test_a_branch_deleted_outside_with_live_edits_is_restored_with_them(
    fast_server: CollabServer, repos: Path
) -> None:
    demo = repos / "demo"
    async with Client(fast_server.url, user="alice") as alice:
        await alice.call("branch.create", repo="demo", name="scratch")
        doc = await alice.open("demo/scratch:README.md")
        doc.insert(0, "first\n")
        await alice.flush()
        await until(lambda: show(demo, "scratch", "README.md").startswith("first"))
        committed = git(demo, "rev-parse", "scratch").strip()
        git(demo, "update-ref", "-d", "refs/heads/scratch")  # another tool deletes it
        doc.insert(0, "second\n")
        await alice.flush()
        text = str(doc.text)
        await until(lambda: show(demo, "scratch", "README.md") == text)
        assert git(demo, "rev-parse", "scratch~1").strip() == committed
        assert text.count("first") == 1 and text.count("second") == 1
    git(demo, "fsck", "--full", "--strict")


async def test_branch_names_and_permissions_are_checked(fast_server: CollabServer) -> None:
    async with Client(fast_server.url, user="alice") as alice:
        for bad in ("../x", "a..b", "HEAD", "x.lock", "-x", "a b"):
            with pytest.raises(ClientError) as refused:
                await alice.call("branch.create", repo="demo", name=bad)
            assert refused.value.code == 4006, bad
        await alice.call("branch.create", repo="demo", name="topic")
        for clash in ("topic", "topic/sub", "main/x"):  # taken, or a ref under a ref
            with pytest.raises(ClientError) as taken:
                await alice.call("branch.create", repo="demo", name=clash)
            assert taken.value.code == 4015, clash
        with pytest.raises(ClientError) as missing:
            await alice.call("branch.fork", repo="demo", source="nope")
        assert missing.value.code == 4004
        for op, args in [
            ("branch.join", {}),
            ("branch.list", {}),
            ("branch.create", {"name": "x"}),
            ("branch.files", {"branch": "main"}),
        ]:
            with pytest.raises(ClientError) as no_repo:
                await alice.call(op, repo="nosuch", **args)
            assert (no_repo.value.code, no_repo.value.message) == (4004, "no repository 'nosuch'")
        with pytest.raises(ClientError) as default:
            await alice.call("branch.delete", repo="demo", name="main")
        assert default.value.code == 4003
        names = [b["name"] for b in await alice.call("branch.list", repo="demo")]
        assert "topic" in names and "main" in names
        await alice.call("branch.delete", repo="demo", name="topic")
        names = [b["name"] for b in await alice.call("branch.list", repo="demo")]
        assert "topic" not in names


async def test_event_stream_reports_presence_commits_and_moves(
    fast_server: CollabServer,
) -> None:
    async with (
        Client(fast_server.url, user="watcher") as watcher,
        Client(fast_server.url, user="alice") as alice,
    ):
        await watcher.subscribe("events.subscribe", repo="demo")
        doc = await alice.open("demo/main:README.md")
        doc.insert(0, "x")
        await alice.flush()
        await alice.call("branch.fork", repo="demo", source="main", name="evented")
        events = Events(watcher)
        await events.wait_for(
            "presence", user="alice", branch="main", path="README.md", action="join"
        )
        await events.wait_for("commit", branch="main", authors=["alice"])
        await events.wait_for("ref", branch="evented", cause="fork")


async def test_http_api_runs_the_same_operations(fast_server: CollabServer) -> None:
    import aiohttp

    base = fast_server.url.replace("ws://", "http://")
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{base}/api/branch.list?user=alice", json={"repo": "demo"}) as r:
            assert r.status == 200
            names = [b["name"] for b in (await r.json())["value"]]
            assert "main" in names
        async with session.post(f"{base}/api/branch.fork?user=alice", json={"repo": "x/.."}) as r:
            assert r.status == 400
            assert (await r.json())["error"]["code"] == 4000  # missing source
        async with session.post(f"{base}/api/nope?user=alice", json={}) as r:
            assert r.status == 404
        async with session.post(f"{base}/api/branch.list", json={"repo": "demo"}) as r:
            assert r.status == 401


@pytest.fixture
async def slow_commit_server(repos: Path, tmp_path: Path) -> AsyncIterator[CollabServer]:
    """Tokens required; continuous commits only when asked (so pushes are fast-forwards)."""
    config = make_config(repos, tmp_path / "data", secret=SECRET, commit_idle=60.0)
    config.commit_max_lag = 60.0
    async with CollabServer(config) as srv:
        yield srv


async def test_git_clone_commit_push_over_http_merges_into_live_documents(
    slow_commit_server: CollabServer, tokens: TokenAuthenticator, repos: Path, tmp_path: Path
) -> None:
    secure_server = slow_commit_server
    demo = repos / "demo"
    writer = tokens.mint(user="alice", repo="demo", role=Role.WRITE)
    reader = tokens.mint(user="eve", repo="demo", role=Role.READ)
    http = secure_server.url.replace("ws://", "http://")
    env = {"GIT_TERMINAL_PROMPT": "0", "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}

    def run_git(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, env=env, check=False
        )

    async with Client(secure_server.url, token=writer) as alice:
        doc = await alice.open("demo/main:README.md")
        doc.insert(0, "live before push\n")
        await alice.flush()
        await alice.call("branch.commit", repo="demo", branch="main")
        work = tmp_path / "clone"
        cloned = await asyncio.to_thread(
            run_git, "clone", "-q", f"http://alice:{writer}@{http[7:]}/git/demo.git", str(work)
        )
        assert cloned.returncode == 0, cloned.stderr
        assert (work / "README.md").read_text().startswith("live before push")
        readme = work / "README.md"
        readme.write_text(readme.read_text() + "pushed over http\n")
        run_git("-c", "user.name=A", "-c", "user.email=a@x", "commit", "-qam", "push", cwd=work)
        doc.insert(0, "typed during push\n")
        await alice.flush()
        # the live edit is committed before the push is answered: the push is behind it
        behind = await asyncio.to_thread(run_git, "push", "-q", "origin", "main", cwd=work)
        assert behind.returncode != 0 and "(fetch first)" in behind.stderr, behind.stderr
        ident = ("-c", "user.name=A", "-c", "user.email=a@x")
        pulled = await asyncio.to_thread(run_git, *ident, "pull", "-q", "--rebase", cwd=work)
        assert pulled.returncode == 0, pulled.stderr
        assert (work / "README.md").read_text().startswith("typed during push\n")
        pushed = run_git("rev-parse", "HEAD", cwd=work).stdout.strip()
        done = await asyncio.to_thread(run_git, "push", "-q", "origin", "main", cwd=work)
        assert done.returncode == 0, done.stderr
        await until(lambda: "pushed over http" in str(doc.text))
        text = str(doc.text)
        assert text.count("pushed over http") == 1 and "typed during push" in text
        await alice.flush()
        head = (await alice.call("branch.commit", repo="demo", branch="main"))["head"]
        assert is_ancestor(demo, pushed, head)
        assert show(demo, "main", "README.md") == str(doc.text)

        # a reader may clone but not push; a bad token may do neither
        eve = tmp_path / "eve"
        url = f"http://eve:{reader}@{http[7:]}/git/demo.git"
        assert (await asyncio.to_thread(run_git, "clone", "-q", url, str(eve))).returncode == 0
        (eve / "x.txt").write_text("x\n")
        run_git("add", "x.txt", cwd=eve)
        run_git("-c", "user.name=E", "-c", "user.email=e@x", "commit", "-qm", "x", cwd=eve)
        refused = await asyncio.to_thread(run_git, "push", "-q", "origin", "main", cwd=eve)
        assert refused.returncode != 0
        bad = f"http://x:forged@{http[7:]}/git/demo.git"
        nope = await asyncio.to_thread(run_git, "clone", "-q", bad, str(tmp_path / "nope"))
        assert nope.returncode != 0
    git(demo, "fsck", "--full", "--strict")


async def test_bad_merges_and_files_get_clear_errors(
    fast_server: CollabServer, repos: Path, tokens: TokenAuthenticator
) -> None:
    demo = repos / "demo"
    # an unrelated history, made with the git CLI
    tree = git(demo, "mktree", check=True, input_text="").strip()
    orphan = git(demo, "commit-tree", tree, "-m", "orphan").strip()
    git(demo, "update-ref", "refs/heads/orphan", orphan)
    # a binary file and a huge file on a branch
    work = repos.parent / "work"
    subprocess.run(["git", "clone", "-q", str(demo), str(work)], check=True)
    (work / "blob.bin").write_bytes(b"\x00\x01\x02binary")
    (work / "huge.txt").write_text("x" * (fast_server.config.max_file + 1))
    git(work, "add", ".")
    git(work, "-c", "user.name=t", "-c", "user.email=t@x", "commit", "-qm", "files")
    git(demo, "config", "receive.denyCurrentBranch", "ignore")
    git(work, "push", "-q", "origin", "HEAD:refs/heads/files")
    async with Client(fast_server.url, user="alice") as alice:
        with pytest.raises(ClientError) as unrelated:
            await alice.call("merge.preview", repo="demo", source="orphan", target="main")
        assert unrelated.value.code == 4015 and "unrelated" in unrelated.value.message
        with pytest.raises(ClientError) as binary:
            await alice.open("demo/files:blob.bin")
        assert binary.value.code == 4013
        with pytest.raises(ClientError) as huge:
            await alice.open("demo/files:huge.txt")
        assert huge.value.code == 4009
        with pytest.raises(ClientError) as itself:
            await alice.call("merge.apply", repo="demo", source="main", target="main")
        assert itself.value.code == 4015
        doc = await alice.open("demo/files:README.md")
        with pytest.raises(ClientError) as busy:
            await alice.call("branch.delete", repo="demo", name="files")
        assert busy.value.code == 4015
        await doc.close()
    before = git(demo, "rev-parse", "main", "files")
    token = tokens.mint(user="rita", repo="demo", role=Role.READ)
    await fast_server.stop()  # one server at a time serves the repositories
    config = make_config(repos, repos.parent / "d2", secret=SECRET, store="memory")
    async with CollabServer(config) as secure, Client(secure.url, token=token) as rita:
        with pytest.raises(ClientError) as refused:
            await rita.call("merge.apply", repo="demo", source="files", target="main")
        assert refused.value.code == 4005
        with pytest.raises(ClientError) as no_delete:
            await rita.call("branch.delete", repo="demo", name="files")
        assert no_delete.value.code == 4005
        mine = await rita.call("branch.fork", repo="demo", source="files")
        assert mine["name"].startswith(participant_branch("rita") + "-fork-")
        doc = await rita.open(f"demo/{mine['name']}:README.md")
        assert doc.writable
    assert git(demo, "rev-parse", "main", "files") == before  # refused calls moved nothing


async def test_a_fork_made_while_someone_types_in_the_source_merges_back_cleanly(
    fast_server: CollabServer, repos: Path
) -> None:
    """The fork starts at a commit of the source that holds the text its documents are
    copied with: what was typed in between is not the fork's change too, so merging the
    fork back (it changed another file) does not conflict with the source's own commit of
    that text."""
    demo = repos / "demo"
    async with (
        Client(fast_server.url, user="alice") as alice,
        Client(fast_server.url, user="bob") as bob,
    ):
        typed = await alice.open("demo/main:README.md")
        stop = asyncio.Event()
        count = 0

        async def keep_typing() -> None:
            nonlocal count
            while not stop.is_set():
                typed.insert(len(str(typed.text)), f"<a{count}>\n")
                count += 1
                await asyncio.sleep(0.003)

        typing = asyncio.create_task(keep_typing())
        try:
            for n in range(4):
                name = f"feature{n}"
                await bob.fork("demo", "main", name)
                doc = await bob.open(f"demo/{name}:src/app.py")
                doc.insert(0, f"# {name}\n")
                await bob.flush()
                await bob.commit("demo", name)
                fork_readme = show(demo, name, "README.md")
                assert fork_readme == show(demo, f"{name}~0", "README.md")
                log = git(demo, "log", "--format=%an", f"main..{name}", "--", "README.md")
                assert log == "", log  # the fork took none of alice's text as its own
                result = await bob.merge("demo", name, "main")
                assert result["applied"] and result["conflicts"] == []
        finally:
            stop.set()
            await typing
        await alice.flush()
        text = str(typed.text)
        assert all(text.count(f"<a{n}>\n") == 1 for n in range(count))
        assert text.count("<a") == count
    git(demo, "fsck", "--full", "--strict")


async def test_a_clean_merge_and_a_keystroke_on_the_same_line_both_land_without_markers(
    fast_server: CollabServer, repos: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The merge is clean in git; a keystroke that lands while it is merged into the live
    text, at the end of a line the merge changes at its start, is kept beside the change
    (live typing merges character by character), not put between conflict markers."""
    demo = repos / "demo"
    async with (
        Client(fast_server.url, user="alice") as alice,
        Client(fast_server.url, user="typist") as typist,
    ):
        target = await typist.open("demo/main:README.md")
        first_line = str(target.text).split("\n")[0]
        assert await alice.fork("demo", "main", "feature") == "feature"
        feature = await alice.open("demo/feature:README.md")
        feature.insert(0, "NEW ")
        await alice.flush()
        await alice.commit("demo", "feature")
        merge_into_live = BranchSync.merge_into_live

        async def typed_meanwhile(sync: BranchSync, *args: Any, **kwargs: Any) -> None:
            if sync.branch == "main":
                room = fast_server.rooms.get_key("demo/main:README.md")
                assert room is not None
                room.edit(lambda text: text.insert(len(first_line), " typed"), origin=Origin.CLIENT)
            await merge_into_live(sync, *args, **kwargs)

        monkeypatch.setattr(BranchSync, "merge_into_live", typed_meanwhile)
        result = await alice.merge("demo", "feature", "main")
        assert result["applied"] and result["conflicts"] == []
        expected = f"NEW {first_line} typed\n"
        await until(lambda: str(target.text).startswith(expected))
        assert "<<<<<<<" not in str(target.text)
        await alice.commit("demo", "main")
        assert show(demo, "main", "README.md").startswith(expected)
    git(demo, "fsck", "--full", "--strict")


async def test_a_commit_whose_request_is_cancelled_is_still_recorded(
    repos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A ``branch.commit`` whose client left while the commit was being written (its
    request cancelled): the branch moved, and the commit is recorded as the documents' own,
    not taken for someone else's move at the next commit and merged into them again."""
    demo = repos / "demo"
    caplog.set_level(logging.INFO, logger="collab.git")
    config = make_config(repos, tmp_path / "data", commit_idle=60.0, commit_max_lag=60.0)
    async with CollabServer(config) as server, Client(server.url, user="bob") as bob:
        doc = await bob.open("demo/main:README.md")
        end = str(doc).index("\n")  # typing at the end of the first line
        doc.insert(end, " typed;")
        await bob.flush()
        sync = await server.git.branch("demo", "main")
        write = BranchSync._write
        moved = threading.Event()

        def slow_write(self: BranchSync, *args: Any, **kwargs: Any) -> bytes:
            written = write(self, *args, **kwargs)  # the branch moved
            moved.set()
            time.sleep(0.3)  # (in the git thread) the request is cancelled meanwhile
            return written

        monkeypatch.setattr(BranchSync, "_write", slow_write)
        flushing = asyncio.create_task(sync.flush())
        await asyncio.get_running_loop().run_in_executor(None, moved.wait, 10)
        flushing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await flushing
        doc.insert(end + len(" typed;"), " more;")  # typed on while the commit is written
        await bob.flush()
        await asyncio.sleep(0.5)  # the commit is written, the branch moved
        assert sync.synced.decode() == git(demo, "rev-parse", "main").strip()
        # recorded as the documents' own: not taken for someone else's move and merged
        assert not [r for r in caplog.records if "moved outside the engine" in r.getMessage()]
        monkeypatch.undo()
        await sync.flush()
        committed = show(demo, "main", "README.md")
        assert committed == str(doc) and committed.count("typed;") == 1
        assert str(doc).split("\n")[0].endswith(" typed; more;")


async def test_a_branch_deleted_while_its_documents_linger_is_made_again_without_them(
    repos: Path, tmp_path: Path
) -> None:
    """A branch deleted just after its documents were closed, in their grace period: their
    rooms are dropped with it, not unloaded with a snapshot stored under their names, so a
    branch made again under the name reads as the branch it is made from, now and after
    a restart."""
    config = make_config(repos, tmp_path / "data", commit_idle=60.0, commit_max_lag=60.0)
    config.grace = 30.0
    readme = git(repos / "demo", "show", "main:README.md")
    async with CollabServer(config) as server, Client(server.url, user="alice") as alice:
        await alice.call("branch.create", repo="demo", name="topic")
        doc = await alice.open("demo/topic:README.md")
        doc.insert(0, "typed on topic\n")
        await alice.flush()
        await alice.commit("demo", "topic")
        await doc.close()
        await alice.call("branch.delete", repo="demo", name="topic")
        assert await server.store.keys("demo/topic:") == []
        await alice.call("branch.create", repo="demo", name="topic")
        again = await alice.open("demo/topic:README.md")
        assert str(again.text) == readme
        await again.close()
    async with CollabServer(config) as server, Client(server.url, user="alice") as alice:
        again = await alice.open("demo/topic:README.md")
        assert str(again.text) == readme


async def test_a_repository_with_no_commits_says_how_to_give_it_one(
    fast_server: CollabServer, repos: Path
) -> None:
    subprocess.run(["git", "init", "-q", "--bare", str(repos / "empty.git")], check=True)
    async with Client(fast_server.url, user="alice") as alice:
        with pytest.raises(ClientError) as refused:
            await alice.call("branch.join", repo="empty")
        assert refused.value.code == 4004
        assert "it has no commits yet; push a first one to /git/empty.git" in str(refused.value)
        with pytest.raises(ClientError) as missing:  # a repository with commits: no such hint
            await alice.call("branch.create", repo="demo", name="x", **{"from": "nowhere"})
        assert "no branch 'nowhere' in 'demo'" in str(missing.value)
        assert "no commits" not in str(missing.value)


async def test_a_refused_open_is_raised_to_the_caller_not_also_logged(
    fast_server: CollabServer, caplog: pytest.LogCaptureFixture
) -> None:
    async with Client(fast_server.url, user="alice") as alice:
        with pytest.raises(ClientError) as refused:
            await alice.open("demo/nowhere:README.md")
        assert refused.value.code == 4004
    assert not [r for r in caplog.records if r.name == "collab.client" and r.levelno >= 30]


async def test_a_branch_is_created_from_a_tag_or_a_commit(
    fast_server: CollabServer, repos: Path
) -> None:
    """``branch.create`` takes a branch, a tag (annotated or not) or a commit's id to start
    from; a branch's name comes first."""
    demo = repos / "demo"
    first = git(demo, "rev-parse", "main").strip()
    async with Client(fast_server.url, user="alice") as alice:
        doc = await alice.open("demo/main:README.md")
        doc.insert(0, "after the tags\n")
        await alice.commit("demo", "main")
        git(demo, "tag", "light", first)
        git(demo, "tag", "-a", "-m", "release", "v1", first)
        for source in ("light", "v1", "refs/tags/v1", first):
            name = f"from-{source.replace('/', '-')[:12]}"
            made = await alice.call("branch.create", repo="demo", name=name, **{"from": source})
            assert made["head"] == first, source
            assert show(demo, name, "README.md") == show(demo, first, "README.md")
        made = await alice.call("branch.create", repo="demo", name="from-main", **{"from": "main"})
        assert made["head"] == git(demo, "rev-parse", "main").strip() != first
        for source, code in [
            ("nope", ErrorCode.NOT_FOUND),
            ("0" * 40, ErrorCode.NOT_FOUND),
            ("../../HEAD", ErrorCode.BAD_NAME),  # never a path out of the refs
            ("refs/tags/../../HEAD", ErrorCode.BAD_NAME),
        ]:
            with pytest.raises(ClientError) as refused:
                await alice.call("branch.create", repo="demo", name="x", **{"from": source})
            assert refused.value.code == code, source
        # a tag of something else than a commit is said to be one, not taken for no branch
        git(demo, "tag", "blobtag", f"{first}:README.md")
        git(demo, "tag", "-a", "-m", "a tree", "treetag", f"{first}^{{tree}}")
        blob = git(demo, "rev-parse", f"{first}:README.md").strip()
        for source, kind in [("blobtag", "blob"), ("treetag", "tree"), (blob, "blob")]:
            with pytest.raises(ClientError) as refused:
                await alice.call("branch.create", repo="demo", name="x", **{"from": source})
            assert refused.value.code == ErrorCode.NOT_FOUND
            assert f"names a {kind}, not a commit" in refused.value.message, source
        assert not git(demo, "branch", "--list", "x").strip()


async def test_a_document_opened_while_its_branch_is_deleted_finds_no_branch(
    fast_server: CollabServer, repos: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``branch.delete`` looks for open documents, then commits the branch's pending edits
    and deletes it. A document opened in between, and typed in, used to be closed under its
    user (4004) once the branch was gone, their acknowledged text only on a rescued branch.
    Now the open waits for the delete, and finds no branch; the next is refused (4015)."""
    branches = fast_server.branches
    real_head = branches.head
    reached, go = asyncio.Event(), asyncio.Event()

    async def paused_head(repo: str, branch: str) -> bytes:
        if branch == "doomed" and not reached.is_set():
            reached.set()
            await go.wait()
        return await real_head(repo, branch)

    async with (
        Client(fast_server.url, user="alice") as alice,
        Client(fast_server.url, user="bob") as bob,
    ):
        await alice.call("branch.create", repo="demo", name="doomed")
        await bob.join("demo")
        monkeypatch.setattr(branches, "head", paused_head)
        deleting = asyncio.create_task(alice.call("branch.delete", repo="demo", name="doomed"))
        await asyncio.wait_for(reached.wait(), 5)  # past the look for open documents
        opening = asyncio.create_task(bob.open("demo/doomed:README.md"))
        await asyncio.sleep(0.5)
        assert not opening.done(), "opened while the branch was being deleted"
        go.set()
        assert (await deleting)["name"] == "doomed"
        with pytest.raises(ClientError) as gone:
            await opening
        assert gone.value.code == ErrorCode.NOT_FOUND
        assert git(repos / "demo", "branch", "--list", "doomed*") == ""

        await alice.call("branch.create", repo="demo", name="kept")
        doc = await bob.open("demo/kept:README.md")
        doc.insert(0, "bob typed\n")
        await bob.flush()
        with pytest.raises(ClientError) as busy:
            await alice.call("branch.delete", repo="demo", name="kept")
        assert busy.value.code == ErrorCode.CONFLICT and "open documents" in busy.value.message
        assert not doc.closed


async def test_opening_a_document_makes_ones_own_branch_again_once_it_was_deleted(
    fast_server: CollabServer, repos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Opening any document makes one's own branch if one has none: also after it was
    deleted, by ``branch.delete``, by a push, or by another tool (seen within
    ``JOINED_FOR``). It used to be remembered as made for as long as the server ran."""
    demo = repos / "demo"
    own = participant_branch("alice")

    def exists() -> bool:
        return git(demo, "branch", "--list", own).strip() != ""

    url = fast_server.url.replace("ws://", "http://alice:dev@") + "/git/demo.git"
    work = tmp_path / "work"
    await asyncio.to_thread(git, tmp_path, "clone", "-q", url, str(work))
    async with Client(fast_server.url, user="alice") as alice:
        doc = await alice.open("demo/main:README.md")
        await until(exists, what="alice's own branch")
        await doc.close()
        await alice.call("branch.delete", repo="demo", name=own)
        assert not exists()
        doc = await alice.open("demo/main:src/app.py")
        await until(exists, what="alice's own branch, made again after branch.delete")
        await doc.close()

        await asyncio.to_thread(git, work, "push", "-q", "origin", f":refs/heads/{own}")
        assert not exists()
        doc = await alice.open("demo/main:README.md")
        await until(exists, what="alice's own branch, made again after a push deleted it")
        await doc.close()

        monkeypatch.setattr("collab.git.branches.JOINED_FOR", 0.2)
        git(demo, "update-ref", "-d", f"refs/heads/{own}")  # another tool, unseen
        await asyncio.sleep(0.3)
        doc = await alice.open("demo/main:src/app.py")
        await until(exists, what="alice's own branch, made again after another tool")


async def test_an_unnamed_fork_skips_a_name_a_branch_below_it_holds(
    fast_server: CollabServer, repos: Path
) -> None:
    """``<own>-fork-2/sub`` keeps ``<own>-fork-2`` from being made (git holds no ref beside
    one below it): the unnamed forks are ``-fork-1``, then ``-fork-3``. The second used to
    be refused for good (4015, "'...-fork-2/sub' exists")."""
    own = participant_branch("alice")
    async with Client(fast_server.url, user="alice") as alice:
        await alice.call("branch.create", repo="demo", name=f"{own}-fork-2/sub")
        assert await alice.fork("demo", "main") == f"{own}-fork-1"
        assert await alice.fork("demo", "main") == f"{own}-fork-3"
    listed = git(repos / "demo", "branch", "--list", f"{own}-fork-*").split()
    assert listed == [f"{own}-fork-1", f"{own}-fork-2/sub", f"{own}-fork-3"]


async def test_an_unnamed_fork_is_refused_when_a_branch_above_keeps_every_name_out(
    fast_server: CollabServer, repos: Path
) -> None:
    """A branch ``people`` made by another tool keeps every ``people/...`` name from being
    made: an unnamed fork says so at once (it looked for a free number for ever, a git
    thread spinning per call, until every git call of the server hung)."""
    demo = repos / "demo"
    git(demo, "update-ref", "refs/heads/people", git(demo, "rev-parse", "main").strip())
    async with Client(fast_server.url, user="alice") as alice:
        for _ in range(3):
            with pytest.raises(ClientError) as refused:
                await asyncio.wait_for(alice.fork("demo", "main"), 10)
            assert refused.value.code == ErrorCode.CONFLICT
            assert "'refs/heads/people' exists" in refused.value.message
        assert (await alice.call("branch.log", repo="demo", branch="main"))["commits"]
