"""The job-outcome rule shared by every runner (app/runners/base.py), as a table."""

from __future__ import annotations

import pytest

from app.runners.base import JobResult, StepOutcome, job_outcome, should_run_step, step_failure
from tests.runners.steps import step


@pytest.mark.parametrize(
    ("statuses", "coe", "expected"),
    [
        (["success", "success"], set(), JobResult("success")),
        (["success", "skipped"], set(), JobResult("success")),
        ([], set(), JobResult("success")),
        (["failed", "skipped"], set(), JobResult("failed")),
        (["success", "failed"], set(), JobResult("failed")),
        (["failed", "success"], {0}, JobResult("success")),
        (["timed_out", "success"], {0}, JobResult("success")),
        (["timed_out", "skipped"], set(), JobResult("timed_out", "step 1 (step 0) timed out")),
        # The first failing step decides, even when a later one failed differently.
        (["failed", "timed_out"], set(), JobResult("failed")),
        (["timed_out", "failed"], set(), JobResult("timed_out", "step 1 (step 0) timed out")),
        (["failed", "timed_out"], {0}, JobResult("timed_out", "step 2 (step 1) timed out")),
        # Steps that never finished (a runner that lost track) do not decide anything.
        ([None, "failed"], set(), JobResult("failed")),
    ],
)
def test_job_outcome(
    statuses: list[StepOutcome | None], coe: set[int], expected: JobResult
) -> None:
    steps = [step(i, "true", coe=i in coe) for i in range(len(statuses))]
    finished = {i: s for i, s in enumerate(statuses) if s is not None}
    assert job_outcome(steps, finished) == expected


@pytest.mark.parametrize("status", ["success", "skipped", "cancelled", "error"])
def test_only_failed_and_timed_out_fail_a_job(status: StepOutcome) -> None:
    assert step_failure(step(0, "true"), status) is None


def test_a_failure_turns_off_success_steps_but_not_failure_steps() -> None:
    assert should_run_step(step(0, "true"), failed=False, cancelled=False)
    assert not should_run_step(step(0, "true"), failed=True, cancelled=False)
    assert should_run_step(step(0, "true", cond="failure()"), failed=True, cancelled=False)
    assert should_run_step(step(0, "true", cond="always()"), failed=True, cancelled=True)
    assert not should_run_step(step(0, "true", cond="failure()"), failed=False, cancelled=False)
