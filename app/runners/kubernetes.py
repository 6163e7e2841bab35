"""Kubernetes runner: one batch/v1 Job per DAG job, followed through pod watches and the pod log.

kubernetes_asyncio is untyped, so every call goes through `_Kube`, which asks for the raw response
(`_preload_content=False`), checks the status itself and hands back plain JSON dicts. The rest of
the module works on those dicts and on the small typed views built from them.

Following a job is level-triggered: the pod watcher and the log reader only update `_JobState`
and wake the main loop, which looks at the whole state each time. A watch can skip phases (a pod
seen Pending may next be seen deleted), so no decision depends on seeing a particular transition.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio.client.exceptions import ApiException

from app.runners.base import JobReporter, JobResult, JobRun, StepOutcome
from app.runners.k8s_script import (
    WORKSPACE,
    Event,
    JobEnd,
    MarkerParser,
    Output,
    StepEnd,
    StepStart,
    build_script,
    installation_id,
    job_label,
    k8s_escape,
    k8s_job_name,
    marker_token,
    plan_env,
    secret_key,
    secret_name,
)

log = logging.getLogger(__name__)

Json = dict[str, Any]

LABEL_BUILD = "ci-executor/build-id"
# Which executor installation (database) created the object: cancel and the orphan sweep only
# ever touch their own installation's Jobs, even when several share a namespace.
LABEL_INSTALLATION = "ci-executor/installation"
LABEL_JOB = "ci-executor/job"
LABEL_JOB_ID = "ci-executor/job-id"  # the Kubernetes Job name: selects exactly this job's pods
ANNOTATION_JOB_NAME = "ci-executor/job-name"
CONTAINER = "job"

# Every (API group, resource) -> verbs this runner calls; the Helm chart's Role must grant these
# (tests check the runner calls nothing else).
REQUIRED_RBAC: dict[tuple[str, str], frozenset[str]] = {
    ("batch", "jobs"): frozenset({"create", "get", "list", "delete", "deletecollection"}),
    ("", "pods"): frozenset({"list", "watch"}),
    ("", "pods/log"): frozenset({"get"}),
    ("", "secrets"): frozenset({"create", "get", "patch", "delete"}),
}

# Waiting reasons after which the container will never start by itself.
_FATAL_WAITING = {
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
}
# After this long without log bytes, a held-back newline is released as output (see
# MarkerParser.release_idle) so the last line of a quiet step shows up live.
_IDLE_RELEASE_SECONDS = 0.2
# Image pull failures can be a registry blip; the kubelet retries them, we wait a little.
_PULL_WAITING = {"ErrImagePull", "ImagePullBackOff"}


@dataclass(frozen=True)
class KubernetesSettings:
    namespace: str
    default_image: str
    # Derives each build's marker token; every replica must share it to re-attach to a build.
    marker_secret: str
    ttl_seconds_after_finished: int = 3600
    default_deadline_seconds: int = 3600  # activeDeadlineSeconds of jobs without a timeout
    unschedulable_timeout_seconds: float = 300
    image_pull_timeout_seconds: float = 30  # after the first ErrImagePull/ImagePullBackOff
    cpu_request: str | None = None
    memory_request: str | None = None
    cpu_limit: str | None = None
    memory_limit: str | None = None
    run_as_user: int = 1000
    kubeconfig: str | None = None  # else in-cluster, else $KUBECONFIG / ~/.kube/config
    watch_timeout_seconds: int = 60  # server-side lifetime of one watch request
    retry_interval_seconds: float = 1.0  # pause before reconnecting a broken watch or log
    job_check_interval_seconds: float = 10.0  # how often to re-read the Job while following
    # A log stream silent for this long is reopened: a connection dropped without a FIN (a NAT or
    # proxy timing out) would otherwise hang the follower forever. Reopening re-reads the log.
    log_idle_reconnect_seconds: float = 600.0


class KubeError(Exception):
    def __init__(self, status: int, message: str, reason: str = "") -> None:
        super().__init__(f"{status} {reason}: {message}".strip())
        self.status = status
        self.message = message
        self.reason = reason


# ---------------------------------------------------------------- the API boundary


class _Kube:
    """Thin typed wrapper over the kubernetes_asyncio calls the runner makes."""

    def __init__(self, api_client: Any, namespace: str) -> None:
        # Typed as Any on purpose: bodies go in as plain dicts and responses come back raw.
        self._batch: Any = k8s_client.BatchV1Api(api_client)
        self._core: Any = k8s_client.CoreV1Api(api_client)
        self.ns = namespace

    @staticmethod
    async def _json(call: Awaitable[Any]) -> Json:
        try:
            resp = await call
        except ApiException as exc:  # raised before a response exists (bad arguments)
            raise KubeError(int(exc.status or 0), str(exc.reason)) from exc
        try:
            body = await resp.read()
        finally:
            resp.release()
        _raise_for_status(resp.status, body)
        data = json.loads(body) if body else {}
        return data if isinstance(data, dict) else {}

    async def stream(self, call: Awaitable[Any]) -> Any:
        """Start a streaming request; the caller reads and releases the response."""
        resp = await call
        if not 200 <= resp.status <= 299:
            try:
                body = await resp.read()
            finally:
                resp.release()
            _raise_for_status(resp.status, body)
        return resp

    async def create_job(self, body: Json) -> Json:
        return await self._json(
            self._batch.create_namespaced_job(self.ns, body, _preload_content=False)
        )

    async def read_job(self, name: str) -> Json | None:
        try:
            return await self._json(
                self._batch.read_namespaced_job(name, self.ns, _preload_content=False)
            )
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    async def list_jobs(self, selector: str, limit: int | None = None) -> list[Json]:
        kwargs: dict[str, Any] = {"label_selector": selector, "_preload_content": False}
        if limit is not None:
            kwargs["limit"] = limit
        data = await self._json(self._batch.list_namespaced_job(self.ns, **kwargs))
        return list(data.get("items") or [])

    async def delete_job(self, name: str) -> None:
        with contextlib.suppress(_NotFound):
            await self._ignore_404(
                self._batch.delete_namespaced_job(
                    name, self.ns, propagation_policy="Background", _preload_content=False
                )
            )

    async def delete_jobs(self, selector: str) -> None:
        await self._json(
            self._batch.delete_collection_namespaced_job(
                self.ns,
                label_selector=selector,
                propagation_policy="Background",
                _preload_content=False,
            )
        )

    async def list_pods(self, selector: str) -> Json:
        return await self._json(
            self._core.list_namespaced_pod(self.ns, label_selector=selector, _preload_content=False)
        )

    async def watch_pods(self, selector: str, resource_version: str, timeout: int) -> Any:
        return await self.stream(
            self._core.list_namespaced_pod(
                self.ns,
                label_selector=selector,
                watch=True,
                resource_version=resource_version,
                allow_watch_bookmarks=True,
                timeout_seconds=timeout,
                _preload_content=False,
                _request_timeout=aiohttp.ClientTimeout(sock_connect=30, sock_read=timeout + 30),
            )
        )

    async def pod_log(self, name: str, idle_timeout: float) -> Any:
        return await self.stream(
            self._core.read_namespaced_pod_log(
                name,
                self.ns,
                container=CONTAINER,
                follow=True,
                _preload_content=False,
                _request_timeout=aiohttp.ClientTimeout(sock_connect=30, sock_read=idle_timeout),
            )
        )

    async def create_secret(self, body: Json) -> Json:
        return await self._json(
            self._core.create_namespaced_secret(self.ns, body, _preload_content=False)
        )

    async def read_secret(self, name: str) -> Json | None:
        try:
            return await self._json(
                self._core.read_namespaced_secret(name, self.ns, _preload_content=False)
            )
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    async def merge_patch_secret(self, name: str, body: Json) -> Json:
        return await self._json(
            self._core.patch_namespaced_secret(
                name,
                self.ns,
                body,
                _content_type="application/merge-patch+json",
                _preload_content=False,
            )
        )

    async def delete_secret(self, name: str) -> None:
        with contextlib.suppress(_NotFound):
            await self._ignore_404(
                self._core.delete_namespaced_secret(name, self.ns, _preload_content=False)
            )

    async def _ignore_404(self, call: Awaitable[Any]) -> None:
        try:
            await self._json(call)
        except KubeError as exc:
            if exc.status == 404:
                raise _NotFound from exc
            raise


class _NotFound(Exception):
    pass


def _rbac_text() -> str:
    return "; ".join(
        f"{resource} ({', '.join(sorted(verbs))})" for (_, resource), verbs in REQUIRED_RBAC.items()
    )


def _raise_for_status(status: int, body: bytes) -> None:
    if 200 <= status <= 299:
        return
    message, reason = body.decode("utf-8", "replace")[:500], ""
    with contextlib.suppress(ValueError, AttributeError):
        parsed = json.loads(body)
        message = str(parsed.get("message") or message)
        reason = str(parsed.get("reason") or "")
    raise KubeError(status, message, reason)


# ---------------------------------------------------------------- views of pods and jobs


@dataclass(frozen=True)
class _PodView:
    name: str
    uid: str
    phase: str
    reason: str  # status.reason, e.g. Evicted
    message: str
    terminating: bool
    unschedulable: str | None  # the scheduler's message while unschedulable
    waiting_reason: str
    waiting_message: str
    started: bool  # the container ran (running or terminated): its log exists
    terminated: bool
    exit_code: int | None
    terminated_reason: str

    @classmethod
    def parse(cls, pod: Json) -> _PodView:
        meta = pod.get("metadata") or {}
        status = pod.get("status") or {}
        unschedulable = None
        for cond in status.get("conditions") or []:
            if (
                cond.get("type") == "PodScheduled"
                and cond.get("status") == "False"
                and cond.get("reason") == "Unschedulable"
            ):
                unschedulable = str(cond.get("message") or "Unschedulable")
        waiting: Json = {}
        running = False
        terminated: Json | None = None
        for cs in status.get("containerStatuses") or []:
            if cs.get("name") != CONTAINER:
                continue
            state = cs.get("state") or {}
            waiting = state.get("waiting") or {}
            running = bool(state.get("running"))
            terminated = state.get("terminated")
        phase = str(status.get("phase") or "Pending")
        code = terminated.get("exitCode") if terminated else None
        return cls(
            name=str(meta.get("name") or ""),
            uid=str(meta.get("uid") or ""),
            phase=phase,
            reason=str(status.get("reason") or ""),
            message=str(status.get("message") or ""),
            terminating=bool(meta.get("deletionTimestamp")),
            unschedulable=unschedulable,
            waiting_reason=str(waiting.get("reason") or ""),
            waiting_message=str(waiting.get("message") or ""),
            started=running or terminated is not None or phase in ("Running", "Succeeded"),
            terminated=terminated is not None or phase in ("Succeeded", "Failed"),
            exit_code=int(code) if isinstance(code, int) else None,
            terminated_reason=str((terminated or {}).get("reason") or ""),
        )


def _deadline_exceeded(job: Json | None) -> str | None:
    for cond in ((job or {}).get("status") or {}).get("conditions") or []:
        if (
            cond.get("type") in ("Failed", "FailureTarget")
            and cond.get("status") == "True"
            and cond.get("reason") == "DeadlineExceeded"
        ):
            return str(cond.get("message") or "Job was active longer than specified deadline")
    return None


def _job_finished(job: Json) -> bool:
    return any(
        cond.get("type") in ("Complete", "Failed") and cond.get("status") == "True"
        for cond in (job.get("status") or {}).get("conditions") or []
    )


# ---------------------------------------------------------------- per-job follow state


@dataclass
class _JobState:
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    pods: dict[str, _PodView] = field(default_factory=dict)  # uid -> latest view
    gone: set[str] = field(default_factory=set)  # uids seen deleted
    job_ended: bool = False  # the script's job-end marker was read: the log is complete

    def poke(self) -> None:
        self.wake.set()


class _Steps:
    """Turns parsed marker events into reporter calls and remembers what each step did."""

    def __init__(self, job: JobRun, reporter: JobReporter, skip_until: int) -> None:
        self.job = job
        self.reporter = reporter
        self.skip_until = skip_until  # bytes of output already stored (re-attach)
        self.started: list[int] = []
        self.finished: dict[int, StepOutcome] = {}
        self.current: int | None = None
        self.job_end: JobEnd | None = None

    async def handle(self, event: Event) -> None:
        if isinstance(event, StepStart):
            self.current = event.index
            if event.index not in self.started:
                self.started.append(event.index)
            await self.reporter.step_started(event.index)
        elif isinstance(event, StepEnd):
            self.finished[event.index] = event.status
            if self.current == event.index:
                self.current = None
            error = None
            if event.status == "error":
                error = "bash is not installed in the image; use `shell: sh` or another image"
            await self.reporter.step_finished(event.index, event.status, event.exit_code, error)
        elif isinstance(event, JobEnd):
            self.job_end = event
        elif isinstance(event, Output):
            data, start = event.data, event.end - len(event.data)
            if event.end <= self.skip_until:
                return
            if start < self.skip_until:
                data = data[self.skip_until - start :]
            await self.reporter.step_output(self._output_index(), data, event.end)

    def _output_index(self) -> int:
        if self.current is not None:
            return self.current
        if self.started:
            return self.started[-1]
        return self.job.steps[0].index

    def outcome(self) -> JobResult:
        for step in self.job.steps:
            status = self.finished.get(step.index)
            if status in ("failed", "timed_out", "error") and not step.continue_on_error:
                if status == "failed":
                    return JobResult("failed")
                if status == "timed_out":
                    return JobResult("timed_out", f"step {step.index + 1} ({step.name}) timed out")
                return JobResult(
                    "error",
                    f"step {step.index + 1} ({step.name}): bash is not installed in the image",
                )
        if self.job_end is not None and self.job_end.failed:
            return JobResult("failed")
        return JobResult("success")

    async def end_unfinished(
        self, running: StepOutcome, rest: StepOutcome, error: str | None
    ) -> None:
        for step in self.job.steps:
            if step.index in self.finished:
                continue
            status = running if step.index == self.current else rest
            self.finished[step.index] = status
            await self.reporter.step_finished(step.index, status, None, error)


# ---------------------------------------------------------------- the runner


class KubernetesRunner:
    name = "kubernetes"
    can_reattach = True  # the Jobs outlive the executor; their logs are re-read from the API

    def __init__(self, settings: KubernetesSettings) -> None:
        self.settings = settings
        self.installation = installation_id(settings.marker_secret)
        self._mine = f"{LABEL_INSTALLATION}={self.installation}"
        self._api_client: Any = None
        self._kube: _Kube | None = None

    def _secret_name(self, build_id: int) -> str:
        return secret_name(build_id, self.installation)

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        # Any: the library types this pool size as int although it documents None as "no limit".
        configuration: Any = k8s_client.Configuration()
        source = await self._load_config(configuration)
        # Every followed job holds two long requests (pod watch, log follow); the default pool of
        # 100 connections would make job 51 wait for a free connection forever.
        configuration.connection_pool_maxsize = None
        self._api_client = k8s_client.ApiClient(configuration=configuration)
        self._kube = _Kube(self._api_client, self.settings.namespace)
        try:
            await self._kube.list_jobs(LABEL_BUILD, limit=1)
        except KubeError as exc:
            await self.stop()
            if exc.status == 403:
                raise RuntimeError(
                    f"Kubernetes RBAC forbids listing Jobs in namespace "
                    f"{self.settings.namespace!r} (config from {source}): {exc.message}. "
                    f"The executor's service account needs, in that namespace: {_rbac_text()}."
                ) from exc
            raise RuntimeError(
                f"Kubernetes API check failed (config from {source}): {exc}"
            ) from exc
        except (aiohttp.ClientError, OSError) as exc:
            await self.stop()
            raise RuntimeError(
                f"cannot reach the Kubernetes API (config from {source}): {exc}"
            ) from exc

    async def _load_config(self, configuration: Any) -> str:
        explicit = self.settings.kubeconfig
        try:
            if explicit:
                if not Path(explicit).expanduser().is_file():
                    raise RuntimeError(f"no Kubernetes config: kubeconfig {explicit!r} not found")
                await k8s_config.load_kube_config(
                    config_file=str(Path(explicit).expanduser()),
                    client_configuration=configuration,
                    persist_config=False,
                )
                return explicit
            if os.environ.get("KUBERNETES_SERVICE_HOST"):
                load_incluster: Callable[..., None] = k8s_config.load_incluster_config  # untyped
                load_incluster(client_configuration=configuration)
                return "in-cluster service account"
            env_paths = [p for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p]
            paths = env_paths or [str(Path("~/.kube/config").expanduser())]
            existing = [p for p in paths if Path(p).is_file()]
            if not existing:
                raise RuntimeError(
                    "no Kubernetes config: set KUBECONFIG or run in a cluster "
                    f"(no in-cluster service account; looked for {', '.join(paths)})"
                )
            await k8s_config.load_kube_config(
                config_file=os.pathsep.join(existing),
                client_configuration=configuration,
                persist_config=False,
            )
            return os.pathsep.join(existing)
        except k8s_config.ConfigException as exc:
            raise RuntimeError(f"invalid Kubernetes config: {exc}") from exc

    async def stop(self) -> None:
        client, self._api_client, self._kube = self._api_client, None, None
        if client is not None:
            await client.close()

    @property
    def kube(self) -> _Kube:
        if self._kube is None:
            raise RuntimeError("KubernetesRunner.start() was not called")
        return self._kube

    # ------------------------------------------------------------ build-level operations

    async def cancel_build(self, build_id: int) -> None:
        """Delete every Job of the build (pods with them, Background) and the build's Secret.
        Runners following those Jobs notice through their own cancel event or the pod watch."""
        try:
            await self.kube.delete_jobs(f"{LABEL_BUILD}={build_id},{self._mine}")
        finally:
            await self.cleanup_build(build_id)

    async def cleanup_build(self, build_id: int) -> None:
        """Delete the build's Secret (called when the build ends, and by cancel)."""
        await self.kube.delete_secret(self._secret_name(build_id))

    async def sweep_orphans(
        self, finished_build_ids: Callable[[list[int]], Awaitable[set[int]]]
    ) -> list[str]:
        """Delete Jobs (and Secrets) left behind by builds that are already finished."""
        jobs = await self.kube.list_jobs(f"{LABEL_BUILD},{self._mine}")
        by_build: dict[int, list[str]] = {}
        for item in jobs:
            meta = item.get("metadata") or {}
            raw = (meta.get("labels") or {}).get(LABEL_BUILD, "")
            if str(raw).isdigit():
                by_build.setdefault(int(raw), []).append(str(meta.get("name")))
        if not by_build:
            return []
        finished = await finished_build_ids(sorted(by_build))
        deleted: list[str] = []
        for build_id in sorted(finished & set(by_build)):
            for name in by_build[build_id]:
                await self.kube.delete_job(name)
                deleted.append(name)
            await self.cleanup_build(build_id)
        return deleted

    # ------------------------------------------------------------ one job

    def job_manifest(self, job: JobRun, script: str, env: list[Json]) -> Json:
        s = self.settings
        name = k8s_job_name(job.build_id, job.job_name, self.installation)
        labels = {
            LABEL_BUILD: str(job.build_id),
            LABEL_INSTALLATION: self.installation,
            LABEL_JOB: job_label(job.job_name),
            LABEL_JOB_ID: name,
        }
        resources: Json = {}
        requests = {k: v for k, v in (("cpu", s.cpu_request), ("memory", s.memory_request)) if v}
        limits = {k: v for k, v in (("cpu", s.cpu_limit), ("memory", s.memory_limit)) if v}
        if requests:
            resources["requests"] = requests
        if limits:
            resources["limits"] = limits
        deadline = (
            max(1, math.ceil(job.timeout_seconds))
            if job.timeout_seconds
            else s.default_deadline_seconds
        )
        container: Json = {
            "name": CONTAINER,
            "image": job.image or s.default_image,
            "command": ["sh", "-c", k8s_escape(script)],
            "workingDir": WORKSPACE,
            "env": env,
            "volumeMounts": [{"name": "workspace", "mountPath": WORKSPACE}],
            "securityContext": {
                "allowPrivilegeEscalation": False,
                "runAsNonRoot": True,
                "runAsUser": s.run_as_user,
                "capabilities": {"drop": ["ALL"]},
            },
        }
        if resources:
            container["resources"] = resources
        return {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": name,
                "labels": labels,
                "annotations": {ANNOTATION_JOB_NAME: job.job_name},
            },
            "spec": {
                "backoffLimit": 0,
                "activeDeadlineSeconds": deadline,
                "ttlSecondsAfterFinished": s.ttl_seconds_after_finished,
                "template": {
                    "metadata": {
                        "labels": labels,
                        "annotations": {ANNOTATION_JOB_NAME: job.job_name},
                    },
                    "spec": {
                        "restartPolicy": "Never",
                        "automountServiceAccountToken": False,
                        "enableServiceLinks": False,
                        "securityContext": {
                            "runAsNonRoot": True,
                            "runAsUser": s.run_as_user,
                            "fsGroup": s.run_as_user,
                        },
                        "containers": [container],
                        "volumes": [{"name": "workspace", "emptyDir": {}}],
                    },
                },
            },
        }

    async def run_job(
        self, job: JobRun, reporter: JobReporter, *, resume: bool = False
    ) -> JobResult:
        steps = _Steps(job, reporter, 0)
        try:
            return await self._run_job(job, steps, resume)
        except (KubeError, aiohttp.ClientError, OSError) as exc:
            log.warning("kubernetes job %s of build %s failed: %s", job.job_name, job.build_id, exc)
            reason = f"Kubernetes API error: {exc}"
            with contextlib.suppress(KubeError, aiohttp.ClientError, OSError):
                await self.kube.delete_job(
                    k8s_job_name(job.build_id, job.job_name, self.installation)
                )
            await steps.end_unfinished("error", "skipped", reason)
            return JobResult("error", reason)

    async def _run_job(self, job: JobRun, steps: _Steps, resume: bool) -> JobResult:
        name = k8s_job_name(job.build_id, job.job_name, self.installation)
        if job.cancel.is_set():
            await steps.end_unfinished("cancelled", "skipped", None)
            return JobResult("cancelled")
        try:
            plan = plan_env(job.steps, job.secret_names)
        except ValueError as exc:
            await steps.end_unfinished("error", "skipped", str(exc))
            return JobResult("error", str(exc))
        secret_data: dict[str, str] = {}
        env: list[Json] = []
        for entry in plan.container:
            if entry.secret:
                key = secret_key(self.settings.marker_secret, entry.source_name, entry.value)
                secret_data[key] = entry.value
                ref = {"name": self._secret_name(job.build_id), "key": key}
                env.append({"name": entry.name, "valueFrom": {"secretKeyRef": ref}})
            else:
                env.append({"name": entry.name, "value": k8s_escape(entry.value)})
        token = marker_token(self.settings.marker_secret, job.build_id)
        script = build_script(job.steps, token, plan)

        existing = await self.kube.read_job(name) if resume else None
        attached = existing is not None
        if resume and existing is None and await steps.reporter.stored_offset() > 0:
            reason = (
                "the Kubernetes Job of this job is gone (deleted or expired) before its result "
                "was recorded"
            )
            await steps.end_unfinished("error", "skipped", reason)
            return JobResult("error", reason)
        if existing is None:
            if secret_data:
                await self._ensure_secret(job.build_id, secret_data)
            try:
                existing = await self.kube.create_job(self.job_manifest(job, script, env))
            except KubeError as exc:
                if exc.status != 409:
                    raise
                # Created by an earlier attempt of this same build job: follow that one.
                existing = await self.kube.read_job(name)
                if existing is None:
                    raise
                attached = True
            if secret_data:
                await self._own_secret(job.build_id, existing)
        if attached:
            steps.skip_until = await steps.reporter.stored_offset()
        return await self._follow(job, name, token, steps)

    async def _ensure_secret(self, build_id: int, data: dict[str, str]) -> None:
        name = self._secret_name(build_id)
        encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
        body: Json = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": name,
                "labels": {LABEL_BUILD: str(build_id), LABEL_INSTALLATION: self.installation},
            },
            "type": "Opaque",
            "data": encoded,
        }
        try:
            await self.kube.create_secret(body)
            return
        except KubeError as exc:
            if exc.status != 409:
                raise
        # Another job of this build (or an earlier attempt) made it: add the keys it lacks.
        current = await self.kube.read_secret(name) or {}
        missing = {k: v for k, v in encoded.items() if k not in (current.get("data") or {})}
        if missing:
            await self.kube.merge_patch_secret(name, {"data": missing})

    async def _own_secret(self, build_id: int, job_obj: Json) -> None:
        """Add the Job to the Secret's owners, so garbage collection removes the Secret once the
        build's last Job is gone (TTL or delete) even if nobody calls cleanup_build."""
        meta = job_obj.get("metadata") or {}
        uid, job_name = meta.get("uid"), meta.get("name")
        if not uid:
            return
        name = self._secret_name(build_id)
        for _ in range(5):
            current = await self.kube.read_secret(name)
            if current is None:
                return
            cmeta = current.get("metadata") or {}
            owners = list(cmeta.get("ownerReferences") or [])
            if any(o.get("uid") == uid for o in owners):
                return
            owners.append({"apiVersion": "batch/v1", "kind": "Job", "name": job_name, "uid": uid})
            patch: Json = {"metadata": {"ownerReferences": owners}}
            if cmeta.get("resourceVersion"):
                patch["metadata"]["resourceVersion"] = cmeta["resourceVersion"]
            try:
                await self.kube.merge_patch_secret(name, patch)
                return
            except KubeError as exc:
                if exc.status != 409:  # 409: a concurrent update of the owners list; re-read
                    raise

    # ------------------------------------------------------------ following

    async def _follow(self, job: JobRun, name: str, token: str, steps: _Steps) -> JobResult:
        s = self.settings
        state = _JobState()
        selector = f"{LABEL_JOB_ID}={name}"
        tasks: list[asyncio.Task[None]] = [
            asyncio.create_task(self._watch_pods(selector, state)),
            asyncio.create_task(self._relay(job.cancel, state)),
        ]
        log_task: asyncio.Task[None] | None = None
        tracked: str | None = None
        parser = MarkerParser(token)
        pull_since: float | None = None
        unschedulable_since: float | None = None
        next_job_check = time.monotonic() + s.job_check_interval_seconds
        try:
            while True:
                now = time.monotonic()
                if job.cancel.is_set():
                    await self.kube.delete_job(name)
                    await steps.end_unfinished("cancelled", "skipped", None)
                    return JobResult("cancelled")
                if tracked is None:
                    candidates = [p for p in state.pods.values() if p.uid not in state.gone]
                    if candidates:
                        tracked = candidates[0].uid
                pod = state.pods.get(tracked) if tracked else None
                pod_gone = tracked is not None and tracked in state.gone

                if pod is not None and log_task is None and (pod.started or pod_gone):
                    log_task = asyncio.create_task(
                        self._read_log(pod.name, tracked or "", parser, steps, state)
                    )
                    log_task.add_done_callback(lambda _t: state.poke())

                if log_task is not None and log_task.done():
                    log_task.result()  # re-raise an unexpected error of the reader
                    return await self._finish(job, name, pod, pod_gone, steps, state)

                if pod is not None and not pod.started and not pod_gone:
                    failure = None
                    if pod.waiting_reason in _FATAL_WAITING:
                        failure = f"{pod.waiting_reason}: {pod.waiting_message}".rstrip(": ")
                    if pod.waiting_reason in _PULL_WAITING:
                        pull_since = pull_since if pull_since is not None else now
                        if now - pull_since >= s.image_pull_timeout_seconds:
                            failure = (
                                f"{pod.waiting_reason}: cannot pull image "
                                f"{job.image or s.default_image!r}: {pod.waiting_message}"
                            ).rstrip(": ")
                    if pod.unschedulable is not None:
                        if unschedulable_since is None:
                            unschedulable_since = now
                        if now - unschedulable_since >= s.unschedulable_timeout_seconds:
                            failure = (
                                f"Unschedulable for {s.unschedulable_timeout_seconds:g}s: "
                                f"{pod.unschedulable}"
                            )
                    else:
                        unschedulable_since = None
                    if pod.phase == "Failed" and pod.reason:
                        failure = f"{pod.reason}: {pod.message}".rstrip(": ")
                    if failure is not None:
                        return await self._infra_error(name, steps, failure)

                if pod_gone and log_task is None:
                    return await self._finish(job, name, pod, pod_gone, steps, state)

                if now >= next_job_check or (pod is not None and pod.terminating):
                    next_job_check = now + s.job_check_interval_seconds
                    ended = await self._check_job(job, name, steps, state, tracked, log_task)
                    if ended is not None:
                        return ended

                timers = [next_job_check - now]
                if pull_since is not None:
                    timers.append(pull_since + s.image_pull_timeout_seconds - now)
                if unschedulable_since is not None:
                    timers.append(unschedulable_since + s.unschedulable_timeout_seconds - now)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(state.wake.wait(), max(0.01, min(timers)))
                state.wake.clear()
        finally:
            if log_task is not None:
                tasks.append(log_task)
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _check_job(
        self,
        job: JobRun,
        name: str,
        steps: _Steps,
        state: _JobState,
        tracked: str | None,
        log_task: asyncio.Task[None] | None,
    ) -> JobResult | None:
        """Look at the Job itself: the pod watch alone cannot tell a deadline or a deleted Job."""
        try:
            job_obj = await self.kube.read_job(name)
        except (KubeError, aiohttp.ClientError, OSError) as exc:
            log.info("reading Job %s failed, will retry: %s", name, exc)
            return None
        if job_obj is None:
            if job.cancel.is_set():
                return None  # the loop's cancel branch reports it
            return await self._infra_error(
                name, steps, "the Kubernetes Job was deleted outside the executor"
            )
        deadline = _deadline_exceeded(job_obj)
        if deadline is not None and log_task is None:
            return await self._timed_out(steps, deadline)
        if tracked is None and _job_finished(job_obj) and not state.pods:
            return await self._infra_error(
                name, steps, "the Job finished but its pod is gone: no log to read"
            )
        return None

    async def _finish(
        self,
        job: JobRun,
        name: str,
        pod: _PodView | None,
        pod_gone: bool,
        steps: _Steps,
        state: _JobState,
    ) -> JobResult:
        """The log reader is done (or the pod vanished before it had a log): decide the result."""
        if state.job_ended:
            return steps.outcome()
        if job.cancel.is_set():
            await self.kube.delete_job(name)
            await steps.end_unfinished("cancelled", "skipped", None)
            return JobResult("cancelled")
        job_obj = await self.kube.read_job(name)
        deadline = _deadline_exceeded(job_obj)
        if deadline is not None:
            return await self._timed_out(steps, deadline)
        if pod is not None and pod.reason:
            return await self._infra_error(name, steps, f"{pod.reason}: {pod.message}".rstrip(": "))
        if job_obj is None:
            return await self._infra_error(
                name, steps, "the Kubernetes Job was deleted outside the executor"
            )
        if pod_gone:
            return await self._infra_error(name, steps, "the pod was deleted outside the executor")
        if pod is not None and pod.terminated:
            detail = pod.terminated_reason or "Error"
            return await self._infra_error(
                name,
                steps,
                f"the container ended before the script finished ({detail}, "
                f"exit code {pod.exit_code})",
            )
        return await self._infra_error(name, steps, "the pod log ended before the script finished")

    async def _infra_error(self, name: str, steps: _Steps, reason: str) -> JobResult:
        # Deleting the Job stops the kubelet from retrying and the Job controller from
        # replacing a deleted pod: nothing of this job may run after we reported it.
        await self.kube.delete_job(name)
        await steps.end_unfinished("error", "skipped", reason)
        return JobResult("error", reason)

    async def _timed_out(self, steps: _Steps, reason: str) -> JobResult:
        await steps.end_unfinished("timed_out", "skipped", reason)
        return JobResult("timed_out", reason)

    @staticmethod
    async def _relay(event: asyncio.Event, state: _JobState) -> None:
        await event.wait()
        state.poke()

    async def _watch_pods(self, selector: str, state: _JobState) -> None:
        """Keep `state.pods` current. The resourceVersion survives reconnects; a 410 (history
        compacted) means re-list, and the re-list also reveals pods deleted meanwhile."""
        s = self.settings
        rv: str | None = None
        while True:
            try:
                if rv is None:
                    listing = await self.kube.list_pods(selector)
                    rv = str((listing.get("metadata") or {}).get("resourceVersion") or "0")
                    present = set()
                    for item in listing.get("items") or []:
                        view = _PodView.parse(item)
                        present.add(view.uid)
                        state.pods[view.uid] = view
                    state.gone.update(set(state.pods) - present)
                    state.poke()
                resp = await self.kube.watch_pods(selector, rv, s.watch_timeout_seconds)
                try:
                    rv = await self._read_watch(resp, rv, state)
                finally:
                    resp.release()
            except KubeError as exc:
                if exc.status == 410:
                    rv = None
                    continue
                log.warning("pod watch %s failed: %s", selector, exc)
                await asyncio.sleep(s.retry_interval_seconds)
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
                log.info("pod watch %s interrupted: %s", selector, exc)
                await asyncio.sleep(s.retry_interval_seconds)

    @staticmethod
    async def _read_watch(resp: Any, rv: str | None, state: _JobState) -> str | None:
        """Read one watch response; return the resourceVersion to continue from (None: re-list).

        Lines are split by hand: aiohttp's readline caps line length and a pod carrying a big
        step script exceeds it."""
        buf = b""
        while True:
            chunk = await resp.content.readany()
            if not chunk:
                return rv
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                if not line.strip():
                    continue
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        return None
                    raise KubeError(int(obj.get("code") or 0), str(obj.get("message")))
                new_rv = (obj.get("metadata") or {}).get("resourceVersion")
                if new_rv:
                    rv = str(new_rv)
                if kind == "BOOKMARK":
                    continue
                view = _PodView.parse(obj)
                state.pods[view.uid] = view
                if kind == "DELETED":
                    state.gone.add(view.uid)
                state.poke()

    async def _read_log(
        self,
        pod_name: str,
        uid: str,
        parser: MarkerParser,
        steps: _Steps,
        state: _JobState,
    ) -> None:
        """Follow the pod log to its end. A broken stream is re-read from the start (the API has
        no byte offset parameter) and the bytes already parsed are skipped."""
        s = self.settings
        while True:
            view = state.pods.get(uid)
            final = uid in state.gone or (view is not None and view.terminated)
            try:
                resp = await self.kube.pod_log(pod_name, s.log_idle_reconnect_seconds)
                try:
                    seen = 0
                    while True:
                        # One read at a time, never cancelled: aiohttp's reader keeps state.
                        read = asyncio.ensure_future(resp.content.readany())
                        try:
                            while not read.done():
                                await asyncio.wait({read}, timeout=_IDLE_RELEASE_SECONDS)
                                if not read.done():
                                    for event in parser.release_idle():
                                        await steps.handle(event)
                        finally:
                            read.cancel()  # no-op once done; on our cancellation, stop it too
                        chunk = read.result()
                        if not chunk:
                            break
                        new = chunk[max(0, parser.consumed - seen) :]
                        seen += len(chunk)
                        if new:
                            for event in parser.feed(new):
                                await steps.handle(event)
                                if isinstance(event, JobEnd):
                                    state.job_ended = True
                        if state.job_ended:
                            break
                finally:
                    resp.release()
            except KubeError as exc:
                if exc.status == 404 and uid in state.gone:
                    final = True
                elif exc.status not in (400, 404):  # 400: container not started yet
                    log.warning("pod log %s: %s", pod_name, exc)
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                log.info("pod log %s interrupted: %s", pod_name, exc)
            if state.job_ended or final:
                for event in parser.finish():
                    await steps.handle(event)
                return
            # The stream ended before the pod did (or broke): wait for news, then re-read.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(state.wake.wait(), s.retry_interval_seconds)
