"""The real `@actions/cache` (what actions/cache@v4 and the setup-* actions run) against a real
uvicorn serving the app: both cache service protocols the toolkit speaks (v2 Twirp, and the v1
REST API it uses whenever GITHUB_SERVER_URL is not github.com), both storage backends, both
databases. Misses, restore-key hits, the default-branch fallback and LRU eviction are observed
the way a workflow observes them: through the toolkit's return values."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.artifacts.tokens import issue_runtime_token
from tests.artifacts.conftest import storage_settings
from tests.artifacts.test_toolkit_artifacts import new_build, tree
from tests.artifacts.toolkit import TOKEN_SECRET, ensure_node_modules, run_toolkit, step_env

ENTRY = 200_000  # bytes of random (incompressible) content per cache entry
CAP = int(ENTRY * 2.5)  # room for two entries, not three


@pytest.fixture(params=["directory-v1", "directory-v2", "s3-v2"])
def settings_overrides(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    ensure_node_modules()
    kind = str(request.param).split("-")[0]
    return {
        **storage_settings(kind, tmp_path, request),
        "actions_token_secret": TOKEN_SECRET,
        "cache_max_bytes": CAP,
        "cache_default_branch": "main",
    }


@pytest.fixture
def protocol(settings_overrides: dict[str, Any], request: pytest.FixtureRequest) -> dict[str, str]:
    del settings_overrides
    version = request.node.callspec.params["settings_overrides"].split("-")[1]
    return {"ACTIONS_CACHE_SERVICE_V2": "true"} if version == "v2" else {}


class Job:
    """One job of one build: its own workspace, token and toolkit environment."""

    def __init__(
        self, live_url: str, build_id: int, name: str, root: Path, extra: dict[str, str]
    ) -> None:
        self.workdir = root / f"b{build_id}-{name}"
        self.workdir.mkdir(parents=True)
        token = issue_runtime_token(TOKEN_SECRET, build_id, name, 3600)
        self.env = step_env(live_url, token, self.workdir, **extra)

    def fill(self, seed: str) -> dict[str, bytes]:
        deps = self.workdir / "deps"
        deps.mkdir(exist_ok=True)
        (deps / "seed.txt").write_text(seed)
        (deps / "blob.bin").write_bytes(os.urandom(ENTRY))
        return tree(deps)

    async def save(self, key: str) -> int:
        done = await run_toolkit(self.env, "save-cache", "deps", key)
        assert done.code == 0, done.output
        cache_id: int = done.result["cacheId"]
        return cache_id

    async def restore(self, key: str, *restore_keys: str) -> str | None:
        done = await run_toolkit(self.env, "restore-cache", "deps", key, *restore_keys)
        assert done.code == 0, done.output
        matched: str | None = done.result["matchedKey"]
        return matched

    def restored(self) -> dict[str, bytes]:
        return tree(self.workdir / "deps")


async def test_save_restore_restore_keys_and_misses(
    live_url: str, tmp_path: Path, protocol: dict[str, str]
) -> None:
    first = Job(live_url, await new_build(live_url, "feature"), "build", tmp_path, protocol)
    assert await first.restore("deps-v1-abc", "deps-v1-") is None  # cold: a miss
    saved = first.fill("one")
    assert await first.save("deps-v1-abc") != -1
    # Caches are immutable: saving the same key again is refused (the toolkit warns, -1).
    assert await first.save("deps-v1-abc") == -1

    later = Job(live_url, await new_build(live_url, "feature"), "build", tmp_path, protocol)
    assert await later.restore("deps-v1-abc") == "deps-v1-abc"
    assert later.restored() == saved
    other = Job(live_url, await new_build(live_url, "feature"), "test", tmp_path, protocol)
    # No exact hit: the restore key matches by prefix.
    assert await other.restore("deps-v1-zzz", "nothing-", "deps-v1-") == "deps-v1-abc"
    assert other.restored() == saved
    assert await other.restore("deps-v2-abc", "deps-v2-") is None

    # Another branch does not see feature's caches...
    elsewhere = Job(live_url, await new_build(live_url, "topic"), "build", tmp_path, protocol)
    assert await elsewhere.restore("deps-v1-abc", "deps-v1-") is None
    # ...but every branch falls back to the default branch's.
    main = Job(live_url, await new_build(live_url, "main"), "build", tmp_path, protocol)
    main_content = main.fill("main")
    assert await main.save("deps-v1-main") != -1
    assert await elsewhere.restore("deps-v1-abc", "deps-v1-") == "deps-v1-main"
    assert elsewhere.restored() == main_content

    async with httpx.AsyncClient(base_url=f"{live_url}/api/v1") as client:
        listing = (await client.get("/build-caches", params={"pipeline_id": "p1"})).json()
        assert sorted((c["key"], c["branch"]) for c in listing["items"]) == [
            ("deps-v1-abc", "feature"),
            ("deps-v1-main", "main"),
        ]
        deleted = await client.delete(
            "/build-caches", params={"pipeline_id": "p1", "key": "deps-v1-abc"}
        )
        assert deleted.json() == {"deleted": 1}
    assert await later.restore("deps-v1-abc") is None


async def test_least_recently_used_is_evicted_over_the_cap(
    live_url: str, tmp_path: Path, protocol: dict[str, str]
) -> None:
    job = Job(live_url, await new_build(live_url, "feature"), "build", tmp_path, protocol)
    job.fill("a")
    assert await job.save("a") != -1
    job.fill("b")
    assert await job.save("b") != -1
    # Using "a" makes "b" the least recently used one.
    reader = Job(live_url, await new_build(live_url, "feature"), "build", tmp_path, protocol)
    assert await reader.restore("a") == "a"
    job.fill("c")
    assert await job.save("c") != -1  # over the cap: "b" goes

    assert await reader.restore("b") is None
    assert await reader.restore("a") == "a"
    assert await reader.restore("c") == "c"
    async with httpx.AsyncClient(base_url=f"{live_url}/api/v1") as client:
        listing = (await client.get("/build-caches", params={"pipeline_id": "p1"})).json()
    assert sorted(c["key"] for c in listing["items"]) == ["a", "c"]
    assert listing["total_bytes"] <= CAP
