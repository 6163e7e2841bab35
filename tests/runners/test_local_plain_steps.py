"""The local runner's plain steps (a JobRun without a GitHub runtime, which the Runner protocol
allows), driven through `run_job` with a recording reporter: each step's start is reported
before its process can report anything, and a start the reporter cannot store stops the step
that already runs. The service's own path (steps with a runtime) is tested end to end in
tests/services/test_step_path.py."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from pathlib import Path
from typing import Any

from app.runners.base import JobRun, StepOutcome
from app.runners.local import LocalRunner
from tests.runners.steps import step
from tests.support import pids_with, wait_until

_builds = itertools.count(1)


class Recorder:
    """A JobReporter that keeps what it is told, in order; `refuse_start` makes step_started
    fail (as BuildReporter's does when the database refuses the write) once `when` holds."""

    def __init__(self, refuse_start: Path | None = None) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.refuse_start = refuse_start

    async def step_started(self, index: int) -> None:
        if self.refuse_start is not None:
            await wait_until(self.refuse_start.exists, "the step running")
            raise RuntimeError(f"could not record the start of step {index}: database error")
        self.events.append(("started", index))

    async def step_output(
        self,
        index: int,
        data: bytes,
        source_offset: int | None = None,  # noqa: ARG002
    ) -> None:
        self.events.append(("output", index, data))

    async def step_finished(
        self, index: int, status: StepOutcome, exit_code: int | None, error: str | None = None
    ) -> None:
        self.events.append(("finished", index, status, exit_code, error))

    async def stored_offset(self) -> int:
        return 0


def _job(*steps: Any) -> JobRun:
    return JobRun(
        build_id=next(_builds), job_name="plain", image=None, timeout_seconds=60, steps=steps
    )


async def test_each_start_is_reported_before_the_steps_output_and_end(tmp_path: Path) -> None:
    runner = LocalRunner(tmp_path / "ws")
    await runner.start()
    reporter = Recorder()
    result = await runner.run_job(_job(step(0, "echo one"), step(1, "echo two")), reporter)
    assert result.status == "success", result
    kinds = [(e[0], e[1]) for e in reporter.events if e[0] != "output" or e[2].strip()]
    assert kinds == [
        ("started", 0),
        ("output", 0),
        ("finished", 0),
        ("started", 1),
        ("output", 1),
        ("finished", 1),
    ], reporter.events


async def test_a_start_that_cannot_be_stored_stops_the_running_step(tmp_path: Path) -> None:
    ran = tmp_path / "ran"
    sleep = f"sleep 300.{uuid.uuid4().int % 10**9}"  # this test's own, for pids_with
    runner = LocalRunner(tmp_path / "ws", kill_grace_seconds=1)
    await runner.start()
    reporter = Recorder(refuse_start=ran)
    job = _job(step(0, f"touch {ran} && {sleep}"), step(1, "echo never"))
    # Without the stop, the job would outlast this wait by minutes.
    result = await asyncio.wait_for(runner.run_job(job, reporter), 30)
    assert result.status == "error", result
    finished = [e for e in reporter.events if e[0] == "finished"]
    assert finished[0][:3] == ("finished", 0, "error"), reporter.events
    assert "could not record the start of step 0" in finished[0][4], reporter.events
    assert finished[1][:3] == ("finished", 1, "skipped"), reporter.events
    assert pids_with(sleep) == []
