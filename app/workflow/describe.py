"""`ci-executor validate`: a workflow's plan, or its problems, as text for a terminal."""

from __future__ import annotations

from pathlib import Path

from app.workflow.parser import CHECKOUT, STEP_NAME_LIMIT, parse_workflow
from app.workflow.spec import JobSpec, WorkflowError, WorkflowSpec

MAYBE_POST = "(post step if the action defines one)"


def _remote(uses: str | None) -> bool:
    """A `uses:` fetched from a repository (as app/actions/support.py `is_remote`): the
    built-in checkout, local and docker actions have no post step here."""
    return uses is not None and not (
        CHECKOUT.fullmatch(uses) or uses.startswith(("./", "../", "docker://"))
    )


def _post_rows(job: JobSpec) -> list[str]:
    """The "Post <step>" rows a build adds at the job's end, the last step's first, for
    remote actions. Whether an action has a `post` is in its action.yml, which validate does
    not fetch: the rows are marked as possible."""
    return [
        f"    +  {f'Post {step.name}'[:STEP_NAME_LIMIT]} {MAYBE_POST}"
        for step in reversed(job.steps)
        if _remote(step.uses)
    ]


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
        lines.extend(_post_rows(job))
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
