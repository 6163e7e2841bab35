"""The workflow runtime in a pod: where its files live and how they travel.

When the executor attaches a `JobRuntime` to the job (`JobRun.runtime`, app/workflow/runtime.py:
GitHub's step-time expressions, contexts and runtime files), each step is prepared just before it
runs (its `if:`, `run:`, `env:` see the earlier steps' results) and its runtime files
($GITHUB_OUTPUT, $GITHUB_ENV, $GITHUB_PATH, $GITHUB_STEP_SUMMARY, a JavaScript action's
$GITHUB_STATE) are read back from the pod after it ends (steps.py drives the steps).
"""

from __future__ import annotations

from app.workflow.runtime import RuntimeFiles

WORKSPACE = "/workspace"
TEMP = "/ci/temp"  # RUNNER_TEMP: scripts, event.json
TOOL_CACHE = "/ci/tool-cache"
# The runtime files' names and RuntimeFiles' fields.
RUNTIME_FILES = {
    "GITHUB_OUTPUT": "output",
    "GITHUB_ENV": "env",
    "GITHUB_PATH": "path",
    "GITHUB_STEP_SUMMARY": "summary",
    "GITHUB_STATE": "state",
}


def runtime_files_named(contents: dict[str, str]) -> RuntimeFiles:
    """RuntimeFiles from the files' contents by name (GITHUB_OUTPUT -> text ...)."""
    return RuntimeFiles(**{field: contents.get(name, "") for name, field in RUNTIME_FILES.items()})


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
