"""Fetches answered by ``gitsync.wire.upload_pack`` called directly, checked against git itself:
the objects of each pack are those ``git rev-list --objects`` lists for the same wants, haves
and filter; every pack is taken by ``git index-pack``; ``ls-refs`` and refusals are as git's.
The git CLI drives the same code through the server's bridge in
``tests/collab/test_git_protocols``."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import GIT_ENV, run_git
from dulwich.object_format import DEFAULT_OBJECT_FORMAT
from dulwich.pack import PackData

from gitsync.packs.stream import PackStats
from gitsync.wire import fetch_plan, reachable
from gitsync.wire.upload_pack import answer

OFS_DELTA, REF_DELTA = 6, 7


def pkt(line: bytes) -> bytes:
    return b"%04x" % (len(line) + 4) + line


def v2_fetch(*args: bytes) -> bytes:
    lines = [pkt(b"command=fetch\n"), pkt(b"object-format=sha1\n"), b"0001"]
    lines += [pkt(arg + b"\n") for arg in args]
    return b"".join(lines) + b"0000"


def parse_lines(data: bytes) -> Iterator[bytes | None]:
    """The pkt-lines of a response: payloads, None for flush/delim."""
    pos = 0
    while pos < len(data):
        size = int(data[pos : pos + 4], 16)
        if size < 4:
            pos += 4
            yield None
            continue
        yield data[pos + 4 : pos + size]
        pos += size


def v2_response(out: bytes) -> tuple[list[bytes], bytes]:
    """(the lines before the pack, the pack) of a v2 fetch response."""
    lines: list[bytes] = []
    pack = bytearray()
    in_pack = False
    for line in parse_lines(out):
        if line is None:
            continue
        if in_pack:
            assert line[0] == 1, line[:50]
            pack += line[1:]
        elif line == b"packfile\n":
            in_pack = True
        else:
            lines.append(line)
    return lines, bytes(pack)


def pack_ids(pack: bytes, tmp_path: Path, name: str = "got", *, complete: bool = True) -> set[str]:
    """The ids of the objects in ``pack``, once ``git index-pack`` has taken it (``--strict``
    unless it is not ``complete``: a filter left objects out)."""
    path = tmp_path / f"{name}.pack"
    path.write_bytes(pack)
    run_git(tmp_path, "index-pack", *(["--strict"] if complete else []), str(path))
    listed = run_git(tmp_path, "verify-pack", "-v", str(path.with_suffix(".idx")))
    return {
        line.split()[0] for line in listed.splitlines() if line[:40].isalnum() and " " in line
    } - {"non", "chain"}


def rev_list(repo: Path, *args: str) -> set[str]:
    out = run_git(repo, "rev-list", "--objects", "--no-object-names", *args)
    return set(out.split())


def entry_kinds(pack: bytes, tmp_path: Path) -> list[int]:
    path = tmp_path / "kinds.pack"
    path.write_bytes(pack)
    with PackData(str(path), object_format=DEFAULT_OBJECT_FORMAT) as data:
        return [entry.pack_type_num for entry in data.iter_unpacked()]


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bare repository with a history worth fetching: 40 commits on ``main`` in nested
    directories (a rename, a deletion, a large file), a ``topic`` branch merged into it,
    annotated and lightweight tags; most of it in one pack with deltas (``git gc``), the
    last commits in another pack and as loose objects."""
    root = tmp_path_factory.mktemp("history")
    work = root / "work"
    run_git(root, "init", "-q", "-b", "main", str(work))

    def commit(message: str, when: int) -> None:
        env = {"GIT_AUTHOR_DATE": f"{when} +0000", "GIT_COMMITTER_DATE": f"{when} +0000"}
        run_git(work, "add", "-A")
        run_git(work, "commit", "-qm", message, env=env)

    when = 1_600_000_000
    for i in range(30):
        for j in range(i % 4 + 1):
            path = work / f"d{j}" / f"s{i % 3}" / f"f{i % 5}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(f"line {k} of {path.name} at {i}\n" for k in range(20 + i)))
        (work / "big.bin").write_bytes(bytes(range(256)) * (4 + i % 3))
        if i == 12:
            run_git(work, "mv", "d0/s0/f0.txt", "d0/renamed.txt")
        if i == 20:
            run_git(work, "rm", "-q", "d1/s1/f1.txt")
        when += 3600
        commit(f"main {i}", when)
        if i == 18:
            run_git(work, "tag", "-a", "v1", "-m", "version 1")
            run_git(work, "checkout", "-qb", "topic")
            for t in range(4):
                (work / "topic.txt").write_text(f"topic {t}\n")
                when += 60
                commit(f"topic {t}", when)
            run_git(work, "tag", "light")
            run_git(work, "checkout", "-q", "main")
        if i == 25:
            when += 60
            env = {"GIT_AUTHOR_DATE": f"{when} +0000", "GIT_COMMITTER_DATE": f"{when} +0000"}
            run_git(work, "merge", "-q", "--no-ff", "-m", "merge topic", "topic", env=env)
    bare = root / "repo.git"
    run_git(root, "clone", "-q", "--bare", str(work), str(bare))
    run_git(bare, "gc", "-q")
    for i in range(3):  # a pack of its own, then loose objects
        (work / "late.txt").write_text(f"late {i}\n")
        when += 60
        commit(f"late {i}", when)
        run_git(work, "push", "-q", str(bare), "main")
    run_git(bare, "repack", "-q")  # (the pushed objects in a second pack)
    (work / "loose.txt").write_text("loose\n")
    when += 60
    commit("loose", when)
    run_git(bare, "fetch", "-q", str(work), "main:main")  # (a few objects: loose ones)
    return bare


def tips(repo: Path) -> list[str]:
    return sorted({line.split()[0] for line in run_git(repo, "show-ref").splitlines()})


@pytest.mark.parametrize(
    "spec",
    [
        None,
        "blob:none",
        "tree:0",
        "tree:1",
        "tree:2",
        "blob:limit=1100",
        "combine:blob:none+tree:3",
    ],
)
def test_a_clone_sends_what_rev_list_lists(history: Path, tmp_path: Path, spec: str | None) -> None:
    wants = tips(history)
    args = [b"want " + sha.encode() for sha in wants] + [b"ofs-delta", b"done"]
    if spec is not None:
        args.append(b"filter " + spec.encode())
    stats = PackStats()
    out = b"".join(answer(history, v2_fetch(*args), 2, stats))
    lines, pack = v2_response(out)
    assert lines == []
    expected = rev_list(history, *wants, *([] if spec is None else [f"--filter={spec}"]))
    assert pack_ids(pack, tmp_path, complete=spec is None) == expected
    assert stats.objects == len(expected)
    if spec is None:
        assert stats.recompressed == 3  # (the loose objects: a commit, its tree, a blob)


def test_a_clone_of_some_refs(history: Path, tmp_path: Path) -> None:
    """``--single-branch``: the refs wanted, not all of them, alone and after a whole clone."""
    topic = run_git(history, "rev-parse", "topic").strip()
    for wants in ([topic], tips(history), [topic]):
        args = [b"want " + sha.encode() for sha in wants] + [b"done"]
        _, pack = v2_response(b"".join(answer(history, v2_fetch(*args), 2)))
        assert pack_ids(pack, tmp_path) == rev_list(history, *wants)


def test_named_objects_are_sent_whatever_the_filter(history: Path, tmp_path: Path) -> None:
    """A lazy fetch of a partial clone names trees and blobs a ref reaches, however old."""
    blob = run_git(history, "rev-parse", "main~20:big.bin").strip()
    tree = run_git(history, "rev-parse", "main~15:d0").strip()
    body = v2_fetch(
        b"want " + blob.encode(), b"want " + tree.encode(), b"filter blob:none", b"done"
    )
    _, pack = v2_response(b"".join(answer(history, body, 2)))
    got = pack_ids(pack, tmp_path, complete=False)
    assert got == rev_list(history, "--filter=blob:none", blob, tree)


def test_an_incremental_fetch_sends_what_the_client_lacks(history: Path, tmp_path: Path) -> None:
    have = run_git(history, "rev-parse", "main~8").strip()
    want = run_git(history, "rev-parse", "main").strip()
    body = v2_fetch(b"want " + want.encode(), b"have " + have.encode(), b"ofs-delta", b"done")
    _, pack = v2_response(b"".join(answer(history, body, 2)))
    assert pack_ids(pack, tmp_path, complete=False) == rev_list(history, want, "--not", have)


def test_thin_packs_and_reference_deltas(history: Path, tmp_path: Path) -> None:
    """With ``thin-pack``, deltas may refer to objects the client has; without ``ofs-delta``
    (an old client) every delta names its base."""
    have = run_git(history, "rev-parse", "main~30").strip()
    want = run_git(history, "rev-parse", "main~4").strip()
    client = tmp_path / "client.git"
    run_git(tmp_path, "init", "-q", "--bare", str(client))
    run_git(client, "fetch", "-q", str(history), f"{have}:refs/heads/old")
    body = v2_fetch(b"want " + want.encode(), b"have " + have.encode(), b"thin-pack", b"done")
    _, thin = v2_response(b"".join(answer(history, body, 2)))
    subprocess.run(
        ["git", "index-pack", "--stdin", "--fix-thin", "--strict"],
        cwd=client,
        input=thin,
        env=GIT_ENV,
        check=True,
        capture_output=True,
    )
    run_git(client, "update-ref", "refs/heads/new", want)
    run_git(client, "fsck", "--strict", "--no-dangling")
    assert OFS_DELTA not in entry_kinds(thin, tmp_path)

    # v0 without ofs-delta: a whole clone, deltas by reference
    wants = tips(history)
    lines = [pkt(f"want {wants[0]} side-band-64k\n".encode())]
    lines += [pkt(f"want {sha}\n".encode()) for sha in wants[1:]]
    v0 = b"".join(lines) + b"0000" + pkt(b"done\n")
    out = b"".join(answer(history, v0, 0))
    assert out.startswith(pkt(b"NAK\n"))
    pack = b"".join(line[1:] for line in parse_lines(out[8:]) if line)
    kinds = entry_kinds(pack, tmp_path)
    assert OFS_DELTA not in kinds and REF_DELTA in kinds
    assert pack_ids(pack, tmp_path, "v0") == rev_list(history, *wants)


def test_ls_refs(history: Path) -> None:
    main = run_git(history, "rev-parse", "main").strip().encode()
    tag = run_git(history, "rev-parse", "v1").strip().encode()
    peeled = run_git(history, "rev-parse", "v1^{}").strip().encode()
    body = b"".join(
        [pkt(b"command=ls-refs\n"), b"0001", pkt(b"symrefs\n"), pkt(b"peel\n")]
        + [pkt(b"ref-prefix " + p + b"\n") for p in (b"HEAD", b"refs/tags/v")]
        + [b"0000"]
    )
    out = b"".join(answer(history, body, 2))
    assert out == (
        pkt(main + b" HEAD symref-target:refs/heads/main\n")
        + pkt(tag + b" refs/tags/v1 peeled:" + peeled + b"\n")
        + b"0000"
    )


def test_an_empty_repository(repo_path: Path) -> None:
    body = b"".join(
        [pkt(b"command=ls-refs\n"), b"0001", pkt(b"symrefs\n"), pkt(b"unborn\n"), b"0000"]
    )
    out = b"".join(answer(repo_path, body, 2))
    assert out == pkt(b"unborn HEAD symref-target:refs/heads/main\n") + b"0000"


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ([b"want-ref refs/heads/nope", b"done"], b"unknown ref refs/heads/nope"),
        ([b"want " + b"1" * 40, b"done"], b"upload-pack: not our ref " + b"1" * 40),
        ([b"want MAIN", b"filter sparse:oid=x", b"done"], b"filter 'sparse:oid' not supported"),
        ([b"want MAIN", b"deepen 1", b"deepen-since 1", b"done"], b"deepen and deepen-since"),
        ([b"want MAIN", b"deepen-not nope", b"done"], b"deepen-not is not a ref: nope"),
        ([b"want MAIN", b"bogus"], b"unexpected line: 'bogus'"),
    ],
)
def test_refusals_are_answered_in_the_protocol(
    history: Path, args: list[bytes], error: bytes
) -> None:
    main = run_git(history, "rev-parse", "main").strip().encode()
    body = v2_fetch(*(arg.replace(b"MAIN", main) for arg in args))
    out = b"".join(answer(history, body, 2))
    assert out[4:8] == b"ERR " and error in out, out


def test_a_pack_that_fails_half_way_says_so_on_band_3(
    history: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing(*args: object, **kwargs: object) -> Iterator[bytes]:
        yield b"PACK\0\0\0\2\0\0\0\1"
        raise KeyError("a damaged object")

    monkeypatch.setattr(fetch_plan, "pack_pieces", failing)
    main = run_git(history, "rev-parse", "main").strip().encode()
    out = b"".join(answer(history, v2_fetch(b"want " + main, b"done"), 2))
    lines = list(parse_lines(out))
    assert lines[-2] == b"\x01PACK\0\0\0\2\0\0\0\1"
    assert lines[-1] == b"\x03pack failed on the server: 'a damaged object'\n"


def test_the_reachable_set_is_kept_and_extended(
    repo_path: Path, git: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lazy fetches do not walk the whole history each time: the set of what the refs
    reach is kept, extended when the refs move on, and made again when one is rewound."""
    work = repo_path.parent / "work"
    git(repo_path.parent, "init", "-q", "-b", "main", str(work))
    for i in range(3):
        (work / "a.txt").write_text(f"{i}\n")
        git(work, "add", "a.txt")
        git(work, "commit", "-qm", f"c{i}")
    git(work, "push", "-q", str(repo_path), "main")
    first = git(work, "rev-parse", "main~2:a.txt").strip().encode()
    built: list[object] = []
    real = reachable._build

    def counting(*args: object) -> object:
        built.append(args[2])  # (the closure extended; None: made from nothing)
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(reachable, "_build", counting)
    reachable.forget(str(repo_path))
    body = v2_fetch(b"want " + first, b"done")
    for _ in range(2):
        assert b"PACK" in b"".join(answer(repo_path, body, 2))
    assert built == [None]
    (work / "a.txt").write_text("3\n")
    git(work, "commit", "-qam", "c3")
    git(work, "push", "-q", str(repo_path), "main")
    assert b"PACK" in b"".join(answer(repo_path, body, 2))
    assert len(built) == 2 and built[1] is not None  # extended
    git(work, "reset", "-q", "--hard", "HEAD~3")
    (work / "b.txt").write_text("b\n")
    git(work, "add", "b.txt")
    git(work, "commit", "-qm", "rewritten")
    git(work, "push", "-q", "--force", str(repo_path), "main")
    assert b"PACK" in b"".join(answer(repo_path, body, 2))  # still reached (main~3)
    assert len(built) == 3 and built[2] is None  # made again: the old tip went away


def _git_upload_pack(repo: Path, body: bytes) -> bytes:
    """git's own answer to the v2 request ``body``."""
    return subprocess.run(
        ["git", "upload-pack", "--stateless-rpc", str(repo)],
        input=body,
        capture_output=True,
        check=True,
        env={**GIT_ENV, "GIT_PROTOCOL": "version=2"},
    ).stdout


def _shallow_lines(out: bytes) -> list[bytes]:
    return sorted(
        line.rstrip(b"\n")
        for line in parse_lines(out)
        if line is not None and line.startswith((b"shallow ", b"unshallow "))
    )


def test_deepen_since_cuts_where_git_does_when_dates_go_back(tmp_path: Path) -> None:
    """``--shallow-since`` is ``rev-list --max-age``, which does not go on past a commit older
    than the limit: a commit reached both through such a commit (a rebased one, with an old
    date) and through younger ones is kept, not cut away."""
    work = tmp_path / "work"
    run_git(tmp_path, "init", "-q", "-b", "main", str(work))
    ids: dict[str, str] = {}

    def commit(name: str, when: int) -> None:
        env = {"GIT_AUTHOR_DATE": f"{when} +0000", "GIT_COMMITTER_DATE": f"{when} +0000"}
        (work / f"{name}.txt").write_text(name)
        run_git(work, "add", "-A")
        run_git(work, "commit", "-qm", name, env=env)
        ids[name] = run_git(work, "rev-parse", "HEAD").strip()

    commit("root", 1_500_000_000)
    commit("young", 1_600_000_000)
    run_git(work, "checkout", "-qb", "side")
    commit("old-dated", 1_550_000_000)  # a child with an older date than its parent
    run_git(work, "checkout", "-q", "main")
    commit("younger", 1_600_100_000)
    env = {"GIT_AUTHOR_DATE": "1600200000 +0000", "GIT_COMMITTER_DATE": "1600200000 +0000"}
    run_git(work, "merge", "-q", "--no-ff", "-m", "merge", "side", env=env)
    tip = run_git(work, "rev-parse", "HEAD").strip().encode()
    bare = tmp_path / "repo.git"
    run_git(tmp_path, "clone", "-q", "--bare", str(work), str(bare))

    for client_shallow in [[], [tip]]:
        args = [b"want " + tip, *(b"shallow " + sha for sha in client_shallow)]
        body = v2_fetch(*args, b"deepen-since 1590000000", b"done")
        ours = _shallow_lines(b"".join(answer(bare, body, 2)))
        assert ours == _shallow_lines(_git_upload_pack(bare, body)), client_shallow
    assert b"shallow " + ids["young"].encode() in ours


def test_a_relative_deepening_starts_from_each_boundary_as_with_git(tmp_path: Path) -> None:
    """``--deepen=<n>`` moves each of the client's boundaries ``n`` commits deeper, however
    far from the wants each is (a clone of several branches cut at different depths)."""
    work = tmp_path / "work"
    run_git(tmp_path, "init", "-q", "-b", "main", str(work))
    when = 1_600_000_000

    def commit(name: str) -> str:
        nonlocal when
        when += 60
        env = {"GIT_AUTHOR_DATE": f"{when} +0000", "GIT_COMMITTER_DATE": f"{when} +0000"}
        (work / "f.txt").write_text(name)
        run_git(work, "add", "-A")
        run_git(work, "commit", "-qm", name, env=env)
        return run_git(work, "rev-parse", "HEAD").strip()

    chain = [commit(f"main {i}") for i in range(12)]
    run_git(work, "checkout", "-qb", "side", chain[3])
    side = [commit(f"side {i}") for i in range(3)]
    bare = tmp_path / "repo.git"
    run_git(tmp_path, "clone", "-q", "--bare", str(work), str(bare))
    wants = [chain[-1].encode(), side[-1].encode()]
    # a clone cut 2 commits deep on main and 3 on side
    client = [chain[-2].encode(), side[0].encode()]
    for depth in (1, 3, 20):
        args = [*(b"want " + sha for sha in wants), *(b"shallow " + sha for sha in client)]
        body = v2_fetch(*args, b"deepen %d" % depth, b"deepen-relative", b"done")
        ours = _shallow_lines(b"".join(answer(bare, body, 2)))
        assert ours == _shallow_lines(_git_upload_pack(bare, body)), depth
        assert ours, depth
