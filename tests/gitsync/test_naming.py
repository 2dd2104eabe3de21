"""Participant branch names: readable, valid git branch names, never shared by two users."""

from __future__ import annotations

import hashlib
import subprocess

import pytest

from gitsync.naming import (
    is_participant_branch,
    participant_branch,
    participant_of,
    rescue_branch,
    slugify,
)
from protocol.names import validate_branch

USERS = [
    "alice",
    "Alice",
    "ALICE",
    "bob",
    "bob/x",
    "bob-x",
    "bob x",
    "bob.x",
    "José Müller",
    "jose muller",
    "世界",
    "🎉",
    "user",
    "-",
    "..",
    "a" * 300,
    "a" * 301,
    "x.lock",
    "HEAD",
    "@{upstream}",
    "name\nwith\tcontrol\x00chars",
]


def test_scheme_is_slug_and_hash_of_the_exact_id() -> None:
    digest = hashlib.sha256(b"Alice").hexdigest()[:8]
    assert participant_branch("Alice") == f"people/alice-{digest}"
    assert participant_branch("José Müller").startswith("people/jose-muller-")
    assert participant_branch("世界").startswith("people/user-")


@pytest.mark.parametrize("user", USERS)
def test_names_are_valid_branches(user: str) -> None:
    name = participant_branch(user)
    assert validate_branch(name) == name
    assert is_participant_branch(name)
    assert len(name) <= len("people/") + 32 + 9
    check = subprocess.run(["git", "check-ref-format", "--branch", name], capture_output=True)
    assert check.returncode == 0, check.stderr


def test_no_two_users_share_a_branch() -> None:
    names = {participant_branch(user) for user in USERS}
    assert len(names) == len(USERS)
    assert participant_branch("Alice") != participant_branch("alice")
    assert participant_branch("bob") != participant_branch("bob/x")
    assert slugify("bob/x") == slugify("bob-x")  # same slug, told apart by the hash


def test_name_is_stable() -> None:
    assert participant_branch("alice") == participant_branch("alice")


def test_empty_user_is_refused() -> None:
    with pytest.raises(ValueError):
        participant_branch("")


@pytest.mark.parametrize(
    "name",
    [
        "main",
        "people/alice",
        "people/alice-1234567",
        "people/Alice-12345678",
        "x/people/a-12345678",
    ],
)
def test_other_branches_are_not_participant_branches(name: str) -> None:
    assert not is_participant_branch(name)


def test_a_branch_belongs_to_the_longest_participant_name_it_begins_with() -> None:
    alice = participant_branch("alice")
    lookalike = participant_branch(alice.removeprefix("people/") + "-x")
    assert participant_of(alice) == alice
    assert participant_of(alice + "-fork-1") == alice
    assert participant_of(alice + "-fork-1-fork-2") == alice
    assert participant_of(alice + "-fork/sub-dir") == alice
    assert participant_of(lookalike) == lookalike
    assert participant_of(lookalike + "-fork-1") == lookalike
    assert participant_of(alice + "fork") is None  # no dash: another name
    assert participant_of("people/x") is None
    assert participant_of("main") is None
    assert participant_of("topic/" + alice) is None


def test_a_rescue_of_a_persons_branch_stays_theirs() -> None:
    alice = participant_branch("alice")
    commit = b"0850fb6f" + b"0" * 32
    assert rescue_branch("main", commit) == "main-rescued-0850fb6"
    assert rescue_branch("main", None) == "main-rescued"
    assert participant_of(rescue_branch(alice, commit)) == alice
    assert participant_of(rescue_branch(alice, commit) + "-2") == alice
    assert participant_of(rescue_branch(alice + "-fork-1", commit)) == alice
