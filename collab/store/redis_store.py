"""``RedisStore``: the ``Store`` that several server processes share, kept in Redis.

Each document's updates are entries of one Redis stream (ids ``0-<seq>``; see
``collab.bus.keys``), copied in the same step to the cluster's feed, which the other nodes
read as their bus; its compacted state is a snapshot beside it, and a compaction trims the
stream behind the snapshot in the same step.
Every operation is one Lua script, so each is atomic against every node. Each is sent with
its script (``EVAL``), not by digest: Redis compiles a script once and finds it again by its
text, and a Redis that forgot its scripts (restarted, or ``SCRIPT FLUSH``) has nothing to
refuse, so no operation of a batch is refused while the ones after it run.

Order: operations are queued in the order they are called and sent by one writer task, a
batch per round trip (a pipeline), so appends are written in the order they were made and a
``sync`` or ``load`` sees everything queued before it.

Failures: a write that Redis refuses (out of memory, say: ``maxmemory`` with
``noeviction``), or that cannot reach it for ``outage_limit`` seconds, fails, and
``write_failure`` says why until writes succeed again (one that adds to what Redis holds: an
append, say; after an unreachable Redis, its next answer), as the SQLite store's does;
``write_errors`` counts them.

Durability: an append is done once Redis has answered it. With ``appendonly yes`` and
``appendfsync always`` Redis answers a write only after its append-only file is fsynced, so
an acknowledged update survives a crash of Redis as well as of every node; ``start`` reads
the two settings and logs a warning when they promise less (``durable_config``), and one
when Redis may evict keys (``maxmemory-policy`` other than ``noeviction``: an evicted key is
lost data).
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, cast

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from collab.bus.keys import DEFAULT_PREFIX, FEED_LENGTH, RedisKeys, seq_of
from collab.bus.resp import RespPipe, command, open_resp
from collab.lifecycle import Lifecycle
from collab.store.base import BehindSnapshot, CorruptRecord, Fence, FenceLost, StoredDoc

__all__ = ["WRITE_TIMEOUT", "RedisStore"]

WRITE_TIMEOUT = 5.0
"""Seconds an answer from Redis may take before the store counts it as unreachable."""

log = logging.getLogger("collab.store")

# KEYS: log, seq, docs, feed, feed seq, snapshot, (a lease,) authors. ARGV: update, node,
# doc id, crc, feed length, (a holder,) author (empty: none); each list's last, the hash of
# the document's branch's authors (a field per document and author, ``<doc id>\n<author>``,
# marked with the feed seq of their last append to it) and the author, marked anew. A
# counter behind the log's end (its key alone was deleted, or evicted) is set past it: the
# seqs go on from the log's; one at or behind the snapshot's seq (the log and the counter
# lost, the snapshot kept) goes on from the snapshot's, since a seq it covers would be taken
# for one compacted into it.
# An entry the log refuses otherwise leaves the counter as it was.
_APPEND = """
local n = redis.call('INCR', KEYS[2])
local snap = tonumber(redis.call('HGET', KEYS[6], 'seq') or '0')
if n <= snap then
  n = snap + 1
  redis.call('SET', KEYS[2], n)
end
local added = redis.pcall('XADD', KEYS[1], '0-' .. n, 'u', ARGV[1], 'n', ARGV[2], 'c', ARGV[4])
if type(added) == 'table' and added.err then
  local last = nil
  local ok, info = pcall(redis.call, 'XINFO', 'STREAM', KEYS[1])
  if ok then
    for i = 1, #info, 2 do
      if info[i] == 'last-generated-id' then
        last = tonumber(string.match(info[i + 1], '%-(%d+)$'))
      end
    end
  end
  if last == nil or last < n then
    redis.call('DECR', KEYS[2])
    return added
  end
  n = last + 1
  redis.call('SET', KEYS[2], n)
  redis.call('XADD', KEYS[1], '0-' .. n, 'u', ARGV[1], 'n', ARGV[2], 'c', ARGV[4])
end
redis.call('ZADD', KEYS[3], 0, ARGV[3])
local f = redis.call('INCR', KEYS[5])
if ARGV[#ARGV] ~= '' then
  redis.call('HSET', KEYS[#KEYS], ARGV[3] .. '\\n' .. ARGV[#ARGV], f)
end
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[5], '0-' .. f,
  'd', ARGV[3], 's', n, 'n', ARGV[2], 'u', ARGV[1])
return n
"""

# The same under a lease: KEYS then the lease's key, ARGV then its holder ("node token").
_APPEND_FENCED = (
    """
if redis.call('GET', KEYS[7]) ~= ARGV[6] then
  return redis.error_reply('fence: the lease ' .. KEYS[7] .. ' is no longer ' .. ARGV[6])
end
"""
    + _APPEND
)

# KEYS: log, seq, snapshot, docs. ARGV: snapshot, through seq, doc id.
_COMPACT = """
local through = tonumber(ARGV[2])
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
if through < 0 then
  return redis.error_reply('through_seq ' .. through .. ' is negative')
end
if through > last then
  return redis.error_reply('through_seq ' .. through .. ' is past the last seq ' .. last)
end
local current = redis.call('HGET', KEYS[3], 'seq')
if current and through < tonumber(current) then
  return redis.error_reply('through_seq ' .. through ..
    ' is behind the current snapshot at seq ' .. current)
end
redis.call('HSET', KEYS[3], 'seq', through, 'data', ARGV[1])
redis.call('XTRIM', KEYS[1], 'MINID', '0-' .. (through + 1))
redis.call('ZADD', KEYS[4], 0, ARGV[3])
return 1
"""

# KEYS: a branch's authors, the set of an older version. The fields and their marks, the
# older set's members joining them first (of no document in particular: ``\n<author>``,
# marked 0).
_TAKE_AUTHORS = """
for _, user in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  redis.call('HSETNX', KEYS[1], '\\n' .. user, 0)
end
redis.call('DEL', KEYS[2])
return redis.call('HGETALL', KEYS[1])
"""

# KEYS: a branch's authors. ARGV: pairs of a field and the mark a take gave. Each field
# still marked so is forgotten; one marked anew (an append since the take) is kept.
_SETTLE_AUTHORS = """
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
return 1
"""

# KEYS: log, snapshot. The snapshot and the entries after it, read as of one moment.
_LOAD = """
local snap = redis.call('HMGET', KEYS[2], 'seq', 'data', 'recovered')
local entries = redis.call('XRANGE', KEYS[1], '-', '+')
return {snap, entries}
"""

# KEYS: log, snapshot, docs, feed, feed seq, the branch's authors. ARGV: doc id, node, feed
# length. Who wrote to the document goes with it. The seq
# counter stays: seqs are never reused. A feed entry of seq 0 (no update) tells the nodes
# that hold the document (a deletion that raced an open on another node) that its seqs went
# back: they write their whole state into the log again (see RedisBus._lost_log).
_DELETE = """
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[1])
local prefix = ARGV[1] .. '\\n'
for _, field in ipairs(redis.call('HKEYS', KEYS[6])) do
  if string.sub(field, 1, #prefix) == prefix then
    redis.call('HDEL', KEYS[6], field)
  end
end
local f = redis.call('INCR', KEYS[5])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[3], '0-' .. f,
  'd', ARGV[1], 's', 0, 'n', ARGV[2], 'u', '')
return 1
"""

_WRITES = frozenset(
    {"append", "append_fenced", "compact", "delete", "take_authors", "settle_authors", "clear"}
)
"""The operations that write (``write_failure``, ``write_errors``); the others read."""
_ADDS = frozenset({"append", "append_fenced", "compact"})
"""The writes that add to what Redis holds first: one that succeeds shows that writes succeed
again (Redis out of memory still runs a script that takes something away first)."""

_SCRIPTS = {
    "append": _APPEND,
    "append_fenced": _APPEND_FENCED,
    "compact": _COMPACT,
    "load": _LOAD,
    "delete": _DELETE,
    "take_authors": _TAKE_AUTHORS,
    "settle_authors": _SETTLE_AUTHORS,
}


@dataclass(slots=True)
class _Op:
    """One queued operation: the script's name, its keys and arguments, and what to do with
    its reply."""

    script: str
    keys: list[str]
    args: list[Any]
    done: asyncio.Future[Any]
    finish: Callable[[Any], Any] = lambda reply: reply


class RedisStore(Lifecycle):
    """A ``Store`` in Redis, shared by every node of a cluster.

    ``node_id`` tags each appended entry, so that a node's bus can tell its own updates from
    the others'. Operations are sent on a connection of the store's own (``RespPipe``);
    ``client`` (made from ``url`` unless given) reads Redis's settings.
    """

    def __init__(
        self,
        url: str,
        *,
        node_id: str = "",
        prefix: str = DEFAULT_PREFIX,
        client: Redis | None = None,
        outage_limit: float = 60.0,
        feed_length: int = FEED_LENGTH,
    ) -> None:
        self.url = url
        self.outage_limit = outage_limit
        """Seconds a write waits for an unreachable Redis before it fails."""
        self.feed_length = feed_length
        """About how many entries the cluster's feed keeps (see ``collab.bus.keys``)."""
        self.reachable = True
        self.on_unreachable: list[Callable[[], None]] = []
        """Called when Redis stops answering (the rooms then serve their peers unwritten
        updates: see ``Room.serve_unwritten``)."""
        self.node_id = node_id
        self.keys_ = RedisKeys(prefix)
        self._client = client
        self._own_client = client is None
        self._pipe: RespPipe | None = None  # the writes' connection, opened when needed
        self._queue: list[_Op] = []
        self._wake: asyncio.Event | None = None
        self._writer: asyncio.Task[None] | None = None
        self._running = False
        # branch -> what a take gave: (path, user) -> its field and mark (path "": of no
        # document)
        self._taken: dict[str, dict[tuple[str, str], tuple[bytes, bytes]]] = {}
        self.durable_config: bool | None = None
        """Whether Redis fsyncs its append-only file before it answers a write (``None``:
        its configuration could not be read)."""
        self.appended = 0
        """Number of updates Redis took."""
        self.write_errors = 0
        """Number of writes (appends, compactions, deletions, ...) that failed."""
        self.observe_write: Callable[[float], None] | None = None
        """Called with the seconds each batch of writes took to be answered."""
        self._write_failure: str | None = None  # why writes fail, until they succeed again
        self._failed_unreachable = False  # ... because Redis could not be reached

    @property
    def write_failure(self) -> str | None:
        """Why writes fail: Redis refuses them (out of memory, say), or could not be reached
        for ``outage_limit`` seconds. From a write that failed until one that adds to what
        Redis holds succeeds (after an outage: until Redis answers again); ``None`` while
        they succeed."""
        return self._write_failure

    async def start(self) -> None:
        if self._running:
            return
        if self._client is None:
            # an answer this late means Redis is stopped or cut off: the writes are sent
            # again, and the store counts as unreachable meanwhile
            self._client = Redis.from_url(self.url, socket_timeout=WRITE_TIMEOUT)
        self.durable_config = await self._read_durability()
        if self.durable_config is False:
            log.warning(
                "Redis at %s does not fsync its append-only file on every write "
                "(appendonly yes, appendfsync always): an acknowledged update may be lost "
                "if Redis crashes",
                self.url,
            )
        policy = await self._read_eviction()
        if policy not in (None, "noeviction"):
            log.warning(
                "Redis at %s may evict keys when it is full (maxmemory-policy %s): an evicted "
                "document is lost data; set maxmemory-policy noeviction",
                self.url,
                policy,
            )
        self._wake = asyncio.Event()
        self._running = True
        self._writer = asyncio.create_task(self._write_loop(), name="redis-store-writer")

    async def _read_durability(self) -> bool | None:
        assert self._client is not None
        try:
            only = await self._client.config_get("appendonly")
            fsync = await self._client.config_get("appendfsync")
        except ResponseError:  # CONFIG is often disabled on managed Redis
            return None
        return bool(only.get("appendonly") == "yes" and fsync.get("appendfsync") == "always")

    async def _read_eviction(self) -> str | None:
        """Redis's ``maxmemory-policy`` (``None``: it could not be read)."""
        assert self._client is not None
        try:
            found = await self._client.config_get("maxmemory-policy")
        except ResponseError:  # CONFIG is often disabled on managed Redis
            return None
        policy = found.get("maxmemory-policy")
        return None if policy is None else str(policy)

    async def stop(self) -> None:
        if not self._running:
            return
        self._running = False
        assert self._wake is not None and self._writer is not None
        self._wake.set()
        await self._writer
        self._writer = None
        if self._pipe is not None:
            self._pipe.close()
            self._pipe = None
        if self._own_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    def _check_running(self) -> None:
        if not self._running:
            raise RuntimeError("store is not running (call start() first, or it was stopped)")

    def _submit(
        self,
        script: str,
        keys: list[str],
        args: list[Any],
        finish: Callable[[Any], Any] | None = None,
    ) -> asyncio.Future[Any]:
        self._check_running()
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        op = _Op(script, keys, args, done)
        if finish is not None:
            op.finish = finish
        self._queue.append(op)
        assert self._wake is not None
        self._wake.set()
        return done

    async def _write_loop(self) -> None:
        """Send the queued operations, a pipeline per round trip, in the order queued."""
        assert self._wake is not None and self._client is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self._queue:
                if not self._running:
                    return
                continue
            batch, self._queue = self._queue, []
            await self._send(batch)

    async def _send(self, batch: list[_Op]) -> None:
        """Send a batch, again and again while Redis cannot be reached (for up to
        ``outage_limit`` seconds, then its operations fail). A batch cut off half-way may
        append some updates twice when it is sent again: applying an update twice changes
        nothing, so only the log grows."""
        started = time.monotonic()
        pause = 0.05
        while True:
            try:
                sent = time.perf_counter()
                replies = await self._pipeline(batch)
            except (RedisError, OSError) as exc:
                if not self._running or time.monotonic() - started >= self.outage_limit:
                    self._give_up(batch, exc, time.monotonic() - started)
                    return
                if self.reachable:
                    log.warning("Redis at %s cannot be reached (%s); writes wait", self.url, exc)
                    self.reachable = False
                    for hook in self.on_unreachable:
                        try:
                            hook()
                        except Exception:
                            log.exception("a hook on Redis becoming unreachable failed")
                await asyncio.sleep(pause)
                pause = min(pause * 2, 1.0)
                continue
            writes = any(op.script in _WRITES for op in batch)
            if writes and self.observe_write is not None:
                self.observe_write(time.perf_counter() - sent)
            if not self.reachable:
                log.info("Redis at %s is reachable again; the waiting writes are sent", self.url)
            self.reachable = True
            if self._failed_unreachable:  # what failed them is over
                self._succeeded()
            self._answer(batch, replies)
            return

    def _give_up(self, batch: list[_Op], exc: BaseException, waited: float) -> None:
        """Fail the operations of a batch that Redis did not answer in time."""
        for op in batch:
            if not op.done.done():
                op.done.set_exception(ConnectionError(f"Redis at {self.url}: {exc}"))
        writes = sum(op.script in _WRITES for op in batch)
        if writes and self._running:  # (a store stopping gives up at once)
            cause = str(exc) or type(exc).__name__
            why = f"Redis could not be reached for {waited:.0f} s ({cause})"
            self._failed(why, writes, unreachable=True)

    def _failed(self, why: str, count: int = 1, *, unreachable: bool = False) -> None:
        """Writes failed: they fail (``write_failure``) until one succeeds, or, where Redis
        could not be reached (``unreachable``), until it answers again."""
        self.write_errors += count
        if self._write_failure is None:
            log.error("store: writes to Redis fail: %s", why)
        self._write_failure = why
        self._failed_unreachable = unreachable

    def _succeeded(self) -> None:
        if self._write_failure is not None:
            log.warning("store: writes succeed again (they failed: %s)", self._write_failure)
            self._write_failure = None
            self._failed_unreachable = False

    async def _pipeline(self, batch: list[_Op]) -> list[Any]:
        """Send a batch as one pipeline; a reply for each operation (``None`` for a sync).

        On a connection of the store's own (``RespPipe``): redis-py's pipeline spent about
        twice the client CPU per append. A batch unanswered within ``WRITE_TIMEOUT`` closes
        the connection (a reply that came later would answer the wrong batch)."""
        sent: list[int] = []
        commands: list[bytes] = []
        for i, op in enumerate(batch):
            if op.script == "sync":
                continue
            sent.append(i)
            if op.script == "keys":
                commands.append(command("ZRANGEBYLEX", *op.args))
            elif op.script == "clear":
                commands.append(command("HDEL", op.keys[0], "recovered"))
            else:
                script = _SCRIPTS[op.script]
                commands.append(command("EVAL", script, len(op.keys), *op.keys, *op.args))
        answers: list[Any] = [None] * len(batch)
        if not commands:
            return answers
        pipe = self._pipe
        if pipe is None or pipe.closed.done():
            self._pipe = pipe = await open_resp(
                self.url, RespPipe, timeout=WRITE_TIMEOUT, name=f"collab-store-{self.node_id}"
            )
        try:
            async with asyncio.timeout(WRITE_TIMEOUT):
                replies = await pipe.send(commands)
        except BaseException:
            pipe.close()  # unanswered, or cancelled: the next batch takes a new connection
            raise
        for i, reply in zip(sent, replies, strict=True):
            answers[i] = reply
        return answers

    def _answer(self, batch: list[_Op], replies: list[Any]) -> None:
        for op, reply in zip(batch, replies, strict=True):
            error = _error_of(reply) if isinstance(reply, ResponseError) else None
            if error is None and op.script in _ADDS:
                if op.script != "compact":
                    self.appended += 1
                self._succeeded()
            elif op.script in _WRITES and error is not None and not isinstance(error, ValueError):
                self._failed(f"Redis refuses them: {error}")  # (a ValueError: a refusal)
            if op.done.done():
                continue
            if op.script == "sync":
                op.done.set_result(None)
                continue
            if error is not None:
                op.done.set_exception(error)
                continue
            try:
                op.done.set_result(op.finish(reply))
            except Exception as exc:  # a reply we cannot read fails its own operation only
                op.done.set_exception(exc)

    async def load(self, doc_id: str) -> StoredDoc | None:
        keys = [self.keys_.log(doc_id), self.keys_.snapshot(doc_id)]
        return cast(StoredDoc | None, await self._submit("load", keys, [], _stored(doc_id)))

    def append(
        self, doc_id: str, update: bytes, fence: Fence | None = None, author: str | None = None
    ) -> asyncio.Future[int]:
        """The future of the update's sequence number, done once Redis has it. With a
        ``fence``, checked in the same step: written only while its grant holds its lease
        (the keys of ``collab.bus.redis_lease``, under the same prefix), else ``FenceLost``.
        ``author`` joins, in the same step, the authors of the document's branch."""
        data = bytes(update)
        keys = [self.keys_.log(doc_id), self.keys_.seq(doc_id), self.keys_.docs]
        keys += [self.keys_.feed, self.keys_.feed_seq, self.keys_.snapshot(doc_id)]
        args: list[Any] = [data, self.node_id, doc_id, zlib.crc32(data), self.feed_length]
        authors = self.keys_.authors(doc_id.partition(":")[0])
        if fence is None:
            return self._submit("append", [*keys, authors], [*args, author or ""], int)
        keys.append(self.keys_.lease(fence.name))
        args.append(f"{fence.node_id} {fence.token}")
        return self._submit("append_fenced", [*keys, authors], [*args, author or ""], int)

    async def take_authors(self, branch: str, paths: Collection[str] | None = None) -> list[str]:
        """The people who wrote to documents of ``branch`` (those of ``paths``, or all) since
        their commit was settled, on any node: a node that dies between the take and its
        commit leaves them to the next holder of the branch's lease. Who wrote to which
        document is kept for :meth:`authors_of` and :meth:`settle_authors`."""
        keys = [self.keys_.authors(branch), self.keys_.old_authors(branch)]
        reply = await self._submit("take_authors", keys, [])
        marks: dict[tuple[str, str], tuple[bytes, bytes]] = {}
        for i in range(0, len(reply), 2):
            field = bytes(reply[i])
            doc_id, _, user = field.decode().rpartition("\n")
            marks[doc_id.partition(":")[2], user] = (field, bytes(reply[i + 1]))
        self._taken[branch] = marks
        return self.authors_of(branch, paths)

    def authors_of(self, branch: str, paths: Collection[str] | None) -> list[str]:
        """Of those the last take of ``branch`` gave, the writers of ``paths`` (all: None;
        those an older version kept, of no document in particular, are writers of any)."""
        wanted = None if paths is None else set(paths)
        taken = self._taken.get(branch, {})
        return sorted(
            {user for path, user in taken if wanted is None or not path or path in wanted}
        )

    async def settle_authors(
        self, branch: str, users: Collection[str], paths: Collection[str] | None = None
    ) -> None:
        """The commit of ``paths`` (None: all) naming ``users``, taken last on this node,
        has landed: forget what they wrote to those documents, but what they appended since
        (on any node)."""
        self._check_running()
        marks = self._taken.pop(branch, None)
        if marks is None:
            return
        named = set(users)
        wanted = None if paths is None else set(paths)
        args: list[Any] = []
        for (path, user), (field, mark) in marks.items():
            if user in named and (wanted is None or not path or path in wanted):
                args += [field, mark]
        if args:
            await self._submit("settle_authors", [self.keys_.authors(branch)], args)

    def sync(self) -> asyncio.Future[None]:
        """Done once every operation queued before it is answered (durable as far as Redis's
        append-only file settings make an answered write durable)."""
        return self._submit("sync", [], [])

    async def compact(self, doc_id: str, snapshot: bytes, through_seq: int) -> None:
        keys = [
            self.keys_.log(doc_id),
            self.keys_.seq(doc_id),
            self.keys_.snapshot(doc_id),
            self.keys_.docs,
        ]
        await self._submit("compact", keys, [bytes(snapshot), through_seq, doc_id])

    async def delete(self, doc_id: str) -> None:
        keys = [self.keys_.log(doc_id), self.keys_.snapshot(doc_id), self.keys_.docs]
        keys += [self.keys_.feed, self.keys_.feed_seq, self.keys_.authors(doc_id.partition(":")[0])]
        await self._submit("delete", keys, [doc_id, self.node_id, self.feed_length])

    async def keys(self, prefix: str = "") -> list[str]:
        low = b"[" + prefix.encode()
        high = b"[" + prefix.encode() + b"\xff"
        names = await self._submit("keys", [], [self.keys_.docs, low, high])
        return [name.decode() for name in names]

    async def clear_recovered(self, doc_id: str) -> None:
        await self._submit("clear", [self.keys_.snapshot(doc_id)], [])


def _error_of(reply: ResponseError) -> Exception:
    """A script's refusal (a compaction past the end, say) as the ``ValueError`` every store
    raises for it; anything else as it came."""
    text = str(reply)
    if text.startswith("fence:"):
        return FenceLost(f"append refused: {text[len('fence: ') :]}")
    if text.startswith("through_seq"):
        kind = BehindSnapshot if "behind the current snapshot" in text else ValueError
        return kind(f"compact: {text}")
    return reply


def _stored(doc_id: str) -> Callable[[Any], StoredDoc | None]:
    def finish(reply: Any) -> StoredDoc | None:
        (snap_seq, snap_data, recovered), entries = reply
        if snap_data is None and not entries:
            return None
        updates: list[tuple[int, bytes]] = []
        corrupt = None
        for entry_id, fields in entries:
            seq = seq_of(entry_id)
            values = dict(zip(fields[::2], fields[1::2], strict=True))
            data = values.get(b"u")
            crc = values.get(b"c")
            if data is None or crc is None or zlib.crc32(data) != int(crc):
                corrupt = CorruptRecord(doc_id, seq, "checksum mismatch or missing data")
                break
            updates.append((seq, data))
        return StoredDoc(
            snap_data,
            int(snap_seq) if snap_seq is not None else 0,
            updates,
            corrupt=corrupt,
            recovered=recovered is not None,
        )

    return finish
