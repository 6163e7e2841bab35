"""What a runner needs to run a JavaScript action's phases (the seam for the job runtime).

Pure helpers, no process handling of their own: the runner executes `NodePhase.argv` as a step
process with `action_env(...)` added to the step's environment, reads `$GITHUB_STATE` after
`pre`/`main` with `parse_env_file`, and passes the result as `STATE_*` to the later phases.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from app.actions.errors import ActionError
from app.actions.fetch import FetchedAction

# GitHub runs `pre` and `post` under always() unless the action says otherwise.
DEFAULT_POST_IF = "always()"
DEFAULT_PRE_IF = "always()"
_HEREDOC = re.compile(r"^([^=<\s][^=<]*)<<(.+)$")


@dataclass(frozen=True)
class NodePhase:
    phase: str  # "pre", "main" or "post"
    argv: list[str]
    condition: str | None  # pre-if / post-if (an expression), None for main


def find_node(fetched: FetchedAction, path: str | None) -> str:
    """The `node` binary on the step's PATH, or a clear error for the step's log."""
    found = shutil.which("node", path=path)
    if found is None:
        raise ActionError(
            f"{fetched.ref.slug} is a JavaScript action (runs.using: {fetched.manifest.using}) "
            "and needs `node`, which is not installed in this job's image or on this host"
        )
    return found


def node_phases(fetched: FetchedAction, node: str) -> list[NodePhase]:
    manifest = fetched.manifest
    if manifest.kind != "node" or manifest.main is None:
        raise ActionError(f"{fetched.ref.slug} is not a JavaScript action")
    phases = []
    for phase, entry, condition in (
        ("pre", manifest.pre, manifest.pre_if or DEFAULT_PRE_IF),
        ("main", manifest.main, None),
        ("post", manifest.post, manifest.post_if or DEFAULT_POST_IF),
    ):
        if not entry:
            continue
        script = (fetched.directory / entry).resolve()
        if fetched.root.resolve() not in script.parents:
            raise ActionError(f"{fetched.ref.slug}: runs.{phase} points outside the action")
        phases.append(NodePhase(phase, [node, str(script)], condition))
    return phases


def action_env(
    fetched: FetchedAction,
    *,
    step_id: str,
    with_values: dict[str, str],
    runner_temp: Path,
    tool_cache: Path,
    state: dict[str, str] | None = None,
) -> dict[str, str]:
    """The variables GitHub's runner gives an action's process, besides the job's own
    (`GITHUB_OUTPUT`, `GITHUB_ENV`, `GITHUB_STATE` files and the `ACTIONS_*` runtime ones)."""
    env = {
        "GITHUB_ACTION": step_id,
        "GITHUB_ACTION_PATH": str(fetched.directory),
        "GITHUB_ACTION_REPOSITORY": f"{fetched.ref.owner}/{fetched.ref.repo}",
        "GITHUB_ACTION_REF": fetched.ref.ref,
        "RUNNER_TEMP": str(runner_temp),
        "RUNNER_TOOL_CACHE": str(tool_cache),
    }
    env.update(fetched.manifest.input_env(with_values))
    for name, value in (state or {}).items():
        env[f"STATE_{name}"] = value
    return env


def parse_env_file(text: str) -> dict[str, str]:
    """`$GITHUB_STATE` / `$GITHUB_OUTPUT` syntax: `name=value` lines and `name<<DELIMITER`
    blocks; a block without its delimiter is an error (as on GitHub)."""
    values: dict[str, str] = {}
    lines = text.split("\n")
    index = 0
    while index < len(lines):
        line = lines[index].rstrip("\r")
        index += 1
        if not line.strip():
            continue
        heredoc = _HEREDOC.match(line)
        if heredoc and "=" not in line.split("<<", 1)[0]:
            name, delimiter = heredoc.group(1), heredoc.group(2)
            body: list[str] = []
            while index < len(lines) and lines[index].rstrip("\r") != delimiter:
                body.append(lines[index].rstrip("\r"))
                index += 1
            if index >= len(lines):
                raise ActionError(f"matching delimiter {delimiter!r} not found for {name!r}")
            index += 1
            values[name] = "\n".join(body)
            continue
        name, eq, value = line.partition("=")
        if not eq or not name:
            raise ActionError(f"invalid line in the state/output file: {line[:80]!r}")
        values[name] = value
    return values
