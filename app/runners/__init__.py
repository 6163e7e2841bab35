"""Execution backends behind one interface (app/runners/base.py)."""

from __future__ import annotations

from app.config import Settings
from app.runners.base import Runner
from app.runners.local import LocalRunner


def create_runner(settings: Settings) -> Runner:
    if settings.runner == "local":
        return LocalRunner(
            settings.workspace_root, kill_grace_seconds=settings.cancel_grace_seconds
        )
    from app.runners.kubernetes import KubernetesRunner, KubernetesSettings

    return KubernetesRunner(
        KubernetesSettings(
            namespace=settings.k8s_namespace,
            default_image=settings.k8s_default_image,
            ttl_seconds_after_finished=settings.k8s_ttl_seconds_after_finished,
            marker_secret=settings.k8s_marker_secret,
            kubeconfig=settings.kubeconfig or None,
        )
    )
