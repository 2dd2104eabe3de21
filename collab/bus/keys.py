"""Where the cluster keeps things in Redis: one place that names every key and channel.

A document's history is one stream (``<prefix>doc:<doc_id>:log``) whose entry ids are
``0-<seq>``: the stream is both the document's durable log (the ``RedisStore``) and the
bus that carries each update to the other nodes (the ``RedisBus``), as in y-redis. Beside
it, a counter that never goes back (``:seq``, so sequence numbers are never reused, not even
after a deletion) and a hash holding the compacted snapshot (``:snap``). Every append also
goes to ``feed``, one stream for the whole cluster that each node reads to hear of every
document's updates with one read (ids ``0-<n>`` from the counter ``feed:seq``, so that a node
can tell it missed entries; capped at about ``FEED_LENGTH`` entries). ``docs`` is a sorted
set of every document id, for prefix listings; awareness travels on pub/sub channels
(``aw:<doc_id>``); each node keeps a key that expires when it stops renewing it, and beside
it a set of the branches it has open documents of (``open:<node>#<incarnation>``), renewed
and expiring with it; a node deleting a branch holds every node's opens of its documents
with ``held:<repo>/<branch>`` while it looks and deletes. ``gen`` holds a random token set
by the first node to find it missing: a Redis that lost its data (restarted with nothing
kept, or flushed) no longer holds the token the nodes remember.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_PREFIX", "FEED_LENGTH", "RedisKeys", "seq_of", "split_author"]

DEFAULT_PREFIX = "collab:"
FEED_LENGTH = 10_000
"""About how many entries the feed keeps: a node that falls further behind than this (a long
pause) catches up on each of its documents from its log instead."""


@dataclass(frozen=True, slots=True)
class RedisKeys:
    """The key names under one prefix (several clusters may share one Redis)."""

    prefix: str = DEFAULT_PREFIX

    def log(self, doc_id: str) -> str:
        return f"{self.prefix}doc:{doc_id}:log"

    def seq(self, doc_id: str) -> str:
        return f"{self.prefix}doc:{doc_id}:seq"

    def snapshot(self, doc_id: str) -> str:
        return f"{self.prefix}doc:{doc_id}:snap"

    @property
    def docs(self) -> str:
        return f"{self.prefix}docs"

    def awareness(self, doc_id: str) -> str:
        return f"{self.prefix}aw:{doc_id}"

    def node(self, node_id: str) -> str:
        return f"{self.prefix}node:{node_id}"

    @property
    def nodes(self) -> str:
        return f"{self.prefix}node:*"

    def open_branches(self, author: str) -> str:
        """The set of the branches (``repo/branch``) that the node process ``author``
        (``<node>#<incarnation>``) has open documents of; it expires with the node's key."""
        return f"{self.prefix}open:{author}"

    def opens_held(self, branch: str) -> str:
        """The hold on opening documents of ``branch`` (``repo/branch``): the node process
        (``<node>#<incarnation>``) deleting it, with a time to live (see
        ``Cluster.opens_held``)."""
        return f"{self.prefix}held:{branch}"

    def authors(self, branch: str) -> str:
        """The hash of the people who wrote to documents of ``branch`` (``repo/branch``)
        since their commit, a field per document and person (``<doc id>\\n<user>``) with
        the feed seq of their last append to it (see ``RedisStore.take_authors``)."""
        return f"{self.prefix}authored:{branch}"

    def old_authors(self, branch: str) -> str:
        """The set of the same people, as an older version kept it (a take moves them into
        :meth:`authors`)."""
        return f"{self.prefix}authors:{branch}"

    @property
    def feed(self) -> str:
        return f"{self.prefix}feed"

    @property
    def feed_seq(self) -> str:
        return f"{self.prefix}feed:seq"

    @property
    def generation(self) -> str:
        return f"{self.prefix}gen"

    def lease(self, name: str) -> str:
        """A lease's key (``collab.bus.redis_lease``): ``"<node> <token>"`` while held."""
        return f"{self.prefix}lease:{name}"

    def doc_of_log(self, key: str) -> str:
        return key[len(self.prefix) + len("doc:") : -len(":log")]


def seq_of(entry_id: bytes | str) -> int:
    """The sequence number of a log entry id ``0-<seq>``."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.partition("-")[2])


def split_author(author: str) -> tuple[str, str]:
    """The node id and incarnation of an entry's or a message's author (``<node>#<hex>``);
    an author without one (a node of an older version) is its node id alone."""
    node, sep, incarnation = author.rpartition("#")
    if not sep or not incarnation or not all(c in "0123456789abcdef" for c in incarnation):
        return author, ""
    return node, incarnation
