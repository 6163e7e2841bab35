"""Run the real toolkit packages (tests/artifacts/js) with the environment a runner gives a step."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

JS = Path(__file__).resolve().parent / "js"
SCRIPT = JS / "toolkit.mjs"
TOKEN_SECRET = "toolkit-test-secret"


def ensure_node_modules() -> None:
    """`npm ci` once (from the committed lockfile) if the packages are not installed yet."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("node and npm are required for the toolkit tests (see .ci/run)")
    marker = JS / "node_modules" / ".package-lock.json"
    if not marker.is_file():
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"], cwd=JS, check=True, capture_output=True
        )


@dataclass
class ToolkitResult:
    code: int
    output: str
    result: Any
    error: dict[str, str] | None


def step_env(base_url: str, token: str, workdir: Path, **extra: str) -> dict[str, str]:
    """GitHub's runtime variables for one step of one job."""
    temp = workdir / "runner-temp"
    temp.mkdir(parents=True, exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(workdir),
        "ACTIONS_RUNTIME_TOKEN": token,
        "ACTIONS_RUNTIME_URL": f"{base_url}/_actions/runtime/",
        "ACTIONS_RESULTS_URL": f"{base_url}/",
        "ACTIONS_CACHE_URL": f"{base_url}/_actions/cache/",
        "GITHUB_WORKSPACE": str(workdir),
        "RUNNER_TEMP": str(temp),
        "GITHUB_REF": "refs/heads/feature",
        # Short retry pauses so a refused request fails fast.
        "ACTIONS_ARTIFACT_UPLOAD_CONCURRENCY": "4",
        "SEGMENT_DOWNLOAD_TIMEOUT_MINS": "1",
    }
    env.update(extra)
    return env


async def run_toolkit(env: dict[str, str], *args: str) -> ToolkitResult:
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(SCRIPT),
        *args,
        cwd=env["GITHUB_WORKSPACE"],
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 180)
    text = out.decode(errors="replace")
    result: Any = None
    error: dict[str, str] | None = None
    for line in text.splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line[7:])
        elif line.startswith("ERROR "):
            error = json.loads(line[6:])
    assert proc.returncode is not None
    return ToolkitResult(proc.returncode, text, result, error)
