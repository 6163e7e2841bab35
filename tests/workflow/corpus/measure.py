"""Measure how much of the corpus works: `python -m tests.workflow.corpus.measure`.

Parses every corpus workflow with `app.workflow.parse_workflow` and runs the runnable ones with
`ci-executor run` (the local runner, a real subprocess per file), then prints

    N of M parse, K of L run as expected

`--parse-only` skips the runs; `-k TEXT` keeps the files whose path contains TEXT;
`--suggest-missing` prints, for every file that does not parse as expected, a `missing:` reason
for the manifest, and lists `missing:` markers that can go because the file now parses;
`--write-missing` writes those changes into manifest.yaml (after the parser gains a feature).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

from app.workflow import WorkflowError, parse_workflow
from tests.workflow.corpus.manifest import CORPUS_DIR, Entry, load

RUN_TIMEOUT_SECONDS = 600
# Parser messages → the feature a file is waiting for (for --suggest-missing).
_FEATURES = [
    (r"unknown key 'runs-on'", "runs-on"),
    (r"unknown key 'id'", "step id"),
    (r"unknown key 'outputs'", "job outputs"),
    (r"unknown key 'defaults'", "defaults.run"),
    (r"unknown key 'concurrency'", "concurrency"),
    (r"unknown key 'continue-on-error' in job", "job continue-on-error"),
    (r"unknown key 'run-name'", "run-name"),
    (r"unknown key 'with'", "uses: with"),
    (r"^`if` of", "expressions in if"),
    (r"matrix", "matrix values that are lists, mappings or fromJSON"),
    (r"^`shell`", "shell python / custom templates"),
    (r"`(timeout-minutes|continue-on-error)` of", "timeout-minutes/continue-on-error expressions"),
    (r"^step \d+ of job", "uses: steps"),
]


def say(text: str) -> None:
    """A report line on stdout (this module is a command-line report, not library code)."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def parse_outcome(entry: Entry) -> tuple[bool, list[str]]:
    """(parsed as the manifest expects, the parser's messages)."""
    try:
        parse_workflow(entry.text())
    except WorkflowError as exc:
        messages = [p.message for p in exc.problems]
        expected = entry.parse == "uses-refused" and all("uses" in m for m in messages)
        return expected, messages
    return entry.parse == "ok", []


def missing_reason(messages: list[str]) -> str:
    found: list[str] = []
    for message in messages:
        for pattern, feature in _FEATURES:
            if re.search(pattern, message):
                if feature not in found:
                    found.append(feature)
                break
        else:
            if "other" not in found:
                found.append("other")
    return "not yet accepted: " + ", ".join(found)


def _executable() -> list[str]:
    beside = Path(sys.executable).parent / "ci-executor"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("ci-executor")
    if found:
        return [found]
    return [sys.executable, "-c", "import sys; from app.cli import main; sys.exit(main())"]


def job_statuses(output: str) -> dict[str, str]:
    """Job rows of the summary table `ci-executor run` prints (steps are indented)."""
    statuses: dict[str, str] = {}
    in_table = False
    for line in output.splitlines():
        if line.startswith("JOB / STEP"):
            in_table = True
            continue
        if in_table:
            if not line.strip():
                break
            if not line.startswith(" "):
                cells = re.split(r"\s{2,}", line.strip())
                if len(cells) >= 2:
                    statuses[cells[0]] = cells[1]
    return statuses


def run_entry(entry: Entry) -> tuple[bool, str]:
    args = [str(CORPUS_DIR / a) if a.endswith(".json") else a for a in entry.args]
    command = [*_executable(), "run", str(entry.path), *args]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=RUN_TIMEOUT_SECONDS, check=False
        )
    except subprocess.TimeoutExpired:
        return False, "timed out"
    output = done.stdout + done.stderr
    if done.returncode == 2:
        return False, "refused: " + output.strip().splitlines()[-1] if output.strip() else "exit 2"
    result = "success" if done.returncode == 0 else "failure"
    if result != entry.run:
        return False, f"build {result}, expected {entry.run}"
    statuses = job_statuses(output)
    wrong = {
        job: statuses.get(job, "absent")
        for job, status in entry.jobs.items()
        if statuses.get(job) != status
    }
    if wrong:
        return False, f"jobs {wrong}, expected {entry.jobs}"
    return True, result


def write_missing(entries: list[Entry]) -> None:
    """Rewrite the `missing:` line of every entry to match what the parser does today."""
    reasons: dict[str, str | None] = {}
    for entry in entries:
        ok, messages = parse_outcome(entry)
        reasons[entry.file] = None if ok else missing_reason(messages)
    path = CORPUS_DIR / "manifest.yaml"
    out: list[str] = []
    current: str | None = None
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("    missing:") and current in reasons:
            continue
        out.append(line)
        if line.startswith("  - file: "):
            current = line.removeprefix("  - file: ").strip()
        elif line.startswith("    parse:") and current in reasons:
            reason = reasons[current]
            if reason is not None:
                out.append(f'    missing: "{reason}"')
    path.write_text("\n".join(out) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.workflow.corpus.measure")
    parser.add_argument("--parse-only", action="store_true")
    parser.add_argument("--suggest-missing", action="store_true")
    parser.add_argument("--write-missing", action="store_true")
    parser.add_argument("-k", dest="keyword", default="")
    args = parser.parse_args(argv)
    entries = [e for e in load() if args.keyword in e.file]
    if args.write_missing:
        write_missing(entries)
        return 0
    parsed = 0
    runnable = ran_ok = 0
    for entry in entries:
        ok, messages = parse_outcome(entry)
        parsed += ok
        if args.suggest_missing:
            if not ok and not entry.missing:
                say(f"{entry.file}: add  missing: {missing_reason(messages)!r}")
            elif ok and entry.missing:
                say(f"{entry.file}: parses now, remove its missing: marker")
            continue
        line = f"{'parse ok ' if ok else 'PARSE NO '} {entry.file}"
        if not ok:
            line += f"  ({'; '.join(messages[:3]) or 'parsed, expected a refusal'})"
        if entry.run is not None and not args.parse_only:
            runnable += 1
            if ok:
                good, detail = run_entry(entry)
                ran_ok += good
                line += f"  | run {'ok' if good else 'NO'}: {detail}"
            else:
                line += "  | run NO: does not parse"
        say(line)
    if args.suggest_missing:
        return 0
    summary = f"{parsed} of {len(entries)} parse"
    if not args.parse_only:
        summary += f", {ran_ok} of {runnable} run as expected"
    say(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
