"""The real `@actions/artifact` (what upload-artifact@v4 / download-artifact@v4 run) against a real
uvicorn serving the app, on both databases and both storage backends."""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.artifacts.tokens import issue_runtime_token
from tests.artifacts.conftest import storage_settings
from tests.artifacts.toolkit import TOKEN_SECRET, ensure_node_modules, run_toolkit, step_env
from tests.helpers import workflow

WORKFLOW = workflow(
    """
    jobs:
      build:
        steps:
          - run: echo build
      test:
        needs: build
        steps:
          - run: echo test
    """
)


@pytest.fixture(params=["directory", "s3"])
def settings_overrides(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    ensure_node_modules()
    return {
        **storage_settings(request.param, tmp_path, request),
        "actions_token_secret": TOKEN_SECRET,
    }


async def new_build(live_url: str, branch: str = "feature") -> int:
    async with httpx.AsyncClient(base_url=f"{live_url}/api/v1") as client:
        response = await client.post(
            "/builds",
            json={
                "pipeline_id": "p1",
                "triggered_by": "t",
                "branch": branch,
                "workflow_yaml": WORKFLOW,
                "dispatch": False,
            },
        )
        assert response.status_code == 201, response.text
        build_id: int = response.json()["id"]
        return build_id


def tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


async def test_upload_then_download_in_another_job(live_url: str, tmp_path: Path) -> None:
    build_id = await new_build(live_url)
    source = tmp_path / "dist"
    (source / "nested" / "deeper").mkdir(parents=True)
    (source / "a.txt").write_text("hello artifacts\n")
    (source / "nested" / "b.bin").write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    # Incompressible and larger than one 8 MiB upload block: several blocks, a block list.
    (source / "nested" / "deeper" / "big.bin").write_bytes(os.urandom(11 * 1024 * 1024))

    build_env = step_env(
        live_url, issue_runtime_token(TOKEN_SECRET, build_id, "build", 3600), tmp_path / "job1"
    )
    uploaded = await run_toolkit(build_env, "upload", "dist", str(source), "5")
    assert uploaded.code == 0, uploaded.output
    assert uploaded.result["size"] > 14 * 1024 * 1024

    # Another job of the same build finds it by name and downloads it (digest checked).
    test_env = step_env(
        live_url, issue_runtime_token(TOKEN_SECRET, build_id, "test", 3600), tmp_path / "job2"
    )
    listed = await run_toolkit(test_env, "list")
    assert listed.code == 0, listed.output
    assert [(a["name"], a["id"]) for a in listed.result["artifacts"]] == [
        ("dist", uploaded.result["id"])
    ]
    dest = tmp_path / "job2" / "out"
    downloaded = await run_toolkit(test_env, "download", "dist", str(dest))
    assert downloaded.code == 0, downloaded.output
    assert downloaded.result["digestMismatch"] is False
    assert downloaded.result["digest"] == f"sha256:{uploaded.result['digest']}"
    assert tree(dest) == tree(source)

    # The same name again in this build is refused as on GitHub; after a delete it is accepted.
    again = await run_toolkit(build_env, "upload", "dist", str(source))
    assert again.code == 1
    assert again.error is not None and "already exists" in again.error["message"]
    deleted = await run_toolkit(build_env, "delete", "dist")
    assert deleted.code == 0, deleted.output
    assert deleted.result["id"] == uploaded.result["id"]
    (source / "a.txt").write_text("second version\n")
    again = await run_toolkit(build_env, "upload", "dist", str(source))
    assert again.code == 0, again.output

    # The public API lists it with its size and serves the very same zip, streamed.
    async with httpx.AsyncClient(base_url=f"{live_url}/api/v1") as client:
        listing = (await client.get(f"/builds/{build_id}/artifacts")).json()
        [item] = listing["items"]
        assert item["name"] == "dist" and item["job_name"] == "build"
        assert item["size"] == again.result["size"]
        assert item["digest"] == f"sha256:{again.result['digest']}"
        response = await client.get(item["download_url"].removeprefix("/api/v1"))
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/zip"
        assert hashlib.sha256(response.content).hexdigest() == again.result["digest"]
        with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
            assert archive.read("a.txt") == b"second version\n"
            assert archive.read("nested/deeper/big.bin") == tree(source)["nested/deeper/big.bin"]


async def test_token_dies_with_its_build(live_url: str, tmp_path: Path) -> None:
    build_id = await new_build(live_url)
    source = tmp_path / "src"
    source.mkdir()
    (source / "f.txt").write_text("x")
    env = step_env(
        live_url, issue_runtime_token(TOKEN_SECRET, build_id, "build", 3600), tmp_path / "job"
    )
    assert (await run_toolkit(env, "upload", "one", str(source))).code == 0
    async with httpx.AsyncClient(base_url=f"{live_url}/api/v1") as client:
        assert (await client.post(f"/builds/{build_id}/cancel")).status_code == 202
    refused = await run_toolkit(env, "upload", "two", str(source))
    assert refused.code == 1
    assert refused.error is not None and "401" in refused.error["message"]
    # A token signed with another secret is refused too, whatever build it names.
    other = await new_build(live_url)
    forged = step_env(
        live_url, issue_runtime_token("not-the-secret", other, "build", 3600), tmp_path / "f"
    )
    refused = await run_toolkit(forged, "list")
    assert refused.code == 1 and refused.error is not None and "401" in refused.error["message"]
