"""Building StepRun values for runner tests."""

from __future__ import annotations

from app.runners.base import StepRun
from app.workflow import parse_condition


def step(
    index: int,
    script: str,
    *,
    shell: str = "sh",
    env: dict[str, str] | None = None,
    cond: str = "success()",
    coe: bool = False,
    timeout: float | None = None,
    wd: str | None = None,
) -> StepRun:
    return StepRun(
        index=index,
        name=f"step {index}",
        script=script,
        shell="bash" if shell == "bash" else "sh",
        env=env or {},
        condition=parse_condition(cond),
        continue_on_error=coe,
        timeout_seconds=timeout,
        working_directory=wd,
    )
