"""The git service of smart HTTP (``gitsync.smart_http``) called directly: advertisements,
request bodies, and fetches that race commits. The git CLI drives it through the server's
bridge in ``tests/collab/test_git_http``."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path

import pytest
from dulwich.repo import Repo

from gitsync.objects.commits import commit_changes, read_ref
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
    out, _ = run_service(repo_path, "git-upload-pack", _fetch_request(orphan))
    assert b"PACK" in out  # a head
    git(repo_path, "update-ref", "-d", "refs/heads/gone")  # reachable from no head now
    out, _ = run_service(repo_path, "git-upload-pack", _fetch_request(orphan))
    assert out == _pkt(b"ERR upload-pack: not our ref " + orphan + b"\n")
    out, _ = run_service(repo_path, "git-upload-pack", _fetch_request(b"f" * 40))
    assert out == _pkt(b"ERR upload-pack: not our ref " + b"f" * 40 + b"\n")


def test_any_object_a_ref_reaches_may_be_wanted(repo_path: Path, git: Git) -> None:
    """A partial clone fetches the blobs its filter left out by id, much later: any object
    a ref reaches is served, in v0 and v2; none that only a private ref reaches."""
    first = server_commit(repo_path, "main", {"a.txt": b"first\n", "d/b.txt": b"b\n"})
    for i in range(5):
        server_commit(repo_path, "main", {"a.txt": b"%d\n" % i})
    old_blob = git(repo_path, "rev-parse", f"{first.decode()}:a.txt").strip().encode()
    old_tree = git(repo_path, "rev-parse", f"{first.decode()}:d").strip().encode()
    for sha in (old_blob, old_tree, first):
        out, _ = run_service(repo_path, "git-upload-pack", _fetch_request(sha))
        assert b"PACK" in out, out[:200]
        v2 = b"".join(
            [
                _pkt(b"command=fetch\n"),
                b"0001",
                _pkt(b"want " + sha + b"\n"),
                _pkt(b"done\n"),
                b"0000",
            ]
        )
        out, _ = run_service(repo_path, "git-upload-pack", v2, protocol=2)
        assert out.startswith(_pkt(b"packfile\n")) and b"PACK" in out
    private = server_commit(repo_path, "side", {"secret.txt": b"private\n"})
    secret = git(repo_path, "rev-parse", "side:secret.txt").strip().encode()
    git(repo_path, "update-ref", "refs/collab/synced/side", private.decode())
    git(repo_path, "update-ref", "-d", "refs/heads/side")
    for sha in (private, secret):
        out, _ = run_service(repo_path, "git-upload-pack", _fetch_request(sha))
        assert out.startswith(_pkt(b"ERR upload-pack: not our ref " + sha + b"\n"))
