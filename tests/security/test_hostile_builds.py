"""Hostile builds on the local runner (issue 10, items 2, 3 and 13's working-directory).

A step's code is untrusted: it must not read the service's environment, configuration, database
or other builds' files, and nothing it starts may outlive it (daemons included), whether the step
ends, is cancelled, times out, or the service itself is killed.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from app.config import Settings
from app.runners.sandbox import IsolationUnavailable, bwrap_base, probe_isolation
from tests.helpers import (
    create,
    job,
    log_text,
    pids_with,
    step_statuses,
    wait_for_build,
    wait_for_output,
    wait_until,
    workflow,
)
from tests.security.conftest import READ_TOKEN, WRITE_TOKEN
from tests.serve import ServeProcess

HAVE_BWRAP = shutil.which("bwrap") is not None
needs_namespaces = pytest.mark.skipif(not HAVE_BWRAP, reason="bubblewrap is not installed")


def _marker() -> str:
    """A unique sleep length: marks a process's command line so the host can find it."""
    return f"600.{uuid.uuid4().int % 10**9}"


@needs_namespaces
async def test_step_cannot_read_the_service_environment(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The test process is the service: anything in its environment is the service's.
    monkeypatch.setenv("SERVICE_CANARY_NAME", "service-canary-value")
    body = await create(
        client,
        workflow(
            """
            jobs:
              a:
                steps:
                  - run: |
                      for f in /proc/[0-9]*/environ; do tr '\\0' '\\n' < "$f" || true; done
                      tr '\\0' '\\n' < /proc/$PPID/environ || true
                      echo "processes: $(ls -d /proc/[0-9]* | wc -l)"
            """
        ),
    )
    done = await wait_for_build(client, body["id"])
    text = await log_text(client, body["id"])
    assert done["status"] == "success", text
    assert "SERVICE_CANARY_NAME" not in text
    assert "service-canary-value" not in text
    assert "API_TOKENS" not in text
    assert WRITE_TOKEN not in text
    assert READ_TOKEN not in text


@needs_namespaces
async def test_step_cannot_read_the_database_file_or_the_config(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    canary = f"canary{uuid.uuid4().hex}"
    await create(
        client,
        "jobs:\n  a:\n    steps:\n      - run: echo x\n",
        dispatch=False,
        variables={"NOTE": canary},
    )
    db = settings.sqlite_path.resolve() if settings.sqlite_path else Path("/nonexistent")
    body = await create(
        client,
        workflow(
            f"""
            jobs:
              a:
                steps:
                  - run: |
                      n=$(cat {db} {db}-wal 2>/dev/null | grep -a -c "${{PREFIX}}" || true)
                      echo "db-hits=$n"
                      ls -a {Path.cwd()} | grep -c . || true
                      (cat {Path.cwd()}/.env 2>/dev/null || true) | wc -c
                    env:
                      PREFIX: {canary[:20]}
            """
        ),
    )
    done = await wait_for_build(client, body["id"])
    text = await log_text(client, body["id"])
    assert done["status"] == "success", text
    assert "db-hits=0" in text
    assert canary not in text
    # The service's working directory (source tree, .env) shows up empty.
    assert "pyproject.toml" not in text


@needs_namespaces
async def test_other_builds_workspaces_are_invisible(client: httpx.AsyncClient) -> None:
    first = await create(
        client, "jobs:\n  a:\n    steps:\n      - run: echo private-data > mine.txt\n"
    )
    assert (await wait_for_build(client, first["id"]))["status"] == "success"
    body = await create(
        client,
        workflow(
            f"""
            jobs:
              a:
                steps:
                  - run: |
                      ls "$CI_WORKSPACE/../.." || true
                      cat "$CI_WORKSPACE/../../{first["id"]}"/*/mine.txt || echo not-readable
                      touch /etc/owned 2>/dev/null && echo wrote-etc || echo etc-read-only
                      echo ok > "$CI_WORKSPACE/mine.txt"
                      echo tmp-ok > "$TMPDIR/x" && cat "$TMPDIR/x"
            """
        ),
    )
    done = await wait_for_build(client, body["id"])
    text = await log_text(client, body["id"])
    assert done["status"] == "success", text
    assert "private-data" not in text
    assert "not-readable" in text
    assert "etc-read-only" in text
    assert "tmp-ok" in text


async def test_daemon_does_not_keep_the_step_running_nor_survive_it(
    client: httpx.AsyncClient,
) -> None:
    marker = _marker()
    body = await create(
        client,
        workflow(
            f"""
            jobs:
              a:
                steps:
                  - run: setsid sleep {marker} & sleep 1; echo started
                  - run: echo second
            """
        ),
    )
    done = await wait_for_build(client, body["id"], timeout=30)
    assert done["status"] == "success"
    assert step_statuses(done, "a") == [("success", 0), ("success", 0)]

    async def gone() -> bool:
        return not pids_with(f"sleep {marker}")

    await wait_until(gone, timeout=10)


@pytest.mark.parametrize(
    "settings_overrides",
    [
        {"api_tokens": f"ci:{WRITE_TOKEN}:write", "local_isolation": "none"},
        pytest.param(
            {"api_tokens": f"ci:{WRITE_TOKEN}:write", "local_isolation": "namespaces"},
            marks=needs_namespaces,
        ),
        pytest.param(
            {
                "api_tokens": f"ci:{WRITE_TOKEN}:write",
                "local_isolation": "namespaces",
                "local_sandbox": "step",
            },
            marks=needs_namespaces,
        ),
    ],
    ids=["none", "namespaces", "sandbox-per-step"],
)
async def test_cancel_and_timeout_kill_setsid_daemons(client: httpx.AsyncClient) -> None:
    cancelled, timed = _marker(), _marker()
    body = await create(
        client,
        workflow(
            f"""
            jobs:
              a:
                steps:
                  - run: setsid sleep {cancelled} & echo up; sleep 300
            """
        ),
    )
    await wait_for_output(client, body["id"], "up")
    assert pids_with(f"sleep {cancelled}")
    assert (await client.post(f"/builds/{body['id']}/cancel")).status_code == 202
    done = await wait_for_build(client, body["id"], timeout=30)
    assert done["status"] == "cancelled"
    timeout_body = await create(
        client,
        workflow(
            f"""
            jobs:
              a:
                timeout-minutes: 0.05
                steps:
                  - run: setsid sleep {timed} & sleep 300
            """
        ),
    )
    timed_out = await wait_for_build(client, timeout_body["id"], timeout=60)
    assert timed_out["status"] == "timed_out"

    async def gone() -> bool:
        return not pids_with(f"sleep {cancelled}") and not pids_with(f"sleep {timed}")

    await wait_until(gone, timeout=10)


@needs_namespaces
@pytest.mark.parametrize(
    "settings_overrides",
    [{"api_tokens": f"ci:{WRITE_TOKEN}:write", "local_isolation": "namespaces"}],
)
async def test_a_background_process_is_dead_before_the_next_step_starts(
    client: httpx.AsyncClient,
) -> None:
    # Under namespaces the job's steps share one sandbox: its launcher kills the rest of the
    # namespace before it reports a step's end, so the next step looks for the daemon in vain.
    marker = _marker()
    body = await create(
        client,
        workflow(
            f"""
            jobs:
              a:
                steps:
                  - run: setsid sleep {marker} & sleep {marker}1 & echo started
                  - run: |
                      n=$(for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < "$f"; echo; done \\
                          | grep -c '[s]leep {marker}' || true)
                      echo "left=$n"
            """
        ),
    )
    done = await wait_for_build(client, body["id"], timeout=30)
    text = await log_text(client, body["id"])
    assert done["status"] == "success", text
    assert "left=0" in text


@needs_namespaces
async def test_a_killed_job_sandbox_fails_the_step_as_an_infrastructure_error(
    client: httpx.AsyncClient,
) -> None:
    marker = _marker()
    body = await create(
        client,
        workflow(
            f"""
            jobs:
              a:
                steps:
                  - run: echo first
                  - run: echo up; sleep {marker}
                  - run: echo never
            """
        ),
    )
    await wait_for_output(client, body["id"], "up")
    (sleeper,) = await wait_until(lambda: pids_with(f"sleep {marker}"))
    # sleep's parent is the step's bash, whose parent is the job sandbox's launcher (PID 1).
    launcher = _parent(_parent(sleeper))
    assert "-I -S -" in Path(f"/proc/{launcher}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    os.kill(launcher, signal.SIGKILL)
    done = await wait_for_build(client, body["id"], timeout=30)
    text = await log_text(client, body["id"])
    assert done["status"] == "error", text
    assert step_statuses(done, "a") == [("success", 0), ("error", None), ("skipped", None)]
    assert "job sandbox" in (job(done, "a").get("error") or text)
    assert "never" not in text


def _parent(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("\nPPid:\t", 1)[1].split()[0])


@pytest.mark.parametrize(
    "settings_overrides",
    [{"api_tokens": f"ci:{WRITE_TOKEN}:write", "local_isolation": "none"}],
)
async def test_service_tokens_are_masked_even_without_isolation(
    client: httpx.AsyncClient,
) -> None:
    body = await create(
        client,
        f"jobs:\n  a:\n    steps:\n      - run: echo 'token is {WRITE_TOKEN}'\n",
    )
    await wait_for_build(client, body["id"])
    text = await log_text(client, body["id"])
    assert "token is ***" in text
    assert WRITE_TOKEN not in text


async def test_working_directory_cannot_leave_the_workspace(client: httpx.AsyncClient) -> None:
    body = await create(
        client,
        workflow(
            """
            jobs:
              a:
                steps:
                  - run: pwd
                    working-directory: ../..
                  - run: ln -s / escape
                  - run: echo escaped
                    working-directory: escape/etc
            """
        ),
    )
    done = await wait_for_build(client, body["id"])
    text = await log_text(client, body["id"])
    assert job(done, "a")["status"] == "failed"
    assert "outside the workspace" in text
    assert "escaped" not in text


def test_isolation_probe_refuses_namespaces_without_a_sandbox(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap to be found
    with pytest.raises(IsolationUnavailable, match="bwrap"):
        probe_isolation("namespaces")
    chosen = probe_isolation("auto")
    assert chosen.mode == "none"
    assert "not installed" in chosen.reason
    assert probe_isolation("none").mode == "none"


@needs_namespaces
def test_isolation_probe_picks_namespaces_here() -> None:
    chosen = probe_isolation("auto")
    assert chosen.mode == "namespaces", chosen.reason
    assert os.geteuid() == 0 or chosen.mode == "namespaces"


@pytest.mark.parametrize(
    "isolation",
    ["none", pytest.param("namespaces", marks=needs_namespaces)],
)
async def test_nothing_outlives_a_kill_9_of_the_service(
    serve_factory: Callable[..., ServeProcess],
    database_url: str,
    tmp_path: Path,
    isolation: str,
) -> None:
    env = {
        "DATABASE_URL": database_url,
        "WORKSPACE_ROOT": str(tmp_path / "ws"),
        "LOCAL_ISOLATION": isolation,
        "LEASE_SECONDS": "2",
    }
    daemon, idle = _marker(), _marker()
    server = serve_factory(env, name="first")
    async with httpx.AsyncClient(base_url=f"{server.url}/api/v1") as http:
        body = await create(
            http,
            workflow(
                f"""
                jobs:
                  a:
                    steps:
                      - run: setsid sleep {daemon} & sleep {idle}
                """
            ),
        )

        async def both_running() -> bool:
            return bool(pids_with(f"sleep {daemon}")) and bool(pids_with(f"sleep {idle}"))

        await wait_until(both_running)
        server.stop(signal.SIGKILL)
        # The replica that takes the build over (here: the restarted service) kills what is left.
        restarted = serve_factory(env, name="second")
        async with httpx.AsyncClient(base_url=f"{restarted.url}/api/v1") as again:
            done = await wait_for_build(again, body["id"], timeout=60)
        assert done["status"] == "error"

    async def gone() -> bool:
        return not pids_with(f"sleep {daemon}") and not pids_with(f"sleep {idle}")

    await wait_until(gone, timeout=20)


@needs_namespaces
@pytest.mark.skipif(os.geteuid() != 0, reason="switching to an unprivileged user needs root")
def test_the_sandbox_also_works_for_an_unprivileged_service_user() -> None:
    # The same bwrap invocation as the runner's probe, as `nobody`: a service that does not run
    # as root gets the same isolation (unprivileged user namespaces).
    bwrap = shutil.which("bwrap")
    assert bwrap is not None
    done = subprocess.run(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            *bwrap_base(bwrap),
            "--",
            "/bin/sh",
            "-c",
            "echo pid=$$ uid=$(id -u)",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "pid=2 uid=65534" in done.stdout or "pid=1 uid=65534" in done.stdout
