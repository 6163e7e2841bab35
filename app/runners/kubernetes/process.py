"""A step's processes in the pod (their keys and output offsets) and the errors that end a job.

A step runs one process in the pod, or several (a JavaScript action's phases, a composite action's
steps). Process n of step i keeps its files in $CI_RUN_DIR under the key `i` (n = 0) or `i-n`.
Output offsets are `i << 40 | n << 32 | byte offset in that process's log`: increasing across the
job, so the reporter's single stored offset says which step, process and byte to resume from.
"""

from __future__ import annotations

from dataclasses import dataclass

STEP_SHIFT = 40
PROC_SHIFT = 32
MAX_PROCESSES = 1 << (STEP_SHIFT - PROC_SHIFT)  # per step


class InfraError(Exception):
    """The job cannot go on for a reason of the infrastructure (reported once, as `error`)."""


class ForeignJob(InfraError):
    """A Job of this name exists but another installation made it: never touch it."""


class TimedOut(Exception):
    pass


@dataclass(frozen=True)
class Proc:
    """One process of a step: its files' key, its output offsets' base, and the program that
    starts it (sent again if it was lost in transit)."""

    key: str
    base: int
    start: bytes

    @classmethod
    def of(cls, index: int, n: int, start: bytes) -> Proc:
        if n >= MAX_PROCESSES:
            raise InfraError(f"step {index + 1} runs more than {MAX_PROCESSES} processes")
        key = str(index) if n == 0 else f"{index}-{n}"
        return cls(key, index << STEP_SHIFT | n << PROC_SHIFT, start)
