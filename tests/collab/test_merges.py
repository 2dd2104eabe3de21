"""Merges as git would record them: commits and conflict markers name the branches, and a
merge the preview calls a fast-forward is applied as one unless a merge commit is asked for."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from gitcli import git, show
from servers import make_config

from collab import Client, CollabServer


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
