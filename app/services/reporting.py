"""What a running build's jobs report, stored: step transitions, output, workflow commands.

`BuildContext` is what one build's execution shares (database, log writer, runner, masker, cancel
and wake signals); `BuildReporter` is the JobReporter every runner talks to. Workflow commands
(`::add-mask::`, annotations, `::set-output`, ...) are parsed here, in the output path all runners
share, so they mean the same on every runner.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.actions.support import ActionSupport
from app.db import Database
from app.logs.masking import LineAssembler, Masker
from app.logs.writer import LogWriter
from app.metrics import Metrics
from app.models import BuildJob, JobStatus
from app.runners.base import JobReporter, Runner, StepOutcome
from app.secrets import SecretBox
from app.services import results, state
from app.workflow.commands import Annotation, CommandParser
from app.workflow.runtime import JobRuntime

J = JobStatus


@dataclass
class BuildContext:
    build_id: int
    db: Database
    writer: LogWriter
    runner: Runner
    metrics: Metrics
    max_jobs: int
    masker: Masker = field(default_factory=Masker)
    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    # Set when the executor shuts down: runners that can re-attach detach instead of finishing.
    detach: bool = False
    secret_box: SecretBox | None = None  # opens the build's sealed secrets (app/secrets.py)
    actions: ActionSupport | None = None  # runs the build's actions (app/actions/support.py)

    def request_cancel(self) -> None:
        self.cancel.set()
        self.wake.set()


class BuildReporter(JobReporter):
    """Stores what a runner reports; workflow commands are parsed here, in the output path every
    runner shares, and their effects (annotations, masks, set-output) applied."""

    def __init__(self, ctx: BuildContext, job_name: str, runtime: JobRuntime | None) -> None:
        self.ctx = ctx
        self.job_name = job_name
        self.runtime = runtime
        self._commands: dict[int, CommandParser] = {}
        self._annotations: dict[int, list[Annotation]] = {}
        self._lines: dict[int, LineAssembler] = {}
        self._started: dict[int, float] = {}  # for the duration metric (not after re-attach)
        # The last step end this reporter queued in the writer: the next step's start joins
        # its statement while it is still queued.
        self._ending: _StepEnd | None = None

    def _assembler(self, index: int) -> LineAssembler:
        if index not in self._lines:
            self._lines[index] = LineAssembler(self.ctx.masker, self.ctx.writer.chunk_max_bytes)
        return self._lines[index]

    async def step_started(self, index: int) -> None:
        """Durable before the step runs (a re-attaching replica needs it). One transaction also
        stores the previous step's last output and its end, queued by step_finished."""
        self._started[index] = time.monotonic()
        build_id, writer = self.ctx.build_id, self.ctx.writer
        ending, self._ending = self._ending, None
        if ending is not None and writer.queued(build_id, ending):
            ending.change.start = index
        else:
            change = state.StepChange(build_id, self.job_name, start=index)
            writer.add_transition(build_id, _StepEnd(change))
        if not await writer.flush(build_id):
            # Kept by the writer and retried; the step must not run unrecorded meanwhile.
            raise RuntimeError(f"could not record the start of step {index}: database error")

    async def step_output(self, index: int, data: bytes, source_offset: int | None = None) -> None:
        assembler = self._assembler(index)
        text = self._commands_in(index, assembler.feed(data))
        if source_offset is not None:
            # Only what left the assembler is stored; a re-attaching runner resumes from there.
            source_offset -= assembler.held_bytes
        await self.ctx.writer.write(self.ctx.build_id, self.job_name, index, text, source_offset)

    def _commands_in(self, index: int, text: str) -> str:
        if index not in self._commands:
            unsecure = self.runtime is not None and self.runtime.unsecure_commands
            self._commands[index] = CommandParser(allow_unsecure=unsecure)
        parser = self._commands[index]
        kept, effects = parser.process(text)
        for value in effects.masks:
            self.ctx.masker.add(value)
        if effects.masks:
            # Lines after the add-mask in the same chunk were masked before it was known.
            kept = self.ctx.masker.mask_text(kept)
        if effects.annotations:
            self._annotations.setdefault(index, []).extend(effects.annotations)
        if self.runtime is not None:
            for name, value in effects.outputs.items():
                self.runtime.command_output(name, value)
            for name, value in effects.env.items():
                self.runtime.command_env(name, value)
            for path in effects.path:
                self.runtime.command_path(path)
        return kept

    async def step_finished(
        self, index: int, status: StepOutcome, exit_code: int | None, error: str | None = None
    ) -> None:
        tail = self._lines.pop(index).close() if index in self._lines else ""
        tail = self._commands_in(index, tail)
        self._commands.pop(index, None)
        if error:
            tail += f"{error}\n"
        build_id, job_name, to = self.ctx.build_id, self.job_name, J(status)
        await self.ctx.writer.write(build_id, job_name, index, tail)
        outputs = self.runtime.step_outputs.get(index, {}) if self.runtime else {}
        summary = self.runtime.summaries.get(index) if self.runtime else None
        annotations = self._annotations.pop(index, [])
        change = state.StepChange(build_id, job_name, end=index, to=to, exit_code=exit_code)
        results_ = (outputs, summary, annotations) if outputs or summary or annotations else None
        # Stored after the step's output in the writer's next transaction: the next step's
        # start (in the same statement), the job's end (the executor flushes the writer first)
        # or the writer's next interval, whichever comes first.
        self._ending = _StepEnd(change, results_)
        self.ctx.writer.add_transition(build_id, self._ending)
        started = self._started.pop(index, None)
        if started is not None:
            self.ctx.metrics.step_duration.labels(status).observe(time.monotonic() - started)

    async def stored_offset(self) -> int:
        async with self.ctx.db.read() as session:
            job = (
                await session.exec(
                    select(BuildJob).where(
                        BuildJob.build_id == self.ctx.build_id, BuildJob.name == self.job_name
                    )
                )
            ).first()
        return job.log_offset if job else 0


class _StepEnd:
    """A transition for the log writer: a StepChange, and the ended step's results when it has
    any (outputs, summary, annotations). With nothing but the change to store, it can commit
    alone, through the driver (the writer's choice: nothing else is waiting to be stored)."""

    def __init__(self, change: state.StepChange, stored: tuple[Any, ...] | None = None) -> None:
        self.change = change
        self._stored = stored

    async def __call__(self, session: AsyncSession) -> None:
        change = self.change
        await state.change_steps(session, change)
        if self._stored is not None and change.end is not None:
            outputs, summary, annotations = self._stored
            await results.store_step(
                session,
                change.build_id,
                change.job_name,
                change.end,
                outputs=outputs,
                summary=summary,
                annotations=annotations,
            )

    @property
    def alone(self) -> bool:
        return self._stored is None

    async def commit_alone(self, db: Database) -> None:
        await state.change_steps_alone(db, self.change)
