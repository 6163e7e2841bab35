"""Execution backends behind one interface (app/runners/base.py)."""

from __future__ import annotations

from app.config import Settings
from app.runners.base import Runner
from app.runners.local import LocalRunner


def create_runner(settings: Settings, *, database_id: str | None = None) -> Runner:
    """`database_id`: the database's installation id (app.installation), which keeps the
    kubernetes runner from following Jobs another (or a reset) database created."""
    if settings.runner == "local":
        return LocalRunner(
            settings.workspace_root,
            kill_grace_seconds=settings.cancel_grace_seconds,
            isolation=settings.local_isolation,
            hidden=settings.paths_hidden_from_steps,
            install_key=settings.database_url,
            sandbox_per=settings.local_sandbox,
        )
    from app.runners.kubernetes import KubernetesRunner, KubernetesSettings

    return KubernetesRunner(
        KubernetesSettings(
            namespace=settings.k8s_namespace,
            default_image=settings.k8s_default_image,
            ttl_seconds_after_finished=settings.k8s_ttl_seconds_after_finished,
            marker_secret=settings.k8s_marker_secret,
            database_id=database_id,
            kubeconfig=settings.kubeconfig or None,
            default_deadline_seconds=settings.k8s_job_deadline_seconds,
            unschedulable_timeout_seconds=settings.k8s_unschedulable_timeout_seconds,
            image_pull_timeout_seconds=settings.k8s_image_pull_timeout_seconds,
            cpu_request=settings.k8s_cpu_request or None,
            memory_request=settings.k8s_memory_request or None,
            cpu_limit=settings.k8s_cpu_limit or None,
            memory_limit=settings.k8s_memory_limit or None,
            run_as_user=settings.k8s_run_as_user,
            termination_grace_seconds=settings.k8s_termination_grace_seconds,
            workspace_size_limit=settings.k8s_workspace_size_limit or None,
            runs_on_images=dict(
                pair.strip().split("=", 1)
                for pair in settings.runs_on_images.split(",")
                if "=" in pair
            ),
        )
    )
