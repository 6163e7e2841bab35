"""hashFiles over a real directory (the local runner's): GitHub's digest-of-digests, patterns,
exclusions, directories meaning their files (@actions/glob's implicitDescendants)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from app.workflow.expressions import ExpressionEvalError, evaluate
from app.workflow.hashfiles import hash_files


def hash_workspace_files(workspace: Path, patterns: list[str]) -> str:
    return hash_files(str(workspace))(patterns)


def _expected(*contents: bytes) -> str:
    total = hashlib.sha256()
    for content in contents:
        total.update(hashlib.sha256(content).digest())
    return total.hexdigest()


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    (tmp_path / "a.lock").write_bytes(b"alpha")
    (tmp_path / "sub" / "deep").mkdir(parents=True)
    (tmp_path / "sub" / "b.lock").write_bytes(b"beta")
    (tmp_path / "sub" / "deep" / "c.lock").write_bytes(b"gamma")
    (tmp_path / "sub" / "notes.txt").write_bytes(b"text")
    return tmp_path


def test_no_match_is_empty(workspace: Path) -> None:
    assert hash_workspace_files(workspace, ["**/*.nothing"]) == ""


def test_digest_of_digests_in_path_order(workspace: Path) -> None:
    assert hash_workspace_files(workspace, ["**/*.lock"]) == _expected(b"alpha", b"beta", b"gamma")
    assert hash_workspace_files(workspace, ["a.lock"]) == _expected(b"alpha")


def test_several_patterns_and_exclusions(workspace: Path) -> None:
    assert hash_workspace_files(workspace, ["**/*.lock", "!sub/deep/**"]) == _expected(
        b"alpha", b"beta"
    )
    assert hash_workspace_files(workspace, ["a.lock", "sub/*.txt"]) == _expected(b"alpha", b"text")
    assert hash_workspace_files(workspace, ["sub/**"]) == _expected(b"beta", b"gamma", b"text")
    # One argument may hold several lines, as in GitHub.
    assert hash_workspace_files(workspace, ["a.lock\n# a comment\nsub/*.txt"]) == _expected(
        b"alpha", b"text"
    )


def test_outside_paths_are_ignored_and_a_directory_means_its_files(
    workspace: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    outside = tmp_path_factory.mktemp("outside")
    (outside / "x.lock").write_bytes(b"outside")
    (workspace / "link.lock").symlink_to(outside / "x.lock")
    assert hash_workspace_files(workspace, ["**/*.lock"]) == _expected(b"alpha", b"beta", b"gamma")
    assert hash_workspace_files(workspace, [str(outside / "x.lock")]) == ""
    beneath = _expected(b"beta", b"gamma", b"text")
    assert hash_workspace_files(workspace, ["sub"]) == beneath  # as `sub/**` on GitHub
    assert hash_workspace_files(workspace, ["sub/"]) == beneath
    assert hash_workspace_files(workspace, ["sub", "!sub/deep"]) == _expected(b"beta", b"text")
    assert hash_workspace_files(workspace, [str(workspace / "a.lock")]) == _expected(b"alpha")


def test_changes_when_content_changes(workspace: Path) -> None:
    before = hash_workspace_files(workspace, ["**/*.lock"])
    (workspace / "sub" / "b.lock").write_bytes(b"beta2")
    assert hash_workspace_files(workspace, ["**/*.lock"]) != before


def test_through_the_expression_engine(workspace: Path) -> None:
    value = evaluate(
        "format('deps-{0}', hashFiles('**/*.lock', '!a.lock'))",
        {},
        hash_files=hash_files(str(workspace)),
    )
    assert value == "deps-" + _expected(b"beta", b"gamma")


def test_a_literal_pattern_does_not_list_the_whole_workspace(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The listing bound applies to what is walked: naming one file in a workspace holding more
    # files than the bound (a node_modules, say) must not walk, nor fail on, the rest.
    monkeypatch.setattr("app.workflow.hashfiles.MAX_LISTED", 2)
    assert hash_workspace_files(workspace, ["a.lock"]) == _expected(b"alpha")
    assert hash_workspace_files(workspace, ["sub/deep"]) == _expected(b"gamma")
    with pytest.raises(ExpressionEvalError, match="more than 2 files"):
        hash_workspace_files(workspace, ["**/*.lock"])
