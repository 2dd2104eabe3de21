"""Paths whose place in the branch's tree holds no text file (a directory, a symbolic link, a
submodule, or anything below a file): opening one is refused with 4013, and the branch is
left as it was."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from gitcli import git, until
from servers import make_config
from yjsclient import YjsPeer

from collab import CollabServer
from collab.client import Client, ClientError
from collab.git.branch_sync import BranchSync
from protocol.errors import ErrorCode

SUBMODULE_COMMIT = "1f6589ec3a1ee910f9a65cc3ceac60b26677bc0e"


@pytest.fixture
async def tree_server(tmp_path: Path) -> AsyncIterator[tuple[CollabServer, Path]]:
    bare = tmp_path / "repos" / "demo.git"
    git(tmp_path, "init", "-q", "-b", "main", "--bare", str(bare))
    seed = tmp_path / "seed"
    git(tmp_path, "init", "-q", "-b", "main", str(seed))
    (seed / "dir").mkdir()
    (seed / "dir" / "keep.txt").write_text("keep me\n")
    (seed / "file.txt").write_text("a file\n")
    os.symlink("dir", seed / "linkdir")
    git(seed, "add", "-A")
    git(seed, "update-index", "--add", "--cacheinfo", f"160000,{SUBMODULE_COMMIT},sub")
    git(seed, "commit", "-qm", "seed")
    git(seed, "push", "-q", str(bare), "main")
    config = make_config(tmp_path / "repos", tmp_path / "data", commit_idle=0.1)
    async with CollabServer(config) as server:
        yield server, bare


@pytest.mark.parametrize(
    "path", ["dir", "linkdir", "sub", "file.txt/below", "linkdir/x.txt", "sub/x.txt"]
)
async def test_a_path_that_is_no_text_file_is_refused_with_4013(
    tree_server: tuple[CollabServer, Path], path: str
) -> None:
    server, bare = tree_server
    before = git(bare, "rev-parse", "main")
    async with YjsPeer(server.url, f"demo/main:{path}", user="ann") as peer:
        assert await peer.wait_closed() == ErrorCode.NOT_TEXT
    await asyncio.sleep(0.3)  # past the commit delay: nothing was committed
    assert git(bare, "rev-parse", "main") == before
    assert len(server.rooms) == 0


CHANGED = ["tolink.txt", "todir", "tobin.txt", "tolatin1.txt", "togitlink"]


def text_files(tmp_path: Path, names: list[str]) -> tuple[Path, Path]:
    """A bare repository (``demo``) and a clone of it with one commit: ``names`` as text."""
    bare = tmp_path / "repos" / "demo.git"
    git(tmp_path, "init", "-q", "-b", "main", "--bare", str(bare))
    seed = tmp_path / "seed"
    git(tmp_path, "init", "-q", "-b", "main", str(seed))
    for name in names:
        (seed / name).write_text(f"{name} as text\n")
    git(seed, "add", "-A")
    git(seed, "commit", "-qm", "seed")
    return bare, seed


def make_no_text(work: Path) -> None:
    """``tolink.txt`` a link, ``todir`` a directory, ``tobin.txt`` a binary file."""
    (work / "tolink.txt").unlink()
    os.symlink("untouched.txt", work / "tolink.txt")
    (work / "todir").unlink()
    (work / "todir").mkdir()
    (work / "todir" / "inner.txt").write_text("inner\n")
    (work / "tobin.txt").write_bytes(b"\x00\x01binary\xff\n")


async def test_a_push_that_makes_an_open_file_no_text_closes_it_and_keeps_what_was_pushed(
    tmp_path: Path,
) -> None:
    bare, seed = text_files(tmp_path, [*CHANGED, "untouched.txt"])
    git(seed, "push", "-q", str(bare), "main")
    config = make_config(tmp_path / "repos", tmp_path / "data", commit_idle=0.1)
    async with CollabServer(config) as server:
        peers = {}
        for name in [*CHANGED, "untouched.txt"]:
            peers[name] = await YjsPeer(server.url, f"demo/main:{name}", user="ann").connect()
            await asyncio.wait_for(peers[name].synced.wait(), 5)
        work = tmp_path / "work"
        url = server.url.replace("ws://", "http://ann@") + "/git/demo.git"
        await asyncio.to_thread(git, tmp_path, "clone", "-q", url, str(work))
        make_no_text(work)
        (work / "tolatin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
        git(work, "rm", "-q", "togitlink")
        git(work, "add", "-A")
        git(work, "update-index", "--add", "--cacheinfo", f"160000,{SUBMODULE_COMMIT},togitlink")
        git(work, "commit", "-qm", "no longer text")
        await asyncio.to_thread(git, work, "push", "-q", "origin", "main")
        pushed = git(work, "rev-parse", "HEAD").strip()
        for name in CHANGED:
            assert await peers[name].wait_closed() == ErrorCode.NOT_TEXT, name
        peers["untouched.txt"].text.insert(0, "typed after the push\n")
        for _ in range(100):  # the live edit is committed on top of the push
            await asyncio.sleep(0.05)
            if git(bare, "rev-parse", "main").strip() != pushed:
                break
        diff = git(bare, "diff", "--name-only", pushed, "main").split()
        assert diff == ["untouched.txt"]  # everything pushed stays as it was pushed
        async with YjsPeer(server.url, "demo/main:tolink.txt", user="ann") as again:
            assert await again.wait_closed() == ErrorCode.NOT_TEXT
        for peer in peers.values():
            await peer.close()
    assert (
        "error"
        not in subprocess.run(
            ["git", "-C", str(bare), "fsck", "--full", "--strict"], capture_output=True, text=True
        ).stderr
    )


async def test_a_merge_that_makes_an_open_file_no_text_closes_it(tmp_path: Path) -> None:
    bare, seed = text_files(tmp_path, ["tolink.txt", "todir", "tobin.txt", "untouched.txt"])
    git(seed, "checkout", "-q", "-b", "topic")
    make_no_text(seed)
    git(seed, "add", "-A")
    git(seed, "commit", "-qm", "no longer text")
    git(seed, "push", "-q", str(bare), "main", "topic")
    topic_tree = git(bare, "rev-parse", "topic^{tree}")
    config = make_config(tmp_path / "repos", tmp_path / "data", commit_idle=0.1)
    async with CollabServer(config) as server:
        peers = {}
        for name in ["tolink.txt", "todir", "tobin.txt"]:
            peers[name] = await YjsPeer(server.url, f"demo/main:{name}", user="ann").connect()
            await asyncio.wait_for(peers[name].synced.wait(), 5)
        api = server.url.replace("ws://", "http://") + "/api/merge.apply?user=ann"
        async with aiohttp.ClientSession() as session:
            body = {"repo": "demo", "source": "topic", "target": "main"}
            async with session.post(api, json=body) as reply:
                assert reply.status == 200, await reply.text()
        for name, peer in peers.items():
            assert await peer.wait_closed() == ErrorCode.NOT_TEXT, name
            await peer.close()
        await asyncio.sleep(0.3)  # past the commit delay: nothing written over the merge
        assert git(bare, "rev-parse", "main^{tree}") == topic_tree


async def test_a_new_file_and_a_new_file_below_it_are_not_both_opened(
    tree_server: tuple[CollabServer, Path],
) -> None:
    """``new`` and ``new/todo.md``, neither in git: both cannot be files. Whichever is
    opened second is refused with 4013, as a path below a file of the branch is, and the
    branch goes on being committed."""
    server, bare = tree_server
    async with Client(server.url, user="ann") as ann:
        notes = await ann.open("demo/main:new")
        notes.insert(0, "ann's notes\n")
        with pytest.raises(ClientError) as below:
            await ann.open("demo/main:new/todo.md")
        assert below.value.code == ErrorCode.NOT_TEXT
        await ann.flush()
        assert git(bare, "show", f"{await ann.commit('demo', 'main')}:new") == "ann's notes\n"
        todo = await ann.open("demo/main:other/todo.md")
        todo.insert(0, "todo\n")
        with pytest.raises(ClientError) as above:
            await ann.open("demo/main:other")
        assert above.value.code == ErrorCode.NOT_TEXT
        await ann.flush()
        head = await ann.commit("demo", "main")
        assert git(bare, "show", f"{head}:other/todo.md") == "todo\n"


async def test_a_path_below_an_open_committed_file_is_refused_as_below_a_file(
    tree_server: tuple[CollabServer, Path],
) -> None:
    """``file.txt/below`` while the committed ``file.txt`` is open: refused as a path below
    a file of the branch is, not as one below a file open and not committed yet."""
    server, _bare = tree_server
    async with Client(server.url, user="ann") as ann:
        await ann.open("demo/main:file.txt")
        with pytest.raises(ClientError) as below:
            await ann.open("demo/main:file.txt/below")
        assert below.value.code == ErrorCode.NOT_TEXT
        assert (
            below.value.message
            == "file.txt/below lies below a file, a symbolic link or a submodule"
        )


async def test_one_clash_does_not_keep_the_rest_of_the_branch_from_being_committed(
    tree_server: tuple[CollabServer, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Live documents at ``new`` and ``new/todo.md`` (stored before opening one was
    refused, say): the one below is not committed, everything else is; once ``new`` is
    committed as a file, ``new/todo.md`` can be none, and is closed, its text kept on a
    branch of its own (nothing is left in the store for the next start)."""
    server, bare = tree_server
    monkeypatch.setattr(BranchSync, "check_clash", lambda self, path: None, raising=False)
    async with Client(server.url, user="ann") as ann:
        await ann.join("demo")  # (made on her first open, it would commit main meanwhile)
        docs = []
        for doc_id, text in [("new", "notes\n"), ("new/todo.md", "todo\n"), ("file.txt", "")]:
            doc = await ann.open(f"demo/main:{doc_id}")
            doc.insert(0, text or "edited ")
            docs.append(doc)
        await ann.flush()
        head = await ann.commit("demo", "main")
        await until(lambda: docs[1].closed)
    assert docs[1].error is not None and docs[1].error.code == ErrorCode.NOT_TEXT
    assert git(bare, "show", f"{head}:new") == "notes\n"
    assert git(bare, "show", f"{head}:file.txt") == "edited a file\n"
    rescued = f"main-rescued-{head[:7]}"
    assert git(bare, "show", f"{rescued}:new-todo.md.rescued") == "todo\n"
    assert git(bare, "log", "-1", "--format=%an", rescued) == "ann\n"  # her text, not the engine's
    assert not server.git.incomplete


async def test_a_file_opened_below_an_empty_new_one_is_kept_elsewhere_once_that_is_committed(
    tree_server: tuple[CollabServer, Path],
) -> None:
    """``new`` opened empty (no file yet: no clash), then ``new/todo.md``, and both typed:
    the commit takes ``new`` as a file, and ``new/todo.md`` can be none on the branch any
    more. It is closed (``NOT_TEXT``), its text kept on ``main-rescued-<commit>`` by a
    commit that names its typist, and opening it again is refused as a path below a
    file."""
    server, bare = tree_server
    async with Client(server.url, user="ann") as ann:
        await ann.join("demo")  # (made on her first open, it would commit main meanwhile)
        notes = await ann.open("demo/main:new")
        todo = await ann.open("demo/main:new/todo.md")
        notes.insert(0, "notes\n")
        todo.insert(0, "todo\n")
        await ann.flush()
        await until(lambda: todo.closed)
        assert todo.error is not None and todo.error.code == ErrorCode.NOT_TEXT
        head = await ann.commit("demo", "main")
        assert git(bare, "show", f"{head}:new") == "notes\n"
        rescued = f"main-rescued-{head[:7]}"
        assert git(bare, "show", f"{rescued}:new-todo.md.rescued") == "todo\n"
        assert git(bare, "log", "-1", "--format=%an", rescued) == "ann\n"
        with pytest.raises(ClientError) as refused:
            await ann.open("demo/main:new/todo.md")
        assert refused.value.code == ErrorCode.NOT_TEXT
    assert not server.git.incomplete


async def test_a_document_closed_by_the_commit_its_own_unload_makes_leaves_the_branch_going(
    repos: Path, tmp_path: Path
) -> None:
    """``new/todo.md`` (below ``new``, opened empty) is typed into and closed at once: its
    unload commits the branch first, which takes ``new`` as a file and closes
    ``new/todo.md``, its text kept elsewhere. Closing it must not wait for that very unload
    (which waits for the commit): the branch's later edits are committed as ever."""
    config = make_config(repos, tmp_path / "data", commit_idle=60.0, commit_max_lag=60.0)
    demo = repos / "demo"
    async with CollabServer(config) as server, Client(server.url, user="ann") as ann:
        await ann.join("demo")  # (made on her first open, it would commit main meanwhile)
        notes = await ann.open("demo/main:new")
        todo = await ann.open("demo/main:new/todo.md")
        notes.insert(0, "notes\n")
        todo.insert(0, "todo\n")
        await ann.flush()
        await todo.close()  # (only its unload commits: the idle time is a minute)
        await until(lambda: "demo/main:new/todo.md" not in server.rooms.keys("demo/main:"))
        rescued = git(demo, "branch", "--list", "main-rescued-*").split()
        assert len(rescued) == 1
        assert git(demo, "show", f"{rescued[0]}:new-todo.md.rescued") == "todo\n"
        notes.insert(0, "more ")
        await ann.flush()
        async with asyncio.timeout(10):
            head = await ann.commit("demo", "main")
        assert git(demo, "show", f"{head}:new") == "more notes\n"
        assert await server.store.keys("demo/main:new/") == []


async def test_a_flush_that_fails_leaves_the_commit_to_be_tried_again(
    repos: Path, tmp_path: Path
) -> None:
    """A commit asked for (by ``branch.join``, a merge, an unload) that fails is tried
    again later, as a continuous commit that fails is, with no keystroke to start it."""
    config = make_config(repos, tmp_path / "data", commit_idle=60.0, commit_max_lag=60.0)
    async with CollabServer(config) as server, Client(server.url, user="ann") as ann:
        doc = await ann.open("demo/main:README.md")
        await ann.join("demo")  # her own branch exists: nothing commits main behind our back
        sync = server.git.branches[("demo", "main")]
        write = sync._write
        failures = [OSError("disk full")]

        def failing_write(*args: Any) -> tuple[bytes, list[str]]:
            if failures:
                raise failures.pop()
            return write(*args)

        sync._write = failing_write  # type: ignore[method-assign]
        doc.insert(0, "typed\n")
        await ann.flush()
        server.git.idle = 0.1  # tried again after a second
        with pytest.raises(OSError):
            await sync.flush()
        async with asyncio.timeout(5):
            while not git(repos / "demo", "show", "main:README.md").startswith("typed\n"):
                await asyncio.sleep(0.05)


async def test_a_commit_that_keeps_failing_is_tried_again_less_and_less_often(
    repos: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A commit that fails every time (a full disk, a repository it cannot write) waits
    twice as long before each new try, and logs its traceback once, then one line a try;
    once it goes through, the next failure starts again from the idle time."""
    config = make_config(repos, tmp_path / "data", commit_idle=60.0, commit_max_lag=60.0)
    async with CollabServer(config) as server, Client(server.url, user="ann") as ann:
        doc = await ann.open("demo/main:README.md")
        await ann.join("demo")  # her own branch exists: nothing commits main behind our back
        sync = server.git.branches[("demo", "main")]
        write = sync._write

        def failing_write(*args: Any) -> tuple[bytes, list[str]]:
            raise OSError("disk full")

        sync._write = failing_write  # type: ignore[method-assign]
        doc.insert(0, "typed\n")
        await ann.flush()
        server.git.idle = 0.05  # the first try again after a second
        caplog.set_level(logging.WARNING, logger="collab.git")
        loop = asyncio.get_running_loop()
        delays = []
        for _ in range(5):
            sync._kick()
            assert sync._task is not None
            await sync._task
            assert sync._idle is not None
            delays.append(round(sync._idle.when() - loop.time()))
        assert delays == [1, 2, 4, 8, 16]
        # logged at the 1st, 2nd and 4th failure in a row (fewer lines as they go on), and
        # with no traceback: a full disk is no bug
        failed = [r for r in caplog.records if "continuous commit failed" in r.getMessage()]
        assert len(failed) == 3 and not any(r.exc_info for r in failed)
        assert "failed (4 in a row; tried again later): OSError('disk full')" in (
            failed[-1].getMessage()
        )

        sync._write = write  # type: ignore[method-assign]
        await sync.flush()
        assert git(repos / "demo", "show", "main:README.md").startswith("typed\n")
        doc.insert(0, "again\n")
        await ann.flush()
        sync._write = failing_write  # type: ignore[method-assign]
        with pytest.raises(OSError):
            await sync.flush()
        assert sync._idle is not None and round(sync._idle.when() - loop.time()) == 1


async def test_a_file_below_a_deleted_file_whose_document_is_open_can_be_opened(
    tree_server: tuple[CollabServer, Path], tmp_path: Path
) -> None:
    """A push deleted ``file.txt`` while its document was open (now empty, with nothing
    to commit): ``file.txt/x.md`` is no clash with it, and is opened and committed."""
    server, bare = tree_server
    work = tmp_path / "work"
    git(tmp_path, "clone", "-q", str(bare), str(work))
    async with Client(server.url, user="ann") as ann:
        await ann.join("demo")  # her own branch exists: nothing commits main behind our back
        deleted = await ann.open("demo/main:file.txt")
        git(work, "rm", "-q", "file.txt")
        git(work, "commit", "-qm", "file.txt deleted")
        git(work, "push", "-q", "origin", "main")
        await ann.commit("demo", "main")
        async with asyncio.timeout(5):
            while str(deleted.text):
                await asyncio.sleep(0.02)
        await ann.commit("demo", "main")  # the merge of the push over (its lock taken)
        below = await ann.open("demo/main:file.txt/x.md")
        below.insert(0, "below\n")
        await ann.flush()
        head = await ann.commit("demo", "main")
    assert git(bare, "show", f"{head}:file.txt/x.md") == "below\n"
