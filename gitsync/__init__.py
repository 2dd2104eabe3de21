"""Synchronous git logic on dulwich's object store and refs (call via ``asyncio.to_thread``)."""

from __future__ import annotations

from .locks import RefLocked, recover_stale_locks
from .merge.plan import (
    FileMerge,
    MergeConflict,
    MergePlan,
    UnrelatedHistories,
    merge_base,
    merge_text,
    plan_merge,
    resolve_plan,
)
from .naming import is_participant_branch, participant_branch
from .objects.commits import (
    BlobEntry,
    BranchExists,
    NothingToCommit,
    RefMoved,
    author_line,
    branch_heads,
    commit_changes,
    commit_message,
    create_branch,
    delete_branch,
    read_synced,
    set_synced,
    synced_ref,
)
from .repos import (
    BlobNotText,
    BranchDamaged,
    BranchNotFound,
    FileBlob,
    RepoNotFound,
    Repositories,
    create_demo_repo,
)
from .smart_http import info_refs, run_service

__all__ = [
    "BlobEntry",
    "BlobNotText",
    "BranchDamaged",
    "BranchExists",
    "BranchNotFound",
    "FileBlob",
    "FileMerge",
    "MergeConflict",
    "MergePlan",
    "NothingToCommit",
    "RefLocked",
    "RefMoved",
    "RepoNotFound",
    "Repositories",
    "UnrelatedHistories",
    "author_line",
    "branch_heads",
    "commit_changes",
    "commit_message",
    "create_branch",
    "create_demo_repo",
    "delete_branch",
    "info_refs",
    "is_participant_branch",
    "merge_base",
    "merge_text",
    "participant_branch",
    "plan_merge",
    "read_synced",
    "recover_stale_locks",
    "resolve_plan",
    "run_service",
    "set_synced",
    "synced_ref",
]
