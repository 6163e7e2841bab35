from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from kubernetes_asyncio import watch

Obj = dict[str, Any]
WAIT_SECONDS = 20


def job_manifest(
    name: str,
    script: str,
    *,
    image: str = "alpine:3.20",
    labels: dict[str, str] | None = None,
    env: list[Obj] | None = None,
    backoff_limit: int = 0,
    deadline: int | None = None,
    ttl: int | None = None,
    volumes: list[Obj] | None = None,
    mounts: list[Obj] | None = None,
    working_dir: str | None = None,
    command: list[str] | None = None,
    grace: int = 1,
) -> Obj:
    container: Obj = {
        "name": "main",
        "image": image,
        "command": command or ["sh", "-c", script],
        "env": env or [],
    }
    if mounts:
        container["volumeMounts"] = mounts
    if working_dir:
        container["workingDir"] = working_dir
    spec: Obj = {
        "backoffLimit": backoff_limit,
        "template": {
            "metadata": {"labels": labels or {}},
            "spec": {
                "restartPolicy": "Never",
                "containers": [container],
                "volumes": volumes or [],
                # PID 1 ignores SIGTERM without a handler: keep the kill after the grace short.
                "terminationGracePeriodSeconds": grace,
            },
        },
    }
    if deadline is not None:
        spec["activeDeadlineSeconds"] = deadline
    if ttl is not None:
        spec["ttlSecondsAfterFinished"] = ttl
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": spec,
    }


async def wait_event(
    list_func: Callable[..., Any],
    namespace: str,
    predicate: Callable[[Obj], bool],
    **kwargs: Any,
) -> Obj:
    """Watch until an event satisfies `predicate`; the event dict has type/object/raw_object."""
    async with watch.Watch() as stream:
        async for event in stream.stream(
            list_func, namespace, timeout_seconds=WAIT_SECONDS, **kwargs
        ):
            if predicate(event):
                return dict(event)
    raise AssertionError(f"no matching event within {WAIT_SECONDS}s")


def is_terminal(event: Obj) -> bool:
    return event["object"].status.phase in ("Succeeded", "Failed")


def waiting_reason(pod: Any) -> str | None:
    statuses = pod.status.container_statuses or []
    if statuses and statuses[0].state.waiting:
        return str(statuses[0].state.waiting.reason)
    return None


def job_condition(job: Any, type_: str) -> Any:
    for condition in job.status.conditions or []:
        if condition.type == type_ and condition.status == "True":
            return condition
    return None


async def eventually(
    check: Callable[[], Awaitable[Any] | Any], timeout: float = WAIT_SECONDS
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.05)


def alive(pid: int) -> bool:
    """True if the process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2 :].split()[0] not in ("Z", "X")


def pod_processes(processes: list[Obj], pod_name: str) -> list[int]:
    return [pid for entry in processes if entry["pod"] == pod_name for pid in entry["pids"]]


def gate_env(path: Path) -> list[Obj]:
    return [{"name": "GATE", "value": str(path)}]


GATED_SCRIPT = 'echo first; while [ ! -e "$GATE" ]; do sleep 0.05; done; echo second'
