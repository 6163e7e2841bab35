"""KubernetesRunner end to end against the Kubernetes API emulator (real HTTP, real processes)."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from app.runners.base import JobResult, JobRun, StepOutcome, StepRun
from app.runners.k8s_script import installation_id, k8s_job_name, secret_name
from app.runners.kubernetes import (
    ANNOTATION_JOB_NAME,
    LABEL_BUILD,
    LABEL_JOB,
    LABEL_JOB_ID,
    REQUIRED_RBAC,
    KubernetesRunner,
    KubernetesSettings,
)
from tests.k8s_emulator.fixture import EmulatorProcess
from tests.runners.steps import step
from tests.support import wait_until

INSTALLATION = installation_id("test-marker-secret")

WAIT = 30.0


class FakeReporter:
    """Records what the runner reports; `stored` mimics the durable source offset."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.output: dict[int, bytearray] = {}
        self.finished: dict[int, tuple[StepOutcome, int | None, str | None]] = {}
        self.stored = 0

    async def step_started(self, index: int) -> None:
        self.events.append(("started", index))

    async def step_output(self, index: int, data: bytes, source_offset: int | None = None) -> None:
        assert source_offset is not None
        assert source_offset > self.stored, "output re-reported or out of order"
        self.output.setdefault(index, bytearray()).extend(data)
        self.stored = source_offset

    async def step_finished(
        self, index: int, status: StepOutcome, exit_code: int | None, error: str | None = None
    ) -> None:
        self.events.append(("finished", index, status, exit_code))
        self.finished.setdefault(index, (status, exit_code, error))

    async def stored_offset(self) -> int:
        return self.stored

    def text(self, index: int) -> str:
        return bytes(self.output.get(index, b"")).decode()

    def statuses(self) -> dict[int, StepOutcome]:
        return {i: v[0] for i, v in self.finished.items()}


_next_build = iter(range(int(time.time()) % 100000 * 100, 10**12))


def job_run(
    *steps: StepRun,
    image: str | None = None,
    timeout: float | None = None,
    secrets: frozenset[str] = frozenset(),
    name: str = "build",
) -> JobRun:
    return JobRun(
        build_id=next(_next_build),
        job_name=name,
        image=image,
        timeout_seconds=timeout,
        steps=tuple(steps),
        secret_names=secrets,
    )


async def until(predicate: Callable[[], Awaitable[bool] | bool], what: str) -> None:
    await wait_until(predicate, what, timeout=WAIT)


async def control(
    emulator: EmulatorProcess, path: str, body: dict[str, Any] | None = None, *, key: str = ""
) -> Any:
    """An emulator control call off the event loop (the runner under test shares the loop)."""
    answer = await asyncio.to_thread(emulator.control, path, body)
    return answer[key] if key else answer


def _has_lines(reporter: FakeReporter, index: int, n: int) -> bool:
    return reporter.text(index).count("\n") >= n


async def _no_processes(emulator: EmulatorProcess) -> bool:
    return not await control(emulator, "processes")


def pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture
def settings(emulator: EmulatorProcess) -> KubernetesSettings:
    return KubernetesSettings(
        namespace="ci",
        default_image="busybox:1.36",
        marker_secret="test-marker-secret",
        kubeconfig=str(emulator.kubeconfig_path),
        ttl_seconds_after_finished=600,
        image_pull_timeout_seconds=0,
        unschedulable_timeout_seconds=1,
        watch_timeout_seconds=5,
        retry_interval_seconds=0.1,
        job_check_interval_seconds=0.5,
    )


@pytest.fixture
async def runner(settings: KubernetesSettings) -> AsyncIterator[KubernetesRunner]:
    runner = KubernetesRunner(settings)
    await runner.start()
    yield runner
    await runner.stop()


async def pods_of(runner: KubernetesRunner, job: JobRun) -> list[dict[str, Any]]:
    name = k8s_job_name(job.build_id, job.job_name, INSTALLATION)
    listing = await runner.kube.list_pods(f"{LABEL_JOB_ID}={name}")
    return list(listing.get("items") or [])


# ---------------------------------------------------------------- plain runs


async def test_success_reports_steps_output_and_builds_the_job_as_specified(
    runner: KubernetesRunner,
) -> None:
    job = job_run(
        step(0, "echo one; printf 'two'"),
        step(1, 'echo "ws=$CI_WORKSPACE cwd=$(pwd)"; echo "cost: $$"', shell="bash"),
        name="Build (3.11)",
        timeout=90.5,
    )
    reporter = FakeReporter()
    result = await runner.run_job(job, reporter)
    assert result == JobResult("success")
    assert reporter.text(0) == "one\ntwo"
    ws, _, rest = reporter.text(1).partition(" cwd=")
    assert ws.startswith("ws=")
    assert rest.startswith(ws[3:])  # the step runs in the workspace
    assert reporter.text(1).count("cost: ") == 1
    assert "cost: $" not in reporter.text(1)  # `$$` reached the shell as the PID, not expanded
    assert reporter.events == [
        ("started", 0),
        ("finished", 0, "success", 0),
        ("started", 1),
        ("finished", 1, "success", 0),
    ]
    name = k8s_job_name(job.build_id, job.job_name, INSTALLATION)
    obj = await runner.kube.read_job(name)
    assert obj is not None
    meta, spec = obj["metadata"], obj["spec"]
    assert meta["labels"][LABEL_BUILD] == str(job.build_id)
    assert meta["labels"][LABEL_JOB] == "build-3-11"
    assert meta["annotations"][ANNOTATION_JOB_NAME] == "Build (3.11)"
    assert spec["backoffLimit"] == 0
    assert spec["activeDeadlineSeconds"] == 91
    assert spec["ttlSecondsAfterFinished"] == 600
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 1000
    container = pod["containers"][0]
    assert container["image"] == "busybox:1.36"
    assert container["workingDir"] == "/workspace"
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert {"name": "CI_WORKSPACE", "value": "/workspace"} in container["env"]
    assert pod["volumes"] == [{"name": "workspace", "emptyDir": {}}]


async def test_failure_continue_on_error_and_conditions(runner: KubernetesRunner) -> None:
    job = job_run(
        step(0, "echo soft; exit 4", coe=True),
        step(1, "echo hard; exit 2"),
        step(2, "echo never"),
        step(3, "echo cleanup", cond="always()"),
        step(4, "echo only-on-success"),
        image="alpine:3",
    )
    reporter = FakeReporter()
    result = await runner.run_job(job, reporter)
    assert result == JobResult("failed")
    assert reporter.finished == {
        0: ("failed", 4, None),
        1: ("failed", 2, None),
        2: ("skipped", None, None),
        3: ("success", 0, None),
        4: ("skipped", None, None),
    }
    assert reporter.text(3) == "cleanup\n"
    assert 2 not in reporter.output


async def test_step_timeout_kills_grandchildren(runner: KubernetesRunner) -> None:
    script = "sh -c 'sleep 300 & echo grandchild=$!; wait' & sleep 0.2; echo child=$!; sleep 300"
    job = job_run(step(0, script, timeout=1), step(1, "echo after", cond="always()"))
    reporter = FakeReporter()
    result = await runner.run_job(job, reporter)
    assert result.status == "timed_out"
    assert reporter.finished[0] == ("timed_out", 124, None)
    assert reporter.finished[1] == ("success", 0, None)
    pids = [int(line.split("=")[1]) for line in reporter.text(0).split()]
    assert len(pids) == 2
    await until(lambda: not any(pid_alive(p) for p in pids), "the step's tree to die")


async def test_job_deadline_is_timed_out(runner: KubernetesRunner) -> None:
    job = job_run(
        step(0, "echo start"), step(1, "echo slow; sleep 300"), step(2, "echo x"), timeout=2
    )
    reporter = FakeReporter()
    result = await runner.run_job(job, reporter)
    assert result.status == "timed_out"
    assert result.error
    assert "deadline" in result.error.lower()
    assert reporter.statuses() == {0: "success", 1: "timed_out", 2: "skipped"}
    assert reporter.text(1) == "slow\n"


# ---------------------------------------------------------------- infrastructure failures


async def test_image_pull_failure_is_an_error(
    runner: KubernetesRunner, emulator: EmulatorProcess
) -> None:
    await control(emulator, "missing-images", {"images": ["registry.example/nope:1"]})
    job = job_run(step(0, "echo hi"), image="registry.example/nope:1")
    reporter = FakeReporter()
    result = await runner.run_job(job, reporter)
    assert result.status == "error"
    assert result.error
    assert "registry.example/nope:1" in result.error
    assert "ImagePull" in result.error or "ErrImagePull" in result.error
    assert reporter.statuses() == {0: "skipped"}
    assert (
        await runner.kube.read_job(k8s_job_name(job.build_id, job.job_name, INSTALLATION)) is None
    )


async def test_create_container_config_error(
    runner: KubernetesRunner, emulator: EmulatorProcess
) -> None:
    await control(emulator, "create-config-error", {"images": ["bad-config:1"]})
    job = job_run(step(0, "echo hi"), image="bad-config:1")
    result = await runner.run_job(job, FakeReporter())
    assert result.status == "error"
    assert result.error
    assert result.error.startswith("CreateContainerConfigError")


async def test_unschedulable_past_the_timeout(
    runner: KubernetesRunner, emulator: EmulatorProcess
) -> None:
    await control(emulator, "unschedulable", {"value": True})
    job = job_run(step(0, "echo hi"))
    result = await runner.run_job(job, FakeReporter())
    assert result.status == "error"
    assert result.error
    assert result.error.startswith("Unschedulable")
    await until(lambda: _no_pods(runner, job), "the pods to be deleted")


async def _no_pods(runner: KubernetesRunner, job: JobRun) -> bool:
    return not await pods_of(runner, job)


async def test_eviction_is_an_error_not_a_failure(
    runner: KubernetesRunner, emulator: EmulatorProcess
) -> None:
    job = job_run(step(0, "echo ready; sleep 300"), step(1, "echo next"))
    reporter = FakeReporter()
    task = asyncio.create_task(runner.run_job(job, reporter))
    await until(lambda: reporter.text(0).startswith("ready"), "the step to start")
    pod = (await pods_of(runner, job))[0]["metadata"]["name"]
    await control(
        emulator, "evict", {"pod": pod, "namespace": "ci", "message": "node memory pressure"}
    )
    result = await asyncio.wait_for(task, WAIT)
    assert result.status == "error"
    assert result.error
    assert result.error.startswith("Evicted")
    assert reporter.statuses() == {0: "error", 1: "skipped"}


# ---------------------------------------------------------------- cancel


async def test_cancel_deletes_the_job_and_kills_processes(
    runner: KubernetesRunner, emulator: EmulatorProcess
) -> None:
    job = job_run(step(0, "sh -c 'sleep 300' & echo ready; wait"), step(1, "echo next"))
    reporter = FakeReporter()
    task = asyncio.create_task(runner.run_job(job, reporter))
    await until(lambda: reporter.text(0).startswith("ready"), "the step to start")
    processes = [p for p in await control(emulator, "processes") if p["uid"]]
    assert processes
    job.cancel.set()
    result = await asyncio.wait_for(task, WAIT)
    assert result == JobResult("cancelled")
    assert reporter.statuses() == {0: "cancelled", 1: "skipped"}
    await until(lambda: _no_processes(emulator), "the pod's processes to die")
    await until(lambda: _no_pods(runner, job), "the pods to be deleted")
    assert (
        await runner.kube.read_job(k8s_job_name(job.build_id, job.job_name, INSTALLATION)) is None
    )
    # The pods went away with the Job: without propagationPolicy=Background they would stay.
    deletes = [c for c in (await control(emulator, "calls")) if c["verb"] == "delete"]
    assert [c["resource"] for c in deletes] == ["jobs"]


async def test_cancel_while_pending_never_starts_work(
    runner: KubernetesRunner, emulator: EmulatorProcess, tmp_path: Path
) -> None:
    marker = tmp_path / "started"
    await control(emulator, "unschedulable", {"value": True})
    job = job_run(step(0, f"touch {marker}; sleep 300"))
    reporter = FakeReporter()
    runner_long = KubernetesRunner(replace(runner.settings, unschedulable_timeout_seconds=600))
    await runner_long.start()
    try:
        task = asyncio.create_task(runner_long.run_job(job, reporter))
        await until(lambda: _has_pods(runner, job), "the pending pod")
        job.cancel.set()
        result = await asyncio.wait_for(task, WAIT)
    finally:
        await runner_long.stop()
    assert result == JobResult("cancelled")
    assert reporter.statuses() == {0: "skipped"}  # it never started
    await until(lambda: _no_pods(runner, job), "the pending pod to be deleted")
    await control(emulator, "unschedulable", {"value": False})
    # With the pod object gone nothing is left that the kubelet could start.
    assert not await control(emulator, "processes")
    assert not marker.exists()


async def _has_pods(runner: KubernetesRunner, job: JobRun) -> bool:
    return bool(await pods_of(runner, job))


async def test_cancel_build_deletes_all_jobs_and_the_secret(runner: KubernetesRunner) -> None:
    first = job_run(step(0, "echo a; sleep 300", env={"PW": "s3cr3t"}), secrets=frozenset({"PW"}))
    second = JobRun(
        build_id=first.build_id,
        job_name="other",
        image=None,
        timeout_seconds=None,
        steps=(step(0, "echo b; sleep 300", env={"PW": "s3cr3t"}),),
        secret_names=frozenset({"PW"}),
    )
    reporters = [FakeReporter(), FakeReporter()]
    tasks = [
        asyncio.create_task(runner.run_job(j, r))
        for j, r in zip((first, second), reporters, strict=True)
    ]
    await until(lambda: all(r.text(0) for r in reporters), "both jobs to run")
    assert await runner.kube.read_secret(secret_name(first.build_id, INSTALLATION)) is not None
    await runner.cancel_build(first.build_id)
    results = await asyncio.wait_for(asyncio.gather(*tasks), WAIT)
    assert all(r.status in ("error", "cancelled") for r in results)
    assert await runner.kube.list_jobs(f"{LABEL_BUILD}={first.build_id}") == []
    assert await runner.kube.read_secret(secret_name(first.build_id, INSTALLATION)) is None


# ---------------------------------------------------------------- logs, breaks and re-attach

LINES = 40
SLOW_SCRIPT = (
    f'i=0; while [ $i -lt {LINES} ]; do echo "line $i of the log"; i=$((i+1)); sleep 0.05; done'
)
EXPECTED = "".join(f"line {i} of the log\n" for i in range(LINES))


async def test_log_stream_breaks_lose_and_repeat_nothing(
    runner: KubernetesRunner, emulator: EmulatorProcess
) -> None:
    job = job_run(step(0, SLOW_SCRIPT), step(1, "printf 'tail'"))
    reporter = FakeReporter()
    task = asyncio.create_task(runner.run_job(job, reporter))
    for n in (5, 15, 25):
        await until(partial(_has_lines, reporter, 0, n), f"{n} lines")
        # Retried: right after a break the runner may be between two connections.
        await until(
            lambda: control(emulator, "break-log-streams", {}, key="broken"), "a log to break"
        )
    # An unrelated change, then compaction: the pod watch's resourceVersion is now too old, so
    # the runner's re-watch gets 410 Gone and it must list again.
    await runner.kube.create_secret({"metadata": {"name": f"unrelated-{job.build_id}"}})
    await control(emulator, "compact", {})
    await control(emulator, "break-watches", {"abrupt": True})
    result = await asyncio.wait_for(task, WAIT)
    pod_lists = [
        c
        for c in await control(emulator, "calls")
        if (c["verb"], c["resource"]) == ("list", "pods")
    ]
    assert len(pod_lists) >= 2  # listed again after the 410
    assert result == JobResult("success")
    assert reporter.text(0) == EXPECTED
    assert reporter.text(1) == "tail"


async def test_silent_log_streams_are_reopened_without_loss(
    settings: KubernetesSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = KubernetesRunner(replace(settings, log_idle_reconnect_seconds=0.3))
    await runner.start()
    try:
        opened = 0
        real = runner.kube.pod_log

        async def counting(name: str, idle: float) -> Any:
            nonlocal opened
            opened += 1
            return await real(name, idle)

        monkeypatch.setattr(runner.kube, "pod_log", counting)
        job = job_run(step(0, "echo a; sleep 1.5; echo b"))
        reporter = FakeReporter()
        assert await runner.run_job(job, reporter) == JobResult("success")
    finally:
        await runner.stop()
    assert reporter.text(0) == "a\nb\n"
    assert opened >= 2


async def test_resume_after_a_crash_reports_every_line_once(
    settings: KubernetesSettings, emulator: EmulatorProcess
) -> None:
    job = job_run(step(0, "echo first"), step(1, SLOW_SCRIPT), step(2, "echo last"))
    reporter = FakeReporter()
    crashed = KubernetesRunner(settings)
    await crashed.start()
    task = asyncio.create_task(crashed.run_job(job, reporter))
    await until(lambda: reporter.text(1).count("\n") >= 10, "some output")
    task.cancel()  # the executor dies: its tasks stop, the Job keeps running
    with pytest.raises(asyncio.CancelledError):
        await task
    await crashed.stop()
    stored = reporter.stored
    assert stored > 0

    revived = KubernetesRunner(settings)
    await revived.start()
    try:
        result = await revived.run_job(job, reporter, resume=True)
    finally:
        await revived.stop()
    assert result == JobResult("success")
    assert reporter.text(0) == "first\n"
    assert reporter.text(1) == EXPECTED
    assert reporter.text(2) == "last\n"
    assert reporter.statuses() == {0: "success", 1: "success", 2: "success"}
    creates = [c for c in (await control(emulator, "calls")) if c["verb"] == "create"]
    assert [c["resource"] for c in creates] == ["jobs"]  # re-attached, not re-created


async def test_resume_after_the_job_finished_meanwhile(settings: KubernetesSettings) -> None:
    job = job_run(step(0, SLOW_SCRIPT), step(1, "exit 3"))
    reporter = FakeReporter()
    crashed = KubernetesRunner(settings)
    await crashed.start()
    task = asyncio.create_task(crashed.run_job(job, reporter))
    await until(lambda: reporter.text(0).count("\n") >= 3, "some output")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    name = k8s_job_name(job.build_id, job.job_name, INSTALLATION)

    async def job_failed() -> bool:
        obj = await crashed.kube.read_job(name)
        return bool(obj and (obj.get("status") or {}).get("failed"))

    await until(job_failed, "the Job to fail while nobody follows it")
    await crashed.stop()

    revived = KubernetesRunner(settings)
    await revived.start()
    try:
        result = await revived.run_job(job, reporter, resume=True)
    finally:
        await revived.stop()
    assert result == JobResult("failed")
    assert reporter.text(0) == EXPECTED
    assert reporter.finished[1] == ("failed", 3, None)


async def test_api_errors_during_a_run_are_infrastructure_errors(
    runner: KubernetesRunner, emulator: EmulatorProcess
) -> None:
    await control(emulator, "forbid", {"verbs": ["create"], "resources": ["secrets"]})
    job = job_run(step(0, "echo hi", env={"PW": "x"}), secrets=frozenset({"PW"}))
    reporter = FakeReporter()
    result = await runner.run_job(job, reporter)
    assert result.status == "error"
    assert result.error is not None
    assert "403" in result.error
    assert reporter.statuses() == {0: "skipped"}


async def test_resume_of_a_job_that_never_started_creates_it(runner: KubernetesRunner) -> None:
    job = job_run(step(0, "echo fresh"))
    reporter = FakeReporter()
    result = await runner.run_job(job, reporter, resume=True)
    assert result == JobResult("success")
    assert reporter.text(0) == "fresh\n"


# ---------------------------------------------------------------- secrets


async def test_secret_values_never_appear_in_the_pod_spec(runner: KubernetesRunner) -> None:
    job = job_run(
        step(
            0,
            'printf "%s" "$API_KEY" | tr a-z A-Z; echo " $PLAIN"',
            env={"API_KEY": "hunter-two", "PLAIN": "p$(HOME)"},
        ),
        step(1, 'printf "%s" "$API_KEY" | wc -c', env={"API_KEY": "hunter-two", "PLAIN": "q"}),
        secrets=frozenset({"API_KEY"}),
    )
    reporter = FakeReporter()
    result = await runner.run_job(job, reporter)
    assert result == JobResult("success")
    assert reporter.text(0) == "HUNTER-TWO p$(HOME)\n"
    assert reporter.text(1).strip() == "10"
    name = k8s_job_name(job.build_id, job.job_name, INSTALLATION)
    job_obj = await runner.kube.read_job(name)
    pods = await pods_of(runner, job)
    assert job_obj is not None
    assert pods
    assert "hunter-two" not in json.dumps(job_obj)
    assert "hunter-two" not in json.dumps(pods)
    refs = [
        e["valueFrom"]["secretKeyRef"]
        for e in job_obj["spec"]["template"]["spec"]["containers"][0]["env"]
        if "valueFrom" in e
    ]
    assert refs
    assert all(r["name"] == secret_name(job.build_id, INSTALLATION) for r in refs)
    secret = await runner.kube.read_secret(secret_name(job.build_id, INSTALLATION))
    assert secret is not None
    owners = secret["metadata"].get("ownerReferences") or []
    assert [(o["kind"], o["name"], o["uid"]) for o in owners] == [
        ("Job", name, job_obj["metadata"]["uid"])
    ]
    await runner.cleanup_build(job.build_id)
    assert await runner.kube.read_secret(secret_name(job.build_id, INSTALLATION)) is None


# ---------------------------------------------------------------- startup and sweep


async def test_forbidden_is_a_clear_start_error(
    settings: KubernetesSettings, emulator: EmulatorProcess
) -> None:
    await control(emulator, "forbid", {"verbs": ["list"], "resources": ["jobs"]})
    runner = KubernetesRunner(settings)
    with pytest.raises(RuntimeError, match="RBAC forbids listing Jobs in namespace 'ci'"):
        await runner.start()


async def test_missing_config_is_a_clear_start_error(
    settings: KubernetesSettings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    runner = KubernetesRunner(replace(settings, kubeconfig=None))
    with pytest.raises(RuntimeError, match="no Kubernetes config: set KUBECONFIG"):
        await runner.start()
    assert os.environ["KUBECONFIG"].endswith("absent")


async def test_sweep_deletes_jobs_of_finished_builds_only(runner: KubernetesRunner) -> None:
    done = job_run(step(0, "sleep 300"), name="a")
    live = job_run(step(0, "sleep 300"), name="b")
    for job in (done, live):
        await runner.kube.create_job(runner.job_manifest(job, "sleep 300", []))
    asked: list[list[int]] = []

    async def finished(ids: list[int]) -> set[int]:
        asked.append(ids)
        return {done.build_id}

    deleted = await runner.sweep_orphans(finished)
    assert deleted == [k8s_job_name(done.build_id, "a", INSTALLATION)]
    assert asked == [sorted([done.build_id, live.build_id])]
    assert await runner.kube.list_jobs(f"{LABEL_BUILD}={done.build_id}") == []
    assert len(await runner.kube.list_jobs(f"{LABEL_BUILD}={live.build_id}")) == 1


async def test_the_runner_calls_exactly_the_verbs_it_declares(
    runner: KubernetesRunner, emulator: EmulatorProcess
) -> None:
    job = job_run(step(0, "echo hi", env={"PW": "x"}), secrets=frozenset({"PW"}))
    # resume=True also covers reading the Job before creating it
    assert (await runner.run_job(job, FakeReporter(), resume=True)).status == "success"

    async def finished(ids: list[int]) -> set[int]:
        return set(ids)

    assert await runner.sweep_orphans(finished) == [
        k8s_job_name(job.build_id, job.job_name, INSTALLATION)
    ]
    await runner.cancel_build(job.build_id)
    used: dict[tuple[str, str], set[str]] = {}
    for call in await control(emulator, "calls"):
        used.setdefault((call["group"], call["resource"]), set()).add(call["verb"])
    assert used == {key: set(verbs) for key, verbs in REQUIRED_RBAC.items()}
