"""Ref writes from several threads at once: none fails because another pruned a directory."""

from __future__ import annotations

import threading
from pathlib import Path

from dulwich.refs import Ref
from dulwich.repo import Repo

from gitsync import Repositories, create_demo_repo
from gitsync.locks import call_past_stale_locks
from gitsync.objects.commits import branch_ref, head_target, read_ref, set_synced, synced_ref
from gitsync.wire.fetch_plan import FetchSession


def test_a_directory_pruned_under_a_ref_write_is_made_again(tmp_path: Path) -> None:
    create_demo_repo(tmp_path / "demo", {"a.txt": "a\n"})
    repos = Repositories(tmp_path)
    try:
        git = repos.open("demo")
        head = read_ref(git, branch_ref("main"))
        assert head is not None
        errors: list[BaseException] = []

        def participant(i: int) -> None:
            # first opens by several people: each records a synced ref under one directory,
            # while deleting a ref there makes dulwich remove the directory once it is empty
            try:
                for n in range(400):
                    name = f"people/user{i}-{n}"
                    set_synced(git, name, head)
                    call_past_stale_locks(
                        lambda name=name: git.refs.remove_if_equals(Ref(synced_ref(name)), None)
                    )
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=participant, args=(i,)) for i in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
    finally:
        repos.close()


def test_refs_read_for_a_fetch_or_a_push_while_branches_come_and_go(tmp_path: Path) -> None:
    """A fetch's and a push's look at the refs (and HEAD's branch) while other branches are
    made and deleted: a ref that goes between the listing and its reading is left out, never
    an error (it was one, an ``AssertionError`` in the walk of every ref for HEAD's target)."""
    path = tmp_path / "demo"
    create_demo_repo(path, {"a.txt": "a\n"})
    main = read_ref(Repositories(tmp_path).open("demo"), branch_ref("main"))
    assert main is not None
    stop = threading.Event()

    def churn() -> None:
        repo = Repo(str(path))
        k = 0
        while not stop.is_set():
            name = Ref(b"refs/heads/churn-%d" % (k % 50))
            repo.refs[name] = main
            del repo.refs[name]
            k += 1
        repo.close()

    worker = threading.Thread(target=churn)
    worker.start()
    try:
        for _ in range(400):
            session = FetchSession(path)
            try:
                assert session.refs.head == b"refs/heads/main"
                assert session.refs.refs[b"HEAD"] == main
            finally:
                session.close()
            repo = Repo(str(path))
            assert head_target(repo) == b"refs/heads/main"
            repo.close()
    finally:
        stop.set()
        worker.join()
