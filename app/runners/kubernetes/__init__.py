"""The Kubernetes runner (see runner.py for the design, docs/kubernetes.md for the reasons)."""

from app.runners.kubernetes.api import REQUIRED_RBAC, Kube, KubeError
from app.runners.kubernetes.manifests import KubernetesSettings
from app.runners.kubernetes.names import (
    ANNOTATION_JOB_NAME,
    CONTAINER,
    LABEL_BUILD,
    LABEL_INSTALLATION,
    LABEL_JOB,
    LABEL_JOB_ID,
    installation_id,
    k8s_job_name,
)
from app.runners.kubernetes.runner import KubernetesRunner

__all__ = [
    "ANNOTATION_JOB_NAME",
    "CONTAINER",
    "LABEL_BUILD",
    "LABEL_INSTALLATION",
    "LABEL_JOB",
    "LABEL_JOB_ID",
    "REQUIRED_RBAC",
    "Kube",
    "KubeError",
    "KubernetesRunner",
    "KubernetesSettings",
    "installation_id",
    "k8s_job_name",
]
