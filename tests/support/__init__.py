"""Test support in one place.

- `waiting`: `wait_until`, the one way to wait for a condition (sync or async predicate).
- `api`: create builds through the API, wait for them, read jobs, steps and logs.
- `sse`: a Server-Sent Events parser over a real HTTP stream.
- `servers`: an ASGI app on a real uvicorn (`uvicorn_server`), real `ci-executor serve`
  processes (`start_serve`), `free_port`.
- `backends`: the `TEST_BACKENDS` switch (`sqlite`, `postgres`).
- `processes`: `pids_with`, a step's processes seen from the host.
"""

from __future__ import annotations

from tests.support.api import (
    FINISHED,
    all_logs,
    create,
    job,
    log_text,
    run_workflow,
    step_statuses,
    ts,
    wait_for_build,
    wait_for_output,
    workflow,
)
from tests.support.processes import pids_with
from tests.support.servers import (
    AMQP_URL,
    ROOT,
    ServeProcess,
    free_port,
    start_serve,
    stub_http_server,
    uvicorn_server,
)
from tests.support.sse import SSEEvent, sse_events
from tests.support.waiting import wait_until

__all__ = [
    "AMQP_URL",
    "FINISHED",
    "ROOT",
    "SSEEvent",
    "ServeProcess",
    "all_logs",
    "create",
    "free_port",
    "job",
    "log_text",
    "pids_with",
    "run_workflow",
    "sse_events",
    "start_serve",
    "step_statuses",
    "stub_http_server",
    "ts",
    "uvicorn_server",
    "wait_for_build",
    "wait_for_output",
    "wait_until",
    "workflow",
]
