"""Repository, branch and path names, and document ids: accepted, normalised, refused."""

from __future__ import annotations

import os
import posixpath
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from protocol.dotgit import is_dotgit
from protocol.errors import ErrorCode, ProtocolError
from protocol.names import (
    MAX_PATH,
    MAX_PATH_COMPONENT,
    MAX_PATH_DEPTH,
    DocId,
    validate_branch,
    validate_path,
    validate_repo,
)


def refused(validate: object, name: str) -> ProtocolError:
    assert callable(validate)
    with pytest.raises(ProtocolError) as info:
        validate(name)
    assert info.value.code == ErrorCode.BAD_NAME
    return info.value


# -- repositories ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["demo", "my-repo", "my_repo.v2", "A", "a" * 100, "...a", "-x"])
def test_repo_accepted(name: str) -> None:
    assert validate_repo(name) == name


@pytest.mark.parametrize(
    "name",
    [
        *[".", "..", "...", "a/b", "a b", "", "a" * 101, "a\\b", "a\x00", "é", "a:b", "a\n", "~a"],
        *["demo.git", "demo.GIT", ".git"],  # repository "demo" is the directory demo.git
    ],
    ids=repr,
)
def test_repo_refused(name: str) -> None:
    refused(validate_repo, name)


# -- branches ----------------------------------------------------------------------------------

GOOD_BRANCHES = [
    "main",
    "feature/x",
    "user/alice-1a2b",
    "release-1.2",
    "a.b",
    "a@b",
    "x{y}",
    "héllo/世界",
    "emoji-🎉",
    "a/b/c/d",
    "refs-like/heads/x",
    "a" * 200,
    "ü" * 100,  # 200 bytes
]

BAD_BRANCHES = [
    "",
    "a..b",
    "..",
    "a.lock",
    "x/a.lock",
    "a.lock/b",
    ".hidden",
    "x/.hidden",
    "-x",
    "a//b",
    "a/",
    "/a",
    "a.",
    "@",
    "a@{b",
    "@{-1}",
    "HEAD",
    "x:y",
    "a b",
    "a~1",
    "a^",
    "a?",
    "a*",
    "a[",
    "a\\b",
    "a\x00b",
    "a\tb",
    "a\x7fb",
    "a\nb",
    "a\ud800",
    "a" * 201,
    "ü" * 101,  # 202 bytes in one part: a file name in refs/ with .lock after it
    "x/" + "ü" * 101,
    "refs/heads/x",  # git would hold it as refs/heads/refs/heads/x: ambiguous
]


@pytest.mark.parametrize("name", GOOD_BRANCHES)
def test_branch_accepted(name: str) -> None:
    assert validate_branch(name) == name


@pytest.mark.parametrize("name", BAD_BRANCHES, ids=repr)
def test_branch_refused(name: str) -> None:
    refused(validate_branch, name)


def _git_env() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if not key.startswith("GIT_")}


@pytest.fixture(scope="module")
def git_check(tmp_path_factory: pytest.TempPathFactory) -> object:
    """``git check-ref-format --branch NAME``, run outside any repository: (ok, output)."""
    git = shutil.which("git")
    if git is None:
        pytest.skip("git is not installed")
    cwd: Path = tmp_path_factory.mktemp("not-a-repo")
    env = _git_env() | {"GIT_CEILING_DIRECTORIES": str(cwd.parent)}

    def check(name: str) -> tuple[bool, str]:
        proc = subprocess.run(
            [git, "check-ref-format", "--branch", name],
            cwd=cwd,
            env=env,
            capture_output=True,
            timeout=30,
            check=False,
        )
        return proc.returncode == 0, proc.stdout.decode("utf-8", "replace").rstrip("\n")

    return check


def test_git_agrees_with_the_examples(git_check: object) -> None:
    assert callable(git_check)
    for name in GOOD_BRANCHES:
        assert git_check(name) == (True, name)
    for name in BAD_BRANCHES:
        if "\x00" in name or "\ud800" in name:
            continue  # cannot be passed to a process at all
        ok, _ = git_check(name)
        # git itself accepts "@" (it means HEAD), long names and names that read as full
        # ref names; we are stricter there.
        assert not ok or name in ("@", "a" * 201, "ü" * 101, "x/" + "ü" * 101, "refs/heads/x"), name


BRANCH_ALPHABET = "ab/.-_@{}~^:?*[\\ \t\x7f\x01éHEADlock"
branch_names = st.one_of(
    st.text(alphabet=BRANCH_ALPHABET, min_size=1, max_size=16),
    st.from_regex(r"[a-z./@{-]{1,6}(/[a-z.@{-]{1,6}){0,3}", fullmatch=True),
    st.text(min_size=1, max_size=12).filter(lambda s: "\x00" not in s),
)


@settings(max_examples=300, deadline=None)
@given(branch_names)
@example("HEAD")
@example("a/HEAD")
@example("x.lock.y")
@example("a/.b")
@example("a.-b")
@example("é")
def test_branch_never_looser_than_git(git_check: object, name: str) -> None:
    assert callable(git_check)
    try:
        validate_branch(name)
    except ProtocolError:
        return
    ok, output = git_check(name)
    assert ok, f"we accept {name!r}, git refuses it"
    assert output == name


# -- paths -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "normal"),
    [
        ("README.md", "README.md"),
        ("src/app.py", "src/app.py"),
        ("a/b/c/d/e/f.txt", "a/b/c/d/e/f.txt"),
        ("a//b/./c", "a/b/c"),
        ("./a", "a"),
        ("a/", "a"),
        ("a/.", "a"),
        ("docs/unicode ü 世界 🎉.txt", "docs/unicode ü 世界 🎉.txt"),
        ("a:b", "a:b"),
        ("...", "..."),
        ("..a/b..", "..a/b.."),
        (".gitignore", ".gitignore"),
        (".github/workflows/ci.yml", ".github/workflows/ci.yml"),
        ("x/.git2/y", "x/.git2/y"),
        ("é" * 127, "é" * 127),
        ("a" * MAX_PATH_COMPONENT, "a" * MAX_PATH_COMPONENT),
        ("a/" * (MAX_PATH_DEPTH - 1) + "x", "a/" * (MAX_PATH_DEPTH - 1) + "x"),
    ],
)
def test_path_accepted_and_normalised(path: str, normal: str) -> None:
    assert validate_path(path) == normal
    assert validate_path(normal) == normal


def _long_path() -> str:
    return "/".join(["a" * 100] * 41)  # 4140 bytes


@pytest.mark.parametrize(
    "path",
    [
        "",
        ".",
        "./",
        "//",
        "..",
        "../x",
        "../../etc/passwd",
        "a/../../b",
        "a/../b",
        "a/..",
        "/etc/passwd",
        "/",
        ".git",
        ".git/config",
        ".GIT/config",
        ".Git/HEAD",
        "sub/.git/hooks",
        "sub/.git",
        ".GIT./config",  # what NTFS, HFS+ and short names take for .git
        ".git /config",
        ".git::$INDEX_ALLOCATION/config",
        "git~1/config",
        "GIT~1",
        "x/.g\u200cit/config",
        "x/.\u200dGit\ufeff",
        "a\x00b",
        "a\\b",
        "..\\..\\windows",
        "a\x01b",
        "a\nb",
        "a\rb",
        "a\x1fb",
        "a\x7fb",
        "a\ud800b",
        "a" * (MAX_PATH_COMPONENT + 1),
        "é" * 128,
        "x/" + "a" * (MAX_PATH_COMPONENT + 1) + "/y",
        _long_path(),
        "a/" * MAX_PATH_DEPTH + "x",  # one directory too deep
    ],
    ids=lambda p: repr(p)[:30],
)
def test_path_refused(path: str) -> None:
    refused(validate_path, path)


def test_overall_path_limit() -> None:
    parts = ["a" * 200] * (MAX_PATH // 201)
    path = "/".join(parts)
    assert validate_path(path) == path
    refused(validate_path, path + "/" + "b" * (MAX_PATH - len(path)))


PATH_PIECES = [
    *["a", "b.txt", "é", "..", ".", "", ".git", ".GIT", ".gIt", "...", " ", "x y", ":"],
    *[".git.", "git~1", ".g\u200cit", ".gitmodules", "~1"],
]
path_strings = st.one_of(
    st.lists(st.sampled_from(PATH_PIECES), min_size=1, max_size=8).map("/".join),
    st.lists(st.sampled_from(PATH_PIECES), min_size=1, max_size=8).map(lambda p: "/" + "/".join(p)),
    st.text(alphabet="ab./\\\x00\x01gitGIT", max_size=20),
    st.text(max_size=30),
)


@settings(max_examples=500, deadline=None)
@given(path_strings)
def test_path_never_escapes_the_repository(path: str) -> None:
    try:
        normal = validate_path(path)
    except ProtocolError as exc:
        assert exc.code == ErrorCode.BAD_NAME
        return
    parts = normal.split("/")
    assert normal and not normal.startswith("/")
    assert ".." not in parts
    assert "." not in parts and "" not in parts
    assert all(not is_dotgit(part.encode("utf-8")) for part in parts)
    assert "\\" not in normal and "\x00" not in normal
    assert len(normal.encode("utf-8")) <= MAX_PATH
    assert validate_path(normal) == normal
    root = "/srv/repo"
    joined = posixpath.normpath(posixpath.join(root, normal))
    assert joined.startswith(root + "/")
    assert joined == posixpath.join(root, normal)  # nothing left for normpath to collapse


# -- document ids ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "repo", "branch", "path"),
    [
        ("demo/main:README.md", "demo", "main", "README.md"),
        ("demo/feature/x:src/app.py", "demo", "feature/x", "src/app.py"),
        ("demo/user/alice-1a2b:a//b/./c", "demo", "user/alice-1a2b", "a/b/c"),
        ("demo/main:docs/ü 世界.txt", "demo", "main", "docs/ü 世界.txt"),
        ("demo/main:a:b", "demo", "main", "a:b"),
    ],
)
def test_doc_id_parse(text: str, repo: str, branch: str, path: str) -> None:
    doc = DocId.parse(text)
    assert (doc.repo, doc.branch, doc.path) == (repo, branch, path)
    assert str(doc) == f"{repo}/{branch}:{path}"
    assert DocId.parse(str(doc)) == doc


@pytest.mark.parametrize(
    "text",
    [
        "",
        "demo",
        "demo/main",
        "demo:README.md",
        "/main:README.md",
        "demo/:README.md",
        "demo/main:",
        "demo/main:../../etc/passwd",
        "demo/main:/etc/passwd",
        "demo/main:.git/config",
        "demo/a..b:README.md",
        "demo/HEAD:README.md",
        "../demo/main:README.md",
        ". /main:x",
        "de mo/main:x",
    ],
    ids=repr,
)
def test_doc_id_refused(text: str) -> None:
    refused(DocId.parse, text)


def test_doc_id_constructor_validates() -> None:
    assert str(DocId("demo", "main", "a/b")) == "demo/main:a/b"
    with pytest.raises(ProtocolError):
        DocId("demo", "main", "a//b")
    with pytest.raises(ProtocolError):
        DocId("demo", "main", "../x")
    with pytest.raises(ProtocolError):
        DocId("demo", "a..b", "x")
    with pytest.raises(ProtocolError):
        DocId("a/b", "main", "x")


@settings(max_examples=100, deadline=None)
@given(
    st.from_regex(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,20}", fullmatch=True),
    st.from_regex(r"[a-z0-9_][a-z0-9_-]{0,7}(/[a-z0-9_][a-z0-9_-]{0,7}){0,2}", fullmatch=True),
    st.lists(st.text(alphabet="ab é.:", min_size=1, max_size=6), min_size=1, max_size=4),
)
def test_doc_id_round_trip(repo: str, branch: str, parts: list[str]) -> None:
    path = "/".join(parts)
    try:
        normal = validate_path(path)
    except ProtocolError:
        return
    doc = DocId.parse(f"{repo}/{branch}:{path}")
    assert doc == DocId(repo, branch, normal)
    assert DocId.parse(str(doc)) == doc
