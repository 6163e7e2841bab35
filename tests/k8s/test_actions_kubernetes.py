"""Actions in pods: the actions suite's composite and JavaScript cases (tests/actions/) run again,
case by case, through the service with RUNNER=kubernetes and the in-repo emulator. Action trees
travel into the pod as a tar on the exec's stdin and are unpacked there by the image's `tar`; node
phases run with the image's `node`; a local action's action.yml is read from the pod's workspace."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.actions import test_composite as composite
from tests.actions import test_javascript as javascript
from tests.actions.test_javascript import mirror  # noqa: F401 (a fixture: the actions' git repos)
from tests.k8s.gha_fixtures import kubernetes_settings, readable_tmp  # noqa: F401
from tests.k8s_emulator.fixture import EmulatorProcess

Case = Callable[..., Awaitable[None]]
CASES: list[Case] = [
    composite.test_local_composite_inputs_outputs_nested_if_env_and_action_path,
    composite.test_composite_failure_skips_the_rest_unless_a_status_function_says_otherwise,
    composite.test_remote_composite_nesting_a_remote_action_runs_the_commit_pinned_at_creation,
    javascript.test_pre_main_post_with_state_post_if_and_the_toolkit_environment,
    javascript.test_a_skipped_step_has_no_post,
    javascript.test_a_missing_node_is_a_clear_step_error,
]


@pytest.fixture
def settings_overrides(
    tmp_path: Path,
    emulator: EmulatorProcess,
    readable_tmp: Path,  # noqa: F811 (the fixture)
) -> dict[str, Any]:
    repos = readable_tmp / "mirror"  # a local action's repository is checked out in the pod
    repos.mkdir()
    return {
        "actions_url": str(repos),
        "actions_cache_dir": tmp_path / "actions-cache",
        "actions_public_url": "http://ci.example.test:8000",
        **kubernetes_settings(emulator),
    }


@pytest.mark.parametrize("case", CASES, ids=[c.__name__.removeprefix("test_") for c in CASES])
async def test_actions_case_on_kubernetes(
    case: Case,
    client: httpx.AsyncClient,
    mirror: Path,  # noqa: F811 (the fixture above)
) -> None:
    arguments: dict[str, Any] = {"client": client}
    if "mirror" in inspect.signature(case).parameters:
        arguments["mirror"] = mirror
    await case(**arguments)
