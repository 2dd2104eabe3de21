"""One syncer at a time keeps a directory in sync: a second one (``collab sync`` started
twice, or on a directory ``collab serve --worktree`` serves) is refused at its start, naming
the one that holds it, before it changes anything."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
from pathlib import Path

import pytest
from conftest import MakeTree
from test_disk_offline import _sync_command

from collab import CollabServer
from collab.disk.served import ServedTrees, WorktreeError, WorktreeSpec
from collab.store.data_lock import DataDirBusy

ROOT = Path(__file__).resolve().parents[3]


async def test_a_second_syncer_of_the_same_directory_is_refused_at_start(
    server: CollabServer, make_tree: MakeTree, tmp_path: Path
) -> None:
    """While a syncer keeps the directory in sync, another one in this process, a served
    working tree and ``collab sync`` are each refused with one line naming its pid (the
    command exits 2); once it stops, the next one starts."""
    root = tmp_path / "wt"
    first = make_tree(root)
    await first.start()
    holder = f"{root.resolve()} is in use by another collab process (pid {os.getpid()})"
    with pytest.raises(DataDirBusy, match=re.escape(holder)):
        await make_tree(root).start()
    spec = WorktreeSpec("demo", "main", root)
    with pytest.raises(WorktreeError, match="is in use by another collab process"):
        await ServedTrees(server.auth, "127.0.0.1", server.port, [spec]).start()
    process = await asyncio.create_subprocess_exec(
        *_sync_command(root, server.url),
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    _, err = await process.communicate()
    assert process.returncode == 2
    assert err.decode().startswith(f"collab sync: {holder}; stop it first")
    assert err.decode().count("\n") == 1 and "Traceback" not in err.decode()
    (root / "README.md").write_text("# Demo\n\nsaved once\n")
    await first.wait_idle()
    await first.stop()
    again = make_tree(root)
    await again.start()
    await again.wait_idle()
    assert (root / "README.md").read_text() == "# Demo\n\nsaved once\n"
