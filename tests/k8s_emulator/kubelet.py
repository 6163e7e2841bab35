"""The emulated kubelet: runs each pod's first container as a local process group.

A pod goes through the states a real node reports: unschedulable or scheduled, image pull
(failing for images the test marked missing), container config (env from Secrets), running, and
terminated. The container's stdout+stderr go through a pipe into a log file that stays readable
until the pod is deleted, like the kubelet's container log.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import re
import shutil
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from tests.k8s_emulator.expansion import expand, mapping_for
from tests.k8s_emulator.store import PODS, SECRETS, now
from tests.k8s_emulator.strict import record_event
from tests.k8s_emulator.validation import decode_secret

if TYPE_CHECKING:
    from tests.k8s_emulator.cluster import Cluster

Obj = dict[str, Any]

NODE_NAME = "emulator-node"
HOST_IP = "127.0.0.1"
_LINE = re.compile(rb"[^\n]*\n|[^\n]+")
# Every process of a container carries this in its environment: the emulator's stand-in for the
# container's PID namespace, so processes that left the process group (setsid) die with it too.
CONTAINER_MARK = "KUBE_EMULATOR_CONTAINER"
# The kubelet's container-log-max-size default.
DEFAULT_LOG_ROTATE_BYTES = 10 * 1024 * 1024
# FallbackToLogsOnError: the last lines/bytes of the log become the termination message.
_TERMINATION_LOG_BYTES = 2048
_TERMINATION_LOG_LINES = 80


class ConfigError(Exception):
    """What makes the kubelet report CreateContainerConfigError (and retry)."""


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


def container_pids(uid: str) -> list[int]:
    """Live processes started in the container `uid` (however they detached)."""
    mark = f"{CONTAINER_MARK}={uid}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if mark in environ.split(b"\0") and stat[stat.rfind(")") + 2 :][:1] not in ("Z", "X"):
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


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _log_timestamp() -> bytes:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
    return f"{stamp}000Z ".encode()


class Kubelet:
    def __init__(self, cluster: Cluster, root: Path) -> None:
        self.cluster = cluster
        self.root = root
        self.runtimes: dict[str, PodRuntime] = {}  # by pod uid
        self.groups: dict[int, Obj] = {}  # every process group ever started, by pgid
        self._next_ip = 10
        self.log_rotate_bytes = DEFAULT_LOG_ROTATE_BYTES

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
            _signal_group(pgid, signal.SIGKILL)
        for runtime in self.runtimes.values():
            if runtime.task is not None:
                runtime.task.cancel()

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
        )
        self.groups[proc.pid] = {
            "namespace": runtime.namespace,
            "pod": runtime.name,
            "uid": runtime.uid,
            "command": argv,
        }
        return proc

    def _kill_container(self, runtime: PodRuntime) -> None:
        """The container's init died: the kernel kills everything left in its PID namespace."""
        for pgid, info in self.groups.items():
            if info["uid"] == runtime.uid:
                _signal_group(pgid, signal.SIGKILL)
        for pid in container_pids(runtime.uid):
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
            ready = "True" if runtime.ready else "False"
            not_ready_reason = (
                None if runtime.ready else ("PodCompleted" if terminal else "ContainersNotReady")
            )
            not_ready_message = None
            if not runtime.ready and not terminal:
                not_ready_message = f"containers with unready status: [{container['name']}]"
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
            status["containerStatuses"] = [container_status]
        if runtime.reason:
            status["reason"] = runtime.reason
        if runtime.message:
            status["message"] = runtime.message

        def change(obj: Obj) -> None:
            obj["status"] = status
            if runtime.scheduled:
                obj["spec"]["nodeName"] = NODE_NAME

        self.cluster.store.modify(PODS, runtime.namespace, runtime.name, change)

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
                await self._run_container(runtime, *spawn)
            else:
                self._end_unstarted(runtime)
        finally:
            runtime.log_complete = True
            runtime.notify()
            if runtime.stop_reason == "deleted":
                await self.cluster.pod_finished_terminating(
                    runtime.namespace, runtime.name, runtime.uid
                )
            self.cluster.pod_changed(runtime.namespace, runtime.name)

    async def _prepare(self, runtime: PodRuntime, pod: Obj) -> tuple[str, dict[str, str]] | None:
        """Schedule, pull, resolve config: the container's cwd and env, or None if the pod was
        stopped before its container could start."""
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
        while True:
            try:
                if image in self.cluster.toggles.config_error_images:
                    raise ConfigError(f'configmap "{image}-config" not found')
                spawn = self._container_spawn(runtime, pod)
                break
            except ConfigError as exc:
                waiting = {"reason": "CreateContainerConfigError", "message": str(exc)}
                if runtime.state.get("waiting") != waiting:
                    runtime.state = {"waiting": waiting}
                    self.publish(runtime)
                    self.event(runtime, "Failed", f"Error: {exc}", warning=True)
            if await self._stopped_within(runtime, 0.3):
                return None
        runtime.command, cwd, env = spawn
        return None if runtime.stop_reason is not None else (cwd, env)

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

    def _container_spawn(
        self, runtime: PodRuntime, pod: Obj
    ) -> tuple[list[str], str, dict[str, str]]:
        """Work out argv, cwd and env; raises ConfigError like the kubelet's config step."""
        spec = pod["spec"]
        container = spec["containers"][0]
        volumes_dir = runtime.directory / "volumes"
        volumes = {v["name"]: v for v in spec.get("volumes") or []}
        mounts: list[tuple[str, str]] = []
        for mount in container.get("volumeMounts") or []:
            volume = volumes.get(mount["name"], {})
            local = volumes_dir / mount["name"]
            local.mkdir(parents=True, exist_ok=True)
            if "secret" in volume:
                secret_name = volume["secret"].get("secretName", "")
                secret = self.cluster.store.get(SECRETS, runtime.namespace, secret_name)
                if secret is None:
                    raise ConfigError(f'secret "{secret_name}" not found')
                for key, value in decode_secret(secret).items():
                    (local / key).write_text(value)
            sub = mount.get("subPath")
            target = local / sub if sub else local
            target.mkdir(parents=True, exist_ok=True)
            mounts.append((str(mount["mountPath"]).rstrip("/") or "/", str(target)))
        mounts.sort(key=lambda m: len(m[0]), reverse=True)

        def translate(value: str) -> str | None:
            for mount_path, local_path in mounts:
                if value == mount_path or value.startswith(mount_path + "/"):
                    return local_path + value[len(mount_path) :]
            return None

        env = self._resolve_env(runtime, container)
        env = {key: translate(value) or value for key, value in env.items()}
        home = runtime.directory / "home"
        home.mkdir(parents=True, exist_ok=True)
        runtime.image = str(container.get("image", ""))
        base = {
            "PATH": self.cluster.images.path_for(runtime.image),
            "HOSTNAME": runtime.name,
            "HOME": str(home),
            "KUBERNETES_SERVICE_HOST": HOST_IP,
            "KUBERNETES_SERVICE_PORT": str(self.cluster.port),
        }
        full_env = {**base, **env, CONTAINER_MARK: runtime.uid}
        lookup = mapping_for(full_env)
        argv = [expand(str(a), lookup) for a in (container.get("command") or [])]
        argv += [expand(str(a), lookup) for a in (container.get("args") or [])]
        working_dir = container.get("workingDir")
        if working_dir:
            cwd = translate(working_dir)
            if cwd is None:
                # Not a volume: the runtime would create it inside the container's filesystem.
                cwd = (
                    working_dir
                    if os.path.isdir(working_dir)
                    else str(runtime.directory / "rootfs" / working_dir.lstrip("/"))
                )
        else:
            cwd = str(runtime.directory / "rootfs")
        Path(cwd).mkdir(parents=True, exist_ok=True)
        runtime.env, runtime.cwd = full_env, cwd
        return argv, cwd, full_env

    def _resolve_env(self, runtime: PodRuntime, container: Obj) -> dict[str, str]:
        env: dict[str, str] = {}
        store = self.cluster.store
        for source in container.get("envFrom") or []:
            ref = source.get("secretRef")
            if ref is None:
                if "configMapRef" in source:
                    if source["configMapRef"].get("optional"):
                        continue
                    raise ConfigError(f'configmap "{source["configMapRef"].get("name")}" not found')
                continue
            secret = store.get(SECRETS, runtime.namespace, ref.get("name", ""))
            if secret is None:
                if ref.get("optional"):
                    continue
                raise ConfigError(f'secret "{ref.get("name")}" not found')
            prefix = source.get("prefix", "")
            for key, value in decode_secret(secret).items():
                env[prefix + key] = value
        for item in container.get("env") or []:
            name = item["name"]
            if "valueFrom" not in item:
                env[name] = expand(str(item.get("value", "")), mapping_for(env))
                continue
            value_from = item["valueFrom"]
            if "secretKeyRef" in value_from:
                ref = value_from["secretKeyRef"]
                secret = store.get(SECRETS, runtime.namespace, ref.get("name", ""))
                if secret is None:
                    if ref.get("optional"):
                        continue
                    raise ConfigError(f'secret "{ref.get("name")}" not found')
                values = decode_secret(secret)
                if ref.get("key") not in values:
                    if ref.get("optional"):
                        continue
                    raise ConfigError(
                        f"couldn't find key {ref.get('key')} in Secret "
                        f"{runtime.namespace}/{ref.get('name')}"
                    )
                env[name] = values[ref["key"]]
            elif "fieldRef" in value_from:
                path = value_from["fieldRef"].get("fieldPath", "")
                env[name] = {
                    "metadata.name": runtime.name,
                    "metadata.namespace": runtime.namespace,
                    "metadata.uid": runtime.uid,
                    "spec.nodeName": NODE_NAME,
                    "status.hostIP": HOST_IP,
                    "status.podIP": runtime.pod_ip or "",
                }.get(path, "")
            elif "configMapKeyRef" in value_from:
                ref = value_from["configMapKeyRef"]
                if not ref.get("optional"):
                    raise ConfigError(f'configmap "{ref.get("name")}" not found')
            else:
                env[name] = ""
        return env

    async def _run_container(self, runtime: PodRuntime, cwd: str, env: dict[str, str]) -> None:
        runtime.directory.mkdir(parents=True, exist_ok=True)
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
                cwd=cwd,
                env=env,
                start_new_session=True,
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
        self.groups[proc.pid] = {
            "namespace": runtime.namespace,
            "pod": runtime.name,
            "uid": runtime.uid,
            "command": runtime.command,
        }
        pump = asyncio.create_task(self._pump(runtime, read_fd))
        self._next_ip += 1
        runtime.pod_ip = f"10.244.0.{self._next_ip % 250 + 2}"
        runtime.phase = "Running"
        runtime.ready = True
        runtime.container_id = f"emulator://{proc.pid}"
        runtime.state = {"running": {"startedAt": started_at}}
        self.publish(runtime)
        self.event(runtime, "Started", f"Started container {self._container_name(runtime)}")

        exited = asyncio.create_task(proc.wait())
        stopped = asyncio.create_task(runtime.stop_requested.wait())
        await asyncio.wait({exited, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not exited.done() and runtime.grace > 0 and runtime.stop_reason != "OOMKilled":
            self.event(runtime, "Killing", f"Stopping container {self._container_name(runtime)}")
            # Like the container runtime: SIGTERM to the container's PID 1 only, which (being a
            # namespace init) ignores it unless it installed a handler; nothing else is signalled.
            if catches_signal(proc.pid, signal.SIGTERM):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(exited), runtime.grace)
        stopped.cancel()
        # The container ends with its PID 1 (or the grace period): everything in it dies.
        await asyncio.to_thread(self._kill_container, runtime)
        await exited
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

    def _container_name(self, runtime: PodRuntime) -> str:
        pod = self.cluster.store.get(PODS, runtime.namespace, runtime.name)
        return str(pod["spec"]["containers"][0]["name"]) if pod else "main"

    def _termination_message(self, runtime: PodRuntime) -> str | None:
        """FallbackToLogsOnError: the tail of the log of a failed container."""
        pod = self.cluster.store.get(PODS, runtime.namespace, runtime.name)
        if pod is None or runtime.stop_reason == "deleted":
            return None
        policy = pod["spec"]["containers"][0].get("terminationMessagePolicy")
        if policy != "FallbackToLogsOnError":
            return None
        try:
            data = runtime.log_path.read_bytes()[-_TERMINATION_LOG_BYTES:]
        except OSError:
            return None
        lines = data.splitlines(keepends=True)[-_TERMINATION_LOG_LINES:]
        return b"".join(lines).decode("utf-8", "replace") or None

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
        forced = runtime.stop_reason in ("DeadlineExceeded", "Evicted")
        runtime.phase = "Succeeded" if exit_code == 0 and not forced else "Failed"
        self._set_stop_reason(runtime)
        self.publish(runtime)

    async def _pump(self, runtime: PodRuntime, read_fd: int) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        pipe = os.fdopen(read_fd, "rb", buffering=0)
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), pipe
        )
        raw = open(runtime.log_path, "ab", buffering=0)  # noqa: SIM115 - reopened at rotation
        stamped = open(runtime.timestamped_log_path, "ab", buffering=0)  # noqa: SIM115
        try:
            while chunk := await reader.read(65536):
                while chunk:
                    room = self.log_rotate_bytes - raw.tell()
                    if room <= 0:
                        # Like the kubelet's log rotation: the current file is moved aside and a
                        # new one started; the API only ever serves the current file.
                        raw.close()
                        stamped.close()
                        for path in (runtime.log_path, runtime.timestamped_log_path):
                            path.replace(path.with_suffix(path.suffix + ".1"))
                        raw = open(runtime.log_path, "ab", buffering=0)  # noqa: SIM115
                        stamped = open(runtime.timestamped_log_path, "ab", buffering=0)  # noqa: SIM115
                        runtime.log_generation += 1
                        continue
                    self._append(runtime, chunk[:room], raw, stamped)
                    chunk = chunk[room:]
        finally:
            raw.close()
            stamped.close()
            transport.close()

    def _append(self, runtime: PodRuntime, chunk: bytes, raw: BinaryIO, stamped: BinaryIO) -> None:
        raw.write(chunk)
        out = bytearray()
        stamp = _log_timestamp()
        for piece in _LINE.findall(chunk):
            if runtime.at_line_start:
                out += stamp
            out += piece
            runtime.at_line_start = piece.endswith(b"\n")
        stamped.write(bytes(out))
        runtime.notify()

    # -- log reading -----------------------------------------------------------------------

    async def read_log(
        self, runtime: PodRuntime, *, follow: bool, timestamps: bool
    ) -> AsyncIterator[bytes]:
        path = runtime.timestamped_log_path if timestamps else runtime.log_path
        follower = Follower()
        runtime.followers.add(follower)
        generation = runtime.log_generation
        try:
            handle = open(path, "rb")  # noqa: SIM115 - reopened when the log rotates
            while True:
                follower.wake.clear()
                complete = runtime.log_complete
                data = handle.read(65536)
                if data:
                    yield data
                    continue
                if follow and generation != runtime.log_generation:
                    # A follower goes on into the new file, as kubectl logs -f does.
                    handle.close()
                    generation = runtime.log_generation
                    handle = open(path, "rb")  # noqa: SIM115
                    continue
                if not follow or complete:
                    return
                if follower.broken:
                    raise LogStreamBroken(f"log stream of {runtime.name} broken by the emulator")
                await follower.wake.wait()
                if follower.broken:
                    raise LogStreamBroken(f"log stream of {runtime.name} broken by the emulator")
        finally:
            handle.close()
            runtime.followers.discard(follower)
