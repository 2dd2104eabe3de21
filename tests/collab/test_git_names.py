"""Names and files a repository must not be given from a live document: a second name for a
repository, the names some filesystem takes for ``.git``, and ``.gitmodules`` or
``.gitattributes`` text that git's fsck refuses. The real ``git`` CLI checks what was
committed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from dulwich.repo import Repo
from eventwait import Events
from gitcli import git, require_git

from collab import Client, CollabServer
from collab.client import ClientError
from collab.git.rescue_paths import rescue_paths
from gitsync.objects.commits import commit_changes, read_ref
from gitsync.repos import create_demo_repo
from protocol.errors import ErrorCode
from protocol.names import MAX_PATH_COMPONENT, validate_path


@pytest.fixture(autouse=True)
def _git_cli() -> None:
    require_git()


@pytest.mark.parametrize(
    "doc_id",
    [
        "demo.git/main:README.md",  # repository "demo" again, as a second room
        "demo.GIT/main:README.md",
        "demo/main:.GIT./config",  # .git on NTFS, HFS+ or through a short name
        "demo/main:.git /config",
        "demo/main:git~1/config",
        "demo/main:src/.g\u200cit/config",
    ],
)
async def test_a_second_name_for_a_repository_or_for_dot_git_is_refused(
    server: CollabServer, doc_id: str
) -> None:
    async with Client(server.url, user="mallory") as mallory:
        with pytest.raises(ClientError) as info:
            await mallory.open(doc_id)
        assert info.value.code == ErrorCode.BAD_NAME
        readme = await mallory.open("demo/main:README.md")  # the connection goes on
        assert str(readme.text)


HOSTILE = '[submodule "x"]\n\tpath = x\n\turl = --upload-pack=touch${IFS}/tmp/pwned\n'
FINE = '[submodule "x"]\n\tpath = x\n\turl = https://example.com/x.git\n'


async def test_gitmodules_text_git_refuses_is_not_committed_until_it_passes(
    server: CollabServer, repos: Path
) -> None:
    demo = repos / "demo"
    async with (
        Client(server.url, user="watcher") as watcher,
        Client(server.url, user="mallory") as mallory,
    ):
        await watcher.subscribe("events.subscribe", repo="demo")
        modules = await mallory.open("demo/main:.gitmodules")
        attributes = await mallory.open("demo/main:.GITATTRIBUTES")
        readme = await mallory.open("demo/main:README.md")
        modules.insert(0, HOSTILE)
        attributes.insert(0, "*" + "x" * 3000 + " text\n")  # a line too long for git
        readme.insert(0, "still committed\n")
        await mallory.flush()
        await mallory.commit("demo", "main")
        events = Events(watcher)
        held = await events.wait_for("held", path=".gitmodules", cause="fsck")
        assert held["problem"] == "gitmodulesUrl"
        await events.wait_for("held", path=".GITATTRIBUTES", problem="gitattributesLineLength")
        files = git(demo, "ls-tree", "-r", "--name-only", "main").split()
        assert ".gitmodules" not in files and ".GITATTRIBUTES" not in files
        assert git(demo, "show", "main:README.md").startswith("still committed\n")
        await asyncio.to_thread(git, demo, "fsck", "--full", "--strict")
        modules.delete(0, len(str(modules.text)))
        modules.insert(0, FINE)
        await mallory.flush()
        await mallory.commit("demo", "main")
    assert git(demo, "show", "main:.gitmodules") == FINE
    await asyncio.to_thread(git, demo, "fsck", "--full", "--strict")


async def test_a_merge_that_would_make_a_gitmodules_git_refuses_is_refused(
    server: CollabServer, repos: Path
) -> None:
    """Each side passes git's fsck (a section renamed to ``submodule`` on one, a URL that
    reads as an option set in a section fsck does not look at on the other); their merge
    would not. It is refused, and nothing changes."""
    demo = repos / "demo"
    async with Client(server.url, user="alice") as alice:
        base = await alice.open("demo/main:.gitmodules")
        base.insert(0, '[foo "a"]\n\tpath = a\n\turl = https://example.com/a\n')
        await alice.flush()
        await alice.commit("demo", "main")
        for side, old, new in [
            ("renamed", '[foo "a"]', '[submodule "a"]'),
            ("optioned", "https://example.com/a", "--upload-pack=touch${IFS}/tmp/pwned"),
        ]:
            await alice.fork("demo", "main", side)
            doc = await alice.open(f"demo/{side}:.gitmodules")
            at = str(doc.text).index(old)
            doc.delete(at, len(old))
            doc.insert(at, new)
            await alice.flush()
            await alice.commit("demo", side)
        await asyncio.to_thread(git, demo, "fsck", "--full", "--strict")
        before = git(demo, "rev-parse", "renamed").strip()
        with pytest.raises(ClientError) as info:
            await alice.merge("demo", "optioned", "renamed")
        assert info.value.code == ErrorCode.CONFLICT
        assert ".gitmodules (gitmodulesUrl" in info.value.message
        assert git(demo, "rev-parse", "renamed").strip() == before
    await asyncio.to_thread(git, demo, "fsck", "--full", "--strict")


async def test_held_gitmodules_text_rescued_from_a_move_is_kept_beside_it(
    server: CollabServer, repos: Path, tmp_path: Path
) -> None:
    """A ``.gitmodules`` held back (git's fsck refuses its text), then made a binary file
    by a push (git's fsck takes a binary one for a warning only): its live text goes to the rescue branch as ``.gitmodules.rescued``, not as a
    ``.gitmodules`` that would make the repository fail ``git fsck``."""
    demo = repos / "demo"
    async with Client(server.url, user="bob") as bob:
        modules = await bob.open("demo/main:.gitmodules")
        modules.insert(0, HOSTILE)
        await bob.flush()
        await bob.commit("demo", "main")  # held
        synced = git(demo, "rev-parse", "main").strip()
        work = tmp_path / "outside"
        url = server.url.replace("ws://", "http://bob:dev@") + "/git/demo.git"
        await asyncio.to_thread(git, tmp_path, "clone", "-q", url, str(work))
        (work / ".gitmodules").write_bytes(b"\x00\x01binary\xff")
        await asyncio.to_thread(git, work, "add", "-A")
        await asyncio.to_thread(git, work, "commit", "-qm", "a binary .gitmodules")
        await asyncio.to_thread(git, work, "push", "-q", "origin", "HEAD:main")
        await bob.commit("demo", "main")
    rescued = f"main-rescued-{synced[:7]}"
    assert git(demo, "show", f"{rescued}:.gitmodules.rescued") == HOSTILE
    assert ".gitmodules" not in git(demo, "ls-tree", "--name-only", rescued).split()
    await asyncio.to_thread(git, demo, "fsck", "--full", "--strict")


def test_rescued_text_goes_where_the_commit_has_a_place_for_it(tmp_path: Path) -> None:
    """Each text kept on a rescue branch goes at its own path where the commit it starts
    from has a place for a file there, and no other text is a file where a directory of it
    would be; else at the top of the tree under a name that validates and no entry or
    other text has (as long a name as a component may be, at most); a ``.gitmodules`` git's
    fsck refuses, beside it. Committed together, the branch passes ``git fsck``."""
    bare = create_demo_repo(
        tmp_path / "kept.git",
        {"nd": "a file\n", "nf/x": "inside\n", "nd-f.txt.rescued": "taken\n", "p.txt": "p\n"},
    )
    deep = "/".join(["d" * 120] * 3) + "/f.txt"
    texts = {
        "nd/f.txt": b"below a file\n",
        "nf": b"where a directory is\n",
        "p.txt": b"over a file\n",
        "new": b"a new file\n",
        "new/a.md": b"below a new file\n",
        ".gitmodules": HOSTILE.encode(),
        "nd/deep/" + deep: b"deep\n",
    }
    with Repo(str(bare)) as repo:
        head = read_ref(repo, b"refs/heads/main")
        kept = rescue_paths(repo, head, texts)
        commit_changes(
            repo,
            "kept",
            {kept[path]: text for path, text in texts.items()},
            message="kept\n",
            author="bob <bob@example.com>",
            expected=head,
            text_only=True,
            new_branch=True,
        )
    long = kept.pop("nd/deep/" + deep)
    assert kept == {
        "nd/f.txt": "nd-f.txt-2.rescued",
        "nf": "nf.rescued",
        "p.txt": "p.txt",
        "new": "new",
        "new/a.md": "new-a.md.rescued",
        ".gitmodules": ".gitmodules.rescued",
    }
    assert "/" not in long and len(long.encode()) <= MAX_PATH_COMPONENT
    assert long.endswith("d-f.txt.rescued") and validate_path(long) == long
    for path, at in [*kept.items(), ("nd/deep/" + deep, long)]:
        assert git(bare, "show", f"kept:{at}").encode() == texts[path]
    git(bare, "fsck", "--full", "--strict")
