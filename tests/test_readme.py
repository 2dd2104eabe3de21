"""Every code block of README.md, run as a newcomer would run it, in order.

The blocks run in a fresh directory that holds what a checkout has after ``make run`` (the
virtual environment, the Makefile, the npm packages of ``tests/js`` as ``node_modules``), with
the port 8765 replaced by a free one and the operator's paths (``/srv/git``,
``/var/lib/collab``) by temporary ones:

- ``sh`` blocks run in bash, line by line as typed (``set -e``). A line that starts a server
  (``make run``, ``.venv/bin/collab serve``) runs in the background until it prints
  "listening on", and the lines after it talk to it; a block that starts a server first stops
  the servers started before. ``make run`` is told not to reinstall the package nor to
  build the web editor (``make -o .venv/bin/collab -o web``: no network here).
- ``python`` blocks are written to a file and run with the virtual environment's Python.
- ``js`` blocks are written to an ``.mjs`` file and run with Node.

Every block must exit 0 and print no traceback.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from serverproc import free_port

from gitsync import create_demo_repo

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
SERVER = re.compile(r"^(make run|\.venv/bin/collab serve)\b")
NODE_MODULES = ROOT / "tests" / "js" / "node_modules"

pytestmark = pytest.mark.js  # the JavaScript block needs Node and tests/js/node_modules

WAIT_LISTENING = """
wait_listening() {  # LOG PIDFILE: until the server in the background says it listens
  for _ in $(seq 300); do
    if grep -q "listening on" "$1"; then return 0; fi
    if ! kill -0 "$(cat "$2")" 2>/dev/null; then cat "$1" >&2; return 1; fi
    sleep 0.1
  done
  cat "$1" >&2; return 1
}
"""


def readme_blocks() -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(README.read_text())]


def shell_lines(block: str) -> list[str]:
    """The block's commands, each with its continuation lines."""
    lines: list[str] = []
    pending = ""
    for line in block.splitlines():
        if line.endswith("\\"):
            pending += line + "\n"
            continue
        lines.append(pending + line)
        pending = ""
    assert not pending
    return [line for line in lines if line.strip()]


class Readme:
    """The directory the blocks run in, and the servers they started."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.servers: list[int] = []  # process group ids
        self.count = 0
        root.mkdir()
        (root / ".venv").symlink_to(ROOT / ".venv")
        (root / "node_modules").symlink_to(NODE_MODULES)
        for name in ("Makefile", "pyproject.toml"):
            shutil.copy2(ROOT / name, root / name)
        os.utime(root / ".venv" / "bin" / "collab")  # as after `make run`'s own install
        repos = root / "srv" / "git"
        create_demo_repo(repos / "myproject.git", {"README.md": "# My project\n"})
        self.paths = {"/srv/git": str(repos), "/var/lib/collab": str(root / "var" / "collab")}
        self.env = {
            **{k: v for k, v in os.environ.items() if k not in ("COLLAB_SECRET", "COLLAB_TOKEN")},
            "PORT": str(self.port),  # make run's port
            "COLLAB_URL": f"http://127.0.0.1:{self.port}",  # the collab commands' default
            "GIT_TERMINAL_PROMPT": "0",
        }

    def localise(self, text: str) -> str:
        text = text.replace("8765", str(self.port))
        for path, here in self.paths.items():
            text = text.replace(path, here)
        return text

    def run(self, language: str, block: str) -> str:
        self.count += 1
        code = self.localise(block)
        if language == "sh":
            return self._shell(code)
        if language == "python":
            script = self.root / f"readme_{self.count}.py"
            script.write_text(code)
            return self._check([str(self.root / ".venv" / "bin" / "python"), script.name])
        if language == "js":
            script = self.root / f"readme_{self.count}.mjs"
            script.write_text(code)
            return self._check(["node", script.name])
        raise AssertionError(f"README block {self.count} is {language!r}, which no test runs")

    def _shell(self, code: str) -> str:
        lines = shell_lines(code)
        if any(SERVER.match(line) for line in lines):
            self.stop_servers()
        script = ["set -euo pipefail", WAIT_LISTENING]
        for line in lines:
            if SERVER.match(line):
                n = len(self.servers) + script.count("") + 1
                name = f"server_{self.count}_{n}"
                command = line.replace("make run", "make -o .venv/bin/collab -o web run", 1)
                (self.root / f"{name}.sh").write_text(command + "\n")
                script.append(
                    f"setsid bash {name}.sh > {name}.log 2>&1 < /dev/null & echo $! > {name}.pid"
                )
                script.append(f"wait_listening {name}.log {name}.pid")
            else:
                script.append(line)
        output = self._check(["bash", "-c", "\n".join(script)])
        for pid_file in sorted(self.root.glob(f"server_{self.count}_*.pid")):
            self.servers.append(int(pid_file.read_text()))
        return output

    def _check(self, command: list[str]) -> str:
        done = subprocess.run(
            command,
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        output = done.stdout + done.stderr
        assert done.returncode == 0, f"README block {self.count} failed:\n{output}"
        assert "Traceback" not in output, output
        return done.stdout

    def stop_servers(self) -> None:
        for group in self.servers:
            try:
                os.killpg(group, signal.SIGTERM)
            except ProcessLookupError:
                continue
        deadline = time.monotonic() + 30
        for group in self.servers:
            while time.monotonic() < deadline:
                try:
                    os.killpg(group, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)
            else:
                os.killpg(group, signal.SIGKILL)
        self.servers = []
        for log in self.root.glob("server_*.log"):
            assert "Traceback" not in log.read_text(), log.read_text()


@pytest.fixture
def readme(tmp_path: Path) -> Iterator[Readme]:
    if shutil.which("node") is None or not NODE_MODULES.is_dir():
        pytest.skip("needs Node.js and `npm ci --prefix tests/js`")
    runner = Readme(tmp_path / "checkout")
    try:
        yield runner
    finally:
        runner.stop_servers()


def test_every_block_of_the_readme_runs(readme: Readme) -> None:
    blocks = readme_blocks()
    assert {language for language, _ in blocks} == {"sh", "python", "js"}
    outputs = [readme.run(language, block) for language, block in blocks]
    joined = "\n".join(outputs)
    assert "repository demo" in joined  # collab status
    assert "# édité à plusieurs" in joined  # the Python program
    assert "Hello from Yjs" in joined  # the JavaScript program
    assert (readme.root / "demo" / "README.md").is_file()  # git clone
    assert joined.rstrip().splitlines()[-1].startswith("v1.")  # the token, last
