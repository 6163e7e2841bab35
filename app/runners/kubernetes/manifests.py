"""Object builders: the Job (and its hardened pod) of one DAG job."""

from __future__ import annotations

import math
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from app.runners.base import JobRun, KubernetesOptions, ServiceContainer
from app.runners.kubernetes.names import (
    ANNOTATION_JOB_NAME,
    CONTAINER,
    LABEL_BUILD,
    LABEL_INSTALLATION,
    LABEL_JOB,
    LABEL_JOB_ID,
    job_label,
    service_label,
)
from app.runners.kubernetes.shell import INIT, k8s_escape

Json = dict[str, Any]

WORKSPACE = "/workspace"
RUN_DIR = "/ci/run"
HOME = "/ci/home"


@dataclass(frozen=True)
class KubernetesSettings:
    namespace: str
    default_image: str
    # Derives the installation label; every replica of one installation must share it.
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
    # The pod's terminationGracePeriodSeconds: how long a cancelled step may clean up.
    termination_grace_seconds: int = 10
    workspace_size_limit: str | None = "10Gi"  # emptyDir.sizeLimit of the workspace
    # runs-on label -> image, for jobs without `image:` (e.g. ubuntu-latest=...:act-latest).
    runs_on_images: Mapping[str, str] = field(default_factory=dict)
    poll_interval_seconds: float = 0.5  # how often pod status/events are read while waiting
    retry_interval_seconds: float = 1.0  # pause before re-attaching a broken exec stream
    # A pod with no container running after this long (and no reason given) is an error.
    start_timeout_seconds: float = 600


def image_for(job: JobRun, settings: KubernetesSettings) -> str:
    if job.image:
        return job.image
    for label in job.runs_on:
        if label in settings.runs_on_images:
            return settings.runs_on_images[label]
    return settings.default_image


def _resources(settings: KubernetesSettings, options: KubernetesOptions | None) -> Json:
    if options is not None and options.resources:
        return {k: dict(v) for k, v in options.resources.items()}
    out: Json = {}
    requests = {
        k: v for k, v in (("cpu", settings.cpu_request), ("memory", settings.memory_request)) if v
    }
    limits = {
        k: v for k, v in (("cpu", settings.cpu_limit), ("memory", settings.memory_limit)) if v
    }
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def _security() -> Json:
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def service_container(service: ServiceContainer) -> Json:
    container: Json = {
        "name": service_label(service.name),
        "image": service.image,
        "env": [{"name": k, "value": k8s_escape(v)} for k, v in sorted(service.env.items())],
        "ports": [{"containerPort": p, "protocol": "TCP"} for p in service.ports],
        "securityContext": _security(),
    }
    # Of docker's options only the health command maps onto Kubernetes (a readiness probe).
    words = shlex.split(service.options or "")
    for i, word in enumerate(words):
        if word.startswith("--health-cmd"):
            cmd = word.partition("=")[2] or (words[i + 1] if i + 1 < len(words) else "")
            if cmd:
                container["readinessProbe"] = {
                    "exec": {"command": ["sh", "-c", cmd]},
                    "periodSeconds": 2,
                }
    if service.ports and "readinessProbe" not in container:
        container["readinessProbe"] = {
            "tcpSocket": {"port": service.ports[0]},
            "periodSeconds": 1,
        }
    return container


def job_manifest(job: JobRun, settings: KubernetesSettings, name: str, installation: str) -> Json:
    s = settings
    labels = {
        LABEL_BUILD: str(job.build_id),
        LABEL_INSTALLATION: installation,
        LABEL_JOB: job_label(job.job_name),
        LABEL_JOB_ID: name,
    }
    deadline = s.default_deadline_seconds
    if job.timeout_seconds:
        deadline = max(1, math.ceil(job.timeout_seconds))
    options = job.kubernetes
    container: Json = {
        "name": CONTAINER,
        "image": image_for(job, s),
        "command": ["sh", "-c", k8s_escape(INIT)],
        "workingDir": WORKSPACE,
        "env": [
            {"name": "CI_WORKSPACE", "value": WORKSPACE},
            {"name": "CI_RUN_DIR", "value": RUN_DIR},
            {"name": "HOME", "value": HOME},
        ],
        "volumeMounts": [
            {"name": "workspace", "mountPath": WORKSPACE},
            {"name": "ci", "mountPath": "/ci"},
        ],
        "securityContext": _security(),
        # A container that dies on its own leaves the tail of its log as the reason.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    resources = _resources(s, options)
    if resources:
        container["resources"] = resources
    workspace: Json = {}
    if s.workspace_size_limit:
        workspace["sizeLimit"] = s.workspace_size_limit
    pod: Json = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": s.termination_grace_seconds,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": s.run_as_user,
            "runAsGroup": s.run_as_user,
            # The emptyDirs belong to the job's group: git sees a workspace owned by its user.
            "fsGroup": s.run_as_user,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container, *(service_container(svc) for svc in job.services)],
        "volumes": [
            {"name": "workspace", "emptyDir": workspace},
            {"name": "ci", "emptyDir": {"sizeLimit": "1Gi"}},
        ],
    }
    if job.services:
        # Containers of a pod share its network namespace: a service is reached on 127.0.0.1,
        # under its own name as on GitHub.
        pod["hostAliases"] = [{"ip": "127.0.0.1", "hostnames": [svc.name for svc in job.services]}]
    if options is not None:
        _apply_options(pod, options)
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
                "metadata": {"labels": labels, "annotations": {ANNOTATION_JOB_NAME: job.job_name}},
                "spec": pod,
            },
        },
    }


def _apply_options(pod: Json, options: KubernetesOptions) -> None:
    if options.node_selector:
        pod["nodeSelector"] = dict(options.node_selector)
    if options.tolerations:
        pod["tolerations"] = [dict(t) for t in options.tolerations]
    if options.service_account_name:
        pod["serviceAccountName"] = options.service_account_name
    if options.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": n} for n in options.image_pull_secrets]
    if options.runtime_class_name:
        pod["runtimeClassName"] = options.runtime_class_name
    if options.priority_class_name:
        pod["priorityClassName"] = options.priority_class_name
