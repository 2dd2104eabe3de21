"""Refs as git has them, through the git bridge and the branch operations, checked with the
git CLI: no ref beside another that git could not hold with it (``a`` and ``a/b``), loose or
packed; ``people`` kept for the participants' branches; a pull right after typing brings what
the next push is checked against; a branch with open documents is not deleted by a push."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from gitcli import until
from test_git_push import clone, fsck_clean, git, head, remote, run_git, start

from collab import Client, CollabServer, Document
from collab.client import ClientError
from collab.git.branch_sync import BranchSync
from protocol.errors import ErrorCode, ProtocolError


@pytest.fixture
async def server(repos: Path, tmp_path: Path) -> AsyncIterator[CollabServer]:
    srv = await start(repos, tmp_path)
    try:
        yield srv
    finally:
        await srv.stop()


def rejected(done: object, ref: str) -> str:
    """The reason ``git push`` printed for refusing ``ref``."""
    stderr = str(getattr(done, "stderr", ""))
    line = next(
        (line for line in stderr.splitlines() if f"-> {ref} " in line or f"] {ref} (" in line),
        "",
    )
    assert "[remote rejected]" in line, stderr
    return line


@pytest.mark.parametrize("packed", [False, True], ids=["loose", "packed"])
async def test_refs_git_could_not_hold_together_are_refused(
    server: CollabServer, repos: Path, tmp_path: Path, packed: bool
) -> None:
    demo = repos / "demo"
    work = await clone(server, tmp_path)
    await git(work, "push", "-q", "origin", "HEAD:refs/heads/bug/5671", "HEAD:refs/tags/v1")
    if packed:
        await git(demo, "pack-refs", "--all")
    pushed = await git(
        work,
        "push",
        "origin",
        "HEAD:refs/heads/main/sub",
        "HEAD:refs/heads/bug",
        "HEAD:refs/tags/v1/x",
        check=False,
    )
    assert pushed.returncode != 0
    assert "'refs/heads/main' exists" in rejected(pushed, "main/sub")
    assert "'refs/heads/bug/5671' exists" in rejected(pushed, "bug")
    assert "'refs/tags/v1' exists" in rejected(pushed, "v1/x")
    assert str(demo) not in pushed.stderr  # the server's paths are not told
    # two that clash with each other, in one push: the second is refused
    both = await git(
        work, "push", "origin", "HEAD:refs/heads/x", "HEAD:refs/heads/x/y", check=False
    )
    assert "'refs/heads/x' exists" in rejected(both, "x/y")
    assert head(demo, "refs/heads/x") and not head(demo, "refs/heads/x/y")

    async with Client(server.url, user="alice") as alice:
        for name in ("main/fork", "bug"):
            with pytest.raises(ClientError) as refused:
                await alice.fork("demo", "main", name)
            assert refused.value.code == ErrorCode.CONFLICT
            assert "exists; cannot create" in refused.value.message
            assert str(demo) not in refused.value.message
    refs = run_git(demo, "for-each-ref", "--format=%(refname)").stdout.split()
    assert "refs/heads/bug" not in refs and "refs/heads/main/sub" not in refs
    await git(tmp_path, "clone", "-q", "--mirror", remote(server), str(tmp_path / "mirror"))
    fsck_clean(demo)


async def test_people_is_kept_for_the_participants_branches(
    server: CollabServer, repos: Path, tmp_path: Path
) -> None:
    demo = repos / "demo"
    # a repository given with a branch named people: joining says what holds the place
    await git(demo, "branch", "people", "main")
    async with Client(server.url, user="bob") as bob:
        with pytest.raises(ClientError) as refused:
            await bob.join("demo")
        assert refused.value.code == ErrorCode.CONFLICT
        assert "'refs/heads/people' exists" in refused.value.message
        assert str(demo) not in refused.value.message
        readme = await bob.open("demo/main:README.md")  # everything else goes on
        assert str(readme.text)
    await git(demo, "branch", "-D", "people")

    work = await clone(server, tmp_path)
    pushed = await git(work, "push", "origin", "HEAD:refs/heads/people", check=False)
    assert "reserved" in rejected(pushed, "people")
    async with Client(server.url, user="alice") as alice:
        with pytest.raises(ClientError) as refused:
            await alice.fork("demo", "main", "people")
        assert refused.value.code == ErrorCode.CONFLICT and "reserved" in refused.value.message
        own = await alice.join("demo")
        assert head(demo, f"refs/heads/{own}")
    assert not head(demo, "refs/heads/people")


async def test_a_pull_right_after_typing_makes_the_next_push_a_fast_forward(
    server: CollabServer, repos: Path, tmp_path: Path
) -> None:
    work = await clone(server, tmp_path)
    async with Client(server.url, user="alice") as alice:
        readme = await alice.open("demo/main:README.md")
        for round_ in range(3):
            readme.insert(0, f"typed {round_}\n")
            await alice.flush()  # stored, not committed (the idle time is a minute here)
            await git(work, "pull", "-q", "--rebase", "origin", "main")
            (work / f"pushed-{round_}.txt").write_text(f"pushed {round_}\n")
            await git(work, "add", ".")
            await git(work, "commit", "-qm", f"pushed {round_}")
            await git(work, "push", "-q", "origin", "HEAD:main")
        assert str(readme.text).startswith("typed 2\ntyped 1\ntyped 0\n")
    tree = run_git(repos / "demo", "ls-tree", "--name-only", "main").stdout.split()
    assert {"pushed-0.txt", "pushed-1.txt", "pushed-2.txt"} <= set(tree)
    fsck_clean(repos / "demo")


async def typed_on_topic(alice: Client) -> Document:
    """A branch ``topic`` forked from main, and its README open with a line typed, stored."""
    await alice.fork("demo", "main", "topic")
    doc = await alice.open("demo/topic:README.md")
    doc.insert(0, "on topic\n")
    await alice.flush()
    return doc


async def test_a_push_does_not_delete_a_branch_with_open_documents(
    server: CollabServer, repos: Path, tmp_path: Path
) -> None:
    demo = repos / "demo"
    work = await clone(server, tmp_path)
    async with Client(server.url, user="alice") as alice:
        await typed_on_topic(alice)
        pushed = await git(work, "push", "origin", ":topic", check=False)
        assert "has open documents" in rejected(pushed, "topic")
        assert head(demo, "refs/heads/topic")
    await server.git.branches[("demo", "topic")].flush()
    await git(work, "push", "-q", "origin", ":topic")  # no one has it open now
    assert not head(demo, "refs/heads/topic")
    fsck_clean(demo)


async def test_a_branch_a_push_deleted_is_forgotten_so_one_below_its_name_works(
    server: CollabServer, repos: Path, tmp_path: Path
) -> None:
    demo = repos / "demo"
    work = await clone(server, tmp_path)
    async with Client(server.url, user="alice") as alice:
        doc = await typed_on_topic(alice)
        await alice.commit("demo", "topic")
        await doc.close()
    await server.git.branches[("demo", "topic")].flush()
    await git(work, "push", "-q", "origin", ":topic")
    assert not head(demo, "refs/collab/synced/topic")
    await git(work, "push", "-q", "origin", "HEAD:refs/heads/topic/x")
    async with Client(server.url, user="alice") as alice:
        below = await alice.open("demo/topic/x:README.md", timeout=5)
        below.insert(0, "below\n")
        await alice.flush()
        await alice.commit("demo", "topic/x")
    assert run_git(demo, "show", "topic/x:README.md").stdout.startswith("below\n")
    fsck_clean(demo)


@pytest.mark.parametrize("made", ["outside", "forked"])
@pytest.mark.parametrize(("first", "then"), [("topic", "topic/x"), ("topic/x", "topic")])
async def test_a_branch_deleted_by_another_tool_does_not_keep_a_clashing_name_from_working(
    server: CollabServer, repos: Path, first: str, then: str, made: str
) -> None:
    """A branch deleted in the repository itself (``git update-ref -d``, not through the
    engine) leaves the engine's records of it behind: a branch made afterwards under a name
    git cannot hold beside it (``a`` and ``a/b``) opens, commits, merges and forks all the
    same. The deleted branch's stored documents are gone, and the edits they held that were
    not committed are on a branch of their own."""
    demo = repos / "demo"
    async with Client(server.url, user="alice") as alice, Client(server.url, user="bob") as bob:
        await alice.fork("demo", "main", first)
        doc = await alice.open(f"demo/{first}:README.md")
        doc.insert(0, "on the first\n")
        await alice.flush()
        await alice.commit("demo", first)
        doc.insert(0, "not committed\n")
        await alice.flush()  # durable, not committed
        assert head(demo, f"refs/collab/synced/{first}")
        run_git(demo, "update-ref", "-d", f"refs/heads/{first}")  # another tool's deletion
        if made == "outside":
            run_git(demo, "update-ref", f"refs/heads/{then}", "main")
        else:
            await bob.fork("demo", "main", then)
        doc = await bob.open(f"demo/{then}:README.md", timeout=5)
        assert not str(doc.text).startswith("on the first")
        doc.insert(0, "on the second\n")
        await bob.flush()
        await bob.commit("demo", then)
        preview = await bob.merge("demo", "main", then, apply=False)
        assert preview["conflicts"] == []
        await bob.fork("demo", then, "later")
    rescued = run_git(demo, "for-each-ref", "--format=%(refname:short)", "refs/heads/").stdout
    prefix = first.replace("/", "-") + "-rescued-"  # (a name below first may be taken)
    [kept] = [name for name in rescued.split() if name.startswith(prefix)]
    kept_text = run_git(demo, "show", f"{kept}:README.md").stdout
    assert kept_text.startswith("not committed\non the first\n")
    assert run_git(demo, "log", "-1", "--format=%an", kept).stdout.strip() == "alice"
    assert run_git(demo, "show", f"{then}:README.md").stdout.startswith("on the second\n")
    assert run_git(demo, "show", "later:README.md").stdout.startswith("on the second\n")
    assert not head(demo, f"refs/collab/synced/{first}")
    assert await server.store.keys(f"demo/{first}:") == []
    assert await server.store.take_authors(f"demo/{first}") == []  # not a later one's
    fsck_clean(demo)


async def test_a_branch_deleted_outside_whose_place_another_took_keeps_its_open_edits(
    server: CollabServer, repos: Path
) -> None:
    """Alice types in ``topic`` while another tool deletes it and makes ``topic/x`` in its
    place: the branch cannot be restored under its name (its commits failed for as long as
    the server ran), so its documents are closed and what they held is committed on a
    branch of its own."""
    demo = repos / "demo"
    async with Client(server.url, user="alice") as alice:
        await alice.join("demo")  # (her own branch first: making one commits main)
        await alice.call("branch.create", repo="demo", name="topic")
        doc = await alice.open("demo/topic:README.md")
        synced = head(demo, "refs/collab/synced/topic")
        run_git(demo, "update-ref", "-d", "refs/heads/topic")
        run_git(demo, "update-ref", "refs/heads/topic/x", "main")
        doc.insert(0, "typed on topic\n")
        await alice.flush()
        with pytest.raises(ProtocolError):  # its continuous commit
            await server.git.branches["demo", "topic"].flush()
        with pytest.raises(ClientError):  # closes it
            await doc.wait_for(lambda _text: False, timeout=20)
        assert doc.error is not None and doc.error.code == ErrorCode.NOT_FOUND
    kept = run_git(demo, "show", f"topic-rescued-{synced[:7]}:README.md").stdout
    assert kept.startswith("typed on topic\n")
    assert await server.store.keys("demo/topic:") == []
    fsck_clean(demo)


async def held_below_a_file(alice: Client, server: CollabServer) -> str:
    """A branch ``topic`` forked from main, with ``nd`` and ``nd/f.txt`` typed into, both
    new: ``nd`` is committed as a file, and ``nd/f.txt``, which cannot be a file beside it,
    is left in the store (as a crash between that commit and the closing of ``nd/f.txt``
    leaves it, or an older server, which held it there); both closed and unloaded. Returns
    the commit they last matched."""
    await alice.fork("demo", "main", "topic")
    above = await alice.open("demo/topic:nd")
    below = await alice.open("demo/topic:nd/f.txt")  # (nd holds no text yet)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(BranchSync, "_close_held", _left_held, raising=False)
        above.insert(0, "nd is a file\n")
        below.insert(0, "IMPORTANT TEXT\n")
        await alice.flush()
        synced = await alice.commit("demo", "topic")
        await above.close()
        await below.close()
    await until(lambda: not server.rooms.loaded("demo/topic:"))
    assert "demo/topic:nd/f.txt" in await server.store.keys("demo/topic:")
    return synced


async def _left_held(self: BranchSync, held: dict[str, str], grant: object) -> None:
    """``BranchSync._close_held`` cut short, as by a crash: what it holds stays held."""


async def test_a_deleted_branch_keeps_text_that_lay_below_a_file_and_its_name_starts_afresh(
    server: CollabServer, repos: Path, tmp_path: Path
) -> None:
    """Deleting a branch whose store holds text that could not be committed where it was
    (``nd/f.txt`` below the file ``nd``) keeps it at the top of a ``<branch>-rescued-<commit>``
    branch, as ``nd-f.txt.rescued``; the branch is deleted whole (records, stored documents),
    so a branch made again under its name, by a push, opens without the old text."""
    demo = repos / "demo"
    work = await clone(server, tmp_path)
    async with Client(server.url, user="alice") as alice:
        synced = await held_below_a_file(alice, server)
        await alice.call("branch.delete", repo="demo", name="topic")
    rescued = run_git(demo, "branch", "--list", "topic*").stdout.split()
    assert rescued == [f"topic-rescued-{synced[:7]}"]
    kept = run_git(demo, "show", f"{rescued[0]}:nd-f.txt.rescued").stdout
    assert kept == "IMPORTANT TEXT\n"
    assert run_git(demo, "rev-parse", f"{rescued[0]}~1").stdout.strip() == synced
    assert not head(demo, "refs/collab/synced/topic")
    assert await server.store.keys("demo/topic:") == []
    await git(work, "push", "-q", "origin", "HEAD:refs/heads/topic")
    async with Client(server.url, user="bob") as bob:
        assert str((await bob.open("demo/topic:nd/f.txt")).text) == ""
    fsck_clean(demo)


async def test_a_push_making_a_branch_another_tool_deleted_does_not_get_its_old_text(
    server: CollabServer, repos: Path, tmp_path: Path
) -> None:
    """Another tool deletes ``topic`` while the store holds text of it not committed; a push
    through the server makes ``topic`` again: the old branch is forgotten first (its text
    kept on a branch of its own), so the new one does not open with its text, nor commit it
    at its first keystroke."""
    demo = repos / "demo"
    work = await clone(server, tmp_path)
    async with Client(server.url, user="alice") as alice:
        synced = await held_below_a_file(alice, server)
    run_git(demo, "update-ref", "-d", "refs/heads/topic")  # another tool's deletion
    await git(work, "push", "-q", "origin", "HEAD:refs/heads/topic")
    assert not head(demo, "refs/collab/synced/topic")
    kept = run_git(demo, "show", f"topic-rescued-{synced[:7]}:nd-f.txt.rescued").stdout
    assert kept == "IMPORTANT TEXT\n"
    async with Client(server.url, user="bob") as bob:
        doc = await bob.open("demo/topic:nd/f.txt")
        assert str(doc.text) == ""
        doc.insert(0, "new typing\n")
        await bob.flush()
        new = await bob.commit("demo", "topic")
    assert run_git(demo, "show", f"{new}:nd/f.txt").stdout == "new typing\n"
    fsck_clean(demo)


async def test_text_held_in_the_store_that_a_move_leaves_no_place_for_is_kept(
    server: CollabServer, repos: Path, tmp_path: Path
) -> None:
    """``nd/f.txt``, held in the store below the file ``nd`` (not loaded), when the branch
    moves: its document is dropped as one whose place is taken, and its text is kept on
    ``<branch>-rescued-<commit>`` first, as a loaded one's would be."""
    demo = repos / "demo"
    async with Client(server.url, user="alice") as alice:
        synced = await held_below_a_file(alice, server)
    work = await clone(server, tmp_path)
    await git(work, "checkout", "-q", "topic")
    (work / "pushed.txt").write_text("pushed\n")
    await git(work, "add", "pushed.txt")
    await git(work, "commit", "-qm", "pushed")
    await git(work, "push", "-q", "origin", "topic")
    async with Client(server.url, user="bob") as bob:
        assert str((await bob.open("demo/topic:pushed.txt")).text) == "pushed\n"
    kept = run_git(demo, "show", f"topic-rescued-{synced[:7]}:nd-f.txt.rescued").stdout
    assert kept == "IMPORTANT TEXT\n"
    assert "demo/topic:nd/f.txt" not in await server.store.keys("demo/topic:")
    fsck_clean(demo)
