"""The proof for real actions: a JavaScript action fetched from git (a bare repository the test
creates) that runs the real `@actions/artifact` and `@actions/cache` packages from npm, inside real
builds on the local runner, against the app served by a real uvicorn.

The actions are small stand-ins for upload-artifact/download-artifact and actions/cache, written
the same way (cache: `main` restores and records the key in `$GITHUB_STATE`, `post` saves under
`post-if: success()`). As real actions ship their dependencies in the repository, ours has a
`node_modules` link to a copy of tests/artifacts/js/node_modules outside the source tree (which a
sandboxed step cannot see)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.config import Settings
from tests.actions.repos import Repo
from tests.artifacts.toolkit import JS, ensure_node_modules
from tests.support import job, log_text, wait_for_build, workflow

ARTIFACT_YML = """
name: Artifact
inputs:
  mode: {required: true}
  name: {required: true}
  path: {required: true}
outputs:
  artifact-id: {description: the uploaded artifact's id}
runs:
  using: node20
  main: main.mjs
"""
ARTIFACT_JS = """
import { DefaultArtifactClient } from '@actions/artifact';
import fs from 'node:fs';
import path from 'node:path';

const e = process.env;
const walk = (dir) => fs.readdirSync(dir, { withFileTypes: true }).flatMap((entry) =>
  entry.isDirectory() ? walk(path.join(dir, entry.name)) : [path.join(dir, entry.name)]);
const client = new DefaultArtifactClient();
const root = path.resolve(e.GITHUB_WORKSPACE, e.INPUT_PATH);
if (e.INPUT_MODE === 'upload') {
  const { id, size } = await client.uploadArtifact(e.INPUT_NAME, walk(root), root);
  const name = e.INPUT_NAME;
  console.log(`Artifact ${name} has been successfully uploaded! Final size is ${size} bytes.`);
  fs.appendFileSync(e.GITHUB_OUTPUT, `artifact-id=${id}\\n`);
} else {
  const { artifact } = await client.getArtifact(e.INPUT_NAME);
  await client.downloadArtifact(artifact.id, { path: root, expectedHash: artifact.digest });
  console.log(`Artifact ${e.INPUT_NAME} downloaded to ${root}`);
}
"""
CACHE_YML = """
name: Cache
inputs:
  path: {required: true}
  key: {required: true}
  restore-keys: {default: ''}
outputs:
  cache-hit: {description: an exact match of the key}
runs:
  using: node20
  main: restore.mjs
  post: save.mjs
  post-if: success()
"""
# What actions/cache@v4 prints, in the same words.
RESTORE_JS = """
import * as cache from '@actions/cache';
import fs from 'node:fs';

const e = process.env;
const key = e.INPUT_KEY;
const restoreKeys = (e['INPUT_RESTORE-KEYS'] || '').split('\\n')
  .map((k) => k.trim())
  .filter(Boolean);
fs.appendFileSync(e.GITHUB_STATE, `CACHE_KEY=${key}\\n`);
const matched = await cache.restoreCache([e.INPUT_PATH], key, restoreKeys);
if (!matched) {
  console.log(`Cache not found for input keys: ${[key, ...restoreKeys].join(', ')}`);
} else {
  fs.appendFileSync(e.GITHUB_STATE, `CACHE_RESULT=${matched}\\n`);
  console.log(`Cache restored from key: ${matched}`);
}
fs.appendFileSync(e.GITHUB_OUTPUT, `cache-hit=${matched === key}\\n`);
"""
SAVE_JS = """
import * as cache from '@actions/cache';

const e = process.env;
const key = e.STATE_CACHE_KEY;
if (e.STATE_CACHE_RESULT === key) {
  console.log(`Cache hit occurred on the primary key ${key}, not saving cache.`);
} else {
  const id = await cache.saveCache([e.INPUT_PATH], key);
  if (id === -1) throw new Error(`cache ${key} was not saved`);
  console.log(`Cache saved with key: ${key}`);
}
"""

FIRST = """
jobs:
  A:
    steps:
      - run: |
          mkdir -p dist/nested deps-src
          echo alpha > dist/a.txt
          head -c 300000 /dev/urandom > dist/nested/b.bin
          sha256sum dist/nested/b.bin | cut -d' ' -f1 > dist/b.sum
      - id: up
        uses: acme/toolkit/artifact@v1
        with: {mode: upload, name: dist, path: dist}
      - id: deps
        name: Cache deps
        uses: acme/toolkit/cache@v1
        with:
          path: deps
          key: deps-v1-abc
          restore-keys: |
            deps-v1-
      - run: mkdir -p deps && echo "cached in build one" > deps/file.txt
  B:
    needs: A
    steps:
      - uses: acme/toolkit/artifact@v1
        with: {mode: download, name: dist, path: got}
      - run: |
          cat got/a.txt
          test "$(sha256sum got/nested/b.bin | cut -d' ' -f1)" = "$(cat got/b.sum)"
          echo DOWNLOAD-VERIFIED
"""
SECOND = """
jobs:
  C:
    steps:
      - id: exact
        name: Restore exact
        uses: acme/toolkit/cache@v1
        with: {path: deps, key: deps-v1-abc}
      - run: cat deps/file.txt && rm -rf deps
      - id: prefix
        name: Restore by prefix
        uses: acme/toolkit/cache@v1
        with: {path: deps, key: deps-v1-xyz, restore-keys: deps-v1-}
      - run: echo "hits=${{ steps.exact.outputs.cache-hit }},${{ steps.prefix.outputs.cache-hit }}"
      - run: cat deps/file.txt
"""


@pytest.fixture(scope="module")
def node_modules(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The packages, hard-linked (no copy of the bytes) outside the source tree."""
    ensure_node_modules()
    target = tmp_path_factory.mktemp("deps") / "node_modules"
    done = subprocess.run(["cp", "-al", str(JS / "node_modules"), str(target)], check=False)
    if done.returncode != 0:
        shutil.copytree(JS / "node_modules", target, symlinks=True)
    return target


@pytest.fixture
def settings_overrides(tmp_path: Path, node_modules: Path) -> dict[str, Any]:
    mirror = tmp_path / "mirror"
    repo = Repo(mirror, "acme", "toolkit")
    repo.commit(
        {
            "artifact/action.yml": ARTIFACT_YML,
            "artifact/main.mjs": ARTIFACT_JS,
            "cache/action.yml": CACHE_YML,
            "cache/restore.mjs": RESTORE_JS,
            "cache/save.mjs": SAVE_JS,
        },
        links={"node_modules": str(node_modules)},
    )
    repo.tag("v1")
    return {
        "actions_url": str(mirror),
        "actions_cache_dir": tmp_path / "actions-cache",
        "artifacts_dir": tmp_path / "artifact-store",
        "actions_token_secret": "proof-secret",
    }


async def run(api: httpx.AsyncClient, text: str) -> dict[str, Any]:
    response = await api.post(
        "/builds",
        json={
            "pipeline_id": "p1",
            "triggered_by": "t",
            "branch": "main",
            "workflow_yaml": workflow(text),
        },
    )
    assert response.status_code == 201, response.text
    return await wait_for_build(api, response.json()["id"], timeout=240)


async def test_artifacts_and_caches_through_the_real_toolkit_in_builds(
    live_url: str, settings: Settings
) -> None:
    settings.actions_public_url = live_url  # where the steps reach the service
    async with httpx.AsyncClient(base_url=f"{live_url}/api/v1", timeout=30) as api:
        first = await run(api, FIRST)
        text = await log_text(api, first["id"])
        assert first["status"] == "success", text
        names = [(s["name"], s["status"]) for s in job(first, "A")["steps"]]
        assert names[-1] == ("Post Cache deps", "success")
        assert "Artifact dist has been successfully uploaded!" in text
        assert "Cache not found for input keys: deps-v1-abc, deps-v1-" in text
        assert "Cache saved with key: deps-v1-abc" in text
        assert "alpha" in text and "DOWNLOAD-VERIFIED" in text
        artifact_id = job(first, "A")["steps"][1]["outputs"]["artifact-id"]
        listed = (await api.get(f"/builds/{first['id']}/artifacts")).json()["items"]
        assert [(a["name"], str(a["id"]), a["job_name"]) for a in listed] == [
            ("dist", artifact_id, "A")
        ]

        second = await run(api, SECOND)
        text = await log_text(api, second["id"])
        assert second["status"] == "success", text
        assert [s["name"] for s in job(second, "C")["steps"]][-2:] == [
            "Post Restore by prefix",
            "Post Restore exact",
        ]
        assert "Cache restored from key: deps-v1-abc" in text
        assert text.count("cached in build one") == 2  # by exact key, then by restore key
        assert "hits=true,false" in text
        assert "Cache hit occurred on the primary key deps-v1-abc, not saving cache." in text
        assert "Cache saved with key: deps-v1-xyz" in text
        caches = (await api.get("/build-caches", params={"pipeline_id": "p1"})).json()["items"]
        assert sorted(c["key"] for c in caches) == ["deps-v1-abc", "deps-v1-xyz"]
