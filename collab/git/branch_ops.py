"""Branch, merge and event operations, registered on the server's operation registry.

Each is reachable as ``Call(op=...)`` on ``/ws`` and as ``POST /api/<op>`` over HTTP:

=================  ==========================================  ==============================
operation          arguments                                   value
=================  ==========================================  ==============================
branch.list        repo                                        list of branches
branch.join        repo, from?                                 the caller's own branch
branch.create      repo, name, from?                           the new branch
branch.fork        repo, source, name?                         the new branch
branch.delete      repo, name                                  the deleted branch
branch.commit      repo, branch                                the head after committing
merge.preview      repo, source, target                        files, diffs, conflicts
merge.apply        repo, source, target, markers?, no_ff?,     the same, and the commit
                   source_head?, target_head?
events.subscribe   repo                                        (events follow, ``/ws`` only)
events.unsubscribe repo
=================  ==========================================  ==============================
"""

from __future__ import annotations

from typing import Any

from protocol.errors import ErrorCode, ProtocolError

from ..live.events import EventHub
from ..server.ops import CallContext, Operations, arg_bool, arg_opt_str, arg_str
from .branches import Branches
from .merges import Merges

__all__ = ["register_git_ops"]

MERGE_APPLY_ARGS = ("repo", "source", "target", "markers", "no_ff", "source_head", "target_head")


def register_git_ops(ops: Operations, branches: Branches, merges: Merges, events: EventHub) -> None:
    async def branch_list(ctx: CallContext, args: dict[str, Any]) -> Any:
        return await branches.list_branches(ctx.identity, arg_str(args, "repo"))

    async def branch_join(ctx: CallContext, args: dict[str, Any]) -> Any:
        return await branches.join(ctx.identity, arg_str(args, "repo"), arg_opt_str(args, "from"))

    async def branch_create(ctx: CallContext, args: dict[str, Any]) -> Any:
        return await branches.create(
            ctx.identity, arg_str(args, "repo"), arg_str(args, "name"), arg_opt_str(args, "from")
        )

    async def branch_fork(ctx: CallContext, args: dict[str, Any]) -> Any:
        return await branches.fork(
            ctx.identity, arg_str(args, "repo"), arg_str(args, "source"), arg_opt_str(args, "name")
        )

    async def branch_delete(ctx: CallContext, args: dict[str, Any]) -> Any:
        return await branches.delete(ctx.identity, arg_str(args, "repo"), arg_str(args, "name"))

    async def branch_commit(ctx: CallContext, args: dict[str, Any]) -> Any:
        return await branches.commit(ctx.identity, arg_str(args, "repo"), arg_str(args, "branch"))

    async def merge_preview(ctx: CallContext, args: dict[str, Any]) -> Any:
        return await merges.preview(
            ctx.identity, arg_str(args, "repo"), arg_str(args, "source"), arg_str(args, "target")
        )

    async def merge_apply(ctx: CallContext, args: dict[str, Any]) -> Any:
        return await merges.apply(
            ctx.identity,
            arg_str(args, "repo"),
            arg_str(args, "source"),
            arg_str(args, "target"),
            markers=arg_bool(args, "markers", False),
            no_ff=arg_bool(args, "no_ff", False),
            source_head=arg_opt_str(args, "source_head"),
            target_head=arg_opt_str(args, "target_head"),
        )

    async def subscribe(ctx: CallContext, args: dict[str, Any]) -> Any:
        repo = branches.check_read(ctx.identity, arg_str(args, "repo"))
        send = ctx.send_event
        if send is None:
            raise ProtocolError(ErrorCode.MALFORMED, "events need a /ws connection")
        key = ("events", repo)
        subscriptions = _subscriptions(ctx)
        if key not in subscriptions:
            unsubscribe = events.subscribe(repo, lambda r, event: send(f"repo:{r}", event))
            subscriptions[key] = unsubscribe
            ctx.on_close.append(unsubscribe)
        return {"topic": f"repo:{repo}"}

    async def unsubscribe(ctx: CallContext, args: dict[str, Any]) -> Any:
        repo = arg_str(args, "repo")
        unsubscribe = _subscriptions(ctx).pop(("events", repo), None)
        if unsubscribe is not None:
            unsubscribe()
        return {"topic": f"repo:{repo}"}

    for name, (handler, takes) in {
        "branch.list": (branch_list, ("repo",)),
        "branch.join": (branch_join, ("repo", "from")),
        "branch.create": (branch_create, ("repo", "name", "from")),
        "branch.fork": (branch_fork, ("repo", "source", "name")),
        "branch.delete": (branch_delete, ("repo", "name")),
        "branch.commit": (branch_commit, ("repo", "branch")),
        "merge.preview": (merge_preview, ("repo", "source", "target")),
        "merge.apply": (merge_apply, MERGE_APPLY_ARGS),
        "events.subscribe": (subscribe, ("repo",)),
        "events.unsubscribe": (unsubscribe, ("repo",)),
    }.items():
        ops.register(name, handler, takes)


def _subscriptions(ctx: CallContext) -> dict[tuple[str, str], Any]:
    subs: dict[tuple[str, str], Any] = ctx.state.setdefault("subscriptions", {})
    return subs
