"""``RedisBus``: the nodes of a cluster hear each other through Redis.

Updates: every append also goes to one feed stream for the whole cluster (the same script
writes the document's log and the feed; see ``RedisStore``), whose entry ids ``0-<n>`` are
consecutive. A ``StreamTail`` keeps one blocking ``XREAD`` open on the feed alone, so a read
costs the same whatever the number of documents a node holds, and a busy feed is read in
batches; entries of documents the node does not watch are dropped. A document that starts
being watched (or must be caught up on) *joins*: its log is read from the watch's starting
point with ``XRANGE`` while feed entries for it are held, then both are delivered in seq
order, each once. Entries this node wrote itself move its cursor without being delivered.

A node that was cut off (Redis restarted or unreachable, a slow node) reads on from its feed
cursor when it is back: nothing is skipped and nothing is read twice. A feed that no longer
holds what the node missed (trimmed past its cursor, or lost with a Redis that kept nothing)
makes every watched document join again from its log. A Redis that lost its data is known by
the token in its ``gen`` key, read after every outage and at every beat: one the node did not
start with (the seqs of every document started again, perhaps already past the node's
cursors, so that nothing else shows it) makes every watched document's listener reload it
(``bus_gap``). One that came back with older data, token and all (a backup, or writes it had
not fsynced), is known by the feed's entry at the node's cursor, read after every outage:
another one than the node took there makes every watched document reload, as above. An
entry beyond a missing one in a document's log, or a snapshot past the cursor with nothing
after it, means the log was compacted past the cursor; a document whose seqs went back
behind the cursor (a Redis that kept nothing) no longer holds what was delivered: either way
the document's listener is told to reload (``bus_gap``). So is one whose feed entries' seqs
go back (a seq at or below one the feed, or a read of the log, already showed before it):
the document's keys were deleted or evicted, and its seqs started again. So is a listener
that fails on its updates, or one whose log holds an entry that cannot be read (that
document alone).

Awareness travels on pub/sub channels, one per document, all heard through one pattern
subscription; a message lost while a node is cut off is renewed by its client within
seconds, as y-protocols' awareness expects.

Liveness: each node renews a key with a short time to live; a node whose key is gone (it
stopped, or died and the key expired) is reported to every listener (``bus_node_gone``).
``healthy`` is false while Redis cannot be reached, ``registered`` until a beat has renewed
the node's key since (a Redis back without its data lacks it), and ``feed_behind`` says, at
each beat, how far behind the feed's head the node reads (``/metrics``). Beside its key,
each node keeps a set of the branches it has open documents of (``open_branches``;
``branch.delete`` is refused while any live node lists the branch): renewed with the key,
for as long, by the same script, it changes only by the branches opened and closed since
the last beat, and is written whole again when Redis may have lost it or come back with an
older one. It is named by the node's id and incarnation, so a process restarted under the
same id starts with a set of its own, and the readers look only at the set of the
incarnation a live key holds.

Incarnations: each process that serves as a node claims the node's id with a token of its own
(its *incarnation*), held in the node's key; the key is renewed only while it still holds
that token. A start that finds the id held by another incarnation waits for that key to
expire (a node killed and restarted at once, by systemd, say) and refuses to start
(``NodeIdTaken``) if it is renewed meanwhile: two live processes never serve as one node.
A node that finds its key taken by another incarnation while it runs (it was paused, or cut
off, for longer than the key lives) stops renewing it and tells ``on_displaced``. The log
entries, awareness messages and leases of a node carry its id and incarnation together
(``author``: ``<node id>#<incarnation>``), so that its own entries are the ones this very
process wrote; a node whose incarnation changed (killed and restarted within its key's time
to live) is reported gone, so that the cursors its previous process relayed go.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
import uuid
import zlib
from collections.abc import Callable, Iterable
from typing import Any, cast

from redis.asyncio import Redis
from redis.exceptions import RedisError

from collab.bus.bus import ASK_AWARENESS, BusListener, Watch
from collab.bus.keys import DEFAULT_PREFIX, RedisKeys, seq_of, split_author
from collab.bus.nodes import NodeIdTaken, read_nodes
from collab.bus.pubsub import RETRY_S, PubSub
from collab.bus.stream_tail import Entry, StreamTail

__all__ = ["RedisBus"]

log = logging.getLogger("collab.bus")

BLOCK_MS = 5_000
"""How long one read waits for news before it is sent again."""
READ_COUNT = 512
"""At most this many entries per read: a long backlog comes in pieces."""
NODE_TTL_MS = 3_000
"""A node whose key is not renewed for this long is gone."""
HEARTBEAT_S = 1.0
READ_GRACE_S = 2.0
"""A read unanswered this long after its block ends means Redis cannot be reached."""
CLAIM_POLL_S = 0.1
"""How often a starting node looks again at its id's key, held by another incarnation."""

# KEYS: the node's key, its set of open branches. ARGV: incarnation, value (JSON, with the
# incarnation), ttl ms, '1' to replace the set (else '0'), how many branches to add, the
# branches to add, then the branches to remove. Sets the key and changes the set, both given
# the ttl, unless another incarnation holds the key: then what the key holds (the set is left
# alone); else 1 if the set was missing before (it expired, or Redis lost it), 0 if not.
_CLAIM = """
local held = redis.call('GET', KEYS[1])
if held then
  local ok, about = pcall(cjson.decode, held)
  if not (ok and type(about) == 'table' and about['incarnation'] == ARGV[1]) then
    return held
  end
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
local missing = redis.call('EXISTS', KEYS[2]) == 0
if ARGV[4] == '1' then redis.call('DEL', KEYS[2]) end
local adds = tonumber(ARGV[5])
for i = 6, 5 + adds do redis.call('SADD', KEYS[2], ARGV[i]) end
for i = 6 + adds, #ARGV do redis.call('SREM', KEYS[2], ARGV[i]) end
redis.call('PEXPIRE', KEYS[2], ARGV[3])
if missing then return 1 end
return 0
"""

# KEYS: the node's key, its set of open branches. ARGV: incarnation. Deletes the key if this
# incarnation holds it, and the set (this incarnation's own).
_RELEASE = """
redis.call('DEL', KEYS[2])
local held = redis.call('GET', KEYS[1])
if not held then return 0 end
local ok, about = pcall(cjson.decode, held)
if ok and type(about) == 'table' and about['incarnation'] == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class _FeedWatch(Watch):
    __slots__ = ("floor_at", "floor_seq", "held", "stale")

    def __init__(self, cursor: int, listener: BusListener) -> None:
        super().__init__(cursor, listener)
        self.held: list[tuple[int, bytes, bytes]] | None = []
        """While the document joins (its log is being read): the feed's entries for it,
        as (seq, author node, update); ``None`` once it has joined."""
        self.stale = False
        """Set when the feed missed entries while the log was being read: what was read may
        predate them, so the log is read again."""
        self.floor_at = 0
        self.floor_seq = 0
        """A feed entry of the document after feed entry ``floor_at`` has a seq above
        ``floor_seq`` (the document's seqs and the feed's ids grow together, in one step),
        unless the document's log went back: its keys were deleted, or evicted."""


class RedisBus:
    """A ``Bus`` over one Redis (the same one as the nodes' ``RedisStore``)."""

    def __init__(
        self,
        url: str,
        node_id: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        block_ms: int = BLOCK_MS,
        node_ttl_ms: int = NODE_TTL_MS,
        heartbeat_s: float = HEARTBEAT_S,
        incarnation: str | None = None,
    ) -> None:
        self.url = url
        self.node_id = node_id
        self.keys = RedisKeys(prefix)
        self.incarnation = incarnation or secrets.token_hex(8)
        """This process's claim on ``node_id`` (held in the node's key)."""
        self.author = f"{node_id}#{self.incarnation}"
        """What this node's entries, awareness messages and leases carry (its store is made
        with it as its ``node_id``)."""
        self._own = self.author.encode()
        self.block_ms = block_ms
        self.node_ttl_ms = node_ttl_ms
        self.heartbeat_s = heartbeat_s
        self._watches: dict[str, _FeedWatch] = {}
        self._tail: StreamTail | None = None
        self._client: Redis | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._joins: set[asyncio.Task[None]] = set()
        self._feed_cursor = 0
        # the feed entry at the cursor, when the cursor was moved by taking it: the same
        # entry must be there when Redis is back (see _feed_rewritten)
        self._feed_mark: tuple[bytes, bytes, bytes, int] | None = None
        self._generation = b""  # the token of the Redis data this node has read
        self._resync = False
        # a read that outlasts its block by this much means Redis is stopped or cut off
        self._timeout = block_ms / 1000 + READ_GRACE_S
        self._awareness = PubSub(
            url,
            self._heard,
            pattern=self.keys.awareness("*"),
            name=f"bus-awareness-{node_id}",
            socket_timeout=self._timeout,
        )
        self._healthy = False
        self._running = False
        # the other nodes whose awareness the listeners may hold, each with the incarnation
        # that relayed it
        self._live: dict[str, str] = {}
        self._retired: dict[str, set[str]] = {}  # the incarnations replaced, by node
        self._departed: dict[str, str] = {}  # nodes reported gone, with their incarnation
        self.displaced = False
        """Set once another process took this node's id (see ``on_displaced``)."""
        self.on_displaced: list[Callable[[str], None]] = []
        """Called, with what happened, when another process took this node's id while it
        ran: this process must stop serving as this node."""
        self.describe: Callable[[], dict[str, object]] | None = None
        """What this node says of itself in its key (rooms, connections), for the others and
        for ``collab cluster status``."""
        self.open_branches: Callable[[], Iterable[str]] | None = None
        """The branches (``repo/branch``) this node has open documents of now: each beat
        adds to its set of them in Redis (``RedisKeys.open_branches``) the ones opened
        since the last, and removes the ones closed."""
        self._open_written: set[str] = set()  # what the set holds, as of the last beat
        # bumped whenever Redis may have lost the set or come back with an older one; the
        # set is written whole by a beat sent after, and the count then kept in _open_whole
        self._open_doubts = 0
        self._open_whole: int | None = None  # None: the set must be written whole
        self.redis_ms: float | None = None
        """The round trip of the last heartbeat, in milliseconds."""
        self.unhealthy_since: float | None = None
        """When Redis last became unreachable (monotonic clock), while it is."""
        self.beaten_at: float | None = None
        """When a beat last renewed this node's key (monotonic clock)."""
        self.feed_behind: int | None = None
        """How many entries of the cluster's feed this node had not read yet, as of its last
        beat (``None``: not known, while Redis cannot be reached)."""
        self.alive: list[str] | None = None
        """The nodes alive, as last read (``None``: not read yet)."""

    @property
    def healthy(self) -> bool:
        return self._healthy

    @property
    def registered(self) -> bool:
        """Whether this node's key is renewed (the other nodes count it alive): a beat
        renewed it less than the key's time to live ago. (A Redis that lost its data has
        lost the key too, until the next beat: read the keys to know.)"""
        beaten = self.beaten_at
        alive = beaten is not None and time.monotonic() - beaten < self.node_ttl_ms / 1000
        return alive and not self.displaced

    async def start(self) -> None:
        if self._running:
            return
        self._client = Redis.from_url(self.url, socket_timeout=self._timeout)
        self._open_written, self._open_whole = set(), None
        try:
            self._generation = await self._read_generation()
            self._feed_cursor = await self._feed_head()
            self._feed_mark = None
            self.feed_behind = 0  # (it reads on from the head)
            # healthy from its first beat on: its key says so (``collab cluster status``)
            self._healthy = True
            await self._claim()
            await self.nodes()
        except BaseException:  # not started: nothing is left open
            self._healthy = False
            await self._client.aclose()
            self._client = None
            raise
        self._running = True
        for doc_id, watch in self._watches.items():  # watched before the start
            self._join(doc_id, watch)
        await self._awareness.start()
        self._tasks = [
            asyncio.create_task(self._read_loop(), name=f"bus-read-{self.node_id}"),
            asyncio.create_task(self._heartbeat_loop(), name=f"bus-heartbeat-{self.node_id}"),
        ]

    async def stop(self) -> None:
        if not self._running:
            return
        self._running = False
        if self._tail is not None:
            self._tail.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, RedisError, OSError):
                await task
        self._tasks = []
        for join in list(self._joins):
            join.cancel()
        for join in list(self._joins):
            with contextlib.suppress(asyncio.CancelledError, RedisError, OSError):
                await join
        await self._awareness.stop()
        self._watches.clear()
        assert self._client is not None
        with contextlib.suppress(RedisError, OSError):  # its own keys only
            await self._client.eval(
                _RELEASE,
                2,
                self.keys.node(self.node_id),
                self.keys.open_branches(self.author),
                self.incarnation,
            )
        await self._client.aclose()
        self._client = None
        self._healthy = False
        self.beaten_at = self.feed_behind = None

    # -- watching -------------------------------------------------------------------------

    def watch(self, doc_id: str, after: int, listener: BusListener) -> None:
        watch = _FeedWatch(after, listener)
        self._watches[doc_id] = watch
        if self._running:
            self._join(doc_id, watch)

    def unwatch(self, doc_id: str) -> None:
        self._watches.pop(doc_id, None)

    def position(self, doc_id: str) -> int | None:
        watch = self._watches.get(doc_id)
        return None if watch is None else watch.cursor

    def _join(self, doc_id: str, watch: _FeedWatch) -> None:
        """Catch ``watch`` up from the document's log, holding the feed's entries meanwhile."""
        if watch.held is None:
            watch.held = []
        task = asyncio.create_task(self._read_log(doc_id, watch), name=f"bus-join-{doc_id}")
        self._joins.add(task)
        task.add_done_callback(self._joins.discard)

    async def _read_log(self, doc_id: str, watch: _FeedWatch) -> None:
        failures = 0
        while self._running and self._watches.get(doc_id) is watch and not watch.gapped:
            watch.stale = False
            try:
                entries, compacted, last, head = await self._log_after(doc_id, watch.cursor)
            except (RedisError, OSError):  # the read loop reports the outage
                await asyncio.sleep(RETRY_S[min(failures, len(RETRY_S) - 1)])
                failures += 1
                continue
            except Exception:
                # anything else would leave the feed's entries held for good, and the
                # document deaf to the other nodes: its listener loads it again instead
                log.exception("%s: reading the shared log failed: reloading", doc_id)
                self._gap(doc_id, watch)
                return
            if self._watches.get(doc_id) is not watch or watch.gapped:
                return
            if watch.stale:
                continue
            if head >= watch.floor_at:  # what the feed appends after the read comes after
                watch.floor_at, watch.floor_seq = head, last
            held, watch.held = watch.held or [], None
            try:
                logged = [(seq_of(entry_id), f.get(b"n", b""), f[b"u"]) for entry_id, f in entries]
            except (KeyError, ValueError) as exc:  # the store's load reports the damage
                log.error("%s: an entry of the shared log is damaged (%r): reloading", doc_id, exc)
                self._gap(doc_id, watch)
                return
            self._take(doc_id, watch, logged)
            if not watch.gapped and (compacted > watch.cursor or last < watch.cursor):
                # a log compacted to its end past the cursor (no entry after it shows the
                # hole), or one that went back (a Redis that kept nothing: the seqs start
                # again, and the updates to come would be taken for ones already delivered)
                self._gap(doc_id, watch)
            if not watch.gapped:
                self._take(doc_id, watch, held)
            return

    async def _log_after(self, doc_id: str, after: int) -> tuple[list[Any], int, int, int]:
        """The entries of the document's log after seq ``after``, read page by page; with the
        last page, as of one moment, the seq its snapshot covers, the last seq it gave
        (0: none) and the feed's last entry id."""
        assert self._client is not None
        entries: list[Any] = []
        start = f"0-{after + 1}"
        while True:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.xrange(self.keys.log(doc_id), start, "+", count=READ_COUNT)
                pipe.hget(self.keys.snapshot(doc_id), "seq")
                pipe.get(self.keys.seq(doc_id))
                pipe.get(self.keys.feed_seq)
                page, compacted, last, head = cast(
                    tuple[list[Any], bytes | None, bytes | None, bytes | None],
                    await pipe.execute(),
                )
            entries += page
            if len(page) < READ_COUNT:
                return entries, int(compacted or 0), int(last or 0), int(head or 0)
            start = f"0-{seq_of(page[-1][0]) + 1}"

    async def _feed_head(self) -> int:
        """The id of the feed's last entry (0: none yet)."""
        assert self._client is not None
        head = await self._client.get(self.keys.feed_seq)
        return int(head or 0)

    async def _read_generation(self) -> bytes:
        """The token of the data Redis holds, set here if there is none."""
        assert self._client is not None
        key = self.keys.generation
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.set(key, uuid.uuid4().hex, nx=True)
            pipe.get(key)
            _set, token = await pipe.execute()
        return cast(bytes, token)

    async def _data_lost(self) -> bool:
        """Whether Redis lost the data this node read (its token changed); if it did, every
        watched document is reported as a gap and the feed is read from its head on."""
        token = await self._read_generation()
        if token == self._generation:
            return False
        log.warning("Redis lost its data (restarted with nothing kept, or flushed): reloading")
        self._generation = token
        await self._reload_all()
        return True

    async def _feed_rewritten(self) -> bool:
        """Whether the feed holds another entry where this node's cursor is than the one it
        took there (Redis came back with older data and kept its token: an older snapshot,
        or writes it had not fsynced); if so, every watched document is reported as a gap
        and the feed is read from its head on. A feed trimmed past the cursor tells nothing:
        the documents then join again from their logs (see ``_take_feed``)."""
        mark, cursor = self._feed_mark, self._feed_cursor
        if mark is None:
            return False
        assert self._client is not None
        found = await self._client.xrange(self.keys.feed, f"0-{cursor}", f"0-{cursor}", count=1)
        if not found or cursor != self._feed_cursor:
            return False
        if _mark(cast(dict[bytes, bytes], found[0][1])) == mark:
            return False
        log.warning(
            "Redis holds older data than this node read (the feed was rewritten): reloading"
        )
        await self._reload_all()
        return True

    async def _reload_all(self) -> None:
        """Read the feed from its head on, every watched document reloaded (``bus_gap``)."""
        self._open_doubts += 1  # and this node's set of open branches written whole
        self._feed_cursor = await self._feed_head()
        self._feed_mark = None
        if self._tail is not None:  # its read under way asks from the old cursor
            self._tail.close()
        for doc_id, watch in list(self._watches.items()):
            if not watch.gapped:
                self._gap(doc_id, watch)

    def _gap(self, doc_id: str, watch: _FeedWatch, after: int | None = None) -> None:
        """Report that ``watch`` missed updates after seq ``after`` (by default its cursor):
        its listener reloads the document."""
        watch.gapped = True
        try:
            watch.listener.bus_gap(doc_id, watch.cursor if after is None else after)
        except Exception:
            log.exception("%s: the listener failed to take a gap", doc_id)

    async def _read_loop(self) -> None:
        """Keep a tail on the feed; after an outage, rejoin (``_rejoin``) and read on."""
        failures = 0
        while self._running:
            try:
                if self._resync:
                    await self._rejoin()
                tail = await StreamTail.open(
                    self.url,
                    self.keys.feed,
                    lambda: self._feed_cursor,
                    self._take_feed,
                    count=READ_COUNT,
                    block_ms=self.block_ms,
                    timeout=READ_GRACE_S,
                    name=f"collab-feed-{self.node_id}",
                )
                self._tail = tail
                failures = 0
                self._set_healthy(True)
                try:
                    await tail.closed
                finally:
                    tail.close()
                    self._tail = None
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                self._set_healthy(False, exc)
                self._resync = True
                await asyncio.sleep(RETRY_S[min(failures, len(RETRY_S) - 1)])
                failures += 1

    async def _rejoin(self) -> None:
        """Back after an outage: if the feed went back (a Redis that kept nothing), read on
        from its head, every watched document caught up from its log."""
        # Redis may have come back without this node's set of open branches, or with an older
        # one (a backup): the next beat writes it whole
        self._open_doubts += 1
        # lost: every document reloads, none rejoins
        if not await self._data_lost() and not await self._feed_rewritten():
            cursor = self._feed_cursor
            head = await self._feed_head()
            if head < cursor:
                log.warning("the cluster's feed went back (to %d): rejoining from the logs", head)
                self._feed_cursor = head
                self._feed_mark = None
                for watch in self._watches.values():  # its ids start again
                    watch.floor_at = watch.floor_seq = 0
                self._rejoin_all()
        self._resync = False

    def _rejoin_all(self) -> None:
        for doc_id, watch in list(self._watches.items()):
            if watch.gapped:
                continue
            if watch.held is None:
                self._join(doc_id, watch)
            else:  # joining: the log it is reading may predate what the feed missed
                watch.stale = True

    def _take_feed(self, entries: list[Entry]) -> None:
        """Deliver a batch of the feed, grouped by document (in seq order within each)."""
        if not entries:
            return
        first = seq_of(entries[0][0])
        if first != self._feed_cursor + 1:  # trimmed past the cursor: entries were missed
            log.warning("the cluster's feed was trimmed past this node's place: rejoining")
            self._rejoin_all()
        self._feed_cursor = seq_of(entries[-1][0])
        self._feed_mark = _mark(entries[-1][1])
        batches: dict[str, list[tuple[int, bytes, bytes]]] = {}
        watches = self._watches
        lost: set[str] = set()
        deleted: set[str] = set()
        for entry_id, fields in entries:
            doc_id = fields[b"d"].decode()
            watch = watches.get(doc_id)
            if watch is None:
                continue
            seq, at = int(fields[b"s"]), seq_of(entry_id)
            if seq == 0 and not fields.get(b"u"):  # the mark a deletion leaves (no update)
                deleted.add(doc_id)  # (its entries are not delivered: see below)
                continue
            if at > watch.floor_at:
                if seq <= watch.floor_seq:
                    lost.add(doc_id)
                watch.floor_at, watch.floor_seq = at, seq
            batches.setdefault(doc_id, []).append((seq, fields.get(b"n", b""), fields[b"u"]))
        for doc_id in deleted:
            watch = watches[doc_id]
            if not watch.gapped:
                watch.gapped = True  # (nothing more is delivered for it)
                try:
                    watch.listener.bus_deleted(doc_id)
                except Exception:
                    log.exception("%s: the listener failed to take a deletion", doc_id)
        for doc_id, batch in batches.items():
            if doc_id in deleted:
                continue
            watch = watches[doc_id]
            if doc_id in lost:
                if not watch.gapped:
                    self._lost_log(doc_id, watch)
                continue
            if watch.held is not None:
                watch.held += batch
            elif not watch.gapped:
                self._take(doc_id, watch, batch, from_feed=True)

    def _lost_log(self, doc_id: str, watch: _FeedWatch) -> None:
        """The document's seqs went back: its log lost what this node read (its keys were
        deleted, or evicted), and the updates appended since would be taken for ones already
        delivered. Its listener reloads it (``bus_gap``): a room writes its whole state back
        into the log first, so that every node's share of the history is there again."""
        log.warning(
            "%s: the shared log went back behind seq %d (its keys were deleted or evicted): "
            "writing this node's state back and reloading",
            doc_id,
            watch.cursor,
        )
        self._gap(doc_id, watch)

    def _take(
        self,
        doc_id: str,
        watch: _FeedWatch,
        entries: list[tuple[int, bytes, bytes]],
        *,
        from_feed: bool = False,
    ) -> None:
        """Deliver the entries after the cursor, in order. An entry beyond a missing one: in
        the log, it was compacted past the cursor (``bus_gap``); in the feed (which holds
        every entry), the document joins again to be sure."""
        own = self._own
        updates: list[tuple[int, bytes]] = []
        for seq, node, update in entries:
            if seq <= watch.cursor:
                continue
            if seq != watch.cursor + 1:
                if updates and not self._hand_on(doc_id, watch, updates):
                    return
                if from_feed:
                    self._join(doc_id, watch)
                    return
                self._gap(doc_id, watch)
                return
            watch.cursor = seq
            if node != own:
                updates.append((seq, update))
        if updates:
            self._hand_on(doc_id, watch, updates)

    def _hand_on(self, doc_id: str, watch: _FeedWatch, updates: list[tuple[int, bytes]]) -> bool:
        """Give ``updates`` to the watch's listener; one that fails on them reloads the
        document (a gap), and the other documents' deliveries go on. False if it failed."""
        try:
            watch.listener.bus_updates(doc_id, updates)
        except Exception:
            log.exception("%s: the listener failed on %d updates; reloading", doc_id, len(updates))
            self._gap(doc_id, watch, updates[0][0] - 1)  # they were not taken
            return False
        return True

    def _set_healthy(self, healthy: bool, exc: BaseException | None = None) -> None:
        if healthy == self._healthy:
            return
        self._healthy = healthy
        if healthy:
            log.info("Redis at %s is reachable again; reading on from each document", self.url)
            self.unhealthy_since = None
        else:
            log.warning("Redis at %s cannot be reached (%s); serving local peers", self.url, exc)
            self.unhealthy_since = time.monotonic()
            # not known until Redis answers again: it may have lost this node's key
            self.feed_behind = self.beaten_at = None

    # -- awareness ------------------------------------------------------------------------

    def publish_awareness(self, doc_id: str, payload: bytes) -> None:
        if not self._running or not self._healthy or self._client is None or self.displaced:
            return
        message = self._own + b"\0" + bytes(payload)
        self._awareness.publish(self.keys.awareness(doc_id), message)

    def _heard(self, channel: str, data: bytes) -> None:
        """An awareness message on ``channel``: its author (the sending node's id and
        incarnation), a NUL, the payload."""
        doc_id = channel[len(self.keys.awareness("")) :]
        author, _, payload = data.partition(b"\0")
        if author == self._own:
            return
        node_id, incarnation = split_author(author.decode())
        if node_id == self.node_id:
            # another process under this node's id (one this one displaced, or that
            # displaced it): its peers are not a remote node's, and this node's own id is
            # never reported gone to it, so their cursors would stay
            return
        if not self._note(node_id, incarnation):
            return  # a process that another one under its id replaced
        watch = self._watches.get(doc_id)
        if watch is not None:
            watch.listener.bus_awareness(doc_id, node_id, payload)

    def _note(self, node_id: str, incarnation: str) -> bool:
        """``node_id`` is alive as ``incarnation``: a node seen before as another one was
        restarted (within its key's time to live): its previous process is gone, and is
        not taken for alive again (a listing of the keys read before the restart, a message
        it sent before it died). False for such a process."""
        if node_id == self.node_id:
            return True
        retired = self._retired.setdefault(node_id, set())
        if incarnation in retired:
            return False
        known = self._live.get(node_id)
        self._live[node_id] = incarnation
        if known is not None and known != incarnation:
            retired.add(known)
            log.info("node %s was restarted: its previous process is gone", node_id)
            self._gone(node_id)
        elif known is None and self._departed.pop(node_id, None) == incarnation:
            # the same process, back (it was paused, or cut off): the cursors of its peers,
            # dropped when it went, are asked for again (else they came back only with
            # their clients' renewals, up to 15 s later)
            log.info("node %s is back", node_id)
            for doc_id in list(self._watches):
                self.publish_awareness(doc_id, ASK_AWARENESS)
        return True

    def _gone(self, node_id: str) -> None:
        for watch in list(self._watches.values()):
            try:
                watch.listener.bus_node_gone(node_id)
            except Exception:
                log.exception("a listener failed to take node %s gone", node_id)

    # -- liveness -------------------------------------------------------------------------

    async def _beat(self) -> bytes | None:
        """Renew this node's key, unless another incarnation holds it (then what it holds);
        its value describes the node (``collab cluster status``): what ``describe`` says,
        when, the round trip of the last beat, and this process's incarnation. With it, the
        set of the branches this node has open documents of (``open_branches``) is renewed
        for as long, the branches opened and closed since the last beat added and removed:
        a beat costs Redis the same whatever the number of branches open. A set that Redis
        lost meanwhile (restarted with nothing kept, or flushed) is written whole again."""
        assert self._client is not None
        about: dict[str, object] = {"at": time.time(), "redis_ms": self.redis_ms}
        if self.describe is not None:
            about.update(self.describe())
        about["incarnation"] = self.incarnation
        value = json.dumps(about).encode()
        now = set() if self.open_branches is None else set(self.open_branches())
        started = time.perf_counter()
        while True:
            doubts, written = self._open_doubts, self._open_written
            replace = self._open_whole != doubts
            adds = sorted(now) if replace else sorted(now - written)
            removes = [] if replace else sorted(written - now)
            try:
                held = await self._client.eval(
                    _CLAIM,
                    2,
                    self.keys.node(self.node_id),
                    self.keys.open_branches(self.author),
                    self.incarnation,
                    value,
                    self.node_ttl_ms,
                    "1" if replace else "0",
                    len(adds),
                    *adds,
                    *removes,
                )
            except BaseException:
                self._open_whole = None  # what Redis did, if anything, is not known
                raise
            if isinstance(held, bytes):  # another incarnation's key: the set is untouched
                break
            self._open_written = now
            if replace:
                self._open_whole = doubts
            elif held and written:
                # it held branches, and was gone: Redis lost it (or it lapsed, this process
                # paused): what this beat added is all it holds
                log.warning(
                    "this node's set of open branches was gone from Redis (Redis lost its "
                    "data, or this node was paused): writing it whole again"
                )
                self._open_whole = None
                continue
            held = None
            self.beaten_at = time.monotonic()
            break
        self.redis_ms = round((time.perf_counter() - started) * 1000, 2)
        return cast(bytes | None, held)

    async def _claim(self) -> None:
        """Take this node's id: at once if no other process holds it; else once its key
        expires (its process died: a restart at once), waiting at most the key's time to
        live. ``NodeIdTaken`` if another process renews it meanwhile."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.node_ttl_ms / 1000 + 2 * CLAIM_POLL_S
        first: bytes | None = None
        while True:
            held = await self._beat()
            if held is None:
                return
            if first is None:
                first = held
                log.info(
                    "node id %s is held by another process; waiting up to %.1f s for its key "
                    "to expire",
                    self.node_id,
                    self.node_ttl_ms / 1000,
                )
            elif held != first or loop.time() >= deadline:
                raise NodeIdTaken(
                    f"node id {self.node_id!r} is in use by another running node (its key "
                    f"{self.keys.node(self.node_id)} is renewed by another process): give "
                    "each node its own --node-id, or leave it out (host, process id and "
                    "random characters)"
                )
            await asyncio.sleep(CLAIM_POLL_S)

    def _displace(self, held: bytes) -> None:
        """Another process took this node's id: stop renewing it, and say so."""
        self.displaced = True
        about: object = None
        with contextlib.suppress(ValueError):
            about = json.loads(held)
        other = about.get("incarnation") if isinstance(about, dict) else None
        reason = (
            f"another process (incarnation {other}) took node id {self.node_id!r} while "
            f"this one ({self.incarnation}) ran: this node's key lapsed (the process was "
            f"paused, or cut off from Redis, for more than {self.node_ttl_ms / 1000:g} s); "
            f"this process stops serving as {self.node_id!r}"
        )
        log.error("%s", reason)
        for hook in self.on_displaced:
            try:
                hook(reason)
            except Exception:
                log.exception("a hook on this node being displaced failed")

    async def nodes(self) -> list[str]:
        """The nodes alive now. Each one seen is known from then on, so that the next beat
        that misses it reports it gone, even if it came and went between two beats (seen
        only by a ``/healthz``, say); one seen with another incarnation than before was
        restarted, and its previous process is reported gone."""
        assert self._client is not None
        found = await read_nodes(self._client, self.keys)
        for node_id, about in found.items():
            self._note(node_id, str(about.get("incarnation", "")))
        self.alive = sorted(found)
        return self.alive

    async def _heartbeat_loop(self) -> None:
        while self._running and not self.displaced:
            await asyncio.sleep(self.heartbeat_s)
            try:
                held = await self._beat()
                if held is not None:
                    self._displace(held)
                    return
                alive = set(await self.nodes())
                await self._look_at_feed()
            except (RedisError, OSError):
                self.feed_behind = None
                continue  # the read loop reports the outage
            for gone in sorted(set(self._live) - alive):
                log.info("node %s is gone", gone)
                self._departed[gone] = self._live.pop(gone)
                self._gone(gone)

    async def _look_at_feed(self) -> None:
        """At a beat: whether Redis lost its data, or the feed went back (then it is read
        again from its head); how far behind the feed's head this node reads."""
        cursor = self._feed_cursor  # before the head is read: the tail moves it
        if await self._data_lost():
            self.feed_behind = None
            return
        head = await self._feed_head()
        if head < cursor:
            self.feed_behind = None
            self._resync = True  # the feed went back: read again from its head
            if self._tail is not None:
                self._tail.close()
            return
        self.feed_behind = head - cursor


def _mark(fields: dict[bytes, bytes]) -> tuple[bytes, bytes, bytes, int]:
    """What tells a feed entry from another at the same place: its document, seq, node and
    a checksum of its update (the same node may append to the same document at that seq
    again, once Redis forgot the first time)."""
    update = fields.get(b"u", b"")
    return fields.get(b"d", b""), fields.get(b"s", b""), fields.get(b"n", b""), zlib.crc32(update)
