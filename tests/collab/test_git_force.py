"""Pushes meeting live edits, with the git CLI against a live server: edits typed and not yet
committed are committed before a push is answered, so a push based on the older head is
refused as git refuses it (``fetch first``); a force push (``--force-with-lease``) is allowed
on the pusher's own branch and its forks, refused elsewhere with the reason; after a rewrite
the live documents read as the new head, and live text that would not merge onto it is kept
on a branch of its own. Branches, tags and deletions by push; every refused push says why."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from dulwich.repo import Repo
from eventwait import Events
from gitcli import until
from servers import SECRET, make_config

from collab import CollabServer
from collab.client import Client, ClientError
from collab.server.auth import Role, TokenAuthenticator
from gitsync.naming import participant_branch
from gitsync.objects.commits import read_ref
from gitsync.repos import create_demo_repo
from protocol.errors import ErrorCode

GIT_ENV = {
    **{k: v for k, v in os.environ.items() if not k.startswith("GIT_")},
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_AUTHOR_NAME": "Pusher",
    "GIT_AUTHOR_EMAIL": "pusher@example.com",
    "GIT_COMMITTER_NAME": "Pusher",
    "GIT_COMMITTER_EMAIL": "pusher@example.com",
}
ALICE = participant_branch("alice")


def run_git(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        ["git", *args], cwd=cwd, env=GIT_ENV, capture_output=True, text=True, timeout=120
    )
    if check and done.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {done.stderr}")
    return done


async def git(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """The git CLI in a thread: the server under test runs on this event loop."""
    return await asyncio.to_thread(run_git, cwd, *args, check=check)


@pytest.fixture
async def server(repos: Path, tmp_path: Path) -> AsyncIterator[CollabServer]:
    """A dev-mode server that commits live edits only when asked (or before a push)."""
    config = make_config(repos, tmp_path / "data", commit_idle=60.0, commit_max_lag=60.0)
    config.ref_poll = 60.0
    async with CollabServer(config) as srv:
        yield srv


def remote(server: CollabServer, user: str = "alice") -> str:
    return server.url.replace("ws://", f"http://{user}:dev@") + "/git/demo.git"


def head(repos: Path, branch: str) -> str | None:
    with Repo(str(repos / "demo")) as repo:
        sha = read_ref(repo, b"refs/heads/" + branch.encode())
    return None if sha is None else sha.decode()


def file_at(repos: Path, rev: str, path: str) -> str:
    return run_git(repos / "demo", "show", f"{rev}:{path}").stdout


async def clone(server: CollabServer, tmp_path: Path, user: str = "alice") -> Path:
    work = tmp_path / f"clone-{user}"
    await git(tmp_path, "clone", "-q", remote(server, user), str(work))
    return work


async def test_branches_tags_and_deletions_by_push(
    server: CollabServer, repos: Path, tmp_path: Path
) -> None:
    work = await clone(server, tmp_path)
    await git(work, "checkout", "-qb", "feature")
    (work / "feature.txt").write_text("feature\n")
    await git(work, "add", "feature.txt")
    await git(work, "commit", "-qm", "feature")
    await git(work, "tag", "light")
    await git(work, "tag", "-a", "v1", "-m", "version 1")
    await git(work, "push", "-q", "origin", "feature", "light", "v1")
    shown = run_git(repos / "demo", "show-ref").stdout
    feature = run_git(work, "rev-parse", "HEAD").stdout.strip()
    assert f"{feature} refs/heads/feature" in shown and f"{feature} refs/tags/light" in shown
    assert run_git(repos / "demo", "rev-parse", "v1^{}").stdout.strip() == feature
    # a tag is moved as git moves one: git refuses without --force, the server takes it
    await git(work, "tag", "-f", "light", "HEAD~1")
    before = run_git(work, "rev-parse", "HEAD~1").stdout.strip()
    assert "already exists" in (await git(work, "push", "origin", "light", check=False)).stderr
    assert f"{feature} refs/tags/light" in run_git(repos / "demo", "show-ref").stdout
    await git(work, "push", "-q", "--force", "origin", "light")
    await git(work, "push", "-q", "origin", "--delete", "feature", "v1")
    shown = run_git(repos / "demo", "show-ref").stdout
    assert "refs/heads/feature" not in shown and "refs/tags/v1" not in shown
    assert f"{before} refs/tags/light" in shown
    run_git(repos / "demo", "fsck", "--strict", "--no-dangling")


async def test_a_push_behind_live_edits_is_refused_as_fetch_first(
    server: CollabServer, repos: Path, tmp_path: Path
) -> None:
    work = await clone(server, tmp_path)
    async with Client(server.url, user="bob") as bob:
        doc = await bob.open("demo/main:README.md")
        doc.insert(0, "typed live\n")
        await bob.flush()
        (work / "README.md").write_text(file_at(repos, "main", "README.md") + "from git\n")
        await git(work, "commit", "-qam", "from git")
        refused = await git(work, "push", "origin", "main", check=False)
        assert refused.returncode != 0
        assert "! [rejected]        main -> main (fetch first)" in refused.stderr, refused.stderr
        # the live edit was committed, by its author, before the push was answered
        assert file_at(repos, "main", "README.md").startswith("typed live\n")
        assert "bob" in run_git(repos / "demo", "log", "-1", "--format=%an", "main").stdout
        await git(work, "pull", "-q", "--rebase", "origin", "main")
        await git(work, "push", "-q", "origin", "main")
        expected = file_at(repos, "main", "README.md")
        assert expected.startswith("typed live\n") and expected.endswith("from git\n")
        await until(lambda: str(doc.text) == expected)

        # edits typed between the client's look at the refs and its push: refused here
        old = run_git(work, "rev-parse", "HEAD").stdout.strip()
        (work / "README.md").write_text(expected + "again\n")
        await git(work, "commit", "-qam", "again")
        new = run_git(work, "rev-parse", "HEAD").stdout.strip()
        pack = subprocess.run(
            ["git", "pack-objects", "--stdout", "--revs", "-q"],
            cwd=work,
            input=f"{new}\n^{old}\n".encode(),
            capture_output=True,
            check=True,
            env=GIT_ENV,
        ).stdout
        command = f"{old} {new} refs/heads/main\0report-status\n".encode()
        body = b"%04x" % (len(command) + 4) + command + b"0000" + pack
        doc.insert(0, "more live\n")
        await bob.flush()
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                remote(server).replace("alice:dev@", "") + "/git-receive-pack?user=alice",
                data=body,
                headers={"Content-Type": "application/x-git-receive-pack-request"},
            ) as reply,
        ):
            answer = await reply.read()
        assert b"ng refs/heads/main fetch first: the branch moved on since it was fetched" in answer
        assert file_at(repos, "main", "README.md").startswith("more live\n")
        assert str(doc.text).startswith("more live\n") and "again" not in str(doc.text)


async def test_force_with_lease_on_your_own_branch_and_the_documents_follow(
    server: CollabServer, repos: Path, tmp_path: Path
) -> None:
    async with Client(server.url, user="alice") as alice:
        own = await alice.join("demo")
        assert own == ALICE
        doc = await alice.open(f"demo/{own}:README.md")
        doc.insert(0, "draft\n")
        await alice.flush()
        drafted = await alice.commit("demo", own)
        work = await clone(server, tmp_path)
        await git(work, "checkout", "-q", own)
        assert run_git(work, "rev-parse", "HEAD").stdout.strip() == drafted
        # rewrite it: drop the draft, write something else instead
        await git(work, "reset", "-q", "--hard", "HEAD~1")
        (work / "README.md").write_text("# Rewritten\n")
        await git(work, "commit", "-qam", "rewritten")
        lease = f"--force-with-lease={own}:{drafted}"
        await git(work, "push", "-q", lease, "origin", own)
        assert head(repos, own) == run_git(work, "rev-parse", "HEAD").stdout.strip()
        await until(lambda: str(doc.text) == "# Rewritten\n")

        # a lease that no longer holds is refused by git itself
        await git(work, "commit", "-q", "--amend", "-m", "again")
        lease = f"--force-with-lease={own}:{drafted}"
        stale = await git(work, "push", lease, "origin", own, check=False)
        assert stale.returncode != 0 and "(stale info)" in stale.stderr

        # a fork of one's own branch may be rewritten too
        fork = await alice.fork("demo", own)
        assert fork.startswith(own + "-")
        await git(work, "fetch", "-q", "origin")
        await git(work, "checkout", "-q", "-b", "fork", f"origin/{fork}")
        await git(work, "commit", "-q", "--amend", "-m", "fork rewritten")
        await git(work, "push", "-q", "--force", "origin", f"fork:{fork}")
        assert head(repos, fork) == run_git(work, "rev-parse", "HEAD").stdout.strip()
    run_git(repos / "demo", "fsck", "--strict", "--no-dangling")


async def test_a_force_push_keeps_what_others_typed_on_a_branch_of_its_own(
    server: CollabServer, repos: Path, tmp_path: Path
) -> None:
    """Bob types in alice's branch; alice, who cloned before, force-pushes a rewrite. The
    push's advertisement committed bob's line, and the push drops that commit: the old head
    is kept on ``<branch>-rescued-<old>``, and the push's event names it. Alice's own typing
    dropped the same way makes no such branch: it is hers to drop."""
    async with (
        Client(server.url, user="alice") as alice,
        Client(server.url, user="bob") as bob,
    ):
        own = await alice.join("demo")
        await alice.subscribe("events.subscribe", repo="demo")
        work = await clone(server, tmp_path)
        await git(work, "checkout", "-q", own)

        doc_alice = await alice.open(f"demo/{own}:README.md")
        doc_alice.insert(0, "alice's draft\n")
        await alice.flush()
        await git(work, "commit", "-q", "--allow-empty", "-m", "mine")
        await git(work, "push", "-q", "--force", "origin", own)
        await until(lambda: "alice's draft" not in str(doc_alice.text))
        assert not [b for b in run_git(repos / "demo", "branch").stdout.split() if "rescued" in b]

        doc_bob = await bob.open(f"demo/{own}:README.md")
        doc_bob.insert(0, "bob's line\n")
        await bob.flush()
        await git(work, "commit", "-q", "--amend", "--allow-empty", "-m", "mine, again")
        await git(work, "push", "-q", "--force", "origin", own)
        kept = [b for b in run_git(repos / "demo", "branch").stdout.split() if "rescued" in b]
        assert len(kept) == 1 and kept[0].startswith(f"{own}-rescued-"), kept
        assert file_at(repos, kept[0], "README.md").startswith("bob's line\n")
        await until(lambda: "bob's line" not in str(doc_bob.text))
        pushed = await Events(alice).wait_for("ref", cause="push", rescued=kept[0])
        assert pushed["user"] == "alice"
    run_git(repos / "demo", "fsck", "--strict", "--no-dangling")


async def test_force_pushes_elsewhere_are_refused_with_the_reason(
    server: CollabServer, repos: Path, tmp_path: Path
) -> None:
    async with Client(server.url, user="alice") as alice:
        await alice.join("demo")
    main = head(repos, "main")
    work = await clone(server, tmp_path, "bob")
    await git(work, "commit", "-q", "--amend", "-m", "rewritten")
    refused = await git(work, "push", "--force-with-lease", "origin", "main", check=False)
    bob = participant_branch("bob")
    why = (
        f"(non-fast-forward: bob may force-push only {bob} and the branches forked from it "
        f"({bob}-...), not main)"
    )
    assert f"! [remote rejected] main -> main {why}" in refused.stderr, refused.stderr
    await git(work, "fetch", "-q", "origin")
    await git(work, "checkout", "-q", "-b", "hers", f"origin/{ALICE}")
    await git(work, "commit", "-q", "--amend", "-m", "not mine")
    refused = await git(work, "push", "--force", "origin", f"hers:{ALICE}", check=False)
    assert f"not {ALICE})" in refused.stderr, refused.stderr
    assert head(repos, "main") == main
    # nor in two steps: deleted, then pushed again where bob likes
    hers = head(repos, ALICE)
    refused = await git(work, "push", "origin", "--delete", ALICE, check=False)
    why = f"({ALICE} is another person's branch: only its owner may delete it)"
    assert f"! [remote rejected] {ALICE} {why}" in refused.stderr, refused.stderr
    async with Client(server.url, user="bob") as bob_client:
        with pytest.raises(ClientError) as forbidden:
            await bob_client.call("branch.delete", repo="demo", name=ALICE)
        assert forbidden.value.code == ErrorCode.FORBIDDEN
        await bob_client.join("demo")
    assert head(repos, ALICE) == hers
    await git(work, "fetch", "-q", "origin")
    await git(work, "push", "-q", "origin", "--delete", bob)  # his own: he may
    assert head(repos, bob) is None


async def test_a_rewrite_keeps_live_text_that_does_not_merge_onto_it(
    server: CollabServer, repos: Path, tmp_path: Path
) -> None:
    """A branch moved outside the engine to a commit that does not descend from the live
    documents' (``git reset`` on the server, say) while they hold uncommitted edits."""
    async with Client(server.url, user="alice") as alice:
        own = await alice.join("demo")
        readme = await alice.open(f"demo/{own}:README.md")
        app = await alice.open(f"demo/{own}:src/app.py")
        start = head(repos, own)
        assert start is not None
        readme.insert(0, "first draft\n")
        await alice.flush()
        drafted = await alice.commit("demo", own)
        work = await clone(server, tmp_path)  # (a fetch commits the edits pending: before them)
        readme.insert(0, "pending ")  # on the line the rewrite changes: does not merge
        app.insert(0, "# pending\n")  # merges
        await alice.flush()
        await git(work, "checkout", "-q", "-B", "rewrite", start)
        (work / "README.md").write_text("# Replaced\n")
        (work / "src" / "app.py").write_text("print('hello')\nprint('rewritten')\n")
        await git(work, "commit", "-qam", "rewrite")
        rewritten = run_git(work, "rev-parse", "HEAD").stdout.strip()
        await git(work, "push", "-q", str(repos / "demo"), f"rewrite:refs/heads/{own}", "-f")
        sync = server.git.branches[("demo", own)]
        await sync.catch_up()
        assert str(readme.text) == "# Replaced\n"
        assert str(app.text) == "# pending\nprint('hello')\nprint('rewritten')\n"
        rescued = f"{own}-rescued-{drafted[:7]}"
        assert head(repos, own) == rewritten
        assert file_at(repos, rescued, "README.md") == "pending first draft\n" + file_at(
            repos, start, "README.md"
        )
        assert run_git(repos / "demo", "merge-base", "--is-ancestor", drafted, rescued)
        after = await alice.commit("demo", own)
        assert file_at(repos, after, "src/app.py").startswith("# pending\n")


async def test_every_refused_push_says_why(repos: Path, tmp_path: Path) -> None:
    tokens = TokenAuthenticator(SECRET)
    config = make_config(repos, tmp_path / "data", secret=SECRET, max_push=2_000_000)
    async with CollabServer(config) as server:
        base = server.url.replace("ws://", "http://")

        def url(user: str, token: str) -> str:
            return base.replace("http://", f"http://{user}:{token}@") + "/git/demo.git"

        writer = tokens.mint(user="alice", repo="demo", role=Role.WRITE)
        work = tmp_path / "work"
        await git(tmp_path, "clone", "-q", url("alice", writer), str(work))
        (work / "big.bin").write_bytes(os.urandom(1_500_000))  # over git's 1 MB post buffer
        await git(work, "add", "big.bin")
        await git(work, "commit", "-qm", "big")
        cases = {
            "reader": (
                tokens.mint(user="eve", repo="demo", role=Role.READ),
                "[remote rejected] main -> main (eve may not push to 'main')",
            ),
            "another repository": (
                tokens.mint(user="eve", repo="other", role=Role.WRITE),
                "remote: FORBIDDEN: no access to repository 'demo'",
            ),
            "expired": (
                tokens.mint(user="eve", repo="demo", role=Role.WRITE, ttl=-1),
                "remote: token expired",
            ),
            "forged": (writer[:-4] + "AAAA", "remote: bad token signature"),
        }
        for case, (token, why) in cases.items():
            refused = await git(work, "push", url("eve", token), "main", check=False)
            assert refused.returncode != 0, case
            assert why in refused.stderr, (case, refused.stderr)
        (work / "big.bin").write_bytes(os.urandom(2_500_000))
        await git(work, "commit", "-qam", "bigger")
        refused = await git(work, "push", url("alice", writer), "main", check=False)
        assert "(request over the size limit of 2000000 bytes)" in refused.stderr


async def test_a_commit_pushed_again_after_a_force_push_back_is_merged_again(
    server: CollabServer, repos: Path, tmp_path: Path
) -> None:
    """A commit's merge leaves its mark in the documents; the same commit reaching the
    branch again (pushed, taken back by a force push, pushed again) is merged again all the
    same: only the mark of a merge a crash interrupted is taken as done."""
    async with Client(server.url, user="alice") as alice:
        own = await alice.join("demo")
        doc = await alice.open(f"demo/{own}:README.md")
        work = await clone(server, tmp_path)
        await git(work, "checkout", "-q", own)
        first = run_git(work, "rev-parse", "HEAD").stdout.strip()
        readme = work / "README.md"
        readme.write_text(readme.read_text() + "line from the push\n")
        await git(work, "commit", "-qam", "pushed")
        pushed = run_git(work, "rev-parse", "HEAD").stdout.strip()
        await git(work, "push", "-q", "origin", own)
        await until(lambda: "line from the push" in str(doc.text))
        await git(work, "push", "-q", "--force", "origin", f"{first}:refs/heads/{own}")
        await until(lambda: "line from the push" not in str(doc.text))
        await git(work, "push", "-q", "origin", f"{pushed}:refs/heads/{own}")
        await until(lambda: "line from the push" in str(doc.text))
        doc.insert(0, "typed\n")
        await alice.flush()
        new = await alice.commit("demo", own)
        assert "line from the push" in file_at(repos, new, "README.md")


async def _move_outside(repos: Path, tmp_path: Path, change: str) -> None:
    """Push, straight into the repository, a commit that makes a live file no text file."""
    work = tmp_path / "outside"
    await git(tmp_path, "clone", "-q", str(repos / "demo"), str(work))
    if change == "directory":
        await git(work, "rm", "-q", "README.md")
        (work / "README.md").mkdir()
        (work / "README.md" / "inner.txt").write_text("inside\n")
    elif change == "binary":
        (work / "README.md").write_bytes(b"\x00\x01\x02binary\xff")
    else:  # the document's directory becomes a link
        await git(work, "rm", "-rq", "src")
        (work / "src").symlink_to("docs")
    await git(work, "add", "-A")
    await git(work, "commit", "-qm", f"no text file: {change}")
    await git(work, "push", "-q", "origin", "HEAD:main")


@pytest.mark.parametrize("change", ["directory", "binary", "link above"])
async def test_a_commit_that_meets_a_move_making_its_file_no_text_leaves_the_move_be(
    server: CollabServer, repos: Path, tmp_path: Path, change: str
) -> None:
    """Live text waiting to be committed when the branch moved outside the engine and made
    its file something else: the commit meets the move, which closes the document; the
    retry commits nothing of it over what the move put there, and the live text is kept
    on a branch of its own (``main-rescued-<commit>``), as a rewrite's would be."""
    path = "src/app.py" if change == "link above" else "README.md"
    async with Client(server.url, user="bob") as bob:
        await bob.join("demo")  # (his own branch first: making one commits main)
        synced = head(repos, "main")
        assert synced is not None
        before = file_at(repos, "main", path)
        other = await bob.open(
            "demo/main:src/app.py" if path == "README.md" else "demo/main:README.md"
        )
        doc = await bob.open(f"demo/main:{path}")
        doc.insert(0, "typed live\n")
        await bob.flush()  # durable, not committed yet
        await _move_outside(repos, tmp_path, change)
        moved = head(repos, "main")
        async with Client(server.url, user="carol") as carol:
            await carol.subscribe("events.subscribe", repo="demo")
            await carol.commit("demo", "main")
            rescued = f"main-rescued-{synced[:7]}"
            assert file_at(repos, rescued, path) == "typed live\n" + before
            assert run_git(repos / "demo", "merge-base", "--is-ancestor", synced, rescued)
            event = await Events(carol).wait_for("rescued")
            assert event["path"] == path and event["into"] == rescued
        assert bob.reconnects == 0 and str(other.text)  # only that document was closed
    assert head(repos, "main") == moved
    git_fsck = run_git(repos / "demo", "fsck", "--full", "--strict")
    assert "error" not in git_fsck.stderr


async def test_a_file_made_binary_then_text_again_opens_anew_without_a_loss_said(
    server: CollabServer, repos: Path, tmp_path: Path
) -> None:
    """A document whose live text was committed, then closed because a move made its file
    binary, has no stored history left, on purpose: once a move makes it text again, it
    opens as the branch has it, and is not counted as a document the store lost."""
    async with Client(server.url, user="bob") as bob:
        doc = await bob.open("demo/main:README.md")
        doc.insert(0, "typed live\n")
        await bob.flush()
        await bob.commit("demo", "main")
        await _move_outside(repos, tmp_path, "binary")
        await (await server.git.branch("demo", "main")).catch_up()
        await until(lambda: doc.closed)
    work = tmp_path / "outside"
    (work / "README.md").write_text("text again\n")
    await git(work, "commit", "-qam", "text again")
    await git(work, "push", "-q", "origin", "HEAD:main")
    await (await server.git.branch("demo", "main")).catch_up()
    async with Client(server.url, user="dan") as dan:
        assert str(await dan.open("demo/main:README.md")) == "text again\n"
    assert server.rooms.history_lost == 0


async def test_files_whose_names_are_not_utf8_are_carried_and_block_nothing(
    server: CollabServer, repos: Path, tmp_path: Path
) -> None:
    """git takes any bytes as a file name: a push adding or deleting files whose names are
    not UTF-8 (latin-1 ``café``) is merged like any other, and the branch's live documents
    go on being committed and opened."""
    latin1 = os.fsdecode(b"caf\xe9")
    work = await clone(server, tmp_path)
    async with Client(server.url, user="bob") as bob:
        doc = await bob.open("demo/main:README.md")
        doc.insert(0, "first\n")
        await bob.flush()
        await bob.commit("demo", "main")
        await git(work, "pull", "-q", "--ff-only")
        (work / f"{latin1}.bin").write_bytes(b"\x00\x01binary")
        (work / f"{latin1}.txt").write_bytes(b"text\n")
        await git(work, "add", "-A")
        await git(work, "commit", "-qm", "latin-1 names")
        await git(work, "push", "-q", "origin", "main")
        pushed = run_git(work, "rev-parse", "HEAD").stdout.strip()
        app = await bob.open("demo/main:src/app.py")  # the branch's documents open
        doc.insert(0, "second\n")
        await bob.flush()
        after = await bob.commit("demo", "main")
        assert file_at(repos, after, "README.md").startswith("second\nfirst\n")
        assert run_git(repos / "demo", "merge-base", "--is-ancestor", pushed, after)
        await git(work, "pull", "-q", "--ff-only")
        await git(work, "rm", "-q", f"{latin1}.bin")
        await git(work, "commit", "-qm", "one gone")
        await git(work, "push", "-q", "origin", "main")
        app.insert(0, "# third\n")
        await bob.flush()
        last = await bob.commit("demo", "main")
        listed = subprocess.run(
            ["git", "ls-tree", "--name-only", "-z", last],
            cwd=repos / "demo",
            capture_output=True,
            check=True,
        ).stdout.split(b"\0")
        assert b"caf\xe9.txt" in listed and b"caf\xe9.bin" not in listed
        assert file_at(repos, last, "src/app.py").startswith("# third\n")
    run_git(repos / "demo", "fsck", "--strict", "--no-dangling")


async def test_a_move_renaming_a_file_carries_its_live_edits_to_the_new_path(
    server: CollabServer, repos: Path, tmp_path: Path
) -> None:
    """A move of the branch outside the engine renames (and edits) a file whose document
    holds edits not committed yet: as ``git merge`` would, the edits are merged into the
    file at its new path, which keeps its mode, and the old path is gone."""
    work = tmp_path / "outside"
    await git(tmp_path, "clone", "-q", str(repos / "demo"), str(work))
    lines = "".join(f"line {n}\n" for n in range(1, 21))
    (work / "src" / "story.txt").write_text(lines)
    (work / "src" / "story.txt").chmod(0o755)
    await git(work, "add", "-A")
    await git(work, "commit", "-qm", "a story")
    await git(work, "push", "-q", "origin", "HEAD:main")
    async with Client(server.url, user="bob") as bob:
        await bob.join("demo")  # his own branch exists: nothing commits main behind our back
        await bob.subscribe("events.subscribe", repo="demo")
        doc = await bob.open("demo/main:src/story.txt")
        doc.insert(0, "typed live\n")
        await bob.flush()  # durable, not committed yet
        await git(work, "mv", "src/story.txt", "src/tale.txt")
        (work / "src" / "tale.txt").write_text(lines.replace("line 20", "line 20, pushed"))
        await git(work, "commit", "-qam", "renamed")
        await git(work, "push", "-q", "origin", "HEAD:main")
        after = await bob.commit("demo", "main")
        assert str(doc.text) == ""
        tale = file_at(repos, after, "src/tale.txt")
        assert tale == "typed live\n" + lines.replace("line 20", "line 20, pushed")
        tree = run_git(repos / "demo", "ls-tree", "-r", after, "src").stdout
        assert "src/story.txt" not in tree and "100755 blob" in tree
        event = await Events(bob).wait_for("ref", cause="external")
        assert event["renamed"] == {"src/story.txt": "src/tale.txt"}


async def test_a_move_renaming_an_open_file_without_edits_says_where_it_went(
    server: CollabServer, repos: Path, tmp_path: Path
) -> None:
    work = tmp_path / "outside"
    await git(tmp_path, "clone", "-q", str(repos / "demo"), str(work))
    async with Client(server.url, user="bob") as bob:
        await bob.join("demo")
        await bob.subscribe("events.subscribe", repo="demo")
        doc = await bob.open("demo/main:src/app.py")
        before = str(doc.text)
        await git(work, "mv", "src/app.py", "src/main.py")
        await git(work, "commit", "-qm", "renamed")
        await git(work, "push", "-q", "origin", "HEAD:main")
        await server.git.branches[("demo", "main")].catch_up()  # (no polling here)
        event = await Events(bob).wait_for("ref", cause="external")
        assert event["renamed"] == {"src/app.py": "src/main.py"}
        await doc.wait_for(lambda text: text == "")  # the file is gone there
        moved = await bob.open("demo/main:src/main.py")
        assert str(moved.text) == before


async def test_a_rename_merge_interrupted_before_it_is_recorded_is_not_carried_twice(
    server: CollabServer, repos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The move that renamed a file with live edits was merged into the documents, but
    not recorded as synced (the record failed): merged again, the old path's document,
    emptied by the first merge, is not taken for live edits to carry (an empty text
    merged over the new path's, conflict markers or the file emptied)."""
    from collab.git import branch_sync

    work = tmp_path / "outside"
    await git(tmp_path, "clone", "-q", str(repos / "demo"), str(work))
    lines = "".join(f"line {n}\n" for n in range(1, 21))
    (work / "src" / "story.txt").write_text(lines)
    await git(work, "add", "-A")
    await git(work, "commit", "-qm", "a story")
    await git(work, "push", "-q", "origin", "HEAD:main")
    record = branch_sync._set_synced
    failed: list[bool] = []

    def fail_once(*args: object) -> None:
        if not failed:
            failed.append(True)
            raise OSError("the synced record failed")
        record(*args)  # type: ignore[arg-type]

    async with Client(server.url, user="bob") as bob:
        await bob.join("demo")
        doc = await bob.open("demo/main:src/story.txt")
        doc.insert(0, "typed live\n")
        await bob.flush()
        monkeypatch.setattr(branch_sync, "_set_synced", fail_once)
        await git(work, "mv", "src/story.txt", "src/tale.txt")
        await git(work, "commit", "-qam", "renamed")
        await git(work, "push", "-q", "origin", "HEAD:main")
        with pytest.raises(ClientError):
            await bob.commit("demo", "main")
        assert failed
        await until(lambda: str(doc.text) == "")
        after = await bob.commit("demo", "main")
        tale = file_at(repos, after, "src/tale.txt")
        assert tale == "typed live\n" + lines
        tree = run_git(repos / "demo", "ls-tree", "-r", after, "src").stdout
        assert "src/story.txt" not in tree


async def test_a_rename_to_a_file_too_large_to_open_does_not_stop_the_branch(
    repos: Path, tmp_path: Path
) -> None:
    """A move renames a file with live edits to one over the live size limit (it cannot be
    a document): the move is merged all the same (the edits stay at the old path, as
    before renames were followed), and the branch goes on being committed."""
    config = make_config(
        repos, tmp_path / "data", commit_idle=60.0, commit_max_lag=60.0, max_file=1000
    )
    config.ref_poll = 60.0
    work = tmp_path / "outside"
    await git(tmp_path, "clone", "-q", str(repos / "demo"), str(work))
    lines = "".join(f"line number {n:03}\n" for n in range(1, 51))  # 800 bytes
    (work / "src" / "story.txt").write_text(lines)
    await git(work, "add", "-A")
    await git(work, "commit", "-qm", "a story")
    await git(work, "push", "-q", "origin", "HEAD:main")
    async with CollabServer(config) as server, Client(server.url, user="bob") as bob:
        await bob.join("demo")
        doc = await bob.open("demo/main:src/story.txt")
        doc.insert(0, "typed live\n")
        await bob.flush()
        await git(work, "mv", "src/story.txt", "src/tale.txt")
        (work / "src" / "tale.txt").write_text(lines + "more\n" * 60)  # 1100 bytes
        await git(work, "commit", "-qam", "renamed, longer")
        await git(work, "push", "-q", "origin", "HEAD:main")
        pushed = head(repos, "main")
        readme = await bob.open("demo/main:README.md")
        readme.insert(0, "still committed\n")
        await bob.flush()
        after = await bob.commit("demo", "main")
        assert after != pushed
        assert file_at(repos, after, "README.md").startswith("still committed\n")
        assert file_at(repos, after, "src/tale.txt") == lines + "more\n" * 60
        assert "typed live\n" in file_at(repos, after, "src/story.txt")  # not dropped


async def test_a_repository_replaced_under_the_server_is_followed_and_live_text_kept(
    server: CollabServer, repos: Path
) -> None:
    """The repository's directory is replaced by another history while a document is open
    (an operator restored another copy, say): the commit the document matched is gone, so
    nothing can merge. The document comes to read as the new head, its live text is kept on
    a branch of its own made from that head, and commits go on there."""
    async with Client(server.url, user="bob") as bob:
        await bob.join("demo")  # (made on his first open, it would write to the repository)
        doc = await bob.open("demo/main:README.md")
        doc.insert(0, "committed\n")
        await bob.flush()
        await bob.commit("demo", "main")
        shutil.rmtree(repos / "demo")
        create_demo_repo(repos / "demo", {"README.md": "# Another history\n"})
        replaced = head(repos, "main")
        assert replaced is not None
        doc.insert(0, "typed after\n")
        await bob.flush()
        live = str(doc.text)
        await (await server.git.branch("demo", "main")).catch_up()
        await until(lambda: str(doc.text) == "# Another history\n")
        rescued = f"main-rescued-{replaced[:7]}"
        assert file_at(repos, rescued, "README.md") == live
        assert run_git(repos / "demo", "merge-base", "--is-ancestor", replaced, rescued)
        doc.insert(0, "and on\n")
        await bob.flush()
        after = await bob.commit("demo", "main")
        assert file_at(repos, after, "README.md") == "and on\n# Another history\n"
        assert run_git(repos / "demo", "merge-base", "--is-ancestor", replaced, after)
    run_git(repos / "demo", "fsck", "--strict", "--no-dangling")


@pytest.mark.parametrize(
    ("path", "change"),
    [("nd/f.txt", "file above"), ("nf", "directory"), ("ln/f.txt", "link above")],
)
@pytest.mark.parametrize("typed", [True, False], ids=["typed", "empty"])
async def test_a_move_taking_the_place_of_a_file_not_in_git_yet_closes_its_document(
    server: CollabServer, repos: Path, tmp_path: Path, path: str, change: str, typed: bool
) -> None:
    """A document open at a path the branch does not hold yet (a new file) when the branch
    moves to put something else in its way: a file or a link where its directory would be,
    a directory where it would be. It can never be committed there, so it is closed as a
    file made no text file is (``NOT_TEXT``): an empty one when a push through the server
    lands (nothing typed into it afterwards is acknowledged and dropped), one holding text
    (the move made in the repository itself) with that text kept on
    ``<branch>-rescued-<commit>``, authored by its typist. The branch's commits go on without
    it, and their message names only what they hold."""
    demo = repos / "demo"
    async with Client(server.url, user="bob") as bob:
        await bob.join("demo")  # (his own branch first: making one commits main)
        await bob.subscribe("events.subscribe", repo="demo")
        synced = head(repos, "main")
        assert synced is not None
        if typed:  # another tool moves the branch: the text is durable, not committed
            work = tmp_path / "outside"
            await git(tmp_path, "clone", "-q", str(demo), str(work))
        else:  # a push through the server (which commits what is typed first)
            work = await clone(server, tmp_path)
        doc = await bob.open(f"demo/main:{path}")
        other = await bob.open("demo/main:notes.txt")
        if typed:
            doc.insert(0, "IMPORTANT TEXT\n")
            await bob.flush()
        top = path.split("/")[0]
        if change == "file above":
            (work / top).write_text("a file\n")
        elif change == "directory":
            (work / top).mkdir()
            (work / top / "x").write_text("inside\n")
        else:
            (work / top).symlink_to("README.md")
        await git(work, "add", "-A")
        await git(work, "commit", "-qm", f"{change} in the way")
        await git(work, "push", "-q", "origin", "HEAD:main")
        pushed = head(repos, "main")
        if typed:
            await (await server.git.branch("demo", "main")).catch_up()
        await until(lambda: doc.closed)
        assert doc.error is not None and doc.error.code == ErrorCode.NOT_TEXT
        with pytest.raises(ClientError) as refused:
            await bob.open(f"demo/main:{path}")
        assert refused.value.code == ErrorCode.NOT_TEXT
        other.insert(0, "other text\n")
        await bob.flush()
        after = await bob.commit("demo", "main")
        shown = run_git(demo, "log", "-1", "--format=%s%n%P", after).stdout.split()
        assert shown == ["Edit", "notes.txt", pushed]
        rescued = f"main-rescued-{synced[:7]}"
        found = run_git(demo, "branch", "--list", "main-rescued-*").stdout.split()
        if typed:
            assert found == [rescued]
            assert file_at(repos, rescued, path) == "IMPORTANT TEXT\n"
            assert run_git(demo, "log", "-1", "--format=%an", rescued).stdout == "bob\n"
            event = await Events(bob).wait_for("rescued")
            assert event["path"] == path and event["into"] == rescued
        else:  # nothing to keep: no branch made for it
            assert found == []
    run_git(demo, "fsck", "--strict", "--no-dangling")
