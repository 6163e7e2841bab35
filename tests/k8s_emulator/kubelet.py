"""The emulated kubelet: runs each pod's containers as local process groups.

A pod goes through the states a real node reports: unschedulable or scheduled, image pull
(failing for images the test marked missing), container config (env from Secrets, the user),
running, and terminated. The first container's stdout+stderr go through a pipe into a log file
that stays readable until the pod is deleted, like the kubelet's container log; the other
containers (service sidecars) are run by `sidecars.py`. Who the processes run as and the
namespaces they get: `users.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.k8s_emulator import logs, sidecars
from tests.k8s_emulator.config import Spawn, container_spawn
from tests.k8s_emulator.errors import ConfigError
from tests.k8s_emulator.logs import DEFAULT_LOG_ROTATE_BYTES
from tests.k8s_emulator.runtime import (
    HOST_IP,
    NODE_NAME,
    LogStreamBroken,
    PodRuntime,
    catches_signal,
    container_pids,
    live_group_members,
    signal_group,
)
from tests.k8s_emulator.store import PODS, now
from tests.k8s_emulator.strict import record_event
from tests.k8s_emulator.users import (
    STRICT_USERS,
    hosts_file,
    preexec_for,
    sandbox_preexec,
)

if TYPE_CHECKING:
    from tests.k8s_emulator.cluster import Cluster

Obj = dict[str, Any]

__all__ = ["DEFAULT_LOG_ROTATE_BYTES", "NODE_NAME", "ConfigError", "Kubelet", "LogStreamBroken"]


class Kubelet:
    def __init__(self, cluster: Cluster, root: Path) -> None:
        self.cluster = cluster
        # Pods run as other users: their directories must be reachable by any uid, which the
        # test's own tmp dir (0700) is not; the node gets a directory of its own then.
        self._own_root = STRICT_USERS
        self.root = Path(tempfile.mkdtemp(prefix="k8s-emulator-node-")) if STRICT_USERS else root
        if STRICT_USERS:
            os.chmod(self.root, 0o711)
        self.runtimes: dict[str, PodRuntime] = {}  # by pod uid
        self.groups: dict[int, Obj] = {}  # every process group ever started, by pgid
        self._next_ip = 10
        self._pauses: dict[str, asyncio.subprocess.Process] = {}  # by pod uid
        self.log_rotate_bytes = DEFAULT_LOG_ROTATE_BYTES
        # "auto": a pod of several containers gets its own network namespace; "host"/"isolated".
        self.pod_network = "auto"

    # -- lifecycle -------------------------------------------------------------------------

    def pod_added(self, pod: Obj) -> None:
        md = pod["metadata"]
        directory = self.root / md["namespace"] / f"{md['name']}-{md['uid'][:8]}"
        runtime = PodRuntime(md["namespace"], md["name"], md["uid"], directory)
        self.runtimes[md["uid"]] = runtime
        runtime.task = asyncio.create_task(self._run(runtime), name=f"pod {md['name']}")

    def runtime_for(self, pod: Obj) -> PodRuntime | None:
        return self.runtimes.get(pod["metadata"]["uid"])

    async def forget(self, uid: str) -> None:
        """The pod object is gone: drop its log and volumes like the kubelet does."""
        runtime = self.runtimes.pop(uid, None)
        if runtime is not None:
            await asyncio.to_thread(shutil.rmtree, runtime.directory, True)

    def shutdown(self) -> None:
        for pgid in self.groups:
            signal_group(pgid, signal.SIGKILL)
        for runtime in self.runtimes.values():
            if runtime.task is not None:
                runtime.task.cancel()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def track(self, pgid: int, runtime: PodRuntime, container: str, argv: list[str]) -> None:
        """Remember a process group started in the pod (for `processes` and the final kill)."""
        self.groups[pgid] = {
            "namespace": runtime.namespace,
            "pod": runtime.name,
            "uid": runtime.uid,
            "container": container,
            "command": argv,
        }

    def processes(self) -> list[Obj]:
        result = []
        seen: set[int] = set()
        for pgid, info in self.groups.items():
            members = live_group_members(pgid)
            if members:
                seen.update(members)
                result.append({**info, "pgid": pgid, "pid": pgid, "pids": sorted(members)})
        uids = {info["uid"]: info for info in self.groups.values()}
        for uid, info in uids.items():
            strays = [p for p in container_pids(uid) if p not in seen]
            if strays:
                result.append({**info, "pgid": None, "pid": strays[0], "pids": sorted(strays)})
        return result

    def event(self, runtime: PodRuntime, reason: str, message: str, warning: bool = False) -> None:
        pod = self.cluster.store.get(PODS, runtime.namespace, runtime.name)
        if pod is not None and pod["metadata"]["uid"] == runtime.uid:
            component = "default-scheduler" if reason == "FailedScheduling" else "kubelet"
            record_event(
                self.cluster.store,
                {"kind": "Pod", "apiVersion": "v1", **pod},
                reason,
                message,
                type_="Warning" if warning else "Normal",
                component=component,
            )

    def break_exec_streams(self) -> int:
        count = 0
        for runtime in self.runtimes.values():
            for session in list(runtime.exec_sessions):
                session.broken.set()
                count += 1
        return count

    async def start_exec(self, runtime: PodRuntime, argv: list[str]) -> asyncio.subprocess.Process:
        """Start a process in the running container, as the container runtime's exec does."""
        if not argv:
            raise OSError(2, "no command specified")
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=runtime.cwd,
            env=runtime.env,
            start_new_session=True,
            # As the container's user, in its namespaces: `kubectl exec` runs like PID 1.
            preexec_fn=preexec_for(runtime.sandbox) if runtime.sandbox else None,
        )
        self.track(proc.pid, runtime, runtime.container, argv)
        return proc

    def _kill_container(self, runtime: PodRuntime, container: str | None = None) -> None:
        """The container's init died: the kernel kills everything left in its PID namespace
        (`container` None: every container of the pod, and its sandbox)."""
        for pgid, info in self.groups.items():
            if info["uid"] == runtime.uid and container in (None, info.get("container")):
                signal_group(pgid, signal.SIGKILL)
        key = runtime.uid if container is None else f"{runtime.uid}/{container}"
        for pid in container_pids(key):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    def break_log_streams(self) -> int:
        count = 0
        for runtime in self.runtimes.values():
            for follower in runtime.followers:
                follower.broken = True
                follower.wake.set()
                count += 1
        return count

    # -- status ----------------------------------------------------------------------------

    def _transition(self, runtime: PodRuntime, type_: str, status: str) -> str:
        previous = runtime.transitions.get(type_)
        if previous is None or previous[0] != status:
            runtime.transitions[type_] = (status, now())
        return runtime.transitions[type_][1]

    def _condition(
        self,
        runtime: PodRuntime,
        type_: str,
        status: str,
        reason: str | None = None,
        message: str | None = None,
    ) -> Obj:
        condition: Obj = {
            "type": type_,
            "status": status,
            "lastProbeTime": None,
            "lastTransitionTime": self._transition(runtime, type_, status),
        }
        if reason:
            condition["reason"] = reason
        if message:
            condition["message"] = message
        return condition

    def publish(self, runtime: PodRuntime) -> None:
        pod = self.cluster.store.get(PODS, runtime.namespace, runtime.name)
        if pod is None or pod["metadata"]["uid"] != runtime.uid:
            return
        container = pod["spec"]["containers"][0]
        status: Obj = {"phase": runtime.phase, "qosClass": "BestEffort"}
        if runtime.scheduled is False:
            status["conditions"] = [
                self._condition(
                    runtime,
                    "PodScheduled",
                    "False",
                    "Unschedulable",
                    "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are "
                    "available: 1 No preemption victims found for incoming pod.",
                )
            ]
        elif runtime.scheduled:
            terminal = runtime.phase in ("Succeeded", "Failed")
            extra = [self._sidecar_status(runtime, c) for c in pod["spec"]["containers"][1:]]
            unready = [container["name"]] if not runtime.ready else []
            unready += [str(c["name"]) for c in extra if not c["ready"]]
            ready = "False" if unready else "True"
            not_ready_reason = (
                None if not unready else ("PodCompleted" if terminal else "ContainersNotReady")
            )
            not_ready_message = None
            if unready and not terminal:
                not_ready_message = f"containers with unready status: [{' '.join(unready)}]"
            status["conditions"] = [
                self._condition(
                    runtime, "PodReadyToStartContainers", "False" if terminal else "True"
                ),
                self._condition(
                    runtime, "Initialized", "True", "PodCompleted" if terminal else None
                ),
                self._condition(runtime, "Ready", ready, not_ready_reason, not_ready_message),
                self._condition(
                    runtime, "ContainersReady", ready, not_ready_reason, not_ready_message
                ),
                self._condition(runtime, "PodScheduled", "True"),
            ]
            status["hostIP"] = HOST_IP
            status["hostIPs"] = [{"ip": HOST_IP}]
            status["startTime"] = runtime.start_time
            if runtime.pod_ip:
                status["podIP"] = runtime.pod_ip
                status["podIPs"] = [{"ip": runtime.pod_ip}]
            container_status: Obj = {
                "name": container["name"],
                "image": container.get("image", ""),
                "imageID": "",
                "ready": runtime.ready,
                "restartCount": 0,
                "started": "running" in runtime.state,
                "state": runtime.state,
                "lastState": {},
            }
            if runtime.container_id:
                container_status["containerID"] = runtime.container_id
                container_status["imageID"] = f"emulator://{container.get('image', '')}"
            status["containerStatuses"] = [container_status, *extra]
        if runtime.reason:
            status["reason"] = runtime.reason
        if runtime.message:
            status["message"] = runtime.message

        def change(obj: Obj) -> None:
            obj["status"] = status
            if runtime.scheduled:
                obj["spec"]["nodeName"] = NODE_NAME

        self.cluster.store.modify(PODS, runtime.namespace, runtime.name, change)

    def _sidecar_status(self, runtime: PodRuntime, container: Obj) -> Obj:
        """A container after the first: its own status once the kubelet got to it."""
        for sidecar in runtime.sidecars:
            if sidecar.name == container["name"]:
                return sidecar.status()
        image = str(container.get("image", ""))
        state: Obj = {"waiting": {"reason": "ContainerCreating"}}
        if image in self.cluster.toggles.missing_images:
            state = {
                "waiting": {"reason": "ErrImagePull", "message": f'pull access denied: "{image}"'}
            }
        return {
            "name": container["name"],
            "image": image,
            "imageID": "",
            "ready": False,
            "restartCount": 0,
            "started": False,
            "state": state,
            "lastState": {},
        }

    # -- the pod worker --------------------------------------------------------------------

    async def _stopped_within(self, runtime: PodRuntime, seconds: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(runtime.stop_requested.wait(), seconds)
        return runtime.stop_reason is not None

    async def _run(self, runtime: PodRuntime) -> None:
        try:
            pod = self.cluster.store.get(PODS, runtime.namespace, runtime.name)
            if pod is None:
                return
            spawn = await self._prepare(runtime, pod)
            if spawn is not None:
                await sidecars.start_all(self, runtime, pod["spec"])
                await self._run_container(runtime, spawn)
                await self._end_pod(runtime)
            else:
                self._end_unstarted(runtime)
        finally:
            runtime.log_complete = True
            runtime.notify()
            await sidecars.stop_all(runtime, 0)
            await self._end_sandbox(runtime)
            if runtime.stop_reason == "deleted":
                await self.cluster.pod_finished_terminating(
                    runtime.namespace, runtime.name, runtime.uid
                )
            self.cluster.pod_changed(runtime.namespace, runtime.name)

    async def _make_sandbox(self, runtime: PodRuntime, spec: Obj) -> None:
        """The pod sandbox: its IP, its /etc/hosts and (several containers) its network."""
        self._next_ip += 1
        runtime.pod_ip = f"10.244.0.{self._next_ip % 250 + 2}"
        runtime.directory.mkdir(parents=True, exist_ok=True)
        runtime.hosts = hosts_file(
            runtime.directory / "etc-hosts",
            runtime.name,
            runtime.pod_ip,
            list(spec.get("hostAliases") or []),
        )
        several = len(spec.get("containers") or []) > 1
        isolated = self.pod_network == "isolated" or (self.pod_network == "auto" and several)
        if isolated and STRICT_USERS:
            pause = await asyncio.create_subprocess_exec(
                "sleep",
                "infinity",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=sandbox_preexec(),
            )
            runtime.pause_pid = pause.pid
            self._pauses[runtime.uid] = pause
            self.track(pause.pid, runtime, "(sandbox)", ["sleep", "infinity"])

    async def _end_sandbox(self, runtime: PodRuntime) -> None:
        pause = self._pauses.pop(runtime.uid, None)
        if pause is not None:
            signal_group(pause.pid, signal.SIGKILL)
            await pause.wait()

    async def _end_pod(self, runtime: PodRuntime) -> None:
        """The first container ended: the pod runs on while another container runs (until it
        ends or the pod is stopped), then its phase says how they all ended."""
        if sidecars.running(runtime) and runtime.stop_reason is None:
            self.publish(runtime)
            await sidecars.wait_all(runtime)
        await sidecars.stop_all(runtime, runtime.grace if runtime.stop_reason else 0)
        codes = [int(runtime.state.get("terminated", {}).get("exitCode", 1))]
        codes += [int(s.state.get("terminated", {}).get("exitCode", 0)) for s in runtime.sidecars]
        forced = runtime.stop_reason in ("DeadlineExceeded", "Evicted")
        runtime.phase = "Succeeded" if not any(codes) and not forced else "Failed"
        self._set_stop_reason(runtime)
        self.publish(runtime)

    async def _prepare(self, runtime: PodRuntime, pod: Obj) -> Spawn | None:
        """Schedule, pull, resolve config: how to start the first container, or None if the pod
        was stopped before its container could start."""
        if self.cluster.toggles.unschedulable:
            runtime.scheduled = False
            self.publish(runtime)
            self.event(
                runtime,
                "FailedScheduling",
                "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are "
                "available: 1 No preemption victims found for incoming pod.",
                warning=True,
            )
            while self.cluster.toggles.unschedulable:
                if await self._stopped_within(runtime, 0.1):
                    return None
        runtime.scheduled = True
        runtime.start_time = now()
        self.publish(runtime)
        container = pod["spec"]["containers"][0]
        image = str(container.get("image", ""))
        if image in self.cluster.toggles.missing_images:
            runtime.state = {
                "waiting": {
                    "reason": "ErrImagePull",
                    "message": f'failed to pull and unpack image "{image}": failed to resolve '
                    f'reference "{image}": pull access denied, repository does not exist or may '
                    "require authorization",
                }
            }
            self.publish(runtime)
            self.event(
                runtime,
                "Failed",
                f'Failed to pull image "{image}": {runtime.state["waiting"]["message"]}',
                warning=True,
            )
            if await self._stopped_within(runtime, 0.2):
                return None
            while image in self.cluster.toggles.missing_images:
                if runtime.waiting_reason() != "ImagePullBackOff":
                    runtime.state = {
                        "waiting": {
                            "reason": "ImagePullBackOff",
                            "message": f'Back-off pulling image "{image}"',
                        }
                    }
                    self.publish(runtime)
                if await self._stopped_within(runtime, 0.2):
                    return None
        await self._make_sandbox(runtime, pod["spec"])
        while True:
            try:
                if image in self.cluster.toggles.config_error_images:
                    raise ConfigError(f'configmap "{image}-config" not found')
                spawn = container_spawn(
                    self.cluster, runtime, pod["spec"], container, hostname=runtime.name
                )
                break
            except ConfigError as exc:
                waiting = {"reason": "CreateContainerConfigError", "message": str(exc)}
                if runtime.state.get("waiting") != waiting:
                    runtime.state = {"waiting": waiting}
                    self.publish(runtime)
                    self.event(runtime, "Failed", f"Error: {exc}", warning=True)
            if await self._stopped_within(runtime, 0.3):
                return None
        runtime.command, runtime.env, runtime.cwd = spawn.argv, spawn.env, spawn.cwd
        runtime.sandbox, runtime.container = spawn.sandbox, str(container["name"])
        runtime.image = image
        return None if runtime.stop_reason is not None else spawn

    def _end_unstarted(self, runtime: PodRuntime) -> None:
        if runtime.stop_reason == "deleted":
            return
        runtime.phase = "Failed"
        runtime.ready = False
        if runtime.scheduled:
            runtime.state = {
                "terminated": {
                    "exitCode": 137,
                    "reason": "ContainerStatusUnknown",
                    "message": "The container could not be located when the pod was terminated",
                }
            }
        self._set_stop_reason(runtime)
        self.publish(runtime)

    def _set_stop_reason(self, runtime: PodRuntime) -> None:
        if runtime.stop_reason == "DeadlineExceeded":
            runtime.reason = "DeadlineExceeded"
            runtime.message = runtime.stop_message or (
                "Pod was active on the node longer than the specified deadline"
            )
        elif runtime.stop_reason == "OOMKilled":
            pass  # a container state reason, not a pod one
        elif runtime.stop_reason == "Evicted":
            runtime.reason = "Evicted"
            runtime.message = runtime.stop_message or (
                "The node was low on resource: memory. Threshold quantity: 100Mi, available: 10Mi."
            )

    async def _run_container(self, runtime: PodRuntime, spawn: Spawn) -> None:
        runtime.log_path.touch()
        runtime.timestamped_log_path.touch()
        # From here on the log can be read (empty if the command cannot even start).
        runtime.started = True
        started_at = now()
        if not runtime.command:
            self._finish(runtime, 128, "StartError", started_at, "no command specified")
            return
        read_fd, write_fd = os.pipe()
        try:
            proc = await asyncio.create_subprocess_exec(
                *runtime.command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=write_fd,
                stderr=write_fd,
                cwd=spawn.cwd,
                env=spawn.env,
                start_new_session=True,
                preexec_fn=preexec_for(spawn.sandbox),
            )
        except OSError as exc:
            os.close(read_fd)
            os.close(write_fd)
            message = (
                f"failed to create containerd task: failed to create shim task: OCI runtime create "
                f'failed: exec: "{runtime.command[0]}": {exc.strerror}: unknown'
            )
            self.event(runtime, "Failed", f"Error: {message}", warning=True)
            self._finish(runtime, 128, "StartError", started_at, message)
            return
        os.close(write_fd)
        runtime.pgid = proc.pid
        self.track(proc.pid, runtime, runtime.container, runtime.command)
        pump = asyncio.create_task(logs.pump(runtime, read_fd, lambda: self.log_rotate_bytes))
        runtime.phase = "Running"
        runtime.ready = True
        runtime.container_id = f"emulator://{proc.pid}"
        runtime.state = {"running": {"startedAt": started_at}}
        self.publish(runtime)
        self.event(runtime, "Started", f"Started container {runtime.container}")

        exited = asyncio.create_task(proc.wait())
        stopped = asyncio.create_task(runtime.stop_requested.wait())
        await asyncio.wait({exited, stopped}, return_when=asyncio.FIRST_COMPLETED)
        # A stopped pod stops all its containers at once, each with the grace period.
        others = asyncio.create_task(
            sidecars.stop_all(runtime, runtime.grace) if stopped.done() else asyncio.sleep(0)
        )
        if not exited.done() and runtime.grace > 0 and runtime.stop_reason != "OOMKilled":
            self.event(runtime, "Killing", f"Stopping container {runtime.container}")
            # Like the container runtime: SIGTERM to the container's PID 1 only, which (being a
            # namespace init) ignores it unless it installed a handler; nothing else is signalled.
            if catches_signal(proc.pid, signal.SIGTERM):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(exited), runtime.grace)
        stopped.cancel()
        # The container ends with its PID 1 (or the grace period): everything in it dies.
        await asyncio.to_thread(self._kill_container, runtime, runtime.container)
        await exited
        await others
        try:
            await asyncio.wait_for(pump, 2.0)
        except TimeoutError:
            pump.cancel()
        code = proc.returncode if proc.returncode is not None else 137
        exit_code = code if code >= 0 else 128 - code
        reason = "Completed" if exit_code == 0 else "Error"
        if runtime.stop_reason == "OOMKilled":
            reason, exit_code = "OOMKilled", 137
        self._finish(runtime, exit_code, reason, started_at, self._termination_message(runtime))

    def _termination_message(self, runtime: PodRuntime) -> str | None:
        """FallbackToLogsOnError: the tail of the log of a failed container."""
        pod = self.cluster.store.get(PODS, runtime.namespace, runtime.name)
        if pod is None or runtime.stop_reason == "deleted":
            return None
        policy = pod["spec"]["containers"][0].get("terminationMessagePolicy")
        return logs.log_tail(runtime) if policy == "FallbackToLogsOnError" else None

    def _finish(
        self,
        runtime: PodRuntime,
        exit_code: int,
        reason: str,
        started_at: str,
        message: str | None = None,
    ) -> None:
        terminated: Obj = {
            "exitCode": exit_code,
            "reason": reason,
            "startedAt": started_at,
            "finishedAt": now(),
        }
        if message:
            terminated["message"] = message
        if runtime.container_id:
            terminated["containerID"] = runtime.container_id
        # Log complete before the terminal status is visible: a client that sees `terminated`
        # and then reads the log gets all of it.
        runtime.log_complete = True
        runtime.notify()
        runtime.state = {"terminated": terminated}
        runtime.ready = False
        self.publish(runtime)

    # -- log reading -----------------------------------------------------------------------

    def read_log(
        self, runtime: PodRuntime, *, follow: bool, timestamps: bool
    ) -> AsyncIterator[bytes]:
        return logs.read_log(runtime, follow=follow, timestamps=timestamps)
