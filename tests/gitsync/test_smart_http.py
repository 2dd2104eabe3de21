"""Smart HTTP end to end: the git CLI clones, pushes and fetches through ``gitsync.smart_http``."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import dulwich.server
import pytest
from dulwich.errors import GitProtocolError
from dulwich.objects import Blob, Commit, Tree
from dulwich.repo import Repo

import gitsync.smart_http as smart_http
from gitsync.commits import commit_changes, read_ref, set_synced
from gitsync.smart_http import info_refs, run_service

Git = Callable[..., str]
AUTHOR = "Server <server@example.com>"


@dataclass
class GitServer:
    """A minimal HTTP front for one repository at ``<url>`` (``/repo.git``)."""

    repo_path: Path
    url: str = ""
    updates: list[list[tuple[bytes, bytes, bytes]]] = field(default_factory=list)
    requests: list[tuple[str, str | None, bytes]] = field(default_factory=list)


def _serve(server: GitServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _reply(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            if url.path != "/repo.git/info/refs":
                return self._reply(404, b"not found\n")
            service = parse_qs(url.query).get("service", [""])[0]
            try:
                body, content_type = info_refs(server.repo_path, service)
            except ValueError as exc:
                return self._reply(403, str(exc).encode())
            self._reply(200, body, content_type)

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while size := int(self.rfile.readline().split(b";")[0], 16):
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                self.rfile.readline()
                return b"".join(chunks)
            return self.rfile.read(int(self.headers.get("Content-Length", "0")))

        def do_POST(self) -> None:
            prefix, _, service = self.path.rpartition("/")
            body = self._body()
            if prefix != "/repo.git":
                return self._reply(404, b"not found\n")
            encoding = self.headers.get("Content-Encoding")
            server.requests.append((service, encoding, body))
            try:
                out, content_type = run_service(
                    server.repo_path,
                    service,
                    body,
                    server.updates.append,
                    content_encoding=encoding,
                )
            except ValueError as exc:
                return self._reply(403, str(exc).encode())
            self._reply(200, out, content_type)

    return Handler


@pytest.fixture
def server(repo_path: Path) -> Iterator[GitServer]:
    state = GitServer(repo_path)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _serve(state))
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/repo.git"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def server_commit(repo_path: Path, branch: str, changes: dict[str, bytes | None]) -> bytes:
    with Repo(str(repo_path)) as repo:
        head = read_ref(repo, b"refs/heads/" + branch.encode())
        return commit_changes(
            repo, branch, changes, message="server edit\n", author=AUTHOR, expected=head
        )


def server_head(repo_path: Path, branch: str = "main") -> bytes | None:
    with Repo(str(repo_path)) as repo:
        return read_ref(repo, b"refs/heads/" + branch.encode())


def test_clone_push_fetch_with_the_git_cli(
    server: GitServer, repo_path: Path, git: Git, tmp_path: Path
) -> None:
    first = server_commit(repo_path, "main", {"README.md": b"hello\n", "src/app.py": b"print(1)\n"})
    with Repo(str(repo_path)) as repo:
        set_synced(repo, "main", first)
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", server.url, str(clone))
    assert (clone / "src" / "app.py").read_bytes() == b"print(1)\n"
    assert git(clone, "rev-parse", "HEAD").strip() == first.decode()
    remote_refs = git(clone, "ls-remote", "origin")
    assert "refs/heads/main" in remote_refs and "refs/collab" not in remote_refs

    (clone / "src" / "app.py").write_bytes(b"print(2)\n")
    git(clone, "commit", "-qam", "from the CLI")
    pushed = git(clone, "rev-parse", "HEAD").strip().encode()
    git(clone, "push", "-q", "origin", "main")
    assert server_head(repo_path) == pushed
    assert server.updates == [[(first, pushed, b"refs/heads/main")]]

    later = server_commit(repo_path, "main", {"README.md": b"hello again\n"})
    git(clone, "fetch", "-q", "origin")
    assert git(clone, "rev-parse", "origin/main").strip() == later.decode()
    git(clone, "merge", "-q", "--ff-only", "origin/main")
    assert (clone / "README.md").read_bytes() == b"hello again\n"
    assert git(repo_path, "fsck", "--full", "--strict", "--no-dangling").strip() == ""


def test_branches_are_created_and_deleted_by_push(
    server: GitServer, repo_path: Path, git: Git, tmp_path: Path
) -> None:
    server_commit(repo_path, "main", {"a.txt": b"a\n"})
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", server.url, str(clone))
    git(clone, "checkout", "-qb", "topic")
    (clone / "b.txt").write_bytes(b"b\n")
    git(clone, "add", "b.txt")
    git(clone, "commit", "-qm", "topic work")
    git(clone, "push", "-q", "origin", "topic")
    topic = git(clone, "rev-parse", "HEAD").strip().encode()
    assert server_head(repo_path, "topic") == topic
    git(clone, "push", "-q", "origin", "--delete", "topic")
    assert server_head(repo_path, "topic") is None
    assert server.updates[-1] == [(topic, b"0" * 40, b"refs/heads/topic")]


def test_refused_pushes_leave_refs_alone(
    server: GitServer, repo_path: Path, git: Git, git_run: Callable[..., Any], tmp_path: Path
) -> None:
    head = server_commit(repo_path, "main", {"a.txt": b"a\n"})
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", server.url, str(clone))
    server_commit(repo_path, "main", {"a.txt": b"moved on the server\n"})
    moved = server_head(repo_path)
    git(clone, "commit", "-q", "--amend", "-m", "rewritten")
    forced = git_run(clone, "push", "--force", "origin", "main")
    assert forced.returncode != 0 and "non-fast-forward" in forced.stderr
    assert server_head(repo_path) == moved
    git(clone, "reset", "-q", "--hard", head.decode())
    git(clone, "commit", "-q", "--allow-empty", "-m", "private")
    private = git_run(clone, "push", "origin", "HEAD:refs/collab/synced/main")
    assert private.returncode != 0 and "private" in private.stderr
    named = git_run(clone, "push", "origin", "HEAD:refs/heads/people/x.lock")
    assert named.returncode != 0
    with Repo(str(repo_path)) as repo:
        assert sorted(repo.refs.allkeys()) == [b"HEAD", b"refs/heads/main"]
    assert server.updates == []


def test_push_based_on_a_stale_ref_is_refused(
    server: GitServer, repo_path: Path, git: Git, tmp_path: Path
) -> None:
    server_commit(repo_path, "main", {"a.txt": b"a\n"})
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", server.url, str(clone))
    (clone / "a.txt").write_bytes(b"from the client\n")
    git(clone, "commit", "-qam", "client")
    git(clone, "push", "-q", "origin", "main")
    service, _, body = server.requests[-1]
    assert service == "git-receive-pack"
    moved = server_commit(repo_path, "main", {"a.txt": b"server again\n"})
    # The same push again: it names the old value the client saw, which the ref no longer has.
    out, content_type = run_service(repo_path, service, body)
    assert content_type == "application/x-git-receive-pack-result"
    assert b"ng refs/heads/main failed to update ref" in out
    assert server_head(repo_path) == moved


def test_gzip_request_bodies(server: GitServer, repo_path: Path, git: Git, tmp_path: Path) -> None:
    server_commit(repo_path, "main", {"a.txt": b"a\n"})
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", server.url, str(clone))
    server_commit(repo_path, "main", {"b.txt": b"b\n"})
    git(clone, "fetch", "-q", "origin")
    service, encoding, body = server.requests[-1]
    assert service == "git-upload-pack"
    raw = gzip.decompress(body) if encoding == "gzip" else body
    plain = run_service(repo_path, service, raw)
    zipped = run_service(repo_path, service, gzip.compress(raw), content_encoding="gzip")
    assert b"PACK" in plain[0]
    assert zipped == plain
    with pytest.raises(ValueError, match="over"):
        run_service(
            repo_path,
            service,
            gzip.compress(b"0" * 5000),
            content_encoding="gzip",
            max_request=1000,
        )
    with pytest.raises(ValueError, match="gzip"):
        run_service(repo_path, service, b"not gzip", content_encoding="gzip")
    with pytest.raises(ValueError, match="Content-Encoding"):
        run_service(repo_path, service, body, content_encoding="br")


def test_advertisement_and_unknown_services(repo_path: Path) -> None:
    head = server_commit(repo_path, "main", {"a.txt": b"a\n"})
    body, content_type = info_refs(repo_path, "git-upload-pack")
    assert content_type == "application/x-git-upload-pack-advertisement"
    assert body.startswith(b"001e# service=git-upload-pack\n0000")
    assert head + b" HEAD\x00" in body and head + b" refs/heads/main\n" in body
    body, content_type = info_refs(repo_path, "git-receive-pack")
    assert content_type == "application/x-git-receive-pack-advertisement"
    assert b"report-status" in body
    for bad in ("git-upload-archive", "upload-pack", ""):
        with pytest.raises(ValueError, match="unknown git service"):
            info_refs(repo_path, bad)
        with pytest.raises(ValueError, match="unknown git service"):
            run_service(repo_path, bad, b"0000")


def _pkt(line: bytes) -> bytes:
    return b"%04x" % (len(line) + 4) + line


def _fetch_request(*wants: bytes) -> bytes:
    first, *rest = wants
    caps = b" side-band-64k thin-pack ofs-delta\n"
    lines = [_pkt(b"want " + first + caps), *(_pkt(b"want " + w + b"\n") for w in rest)]
    return b"".join(lines) + b"0000" + _pkt(b"done\n")


def test_a_fetch_may_want_a_head_that_moved_on_since_the_advertisement(
    repo_path: Path, git: Git
) -> None:
    """The two requests of a stateless fetch straddle a continuous commit: the head the client
    saw is now the new head's parent, and is still served, as git serves it."""
    seen = server_commit(repo_path, "main", {"a.txt": b"1\n"})
    advertised, _ = info_refs(repo_path, "git-upload-pack")
    assert seen in advertised
    server_commit(repo_path, "main", {"a.txt": b"2\n"})  # lands between the two requests
    out, _ = run_service(repo_path, "git-upload-pack", _fetch_request(seen))
    assert out.startswith(b"0008NAK\n") and b"PACK" in out

    server_commit(repo_path, "gone", {"b.txt": b"x\n"})
    orphan = server_head(repo_path, "gone")
    assert orphan is not None
    git(repo_path, "update-ref", "-d", "refs/heads/gone")  # reachable from no head now
    with pytest.raises(GitProtocolError, match="invalid object"):
        run_service(repo_path, "git-upload-pack", _fetch_request(orphan))
    with pytest.raises(GitProtocolError, match="invalid object"):  # not a commit
        run_service(repo_path, "git-upload-pack", _fetch_request(b"f" * 40))


def test_the_walk_for_moved_heads_is_bounded(
    repo_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the heads' recent history is searched: a request cannot make the server walk
    all of it, and an old commit is refused as dulwich refuses any non-head."""
    history = [server_commit(repo_path, "main", {"a.txt": b"%d\n" % i}) for i in range(12)]
    monkeypatch.setattr(smart_http, "MAX_WALK", 5)
    recent, old = history[-3], history[-9]
    repo = smart_http._open(repo_path)
    try:
        wanted = smart_http._reachable_wants(
            repo, smart_http._wants(BytesIO(_fetch_request(recent, old)))
        )
    finally:
        repo.close()
    assert wanted == [recent]
    run_service(repo_path, "git-upload-pack", _fetch_request(recent))
    with pytest.raises(GitProtocolError, match="invalid object"):
        run_service(repo_path, "git-upload-pack", _fetch_request(old))


def test_push_checks_do_not_rest_on_dulwichs_receive_pack(
    server: GitServer,
    repo_path: Path,
    git: Git,
    git_run: Callable[..., Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every check is this project's own code on public pieces of dulwich. With dulwich's
    receive-pack handler unusable (as an override of its private methods would be after an
    upgrade renamed them), pushes still land and every check still holds."""

    def unusable(*args: object, **kwargs: object) -> None:
        raise AssertionError("dulwich's receive-pack handler was used")

    for name in ("__init__", "handle", "_apply_pack", "_report_status"):
        monkeypatch.setattr(dulwich.server.ReceivePackHandler, name, unusable)

    first = server_commit(repo_path, "main", {"a.txt": b"a\n"})
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", server.url, str(clone))
    (clone / "a.txt").write_bytes(b"pushed\n")
    git(clone, "commit", "-qam", "push")
    git(clone, "push", "-q", "origin", "main")
    pushed = server_head(repo_path)
    assert pushed == git(clone, "rev-parse", "HEAD").strip().encode() != first

    def refused(*args: str) -> str:
        done = git_run(clone, "push", *args)
        assert done.returncode != 0, args
        return str(done.stderr)

    git(clone, "commit", "-q", "--amend", "-m", "rewritten")
    assert "(non-fast-forward)" in refused("--force", "origin", "main")
    git(clone, "reset", "-q", "--hard", "origin/main")
    assert "(refs/collab/ is private to the server)" in refused("origin", "HEAD:refs/collab/x")
    assert "(invalid branch name)" in refused("origin", "HEAD:refs/heads/-x")
    assert "(the default branch (HEAD) may not be deleted)" in refused("origin", ":main")
    with Repo(str(clone)) as repo:  # a tree that would write the checkout's .git/config
        blob = Blob.from_string(b"[core]\n\thooksPath = /tmp\n")
        inner = Tree()
        inner.add(b"config", 0o100644, blob.id)
        outer = Tree()
        outer.add(b".git", 0o040000, inner.id)
        commit = Commit()
        commit.tree, commit.parents = outer.id, [pushed]
        commit.author = commit.committer = b"Git CLI <cli@example.com>"
        commit.author_time = commit.commit_time = 1_700_000_000
        commit.author_timezone = commit.commit_timezone = 0
        commit.message = b"evil\n"
        for obj in (blob, inner, outer, commit):
            repo.object_store.add_object(obj)
        repo.refs[b"refs/heads/main"] = commit.id
    assert "(hasDotgit: contains '.git')" in refused("origin", "main")
    # compare-and-swap: the same push again, after the branch moved on the server
    git(clone, "reset", "-q", "--hard", "origin/main")
    (clone / "b.txt").write_bytes(b"b\n")
    git(clone, "add", "b.txt")
    git(clone, "commit", "-qm", "b")
    git(clone, "push", "-q", "origin", "main")
    _, _, body = server.requests[-1]
    moved = server_commit(repo_path, "main", {"c.txt": b"c\n"})
    out, _ = run_service(repo_path, "git-receive-pack", body)
    assert b"ng refs/heads/main failed to update ref" in out
    assert server_head(repo_path) == moved
    with Repo(str(repo_path)) as repo:
        assert sorted(repo.refs.allkeys()) == [b"HEAD", b"refs/heads/main"]
    assert git(repo_path, "fsck", "--full", "--strict", "--no-dangling").strip() == ""
