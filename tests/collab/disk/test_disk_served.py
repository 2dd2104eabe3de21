"""``collab serve --worktree REPO:BRANCH=DIR``: the server keeps a working tree of its own in
sync, for tools that run beside it; a bad specification stops the start with a reason."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from serverproc import ServerProcess
from servers import SECRET

from collab import Client
from collab.server.auth import Role, TokenAuthenticator


async def test_served_worktree_syncs_both_ways(repos: Path, tmp_path: Path) -> None:
    root = tmp_path / "served"
    server = ServerProcess(
        repos, tmp_path / "data", secret=SECRET, extra_args=("--worktree", f"demo:main={root}")
    )
    await server.start()
    try:
        assert (root / "README.md").read_text().startswith("# Demo")
        token = TokenAuthenticator(SECRET).mint(user="bob", repo="demo", role=Role.WRITE)
        async with Client(server.url, token=token) as bob:
            doc = await bob.open("demo/main:src/app.py")
            doc.insert(0, "# typed live\n")
            target = root / "src" / "app.py"
            async with asyncio.timeout(15):
                while "typed live" not in target.read_text():
                    await asyncio.sleep(0.02)
            target.write_text(target.read_text() + "# written by a tool\n")
            await doc.wait_for(lambda t: t == "# typed live\nprint('hello')\n# written by a tool\n")
    finally:
        await server.stop()


def test_bad_worktree_spec_is_refused(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "collab",
            "serve",
            "--data-dir",
            str(tmp_path),
            "--port",
            "0",
            "--worktree",
            "demo=nowhere",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "expected REPO:BRANCH=DIR" in done.stderr
