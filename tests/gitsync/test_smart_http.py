"""The git service of smart HTTP (``gitsync.smart_http``) called directly: advertisements,
request bodies, and fetches that race commits. The git CLI drives it through the server's
bridge in ``tests/collab/test_git_http``."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from io import BytesIO
from pathlib import Path

import pytest
from dulwich.errors import GitProtocolError
from dulwich.repo import Repo

import gitsync.smart_http as smart_http
from gitsync.commits import commit_changes, read_ref
from gitsync.smart_http import info_refs, run_service

Git = Callable[..., str]
AUTHOR = "Server <server@example.com>"


def server_commit(repo_path: Path, branch: str, changes: dict[str, bytes | None]) -> bytes:
    with Repo(str(repo_path)) as repo:
        head = read_ref(repo, b"refs/heads/" + branch.encode())
        return commit_changes(
            repo, branch, changes, message="server edit\n", author=AUTHOR, expected=head
        )


def server_head(repo_path: Path, branch: str = "main") -> bytes | None:
    with Repo(str(repo_path)) as repo:
        return read_ref(repo, b"refs/heads/" + branch.encode())


def test_gzip_request_bodies(repo_path: Path) -> None:
    head = server_commit(repo_path, "main", {"a.txt": b"a\n"})
    service, raw = "git-upload-pack", _fetch_request(head)
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
        run_service(repo_path, service, raw, content_encoding="br")


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
