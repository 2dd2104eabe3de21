"""The git smart HTTP protocol (v0/v1, stateless RPC) for ``git clone``, ``fetch`` and ``push``.

Synchronous functions for an HTTP handler to run in a thread; routing, authentication and
streaming stay with the caller:

- ``GET  <repo>/info/refs?service=<service>`` -> :func:`info_refs`
- ``POST <repo>/<service>``                   -> :func:`run_service`

``service`` is ``git-upload-pack`` (fetch, clone) or ``git-receive-pack`` (push). Request bodies
sent with ``Content-Encoding: gzip`` are passed as they came, with ``content_encoding="gzip"``;
:func:`run_service` decompresses them. Clients asking for protocol v2 get a v0 advertisement,
which every git client accepts.

The server's private refs (``refs/collab/``) are neither advertised nor writable. Pushes are
checked before any ref moves: refs outside ``refs/``, malformed names and branch names
``protocol.names`` refuses are refused, and so, by default, is any update that is not a
fast-forward. Each ref then moves by compare-and-swap from
the value the client saw, so a push never overwrites a commit it did not know about. Received
packs are fsynced before refs point into them. A fetch may want a commit that was a head when
it read the advertisement and has since been built on; it is served if a head still reaches it.
"""

from __future__ import annotations

import collections
import zlib
from collections.abc import Callable, Iterator, Sequence
from io import BytesIO
from pathlib import Path

from dulwich.errors import GitProtocolError
from dulwich.graph import can_fast_forward
from dulwich.objects import ZERO_SHA, Commit, ObjectID, Tag
from dulwich.protocol import CAPABILITY_ATOMIC, Protocol, ReceivableProtocol
from dulwich.refs import Ref, check_ref_format
from dulwich.repo import Repo
from dulwich.server import (
    Backend,
    BackendRepo,
    DictBackend,
    ReceivePackHandler,
    UploadPackHandler,
)

from protocol.errors import ProtocolError
from protocol.names import validate_branch

from .commits import HEADS, read_object
from .locks import RefLocked, call_past_stale_locks
from .packing import fsync_directory

__all__ = [
    "MAX_REQUEST",
    "SERVICES",
    "RefUpdate",
    "info_refs",
    "run_service",
]

SERVICES = ("git-upload-pack", "git-receive-pack")
MAX_REQUEST = 1 << 30
"""Largest request body accepted, after decompression (bytes)."""
PRIVATE = b"refs/collab/"

RefUpdate = tuple[bytes, bytes, bytes]
"""``(old, new, ref)``; an all-zero id means the ref did not exist, or was deleted."""


def _handler_class(
    service: str, allow_non_fast_forward: bool
) -> type[UploadPackHandler] | type[_ReceivePack]:
    if service == "git-upload-pack":
        return UploadPackHandler
    if service == "git-receive-pack":
        return _ReceivePack if not allow_non_fast_forward else _ReceivePackForcing
    raise ValueError(f"unknown git service {service!r}; expected one of {', '.join(SERVICES)}")


class _ServedRepo(Repo):
    """A repository as clients see it: without the server's private refs.

    ``reachable_wants`` are commits a fetch asks for that were branch heads when the client
    read the advertisement and have since been built on (a continuous commit lands between
    the two requests of a stateless fetch). They are listed as extra refs, so that dulwich,
    which accepts only current heads, serves them; git's upload-pack accepts any commit
    reachable from a head in stateless mode, and only those are listed.
    """

    reachable_wants: Sequence[ObjectID] = ()

    def get_refs(self) -> dict[Ref, ObjectID]:
        refs = super().get_refs()
        served = {name: sha for name, sha in refs.items() if not name.startswith(PRIVATE)}
        for sha in self.reachable_wants:
            served[Ref(_WANTED + sha)] = sha
        return served


def _open(repo_path: Path) -> _ServedRepo:
    repo = _ServedRepo(str(repo_path))
    repo.object_store.fsync_object_files = True
    return repo


def info_refs(repo_path: Path, service: str) -> tuple[bytes, str]:
    """The ref advertisement for ``GET info/refs?service=...``: (body, content type)."""
    handler_class = _handler_class(service, False)
    out = BytesIO()
    proto = ReceivableProtocol(BytesIO().read, out.write)
    repo = _open(repo_path)
    try:
        handler = handler_class(_backend(repo), ["/"], proto, True, advertise_refs=True)
        proto.write_pkt_line(b"# service=" + service.encode("ascii") + b"\n")
        proto.write_pkt_line(None)
        handler.handle()
    finally:
        repo.close()
    return out.getvalue(), f"application/x-{service}-advertisement"


def run_service(
    repo_path: Path,
    service: str,
    body: bytes,
    on_ref_update: Callable[[list[RefUpdate]], None] | None = None,
    *,
    content_encoding: str | None = None,
    allow_non_fast_forward: bool = False,
    max_request: int = MAX_REQUEST,
) -> tuple[bytes, str]:
    """Answer ``POST <service>`` with request ``body``: (response body, content type).

    ``content_encoding`` is the request's ``Content-Encoding`` header (``gzip`` or none).
    After a push, ``on_ref_update`` is called with the refs that moved, once they have moved
    and before the response is returned; its exceptions propagate. A malformed request
    raises ``ValueError`` (body) or ``dulwich.errors.GitProtocolError`` (git protocol).
    """
    handler_class = _handler_class(service, allow_non_fast_forward)
    data = _decode_body(body, content_encoding, max_request)
    out = BytesIO()
    proto = ReceivableProtocol(BytesIO(data).read, out.write)
    repo = _open(repo_path)
    try:
        if service == "git-upload-pack":
            repo.reachable_wants = _reachable_wants(repo, _wants(data))
        handler = handler_class(_backend(repo), ["/"], proto, stateless_rpc=True)
        handler.handle()
        updated = handler.updated if isinstance(handler, _ReceivePack) else []
    finally:
        repo.close()
    if updated and on_ref_update is not None:
        on_ref_update(updated)
    return out.getvalue(), f"application/x-{service}-result"


_WANTED = b"refs/collab-wanted/"


def _wants(data: bytes) -> list[ObjectID]:
    """The ids of the ``want`` lines at the start of an upload-pack request (malformed
    lines end the list; the request itself is refused by the handler)."""
    wants: list[ObjectID] = []
    proto = Protocol(BytesIO(data).read, lambda _data: None)
    try:
        for line in proto.read_pkt_seq():
            if not line.startswith(b"want "):
                break
            sha = line[5:45]
            if len(sha) == 40 and all(c in b"0123456789abcdef" for c in sha):
                wants.append(ObjectID(sha))
    except GitProtocolError:
        pass
    return wants


MAX_OLD_WANTS = 64
"""Wants that are not heads any more, looked for per request; more are refused."""
MAX_WALK = 2000
"""Commits walked back from the heads, all together, to find those wants."""


def _reachable_wants(repo: _ServedRepo, wants: Sequence[ObjectID]) -> list[ObjectID]:
    """Those of ``wants`` that are not heads but commits reachable from one, within
    :data:`MAX_WALK` commits of the heads: a fetch racing a commit wants a head's recent
    ancestor, and a bounded walk keeps a request from costing a walk of all history."""
    heads = set(repo.get_refs().values())
    todo = {want for want in dict.fromkeys(wants) if want not in heads}
    todo = set(list(todo)[:MAX_OLD_WANTS])
    found: list[ObjectID] = []
    queue = collections.deque(heads)
    seen: set[ObjectID] = set()
    while queue and todo and len(seen) < MAX_WALK:
        sha = queue.popleft()
        if sha in seen:
            continue
        seen.add(sha)
        try:
            obj = repo.object_store[sha]
        except KeyError:
            continue
        if isinstance(obj, Tag):
            queue.append(obj.object[1])
        elif isinstance(obj, Commit):
            if sha in todo:
                todo.discard(sha)
                found.append(sha)
            queue.extend(obj.parents)
    return found


def _decode_body(body: bytes, content_encoding: str | None, limit: int) -> bytes:
    encoding = (content_encoding or "identity").strip().lower()
    if encoding == "identity":
        data, more = body, False
    elif encoding in ("gzip", "x-gzip"):
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            data = inflater.decompress(body, limit + 1)
        except zlib.error as exc:
            raise ValueError(f"request body is not valid gzip: {exc}") from None
        more = bool(inflater.unconsumed_tail)
    else:
        raise ValueError(f"unsupported Content-Encoding {content_encoding!r}")
    if more or len(data) > limit:
        raise ValueError(f"request body over {limit} bytes")
    return data


def _backend(repo: Repo) -> Backend:
    repos: dict[str, BackendRepo] = {"/": repo}
    return DictBackend(repos)


class _ReceivePack(ReceivePackHandler):
    """receive-pack that checks every update and moves refs by compare-and-swap."""

    allow_non_fast_forward = False

    def __init__(
        self,
        backend: Backend,
        args: Sequence[str],
        proto: Protocol,
        stateless_rpc: bool = False,
        advertise_refs: bool = False,
    ) -> None:
        super().__init__(backend, args, proto, stateless_rpc, advertise_refs)
        self.updated: list[RefUpdate] = []

    def _apply_pack(
        self, refs: list[tuple[ObjectID, ObjectID, Ref]]
    ) -> Iterator[tuple[bytes, bytes]]:
        if any(new != ZERO_SHA for _, new, _ in refs):
            store = self.repo.object_store
            try:
                store.add_thin_pack(self.proto.read, getattr(self.proto, "recv", None))  # type: ignore[attr-defined]
                fsync_directory(str(store.pack_dir))  # type: ignore[attr-defined]
            except (OSError, ValueError, AssertionError, zlib.error) as exc:
                yield b"unpack", str(exc).replace("\n", " ").encode("utf-8", "replace")
                return
        yield b"unpack", b"ok"
        checked = [(old, new, ref, self._refusal(old, new, ref)) for old, new, ref in refs]
        atomic = self.has_capability(CAPABILITY_ATOMIC)
        if atomic and any(why for *_, why in checked):
            for _, _, ref, why in checked:
                yield ref, why or b"atomic push failed"
            return
        applied: list[tuple[ObjectID, ObjectID, Ref]] = []
        statuses: list[tuple[bytes, bytes]] = []
        for old, new, ref, why in checked:
            why = why or self._move(old, new, ref)
            if why is None:
                applied.append((old, new, ref))
            elif atomic:  # put back what moved, then fail them all
                for done_old, done_new, done_ref in reversed(applied):
                    self._move(done_new, done_old, done_ref)
                for _, _, other, _ in checked:
                    yield other, why if other == ref else b"atomic push failed"
                return
            statuses.append((ref, why or b"ok"))
        self.updated = [(bytes(old), bytes(new), bytes(ref)) for old, new, ref in applied]
        yield from statuses

    def _refusal(self, old: ObjectID, new: ObjectID, ref: Ref) -> bytes | None:
        """Why the update of ``ref`` from ``old`` to ``new`` is refused, or None."""
        if not ref.startswith(b"refs/") or not check_ref_format(ref):
            return b"funny refname"
        if ref.startswith(PRIVATE):
            return b"refs/collab/ is private to the server"
        if ref.startswith(HEADS):
            try:
                validate_branch(ref[len(HEADS) :].decode("utf-8"))
            except (UnicodeDecodeError, ProtocolError):
                return b"invalid branch name"
        if new == ZERO_SHA:
            return None
        try:
            obj = read_object(self.repo, new)  # type: ignore[arg-type]
        except KeyError:
            return b"missing object"
        if ref.startswith(HEADS) and not isinstance(obj, Commit):
            return b"not a commit"
        if old != ZERO_SHA and not self.allow_non_fast_forward:
            try:
                if not can_fast_forward(self.repo, old, new):  # type: ignore[arg-type]
                    return b"non-fast-forward"
            except KeyError:
                return b"non-fast-forward"
        return None

    def _move(self, old: ObjectID, new: ObjectID, ref: Ref) -> bytes | None:
        """Compare-and-swap ``ref`` from ``old`` to ``new``; the failure, or None."""
        refs = self.repo.refs

        def attempt() -> bool:
            if new == ZERO_SHA:
                return bool(refs.remove_if_equals(ref, old))
            if old == ZERO_SHA:
                return bool(refs.add_if_new(ref, new))
            return bool(refs.set_if_equals(ref, old, new))

        try:
            moved = call_past_stale_locks(attempt)
        except RefLocked:
            return b"failed to lock"
        except OSError as exc:
            return f"failed to update ref: {exc}".encode("utf-8", "replace")
        return None if moved else b"failed to update ref: it moved since it was fetched"


class _ReceivePackForcing(_ReceivePack):
    allow_non_fast_forward = True
