"""``collab cluster status``: the nodes of a cluster, their rooms, connections and open
branches, the branch leases and how far Redis is, read from Redis itself (no node needs to
answer)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from typing import Any

from collab.bus.keys import RedisKeys, split_author
from collab.bus.nodes import open_key, read_nodes

__all__ = ["REDIS_ENV", "add_parsers", "cluster_status", "run"]

REDIS_ENV = "COLLAB_REDIS"


def add_parsers(sub: Any) -> None:
    cluster = sub.add_parser("cluster", help="look at a cluster of nodes sharing one Redis")
    actions = cluster.add_subparsers(dest="action", required=True)
    status = actions.add_parser("status", help="nodes, rooms per node, branch leases, Redis lag")
    status.add_argument(
        "--redis",
        default=os.environ.get(REDIS_ENV),
        help=f"redis://HOST:PORT/DB of the cluster (else ${REDIS_ENV})",
    )
    status.add_argument("--prefix", default="collab:", help="the cluster's key prefix in Redis")
    status.add_argument("--json", action="store_true", help="one JSON object instead of tables")


async def cluster_status(url: str, prefix: str = "collab:") -> dict[str, Any]:
    """What Redis holds of the cluster: each node's own description (its key expires when
    the node stops renewing it) with the branches it has open documents of (``open``, from
    the set beside its key), each branch lease's holder, token and time left, and the round
    trip to Redis from here."""
    from redis.asyncio import Redis  # the cluster extra

    client = Redis.from_url(url)
    try:
        started = time.perf_counter()
        await client.ping()
        ping_ms = round((time.perf_counter() - started) * 1000, 2)
        nodes = []
        keys = RedisKeys(prefix)
        for node_id, about in (await read_nodes(client, keys)).items():
            about["node"] = node_id
            about["age_s"] = round(time.time() - float(about.pop("at", time.time())), 2)
            key = open_key(keys, node_id, about)
            if key is not None and not isinstance(about.get("open"), list):
                members = await client.smembers(key)
                about["open"] = sorted(
                    m.decode() if isinstance(m, bytes) else str(m) for m in members
                )
            nodes.append(about)
        leases = []
        async for key in client.scan_iter(f"{prefix}lease:*"):
            raw, ttl = await client.get(key), await client.pttl(key)
            if raw is None:
                continue
            text = raw.decode() if isinstance(raw, bytes) else str(raw)
            holder, _, token = text.rpartition(" ")
            node, incarnation = split_author(holder)
            name = key.decode()[len(prefix) + len("lease:") :]
            leases.append(
                {
                    "branch": name,
                    "node": node,
                    "incarnation": incarnation,
                    "token": int(token),
                    "ttl_ms": ttl,
                }
            )
        documents = await client.zcard(f"{prefix}docs")
    finally:
        await client.aclose()
    return {
        "redis": url,
        "redis_ms": ping_ms,
        "documents": documents,
        "nodes": sorted(nodes, key=lambda n: str(n["node"])),
        "leases": sorted(leases, key=lambda lease: str(lease["branch"])),
    }


def run(args: argparse.Namespace) -> int:
    if not args.redis:
        print(f"collab cluster status: give --redis or set ${REDIS_ENV}", file=sys.stderr)
        return 2
    try:
        status = asyncio.run(cluster_status(args.redis, args.prefix))
    except ImportError:
        print(
            "collab cluster: needs the cluster extra (redis): pip install 'collab-engine[cluster]'",
            file=sys.stderr,
        )
        return 2
    except (OSError, ConnectionError) as exc:
        print(f"collab cluster status: cannot reach {args.redis}: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # redis' own errors, without importing them here
        print(f"collab cluster status: {args.redis}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    print(f"redis      {status['redis']}: {status['redis_ms']} ms from here")
    print(f"documents  {status['documents']} in the shared store")
    print()
    print(f"{'NODE':24} {'ROOMS':>6} {'CONNS':>6} {'OPEN':>6} {'REDIS MS':>9} {'SEEN':>7}  STATE")
    for node in status["nodes"]:
        state = "ok" if node.get("healthy", True) else "degraded"
        ping = node.get("redis_ms")
        opened = node.get("open")
        print(
            f"{node['node']:24} {node.get('rooms', '-'):>6} {node.get('connections', '-'):>6} "
            f"{'-' if opened is None else len(opened):>6} "
            f"{'-' if ping is None else ping:>9} {node['age_s']:>6}s  {state}"
        )
    if not status["nodes"]:
        print("(no node alive)")
    print()
    print(f"{'BRANCH LEASE':40} {'NODE':24} {'TOKEN':>6} {'LEFT':>8}")
    for lease in status["leases"]:
        print(
            f"{lease['branch']:40} {lease['node']:24} {lease['token']:>6} "
            f"{lease['ttl_ms'] / 1000:>7.1f}s"
        )
    if not status["leases"]:
        print("(no branch is being committed now)")
    return 0
