"""The service with RUNNER=kubernetes, end to end: real `ci-executor serve` processes against the
in-repo Kubernetes API emulator (default), or against the cluster KUBECONFIG points to when
CI_K8S_REAL_CLUSTER=1 (`make test-k8s`; the image must have `sh`)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.k8s_emulator.fixture import EmulatorProcess
from tests.support import (
    ROOT,
    ServeProcess,
    create,
    free_port,
    log_text,
    wait_for_build,
    wait_for_output,
    wait_until,
    workflow,
)

REAL = os.environ.get("CI_K8S_REAL_CLUSTER") == "1"
IMAGE = os.environ.get("K8S_TEST_IMAGE", "bash:5.2")  # the default shell is bash
NAMESPACE = os.environ.get("K8S_TEST_NAMESPACE", "ci")
pytestmark = pytest.mark.parametrize("backend", ["postgres"])  # replicas share one database


@pytest.fixture
def emulator(request: pytest.FixtureRequest) -> Iterator[EmulatorProcess | None]:
    """The shared emulator (reset after the test), or None against a real cluster."""
    if REAL:
        yield None
        return
    process: EmulatorProcess = request.getfixturevalue("emulator_process")
    yield process
    process.control("reset", {})


@pytest.fixture
def kube_env(emulator: EmulatorProcess | None) -> dict[str, str]:
    kubeconfig = os.environ["KUBECONFIG"] if REAL else str(emulator.kubeconfig_path)  # type: ignore[union-attr]
    return {
        "RUNNER": "kubernetes",
        "KUBECONFIG": kubeconfig,
        "K8S_NAMESPACE": NAMESPACE,
        "K8S_DEFAULT_IMAGE": IMAGE,
        "K8S_MARKER_SECRET": "test-marker-secret",
        "LEASE_SECONDS": "2",
    }


@pytest.fixture
def k8s_serve(
    serve_factory: Callable[..., ServeProcess], database_url: str, kube_env: dict[str, str]
) -> Callable[[str], ServeProcess]:
    def start(name: str) -> ServeProcess:
        return serve_factory({"DATABASE_URL": database_url, **kube_env}, name=name)

    return start


async def test_build_runs_as_kubernetes_jobs(k8s_serve: Callable[[str], ServeProcess]) -> None:
    server = k8s_serve("a")
    async with httpx.AsyncClient(base_url=f"{server.url}/api/v1", timeout=30) as client:
        body = await create(
            client,
            workflow(
                """
                jobs:
                  build:
                    steps:
                      - run: echo "building with $DEPLOY_TOKEN"
                      - run: exit 3
                        continue-on-error: true
                  test:
                    needs: build
                    steps:
                      - run: echo tested; exit 2
                      - run: echo never
                """
            ),
            variables={"DEPLOY_TOKEN": "k8s-secret-value"},
        )
        done = await wait_for_build(client, body["id"], timeout=120)
        statuses = {
            j["name"]: [(s["status"], s["exit_code"]) for s in j["steps"]] for j in done["jobs"]
        }
        assert statuses == {
            "build": [("success", 0), ("failed", 3)],
            "test": [("failed", 2), ("skipped", None)],
        }
        assert done["status"] == "failed"
        text = await log_text(client, body["id"])
        assert "building with ***" in text
        assert "k8s-secret-value" not in text
        assert "##[ci-executor" not in text  # markers never reach the stored log


async def test_replica_killed_mid_build_is_reattached_without_loss(
    k8s_serve: Callable[[str], ServeProcess],
) -> None:
    a = k8s_serve("a")
    script = "for i in $(seq 1 60); do echo line-$i; sleep 0.1; done"
    async with httpx.AsyncClient(base_url=f"{a.url}/api/v1", timeout=30) as client:
        body = await create(client, f"jobs:\n  long:\n    steps:\n      - run: {script}\n")

        await wait_for_output(client, body["id"], "line-5")
    a.stop(signal.SIGKILL)
    b = k8s_serve("b")
    async with httpx.AsyncClient(base_url=f"{b.url}/api/v1", timeout=30) as client:
        done = await wait_for_build(client, body["id"], timeout=120)
        assert done["status"] == "success", done
        lines = (await log_text(client, body["id"])).splitlines()
    assert lines == [f"line-{i}" for i in range(1, 61)]
    assert "took over build" in b.log()


async def test_graceful_shutdown_detaches_and_the_next_replica_finishes(
    k8s_serve: Callable[[str], ServeProcess],
    database_url: str,
    kube_env: dict[str, str],
    serve_factory: Callable[..., ServeProcess],
) -> None:
    a = serve_factory({"DATABASE_URL": database_url, **kube_env, "SHUTDOWN_GRACE_SECONDS": "0"})
    script = "for i in $(seq 1 40); do echo line-$i; sleep 0.1; done"
    async with httpx.AsyncClient(base_url=f"{a.url}/api/v1", timeout=30) as client:
        body = await create(client, f"jobs:\n  long:\n    steps:\n      - run: {script}\n")

        await wait_for_output(client, body["id"], "line-3")
    assert a.stop(signal.SIGTERM) in (0, -signal.SIGTERM)
    b = k8s_serve("b")
    async with httpx.AsyncClient(base_url=f"{b.url}/api/v1", timeout=30) as client:
        done = await wait_for_build(client, body["id"], timeout=120)
        lines = (await log_text(client, body["id"])).splitlines()
    assert done["status"] == "success", done
    assert done["jobs"][0]["error"] is None
    assert lines == [f"line-{i}" for i in range(1, 41)]


async def test_cancel_deletes_the_jobs(
    k8s_serve: Callable[[str], ServeProcess], emulator: EmulatorProcess | None
) -> None:
    server = k8s_serve("a")
    async with httpx.AsyncClient(base_url=f"{server.url}/api/v1", timeout=30) as client:
        body = await create(client, "jobs:\n  s:\n    steps:\n      - run: echo up; sleep 300\n")

        await wait_for_output(client, body["id"], "up")
        assert (await client.post(f"/builds/{body['id']}/cancel")).status_code == 202
        done = await wait_for_build(client, body["id"], timeout=60)
        assert done["status"] == "cancelled"
        assert done["jobs"][0]["status"] == "cancelled"
    if emulator is not None:

        async def no_processes() -> bool:
            return emulator.control("processes") == []

        await wait_until(no_processes, timeout=20)


@pytest.fixture
def term_mark() -> Iterator[Path]:
    """Where a step's TERM trap leaves its mark: a directory the pod's user (not root) may
    write to (pytest's own temp dirs are root's, 0700), removed afterwards."""
    shared = Path(tempfile.mkdtemp(prefix="ci-term-"))
    shared.chmod(0o777)
    yield shared / "got-term"
    shutil.rmtree(shared, ignore_errors=True)


async def test_cancel_delivers_term_to_the_running_step(
    k8s_serve: Callable[[str], ServeProcess], emulator: EmulatorProcess | None, term_mark: Path
) -> None:
    """The kubelet signals PID 1 only. A cancelled step must still get SIGTERM, not just die
    with the pod: its TERM trap runs (it leaves a file), which SIGKILL after the grace period
    would never let happen. Emulator only: the file is on this machine."""
    if emulator is None:
        pytest.skip("the step's trap leaves its mark on the emulator's machine")
    mark = term_mark
    script = f"trap 'echo term > {mark}; exit 0' TERM; echo up; sleep 300 & wait $!"
    server = k8s_serve("a")
    async with httpx.AsyncClient(base_url=f"{server.url}/api/v1", timeout=30) as client:
        body = await create(client, f'jobs:\n  s:\n    steps:\n      - run: "{script}"\n')
        await wait_for_output(client, body["id"], "up")
        assert not mark.exists()
        assert (await client.post(f"/builds/{body['id']}/cancel")).status_code == 202
        done = await wait_for_build(client, body["id"], timeout=60)
        assert done["status"] == "cancelled"

    async def trapped() -> bool:
        return mark.exists()

    # Well within the pod's grace period (10 s): the trap ran on TERM, before any SIGKILL.
    await wait_until(trapped, timeout=8)
    assert mark.read_text().strip() == "term"


async def _run_to_end(server: ServeProcess, yaml_text: str) -> tuple[dict[str, Any], str]:
    """A build of `yaml_text` on `server`, waited for: its detail and its log."""
    async with httpx.AsyncClient(base_url=f"{server.url}/api/v1", timeout=30) as client:
        body = await create(client, workflow(yaml_text))
        done = await wait_for_build(client, body["id"], timeout=60)
        return done, await log_text(client, body["id"])


async def test_what_a_step_leaves_running_ends_with_it(
    k8s_serve: Callable[[str], ServeProcess], emulator: EmulatorProcess | None
) -> None:
    """A step's background process is killed when the step ends (its process group, by the
    program that started it), so it neither outlives the step nor holds the pod's CPU: the next
    step finds it gone. The pod's /bin/sh runs that kill (dash's here, as in Debian images)."""
    marker = f"sleep 31{os.getpid() % 1000:03d}"
    done, text = await _run_to_end(
        k8s_serve("a"),
        f"""
        jobs:
          s:
            steps:
              - run: {marker} &
              - run: |
                  sleep 0.5
                  for p in /proc/[0-9]*; do
                    if tr '\\0' ' ' < $p/cmdline 2>/dev/null | grep -q '^{marker}'; then
                      echo "left running: $p"; exit 1
                    fi
                  done
                  echo none left
        """,
    )
    assert done["status"] == "success", text
    assert "none left" in text
    if emulator is not None:
        assert not [p for p in emulator.control("processes") if marker in str(p)]


async def test_a_step_past_its_timeout_gets_term(
    k8s_serve: Callable[[str], ServeProcess], emulator: EmulatorProcess | None, term_mark: Path
) -> None:
    """`timeout-minutes` on Kubernetes: the runner signals the step's process group with TERM
    (its trap runs and leaves a file), well before the 300 s it would otherwise run."""
    done, _ = await _run_to_end(
        k8s_serve("a"),
        f"""
        jobs:
          s:
            steps:
              - run: |
                  trap 'echo term > {term_mark}; exit 0' TERM
                  sleep 300 & wait $!
                timeout-minutes: 0.05
        """,
    )
    assert done["jobs"][0]["steps"][0]["status"] == "timed_out", done
    if emulator is not None:
        assert term_mark.read_text().strip() == "term"


def _serve_exit(env: dict[str, str], database_url: str) -> tuple[int, str]:
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "serve"],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": database_url, "PORT": str(free_port()), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return result.returncode, result.stdout + result.stderr


def test_missing_config_refuses_to_start(
    kube_env: dict[str, str], database_url: str, tmp_path: Path
) -> None:
    code, out = _serve_exit({**kube_env, "KUBECONFIG": str(tmp_path / "missing")}, database_url)
    assert code != 0
    assert "Kubernetes" in out or "kubeconfig" in out.lower()
    assert "Traceback" not in out


def test_forbidden_is_reported_as_rbac(
    kube_env: dict[str, str], database_url: str, emulator: EmulatorProcess | None
) -> None:
    if emulator is None:
        pytest.skip("needs the emulator's forbid switch")
    emulator.control("forbid", {"value": True})
    try:
        code, out = _serve_exit(kube_env, database_url)
    finally:
        emulator.control("forbid", {"value": False})
    assert code != 0
    assert "RBAC" in out or "forbidden" in out.lower()
    assert "Traceback" not in out


def test_marker_secret_is_required(database_url: str, kube_env: dict[str, Any]) -> None:
    code, out = _serve_exit({**kube_env, "K8S_MARKER_SECRET": ""}, database_url)
    assert code == 2
    assert "K8S_MARKER_SECRET" in out
