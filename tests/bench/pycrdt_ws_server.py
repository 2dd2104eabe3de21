"""pycrdt-websocket's ``WebsocketServer`` on the ``websockets`` library: a benchmark anchor.

It runs on uvloop by default, the loop ``collab serve`` runs on, so that a comparison with
ours measures the servers and not their event loops; ``--loop asyncio`` runs it on asyncio's
own loop (as this anchor ran before).

Usage: python tests/bench/pycrdt_ws_server.py PORT [--loop uvloop|asyncio]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from typing import Any

import websockets
from pycrdt.websocket import WebsocketServer


class _Channel:
    """Adapts a ``websockets`` connection to the channel pycrdt-websocket expects."""

    def __init__(self, ws: Any) -> None:
        self._ws = ws

    @property
    def path(self) -> str:
        return str(self._ws.request.path).split("?", 1)[0]

    def __aiter__(self) -> _Channel:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self.recv()
        except Exception:
            raise StopAsyncIteration from None

    async def send(self, message: bytes) -> None:
        # A send to a client that has just gone away is dropped, as the reference server
        # does: raised, it ends the room's task group and with it the whole server.
        with contextlib.suppress(websockets.exceptions.ConnectionClosed):
            await self._ws.send(message)

    async def recv(self) -> bytes:
        message = await self._ws.recv()
        return message if isinstance(message, bytes) else message.encode()


async def main(port: int) -> None:
    async with WebsocketServer(auto_clean_rooms=False) as server:
        # ``serve`` starts a new room without a lock: clients that connect to it at once may
        # start it twice, and some of them then never sync. Create and start each room once.
        starting = asyncio.Lock()

        async def handler(ws: Any) -> None:
            channel = _Channel(ws)
            async with starting:
                await server.get_room(channel.path)
            await server.serve(channel)

        # no per-message deflate, like the reference server (it costs the clients dearly)
        async with websockets.serve(handler, "127.0.0.1", port, max_size=None, compression=None):
            loop = type(asyncio.get_running_loop())
            print(f"listening on {port} ({loop.__module__}.{loop.__name__})", flush=True)
            await asyncio.Future()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port", type=int)
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    args = parser.parse_args()
    if args.loop == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main(args.port))
    else:
        asyncio.run(main(args.port))
