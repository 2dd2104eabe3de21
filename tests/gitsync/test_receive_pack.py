"""Receiving a push (``gitsync.wire.receive_pack``) from crafted requests: the report and its side
band, refusals that leave no object behind, references that must reach objects of the right
type, atomic pushes, shallow and malformed requests."""

from __future__ import annotations

import io
import os
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from dulwich.object_format import DEFAULT_OBJECT_FORMAT
from dulwich.objects import Blob, Commit, ShaFile, Tag, Tree
from dulwich.repo import Repo

from gitsync.objects.commits import commit_changes, read_ref
from gitsync.packs.write import encode_pack
from gitsync.smart_http import info_refs, over_limit, push_commands, run_service
from gitsync.wire.push_wire import MalformedPush, read_request

ZERO = b"0" * 40
AUTHOR = "Server <server@example.com>"


def pkt(line: bytes) -> bytes:
    return b"%04x" % (len(line) + 4) + line


def request(
    commands: Sequence[tuple[bytes, bytes, bytes]],
    objects: Sequence[ShaFile] | None = (),
    caps: bytes = b"report-status",
) -> bytes:
    """A receive-pack request: the commands, then a pack of ``objects`` (None: no pack)."""
    lines = [b"%s %s %s" % command for command in commands]
    lines[0] += b"\0" + caps
    body = b"".join(pkt(line + b"\n") for line in lines) + b"0000"
    if objects is not None:
        body += encode_pack(list(objects), DEFAULT_OBJECT_FORMAT)[0]
    return body


def push(repo_path: Path, body: bytes) -> tuple[bytes, list[tuple[bytes, bytes, bytes]]]:
    moved: list[tuple[bytes, bytes, bytes]] = []
    out, content_type = run_service(repo_path, "git-receive-pack", body, moved.extend)
    assert content_type == "application/x-git-receive-pack-result"
    return out, moved


def report(*lines: bytes) -> bytes:
    return b"".join(pkt(line + b"\n") for line in lines) + b"0000"


def objects_dir(repo_path: Path) -> list[str]:
    objects = repo_path / "objects"
    return sorted(str(p.relative_to(objects)) for p in objects.rglob("*"))


@pytest.fixture
def main(repo_path: Path) -> bytes:
    with Repo(str(repo_path)) as repo:
        return commit_changes(
            repo, "main", {"a.txt": b"a\n"}, message="first\n", author=AUTHOR, expected=None
        )


def new_commit(
    parent: bytes, files: dict[bytes, bytes], tree_raw: bytes | None = None
) -> list[ShaFile]:
    """A commit of ``files`` (flat) on ``parent``, and its objects (commit last)."""
    blobs = [Blob.from_string(data) for data in files.values()]
    if tree_raw is None:
        tree = Tree()
        for name, blob in zip(files, blobs, strict=True):
            tree.add(name, 0o100644, blob.id)
    else:
        tree = ShaFile.from_raw_string(2, tree_raw)
    commit = Commit()
    commit.tree = tree.id
    commit.parents = [parent]
    commit.author = commit.committer = b"Client <client@example.com>"
    commit.author_time = commit.commit_time = 1_700_000_000
    commit.author_timezone = commit.commit_timezone = 0
    commit.message = b"from the client\n"
    return [*blobs, tree, commit]


def test_a_push_is_reported_on_the_side_band(repo_path: Path, main: bytes) -> None:
    objects = new_commit(main, {b"a.txt": b"b\n"})
    new = objects[-1].id
    body = request([(main, new, b"refs/heads/main")], objects, b"report-status side-band-64k")
    out, moved = push(repo_path, body)
    status = report(b"unpack ok", b"ok refs/heads/main")
    assert out == pkt(b"\x01" + status) + b"0000"
    assert moved == [(main, new, b"refs/heads/main")]
    with Repo(str(repo_path)) as repo:
        assert read_ref(repo, b"refs/heads/main") == new
    assert not [p for p in objects_dir(repo_path) if p.startswith("incoming-")]


def test_a_refused_object_leaves_nothing_behind(repo_path: Path, main: bytes) -> None:
    before = objects_dir(repo_path)
    blob = Blob.from_string(b"[core]\n\tfsmonitor = touch /tmp/owned\n")
    inner = Tree()
    inner.add(b"config", 0o100644, blob.id)
    raw = b"40000 .git\0" + bytes.fromhex(inner.id.decode())
    objects = [blob, inner, *new_commit(main, {}, raw)[-2:]]
    tree_id = objects[2].id.decode()
    out, moved = push(repo_path, request([(main, objects[-1].id, b"refs/heads/main")], objects))
    why = f"tree {tree_id}: hasDotgit: contains '.git'".encode()
    assert out == report(b"unpack " + why, b"ng refs/heads/main hasDotgit: contains '.git'")
    assert moved == []
    assert objects_dir(repo_path) == before


def test_references_must_reach_objects_of_the_right_type(repo_path: Path, main: bytes) -> None:
    with Repo(str(repo_path)) as repo:
        stored_blob = repo[b"refs/heads/main"].tree
        blob_id = repo[stored_blob].items()[0].sha
    missing = "1" * 40
    cases = {
        "missing tree": new_commit(main, {}, b"40000 d\0" + bytes.fromhex(missing)),
        "a blob as a tree": new_commit(main, {}, b"40000 d\0" + bytes.fromhex(blob_id.decode())),
        "a tree as a blob": new_commit(
            main, {}, b"100644 f\0" + bytes.fromhex(stored_blob.decode())
        ),
    }
    for case, objects in cases.items():
        out, moved = push(repo_path, request([(main, objects[-1].id, b"refs/heads/main")], objects))
        assert b"brokenLink" in out and b"ng refs/heads/main brokenLink" in out, case
        assert moved == [], case
    orphan = new_commit(b"2" * 40, {b"a.txt": b"a\n"})[-1]  # its tree is main's
    out, _ = push(repo_path, request([(main, orphan.id, b"refs/heads/main")], [orphan]))
    assert b"brokenLink: refers to commit 2222" in out


def test_a_branch_at_a_commit_the_server_has_needs_no_new_pack(
    repo_path: Path, main: bytes
) -> None:
    packs = [p for p in objects_dir(repo_path) if p.endswith(".pack")]
    out, moved = push(repo_path, request([(ZERO, main, b"refs/heads/topic")], []))
    assert out == report(b"unpack ok", b"ok refs/heads/topic")
    assert moved == [(ZERO, main, b"refs/heads/topic")]
    assert [p for p in objects_dir(repo_path) if p.endswith(".pack")] == packs


def test_ref_checks(repo_path: Path, main: bytes) -> None:
    objects = new_commit(main, {b"b.txt": b"b\n"})
    new = objects[-1].id
    tag = Tag()
    tag.object = (Blob, objects[0].id)
    tag.name = b"v1"
    tag.tagger = b"Client <client@example.com>"
    tag.tag_time, tag.tag_timezone = 1_700_000_000, 0
    tag.message = b"a tag\n"
    commands = [
        (main, new, b"refs/heads/main"),
        (ZERO, new, b"refs/collab/synced/main"),
        (ZERO, new, b"refs/heads/x.lock"),
        (ZERO, new, b"HEAD"),
        (ZERO, new, b"refs/foo"),  # one level below refs/: git's receive-pack refuses it too
        (ZERO, tag.id, b"refs/heads/tagged"),
        (ZERO, tag.id, b"refs/tags/v1"),
        (ZERO, b"3" * 40, b"refs/heads/nothing"),
    ]
    out, moved = push(repo_path, request(commands, [*objects, tag], b"report-status"))
    assert out == report(
        b"unpack ok",
        b"ok refs/heads/main",
        b"ng refs/collab/synced/main refs/collab/ is private to the server",
        b"ng refs/heads/x.lock funny refname",
        b"ng HEAD funny refname",
        b"ng refs/foo funny refname",
        b"ng refs/heads/tagged not a commit",
        b"ok refs/tags/v1",
        b"ng refs/heads/nothing missing object",
    )
    assert moved == [(main, new, b"refs/heads/main"), (ZERO, tag.id, b"refs/tags/v1")]
    out, moved = push(repo_path, request([(new, ZERO, b"refs/heads/main")], None))
    assert out == report(
        b"unpack ok", b"ng refs/heads/main the default branch (HEAD) may not be deleted"
    )
    assert moved == []

    # two commands for one ref: neither is done (whichever came last would win)
    twice = [(ZERO, main, b"refs/heads/twice"), (ZERO, new, b"refs/heads/twice")]
    out, moved = push(repo_path, request([*twice, (ZERO, new, b"refs/heads/once")], []))
    duplicate = b"more than one command for this ref in one push"
    assert out == report(
        b"unpack ok",
        b"ng refs/heads/twice " + duplicate,
        b"ng refs/heads/twice " + duplicate,
        b"ok refs/heads/once",
    )
    assert moved == [(ZERO, new, b"refs/heads/once")]

    rewritten = new_commit(main, {b"c.txt": b"c\n"})
    out, _ = push(repo_path, request([(new, rewritten[-1].id, b"refs/heads/main")], rewritten))
    assert out == report(b"unpack ok", b"ng refs/heads/main non-fast-forward")
    out, _ = push(repo_path, request([(main, new, b"refs/heads/main")], []))  # a stale old value
    assert out == report(
        b"unpack ok", b"ng refs/heads/main fetch first: the branch moved on since it was fetched"
    )
    out, _ = push(repo_path, request([(ZERO, new, b"refs/heads/main")], []))
    assert out == report(b"unpack ok", b"ng refs/heads/main fetch first: the ref was created since")


def test_force_pushes_are_allowed_where_the_caller_says(repo_path: Path, main: bytes) -> None:
    objects = new_commit(main, {b"b.txt": b"b\n"})
    new = objects[-1].id
    out, _ = push(
        repo_path,
        request([(ZERO, new, b"refs/heads/mine"), (ZERO, new, b"refs/heads/theirs")], objects),
    )
    assert out == report(b"unpack ok", b"ok refs/heads/mine", b"ok refs/heads/theirs")
    rewritten = new_commit(main, {b"c.txt": b"c\n"})
    commands = [
        (new, rewritten[-1].id, b"refs/heads/mine"),
        (new, rewritten[-1].id, b"refs/heads/theirs"),
    ]

    def may_force(ref: bytes) -> str | None:
        return None if ref == b"refs/heads/mine" else "not yours"

    moved: list[tuple[bytes, bytes, bytes]] = []
    out, _ = run_service(
        repo_path,
        "git-receive-pack",
        request(commands, rewritten),
        moved.extend,
        may_force=may_force,
    )
    assert out == report(
        b"unpack ok", b"ok refs/heads/mine", b"ng refs/heads/theirs non-fast-forward: not yours"
    )
    assert moved == [(new, rewritten[-1].id, b"refs/heads/mine")]
    with Repo(str(repo_path)) as repo:
        assert read_ref(repo, b"refs/heads/theirs") == new


def test_atomic_pushes_move_all_refs_or_none(repo_path: Path, main: bytes) -> None:
    objects = new_commit(main, {b"b.txt": b"b\n"})
    new = objects[-1].id
    commands = [(main, new, b"refs/heads/main"), (ZERO, new, b"refs/collab/x")]
    before = objects_dir(repo_path)
    out, moved = push(repo_path, request(commands, objects, b"report-status atomic"))
    assert out == report(
        b"unpack ok",
        b"ng refs/heads/main atomic push failed",
        b"ng refs/collab/x refs/collab/ is private to the server",
    )
    assert moved == []
    assert objects_dir(repo_path) == before  # no command taken: the pack was dropped
    commands = [(main, new, b"refs/heads/main"), (ZERO, new, b"refs/heads/copy")]
    out, moved = push(repo_path, request(commands, objects, b"report-status atomic"))
    assert out == report(b"unpack ok", b"ok refs/heads/main", b"ok refs/heads/copy")


def test_bad_packs_shallow_and_malformed_requests(repo_path: Path, main: bytes) -> None:
    objects = new_commit(main, {b"b.txt": b"b\n"})
    good = request([(main, objects[-1].id, b"refs/heads/main")], objects)
    out, _ = push(repo_path, good[:-30])
    assert b"unpack ok" not in out and b"ng refs/heads/main unpacker error" in out
    out, _ = push(repo_path, good[:-1] + bytes([good[-1] ^ 0xFF]))  # checksum (its last byte)
    assert b"ng refs/heads/main unpacker error" in out
    # a push from a shallow clone: its pack refers to nothing the server lacks
    shallow = pkt(b"shallow " + main + b"\n") + good
    out, moved = push(repo_path, shallow)
    assert out == report(b"unpack ok", b"ok refs/heads/main")
    assert moved == [(main, objects[-1].id, b"refs/heads/main")]
    # ... and one whose commit's parent is not here (the shallow boundary of another history)
    stranger = new_commit(b"4" * 40, {b"c.txt": b"c\n"})
    body = pkt(b"shallow " + b"4" * 40 + b"\n") + request(
        [(objects[-1].id, stranger[-1].id, b"refs/heads/main")], stranger
    )
    out, moved = push(repo_path, body)
    assert b"ng refs/heads/main brokenLink: refers to commit 4444" in out, out
    assert moved == []
    main = objects[-1].id
    assert push(repo_path, b"0000") == (b"", [])  # git's probe before a large push
    for bad in (b"00", b"zzzz", b"0010short", pkt(b"old new ref\n") + b"0000"):
        with pytest.raises(MalformedPush):
            run_service(repo_path, "git-receive-pack", bad)
    with Repo(str(repo_path)) as repo:
        assert read_ref(repo, b"refs/heads/main") == main


def test_commands_and_refusals_over_the_limit(repo_path: Path, main: bytes) -> None:
    objects = new_commit(main, {b"b.txt": b"b\n"})
    body = request([(main, objects[-1].id, b"refs/heads/main")], objects, b"report-status quiet")
    head = io.BytesIO(body[:60])
    assert push_commands(head, partial=True) is None
    with pytest.raises(MalformedPush):
        push_commands(head)
    full = io.BytesIO(body)
    assert push_commands(full) == [(main, objects[-1].id, b"refs/heads/main")]
    assert full.tell() == 0
    answer = over_limit("git-receive-pack", io.BytesIO(body[:200]), 100)
    why = b"request over the size limit of 100 bytes"
    assert answer == (report(b"unpack " + why, b"ng refs/heads/main " + why), answer[1])
    assert over_limit("git-receive-pack", io.BytesIO(body[:60]), 50) is None
    fetch = over_limit("git-upload-pack", io.BytesIO(b""), 10)
    assert fetch is not None and fetch[0] == pkt(b"ERR request over the size limit of 10 bytes\n")
    assert read_request(io.BytesIO(b"0000").read) is None


def test_the_advertisement_offers_only_what_is_implemented(repo_path: Path, main: bytes) -> None:
    with Repo(str(repo_path)) as repo:
        repo.refs[b"refs/collab/synced/main"] = main
    body, _ = info_refs(repo_path, "git-receive-pack")
    first = body.split(b"0000", 1)[1]
    assert first[4:].startswith(main + b" refs/heads/main\0")
    caps = first.split(b"\0", 1)[1].split(b"\n", 1)[0].split()
    assert sorted(caps) == sorted(
        [
            b"report-status",
            b"delete-refs",
            b"side-band-64k",
            b"quiet",
            b"atomic",
            b"ofs-delta",
            b"agent=collab-engine",
        ]
    )
    assert b"refs/collab" not in body and b"HEAD" not in body


def test_a_quarantine_left_by_a_crash_is_removed(repo_path: Path, main: bytes) -> None:
    old = repo_path / "objects" / "incoming-left-by-a-crash"
    (old / "pack").mkdir(parents=True)
    (old / "pack" / "tmp_pack_x").write_bytes(b"PACK")
    young = repo_path / "objects" / "incoming-in-use"
    young.mkdir()
    long_ago = time.time() - 7 * 3600
    os.utime(old, (long_ago, long_ago))
    push(repo_path, request([(main, ZERO, b"refs/heads/other")], None))
    assert not old.exists() and young.exists()


def _chain(below: Tree, depth: int) -> list[Tree]:
    """Trees ``d/d/.../`` nesting ``below`` ``depth`` deep, the outermost last."""
    trees = []
    for _ in range(depth):
        outer = Tree()
        outer.add(b"d", 0o040000, (trees[-1] if trees else below).id)
        trees.append(outer)
    return trees


def _deep_commit(parent: bytes, inside: Tree) -> list[ShaFile]:
    """A commit on ``parent`` whose root holds ``a.txt`` and ``deep`` (``inside``)."""
    blob = Blob.from_string(b"a\n")
    root = Tree()
    root.add(b"a.txt", 0o100644, blob.id)
    root.add(b"deep", 0o040000, inside.id)
    return [blob, *new_commit(parent, {}, root.as_raw_string())[-2:]]


def test_trees_nested_deeper_than_git_takes_are_refused(repo_path: Path, main: bytes) -> None:
    """git's core.maxTreeDepth (4096): a root tree may have 4096 trees nested below it, not
    4097, counting the trees the repository already holds (nested deeper by a later push)."""
    leaf = Tree()
    leaf.add(b"f.txt", 0o100644, Blob.from_string(b"deep\n").id)
    chain = _chain(leaf, 4095)  # deep/d/d/.../f.txt: 4096 directories, 4096 trees below the root
    objects = [Blob.from_string(b"deep\n"), leaf, *chain, *_deep_commit(main, chain[-1])]
    taken = objects[-1].id
    out, moved = push(repo_path, request([(main, taken, b"refs/heads/main")], objects))
    assert out == report(b"unpack ok", b"ok refs/heads/main")
    before = objects_dir(repo_path)
    deeper = _chain(chain[-1], 1)  # one more, over trees the repository holds
    objects = [*deeper, *_deep_commit(taken, deeper[-1])]
    commit = objects[-1]
    assert isinstance(commit, Commit)
    out, moved = push(repo_path, request([(taken, commit.id, b"refs/heads/main")], objects))
    why = (
        f"tree {commit.tree.decode()} nests more than 4096 trees deep (git's core.maxTreeDepth): "
        "no git could check it out"
    )
    assert out == report(b"unpack ok", b"ng refs/heads/main " + why.encode())
    assert moved == []
    assert objects_dir(repo_path) == before
    with Repo(str(repo_path)) as repo:
        assert read_ref(repo, b"refs/heads/main") == taken
