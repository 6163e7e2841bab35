"""Run nektos/act's own `run:`-only test workflows with `ci-executor run` and compare with act.

    .venv/bin/python -m tests.workflow.corpus.act_measure --act-dir /path/to/act/checkout

Not part of the test suite: it needs a checkout of https://github.com/nektos/act (CI has no
network). `--act-dir` may also be a bare git directory (read with `git show HEAD:...`).

Which workflows (the rule, written down so the count can be reproduced):

- the rows of `pkg/runner/runner_test.go` that run a workflow on Linux: `TestRunEvent`, the
  non-Windows rows of `TestRunEventHostEnvironment`, and the one-workflow tests
  `TestRunEventSecrets`, `TestRunActionInputs`, `TestRunEventPullRequest`,
  `TestRunMatrixWithUserDefinedInclusions` and `TestMaskValues`; commented-out rows are left
  out, a directory listed twice (same event) counts once, with the first table's expectation;
- of those, the directories whose workflow files (`*.yml`/`*.yaml` directly in the directory,
  as act's planner reads them) have no `uses:` other than `actions/checkout` (steps or jobs).

act's expected result is the row's error string: empty means the run must succeed, anything
else means it must fail (act's test only asserts that an error happened, not its text).

Each file runs as a user reproducing act's context would run it: `--event-name` from the row,
`--event event.json` when the directory has one, and act's environment through flags of
`ci-executor run` (nothing act-specific is built into the product): `--actor nektos/act`,
`--repository nektos/act`, `--var ACT=true`, plus what the single tests pass (`.env` as `--var`,
`.secrets` as `--secret`, the CLI input as `--input`). `--plain` runs without those: then only
the event name and file are given (and, in a checkout, `ci-executor run` takes github.repository,
sha and ref from the checkout's git, as act does).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from tests.workflow.corpus.measure import _executable, failed_steps, say

RUN_TIMEOUT_SECONDS = 300
TABLES = ("TestRunEvent", "TestRunEventHostEnvironment")
# One-workflow tests: name -> (event, what the test passes besides the event file)
SINGLES = {
    "TestRunEventSecrets": "push",
    "TestRunActionInputs": "workflow_dispatch",
    "TestRunEventPullRequest": "pull_request",
    "TestRunMatrixWithUserDefinedInclusions": "push",
    "TestMaskValues": "push",
}
ACT_CONTEXT = ("--actor", "nektos/act", "--repository", "nektos/act", "--var", "ACT=true")
_ROW = re.compile(r'\{(workdir|"\.\./model/testdata"), "([^"]+)", "([^"]+)", "((?:[^"\\]|\\.)*)"')


@dataclass
class Case:
    directory: str  # relative to pkg/runner
    event: str
    error: str  # act's expected error ("" = success)
    table: str
    files: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)

    @property
    def expected(self) -> str:
        return "failure" if self.error else "success"


class Source:
    """An act checkout, or a bare git directory read at HEAD."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.bare = not (root / "pkg").is_dir() and (root / "HEAD").is_file()

    def read(self, path: str) -> str | None:
        if not self.bare:
            file = self.root / path
            return file.read_text(encoding="utf-8") if file.is_file() else None
        done = subprocess.run(
            ["git", "--git-dir", str(self.root), "show", f"HEAD:{path}"],
            capture_output=True,
            text=True,
            check=False,
        )
        return done.stdout if done.returncode == 0 else None

    def listdir(self, path: str) -> list[str]:
        if not self.bare:
            folder = self.root / path
            if not folder.is_dir():
                return []
            return sorted(p.name for p in folder.iterdir() if p.is_file())
        done = subprocess.run(
            ["git", "--git-dir", str(self.root), "ls-tree", "--name-only", f"HEAD:{path}"],
            capture_output=True,
            text=True,
            check=False,
        )
        return sorted(done.stdout.split()) if done.returncode == 0 else []


def _functions(go: str) -> dict[str, str]:
    live = "\n".join(line for line in go.splitlines() if not line.strip().startswith("//"))
    parts = re.split(r"\nfunc (Test\w+)", live)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def cases(source: Source) -> list[Case]:
    go = source.read("pkg/runner/runner_test.go")
    if go is None:
        raise SystemExit("no pkg/runner/runner_test.go under --act-dir")
    functions = _functions(go)
    found: dict[tuple[str, str], Case] = {}
    for table in TABLES:
        body = functions[table]
        if table == "TestRunEventHostEnvironment":  # leave out the Windows-only rows
            before, _, after = body.partition('if runtime.GOOS == "windows"')
            body = before + after.partition("} else {")[2]
        for base, path, event, error in _ROW.findall(body):
            folder = ("testdata" if base == "workdir" else "../model/testdata") + "/" + path
            found.setdefault((folder, event), Case(folder, event, error, table))
    for name, event in SINGLES.items():
        match = re.search(r'workflowPath\s*:?=\s*"([^"]+)"', functions.get(name, ""))
        if match is None:
            match = re.search(r'workflowPath:\s*"([^"]+)"', functions.get(name, ""))
        if match:
            folder = "testdata/" + match.group(1)
            found.setdefault((folder, event), Case(folder, event, "", name))
    return list(found.values())


def _uses(text: str) -> list[str]:
    try:
        data = YAML(typ="safe").load(text)
    except YAMLError:
        return ["(unreadable YAML)"]
    uses: list[str] = []
    jobs = data.get("jobs") if isinstance(data, dict) else None
    for job in (jobs or {}).values():
        if not isinstance(job, dict):
            continue
        if "uses" in job:
            uses.append(str(job["uses"]))
        for step in job.get("steps") or []:
            if isinstance(step, dict) and "uses" in step:
                uses.append(str(step["uses"]))
    return uses


def run_only(source: Source, case: Case) -> bool:
    directory = "pkg/runner/" + case.directory
    names = [n for n in source.listdir(_norm(directory)) if n.endswith((".yml", ".yaml"))]
    case.files = [f"{_norm(directory)}/{n}" for n in names]
    for path in case.files:
        text = source.read(path) or ""
        if any(not u.startswith("actions/checkout@") for u in _uses(text)):
            return False
    return bool(case.files)


def _norm(path: str) -> str:
    parts: list[str] = []
    for part in path.split("/"):
        if part == "..":
            parts.pop()
        elif part not in ("", "."):
            parts.append(part)
    return "/".join(parts)


def _dotenv(text: str) -> dict[str, str]:
    """The `.env`/`.secrets` files act's tests read (godotenv: KEY=VALUE, double quotes expand
    `\\n`)."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        name, sep, value = line.strip().partition("=")
        if not sep or name.startswith("#"):
            continue
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1].replace("\\n", "\n")
        values[name.strip()] = value
    return values


def arguments(source: Source, case: Case, scratch: Path, *, plain: bool) -> list[str]:
    folder = _norm("pkg/runner/" + case.directory)
    args = ["--event-name", case.event]
    event: dict[str, Any] | None = None
    event_text = source.read(f"{folder}/event.json")
    if event_text is not None:
        event = json.loads(event_text)
    if plain:
        if event is not None:
            (scratch / "event.json").write_text(json.dumps(event), encoding="utf-8")
            args += ["--event", str(scratch / "event.json")]
        return args
    args += ACT_CONTEXT
    if case.table == "TestRunEventSecrets":
        for name, value in _dotenv(source.read(f"{folder}/.env") or "").items():
            args += ["--var", f"{name}={value}"]
        for name, value in _dotenv(source.read(f"{folder}/.secrets") or "").items():
            args += ["--secret", f"{name}={value}"]
    if case.table == "TestRunActionInputs":
        args += ["--input", "SOME_INPUT=input"]
    if event is not None:
        (scratch / "event.json").write_text(json.dumps(event), encoding="utf-8")
        args += ["--event", str(scratch / "event.json")]
    return args


def run_case(source: Source, case: Case, *, plain: bool) -> tuple[bool, str]:
    results: list[str] = []
    details: list[str] = []
    with tempfile.TemporaryDirectory(prefix="act-measure-") as tmp:
        scratch = Path(tmp)
        args = arguments(source, case, scratch, plain=plain)
        for path in case.files:
            # In place in a checkout (so `ci-executor run` sees its git context, as a user's
            # run would); a bare git directory has no files to point at: a copy.
            workflow = source.root / path
            if source.bare:
                workflow = scratch / Path(path).name
                workflow.write_text(source.read(path) or "", encoding="utf-8")
            command = [*_executable(), "run", str(workflow), *args]
            try:
                done = subprocess.run(
                    command,
                    capture_output=True,
                    text=True,
                    timeout=RUN_TIMEOUT_SECONDS,
                    check=False,
                    cwd=scratch,
                )
            except subprocess.TimeoutExpired:
                return False, "timed out"
            output = done.stdout + done.stderr
            if done.returncode == 2:
                lines = [line.strip() for line in output.strip().splitlines()]
                results.append("refused")
                details.append("refused: " + " / ".join(lines[-2:]))
                continue
            results.append("success" if done.returncode == 0 else "failure")
            failed = failed_steps(output)
            errors = [line for line in output.splitlines() if line.startswith("error: ")]
            if failed or errors:
                details.append("; ".join([*failed[:2], *errors[:1]]))
    result = next((r for r in ("refused", "failure") if r in results), "success")
    detail = f"{result}, act: {case.expected}"
    if details:
        detail += " (" + " | ".join(details)[:300] + ")"
    return result == case.expected, detail


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.workflow.corpus.act_measure")
    parser.add_argument("--act-dir", required=True, type=Path, help="nektos/act checkout")
    parser.add_argument("-k", dest="keyword", default="", help="only directories containing")
    parser.add_argument("--plain", action="store_true", help="no act context flags")
    parser.add_argument("--list", action="store_true", help="list the selection, run nothing")
    args = parser.parse_args(argv)
    source = Source(args.act_dir)
    selected = [c for c in cases(source) if run_only(source, c)]
    say(f"{len(selected)} run:-only workflows in runner_test.go's Linux tables")
    good = 0
    for case in selected:
        if args.keyword not in case.directory:
            continue
        if args.list:
            say(f"  {case.directory} ({case.event}, act: {case.expected}, {case.table})")
            continue
        ok, detail = run_case(source, case, plain=args.plain)
        good += ok
        say(f"{'OK  ' if ok else 'MISS'} {case.directory} [{case.event}]: {detail}")
    if not args.list:
        total = sum(args.keyword in c.directory for c in selected)
        say(f"{good} of {total} give act's result")
    return 0


if __name__ == "__main__":
    sys.exit(main())
