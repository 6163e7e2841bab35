"""Issue 13's proof through the Kubernetes emulator: a JavaScript action from git running the real
`@actions/artifact` and `@actions/cache` in pods (upload a directory, download it in a later job,
save a cache, restore it by key and by restore-key in a later build). The pods reach the service's
artifact and cache endpoints at ACTIONS_PUBLIC_URL, as build pods reach the executor's Service in a
cluster. The test itself is the local runner's (tests/actions/test_toolkit_build.py)."""

from __future__ import annotations

from typing import Any

import pytest

from app.config import Settings
from tests.actions import test_toolkit_build as toolkit
from tests.k8s.gha_fixtures import kubernetes_settings
from tests.k8s_emulator.fixture import EmulatorProcess


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
