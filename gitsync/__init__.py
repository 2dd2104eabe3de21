"""Synchronous git logic on dulwich's object store and refs (call via ``asyncio.to_thread``)."""

from __future__ import annotations

from .repos import (
    BlobNotText,
    BranchNotFound,
    FileBlob,
    RepoNotFound,
    Repositories,
    create_demo_repo,
)

__all__ = [
    "BlobNotText",
    "BranchNotFound",
    "FileBlob",
    "RepoNotFound",
    "Repositories",
    "create_demo_repo",
]
