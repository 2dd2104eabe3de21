"""``read_nodes``: the nodes of a cluster alive now, each with what it says of itself.

Each node renews a key of its own (``RedisKeys.node``) holding a JSON object: when it wrote
it, its rooms and connections, its workers' job slots (``RedisBus.describe``), and the
incarnation of the process that holds the id (no two processes serve as one node:
``NodeIdTaken``). A node's
key expires when it stops renewing it, so the keys there now are the nodes alive now. Other
nodes read them to find the workers they can send jobs to (``ClusterJobs``), and ``collab
cluster status`` to show the cluster without asking any node.

The branches a node has open documents of are in a set of its own beside its key
(``RedisKeys.open_branches``, named by the node's id and incarnation), renewed with the key:
``open_key`` names the set of the incarnation a node's key holds, so that a set left by a
process that died, or that another one under its id replaced, is never read.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from collab.bus.keys import RedisKeys

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["NodeIdTaken", "nodes_with_open", "open_key", "read_nodes"]


class NodeIdTaken(RuntimeError):
    """Another live process serves as this node (the same ``--node-id``)."""


async def read_nodes(client: Redis, keys: RedisKeys) -> dict[str, dict[str, Any]]:
    """Each node alive, by id, with its description: the object its key holds (empty if the
    key holds no JSON object). A key that expires while the keys are read is left out."""
    found: dict[str, dict[str, Any]] = {}
    skip = len(keys.node(""))
    async for key in client.scan_iter(keys.nodes):
        raw = await client.get(key)
        if raw is None:
            continue
        try:
            about = json.loads(raw)
        except ValueError:
            about = None
        found[key.decode()[skip:]] = about if isinstance(about, dict) else {}
    return found


def open_key(keys: RedisKeys, node_id: str, about: dict[str, Any]) -> str | None:
    """The key of the set of branches open on node ``node_id`` as its description
    (``about``, from ``read_nodes``) names it: that of the incarnation its key holds; None
    for a key that names none."""
    incarnation = about.get("incarnation")
    if not isinstance(incarnation, str) or not incarnation:
        return None
    return keys.open_branches(f"{node_id}#{incarnation}")


async def nodes_with_open(
    client: Redis, keys: RedisKeys, branch: str, *, besides: str | None = None
) -> list[str]:
    """The nodes alive now (but ``besides``) that have ``branch`` (``repo/branch``) open:
    those whose set of open branches (that of the incarnation their key holds) has it, or
    whose key lists it itself (``open``, as a node of an earlier version wrote it), sorted.
    A node whose key lapsed is not read: the set it leaves goes with its own time to live."""
    found = await read_nodes(client, keys)
    listed: list[str] = []
    asked: list[tuple[str, str]] = []
    for node, about in found.items():
        if node == besides:
            continue
        old = about.get("open")
        if isinstance(old, list) and branch in old:
            listed.append(node)
        elif (key := open_key(keys, node, about)) is not None:
            asked.append((node, key))
    if asked:
        async with client.pipeline(transaction=False) as pipe:
            for _node, key in asked:
                pipe.sismember(key, branch)
            answers = await pipe.execute()
        listed += [node for (node, _key), there in zip(asked, answers, strict=True) if there]
    return sorted(listed)
