"""The git bridge of a live server (``collab.server.git_http``) with the git CLI: clone, fetch and
push, branches made and deleted, refusals with their reasons, replayed and gzip-encoded
request bodies, unknown services, and tokens. Large pushes and fsck's checks are in
``test_git_push``; the git service's own units in ``tests/gitsync/test_smart_http``."""

from __future__ import annotations

import asyncio
import gzip
import os
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import dulwich.server
import psutil
import pytest
from dulwich.objects import Blob, Commit, Tree
from dulwich.repo import Repo
from packbuild import blob, copies_of, pack
from servers import SECRET, make_config

import collab.server.git_http
from collab import CollabServer
from collab.server.auth import Role, TokenAuthenticator
from gitsync.objects.commits import commit_changes, read_ref, set_synced

AUTHOR = "Server <server@example.com>"
GIT_ENV = {
    **{k: v for k, v in os.environ.items() if not k.startswith("GIT_")},
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_AUTHOR_NAME": "Git CLI",
    "GIT_AUTHOR_EMAIL": "cli@example.com",
    "GIT_COMMITTER_NAME": "Git CLI",
    "GIT_COMMITTER_EMAIL": "cli@example.com",
}


def run_git(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        ["git", *args], cwd=cwd, env=GIT_ENV, capture_output=True, text=True, timeout=120
    )
    if check and done.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {done.stderr}")
    return done


async def git(cwd: Path, *args: str) -> str:
    """The git CLI's output, run in a thread: the server under test runs on this loop."""
    return (await asyncio.to_thread(run_git, cwd, *args)).stdout


async def git_refused(cwd: Path, *args: str) -> str:
    """Run a git command that must fail; its stderr."""
    done = await asyncio.to_thread(run_git, cwd, *args, check=False)
    assert done.returncode != 0, (args, done.stdout)
    return done.stderr


@dataclass
class Bridge:
    """A live server whose repository ``repo`` (bare, empty at first) is at ``repo_path``;
    ``requests`` holds each git service request the bridge ran, its body as decoded, and
    ``pushed`` the branch moves the bridge published."""

    server: CollabServer
    repo_path: Path
    requests: list[tuple[str, bytes]] = field(default_factory=list)
    pushed: list[tuple[str, str | None, str | None]] = field(default_factory=list)

    @property
    def http(self) -> str:
        return self.server.url.replace("ws://", "http://")

    def url(self, credentials: str = "alice:dev") -> str:
        """The repository's URL (in dev mode the user name is who you are)."""
        return self.http.replace("http://", f"http://{credentials}@") + "/git/repo.git"


async def start_bridge(
    root: Path, data: Path, monkeypatch: pytest.MonkeyPatch, **overrides: object
) -> Bridge:
    repo_path = root / "repo.git"
    run_git(root.parent, "init", "-q", "--bare", "-b", "main", str(repo_path))
    server = CollabServer(make_config(root, data, commit_idle=60.0, **overrides))
    bridge = Bridge(server, repo_path)
    real = collab.server.git_http.run_service
    real_fetch = collab.server.git_http.fetch_pieces

    def recording(path: Path, service: str, body: Any, *args: Any, **kwargs: Any) -> Any:
        bridge.requests.append((service, body.read()))
        body.seek(0)
        return real(path, service, body, *args, **kwargs)

    def recording_fetch(path: Path, body: Any, *args: Any, **kwargs: Any) -> Any:
        bridge.requests.append(("git-upload-pack", body.read()))
        body.seek(0)
        return real_fetch(path, body, *args, **kwargs)

    def on_event(_repo: str, event: dict[str, Any]) -> None:
        if event["kind"] == "ref" and event["cause"] == "push":
            bridge.pushed.append((event["branch"], event["old"], event["new"]))

    monkeypatch.setattr(collab.server.git_http, "run_service", recording)
    monkeypatch.setattr(collab.server.git_http, "fetch_pieces", recording_fetch)
    await server.start()
    server.events.subscribe("repo", on_event)
    return bridge


@pytest.fixture
async def bridge(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Bridge]:
    """A dev-mode server."""
    started = await start_bridge(tmp_path / "repos", tmp_path / "data", monkeypatch)
    try:
        yield started
    finally:
        await started.server.stop()


def _commit(repo_path: Path, branch: str, changes: dict[str, bytes | None]) -> str:
    with Repo(str(repo_path)) as repo:
        head = read_ref(repo, b"refs/heads/" + branch.encode())
        sha = commit_changes(
            repo, branch, changes, message="server edit\n", author=AUTHOR, expected=head
        )
    return sha.decode()


async def server_commit(bridge: Bridge, branch: str, changes: dict[str, bytes | None]) -> str:
    """A commit made on the server's side by another tool (a ref moved outside the bridge)."""
    return await asyncio.to_thread(_commit, bridge.repo_path, branch, changes)


def refs(repo_path: Path) -> dict[bytes, bytes]:
    with Repo(str(repo_path)) as repo:
        return {bytes(k): bytes(v) for k, v in repo.refs.as_dict().items()}


def server_head(bridge: Bridge, branch: str = "main") -> str | None:
    sha = refs(bridge.repo_path).get(b"refs/heads/" + branch.encode())
    return None if sha is None else sha.decode()


def command(service: str, body: bytes) -> str:
    """What a recorded request was: ``push``, or the v2 command of a fetch request."""
    if service == "git-receive-pack":
        return "push"
    first = body[4 : int(body[:4], 16)].rstrip(b"\n")
    return first.removeprefix(b"command=").decode()


def fsck_clean(repo_path: Path) -> None:
    done = run_git(repo_path, "fsck", "--full", "--strict", "--no-dangling", check=False)
    assert done.returncode == 0 and done.stdout == "" and "error" not in done.stderr, done


async def clone(bridge: Bridge, tmp_path: Path, url: str | None = None) -> Path:
    work = tmp_path / "clone"
    await git(tmp_path, "clone", "-q", url or bridge.url(), str(work))
    return work


async def post(
    bridge: Bridge, service: str, body: bytes, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    """A git service request made by hand to the bridge: (HTTP status, reply body); a fetch
    in protocol v2 (what the git CLI speaks)."""
    if service == "git-upload-pack":
        headers = {"Git-Protocol": "version=2", **(headers or {})}
    async with (
        aiohttp.ClientSession(auto_decompress=False) as http,
        http.post(
            f"{bridge.http}/git/repo.git/{service}?user=alice",
            data=body,
            headers={"Content-Type": f"application/x-{service}-request", **(headers or {})},
        ) as reply,
    ):
        return reply.status, await reply.read()


async def test_clone_push_fetch_with_the_git_cli(bridge: Bridge, tmp_path: Path) -> None:
    first = await server_commit(
        bridge, "main", {"README.md": b"hello\n", "src/app.py": b"print(1)\n"}
    )
    with Repo(str(bridge.repo_path)) as repo:
        set_synced(repo, "main", first.encode())
    work = await clone(bridge, tmp_path)
    assert (work / "src" / "app.py").read_bytes() == b"print(1)\n"
    assert (await git(work, "rev-parse", "HEAD")).strip() == first
    remote_refs = await git(work, "ls-remote", "origin")
    assert "refs/heads/main" in remote_refs and "refs/collab" not in remote_refs

    (work / "src" / "app.py").write_bytes(b"print(2)\n")
    await git(work, "commit", "-qam", "from the CLI")
    pushed = (await git(work, "rev-parse", "HEAD")).strip()
    await git(work, "push", "-q", "origin", "main")
    assert server_head(bridge) == pushed
    assert bridge.pushed == [("main", first, pushed)]

    later = await server_commit(bridge, "main", {"README.md": b"hello again\n"})
    await git(work, "fetch", "-q", "origin")
    assert (await git(work, "rev-parse", "origin/main")).strip() == later
    await git(work, "merge", "-q", "--ff-only", "origin/main")
    assert (work / "README.md").read_bytes() == b"hello again\n"
    # protocol v2: the refs are listed (ls-refs) before a fetch, and by ls-remote
    assert [command(service, body) for service, body in bridge.requests] == [
        "ls-refs",
        "fetch",
        "ls-refs",
        "push",
        "ls-refs",
        "fetch",
    ]
    fsck_clean(bridge.repo_path)


async def test_branches_are_created_and_deleted_by_push(bridge: Bridge, tmp_path: Path) -> None:
    await server_commit(bridge, "main", {"a.txt": b"a\n"})
    work = await clone(bridge, tmp_path)
    await git(work, "checkout", "-qb", "topic")
    (work / "b.txt").write_bytes(b"b\n")
    await git(work, "add", "b.txt")
    await git(work, "commit", "-qm", "topic work")
    await git(work, "push", "-q", "origin", "topic")
    topic = (await git(work, "rev-parse", "HEAD")).strip()
    assert server_head(bridge, "topic") == topic
    await git(work, "push", "-q", "origin", "--delete", "topic")
    assert server_head(bridge, "topic") is None
    assert bridge.pushed == [("topic", None, topic), ("topic", topic, None)]


async def test_refused_pushes_leave_refs_alone(bridge: Bridge, tmp_path: Path) -> None:
    head = await server_commit(bridge, "main", {"a.txt": b"a\n"})
    work = await clone(bridge, tmp_path)
    await server_commit(bridge, "main", {"a.txt": b"moved on the server\n"})
    before = refs(bridge.repo_path)
    await git(work, "commit", "-q", "--amend", "-m", "rewritten")
    assert "non-fast-forward" in await git_refused(work, "push", "--force", "origin", "main")
    await git(work, "reset", "-q", "--hard", head)
    await git(work, "commit", "-q", "--allow-empty", "-m", "private")
    private = await git_refused(work, "push", "origin", "HEAD:refs/collab/synced/main")
    assert "private" in private
    await git_refused(work, "push", "origin", "HEAD:refs/heads/people/x.lock")
    assert refs(bridge.repo_path) == before
    assert bridge.pushed == []


async def test_push_based_on_a_stale_ref_is_refused(bridge: Bridge, tmp_path: Path) -> None:
    await server_commit(bridge, "main", {"a.txt": b"a\n"})
    work = await clone(bridge, tmp_path)
    (work / "a.txt").write_bytes(b"from the client\n")
    await git(work, "commit", "-qam", "client")
    await git(work, "push", "-q", "origin", "main")
    service, body = bridge.requests[-1]
    assert service == "git-receive-pack"
    moved = await server_commit(bridge, "main", {"a.txt": b"server again\n"})
    # The same push again: it names the old value the client saw, which the ref no longer has.
    status, reply = await post(bridge, service, body)
    assert status == 200
    assert b"ng refs/heads/main fetch first: the branch moved on since it was fetched" in reply
    assert server_head(bridge) == moved


async def test_gzip_request_bodies(bridge: Bridge, tmp_path: Path) -> None:
    await server_commit(bridge, "main", {"a.txt": b"a\n"})
    work = await clone(bridge, tmp_path)
    await server_commit(bridge, "main", {"b.txt": b"b\n"})
    await git(work, "fetch", "-q", "origin")
    service, body = bridge.requests[-1]  # as the bridge decoded it
    assert service == "git-upload-pack"
    plain = await post(bridge, service, body)
    zipped = await post(bridge, service, gzip.compress(body), {"Content-Encoding": "gzip"})
    assert plain[0] == 200 and b"PACK" in plain[1]
    assert zipped == plain
    assert bridge.requests[-1] == bridge.requests[-2] == (service, body)
    status, reply = await post(bridge, service, b"\x1f\x8bnot gzip", {"Content-Encoding": "gzip"})
    assert status == 400 and b"malformed git request" in reply


async def test_advertisement_and_unknown_services(bridge: Bridge) -> None:
    head = await server_commit(bridge, "main", {"a.txt": b"a\n"})
    async with aiohttp.ClientSession() as http:
        base = f"{bridge.http}/git/repo.git"
        async with http.get(f"{base}/info/refs?service=git-upload-pack&user=a") as reply:
            assert reply.content_type == "application/x-git-upload-pack-advertisement"
            body = await reply.read()
        assert body.startswith(b"001e# service=git-upload-pack\n0000")
        assert f"{head} HEAD\x00".encode() in body and f"{head} refs/heads/main\n".encode() in body
        async with http.get(f"{base}/info/refs?service=git-receive-pack&user=a") as reply:
            assert reply.content_type == "application/x-git-receive-pack-advertisement"
            assert b"report-status" in await reply.read()
        for bad in ("git-upload-archive", "upload-pack", ""):
            async with http.get(f"{base}/info/refs?service={bad}&user=a") as reply:
                assert reply.status == 400, bad  # only smart HTTP is served
            if bad:
                async with http.post(f"{base}/{bad}?user=a", data=b"0000") as reply:
                    assert 400 <= reply.status < 500, bad
                    assert f"no git service {bad!r}" in await reply.text()
        async with http.get(
            f"{bridge.http}/git/nope.git/info/refs?service=git-upload-pack&user=a"
        ) as reply:
            assert reply.status == 404
    assert bridge.requests == []


async def test_push_checks_do_not_rest_on_dulwichs_receive_pack(
    bridge: Bridge, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every check is this project's own code on public pieces of dulwich. With dulwich's
    receive-pack handler unusable (as an override of its private methods would be after an
    upgrade renamed them), pushes still land and every check still holds."""

    def unusable(*args: object, **kwargs: object) -> None:
        raise AssertionError("dulwich's receive-pack handler was used")

    for name in ("__init__", "handle", "_apply_pack", "_report_status"):
        monkeypatch.setattr(dulwich.server.ReceivePackHandler, name, unusable)

    first = await server_commit(bridge, "main", {"a.txt": b"a\n"})
    work = await clone(bridge, tmp_path)
    (work / "a.txt").write_bytes(b"pushed\n")
    await git(work, "commit", "-qam", "push")
    await git(work, "push", "-q", "origin", "main")
    pushed = server_head(bridge)
    assert pushed == (await git(work, "rev-parse", "HEAD")).strip() != first

    await git(work, "commit", "-q", "--amend", "-m", "rewritten")
    refused = await git_refused(work, "push", "--force", "origin", "main")
    assert "(non-fast-forward: alice may force-push only people/alice-" in refused
    await git(work, "reset", "-q", "--hard", "origin/main")
    private = await git_refused(work, "push", "origin", "HEAD:refs/collab/x")
    assert "(refs/collab/ is private to the server)" in private
    assert "(invalid branch name)" in await git_refused(
        work, "push", "origin", "HEAD:refs/heads/-x"
    )
    deleted = await git_refused(work, "push", "origin", ":main")
    assert "(the default branch (HEAD) may not be deleted)" in deleted
    assert pushed is not None
    with Repo(str(work)) as repo:  # a tree that would write the checkout's .git/config
        blob = Blob.from_string(b"[core]\n\thooksPath = /tmp\n")
        inner = Tree()
        inner.add(b"config", 0o100644, blob.id)
        outer = Tree()
        outer.add(b".git", 0o040000, inner.id)
        commit = Commit()
        commit.tree, commit.parents = outer.id, [pushed.encode()]
        commit.author = commit.committer = b"Git CLI <cli@example.com>"
        commit.author_time = commit.commit_time = 1_700_000_000
        commit.author_timezone = commit.commit_timezone = 0
        commit.message = b"evil\n"
        for obj in (blob, inner, outer, commit):
            repo.object_store.add_object(obj)
        repo.refs[b"refs/heads/main"] = commit.id
    assert "(hasDotgit: contains '.git')" in await git_refused(work, "push", "origin", "main")
    # compare-and-swap: the same push again, after the branch moved on the server
    await git(work, "reset", "-q", "--hard", "origin/main")
    (work / "b.txt").write_bytes(b"b\n")
    await git(work, "add", "b.txt")
    await git(work, "commit", "-qm", "b")
    await git(work, "push", "-q", "origin", "main")
    _, body = bridge.requests[-1]
    moved = await server_commit(bridge, "main", {"c.txt": b"c\n"})
    _, reply = await post(bridge, "git-receive-pack", body)
    assert b"ng refs/heads/main fetch first" in reply
    assert server_head(bridge) == moved
    assert sorted(k for k in refs(bridge.repo_path) if not k.startswith(b"refs/collab/")) == [
        b"HEAD",
        b"refs/heads/main",
    ]
    fsck_clean(bridge.repo_path)


async def test_tokens_decide_who_clones_fetches_and_pushes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokens = TokenAuthenticator(SECRET)
    bridge = await start_bridge(tmp_path / "repos", tmp_path / "data", monkeypatch, secret=SECRET)
    try:
        head = await server_commit(bridge, "main", {"a.txt": b"a\n"})
        writer = tokens.mint(user="alice", repo="repo", role=Role.WRITE)
        reader = tokens.mint(user="eve", repo="repo", role=Role.READ)
        elsewhere = tokens.mint(user="mallory", repo="other", role=Role.WRITE)
        forged = TokenAuthenticator(b"another-secret-0123456789").mint(
            user="mallory", repo="*", role=Role.WRITE
        )
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{bridge.http}/git/repo.git/info/refs?service=git-upload-pack") as reply,
        ):
            assert reply.status == 401 and "Basic" in reply.headers["WWW-Authenticate"]
        for i, (name, token) in enumerate((("anyone", ""), ("x", elsewhere), ("x", forged))):
            where = tmp_path / f"refused-{i}"
            url = bridge.url(f"{name}:{token}" if token else name)
            await git_refused(tmp_path, "clone", "-q", url, str(where))
            assert not where.exists()

        # a reader clones and fetches (the token as the password, or as a Bearer header)
        work = await clone(bridge, tmp_path, bridge.url(f"eve:{reader}"))
        assert (await git(work, "rev-parse", "HEAD")).strip() == head
        later = await server_commit(bridge, "main", {"a.txt": b"later\n"})
        bearer = f"http.extraHeader=Authorization: Bearer {reader}"
        await git(work, "-c", bearer, "fetch", "-q", f"{bridge.http}/git/repo.git")
        assert (await git(work, "rev-parse", "FETCH_HEAD")).strip() == later
        # ... but may not push, and is told why
        await git(work, "reset", "-q", "--hard", later)
        await git(work, "commit", "-q", "--allow-empty", "-m", "eve")
        refused = await git_refused(work, "push", "origin", "HEAD:main")
        assert "(eve may not push to 'main')" in refused
        assert server_head(bridge) == later
        # a writer's token pushes the same commit
        await git(work, "push", "-q", bridge.url(f"alice:{writer}"), "HEAD:main")
        assert server_head(bridge) == (await git(work, "rev-parse", "HEAD")).strip()
        assert bridge.pushed == [("main", later, server_head(bridge))]
        assert {service for service, _ in bridge.requests} == {
            "git-upload-pack",
            "git-receive-pack",
        }
    finally:
        await bridge.server.stop()


def _bomb_push(ref: bytes) -> bytes:
    """A push of ``ref`` whose pack is a few kilobytes and expands to 512 MiB: a 1 MiB blob
    of zeros and a delta that copies it 512 times."""
    base = bytes(1 << 20)
    line = b"0" * 40 + b" " + b"1" * 40 + b" " + ref + b"\0report-status\n"
    return b"%04x" % (len(line) + 4) + line + b"0000" + pack(blob(base), copies_of(base, 512))


async def test_a_push_that_would_expand_past_the_bound_is_refused_unexpanded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer's push whose pack declares an object past ``max_object`` is refused with
    git's "unpacker error" and the reason, before anything of it is expanded; a reader's,
    though its branch name is one git refuses, is refused before its pack is read."""
    tokens = TokenAuthenticator(SECRET)
    bridge = await start_bridge(tmp_path / "repos", tmp_path / "data", monkeypatch, secret=SECRET)
    try:
        head = await server_commit(bridge, "main", {"a.txt": b"a\n"})
        writer = tokens.mint(user="alice", repo="repo", role=Role.WRITE)
        reader = tokens.mint(user="eve", repo="repo", role=Role.READ)
        before = psutil.Process().memory_info().rss
        for token, ref in ((writer, b"refs/heads/main"), (reader, b"refs/heads/a..b")):
            async with (
                aiohttp.ClientSession() as http,
                http.post(
                    f"{bridge.http}/git/repo.git/git-receive-pack",
                    data=_bomb_push(ref),
                    headers={
                        "Content-Type": "application/x-git-receive-pack-request",
                        "Authorization": f"Bearer {token}",
                    },
                ) as reply,
            ):
                answer = await reply.read()
            if token == writer:
                assert reply.status == 200
                assert b"unpack a delta whose result is 536870912 bytes, over the limit" in answer
            else:  # refused as git shows it, the pack not read
                assert b"ng refs/heads/a..b eve may not push refs/heads/a..b" in answer
        assert psutil.Process().memory_info().rss - before < 64 * 1024 * 1024
        assert [service for service, _ in bridge.requests] == ["git-receive-pack"]  # the writer's
        assert server_head(bridge) == head
    finally:
        await bridge.server.stop()


async def test_a_push_that_expands_ten_times_its_size_is_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Histories compress well (5 to 20 times): the bound on what a push's objects expand
    to in all leaves room for that, with ``max_push`` sized to the pushes themselves."""
    bridge = await start_bridge(
        tmp_path / "repos", tmp_path / "data", monkeypatch, max_push=64 * 1024
    )
    try:
        await server_commit(bridge, "main", {"a.txt": b"a\n"})
        work = await clone(bridge, tmp_path)
        text = "".join(f"line {n} of a file that compresses well\n" for n in range(12_000))
        (work / "big.txt").write_text(text)  # about 470 KB, a few dozen KB packed
        await git(work, "add", "big.txt")
        await git(work, "commit", "-qm", "big")
        await git(work, "push", "-q", "origin", "HEAD:main")
        assert server_head(bridge) == (await git(work, "rev-parse", "HEAD")).strip()
    finally:
        await bridge.server.stop()
