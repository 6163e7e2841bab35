"""The emulator's node is as strict as a real one about users, volumes and service containers:
processes run as the pod's user, emptyDirs are root's (group fsGroup), HOME of an unknown uid is
`/`, runAsNonRoot is checked like the kubelet does, /etc/hosts comes from hostAliases, and
service containers run in the pod's own network namespace behind readiness probes.

The tests of the bug class (a non-root process cannot write where root owns, git refuses the
workspace) show what a runner must handle; they need strict uid mode (the emulator is root)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client

from tests.k8s_emulator.fixture import EmulatorProcess
from tests.k8s_emulator_selftest.helpers import eventually, pod_processes, wait_event
from tests.k8s_emulator_selftest.test_strict import exec_frames, running

Obj = dict[str, Any]


@pytest.fixture(autouse=True)
def strict(emulator: EmulatorProcess) -> EmulatorProcess:
    info = emulator.control("info")
    if not info["strictUsers"]:
        pytest.skip(info["strictUsersUnavailable"])
    return emulator


def pod(name: str, script: str, *, security: Obj | None = None, **spec: Any) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "securityContext": security or {},
            "containers": [
                {
                    "name": "main",
                    "image": "busybox:1.36",
                    "command": ["sh", "-c", script],
                    "volumeMounts": [{"name": "ws", "mountPath": "/workspace"}],
                    "workingDir": "/workspace",
                }
            ],
            "volumes": [{"name": "ws", "emptyDir": {}}],
            **spec,
        },
    }


async def finished_log(core: client.CoreV1Api, ns: str, name: str) -> tuple[str, str]:
    event = await wait_event(
        core.list_namespaced_pod,
        ns,
        lambda e: (
            e["object"].metadata.name == name
            and e["object"].status.phase in ("Succeeded", "Failed")
        ),
    )
    return event["object"].status.phase, await core.read_namespaced_pod_log(name, ns)


async def test_processes_and_execs_run_as_the_pods_user(
    api: client.ApiClient, core: client.CoreV1Api, ns: str
) -> None:
    security = {"runAsUser": 1001, "runAsGroup": 1002, "fsGroup": 2000, "supplementalGroups": [3]}
    await core.create_namespaced_pod(
        ns, pod("who", 'id -u; id -g; id -G; stat -c "%u %g %a" .; sleep 300', security=security)
    )
    await running(core, ns, "who")
    frames = await exec_frames(api, ns, "who", ["sh", "-c", "id -u; id -G; touch mine; ls -n"])
    out = b"".join(d for c, d in frames if c == 1).decode()
    uid, groups = out.splitlines()[:2]
    assert (uid, sorted(groups.split())) == ("1001", ["1002", "2000", "3"])
    # The setgid emptyDir hands its group to what the user creates in it.
    assert " 1001 2000 " in out.splitlines()[-1]
    log = await core.read_namespaced_pod_log("who", ns)
    uid, gid, groups, workspace = log.splitlines()[:4]
    assert (uid, gid, sorted(groups.split())) == ("1001", "1002", ["1002", "2000", "3"])
    assert workspace == "0 2000 2777"


async def test_without_fs_group_the_empty_dir_is_roots_0777(
    core: client.CoreV1Api, ns: str
) -> None:
    await core.create_namespaced_pod(
        ns, pod("plain", 'stat -c "%u %g %a" .; id -G', security={"runAsUser": 1001})
    )
    phase, log = await finished_log(core, ns, "plain")
    # No runAsGroup: containerd's gid for a uid the image does not know is 0.
    assert (phase, log.splitlines()) == ("Succeeded", ["0 0 777", "0"])


async def test_a_non_root_user_meets_root_owned_home_and_workspace(
    core: client.CoreV1Api, ns: str
) -> None:
    # What a runner must handle on a real node (each line fails there, and now here too):
    # HOME of a uid the image does not know is `/`, root's; the workspace belongs to root, so
    # git calls a repository at its top "dubious".
    script = (
        'echo "home=$HOME"; touch "$HOME/.probe" 2>/dev/null || echo home-not-writable; '
        "git config --global user.name ci 2>/dev/null || echo git-config-failed; "
        "git init -q . && git status 2>&1 | grep -o 'dubious ownership'; "
        "mkdir own && cd own && git init -q . && git status >/dev/null && echo subdir-ok"
    )
    security = {"runAsUser": 1001, "runAsGroup": 1001, "fsGroup": 1001, "runAsNonRoot": True}
    await core.create_namespaced_pod(ns, pod("git", script, security=security))
    phase, log = await finished_log(core, ns, "git")
    lines = log.splitlines()
    assert phase == "Succeeded", log
    assert lines[0].startswith("home=") and not lines[0].endswith("/root")
    assert lines[1:] == [
        "home-not-writable",
        "git-config-failed",
        "dubious ownership",
        "subdir-ok",
    ]


async def test_root_containers_get_roots_home(core: client.CoreV1Api, ns: str) -> None:
    await core.create_namespaced_pod(ns, pod("root", 'id -u; touch "$HOME/x" && echo home-ok'))
    phase, log = await finished_log(core, ns, "root")
    assert (phase, log.splitlines()) == ("Succeeded", ["0", "home-ok"])


@pytest.mark.parametrize(
    ("image_user", "security", "message"),
    [
        (None, {"runAsNonRoot": True, "runAsUser": 0}, "container's runAsUser breaks non-root"),
        ("app", {"runAsNonRoot": True}, "image has non-numeric user (app), cannot verify"),
        (None, {"runAsNonRoot": True}, "container has runAsNonRoot and image will run as root"),
    ],
)
async def test_run_as_non_root_is_checked_like_the_kubelet(
    strict: EmulatorProcess,
    core: client.CoreV1Api,
    ns: str,
    image_user: str | None,
    security: Obj,
    message: str,
) -> None:
    if image_user is not None:
        strict.control("image-users", {"images": {"busybox:1.36": image_user}})
    await core.create_namespaced_pod(ns, pod("refused", "true", security=security))
    event = await wait_event(
        core.list_namespaced_event,
        ns,
        lambda e: e["object"].reason == "Failed",
        field_selector="involvedObject.name=refused",
    )
    assert message in event["object"].message
    status = (await core.read_namespaced_pod("refused", ns)).status
    assert status.container_statuses[0].state.waiting.reason == "CreateContainerConfigError"


async def test_an_image_with_a_non_root_user_runs_as_it(
    strict: EmulatorProcess, core: client.CoreV1Api, ns: str
) -> None:
    strict.control("image-users", {"images": {"gcr.io/distroless/static:nonroot": 65532}})
    body = pod("nonroot", "id -u", security={"runAsNonRoot": True})
    body["spec"]["containers"][0]["image"] = "gcr.io/distroless/static:nonroot"
    await core.create_namespaced_pod(ns, body)
    phase, log = await finished_log(core, ns, "nonroot")
    assert (phase, log.strip()) == ("Succeeded", "65532")


async def test_etc_hosts_from_host_aliases_and_the_pod_hostname(
    core: client.CoreV1Api, ns: str
) -> None:
    aliases = [{"ip": "127.0.0.1", "hostnames": ["db", "cache"]}]
    await core.create_namespaced_pod(
        ns, pod("named", "hostname; getent hosts cache", hostAliases=aliases)
    )
    phase, log = await finished_log(core, ns, "named")
    hostname, cache = log.splitlines()
    assert (phase, hostname) == ("Succeeded", "named")
    assert cache.split() == ["127.0.0.1", "db", "cache"]


async def test_service_containers_run_behind_readiness_in_the_pods_own_network(
    strict: EmulatorProcess, core: client.CoreV1Api, ns: str
) -> None:
    strict.control("image-commands", {"images": {"slow": ["{standin}", "--delay", "1", "{ports}"]}})
    ask = (
        "import socket\n"
        "s = socket.create_connection(('db', 7100), timeout=2)\n"
        "s.sendall(b'hi\\n')\n"
        "print(s.makefile().readline().strip())\n"
    )
    body = pod(
        "svc",
        # Waits for the gate file, asks the service, then ends: the service runs on.
        f'while [ ! -e go ]; do sleep 0.05; done; python3 -c "{ask}"',
        security={"runAsUser": 1001, "runAsGroup": 1001, "fsGroup": 1001},
        hostAliases=[{"ip": "127.0.0.1", "hostnames": ["db"]}],
    )
    body["spec"]["containers"].append(
        {
            "name": "db",
            "image": "slow:1",
            "ports": [{"containerPort": 7100}],
            "readinessProbe": {"tcpSocket": {"port": 7100}, "periodSeconds": 1},
        }
    )
    await core.create_namespaced_pod(ns, body)
    await running(core, ns, "svc")
    first = await core.read_namespaced_pod("svc", ns)
    assert [c.ready for c in first.status.container_statuses] == [True, False]
    ready = await wait_event(
        core.list_namespaced_pod,
        ns,
        lambda e: any(
            c.type == "Ready" and c.status == "True" for c in e["object"].status.conditions or []
        ),
    )
    assert ready["object"].metadata.name == "svc"
    # The service listens in the pod's network: a pod on the node's network cannot reach it.
    await core.create_namespaced_pod(
        ns,
        pod(
            "outsider",
            "python3 -c \"import socket; socket.create_connection(('127.0.0.1', 7100), 1)\" "
            "2>/dev/null && echo reached || echo refused",
        ),
    )
    assert (await finished_log(core, ns, "outsider"))[1] == "refused\n"
    processes = strict.control("processes")
    (command,) = {
        json.dumps(p["command"]) for p in processes if p["pod"] == "svc" and p["container"] == "db"
    }
    assert "standin.py" in command
    await gate(strict, ns)
    main_done = await wait_event(
        core.list_namespaced_pod,
        ns,
        lambda e: (
            e["object"].metadata.name == "svc"
            and e["object"].status.container_statuses[0].state.terminated is not None
        ),
    )
    statuses = main_done["object"].status.container_statuses
    assert statuses[0].state.terminated.exit_code == 0
    # Like a node: the pod runs on while its service container does.
    assert main_done["object"].status.phase == "Running"
    assert statuses[1].state.running is not None
    assert await core.read_namespaced_pod_log("svc", ns, container="main") == "7100 hi\n"
    await core.delete_namespaced_pod("svc", ns)
    await eventually(lambda: not pod_processes(strict.control("processes"), "svc"))


async def gate(emulator: EmulatorProcess, ns: str) -> None:
    """Open the gate file in the svc pod's workspace (the emulator's volume dir)."""
    root = Path(emulator.control("info")["nodeRoot"]) / ns
    (workspace,) = root.glob("svc-*/volumes/ws")
    (workspace / "go").touch()
