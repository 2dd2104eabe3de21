"""Merges as git would record them: commits and conflict markers name the branches, and a
merge the preview calls a fast-forward is applied as one unless a merge commit is asked for."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from dulwich.repo import Repo
from eventwait import Events
from gitcli import git, show
from servers import make_config

from collab import Client, ClientError, CollabServer
from collab.server.auth import Role, TokenAuthenticator
from gitsync.objects.commits import commit_changes, create_branch, read_ref
from protocol.errors import ErrorCode


@pytest.fixture
async def fast_server(repos: Path, tmp_path: Path) -> AsyncIterator[CollabServer]:
    config = make_config(repos, tmp_path / "data", commit_idle=0.2, commit_max_lag=2.0)
    async with CollabServer(config) as srv:
        yield srv


async def _edit(client: Client, doc_id: str, text: str) -> None:
    doc = await client.open(doc_id)
    doc.delete(0, len(str(doc.text)))
    doc.insert(0, text)
    await client.flush()
    await doc.close()


async def test_merge_commit_names_the_branch_and_markers_name_both(
    fast_server: CollabServer, repos: Path
) -> None:
    demo = repos / "demo"
    async with Client(fast_server.url, user="alice") as alice:
        await alice.fork("demo", "main", "topic")
        await _edit(alice, "demo/topic:src/app.py", "print('topic')\n")
        await _edit(alice, "demo/main:src/app.py", "print('main')\n")
        await _edit(alice, "demo/topic:README.md", "# Demo from topic\n")
        result = await alice.merge("demo", "topic", "main", markers=True)
        assert result["applied"] and not result["fast_forward"]
        assert result["conflicts"] == ["src/app.py"]
        subject = git(demo, "log", "-1", "--format=%s", "main").strip()
        assert subject == "Merge branch 'topic' into main"
        parents = git(demo, "log", "-1", "--format=%P", "main").split()
        assert parents[1] == git(demo, "rev-parse", "topic").strip()
        # the markers git merge-tree writes for `git merge-tree main topic`
        assert show(demo, "main", "src/app.py") == (
            "<<<<<<< main\nprint('main')\n=======\nprint('topic')\n>>>>>>> topic\n"
        )
        assert show(demo, "main", "README.md") == "# Demo from topic\n"


async def test_preview_and_apply_agree_on_a_fast_forward(
    fast_server: CollabServer, repos: Path
) -> None:
    demo = repos / "demo"
    async with Client(fast_server.url, user="alice") as alice:
        watcher = await alice.open("demo/main:README.md")  # a live document on the target
        await alice.fork("demo", "main", "topic")
        await _edit(alice, "demo/topic:README.md", "# Demo, from topic\n")
        topic_head = await alice.commit("demo", "topic")

        preview = await alice.merge("demo", "topic", "main", apply=False)
        assert preview["fast_forward"] and not preview["up_to_date"]
        result = await alice.merge("demo", "topic", "main")
        assert result["applied"] and result["fast_forward"]
        assert result["commit"] == topic_head
        assert git(demo, "rev-parse", "main").strip() == topic_head  # moved, no merge commit
        await watcher.wait_for(lambda text: text == "# Demo, from topic\n")
        # the live documents match the new head: nothing more is committed on main
        await alice.commit("demo", "main")
        assert git(demo, "rev-parse", "main").strip() == topic_head


async def test_no_ff_records_a_merge_commit(fast_server: CollabServer, repos: Path) -> None:
    demo = repos / "demo"
    async with Client(fast_server.url, user="alice") as alice:
        await alice.fork("demo", "main", "topic")
        await _edit(alice, "demo/topic:README.md", "# Demo, from topic\n")
        topic_head = await alice.commit("demo", "topic")
        main_head = git(demo, "rev-parse", "main").strip()
        result = await alice.merge("demo", "topic", "main", no_ff=True)
        assert result["applied"] and not result["fast_forward"]
        assert result["commit"] != topic_head
        parents = git(demo, "log", "-1", "--format=%P", "main").split()
        assert parents == [main_head, topic_head]
        assert git(demo, "log", "-1", "--format=%s", "main").strip() == (
            "Merge branch 'topic' into main"
        )
        assert show(demo, "main", "README.md") == "# Demo, from topic\n"


async def test_apply_with_the_previewed_heads_refuses_a_branch_that_moved(
    repos: Path, tmp_path: Path
) -> None:
    demo = repos / "demo"
    # edits stay pending for the whole test unless an operation commits them
    config = make_config(repos, tmp_path / "data", commit_idle=60.0, commit_max_lag=120.0)
    async with CollabServer(config) as server, Client(server.url, user="alice") as alice:
        await alice.fork("demo", "main", "topic")
        await _edit(alice, "demo/topic:README.md", "# Demo, from topic\n")

        async def previewed() -> dict[str, str]:
            preview = await alice.merge("demo", "topic", "main", apply=False)
            return {"source_head": preview["source"], "target_head": preview["target"]}

        async def refused(heads: dict[str, str], moved: str) -> None:
            with pytest.raises(ClientError) as refusal:
                await alice.merge("demo", "topic", "main", **heads)
            assert refusal.value.code == ErrorCode.CONFLICT
            assert f"{moved!r} has changed since the preview" in str(refusal.value)

        main_head = git(demo, "rev-parse", "main").strip()
        heads = await previewed()
        assert heads["source_head"] == git(demo, "rev-parse", "topic").strip()
        assert heads["target_head"] == main_head

        # a live edit on the source after the preview, not committed yet: it counts
        await _edit(alice, "demo/topic:src/app.py", "print('not previewed')\n")
        await refused(heads, "topic")
        assert git(demo, "rev-parse", "main").strip() == main_head  # nothing changed

        # the target moved: refused too
        heads = await previewed()
        await _edit(alice, "demo/main:docs/notes.md", "main moved\n")
        await refused(heads, "main")
        assert show(demo, "main", "README.md") != "# Demo, from topic\n"

        # previewed again, nothing moving: applied, exactly what was previewed
        result = await alice.merge("demo", "topic", "main", **await previewed())
        assert result["applied"]
        assert show(demo, "main", "README.md") == "# Demo, from topic\n"
        assert show(demo, "main", "src/app.py") == "print('not previewed')\n"


STORY = "".join(f"line {i} of the story\n" for i in range(20))


async def test_a_renamed_file_moves_on_the_target_with_its_live_edits_merged(
    fast_server: CollabServer, repos: Path
) -> None:
    """topic renames src/story.py to src/tale.py (and edits it), as a git user would; main
    edits the old path live. The merge is git's: one file, src/tale.py, with both edits;
    main's document at the old path is emptied and no file comes back there, the new path
    opens with the merged text, and the preview, the result and the ref event say where
    the file went."""
    demo = repos / "demo"
    renamed = STORY.replace("line 15 of", "LINE 15 (topic) of")
    repo = Repo(str(demo))
    try:  # commits by another tool, as a git push would bring them
        main_head = commit_changes(
            repo,
            "main",
            {"src/story.py": STORY.encode()},
            message="Add the story\n",
            author="Git User <git@example.com>",
            expected=read_ref(repo, b"refs/heads/main"),
        )
        create_branch(repo, "topic", main_head)
        commit_changes(
            repo,
            "topic",
            {"src/story.py": None, "src/tale.py": renamed.encode()},
            message="Rename the story\n",
            author="Git User <git@example.com>",
            expected=main_head,
        )
    finally:
        repo.close()
    async with (
        Client(fast_server.url, user="alice") as alice,
        Client(fast_server.url, user="watcher") as watcher,
    ):
        old_doc = await alice.open("demo/main:src/story.py")
        old_doc.delete(0, len(str(old_doc.text)))
        old_doc.insert(0, STORY.replace("line 3 of", "LINE 3 (main) of"))
        await alice.flush()
        await watcher.subscribe("events.subscribe", repo="demo")

        preview = await alice.merge("demo", "topic", "main", apply=False)
        files = {f["path"]: f for f in preview["files"]}
        assert preview["conflicts"] == []
        assert files["src/tale.py"]["status"] == "added"
        assert files["src/tale.py"]["renamed_from"] == "src/story.py"
        assert files["src/tale.py"]["diff"].startswith("--- a/src/story.py\n+++ b/src/tale.py\n")
        assert files["src/story.py"]["status"] == "deleted"

        result = await alice.merge("demo", "topic", "main")
        assert result["applied"] and result["conflicts"] == []
        both = STORY.replace("line 3 of", "LINE 3 (main) of").replace(
            "line 15 of", "LINE 15 (topic) of"
        )
        assert show(demo, "main", "src/tale.py") == both
        assert "src/story.py" not in git(demo, "ls-tree", "-r", "--name-only", "main")
        await old_doc.wait_for(lambda text: text == "")
        new_doc = await alice.open("demo/main:src/tale.py")
        assert str(new_doc.text) == both
        event = await Events(watcher).wait_for("ref", cause="merge")
        assert event["renamed"] == {"src/story.py": "src/tale.py"}
        # the live documents match the merge: nothing more is committed on main
        head = git(demo, "rev-parse", "main").strip()
        await alice.commit("demo", "main")
        assert git(demo, "rev-parse", "main").strip() == head


async def test_files_whose_names_are_not_utf8_are_merged_as_git_merges_them(
    fast_server: CollabServer, repos: Path, tmp_path: Path
) -> None:
    """git takes any bytes as a file name: topic adds files named in latin-1 (``café``).
    The preview gives their names with the bytes that are not UTF-8 written ``\\xNN``, and
    the merge is git's, those files included."""
    demo, work = repos / "demo", tmp_path / "work"
    git(tmp_path, "clone", "-q", str(demo), str(work))
    git(work, "checkout", "-qb", "topic")
    latin1 = os.fsdecode(b"caf\xe9")
    (work / f"{latin1}.txt").write_bytes(b"text\n")
    (work / f"{latin1}.bin").write_bytes(b"\x00binary\n")
    git(work, "add", "-A")
    git(work, "commit", "-qm", "latin-1 names")
    git(work, "checkout", "-q", "main")
    (work / "README.md").write_text("# Demo, main side\n")
    git(work, "commit", "-qam", "main side")
    git(work, "push", "-q", "origin", "main", "topic")
    wanted = git(demo, "merge-tree", "--write-tree", "main", "topic").split()[0]
    async with Client(fast_server.url, user="alice") as alice:
        await alice.open("demo/main:README.md")
        preview = await alice.merge("demo", "topic", "main", apply=False)
        files = {f["path"]: f for f in preview["files"]}
        assert set(files) == {"caf\\xe9.txt", "caf\\xe9.bin"}
        assert files["caf\\xe9.bin"]["binary"] and files["caf\\xe9.txt"]["status"] == "added"
        assert "b/caf\\xe9.txt" in files["caf\\xe9.txt"]["diff"]
        result = await alice.merge("demo", "topic", "main")
        assert result["applied"] and {f["path"] for f in result["files"]} == set(files)
    assert git(demo, "rev-parse", "main^{tree}").strip() == wanted
    git(demo, "fsck", "--strict", "--no-dangling")


async def test_a_call_whose_answer_cannot_be_sent_is_answered_with_an_error(
    fast_server: CollabServer,
) -> None:
    async def unsendable(ctx: object, args: dict[str, object]) -> str:
        return "caf\udce9"  # not valid Unicode: msgpack cannot encode it

    fast_server.ops.register("test.unsendable", unsendable)  # type: ignore[arg-type]
    async with Client(fast_server.url, user="alice") as alice:
        with pytest.raises(ClientError) as refused:
            await alice.call("test.unsendable", timeout=5.0)
        assert refused.value.code == ErrorCode.INTERNAL
        assert "test.unsendable" in refused.value.message
        assert await alice.call("branch.list", repo="demo")  # the connection goes on


@pytest.mark.parametrize("previewed", [True, False], ids=["previewed-heads", "no-heads"])
async def test_a_target_moved_outside_the_engine_is_caught_up_before_the_merge(
    repos: Path, tmp_path: Path, previewed: bool
) -> None:
    """The target moved outside the engine (a commit by another tool) since the preview, and
    the engine has not merged the move into its documents yet: the apply is refused with
    CONFLICT when given the previewed heads, else merged onto the real head; never does
    it fail half-way with the merge left in the target's documents (committed onto it by
    the next commit, though the merge was said to have failed)."""
    demo = repos / "demo"
    config = make_config(repos, tmp_path / "data", commit_idle=60.0, commit_max_lag=120.0)
    config.ref_poll = 60.0  # the move is not noticed on its own
    async with CollabServer(config) as server, Client(server.url, user="alice") as alice:
        await alice.fork("demo", "main", "topic")
        await _edit(alice, "demo/topic:README.md", "# Demo, from topic\n")
        main_doc = await alice.open("demo/main:src/app.py")
        readme = await alice.open("demo/main:README.md")  # loaded: the merge would go in
        before = str(readme.text)
        preview = await alice.merge("demo", "topic", "main", apply=False)
        repo = Repo(str(demo))
        try:
            moved = commit_changes(
                repo,
                "main",
                {"other.txt": b"outside\n"},
                message="Outside the engine\n",
                author="Git User <git@example.com>",
                expected=read_ref(repo, b"refs/heads/main"),
            )
        finally:
            repo.close()
        heads = {"source_head": preview["source"], "target_head": preview["target"]}
        if previewed:
            with pytest.raises(ClientError) as refusal:
                await alice.merge("demo", "topic", "main", **heads)
            assert refusal.value.code == ErrorCode.CONFLICT
            main_doc.insert(0, "# typed\n")
            await alice.flush()
            head = await alice.commit("demo", "main")
            assert show(demo, head, "README.md") == before  # nothing of the merge
            assert str(readme.text) == before
        else:
            result = await alice.merge("demo", "topic", "main")
            assert result["applied"]
            head = git(demo, "rev-parse", "main").strip()
            assert show(demo, head, "README.md") == "# Demo, from topic\n"
        assert git(demo, "merge-base", "--is-ancestor", moved.decode(), head) == ""


async def test_a_merge_is_refused_for_its_permission_and_malformed_heads_first(
    secure_server: CollabServer, tokens: TokenAuthenticator
) -> None:
    """A reader's merge is refused as read-only, whatever else is wrong with it; a head that
    is no commit id is malformed, not a branch that moved."""
    reader = tokens.mint(user="rita", repo="demo", role=Role.READ)
    writer = tokens.mint(user="will", repo="demo", role=Role.WRITE)
    async with Client(secure_server.url, token=reader) as rita:
        for source in ("main", "nope"):  # into itself; from no branch
            with pytest.raises(ClientError) as refused:
                await rita.merge("demo", source, "main")
            assert refused.value.code == ErrorCode.READ_ONLY, source
    async with Client(secure_server.url, token=writer) as will:
        fork = await will.fork("demo", "main", "topic")
        for head in ("zz", "A" * 40, "1234"):
            with pytest.raises(ClientError) as malformed:
                await will.merge("demo", fork, "main", source_head=head)
            assert malformed.value.code == ErrorCode.MALFORMED, head


async def test_a_merge_putting_a_file_above_an_open_new_file_closes_its_document(
    fast_server: CollabServer, repos: Path
) -> None:
    """``nd/f.txt`` is open on the target, a new file with nothing typed yet; the merge
    brings a file ``nd``: the document can never be committed there, so it is closed
    (``NOT_TEXT``) rather than left to take typing that no commit would hold."""
    demo = repos / "demo"
    async with Client(fast_server.url, user="alice") as alice:
        await alice.fork("demo", "main", "source")
        await _edit(alice, "demo/source:nd", "nd is a file on the source\n")
        await alice.commit("demo", "source")
        doc = await alice.open("demo/main:nd/f.txt")
        result = await alice.merge("demo", "source", "main")
        assert result["applied"]
        with pytest.raises(ClientError):  # closes it
            await doc.wait_for(lambda _text: False, timeout=10)
        assert doc.error is not None and doc.error.code == ErrorCode.NOT_TEXT
        with pytest.raises(ClientError) as refused:
            await alice.open("demo/main:nd/f.txt")
        assert refused.value.code == ErrorCode.NOT_TEXT
        assert await alice.commit("demo", "main") == result["commit"]
    assert show(demo, "main", "nd") == "nd is a file on the source\n"
