"""The server end to end: Python clients and raw Yjs peers on a real loopback server."""

from __future__ import annotations

import asyncio
import resource
from pathlib import Path
from typing import Any

import aiohttp
from gitcli import until
from prometheus_client.parser import text_string_to_metric_families
from serverproc import ServerProcess
from servers import make_config
from yjsclient import YjsPeer

from collab import Client, ClientError, CollabServer


async def test_two_clients_edit_together(server: CollabServer) -> None:
    async with Client(server.url, user="alice") as a, Client(server.url, user="bob") as b:
        da = await a.open("demo/main:README.md")
        db = await b.open("demo/main:README.md")
        assert str(da) == str(db) == "# Demo\n\nHello from the demo repository.\n"
        da.text.insert(0, "A:")
        db.text += "-B"
        await db.wait_for(lambda t: t.startswith("A:") and t.endswith("-B"))
        await da.wait_for(lambda t: t.startswith("A:") and t.endswith("-B"))
        assert str(da) == str(db)


async def test_unicode_seed_and_edits_match_between_peers(server: CollabServer) -> None:
    async with (
        Client(server.url, user="alice") as a,
        YjsPeer(server.url, "demo/main:docs/unicode.txt", user="bob") as b,
    ):
        da = await a.open("demo/main:docs/unicode.txt")
        await asyncio.wait_for(b.synced.wait(), 5)
        assert str(b.text) == str(da) == "héllo wörld, 世界, 🎉 emoji\n"
        da.text += "ñ🙂"
        await b.wait_text(lambda t: t.endswith("ñ🙂"))


async def test_stock_protocol_and_engine_protocol_share_a_room(server: CollabServer) -> None:
    async with YjsPeer(server.url, "demo/main:src/app.py", user="js") as peer:
        await asyncio.wait_for(peer.synced.wait(), 5)
        async with Client(server.url, user="py") as client:
            doc = await client.open("demo/main:src/app.py")
            peer.text += "# from yjs\n"
            await doc.wait_for(lambda t: t.endswith("# from yjs\n"))
            doc.text.insert(0, "# from python\n")
            await peer.wait_text(lambda t: t.startswith("# from python\n"))


async def test_new_file_starts_empty_and_late_joiner_gets_text(server: CollabServer) -> None:
    async with Client(server.url, user="alice") as a:
        da = await a.open("demo/main:new/notes.md")
        assert str(da) == ""
        da.text += "late joiners see this"
        await a.flush()
        async with Client(server.url, user="bob") as b:
            db = await b.open("demo/main:new/notes.md")
            assert str(db) == "late joiners see this"


async def test_flush_means_durable_across_restart(repos: Path, tmp_path: Path) -> None:
    config = make_config(repos, tmp_path / "data")
    async with CollabServer(config) as srv, Client(srv.url, user="alice") as a:
        doc = await a.open("demo/main:README.md")
        for i in range(50):
            doc.text += f"<{i}>"
        await a.flush()
    async with (
        CollabServer(make_config(repos, tmp_path / "data")) as srv,
        Client(srv.url, user="bob") as b,
    ):
        doc = await b.open("demo/main:README.md")
        text = str(doc)
        for i in range(50):
            assert text.count(f"<{i}>") == 1


async def test_idle_room_unloads_after_grace_and_reloads_same_history(server: CollabServer) -> None:
    async with Client(server.url, user="alice") as a:
        doc = await a.open("demo/main:README.md")
        doc.text += "persisted"
        await a.flush()
        client_state = doc.doc.get_state()
    await until(lambda: len(server.rooms) == 0, what="the idle room unloaded")
    async with Client(server.url, user="alice") as a:
        doc = await a.open("demo/main:README.md")
        assert str(doc).endswith("persisted")
        assert doc.doc.get_state() == client_state


async def test_reconnecting_client_does_not_duplicate_text(server: CollabServer) -> None:
    async with (
        Client(server.url, user="alice", min_backoff=0.01) as a,
        Client(server.url, user="bob") as b,
    ):
        da = await a.open("demo/main:README.md")
        db = await b.open("demo/main:README.md")
        await a.drop_connection()
        da.text += "[offline edit]"  # made while disconnected; sent on resync
        await db.wait_for(lambda t: "[offline edit]" in t)
        # a duplicate would come with alice's resync, before anything she types after it
        da.text += "[after]"
        await db.wait_for(lambda t: "[after]" in t)
        assert str(db).count("[offline edit]") == 1
        assert str(da) == str(db)
        assert a.reconnects >= 1


async def test_awareness_is_relayed_with_server_stamped_name(server: CollabServer) -> None:
    async with Client(server.url, user="alice") as a, Client(server.url, user="bob") as b:
        da = await a.open("demo/main:README.md")
        db = await b.open("demo/main:README.md")
        da.set_awareness({"cursor": {"index": 3}, "user": {"name": "mallory", "color": "#f00"}})
        await db.wait_for(lambda _t: da.client_id in db.awareness)
        state = db.awareness[da.client_id]
        assert state["user"] == {"name": "alice", "color": "#f00"}
        assert state["cursor"] == {"index": 3}
    # alice left: her entry is removed for everyone still there
    async with Client(server.url, user="carol") as c, Client(server.url, user="dave") as d:
        dc = await c.open("demo/main:README.md")
        dd = await d.open("demo/main:README.md")
        dd.set_awareness({"cursor": {"index": 0}})
        # dave's state reaches carol with the room's states at her handshake or after them:
        # a stale state of alice's would have come first
        await dc.wait_for(lambda _t: dd.client_id in dc.awareness)
        assert da.client_id not in dc.awareness


async def test_awareness_foreign_client_ids_are_dropped(server: CollabServer) -> None:
    async with (
        YjsPeer(server.url, "demo/main:README.md", user="eve") as eve,
        YjsPeer(server.url, "demo/main:README.md", user="bob") as bob,
    ):
        await asyncio.wait_for(bob.synced.wait(), 5)
        await asyncio.wait_for(eve.synced.wait(), 5)
        await eve.set_awareness(111, 1, {"user": {"name": "eve"}})
        await eve.set_awareness(222, 1, {"user": {"name": "pretending"}})  # not eve's id
        await eve.set_awareness(111, 2, {"user": {"name": "eve"}, "after": True})
        # eve's states are relayed in the order she sent them: 222 would have come first
        await bob.wait_text(lambda _t: (bob.awareness.get(111) or {}).get("after") is True)
        assert 222 not in bob.awareness
        await eve.close()
        await bob.wait_text(lambda _t: bob.awareness.get(111, "gone") is None)


async def test_health_endpoint(server: CollabServer) -> None:
    import aiohttp

    url = server.url.replace("ws://", "http://") + "/healthz"
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        body = await resp.json()
    assert body["ok"] is True


async def _health_and_failing(server: ServerProcess) -> tuple[dict[str, Any], float, float]:
    """``/healthz``, and the metrics' ``collab_store_writes_failing`` and
    ``collab_store_write_errors_total``."""
    base = server.url.replace("ws://", "http://")
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/healthz") as resp:
            health = await resp.json()
        async with http.get(f"{base}/metrics") as resp:
            text = await resp.text()
    samples = {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    return (
        health,
        samples["collab_store_writes_failing"],
        samples["collab_store_write_errors_total"],
    )


async def test_failing_store_writes_show_in_healthz_and_metrics_until_one_succeeds(
    repos: Path, tmp_path: Path
) -> None:
    """A store that cannot be written (here a file size limit, as a full disk does) fails
    every edit: ``/healthz`` says so (``ok`` false, ``store`` why) and the metrics count it,
    until a write succeeds again (the limit lifted)."""
    limit = 1024 * 1024
    hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))

    idle = ("--commit-idle", "1000", "--commit-max-lag", "1000")
    server = ServerProcess(
        repos,
        tmp_path / "data",
        extra_args=("--completion-backend", "none", *idle),
        preexec=small_files,
    )
    await server.start()
    try:
        health, failing, errors = await _health_and_failing(server)
        assert health["ok"] is True and health["store"] == [] and (failing, errors) == (0, 0)
        async with Client(server.url, user="ann", reconnect=False) as ann:
            doc = await ann.open("demo/main:README.md")
            for _ in range(2 * limit // 65536):  # past the limit
                doc.text += "x" * 65536
                try:
                    await ann.flush(timeout=5)
                except (TimeoutError, ConnectionError, ClientError):
                    break
            else:
                raise AssertionError("every write succeeded")
        await until(lambda: _failing(server), 10)
        health, failing, errors = await _health_and_failing(server)
        assert health["ok"] is False
        assert health["store"][0].startswith("writes fail: "), health
        assert failing == 1 and errors >= 1

        assert server.proc is not None
        resource.prlimit(server.proc.pid, resource.RLIMIT_FSIZE, (hard, hard))
        async with Client(server.url, user="bob") as bob:
            doc = await bob.open("demo/main:README.md")
            doc.text += "after"
            await bob.flush()
        health, failing, _errors = await _health_and_failing(server)
        assert health["ok"] is True and health["store"] == [] and failing == 0
    finally:
        await server.stop()


async def _failing(server: ServerProcess) -> bool:
    health, _failing, _errors = await _health_and_failing(server)
    return not health["ok"]
