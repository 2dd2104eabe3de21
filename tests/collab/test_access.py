"""Tokens, roles and names: refused as specified, before anything is opened."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from urllib.parse import quote

import aiohttp
import pytest
from gitcli import git, git_refused, until
from yjsclient import YjsPeer

from collab import Client, ClientError, CollabServer
from collab.server.auth import Role, TokenAuthenticator, is_loopback
from gitsync.naming import participant_branch
from protocol import messages as m
from protocol.errors import ErrorCode


async def test_valid_token_on_both_endpoints(
    secure_server: CollabServer, tokens: TokenAuthenticator
) -> None:
    token = tokens.mint(user="alice", repo="demo", role=Role.WRITE)
    async with Client(secure_server.url, token=token) as client:
        doc = await client.open("demo/main:README.md")
        assert client.user == "alice" and doc.writable
    async with YjsPeer(secure_server.url, "demo/main:README.md", token=token) as peer:
        await asyncio.wait_for(peer.synced.wait(), 5)


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({}, ErrorCode.UNAUTHORIZED),
        ({"token": "v1.garbage.garbage"}, ErrorCode.UNAUTHORIZED),
        ({"token": "v1.garbage.g\u00e4rbage"}, ErrorCode.UNAUTHORIZED),  # not ASCII
        ({"user": "alice"}, ErrorCode.UNAUTHORIZED),  # dev mode is off when a secret is set
    ],
)
async def test_missing_or_bad_token_is_refused_on_yjs(
    secure_server: CollabServer, params: dict[str, str], code: ErrorCode
) -> None:
    peer = await YjsPeer(secure_server.url, "demo/main:README.md", **params).connect()
    try:
        assert await peer.wait_closed() == code
        assert not peer.synced.is_set()
        assert len(secure_server.rooms) == 0  # refused before anything was opened
    finally:
        await peer.close()


async def test_expired_token_is_refused(
    secure_server: CollabServer, tokens: TokenAuthenticator
) -> None:
    token = tokens.mint(user="alice", repo="demo", role=Role.WRITE, ttl=-1)
    with pytest.raises(ClientError) as info:
        async with Client(secure_server.url, token=token):
            pass
    assert info.value.code == ErrorCode.UNAUTHORIZED
    assert "expired" in info.value.message
    peer = await YjsPeer(secure_server.url, "demo/main:README.md", token=token).connect()
    assert await peer.wait_closed() == ErrorCode.UNAUTHORIZED
    await peer.close()


async def test_token_signed_with_another_secret_is_refused(secure_server: CollabServer) -> None:
    forged = TokenAuthenticator(b"another-secret-0123456789").mint(
        user="eve", repo="*", role=Role.WRITE
    )
    with pytest.raises(ClientError) as info:
        async with Client(secure_server.url, token=forged):
            pass
    assert info.value.code == ErrorCode.UNAUTHORIZED
    assert "another secret" in info.value.message and "`collab token`" in info.value.message
    with pytest.raises(ClientError) as info:
        async with Client(secure_server.url, token=forged[: len(forged) // 2]):
            pass
    assert info.value.code == ErrorCode.UNAUTHORIZED
    assert "pass it whole" in info.value.message


async def test_wrong_repo_is_forbidden(
    secure_server: CollabServer, tokens: TokenAuthenticator
) -> None:
    token = tokens.mint(user="alice", repo="other", role=Role.WRITE)
    peer = await YjsPeer(secure_server.url, "demo/main:README.md", token=token).connect()
    assert await peer.wait_closed() == ErrorCode.FORBIDDEN
    await peer.close()
    async with Client(secure_server.url, token=token) as client:
        with pytest.raises(ClientError) as info:
            await client.open("demo/main:README.md")
        assert info.value.code == ErrorCode.FORBIDDEN
        doc = await client.open("other/main:a.txt")  # the connection keeps working
        assert str(doc) == "other repo\n"
    assert secure_server.rooms.get_key("demo/main:README.md") is None


async def test_read_only_connection_reads_but_cannot_write(
    secure_server: CollabServer, tokens: TokenAuthenticator
) -> None:
    writer = tokens.mint(user="w", repo="demo", role=Role.WRITE)
    reader = tokens.mint(user="r", repo="demo", role=Role.READ)
    async with (
        Client(secure_server.url, token=writer) as w,
        Client(secure_server.url, token=writer) as w2,
        Client(secure_server.url, token=reader) as r,
    ):
        dw = await w.open("demo/main:README.md")
        dw2 = await w2.open("demo/main:README.md")
        dr = await r.open("demo/main:README.md")
        assert not dr.writable
        dw.text += "[from writer]"
        await dr.wait_for(lambda t: t.endswith("[from writer]"))
        dr.text += "[from reader]"
        await until(
            lambda: any(e.code == ErrorCode.READ_ONLY for e in r.errors), what="the refusal"
        )
        # the room has handled the reader's update; one it accepts after that reaches the
        # writer after anything it accepted before (updates go out in the order accepted)
        dw2.text += "[after]"
        await dw.wait_for(lambda t: "[after]" in t)
        assert "[from reader]" not in str(dw)
        assert "[from reader]" not in str(dw2)
        dw.text += "[still live]"  # the read-only connection stays open and keeps reading
        await dr.wait_for(lambda t: "[still live]" in t)
    # a stock Yjs client with a read token: reads, and its writes are refused explicitly
    async with YjsPeer(secure_server.url, "demo/main:README.md", token=reader) as peer:
        await asyncio.wait_for(peer.synced.wait(), 5)
        assert str(peer.text).endswith("[still live]")
        peer.text += "[yjs reader]"
        await peer.wait_text(lambda _t: bool(peer.denied))
        assert "read-only" in peer.denied[0]
    async with Client(secure_server.url, token=writer) as w:
        assert "[yjs reader]" not in str(await w.open("demo/main:README.md"))


BAD_NAMES = [
    "demo/main:../../etc/passwd",
    "demo/main:%2e%2e%2fetc%2fpasswd",
    "demo/main:/etc/passwd",
    "demo/main:.git/config",
    "demo/main:src/.git/hooks/pre-commit",
    "demo/main:a\x00b",
    "demo/main:" + "x" * 5000,
    "demo/main..x:README.md",
    "demo/-x:README.md",
    "demo/a.lock:README.md",
    "../demo/main:README.md",
    "de mo/main:README.md",
    "demo/main",
    "demo",
    "demo/xy" + "\u00e9" * 100 + "..:README.md",  # a close reason cut within a character
]


@pytest.mark.parametrize("name", BAD_NAMES)
async def test_bad_names_are_refused_on_ws(server: CollabServer, name: str, tmp_path: Path) -> None:
    async with Client(server.url, user="alice") as client:
        with pytest.raises(ClientError) as info:
            await client.open(name)
        assert info.value.code == ErrorCode.BAD_NAME
        assert str(await client.open("demo/main:README.md"))  # the connection keeps working
    assert len(server.rooms) == 1


@pytest.mark.parametrize("name", [n for n in BAD_NAMES if "\x00" not in n and len(n) < 1000])
async def test_bad_names_are_refused_on_yjs(server: CollabServer, name: str) -> None:
    room = name if "%" in name else quote(name, safe="/:")
    peer = YjsPeer(server.url, room, user="alice")
    try:
        await peer.connect()
        code = await peer.wait_closed()
        assert code == ErrorCode.BAD_NAME
    except aiohttp.WSServerHandshakeError as exc:
        # "/yjs/../x" is resolved by URL normalisation to a path outside /yjs: plain 404
        assert name.startswith("..") and exc.status == 404
    finally:
        await peer.close()
    assert len(server.rooms) == 0


async def test_nothing_outside_the_repository_is_touched(
    server: CollabServer, tmp_path: Path
) -> None:
    before = {
        p: p.stat().st_mtime_ns
        for p in tmp_path.rglob("*")
        if p.is_file() and "data" not in p.parts
    }
    async with Client(server.url, user="alice") as client:
        for name in BAD_NAMES:
            with pytest.raises(ClientError):
                await client.open(name)
    after = {
        p: p.stat().st_mtime_ns
        for p in tmp_path.rglob("*")
        if p.is_file() and "data" not in p.parts
    }
    assert before == after


async def test_unknown_repo_and_branch_are_not_found(server: CollabServer) -> None:
    async with Client(server.url, user="alice") as client:
        for name in ("nope/main:a.txt", "demo/no-such-branch:a.txt"):
            with pytest.raises(ClientError) as info:
                await client.open(name)
            assert info.value.code == ErrorCode.NOT_FOUND
    peer = await YjsPeer(server.url, "demo/no-such-branch:a.txt", user="alice").connect()
    assert await peer.wait_closed() == ErrorCode.NOT_FOUND
    await peer.close()


def test_dev_mode_refuses_non_loopback() -> None:
    from collab.server.auth import AuthError, DevAuthenticator

    auth = DevAuthenticator()
    assert auth.authenticate(token=None, user="alice", remote="127.0.0.1").user == "alice"
    assert auth.authenticate(token=None, user="alice", remote="::1").user == "alice"
    for remote in ("10.0.0.5", "192.168.1.2", "8.8.8.8", None):
        with pytest.raises(AuthError):
            auth.authenticate(token=None, user="alice", remote=remote)


def test_dev_mode_server_refuses_to_bind_publicly(repos: Path, tmp_path: Path) -> None:
    from servers import make_config

    with pytest.raises(ValueError, match="loopback"):
        CollabServer(make_config(repos, tmp_path, host="0.0.0.0"))


async def test_credentials_that_are_not_ascii_are_refused_not_crashed_on(
    secure_server: CollabServer,
) -> None:
    """A token or a Basic header with characters outside ASCII is an unauthorised caller
    (401, 4001), on every endpoint; never a server error."""
    token = "v1.e30.sign\u00e9"
    with pytest.raises(ClientError) as info:
        async with Client(secure_server.url, token=token):
            pass
    assert info.value.code == ErrorCode.UNAUTHORIZED
    basic = "Basic " + base64.b64encode("alice:p\u00e4ss".encode()).decode()
    async with aiohttp.ClientSession() as session:
        for url, headers in [
            (f"{secure_server.url}/api/server.status", {"Authorization": f"Bearer {token}"}),
            (f"{secure_server.url}/git/demo.git/info/refs?service=git-upload-pack", {}),
        ]:
            headers = headers or {"Authorization": basic}
            async with session.request(
                "POST" if "/api/" in url else "GET", url, headers=headers
            ) as reply:
                assert reply.status == 401, url


async def test_a_basic_header_that_is_not_ascii_is_refused_in_dev_mode(
    server: CollabServer,
) -> None:
    raw = "Basic \u00e9".encode().decode("latin-1")  # the header's raw bytes, not ASCII
    url = f"{server.url}/git/demo.git/info/refs?service=git-upload-pack"
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, headers={"Authorization": raw}) as reply,
    ):
        assert reply.status == 401


async def test_a_read_only_ws_handle_is_not_asked_for_what_it_has(
    secure_server: CollabServer, tokens: TokenAuthenticator
) -> None:
    token = tokens.mint(user="rita", repo="demo", role=Role.READ)
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(secure_server.url + "/ws")
        await ws.send_bytes(m.encode(m.Hello(m.PROTOCOL_VERSION, token, None)))
        await ws.send_bytes(m.encode(m.Open(1, "demo/main:README.md")))
        await ws.send_bytes(m.encode(m.Sync(1, m.SyncStep.STEP1, b"\x00")))
        seen: list[object] = []
        async with asyncio.timeout(5):
            while not any(isinstance(s, m.Sync) and s.step is m.SyncStep.STEP2 for s in seen):
                seen.append(m.decode((await ws.receive()).data))
        await ws.close()
    opened = [s for s in seen if isinstance(s, m.Opened)]
    assert opened and not opened[0].writable
    assert not any(isinstance(s, m.Sync) and s.step is m.SyncStep.STEP1 for s in seen)


@pytest.mark.parametrize(
    ("remote", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),  # a dual-stack listener (--host ::) sees IPv4 so
        ("::ffff:10.0.0.1", False),
        ("10.0.0.1", False),
        ("fe80::1%eth0", False),
        ("localhost", False),  # a peer's address is never a name
        (None, False),
    ],
)
def test_loopback_peers_as_every_listener_sees_them(remote: str | None, loopback: bool) -> None:
    assert is_loopback(remote) is loopback


async def test_a_missing_or_expired_token_says_where_tokens_come_from(
    secure_server: CollabServer, tokens: TokenAuthenticator
) -> None:
    base = secure_server.url.replace("ws://", "http://")
    expired = tokens.mint(user="eve", repo="demo", role=Role.WRITE, ttl=-1)
    async with aiohttp.ClientSession() as http:
        for headers, why in (
            ({}, "a token is required"),
            ({"Authorization": f"Bearer {expired}"}, "token expired"),
        ):
            async with http.post(
                f"{base}/api/branch.list", json={"repo": "demo"}, headers=headers
            ) as reply:
                assert reply.status == 401
                message = (await reply.json())["error"]["message"]
            assert message.startswith(why) and "`collab token` mints them" in message
        async with http.ws_connect(f"{secure_server.url}/yjs/demo/main:README.md") as ws:
            await ws.receive()
        assert ws.close_code == ErrorCode.UNAUTHORIZED


async def test_a_branch_under_people_is_its_persons_own_whatever_the_names(
    secure_server: CollabServer, tokens: TokenAuthenticator, repos: Path, tmp_path: Path
) -> None:
    """User ``alice-<hash>-x``'s own branch begins as alice's forks do: it is still not
    alice's (she may neither write nor delete it on a read token). Nobody lays a branch in
    another person's place under ``people/`` (by an operation or a push) before they join,
    nor makes names there that no one could delete."""
    alice = participant_branch("alice")
    lookalike = alice.removeprefix("people/") + "-x"
    theirs = participant_branch(lookalike)
    assert theirs.startswith(alice + "-")
    bob = participant_branch("bob")
    reader = tokens.mint(user="alice", repo="demo", role=Role.READ)
    writer = tokens.mint(user="mallory", repo="demo", role=Role.WRITE)
    async with Client(
        secure_server.url, token=tokens.mint(user=lookalike, repo="demo", role=Role.WRITE)
    ) as x:
        assert await x.join("demo") == theirs
    async with Client(secure_server.url, token=reader) as reading:
        doc = await reading.open(f"demo/{theirs}:README.md")
        assert not doc.writable
        with pytest.raises(ClientError) as deleting:
            await reading.call("branch.delete", repo="demo", name=theirs)
        assert deleting.value.code in (ErrorCode.READ_ONLY, ErrorCode.FORBIDDEN)
        assert await reading.fork("demo", "main") == alice + "-fork-1"  # her own forks: hers
        with pytest.raises(ClientError) as shaped:  # but not one named as a person's own
            await reading.fork("demo", "main", alice + "-backup-20240101")
        assert shaped.value.code == ErrorCode.FORBIDDEN
        assert "name the fork otherwise" in shaped.value.message
    async with Client(secure_server.url, token=writer) as mallory:
        for name in (bob, "people/x", alice + "-fork-9"):
            for op, args in (
                ("branch.create", {"name": name}),
                ("branch.fork", {"source": "main", "name": name}),
            ):
                with pytest.raises(ClientError) as made:
                    await mallory.call(op, repo="demo", **args)
                assert made.value.code == ErrorCode.FORBIDDEN, (op, name)
                assert "people/" in made.value.message
        names = [branch["name"] for branch in await mallory.branches("demo")]
        assert bob not in names and "people/x" not in names
    work = tmp_path / "work"
    url = f"http://mallory:{writer}@127.0.0.1:{secure_server.port}/git/demo.git"
    await asyncio.to_thread(git, tmp_path, "clone", "-q", url, str(work))
    refused = await git_refused(work, "push", "origin", f"HEAD:refs/heads/{bob}")
    assert "only people/mallory-" in refused, refused
    assert bob not in git(repos / "demo", "branch", "--list", "people/*")


async def test_the_forks_of_a_lookalikes_branch_are_the_lookalikes_not_the_shorter_names(
    secure_server: CollabServer, tokens: TokenAuthenticator, repos: Path, tmp_path: Path
) -> None:
    """User ``alice-<hash>-x``'s forks begin as alice's forks do, and have no shape of a
    person's own branch themselves: they are still theirs. Alice, on a read token, may
    neither write nor delete them, nor push over them with git."""
    alice = participant_branch("alice")
    lookalike = alice.removeprefix("people/") + "-x"
    theirs = participant_branch(lookalike)
    async with Client(
        secure_server.url, token=tokens.mint(user=lookalike, repo="demo", role=Role.WRITE)
    ) as x:
        assert await x.join("demo") == theirs
        fork = await x.fork("demo", theirs)
        assert fork == theirs + "-fork-1"
        mine = await x.open(f"demo/{fork}:README.md")
        assert mine.writable
    reader = tokens.mint(user="alice", repo="demo", role=Role.READ)
    async with Client(secure_server.url, token=reader) as reading:
        doc = await reading.open(f"demo/{fork}:README.md")
        assert not doc.writable
        with pytest.raises(ClientError) as deleting:
            await reading.call("branch.delete", repo="demo", name=fork)
        assert deleting.value.code in (ErrorCode.READ_ONLY, ErrorCode.FORBIDDEN)
        with pytest.raises(ClientError) as made:  # nor lays a branch beside them
            await reading.call("branch.create", repo="demo", name=theirs + "-fork-2")
        assert made.value.code == ErrorCode.FORBIDDEN
    before = git(repos / "demo", "rev-parse", fork)
    work = tmp_path / "work"
    url = f"http://alice:{reader}@127.0.0.1:{secure_server.port}/git/demo.git"
    await asyncio.to_thread(git, tmp_path, "clone", "-q", url, str(work))
    git(work, "commit", "-q", "--allow-empty", "-m", "over it")
    refused = await git_refused(work, "push", "-f", "origin", f"HEAD:refs/heads/{fork}")
    assert fork in refused or "refused" in refused, refused
    assert git(repos / "demo", "rev-parse", fork) == before
    assert git(repos / "demo", "branch", "--list", theirs + "-fork-2") == ""


async def test_a_connection_ends_when_its_token_expires_and_a_renewed_one_goes_on(
    secure_server: CollabServer, tokens: TokenAuthenticator
) -> None:
    """Expiry is checked at connect and when the token ends: a connection lasts no longer
    than its credentials (4001, on /ws and /yjs alike). A client handed a new token before
    then reconnects with it and keeps its document; one without gives up."""
    short = tokens.mint(user="alice", repo="demo", role=Role.WRITE, ttl=2.0)
    peer = await YjsPeer(secure_server.url, "demo/main:README.md", token=short).connect()
    try:
        async with (
            Client(secure_server.url, token=short) as stays,
            Client(secure_server.url, token=short) as renews,
        ):
            doc = await renews.open("demo/main:README.md")
            left = await stays.open("demo/main:README.md")
            doc.insert(0, "before ")
            await renews.flush()
            renews.token = tokens.mint(user="alice", repo="demo", role=Role.WRITE)
            assert await peer.wait_closed(timeout=10) == ErrorCode.UNAUTHORIZED
            assert "expired" in peer.close_reason
            await until(lambda: stays.close_code == ErrorCode.UNAUTHORIZED, timeout=10)
            with pytest.raises(ClientError) as refused:
                await stays.call("branch.list", repo="demo")
            assert refused.value.code == ErrorCode.UNAUTHORIZED
            assert left.writable  # (its copy is kept; nothing more reaches the server)
            await until(lambda: renews.reconnects >= 1 and renews.connected.is_set(), timeout=10)
            doc.insert(0, "after ")
            await renews.flush()
        async with Client(
            secure_server.url, token=tokens.mint(user="bob", repo="demo", role=Role.READ)
        ) as reader:
            seen = await reader.open("demo/main:README.md")
            assert str(seen.text).startswith("after before ")
    finally:
        await peer.close()


async def test_a_commit_no_ref_reaches_is_not_made_a_branch_any_more_than_fetched(
    secure_server: CollabServer, tokens: TokenAuthenticator, repos: Path, tmp_path: Path
) -> None:
    """A commit a deleted branch left behind is refused to a fetch by id (``not our ref``),
    and so to ``branch.create`` from its id: a reader would otherwise make a fork of it and
    read what it holds. A commit a ref reaches is still taken by its id."""
    writer = tokens.mint(user="alice", repo="demo", role=Role.WRITE)
    reader = tokens.mint(user="rita", repo="demo", role=Role.READ)
    port = secure_server.port
    work = tmp_path / "work"
    url = f"http://alice:{writer}@127.0.0.1:{port}/git/demo.git"
    await asyncio.to_thread(git, tmp_path, "clone", "-q", url, str(work))
    (work / "secret.env").write_text("PASSWORD=hunter2\n")
    git(work, "add", "secret.env")
    git(work, "commit", "-qm", "oops")
    secret = git(work, "rev-parse", "HEAD").strip()
    older = git(work, "rev-parse", "HEAD~1").strip()  # main's head: reachable
    await asyncio.to_thread(git, work, "push", "-q", "origin", "HEAD:refs/heads/leak")
    await asyncio.to_thread(git, work, "push", "-q", "origin", ":refs/heads/leak")
    assert git(repos / "demo", "cat-file", "-t", secret).strip() == "commit"  # still stored

    rita_url = f"http://rita:{reader}@127.0.0.1:{port}/git/demo.git"
    fetched = tmp_path / "fetched"
    git(tmp_path, "init", "-q", str(fetched))
    refused = await git_refused(fetched, "fetch", rita_url, secret)
    assert "not our ref" in refused, refused
    dig = participant_branch("rita") + "-dig"
    async with Client(secure_server.url, token=reader) as rita:
        with pytest.raises(ClientError) as made:
            await rita.call("branch.create", repo="demo", name=dig, **{"from": secret})
        assert made.value.code == ErrorCode.NOT_FOUND
        names = [branch["name"] for branch in await rita.branches("demo")]
        assert dig not in names
        made_ok = await rita.call("branch.create", repo="demo", name=dig, **{"from": older})
        assert made_ok["head"] == older
    assert git(repos / "demo", "branch", "--contains", secret) == ""


async def test_the_authorization_scheme_is_taken_in_any_case(
    secure_server: CollabServer, tokens: TokenAuthenticator
) -> None:
    """``Bearer``, ``bearer`` and ``BEARER`` are one scheme (RFC 7235), on the API, the
    metrics and the git bridge, and so are ``Basic`` and ``basic``; only ``Bearer`` was
    taken ("a token is required")."""
    token = tokens.mint(user="alice", repo="demo", role=Role.READ)
    scraper = tokens.mint(user="prometheus", repo="*", role=Role.METRICS)
    base = secure_server.url.replace("ws://", "http://")
    basic = base64.b64encode(f"alice:{token}".encode()).decode()
    refs = f"{base}/git/demo.git/info/refs?service=git-upload-pack"
    async with aiohttp.ClientSession() as http:
        for scheme in ("Bearer", "bearer", "BEARER"):
            async with http.post(
                f"{base}/api/branch.list",
                json={"repo": "demo"},
                headers={"Authorization": f"{scheme} {token}"},
            ) as reply:
                assert reply.status == 200, (scheme, await reply.text())
            async with http.get(
                f"{base}/metrics", headers={"Authorization": f"{scheme} {scraper}"}
            ) as reply:
                assert reply.status == 200, (scheme, await reply.text())
            async with http.get(refs, headers={"Authorization": f"{scheme} {token}"}) as reply:
                assert reply.status == 200, (scheme, await reply.text())
        for scheme in ("Basic", "basic", "BASIC"):
            async with http.get(refs, headers={"Authorization": f"{scheme} {basic}"}) as reply:
                assert reply.status == 200, (scheme, await reply.text())
        async with http.post(
            f"{base}/api/branch.list", json={"repo": "demo"}, headers={"Authorization": "bearer"}
        ) as reply:
            assert reply.status == 401


async def test_a_persons_rescue_branch_is_theirs_to_edit_and_delete(
    secure_server: CollabServer, tokens: TokenAuthenticator, repos: Path
) -> None:
    """Text of a person's branch that a move leaves no place for is kept on
    ``<own>-rescued-<commit>``: theirs, as their forks are, even on a read token. (Named
    with 8 hex digits, it had the shape of another person's own branch: nobody's.)"""
    demo = repos / "demo"
    reader = tokens.mint(user="alice", repo="demo", role=Role.READ)
    async with Client(secure_server.url, token=reader) as alice:
        own = await alice.join("demo")
        doc = await alice.open(f"demo/{own}:notes/todo.md")
        doc.insert(0, "keep me\n")
        await alice.flush()
        blob = git(demo, "hash-object", "-w", "--stdin", input_text="a file\n").strip()
        listing = git(demo, "ls-tree", own)
        tree = git(demo, "mktree", input_text=listing + f"100644 blob {blob}\tnotes\n").strip()
        parent = git(demo, "rev-parse", own).strip()
        moved = git(demo, "commit-tree", tree, "-p", parent, "-m", "notes").strip()
        git(demo, "update-ref", f"refs/heads/{own}", moved, parent)

        def rescued() -> list[str]:
            return git(demo, "branch", "--list", f"{own}-rescued-*").split()

        await until(lambda: len(rescued()) == 1, timeout=10)
        [kept] = rescued()
        assert "keep me" in git(demo, "show", f"{kept}:notes/todo.md")
        mine = await alice.open(f"demo/{kept}:README.md")
        assert mine.writable
        await mine.close()
        await alice.call("branch.delete", repo="demo", name=kept)
    assert rescued() == []
