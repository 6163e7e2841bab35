"""One pod as the emulated kubelet runs it, and the /proc helpers that find its processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Obj = dict[str, Any]

NODE_NAME = "emulator-node"
HOST_IP = "127.0.0.1"
# Every process of a container carries `<mark>=<pod uid>/<container>` in its environment: the
# emulator's stand-in for the container's PID namespace, so processes that left the process
# group (setsid) die with their container too.
CONTAINER_MARK = "KUBE_EMULATOR_CONTAINER"


class LogStreamBroken(Exception):
    """Raised inside a follow stream to drop the connection without a proper end."""


@dataclass(eq=False)
class Follower:
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    broken: bool = False


@dataclass(eq=False)
class PodRuntime:
    namespace: str
    name: str
    uid: str
    directory: Path
    stop_requested: asyncio.Event = field(default_factory=asyncio.Event)
    stop_reason: str | None = None  # deleted, DeadlineExceeded, Evicted, Killed
    stop_message: str | None = None
    grace: float = float("inf")
    pgid: int | None = None
    env: dict[str, str] = field(default_factory=dict)  # the container's environment (for exec)
    cwd: str = ""
    image: str = ""
    exec_sessions: set[Any] = field(default_factory=set)
    log_generation: int = 0  # bumped at each rotation
    command: list[str] = field(default_factory=list)
    started: bool = False  # the container log exists
    log_complete: bool = False
    followers: set[Follower] = field(default_factory=set)
    task: asyncio.Task[None] | None = None
    # Status as the kubelet last reported it.
    phase: str = "Pending"
    scheduled: bool | None = None
    state: Obj = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    ready: bool = False
    container_id: str | None = None
    reason: str | None = None
    message: str | None = None
    start_time: str | None = None
    pod_ip: str | None = None
    transitions: dict[str, tuple[str, str]] = field(default_factory=dict)
    at_line_start: bool = True
    container: str = "main"  # the first container's name
    sandbox: Any = None  # users.Sandbox of the first container (exec'd processes use it too)
    hosts: Path | None = None  # the pod's /etc/hosts
    pause_pid: int | None = None  # the pod sandbox holding its network namespace
    sidecars: list[Any] = field(default_factory=list)  # sidecars.Sidecar, one per extra container

    @property
    def log_path(self) -> Path:
        return self.directory / "container.log"

    @property
    def timestamped_log_path(self) -> Path:
        return self.directory / "container.timestamps.log"

    def request_stop(self, reason: str, grace: float, message: str | None = None) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
            self.stop_message = message
        self.grace = min(self.grace, max(0.0, grace))
        self.stop_requested.set()

    def notify(self) -> None:
        for follower in self.followers:
            follower.wake.set()

    def waiting_reason(self) -> str | None:
        waiting = self.state.get("waiting")
        return str(waiting.get("reason")) if waiting else None


def live_group_members(pgid: int) -> list[int]:
    """Pids in the process group that are still alive (zombies excluded)."""
    members: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(entry))
    return members


def container_pids(key: str) -> list[int]:
    """Live processes started in the container `key` (`<pod uid>/<name>`; a pod uid alone: in
    any of the pod's containers), however they detached."""
    mark = f"{CONTAINER_MARK}={key}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        marked = any(item == mark or item.startswith(mark + b"/") for item in environ.split(b"\0"))
        if marked and stat[stat.rfind(")") + 2 :][:1] not in ("Z", "X"):
            found.append(int(entry))
    return found


def catches_signal(pid: int, sig: int) -> bool:
    """A namespace's PID 1 only receives signals it installed a handler for."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) & (1 << (sig - 1)))
    except OSError:
        pass
    return False


def signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
