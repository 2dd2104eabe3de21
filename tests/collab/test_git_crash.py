"""A crash in the middle of continuous commits: on restart the repository is consistent, a
stale lock is recovered, and the live state is committed. Also the ``collab branch`` and
``collab merge`` commands against a running server."""

from __future__ import annotations

import asyncio
import logging
import random
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from gitcli import git, is_ancestor, show, until
from serverproc import ServerProcess
from servers import make_config

from collab import Client, CollabServer
from collab.client import ClientError
from collab.git.branch_sync import CLEAN_SHUTDOWN, BranchSync
from gitsync import create_demo_repo
from protocol.errors import ErrorCode


async def test_kill_9_during_continuous_commits(repos: Path, tmp_path: Path) -> None:
    demo = repos / "demo"
    server = ServerProcess(
        repos, tmp_path / "data", extra_args=("--commit-idle", "0.02", "--commit-max-lag", "0.1")
    )
    await server.start()
    rng = random.Random(7)
    try:
        async with Client(server.url, user="alice", max_backoff=0.2) as alice:
            doc = await alice.open("demo/main:src/app.py")
            deadline = time.monotonic() + rng.uniform(0.8, 1.5)
            n = 0
            while time.monotonic() < deadline:
                doc.insert(len(str(doc.text)), f"# line {n}\n")
                n += 1
                if n % 5 == 0:
                    await alice.flush()
                await asyncio.sleep(0.005)
            await alice.flush()
            acknowledged = str(doc.text)
            await server.kill()
            # what a crash between writing the ref lock and renaming it leaves behind
            lock = demo / ".git" / "refs" / "heads" / "main.lock"
            if not lock.parent.is_dir():
                lock = demo / "refs" / "heads" / "main.lock"
            lock.write_text("0" * 40 + "\n")  # as young as a crash leaves it
            await server.start()
            await until(lambda: alice.connected.is_set() and alice.reconnects > 0, timeout=20)
            await until(lambda: show(demo, "main", "src/app.py") == str(doc.text), timeout=20)
            assert str(doc.text) == acknowledged  # nothing lost, nothing doubled
            assert not lock.exists()
            doc.insert(0, "# after restart\n")
            await alice.flush()
            await until(lambda: show(demo, "main", "src/app.py") == str(doc.text), timeout=20)
    finally:
        await server.stop()
    git(demo, "fsck", "--full", "--strict")


async def test_edits_a_crash_left_uncommitted_are_committed_as_their_typists(
    repos: Path, tmp_path: Path
) -> None:
    """The store keeps who wrote with what they wrote: the commit that a start after kill -9
    makes of the edits left uncommitted names their typists, not the engine."""
    demo = repos / "demo"
    server = ServerProcess(
        repos, tmp_path / "data", extra_args=("--commit-idle", "300", "--commit-max-lag", "600")
    )
    await server.start()
    try:
        async with Client(server.url, user="alice") as alice, Client(server.url, user="bob") as bob:
            await alice.join("demo")  # (their own branches first: making one commits main)
            await bob.join("demo")
            before = git(demo, "rev-parse", "main").strip()
            mine = await alice.open("demo/main:src/app.py")
            theirs = await bob.open("demo/main:src/app.py")
            mine.insert(0, "# alice was here\n")
            await alice.flush()
            await until(lambda: "alice" in str(theirs.text))
            theirs.insert(0, "# bob too\n")
            await bob.flush()
            typed = str(theirs.text)
            assert git(demo, "rev-parse", "main").strip() == before  # nothing committed yet
            await server.kill()
        await server.start()
        await until(lambda: show(demo, "main", "src/app.py") == typed, timeout=20)
    finally:
        await server.stop()
    assert git(demo, "log", "-1", "--format=%an", "main").strip() == "alice"
    assert "Co-authored-by: bob" in git(demo, "log", "-1", "--format=%b", "main")
    git(demo, "fsck", "--full", "--strict")


async def test_an_immediate_restart_after_kill_9_during_commits_20_times(
    repos: Path, tmp_path: Path
) -> None:
    # what a supervisor with Restart=always does: start again at once, every time
    demo = repos / "demo"
    server = ServerProcess(
        repos,
        tmp_path / "data",
        extra_args=("--commit-idle", "0.01", "--commit-max-lag", "0.05"),
    )
    await server.start()
    alice = Client(server.url, user="alice", min_backoff=0.01, max_backoff=0.05)
    lines: list[str] = []
    try:
        await alice.connect()
        doc = await alice.open("demo/main:src/app.py")
        for round_ in range(20):
            for n in range(8):
                line = f"# round {round_} line {n}\n"
                doc.insert(len(str(doc)), line)
                lines.append(line)
                await asyncio.sleep(0.002)
            await alice.flush()  # acknowledged: it must survive whatever comes next
            await asyncio.sleep(0.01 * (round_ % 4))  # somewhere in a commit
            await server.kill()
            lock = demo / "refs" / "heads" / "main.lock"  # a bare repository
            if (demo / ".git").is_dir():
                lock = demo / ".git" / "refs" / "heads" / "main.lock"
            lock.write_text("0" * 40 + "\n")  # killed between taking the lock and the rename
            await server.start()  # at once: it must come up every time
        await alice.flush()
        final = str(doc)
        assert all(final.count(line) == 1 for line in lines)
        await until(lambda: show(demo, "main", "src/app.py") == final, timeout=20)
    finally:
        await alice.close()
        await server.stop()
    git(demo, "fsck", "--full", "--strict")


async def test_branch_and_merge_commands(repos: Path, tmp_path: Path) -> None:
    server = ServerProcess(repos, tmp_path / "data")
    await server.start()
    http = server.url.replace("ws://", "http://")

    def collab(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "collab",
                *args,
                "--url",
                http,
                "--user",
                "alice",
                "--repo",
                "demo",
            ],
            capture_output=True,
            text=True,
            check=False,
        )

    try:
        joined = await asyncio.to_thread(collab, "branch", "join")
        assert joined.returncode == 0, joined.stderr
        assert "people/alice-" in joined.stdout
        forked = await asyncio.to_thread(collab, "branch", "fork", "main", "topic")
        assert forked.returncode == 0, forked.stderr
        listed = await asyncio.to_thread(collab, "branch", "list")
        assert "topic" in listed.stdout and "main" in listed.stdout
        async with Client(server.url, user="alice") as alice:
            doc = await alice.open("demo/topic:README.md")
            doc.insert(0, "from topic\n")
            await alice.flush()
        preview = await asyncio.to_thread(collab, "merge", "topic", "main")
        assert preview.returncode == 0, preview.stderr
        assert "modified  README.md" in preview.stdout and "+from topic" in preview.stdout
        assert "from topic" not in show(repos / "demo", "main", "README.md")
        applied = await asyncio.to_thread(collab, "merge", "topic", "main", "--apply")
        assert applied.returncode == 0, applied.stderr
        assert show(repos / "demo", "main", "README.md").startswith("from topic")
        missing = await asyncio.to_thread(collab, "branch", "delete", "nope")
        assert missing.returncode == 1 and "NOT_FOUND" in missing.stderr
    finally:
        await server.stop()


def _fail_final_commits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every branch's commit on the coming stop fail, as on a full disk."""

    async def broken(self: BranchSync) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(BranchSync, "flush", broken)


async def test_a_clean_shutdown_spares_the_next_start_the_recovery_scan(
    repos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    demo = repos / "demo"
    data = tmp_path / "data"
    marker = data / CLEAN_SHUTDOWN
    slow = {"commit_idle": 30.0, "commit_max_lag": 60.0}  # only a stop or a recovery commits
    async with CollabServer(make_config(repos, data, **slow)) as server:
        async with Client(server.url, user="alice") as alice:
            doc = await alice.open("demo/main:src/app.py")
            doc.insert(0, "# typed before a clean stop\n")
            await alice.flush()
            text = str(doc.text)
        assert not marker.exists()
    assert show(demo, "main", "src/app.py") == text  # committed by the stop
    assert marker.exists()

    async with CollabServer(make_config(repos, data, **slow)) as server:
        assert not marker.exists()  # taken at start: a crash from now on means recovery
        assert len(server.rooms) == 0  # no stored document was loaded to look for changes
        async with Client(server.url, user="alice") as alice:
            doc = await alice.open("demo/main:src/app.py")
            assert str(doc.text) == text
            doc.insert(0, "# typed before a failed final commit\n")
            await alice.flush()
            text = str(doc.text)

        _fail_final_commits(monkeypatch)
    monkeypatch.undo()
    assert not marker.exists()  # the final commit failed: no marker
    assert show(demo, "main", "src/app.py") != text

    async with CollabServer(make_config(repos, data, **slow)) as server:
        await until(lambda: show(demo, "main", "src/app.py") == text)  # recovered at start
    assert marker.exists()


ONLY_CRASHES_COMMIT = ("--commit-idle", "300", "--commit-max-lag", "600")
"""A server that makes no commit of its own before the test is over (but at start, of what
a crash left)."""


async def killed_with_an_edit_stored(server: ServerProcess, branch: str) -> str:
    """Alice types a line into ``branch``'s README (made first, unless it is ``main``), it
    is stored but not committed, and the server is killed: the text her document held."""
    async with Client(server.url, user="alice") as alice:
        if branch == "main":
            await alice.join("demo")  # (making alice's own branch commits main)
        else:
            await alice.call("branch.create", repo="demo", name=branch)
        doc = await alice.open(f"demo/{branch}:README.md")
        doc.insert(0, "stored, never committed\n")
        await alice.flush()
        text = str(doc.text)
        await server.kill()
    return text


async def test_a_branch_deleted_outside_before_recovery_has_its_edits_kept_on_a_branch(
    repos: Path, tmp_path: Path
) -> None:
    """A branch another tool deleted while the server was down (killed), with edits stored
    but not committed: the start commits them on a branch of their own, as it would have
    while running, forgets the deleted one, and the start after is clean."""
    demo = repos / "demo"
    data = tmp_path / "data"
    server = ServerProcess(repos, data, extra_args=ONLY_CRASHES_COMMIT)
    await server.start()
    try:
        text = await killed_with_an_edit_stored(server, "feat")
        head = git(demo, "rev-parse", "feat").strip()
        assert show(demo, "feat", "README.md") != text
        git(demo, "update-ref", "-d", "refs/heads/feat")  # another tool, while it was down
        await server.start()
        await server.stop()
    finally:
        await server.stop()
    assert (data / CLEAN_SHUTDOWN).exists()  # nothing waits for the deleted branch
    kept = f"feat-rescued-{head[:7]}"
    assert show(demo, kept, "README.md") == text
    assert git(demo, "log", "-1", "--format=%an%n%P", kept).split() == ["alice", head]
    assert "feat" not in git(demo, "for-each-ref", "--format=%(refname:short)").split()
    git(demo, "fsck", "--full", "--strict")


async def test_a_branch_deleted_outside_whose_last_commit_is_gone_keeps_its_edits_alone(
    repos: Path, tmp_path: Path
) -> None:
    """As above, but the commit its documents last matched is gone too (its record points
    at an object the repository no longer has): their text is kept on a branch of its own
    all the same, made of it alone, and the name can be made again (every start failed,
    and so did every making of the name)."""
    demo = repos / "demo"
    data = tmp_path / "data"
    server = ServerProcess(repos, data, extra_args=ONLY_CRASHES_COMMIT)
    await server.start()
    try:
        text = await killed_with_an_edit_stored(server, "feat")
        git(demo, "update-ref", "-d", "refs/heads/feat")
        record = demo / "refs" / "collab" / "synced" / "feat"  # (git refuses to write it)
        assert record.is_file()
        record.write_text("1234" * 10 + "\n")
        await server.start()
        async with Client(server.url, user="alice") as alice:
            made = await alice.call("branch.create", repo="demo", name="feat")
            assert made["name"] == "feat"
        await server.stop()
    finally:
        await server.stop()
    assert (data / CLEAN_SHUTDOWN).exists()
    assert show(demo, "feat-rescued", "README.md") == text
    assert git(demo, "rev-list", "--count", "feat-rescued").strip() == "1"


async def test_a_repository_missing_at_recovery_keeps_the_next_start_looking(
    repos: Path, tmp_path: Path
) -> None:
    """A repository gone at start (its disk not mounted yet): its edits stored but not
    committed wait, and a later start commits them."""
    demo = repos / "demo"
    data = tmp_path / "data"
    server = ServerProcess(repos, data, extra_args=ONLY_CRASHES_COMMIT)
    await server.start()
    try:
        text = await killed_with_an_edit_stored(server, "main")
        assert show(demo, "main", "README.md") != text
        demo.rename(tmp_path / "away")
        await server.start()
        await server.stop()
        assert not (data / CLEAN_SHUTDOWN).exists()  # the repository keeps recovery due
        said = server.log.read_text()  # and the log says why
        assert "demo/main: the repository is missing; 1 stored document kept" in said
        (tmp_path / "away").rename(demo)
        await server.start()
        await until(lambda: show(demo, "main", "README.md") == text, timeout=20)
        await server.stop()
    finally:
        await server.stop()
    assert (data / CLEAN_SHUTDOWN).exists()


def replace_with_a_clone(repo: Path, tmp_path: Path, line: str) -> str:
    """Replace the bare repository ``repo`` by a copy of it made with ``git clone`` (which
    leaves the engine's records, ``refs/collab/*``, behind), worked on elsewhere first: a
    commit adds ``line`` to main's README. Main's head in the copy."""
    work = tmp_path / "elsewhere"
    git(tmp_path, "clone", "-q", str(repo), str(work))
    readme = work / "README.md"
    readme.write_text(readme.read_text() + line)
    git(work, "commit", "-qam", "worked on elsewhere")
    git(work, "push", "-q", "origin", "main")
    copy = tmp_path / "copy.git"
    git(tmp_path, "clone", "-q", "--bare", str(repo), str(copy))
    shutil.rmtree(repo)
    copy.rename(repo)
    assert not git(repo, "for-each-ref", "refs/collab").strip()
    return git(repo, "rev-parse", "main").strip()


def errors_in(log: Path) -> list[str]:
    return [line for line in log.read_text().splitlines() if " ERROR " in line]


NO_RECORD = "the repository holds no record of the commit the live documents matched"


@pytest.mark.parametrize("how", ["stop", "kill"])
async def test_a_repository_replaced_by_a_clone_while_down_keeps_its_newer_commit(
    repos: Path, tmp_path: Path, how: str
) -> None:
    """The repository is replaced while the server is down (stopped, everything committed;
    or killed with an edit stored but not committed) by a copy of it that holds one more
    commit and none of the engine's records: the documents come to read as the copy's
    head, never the store's older text committed over it (not by the recovery at start
    either); that text is kept on ``main-rescued-<head>``, made from the head, and an ERROR
    line says so."""
    demo = repos / "demo"
    server = ServerProcess(repos, tmp_path / "data", extra_args=ONLY_CRASHES_COMMIT)
    await server.start()
    try:
        if how == "kill":
            live = await killed_with_an_edit_stored(server, "main")
            assert show(demo, "main", "README.md") != live
        else:
            async with Client(server.url, user="alice") as alice:
                await alice.join("demo")  # (making alice's own branch commits main)
                doc = await alice.open("demo/main:README.md")
                doc.insert(0, "typed before the stop\n")
                await alice.flush()
                live = str(doc.text)
            await server.stop()
            assert show(demo, "main", "README.md") == live
        head = replace_with_a_clone(demo, tmp_path, "added while it was elsewhere\n")
        newer = show(demo, "main", "README.md")
        await server.start()
        assert git(demo, "rev-parse", "main").strip() == head  # nothing committed over it
        async with Client(server.url, user="bob") as bob:
            doc = await bob.open("demo/main:README.md")
            assert str(doc.text) == newer
            doc.insert(0, "typed after\n")
            await bob.flush()
            await bob.commit("demo", "main")
    finally:
        await server.stop()
    assert show(demo, "main", "README.md") == "typed after\n" + newer
    assert is_ancestor(demo, head, "main")
    kept = f"main-rescued-{head[:7]}"
    assert show(demo, kept, "README.md") == live
    assert git(demo, "rev-parse", f"{kept}^").strip() == head
    assert any(f"demo/main: {NO_RECORD}" in line for line in errors_in(server.log))
    git(demo, "fsck", "--full", "--strict")


async def test_another_repositories_directory_over_the_same_data_dir_keeps_its_files(
    repos: Path, tmp_path: Path
) -> None:
    """The server is started again with another ``--repos`` over the same ``--data-dir``,
    where a repository of the same name holds another history: the store's documents of it
    come to read as its files, their text is kept on a branch of its own there, an ERROR
    line says so, and neither repository gets the other's text committed over its files."""
    data = tmp_path / "data"
    server = ServerProcess(repos, data, extra_args=ONLY_CRASHES_COMMIT)
    await server.start()
    try:
        async with Client(server.url, user="alice") as alice:
            doc = await alice.open("demo/main:README.md")
            doc.insert(0, "typed into the first\n")
            await alice.flush()
            live = str(doc.text)
    finally:
        await server.stop()
    others = tmp_path / "others"
    create_demo_repo(others / "demo", {"README.md": "# Another demo\n"})
    other = others / "demo"
    head = git(other, "rev-parse", "main").strip()
    second = ServerProcess(others, data, extra_args=ONLY_CRASHES_COMMIT)
    second.log = tmp_path / "second.log"
    await second.start()
    try:
        async with Client(second.url, user="bob") as bob:
            doc = await bob.open("demo/main:README.md")
            assert str(doc.text) == "# Another demo\n"
            doc.insert(0, "typed into the second\n")
            await bob.flush()
            await bob.commit("demo", "main")
    finally:
        await second.stop()
    assert show(other, "main", "README.md") == "typed into the second\n# Another demo\n"
    assert is_ancestor(other, head, "main")
    assert show(other, f"main-rescued-{head[:7]}", "README.md") == live
    assert any(f"demo/main: {NO_RECORD}" in line for line in errors_in(second.log))
    assert show(repos / "demo", "main", "README.md") == live  # the first one, untouched
    git(other, "fsck", "--full", "--strict")


async def test_a_repository_replaced_while_serving_keeps_the_newer_commit_of_a_closed_branch(
    repos: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The repository is replaced while the server runs, by a clone with one more commit,
    after main's documents were closed (committed, the branch's sync state forgotten) and
    after the server listed the store's documents of the repository (there were none then):
    main's next use finds the repository's directory is another one, lists the store again,
    and the stored text is kept on ``main-rescued-<head>``, never loaded over the newer
    commit."""
    demo = repos / "demo"
    slow = {"commit_idle": 30.0, "commit_max_lag": 60.0}  # the close commits
    async with CollabServer(make_config(repos, tmp_path / "data", **slow)) as server:
        async with Client(server.url, user="alice") as alice:
            doc = await alice.open("demo/main:README.md")
            doc.insert(0, "typed before it was replaced\n")
            await alice.flush()
            live = str(doc.text)
        await until(lambda: ("demo", "main") not in server.git.branches)
        assert show(demo, "main", "README.md") == live
        head = replace_with_a_clone(demo, tmp_path, "added while it was elsewhere\n")
        newer = show(demo, "main", "README.md")
        async with Client(server.url, user="bob") as bob:
            doc = await bob.open("demo/main:README.md")
            assert str(doc.text) == newer
            doc.insert(0, "typed after\n")
            await bob.flush()
            await bob.commit("demo", "main")
    assert show(demo, "main", "README.md") == "typed after\n" + newer
    assert is_ancestor(demo, head, "main")
    assert show(demo, f"main-rescued-{head[:7]}", "README.md") == live
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any(f"demo/main: {NO_RECORD}" in error for error in errors)
    git(demo, "fsck", "--full", "--strict")


async def test_a_branch_made_again_in_a_replaced_repository_starts_without_the_stores_text(
    repos: Path, tmp_path: Path
) -> None:
    """Alice's own branch has documents in the store; the repository is replaced while the
    server is stopped by one that has neither the branch nor the engine's records of it.
    Made again under its name (she joins), the branch starts at the new main, not with the
    store's text (which would be committed over it): that text is kept on a branch of its
    own first, and an ERROR line says so."""
    demo = repos / "demo"
    server = ServerProcess(repos, tmp_path / "data", extra_args=ONLY_CRASHES_COMMIT)
    await server.start()
    try:
        async with Client(server.url, user="alice") as alice:
            own = await alice.join("demo")
            doc = await alice.open(f"demo/{own}:README.md")
            doc.insert(0, "on her branch\n")
            await alice.flush()
            live = str(doc.text)
        await server.stop()
        shutil.rmtree(demo)
        create_demo_repo(demo, {"README.md": "# Another demo\n"})
        await server.start()
        async with Client(server.url, user="alice") as alice:
            assert await alice.join("demo") == own
            doc = await alice.open(f"demo/{own}:README.md")
            assert str(doc.text) == "# Another demo\n"
            doc.insert(0, "typed after\n")
            await alice.flush()
            await alice.commit("demo", own)
    finally:
        await server.stop()
    assert show(demo, own, "README.md") == "typed after\n# Another demo\n"
    assert show(demo, own.replace("/", "-") + "-rescued", "README.md") == live
    assert any(f"demo/{own}: the store holds documents of it" in e for e in errors_in(server.log))
    git(demo, "fsck", "--full", "--strict")


async def test_a_crash_after_the_branch_moved_but_before_it_was_recorded_as_synced(
    repos: Path, tmp_path: Path
) -> None:
    """A continuous commit moves the branch, then records it as synced: a kill -9 between the
    two left the engine's own commit looking like a push, merged into the documents again on
    restart (every line of it twice, in conflict markers where someone typed since). The
    commit under way is recorded before the branch moves, and a restart finishes it."""
    demo = repos / "demo"
    server = ServerProcess(
        repos, tmp_path / "data", extra_args=("--commit-idle", "0.05", "--commit-max-lag", "1")
    )
    await server.start()
    alice = Client(server.url, user="alice", min_backoff=0.02, max_backoff=0.2)
    try:
        await alice.connect()
        doc = await alice.open("demo/main:README.md")
        first = "".join(f"<a{i}>" for i in range(10))
        doc.insert(len(str(doc.text)), first)
        await alice.flush()
        await until(lambda: first in show(demo, "main", "README.md"), timeout=10)
        doc.insert(len(str(doc.text)), "<typed after the commit>")  # on the same line
        await alice.flush()
        await server.kill()
        head = git(demo, "rev-parse", "main").strip()
        assert git(demo, "rev-parse", "refs/collab/synced/main").strip() == head
        # what a kill -9 between moving the branch and recording it as synced leaves
        git(demo, "update-ref", "refs/collab/synced/main", git(demo, "rev-parse", "main~1").strip())
        git(demo, "update-ref", "refs/collab/committing/main", head)
        await server.start()
        await until(lambda: alice.connected.is_set() and alice.reconnects > 0, timeout=20)
        await until(lambda: "<typed after" in show(demo, "main", "README.md"), timeout=20)
        text = str(doc.text)
        assert text.count("<a0>") == 1 and "<<<<<<<" not in text, text
        assert show(demo, "main", "README.md") == text
        assert (
            git(demo, "rev-parse", "refs/collab/synced/main").strip()
            == git(demo, "rev-parse", "main").strip()
        )
        assert git(demo, "for-each-ref", "refs/collab/committing/") == ""
    finally:
        await alice.close()
        await server.stop()
    git(demo, "fsck", "--full", "--strict")


@pytest.mark.parametrize("pushed_while_down", [False, True], ids=["alone", "then-another-push"])
async def test_a_crash_after_a_push_was_merged_but_before_it_was_recorded_as_synced(
    repos: Path, tmp_path: Path, pushed_while_down: bool
) -> None:
    """A push is merged into the live documents, then recorded as synced: a kill -9 between
    the two had the restarted server merge it again (twice, in conflict markers where
    someone had typed on its lines since). Each document now holds a mark of the commits
    merged into it, stored with the merge, and is not merged again; with another push on
    top of it while the server was down, only that one is merged."""
    demo = repos / "demo"
    server = ServerProcess(
        repos, tmp_path / "data", extra_args=("--commit-idle", "60", "--commit-max-lag", "60")
    )
    await server.start()
    alice = Client(server.url, user="alice", min_backoff=0.02, max_backoff=0.2)
    work = tmp_path / "work"
    try:
        await alice.connect()
        doc = await alice.open("demo/main:README.md")
        remote = server.url.replace("ws://", "http://pusher@") + "/git/demo.git"
        await asyncio.to_thread(git, tmp_path, "clone", "-q", remote, str(work))
        readme = work / "README.md"
        readme.write_text(readme.read_text().replace("Hello from", "Hello (pushed) from"))
        git(work, "commit", "-qam", "pushed")
        await asyncio.to_thread(git, work, "push", "-q", "origin", "HEAD:main")
        pushed = git(work, "rev-parse", "HEAD").strip()
        await until(lambda: "(pushed)" in str(doc.text), timeout=10)
        end = str(doc.text).index("(pushed)") + len("(pushed)")
        doc.insert(end, " and typed on")  # on the pushed line
        await alice.flush()
        await server.kill()
        assert git(demo, "rev-parse", "main").strip() == pushed
        # what a kill -9 between the durable merge and recording the push as synced leaves:
        # the synced commit before the push, and the record of the merge under way
        git(demo, "update-ref", "refs/collab/synced/main", git(demo, "rev-parse", "main~1").strip())
        git(demo, "update-ref", "refs/collab/merging/main", pushed)
        if pushed_while_down:  # straight into the repository, with the server down
            readme.write_text("a second push\n" + readme.read_text())  # lines away
            git(work, "commit", "-qam", "second")
            git(work, "push", "-q", str(demo), "HEAD:main")
        await server.start()
        await until(lambda: alice.connected.is_set() and alice.reconnects > 0, timeout=20)
        if pushed_while_down:
            await until(lambda: "a second push" in str(doc.text), timeout=20)
        await alice.flush()
        await asyncio.sleep(0.3)
        text = str(doc.text)
        assert text.count("(pushed)") == 1 and "<<<<<<<" not in text, text
        assert "(pushed) and typed on" in text
        assert text.count("a second push") == int(pushed_while_down)
        assert git(demo, "for-each-ref", "refs/collab/merging/") == ""
    finally:
        await alice.close()
        await server.stop()
    assert "(pushed) and typed on" in show(demo, "main", "README.md")
    git(demo, "fsck", "--full", "--strict")


async def test_a_crash_after_a_merge_moved_the_branch_but_before_it_was_recorded_as_synced(
    repos: Path, tmp_path: Path
) -> None:
    """``merge.apply`` merges into the live documents, moves the branch to its merge commit,
    then records it as synced: a kill -9 between the last two must not have the restarted
    server take its own merge commit for a push and merge it into the documents again. The
    commit under way is recorded before the branch moves, and a restart finishes it."""
    demo = repos / "demo"
    server = ServerProcess(
        repos, tmp_path / "data", extra_args=("--commit-idle", "60", "--commit-max-lag", "60")
    )
    await server.start()
    alice = Client(server.url, user="alice", min_backoff=0.02, max_backoff=0.2)
    try:
        await alice.connect()
        await alice.call("branch.create", repo="demo", name="topic")
        topic = await alice.open("demo/topic:README.md")
        topic.insert(0, "<from topic>")
        await alice.flush()
        await alice.commit("demo", "topic")
        doc = await alice.open("demo/main:README.md")
        doc.insert(len(str(doc.text)), "<typed on main>")
        await alice.flush()
        merged = await alice.merge("demo", "topic", "main", no_ff=True)
        assert merged["applied"] and not merged["fast_forward"]
        await until(lambda: str(doc.text).startswith("<from topic>"), timeout=10)
        doc.insert(len("<from topic>"), "<typed after the merge>")  # on the merged line
        await alice.flush()
        await server.kill()
        head = git(demo, "rev-parse", "main").strip()
        assert head == merged["commit"]
        # what a kill -9 between moving the branch and recording it as synced leaves
        git(demo, "update-ref", "refs/collab/synced/main", git(demo, "rev-parse", "main^1").strip())
        git(demo, "update-ref", "refs/collab/committing/main", head)
        await server.start()
        await until(lambda: alice.connected.is_set() and alice.reconnects > 0, timeout=20)
        await alice.flush()
        await alice.commit("demo", "main")
        text = str(doc.text)
        assert text.count("<from topic>") == 1 and "<<<<<<<" not in text, text
        assert text.startswith("<from topic><typed after the merge>")
        assert show(demo, "main", "README.md") == text
        assert git(demo, "rev-parse", "main^1").strip() == head  # a commit on top of the merge
        assert git(demo, "for-each-ref", "refs/collab/committing/") == ""
    finally:
        await alice.close()
        await server.stop()
    git(demo, "fsck", "--full", "--strict")


@pytest.mark.parametrize("markers", [True, False], ids=["conflicting", "clean"])
async def test_a_merge_cut_short_by_kill_9_is_in_the_history_once_or_not_at_all(
    repos: Path, tmp_path: Path, markers: bool
) -> None:
    """``merge.apply`` killed a few milliseconds in, the server started again at once: the
    merge either happened (topic is in main's history, its line in the text once) or did
    not (main as it was), and a retry of the unanswered call leaves topic's line once, in
    the live text and in git. (The merged text went into the documents before the branch
    moved: a kill in between kept the text and lost the merge from the history, and a
    retry with markers wrote topic's line a second time.)"""
    demo = repos / "demo"
    server = ServerProcess(repos, tmp_path / "data")
    await server.start()
    rng = random.Random(11)
    http = server.url.replace("ws://", "http://")
    try:
        for attempt in range(4):
            source = f"topic{attempt}"
            async with Client(server.url, user="bob") as bob:
                await bob.fork("demo", "main", source)
                main = await bob.open("demo/main:src/app.py")
                topic = await bob.open(f"demo/{source}:src/app.py")
                main.insert(len(str(main.text)) if markers else 0, f"<M{attempt}>\n")
                topic.insert(len(str(topic.text)), f"<T{attempt}>\n")
                await bob.flush()
                await bob.commit("demo", "main")
                topic_head = await bob.commit("demo", source)
            before = git(demo, "rev-parse", "main").strip()
            args = {"repo": "demo", "source": source, "target": "main", "markers": markers}
            merging = asyncio.create_task(_post(http, "merge.apply", args))
            await asyncio.sleep(rng.uniform(0.005, 0.04))
            await server.kill()
            await asyncio.gather(merging, return_exceptions=True)
            await server.start()
            async with Client(server.url, user="carol") as carol:
                text = str((await carol.open("demo/main:src/app.py")).text)
                await carol.commit("demo", "main")
                merged = is_ancestor(demo, topic_head, "main")
                if merged:
                    assert text.count(f"<T{attempt}>") == 1, text
                else:
                    assert f"<T{attempt}>" not in text, text
                    assert git(demo, "rev-parse", "main").strip() == before
                await _post(http, "merge.apply", args)  # the retry of an unanswered call
                doc = await carol.open("demo/main:src/app.py")
                await carol.commit("demo", "main")
                assert str(doc.text).count(f"<T{attempt}>") == 1, str(doc.text)
                assert show(demo, "main", "src/app.py") == str(doc.text)
                assert is_ancestor(demo, topic_head, "main")
    finally:
        await server.stop()
    git(demo, "fsck", "--full", "--strict")


def _named(repo: Path, revisions: str) -> list[set[str]]:
    """Who each commit of ``revisions`` names: its author and its co-authors."""
    named = []
    for commit in git(repo, "rev-list", revisions).split():
        author, body = git(repo, "log", "-1", "--format=%an%n%b", commit).split("\n", 1)
        named.append({author, *re.findall(r"^Co-authored-by: (\S+)", body, re.MULTILINE)})
    return named


@pytest.mark.parametrize("typed_beside", [False, True], ids=["alone", "beside-a-recovered-file"])
async def test_new_files_a_move_while_down_left_no_place_for_are_kept_as_their_typists(
    repos: Path, tmp_path: Path, typed_beside: bool
) -> None:
    """Walt types a new ``nd/f.txt``, Bea a new ``dd``, and the server is killed before
    they are committed; another tool then commits a file ``nd`` and a directory ``dd``. The
    start keeps both texts on ``main-rescued-<commit>``, by commits that name their typists
    as the store kept them (not the engine), and the store forgets them once those commits
    are made: a later commit names its own typist alone. Nothing in the log tells of a
    document not recovered, and the start after is clean. Beside them, the file Walt
    edited too is committed at the start as his."""
    demo = repos / "demo"
    data = tmp_path / "data"
    server = ServerProcess(repos, data, extra_args=ONLY_CRASHES_COMMIT)
    await server.start()
    try:
        async with Client(server.url, user="walt") as walt, Client(server.url, user="bea") as bea:
            await walt.join("demo")  # (their own branches first: making one commits main)
            await bea.join("demo")
            synced = git(demo, "rev-parse", "main").strip()
            (await walt.open("demo/main:nd/f.txt")).insert(0, "walt typed under nd\n")
            (await bea.open("demo/main:dd")).insert(0, "bea typed as dd\n")
            if typed_beside:
                (await walt.open("demo/main:README.md")).insert(0, "walt was here\n")
            await walt.flush()
            await bea.flush()
            await server.kill()
        work = tmp_path / "work"  # another tool, while the server is down
        git(tmp_path, "clone", "-q", str(demo), str(work))
        (work / "nd").write_text("a file\n")
        (work / "dd").mkdir()
        (work / "dd" / "x").write_text("a file in a directory\n")
        git(work, "add", "-A")
        git(work, "commit", "-qm", "in the way")
        git(work, "push", "-q", "origin", "HEAD:main")
        moved = git(demo, "rev-parse", "main").strip()
        await server.start()
        rescued = f"main-rescued-{synced[:7]}"
        assert show(demo, rescued, "nd/f.txt") == "walt typed under nd\n"
        assert show(demo, rescued, "dd") == "bea typed as dd\n"
        # (the store keeps who wrote to the branch, not to which of its files)
        assert _named(demo, f"{synced}..{rescued}") == [{"walt", "bea"}, {"walt", "bea"}]
        if typed_beside:
            assert show(demo, "main", "README.md").startswith("walt was here\n")
            assert _named(demo, f"{moved}..main") == [{"walt", "bea"}]
        else:
            assert git(demo, "rev-parse", "main").strip() == moved
        async with Client(server.url, user="carl") as carl:
            await carl.join("demo")
            (await carl.open("demo/main:src/app.py")).insert(0, "# carl\n")
            await carl.flush()
            head = await carl.commit("demo", "main")
        assert _named(demo, f"{head}~1..{head}") == [{"carl"}]
        await server.stop()
    finally:
        await server.stop()
    said = server.log.read_text()
    assert "not recovered" not in said and " ERROR " not in said, said
    assert (data / CLEAN_SHUTDOWN).exists()


async def test_a_file_typed_below_another_new_one_is_kept_on_a_branch_at_recovery(
    repos: Path, tmp_path: Path
) -> None:
    """``x/a`` opened empty, then ``x/a/b``, both typed, and the server killed before a
    commit: the start commits ``x/a`` as a file, so ``x/a/b`` can be none on the branch.
    Its text is kept on ``main-rescued-<commit>`` as its typist's, it opens no more (as a
    path below a file), and nothing is left for the next start to look for."""
    demo = repos / "demo"
    data = tmp_path / "data"
    server = ServerProcess(repos, data, extra_args=ONLY_CRASHES_COMMIT)
    await server.start()
    try:
        async with Client(server.url, user="walt") as walt:
            await walt.join("demo")  # (his own branch first: making one commits main)
            above = await walt.open("demo/main:x/a")
            below = await walt.open("demo/main:x/a/b")
            above.insert(0, "file x/a\n")
            below.insert(0, "below x/a\n")
            await walt.flush()
            await server.kill()
        await server.start()
        assert show(demo, "main", "x/a") == "file x/a\n"
        head = git(demo, "rev-parse", "main").strip()
        rescued = f"main-rescued-{head[:7]}"
        assert show(demo, rescued, "x-a-b.rescued") == "below x/a\n"
        assert _named(demo, f"{head}..{rescued}") == [{"walt"}]
        async with Client(server.url, user="walt") as walt:
            with pytest.raises(ClientError) as refused:
                await walt.open("demo/main:x/a/b")
            assert refused.value.code == ErrorCode.NOT_TEXT
        await server.stop()
    finally:
        await server.stop()
    assert (data / CLEAN_SHUTDOWN).exists()


async def test_a_file_held_below_a_committed_one_at_start_is_kept_on_a_branch(
    repos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What an older server left, which held ``x/a/b`` below ``x/a`` once ``x/a`` was
    committed as a file, until ``x/a/b`` was edited again (or a crash between that commit
    and the closing of ``x/a/b``): the closed ``x/a/b`` in the store alone. The next start
    keeps its text on ``main-rescued-<commit>``, and its recovery is complete."""
    demo = repos / "demo"
    data = tmp_path / "data"
    monkeypatch.setattr(BranchSync, "_close_held", _left_held, raising=False)
    config = make_config(repos, data, commit_idle=0.05)
    async with CollabServer(config) as server, Client(server.url, user="walt") as walt:
        await walt.join("demo")  # (his own branch first: making one commits main)
        above = await walt.open("demo/main:x/a")
        below = await walt.open("demo/main:x/a/b")
        above.insert(0, "file x/a\n")
        below.insert(0, "below x/a\n")
        await walt.flush()
        head = await walt.commit("demo", "main")
        assert show(demo, head, "x/a") == "file x/a\n"
        await below.close()
    monkeypatch.undo()
    (data / CLEAN_SHUTDOWN).unlink(missing_ok=True)  # (a crash leaves none)
    server_process = ServerProcess(repos, data, extra_args=ONLY_CRASHES_COMMIT)
    await server_process.start()
    try:
        assert git(demo, "rev-parse", "main").strip() == head
        rescued = f"main-rescued-{head[:7]}"
        assert show(demo, rescued, "x-a-b.rescued") == "below x/a\n"
        await server_process.stop()
    finally:
        await server_process.stop()
    assert (data / CLEAN_SHUTDOWN).exists()


async def _left_held(self: BranchSync, held: dict[str, str], grant: object) -> None:
    """``BranchSync._close_held`` cut short, as by a crash: what it holds stays held."""


async def _post(http: str, op: str, args: dict[str, object]) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{http}/api/{op}", params={"user": "bob"}, json=args) as reply,
    ):
        await reply.read()
