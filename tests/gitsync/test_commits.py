"""Commits on the object store: incremental trees, durability order, CAS on refs, stale locks."""

from __future__ import annotations

import os
import random
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from dulwich.objects import Blob, Commit, ObjectID, Tree
from dulwich.repo import Repo

import gitsync.objects.commits as commits
from gitsync.locks import RefLocked, recover_stale_locks
from gitsync.naming import participant_branch
from gitsync.objects.commits import (
    DIR_MODE,
    FILE_MODE,
    BlobEntry,
    BranchExists,
    NothingToCommit,
    RefMoved,
    author_line,
    branch_heads,
    commit_changes,
    commit_message,
    create_branch,
    delete_branch,
    edit_tree,
    read_ref,
    read_synced,
    set_synced,
    synced_ref,
    write_objects,
)
from protocol.errors import ProtocolError

ALICE = "Alice Doe <alice@example.com>"
ROOT = Path(__file__).resolve().parents[2]
Git = Callable[..., str]


def commit(
    repo: Repo, changes: dict[str, bytes | None], expected: bytes | None, **kw: object
) -> bytes:
    kw.setdefault("message", "edit\n")
    kw.setdefault("author", ALICE)
    return commit_changes(repo, "main", changes, expected=expected, **kw)  # type: ignore[arg-type]


def tree_files(git: Git, repo_path: Path, rev: str) -> dict[str, str]:
    """path -> blob id of every file at ``rev``, as the git CLI lists it."""
    out = git(repo_path, "ls-tree", "-r", "-z", rev)
    files = {}
    for line in filter(None, out.split("\0")):
        meta, path = line.split("\t", 1)
        files[path] = meta.split()[2]
    return files


def cli_tree(git: Git, tmp: Path, repo_path: Path, files: dict[str, bytes]) -> str:
    """The tree id the git CLI writes for ``files``, built from scratch in a fresh index."""
    work = tmp / f"work-{random.getrandbits(32)}"
    for path, data in files.items():
        (work / path).parent.mkdir(parents=True, exist_ok=True)
        (work / path).write_bytes(data)
    work.mkdir(exist_ok=True)
    index = {"GIT_INDEX_FILE": str(tmp / f"index-{random.getrandbits(32)}")}
    args = ["--git-dir", str(repo_path), "--work-tree", str(work)]
    git(tmp, *args, "add", "-A", env=index)
    return git(tmp, *args, "write-tree", env=index).strip()


def test_root_commit_and_nested_paths_read_back_byte_exact(
    repo: Repo, repo_path: Path, git: Git, git_out: Callable[..., bytes]
) -> None:
    files = {
        "README.md": b"# Title\r\nwindows line\r\n",
        "src/app/main.py": "print('héllo 世界 🎉')\n".encode(),
        "src/app/data.bin": bytes(range(256)) * 4,
        "src/lib.py": b"no newline at end",
        "empty.txt": b"",
    }
    head = commit(repo, dict(files), None)
    assert read_ref(repo, b"refs/heads/main") == head
    for path, data in files.items():
        assert git_out(repo_path, "show", f"main:{path}") == data
    assert set(tree_files(git, repo_path, "main")) == set(files)
    assert git(repo_path, "rev-list", "--count", "main").strip() == "1"


def test_updates_deletes_and_prunes_only_the_changed_paths(
    repo: Repo, repo_path: Path, git: Git
) -> None:
    first = commit(
        repo,
        {"a/b/c.txt": b"c\n", "a/b/d.txt": b"d\n", "a/e.txt": b"e\n", "docs/x.md": b"x\n"},
        None,
    )
    docs_before = git(repo_path, "rev-parse", "main:docs").strip()
    second = commit(repo, {"a/b/c.txt": None, "a/b/d.txt": None, "a/e.txt": b"E\n"}, first)
    assert tree_files(git, repo_path, "main").keys() == {"a/e.txt", "docs/x.md"}
    assert git(repo_path, "ls-tree", "main:a").split()[-1] == "e.txt"  # a/b pruned
    assert git(repo_path, "rev-parse", "main:docs").strip() == docs_before  # untouched subtree kept
    third = commit(repo, {"a/e.txt": None}, second)
    assert tree_files(git, repo_path, "main").keys() == {"docs/x.md"}
    commit(repo, {"docs/x.md": None}, third)
    assert git(repo_path, "ls-tree", "main").strip() == ""  # empty root tree
    assert (
        git(repo_path, "rev-parse", "main^{tree}").strip()
        == "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
    )


def test_random_edits_give_the_same_trees_as_the_git_cli(
    repo: Repo, repo_path: Path, git: Git, tmp_path: Path
) -> None:
    rng = random.Random(7)
    dirs = ["", "a/", "a/b/", "a/b/c/", "d/", "d/e/"]
    model: dict[str, bytes] = {}
    head = None
    for step in range(40):
        changes: dict[str, bytes | None] = {}
        for _ in range(rng.randint(1, 4)):
            if model and rng.random() < 0.35:
                changes[rng.choice(sorted(model))] = None
            else:
                path = rng.choice(dirs) + f"f{rng.randint(0, 6)}.txt"
                if not any(p.startswith(path + "/") for p in model):
                    changes[path] = f"step {step} {rng.random()}\n".encode()
        expected_model = {**model, **{p: c for p, c in changes.items() if c is not None}}
        for path, content in changes.items():
            if content is None:
                expected_model.pop(path, None)
        try:
            head = commit(repo, changes, head)
        except NothingToCommit:
            assert expected_model == model
            continue
        model = expected_model
        if step % 8 == 7 or step == 39:
            ours = git(repo_path, "rev-parse", "main^{tree}").strip()
            assert ours == cli_tree(git, tmp_path, repo_path, model)
    assert git(repo_path, "fsck", "--full", "--strict", "--no-dangling").strip() == ""


def test_unchanged_tree_is_nothing_to_commit(repo: Repo, repo_path: Path, git: Git) -> None:
    head = commit(repo, {"a.txt": b"a\n", "d/b.txt": b"b\n"}, None)
    with pytest.raises(NothingToCommit):
        commit(repo, {"a.txt": b"a\n"}, head)
    with pytest.raises(NothingToCommit):
        commit(repo, {"missing.txt": None, "d/missing/x": None}, head)
    with pytest.raises(NothingToCommit):
        commit(repo, {}, head)
    assert read_ref(repo, b"refs/heads/main") == head
    empty = commit(repo, {}, head, allow_empty=True)
    assert git(repo_path, "rev-parse", "main^{tree}") == git(
        repo_path, "rev-parse", f"{head.decode()}^{{tree}}"
    )
    assert git(repo_path, "rev-parse", "main^").strip() == head.decode()
    assert empty != head


def test_file_replaces_directory_and_back(repo: Repo, repo_path: Path, git: Git) -> None:
    head = commit(repo, {"x/a.txt": b"a", "x/b/c.txt": b"c", "y": b"file"}, None)
    head = commit(repo, {"x/a.txt": None, "x/b/c.txt": None, "x": b"now a file"}, head)
    head = commit(repo, {"y": None, "y/z.txt": b"now a dir"}, head)
    assert tree_files(git, repo_path, "main").keys() == {"x", "y/z.txt"}
    with pytest.raises(ValueError):
        commit(repo, {"q": b"file", "q/r": b"and dir"}, head)
    assert git(repo_path, "fsck", "--full", "--strict", "--no-dangling").strip() == ""


def test_bad_paths_and_identities_are_refused(repo: Repo) -> None:
    for bad in ("../x", "/abs", ".git/config", "a//b", "a\\b"):
        with pytest.raises((ProtocolError, ValueError)):
            commit(repo, {bad: b"x"}, None)
    with pytest.raises(ValueError):
        commit(repo, {"a": b"x"}, None, author="no email")
    with pytest.raises(ProtocolError):
        commit_changes(repo, "bad..name", {"a": b"x"}, message="m", author=ALICE, expected=None)
    assert branch_heads(repo) == {}


def test_author_and_co_authors_show_in_git_log(repo: Repo, repo_path: Path, git: Git) -> None:
    message = commit_message(
        ["src/app.py", "README.md"], ["Bob <bob@example.com>", "Carol <c@example.com>"]
    )
    assert message == (
        "Edit src/app.py, README.md\n\n"
        "Co-authored-by: Bob <bob@example.com>\nCo-authored-by: Carol <c@example.com>\n"
    )
    commit(
        repo,
        {"src/app.py": b"x", "README.md": b"y"},
        None,
        message=message,
        committer="collab <collab@localhost>",
        timestamp=1_700_000_000,
    )
    log = git(
        repo_path,
        "log",
        "-1",
        "--format=%an <%ae>|%cn <%ce>|%at|%s|%(trailers:key=Co-authored-by,valueonly,separator=;)",
    )
    assert log.strip() == (
        "Alice Doe <alice@example.com>|collab <collab@localhost>|1700000000|Edit src/app.py, README.md|"
        "Bob <bob@example.com>;Carol <c@example.com>"
    )


def test_message_and_author_lines() -> None:
    assert commit_message(["a"], []) == "Edit a\n"
    assert commit_message(list("abcdef"), ["X <x@y>", "X <x@y>"]) == (
        "Edit a, b and 4 more files\n\nCo-authored-by: X <x@y>\n"
    )
    assert author_line("Bob", "bob@example.com") == "Bob <bob@example.com>"
    assert author_line("Evil <x> Name\n", "a b<c>@d") == "Evil x Name <abc@d>"
    jose = participant_branch("José").removeprefix("people/")
    assert author_line("José") == f"José <{jose}@collab.invalid>"
    # one e-mail per name: names that read alike in ASCII, or not at all, stay apart
    names = ["Zoë", "Zoe", "zoe", "李雷", "王芳", "Алиса", "Борис"]
    emails = {author_line(name).partition("<")[2] for name in names}
    assert len(emails) == len(names)


def test_objects_are_written_before_the_ref_and_fsynced(
    repo: Repo, monkeypatch: pytest.MonkeyPatch
) -> None:
    head = commit(repo, {"a.txt": b"1"}, None)
    events: list[str] = []
    real_fsync, real_replace, real_swap = os.fsync, os.replace, commits._swap

    def fsync(fd: int) -> None:
        events.append("fsync")
        real_fsync(fd)

    def replace(src: str, dst: str) -> None:
        events.append("rename")
        real_replace(src, dst)

    def swap(*args: object) -> None:
        events.append("ref")
        real_swap(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(commits, "_swap", swap)
    new = commit(repo, {"a.txt": b"2", "b/c.txt": b"3"}, head)
    # two blobs, tree b, the root tree and the commit in one pack: the pack and its index
    # fsynced, renamed in (the index last), the directory fsynced, and only then the ref moves
    before_ref = events[: events.index("ref")]
    assert before_ref == ["fsync", "fsync", "rename", "rename", "fsync"]
    assert read_ref(repo, b"refs/heads/main") == new
    packed = {sha for pack in repo.object_store.packs for sha in pack}
    commit_obj = repo[new]
    assert isinstance(commit_obj, Commit)
    assert {new, commit_obj.tree} <= {bytes(sha) for sha in packed}


def test_a_failed_fsync_leaves_the_ref_and_no_temporary_files(
    repo: Repo, monkeypatch: pytest.MonkeyPatch
) -> None:
    head = commit(repo, {"a.txt": b"1"}, None)

    def broken(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(OSError, match="Input/output"):
        commit(repo, {"a.txt": b"2", "b/c.txt": b"3"}, head)
    monkeypatch.undo()
    assert read_ref(repo, b"refs/heads/main") == head
    assert list(Path(repo.object_store.path).glob("pack/tmp_*")) == []


def test_an_object_written_again_is_harmless(repo: Repo, repo_path: Path, git: Git) -> None:
    head = commit(repo, {"a.txt": b"same"}, None)
    obj = repo[head]
    assert isinstance(obj, Commit)
    write_objects(repo, [obj, obj])  # stored already: a second copy in a new pack
    assert len(list(Path(repo.object_store.path).glob("pack/*.pack"))) == 2
    git(repo_path, "fsck", "--full", "--strict")
    assert git(repo_path, "cat-file", "-p", f"{head.decode()}:a.txt") == "same"


def test_cas_has_one_winner_and_the_ref_never_moves_back(
    repo: Repo, git: Git, repo_path: Path
) -> None:
    base = commit(repo, {"a.txt": b"base"}, None)
    first = commit(repo, {"a.txt": b"first"}, base)
    with pytest.raises(RefMoved) as moved:
        commit(repo, {"a.txt": b"second"}, base)
    assert moved.value.current == first
    assert read_ref(repo, b"refs/heads/main") == first
    with pytest.raises(RefMoved):
        commit(repo, {"new.txt": b"x"}, None)  # the branch exists already
    assert read_ref(repo, b"refs/heads/main") == first
    assert git(repo_path, "rev-list", "main").split() == [first.decode(), base.decode()]


def test_threads_racing_on_one_branch_lose_no_commit(repo_path: Path, git: Git) -> None:
    with Repo(str(repo_path)) as setup:
        root = commit(setup, {"start.txt": b"0"}, None)
    workers, per_worker = 4, 8
    barrier = threading.Barrier(workers)
    lost_races = []
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            with Repo(str(repo_path)) as repo:
                barrier.wait()
                head = root
                for i in range(per_worker):
                    while True:
                        try:
                            head = commit(repo, {f"w{n}/{i}.txt": f"{n}:{i}".encode()}, head)
                            break
                        except RefMoved as exc:
                            lost_races.append(n)
                            assert exc.current is not None
                            head = exc.current
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert lost_races  # they did race
    history = git(repo_path, "rev-list", "--first-parent", "main").split()
    assert len(history) == workers * per_worker + 1
    files = tree_files(git, repo_path, "main")
    assert {f"w{n}/{i}.txt" for n in range(workers) for i in range(per_worker)} <= files.keys()


WORKER = """
import sys
from dulwich.repo import Repo
from gitsync.objects.commits import RefMoved, commit_changes, read_ref
path, n, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with Repo(path) as repo:
    head = read_ref(repo, b"refs/heads/main")
    retries = 0
    for i in range(count):
        while True:
            try:
                head = commit_changes(repo, "main", {f"p{n}/{i}.txt": b"x"}, message="m\\n",
                                      author="P <p@example.com>", expected=head)
                break
            except RefMoved as exc:
                retries += 1
                head = exc.current
print(retries)
"""


def test_processes_racing_on_one_branch_lose_no_commit(repo_path: Path, git: Git) -> None:
    with Repo(str(repo_path)) as setup:
        commit(setup, {"start.txt": b"0"}, None)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(repo_path), str(n), "15"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        for n in range(3)
    ]
    for proc in procs:
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0
        int(out)
    assert len(git(repo_path, "rev-list", "main").split()) == 3 * 15 + 1
    assert {f"p{n}/{i}.txt" for n in range(3) for i in range(15)} <= tree_files(
        git, repo_path, "main"
    ).keys()
    assert git(repo_path, "fsck", "--full", "--strict", "--no-dangling").strip() == ""


def _old(path: Path, age: float = 60.0) -> None:
    path.write_bytes(b"")
    then = time.time() - age
    os.utime(path, (then, then))


def test_stale_ref_lock_is_recovered(repo: Repo, repo_path: Path) -> None:
    head = commit(repo, {"a.txt": b"1"}, None)
    lock = repo_path / "refs" / "heads" / "main.lock"
    _old(lock)
    new = commit(repo, {"a.txt": b"2"}, head)
    assert read_ref(repo, b"refs/heads/main") == new
    assert not lock.exists()


def test_fresh_lock_is_a_clear_error_and_leaves_the_ref(
    repo: Repo, repo_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(commits, "LOCK_WAIT", 0.2)
    head = commit(repo, {"a.txt": b"1"}, None)
    lock = repo_path / "refs" / "heads" / "main.lock"
    lock.write_bytes(b"")
    with pytest.raises(RefLocked, match=r"main\.lock"):
        commit(repo, {"a.txt": b"2"}, head)
    assert read_ref(repo, b"refs/heads/main") == head
    assert lock.exists()
    lock.unlink()
    assert commit(repo, {"a.txt": b"2"}, head) != head


def test_stale_packed_refs_lock_does_not_block_deleting_a_packed_branch(
    repo: Repo, repo_path: Path, git: Git
) -> None:
    head = commit(repo, {"a.txt": b"1"}, None)
    create_branch(repo, "topic", head)
    git(repo_path, "pack-refs", "--all")
    assert not (repo_path / "refs" / "heads" / "topic").exists()
    _old(repo_path / "packed-refs.lock")
    delete_branch(repo, "topic", head)
    assert "topic" not in branch_heads(repo)
    assert "topic" not in git(repo_path, "branch", "--list")


def test_recover_stale_locks_removes_only_old_locks(repo: Repo, repo_path: Path) -> None:
    commit(repo, {"a.txt": b"1"}, None)
    old = [repo_path / "packed-refs.lock", repo_path / "refs" / "heads" / "x.lock"]
    for path in old:
        _old(path)
    (repo_path / "refs" / "heads" / "nested").mkdir()
    old.append(repo_path / "refs" / "heads" / "nested" / "y.lock")
    _old(old[-1])
    old.append(repo_path / "objects" / "pack" / "collab-combine.lock")  # a combination's
    _old(old[-1])
    fresh = repo_path / "HEAD.lock"
    fresh.write_bytes(b"")
    removed = recover_stale_locks(repo, older_than=10)
    assert sorted(removed) == sorted(old)
    assert fresh.exists() and not any(p.exists() for p in old)


def test_branches_create_delete_and_list(repo: Repo, git: Git, repo_path: Path) -> None:
    head = commit(repo, {"a.txt": b"1"}, None)
    create_branch(repo, "people/alice-12345678", head)
    with pytest.raises(BranchExists):
        create_branch(repo, "people/alice-12345678", head)
    with pytest.raises(ValueError):
        create_branch(repo, "other", b"0" * 40)
    assert branch_heads(repo) == {"main": head, "people/alice-12345678": head}
    newer = commit_changes(
        repo, "people/alice-12345678", {"b": b"2"}, message="m", author=ALICE, expected=head
    )
    with pytest.raises(RefMoved) as moved:
        delete_branch(repo, "people/alice-12345678", head)
    assert moved.value.current == newer
    delete_branch(repo, "people/alice-12345678", newer)
    assert branch_heads(repo) == {"main": head}
    assert git(repo_path, "for-each-ref", "--format=%(refname)").split() == ["refs/heads/main"]


def test_a_new_branch_is_made_with_its_commit_or_not_at_all(
    repo: Repo, git: Git, repo_path: Path
) -> None:
    """``new_branch``: the branch is made at the commit, from ``expected``; a commit that
    changes nothing, or a name that exists, leaves no branch made (none without it)."""
    head = commit(repo, {"a.txt": b"1"}, None)
    kept = commit_changes(
        repo, "kept", {"b.txt": b"2"}, message="m", author=ALICE, expected=head, new_branch=True
    )
    assert git(repo_path, "rev-parse", "kept~1").strip() == head.decode()
    assert git(repo_path, "show", "kept:b.txt") == "2"
    with pytest.raises(NothingToCommit):
        commit_changes(
            repo,
            "empty",
            {"a.txt": b"1"},
            message="m",
            author=ALICE,
            expected=head,
            new_branch=True,
        )
    with pytest.raises(BranchExists):
        commit_changes(
            repo, "kept", {"c.txt": b"3"}, message="m", author=ALICE, expected=head, new_branch=True
        )
    assert branch_heads(repo) == {"main": head, "kept": kept}


def test_synced_ref_is_private_and_readable(repo: Repo, git: Git, repo_path: Path) -> None:
    head = commit(repo, {"a.txt": b"1"}, None)
    assert read_synced(repo, "main") is None
    set_synced(repo, "main", head)
    assert synced_ref("main") == b"refs/collab/synced/main"
    assert read_synced(repo, "main") == head
    newer = commit(repo, {"a.txt": b"2"}, head)
    set_synced(repo, "main", newer)
    assert read_synced(repo, "main") == newer
    assert "main" in branch_heads(repo) and len(branch_heads(repo)) == 1
    assert git(repo_path, "rev-parse", "refs/collab/synced/main").strip() == newer.decode()


def test_edit_tree_matches_a_tree_built_from_scratch() -> None:
    """Splicing entries into a stored tree gives the bytes dulwich's serialisation gives, for
    names whose order depends on git's directory rule and modes that switch file <-> dir."""
    rng = random.Random(11)
    names = [b"a", b"a.b", b"a-b", b"a0", b"a b", b"b", b"ab", b"\xc3\xa9", b"z", b"a.", b"Z"]
    names += [b"f%02d" % i for i in range(30)]
    modes = [FILE_MODE, 0o100755, stat.S_IFLNK, DIR_MODE, 0o160000]
    for _ in range(500):
        tree = Tree()
        for name in rng.sample(names, rng.randrange(len(names) + 1)):
            tree[name] = (rng.choice(modes), ObjectID(rng.randbytes(20).hex().encode()))
        edits: dict[bytes, tuple[int, bytes] | None] = {}
        for name in rng.sample(names, rng.randrange(1, 5)):
            if rng.random() < 0.3:
                edits[name] = None
            else:
                edits[name] = (rng.choice(modes), rng.randbytes(20).hex().encode())
        expected = Tree()
        for name, mode, sha in tree.items():
            expected[name] = (mode, sha)
        for name, edit in edits.items():
            if edit is None:
                if name in expected:
                    del expected[name]
            else:
                expected[name] = (edit[0], ObjectID(edit[1]))
        assert edit_tree(tree.as_raw_string(), edits) == expected.as_raw_string()


def test_a_pruned_commit_is_not_taken_from_the_cache(repo: Repo, repo_path: Path, git: Git) -> None:
    base = commit(repo, {"a.txt": b"1"}, None)
    create_branch(repo, "topic", base)
    gone = commit_changes(
        repo, "topic", {"b.txt": b"2"}, message="x\n", author=ALICE, expected=base
    )
    delete_branch(repo, "topic", gone)
    git(repo_path, "reflog", "expire", "--expire=now", "--all")
    git(repo_path, "gc", "-q", "--prune=now")
    assert git(repo_path, "cat-file", "-t", gone.decode(), check=False) == ""
    fresh = Repo(str(repo_path))
    try:
        with pytest.raises(ValueError, match="not in the repository"):
            create_branch(fresh, "topic", gone)
        with pytest.raises(ValueError, match="not in the repository"):
            commit_changes(
                fresh,
                "main",
                {"c.txt": b"3"},
                message="merge\n",
                author=ALICE,
                expected=base,
                extra_parents=[gone],
            )
    finally:
        fresh.close()
    git(repo_path, "fsck", "--full", "--strict")


def test_text_is_never_written_over_a_link_or_a_submodule(
    repo: Repo, repo_path: Path, git: Git
) -> None:
    """A live document's text for a path that became a link or a submodule keeps that entry
    as it is (the text is not committed); a regular file beside it is committed."""
    link = Blob.from_string(b"target.txt")
    repo.object_store.add_object(link)
    head = commit(
        repo,
        {
            "link": BlobEntry(0o120000, bytes(link.id), None),
            "sub": BlobEntry(0o160000, b"1f6589ec3a1ee910f9a65cc3ceac60b26677bc0e", None),
            "plain.txt": b"plain\n",
        },
        None,
    )
    before = git(repo_path, "ls-tree", "main", "link", "sub")
    with pytest.raises(NothingToCommit):
        commit(repo, {"link": b"text\n", "sub": b"text\n"}, head)
    after = commit(repo, {"link": b"text\n", "plain.txt": b"edited\n"}, head)
    assert git(repo_path, "ls-tree", "main", "link", "sub") == before
    assert git(repo_path, "show", f"{after.decode()}:plain.txt") == "edited\n"


def test_trees_rewritten_get_the_modes_git_writes(
    repo: Repo, repo_path: Path, git: Git, git_run: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    """A tree from an old history holds modes git no longer writes (``100664``, a
    zero-padded ``040000``): a tree the engine rewrites gets them as ``git write-tree``
    would (``100644``, ``40000``), so that its new trees pass ``git fsck --strict``; an
    untouched subtree keeps its id."""
    sub = Tree()
    sub.add(b"x.txt", FILE_MODE, Blob.from_string(b"x\n").id)
    kept = Tree()
    kept.add(b"y.txt", 0o100664, Blob.from_string(b"y\n").id)
    for blob in (b"x\n", b"y\n", b"old\n", b"edit me\n"):
        repo.object_store.add_object(Blob.from_string(blob))
    repo.object_store.add_object(sub)
    repo.object_store.add_object(kept)
    raw = b"".join(
        [
            b"100664 a-legacy.txt\0" + Blob.from_string(b"old\n").sha().digest(),
            b"100644 b-edit.txt\0" + Blob.from_string(b"edit me\n").sha().digest(),
            b"040000 c-dir\0" + sub.sha().digest(),
            b"40000 d-kept\0" + kept.sha().digest(),
        ]
    )
    root = Tree.from_raw_string(Tree.type_num, raw)
    assert root.as_raw_string() == raw
    repo.object_store.add_object(root)
    first = Commit()
    first.tree, first.message = root.id, b"old\n"
    first.author = first.committer = ALICE.encode()
    first.author_time = first.commit_time = 1_000_000_000
    first.author_timezone = first.commit_timezone = 0
    repo.object_store.add_object(first)
    repo.refs[b"refs/heads/main"] = first.id
    assert "zeroPaddedFilemode" in git_run(repo_path, "fsck", "--strict").stderr

    commit(repo, {"b-edit.txt": b"edited\n", "d-kept/z.txt": b"z\n"}, first.id)
    listed = git(repo_path, "cat-file", "-p", "main^{tree}")
    assert [line.split()[0] for line in listed.splitlines()] == ["100644"] * 2 + ["040000"] * 2
    root_id = repo[repo.refs[b"refs/heads/main"]].tree
    new_root = repo.object_store[root_id]
    assert isinstance(new_root, Tree)
    raw_root = new_root.as_raw_string()
    assert b"100664" not in raw_root and b"040000" not in raw_root
    assert new_root[b"c-dir"][1] == sub.id  # untouched: the same subtree
    assert git(repo_path, "ls-tree", "main:d-kept").split()[0] == "100644"
    # the git CLI writes the same trees
    assert git(repo_path, "rev-parse", "main:d-kept").strip() == cli_tree(
        git, repo_path.parent, repo_path, {"y.txt": b"y\n", "z.txt": b"z\n"}
    )


def test_a_commit_is_stamped_with_the_local_time_zone(
    repo: Repo, repo_path: Path, git: Git, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As git stamps a commit made here: with the offset of the process's time zone at the
    commit's time (summer time included), not always UTC."""
    monkeypatch.setenv("TZ", "America/St_Johns")  # -03:30, or -02:30 in summer
    time.tzset()
    try:
        winter = commit(repo, {"a.txt": b"1\n"}, None, timestamp=1_700_000_000)  # November
        summer = commit(repo, {"a.txt": b"2\n"}, winter, timestamp=1_720_000_000)  # July
    finally:
        monkeypatch.undo()
        time.tzset()
    monkeypatch.setenv("TZ", "XXX-0:00:30")  # an offset of seconds: git's minutes
    time.tzset()
    try:
        odd = commit(repo, {"a.txt": b"3\n"}, summer, timestamp=1_720_000_100)
    finally:
        monkeypatch.undo()
        time.tzset()
    stamps = git(repo_path, "log", "-1", "--format=%ad", "--date=raw", odd.decode())
    assert stamps.split()[1] == "+0000"
    for rev, zone in ((winter, "-0330"), (summer, "-0230")):
        stamps = git(repo_path, "log", "-1", "--format=%ad%n%cd", "--date=raw", rev.decode())
        assert stamps.split() == [str(commit_time(repo, rev)), zone] * 2, stamps


def commit_time(repo: Repo, rev: bytes) -> int:
    made = repo[rev]
    assert isinstance(made, Commit)
    return made.commit_time
