"""A JavaScript action fetched from a bare repository, run phase by phase with the runtime
helpers as a runner would: inputs as INPUT_*, $GITHUB_STATE from main reaching post as STATE_*,
and a clear error when node is missing."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from app.actions import ActionError, ActionFetcher
from app.actions.runtime import action_env, find_node, node_phases, parse_env_file
from tests.actions.test_fetch import Repo

ACTION = """
name: Stateful
inputs:
  who:
    default: world
runs:
  using: node20
  main: main.js
  post: post.js
"""
MAIN = """
const fs = require('fs');
fs.appendFileSync(process.env.GITHUB_STATE, `greeted=${process.env.INPUT_WHO}\\n`);
fs.appendFileSync(process.env.GITHUB_STATE, `multi<<EOF\\nline 1\\nline 2\\nEOF\\n`);
fs.appendFileSync(process.env.GITHUB_OUTPUT, `action=${process.env.GITHUB_ACTION}\\n`);
"""
POST = """
const fs = require('fs');
const path = require('path');
fs.writeFileSync(path.join(process.env.RUNNER_TEMP, 'post.txt'),
  `${process.env.STATE_greeted}|${process.env.STATE_multi}|${process.env.GITHUB_ACTION_PATH}`);
"""


async def run(argv: list[str], env: dict[str, str]) -> int:
    proc = await asyncio.create_subprocess_exec(*argv, env=env)
    return await proc.wait()


async def test_main_then_post_with_state(tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    repo = Repo(mirror, "acme", "stateful")
    repo.commit({"action.yml": ACTION, "main.js": MAIN, "post.js": POST})
    repo.tag("v1")
    fetched = await ActionFetcher(str(mirror), tmp_path / "cache").fetch("acme/stateful@v1")
    node = find_node(fetched, None)
    phases = node_phases(fetched, node)
    assert [(p.phase, p.condition) for p in phases] == [("main", None), ("post", "always()")]

    temp, files = tmp_path / "runner-temp", tmp_path / "files"
    temp.mkdir()
    files.mkdir()
    state_file, output_file = files / "state", files / "output"
    state_file.touch()
    output_file.touch()
    common = {
        "PATH": str(Path(node).parent),
        "GITHUB_STATE": str(state_file),
        "GITHUB_OUTPUT": str(output_file),
    }
    env = action_env(
        fetched,
        step_id="greet",
        with_values={"who": "Ada"},
        runner_temp=temp,
        tool_cache=tmp_path / "tools",
    )
    assert env["INPUT_WHO"] == "Ada" and env["GITHUB_ACTION_REPOSITORY"] == "acme/stateful"
    assert await run(phases[0].argv, {**common, **env}) == 0

    state = parse_env_file(state_file.read_text())
    assert state == {"greeted": "Ada", "multi": "line 1\nline 2"}
    assert parse_env_file(output_file.read_text()) == {"action": "greet"}
    post_env = action_env(
        fetched,
        step_id="greet",
        with_values={"who": "Ada"},
        runner_temp=temp,
        tool_cache=tmp_path / "tools",
        state=state,
    )
    assert await run(phases[1].argv, {**common, **post_env}) == 0
    assert (temp / "post.txt").read_text() == f"Ada|line 1\nline 2|{fetched.directory}"


async def test_missing_node_is_a_clear_error(tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    repo = Repo(mirror, "acme", "js")
    repo.commit({"action.yml": ACTION, "main.js": MAIN})
    fetched = await ActionFetcher(str(mirror), tmp_path / "cache").fetch("acme/js@main")
    with pytest.raises(ActionError, match=r"needs `node`, which is not installed"):
        find_node(fetched, str(tmp_path / "empty-bin"))


def test_env_file_errors() -> None:
    with pytest.raises(ActionError, match="delimiter"):
        parse_env_file("x<<EOF\nno end\n")
    with pytest.raises(ActionError, match="invalid line"):
        parse_env_file("just text\n")
    assert parse_env_file("a=1\n\nb==2\r\n") == {"a": "1", "b": "=2"}
