"""The ``collab`` command: serve the engine, mint tokens, and talk to a running server."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import gc
import importlib.util
import logging
import math
import os
import re
import signal
import socket
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from gitsync import BlobNotText, Repositories, create_demo_repo
from gitsync.objects.fsck import IDENT_PROBLEMS
from protocol.errors import ProtocolError
from protocol.names import validate_repo

from ..bus.nodes import NodeIdTaken
from ..completion.backends import BACKENDS
from ..completion.worker import add_worker_parser, run_worker_command
from ..disk import command as disk_command
from ..disk.served import ServedTrees, WorktreeError, WorktreeSpec, parse_worktree
from ..git.tree_ops import tree_paths
from ..git.work import in_git_thread
from ..log_format import LOG_FORMATS, LOG_LEVELS, configure_logging
from ..server.app import CollabServer
from ..server.auth import ANY_REPO, Role, TokenAuthenticator
from ..server.config import GROUP_WINDOW, SYNC_WINDOW, ServerConfig
from ..server.status_ops import engine_version
from ..store.data_lock import DataDirBusy
from ..store.sqlite_store import StoreUnreadable, StoreUnwritable, header_damaged
from . import branch_commands, cluster_commands, status_commands, store_commands
from .cluster_commands import REDIS_ENV
from .terminal import ShownOutput

log = logging.getLogger("collab.cli")

__all__ = ["main"]

SECRET_ENV = "COLLAB_SECRET"
GC_FULL_AFTER = 100
"""``collab serve`` runs a full garbage collection after this many of the middle generation
(Python's default is 10). A full collection walks every object the process tracks, about 150
per connection: 120 ms at 400 documents with 2 clients each on the test machine, every
edit in the process waiting meanwhile. Ten times fewer of them kept one node's p99 under
50 ms at 400 such documents, where the default broke it. Cyclic garbage that lived long is
freed later; a large document's memory is collected when its room unloads (see
``collab.live.memory``)."""
_DEFAULTS = ServerConfig(repos=Path(), data_dir=Path())


def _secret(args: argparse.Namespace) -> bytes | None:
    """``--secret-file``'s content, else ``$COLLAB_SECRET``; raises ``StartupError`` when
    the file cannot be read."""
    if getattr(args, "secret_file", None):
        try:
            return Path(args.secret_file).read_bytes().strip()
        except OSError as exc:
            raise StartupError(
                f"cannot read the secret file: {exc.strerror}: {exc.filename}"
            ) from None
    value = os.environ.get(SECRET_ENV)
    return value.encode() if value else None


DESCRIPTION = """\
collab: real-time collaboration on git repositories.

  collab serve            run the engine (dev mode without a secret)
  collab token            mint an access token with the server's secret
  collab status           what a running server serves: repositories, branches, people
  collab log REPO BRANCH  a branch's recent commits, with authors and co-authors
  collab branch ...       list, join, create, fork, delete or commit branches
  collab merge SRC DST    preview (or --apply) a merge of one branch into another
  collab store ...        check or repair the store, with the server stopped
  collab cluster status   the nodes of a cluster sharing one Redis: rooms, leases, lag
  collab sync DIR         keep a live branch and a directory in sync, both ways
  collab worker           run a completion worker for an engine

`collab COMMAND --help` describes each command and its options, with their defaults.
"""


class _Defaults(argparse.ArgumentDefaultsHelpFormatter):
    """Help that shows each option's default, where it has one (a flag such as ``--no-web``
    has none to show: it is off unless given; nor has an empty set)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        empty = action.default is None or action.default is False or action.default == frozenset()
        if empty or action.nargs == 0:
            return action.help
        return super()._get_help_string(action)


class _Command(argparse.ArgumentParser):
    """A command's parser: an argument it does not know is its own error, shown with its
    own usage (not the top-level ``collab COMMAND ...``)."""

    def parse_known_args(  # type: ignore[override]
        self, args: Any = None, namespace: Any = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed, extras


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="collab", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"collab {engine_version()}")
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Command
    )

    serve = sub.add_parser(
        "serve",
        help="run the engine",
        description="Serve the git repositories under --repos to live editors, git and the "
        "HTTP API. Without a secret the server runs in dev mode: loopback only, ?user=NAME.",
        formatter_class=_Defaults,
    )
    serve.add_argument(
        "--repos",
        type=Path,
        help="directory of git repositories DIR/<name> or DIR/<name>.git (default: a demo "
        "repository created under --data-dir)",
    )
    serve.add_argument(
        "--data-dir", type=Path, default=Path(".collab"), help="the store, lock and state files"
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=_port, default=8765, help="port to listen on; 0 picks one")
    serve.add_argument(
        "--secret-file",
        help=f"file holding the HMAC secret for tokens (else ${SECRET_ENV}; neither: dev mode)",
    )
    serve.add_argument(
        "--grace", type=_seconds, default=5.0, help="seconds an idle document stays loaded"
    )
    serve.add_argument(
        "--group-window",
        type=_seconds,
        default=GROUP_WINDOW,
        help="seconds an update under load waits for others to share its store write (0: none)",
    )
    serve.add_argument(
        "--sync-window",
        type=_seconds,
        default=SYNC_WINDOW,
        help="least seconds between two fsyncs of the store; the writes made meanwhile share "
        "the next (0: fsyncs back to back)",
    )
    serve.add_argument(
        "--heartbeat",
        type=_positive_seconds,
        default=30.0,
        help="seconds between WebSocket pings",
    )
    serve.add_argument(
        "--max-document",
        type=_bytes,
        default=_DEFAULTS.max_document,
        help="largest live document (UTF-8 bytes of text); edits past it are refused with 4019 "
        "(0: no cap)",
    )
    serve.add_argument(
        "--max-file",
        type=_positive_bytes,
        default=_DEFAULTS.max_file,
        help="largest file of a branch opened as a live document (bytes); a larger one is "
        "refused with 4009, and a push that makes an open file larger closes its document",
    )
    serve.add_argument(
        "--max-push",
        type=_positive_bytes,
        default=_DEFAULTS.max_push,
        help="largest git push (bytes, decompressed); larger ones are refused",
    )
    serve.add_argument(
        "--max-object",
        type=_positive_bytes,
        default=_DEFAULTS.max_object,
        help="largest object a git push may hold (bytes, expanded: a delta's result too); "
        "a push with a larger one is refused before it is unpacked",
    )
    serve.add_argument(
        "--fsck-accept",
        type=_fsck_ids,
        default=_DEFAULTS.fsck_accept,
        metavar="ID,...",
        help="pushed commits and tags may have these problems of their author, committer or "
        "tagger lines, which git's fsck refuses and old histories hold (badTimezone, "
        "zeroPaddedDate, badEmail, ...); as git's receive.fsck.<id>=ignore",
    )
    serve.add_argument(
        "--store", choices=["sqlite", "memory"], default="sqlite", help="where CRDT history lives"
    )
    serve.add_argument(
        "--redis",
        default=os.environ.get(REDIS_ENV),
        help=f"redis://HOST:PORT/DB: join the cluster of nodes sharing this Redis and --repos "
        f"(else ${REDIS_ENV}; neither: one process serves everything, on --store)",
    )
    serve.add_argument(
        "--node-id",
        type=_node_id,
        help="this node's name in the cluster (default: host-pid-random)",
    )
    serve.add_argument(
        "--completion-backend",
        default="local",
        help="embedded completion worker: local, http, transformers, module:factory or none",
    )
    serve.add_argument("--completion-model", help="model directory (transformers) or name (http)")
    serve.add_argument("--completion-endpoint", help="OpenAI-compatible server URL (http)")
    serve.add_argument(
        "--commit-idle",
        type=_positive_seconds,
        default=1.0,
        help="commit live edits after this many seconds without typing",
    )
    serve.add_argument(
        "--commit-max-lag",
        type=_positive_seconds,
        default=10.0,
        help="... and at the latest this many seconds after the first pending edit",
    )
    serve.add_argument(
        "--no-web", dest="web", action="store_false", help="do not serve the web editor at /"
    )
    serve.add_argument(
        "--worktree",
        action="append",
        metavar="REPO:BRANCH=DIR",
        help="keep BRANCH of REPO in two-way sync with the directory DIR on this machine, for "
        "tools that run here (repeatable; needs the disk extra)",
    )
    serve.add_argument(
        "--log-level",
        type=str.upper,
        choices=LOG_LEVELS,
        default="INFO",
        help="DEBUG, INFO, WARNING or ERROR",
    )
    serve.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="text",
        help="log lines on stderr: text, or one JSON object per line (time, level, logger, "
        "message, exception)",
    )

    token = sub.add_parser(
        "token",
        help="mint an access token with the server's secret",
        formatter_class=_Defaults,
    )
    token.add_argument("--user", required=True, help="who the token names")
    token.add_argument(
        "--repo", help="repository name, or * for all (worker and metrics roles: not needed)"
    )
    token.add_argument(
        "--role", choices=[r.value for r in Role], default="write", help="what it allows"
    )
    token.add_argument(
        "--ttl", type=_ttl_seconds, default=24 * 3600.0, help="seconds; 0 for no expiry"
    )
    token.add_argument("--secret-file", help=f"HMAC secret file (else ${SECRET_ENV})")
    status_commands.add_parsers(sub)
    branch_commands.add_parsers(sub)
    store_commands.add_parsers(sub)
    cluster_commands.add_parsers(sub)
    disk_command.add_parser(sub)
    add_worker_parser(sub)
    return parser


def _report(args: argparse.Namespace) -> int:
    """Run a command that reports on or asks the server or the store."""
    if args.command in ("branch", "merge"):
        return branch_commands.run(args)
    if args.command in ("status", "log"):
        return status_commands.run(args)
    if args.command == "store":
        return store_commands.run(args)
    return cluster_commands.run(args)


def main(argv: list[str] | None = None) -> int:
    """Run the command ``argv`` names; its exit status. Output piped into a reader that
    stops early (``collab log ... | head -1``) ends the command quietly."""
    try:
        status = _command(argv)
        sys.stdout.flush()
    except BrokenPipeError:
        # the reader is gone: what is still buffered goes nowhere, not into a second
        # error when Python flushes stdout at exit (as the Python documentation advises)
        _discard_stdout()
        return 1
    return status


def _command(argv: list[str] | None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "token":
        return _token(args)
    if args.command in ("branch", "merge", "status", "log", "store", "cluster"):
        # what these print comes from the repositories and the server: shown, not obeyed
        out, err = ShownOutput(sys.stdout), ShownOutput(sys.stderr)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            return _report(args)
    if args.command == "worker":
        return run_worker_command(args)
    if args.command == "sync":
        return disk_command.run(args)
    return _serve(args)


def _token(args: argparse.Namespace) -> int:
    try:
        secret = _secret(args)
    except StartupError as exc:
        print(f"collab token: {exc}", file=sys.stderr)
        return 2
    if secret is None:
        print(f"collab token: no secret; set ${SECRET_ENV} or --secret-file", file=sys.stderr)
        return 2
    repo = args.repo or ("*" if args.role in (Role.WORKER, Role.METRICS) else None)
    if repo is None:
        print("collab token: --repo is required (a repository name, or * for all)", file=sys.stderr)
        return 2
    try:
        if repo != ANY_REPO:
            validate_repo(repo)
        auth = TokenAuthenticator(secret)
        token = auth.mint(user=args.user, repo=repo, role=Role(args.role), ttl=_ttl(args.ttl))
    except (ProtocolError, ValueError) as exc:
        print(f"collab token: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return 2
    print(token)
    return 0


def _port(text: str) -> int:
    """``--port``: 0 to 65535."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0-65535 (0 picks one), not {text!r}")
    return port


def _fsck_ids(text: str) -> frozenset[str]:
    """``--fsck-accept``: git fsck message ids of identity-line problems, comma-separated."""
    ids = frozenset(part.strip() for part in text.split(",") if part.strip())
    unknown = sorted(ids - IDENT_PROBLEMS)
    if unknown:
        raise argparse.ArgumentTypeError(
            f"{', '.join(unknown)}: only these may be accepted: {', '.join(sorted(IDENT_PROBLEMS))}"
        )
    return ids


def _amount(parse: Callable[[str], float], unit: str, *, over_zero: bool) -> Callable[[str], Any]:
    """An option's type: a finite number of ``unit`` read by ``parse``, 0 or more (more than
    0 with ``over_zero``)."""

    def amount(text: str) -> Any:
        try:
            value = parse(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and (value > 0 if over_zero else value >= 0)):
            bound = "over 0" if over_zero else "(0 or more)"
            raise argparse.ArgumentTypeError(f"{text!r} is not a number of {unit} {bound}")
        return value

    return amount


_seconds = _amount(float, "seconds", over_zero=False)
_positive_seconds = _amount(float, "seconds", over_zero=True)
_bytes = _amount(int, "bytes", over_zero=False)
_positive_bytes = _amount(int, "bytes", over_zero=True)


def _node_id(text: str) -> str:
    """``--node-id``: letters, digits, ``.``, ``_`` and ``-``, 1 to 64 of them."""
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", text):
        raise argparse.ArgumentTypeError(
            f"{text!r}: a node id is 1 to 64 letters, digits, '.', '_' or '-'"
        )
    return text


def _ttl_seconds(text: str) -> float:
    """``--ttl``: a positive number of seconds, or 0 for a token that never expires."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (seconds == 0 or (math.isfinite(seconds) and seconds > 0)):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a positive number of seconds (0: the token never expires)"
        )
    return seconds


def _ttl(seconds: float) -> float | None:
    return seconds if seconds > 0 else None


def _serve(args: argparse.Namespace) -> int:
    """Run the server until SIGINT or SIGTERM. A start-up failure is one line on stderr,
    with its cause and what to do, and exit status 2 (with ``--log-format json``, one JSON
    log line, as is a fatal error's traceback)."""
    try:
        configure_logging(args.log_level, args.log_format)
        config = _config(args)
        _check_port(config.host, config.port)
        if args.repos is None and not Repositories(config.repos).names():
            create_demo_repo(config.repos / "demo.git")
        worktrees = [parse_worktree(spec) for spec in args.worktree or []]
        if worktrees and (missing := disk_command.watchfiles_missing()):
            raise StartupError(f"--worktree: {missing}")
        tune_gc()
        _event_loop_run(_run(config, worktrees))
    except (StartupError, WorktreeError, DataDirBusy, ValueError, NodeIdTaken) as exc:
        return _refuse(args, str(exc))
    except StoreUnreadable as exc:
        return _refuse(args, _unreadable(exc))
    except StoreUnwritable as exc:  # not damage: nothing to repair or move aside
        return _refuse(args, f"cannot write the store: {exc}")
    except OSError as exc:
        return _refuse(args, _os_error(exc, args))
    except Exception as exc:
        if args.redis is not None and _redis_failure(exc):
            return _refuse(
                args,
                f"cannot reach Redis at {args.redis}: {str(exc).rstrip('.')}; start it, or check "
                f"--redis "
                f"(or ${REDIS_ENV})",
            )
        if args.log_format != "json":
            raise
        log.critical("collab serve stopped on an unexpected error", exc_info=True)
        return 1
    return 0


def _redis_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is the Redis client's (the cluster extra: maybe not installed)."""
    try:
        from redis.exceptions import RedisError
    except ImportError:
        return False
    return isinstance(exc, RedisError)


def _refuse(args: argparse.Namespace, message: str) -> int:
    """Say why ``collab serve`` does not start, as its log format says; exit status 2."""
    if args.log_format == "json":
        log.error("collab serve: %s", message)
    else:
        print(f"collab serve: {message}", file=sys.stderr)
    return 2


class StartupError(Exception):
    """A reason not to start, with what to do about it (one line)."""


def _config(args: argparse.Namespace) -> ServerConfig:
    if args.redis is not None and args.repos is None:
        raise StartupError(
            "a cluster node (--redis) needs --repos: the repositories' directory every node "
            "of the cluster shares"
        )
    if args.redis is not None and importlib.util.find_spec("redis") is None:
        raise StartupError("--redis needs the cluster extra: pip install 'collab-engine[cluster]'")
    repos: Path = args.repos or args.data_dir / "repos"
    if args.repos is not None and args.repos.exists() and not args.repos.is_dir():
        raise StartupError(
            f"--repos {args.repos} is a file: give the directory that holds the git "
            "repositories (DIR/NAME or DIR/NAME.git)"
        )
    if args.repos is not None and not args.repos.is_dir():
        raise StartupError(
            f"no repository directory {args.repos}: create it and put git repositories in "
            "it (DIR/NAME or DIR/NAME.git), or leave --repos out to serve a demo repository"
        )
    if (
        args.repos is not None
        and ((args.repos / ".git").exists() or (args.repos / "HEAD").is_file())
        and not Repositories(args.repos).names()
    ):
        raise StartupError(
            f"{args.repos} is itself a git repository: --repos takes the directory that holds "
            f"repositories (DIR/NAME or DIR/NAME.git), such as {args.repos.resolve().parent}"
        )
    if args.commit_max_lag < args.commit_idle:
        raise StartupError(
            f"--commit-max-lag {args.commit_max_lag:g} is under --commit-idle "
            f"{args.commit_idle:g}: the longest a pending edit waits for its commit cannot be "
            "shorter than the pause that commits it"
        )
    backend = args.completion_backend
    if backend not in (*BACKENDS, "none") and not backend.strip(":").count(":"):
        raise StartupError(
            f"--completion-backend {backend!r}: choose {', '.join(BACKENDS)}, module:factory "
            "(a factory importable here) or none"
        )
    secret = _secret(args)
    return ServerConfig(
        repos=repos,
        data_dir=args.data_dir,
        host=args.host,
        port=args.port,
        secret=secret,
        grace=args.grace,
        group_window=args.group_window,
        sync_window=args.sync_window,
        heartbeat=args.heartbeat,
        max_document=args.max_document,
        max_file=args.max_file,
        max_push=args.max_push,
        max_object=args.max_object,
        fsck_accept=args.fsck_accept,
        store=args.store,
        redis=args.redis,
        node_id=args.node_id,
        commit_idle=args.commit_idle,
        completion_backend=args.completion_backend,
        completion_model=args.completion_model,
        completion_endpoint=args.completion_endpoint,
        commit_max_lag=args.commit_max_lag,
        web=args.web,
    )


def _check_port(host: str, port: int) -> None:
    """Bind ``host:port`` for a moment, as the server will, so that a port in use is reported
    before anything is opened (the server reports it too if it is taken meanwhile)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise StartupError(f"cannot listen on {host!r}: {exc.strerror}; check --host") from None
    if port == 0:  # any free port: nothing to probe
        return
    family, kind, proto, _name, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(address)


def _os_error(exc: OSError, args: argparse.Namespace) -> str:
    """One line for an OSError at start: a directory that cannot be made or written, a port
    in use or forbidden, or the error itself."""
    what = exc.strerror or str(exc)
    if exc.filename is not None:
        for option, folder in (("--data-dir", args.data_dir), ("--repos", args.repos)):
            if folder is not None and _within(Path(exc.filename), folder):
                return (
                    f"{option} {folder}: {what}: {exc.filename}; give a directory this user "
                    "may create and write"
                )
        return f"{what}: {exc.filename}"
    where = f"{args.host}:{args.port}"
    if exc.errno == errno.EADDRINUSE:
        return (
            f"cannot listen on {where}: the port is in use (another collab serve?); stop "
            "that server, or pick another port with --port (make run PORT=N)"
        )
    if exc.errno == errno.EACCES:
        return f"cannot listen on {where}: permission denied; pick a port above 1023 with --port"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on {where}: no such address on this machine; check --host"
    return what


def _within(path: Path, folder: Path) -> bool:
    """Whether ``path`` is ``folder`` or lies below it (both as given, made absolute)."""
    path, folder = Path(os.path.abspath(path)), Path(os.path.abspath(folder))
    return path == folder or folder in path.parents


def _unreadable(exc: StoreUnreadable) -> str:
    """One line for a store file too damaged to open: which file, and what to do (a repair
    first: moved aside, the documents lose what their branches have not committed)."""
    check = f"collab store check --data-dir {exc.path.parent}"
    if header_damaged(exc.path):
        return (
            f"cannot open the store {exc.path}: {exc.reason} (its header string is damaged); "
            f"run {check}, which says whether collab store repair can restore it"
        )
    return (
        f"cannot open the store {exc.path}: {exc.reason}; the file is damaged: run {check} "
        "and collab store repair; if no repair reads it, restore it from a backup (moved "
        "aside, the documents start again from their branch heads, and lose every edit "
        "not committed)"
    )


def tune_gc() -> None:
    """Full garbage collections ``GC_FULL_AFTER`` middle ones apart (the process's choice:
    an application that embeds the engine keeps its own)."""
    young, middle, _full = gc.get_threshold()
    gc.set_threshold(young, middle, GC_FULL_AFTER)


def _event_loop_run(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` on uvloop where it is installed (it sends and wakes up for less CPU than
    the default loop), else on asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


async def _run(config: ServerConfig, worktrees: list[WorktreeSpec] | None = None) -> None:
    server = CollabServer(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with (
        server,  # (started first: the trees connect to its port)
        ServedTrees(
            server.auth, config.host, server.port, worktrees or [], max_file=config.max_file
        ),
    ):
        _announce(server, await _example(server))
        stopped = asyncio.create_task(stop.wait())
        failed = asyncio.create_task(server.failed.wait())
        await asyncio.wait([stopped, failed], return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        failed.cancel()
    if server.failure is not None:  # another process took this node's id
        raise NodeIdTaken(server.failure)


EXAMPLE_PATHS = 20
"""How many of a branch's files the banner's example tries, README.md missing, for one
that is text."""


async def _example(server: CollabServer) -> str:
    """The banner's example document, ``REPO/BRANCH:PATH``: the first readable repository's
    default branch, and its README.md (else its first text file), as far as they exist. A
    repository that cannot be read (damaged objects or refs) is passed over: the banner
    never stops the server."""
    for repo in server.repos.names():
        try:
            branch = await server.branches.default_branch(repo)
            head = await server.branches.head(repo, branch)
            path = await in_git_thread(
                server.repos, _example_path, server.repos, repo, branch, head
            )
        except (LookupError, ProtocolError):  # no such branch yet: an empty repository
            return f"{repo}/<branch>:<path>"
        except Exception as exc:
            log.debug("%s: not taken for the banner's example: %r", repo, exc)
            continue
        return f"{repo}/{branch}:{path or '<path>'}"
    return "<repo>/<branch>:<path>"


def _example_path(repos: Repositories, repo: str, branch: str, head: bytes) -> str | None:
    paths, _truncated = tree_paths(repos.open(repo), head)
    candidates = ["README.md"] if "README.md" in paths else []
    candidates += paths[:EXAMPLE_PATHS]
    for path in candidates:
        try:
            repos.read_file(repo, branch, path)
        except BlobNotText:
            continue
        return path
    return None


def _announce(server: CollabServer, example: str) -> None:
    """Print the banner: where the server listens and how to connect. A server whose
    standard output is gone (``collab serve | head -1``, a closed log pipe) goes on
    serving; the banner goes nowhere."""
    names = server.repos.names()
    auth = "?user=NAME (dev mode)" if server.auth.dev_mode else "?token=TOKEN (collab token ...)"
    lines = [f"collab: listening on {server.url}"]
    if server.config.web:
        web = f"http://{server.config.host}:{server.port}/"
        lines.append(f"  web editor   : {web}  (open it in two browser windows)")
    lines += [
        f"  repositories : {server.config.repos} ({', '.join(names) or 'none'})",
        f"  Yjs clients  : {server.url}/yjs/{example}{auth.split(' ')[0]}",
        f"  engine / ws  : {server.url}/ws  (msgpack protocol, see protocol/README.md)",
        f"  credentials  : {auth}",
    ]
    who = " --user NAME" if server.auth.dev_mode else " --token TOKEN"
    url = "" if server.port == 8765 else f" --url http://127.0.0.1:{server.port}"
    lines.append(f"  next         : {_program()} status{url}{who}  (in another terminal)")
    for line in lines:
        try:
            print(line, flush=True)
        except BrokenPipeError:
            _discard_stdout()
            return


def _discard_stdout() -> None:
    """Send what is written to standard output nowhere from now on (its reader is gone),
    so that no later write, nor Python's flush at exit, fails on it."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _program() -> str:
    """How this command was run, to repeat it: ``.venv/bin/collab``, ``python -m collab``."""
    invoked = sys.argv[0] if sys.argv else ""
    if Path(invoked).name == "collab":
        return invoked
    return f"{Path(sys.executable).name} -m collab"


if __name__ == "__main__":
    sys.exit(main())
