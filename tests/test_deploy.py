"""The Dockerfile and the systemd unit, exercised as far as this machine allows: each file is
parsed and checked, its command is run as the container or the service would run it (the
engine starts, answers the health check, stops cleanly on SIGTERM), ``systemd-analyze verify``
checks the unit, and the image is built and started when a Docker daemon is reachable."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from serverproc import free_port

from gitsync import create_demo_repo

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
UNIT = ROOT / "deploy" / "collab.service"
SECRET = "deploy-test-secret-0123456789abcdef"
INSTRUCTIONS = {
    "FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME",
    "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL",
}  # fmt: skip


def dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (NAME, arguments), continuations joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        name, _, rest = line.partition(" ")
        instructions.append((name.upper(), rest.strip()))
    assert not pending, "a continuation runs off the end"
    return instructions


def exec_form(arguments: str) -> list[str]:
    value = json.loads(arguments)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), arguments
    return value


@contextmanager
def running(command: list[str], env: dict[str, str], log: Path) -> Iterator[None]:
    """``command`` started, and seen listening; on exit, stopped with SIGTERM, which it must
    obey promptly and with exit status 0. Its log goes to ``log``."""
    with (
        log.open("w") as errors,
        subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=errors, text=True, env=env
        ) as proc,
    ):
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert "listening on" in line, log.read_text()
            yield
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0, log.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()


def healthcheck(command: list[str], port: int) -> int:
    """Run the image's HEALTHCHECK command on this machine, against ``port``."""
    args = [
        sys.executable if arg == "python" else arg.replace("8765", str(port)) for arg in command
    ]
    return subprocess.run(args, capture_output=True, timeout=30).returncode


def test_the_dockerfile_runs_the_engine_unprivileged_with_a_volume_and_a_health_check() -> None:
    instructions = dockerfile()
    names = [name for name, _ in instructions]
    assert names[0] == "FROM" and set(names) <= INSTRUCTIONS
    args = dict(instructions)  # the last of each
    user = args["USER"].split(":")[0]
    assert user not in ("root", "0")
    assert names.index("USER") > max(i for i, name in enumerate(names) if name == "RUN")
    assert "/var/lib/collab" in exec_form(args["VOLUME"])
    assert args["EXPOSE"] == "8765"
    options, _, check = args["HEALTHCHECK"].partition("CMD ")
    assert "--interval=" in options and "/healthz" in check
    exec_form(check)
    stages = {rest.split()[-1] for name, rest in instructions if name == "FROM" and " AS " in rest}
    for name, rest in instructions:
        if name == "COPY" and rest.startswith("--from="):
            assert rest.split()[0].removeprefix("--from=") in stages, rest  # an earlier stage
        elif name == "COPY":
            *sources, _target = rest.split()
            assert all((ROOT / source).exists() for source in sources), rest
    # the web editor is built in the image: its build output is not in the repository
    assert any(name == "COPY" and "/dist" in rest for name, rest in instructions)


def test_the_images_command_serves_and_passes_its_health_check(tmp_path: Path) -> None:
    """The CMD and HEALTHCHECK of the Dockerfile, run here as the container runs them (the
    volume a temporary directory, the port a free one)."""
    args = dict(dockerfile())
    command = exec_form(args["CMD"])
    check = exec_form(args["HEALTHCHECK"].partition("CMD ")[2])
    assert command[:2] == ["collab", "serve"]
    volume = tmp_path / "volume"
    for sub in ("repos", "data"):  # what the image creates in its volume
        (volume / sub).mkdir(parents=True)
    create_demo_repo(volume / "repos" / "demo.git")
    port = free_port()
    here = [sys.executable, "-m", "collab"] + [
        arg.replace("/var/lib/collab", str(volume)).replace("8765", str(port))
        for arg in command[1:]
    ]
    env = {**os.environ, "COLLAB_SECRET": SECRET}
    with running(here, env, tmp_path / "server.log"):
        assert healthcheck(check, port) == 0
    assert healthcheck(check, port) != 0  # nothing listens any more
    without_secret = subprocess.run(here, capture_output=True, text=True, timeout=60)
    assert without_secret.returncode == 2 and "COLLAB_SECRET" in without_secret.stderr


def unit() -> dict[str, dict[str, str]]:
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current[key] = value
    return sections


def test_the_systemd_unit_runs_the_engine_as_a_service(tmp_path: Path) -> None:
    service = unit()["Service"]
    assert service["User"] != "root" and service["Restart"] == "on-failure"
    assert service["RestartPreventExitStatus"] == "2"  # a refused start: see below
    command = shlex.split(service["ExecStart"])
    assert command[1] == "serve"
    secret = tmp_path / "credentials" / "secret"
    secret.parent.mkdir()
    secret.write_text(SECRET)
    state = tmp_path / "state"  # StateDirectory=collab
    repos = tmp_path / "srv-git"
    create_demo_repo(repos / "demo.git")
    port = free_port()
    replace = {
        "${CREDENTIALS_DIRECTORY}": str(secret.parent),
        "/var/lib/collab": str(state),
        "/srv/git": str(repos),
        "8765": str(port),
    }

    def localised(arg: str) -> str:
        for old, new in replace.items():
            arg = arg.replace(old, new)
        return arg

    here = [sys.executable, "-m", "collab"] + [localised(arg) for arg in command[1:]]
    env = {k: v for k, v in os.environ.items() if k != "COLLAB_SECRET"}
    with running(here, env, tmp_path / "server.log"):
        pass
    shutil.rmtree(repos)
    refused = subprocess.run(here, capture_output=True, text=True, timeout=60, env=env)
    assert refused.returncode == 2 and len(refused.stderr.splitlines()) == 1


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    """The unit as it is, but for the path of the program, which must exist to verify."""
    command = shlex.split(unit()["Service"]["ExecStart"])
    installed = Path(sys.executable).with_name("collab")
    assert installed.exists()
    copy = tmp_path / "collab.service"
    copy.write_text(UNIT.read_text().replace(command[0], str(installed)))
    done = subprocess.run(
        ["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and done.stderr == "" and done.stdout == "", done


def _docker_daemon() -> bool:
    if shutil.which("docker") is None:
        return False
    done = subprocess.run(["docker", "info"], capture_output=True, timeout=30, check=False)
    return done.returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(not _docker_daemon(), reason="no Docker daemon reachable")
def test_the_image_builds_and_becomes_healthy() -> None:
    tag = f"collab-engine-test:{os.getpid()}"
    subprocess.run(["docker", "build", "-q", "-t", tag, str(ROOT)], check=True, timeout=900)
    name = f"collab-engine-test-{os.getpid()}"
    try:
        subprocess.run(
            ["docker", "run", "-d", "--name", name, "-e", f"COLLAB_SECRET={SECRET}", tag],
            check=True,
            timeout=60,
        )
        deadline = time.monotonic() + 120
        status = ""
        while time.monotonic() < deadline and status != "healthy":
            time.sleep(2)
            status = subprocess.run(
                ["docker", "inspect", "-f", "{{.State.Health.Status}}", name],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
        assert status == "healthy"
        user = subprocess.run(
            ["docker", "exec", name, "id", "-u"], capture_output=True, text=True, check=True
        ).stdout.strip()
        assert user != "0"
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, check=False)
