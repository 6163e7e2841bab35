"""A step that blocks until the test lets it go: `mkfifo gate; read _ < gate` waits in the
kernel (no polling), and the test opens the fifo from the host to release it."""

from __future__ import annotations

import asyncio
from pathlib import Path

from app.config import Settings
from app.runners.local import job_dir_name
from tests.support import wait_until

GATE_STEP = "mkfifo gate && read -r _ < gate"


def gate_path(settings: Settings, build_id: int, job_name: str) -> Path:
    return settings.workspace_root / str(build_id) / job_dir_name(job_name) / "gate"


async def gate_ready(settings: Settings, build_id: int, job_name: str) -> None:
    """Wait until the job's step waits at its gate (so it is running)."""
    path = gate_path(settings, build_id, job_name)
    await wait_until(path.exists, f"job {job_name!r} of build {build_id} at its gate")


async def release(settings: Settings, build_id: int, job_name: str) -> None:
    await gate_ready(settings, build_id, job_name)
    # Opening a fifo for writing blocks until the reader has it open: off the event loop.
    await asyncio.to_thread(gate_path(settings, build_id, job_name).write_text, "go\n")
