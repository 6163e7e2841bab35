"""Fixtures shared by the GitHub Actions / actions suites run through the Kubernetes emulator.

The emulator runs pod processes as the pod's `runAsUser` (1000), like a node; pytest's own
temporary directories belong to root with mode 0700. What a step must read from the host (the
repository a `file://` checkout clones, an action's linked `node_modules` in the tests) goes to
`readable_tmp` instead, as it would be readable (cloned over the network, shipped in the action's
repository) in a real cluster."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.k8s_emulator.fixture import EmulatorProcess


def make_readable_dir(prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


@pytest.fixture
def readable_tmp() -> Iterator[Path]:
    """A fresh directory every user can read (removed after the test)."""
    path = make_readable_dir("ci-k8s-test-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def kubernetes_settings(emulator: EmulatorProcess) -> dict[str, Any]:
    """The settings that make the service run its jobs through the emulator."""
    return {
        "runner": "kubernetes",
        "kubeconfig": str(emulator.kubeconfig_path),
        "k8s_namespace": "ci",
        "k8s_marker_secret": "test-marker-secret",
    }
