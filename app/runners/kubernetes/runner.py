"""KubernetesRunner: one batch/v1 Job per DAG job; each step runs through exec in its pod.

Why exec (GitLab Runner's design) and not one container per step (Tekton's): the runner drives
each step, so the executor can evaluate a step's `if:`/`run:` after the earlier ones ended;
output is read back by byte offset from a file in the pod (resumable across stream breaks,
executor restarts and kubelet log rotation); the exit code comes from the exec status, which
the job's own code cannot forge; scripts travel on stdin (no argv limit). docs/kubernetes.md
has the full reasoning and what a cluster admin must set up.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio.stream import WsApiClient

from app.runners.base import JobReporter, JobResult, JobRun
from app.runners.kubernetes.api import REQUIRED_RBAC, Kube, KubeError
from app.runners.kubernetes.follower import ForeignJob, InfraError, JobFollower, TimedOut
from app.runners.kubernetes.manifests import KubernetesSettings, fingerprint, job_manifest
from app.runners.kubernetes.names import (
    ANNOTATION_FINGERPRINT,
    LABEL_BUILD,
    LABEL_INSTALLATION,
    installation_id,
    k8s_job_name,
)

log = logging.getLogger(__name__)


def rbac_text() -> str:
    return "; ".join(
        f"{resource} ({', '.join(sorted(verbs))})" for (_, resource), verbs in REQUIRED_RBAC.items()
    )


class KubernetesRunner:
    name = "kubernetes"
    can_reattach = True  # the Jobs outlive the executor; steps are followed on by offset

    def __init__(self, settings: KubernetesSettings) -> None:
        self.settings = settings
        self.installation = installation_id(settings.marker_secret, settings.database_id)
        self._mine = f"{LABEL_INSTALLATION}={self.installation}"
        self._clients: list[Any] = []
        self._kube: Kube | None = None

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        # Any: the library types this pool size as int although it documents None as "no limit".
        configuration: Any = k8s_client.Configuration()
        source = await self._load_config(configuration)
        # Every running job holds a long exec stream; the default pool of 100 connections would
        # make job 101 wait for a free connection forever.
        configuration.connection_pool_maxsize = None
        api_client = k8s_client.ApiClient(configuration=configuration)
        # Pings keep a quiet step's exec stream alive through proxies and reveal a dead one.
        ws_client = WsApiClient(configuration=configuration, heartbeat=30.0)
        self._clients = [api_client, ws_client]
        self._kube = Kube(
            api_client,
            ws_client,
            self.settings.namespace,
            retry_seconds=self.settings.api_retry_seconds,
            retry_interval=self.settings.retry_interval_seconds,
        )
        # At startup an unreachable API is a configuration problem: say so at once, no retries.
        self._kube.retry_seconds = 0
        try:
            missing = [
                f"{verb} {resource}"
                for (group, resource), verbs in sorted(REQUIRED_RBAC.items())
                for verb in sorted(verbs)
                if not await self._kube.allowed(group, resource, verb)
            ]
        except (KubeError, aiohttp.ClientError, OSError) as exc:
            await self.stop()
            raise RuntimeError(
                f"cannot reach the Kubernetes API (config from {source}): {exc}"
            ) from exc
        self._kube.retry_seconds = self.settings.api_retry_seconds
        if missing:
            await self.stop()
            raise RuntimeError(
                f"Kubernetes RBAC: the executor may not {', '.join(missing)} in namespace "
                f"{self.settings.namespace!r} (config from {source}); it needs: {rbac_text()}"
            )

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
        clients, self._clients, self._kube = self._clients, [], None
        for client in clients:
            await client.close()

    @property
    def kube(self) -> Kube:
        if self._kube is None:
            raise RuntimeError("KubernetesRunner.start() was not called")
        return self._kube

    # ------------------------------------------------------------ build-level operations

    async def cancel_build(self, build_id: int) -> None:
        """Delete every Job of the build (pods with them): PID 1 forwards TERM to the steps."""
        await self.kube.delete_jobs(f"{LABEL_BUILD}={build_id},{self._mine}")

    async def cleanup_build(self, build_id: int) -> None:  # noqa: ARG002 - protocol signature
        """Nothing outlives a build but its Jobs, which their TTL removes."""
        return None

    async def sweep_orphans(
        self, finished_build_ids: Callable[[list[int]], Awaitable[set[int]]]
    ) -> list[str]:
        """Delete Jobs left behind by builds that are already finished."""
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
        return deleted

    # ------------------------------------------------------------ one job

    def job_name(self, job: JobRun) -> str:
        return k8s_job_name(job.build_id, job.job_name, self.installation)

    def job_manifest(self, job: JobRun) -> dict[str, Any]:
        return job_manifest(job, self.settings, self.job_name(job), self.installation)

    async def run_job(
        self, job: JobRun, reporter: JobReporter, *, resume: bool = False
    ) -> JobResult:
        follower = JobFollower(self.kube, self.settings, job, reporter, self.job_name(job))
        try:
            if job.cancel.is_set():
                return await follower.cancelled()
            resume = await self._create_or_attach(follower, resume)
            await follower.wait_for_pod()
            if job.cancel.is_set():
                return await follower.cancelled()
            result = await follower.run_steps(resume)
            if job.services:
                # A pod runs while any of its containers does: the services would keep it (and
                # the Job) running until the Job's deadline. Deleting the Job stops them now.
                with contextlib.suppress(KubeError, aiohttp.ClientError, OSError):
                    await self.kube.delete_job(follower.name)
            return result
        except TimedOut as exc:
            await follower.end_unfinished("timed_out", str(exc))
            return JobResult("timed_out", str(exc))
        except ForeignJob as exc:
            await follower.end_unfinished("error", str(exc))
            return JobResult("error", str(exc))
        except InfraError as exc:
            return await self._infra_error(follower, str(exc))
        except (KubeError, aiohttp.ClientError, OSError) as exc:
            log.warning("kubernetes job %s of build %s failed: %s", job.job_name, job.build_id, exc)
            return await self._infra_error(follower, f"Kubernetes API error: {exc}")

    async def _create_or_attach(self, follower: JobFollower, resume: bool) -> bool:
        """Create the Job, or find the one this installation made for this job. Returns whether
        steps may already have run in it (follow them on instead of starting them)."""
        existing = await self.kube.read_job(follower.name)
        if existing is not None and not self._ours(existing):
            raise ForeignJob(
                f"a Kubernetes Job named {follower.name} exists but was not created by this "
                "executor installation; it is left alone"
            )
        if existing is not None and not self._same_job(existing, follower.job):
            raise ForeignJob(
                f"a Kubernetes Job named {follower.name} exists but runs something else (made "
                "for an earlier build with this number, e.g. before a database restore); it is "
                "left alone"
            )
        if existing is None:
            if resume and await follower.reporter.stored_offset() > 0:
                raise InfraError(
                    "the Kubernetes Job of this job is gone (deleted or expired) before its "
                    "result was recorded"
                )
            try:
                await self.kube.create_job(self.job_manifest(follower.job))
                return False
            except KubeError as exc:
                if exc.status != 409:
                    raise
        return True

    def _same_job(self, job_obj: dict[str, Any], job: JobRun) -> bool:
        annotations = (job_obj.get("metadata") or {}).get("annotations") or {}
        return bool(
            annotations.get(ANNOTATION_FINGERPRINT) == fingerprint(job, self.settings.marker_secret)
        )

    def _ours(self, job_obj: dict[str, Any]) -> bool:
        labels = (job_obj.get("metadata") or {}).get("labels") or {}
        return labels.get(LABEL_INSTALLATION) == self.installation

    async def _infra_error(self, follower: JobFollower, reason: str) -> JobResult:
        # Deleting the Job stops the kubelet from retrying and kills what still runs: nothing
        # of this job may run after it was reported. The reason is reported once, on the job
        # and the step that was running, not on every step that never ran.
        with contextlib.suppress(KubeError, aiohttp.ClientError, OSError):
            await self.kube.delete_job(follower.name)
        await follower.end_unfinished("error", reason)
        return JobResult("error", reason)
