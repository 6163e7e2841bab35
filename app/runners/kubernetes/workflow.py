"""The workflow runtime hook on the kubernetes runner.

When the executor attaches a `JobRuntime` to the job (`JobRun.runtime`, app/workflow/runtime.py:
GitHub's step-time expressions, contexts and runtime files), each step is prepared just before it
runs (its `if:`, `run:`, `env:` see the earlier steps' results) and its $GITHUB_OUTPUT, $GITHUB_ENV,
$GITHUB_PATH and $GITHUB_STEP_SUMMARY files are read back from the pod after it ends. The runtime
is typed structurally here so this package does not depend on the workflow package's internals.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from app.runners.base import JobRun, StepRun

WORKSPACE = "/workspace"
TEMP = "/ci/temp"  # RUNNER_TEMP: scripts, event.json
TOOL_CACHE = "/ci/tool-cache"
# Order matters: files_program prints them in this order.
RUNTIME_FILES = {
    "GITHUB_OUTPUT": "output",
    "GITHUB_ENV": "env",
    "GITHUB_PATH": "path",
    "GITHUB_STEP_SUMMARY": "summary",
}
_DEFAULT_MAX_FILE_BYTES = 1024 * 1024


class Prepared(Protocol):
    run: bool
    error: str | None
    argv: tuple[str, ...]
    script: str
    script_name: str
    env: dict[str, str]
    working_directory: str | None
    timeout_seconds: float | None
    continue_on_error: bool


class StepRuntime(Protocol):
    def start(self, *, workspace: str, temp: str, tool_cache: str) -> dict[str, str]: ...

    def prepare(
        self, step: StepRun, *, files: Mapping[str, str], temp: str, base_path: str
    ) -> Prepared: ...

    def finish(
        self, index: int, status: str, files: Any, *, continue_on_error: bool
    ) -> str | None: ...


def runtime_of(job: JobRun) -> StepRuntime | None:
    runtime: StepRuntime | None = getattr(job, "runtime", None)
    return runtime


def file_paths(index: int) -> dict[str, str]:
    return {name: f"/ci/run/{index}.{suffix}" for name, suffix in RUNTIME_FILES.items()}


@dataclass(frozen=True)
class _Files:
    """Stand-in with RuntimeFiles' fields, until the workflow runtime module is present."""

    output: str = ""
    env: str = ""
    path: str = ""
    summary: str = ""


def _runtime_module() -> Any:
    try:
        return importlib.import_module("app.workflow.runtime")
    except ImportError:
        return None


def max_file_bytes() -> int:
    module = _runtime_module()
    return int(getattr(module, "MAX_FILE_BYTES", _DEFAULT_MAX_FILE_BYTES))


def runtime_files(contents: list[str] | None = None) -> Any:
    """The workflow package's RuntimeFiles with the files' contents (all empty by default)."""
    module = _runtime_module()
    factory = getattr(module, "RuntimeFiles", _Files)
    values = contents or ["", "", "", ""]
    return factory(**dict(zip(RUNTIME_FILES.values(), values, strict=True)))


def parse_files(data: bytes, count: int) -> list[str]:
    """Undo files_program: `<n>\\n` followed by n bytes, `count` times."""
    out: list[str] = []
    rest = data
    for _ in range(count):
        head, _, rest = rest.partition(b"\n")
        n = int(head) if head.strip().isdigit() else 0
        out.append(rest[:n].decode("utf-8", "replace"))
        rest = rest[n:]
    return out
