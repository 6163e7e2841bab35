"""Containers after the first (a CI job's service containers): each runs its own process as
its own user, in the pod's network namespace, with readiness probes run like the kubelet's
prober (tcpSocket or exec, every `periodSeconds`, ready after `successThreshold` successes,
unready after `failureThreshold` failures).

They are regular containers, not native sidecars: the pod stays `Running` while any of them
runs, also after the first container ended, exactly as on a cluster (a Job whose pod has such
containers does not complete until they stop).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.k8s_emulator.config import Spawn, container_spawn
from tests.k8s_emulator.errors import ConfigError
from tests.k8s_emulator.runtime import PodRuntime, catches_signal, container_pids, signal_group
from tests.k8s_emulator.store import now
from tests.k8s_emulator.users import preexec_for

if TYPE_CHECKING:
    from tests.k8s_emulator.kubelet import Kubelet

Obj = dict[str, Any]
# Connects to 127.0.0.1:<port> inside the pod's network namespace (the kubelet probes the pod
# IP from the node; inside the emulator's per-pod namespace that is its loopback).
_TCP_PROBE = (
    "import socket, sys\n"
    "socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=1).close()\n"
)


@dataclass(eq=False)
class Sidecar:
    name: str
    image: str
    spec: Obj
    log_path: Path
    state: Obj = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    ready: bool = False
    spawn: Spawn | None = None
    proc: asyncio.subprocess.Process | None = None
    task: asyncio.Task[None] | None = None

    @property
    def key(self) -> str:
        return self.spawn.env.get("KUBE_EMULATOR_CONTAINER", "") if self.spawn else ""

    def status(self) -> Obj:
        return {
            "name": self.name,
            "image": self.image,
            "imageID": f"emulator://{self.image}" if self.proc else "",
            "ready": self.ready,
            "restartCount": 0,
            "started": "running" in self.state,
            "state": self.state,
            "lastState": {},
            **({"containerID": f"emulator://{self.proc.pid}"} if self.proc else {}),
        }


def running(runtime: PodRuntime) -> list[Sidecar]:
    return [s for s in runtime.sidecars if "running" in s.state]


async def start_all(kubelet: Kubelet, runtime: PodRuntime, spec: Obj) -> None:
    """Each container after the first, in order: pulled, configured and started on its own (one
    that cannot start does not hold up the others, as on a node)."""
    for container in spec["containers"][1:]:
        name, image = str(container["name"]), str(container.get("image", ""))
        sidecar = Sidecar(name, image, container, runtime.directory / f"{name}.log")
        runtime.sidecars.append(sidecar)
        if image in kubelet.cluster.toggles.missing_images:
            message = f'pull access denied: "{image}"'
            sidecar.state = {"waiting": {"reason": "ErrImagePull", "message": message}}
            kubelet.event(runtime, "Failed", f'Failed to pull image "{image}": {message}', True)
            continue
        try:
            sidecar.spawn = container_spawn(
                kubelet.cluster, runtime, spec, container, hostname=runtime.name
            )
        except ConfigError as exc:
            sidecar.state = {
                "waiting": {"reason": "CreateContainerConfigError", "message": str(exc)}
            }
            kubelet.event(runtime, "Failed", f"Error: {exc}", warning=True)
            continue
        await start(kubelet, runtime, sidecar)


async def wait_all(runtime: PodRuntime) -> None:
    """Until every running container after the first ended, or the pod is stopped."""
    live = [s.task for s in running(runtime) if s.task is not None]
    all_ended = asyncio.ensure_future(asyncio.gather(*live, return_exceptions=True))
    stopped = asyncio.create_task(runtime.stop_requested.wait())
    await asyncio.wait({all_ended, stopped}, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()


async def start(kubelet: Kubelet, runtime: PodRuntime, sidecar: Sidecar) -> None:
    """Start the container's PID 1 (output to its own log) and its prober."""
    spawn = sidecar.spawn
    assert spawn is not None
    started_at = now()
    if not spawn.argv:
        sidecar.state = _terminated(128, "StartError", started_at, "no command specified")
        return
    log = open(sidecar.log_path, "ab")  # noqa: SIM115 - handed to the process, closed below
    try:
        proc = await asyncio.create_subprocess_exec(
            *spawn.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            cwd=spawn.cwd,
            env=spawn.env,
            start_new_session=True,
            preexec_fn=preexec_for(spawn.sandbox),
        )
    except OSError as exc:
        message = f'exec: "{spawn.argv[0]}": {exc.strerror}'
        sidecar.state = _terminated(128, "StartError", started_at, message)
        kubelet.event(runtime, "Failed", f"Error: {message}", warning=True)
        return
    finally:
        log.close()
    sidecar.proc = proc
    kubelet.track(proc.pid, runtime, sidecar.name, spawn.argv)
    sidecar.state = {"running": {"startedAt": started_at}}
    probe = sidecar.spec.get("readinessProbe")
    sidecar.ready = probe is None
    kubelet.event(runtime, "Started", f"Started container {sidecar.name}")
    sidecar.task = asyncio.create_task(_watch(kubelet, runtime, sidecar, probe, started_at))


async def _watch(
    kubelet: Kubelet, runtime: PodRuntime, sidecar: Sidecar, probe: Obj | None, started_at: str
) -> None:
    assert sidecar.proc is not None
    prober = asyncio.create_task(_probe_loop(kubelet, runtime, sidecar, probe)) if probe else None
    try:
        code = await sidecar.proc.wait()
    finally:
        if prober is not None:
            prober.cancel()
    await asyncio.to_thread(_kill_rest, sidecar.key)
    exit_code = code if code >= 0 else 128 - code
    sidecar.ready = False
    sidecar.state = _terminated(exit_code, "Completed" if exit_code == 0 else "Error", started_at)
    kubelet.publish(runtime)


async def _probe_loop(kubelet: Kubelet, runtime: PodRuntime, sidecar: Sidecar, probe: Obj) -> None:
    period = float(probe.get("periodSeconds", 10))
    await asyncio.sleep(float(probe.get("initialDelaySeconds", 0)))
    successes = failures = 0
    while True:
        ok = await _probe_once(sidecar, probe)
        successes, failures = (successes + 1, 0) if ok else (0, failures + 1)
        was = sidecar.ready
        if ok and successes >= int(probe.get("successThreshold", 1)):
            sidecar.ready = True
        elif not ok and failures >= int(probe.get("failureThreshold", 3)):
            sidecar.ready = False
        if sidecar.ready != was:
            kubelet.publish(runtime)
        if not ok and was is False and failures == 1:
            kubelet.event(runtime, "Unhealthy", f"Readiness probe failed ({sidecar.name})", True)
        await asyncio.sleep(period)


async def _probe_once(sidecar: Sidecar, probe: Obj) -> bool:
    spawn = sidecar.spawn
    assert spawn is not None
    sandbox = spawn.sandbox
    if "tcpSocket" in probe:
        # The kubelet itself connects (as root, from the node): only the network is the pod's.
        argv = [sys.executable, "-c", _TCP_PROBE, str(probe["tcpSocket"].get("port"))]
        sandbox = replace(sandbox, identity=None, hosts=None)
    elif "exec" in probe:
        argv = [str(w) for w in probe["exec"].get("command") or []]
    else:
        return True
    timeout = float(probe.get("timeoutSeconds", 1))
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            cwd=spawn.cwd,
            env=spawn.env,
            start_new_session=True,
            preexec_fn=preexec_for(sandbox),
        )
    except OSError:
        return False
    try:
        return await asyncio.wait_for(proc.wait(), max(timeout, 1.0)) == 0
    except TimeoutError:
        signal_group(proc.pid, signal.SIGKILL)
        await proc.wait()
        return False


async def stop_all(runtime: PodRuntime, grace: float) -> None:
    """Like the kubelet stopping a container: SIGTERM to PID 1 (if it handles it), then
    everything in the container is killed after the grace period."""
    live = running(runtime)
    for sidecar in live:
        assert sidecar.proc is not None
        if grace > 0 and catches_signal(sidecar.proc.pid, signal.SIGTERM):
            with contextlib.suppress(ProcessLookupError):
                os.kill(sidecar.proc.pid, signal.SIGTERM)
    tasks = [s.task for s in live if s.task is not None]
    if tasks and grace > 0:
        await asyncio.wait(tasks, timeout=grace)
    for sidecar in live:
        assert sidecar.proc is not None
        signal_group(sidecar.proc.pid, signal.SIGKILL)
        await asyncio.to_thread(_kill_rest, sidecar.key)
    if tasks:
        await asyncio.wait(tasks)


def _kill_rest(key: str) -> None:
    for pid in container_pids(key) if key else []:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _terminated(code: int, reason: str, started_at: str, message: str | None = None) -> Obj:
    state: Obj = {"exitCode": code, "reason": reason, "startedAt": started_at, "finishedAt": now()}
    if message:
        state["message"] = message
    return {"terminated": state}
