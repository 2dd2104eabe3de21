"""``collab store check`` and ``collab store repair``: the store, looked at and mended offline."""

from __future__ import annotations

import argparse
import sqlite3
import sys
from pathlib import Path
from typing import Any

from ..store.data_lock import DataDirBusy, DataDirLock
from ..store.repair import StoreReport, UnknownDocument, check, repair

__all__ = ["add_parsers", "run"]

STORE_FILE = "store.sqlite3"


def add_parsers(sub: Any) -> None:
    store = sub.add_parser("store", help="check or repair the store (with the server stopped)")
    actions = store.add_subparsers(dest="action", required=True)
    for name, text in (
        ("check", "report damaged documents; exit 1 if any"),
        ("repair", "set damaged records aside and keep every intact one that applies"),
    ):
        parser = actions.add_parser(name, help=text)
        parser.add_argument(
            "--data-dir",
            type=Path,
            default=Path(".collab"),
            help=f"the stopped server's data directory, which holds {STORE_FILE} "
            "(default: .collab, as for collab serve)",
        )
    parser.add_argument(
        "--reseed",
        action="append",
        default=[],
        metavar="DOC",
        help="drop DOC's history: it is seeded again from its branch head (repeatable; a "
        "document the store does not know is refused, and nothing is changed)",
    )
    parser.add_argument(
        "--accept",
        action="append",
        default=[],
        metavar="DOC",
        help="commit DOC's recovered text even if it shrinks its file (repeatable)",
    )


def run(args: argparse.Namespace) -> int:
    path = args.data_dir / STORE_FILE
    try:
        with DataDirLock(
            args.data_dir,
            remedy="stop it first: the store is checked and repaired while no server uses it",
        ):
            if args.action == "check":
                report = check(path)
            else:
                report = repair(path, reseed=args.reseed, accept=args.accept)
    except (DataDirBusy, FileNotFoundError) as exc:
        print(f"collab store {args.action}: {exc}", file=sys.stderr)
        return 2
    except UnknownDocument as exc:  # refused before anything was changed
        print(f"collab store {args.action}: {exc}; nothing was changed", file=sys.stderr)
        return 2
    except sqlite3.DatabaseError as exc:
        print(f"collab store {args.action}: {path}: {exc}{_hint(exc)}", file=sys.stderr)
        return 2
    _print(report)
    if args.action == "check":
        return 0 if report.sound else 1
    return 0


def _hint(exc: sqlite3.DatabaseError) -> str:
    """What to do with a file SQLite does not take for a database at all."""
    if "not a database" not in str(exc):
        return ""
    return (
        "; no repair reads it: restore it from a backup, or move it aside (the documents "
        "start again from their branch heads, and lose every edit not committed)"
    )


def _print(report: StoreReport) -> None:
    for problem in report.integrity:
        print(f"database file: {problem}")
    for doc in report.docs:
        print(f"{doc.doc_id}: {doc.describe()}")
    if report.sound and not report.docs:
        print("store is sound")
