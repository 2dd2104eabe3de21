"""A push, received: every object checked before it enters the repository, every ref checked
before it moves, and each ref moved by compare-and-swap.

1. The commands are read (:mod:`gitsync.wire.push_wire`).
2. The pack is taken into a quarantine, an object store of its own in a fresh directory under
   ``objects/`` that reads the repository's objects as an alternate (thin packs delta against
   them): dulwich's ``add_thin_pack`` indexes and completes it there.
3. Every object of the pack is checked as ``git fsck --strict`` would (:mod:`gitsync.objects.fsck`),
   and every reference from one to another must reach an object of the right type, in the
   pack or in the repository; no tree may have more than 4096 trees nested below it, those
   the repository holds counted (git's ``core.maxTreeDepth``, :mod:`gitsync.objects.tree_depth`).
   One failure refuses the whole push; the quarantine is removed and the repository never held
   any of it.
4. Each command is checked: one the caller says its sender may not update is refused with the
   caller's reason; then a ref under ``refs/``, well-formed, not private (``refs/collab/``),
   a valid branch name under ``refs/heads/`` (``protocol.names``), a commit for a branch, the
   ref still where the client saw it (else ``fetch first``), a fast-forward unless the caller
   lets the sender force that ref (else ``non-fast-forward``, with the caller's reason), and
   never the deletion of the default branch (the target of ``HEAD``). Each refused command has
   its own reason, and the others go on (as git's receive-pack); with ``atomic``, one refusal
   refuses all.
5. If any command is accepted, the pack moves into ``objects/pack`` (pack first, index last,
   then the directory is fsynced); each ref then moves by compare-and-swap from the value the
   client saw, so a push never overwrites a commit it did not know about.

A push from a shallow clone names its shallow commits; it is taken like any other, since every
object its pack refers to must already be here (step 3): this server's history is complete.

All of it is this module's code on dulwich's public pieces (an object store's
``add_thin_pack``, pack iteration, refs' ``set_if_equals``, ``add_if_new`` and
``remove_if_equals``), so no upgrade of dulwich can skip a check.
"""

from __future__ import annotations

import collections
import logging
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, cast

from dulwich.graph import can_fast_forward
from dulwich.object_store import DiskObjectStore
from dulwich.objects import ObjectID, parse_tree
from dulwich.pack import Pack, UnpackedObjectIterator
from dulwich.refs import Ref, check_ref_format
from dulwich.repo import BaseRepo, ParentsProvider, Repo

from protocol.errors import ProtocolError
from protocol.names import validate_branch

from ..locks import RefLocked, call_past_stale_locks
from ..objects.commits import HEADS, head_target, read_ref
from ..objects.fsck import BLOB, COMMIT, FsckError, ObjectChecker
from ..objects.ref_names import new_ref_problem
from ..objects.stored_types import StoredTypes
from ..objects.tree_depth import MAX_TREE_DEPTH, too_deep
from ..packs.write import fsync_directory
from .pack_bounds import PackRefused, check_pack_bounds
from .push_wire import ZERO, Command, PushRequest, advertisement, read_request, report

__all__ = [
    "FETCH_FIRST",
    "PRIVATE",
    "ForceCheck",
    "Received",
    "receive_pack",
    "receive_pack_advertisement",
    "served_refs",
]

log = logging.getLogger("gitsync.receive_pack")

PRIVATE = b"refs/collab/"
QUARANTINE_PREFIX = "incoming-"
QUARANTINE_STALE_AFTER = 6 * 3600.0
MAX_OBJECT = 100 * 1024 * 1024
"""The largest object a push may hold, in bytes, expanded (a delta: its result)."""
MAX_EXPANDED = 4 * 1024 * 1024 * 1024
"""The most bytes a push's objects may expand to, all together."""
"""Seconds after which a quarantine directory is taken to be left by a crash and removed (a
push holds its quarantine only while its pack is indexed and checked)."""
ATOMIC_FAILED = "atomic push failed"
DUPLICATE_REF = "more than one command for this ref in one push"
FETCH_FIRST = "fetch first: the branch moved on since it was fetched"
NON_FAST_FORWARD = "non-fast-forward"

RefUpdate = tuple[bytes, bytes, bytes]
ForceCheck = Callable[[bytes], str | None]
"""Given a ref, None if the sender may force it (move it to a commit that does not descend from
its value), else why not."""


@dataclass(frozen=True, slots=True)
class Received:
    """What a push did: the response body, and the refs that moved ``(old, new, ref)``."""

    response: bytes
    moved: list[RefUpdate]


def served_refs(repo: Repo) -> dict[bytes, bytes]:
    """The refs a client sees: those under ``refs/``, except the server's private ones."""
    return {
        bytes(name): bytes(sha)
        for name, sha in repo.get_refs().items()
        if name.startswith(b"refs/") and not name.startswith(PRIVATE)
    }


def receive_pack_advertisement(repo: Repo) -> bytes:
    """The ref advertisement for ``git-receive-pack`` (without the ``# service`` header)."""
    return advertisement(served_refs(repo))


def receive_pack(
    repo: Repo,
    body: IO[bytes],
    *,
    allow_non_fast_forward: bool = False,
    may_force: ForceCheck | None = None,
    may_delete: ForceCheck | None = None,
    may_update: ForceCheck | None = None,
    fsck_accept: frozenset[str] = frozenset(),
    max_object: int = MAX_OBJECT,
    max_expanded: int = MAX_EXPANDED,
) -> Received:
    """Answer a push whose request is ``body``; refusals are reported to the client, a
    request that breaks the protocol raises ``push_wire.MalformedPush`` (a ``ValueError``).
    A ref may be moved to a commit that does not descend from it if ``allow_non_fast_forward``
    (every ref) or ``may_force`` allows it (see :data:`ForceCheck`); it may be deleted unless
    ``may_delete`` says why not (the default branch never); it is not updated at all (created,
    moved or deleted) if ``may_update`` says why not. Objects are checked as git's
    ``receive.fsckObjects`` checks them, but for the identity-line problems (see
    ``fsck.IDENT_PROBLEMS``) named in ``fsck_accept``. A pack whose objects, expanded, would
    pass ``max_object`` bytes each or ``max_expanded`` in all is refused unread."""
    request = read_request(body.read)
    if request is None:
        return Received(b"", [])
    if may_force is None:
        may_force = _always if allow_non_fast_forward else _never
    with _Quarantine(repo) as quarantine:
        if request.needs_pack:
            try:
                quarantine.receive(body, fsck_accept, max_object, max_expanded)
            except FsckError as exc:
                why = f"{exc.msg_id}: {exc.message}"
                return Received(report(request, str(exc), [why] * len(request.commands)), [])
            except _BadPack as exc:
                why = "unpacker error"
                return Received(report(request, str(exc), [why] * len(request.commands)), [])
            except _TooDeep as exc:  # every object is fine, but no git could walk them
                return Received(report(request, None, [str(exc)] * len(request.commands)), [])
        return _update_refs(
            repo,
            request,
            quarantine,
            _RefRules(may_force, may_delete or _always, may_update or _always),
        )


def _always(_ref: bytes) -> str | None:
    return None


def _never(_ref: bytes) -> str | None:
    return ""


@dataclass(frozen=True, slots=True)
class _RefRules:
    """The caller's say on each ref: may it be forced, deleted, updated at all."""

    may_force: ForceCheck
    may_delete: ForceCheck
    may_update: ForceCheck


def _update_refs(
    repo: Repo, request: PushRequest, quarantine: _Quarantine, rules: _RefRules
) -> Received:
    checks = _RefChecks(repo, quarantine.store, rules)
    named = collections.Counter(command.ref for command in request.commands)
    statuses: list[str | None] = [
        DUPLICATE_REF if named[command.ref] > 1 else checks.refusal(command)
        for command in request.commands
    ]
    atomic = b"atomic" in request.capabilities
    if atomic and any(statuses):
        statuses = [why or ATOMIC_FAILED for why in statuses]
    if all(statuses):
        return Received(report(request, None, statuses), [])
    quarantine.migrate()
    moved: list[Command] = []
    for i, command in enumerate(request.commands):
        if statuses[i] is not None:
            continue
        why = _move(repo, command.old, command.new, command.ref)
        if why is None:
            moved.append(command)
            continue
        statuses[i] = why
        if atomic:  # put back what moved, then fail them all
            for done in reversed(moved):
                _move(repo, done.new, done.old, done.ref)
            moved = []
            statuses = [other or ATOMIC_FAILED for other in statuses]
            break
    updates = [(command.old, command.new, command.ref) for command in moved]
    return Received(report(request, None, statuses), updates)


class _BadPack(Exception):
    """The pack could not be read, indexed or completed."""


class _TooDeep(Exception):
    """The pack holds a tree nested deeper than git takes (``tree_depth``)."""

    def __init__(self, tree: bytes) -> None:
        super().__init__(
            f"tree {tree.hex()} nests more than {MAX_TREE_DEPTH} trees deep "
            "(git's core.maxTreeDepth): no git could check it out"
        )


class _Quarantine:
    """A pack held apart from the repository until everything in it is checked."""

    def __init__(self, repo: Repo) -> None:
        self.target = repo.object_store
        objects = os.path.abspath(self.target.path)
        _remove_stale_quarantines(objects)
        self.path = tempfile.mkdtemp(prefix=QUARANTINE_PREFIX, dir=objects)
        os.mkdir(os.path.join(self.path, "pack"))
        self.store = DiskObjectStore(
            self.path,
            alternates=[objects],
            fsync_object_files=True,
            object_format=self.target.object_format,
        )
        self.pack: Pack | None = None

    def __enter__(self) -> _Quarantine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.store.close()
        shutil.rmtree(self.path, ignore_errors=True)

    def receive(
        self,
        body: IO[bytes],
        accept: frozenset[str] = frozenset(),
        max_object: int = MAX_OBJECT,
        max_total: int = MAX_EXPANDED,
    ) -> None:
        """Take the pack that ``body`` holds next and check every object in it (problems
        of identity lines whose message ids are in ``accept`` let through). A pack with an
        object over ``max_object`` bytes, expanded, or objects over ``max_total`` in all, is
        refused before anything of it is expanded (see ``pack_bounds``)."""
        start = body.tell()
        try:
            check_pack_bounds(body, max_object=max_object, max_total=max_total)
        except PackRefused as exc:
            log.info("refused a pack: %s", exc)
            raise _BadPack(str(exc)) from None
        body.seek(start)
        try:
            self.pack = self.store.add_thin_pack(body.read, None)
        except Exception as exc:  # whatever dulwich raises for a pack it cannot take
            log.info("refused a pack: %r", exc)
            raise _BadPack(str(exc) or type(exc).__name__) from None
        checker = ObjectChecker(accept)
        objects = UnpackedObjectIterator.for_pack_data(
            self.pack.data, resolve_ext_ref=self.store.get_raw
        )
        for unpacked in objects:
            kind = unpacked.obj_type_num
            assert kind is not None and unpacked.obj_chunks is not None
            raw = b"" if kind == BLOB else b"".join(unpacked.obj_chunks)
            checker.check(kind, unpacked.sha(), raw)
        with StoredTypes(self.target) as stored:
            checker.finish(stored.type_of, self._read_blob)
        pushed = checker.subtrees
        deep = too_deep(
            pushed, lambda tree: pushed[tree] if tree in pushed else self._subtrees(tree)
        )
        if deep is not None:
            log.info("refused a pack: %s", _TooDeep(deep))
            raise _TooDeep(deep)

    def _subtrees(self, oid: bytes) -> list[bytes]:
        """The trees directly in stored tree ``oid`` (binary ids)."""
        _kind, raw = self.store.get_raw(ObjectID(oid.hex().encode("ascii")))
        return [
            bytes.fromhex(sha.decode())
            for _, mode, sha in parse_tree(raw, 20)
            if mode == stat.S_IFDIR
        ]

    def _read_blob(self, oid: bytes) -> bytes | None:
        try:
            kind, raw = self.store.get_raw(ObjectID(oid.hex().encode("ascii")))
        except KeyError:
            return None
        return raw if kind == BLOB else None

    def migrate(self) -> None:
        """Move the pack into the repository: the pack, then its index (a pack is visible
        only with its index), then make the renames durable."""
        if self.pack is None or len(self.pack) == 0:
            return
        self.store.close()
        source = os.path.join(self.path, "pack")
        target = str(self.target.pack_dir)
        for name in sorted(os.listdir(source)):
            stem, _, ext = name.rpartition(".")
            if ext != "pack" or not os.path.exists(os.path.join(source, stem + ".idx")):
                continue
            if os.path.exists(os.path.join(target, stem + ".idx")):
                continue  # the same objects, already there
            for suffix in (".pack", ".idx"):
                os.replace(os.path.join(source, stem + suffix), os.path.join(target, stem + suffix))
        fsync_directory(target)


def _remove_stale_quarantines(objects: str) -> None:
    now = time.time()
    for name in os.listdir(objects):
        if not name.startswith(QUARANTINE_PREFIX):
            continue
        path = os.path.join(objects, name)
        try:
            stale = now - os.stat(path).st_mtime > QUARANTINE_STALE_AFTER
        except FileNotFoundError:
            continue
        if stale:
            log.warning("removing %s, left by a push that did not finish", path)
            shutil.rmtree(path, ignore_errors=True)


class _History:
    """What dulwich's ``can_fast_forward`` reads of a repository: its objects and parents."""

    def __init__(self, store: DiskObjectStore) -> None:
        self.object_store = store

    def parents_provider(self) -> ParentsProvider:
        return ParentsProvider(self.object_store)


class _RefChecks:
    """Why a command may not be done (None: it may), with the quarantine's objects visible."""

    def __init__(self, repo: Repo, store: DiskObjectStore, rules: _RefRules) -> None:
        self.repo = repo
        self.store = store
        self.may_force = rules.may_force
        self.may_delete = rules.may_delete
        self.may_update = rules.may_update
        self.default = head_target(repo)

    def refusal(self, command: Command) -> str | None:
        old, new, ref = command.old, command.new, command.ref
        why = self.may_update(ref)
        if why is not None:
            return why
        # as git's receive-pack: below refs/, a name of two levels at least (refs/foo is
        # one level, which git's own refs do not take either)
        if not ref.startswith(b"refs/") or not check_ref_format(Ref(ref[len(b"refs/") :])):
            return "funny refname"
        if ref.startswith(PRIVATE):
            return "refs/collab/ is private to the server"
        if ref.startswith(HEADS):
            try:
                validate_branch(ref[len(HEADS) :].decode("utf-8"))
            except (UnicodeDecodeError, ProtocolError):
                return "invalid branch name"
        if command.deletes:
            if ref == self.default:
                return "the default branch (HEAD) may not be deleted"
            why = self.may_delete(ref)
            return why if why is not None else self._stale(old, ref)
        try:
            kind, _ = self.store.get_raw(ObjectID(new))
        except KeyError:
            return "missing object"
        if ref.startswith(HEADS) and kind != COMMIT:
            return "not a commit"
        stale = self._stale(old, ref)
        if stale is not None:
            return stale
        if old == ZERO:
            return new_ref_problem(self.repo.refs, ref)
        if not self._fast_forward(old, new):
            why = self.may_force(ref)
            if why is not None:
                return f"{NON_FAST_FORWARD}: {why}" if why else NON_FAST_FORWARD
        return None

    def _stale(self, old: bytes, ref: bytes) -> str | None:
        """Why a command whose ref is no longer at ``old`` is refused (None: it is there)."""
        current = read_ref(self.repo, ref)
        if old == ZERO:
            return None if current is None else "fetch first: the ref was created since"
        if current is None:
            return "fetch first: the ref was deleted since it was fetched"
        return None if current == old else FETCH_FIRST

    def _fast_forward(self, old: bytes, new: bytes) -> bool:
        history = cast(BaseRepo, _History(self.store))
        try:
            return bool(can_fast_forward(history, ObjectID(old), ObjectID(new)))
        except (KeyError, AssertionError, ValueError):
            return False  # old is not a commit we have: not an ancestor we can show


def _move(repo: Repo, old: bytes, new: bytes, ref: bytes) -> str | None:
    """Compare-and-swap ``ref`` from ``old`` to ``new``; the failure, or None."""
    refs = repo.refs
    name, old_id, new_id = Ref(ref), ObjectID(old), ObjectID(new)

    def attempt() -> bool:
        if new == ZERO:
            return bool(refs.remove_if_equals(name, old_id))
        if old == ZERO:
            return bool(refs.add_if_new(name, new_id))
        return bool(refs.set_if_equals(name, old_id, new_id))

    if old == ZERO and new != ZERO:  # (a ref this push made before it may be in the way)
        problem = new_ref_problem(refs, ref)
        if problem is not None:
            return problem
    try:
        moved = call_past_stale_locks(attempt)
    except RefLocked:
        return "failed to lock"
    except OSError as exc:
        return f"failed to update ref: {exc}"
    return None if moved else "failed to update ref: it moved since it was fetched"
