"""Prometheus metrics. One registry per app instance (no process-global collectors), so tests
can build many apps in one process."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.builds_finished = Counter(
            "ci_builds_finished", "Builds that reached a final status.", ["status"], registry=r
        )
        self.build_duration = Histogram(
            "ci_build_duration_seconds",
            "Build duration from start to finish.",
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.step_duration = Histogram(
            "ci_step_duration_seconds",
            "Step duration.",
            ["status"],
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.running_builds = Gauge("ci_running_builds", "Builds running here.", registry=r)
        self.running_jobs = Gauge("ci_running_jobs", "Jobs running here.", registry=r)
        self.queue_wait = Histogram(
            "ci_queue_wait_seconds",
            "Time from build creation to claim.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30, 120, 600),
            registry=r,
        )
        self.log_bytes = Counter("ci_log_bytes", "Log bytes stored.", registry=r)
        self.log_chunks = Counter("ci_log_chunks", "Log chunks stored.", registry=r)
        self.log_store_failures = Counter(
            "ci_log_chunk_store_failures",
            "Attempts to store log chunks that failed (they are kept and retried).",
            registry=r,
        )
        self.sse_subscribers = Gauge("ci_sse_subscribers", "Open SSE log streams.", registry=r)
