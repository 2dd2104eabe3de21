"""``read_nodes``: the nodes of a cluster alive now, each with what it says of itself.

Each node renews a key of its own (``RedisKeys.node``) holding a JSON object: when it wrote
it, its rooms and connections, its workers' job slots (``RedisBus.describe``), and the
incarnation of the process that holds the id (no two processes serve as one node:
``NodeIdTaken``). A node's
key expires when it stops renewing it, so the keys there now are the nodes alive now. Other
nodes read them to find the workers they can send jobs to (``ClusterJobs``), and ``collab
cluster status`` to show the cluster without asking any node.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from collab.bus.keys import RedisKeys

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["NodeIdTaken", "read_nodes"]


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
