"""The emulator, driven through kubernetes_asyncio exactly as the Kubernetes runner drives it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import aiohttp
import httpx
import pytest
from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException

from tests.k8s_emulator.fixture import EmulatorProcess
from tests.k8s_emulator_selftest.helpers import (
    GATED_SCRIPT,
    alive,
    eventually,
    gate_env,
    is_terminal,
    job_condition,
    job_manifest,
    pod_processes,
    wait_event,
    waiting_reason,
)


def status_body(exc: ApiException) -> dict[str, object]:
    body: dict[str, object] = json.loads(exc.body)
    assert body["kind"] == "Status"
    return body


async def test_job_runs_to_failure_with_log_and_exit_code(
    batch: client.BatchV1Api, core: client.CoreV1Api, ns: str
) -> None:
    await batch.create_namespaced_job(ns, job_manifest("hello", "echo hi; exit 3"))

    event = await wait_event(
        core.list_namespaced_pod, ns, is_terminal, label_selector="job-name=hello"
    )
    pod = event["object"]
    assert re.fullmatch(r"hello-[bcdfghjklmnpqrstvwxz2456789]{5}", pod.metadata.name)
    assert pod.metadata.labels["batch.kubernetes.io/job-name"] == "hello"
    assert pod.metadata.owner_references[0].kind == "Job"
    assert pod.metadata.owner_references[0].name == "hello"
    assert pod.status.phase == "Failed"
    terminated = pod.status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason) == (3, "Error")
    assert terminated.started_at is not None
    assert terminated.finished_at is not None

    log = await core.read_namespaced_pod_log(pod.metadata.name, ns, container="main")
    assert log == "hi\n"

    job_event = await wait_event(
        batch.list_namespaced_job,
        ns,
        lambda e: job_condition(e["object"], "Failed") is not None,
        field_selector="metadata.name=hello",
    )
    job = job_event["object"]
    assert job.status.failed == 1
    assert job.status.active is None
    assert job_condition(job, "Failed").reason == "BackoffLimitExceeded"
    assert job_condition(job, "FailureTarget") is not None
    # backoffLimit 0: no second pod.
    pods = await core.list_namespaced_pod(ns, label_selector="job-name=hello")
    assert len(pods.items) == 1


async def test_successful_job_completes(
    batch: client.BatchV1Api, core: client.CoreV1Api, ns: str
) -> None:
    await batch.create_namespaced_job(ns, job_manifest("ok", "echo out; echo err >&2"))
    event = await wait_event(
        batch.list_namespaced_job, ns, lambda e: job_condition(e["object"], "Complete") is not None
    )
    job = event["object"]
    assert job.status.succeeded == 1
    assert job.status.completion_time is not None
    assert job.status.start_time is not None
    pods = await core.list_namespaced_pod(ns, label_selector="batch.kubernetes.io/job-name=ok")
    (pod,) = pods.items
    assert pod.status.phase == "Succeeded"
    assert pod.status.container_statuses[0].state.terminated.reason == "Completed"
    assert await core.read_namespaced_pod_log(pod.metadata.name, ns) == "out\nerr\n"


async def test_follow_log_streams_output_while_the_container_runs(
    batch: client.BatchV1Api, core: client.CoreV1Api, ns: str, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    await batch.create_namespaced_job(ns, job_manifest("follow", GATED_SCRIPT, env=gate_env(gate)))
    event = await wait_event(
        core.list_namespaced_pod,
        ns,
        lambda e: e["object"].status.phase == "Running",
        label_selector="job-name=follow",
    )
    name = event["object"].metadata.name

    response = await core.read_namespaced_pod_log(name, ns, follow=True, _preload_content=False)
    try:
        assert await response.content.readline() == b"first\n"
        gate.touch()
        assert await response.content.read() == b"second\n"
    finally:
        response.release()

    stamped = await core.read_namespaced_pod_log(name, ns, timestamps=True)
    lines = stamped.splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == ["first", "second"]
    assert all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z ", line) for line in lines)


async def test_broken_log_stream_can_be_reopened_from_the_start(
    emulator: EmulatorProcess,
    batch: client.BatchV1Api,
    core: client.CoreV1Api,
    ns: str,
    tmp_path: Path,
) -> None:
    gate = tmp_path / "gate"
    await batch.create_namespaced_job(ns, job_manifest("broken", GATED_SCRIPT, env=gate_env(gate)))
    event = await wait_event(
        core.list_namespaced_pod,
        ns,
        lambda e: e["object"].status.phase == "Running",
        label_selector="job-name=broken",
    )
    name = event["object"].metadata.name
    response = await core.read_namespaced_pod_log(name, ns, follow=True, _preload_content=False)
    try:
        assert await response.content.readline() == b"first\n"
        assert emulator.control("break-log-streams", {}) == {"broken": 1}
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.content.read()
    finally:
        response.release()

    again = await core.read_namespaced_pod_log(name, ns, follow=True, _preload_content=False)
    try:
        assert await again.content.readline() == b"first\n"
        gate.touch()
        assert await again.content.read() == b"second\n"
    finally:
        again.release()


async def test_log_of_a_pending_pod_is_a_400(
    emulator: EmulatorProcess, batch: client.BatchV1Api, core: client.CoreV1Api, ns: str
) -> None:
    emulator.control("unschedulable", {"value": True})
    await batch.create_namespaced_job(ns, job_manifest("pending", "true"))
    event = await wait_event(core.list_namespaced_pod, ns, lambda _: True)
    with pytest.raises(ApiException) as caught:
        await core.read_namespaced_pod_log(event["object"].metadata.name, ns)
    assert caught.value.status == 400
    assert "is waiting to start: ContainerCreating" in str(status_body(caught.value)["message"])


async def test_delete_collection_with_propagation_kills_the_process_group(
    emulator: EmulatorProcess, batch: client.BatchV1Api, core: client.CoreV1Api, ns: str
) -> None:
    labels = {"build": "7"}
    await batch.create_namespaced_job(
        ns, job_manifest("sleeper", "sleep 300 & echo started; wait", labels=labels)
    )
    await batch.create_namespaced_job(ns, job_manifest("other", "sleep 300", labels={"build": "8"}))
    event = await wait_event(
        core.list_namespaced_pod,
        ns,
        lambda e: e["object"].status.phase == "Running",
        label_selector="job-name=sleeper",
    )
    pod_name = event["object"].metadata.name
    # The shell and its background sleep: one process group of two.
    pids = await eventually(
        lambda: len(pids := pod_processes(emulator.control("processes"), pod_name)) >= 2 and pids
    )

    await batch.delete_collection_namespaced_job(
        ns, label_selector="build in (7)", propagation_policy="Background"
    )

    await wait_event(
        core.list_namespaced_pod,
        ns,
        lambda e: e["type"] == "DELETED" and e["object"].metadata.name == pod_name,
        resource_version="1",
    )
    assert not pod_processes(emulator.control("processes"), pod_name)
    await eventually(lambda: not any(alive(pid) for pid in pids))
    jobs = await batch.list_namespaced_job(ns)
    assert [j.metadata.name for j in jobs.items] == ["other"]


async def test_delete_without_propagation_orphans_the_pod(
    emulator: EmulatorProcess, batch: client.BatchV1Api, core: client.CoreV1Api, ns: str
) -> None:
    await batch.create_namespaced_job(ns, job_manifest("orphan", "sleep 300"))
    event = await wait_event(
        core.list_namespaced_pod, ns, lambda e: e["object"].status.phase == "Running"
    )
    pod_name = event["object"].metadata.name

    await batch.delete_namespaced_job("orphan", ns)

    pod = await eventually(lambda: _orphaned(core, ns, pod_name))
    assert pod.status.phase == "Running"
    assert pod_processes(emulator.control("processes"), pod_name)


async def _orphaned(core: client.CoreV1Api, ns: str, name: str) -> client.V1Pod | None:
    pod = await core.read_namespaced_pod(name, ns)
    return pod if not pod.metadata.owner_references else None


async def test_foreground_delete_keeps_the_job_until_its_pod_is_gone(
    batch: client.BatchV1Api, core: client.CoreV1Api, ns: str
) -> None:
    created = await batch.create_namespaced_job(ns, job_manifest("fg", "sleep 300"))
    await wait_event(core.list_namespaced_pod, ns, lambda e: e["object"].status.phase == "Running")
    events: list[tuple[str, bool]] = []

    await batch.delete_namespaced_job("fg", ns, propagation_policy="Foreground")

    async with watch.Watch() as stream:
        async for event in stream.stream(
            batch.list_namespaced_job,
            ns,
            resource_version=created.metadata.resource_version,
            timeout_seconds=20,
        ):
            events.append((event["type"], event["object"].metadata.deletion_timestamp is not None))
            if event["type"] == "DELETED":
                break
    assert ("MODIFIED", True) in events
    assert events[-1][0] == "DELETED"
    pods = await core.list_namespaced_pod(ns)
    assert pods.items == []


async def test_missing_image_reports_pull_errors_and_never_runs(
    emulator: EmulatorProcess, batch: client.BatchV1Api, core: client.CoreV1Api, ns: str
) -> None:
    emulator.control("missing-images", {"images": ["registry.invalid/nope:1"]})
    job = await batch.create_namespaced_job(
        ns, job_manifest("nopull", "echo never", image="registry.invalid/nope:1")
    )
    reasons: list[str | None] = []

    def record(event: dict[str, object]) -> bool:
        reasons.append(waiting_reason(event["object"]))
        return reasons[-1] == "ImagePullBackOff"

    # Replay from the Job's creation so the short-lived ErrImagePull state is not missed.
    event = await wait_event(
        core.list_namespaced_pod, ns, record, resource_version=job.metadata.resource_version
    )
    pod = event["object"]
    assert "ErrImagePull" in reasons
    assert reasons.index("ErrImagePull") < reasons.index("ImagePullBackOff")
    assert pod.status.phase == "Pending"
    assert 'Back-off pulling image "registry.invalid/nope:1"' in (
        pod.status.container_statuses[0].state.waiting.message
    )
    assert not pod_processes(emulator.control("processes"), pod.metadata.name)


async def test_config_error_control(
    emulator: EmulatorProcess, batch: client.BatchV1Api, core: client.CoreV1Api, ns: str
) -> None:
    emulator.control("create-config-error", {"images": ["bad-config:1"]})
    await batch.create_namespaced_job(ns, job_manifest("cfg", "true", image="bad-config:1"))
    event = await wait_event(
        core.list_namespaced_pod,
        ns,
        lambda e: waiting_reason(e["object"]) == "CreateContainerConfigError",
    )
    assert event["object"].status.phase == "Pending"


async def test_unschedulable_pod_stays_pending_until_schedulable(
    emulator: EmulatorProcess, batch: client.BatchV1Api, core: client.CoreV1Api, ns: str
) -> None:
    emulator.control("unschedulable", {"value": True})
    await batch.create_namespaced_job(ns, job_manifest("unsched", "echo ran"))

    def unschedulable(event: dict[str, object]) -> bool:
        conditions = event["object"].status.conditions or []
        return any(
            c.type == "PodScheduled" and c.status == "False" and c.reason == "Unschedulable"
            for c in conditions
        )

    event = await wait_event(core.list_namespaced_pod, ns, unschedulable)
    assert event["object"].status.phase == "Pending"
    assert event["object"].status.container_statuses is None

    emulator.control("unschedulable", {"value": False})
    event = await wait_event(core.list_namespaced_pod, ns, is_terminal)
    assert event["object"].status.phase == "Succeeded"


async def test_active_deadline_kills_the_pod(
    emulator: EmulatorProcess, batch: client.BatchV1Api, core: client.CoreV1Api, ns: str
) -> None:
    await batch.create_namespaced_job(ns, job_manifest("slow", "sleep 300", deadline=1))
    event = await wait_event(
        batch.list_namespaced_job, ns, lambda e: job_condition(e["object"], "Failed") is not None
    )
    assert job_condition(event["object"], "Failed").reason == "DeadlineExceeded"
    (pod,) = (await core.list_namespaced_pod(ns, label_selector="job-name=slow")).items
    assert (pod.status.phase, pod.status.reason) == ("Failed", "DeadlineExceeded")
    assert pod.status.container_statuses[0].state.terminated is not None
    assert not pod_processes(emulator.control("processes"), pod.metadata.name)


async def test_eviction_fails_the_pod_and_the_job(
    emulator: EmulatorProcess, batch: client.BatchV1Api, core: client.CoreV1Api, ns: str
) -> None:
    await batch.create_namespaced_job(ns, job_manifest("evictee", "sleep 300"))
    event = await wait_event(
        core.list_namespaced_pod, ns, lambda e: e["object"].status.phase == "Running"
    )
    emulator.control("evict", {"pod": event["object"].metadata.name})
    event = await wait_event(core.list_namespaced_pod, ns, is_terminal)
    assert (event["object"].status.phase, event["object"].status.reason) == ("Failed", "Evicted")
    job_event = await wait_event(
        batch.list_namespaced_job, ns, lambda e: job_condition(e["object"], "Failed") is not None
    )
    assert job_condition(job_event["object"], "Failed").reason == "BackoffLimitExceeded"


async def test_backoff_limit_retries_with_new_pods(
    batch: client.BatchV1Api, core: client.CoreV1Api, ns: str
) -> None:
    await batch.create_namespaced_job(ns, job_manifest("retry", "exit 1", backoff_limit=1))
    event = await wait_event(
        batch.list_namespaced_job, ns, lambda e: job_condition(e["object"], "Failed") is not None
    )
    assert event["object"].status.failed == 2
    pods = await core.list_namespaced_pod(ns)
    assert len({p.metadata.name for p in pods.items}) == 2


async def test_missing_executable_is_a_start_error(
    batch: client.BatchV1Api, core: client.CoreV1Api, ns: str
) -> None:
    await batch.create_namespaced_job(
        ns, job_manifest("noexec", "", command=["/definitely/not/here", "x"])
    )
    event = await wait_event(core.list_namespaced_pod, ns, is_terminal)
    terminated = event["object"].status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason) == (128, "StartError")
    assert "/definitely/not/here" in terminated.message
    assert await core.read_namespaced_pod_log(event["object"].metadata.name, ns) == ""


async def test_create_existing_name_is_409(core: client.CoreV1Api, ns: str) -> None:
    secret = {"metadata": {"name": "dup"}, "stringData": {"a": "b"}}
    await core.create_namespaced_secret(ns, secret)
    with pytest.raises(ApiException) as caught:
        await core.create_namespaced_secret(ns, secret)
    assert caught.value.status == 409
    body = status_body(caught.value)
    assert body["reason"] == "AlreadyExists"
    assert body["message"] == 'secrets "dup" already exists'


async def test_missing_object_is_404(batch: client.BatchV1Api, ns: str) -> None:
    with pytest.raises(ApiException) as caught:
        await batch.read_namespaced_job("nope", ns)
    assert caught.value.status == 404
    assert status_body(caught.value)["message"] == 'jobs.batch "nope" not found'


async def test_invalid_job_is_422(batch: client.BatchV1Api, ns: str) -> None:
    with pytest.raises(ApiException) as caught:
        await batch.create_namespaced_job(ns, job_manifest("x" * 64, "true"))
    assert caught.value.status == 422
    body = status_body(caught.value)
    assert body["reason"] == "Invalid"
    assert "must be no more than 63 characters" in str(body["message"])

    # JSON 60.0 does not decode into an int64 field: 400, before validation.
    manifest = job_manifest("float", "true")
    manifest["spec"]["activeDeadlineSeconds"] = 60.0
    with pytest.raises(ApiException) as caught:
        await batch.create_namespaced_job(ns, manifest)
    assert caught.value.status == 400
    assert "cannot unmarshal number 60.0" in str(status_body(caught.value)["message"])

    manifest = job_manifest("always", "true")
    manifest["spec"]["template"]["spec"]["restartPolicy"] = "Always"
    with pytest.raises(ApiException) as caught:
        await batch.create_namespaced_job(ns, manifest)
    assert caught.value.status == 422


async def test_forbidden_answers_403_and_calls_are_recorded(
    emulator: EmulatorProcess, batch: client.BatchV1Api, core: client.CoreV1Api, ns: str
) -> None:
    emulator.control("calls", {})
    emulator.control("forbid", {"value": True})
    with pytest.raises(ApiException) as caught:
        await batch.list_namespaced_job(ns)
    assert caught.value.status == 403
    body = status_body(caught.value)
    assert body["reason"] == "Forbidden"
    assert 'cannot list resource "jobs" in API group "batch"' in str(body["message"])

    # Only reading pod logs forbidden: everything else works.
    emulator.control("forbid", {"value": True, "resources": ["pods/log"], "verbs": ["get"]})
    await batch.create_namespaced_job(ns, job_manifest("rbac", "echo x"))
    event = await wait_event(core.list_namespaced_pod, ns, is_terminal)
    with pytest.raises(ApiException) as caught:
        await core.read_namespaced_pod_log(event["object"].metadata.name, ns)
    assert caught.value.status == 403

    calls = emulator.control("calls")
    seen = {(c["group"], c["resource"], c["verb"]) for c in calls}
    assert ("batch", "jobs", "list") in seen
    assert ("batch", "jobs", "create") in seen
    assert ("", "pods", "watch") in seen
    assert ("", "pods/log", "get") in seen
    assert all({"verb", "path", "method"} <= set(c) for c in calls)


async def test_watch_resumes_from_resource_version_and_too_old_is_410(
    emulator: EmulatorProcess, core: client.CoreV1Api, ns: str
) -> None:
    first = await core.create_namespaced_secret(ns, {"metadata": {"name": "a"}})
    await core.create_namespaced_secret(ns, {"metadata": {"name": "b"}})
    await core.create_namespaced_secret(ns, {"metadata": {"name": "c"}})

    seen: list[tuple[str, str]] = []
    async with watch.Watch() as stream:
        async for event in stream.stream(
            core.list_namespaced_secret,
            ns,
            resource_version=first.metadata.resource_version,
            timeout_seconds=10,
        ):
            seen.append((event["type"], event["object"].metadata.name))
            if len(seen) == 2:
                break
    assert seen == [("ADDED", "b"), ("ADDED", "c")]

    emulator.control("compact", {})
    with pytest.raises(ApiException) as caught:
        await _drain_watch(core, ns, first.metadata.resource_version)
    assert caught.value.status == 410

    # Current resourceVersion after compaction: nothing happens, the server-side timeout ends it.
    current = (await core.list_namespaced_secret(ns)).metadata.resource_version
    async with watch.Watch() as stream:
        events = [
            e
            async for e in stream.stream(
                core.list_namespaced_secret, ns, resource_version=current, timeout_seconds=1
            )
        ]
    assert events == []


async def _drain_watch(core: client.CoreV1Api, ns: str, resource_version: str) -> None:
    async with watch.Watch() as stream:
        async for _ in stream.stream(
            core.list_namespaced_secret, ns, resource_version=resource_version, timeout_seconds=10
        ):
            pass


async def test_watch_reports_objects_leaving_the_selection_as_deleted(
    core: client.CoreV1Api, ns: str
) -> None:
    created = await core.create_namespaced_secret(
        ns, {"metadata": {"name": "s", "labels": {"keep": "yes"}}}
    )
    await core.patch_namespaced_secret("s", ns, {"metadata": {"labels": {"keep": "no"}}})
    event = await wait_event(
        core.list_namespaced_secret,
        ns,
        lambda _: True,
        label_selector="keep=yes",
        resource_version=created.metadata.resource_version,
    )
    assert event["type"] == "DELETED"


async def test_secret_env_resolution_and_owner_garbage_collection(
    batch: client.BatchV1Api, core: client.CoreV1Api, ns: str
) -> None:
    env = [
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
        {"name": "PLAIN", "value": "plain-$(TOKEN)"},
    ]
    job = await batch.create_namespaced_job(
        ns, job_manifest("secret-env", 'echo "token=$TOKEN $PLAIN"', env=env)
    )
    event = await wait_event(
        core.list_namespaced_pod,
        ns,
        lambda e: waiting_reason(e["object"]) == "CreateContainerConfigError",
    )
    message = event["object"].status.container_statuses[0].state.waiting.message
    assert message == 'secret "creds" not found'

    owner = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "name": "secret-env",
        "uid": job.metadata.uid,
    }
    await core.create_namespaced_secret(
        ns,
        {"metadata": {"name": "creds", "ownerReferences": [owner]}, "stringData": {"token": "s3"}},
    )
    event = await wait_event(core.list_namespaced_pod, ns, is_terminal)
    assert event["object"].status.phase == "Succeeded"
    log = await core.read_namespaced_pod_log(event["object"].metadata.name, ns)
    assert log == "token=s3 plain-s3\n"

    await batch.delete_namespaced_job("secret-env", ns, propagation_policy="Background")
    await eventually(lambda: _secret_gone(core, ns, "creds"))


async def _secret_gone(core: client.CoreV1Api, ns: str, name: str) -> bool:
    try:
        await core.read_namespaced_secret(name, ns)
    except ApiException as exc:
        return exc.status == 404
    return False


async def test_ttl_after_finished_deletes_job_and_pods(
    batch: client.BatchV1Api, core: client.CoreV1Api, ns: str
) -> None:
    created = await batch.create_namespaced_job(ns, job_manifest("ttl", "true", ttl=0))
    await wait_event(
        batch.list_namespaced_job,
        ns,
        lambda e: e["type"] == "DELETED",
        resource_version=created.metadata.resource_version,
    )
    await eventually(lambda: _no_pods(core, ns))


async def _no_pods(core: client.CoreV1Api, ns: str) -> bool:
    return not (await core.list_namespaced_pod(ns)).items


async def test_empty_dir_working_dir_env_translation_and_expansion(
    emulator: EmulatorProcess, batch: client.BatchV1Api, core: client.CoreV1Api, ns: str
) -> None:
    manifest = job_manifest(
        "paths",
        # $(GREETING) is expanded by "Kubernetes", $$0 becomes the shell's $0.
        'pwd; echo "$WS"; echo $(GREETING) $$0; touch made-here',
        env=[{"name": "WS", "value": "/workspace/sub"}, {"name": "GREETING", "value": "hello"}],
        volumes=[{"name": "ws", "emptyDir": {}}],
        mounts=[{"name": "ws", "mountPath": "/workspace"}],
        working_dir="/workspace",
    )
    await batch.create_namespaced_job(ns, manifest)
    event = await wait_event(core.list_namespaced_pod, ns, is_terminal)
    assert event["object"].status.phase == "Succeeded"
    pwd, ws, greeting = (
        await core.read_namespaced_pod_log(event["object"].metadata.name, ns)
    ).splitlines()
    assert Path(pwd).is_relative_to(emulator.control("info")["nodeRoot"])
    assert ws == f"{pwd}/sub"
    assert greeting == "hello sh"
    assert (Path(pwd) / "made-here").exists()


async def test_selectors(batch: client.BatchV1Api, ns: str) -> None:
    for name, build in (("one", "1"), ("two", "2"), ("three", "3")):
        await batch.create_namespaced_job(
            ns, job_manifest(name, "sleep 300", labels={"build": build, "ci": "yes"})
        )

    async def names(**kwargs: str) -> list[str]:
        return [j.metadata.name for j in (await batch.list_namespaced_job(ns, **kwargs)).items]

    assert await names(label_selector="build in (1,3)") == ["one", "three"]
    assert await names(label_selector="ci=yes,build!=1") == ["three", "two"]
    assert await names(label_selector="build notin (1,2),ci") == ["three"]
    assert await names(field_selector="metadata.name=two") == ["two"]
    page = await batch.list_namespaced_job(ns, limit=2)
    assert len(page.items) == 2
    assert page.metadata._continue
    rest = await batch.list_namespaced_job(ns, limit=2, _continue=page.metadata._continue)
    assert [j.metadata.name for j in page.items + rest.items] == ["one", "three", "two"]


async def test_requests_without_the_token_are_401(emulator: EmulatorProcess) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{emulator.url}/apis/batch/v1/namespaces/ci/jobs")
    assert response.status_code == 401
    assert response.json()["reason"] == "Unauthorized"


async def test_sigterm_kills_all_pod_processes(tmp_path: Path) -> None:
    own = EmulatorProcess.start(tmp_path / "own")
    try:
        configuration = client.Configuration()
        await config.load_kube_config(
            config_file=str(own.kubeconfig_path), client_configuration=configuration
        )
        async with client.ApiClient(configuration) as api:
            await client.BatchV1Api(api).create_namespaced_job(
                "ci", job_manifest("lingering", "sleep 300 & wait")
            )
        pids = await eventually(
            lambda: [p for entry in own.control("processes") for p in entry["pids"]]
        )
    finally:
        own.stop()
    assert own.process.returncode == 0
    await eventually(lambda: not any(alive(pid) for pid in pids))


async def test_log_lines_through_watch_stream(
    batch: client.BatchV1Api, core: client.CoreV1Api, ns: str
) -> None:
    await batch.create_namespaced_job(ns, job_manifest("lines", "printf 'a\\nb\\n'"))
    event = await wait_event(core.list_namespaced_pod, ns, is_terminal)
    async with watch.Watch() as stream:
        lines = [
            line
            async for line in stream.stream(
                core.read_namespaced_pod_log, event["object"].metadata.name, ns
            )
        ]
    assert lines == ["a\n", "b\n"]


async def test_broken_watch_is_resumed_by_the_client(
    emulator: EmulatorProcess, core: client.CoreV1Api, ns: str
) -> None:
    await core.create_namespaced_secret(ns, {"metadata": {"name": "before"}})
    names: list[str] = []
    async with watch.Watch() as stream:
        # No timeout_seconds: the client reconnects from the last resourceVersion it saw.
        async for event in stream.stream(core.list_namespaced_secret, ns):
            names.append(event["object"].metadata.name)
            if len(names) == 1:
                assert emulator.control("break-watches", {})["broken"] >= 1
                await core.create_namespaced_secret(ns, {"metadata": {"name": "after"}})
            else:
                break
    assert names == ["before", "after"]
    calls = emulator.control("calls")
    watches = [c for c in calls if c["verb"] == "watch" and c["namespace"] == ns]
    assert len(watches) == 2


async def test_emulator_exits_when_its_parent_goes_away(tmp_path: Path) -> None:
    own = EmulatorProcess.start(tmp_path / "orphaned")
    try:
        assert own.process.stdin is not None
        own.process.stdin.close()
        await eventually(lambda: own.process.poll() is not None)
    finally:
        own.stop()
    assert own.process.returncode == 0
