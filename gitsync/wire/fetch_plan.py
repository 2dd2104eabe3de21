"""What a fetch sends: the refs it may see, its wants checked, its shallow boundary, and the
objects of its pack, for :mod:`gitsync.wire.upload_pack` to answer in either protocol.

- :class:`FetchSession` opens one request's repository: the refs clients see (everything under
  ``refs/`` but the server's private ``refs/collab/``, and ``HEAD``), then the objects.
- :func:`wanted` checks that each want is reachable from a ref (:mod:`gitsync.wire.reachable`);
  :func:`fetchable` asks the same of one id, for whoever else takes ids from clients (a
  branch made from a commit).
- :func:`shallow_for` resolves ``deepen-not`` names and cuts the history
  (:mod:`gitsync.wire.shallow`).
- :func:`pack_for` chooses the objects (:mod:`gitsync.wire.object_walk`; a clone of everything from
  the cached reachable set) and returns the pack's pieces (:mod:`gitsync.packs.stream`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from dulwich.refs import Ref
from dulwich.repo import Repo

from ..objects.commits import head_target
from ..packs.source import BLOB, COMMIT, TAG, TREE, StoredObjects
from ..packs.stream import PackStats, pack_pieces
from . import reachable
from .object_filter import ObjectFilter, parse_filter
from .object_walk import History, limit_commits, list_objects, tree_closure
from .receive_pack import PRIVATE
from .shallow import ShallowError, ShallowInfo, ShallowRequest, shallow_info
from .upload_wire import FetchRequest, UploadError

__all__ = [
    "DWIM",
    "FetchSession",
    "Served",
    "fetchable",
    "object_filter",
    "pack_for",
    "shallow_for",
    "wanted",
]

DWIM = (b"%s", b"refs/%s", b"refs/tags/%s", b"refs/heads/%s", b"refs/remotes/%s")
"""Where ``deepen-not <name>`` looks for a ref, as git's ``expand_ref`` does."""
CLONE_KEY = "\0clone"
"""Added to a repository's key in :mod:`gitsync.wire.reachable` for the set of a clone of some of
its refs (``--single-branch``, or refs outside ``refs/heads`` and ``refs/tags``): the set of
all of them, which lazy fetches check against, stays cached beside it."""


@dataclass(slots=True)
class Served:
    """The refs clients see: ``refs`` (name -> id, with ``HEAD`` when it resolves),
    ``head`` (the ref ``HEAD`` names), ``peeled`` (name -> what a tag peels to)."""

    refs: dict[bytes, bytes] = field(default_factory=dict)
    head: bytes | None = None
    peeled: dict[bytes, bytes] = field(default_factory=dict)


class FetchSession:
    """One request's repository, objects and refs (closed with :meth:`close`)."""

    def __init__(self, repo_path: Path) -> None:
        self.key = os.path.abspath(str(repo_path))
        self.repo = Repo(str(repo_path))
        try:
            self.refs = self._read_refs()
            # (the objects are listed after the refs: everything the refs name is there)
            self.objects = StoredObjects(self.repo.object_store)
        except BaseException:
            self.repo.close()
            raise
        self.history = History(self.objects)
        self._peeled = False

    def _read_refs(self) -> Served:
        out = Served()
        for name, sha in self.repo.get_refs().items():
            if name.startswith(b"refs/") and not name.startswith(PRIVATE):
                out.refs[bytes(name)] = bytes(sha)
        head = head_target(self.repo)
        if head is not None:
            out.head = bytes(head)
            if out.head in out.refs:
                out.refs[b"HEAD"] = out.refs[out.head]
        else:  # a detached HEAD
            with contextlib.suppress(KeyError):
                out.refs[b"HEAD"] = bytes(self.repo.refs[Ref(b"HEAD")])
        return out

    def peel_refs(self) -> dict[bytes, bytes]:
        if not self._peeled:
            for name, sha in self.refs.refs.items():
                if self.objects.kind(sha) == TAG:
                    self.refs.peeled[name] = self.history.peel(sha)[0]
            self._peeled = True
        return self.refs.peeled

    def close(self) -> None:
        self.objects.close()
        self.repo.close()


def object_filter(request: FetchRequest) -> ObjectFilter | None:
    return None if request.filter_spec is None else parse_filter(request.filter_spec)


def wanted(session: FetchSession, request: FetchRequest) -> list[bytes]:
    """The ids wanted, ``want-ref``s resolved; each must be reachable from a ref."""
    refs = session.refs.refs
    wants = list(request.wants)
    for ref in request.want_refs:
        sha = refs.get(ref)
        if sha is None:
            raise UploadError(f"unknown ref {ref.decode('utf-8', 'replace')}")
        wants.append(sha)
    wants = list(dict.fromkeys(wants))
    tips = set(refs.values())
    others = [sha for sha in wants if sha not in tips]
    if others:
        reached = reachable.closure(session.history, session.key, tips)
        for sha in others:
            if sha not in reached:
                raise UploadError(f"upload-pack: not our ref {sha.decode('ascii')}")
    return wants


def fetchable(repo_path: Path, sha: bytes) -> bool:
    """Whether a ref that fetches see reaches the object ``sha``, as :func:`wanted` asks of a
    want: nothing that only a rewound branch, a deleted one or the server's private refs
    reach. Answered from the reachable set a fetch keeps (the same key: the same set)."""
    session = FetchSession(repo_path)
    try:
        tips = set(session.refs.refs.values())
        return sha in tips or sha in reachable.closure(session.history, session.key, tips)
    finally:
        session.close()


def shallow_for(session: FetchSession, request: FetchRequest, wants: list[bytes]) -> ShallowInfo:
    history = session.history
    commits = [sha for sha, kind, _ in (history.peel(w) for w in wants) if kind == COMMIT]
    not_commits: list[bytes] = []
    for name in request.deepen_not:
        found = {
            session.refs.refs[pattern % name]
            for pattern in DWIM
            if pattern % name in session.refs.refs
        }
        if len(found) > 1:
            raise ShallowError(
                f"git upload-pack: ambiguous deepen-not: {name.decode('utf-8', 'replace')}"
            )
        if not found:
            raise ShallowError(
                f"git upload-pack: deepen-not is not a ref: {name.decode('utf-8', 'replace')}"
            )
        sha, kind, _ = history.peel(found.pop())
        if kind == COMMIT:
            not_commits.append(sha)
    shallow_request = ShallowRequest(
        tuple(request.client_shallow),
        request.depth,
        request.deepen_relative,
        request.deepen_since,
        tuple(not_commits),
    )
    tips: list[bytes] = []
    if request.deepen_relative and request.client_shallow:
        peeled = (history.peel(sha) for sha in set(session.refs.refs.values()))
        tips = [sha for sha, kind, _ in peeled if kind == COMMIT]
    return shallow_info(history, commits, shallow_request, tips)


def pack_for(
    session: FetchSession,
    request: FetchRequest,
    wants: list[bytes],
    have_obj: list[bytes],
    shallow: ShallowInfo,
    object_filter: ObjectFilter | None,
    stats: PackStats | None,
) -> Iterator[bytes]:
    """The pack's pieces (the first is made before anything else is sent)."""
    history = session.history
    commits: list[bytes] = []
    tags: list[bytes] = []
    trees: list[bytes] = []
    blobs: list[bytes] = []
    for want in wants:
        sha, kind, chain = history.peel(want)
        tags += chain
        if kind == COMMIT:
            commits.append(sha)
        elif kind == TREE:
            trees.append(sha)
        elif kind == BLOB:
            blobs.append(sha)
    tips = set(session.refs.refs.values())
    client_has: set[bytes] = set()
    if (
        not have_obj
        and not shallow.grafts
        and not shallow.unshallow
        and tips.issuperset(wants)
        and (object_filter is None or not object_filter.tree_depth)
    ):
        # a clone: the refs' own values, nothing to leave out but the filter's
        key = session.key if tips == set(wants) else session.key + CLONE_KEY
        sent = _everything(session, key, wants, object_filter)
    else:
        unshallow = list(shallow.unshallow)
        interesting = commits + [p for sha in unshallow for p in history.commit(sha).parents]
        have_commits = []
        for sha in have_obj:
            peeled, kind, _ = history.peel(sha)
            if kind == COMMIT:
                have_commits.append(peeled)
        limited = limit_commits(
            history, interesting, have_commits + unshallow, grafts=shallow.grafts
        )
        tree_closure(
            history, (history.commit(sha).tree for sha in [*limited.edges, *unshallow]), client_has
        )
        have = set(client_has)
        listed = list_objects(
            history,
            limited.commits,
            have=have,
            trees=trees,
            blobs=blobs,
            object_filter=object_filter,
        )
        sent = [*dict.fromkeys(tags), *limited.commits, *listed.trees, *listed.blobs]
    if request.include_tag:
        sent += _included_tags(session, set(sent), set(have_obj))
    return pack_pieces(
        session.objects,
        sent,
        ofs_delta=request.ofs_delta,
        thin=request.thin_pack,
        client_has=client_has,
        stats=stats,
    )


def _everything(
    session: FetchSession, key: str, tips: Iterable[bytes], object_filter: ObjectFilter | None
) -> list[bytes]:
    """Every object ``tips`` reach (a clone), from the set cached under ``key``, less the
    filter's."""
    reached = reachable.closure(session.history, key, tips)
    sent = [*reached.tags, *reached.commits]
    if object_filter is None or object_filter.tree_depth is None:
        sent += reached.trees
        if object_filter is None:
            sent += reached.blobs
        elif object_filter.blob_limit:
            limit = object_filter.blob_limit
            size = session.objects.size
            sent += [sha for sha in reached.blobs if (size(sha) or 0) < limit]
    return sent


def _included_tags(session: FetchSession, sent: set[bytes], have: set[bytes]) -> list[bytes]:
    """Annotated tags (``include-tag``) whose object is sent, and which are not sent yet."""
    out: list[bytes] = []
    for name, target in session.peel_refs().items():
        if not name.startswith(b"refs/tags/") or target not in sent:
            continue
        _, _, chain = session.history.peel(session.refs.refs[name])
        out += [sha for sha in chain if sha not in sent and sha not in have]
    return list(dict.fromkeys(out))
