"""``collab sync DIR --repo R [--branch B]``: check a live branch out into DIR and keep the two
in sync, both ways, until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "run", "watchfiles_missing"]

MISSING = (
    "watchfiles is missing; install the disk extra: .venv/bin/pip install -e '.[disk]' in a "
    "checkout of the engine (pip install 'collab-engine[disk]' where it is installed as a package)"
)


def watchfiles_missing() -> str | None:
    """Why working trees cannot be watched here, or ``None`` if they can."""
    try:
        import watchfiles  # noqa: F401
    except ImportError:
        return MISSING
    return None


def add_parser(sub: Any) -> None:
    from ..cli.branch_commands import add_server_options

    parser = sub.add_parser(
        "sync",
        help="keep a live branch and a directory in sync, both ways",
        description="Check the branch out into DIR (or adopt the checkout there) and keep "
        "its files and the live documents in sync until interrupted: file saves become live "
        "edits, what others type is written to the files, and changes on both sides merge "
        "three-way against the last synced state recorded in DIR/.git. Binary and large "
        "files and deletions go through git commits. Needs the disk extra (watchfiles).",
    )
    add_server_options(parser, json_help="print one JSON event per line instead of a summary")
    parser.add_argument("dir", type=Path, help="the working tree (created if absent)")
    parser.add_argument("--repo", help="the repository (default: the server's only one)")
    parser.add_argument("--branch", help="the branch (default: your own, made if needed)")
    parser.add_argument(
        "--debounce",
        type=float,
        default=0.02,
        help="seconds live edits gather before a file is written (default 0.02)",
    )


def _code_name(code: int) -> str:
    from protocol.errors import ErrorCode

    try:
        return ErrorCode(code).name
    except ValueError:
        return str(code)


def run(args: argparse.Namespace) -> int:
    missing = watchfiles_missing()
    if missing is not None:
        print(f"collab sync: {missing}", file=sys.stderr)
        return 2
    from ..cli.branch_commands import TOKEN_ENV, only_repo

    status, args.repo = only_repo(args)
    if status:
        return status
    token = args.token or os.environ.get(TOKEN_ENV)
    try:
        return asyncio.run(_sync(args, token))
    except KeyboardInterrupt:
        return 0


async def _sync(args: argparse.Namespace, token: str | None) -> int:
    from ..cli.branch_commands import refusal
    from ..client import ClientError
    from ..store.data_lock import DataDirBusy
    from .checkout import GitError
    from .report import Counters, json_lines, status_line
    from .syncer import WorkingTree

    counters = Counters()
    report = json_lines() if args.json else status_line(counters)
    tree = WorkingTree(
        args.dir,
        args.url,
        args.repo,
        args.branch,
        user=args.user,
        token=token,
        debounce=args.debounce,
        report=report,
    )
    tree.counters = counters
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await tree.start()
    except ClientError as exc:
        print(f"collab sync: {refusal(args, _code_name(exc.code), exc.message)}", file=sys.stderr)
        return 2
    except (ConnectionError, GitError, OSError, DataDirBusy) as exc:
        print(f"collab sync: {exc}", file=sys.stderr)
        return 2
    try:
        if not args.json:
            print(f"collab sync: {tree.root} <-> {args.repo}/{tree.branch}", file=sys.stderr)
        await stop.wait()
    finally:
        await tree.stop()
    return 0
