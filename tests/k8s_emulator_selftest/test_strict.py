"""The emulator is as strict as a real cluster where CI runners go wrong: PID 1 signal semantics,
log rotation, exec's channel protocol, PodSecurity admission, Events, images without bash."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.stream import WsApiClient

from tests.k8s_emulator.fixture import EmulatorProcess
from tests.k8s_emulator_selftest.helpers import (
    alive,
    eventually,
    job_manifest,
    pod_processes,
    wait_event,
)

Obj = dict[str, Any]


def pod_manifest(name: str, script: str, *, grace: int = 1, image: str = "alpine:3.20") -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": grace,
            "containers": [{"name": "main", "image": image, "command": ["sh", "-c", script]}],
        },
    }


async def running(core: client.CoreV1Api, ns: str, name: str) -> None:
    await wait_event(
        core.list_namespaced_pod,
        ns,
        lambda e: e["object"].metadata.name == name and e["object"].status.phase == "Running",
    )


async def exec_frames(
    api: client.ApiClient, ns: str, pod: str, command: list[str], stdin: bytes = b""
) -> list[tuple[int, bytes]]:
    ws_api = WsApiClient(api.configuration)
    try:
        core = client.CoreV1Api(ws_api)
        connect = await core.connect_get_namespaced_pod_exec(
            pod, ns, command=command, stdin=True, stdout=True, stderr=True, _preload_content=False
        )
        frames = []
        async with connect as ws:
            if stdin:
                await ws.send_bytes(b"\x00" + stdin)
            async for message in ws:
                frames.append((message.data[0], bytes(message.data[1:])))
        return frames
    finally:
        await ws_api.close()


async def test_sigterm_reaches_pid_1_only_and_only_if_it_handles_it(
    emulator: EmulatorProcess, core: client.CoreV1Api, ns: str
) -> None:
    # PID 1 without a TERM handler: the signal is dropped, the pod dies at the grace period.
    await core.create_namespaced_pod(ns, pod_manifest("deaf", "sleep 300 & wait", grace=2))
    await running(core, ns, "deaf")
    pids = await eventually(
        lambda: len(p := pod_processes(emulator.control("processes"), "deaf")) >= 2 and p
    )
    loop = asyncio.get_running_loop()
    started = loop.time()
    await core.delete_namespaced_pod("deaf", ns)
    await asyncio.sleep(1)
    assert all(alive(pid) for pid in pids), "SIGTERM reached a process besides PID 1"
    await eventually(lambda: not any(alive(pid) for pid in pids))
    assert loop.time() - started >= 2

    # PID 1 with a handler: it alone gets TERM; its children survive until it exits.
    script = "trap 'echo got-term; exit 0' TERM; sleep 300 & while :; do wait; done"
    await core.create_namespaced_pod(ns, pod_manifest("handler", script, grace=30))
    await running(core, ns, "handler")
    await eventually(lambda: len(pod_processes(emulator.control("processes"), "handler")) >= 2)
    await core.delete_namespaced_pod("handler", ns)
    # Exiting PID 1 ends the container: the rest is killed long before the 30 s grace.
    await eventually(lambda: not pod_processes(emulator.control("processes"), "handler"), 10)


async def test_exec_channels_and_exit_status(
    api: client.ApiClient, core: client.CoreV1Api, ns: str
) -> None:
    await core.create_namespaced_pod(ns, pod_manifest("box", "sleep 300", image="busybox:1.36"))
    await running(core, ns, "box")
    frames = await exec_frames(
        api, ns, "box", ["sh", "-c", "head -c 3; echo; echo oops >&2; exit 7"], b"abc"
    )
    assert (1, b"abc") in frames or b"".join(d for c, d in frames if c == 1) == b"abc\n"
    assert b"".join(d for c, d in frames if c == 2) == b"oops\n"
    status = json.loads(next(d for c, d in frames if c == 3))
    assert status["status"] == "Failure"
    assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "7"}]
    ok = await exec_frames(api, ns, "box", ["true"])
    assert json.loads(next(d for c, d in ok if c == 3))["status"] == "Success"
    # busybox has no bash.
    missing = await exec_frames(api, ns, "box", ["bash", "-c", "true"])
    error = json.loads(next(d for c, d in missing if c == 3))
    assert "executable file not found" in error["message"]
    which = await exec_frames(api, ns, "box", ["sh", "-c", "command -v bash || echo none"])
    assert b"".join(d for c, d in which if c == 1) == b"none\n"


async def test_exec_is_refused_without_rbac(
    emulator: EmulatorProcess, api: client.ApiClient, core: client.CoreV1Api, ns: str
) -> None:
    await core.create_namespaced_pod(ns, pod_manifest("locked", "sleep 300"))
    await running(core, ns, "locked")
    emulator.control("forbid", {"resources": ["pods/exec"]})
    with pytest.raises(Exception, match="403"):
        await exec_frames(api, ns, "locked", ["true"])
    review = await client.AuthorizationV1Api(api).create_self_subject_rules_review(
        {"spec": {"namespace": ns}}
    )
    rules = {r.resources[0]: r.verbs for r in review.status.resource_rules}
    assert "pods/exec" not in rules
    assert "create" in rules["jobs"]


async def test_log_rotation_serves_only_the_current_file(
    emulator: EmulatorProcess, core: client.CoreV1Api, ns: str
) -> None:
    emulator.control("log-rotation", {"bytes": 1000})
    script = "i=0; while [ $i -lt 100 ]; do echo line-$i-xxxxxxxxxxxxxxxxxxxxxxxx; i=$((i+1)); done"
    await core.create_namespaced_pod(ns, pod_manifest("chatty", script))
    await wait_event(
        core.list_namespaced_pod,
        ns,
        lambda e: e["object"].metadata.name == "chatty" and e["object"].status.phase == "Succeeded",
    )
    text = await core.read_namespaced_pod_log("chatty", ns)
    assert len(text) <= 1000
    assert "line-99-" in text
    assert "line-0-" not in text


async def test_pod_security_restricted_refuses_and_the_job_controller_records_it(
    emulator: EmulatorProcess, batch: client.BatchV1Api, core: client.CoreV1Api, ns: str
) -> None:
    emulator.control(
        "namespace", {"name": ns, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}
    )
    with pytest.raises(client.ApiException) as refused:
        await core.create_namespaced_pod(ns, pod_manifest("loose", "true"))
    assert refused.value.status == 403
    message = json.loads(refused.value.body)["message"]
    assert 'violates PodSecurity "restricted:latest"' in message
    assert "seccompProfile" in message
    await batch.create_namespaced_job(ns, job_manifest("refused", "true"))
    event = await wait_event(
        core.list_namespaced_event,
        ns,
        lambda e: e["object"].reason == "FailedCreate",
        field_selector="involvedObject.name=refused",
    )
    assert "violates PodSecurity" in event["object"].message
    hardened = pod_manifest("tight", "echo ok")
    hardened["spec"]["securityContext"] = {
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    hardened["spec"]["containers"][0]["securityContext"] = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    await core.create_namespaced_pod(ns, hardened)


async def test_kubelet_events_and_oom(
    emulator: EmulatorProcess, core: client.CoreV1Api, ns: str
) -> None:
    emulator.control("missing-images", {"images": ["nope:1"]})
    await core.create_namespaced_pod(ns, pod_manifest("pull", "true", image="nope:1"))
    event = await wait_event(
        core.list_namespaced_event,
        ns,
        lambda e: e["object"].reason == "Failed",
        field_selector="involvedObject.name=pull",
    )
    assert 'Failed to pull image "nope:1"' in event["object"].message
    await core.create_namespaced_pod(ns, pod_manifest("hog", "sleep 300"))
    await running(core, ns, "hog")
    emulator.control("oom", {"pod": "hog", "namespace": ns})
    done = await wait_event(
        core.list_namespaced_pod,
        ns,
        lambda e: e["object"].metadata.name == "hog" and e["object"].status.phase == "Failed",
    )
    terminated = done["object"].status.container_statuses[0].state.terminated
    assert (terminated.reason, terminated.exit_code) == ("OOMKilled", 137)


async def test_termination_message_falls_back_to_the_log(core: client.CoreV1Api, ns: str) -> None:
    pod = pod_manifest("dies", "echo first; echo 'fatal: no such thing'; exit 3")
    pod["spec"]["containers"][0]["terminationMessagePolicy"] = "FallbackToLogsOnError"
    await core.create_namespaced_pod(ns, pod)
    done = await wait_event(
        core.list_namespaced_pod,
        ns,
        lambda e: e["object"].metadata.name == "dies" and e["object"].status.phase == "Failed",
    )
    terminated = done["object"].status.container_statuses[0].state.terminated
    assert terminated.message.endswith("fatal: no such thing\n")
