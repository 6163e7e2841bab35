"""`ci-executor validate`: a workflow's plan, or its problems, as text for a terminal."""

from __future__ import annotations

from pathlib import Path

from app.workflow.parser import parse_workflow
from app.workflow.spec import WorkflowError, WorkflowSpec


def plan_text(spec: WorkflowSpec) -> str:
    """Jobs in the order they can run, with needs, matrix values, runs-on and steps."""
    lines = [f"workflow: {spec.name or '(unnamed)'}", f"jobs: {len(spec.jobs)}"]
    for job in spec.jobs:
        lines.append(f"- {job.name}")
        if job.display_name != job.name:
            lines.append(f"    name: {job.display_name}")
        if job.needs:
            lines.append(f"    needs: {', '.join(job.needs)}")
        if job.matrix is not None:
            values = ", ".join(f"{k}={v}" for k, v in job.matrix.items())
            lines.append(f"    matrix: {values}")
        if job.runs_on:
            lines.append(f"    runs-on: {', '.join(job.runs_on)}")
        if job.condition.source != "success()":
            lines.append(f"    if: {job.condition.source}")
        for step in job.steps:
            lines.append(f"    {step.index + 1}. {step.name}")
    return "\n".join(lines) + "\n"


def validate_file(path: str) -> tuple[int, str]:
    """(exit code, text): 0 and the plan, or 2 and every problem as `FILE:line:column: message`
    (1 when the file cannot be read)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return 1, f"{path}: cannot read the file: {exc}\n"
    try:
        spec = parse_workflow(text)
    except WorkflowError as exc:
        return 2, "".join(f"{path}:{p.line}:{p.column}: {p.message}\n" for p in exc.problems)
    return 0, plan_text(spec)
