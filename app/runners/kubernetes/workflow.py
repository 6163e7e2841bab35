"""The workflow runtime in a pod: where its files live and how they travel.

When the executor attaches a `JobRuntime` to the job (`JobRun.runtime`, app/workflow/runtime.py:
GitHub's step-time expressions, contexts and runtime files), each step is prepared just before it
runs (its `if:`, `run:`, `env:` see the earlier steps' results) and its $GITHUB_OUTPUT, $GITHUB_ENV,
$GITHUB_PATH and $GITHUB_STEP_SUMMARY files are read back from the pod after it ends.
"""

from __future__ import annotations

from app.workflow.runtime import MAX_FILE_BYTES, RuntimeFiles

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


def file_paths(index: int) -> dict[str, str]:
    return {name: f"/ci/run/{index}.{suffix}" for name, suffix in RUNTIME_FILES.items()}


def max_file_bytes() -> int:
    return MAX_FILE_BYTES


def runtime_files(contents: list[str] | None = None) -> RuntimeFiles:
    """RuntimeFiles with the files' contents (all empty by default)."""
    values = contents or ["", "", "", ""]
    return RuntimeFiles(**dict(zip(RUNTIME_FILES.values(), values, strict=True)))


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
