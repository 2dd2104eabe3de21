"""Ref writes from several threads at once: none fails because another pruned a directory."""

from __future__ import annotations

import threading
from pathlib import Path

from dulwich.refs import Ref

from gitsync import Repositories, create_demo_repo
from gitsync.locks import call_past_stale_locks
from gitsync.objects.commits import branch_ref, read_ref, set_synced, synced_ref


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
