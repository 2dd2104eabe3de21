"""Several ``collab serve --redis`` nodes on one real ``redis-server`` and one repositories'
directory: stock Yjs and Python clients spread over them, moving between nodes, and a node
killed with ``kill -9`` mid-run."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from eventwait import Events
from jsfleet import JsFleet, require_js
from redis.asyncio import Redis
from redisproc import RedisProcess
from serverproc import ServerProcess
from yjsclient import caret

from collab import Client, Document
from collab.cli.cluster_commands import cluster_status
from collab.client import ClientError
from protocol.errors import ErrorCode

ROOM = "demo/main:README.md"
GIT_ENV = {"GIT_CONFIG_NOSYSTEM": "1", "HOME": "/nonexistent"}


def boundaries(text: str) -> list[int]:
    """Where an insert cannot split a marker: 0, after each ';', the end."""
    return sorted({0, len(text), *(i + 1 for i, ch in enumerate(text) if ch == ";")})


async def type_markers(doc: Document, rng: random.Random, prefix: str, count: int) -> list[str]:
    made = []
    for _ in range(count):
        marker = f"{prefix}{rng.randrange(10**9)};"
        doc.insert(rng.choice(boundaries(str(doc))), marker)
        made.append(marker)
        await asyncio.sleep(rng.random() * 0.01)
    return made


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not await check():
                await asyncio.sleep(0.05)
    except TimeoutError:
        pytest.fail(f"timed out after {timeout} s waiting for {what}")


def git_text(repos: Path, path: str = "README.md") -> str:
    done = subprocess.run(
        ["git", "--git-dir", str(repos / "demo"), "show", f"main:{path}"],
        capture_output=True,
        env=GIT_ENV,
        check=True,
    )
    return done.stdout.decode()


async def converged_once(
    docs: list[Document], everything: list[str], repos: Path, *, git_what: str = ""
) -> str:
    """Wait until every client holds every marker, all hold the same text, and git holds it;
    assert each marker is there once. The text."""
    for doc in docs:
        await doc.wait_for(lambda t: all(m in t for m in everything), timeout=30)

    async def same() -> bool:
        return len({str(doc) for doc in docs}) == 1

    await eventually(same, 20, "every client's text to be the same")
    final = str(docs[0])
    assert {m: final.count(m) for m in everything if final.count(m) != 1} == {}

    async def committed() -> bool:
        return await asyncio.to_thread(git_text, repos) == final

    await eventually(committed, 30, "git to hold the live text" + git_what)
    return final


@pytest.fixture
def redis(tmp_path: Path) -> RedisProcess:
    server = RedisProcess(tmp_path / "redis")
    server.start()
    yield server  # type: ignore[misc]
    server.stop()


class Nodes:
    """Three ``collab serve`` processes, nodes of one cluster."""

    def __init__(
        self,
        repos: Path,
        tmp_path: Path,
        redis: RedisProcess,
        count: int = 3,
        extra: tuple[str, ...] = (),
    ) -> None:
        self.nodes = [
            ServerProcess(
                repos,
                tmp_path / f"node{i}" / "data",
                extra_args=(
                    "--redis",
                    redis.url,
                    "--node-id",
                    f"n{i}",
                    *(extra or ("--commit-idle", "0.3", "--commit-max-lag", "2")),
                ),
            )
            for i in range(count)
        ]

    async def start(self) -> None:
        for node in self.nodes:
            node.data_dir.parent.mkdir(parents=True, exist_ok=True)
        await asyncio.gather(*(node.start() for node in self.nodes))

    async def stop(self) -> None:
        await asyncio.gather(*(node.stop() for node in self.nodes))


@pytest.fixture
async def nodes(repos: Path, tmp_path: Path, redis: RedisProcess) -> AsyncIterator[Nodes]:
    made = Nodes(repos, tmp_path, redis)
    await made.start()
    try:
        yield made
    finally:
        await made.stop()


def move(client: Client, node: ServerProcess) -> None:
    """Point a client at another node; its next reconnect goes there."""
    client.url = node.url + "/ws"


async def test_clients_spread_over_three_nodes_converge_and_git_holds_the_text(
    nodes: Nodes, repos: Path, redis: RedisProcess
) -> None:
    require_js()
    rng = random.Random(7)
    seed = git_text(repos)
    clients = [
        Client(node.url, user=f"py{i}", min_backoff=0.02, max_backoff=0.2)
        for i, node in enumerate(nodes.nodes)
    ]
    async with JsFleet() as fleet:
        js = ["js0", "js2"]
        for name, node in zip(js, (nodes.nodes[0], nodes.nodes[2]), strict=True):
            reply = await fleet.call_ok(
                "open", client=name, url=f"{node.url}/yjs", room=ROOM, params={"user": name}
            )
            assert reply["client_id"]
        try:
            for client in clients:
                await client.connect()
            docs = [await client.open(ROOM) for client in clients]
            assert all(str(doc) == seed for doc in docs)
            markers: list[str] = []
            for rnd in range(4):
                # Python clients move to random nodes; JS clients drop and come back
                for client in clients:
                    if rng.random() < 0.5:
                        move(client, rng.choice(nodes.nodes))
                        await client.drop_connection()
                typing = [
                    type_markers(doc, random.Random(rng.random()), f"P{i}r{rnd}-", 8)
                    for i, doc in enumerate(docs)
                ]
                js_typing = [
                    fleet.call_ok(
                        "random_edits",
                        client=name,
                        count=8,
                        marker_prefix=f"J{name}r{rnd}-",
                        seed=rng.randrange(2**31),
                        interval_ms=3,
                    )
                    for name in js
                ]
                results = await asyncio.gather(*typing, *js_typing)
                for made in results[: len(docs)]:
                    markers += made
                for reply in results[len(docs) :]:
                    markers += reply["markers"]
                if rnd == 1:
                    await fleet.call_ok("disconnect", client="js2")
                    await fleet.call_ok("connect", client="js2")
            assert len(markers) == len(set(markers))
            await asyncio.gather(*(client.flush() for client in clients))
            for doc in docs:
                await doc.wait_for(lambda t: all(m in t for m in markers), timeout=20)
            for name in js:
                reply = await fleet.call(
                    "wait_text", client=name, contains=markers, timeout_ms=20000
                )
                assert reply["ok"], f"{name} is missing {reply.get('missing')}"

            async def converged() -> bool:
                texts = {str(doc) for doc in docs}
                for name in js:
                    texts.add(str((await fleet.call_ok("text", client=name))["text"]))
                return len(texts) == 1

            await eventually(converged, 20, "every client's text to be the same")
            final = str(docs[0])
            assert {m: final.count(m) for m in markers if final.count(m) != 1} == {}
            for client in clients:
                assert client.errors == []

            async def committed() -> bool:
                return await asyncio.to_thread(git_text, repos) == final

            await eventually(committed, 30, "git to hold the live text")
            async with aiohttp.ClientSession() as session:
                url = nodes.nodes[1].url.replace("ws://", "http://") + "/healthz"
                async with session.get(url) as response:
                    health = await response.json()
            assert health["degraded"] is False
            assert health["cluster"]["node"] == "n1"
            assert health["cluster"]["nodes"] == ["n0", "n1", "n2"]

            async def described() -> bool:
                status = await cluster_status(redis.url)
                names = [node["node"] for node in status["nodes"]]
                return names == ["n0", "n1", "n2"] and (
                    sum(node["connections"] for node in status["nodes"]) == len(clients) + len(js)
                )

            await eventually(described, 10, "collab cluster status to show every connection")
            table = subprocess.run(
                [sys.executable, "-m", "collab", "cluster", "status", "--redis", redis.url],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            assert "NODE" in table and "n2" in table and "documents  1 in the shared store" in table
        finally:
            for client in clients:
                await client.close()


async def test_a_node_killed_mid_run_loses_nothing_acknowledged(nodes: Nodes, repos: Path) -> None:
    rng = random.Random(11)
    victim, survivors = nodes.nodes[0], nodes.nodes[1:]
    clients = [
        Client(node.url, user=f"u{i}", min_backoff=0.05, max_backoff=0.3)
        for i, node in enumerate([victim, victim, *survivors])
    ]
    try:
        for client in clients:
            await client.connect()
        docs = [await client.open(ROOM) for client in clients]
        made = await asyncio.gather(
            *(type_markers(doc, random.Random(i), f"a{i}-", 15) for i, doc in enumerate(docs))
        )
        await asyncio.gather(*(client.flush() for client in clients))
        acknowledged = [m for ms in made for m in ms]
        typing = [
            asyncio.create_task(type_markers(doc, random.Random(10 + i), f"b{i}-", 30))
            for i, doc in enumerate(docs)
        ]
        await asyncio.sleep(0.1)
        await victim.kill()  # its clients go to the other nodes
        for client in clients[:2]:
            move(client, rng.choice(survivors))
        later = await asyncio.gather(*typing)
        await asyncio.gather(*(client.flush() for client in clients))
        everything = acknowledged + [m for ms in later for m in ms]
        await converged_once(docs, everything, repos, git_what=" (the lease moved)")
        subprocess.run(
            ["git", "--git-dir", str(repos / "demo"), "fsck", "--full", "--strict"],
            env=GIT_ENV,
            check=True,
            capture_output=True,
        )
    finally:
        for client in clients:
            await client.close()


async def health(node: ServerProcess) -> dict[str, object]:
    async with aiohttp.ClientSession() as session:
        url = node.url.replace("ws://", "http://") + "/healthz"
        async with session.get(url) as response:
            return dict(await response.json())


@pytest.mark.parametrize("fault", ["restart", "pause"])
async def test_redis_restarted_or_paused_mid_run_loses_and_doubles_nothing(
    nodes: Nodes, repos: Path, redis: RedisProcess, fault: str
) -> None:
    clients = [
        Client(node.url, user=f"u{i}", min_backoff=0.05, max_backoff=0.3)
        for i, node in enumerate(nodes.nodes)
    ]
    try:
        for client in clients:
            await client.connect()
        docs = [await client.open(ROOM) for client in clients]
        typing = [
            asyncio.create_task(type_markers(doc, random.Random(i), f"c{i}-", 60))
            for i, doc in enumerate(docs)
        ]
        await asyncio.sleep(0.15)
        if fault == "restart":
            redis.kill()  # what it had fsynced to its append-only file is all that is left
        else:
            redis.pause()

        async def degraded() -> bool:
            return (await health(nodes.nodes[0]))["degraded"] is True

        await eventually(degraded, 20, "the node to report itself degraded")
        # while Redis is away, the peers of one node still see each other's typing
        async with Client(nodes.nodes[0].url, user="neighbour") as neighbour:
            near = await neighbour.open(ROOM)
            docs[0].insert(0, "typed during the outage;")
            await near.wait_for(lambda text: "typed during the outage;" in text, timeout=20)
        if fault == "restart":
            redis.start()
        else:
            redis.resume()
        made = await asyncio.gather(*typing)
        await asyncio.gather(*(client.flush() for client in clients))
        everything = [m for ms in made for m in ms] + ["typed during the outage;"]
        await converged_once(docs, everything, repos)

        async def recovered() -> bool:
            return (await health(nodes.nodes[0]))["degraded"] is False

        await eventually(recovered, 20, "the node to be healthy again")
    finally:
        for client in clients:
            await client.close()


async def typed_through(
    clients: list[Client], fault: Callable[[], object], *, later: int, after: float
) -> tuple[list[Document], list[str]]:
    """``clients`` open ``ROOM`` and type 15 markers each; then ``later`` more each, with
    ``fault()`` made ``after`` seconds into them. Their documents, and every marker typed,
    once all are flushed."""
    for client in clients:
        await client.connect()
    docs = [await client.open(ROOM) for client in clients]
    first = await asyncio.gather(
        *(type_markers(doc, random.Random(i), f"a{i}-", 15) for i, doc in enumerate(docs))
    )
    await asyncio.gather(*(client.flush() for client in clients))
    typing = [
        asyncio.create_task(type_markers(doc, random.Random(10 + i), f"b{i}-", later))
        for i, doc in enumerate(docs)
    ]
    await asyncio.sleep(after)
    fault()
    made = await asyncio.gather(*typing)
    await asyncio.gather(*(client.flush(timeout=30) for client in clients))
    return docs, [m for ms in first + made for m in ms]


async def test_redis_restarted_without_its_data_mid_run_loses_and_doubles_nothing(
    nodes: Nodes, repos: Path, redis: RedisProcess
) -> None:
    """Redis is killed, its files removed, and started again while clients on three nodes
    type. The updates a node took that the others had not read yet are gone from Redis but
    not from that node's room: written back from there, they reach every node, and the
    updates typed after them (which Yjs cannot apply without them) with them."""
    clients = [
        Client(node.url, user=f"u{i}", min_backoff=0.05, max_backoff=0.3)
        for i, node in enumerate(nodes.nodes)
    ]
    try:
        docs, everything = await typed_through(clients, redis.restart_empty, later=60, after=0.1)
        await converged_once(docs, everything, repos)
    finally:
        for client in clients:
            await client.close()


@pytest.mark.parametrize("lost", ["all", "seq"])
async def test_a_documents_keys_deleted_mid_run_lose_and_double_nothing(
    nodes: Nodes, repos: Path, redis: RedisProcess, lost: str
) -> None:
    """One document's keys are deleted from Redis (an operator's mistake, an eviction)
    while clients on two nodes type: its seqs start again. Every node that holds it writes
    its state back and reloads it; every acknowledged marker ends up once in every client
    and in git. A counter deleted alone goes on from the log's end."""
    from redis import Redis

    clients = [
        Client(nodes.nodes[i % 2].url, user=f"u{i}", min_backoff=0.05, max_backoff=0.3)
        for i in range(3)
    ]
    direct = Redis.from_url(redis.url)
    names = ["seq"] if lost == "seq" else ["log", "snap", "seq"]

    def delete() -> None:
        assert direct.delete(*(f"collab:doc:{ROOM}:{name}" for name in names)) >= 1

    try:
        docs, everything = await typed_through(clients, delete, later=40, after=0.2)
        await converged_once(docs, everything, repos)
        for client in clients:
            assert client.errors == []
        async with Client(nodes.nodes[2].url, user="late") as late:  # a node that loads it now
            text = str(await late.open(ROOM))
            assert {m: text.count(m) for m in everything if text.count(m) != 1} == {}
    finally:
        direct.close()
        for client in clients:
            await client.close()


async def deleted_once_allowed(admin: Client, branch: str, what: str) -> None:
    """Ask for ``branch.delete`` of ``branch`` until it is done; refused meanwhile (CONFLICT:
    a document of it still counts as open somewhere)."""

    async def deleted() -> bool:
        try:
            await admin.call("branch.delete", repo="demo", name=branch)
        except ClientError as exc:
            assert exc.code == ErrorCode.CONFLICT
            return False
        return True

    await eventually(deleted, 15, what)


async def test_a_branch_open_on_another_node_is_not_deleted(nodes: Nodes, repos: Path) -> None:
    """As on one node, ``branch.delete`` is refused (CONFLICT) while a document of the branch
    is open, wherever it is open; once it is closed everywhere, the branch is deleted."""
    here, there = nodes.nodes[0], nodes.nodes[1]
    async with Client(here.url, user="admin") as admin, Client(there.url, user="ed") as ed:
        topic = await admin.fork("demo", "main", "topic")
        doc = await ed.open(f"demo/{topic}:README.md")
        doc.insert(0, "typed on the other node;")
        await ed.flush()
        await asyncio.sleep(1.5)  # the other node's key has been renewed since it opened
        with pytest.raises(ClientError) as refused:
            await admin.call("branch.delete", repo="demo", name=topic)
        assert refused.value.code == ErrorCode.CONFLICT
        assert "open documents" in refused.value.message
        assert "typed on the other node;" in str(doc)
        await doc.close()  # closed on the other node: it unloads after its grace
        await deleted_once_allowed(admin, topic, "the branch to be deleted once closed everywhere")


async def test_a_branch_open_on_a_node_that_dies_is_deleted_once_its_key_lapses(
    nodes: Nodes, repos: Path
) -> None:
    """A node killed (``kill -9``) with a document of the branch open releases nothing: its
    branches stop counting as open once its key lapses (3 s), and the branch is deleted."""
    here, there = nodes.nodes[0], nodes.nodes[1]
    async with Client(here.url, user="admin") as admin:
        topic = await admin.fork("demo", "main", "topic")
        async with Client(there.url, user="ed", max_backoff=0.2) as ed:
            await ed.open(f"demo/{topic}:README.md")
            await asyncio.sleep(1.5)  # the other node's beat has listed the branch since
            with pytest.raises(ClientError) as refused:
                await admin.call("branch.delete", repo="demo", name=topic)
            assert refused.value.code == ErrorCode.CONFLICT
            assert "on node n1" in refused.value.message
            await there.kill()
            await deleted_once_allowed(admin, topic, "the branch to be deleted once its node died")


async def test_a_nodes_key_does_not_grow_with_the_branches_it_has_open(
    nodes: Nodes, repos: Path, redis: RedisProcess
) -> None:
    """The node's key, rewritten at every beat, holds no list of its open branches: it is
    the same size with 1 branch open as with 25; the branches are in a set beside it, which
    ``collab cluster status`` reads."""
    here, there = nodes.nodes[0], nodes.nodes[1]
    client = Redis.from_url(redis.url)
    try:
        async with Client(here.url, user="admin") as admin, Client(there.url, user="ed") as ed:
            topics = [await admin.fork("demo", "main", f"topic-{i:02}") for i in range(25)]
            await ed.open(f"demo/{topics[0]}:README.md")
            await asyncio.sleep(1.5)  # a beat since
            one = await client.get("collab:node:n1")
            for topic in topics[1:]:
                await ed.open(f"demo/{topic}:README.md")
            await asyncio.sleep(1.5)
            many = await client.get("collab:node:n1")
            assert one is not None and many is not None
            assert abs(len(many) - len(one)) < 16, (one, many)  # "at", "redis_ms", "rooms"

            async def listed() -> bool:
                status = await cluster_status(redis.url)
                opened = {node["node"]: node.get("open") for node in status["nodes"]}
                return opened == {"n0": [], "n1": [f"demo/{t}" for t in topics], "n2": []}

            await eventually(listed, 5, "collab cluster status to list n1's open branches")
            with pytest.raises(ClientError) as refused:
                await admin.call("branch.delete", repo="demo", name=topics[-1])
            assert refused.value.code == ErrorCode.CONFLICT
    finally:
        await client.aclose()


async def test_a_commit_asked_for_while_redis_is_paused_answers_without_waiting_for_it(
    nodes: Nodes, repos: Path, redis: RedisProcess
) -> None:
    """While Redis does not answer, a commit (which needs the branch's lease) fails within
    the store's write timeout instead of holding the branch until Redis is back; once it
    is, the commit is made."""
    async with Client(nodes.nodes[0].url, user="ann") as ann:
        doc = await ann.open(ROOM)
        doc.insert(0, "before the pause;")
        await ann.flush()
        redis.pause()
        try:
            loop = asyncio.get_running_loop()
            asked = loop.time()
            with pytest.raises(ClientError):
                await asyncio.wait_for(ann.commit("demo", "main"), 12)
            assert loop.time() - asked < 12
        finally:
            redis.resume()

        async def committed() -> bool:
            return "before the pause;" in await asyncio.to_thread(git_text, repos)

        await eventually(committed, 30, "the commit once Redis is back")


async def test_a_fetch_asked_for_while_redis_is_paused_is_answered_without_waiting_for_it(
    nodes: Nodes, redis: RedisProcess
) -> None:
    """While Redis does not answer, a git fetch from a node is answered from what the node
    holds (edits pending on other nodes are not looked for then), not held until the
    shared store gives up (a minute) and then refused."""
    async with Client(nodes.nodes[0].url, user="ann") as ann:
        doc = await ann.open(ROOM)
        doc.insert(0, "typed on node 0;")
        await ann.flush()
        redis.pause()
        try:
            loop = asyncio.get_running_loop()
            url = nodes.nodes[1].url.replace("ws://", "http://ann:dev@") + "/git/demo.git"
            asked = loop.time()
            done = await asyncio.to_thread(
                subprocess.run,
                ["git", "ls-remote", url],
                capture_output=True,
                env={**os.environ, **GIT_ENV},
                timeout=90,
            )
            assert done.returncode == 0, done.stderr
            assert b"refs/heads/main" in done.stdout
            assert loop.time() - asked < 20
        finally:
            redis.resume()


async def test_a_push_to_one_node_reaches_the_editors_on_another(
    nodes: Nodes, repos: Path, tmp_path: Path
) -> None:
    """A server-side edit (a git push merged into the live document) crosses nodes as a
    client's does."""
    pusher, editor_node = nodes.nodes[0], nodes.nodes[2]
    async with Client(editor_node.url, user="ed") as editor:
        doc = await editor.open(ROOM)
        doc.insert(0, "typed live;")
        await editor.flush()
        remote = pusher.url.replace("ws://", "http://alice:dev@") + "/git/demo.git"
        work = tmp_path / "clone"

        def git(*args: str, cwd: Path = tmp_path) -> None:
            env = {**GIT_ENV, "GIT_AUTHOR_NAME": "A", "GIT_AUTHOR_EMAIL": "a@example.com"}
            env |= {"GIT_COMMITTER_NAME": "A", "GIT_COMMITTER_EMAIL": "a@example.com"}
            env["PATH"] = os.environ["PATH"]
            subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)

        # the live edit is committed before the push is answered, so clone after it lands
        async def live_edit_committed() -> bool:
            return "typed live;" in await asyncio.to_thread(git_text, repos)

        await eventually(live_edit_committed, 20, "the live edit to be committed")
        await asyncio.to_thread(git, "clone", "-q", remote, str(work))
        readme = work / "README.md"
        readme.write_text(readme.read_text() + "pushed through node 0\n")
        await asyncio.to_thread(git, "commit", "-qam", "push", cwd=work)
        await asyncio.to_thread(git, "push", "-q", "origin", "main", cwd=work)
        await doc.wait_for(lambda text: "pushed through node 0" in text, timeout=20)
        assert str(doc).count("typed live;") == 1


async def test_a_worker_connected_to_one_node_serves_completions_on_another(
    repos: Path, tmp_path: Path, redis: RedisProcess
) -> None:
    """No node has a worker of its own (``--completion-backend none``); one ``collab worker``
    connects to node 0, and a client of node 2 gets its completions."""
    nodes = Nodes(repos, tmp_path, redis, extra=("--completion-backend", "none"))
    await nodes.start()
    worker = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "collab",
        "worker",
        "--url",
        nodes.nodes[0].url,
        "--user",
        "gpu",
        "--backend",
        "local",
        "--name",
        "w0",
        "--log-level",
        "WARNING",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with Client(nodes.nodes[2].url, user="ann") as ann:
            doc = await ann.open("demo/main:src/app.py")
            doc.insert(len(str(doc)), "def greet(name):\n    return 'hello ' + name\n")
            doc.insert(len(str(doc)), "def farewell(name):\n    return 'hel")
            await ann.flush()

            async def served() -> bool:
                try:
                    reply = await ann.complete(doc, len(str(doc)))
                except ClientError as exc:
                    assert exc.code == ErrorCode.UNAVAILABLE  # until node 2 learns of w0
                    await asyncio.sleep(0.2)
                    return False
                assert reply["model"] == "local-ngram"
                assert reply["text"].startswith("lo ")
                return True

            await eventually(served, 20, "a completion from the worker on node 0")
    finally:
        worker.kill()
        await worker.wait()
        await nodes.stop()


async def test_cursors_cross_nodes_stamped_and_leave_with_a_killed_node(nodes: Nodes) -> None:
    require_js()
    victim, other = nodes.nodes[0], nodes.nodes[1]
    state = {
        "user": {"name": "spoof", "color": "#0a0"},
        "cursor": caret(3, 5),
    }
    async with JsFleet() as fleet:
        reply = await fleet.call_ok(
            "open",
            client="js",
            url=f"{victim.url}/yjs",
            room=ROOM,
            params={"user": "jessie"},
            awareness=state,
        )
        js_id = int(reply["client_id"])
        async with Client(other.url, user="pyra") as client:
            doc = await client.open(ROOM)
            # the name is stamped on the JS client's node, and the state crosses to node 1
            await doc.wait_for(lambda _t: js_id in doc.awareness, timeout=10)
            assert doc.awareness[js_id]["user"] == {"name": "jessie", "color": "#0a0"}
            doc.set_awareness({"user": {"name": "mallory"}, "cursor": {"index": 7}})
            py_key = str(doc.client_id)

            async def js_sees_python() -> bool:
                seen = await fleet.call_ok("state", client="js")
                return py_key in seen["awareness"]

            await eventually(js_sees_python, 10, "the JS client to see the Python cursor")
            seen = await fleet.call_ok("state", client="js")
            assert seen["awareness"][py_key]["user"] == {"name": "pyra"}
            await victim.kill()  # the JS client's node dies: its cursor goes with it
            await doc.wait_for(lambda _t: js_id not in doc.awareness, timeout=15)


async def test_edits_a_killed_node_left_uncommitted_are_committed_by_the_next(
    repos: Path, tmp_path: Path, redis: RedisProcess
) -> None:
    nodes = Nodes(repos, tmp_path, redis, count=2, extra=("--commit-idle", "2"))
    await nodes.start()
    victim, survivor = nodes.nodes
    try:
        async with Client(victim.url, user="ann") as ann:
            doc = await ann.open(ROOM)
            doc.insert(0, "typed just before the crash;")
            await ann.flush()  # acknowledged: in Redis
            await victim.kill()  # before its commit (2 s after the last edit) was due
        assert "typed just before the crash;" not in git_text(repos)
        async with Client(survivor.url, user="bob") as bob:
            await bob.open(ROOM)  # nobody types again: loading it is enough

            async def committed() -> bool:
                text = await asyncio.to_thread(git_text, repos)
                return "typed just before the crash;" in text

            await eventually(committed, 20, "the surviving node to commit the edit")
    finally:
        await nodes.stop()


async def test_repository_events_reach_the_subscribers_of_every_node(nodes: Nodes) -> None:
    async with (
        Client(nodes.nodes[2].url, user="watcher") as watcher,
        Client(nodes.nodes[0].url, user="alice") as alice,
    ):
        await watcher.subscribe("events.subscribe", repo="demo")
        await asyncio.sleep(0.3)  # the nodes' event subscriptions are in place
        doc = await alice.open(ROOM)
        doc.insert(0, "x;")
        await alice.flush()
        events = Events(watcher)
        # alice is on node 0, the watcher on node 2: presence and commits cross nodes, once
        await events.wait_for(
            "presence", timeout=20, user="alice", branch="main", path="README.md", action="join"
        )
        await events.wait_for("commit", timeout=20, branch="main", authors=["alice"])
        seen = events.seen
        joins = [e for e in seen if e.get("kind") == "presence" and e.get("user") == "alice"]
        assert len([e for e in joins if e.get("action") == "join"]) == 1
