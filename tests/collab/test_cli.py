"""The ``collab`` command as a newcomer meets it: start-up refusals in one line, help that
shows defaults, messages that name the option the caller has, output people can read, and
log lines for what happens."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import aiohttp
import pytest
from gitcli import git, until
from serverproc import ServerProcess, free_port, permissions_bind
from servers import SECRET, make_config

from collab import Client, ClientError, CollabServer
from collab.cli.commands import main
from collab.server.app import REPOS_LOCK
from collab.store.data_lock import DataDirBusy, DataDirLock
from collab.store.sqlite_store import SQLiteStore
from gitsync import create_demo_repo


def _serve(
    *args: str,
    env: dict[str, str] | None = None,
    prefix: tuple[str, ...] = (),
    preexec: Callable[[], None] | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*prefix, sys.executable, "-m", "collab", "serve", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        preexec_fn=preexec,
    )


def _refused(done: subprocess.CompletedProcess[str], *words: str) -> str:
    """The one line a refused start printed; it holds ``words`` and no traceback."""
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def test_a_port_in_use_is_one_line_before_anything_is_opened(repos: Path, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        data = tmp_path / "data"
        done = _serve("--repos", str(repos), "--data-dir", str(data), "--port", str(port))
    _refused(done, f"127.0.0.1:{port}", "in use", "--port")
    assert not data.exists()


def test_a_refusal_is_one_json_line_in_json_logs(repos: Path, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = ["--repos", str(repos), "--data-dir", str(tmp_path / "data")]
        done = _serve(*args, "--port", str(port), "--log-format", "json")
    assert done.returncode == 2 and done.stdout == ""
    (line,) = done.stderr.splitlines()
    record = json.loads(line)
    assert record["level"] == "ERROR"
    assert f"127.0.0.1:{port}" in record["message"] and "--port" in record["message"]


def test_a_data_directory_in_use_is_one_line_naming_the_holder(repos: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    with DataDirLock(data):
        done = _serve("--repos", str(repos), "--data-dir", str(data), "--port", "0")
    _refused(done, str(data), f"pid {os.getpid()}", "stop it")
    with DataDirLock(repos, REPOS_LOCK):  # the repositories' directory: one server too
        done = _serve("--repos", str(repos), "--data-dir", str(data), "--port", "0")
    _refused(done, str(repos), f"pid {os.getpid()}")


async def test_a_memory_store_server_takes_the_repositories_lock(
    repos: Path, tmp_path: Path
) -> None:
    """One server per repositories' directory, whatever its store: two would both commit."""
    async with CollabServer(make_config(repos, tmp_path / "a")):
        done = await asyncio.to_thread(
            _serve, "--repos", str(repos), "--data-dir", str(tmp_path / "a"), "--store", "memory"
        )
        _refused(done, str(repos), f"pid {os.getpid()}", "one server at a time")
        beside = CollabServer(make_config(repos, tmp_path / "b", store="memory"))
        with pytest.raises(DataDirBusy):
            await beside.start()
    async with CollabServer(make_config(repos, tmp_path / "b", store="memory")):
        with pytest.raises(DataDirBusy):  # the other way round, too
            await CollabServer(make_config(repos, tmp_path / "a")).start()


async def _written_store(data: Path) -> Path:
    """A store with one document in it, in ``data`` (with the lock file a server leaves)."""
    async with SQLiteStore(data / "store.sqlite3") as store:
        await store.append("demo/main:README.md", b"\x00\x00")
    with DataDirLock(data):
        pass
    return data / "store.sqlite3"


@pytest.mark.parametrize("read_only", ["file", "directory"])
async def test_a_store_that_cannot_be_written_is_refused_at_start(
    repos: Path, tmp_path: Path, read_only: str
) -> None:
    """SQLite opens a read-only file without a word, and every write then fails: the start
    is refused instead, naming the file and the permission (not damage: no repair, no
    moving it aside)."""
    prefix = permissions_bind()
    data = tmp_path / "data"
    store = await _written_store(data)
    target = store if read_only == "file" else data
    mode = target.stat().st_mode
    target.chmod(0o444 if read_only == "file" else 0o555)
    try:
        args = ("--repos", str(repos), "--data-dir", str(data), "--port", "0")
        done = await asyncio.to_thread(_serve, *args, prefix=prefix, timeout=30)
    finally:
        target.chmod(mode)
    line = _refused(
        done, "cannot write the store", f"{target}: Permission denied", "may not write it"
    )
    assert "aside" not in line and "repair" not in line


async def test_a_store_the_disk_cannot_write_is_refused_with_the_cause(
    repos: Path, tmp_path: Path
) -> None:
    """An I/O error at start (here a file size limit under what SQLite's shared memory
    file takes) is said as such: no advice to move the store aside."""
    data = tmp_path / "data"
    await _written_store(data)

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (16 * 1024, resource.RLIM_INFINITY))

    args = ("--repos", str(repos), "--data-dir", str(data), "--port", "0")
    done = await asyncio.to_thread(_serve, *args, preexec=small_files, timeout=30)
    line = _refused(done, "cannot write the store", "disk I/O error", "ulimit -f")
    assert "aside" not in line and "repair" not in line


async def test_a_data_directory_made_read_only_while_serving_is_one_line_at_stop(
    repos: Path, tmp_path: Path
) -> None:
    """The clean-shutdown marker cannot be written: one log line says so, no traceback."""
    server = ServerProcess(
        repos,
        tmp_path / "data",
        extra_args=("--completion-backend", "none"),
        prefix=permissions_bind(),
    )
    await server.start()
    server.data_dir.chmod(0o555)
    try:
        await server.stop()
    finally:
        server.data_dir.chmod(0o755)
    log = server.log.read_text()
    assert "Traceback" not in log, log
    (line,) = [line for line in log.splitlines() if "clean-shutdown" in line]
    assert "ERROR" in line and "Permission denied" in line, line


def test_a_missing_repository_directory_is_refused(tmp_path: Path) -> None:
    missing = tmp_path / "nonexistent"
    done = _serve("--repos", str(missing), "--data-dir", str(tmp_path / "data"), "--port", "0")
    _refused(done, f"no repository directory {missing}", "--repos")
    assert not missing.exists()
    a_file = tmp_path / "repos.txt"
    a_file.write_text("not a directory\n")
    done = _serve("--repos", str(a_file), "--data-dir", str(tmp_path / "data"), "--port", "0")
    _refused(done, f"--repos {a_file} is a file", "the directory that holds")


def test_dev_mode_on_a_public_address_is_one_line(repos: Path, tmp_path: Path) -> None:
    done = _serve(
        "--repos", str(repos), "--data-dir", str(tmp_path), "--host", "0.0.0.0", "--port", "0"
    )
    _refused(done, "dev mode", "COLLAB_SECRET")


async def test_a_port_taken_at_start_leaves_nothing_held(repos: Path, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        config = make_config(repos, tmp_path / "data", port=taken.getsockname()[1])
        server = CollabServer(config)
        with pytest.raises(OSError) as failed:
            await server.start()
    assert failed.value.errno == errno.EADDRINUSE
    with DataDirLock(tmp_path / "data"), DataDirLock(repos, REPOS_LOCK):
        pass  # both released
    async with CollabServer(make_config(repos, tmp_path / "data")) as again:
        assert again.port


def test_help_shows_defaults_and_no_markup(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    top = capsys.readouterr().out
    assert "``" not in top
    assert "collab status" in top and "collab log REPO BRANCH" in top
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    serve = capsys.readouterr().out
    for default in ("(default: 8765)", "(default: .collab)", "(default: 127.0.0.1)"):
        assert default in serve
    assert "(default: None)" not in serve


def test_token_refuses_a_name_no_repository_can_have(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLLAB_SECRET", SECRET.decode())
    assert main(["token", "--user", "alice", "--repo", "bad name!"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "invalid repository name 'bad name!'" in err
    assert main(["token", "--user", "alice", "--repo", "demo"]) == 0
    assert capsys.readouterr().out.startswith("v1.")


async def test_dev_mode_refusals_name_the_callers_option(
    server: CollabServer, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ClientError) as refused:
        async with Client(server.url, token="v1.a.b", reconnect=False):
            pass
    assert refused.value.code == 4001
    assert "user=NAME" in refused.value.message and "Client(url" in refused.value.message
    assert "takes no token" in refused.value.message
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{server.url}/yjs/demo/main:README.md") as ws:
            await ws.receive()
        assert ws.close_code == 4001
        base = server.url.replace("ws://", "http://")
        async with http.post(f"{base}/api/branch.list", json={"repo": "demo"}) as reply:
            message = (await reply.json())["error"]["message"]
        assert message.endswith("name yourself with ?user=NAME")
    url = server.url.replace("ws://", "http://")
    assert await asyncio.to_thread(main, ["branch", "list", "--url", url]) == 1
    err = capsys.readouterr().err
    assert err.strip().endswith("name yourself with --user NAME") and "?user" not in err


async def test_a_wrong_port_names_the_url_and_the_cause() -> None:
    url = f"ws://127.0.0.1:{free_port()}"
    with pytest.raises(ConnectionError) as failed:
        await Client(url, user="alice").connect(timeout=0.5)
    assert f"{url}/ws" in str(failed.value) and "refused" in str(failed.value)


async def test_branch_and_merge_output_reads_as_sentences(
    server: CollabServer, capsys: pytest.CaptureFixture[str]
) -> None:
    url = server.url.replace("ws://", "http://")

    def collab(*args: str) -> str:
        assert main([*args, "--url", url, "--user", "alice", "--repo", "demo"]) == 0
        return capsys.readouterr().out

    async def run(*args: str) -> str:
        return await asyncio.to_thread(collab, *args)

    listed = (await run("branch", "list")).splitlines()
    assert listed[0].split() == ["BRANCH", "HEAD", "PEOPLE", "(FILE)"]
    assert listed[1].split()[0] == "main"
    assert (await run("branch", "fork", "main", "topic")).startswith("created the branch topic")
    async with Client(server.url, user="alice") as alice:
        doc = await alice.open("demo/topic:README.md")
        doc.insert(0, "topic\n")
        await alice.flush()
    preview = await run("merge", "topic", "main")
    assert "fast-forward, 1 file changed" in preview and "add --apply" in preview
    applied = await run("merge", "topic", "main", "--apply")
    assert "fast-forwarded to" in applied
    deleted = await run("branch", "delete", "topic")
    assert deleted.startswith("deleted the branch topic (it was at ")


async def test_what_happens_is_logged_one_line_each(repos: Path, tmp_path: Path) -> None:
    server = ServerProcess(repos, tmp_path / "data", extra_args=("--commit-idle", "0.1"))
    await server.start()
    try:
        async with Client(server.url, user="alice") as alice:
            await alice.fork("demo", "main", "topic")
            doc = await alice.open("demo/topic:README.md")
            doc.insert(0, "hello\n")
            await alice.flush()
            await alice.commit("demo", "topic")
            await doc.close()
            await alice.call("branch.delete", repo="demo", name="topic")
        port = server.port
        clone = tmp_path / "clone"
        await asyncio.to_thread(
            git,
            tmp_path,
            "clone",
            "-q",
            f"http://alice:x@127.0.0.1:{port}/git/demo.git",
            str(clone),
        )
    finally:
        await server.stop()
    lines = server.log.read_text().splitlines()
    text = "\n".join(lines)
    assert "dulwich" not in text and "capabilities" not in text.lower()
    assert "::" not in text
    assert any("(alice): connected" in line for line in lines)
    assert any("(alice): disconnected" in line for line in lines)
    assert any("alice forked main into topic" in line for line in lines)
    assert any("demo/topic: committed" in line and "by alice" in line for line in lines)
    assert any("alice deleted the branch topic" in line for line in lines)
    stop = next(i for i, line in enumerate(lines) if "stopped (served for" in line)
    assert stop == len(lines) - 1, lines[stop:]  # shutdown: one line
    assert not any("WARNING" in line for line in lines[stop - 3 : stop]), lines


async def test_collab_url_names_the_server_of_every_command(
    server: CollabServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLLAB_URL", server.url)  # ws:// is taken for http://
    assert await asyncio.to_thread(main, ["status", "--user", "alice"]) == 0
    assert "repository demo" in capsys.readouterr().out


def _failed_start(done: subprocess.CompletedProcess[str], *words: str) -> str:
    """The last line of a start that failed after the server opened (its log lines come
    first): no traceback, exit status 2, and ``words`` in that line."""
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    last = done.stderr.splitlines()[-1]
    assert last.startswith("collab serve: "), done.stderr
    for word in words:
        assert word in last, last
    return last


def test_a_worktree_that_cannot_start_is_one_line(tmp_path: Path) -> None:
    pytest.importorskip("watchfiles")
    data = str(tmp_path / "data")
    full = tmp_path / "full"
    full.mkdir()
    (full / "notes.txt").write_text("mine\n")
    for spec, reason in (
        (f"nope:main={tmp_path / 'a'}", "no repository 'nope'"),
        (f"demo:nobranch={tmp_path / 'b'}", "no branch 'nobranch'"),
        (f"demo:main={full}", "neither empty nor a git checkout"),
    ):
        done = _serve("--data-dir", data, "--port", "0", "--worktree", spec)
        _failed_start(done, f"--worktree {spec}: ", reason)
    assert (full / "notes.txt").read_text() == "mine\n"


def test_a_store_file_that_is_no_database_is_one_line_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    store = data / "store.sqlite3"
    store.write_text("garbage\n")
    done = _serve("--data-dir", str(data), "--port", "0")
    _refused(done, str(store), "not a database", f"collab store check --data-dir {data}", "aside")
    assert store.read_text() == "garbage\n"
    for action in ("check", "repair"):
        assert main(["store", action, "--data-dir", str(data)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1, err
        assert f"collab store {action}: {store}: file is not a database" in err
        assert "move it aside" in err


def _into_a_closed_pipe(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run ``collab ARGS`` with its stdout a pipe nobody reads any more, as in
    ``collab ... | head -1`` once head has exited: its exit status and stderr."""
    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "collab", *args],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            env={**os.environ, **(env or {})},
        )
    finally:
        os.close(write)
    return done.returncode, done.stderr


async def test_output_into_a_closed_pipe_ends_quietly(server: CollabServer) -> None:
    url = server.url.replace("ws://", "http://")
    for args in (
        ("log", "demo", "--user", "alice", "--url", url),
        ("branch", "list", "--user", "alice", "--url", url, "--repo", "demo"),
        ("status", "--user", "alice", "--url", url),
    ):
        status, err = await asyncio.to_thread(_into_a_closed_pipe, *args)
        assert err == "" and status == 1, (args, err)
    status, err = _into_a_closed_pipe(
        "token", "--user", "alice", "--repo", "demo", env={"COLLAB_SECRET": SECRET.decode()}
    )
    assert err == "" and status == 1, err


async def test_a_server_whose_output_is_gone_goes_on_serving(repos: Path, tmp_path: Path) -> None:
    """``collab serve | head -1``, or a supervisor's log pipe closed: the banner goes
    nowhere, and the server serves on."""
    read, write = os.pipe()
    os.close(read)
    port = free_port()
    args = ["serve", "--repos", str(repos), "--data-dir", str(tmp_path / "data")]
    log = (tmp_path / "server.log").open("wb")
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "collab", *args, "--port", str(port), stdout=write, stderr=log
        )
    finally:
        os.close(write)
        log.close()
    try:
        async with aiohttp.ClientSession() as session, asyncio.timeout(30):
            while True:
                assert proc.returncode is None, (tmp_path / "server.log").read_text()
                try:
                    async with session.get(f"http://127.0.0.1:{port}/healthz") as answer:
                        if answer.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)  # (the banner is printed once the server listens)
        assert proc.returncode is None, (tmp_path / "server.log").read_text()
    finally:
        if proc.returncode is None:
            proc.terminate()
        await proc.wait()
    assert "Broken pipe" not in (tmp_path / "server.log").read_text()


def _usage_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """The error line argparse printed for ``argv``, which it refused with exit status 2."""
    with pytest.raises(SystemExit) as refused:
        main(list(argv))
    assert refused.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.splitlines()[-1]


def test_a_token_lifetime_is_positive_or_zero(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLLAB_SECRET", SECRET.decode())
    for ttl in ("-5", "nan", "inf", "-inf", "soon"):
        line = _usage_error(capsys, "token", "--user", "alice", "--repo", "demo", f"--ttl={ttl}")
        assert line.startswith("collab token: error: argument --ttl: ")
        assert "positive number of seconds" in line and "0: the token never expires" in line
    for ttl in ("0", "60"):
        assert main(["token", "--user", "alice", "--repo", "demo", "--ttl", ttl]) == 0
        assert capsys.readouterr().out.startswith("v1.")


def test_a_port_out_of_range_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    for port in ("70000", "-5", "http"):
        line = _usage_error(capsys, "serve", "--port", port)
        assert line.startswith("collab serve: error: argument --port: must be 0-65535"), line


def _banner_example(repos: Path, data: Path) -> str:
    """The document ``collab serve`` gives as its Yjs example, once it listens."""
    args = ["--repos", str(repos), "--data-dir", str(data), "--port", "0"]
    with subprocess.Popen(
        [sys.executable, "-m", "collab", "serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as server:
        try:
            assert server.stdout is not None
            for line in server.stdout:
                if "Yjs clients" in line:
                    return line.split("/yjs/", 1)[1].split("?", 1)[0]
            raise AssertionError("no Yjs example in the banner")
        finally:
            server.terminate()


def test_the_banner_example_names_a_branch_and_file_that_exist(tmp_path: Path) -> None:
    project = tmp_path / "repos" / "project"
    project.mkdir(parents=True)
    git(project, "init", "-q", "-b", "master")
    (project / "a.png").write_bytes(b"\x89PNG\x00\x00")
    (project / "notes.txt").write_text("notes\n")
    git(project, "add", ".")
    git(project, "commit", "-q", "-m", "start")
    assert _banner_example(project.parent, tmp_path / "data") == "project/master:notes.txt"
    (project / "README.md").write_text("read me\n")
    git(project, "add", ".")
    git(project, "commit", "-q", "-m", "readme")
    assert _banner_example(project.parent, tmp_path / "data") == "project/master:README.md"


def test_a_damaged_repository_is_passed_over_by_the_banner(tmp_path: Path) -> None:
    """The first repository's objects are unreadable: the server starts all the same, and
    its banner takes its example from the next one."""
    good = tmp_path / "repos" / "good"
    good.mkdir(parents=True)
    git(good, "init", "-q", "-b", "main")
    (good / "a.txt").write_text("a\n")
    git(good, "add", ".")
    git(good, "commit", "-q", "-m", "start")
    damaged = tmp_path / "repos" / "aaa.git"
    git(tmp_path, "clone", "-q", "--bare", "--no-hardlinks", str(good), str(damaged))
    for obj in (damaged / "objects").glob("??/*"):
        obj.chmod(0o644)
        with obj.open("r+b") as f:
            f.seek(2)
            f.write(b"XXXXXXXX")
    assert _banner_example(tmp_path / "repos", tmp_path / "data") == "good/main:a.txt"


async def test_a_client_takes_the_ws_endpoint_and_fails_at_once_on_404(
    server: CollabServer,
) -> None:
    async with Client(f"{server.url}/ws/", user="alice") as alice:  # as the banner shows it
        assert alice.url == f"{server.url}/ws"
        assert (await alice.call("server.status"))["server"]["dev_mode"]
    started = asyncio.get_running_loop().time()
    with pytest.raises(ConnectionError) as failed:
        await Client(f"{server.url}/collab", user="alice").connect(timeout=10)
    assert asyncio.get_running_loop().time() - started < 5  # not retried until the timeout
    assert f"{server.url}/collab/ws: HTTP 404" in str(failed.value)
    assert "base URL" in str(failed.value)


def test_help_names_every_command_and_shows_no_default_for_a_flag(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    top = capsys.readouterr().out
    overview = top.split("positional arguments", 1)[0]
    for command in ("serve", "token", "status", "log", "branch", "merge", "store", "cluster"):
        assert f"  collab {command}" in overview, command
    assert "  collab sync" in overview and "  collab worker" in overview
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    serve = " ".join(capsys.readouterr().out.split())
    assert "--no-web do not serve the web editor at /" in serve
    assert "(default: True)" not in serve and "(default: False)" not in serve
    for action in ("check", "repair"):
        with pytest.raises(SystemExit):
            main(["store", action, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "--data-dir DATA_DIR the stopped server's data directory" in text
        assert "(default: .collab" in text


def test_a_commands_unknown_option_is_shown_with_that_commands_usage(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for argv, usage in (
        (["serve", "--bogus"], "usage: collab serve "),
        (["branch", "list", "--bogus"], "usage: collab branch list "),
        (["log", "demo", "main", "extra"], "usage: collab log "),
        (["store", "check", "--bogus"], "usage: collab store check "),
    ):
        with pytest.raises(SystemExit) as refused:
            main(argv)
        assert refused.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith(usage), err
        assert err.splitlines()[-1].endswith(f"error: unrecognized arguments: {argv[-1]}"), err


def test_start_up_errors_name_the_option(repos: Path, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.write_text("a file\n")
    data = str(tmp_path / "data")
    for args, words in (
        (("--data-dir", str(plain)), (f"--data-dir {plain}: Not a directory", "give a directory")),
        (("--data-dir", str(plain / "sub")), (f"--data-dir {plain / 'sub'}: ", "give a directory")),
        (
            ("--data-dir", data, "--completion-backend", "nope"),
            ("--completion-backend 'nope'", "module:factory", "none"),
        ),
        (("--data-dir", data, "--host", "nohost.invalid"), ("'nohost.invalid'", "check --host")),
    ):
        _refused(_serve("--port", "0", *args), *words)
    if Path("/sys/kernel").is_dir():  # Linux: a directory nobody may write, root included
        done = _serve("--repos", str(repos), "--data-dir", "/sys", "--port", "0")
        _refused(done, "--data-dir /sys: ", "/sys/", "give a directory")


def test_serve_refuses_settings_that_cannot_work(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Values that would start a server that cannot serve (every ``/ws`` refused, rooms
    never unloaded, every insert refused) are refused at the command line, with the reason."""
    for option, value, words in (
        ("--grace", "nan", "is not a number of seconds"),
        ("--grace", "-5", "is not a number of seconds"),
        ("--heartbeat", "0", "is not a number of seconds over 0"),
        ("--commit-idle", "inf", "is not a number of seconds"),
        ("--commit-max-lag", "-1", "is not a number of seconds"),
        ("--group-window", "-0.1", "is not a number of seconds"),
        ("--max-document", "-1", "is not a number of bytes"),
        ("--max-push", "0", "is not a number of bytes over 0"),
        ("--node-id", "", "a node id is 1 to 64 letters"),
        ("--node-id", "a b", "a node id is 1 to 64 letters"),
    ):
        line = _usage_error(capsys, "serve", option, value)
        assert line.startswith(f"collab serve: error: argument {option}: "), line
        assert words in line, line
    data = str(tmp_path / "data")
    lag = _serve("--port", "0", "--data-dir", data, "--commit-idle", "10", "--commit-max-lag", "1")
    _refused(lag, "--commit-max-lag 1 is under --commit-idle 10")
    project = tmp_path / "project"  # a repository, not the directory that holds them
    project.mkdir()
    subprocess.run(["git", "init", "-q", str(project)], check=True)
    itself = _serve("--port", "0", "--data-dir", data, "--repos", str(project))
    _refused(itself, f"{project} is itself a git repository: --repos takes the directory")
    create_demo_repo(project / "demo.git", {"a.txt": "a\n"})  # a repository that holds some
    with socket.socket() as taken:  # (the start gets past --repos, then finds the port taken)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        holding = _serve("--port", port, "--data-dir", data, "--repos", str(project))
    _refused(holding, "the port is in use")


def test_an_unreachable_redis_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    url = f"redis://127.0.0.1:{port}/0"
    repos = tmp_path / "repos"
    repos.mkdir()
    done = _serve(
        "--port", "0", "--data-dir", str(tmp_path / "data"), "--repos", str(repos), "--redis", url
    )
    _refused(done, f"cannot reach Redis at {url}: ", "start it, or check --redis")


def test_a_log_level_is_one_of_those_listed(capsys: pytest.CaptureFixture[str]) -> None:
    line = _usage_error(capsys, "serve", "--log-level", "LOUD")
    assert line.startswith("collab serve: error: argument --log-level: invalid choice: 'LOUD'")
    assert "'DEBUG', 'INFO', 'WARNING', 'ERROR'" in line
    line = _usage_error(capsys, "worker", "--url", "ws://127.0.0.1:1", "--log-level", "LOUD")
    assert line.startswith("collab worker: error: argument --log-level: invalid choice")


async def test_a_url_that_is_no_servers_says_what_to_give(
    server: CollabServer, capsys: pytest.CaptureFixture[str]
) -> None:
    for url in ("nonsense", "127.0.0.1:8765", "ftp://host", "http://127.0.0.1:port"):
        line = _usage_error(capsys, "status", "--user", "alice", "--url", url)
        assert line.startswith(f"collab status: error: argument --url: {url!r}"), line
        assert "give the server's base URL, http://HOST:PORT" in line
    api = server.url.replace("ws://", "http://") + "/api"
    assert await asyncio.to_thread(main, ["status", "--user", "alice", "--url", api]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert f"HTTP 404: Not Found from {api}/api/server.status: give the server's base" in err


async def test_a_conflicting_merge_points_to_markers(
    server: CollabServer, capsys: pytest.CaptureFixture[str]
) -> None:
    url = server.url.replace("ws://", "http://")
    async with Client(server.url, user="alice") as alice:
        for branch, line in (("left", "left\n"), ("right", "right\n")):
            await alice.fork("demo", "main", branch)
            doc = await alice.open(f"demo/{branch}:README.md")
            doc.insert(0, line)
            await alice.flush()
            await alice.commit("demo", branch)
    argv = ["merge", "left", "right", "--apply", "--url", url, "--user", "alice", "--repo", "demo"]
    assert await asyncio.to_thread(main, argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("collab: CONFLICT: merge conflicts in README.md; nothing was changed")
    assert "add --markers" in err and err.count("\n") == 1
    assert await asyncio.to_thread(main, [*argv, "--markers"]) == 0
    assert "conflicts (1): README.md" in capsys.readouterr().out
    itself = ["merge", "left", "left", "--apply", "--url", url, "--user", "alice", "--repo", "demo"]
    assert await asyncio.to_thread(main, itself) == 1
    err = capsys.readouterr().err  # a conflict of another kind: no point to --markers
    assert err.startswith("collab: CONFLICT: ") and "--markers" not in err, err


@pytest.mark.parametrize("kind", ["missing", "a folder"])
def test_a_secret_file_that_cannot_be_read_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    path = tmp_path / "secret"
    if kind == "a folder":
        path.mkdir()
    assert main(["token", "--user", "alice", "--repo", "demo", "--secret-file", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("collab token: cannot read the secret file: ") and str(path) in err


async def test_branch_commands_take_the_only_repository_and_ask_among_several(
    server: CollabServer, repos: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = server.url.replace("ws://", "http://")
    command = ["branch", "list", "--url", url, "--user", "alice"]
    assert await asyncio.to_thread(main, command) == 2
    err = capsys.readouterr().err
    assert err == "collab: give the repository with --repo NAME (it serves demo, other)\n"
    assert await asyncio.to_thread(main, [*command, "--repo", "other"]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[0] == "main"
    shutil.rmtree(repos / "other")
    assert await asyncio.to_thread(main, command) == 0  # the only one left
    assert capsys.readouterr().out.splitlines()[1].split()[0] == "main"


async def test_sync_refusals_name_the_code_and_the_option(
    server: CollabServer, tmp_path: Path
) -> None:
    pytest.importorskip("watchfiles")
    url = server.url.replace("ws://", "http://")

    async def sync(*args: str, env: dict[str, str] | None = None) -> str:
        command = [sys.executable, "-m", "collab", "sync", str(tmp_path / "wt"), "--url", url]
        process = await asyncio.create_subprocess_exec(
            *command, "--repo", "demo", *args, stderr=subprocess.PIPE, env=env
        )
        _, err = await process.communicate()
        assert process.returncode == 2
        text = err.decode()
        assert text.count("\n") == 1 and "Traceback" not in text
        return text

    err = await sync()
    assert err.startswith("collab sync: UNAUTHORIZED: ")
    assert err.rstrip().endswith("name yourself with --user NAME") and "Client(" not in err
    err = await sync("--user", "alice", "--branch", "nobranch")
    assert err.startswith("collab sync: NOT_FOUND: no branch 'nobranch'")
    err = await sync("--user", "alice", env={**os.environ, "PATH": str(tmp_path / "no-git")})
    assert err == "collab sync: git is not installed (or not on PATH): install it first\n"


async def test_sync_takes_the_servers_only_repository_unless_told(tmp_path: Path) -> None:
    """As the other commands: ``collab sync DIR`` needs no ``--repo`` while the server has
    one repository, and names them when it has several."""
    pytest.importorskip("watchfiles")
    repos = tmp_path / "repos"
    create_demo_repo(repos / "demo")
    async with CollabServer(make_config(repos, tmp_path / "data")) as server:
        url = server.url.replace("ws://", "http://")
        command = [sys.executable, "-m", "collab", "sync", "--url", url, "--user", "alice"]
        root = tmp_path / "wt"
        process = await asyncio.create_subprocess_exec(*command, str(root), stderr=subprocess.PIPE)
        try:
            await until(lambda: (root / "README.md").exists(), timeout=20)
        finally:
            process.terminate()
            await process.wait()
        shutil.copytree(repos / "demo", repos / "other")
        process = await asyncio.create_subprocess_exec(
            *command, str(tmp_path / "wt2"), stderr=subprocess.PIPE
        )
        _, err = await process.communicate()
        assert process.returncode == 2
        assert (
            err.decode() == "collab: give the repository with --repo NAME (it serves demo, other)\n"
        )


def test_version_is_the_installed_packages(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out == f"collab {metadata.version('collab-engine')}\n"


def test_serve_sizes_reach_the_server_config(tmp_path: Path) -> None:
    from collab.cli.commands import _config, _parser

    args = _parser().parse_args(
        ["serve", "--repos", str(tmp_path), "--max-file", "1048576", "--max-document", "2097152"]
    )
    config = _config(args)
    assert config.max_file == 1024 * 1024 and config.max_document == 2 * 1024 * 1024
