"""``GET /metrics``: Prometheus text, scraped from a real server, values that follow real traffic."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from unittest import mock

import aiohttp
import prometheus_client
import pytest
from aiohttp.test_utils import make_mocked_request
from prometheus_client.parser import text_string_to_metric_families
from servers import SECRET, make_config
from yjsclient import YjsPeer

from collab import Client, ClientError, CollabServer
from collab.cli.commands import main
from collab.server.auth import AuthError, DevAuthenticator, Role, TokenAuthenticator
from collab.server.metrics import authorize_metrics
from protocol.errors import ErrorCode

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(server: CollabServer, **query: str) -> Samples:
    base = server.url.replace("ws://", "http://")
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{base}/metrics", params=query) as response,
    ):
        assert response.status == 200, await response.text()
        assert response.headers["Content-Type"].startswith("text/plain; version=")
        text = await response.text()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, /, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def eventually(server: CollabServer, check: object, timeout: float = 5.0) -> Samples:
    """Scrape until ``check(samples)`` holds."""
    assert callable(check)
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        samples = await scrape(server)
        if check(samples) or asyncio.get_running_loop().time() > deadline:
            return samples
        await asyncio.sleep(0.05)


async def test_values_follow_traffic_on_both_endpoints(server: CollabServer) -> None:
    before = await scrape(server)
    assert value(before, "collab_rooms_loaded") == 0
    assert value(before, "collab_connections", endpoint="ws") == 0
    assert value(before, "collab_updates_received_total", endpoint="ws") == 0
    assert value(before, "collab_store_write_seconds_count") == 0

    async with (
        Client(server.url, user="alice") as alice,
        YjsPeer(server.url, "demo/main:README.md", user="bob") as bob,
    ):
        await asyncio.wait_for(bob.synced.wait(), 5)
        doc = await alice.open("demo/main:README.md")
        for i in range(5):
            doc.text.insert(0, f"{i}")
        await alice.flush()
        await bob.wait_text(lambda t: t.startswith("43210"))
        bob.text += "!"
        await doc.wait_for(lambda t: t.endswith("!"))
        await alice.flush()
        during = await scrape(server)

    assert value(during, "collab_rooms_loaded") == 1
    assert value(during, "collab_connections", endpoint="ws") == 1
    assert value(during, "collab_connections", endpoint="yjs") == 1
    assert value(during, "collab_updates_received_total", endpoint="ws") >= 5
    assert value(during, "collab_updates_received_total", endpoint="yjs") >= 1
    assert value(during, "collab_updates_sent_total", endpoint="yjs") >= 5  # alice's, to bob
    assert value(during, "collab_updates_sent_total", endpoint="ws") >= 1  # bob's, to alice
    for endpoint in ("ws", "yjs"):
        assert value(during, "collab_received_bytes_total", endpoint=endpoint) > 0
        assert value(during, "collab_sent_bytes_total", endpoint=endpoint) > 0
    assert value(during, "collab_store_appends_total") >= 6
    assert value(during, "collab_store_write_seconds_count") >= 1
    assert value(during, "collab_store_write_seconds_sum") > 0
    assert value(during, "collab_store_fsync_seconds_count") >= 1
    assert value(during, "collab_store_fsyncs_total") >= 1
    assert value(during, "collab_send_queue_frames", endpoint="ws") >= 0
    assert ("collab_send_queue_max_bytes", frozenset({("endpoint", "yjs")})) in during

    after = await eventually(server, lambda s: value(s, "collab_connections", endpoint="yjs") == 0)
    assert value(after, "collab_connections", endpoint="ws") == 0
    assert value(after, "collab_connections", endpoint="yjs") == 0
    # counters keep what closed connections did
    received = value(after, "collab_updates_received_total", endpoint="ws")
    assert received == value(during, "collab_updates_received_total", endpoint="ws")


async def test_commit_and_merge_latency(server: CollabServer) -> None:
    async with Client(server.url, user="alice") as alice:
        topic = await alice.fork("demo", "main", "topic")
        doc = await alice.open(f"demo/{topic}:src/app.py")
        doc.text += "# from topic\n"
        await alice.flush()
        await alice.commit("demo", topic)
        result = await alice.merge("demo", topic, "main")
        assert result["applied"]
    samples = await scrape(server)
    assert value(samples, "collab_git_commit_seconds_count") >= 1
    assert value(samples, "collab_git_commit_seconds_bucket", le="+Inf") >= 1
    assert value(samples, "collab_merge_seconds_count") == 1
    assert value(samples, "collab_merge_seconds_sum") > 0


async def test_refusals_by_endpoint_kind_and_code(server: CollabServer) -> None:
    with pytest.raises(ClientError):  # dev mode without a user name: closed with 4001
        async with Client(server.url) as nobody:
            await nobody.open("demo/main:README.md")
    async with Client(server.url, user="alice") as alice:
        with pytest.raises(ClientError):
            await alice.open("demo/main:../escape")  # an Error message: BAD_NAME
    async with YjsPeer(server.url, "demo/main:README.md") as anonymous:  # no ?user=
        await anonymous.wait_closed()
    base = server.url.replace("ws://", "http://")
    async with aiohttp.ClientSession() as http, http.post(f"{base}/api/branch.list") as response:
        assert response.status == 401
    samples = await scrape(server)

    def refused(endpoint: str, kind: str, code: ErrorCode) -> float:
        labels = {"endpoint": endpoint, "kind": kind, "code": str(int(code)), "name": code.name}
        return value(samples, "collab_refusals_total", **labels)

    assert refused("ws", "close", ErrorCode.UNAUTHORIZED) == 1
    assert refused("ws", "error", ErrorCode.BAD_NAME) == 1
    assert refused("yjs", "close", ErrorCode.UNAUTHORIZED) == 1
    assert refused("api", "error", ErrorCode.UNAUTHORIZED) == 1


def test_metrics_access_rules() -> None:
    tokens = TokenAuthenticator(SECRET)
    metrics = tokens.mint(user="prometheus", repo="*", role=Role.METRICS)
    writer = tokens.mint(user="alice", repo="*", role=Role.WRITE)
    for remote in ("127.0.0.1", "::1"):
        authorize_metrics(tokens, token=None, remote=remote)
    authorize_metrics(tokens, token=metrics, remote="10.0.0.7")
    for token, code in (
        (None, ErrorCode.UNAUTHORIZED),
        ("v1.forged.token", ErrorCode.UNAUTHORIZED),
        (writer, ErrorCode.FORBIDDEN),
    ):
        with pytest.raises(AuthError) as info:
            authorize_metrics(tokens, token=token, remote="10.0.0.7")
        assert info.value.code is code
    with pytest.raises(AuthError) as info:
        authorize_metrics(DevAuthenticator(), token=metrics, remote="10.0.0.7")
    assert info.value.code is ErrorCode.UNAUTHORIZED


def test_metrics_token_opens_no_document() -> None:
    identity = TokenAuthenticator(SECRET).authenticate(
        token=TokenAuthenticator(SECRET).mint(user="prom", repo="*", role=Role.METRICS),
        user=None,
        remote="10.0.0.7",
    )
    assert not identity.can_read("demo")
    assert not identity.can_write_branch("demo", identity.own_branch)


async def test_handler_refuses_a_remote_caller_without_a_metrics_token(
    secure_server: CollabServer, tokens: TokenAuthenticator
) -> None:
    """The handler itself, with a request from a non-loopback address (a real one is not
    available to a test bound to loopback)."""

    async def get(headers: dict[str, str]) -> int:
        transport = mock.Mock()
        transport.get_extra_info.side_effect = lambda name, default=None: (
            ("10.0.0.7", 40000) if name == "peername" else default
        )
        request = make_mocked_request("GET", "/metrics", headers=headers, transport=transport)
        assert request.remote == "10.0.0.7"
        response = await secure_server.metrics.handle(request)
        return response.status

    metrics = tokens.mint(user="prometheus", repo="*", role=Role.METRICS)
    writer = tokens.mint(user="alice", repo="*", role=Role.WRITE)
    assert await get({}) == 401
    assert await get({"Authorization": f"Bearer {writer}"}) == 403
    assert await get({"Authorization": f"Bearer {metrics}"}) == 200
    samples = await scrape(secure_server)  # loopback: no token needed, even with a secret
    refused = value(
        samples,
        "collab_refusals_total",
        endpoint="api",
        kind="error",
        code="4003",
        name="FORBIDDEN",
    )
    assert refused == 1


async def test_each_server_has_its_own_registry(repos: Path, tmp_path: Path) -> None:
    first = CollabServer(make_config(repos, tmp_path / "a", store="memory"))
    others = tmp_path / "others"  # (one server per repositories' directory)
    shutil.copytree(repos, others)
    second = CollabServer(make_config(others, tmp_path / "b", store="memory"))
    assert first.metrics.registry is not second.metrics.registry
    assert prometheus_client.REGISTRY not in (first.metrics.registry, second.metrics.registry)
    async with first, second, Client(first.url, user="alice") as alice:
        doc = await alice.open("demo/main:README.md")
        doc.text += "x"
        await alice.flush()
        one, two = await scrape(first), await scrape(second)
    assert value(one, "collab_updates_received_total", endpoint="ws") == 1
    assert value(two, "collab_updates_received_total", endpoint="ws") == 0
    assert ("collab_store_appends_total", frozenset()) not in one  # memory store: no counters


def test_collab_token_mints_a_metrics_token(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COLLAB_SECRET", SECRET.decode())
    assert main(["token", "--user", "prometheus", "--role", "metrics", "--ttl", "0"]) == 0
    token = capsys.readouterr().out.strip()
    authorize_metrics(TokenAuthenticator(SECRET), token=token, remote="10.0.0.7")


async def test_a_peer_that_answers_no_ping_is_dropped_not_counted_as_a_bad_frame(
    repos: Path, tmp_path: Path
) -> None:
    """A stock peer gone silent (its machine asleep): dropped, and no refusal counted."""
    config = make_config(repos, tmp_path / "data", heartbeat=0.4)
    async with CollabServer(config) as server, aiohttp.ClientSession() as http:
        base = server.url.replace("ws://", "http://")
        async with http.ws_connect(f"{base}/yjs/demo/main:README.md?user=bob", autoping=False):
            connected = {"endpoint": "yjs"}
            samples = await eventually(
                server, lambda s: value(s, "collab_connections", **connected) == 1
            )
            assert value(samples, "collab_connections", **connected) == 1
            # (nothing read: no ping is answered) dropped after half the heartbeat
            samples = await eventually(
                server, lambda s: value(s, "collab_connections", **connected) == 0
            )
            assert value(samples, "collab_connections", **connected) == 0
        refusals = {
            labels: count
            for (name, labels), count in samples.items()
            if name == "collab_refusals_total" and count
        }
        assert refusals == {}
