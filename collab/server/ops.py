"""Named operations (branches, merges, completions...) callable over ``/ws`` and HTTP.

One handler serves both transports: ``Call(id, op, args)`` on ``/ws`` and
``POST /api/<op>`` with a JSON object body on HTTP. A handler receives the caller's context
and its arguments (already a ``dict``), checks them with the ``arg_*`` helpers, and returns a
msgpack- and JSON-encodable value or raises ``ProtocolError`` with a code.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import Any, TypeVar

from gitsync import BranchDamaged, RepoNotFound
from gitsync.fence import FenceBusy, Fenced
from protocol.errors import ErrorCode, ProtocolError

from ..bus.lease import LeaseLost
from .auth import Identity

__all__ = [
    "CallContext",
    "Handler",
    "Operations",
    "arg_bool",
    "arg_int",
    "arg_opt_str",
    "arg_str",
    "check_args",
]

log = logging.getLogger("collab.ops")

T = TypeVar("T")


@dataclass(slots=True)
class CallContext:
    """Who is calling, and through which connection.

    ``connection`` is a per-connection object (a ``/ws`` session) for calls that need one,
    such as subscriptions and cancel-on-disconnect; it is ``None`` for HTTP calls.
    ``on_close`` callbacks run when that connection closes; ``state`` lives as long as it.
    """

    identity: Identity
    connection: object | None = None
    on_close: list[Callable[[], None]] = field(default_factory=list)
    send_event: Callable[[str, dict[str, Any]], None] | None = None
    state: dict[str, Any] = field(default_factory=dict)  # per connection, for handlers


Handler = Callable[[CallContext, dict[str, Any]], Awaitable[Any]]


class Operations:
    """The registry of named operations, each with the names of the arguments it takes: a
    call with any other (a misspelt ``no_ff`` would otherwise be a fast-forward) is refused
    with ``MALFORMED`` before its handler runs."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}
        self._args: dict[str, frozenset[str]] = {}

    def register(self, name: str, handler: Handler, args: Collection[str] = ()) -> None:
        if name in self._handlers:
            raise ValueError(f"operation {name!r} is already registered")
        self._handlers[name] = handler
        self._args[name] = frozenset(args)

    def names(self) -> list[str]:
        return sorted(self._handlers)

    async def call(self, ctx: CallContext, name: str, args: dict[str, Any]) -> Any:
        """Run ``name``; raise ``ProtocolError`` (NOT_FOUND for an unknown operation)."""
        handler = self._handlers.get(name)
        if handler is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"unknown operation {name!r:.80}")
        check_args(name, args, self._args[name])
        try:
            return await handler(ctx, args)
        except ProtocolError:
            raise
        except RepoNotFound as exc:
            repo = exc.args[0] if exc.args else "?"
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no repository {repo!r:.200}") from None
        except BranchDamaged as exc:  # listed in /healthz too
            raise ProtocolError(ErrorCode.DAMAGED, str(exc)) from None
        except (FenceBusy, Fenced, LeaseLost) as exc:
            # in a cluster, another node took the branch's git work over (this one was held
            # up past its lease), or holds it up (stopped in the middle of a ref move): as
            # when another node keeps the branch's lease, the caller tries again
            log.warning("operation %s: %s", name, exc)
            raise ProtocolError(ErrorCode.CONFLICT, f"{name}: {exc}; try again") from None
        except Exception as exc:
            log.exception("operation %s failed", name)
            raise ProtocolError(ErrorCode.INTERNAL, f"{name} failed: {exc}") from exc


def check_args(op: str, args: dict[str, Any], known: Collection[str]) -> None:
    """Refuse (``MALFORMED``) arguments ``op`` does not take, naming those it does."""
    unknown = sorted(str(name) for name in args if name not in known)
    if unknown:
        takes = f"it takes {', '.join(sorted(known))}" if known else "it takes none"
        raise ProtocolError(
            ErrorCode.MALFORMED,
            f"unknown argument{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(repr(name[:40]) for name in unknown[:5])} for {op} ({takes})",
        )


def _arg(args: dict[str, Any], name: str, kind: type[T], default: T | None, what: str) -> T:
    value = args.get(name, default)
    if value is None:
        raise ProtocolError(ErrorCode.MALFORMED, f"argument {name!r} is required")
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ProtocolError(ErrorCode.MALFORMED, f"argument {name!r} must be {what}")
    return value


def arg_str(args: dict[str, Any], name: str, default: str | None = None) -> str:
    return _arg(args, name, str, default, "a string")


def arg_opt_str(args: dict[str, Any], name: str) -> str | None:
    if args.get(name) is None:
        return None
    return arg_str(args, name)


def arg_int(args: dict[str, Any], name: str, default: int | None = None) -> int:
    return _arg(args, name, int, default, "an integer")


def arg_bool(args: dict[str, Any], name: str, default: bool | None = None) -> bool:
    return _arg(args, name, bool, default, "a boolean")
