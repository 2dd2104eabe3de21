"""The ``collab`` command: ``serve`` the engine, mint a ``token``, ``branch`` and ``merge``."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from gitsync import Repositories, create_demo_repo

from . import cli_branches, cli_store
from .auth import Role, TokenAuthenticator
from .completion.worker import add_worker_parser, run_worker_command
from .config import GROUP_WINDOW, SYNC_WINDOW, ServerConfig
from .data_lock import DataDirBusy
from .log_format import LOG_FORMATS, configure_logging
from .server import CollabServer

__all__ = ["main"]

SECRET_ENV = "COLLAB_SECRET"
_DEFAULTS = ServerConfig(repos=Path(), data_dir=Path())


def _secret(args: argparse.Namespace) -> bytes | None:
    if getattr(args, "secret_file", None):
        return Path(args.secret_file).read_bytes().strip()
    value = os.environ.get(SECRET_ENV)
    return value.encode() if value else None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="collab", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the engine")
    serve.add_argument("--repos", type=Path, help="directory of git repositories (default: a demo)")
    serve.add_argument("--data-dir", type=Path, default=Path(".collab"), help="store directory")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    serve.add_argument(
        "--secret-file", help=f"HMAC secret file (else ${SECRET_ENV}; else dev mode)"
    )
    serve.add_argument("--grace", type=float, default=5.0, help="idle room unload delay, s")
    serve.add_argument(
        "--group-window",
        type=float,
        default=GROUP_WINDOW,
        help=f"store write window under load, s (default {GROUP_WINDOW}; 0: none)",
    )
    serve.add_argument(
        "--sync-window",
        type=float,
        default=SYNC_WINDOW,
        help=f"store fsync window, s (default {SYNC_WINDOW}; 0: fsyncs back to back)",
    )
    serve.add_argument("--heartbeat", type=float, default=30.0, help="WebSocket ping interval, s")
    serve.add_argument(
        "--max-document",
        type=int,
        default=_DEFAULTS.max_document,
        help="largest live document (UTF-8 bytes of text); edits past it are refused with 4019",
    )
    serve.add_argument(
        "--max-push",
        type=int,
        default=_DEFAULTS.max_push,
        help="largest git push (bytes, decompressed); larger ones are refused",
    )
    serve.add_argument("--store", choices=["sqlite", "memory"], default="sqlite")
    serve.add_argument(
        "--completion-backend",
        default="local",
        help="embedded completion worker: local, http, transformers, module:factory or none",
    )
    serve.add_argument("--completion-model", help="model directory (transformers) or name (http)")
    serve.add_argument("--completion-endpoint", help="OpenAI-compatible server URL (http)")
    serve.add_argument(
        "--commit-idle", type=float, default=1.0, help="commit live edits after this idle time, s"
    )
    serve.add_argument(
        "--commit-max-lag", type=float, default=10.0, help="... or at the latest after this, s"
    )
    serve.add_argument("--log-level", default="INFO")
    serve.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="text",
        help="log lines on stderr: text, or one JSON object per line (time, level, logger, "
        "message, exception)",
    )

    token = sub.add_parser("token", help="mint an access token with the server's secret")
    token.add_argument("--user", required=True)
    token.add_argument(
        "--repo", help="repository name, or * for all (worker and metrics roles: not needed)"
    )
    token.add_argument("--role", choices=[r.value for r in Role], default="write")
    token.add_argument("--ttl", type=float, default=24 * 3600.0, help="seconds; 0 for no expiry")
    token.add_argument("--secret-file", help=f"HMAC secret file (else ${SECRET_ENV})")
    cli_branches.add_parsers(sub)
    cli_store.add_parsers(sub)
    add_worker_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "token":
        return _token(args)
    if args.command in ("branch", "merge"):
        return cli_branches.run(args)
    if args.command == "store":
        return cli_store.run(args)
    if args.command == "worker":
        return run_worker_command(args)
    return _serve(args)


def _token(args: argparse.Namespace) -> int:
    secret = _secret(args)
    if secret is None:
        print(f"collab token: no secret; set ${SECRET_ENV} or --secret-file", file=sys.stderr)
        return 2
    repo = args.repo or ("*" if args.role in (Role.WORKER, Role.METRICS) else None)
    if repo is None:
        print("collab token: --repo is required", file=sys.stderr)
        return 2
    auth = TokenAuthenticator(secret)
    ttl = args.ttl if args.ttl > 0 else None
    print(auth.mint(user=args.user, repo=repo, role=Role(args.role), ttl=ttl))
    return 0


def _serve(args: argparse.Namespace) -> int:
    configure_logging(args.log_level, args.log_format)
    repos: Path = args.repos or args.data_dir / "repos"
    if args.repos is None and not Repositories(repos).names():
        create_demo_repo(repos / "demo.git")
    config = ServerConfig(
        repos=repos,
        data_dir=args.data_dir,
        host=args.host,
        port=args.port,
        secret=_secret(args),
        grace=args.grace,
        group_window=args.group_window,
        sync_window=args.sync_window,
        heartbeat=args.heartbeat,
        max_document=args.max_document,
        max_push=args.max_push,
        store=args.store,
        commit_idle=args.commit_idle,
        completion_backend=args.completion_backend,
        completion_model=args.completion_model,
        completion_endpoint=args.completion_endpoint,
        commit_max_lag=args.commit_max_lag,
    )
    try:
        _event_loop_run(_run(config))
    except (ValueError, DataDirBusy) as exc:
        print(f"collab serve: {exc}", file=sys.stderr)
        return 2
    return 0


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


async def _run(config: ServerConfig) -> None:
    server = CollabServer(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        _announce(server)
        await stop.wait()


def _announce(server: CollabServer) -> None:
    names = server.repos.names()
    example = f"{names[0]}/main:README.md" if names else "<repo>/<branch>:<path>"
    auth = "?user=NAME (dev mode)" if server.auth.dev_mode else "?token=TOKEN (collab token ...)"
    print(f"collab: listening on {server.url}", flush=True)
    print(f"  repositories : {server.config.repos} ({', '.join(names) or 'none'})", flush=True)
    print(f"  Yjs clients  : {server.url}/yjs/{example}{auth.split(' ')[0]}", flush=True)
    print(
        f"  engine / ws  : {server.url}/ws  (msgpack protocol, see protocol/README.md)", flush=True
    )
    print(f"  credentials  : {auth}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
