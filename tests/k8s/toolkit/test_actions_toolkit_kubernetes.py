"""Issue 13's proof through the Kubernetes emulator: a JavaScript action from git running the real
`@actions/artifact` and `@actions/cache` in pods (upload a directory, download it in a later job,
save a cache, restore it by key and by restore-key in a later build). The pods reach the service's
artifact and cache endpoints at ACTIONS_PUBLIC_URL, as build pods reach the executor's Service in a
cluster. The test itself is the local runner's (tests/actions/test_toolkit_build.py)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.config import Settings
from tests.actions import test_toolkit_build as toolkit
from tests.artifacts.toolkit import JS, ensure_node_modules
from tests.k8s.gha_fixtures import kubernetes_settings, make_readable_dir
from tests.k8s_emulator.fixture import EmulatorProcess


@pytest.fixture(scope="module")
def node_modules() -> Iterator[Path]:
    """The packages the action's `node_modules` link points to, hard-linked where the pod's user
    (the emulator runs pods as uid 1000) can read them; a real action ships them as files."""
    ensure_node_modules()
    base = make_readable_dir("ci-k8s-deps-")
    target = base / "node_modules"
    subprocess.run(["cp", "-al", str(JS / "node_modules"), str(target)], check=True)
    yield target
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def settings_overrides(
    settings_overrides: dict[str, Any], emulator: EmulatorProcess
) -> dict[str, Any]:
    return {**settings_overrides, **kubernetes_settings(emulator)}


@pytest.mark.timeout(600)
async def test_artifacts_and_caches_through_the_real_toolkit_in_pods(
    live_url: str, settings: Settings
) -> None:
    assert settings.runner == "kubernetes"
    await toolkit.test_artifacts_and_caches_through_the_real_toolkit_in_builds(live_url, settings)
