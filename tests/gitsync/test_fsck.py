"""``gitsync.objects.fsck`` against ``git fsck --strict``: what git refuses is refused with git's message
id, and what git writes is accepted."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from dulwich.pack import UnpackedObjectIterator
from dulwich.repo import Repo
from gitcli import require_git, skewed_text

from gitsync.objects.fsck import BLOB, COMMIT, TAG, TREE, FsckError, ObjectChecker, check_tree
from gitsync.objects.gitmodules import config_entries, gitmodules_problems
from gitsync.objects.stored_types import StoredTypes
from protocol.dotgit import is_dotgit, is_hfs_dot, is_ntfs_dot

Git = Callable[..., str]
ENV = {
    **{k: v for k, v in os.environ.items() if not k.startswith("GIT_")},
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
}


def run_git(cwd: Path, *args: str, stdin: bytes | None = None) -> str:
    done = subprocess.run(
        ["git", *args], cwd=cwd, env=ENV, input=stdin, capture_output=True, check=True
    )
    return done.stdout.decode()


@pytest.fixture(autouse=True)
def _git_cli() -> None:
    require_git()


B = bytes.fromhex("e69de29bb2d1d6434b8b29ae775ad8c2e48c5391")  # the empty blob
T = bytes.fromhex("4b825dc642cb6eb9a060e54bf8d69288fbee4904")  # the empty tree
C = "a" * 40
IDENT = b"A U Thor <author@example.com> 1700000000 +0100"


def tree(*entries: tuple[bytes, bytes, bytes]) -> bytes:
    return b"".join(mode + b" " + name + b"\0" + oid for mode, name, oid in entries)


def commit(*headers: bytes, message: bytes = b"\nmessage\n") -> bytes:
    return b"".join(h + b"\n" for h in headers) + message


TREE_LINE = b"tree " + T.hex().encode()

BAD_TREES: dict[str, tuple[bytes, str]] = {
    ".git": (tree((b"40000", b".git", T)), "hasDotgit"),
    ".GIT": (tree((b"100644", b".GIT", B)), "hasDotgit"),
    ".Git blob": (tree((b"100644", b".Git", B)), "hasDotgit"),
    "git~1": (tree((b"40000", b"git~1", T)), "hasDotgit"),
    "GIT~1": (tree((b"40000", b"GIT~1", T)), "hasDotgit"),
    ".git.": (tree((b"40000", b".git.", T)), "hasDotgit"),
    ".git space": (tree((b"40000", b".git ", T)), "hasDotgit"),
    ".git . .": (tree((b"40000", b".git . .", T)), "hasDotgit"),
    ".git::$INDEX_ALLOCATION": (tree((b"40000", b".git::$INDEX_ALLOCATION", T)), "hasDotgit"),
    "git~1:stream": (tree((b"100644", b"git~1:x", B)), "hasDotgit"),
    ".git\\x": (tree((b"100644", b".git\\x", B)), "hasDotgit"),
    "x\\.git": (tree((b"100644", b"x\\.git", B)), "hasDotgit"),
    ".g ZWNJ it": (tree((b"40000", ".g\u200cit".encode(), T)), "hasDotgit"),
    "RLM .git": (tree((b"40000", "\u200f.git".encode(), T)), "hasDotgit"),
    ".GI BOM T": (tree((b"40000", ".GI\ufeffT".encode(), T)), "hasDotgit"),
    ".git ZWJ": (tree((b"40000", ".git\u200d".encode(), T)), "hasDotgit"),
    ".": (tree((b"100644", b".", B)), "hasDot"),
    "..": (tree((b"40000", b"..", T)), "hasDotdot"),
    "a/b": (tree((b"100644", b"a/b", B)), "fullPathname"),
    "/": (tree((b"100644", b"/", B)), "fullPathname"),
    "null id": (tree((b"100644", b"a", bytes(20))), "nullSha1"),
    "zero-padded mode": (tree((b"040000", b"a", T)), "zeroPaddedFilemode"),
    "mode of a FIFO": (tree((b"10644", b"a", B)), "badFilemode"),
    "mode of no type": (tree((b"644", b"a", B)), "badFilemode"),
    "duplicate blobs": (tree((b"100644", b"a", B), (b"100644", b"a", B)), "duplicateEntries"),
    "blob and tree of one name": (
        tree((b"100644", b"a", B), (b"100644", b"a.c", B), (b"40000", b"a", T)),
        "duplicateEntries",
    ),
    "unsorted": (tree((b"100644", b"b", B), (b"100644", b"a", B)), "treeNotSorted"),
    "dir before a.c": (tree((b"40000", b"a", T), (b"100644", b"a.c", B)), "treeNotSorted"),
    "empty name": (tree((b"100644", b"", B)), "badTree"),
    "no mode": (b" a\0" + B, "badTree"),
    "non-octal mode": (tree((b"100648", b"a", B)), "badTree"),
    "truncated id": (tree((b"100644", b"a", B))[:-1], "badTree"),
    "no NUL": (b"100644 a", "badTree"),
    ".gitmodules symlink": (tree((b"120000", b".gitmodules", B)), "gitmodulesSymlink"),
    ".GITMODULES symlink": (tree((b"120000", b".GITMODULES", B)), "gitmodulesSymlink"),
    "gitmod~1 symlink": (tree((b"120000", b"gitmod~1", B)), "gitmodulesSymlink"),
    "gi7eba~1 symlink": (tree((b"120000", b"gi7eba~1", B)), "gitmodulesSymlink"),
}

BAD_COMMITS: dict[str, tuple[bytes, str]] = {
    "no tree": (commit(b"author " + IDENT, b"committer " + IDENT), "missingTree"),
    "bad tree id": (commit(b"tree " + b"x" * 40, b"author " + IDENT), "badTreeSha1"),
    "bad parent": (commit(TREE_LINE, b"parent 1234", b"author " + IDENT), "badParentSha1"),
    "no author": (commit(TREE_LINE, b"committer " + IDENT), "missingAuthor"),
    "two authors": (
        commit(TREE_LINE, b"author " + IDENT, b"author " + IDENT, b"committer " + IDENT),
        "multipleAuthors",
    ),
    "no committer": (commit(TREE_LINE, b"author " + IDENT), "missingCommitter"),
    "name first": (commit(TREE_LINE, b"author <a@b> 1 +0000"), "missingNameBeforeEmail"),
    "no email": (commit(TREE_LINE, b"author A 1 +0000"), "missingEmail"),
    "> in name": (commit(TREE_LINE, b"author A> <a@b> 1 +0000"), "badName"),
    "no space before <": (commit(TREE_LINE, b"author A<a@b> 1 +0000"), "missingSpaceBeforeEmail"),
    "< in email": (commit(TREE_LINE, b"author A <a<b> 1 +0000"), "badEmail"),
    "no space before date": (commit(TREE_LINE, b"author A <a@b>1 +0000"), "missingSpaceBeforeDate"),
    "no date": (commit(TREE_LINE, b"author A <a@b> +0000"), "badDate"),
    "zero-padded date": (commit(TREE_LINE, b"author A <a@b> 0123 +0000"), "zeroPaddedDate"),
    "date overflow": (
        commit(TREE_LINE, b"author A <a@b> 99999999999999999999 +0000"),
        "badDateOverflow",
    ),
    "no zone": (commit(TREE_LINE, b"author A <a@b> 1"), "badDate"),
    "bad zone": (commit(TREE_LINE, b"author A <a@b> 1 +000"), "badTimezone"),
    "zone letters": (commit(TREE_LINE, b"author A <a@b> 1 +00a0"), "badTimezone"),
    "NUL in header": (commit(TREE_LINE, b"author A <a@b> 1 +0000\0"), "nulInHeader"),
    "unterminated": (TREE_LINE + b"\nauthor " + IDENT, "unterminatedHeader"),
    "NUL in body": (
        commit(TREE_LINE, b"author " + IDENT, b"committer " + IDENT, message=b"\nm\0\n"),
        "nulInCommit",
    ),
}

STRICTER: dict[str, tuple[str, bytes, str]] = {
    "upper-case tree id": (
        "commit",
        commit(b"tree " + T.hex().upper().encode(), b"author " + IDENT, b"committer " + IDENT),
        "badTreeSha1",
    ),
}
"""Objects git accepts that are refused here: dulwich would store an upper-case id as it is
and never find the object."""

TAG_HEAD = b"object " + C.encode()
BAD_TAGS: dict[str, tuple[bytes, str]] = {
    "no object": (commit(b"type commit", b"tag v1"), "missingObject"),
    "bad object": (commit(b"object 123", b"type commit", b"tag v1"), "badObjectSha1"),
    "no type": (commit(TAG_HEAD, b"tag v1"), "missingTypeEntry"),
    "bad type": (commit(TAG_HEAD, b"type commits", b"tag v1"), "badType"),
    "no tag line": (commit(TAG_HEAD, b"type commit", b"tagger " + IDENT), "missingTagEntry"),
    "bad tagger": (
        commit(TAG_HEAD, b"type commit", b"tag v1", b"tagger T 1 +0000"),
        "missingEmail",
    ),
}

GOOD_TREES = {
    "usual": tree(
        (b"100644", b".gitignore", B),
        (b"100644", b".gitx", B),
        (b"100755", b"a", B),
        (b"100644", b"a.c", B),
        (b"120000", b"a.git", B),
        (b"40000", b"b", T),
        (b"100644", b"c.d", B),
        (b"40000", b"c", T),
        (b"160000", b"git", bytes.fromhex(C)),
        (b"100644", b"git~2", B),
        (b"100644", "éè 世界".encode(), B),
    ),
    "dots": tree((b"100644", b"...", B), (b"100644", b"..a", B), (b"100644", b".a", B)),
    "almost .git": tree(
        (b"100644", b".git-x", B), (b"100644", b".gitx", B), (b"100644", b".gjt", B)
    ),
    ".gitignore symlink": tree((b"120000", b".gitignore", B)),
    # files of other modes (old gits wrote 100664): git notes the mode, reads them as files
    "modes 100664 and 100600": tree((b"100600", b"a", B), (b"100664", b"b", B)),
}

GOOD_COMMITS = {
    "root": commit(TREE_LINE, b"author " + IDENT, b"committer " + IDENT),
    "extra headers": commit(
        TREE_LINE,
        b"parent " + C.encode(),
        b"author " + IDENT,
        b"committer " + IDENT,
        b"encoding ISO-8859-1",
        b"gpgsig -----BEGIN PGP SIGNATURE-----",
        b" abc",
    ),
    "no message": TREE_LINE + b"\nauthor " + IDENT + b"\ncommitter " + IDENT + b"\n",
    "odd names": commit(TREE_LINE, b"author  <> 0 -1200", b"committer x  <y>  \t12 +0000"),
}

GOOD_TAGS = {
    "annotated": commit(TAG_HEAD, b"type commit", b"tag v1.0", b"tagger " + IDENT),
    "old, no tagger": commit(TAG_HEAD, b"type commit", b"tag v0"),
    "odd name": commit(TAG_HEAD, b"type commit", b"tag a..b", b"tagger " + IDENT),
}

NOTES = {"badFilemode", "badTagName", "gitignoreSymlink", "missingTaggerEntry"}
"""What git only notes (its "info" messages), even with --strict; accepted here too."""

KINDS = {"commit": COMMIT, "tree": TREE, "blob": BLOB, "tag": TAG}


def _object_id(kind: str, raw: bytes) -> str:
    return hashlib.sha1(b"%s %d\0" % (kind.encode(), len(raw)) + raw).hexdigest()


def _ours(kind: str, raw: bytes) -> str | None:
    try:
        ObjectChecker().check(KINDS[kind], bytes.fromhex(_object_id(kind, raw)), raw)
    except FsckError as exc:
        return exc.msg_id
    return None


def _gits(tmp_path: Path, objects: dict[str, tuple[str, bytes]]) -> dict[str, set[str]]:
    """What ``git fsck --strict`` says of each object (written as it is): case -> message ids
    of its errors and warnings."""
    repo = tmp_path / "fsck.git"
    tmp_path.mkdir(parents=True, exist_ok=True)
    run_git(tmp_path, "init", "-q", "--bare", str(repo))
    ids = {}
    for case, (kind, raw) in objects.items():
        ids[case] = run_git(
            repo, "hash-object", "--literally", "-t", kind, "-w", "--stdin", stdin=raw
        ).strip()
    full = subprocess.run(
        ["git", "fsck", "--strict", "--no-dangling", "--no-progress"],
        cwd=repo,
        env=ENV,
        capture_output=True,
        text=True,
        check=False,
    )
    said: dict[str, set[str]] = {sha: set() for sha in ids.values()}
    for line in full.stderr.splitlines() + full.stdout.splitlines():
        found = re.match(r"(?:error|warning) in \w+ ([0-9a-f]{40}): (\w+):", line)
        if found and found.group(1) in said:
            said[found.group(1)].add(found.group(2))
        for sha in re.findall(r"[0-9a-f]{40}", line):  # git could not even parse it
            if sha in said and ("could not be parsed" in line or "bogus" in line):
                said[sha].add("unparseable")
    return {case: said[sha] for case, sha in ids.items()}


def test_what_git_fsck_refuses_is_refused_with_its_message_id(tmp_path: Path) -> None:
    cases = {
        **{f"tree {k}": ("tree", raw, msg) for k, (raw, msg) in BAD_TREES.items()},
        **{f"commit {k}": ("commit", raw, msg) for k, (raw, msg) in BAD_COMMITS.items()},
        **{f"tag {k}": ("tag", raw, msg) for k, (raw, msg) in BAD_TAGS.items()},
    }
    gits = _gits(tmp_path, {case: (kind, raw) for case, (kind, raw, _) in cases.items()})
    for case, (kind, raw, expected) in cases.items():
        assert _ours(kind, raw) == expected, case
        said = gits[case]
        if expected in {"badTree", "badFilemode"} and not said:
            continue  # (git cannot write some of these, and only notes a bad mode)
        assert expected in said or "unparseable" in said, f"{case}: git says {said}"


def test_what_is_refused_beyond_git(tmp_path: Path) -> None:
    gits = _gits(tmp_path, {case: (kind, raw) for case, (kind, raw, _) in STRICTER.items()})
    for case, (kind, raw, expected) in STRICTER.items():
        assert _ours(kind, raw) == expected, case
        assert gits[case] <= {"badFilemode"}, f"{case}: git says {gits[case]}"


def test_what_git_writes_is_accepted(tmp_path: Path) -> None:
    cases = {
        **{f"tree {k}": ("tree", raw) for k, raw in GOOD_TREES.items()},
        **{f"commit {k}": ("commit", raw) for k, raw in GOOD_COMMITS.items()},
        **{f"tag {k}": ("tag", raw) for k, raw in GOOD_TAGS.items()},
    }
    gits = _gits(tmp_path, cases)
    for case, (kind, raw) in cases.items():
        assert _ours(kind, raw) is None, case
        assert not (gits[case] - NOTES), f"{case}: git says {gits[case]}"


def test_every_object_of_a_real_history_passes(tmp_path: Path, git: Git) -> None:
    """A history with merges, tags, symlinks, executables, a submodule, a valid
    ``.gitmodules`` and names close to ``.git``, made by the git CLI and repacked with deltas."""
    work = tmp_path / "work"
    git(tmp_path, "init", "-q", "-b", "main", str(work))
    (work / "src").mkdir()
    for i in range(30):
        (work / "src" / f"f{i}.py").write_text(f"print({i})\n" * (i + 1))
    (work / "run.sh").write_text("#!/bin/sh\n")
    (work / "run.sh").chmod(0o755)
    (work / "link").symlink_to("run.sh")
    (work / ".gitmodules").write_text('[submodule "lib"]\n\tpath = lib\n\turl = ../lib.git\n')
    (work / ".gitattributes").write_text("*.py text\n")
    (work / ".gitx").write_text("not .git\n")
    (work / "git~2").write_text("not git~1\n")
    git(work, "add", ".")
    git(work, "update-index", "--add", "--cacheinfo", f"160000,{C},lib")
    git(work, "commit", "-qm", "first")
    git(work, "checkout", "-qb", "side")
    (work / "src" / "f1.py").write_text("side\n")
    git(work, "commit", "-qam", "side")
    git(work, "checkout", "-q", "main")
    (work / "src" / "f2.py").write_text("main\n")
    git(work, "commit", "-qam", "main")
    git(work, "merge", "-q", "--no-edit", "side")
    git(work, "tag", "-a", "v1", "-m", "tag")
    git(work, "repack", "-adq", "--depth=10")
    assert git(work, "fsck", "--strict", "--no-dangling").strip() == ""
    checker = ObjectChecker()
    with Repo(str(work)) as repo:
        (pack,) = repo.object_store.packs
        for unpacked in UnpackedObjectIterator.for_pack_data(pack.data):
            kind = unpacked.obj_type_num
            assert kind is not None and unpacked.obj_chunks is not None
            checker.check(kind, unpacked.sha(), b"".join(unpacked.obj_chunks))
        checker.links = {oid: link for oid, link in checker.links.items() if oid.hex() != C}
        with StoredTypes(repo.object_store) as stored:
            checker.finish(
                stored.type_of, lambda oid: repo.object_store.get_raw(oid.hex().encode())[1]
            )


@pytest.mark.parametrize(
    ("name", "dotgit"),
    [
        (b".git", True),
        (b".GiT", True),
        (b"git~1", True),
        (b"GIT~1", True),
        (b".git...", True),
        (b".git  ", True),
        (b".git:", True),
        (b".git::$INDEX_ALLOCATION", True),
        (b".git/", True),
        (b"a\\.git", True),
        (b"a\\b\\git~1", True),
        (".\u200cgit".encode(), True),
        ("\ufeff.g\u206ait".encode(), True),
        (b".git\xff", True),  # a malformed UTF-8 tail ends the name for HFS+
        (b".gitx", False),
        (b".git.x", False),
        (b"git~10", False),
        (b"git~2", False),
        (b"git", False),
        (b"x.git", False),
        (b".g\xffit", False),
        (".gİt".encode(), False),
        (b"", False),
    ],
)
def test_dotgit_spellings(name: bytes, dotgit: bool) -> None:
    assert is_dotgit(name) is dotgit


def test_special_file_spellings() -> None:
    assert is_hfs_dot(".GitModules\u200c".encode(), b"gitmodules")
    assert is_ntfs_dot(b".gitmodules .", b"gitmodules")
    assert is_ntfs_dot(b"GITMOD~4", b"gitmodules")
    assert not is_ntfs_dot(b"gitmod~5", b"gitmodules")
    assert is_ntfs_dot(b"gi7eba~9", b"gitmodules")
    assert is_ntfs_dot(b"~1234567", b"gitmodules")
    assert not is_ntfs_dot(b"gi7ebb~1", b"gitmodules")
    assert is_ntfs_dot(b"maba30~1", b"mailmap")
    assert not is_ntfs_dot(b".gitmodulesx", b"gitmodules")


def test_gitmodules_settings(tmp_path: Path) -> None:
    assert list(config_entries(b'[submodule "a b"]\n\tURL = "x" ; c\n\tpath=p \\\n q\n')) == [
        (b"submodule.a b.url", b"x"),
        (b"submodule.a b.path", b"p  q"),
    ]
    assert list(config_entries(b"[Submodule.X]\nflag\n[broken")) == [(b"submodule.x.flag", None)]
    bad = {
        b'[submodule "../../x"]\npath = x\n': "gitmodulesName",
        b'[submodule "a\\\\..\\\\b"]\nurl = x\n': "gitmodulesName",
        b'[submodule "a"]\nurl = --upload-pack=touch /tmp/x\n': "gitmodulesUrl",
        b'[submodule "a"]\nurl = ../../:host/x\n': "gitmodulesUrl",
        b'[submodule "a"]\nurl = ./%0ahost\n': "gitmodulesUrl",
        b'[submodule "a"]\nurl = http::https:///x\n': "gitmodulesUrl",
        b'[submodule "a"]\npath = -x\n': "gitmodulesPath",
        b'[submodule "a"]\nupdate = !rm -rf /\n': "gitmodulesUpdate",
    }
    good = [
        b'[submodule "lib"]\n\tpath = lib\n\turl = https://example.com/lib.git\n',
        b'[submodule "a/b"]\n\turl = ../lib.git\n\tupdate = rebase\n',
        b"not [config at all",
    ]
    for text, msg_id in bad.items():
        assert [found for found, _ in gitmodules_problems(text)][:1] == [msg_id], text
    for text in good:
        assert list(gitmodules_problems(text)) == [], text
    # and git agrees, for each bad one
    for i, (text, msg_id) in enumerate(bad.items()):
        oid = hashlib.sha1(b"blob %d\0" % len(text) + text).digest()
        holder = tree((b"100644", b".gitmodules", oid))
        gits = _gits(tmp_path / str(i), {"blob": ("blob", text), "tree": ("tree", holder)})
        assert msg_id in gits["blob"], (text, gits)


def test_a_tree_of_one_name_checks_nothing_else() -> None:
    assert check_tree(b"0" * 40, b"") == []


def test_stored_types_are_read_from_pack_entry_headers(tmp_path: Path, git: Git) -> None:
    """Deltas (by offset, after a repack) take their base's type; loose objects and missing
    ones are answered too."""
    work = tmp_path / "work"
    git(tmp_path, "init", "-q", "-b", "main", str(work))
    for i in range(12):
        (work / "f.txt").write_text("".join(f"line {n}\n" for n in range(200 + i)))
        (work / f"d{i % 3}").mkdir(exist_ok=True)
        (work / f"d{i % 3}" / "g.txt").write_text("x\n" * (50 + i))
        git(work, "add", ".")
        git(work, "commit", "-qm", f"c{i}")
    git(work, "tag", "-a", "v1", "-m", "tag")
    git(work, "repack", "-adq")
    (work / "loose.txt").write_text("loose\n")
    loose = git(work, "hash-object", "-w", "loose.txt").strip()
    (work / "skewed.txt").write_bytes(skewed_text(0, 5000))
    skewed = git(work, "hash-object", "-w", "skewed.txt").strip()
    with open(work / ".git" / "objects" / skewed[:2] / skewed[2:], "rb") as f:
        assert len(zlib.decompressobj().decompress(f.read(64), 32)) < 5  # a long block header
    listed = git(
        work, "cat-file", "--batch-all-objects", "--batch-check=%(objectname) %(objecttype)"
    )
    expected = {sha: KINDS[kind] for sha, kind in (line.split() for line in listed.splitlines())}
    assert expected[loose] == expected[skewed] == BLOB
    deltas = git(work, "verify-pack", "-v", *map(str, (work / ".git/objects/pack").glob("*.idx")))
    assert " 1 " in deltas or "chain length = 1" in deltas  # (some objects are deltas)
    with Repo(str(work)) as repo, StoredTypes(repo.object_store) as stored:
        for sha, kind in expected.items():
            assert stored.type_of(bytes.fromhex(sha)) == kind, sha
        assert stored.type_of(bytes(20)) is None
