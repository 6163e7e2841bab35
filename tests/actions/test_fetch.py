"""Actions from git against bare repositories the tests create (no network): resolution of tags,
branches and commits, sub-directory actions, the per-commit cache, concurrent fetches, moved
tags, and clear errors."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from app.actions import ActionError, ActionFetcher, ManifestError, parse_uses
from tests.actions.repos import Repo

COMPOSITE = """
name: Greet
inputs:
  who:
    description: whom
    default: world
  loud name:
    required: true
outputs:
  greeting:
    value: ${{ steps.say.outputs.text }}
runs:
  using: composite
  steps:
    - id: say
      run: echo "text=hello $INPUT_WHO" >> "$GITHUB_OUTPUT"
      shell: bash
"""

NODE = """
name: Node thing
runs:
  using: node20
  main: dist/index.js
  pre: dist/pre.js
  post: dist/post.js
  post-if: always()
"""

DOCKER = """
name: Container
runs:
  using: docker
  image: Dockerfile
"""


@pytest.fixture
def mirror(tmp_path: Path) -> Path:
    base = tmp_path / "mirror"
    base.mkdir()
    return base


@pytest.fixture
def fetcher(mirror: Path, tmp_path: Path) -> ActionFetcher:
    return ActionFetcher(str(mirror), tmp_path / "cache", timeout=60)


async def test_tag_branch_commit_and_subdirectory(mirror: Path, fetcher: ActionFetcher) -> None:
    repo = Repo(mirror, "acme", "greet")
    first = repo.commit({"action.yml": COMPOSITE, "node/action.yaml": NODE, "README": "1"})
    repo.tag("v1", annotated=True)

    by_tag = await fetcher.fetch("acme/greet@v1")
    assert by_tag.commit == first
    assert by_tag.manifest.kind == "composite" and by_tag.manifest.name == "Greet"
    assert (by_tag.root / "README").read_text() == "1"
    assert not (by_tag.root / ".git").exists()
    assert by_tag.manifest.input_env({"loud name": "X"}) == {
        "INPUT_WHO": "world",
        "INPUT_LOUD_NAME": "X",
    }
    assert by_tag.manifest.missing_inputs({}) == ["loud name"]

    node = await fetcher.fetch("acme/greet/node@main")
    assert node.commit == first and node.directory == node.root / "node"
    manifest = node.manifest
    assert (manifest.kind, manifest.using, manifest.main, manifest.pre, manifest.post) == (
        "node",
        "node20",
        "dist/index.js",
        "dist/pre.js",
        "dist/post.js",
    )
    assert manifest.post_if == "always()"
    by_sha = await fetcher.fetch(f"acme/greet@{first}")
    assert by_sha.root == by_tag.root  # cached by commit: one copy

    # A moved tag resolves to its new commit; the old commit's copy stays valid.
    second = repo.commit({"README": "2"})
    repo.tag("v1", annotated=True)
    moved = await fetcher.fetch("acme/greet@v1")
    assert moved.commit == second and (moved.root / "README").read_text() == "2"
    assert (by_tag.root / "README").read_text() == "1"


async def test_cached_commit_needs_no_server(mirror: Path, fetcher: ActionFetcher) -> None:
    repo = Repo(mirror, "acme", "cached")
    sha = repo.commit({"action.yml": COMPOSITE})
    await fetcher.fetch(f"acme/cached@{sha}")
    # The mirror disappears: a pinned commit is served from the cache alone.
    subprocess.run(["rm", "-rf", str(repo.bare)], check=True)
    again = await fetcher.fetch(f"acme/cached@{sha}")
    assert again.commit == sha and again.manifest.kind == "composite"


async def test_concurrent_fetches_share_one_copy(mirror: Path, tmp_path: Path) -> None:
    repo = Repo(mirror, "acme", "busy")
    sha = repo.commit({"action.yml": COMPOSITE, "big.txt": "x" * 100_000})
    repo.tag("v2")
    # Separate fetchers, as separate executor processes sharing ACTIONS_CACHE_DIR would be.
    fetchers = [ActionFetcher(str(mirror), tmp_path / "shared", timeout=60) for _ in range(6)]
    results = await asyncio.gather(*(f.fetch("acme/busy@v2") for f in fetchers))
    assert {r.commit for r in results} == {sha}
    assert {r.root for r in results} == {tmp_path / "shared" / "acme" / "busy" / sha}
    leftovers = sorted(p.name for p in (tmp_path / "shared" / "acme" / "busy").iterdir())
    assert leftovers == [sha, f"{sha}.lock"]


async def test_clear_errors(mirror: Path, fetcher: ActionFetcher) -> None:
    repo = Repo(mirror, "acme", "things")
    sha = repo.commit({"docker/action.yml": DOCKER, "bad/action.yml": "runs: [1", "x": "1"})
    with pytest.raises(ActionError, match="repository acme/missing not found"):
        await fetcher.fetch("acme/missing@v1")
    with pytest.raises(ActionError, match="no tag or branch 'v9'"):
        await fetcher.fetch("acme/things@v9")
    with pytest.raises(ActionError, match=r"commit 0{40} not found"):
        await fetcher.fetch("acme/things@" + "0" * 40)
    with pytest.raises(ManifestError, match=r"no action\.yml"):
        await fetcher.fetch(f"acme/things@{sha}")
    with pytest.raises(ManifestError, match="not valid YAML"):
        await fetcher.fetch("acme/things/bad@main")
    docker = await fetcher.fetch("acme/things/docker@main")
    assert not docker.manifest.supported
    assert "Docker actions (runs.using: docker) are not supported yet" in str(
        docker.manifest.unsupported_reason
    )


@pytest.mark.parametrize(
    ("uses", "message"),
    [
        ("./local", "local action"),
        ("docker://alpine:3", "Docker actions are not supported"),
        ("acme/repo", "expected owner/repo@ref"),
        ("acme@v1", "expected owner/repo@ref"),
        ("acme/../x@v1", "invalid owner or repository"),
        ("acme/repo/../../etc@v1", "may not contain"),
        ("acme/repo@--upload-pack=x", "invalid ref"),
        ("acme/repo/.github/workflows/ci.yml@main", "reusable workflows"),
    ],
)
def test_parse_refuses(uses: str, message: str) -> None:
    with pytest.raises(ActionError, match=message):
        parse_uses(uses)


def test_parse_accepts() -> None:
    ref = parse_uses("actions/cache/restore@v4")
    assert (ref.owner, ref.repo, ref.path, ref.ref) == ("actions", "cache", "restore", "v4")
    assert parse_uses("o/r@release/1.x").ref == "release/1.x"


def test_repository_url_forms(tmp_path: Path) -> None:
    ref = parse_uses("acme/tool@v1")
    assert ActionFetcher("https://git.example.internal/", tmp_path).repository_url(ref) == (
        "https://git.example.internal/acme/tool"
    )
    assert ActionFetcher(f"file://{tmp_path}", tmp_path).repository_url(ref) == str(
        tmp_path / "acme" / "tool.git"
    )
