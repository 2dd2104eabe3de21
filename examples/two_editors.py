"""Two clients edit one file together through a real server, and print what each sees.

Run: .venv/bin/python examples/two_editors.py
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from collab import Client, CollabServer, ServerConfig
from gitsync import create_demo_repo


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        create_demo_repo(root / "repos" / "demo")
        config = ServerConfig(repos=root / "repos", data_dir=root / "data", port=0)
        async with CollabServer(config) as server:
            print(f"server on {server.url}")
            async with (
                Client(server.url, user="alice") as alice,
                Client(server.url, user="bob") as bob,
            ):
                a = await alice.open("demo/main:src/hello.py")
                b = await bob.open("demo/main:src/hello.py")
                print(f"both open src/hello.py:\n{a}")
                a.insert(0, "# Alice was here\n")
                b.text += "\nprint(hello('Bob'))  # Bob's line\n"
                b.set_awareness({"cursor": {"index": 3}})
                await a.wait_for(lambda text: "Bob's line" in text)
                await b.wait_for(lambda text: "Alice was here" in text)
                await asyncio.sleep(0.1)
                print(f"--- alice sees ---\n{a}")
                print(f"--- bob sees ---\n{b}")
                print(f"alice sees bob's cursor: {list(a.awareness.values())}")
                assert str(a) == str(b)


if __name__ == "__main__":
    asyncio.run(main())
