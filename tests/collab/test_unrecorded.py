"""Stored documents a repository has no record of (``collab.git.unrecorded``): found with one
listing of the store per repository, not a look-up per branch; and, in a cluster, rescued
once whichever nodes open them."""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path

import pytest
from gitcli import git, is_ancestor, show
from redisproc import RedisProcess
from servers import make_config

from collab import Client, CollabServer


async def test_people_joining_cost_one_listing_of_the_store_per_repository(
    repos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each person's own branch, made by ``branch.join`` and opened, asks the store nothing
    about stored documents of another history: the repository's documents are listed once,
    on its first use (the look-up per new branch kept a Redis node's new clients from
    syncing at 200 documents)."""
    listed: list[str] = []
    async with CollabServer(make_config(repos, tmp_path / "data")) as server:
        store = server.store
        keys = store.keys

        async def counted(prefix: str = "") -> list[str]:
            listed.append(prefix)
            return await keys(prefix)

        monkeypatch.setattr(store, "keys", counted)
        for n in range(6):
            async with Client(server.url, user=f"user{n}") as person:
                own = await person.join("demo")
                doc = await person.open(f"demo/{own}:README.md")
                doc.insert(0, f"typed by user{n}\n")
                await person.flush()
    assert listed.count("demo/") == 1
    assert [prefix for prefix in listed if prefix.startswith("demo/people/")] == []


def replace_with_a_clone(repo: Path, tmp_path: Path, line: str) -> str:
    """Replace the bare repository ``repo`` by a ``git clone`` of it (without the engine's
    records) that holds one more commit on main, adding ``line`` to its README; its head."""
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
    return git(repo, "rev-parse", "main").strip()


def cluster(repos: Path, tmp_path: Path, redis: RedisProcess) -> list[CollabServer]:
    return [
        CollabServer(
            make_config(
                repos,
                tmp_path / f"node{i}",
                redis=redis.url,
                node_id=f"n{i}",
                commit_idle=60.0,  # only a stop or a branch.commit commits
                commit_max_lag=60.0,
            )
        )
        for i in range(2)
    ]


async def test_a_repository_replaced_under_a_stopped_cluster_is_rescued_once_by_its_nodes(
    repos: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Two nodes share a Redis store; main's README was typed in, and the repository is
    replaced by a clone with one more commit while both are stopped. Each node lists the
    store once and finds main's documents unrecorded; opened on both at once, they come to
    read as the clone's head on both, the stored text is kept once, on
    ``main-rescued-<head>``, and what is typed after is committed on top of the newer
    commit."""
    demo = repos / "demo"
    redis = RedisProcess(tmp_path / "redis")
    redis.start()
    try:
        servers = cluster(repos, tmp_path, redis)
        for server in servers:
            await server.start()
        try:
            async with Client(servers[0].url, user="alice") as alice:
                doc = await alice.open("demo/main:README.md")
                doc.insert(0, "typed before the stop\n")
                await alice.flush()
                live = str(doc.text)
        finally:
            for server in servers:
                await server.stop()
        assert show(demo, "main", "README.md") == live
        head = replace_with_a_clone(demo, tmp_path, "added while it was elsewhere\n")
        newer = show(demo, "main", "README.md")

        servers = cluster(repos, tmp_path, redis)
        for server in servers:
            await server.start()
        try:
            async with (
                Client(servers[0].url, user="bob") as bob,
                Client(servers[1].url, user="carol") as carol,
            ):
                docs = await asyncio.gather(
                    bob.open("demo/main:README.md"), carol.open("demo/main:README.md")
                )
                for doc in docs:
                    await doc.wait_for(lambda text: text == newer, timeout=10)
                docs[1].insert(0, "typed after\n")
                await carol.flush()
                await docs[0].wait_for(lambda text: text.startswith("typed after\n"), timeout=10)
                await bob.commit("demo", "main")
        finally:
            for server in servers:
                await server.stop()
    finally:
        redis.stop()
    assert show(demo, "main", "README.md") == "typed after\n" + newer
    assert is_ancestor(demo, head, "main")
    rescued = git(demo, "for-each-ref", "--format=%(refname:short)", "refs/heads/").split()
    assert [name for name in rescued if "rescued" in name] == [f"main-rescued-{head[:7]}"]
    assert show(demo, f"main-rescued-{head[:7]}", "README.md") == live
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("demo/main: the repository holds no record" in error for error in errors)
    git(demo, "fsck", "--full", "--strict")
