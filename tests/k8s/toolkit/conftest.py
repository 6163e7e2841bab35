"""The actions toolkit proof's fixtures (tests/actions/test_toolkit_build.py), so that the module
here can extend its settings with the Kubernetes runner's."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.actions.test_toolkit_build import settings_overrides
from tests.artifacts.toolkit import JS, ensure_node_modules

__all__ = ["node_modules", "settings_overrides"]


@pytest.fixture(scope="module")
def node_modules() -> Iterator[Path]:
    """The packages, hard-linked outside the source tree, where the pods' user can read them:
    the emulator runs pod processes as the pod's non-root user, and pytest's tmp dirs are
    private (0700)."""
    ensure_node_modules()
    top = Path(tempfile.mkdtemp(prefix="ci-node-modules-"))
    os.chmod(top, 0o755)
    target = top / "node_modules"
    done = subprocess.run(["cp", "-al", str(JS / "node_modules"), str(target)], check=False)
    if done.returncode != 0:
        shutil.copytree(JS / "node_modules", target, symlinks=True)
    yield target
    shutil.rmtree(top, ignore_errors=True)
