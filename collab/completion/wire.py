"""The ``/worker`` protocol between the engine and completion workers (sans-I/O).

One msgpack map per binary WebSocket message, with a string type ``t``:

- worker -> engine ``hello``: ``name``, ``model``, ``family``, ``capacity`` (jobs at once);
- engine -> worker ``welcome``;
- engine -> worker ``job``: ``id``, ``parts`` (``repo``, ``path``, ``prefix``, ``suffix``,
  ``context``: a list of ``[path, text]``, optionally ``start``: where the prefix starts in
  the document), ``max_tokens``, ``single_line``, and optionally
  ``cache`` (the typist: jobs with the same key reuse each other's prompt cache) and
  ``stream`` (true: send ``chunk`` messages while generating);
- engine -> worker ``cancel``: ``id`` (skip it if not started, stop generating if running);
- worker -> engine ``chunk``: ``id``, ``text`` (the next piece of a streaming job's text;
  the pieces put together begin the text of its ``done``);
- worker -> engine ``done``: ``id``, ``text``, ``queue_ms``, ``prompt_ms``, ``model_ms``,
  ``tokens``, ``model``, and optionally ``prompt_tokens`` and ``reused_tokens`` (of those,
  how many came from a prompt cache);
- worker -> engine ``failed``: ``id``, ``code`` (an ``ErrorCode``), ``message``.

The engine never sends a worker more jobs than its capacity; every job is answered by
exactly one ``done`` or ``failed`` (``CANCELLED`` for a cancelled job). A worker that has
not answered a ``cancel`` within ``pool.CANCEL_DEADLINE`` (10 s) is taken for hung: the
engine closes the connection with ``TIMEOUT`` (4504), and its other jobs go to other
workers where they may (see ``pool``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack

from protocol.errors import ErrorCode, ProtocolError
from protocol.messages import Limits, check_shape

from .executor import JobOutput, JobSpec
from .prompts import ContextFile, PromptParts

__all__ = [
    "CancelJob",
    "Chunk",
    "Done",
    "Failed",
    "Job",
    "WorkerHello",
    "WorkerMessage",
    "WorkerWelcome",
    "decode",
    "encode",
]

MAX_MESSAGE = 8 * 1024 * 1024  # the engine's own limit of a WebSocket message (max_message)
MAX_CAPACITY = 1024
"""The most jobs one worker may take at once."""
_LIMITS = Limits(max_message=MAX_MESSAGE, max_bin=MAX_MESSAGE)
"""The nesting, entries and values of a worker message are bounded as a client's are (a
prompt's context is a list of [path, text] pairs)."""


@dataclass(frozen=True, slots=True)
class WorkerHello:
    name: str
    model: str
    family: str
    capacity: int


@dataclass(frozen=True, slots=True)
class WorkerWelcome:
    pass


@dataclass(frozen=True, slots=True)
class Job:
    spec: JobSpec


@dataclass(frozen=True, slots=True)
class CancelJob:
    id: str


@dataclass(frozen=True, slots=True)
class Chunk:
    id: str
    text: str


@dataclass(frozen=True, slots=True)
class Done:
    id: str
    output: JobOutput


@dataclass(frozen=True, slots=True)
class Failed:
    id: str
    code: ErrorCode
    message: str


WorkerMessage = WorkerHello | WorkerWelcome | Job | CancelJob | Chunk | Done | Failed


def encode(message: WorkerMessage) -> bytes:
    body: dict[str, Any]
    match message:
        case WorkerHello(name, model, family, capacity):
            body = {"t": "hello", "name": name, "model": model, "family": family}
            body["capacity"] = capacity
        case WorkerWelcome():
            body = {"t": "welcome"}
        case Job(spec):
            parts = spec.parts
            body = {
                "t": "job",
                "id": spec.id,
                "parts": {
                    "repo": parts.repo,
                    "path": parts.path,
                    "prefix": parts.prefix,
                    "suffix": parts.suffix,
                    "context": [[c.path, c.text] for c in parts.context],
                    "start": parts.start,
                },
                "max_tokens": spec.max_tokens,
                "single_line": spec.single_line,
            }
            if spec.cache_key is not None:
                body["cache"] = spec.cache_key
            if spec.stream:
                body["stream"] = True
        case CancelJob(job_id):
            body = {"t": "cancel", "id": job_id}
        case Chunk(job_id, piece):
            body = {"t": "chunk", "id": job_id, "text": piece}
        case Done(job_id, out):
            body = {
                "t": "done",
                "id": job_id,
                "text": out.text,
                "queue_ms": out.queue_ms,
                "prompt_ms": out.prompt_ms,
                "model_ms": out.model_ms,
                "tokens": out.tokens,
                "model": out.model,
                "prompt_tokens": out.prompt_tokens,
                "reused_tokens": out.reused_tokens,
            }
        case Failed(job_id, code, text):
            body = {"t": "failed", "id": job_id, "code": int(code), "message": text}
    return msgpack.packb(body, use_bin_type=True)  # type: ignore[no-any-return]


def _bad(message: str) -> ProtocolError:
    return ProtocolError(ErrorCode.MALFORMED, message)


def _get(body: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = body.get(name)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, float)):
        raise _bad(f"worker message {body.get('t')!r}: bad field {name!r}")
    return value


def _optional(body: dict[str, Any], name: str, kind: type, default: Any) -> Any:
    return default if body.get(name) is None else _get(body, name, kind)


def _ms(body: dict[str, Any], name: str) -> float:
    return float(_get(body, name, (int, float)))


def _parts(value: Any) -> PromptParts:
    if not isinstance(value, dict):
        raise _bad("job parts must be a map")
    context = _get(value, "context", list)
    files = []
    for item in context:
        if not (
            isinstance(item, list) and len(item) == 2 and all(isinstance(x, str) for x in item)
        ):
            raise _bad("job context entries must be [path, text]")
        files.append(ContextFile(item[0], item[1]))
    return PromptParts(
        _get(value, "repo", str),
        _get(value, "path", str),
        _get(value, "prefix", str),
        _get(value, "suffix", str),
        tuple(files),
        _optional(value, "start", int, 0),
    )


def decode(data: bytes) -> WorkerMessage:
    """Decode one message; raise ``ProtocolError`` (MALFORMED) for anything else."""
    if len(data) > MAX_MESSAGE:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"worker message of {len(data)} bytes")
    check_shape(data, _LIMITS)  # before msgpack builds anything
    try:
        body = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            max_ext_len=0,
            max_array_len=_LIMITS.max_items,
            max_map_len=_LIMITS.max_items,
        )
    except Exception as exc:
        raise _bad(f"not a msgpack message: {exc}") from exc
    if not isinstance(body, dict):
        raise _bad("worker message is not a map")
    kind = body.get("t")
    if kind == "hello":
        capacity = _get(body, "capacity", int)
        if not 1 <= capacity <= MAX_CAPACITY:
            raise _bad(f"capacity must be 1 to {MAX_CAPACITY}")
        return WorkerHello(
            _get(body, "name", str), _get(body, "model", str), _get(body, "family", str), capacity
        )
    if kind == "welcome":
        return WorkerWelcome()
    if kind == "job":
        spec = JobSpec(
            _get(body, "id", str),
            _parts(body.get("parts")),
            _get(body, "max_tokens", int),
            _get(body, "single_line", bool),
            _optional(body, "cache", str, None),
            _optional(body, "stream", bool, False),
        )
        return Job(spec)
    if kind == "cancel":
        return CancelJob(_get(body, "id", str))
    if kind == "chunk":
        return Chunk(_get(body, "id", str), _get(body, "text", str))
    if kind == "done":
        output = JobOutput(
            text=_get(body, "text", str),
            queue_ms=_ms(body, "queue_ms"),
            prompt_ms=_ms(body, "prompt_ms"),
            model_ms=_ms(body, "model_ms"),
            tokens=_get(body, "tokens", int),
            model=_get(body, "model", str),
            prompt_tokens=_optional(body, "prompt_tokens", int, 0),
            reused_tokens=_optional(body, "reused_tokens", int, 0),
        )
        return Done(_get(body, "id", str), output)
    if kind == "failed":
        try:
            code = ErrorCode(_get(body, "code", int))
        except ValueError:
            code = ErrorCode.UNAVAILABLE
        return Failed(_get(body, "id", str), code, _get(body, "message", str))
    raise _bad(f"unknown worker message type {kind!r:.40}")
