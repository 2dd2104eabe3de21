"""``collab branch ...`` and ``collab merge ...``: branch operations on a running server,
through its HTTP API (``POST /api/<op>``)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any

import aiohttp

__all__ = ["add_parsers", "run"]

TOKEN_ENV = "COLLAB_TOKEN"


def add_parsers(sub: Any) -> None:
    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--url", default="http://127.0.0.1:8765", help="the server")
        parser.add_argument("--token", help=f"access token (else ${TOKEN_ENV})")
        parser.add_argument("--user", help="dev mode only: who you are")
        parser.add_argument("--repo", default="demo")
        parser.add_argument("--json", action="store_true", help="print the raw JSON answer")

    branch = sub.add_parser("branch", help="list, join, create, fork, delete, commit branches")
    actions = branch.add_subparsers(dest="action", required=True)
    common(actions.add_parser("list", help="branches with heads and who is on them"))
    join = actions.add_parser("join", help="make sure you have your own branch")
    common(join)
    join.add_argument("--from", dest="source", help="branch to start from (default branch)")
    create = actions.add_parser("create", help="create a branch")
    common(create)
    create.add_argument("name")
    create.add_argument("--from", dest="source", help="branch to start from (default branch)")
    fork = actions.add_parser("fork", help="fork a branch at its live state")
    common(fork)
    fork.add_argument("source")
    fork.add_argument("name", nargs="?", help="default: <your branch>-fork-N")
    delete = actions.add_parser("delete", help="delete a branch")
    common(delete)
    delete.add_argument("name")
    commit = actions.add_parser("commit", help="commit a branch's live edits now")
    common(commit)
    commit.add_argument("name")

    merge = sub.add_parser("merge", help="merge SOURCE into TARGET (a preview unless --apply)")
    common(merge)
    merge.add_argument("source")
    merge.add_argument("target")
    merge.add_argument("--apply", action="store_true", help="perform the merge")
    merge.add_argument(
        "--markers", action="store_true", help="on conflict, write markers into the live files"
    )


def _call(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    if args.command == "merge":
        op = "merge.apply" if args.apply else "merge.preview"
        body: dict[str, Any] = {"repo": args.repo, "source": args.source, "target": args.target}
        if args.apply:
            body["markers"] = args.markers
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
    url = args.url.rstrip("/").replace("ws://", "http://").replace("wss://", "https://")
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}/api/{op}", json=body, headers=headers, params=params) as reply,
    ):
        return reply.status, await reply.json()


def run(args: argparse.Namespace) -> int:
    op, body = _call(args)
    try:
        status, answer = asyncio.run(_post(args, op, body))
    except (aiohttp.ClientError, OSError) as exc:
        print(f"collab: cannot reach {args.url}: {exc}", file=sys.stderr)
        return 2
    if status != 200:
        error = answer.get("error", {}) if isinstance(answer, dict) else {}
        print(
            f"collab: {error.get('name', status)}: {error.get('message', answer)}", file=sys.stderr
        )
        return 1
    value = answer["value"]
    if args.json:
        print(json.dumps(value, indent=2))
    else:
        _print(op, value)
    return 0


def _print(op: str, value: Any) -> None:
    if op == "branch.list":
        for branch in value:
            people = ", ".join(f"{p['user']} ({p['path']})" for p in branch["people"])
            mark = "*" if branch["mine"] else " "
            print(f"{mark} {branch['name']:40} {branch['head'][:12]}  {people}")
    elif op.startswith("merge."):
        state = "up to date" if value["up_to_date"] else f"{len(value['files'])} files"
        print(f"merge {value['source'][:12]} -> {value['target'][:12]}: {state}")
        for f in value["files"]:
            print(f"  {f['status']:9} {f['path']}")
            if f.get("diff"):
                print("    " + f["diff"].replace("\n", "\n    ").rstrip())
        if value["conflicts"]:
            print("conflicts: " + ", ".join(value["conflicts"]))
        if value.get("commit"):
            print(f"merge commit {value['commit']}")
    else:
        print(" ".join(f"{k}={v}" for k, v in value.items()))
