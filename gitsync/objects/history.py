"""A branch's recent commits, newest first, with authors and ``Co-authored-by:`` co-authors."""

from __future__ import annotations

import re
from dataclasses import dataclass

from dulwich.objects import Commit, ObjectID
from dulwich.repo import Repo

__all__ = ["CommitInfo", "commit_info", "recent_commits"]

_CO_AUTHOR = re.compile(rb"^co-authored-by:[ \t]*(.+?)[ \t]*$", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True, slots=True)
class CommitInfo:
    """One commit as a log shows it. ``time`` is seconds since the epoch (the author's)."""

    sha: str
    parents: list[str]
    author: str
    co_authors: list[str]
    time: int
    subject: str

    def as_dict(self) -> dict[str, object]:
        return {
            "commit": self.sha,
            "parents": list(self.parents),
            "author": self.author,
            "co_authors": list(self.co_authors),
            "time": self.time,
            "subject": self.subject,
        }


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def commit_info(commit: Commit) -> CommitInfo:
    """What a log shows of ``commit``: the co-authors come from its trailers."""
    message = bytes(commit.message)
    subject = message.split(b"\n", 1)[0].strip()
    return CommitInfo(
        sha=_text(bytes(commit.id)),
        parents=[_text(bytes(p)) for p in commit.parents],
        author=_text(bytes(commit.author)),
        co_authors=list(dict.fromkeys(_text(m) for m in _CO_AUTHOR.findall(message))),
        time=int(commit.author_time),
        subject=_text(subject),
    )


def recent_commits(repo: Repo, head: bytes, limit: int) -> list[CommitInfo]:
    """Up to ``limit`` commits reachable from ``head``, newest first (by commit time, as
    ``git log`` orders them)."""
    walker = repo.get_walker(include=[ObjectID(head)], max_entries=limit)
    return [commit_info(entry.commit) for entry in walker]
