"""``collab status`` and ``collab log``: what a running server serves, and a branch's recent
commits, through its HTTP API (``server.status``, ``branch.log``)."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Any

from .branch_commands import add_server_options, call, plural, table
from .terminal import one_line

__all__ = ["add_parsers", "run"]


def add_parsers(sub: Any) -> None:
    status = sub.add_parser(
        "status",
        help="what a running server serves: repositories, branches, people, documents",
        description="The server, and each repository you may read: its branches with their "
        "heads, last commits and who is on them; the live documents and connections.",
    )
    add_server_options(status)
    status.add_argument("--repo", help="only this repository")
    log = sub.add_parser(
        "log",
        help="a branch's recent commits, with authors and co-authors",
        description="A branch's recent commits, newest first, as the server has them (its "
        "pending live edits are committed first).",
    )
    add_server_options(log)
    log.add_argument("repo", help="the repository")
    log.add_argument("branch", nargs="?", help="the branch (default: the repository's default)")
    log.add_argument("-n", "--limit", type=int, default=20, help="how many commits (default 20)")


def run(args: argparse.Namespace) -> int:
    if args.command == "status":
        body: dict[str, Any] = {} if args.repo is None else {"repo": args.repo}
        op = "server.status"
    else:
        body = {"repo": args.repo, "limit": args.limit}
        if args.branch:
            body["branch"] = args.branch
        op = "branch.log"
    status, value = call(args, op, body)
    if status:
        return status
    if args.json:
        print(json.dumps(value, indent=2))
    elif op == "server.status":
        _print_status(args.url, value)
    else:
        _print_log(value)
    return 0


def ago(seconds: float) -> str:
    """``seconds`` in the past, as a person says it: ``just now``, ``5 min ago``..."""
    if seconds < 10:
        return "just now"
    if seconds < 60:
        return f"{int(seconds)} s ago"
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    if seconds < 2 * 86400:
        return f"{int(seconds // 3600)} h ago"
    return f"{int(seconds // 86400)} days ago"


def _who(author: str) -> str:
    """The name of ``Name <email>``."""
    return author.split(" <", 1)[0]


def _print_status(url: str, value: dict[str, Any]) -> None:
    server = value["server"]
    connections = server["connections"]
    mode = "dev mode (no secret, loopback only)" if server["dev_mode"] else "tokens required"
    print(f"server       {url}: collab-engine {server['version']}, {mode}")
    print(f"             up {_uptime(server['uptime'])}, store {server['store']}")
    links = ", ".join(f"{count} {endpoint}" for endpoint, count in connections.items())
    print(f"connections  {links}")
    print(f"documents    {plural(server['rooms'], 'live document')}", end="")
    problems = []
    if server["damaged"]:
        problems.append(f"{server['damaged']} quarantined")
    if server["held"]:
        problems.append(f"{server['held']} with commits held")
    print(f" ({', '.join(problems)})" if problems else "")
    now = server["time"]
    for repo in value["repositories"]:
        branches = repo["branches"]
        print()
        count = plural(len(branches), "branch", "branches")
        print(f"repository {repo['name']}: {count}, default {repo['default_branch']}")
        rows = [("BRANCH", "HEAD", "LAST COMMIT", "PEOPLE (FILE)")]
        for branch in branches:
            commit = branch["last_commit"]
            subject = one_line(commit["subject"])
            last = f"{ago(now - commit['time'])} by {one_line(_who(commit['author']))}: {subject}"
            people = ", ".join(f"{p['user']} ({one_line(p['path'])})" for p in branch["people"])
            rows.append((branch["name"], branch["head"][:12], last, people or "-"))
        table(rows)
    if value["rooms"]:
        print()
        docs = [("LIVE DOCUMENT", "PEOPLE")]
        for room in value["rooms"]:
            docs.append(
                (one_line(room["doc"]), ", ".join(room["users"]) or "- (unloads when idle)")
            )
        table(docs)


def _uptime(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds // 60:.0f} min"
    return f"{seconds // 3600:.0f} h {seconds % 3600 // 60:02.0f} min"


def _print_log(value: dict[str, Any]) -> None:
    commits = value["commits"]
    where = f"{value['repo']}/{value['branch']} at {value['head'][:12]}"
    print(f"{where}: {plural(len(commits), 'commit')}, newest first")
    for commit in commits:
        when = datetime.fromtimestamp(commit["time"], UTC).strftime("%Y-%m-%d %H:%M UTC")
        merge = "  (merge)" if len(commit["parents"]) > 1 else ""
        who, subject = one_line(_who(commit["author"])), one_line(commit["subject"])
        print(f"{commit['commit'][:12]}  {when}  {who}: {subject}{merge}")
        if commit["co_authors"]:
            names = ", ".join(_who(co) for co in commit["co_authors"])
            print(f"{'':12}  {'':20}  with {names}")
