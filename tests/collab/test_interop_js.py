"""Stock JS Yjs clients (y-websocket, driven by ``tests/js/fleet.mjs``) and Python clients together.

Every test here talks to a real server over loopback: convergence under random disconnects with
non-ASCII text (UTF-16 in JS, UTF-8 in pycrdt, code points in Python), awareness with the name
stamped by the server, read-only and refused tokens, and ``kill -9`` with JS clients typing.
"""

from __future__ import annotations

import asyncio
import random
import re
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from gitcli import git, until
from jsfleet import JsFleet, require_js
from serverproc import ServerProcess
from servers import make_config
from test_crash import stored_text
from yjsclient import YjsPeer, caret

from collab import Client, CollabServer, Document
from collab.server.auth import Role, TokenAuthenticator
from protocol.errors import ErrorCode
from protocol.lib0 import write_var_string, write_var_uint
from protocol.yjs import YjsLimits

pytestmark = pytest.mark.js

ROOM = "demo/main:docs/unicode.txt"  # seeded with "héllo wörld, 世界, 🎉 emoji\n"
SEED = "héllo wörld, 世界, 🎉 emoji\n"

# Marker prefixes: unique first letters, no prefix is a suffix of another, no ';' inside.
# A marker is "<prefix>-<n>;" (fleet random_edits and the Python typist) or "<prefix>x<n>;".
JS_PREFIXES = ["Jé0", "J世1", "J🎉2", "J👩\u200d💻3"]
PY_PREFIXES = ["Pé0", "P世1", "P😀2"]


# -- helpers ------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _require_js() -> None:
    require_js()


@pytest.fixture
async def fleet() -> AsyncIterator[JsFleet]:
    async with JsFleet() as f:
        yield f


def boundaries(text: str) -> list[int]:
    """Code point positions where an insert cannot split a marker: 0, after each ';', the end."""
    return sorted({0, len(text), *(i + 1 for i, ch in enumerate(text) if ch == ";")})


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def marker_counts(text: str, markers: Iterable[str]) -> dict[str, int]:
    """Markers that do not occur exactly once in ``text``, with their counts."""
    return {m: text.count(m) for m in markers if text.count(m) != 1}


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    """Poll ``check`` until it holds; fail with ``what`` after ``timeout`` seconds."""
    try:
        async with asyncio.timeout(timeout):
            while not await check():
                await asyncio.sleep(0.05)
    except TimeoutError:
        pytest.fail(f"timed out after {timeout} s waiting for {what}")


async def js_open(fleet: JsFleet, name: str, url: str, room: str = ROOM, **kw: Any) -> int:
    params = kw.pop("params", {"user": name})
    reply = await fleet.call_ok(
        "open", client=name, url=f"{url}/yjs", room=room, params=params, **kw
    )
    return int(reply["client_id"])


async def js_text(fleet: JsFleet, name: str) -> str:
    return str((await fleet.call_ok("text", client=name))["text"])


async def py_type(
    doc: Document, rng: random.Random, prefix: str, start: int, count: int
) -> list[str]:
    """Type ``count`` markers at marker boundaries, with short random pauses."""
    made = []
    for k in range(start, start + count):
        marker = f"{prefix}-{k};"
        doc.insert(rng.choice(boundaries(str(doc))), marker)
        made.append(marker)
        await asyncio.sleep(rng.random() * 0.01)
    return made


async def all_equal(
    fleet: JsFleet, js: list[str], docs: list[Document], extra: Callable[[], str] | None = None
) -> bool:
    texts = [await js_text(fleet, name) for name in js] + [str(d) for d in docs]
    if extra is not None:
        texts.append(extra())
    return len(set(texts)) == 1


async def js_flap(fleet: JsFleet, name: str, delay: float) -> None:
    """Disconnect a JS client after ``delay`` seconds, then reconnect it and wait for its sync."""
    await asyncio.sleep(delay)
    await fleet.call_ok("disconnect", client=name)
    await asyncio.sleep(0.02)
    await fleet.call_ok("connect", client=name)


async def py_flap(client: Client, delay: float) -> None:
    """Drop a Python client's socket after ``delay`` seconds; it reconnects by itself."""
    await asyncio.sleep(delay)
    await client.drop_connection()


# -- 1. convergence -----------------------------------------------------------------------------


async def test_js_and_python_clients_converge_with_random_disconnects(
    server: CollabServer, fleet: JsFleet
) -> None:
    rng = random.Random(20240611)
    js = [f"js{i}" for i in range(4)]
    for name in js:
        await js_open(fleet, name, server.url, max_backoff_ms=300)
    clients = [
        Client(server.url, user=f"py{i}", min_backoff=0.02, max_backoff=0.2) for i in range(3)
    ]
    try:
        for client in clients:
            await client.connect()
        docs = [await client.open(ROOM) for client in clients]
        assert str(docs[0]) == SEED
        assert await js_text(fleet, js[0]) == SEED
        room = server.rooms.get_key(ROOM)
        assert room is not None

        markers: list[str] = []
        py_next = [0, 0, 0]
        dropped = set()
        flaps = 0
        for rnd in range(5):
            # seeded disconnects; round 0 always takes one JS and one Python client offline
            js_off = [i for i in range(4) if (rnd == 0 and i == 0) or rng.random() < 0.3]
            py_off = [i for i in range(3) if (rnd == 0 and i == 0) or rng.random() < 0.3]
            for i in js_off:
                await fleet.call_ok("disconnect", client=js[i])
                # offline, the JS text cannot change under us: insert at a UTF-16 offset
                # computed here from a code point boundary
                text = await js_text(fleet, js[i])
                pos = rng.choice(boundaries(text))
                marker = f"{JS_PREFIXES[i]}x{rnd};"
                await fleet.call_ok(
                    "insert", client=js[i], index=utf16_len(text[:pos]), text=marker
                )
                assert (await js_text(fleet, js[i])) == text[:pos] + marker + text[pos:]
                markers.append(marker)
            for i in py_off:
                await clients[i].drop_connection()
                dropped.add(i)
            js_typing = [
                fleet.call_ok(
                    "random_edits",
                    client=js[i],
                    count=8,
                    marker_prefix=JS_PREFIXES[i],
                    seed=rng.randrange(2**31),
                    interval_ms=4,
                    filler_ratio=0.25,
                )
                for i in range(4)
            ]
            py_typing = [
                py_type(docs[i], random.Random(rng.random()), PY_PREFIXES[i], py_next[i], 6)
                for i in range(3)
            ]
            # and connections drop in the middle of the typing too
            online = [i for i in range(4) if i not in js_off]
            chaos = [
                js_flap(fleet, js[i], rng.random() * 0.02)
                for i in rng.sample(online, min(len(online), rng.randint(0, 2)))
            ]
            chaos += [
                py_flap(clients[i], rng.random() * 0.02)
                for i in rng.sample(range(3), rng.randint(0, 1))
            ]
            results = await asyncio.gather(*js_typing, *py_typing, *chaos)
            flaps += len(chaos)
            results = results[:7]
            for i in range(3):
                py_next[i] += 6
            for r in results[:4]:
                markers.extend(r["markers"])
            for r in results[4:]:
                markers.extend(r)
            for i in js_off:
                await fleet.call_ok("connect", client=js[i])

        assert len(markers) == len(set(markers))
        assert flaps >= 3
        for name in js:
            reply = await fleet.call("wait_text", client=name, contains=markers, timeout_ms=15000)
            assert reply["ok"], f"{name} is missing {reply.get('missing')}"
        for doc in docs:
            await doc.wait_for(lambda t: all(m in t for m in markers), timeout=15)
        await asyncio.gather(*(c.flush() for c in clients))
        await eventually(
            lambda: all_equal(fleet, js, docs, lambda: str(room.text)), 10, "all texts equal"
        )

        final = str(room.text)
        assert final == str(docs[0]) == await js_text(fleet, js[0])
        assert marker_counts(final, markers) == {}
        assert SEED in final  # inserts at marker boundaries never split the seed text
        for i in dropped:
            assert clients[i].reconnects >= 1
        for client in clients:
            assert client.errors == []
        for name in js:
            state = await fleet.call_ok("state", client=name)
            assert state["denied"] == []
            assert [c for c in state["closes"] if 4000 <= c[0] < 5000] == []
        assert (await fleet.call_ok("state", client=js[0]))["sync_count"] >= 2

        # late joiners, one of each kind
        await js_open(fleet, "late-js", server.url)
        assert await js_text(fleet, "late-js") == final
        async with Client(server.url, user="late-py") as late:
            assert str(await late.open(ROOM)) == final
    finally:
        for client in clients:
            await client.close()


# -- 2. awareness -------------------------------------------------------------------------------


async def test_awareness_between_js_and_python_is_stamped_with_authenticated_name(
    server: CollabServer, fleet: JsFleet
) -> None:
    js_state = {
        "user": {"name": "spoof", "color": "#0a0"},
        "cursor": caret(3, 5),
    }
    js_id = await js_open(fleet, "js", server.url, params={"user": "jessie"}, awareness=js_state)
    async with Client(server.url, user="pyra") as client:
        doc = await client.open(ROOM)
        # JS -> Python: the server replaced the claimed name with the ?user= identity
        await doc.wait_for(lambda _t: js_id in doc.awareness, timeout=5)
        assert doc.awareness[js_id] == {
            "user": {"name": "jessie", "color": "#0a0"},
            "cursor": caret(3, 5),
        }

        # Python -> JS
        doc.set_awareness({"user": {"name": "mallory", "color": "#f00"}, "cursor": {"index": 7}})
        py_key = str(doc.client_id)

        async def js_sees_python() -> bool:
            state = await fleet.call_ok("state", client="js")
            return py_key in state["awareness"]

        await eventually(js_sees_python, 5, "the JS client to see the Python awareness state")
        state = await fleet.call_ok("state", client="js")
        assert state["awareness"][py_key] == {
            "user": {"name": "pyra", "color": "#f00"},
            "cursor": {"index": 7},
        }

        # a JS update of its state is relayed (and stamped) again
        await fleet.call_ok(
            "set_awareness",
            client="js",
            state={
                "user": {"name": "spoof2"},
                "cursor": caret(9, 9),
            },
        )
        await doc.wait_for(
            lambda _t: doc.awareness.get(js_id, {}).get("cursor") == caret(9, 9),
            timeout=5,
        )
        assert doc.awareness[js_id]["user"] == {"name": "jessie"}
        py_id = doc.client_id

    # the Python client left: the server tells the JS client its state is gone
    async def js_sees_python_gone() -> bool:
        state = await fleet.call_ok("state", client="js")
        return str(py_id) not in state["awareness"]

    await eventually(js_sees_python_gone, 5, "the Python awareness state to be removed in JS")


async def test_a_cursor_colour_that_is_more_than_a_colour_is_not_relayed(
    server: CollabServer, fleet: JsFleet
) -> None:
    """Bindings write ``user.color`` into a style attribute as it is: a value with more CSS
    than a colour would restyle (and make fetch) the pages of everyone else in the room."""
    css = "red; position: fixed; inset: 0; z-index: 99; background: url(http://evil.test/x.png)"
    light = "hsl(210 70% 45% / 0.25)"
    state = {"user": {"name": "x", "color": css, "colorLight": light}, "cursor": {"anchor": 1}}
    js_id = await js_open(fleet, "js", server.url, params={"user": "jessie"}, awareness=state)
    async with Client(server.url, user="pyra") as client:
        doc = await client.open(ROOM)
        await doc.wait_for(lambda _t: js_id in doc.awareness, timeout=5)
        assert doc.awareness[js_id]["user"] == {"name": "jessie", "colorLight": light}

        doc.set_awareness({"user": {"color": "#30bced", "colorLight": "url(x)"}, "cursor": 2})
        py_key = str(doc.client_id)

        async def js_sees_python() -> bool:
            return py_key in (await fleet.call_ok("state", client="js"))["awareness"]

        await eventually(js_sees_python, 5, "the JS client to see the Python awareness state")
        seen = (await fleet.call_ok("state", client="js"))["awareness"][py_key]
        assert seen["user"] == {"name": "pyra", "color": "#30bced"}


async def test_an_awareness_state_over_16_kib_is_dropped_and_the_client_keeps_editing(
    server: CollabServer, fleet: JsFleet
) -> None:
    """A stock client whose state grows past 16 KiB (an editor that puts a large value in it)
    used to be closed with 4009, and y-websocket reconnects after that, sends its state
    again and is closed again, before its edits get through: its typing never reached the
    server. The large state is dropped (the others keep its last one), its edits are
    taken, and its next state within the limit is relayed."""
    small = {"user": {"name": "ann"}, "note": "small"}
    ann_id = await js_open(fleet, "ann", server.url, awareness=small)
    await js_open(fleet, "bob", server.url)

    async def bob_sees(note: str) -> bool:
        state = await fleet.call_ok("state", client="bob")
        return state["awareness"].get(str(ann_id), {}).get("note") == note

    await eventually(lambda: bob_sees("small"), 5, "bob to see ann's state")
    large = {"user": {"name": "ann"}, "note": "large", "selections": "x" * (17 * 1024)}
    await fleet.call_ok("set_awareness", client="ann", state=large)
    await fleet.call_ok("insert", client="ann", index=0, text="typed after a large state;")
    await fleet.call_ok("wait_text", client="bob", contains="typed after a large state;")
    async with Client(server.url, user="carl") as carl:
        doc = await carl.open(ROOM)
        assert str(doc).startswith("typed after a large state;")
    assert await bob_sees("small")  # the large state never came
    await fleet.call_ok("set_awareness", client="ann", state={**small, "note": "again"})
    await eventually(lambda: bob_sees("again"), 5, "bob to see ann's next state")
    state = await fleet.call_ok("state", client="ann")
    assert state["closes"] == [] and state["connected"]


async def test_awareness_echoed_by_a_js_client_without_state_keeps_its_owner(
    server: CollabServer, fleet: JsFleet
) -> None:
    """Stock y-websocket re-broadcasts every awareness change it receives, others' included.

    A JS client whose local state is null sends nothing of its own on connect, so the first
    awareness entry the server gets from it is its echo of someone else's state: the server
    must neither stamp that state with the echoing client's name nor remove it when the
    echoing client leaves.
    """
    async with Client(server.url, user="pyra") as owner, Client(server.url, user="obs") as watcher:
        doc = await owner.open(ROOM)
        obs = await watcher.open(ROOM)
        doc.set_awareness({"user": {"color": "#00f"}, "cursor": {"index": 1}})
        await obs.wait_for(lambda _t: doc.client_id in obs.awareness, timeout=5)
        assert obs.awareness[doc.client_id]["user"] == {"name": "pyra", "color": "#00f"}

        await js_open(fleet, "shy", server.url, params={"user": "shy"}, connect=False)
        await fleet.call_ok("set_awareness", client="shy", state=None)
        await fleet.call_ok("connect", client="shy")

        async def shy_has_owner_state() -> bool:
            return str(doc.client_id) in (await fleet.call_ok("state", client="shy"))["awareness"]

        await eventually(
            shy_has_owner_state, 5, "the stateless JS client to receive pyra's awareness"
        )
        # barrier: the echo went out before this edit on the same socket, and the server relays
        # awareness at once but an edit only after its durable append
        await fleet.call_ok("insert", client="shy", index=0, text="shy;")
        await obs.wait_for(lambda t: t.startswith("shy;"), timeout=5)
        assert obs.awareness[doc.client_id]["user"] == {"name": "pyra", "color": "#00f"}

        await fleet.call_ok("close", client="shy")
        doc.insert(0, "after;")  # barrier again: the server has handled shy's departure
        await obs.wait_for(lambda t: t.startswith("after;"), timeout=5)
        assert obs.awareness.get(doc.client_id, {}).get("user") == {"name": "pyra", "color": "#00f"}


async def test_python_awareness_is_seen_again_after_the_python_client_reconnects(
    server: CollabServer, fleet: JsFleet
) -> None:
    await js_open(fleet, "js", server.url, params={"user": "jessie"})
    async with Client(server.url, user="pyra", min_backoff=0.02, max_backoff=0.1) as client:
        doc = await client.open(ROOM)
        doc.set_awareness({"user": {"color": "#00f"}, "cursor": {"index": 4}})
        key = str(doc.client_id)

        async def js_awareness() -> dict[str, Any]:
            return dict((await fleet.call_ok("state", client="js"))["awareness"])

        async def js_sees_python() -> bool:
            return key in await js_awareness()

        await eventually(js_sees_python, 5, "the JS client to see the Python awareness state")
        await client.drop_connection()

        async def reconnected() -> bool:
            return client.reconnects >= 1

        await eventually(reconnected, 5, "the Python client to reconnect")
        await client.connected.wait()
        await asyncio.wait_for(doc.synced.wait(), 5)
        # barrier: the client re-announced its state when it reopened the document, before this
        # edit; the server relays awareness at once, an edit only after its durable append
        doc.insert(0, "back;")
        await fleet.call_ok("wait_text", client="js", contains=["back;"], timeout_ms=5000)
        assert (await js_awareness()).get(key) == {
            "user": {"name": "pyra", "color": "#00f"},
            "cursor": {"index": 4},
        }


# -- 3. read-only and refused tokens ------------------------------------------------------------


async def test_read_only_js_client_syncs_but_cannot_write(
    secure_server: CollabServer, fleet: JsFleet, tokens: TokenAuthenticator
) -> None:
    url = secure_server.url
    write_token = tokens.mint(user="writer", repo="demo", role=Role.WRITE)
    read_token = tokens.mint(user="reader", repo="demo", role=Role.READ)
    async with Client(url, token=write_token) as writer:
        doc = await writer.open(ROOM)
        doc.insert(len(str(doc)), "W1é;")
        await writer.flush()
        await js_open(fleet, "reader", url, params={"token": read_token})
        await js_open(fleet, "jswriter", url, params={"token": write_token})
        assert await js_text(fleet, "reader") == SEED + "W1é;"

        # the reader's local insert is refused, reported, and reaches nobody
        await fleet.call_ok("insert", client="reader", index=0, text="RO世🎉;")

        async def denied() -> list[str]:
            return list((await fleet.call_ok("state", client="reader"))["denied"])

        async def was_denied() -> bool:
            return bool(await denied())

        await eventually(was_denied, 5, "a permission-denied message for the read-only client")
        assert any("read-only" in reason for reason in await denied())

        # the reader stays connected and still receives others' edits
        doc.insert(0, "W2😀;")
        await writer.flush()
        await fleet.call_ok("wait_text", client="reader", contains=["W2😀;"], timeout_ms=5000)
        await fleet.call_ok("wait_text", client="jswriter", contains=["W2😀;"], timeout_ms=5000)
        state = await fleet.call_ok("state", client="reader")
        assert state["connected"] and state["closes"] == []
        room = secure_server.rooms.get_key(ROOM)
        assert room is not None
        assert "RO世🎉;" not in str(room.text)
        assert "RO世🎉;" not in str(doc)
        assert "RO世🎉;" not in await js_text(fleet, "jswriter")
        async with Client(url, token=write_token) as late:
            assert "RO世🎉;" not in str(await late.open(ROOM))


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("missing", ErrorCode.UNAUTHORIZED),
        ("expired", ErrorCode.UNAUTHORIZED),
        ("forged", ErrorCode.UNAUTHORIZED),
        ("wrong-repo", ErrorCode.FORBIDDEN),
    ],
)
async def test_js_client_with_bad_token_is_refused(
    secure_server: CollabServer,
    fleet: JsFleet,
    tokens: TokenAuthenticator,
    case: str,
    code: ErrorCode,
) -> None:
    params = {
        "missing": {},
        "expired": {"token": tokens.mint(user="alice", repo="demo", role=Role.WRITE, ttl=-1)},
        "forged": {
            "token": TokenAuthenticator(b"another-secret-0123456789").mint(
                user="eve", repo="*", role=Role.WRITE
            )
        },
        "wrong-repo": {"token": tokens.mint(user="alice", repo="other", role=Role.WRITE)},
    }[case]
    reply = await fleet.call(
        "open",
        client="bad",
        url=f"{secure_server.url}/yjs",
        room=ROOM,
        params=params,
        timeout_ms=5000,
        max_backoff_ms=5000,
    )
    assert not reply["ok"], reply
    assert not reply.get("synced")
    assert [c[0] for c in reply["closes"]] == [code], reply
    assert secure_server.rooms.get_key(ROOM) is None  # refused before anything was opened
    await fleet.call_ok("close", client="bad")


# -- 4. kill -9 with stock JS clients typing ----------------------------------------------------


async def test_kill_9_with_js_clients_typing(repos: Path, tmp_path: Path, fleet: JsFleet) -> None:
    server = ServerProcess(repos, tmp_path / "data")
    await server.start()
    rng = random.Random(99)
    js = [f"k{i}" for i in range(3)]
    prefixes = JS_PREFIXES[:3]
    marker_re = re.compile("(?:" + "|".join(map(re.escape, prefixes)) + r")-\d+;")
    observer = Client(server.url, user="observer", min_backoff=0.05, max_backoff=0.3)
    try:
        await observer.connect()
        obs = await observer.open(ROOM)
        for name in js:
            await js_open(fleet, name, server.url, max_backoff_ms=250)

        # type; once the observer has seen a few markers of everyone, kill -9 mid-typing
        typing = [
            asyncio.create_task(
                fleet.call_ok(
                    "random_edits",
                    client=js[i],
                    count=60,
                    marker_prefix=prefixes[i],
                    seed=rng.randrange(2**31),
                    interval_ms=15,
                )
            )
            for i in range(3)
        ]
        await obs.wait_for(lambda t: all(f"{p}-4;" in t for p in prefixes), timeout=10)
        seen = marker_re.findall(str(obs))  # broadcast only after a durable append
        await server.kill()
        typed = [r["markers"] for r in await asyncio.gather(*typing)]
        # and more, certainly while the server is down
        more = await asyncio.gather(
            *(
                fleet.call_ok(
                    "random_edits", client=js[i], count=5, marker_prefix=prefixes[i], seed=i
                )
                for i in range(3)
            )
        )
        everything = [m for ms in typed for m in ms] + [m for r in more for m in r["markers"]]
        assert len(everything) == len(set(everything)) == 3 * 65
        assert len(seen) >= 15 and set(seen) <= set(everything)

        durable = await stored_text(server.data_dir, ROOM)
        assert marker_counts(durable, seen) == {}
        assert not all(m in durable for ms in typed for m in ms)  # the kill came mid-typing

        # restart on the same port: y-websocket and the Python client reconnect by themselves
        await server.start()
        for name in js:
            reply = await fleet.call(
                "wait_text", client=name, contains=everything, timeout_ms=20000
            )
            assert reply["ok"], f"{name} is missing {reply.get('missing')}"
        await obs.wait_for(lambda t: all(m in t for m in everything), timeout=20)
        await eventually(lambda: all_equal(fleet, js, [obs]), 10, "all texts equal")
        final = str(obs)
        assert marker_counts(final, everything) == {}
        assert SEED in final
        for name in js:
            state = await fleet.call_ok("state", client=name)
            assert state["sync_count"] >= 2 and state["closes"], state
        assert observer.reconnects >= 1

        # the restarted server holds the same text: late joiners of both kinds get it
        await js_open(fleet, "late-js", server.url)
        assert await js_text(fleet, "late-js") == final
        async with Client(server.url, user="late-py") as late:
            assert str(await late.open(ROOM)) == final
        for name in [*js, "late-js"]:
            await fleet.call_ok("close", client=name)
        await observer.close()
        await server.stop()
        assert await stored_text(server.data_dir, ROOM) == final
    finally:
        await observer.close()
        await server.stop()


async def test_a_js_client_alone_in_a_document_keeps_hearing_from_the_server(
    repos: Path, tmp_path: Path, fleet: JsFleet
) -> None:
    """y-websocket closes a connection that brought no message for 30 s (pings do not count),
    and no one else's awareness comes to a person alone: the server's keepalive, an empty
    awareness message (shortened here), keeps the connection up, and changes nothing."""
    server = CollabServer(make_config(repos, tmp_path / "data", yjs_keepalive=0.3))
    await server.start()
    try:
        await js_open(fleet, "alone", server.url, awareness={"user": {"name": "x"}})
        await asyncio.sleep(2.0)
        state = await fleet.call_ok("state", client="alone")
        assert state["connected"] and state["closes"] == []
        assert state["last_message_ms_ago"] < 1000
        assert state["text"] == SEED and list(state["awareness"]) == [str(state["client_id"])]
    finally:
        await server.stop()


async def test_a_stock_client_typing_inside_an_emoji_is_refused_and_no_copy_diverges(
    server: CollabServer, fleet: JsFleet
) -> None:
    """At a UTF-16 index between an emoji's two units, Yjs makes both halves U+FFFD and the
    server's CRDT core would place the text elsewhere: the update is refused (4010), and
    every other copy keeps one text."""
    await js_open(fleet, "writer", server.url)
    await js_open(fleet, "splitter", server.url)
    await fleet.call_ok("insert", client="writer", index=0, text="a😀b;")
    await fleet.call_ok("wait_text", client="splitter", contains="a😀b;")
    await fleet.call_ok("insert", client="splitter", index=2, text="X")

    async def refused() -> bool:
        state = await fleet.call_ok("state", client="splitter")
        return any(code == ErrorCode.INVALID_UPDATE for code, _ in state["closes"])

    await eventually(refused, 10, "the split to be refused with 4010")
    await fleet.call_ok("close", client="splitter")
    await fleet.call_ok("insert", client="writer", index=0, text="then;")
    async with Client(server.url, user="pyra") as client:
        doc = await client.open(ROOM)
        await doc.wait_for(lambda text: text.startswith("then;a😀b;"), timeout=5)
        state = await fleet.call_ok("state", client="writer")
        assert state["text"] == str(doc.text) and "X" not in str(doc.text)


def many_writers(count: int, seed: int = 5) -> list[bytes]:
    """Updates in which ``count`` clients (32-bit ids, as Yjs draws them) each typed one
    "x" at the start of the text, as a relay of many people's edits may send them: at most
    ``max_new_clients`` writers an update (the server's bound on the clients new to the
    document one update may bring), highest ids first."""
    rng = random.Random(seed)
    clients = sorted(rng.sample(range(2**31, 2**32), count), reverse=True)
    per_update = YjsLimits().max_new_clients
    return [_writers(clients[at : at + per_update]) for at in range(0, count, per_update)]


def _writers(clients: list[int]) -> bytes:
    update = bytearray()
    write_var_uint(update, len(clients))
    for client in clients:
        for number in (1, client, 0):  # one struct, of this client, from clock 0
            write_var_uint(update, number)
        update.append(0x04)  # a string, placed by its parent: the root "source"
        write_var_uint(update, 1)
        write_var_string(update, "source")
        write_var_string(update, "x")
    return bytes(update + b"\x00")  # no deletions


async def test_a_document_thousands_of_clients_wrote_in_opens_again_everywhere(
    repos: Path, tmp_path: Path, fleet: JsFleet
) -> None:
    """A document's state vector takes a few bytes for each client that ever wrote in it:
    past 64 KiB (some 11,000 clients) the server refused a stock client's sync step 1 when it
    reconnected, and its own state vector, read as a peer's, when it loaded the document
    again; after a move of the branch made outside, every document of the branch. Each
    opens, for stock and Python clients, and takes the branch's moves."""
    many = "demo/main:many.txt"
    demo = repos / "demo"
    config = make_config(repos, tmp_path / "data", commit_idle=0.1)
    async with CollabServer(config) as server:
        await js_open(fleet, "ann", server.url, room=many)
        async with YjsPeer(server.url, many, user="relay") as relay:
            await asyncio.wait_for(relay.synced.wait(), 5)
            for update in many_writers(12_000):
                relay.doc.apply_update(update)  # (and sent, as one update)
            await fleet.call_ok("wait_text", client="ann", equals="x" * 12_000)
            room = server.rooms.get_key(many)
            assert room is not None and len(room.state_vector()) > 64 * 1024
            # the stock client reconnects: its sync step 1 names the 12,000 clients
            await fleet.call_ok("disconnect", client="ann")
            await fleet.call_ok("connect", client="ann")
            await fleet.call_ok("insert", client="ann", index=0, text="ann;")
            await relay.wait_text(lambda text: text.startswith("ann;"))
        await fleet.call_ok("close", client="ann")
        await until(lambda: server.rooms.get_key(many) is None)
        await js_open(fleet, "bob", server.url, room=many)  # loaded again, from the store
        state = await fleet.call_ok("state", client="bob")
        assert state["text"] == "ann;" + "x" * 12_000 and state["closes"] == []
        async with Client(server.url, user="carl") as carl:
            assert str(await carl.open(many)) == state["text"]
        await fleet.call_ok("close", client="bob")
        await until(lambda: server.rooms.get_key(many) is None)
        await until(lambda: git(demo, "show", "main:many.txt") == state["text"])

        # a push to the branch changes it, and another file: both documents take it
        work = tmp_path / "work"
        subprocess.run(["git", "clone", "-q", str(demo), str(work)], check=True)
        (work / "many.txt").write_text("pushed;" + state["text"])
        (work / "README.md").write_text("pushed README\n")
        git(work, "-c", "user.name=t", "-c", "user.email=t@x", "commit", "-qam", "outside")
        git(demo, "config", "receive.denyCurrentBranch", "ignore")
        git(work, "push", "-q", "origin", "main")
        async with Client(server.url, user="dora") as dora:
            readme = await asyncio.wait_for(dora.open("demo/main:README.md"), 15)
            assert str(readme) == "pushed README\n"
            assert str(await dora.open(many)) == "pushed;" + state["text"]
