"""hashFiles() in a pod: GitHub's pattern rules (app/runners/kubernetes/hashfiles.py), and the
hasher through the emulator on patterns whose meaning GitHub documents but a plain glob misses."""

from __future__ import annotations

import hashlib
from typing import Any

import httpx
import pytest

from app.workflow.hashfiles import parse_patterns, search_roots, select
from tests.k8s.gha_fixtures import kubernetes_settings
from tests.support import create, log_text, wait_for_build, workflow

FILES = [
    "package-lock.json",
    "app/package-lock.json",
    "app/sub/package-lock.json",
    "src/main.py",
    "src/gen/out.py",
    "src/.hidden",
    "src-old/x.py",
    "a-b/c.txt",
    "a/c.txt",
]


def chosen(*patterns: str) -> list[str]:
    return select(parse_patterns(list(patterns), "/workspace"), FILES)


@pytest.mark.parametrize(
    ("patterns", "expected"),
    [
        (
            ["**/package-lock.json"],
            ["app/package-lock.json", "app/sub/package-lock.json", "package-lock.json"],
        ),
        (["package-lock.json"], ["package-lock.json"]),
        (["./app/*/package-lock.json"], ["app/sub/package-lock.json"]),
        # a directory stands for every file beneath it; dotfiles are matched
        (["src"], ["src/.hidden", "src/gen/out.py", "src/main.py"]),
        (["src/**"], ["src/.hidden", "src/gen/out.py", "src/main.py"]),
        (["src/**/*.py"], ["src/gen/out.py", "src/main.py"]),
        (["src*/*.py"], ["src/main.py", "src-old/x.py"]),
        # excludes remove what earlier patterns selected; a later include selects again
        (["src/**", "!src/gen"], ["src/.hidden", "src/main.py"]),
        (["src/**", "!**/*.py", "src/gen/*.py"], ["src/.hidden", "src/gen/out.py"]),
        (["**/?.txt"], ["a/c.txt", "a-b/c.txt"]),
        (["**/[ab]/c.txt"], ["a/c.txt"]),
        (["**/[!a]/c.txt"], []),
        # absolute patterns count inside the workspace only; comments and blank lines are skipped
        (["/workspace/src/main.py", "/etc/passwd"], ["src/main.py"]),
        (["# a comment\n\nsrc/main.py"], ["src/main.py"]),
        (["!src"], []),
        (["nothing-*"], []),
    ],
)
def test_github_pattern_rules(patterns: list[str], expected: list[str]) -> None:
    assert chosen(*patterns) == expected


def test_files_come_in_path_order_segment_by_segment() -> None:
    # "a/c.txt" before "a-b/c.txt": segments compare first ("a" < "a-b"), as the local runner's
    # sorted Paths do; a plain string sort would put "a-b/..." first ('-' < '/').
    assert chosen("**/c.txt") == ["a/c.txt", "a-b/c.txt"]


@pytest.mark.parametrize(
    ("patterns", "roots"),
    [
        (["**/package-lock.json"], ["."]),
        (["src/**/*.py", "src/gen/x", "app/*.json"], ["app", "src"]),
        (["src/main.py", "!src/gen"], ["src/main.py"]),
        (["Cargo.lock", "src"], ["Cargo.lock", "src"]),
        (["a/b/c", "a/b", "*/x"], ["."]),
    ],
)
def test_only_the_patterns_fixed_parts_are_listed(patterns: list[str], roots: list[str]) -> None:
    assert search_roots(parse_patterns(patterns, "/workspace")) == roots


@pytest.fixture
def settings_overrides(emulator: Any) -> dict[str, Any]:
    return kubernetes_settings(emulator)


async def test_directories_excludes_and_absolute_patterns_in_a_pod(
    client: httpx.AsyncClient,
) -> None:
    created = await create(
        client,
        workflow(
            """
            jobs:
              build:
                steps:
                  - run: |
                      mkdir -p src/gen
                      printf main > src/main.py
                      printf generated > src/gen/out.py
                      printf 'with space' > 'src/a file.txt'
                  - run: |
                      echo "dir=${{ hashFiles('src') }}"
                      echo "excl=${{ hashFiles('src/**', '!src/gen') }}"
                      echo "abs=${{ hashFiles(format('{0}/src/main.py', github.workspace)) }}"
                      echo "outside=[${{ hashFiles('/etc/passwd') }}]"
            """
        ),
    )
    done = await wait_for_build(client, created["id"])
    text = await log_text(client, done["id"])
    assert done["status"] == "success", text

    def digest(*contents: bytes) -> str:
        total = hashlib.sha256()
        for content in contents:
            total.update(hashlib.sha256(content).digest())
        return total.hexdigest()

    # src/a file.txt, src/gen/out.py, src/main.py
    assert f"dir={digest(b'with space', b'generated', b'main')}" in text
    assert f"excl={digest(b'with space', b'main')}" in text
    assert f"abs={digest(b'main')}" in text
    assert "outside=[]" in text
