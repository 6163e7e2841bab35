"""The Kubernetes runner where the emulator is as strict as a node: steps run as the pod's
non-root user in emptyDirs owned root:<fsGroup> (git's ownership check, HOME), and service
containers run as processes of the pod, reached by name from the steps.

These need the emulator's strict uid mode (it runs as root); elsewhere they skip with its reason.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from app.runners.base import JobResult, ServiceContainer
from app.runners.kubernetes import LABEL_JOB_ID, KubernetesRunner, KubernetesSettings, shell
from app.runners.kubernetes.names import CONTAINER
from app.services.plan import CHECKOUT_SCRIPT
from tests.k8s_emulator.fixture import EmulatorProcess
from tests.runners.steps import step
from tests.runners.test_kubernetes_runner import FakeReporter, control, job_run, until

RUN_AS = 1001


@pytest.fixture
def strict(emulator: EmulatorProcess) -> EmulatorProcess:
    info = emulator.control("info")
    if not info["strictUsers"]:
        pytest.skip(info["strictUsersUnavailable"])
    return emulator


@pytest.fixture
async def runner(strict: EmulatorProcess) -> AsyncIterator[KubernetesRunner]:
    settings = KubernetesSettings(
        namespace="ci",
        default_image="busybox:1.36",
        marker_secret="test-marker-secret",
        kubeconfig=str(strict.kubeconfig_path),
        image_pull_timeout_seconds=0,
        termination_grace_seconds=3,
        poll_interval_seconds=0.1,
        retry_interval_seconds=0.1,
        run_as_user=RUN_AS,
    )
    runner = KubernetesRunner(settings)
    await runner.start()
    yield runner
    await runner.stop()


@pytest.fixture
def origin() -> Iterator[Path]:
    """A git repository the pod's user can read (pytest's tmp dirs are 0700), owned by root: git
    refuses it as "dubious" too unless the pod's git config says otherwise."""
    top = Path(tempfile.mkdtemp(prefix="ci-origin-"))
    os.chmod(top, 0o755)
    repo = top / "repo"
    repo.mkdir()
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(top)}
    for args in (
        ["init", "-q", "-b", "main"],
        ["-c", "user.name=t", "-c", "user.email=t@e", "commit", "-q", "--allow-empty", "-m", "x"],
    ):
        subprocess.run(["git", *args], cwd=repo, env=env, check=True)
    (repo / "README").write_text("hello from origin\n")
    subprocess.run(["git", "add", "README"], cwd=repo, env=env, check=True)
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@e", "commit", "-q", "-m", "readme"],
        cwd=repo,
        env=env,
        check=True,
    )
    for path in [top, *top.rglob("*")]:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    yield repo
    shutil.rmtree(top, ignore_errors=True)


async def test_checkout_with_repo_url_as_the_pods_non_root_user(
    runner: KubernetesRunner, origin: Path
) -> None:
    # The implicit checkout of a build with repo_url, exactly as the plan makes it, then what
    # users do next: git config in HOME and git commands in the workspace.
    checkout = step(0, CHECKOUT_SCRIPT, env={"CI_REPO_URL": str(origin), "CI_CHECKOUT_REF": "main"})
    after = step(
        1,
        "id -u; cat README; git config --global user.name ci && echo config-ok; "
        "git log --format=%s -1",
    )
    job = job_run(checkout, after)
    reporter = FakeReporter()
    result = await runner.run_job(job, reporter)
    assert result == JobResult("success"), (reporter.text(0), reporter.text(1))
    assert "checked out" in reporter.text(0)
    lines = reporter.text(1).splitlines()
    assert lines == [str(RUN_AS), "hello from origin", "config-ok", "readme"]


async def test_a_service_container_is_reached_by_name_and_port_from_a_step(
    runner: KubernetesRunner,
) -> None:
    # postgres:16 on 5432, while the machine itself runs a real Postgres on 127.0.0.1:5432: the
    # step must reach its own pod's service (the emulator's stand-in answers "<port> <line>").
    service = ServiceContainer(name="db", image="postgres:16", ports=(5432,))
    probe = (
        "import socket\n"
        "s = socket.create_connection(('db', 5432), timeout=5)\n"
        "s.sendall(b'hello\\n')\n"
        "print(s.makefile().readline().strip())\n"
    )
    job = job_run(step(0, f'python3 -c "{probe}"'), services=(service,))
    reporter = FakeReporter()
    assert await runner.run_job(job, reporter) == JobResult("success"), reporter.text(0)
    assert reporter.text(0) == "5432 hello\n"


async def test_a_slow_service_is_waited_for_before_the_first_step(
    strict: EmulatorProcess, runner: KubernetesRunner
) -> None:
    await control(
        strict, "image-commands", {"images": {"slowdb:1": ["{standin}", "--delay", "2", "{ports}"]}}
    )
    service = ServiceContainer(name="slow", image="slowdb:1", ports=(7000,))
    probe = (
        "import socket\n"
        "s = socket.create_connection(('slow', 7000), timeout=1)\n"
        "s.sendall(b'PING\\n')\n"
        "print(s.makefile().readline().strip())\n"
    )
    job = job_run(step(0, f'python3 -c "{probe}"'), services=(service,))
    reporter = FakeReporter()
    assert await runner.run_job(job, reporter) == JobResult("success"), reporter.text(0)
    assert reporter.text(0) == "+PONG\n"


async def test_a_health_cmd_service_is_ready_by_its_own_check(runner: KubernetesRunner) -> None:
    # docker's --health-cmd becomes an exec readiness probe, run in the service's container;
    # redis images run a real redis-server there when the machine has one.
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        pytest.skip("redis-server/redis-cli are not installed")
    service = ServiceContainer(
        name="cache",
        image="redis:7",
        ports=(6391,),
        options='--health-cmd "redis-cli -p 6391 ping"',
    )
    script = (
        "redis-cli -h cache -p 6391 set greeting hi >/dev/null; "
        "redis-cli -h cache -p 6391 get greeting"
    )
    job = job_run(step(0, script), services=(service,))
    reporter = FakeReporter()
    assert await runner.run_job(job, reporter) == JobResult("success"), reporter.text(0)
    assert reporter.text(0) == "hi\n"


async def test_a_job_with_services_leaves_no_pod_running(
    strict: EmulatorProcess, runner: KubernetesRunner
) -> None:
    # Service containers are ordinary containers: the pod runs while any of them runs. A job
    # that ends must not leave its services (and its pod) running until the Job's deadline.
    service = ServiceContainer(name="cache", image="redis:7", ports=(6390,))
    job = job_run(step(0, "echo done"), services=(service,))
    assert await runner.run_job(job, FakeReporter()) == JobResult("success")

    async def pod_gone() -> bool:
        processes = await control(strict, "processes")
        return not [p for p in processes if p["pod"].startswith(runner.job_name(job))]

    await until(pod_gone, "the job's pod and its services to stop")


@pytest.fixture
async def plain_runner(emulator: EmulatorProcess) -> AsyncIterator[KubernetesRunner]:
    settings = KubernetesSettings(
        namespace="ci",
        default_image="busybox:1.36",
        marker_secret="test-marker-secret",
        kubeconfig=str(emulator.kubeconfig_path),
        poll_interval_seconds=0.1,
        retry_interval_seconds=0.1,
    )
    runner = KubernetesRunner(settings)
    await runner.start()
    yield runner
    await runner.stop()


async def test_a_step_program_delivered_twice_runs_the_step_once(
    plain_runner: KubernetesRunner,
) -> None:
    # The restart window: a start program that arrived whole but has not created the step's
    # files yet looks "never started" to a runner that re-attaches (after an executor restart
    # or a broken exec stream), which sends it again. Both copies must not run the step: the
    # second would truncate its log and both would write its exit-code file.
    gate = 'while [ ! -e "$CI_WORKSPACE/go" ]; do sleep 0.05; done'
    job = job_run(step(0, gate))
    reporter = FakeReporter()
    task = asyncio.create_task(plain_runner.run_job(job, reporter))
    kube = plain_runner.kube

    async def job_pod() -> str | None:
        pods = await kube.list_pods(f"{LABEL_JOB_ID}={plain_runner.job_name(job)}")
        running = [p for p in pods if (p.get("status") or {}).get("phase") == "Running"]
        return str(running[0]["metadata"]["name"]) if running else None

    await until(job_pod, "the job's pod")
    pod = await job_pod()
    assert pod is not None
    program = shell.start_program(7, 'echo ran >> "$CI_WORKSPACE/count"; sleep 0.5', {}, None)
    codes = []

    async def deliver() -> None:
        result = await kube.exec(pod, CONTAINER, shell.exec_argv(program), program, discard)
        codes.append(result.exit_code)

    await asyncio.gather(deliver(), deliver())
    data = bytearray()

    async def collect(chunk: bytes) -> None:
        data.extend(chunk)

    read = b'cat "$CI_WORKSPACE/count"; touch "$CI_WORKSPACE/go"\n'
    await kube.exec(pod, CONTAINER, shell.exec_argv(read), read, collect)
    assert bytes(data) == b"ran\n"
    assert sorted(c for c in codes if c is not None) == [0, shell.ALREADY_STARTED]
    assert await task == JobResult("success")


async def discard(_data: bytes) -> None:
    return None
