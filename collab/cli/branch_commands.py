"""``collab branch ...`` and ``collab merge ...``: branch operations on a running server,
through its HTTP API (``POST /api/<op>``)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import urllib.parse
from collections.abc import Sequence
from typing import Any

import aiohttp

from ..server.auth import DEV_MODE, TOKEN_REQUIRED
from .terminal import columns, one_line

__all__ = ["add_parsers", "add_server_options", "call", "plural", "run", "table"]

TOKEN_ENV = "COLLAB_TOKEN"
URL_ENV = "COLLAB_URL"
DEFAULT_URL = "http://127.0.0.1:8765"
_GIVE_URL = f"give the server's base URL, http://HOST:PORT (--url, or ${URL_ENV})"


def _url(text: str) -> str:
    """The server's HTTP base URL: ``ws://`` becomes ``http://``, no trailing slash."""
    url = text.rstrip("/").replace("ws://", "http://", 1).replace("wss://", "https://", 1)
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 (raises on a port that is no number)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}; {_GIVE_URL}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(f"{text!r} is not a server's URL; {_GIVE_URL}")
    return url


def add_server_options(
    parser: argparse.ArgumentParser, json_help: str = "print the raw JSON answer"
) -> None:
    """The options of every command that talks to a running server."""
    parser.add_argument(
        "--url",
        type=_url,
        default=os.environ.get(URL_ENV) or DEFAULT_URL,
        help=f"the server (else ${URL_ENV}, else {DEFAULT_URL})",
    )
    parser.add_argument("--token", help=f"access token (else ${TOKEN_ENV})")
    parser.add_argument("--user", help="dev mode only: who you are")
    parser.add_argument("--json", action="store_true", help=json_help)


def add_parsers(sub: Any) -> None:
    def common(parser: argparse.ArgumentParser) -> None:
        add_server_options(parser)
        parser.add_argument("--repo", help="the repository (default: the server's only one)")

    branch = sub.add_parser("branch", help="list, join, create, fork, delete, commit branches")
    actions = branch.add_subparsers(dest="action", required=True)
    common(actions.add_parser("list", help="branches with heads and who is on them"))
    join = actions.add_parser("join", help="make sure you have your own branch")
    common(join)
    join.add_argument("--from", dest="source", help="branch to start from (default branch)")
    create = actions.add_parser("create", help="create a branch")
    common(create)
    create.add_argument("name", help="the new branch's name")
    create.add_argument(
        "--from",
        dest="source",
        help="branch, tag or commit id to start from (default: the default branch)",
    )
    fork = actions.add_parser("fork", help="fork a branch at its live state")
    common(fork)
    fork.add_argument("source", help="the branch to fork, with its live edits")
    fork.add_argument("name", nargs="?", help="default: <your branch>-fork-N")
    delete = actions.add_parser("delete", help="delete a branch")
    common(delete)
    delete.add_argument("name", help="the branch to delete (not while it has documents open)")
    commit = actions.add_parser("commit", help="commit a branch's live edits now")
    common(commit)
    commit.add_argument("name", help="the branch whose live edits to commit")

    merge = sub.add_parser("merge", help="merge SOURCE into TARGET (a preview unless --apply)")
    common(merge)
    merge.add_argument("source", help="the branch whose changes are merged")
    merge.add_argument("target", help="the branch they are merged into")
    merge.add_argument("--apply", action="store_true", help="perform the merge")
    merge.add_argument(
        "--markers", action="store_true", help="on conflict, write markers into the live files"
    )
    merge.add_argument(
        "--no-ff",
        action="store_true",
        help="record a merge commit even when TARGET could simply move to SOURCE",
    )


def _call(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    if args.command == "merge":
        op = "merge.apply" if args.apply else "merge.preview"
        body: dict[str, Any] = {"repo": args.repo, "source": args.source, "target": args.target}
        if args.apply:
            body["markers"] = args.markers
            body["no_ff"] = args.no_ff
        return op, body
    action = args.action
    body = {"repo": args.repo}
    if action == "join" and args.source:
        body["from"] = args.source
    elif action == "create":
        body["name"] = args.name
        if args.source:
            body["from"] = args.source
    elif action == "fork":
        body["source"] = args.source
        if args.name:
            body["name"] = args.name
    elif action == "delete":
        body["name"] = args.name
    elif action == "commit":
        body["branch"] = args.name
    return f"branch.{action}", body


async def _post(args: argparse.Namespace, op: str, body: dict[str, Any]) -> tuple[int, Any]:
    headers = {}
    token = args.token or os.environ.get(TOKEN_ENV)
    if token:
        headers["Authorization"] = f"Bearer {token}"
    params = {"user": args.user} if args.user else {}
    url = _url(args.url)
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}/api/{op}", json=body, headers=headers, params=params) as reply,
    ):
        if reply.content_type != "application/json":  # not the engine's API answering
            message = f"{reply.reason} from {reply.url.with_query(None)}"
            if reply.status == 404:
                message += f": {_GIVE_URL}, not a path on it"
            return reply.status, {"error": {"name": f"HTTP {reply.status}", "message": message}}
        return reply.status, await reply.json()


def call(args: argparse.Namespace, op: str, body: dict[str, Any]) -> tuple[int, Any]:
    """Run ``op`` on the server of ``args.url``: (0, its value), or (exit status, None) once
    the reason it failed is printed on stderr in one line."""
    try:
        status, answer = asyncio.run(_post(args, op, body))
    except (aiohttp.ClientError, OSError) as exc:
        reason = "nothing listens there (is the server running?)"
        if isinstance(exc, aiohttp.ClientSSLError):
            reason = "the TLS handshake failed (does the server speak plain http://?)"
        elif not isinstance(exc, aiohttp.ClientConnectorError):
            reason = str(exc) or type(exc).__name__
        print(f"collab: cannot reach {args.url}: {reason}", file=sys.stderr)
        return 2, None
    if status != 200:
        error = answer.get("error", {}) if isinstance(answer, dict) else {}
        message = str(error.get("message", answer))
        conflicted = message.startswith("merge conflicts")  # (not: a branch into itself)
        if (
            error.get("name") == "CONFLICT"
            and op == "merge.apply"
            and conflicted
            and not args.markers
        ):
            message += (
                " (add --markers to merge with conflict markers written into the live files, "
                "then resolve them there)"
            )
        print(f"collab: {refusal(args, error.get('name', status), message)}", file=sys.stderr)
        return 1, None
    return 0, answer["value"]


def refusal(args: argparse.Namespace, name: object, message: str) -> str:
    """``NAME: message`` for a refusal, with the option that answers it where there is one."""
    if message.startswith(DEV_MODE) and not args.user:
        message = f"{DEV_MODE}: name yourself with --user NAME"
    elif message == TOKEN_REQUIRED and not (args.token or os.environ.get(TOKEN_ENV)):
        message = (
            f"a token is required: give one with --token or ${TOKEN_ENV} "
            "(`collab token` mints them)"
        )
    return f"{name}: {message}"


def only_repo(args: argparse.Namespace) -> tuple[int, str | None]:
    """The repository ``--repo`` names, else the server's only one: (0, its name), or (exit
    status, None) once the reason is printed (none readable, or several to choose from)."""
    if args.repo:
        return 0, args.repo
    status, value = call(args, "server.status", {})
    if status:
        return status, None
    names = [repo["name"] for repo in value["repositories"]]
    if len(names) == 1:
        return 0, names[0]
    listed = f"it serves {', '.join(names)}" if names else "it serves none you may read"
    print(f"collab: give the repository with --repo NAME ({listed})", file=sys.stderr)
    return 2, None


def run(args: argparse.Namespace) -> int:
    status, args.repo = only_repo(args)
    if status:
        return status
    op, body = _call(args)
    status, value = call(args, op, body)
    if status:
        return status
    if args.json:
        print(json.dumps(value, indent=2))
    else:
        _print(args, op, value)
    return 0


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """``1 file``, ``2 files`` (``nouns``: the plural, when it is not ``noun`` + s)."""
    return f"{count} {noun}" if count == 1 else f"{count} {nouns or noun + 's'}"


def _print(args: argparse.Namespace, op: str, value: Any) -> None:
    if op == "branch.list":
        rows = [("", "BRANCH", "HEAD", "PEOPLE (FILE)")]
        for branch in value:
            people = ", ".join(f"{p['user']} ({one_line(p['path'])})" for p in branch["people"])
            mark = "*" if branch["mine"] else ""
            rows.append((mark, branch["name"], branch["head"][:12], people or "-"))
        table(rows)
        print("(* your own branch)")
    elif op.startswith("merge."):
        _print_merge(args, value)
    elif op == "branch.delete":
        print(f"deleted the branch {value['name']} (it was at {value['head'][:12]})")
    elif op in ("branch.create", "branch.fork"):
        source = f" from {value['source']}" if value.get("source") else ""
        print(f"created the branch {value['name']}{source} at {value['head'][:12]}")
    elif op == "branch.join":
        state = "created" if value["created"] else "already there"
        print(f"your branch: {value['name']} at {value['head'][:12]} ({state})")
    elif op == "branch.commit":
        print(f"{value['name']} is at {value['head'][:12]}")
    else:
        print(" ".join(f"{k}={v}" for k, v in value.items()))


def _print_merge(args: argparse.Namespace, value: dict[str, Any]) -> None:
    source = f"{args.source} ({value['source'][:12]})"
    target = f"{args.target} ({value['target'][:12]})"
    if value["up_to_date"]:
        state = "up to date, nothing to merge"
    else:
        how = "fast-forward" if value["fast_forward"] else "three-way merge"
        state = f"{how}, {plural(len(value['files']), 'file')} changed"
    print(f"merge {source} into {target}: {state}")
    for f in value["files"]:
        print(f"  {f['status']:9} {one_line(f['path'])}")
        if f.get("diff"):
            print("    " + f["diff"].replace("\n", "\n    ").rstrip())
    if value["conflicts"]:
        conflicts = [one_line(path) for path in value["conflicts"]]
        print(f"conflicts ({len(conflicts)}): " + ", ".join(conflicts))
    if value.get("applied"):
        done = "fast-forwarded to" if value["fast_forward"] else "merge commit"
        print(f"{done} {value['commit']}")
    elif "applied" not in value and not value["up_to_date"]:
        print("(a preview: add --apply to merge)")


def table(rows: Sequence[Sequence[str]]) -> None:
    """Print ``rows`` in left-aligned columns, the last one unpadded."""
    widths = [max(columns(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [
            cell + " " * (width - columns(cell)) for cell, width in zip(row, widths, strict=False)
        ]
        print("  ".join([*cells, row[-1]]).rstrip())
