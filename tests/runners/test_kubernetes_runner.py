"""KubernetesRunner against the Kubernetes API emulator (real HTTP, websocket exec, processes).

Each numbered failure of the Kubernetes issue has a test here: signals reaching the step's whole
tree, resumable output, unforgeable results, real-cluster defaults (busybox without bash),
hardened pods (PodSecurity "restricted"), big scripts, the startup RBAC check, the job deadline,
foreign Jobs, and reasons reported once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any

import pytest

from app.runners.base import (
    JobResult,
    JobRun,
    KubernetesOptions,
    ServiceContainer,
    StepOutcome,
    StepRun,
)
from app.runners.kubernetes import (
    LABEL_BUILD,
    LABEL_JOB_ID,
    REQUIRED_RBAC,
    KubernetesRunner,
    KubernetesSettings,
    installation_id,
    k8s_job_name,
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
    *steps: StepRun, image: str | None = None, timeout: float | None = None, **kw: Any
) -> JobRun:
    return JobRun(
        build_id=next(_next_build),
        job_name="build",
        image=image,
        timeout_seconds=timeout,
        steps=tuple(steps),
        **kw,
    )


async def until(predicate: Callable[[], Awaitable[bool] | bool], what: str) -> None:
    await wait_until(predicate, what, timeout=WAIT)


async def control(emulator: EmulatorProcess, path: str, body: dict[str, Any] | None = None) -> Any:
    return await asyncio.to_thread(emulator.control, path, body)


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
        termination_grace_seconds=3,
        poll_interval_seconds=0.1,
        retry_interval_seconds=0.1,
    )


@pytest.fixture
async def runner(settings: KubernetesSettings) -> AsyncIterator[KubernetesRunner]:
    runner = KubernetesRunner(settings)
    await runner.start()
    yield runner
    await runner.stop()


async def test_success_runs_each_step_by_exec_in_a_hardened_pod(
    emulator: EmulatorProcess, runner: KubernetesRunner
) -> None:
    await control(
        emulator,
        "namespace",
        {"name": "ci", "labels": {"pod-security.kubernetes.io/enforce": "restricted"}},
    )
    job = job_run(
        step(0, "echo one; printf 'two'", env={"GREETING": "hi $(HOME) $$"}),
        step(
            1,
            'echo "$GREETING"; touch "$HOME/.gitconfig" && echo home-ok; pwd',
            env={"GREETING": "hi $(HOME) $$"},
        ),
        timeout=90.5,
        kubernetes=KubernetesOptions(node_selector={"pool": "ci"}, runtime_class_name="gvisor"),
    )
    reporter = FakeReporter()
    assert await runner.run_job(job, reporter) == JobResult("success")
    assert reporter.text(0) == "one\ntwo"
    greeting, home, cwd = reporter.text(1).splitlines()
    assert greeting == "hi $(HOME) $$"  # values reach the step untouched by $(VAR) expansion
    assert home == "home-ok"
    assert cwd.endswith("workspace")
    assert reporter.events == [
        ("started", 0),
        ("finished", 0, "success", 0),
        ("started", 1),
        ("finished", 1, "success", 0),
    ]
    obj = await runner.kube.read_job(runner.job_name(job))
    assert obj is not None
    spec = obj["spec"]
    assert spec["activeDeadlineSeconds"] == 91
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["nodeSelector"] == {"pool": "ci"}
    assert pod["runtimeClassName"] == "gvisor"
    container = pod["containers"][0]
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert "GREETING" not in str(container)  # values travel on stdin, not in the spec
    assert "sizeLimit" in pod["volumes"][0]["emptyDir"]


async def test_busybox_without_bash_is_a_step_failure_not_an_error(
    runner: KubernetesRunner,
) -> None:
    job = job_run(step(0, "echo hi", shell="bash"), step(1, "echo later"))
    reporter = FakeReporter()
    assert await runner.run_job(job, reporter) == JobResult("failed")
    assert reporter.statuses() == {0: "failed", 1: "skipped"}
    assert "bash is not installed" in reporter.text(0)
    # A job without timeout-minutes gets K8S_JOB_DEADLINE_SECONDS.
    obj = await runner.kube.read_job(runner.job_name(job))
    assert obj is not None
    assert obj["spec"]["activeDeadlineSeconds"] == runner.settings.default_deadline_seconds


async def test_failure_exit_codes_and_continue_on_error(runner: KubernetesRunner) -> None:
    job = job_run(
        step(0, "exit 3", coe=True),
        step(1, "echo running; exit 4"),
        step(2, "echo never"),
        step(3, "echo cleanup", cond="always()"),
    )
    reporter = FakeReporter()
    assert await runner.run_job(job, reporter) == JobResult("failed")
    assert {i: (s, c) for i, (s, c, _) in reporter.finished.items()} == {
        0: ("failed", 3),
        1: ("failed", 4),
        2: ("skipped", None),
        3: ("success", 0),
    }
    assert reporter.text(3) == "cleanup\n"


async def test_results_cannot_be_forged_by_the_job(runner: KubernetesRunner) -> None:
    forge = (
        'for f in "$CI_RUN_DIR"/*; do echo 0 > "$f"; done 2>/dev/null; '
        "echo '##[ci-executor:x] job-end success'; exit 1"
    )
    reporter = FakeReporter()
    assert await runner.run_job(job_run(step(0, forge)), reporter) == JobResult("failed")
    assert reporter.finished[0][:2] == ("failed", 1)


async def test_scripts_beyond_the_argv_limit_run(runner: KubernetesRunner) -> None:
    big = "x=1\n" * 100_000 + "echo big-done\n"  # 400 KiB: over MAX_ARG_STRLEN (128 KiB)
    reporter = FakeReporter()
    assert await runner.run_job(job_run(step(0, big)), reporter) == JobResult("success")
    assert reporter.text(0) == "big-done\n"


async def test_output_survives_stream_breaks_without_loss_or_repeat(
    emulator: EmulatorProcess, runner: KubernetesRunner
) -> None:
    await control(emulator, "log-rotation", {"bytes": 4096})
    script = 'i=0; while [ $i -lt 400 ]; do echo "line $i"; i=$((i+1)); sleep 0.005; done'
    job = job_run(step(0, script))
    reporter = FakeReporter()
    task = asyncio.create_task(runner.run_job(job, reporter))
    for _ in range(3):
        await until(lambda: reporter.text(0).count("\n") > 20, "some output")
        await control(emulator, "break-exec-streams", {})
        await asyncio.sleep(0.3)
    assert await task == JobResult("success")
    assert reporter.text(0) == "".join(f"line {i}\n" for i in range(400))


async def test_reattach_after_restart_follows_on_from_the_stored_offset(
    settings: KubernetesSettings, runner: KubernetesRunner
) -> None:
    job = job_run(
        step(0, "echo first"),
        step(1, 'i=0; while [ $i -lt 30 ]; do echo "n $i"; i=$((i+1)); sleep 0.05; done'),
    )
    reporter = FakeReporter()
    task = asyncio.create_task(runner.run_job(job, reporter))
    await until(lambda: reporter.text(1).count("\n") >= 5, "step 1 output")
    task.cancel()  # the executor dies mid-step
    with pytest.raises(asyncio.CancelledError):
        await task
    other = KubernetesRunner(settings)
    await other.start()
    try:
        resumed = replace(job, cancel=asyncio.Event())
        assert await other.run_job(resumed, reporter, resume=True) == JobResult("success")
    finally:
        await other.stop()
    assert reporter.text(0) == "first\n"
    assert reporter.text(1) == "".join(f"n {i}\n" for i in range(30))


async def test_cancel_stops_the_whole_process_tree_by_sigterm(
    emulator: EmulatorProcess, settings: KubernetesSettings
) -> None:
    # A daemon in the background, and a step that ignores nothing: all must be gone. The grace
    # period is far longer than the wait below, so the tree can only be gone if PID 1 handled
    # the kubelet's TERM (a kubelet signals PID 1 only; without a handler a namespace init
    # ignores it) and ended the container. No wall-clock bound: the grace period decides.
    runner = KubernetesRunner(replace(settings, termination_grace_seconds=3600))
    await runner.start()
    try:
        job = job_run(step(0, "sleep 300 & sleep 300 & echo started; wait"))
        reporter = FakeReporter()
        task = asyncio.create_task(runner.run_job(job, reporter))
        await until(lambda: "started" in reporter.text(0), "the step to start")
        job.cancel.set()
        assert await task == JobResult("cancelled")
        assert reporter.statuses() == {0: "cancelled"}

        async def gone() -> bool:
            return not [p for p in await control(emulator, "processes") if "ci-" in p["pod"]]

        await until(gone, "every process of the pod to end")
    finally:
        await runner.stop()


async def test_step_timeout_kills_the_step_tree(runner: KubernetesRunner) -> None:
    job = job_run(step(0, "sleep 300 & echo up; wait", timeout=1), step(1, "echo next"))
    reporter = FakeReporter()
    result = await runner.run_job(job, reporter)
    assert result.status == "timed_out"
    assert reporter.statuses() == {0: "timed_out", 1: "skipped"}


async def test_job_deadline_reports_timed_out(runner: KubernetesRunner) -> None:
    job = job_run(step(0, "echo up; sleep 300"), step(1, "echo next"), timeout=2)
    reporter = FakeReporter()
    result = await runner.run_job(job, reporter)
    assert result.status == "timed_out"
    assert reporter.statuses() == {0: "timed_out", 1: "skipped"}


async def test_missing_image_is_an_error_reported_once(
    emulator: EmulatorProcess, runner: KubernetesRunner
) -> None:
    await control(emulator, "missing-images", {"images": ["nope:1"]})
    job = job_run(step(0, "true"), step(1, "true"), step(2, "true"), image="nope:1")
    reporter = FakeReporter()
    result = await runner.run_job(job, reporter)
    assert result.status == "error"
    assert "nope:1" in (result.error or "")
    assert [e for _, (_, _, e) in reporter.finished.items() if e] == []
    assert reporter.statuses() == {0: "skipped", 1: "skipped", 2: "skipped"}


async def test_admission_refusal_ends_the_job_in_seconds_with_the_reason(
    emulator: EmulatorProcess, runner: KubernetesRunner
) -> None:
    await control(
        emulator,
        "namespace",
        {"name": "ci", "labels": {"pod-security.kubernetes.io/enforce": "restricted"}},
    )
    job = job_run(step(0, "true"), kubernetes=KubernetesOptions())
    manifest_job = replace(job, kubernetes=None)
    # A privileged option the hardened namespace refuses: a hostPath-free way is a root user.
    runner.settings = replace(runner.settings, run_as_user=1000)
    reporter = FakeReporter()
    original = runner.job_manifest

    def loose(j: JobRun) -> dict[str, Any]:
        body = original(j)
        body["spec"]["template"]["spec"]["containers"][0]["securityContext"] = {}
        return body

    runner.job_manifest = loose  # type: ignore[method-assign]
    result = await runner.run_job(manifest_job, reporter)
    assert result.status == "error"
    assert "violates PodSecurity" in (result.error or "")


async def test_a_foreign_job_of_the_same_name_is_not_adopted(
    settings: KubernetesSettings, runner: KubernetesRunner
) -> None:
    job = job_run(step(0, "echo mine"))
    other = KubernetesRunner(replace(settings, marker_secret="another-installation"))
    name = runner.job_name(job)
    body = other.job_manifest(job)
    body["metadata"]["name"] = name
    body["spec"]["template"]["metadata"]["labels"][LABEL_JOB_ID] = name
    await runner.kube.create_job(body)
    reporter = FakeReporter()
    result = await runner.run_job(job, reporter, resume=True)
    assert result.status == "error"
    assert "not created by this executor installation" in (result.error or "")
    assert await runner.kube.read_job(name) is not None  # left alone


async def test_startup_checks_every_verb_the_runner_uses(
    emulator: EmulatorProcess, settings: KubernetesSettings
) -> None:
    assert ("", "pods/exec") in REQUIRED_RBAC
    await control(emulator, "forbid", {"resources": ["pods/exec"]})
    runner = KubernetesRunner(settings)
    with pytest.raises(RuntimeError) as refused:
        await runner.start()
    message = str(refused.value)
    assert "\n" not in message
    assert "create pods/exec" in message


async def test_cancel_build_deletes_the_builds_jobs(runner: KubernetesRunner) -> None:
    job = job_run(step(0, "echo started; sleep 300"))
    reporter = FakeReporter()
    task = asyncio.create_task(runner.run_job(job, reporter))
    await until(lambda: "started" in reporter.text(0), "the step to start")
    await runner.cancel_build(job.build_id)
    job.cancel.set()
    assert (await task).status == "cancelled"
    jobs = await runner.kube.list_jobs(f"{LABEL_BUILD}={job.build_id}")
    assert [j for j in jobs if not j["metadata"].get("deletionTimestamp")] == []
    assert k8s_job_name(job.build_id, "build", INSTALLATION) == runner.job_name(job)


async def test_services_are_sidecars_reachable_by_name(runner: KubernetesRunner) -> None:
    service = ServiceContainer(name="redis", image="redis:7", env={"A": "$(B)"}, ports=(6379,))
    job = job_run(step(0, "echo with-service"), services=(service,))
    reporter = FakeReporter()
    assert await runner.run_job(job, reporter) == JobResult("success")
    # The Job is deleted once the job ended (its services would keep the pod running).
    assert await runner.kube.read_job(runner.job_name(job)) is None
    pod = runner.job_manifest(job)["spec"]["template"]["spec"]
    assert pod["hostAliases"] == [{"ip": "127.0.0.1", "hostnames": ["redis"]}]
    sidecar = pod["containers"][1]
    assert sidecar["image"] == "redis:7"
    assert sidecar["env"] == [{"name": "A", "value": "$$(B)"}]
    assert sidecar["readinessProbe"]["tcpSocket"] == {"port": 6379}
    assert sidecar["securityContext"]["capabilities"] == {"drop": ["ALL"]}


async def test_a_service_that_cannot_start_is_an_error_before_any_step(
    emulator: EmulatorProcess, runner: KubernetesRunner
) -> None:
    await control(emulator, "missing-images", {"images": ["postgres:nope"]})
    service = ServiceContainer(name="db", image="postgres:nope", ports=(5432,))
    job = job_run(step(0, "echo never"), services=(service,))
    reporter = FakeReporter()
    result = await runner.run_job(job, reporter)
    assert result.status == "error"
    assert "postgres:nope" in (result.error or "")
    assert reporter.events == [("finished", 0, "skipped", None)]


async def test_another_database_never_follows_this_ones_jobs(
    settings: KubernetesSettings, runner: KubernetesRunner
) -> None:
    # The same build number and job in two databases (e.g. after a reset): separate Jobs.
    job = job_run(step(0, "echo old; sleep 300"))
    old = asyncio.create_task(runner.run_job(job, FakeReporter()))
    fresh = KubernetesRunner(replace(settings, database_id="another-database"))
    await fresh.start()
    try:
        await until(lambda: runner.kube.read_job(runner.job_name(job)), "the old Job")
        assert fresh.job_name(job) != runner.job_name(job)
        reporter = FakeReporter()
        again = replace(job, steps=(step(0, "echo new"),), cancel=asyncio.Event())
        assert await fresh.run_job(again, reporter, resume=True) == JobResult("success")
        assert reporter.text(0) == "new\n"
    finally:
        await fresh.stop()
        job.cancel.set()
        await old


async def test_a_job_of_the_same_name_running_something_else_is_not_adopted(
    runner: KubernetesRunner,
) -> None:
    # A restored database hands out build numbers again: its build N is not the old build N.
    earlier = job_run(step(0, "echo earlier build"))
    await runner.kube.create_job(runner.job_manifest(earlier))
    later = replace(earlier, steps=(step(0, "echo later build"),), cancel=asyncio.Event())
    reporter = FakeReporter()
    result = await runner.run_job(later, reporter, resume=True)
    assert result.status == "error"
    assert "runs something else" in (result.error or "")
    assert reporter.output == {}
    assert await runner.kube.read_job(runner.job_name(later)) is not None


@pytest.mark.parametrize(("control_path", "reason"), [("evict", "Evicted"), ("oom", "OOMKilled")])
async def test_a_pod_stopped_under_the_step_is_an_error_with_the_reason(
    emulator: EmulatorProcess, runner: KubernetesRunner, control_path: str, reason: str
) -> None:
    job = job_run(step(0, "echo up; sleep 300"), step(1, "echo never"))
    reporter = FakeReporter()
    task = asyncio.create_task(runner.run_job(job, reporter))
    await until(lambda: "up" in reporter.text(0), "the step to start")
    (pod,) = [p for p in await control(emulator, "processes") if p["pod"].startswith("ci-")][:1]
    await control(emulator, control_path, {"pod": pod["pod"], "gracePeriodSeconds": 1})
    result = await task
    assert result.status == "error"
    assert reason in (result.error or "")
    assert reporter.statuses() == {0: "error", 1: "skipped"}


async def test_an_apiserver_restart_mid_step_loses_and_repeats_nothing(
    emulator: EmulatorProcess, runner: KubernetesRunner
) -> None:
    script = 'i=0; while [ $i -lt 60 ]; do echo "tick $i"; i=$((i+1)); sleep 0.05; done'
    job = job_run(step(0, script), step(1, "echo after"))
    reporter = FakeReporter()
    task = asyncio.create_task(runner.run_job(job, reporter))
    await until(lambda: reporter.text(0).count("\n") >= 5, "some output")
    await control(emulator, "unavailable", {"seconds": 2})
    assert await task == JobResult("success")
    assert reporter.text(0) == "".join(f"tick {i}\n" for i in range(60))
    assert reporter.text(1) == "after\n"
