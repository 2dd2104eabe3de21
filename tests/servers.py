"""Server settings shared by the tests: the demo files, the test secret, a config maker."""

from __future__ import annotations

from pathlib import Path

from collab import ServerConfig

__all__ = ["DEMO_FILES", "SECRET", "make_config"]

SECRET = b"test-secret-0123456789abcdef"

DEMO_FILES = {
    "README.md": "# Demo\n\nHello from the demo repository.\n",
    "src/app.py": "print('hello')\n",
    "docs/unicode.txt": "héllo wörld, 世界, 🎉 emoji\n",
}


def make_config(repos: Path, data_dir: Path, **overrides: object) -> ServerConfig:
    config = ServerConfig(repos=repos, data_dir=data_dir, port=0, grace=0.2, heartbeat=5.0)
    for key, value in overrides.items():
        setattr(config, key, value)
    return config
