"""Parse real projects' workflow files as `ci-executor validate` does, and count what passes.

    .venv/bin/python -m tests.workflow.corpus.realworld_measure PATH...

Not part of the test suite (the files are other projects'; CI has no network). Each PATH is a
workflow file, a directory (its `*.yml`/`*.yaml`, recursively), or a git directory (bare or
not), read at HEAD under `.github/workflows/`. Every file gets one line:

    ok             parses (remote `uses:` steps are fetched when a build is created, not here)
    uses-refused   refused, and every problem is about a `uses:` (an action or reusable workflow)
    PROBLEM        refused for something else: the first problems are printed

and the total is `N of M parse (K more with only uses: refused)`.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from app.workflow import WorkflowError, parse_workflow
from tests.workflow.corpus.measure import say

WORKFLOWS = ".github/workflows"


def _git(git_dir: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "--git-dir", str(git_dir), *args], capture_output=True, text=True, check=False
    )
    return done.stdout if done.returncode == 0 else ""


def files(path: Path) -> list[tuple[str, str]]:
    """(label, YAML text) of every workflow file under `path`."""
    if path.is_file():
        return [(str(path), path.read_text(encoding="utf-8"))]
    git_dir = path / ".git" if (path / ".git").exists() else path
    if (git_dir / "HEAD").is_file() and (git_dir / "objects").is_dir():
        names = _git(git_dir, "ls-tree", "-r", "--name-only", "HEAD", f"{WORKFLOWS}/").split()
        repo = path.parent.name if path.name in ("repo", ".git") else path.name
        return [
            (f"{repo}:{name}", _git(git_dir, "show", f"HEAD:{name}"))
            for name in names
            if name.endswith((".yml", ".yaml"))
        ]
    return [
        (str(p), p.read_text(encoding="utf-8"))
        for p in sorted(path.rglob("*"))
        if p.suffix in (".yml", ".yaml") and p.is_file()
    ]


def outcome(text: str) -> tuple[str, list[str]]:
    try:
        parse_workflow(text)
    except WorkflowError as exc:
        messages = [f"{p.line}:{p.column}: {p.message}" for p in exc.problems]
        if all("uses" in p.message for p in exc.problems):
            return "uses-refused", messages
        return "PROBLEM", [
            m for m, p in zip(messages, exc.problems, strict=True) if "uses" not in p.message
        ]
    return "ok", []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.workflow.corpus.realworld_measure")
    parser.add_argument("paths", nargs="+", type=Path)
    args = parser.parse_args(argv)
    counts = {"ok": 0, "uses-refused": 0, "PROBLEM": 0}
    for path in args.paths:
        for label, text in files(path):
            result, messages = outcome(text)
            counts[result] += 1
            say(
                f"{result:<13} {label}"
                + (f"  ({'; '.join(messages[:2])})" if result == "PROBLEM" else "")
            )
    total = sum(counts.values())
    say(f"{counts['ok']} of {total} parse ({counts['uses-refused']} more with only uses: refused)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
