"""The emulated Job controller: one pod per Job (completions 1), retries up to backoffLimit,
activeDeadlineSeconds, ttlSecondsAfterFinished, and the conditions of a 1.31+ controller."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tests.k8s_emulator.errors import ApiError
from tests.k8s_emulator.store import JOBS, PODS, now
from tests.k8s_emulator.strict import record_event
from tests.k8s_emulator.validation import generated_name

if TYPE_CHECKING:
    from tests.k8s_emulator.cluster import Cluster

Obj = dict[str, Any]

TERMINAL = ("Succeeded", "Failed")
# A retried Job pod is created after this back-off (real: 10 s doubling), short for tests.
RETRY_BACKOFF_SECONDS = 0.3


def controller_of(obj: Obj) -> Obj | None:
    for ref in obj["metadata"].get("ownerReferences") or []:
        if ref.get("controller"):
            return dict(ref)
    return None


@dataclass
class JobState:
    counted: set[str] = field(default_factory=set)  # pod uids already in succeeded/failed
    known: set[str] = field(default_factory=set)  # every pod uid seen for this Job
    started: float | None = None  # monotonic, for activeDeadlineSeconds
    deadline_timer: asyncio.TimerHandle | None = None
    retry_timer: asyncio.TimerHandle | None = None
    ttl_timer: asyncio.TimerHandle | None = None


def _has(conditions: list[Obj], type_: str) -> Obj | None:
    for condition in conditions:
        if condition.get("type") == type_ and condition.get("status") == "True":
            return condition
    return None


def _condition(type_: str, reason: str, message: str) -> Obj:
    stamp = now()
    return {
        "type": type_,
        "status": "True",
        "lastProbeTime": stamp,
        "lastTransitionTime": stamp,
        "reason": reason,
        "message": message,
    }


class JobController:
    """One pod per Job (completions 1), retries up to backoffLimit, activeDeadlineSeconds,
    ttlSecondsAfterFinished, and the status/conditions of a 1.31+ controller (SuccessCriteriaMet /
    FailureTarget first, Complete / Failed once no pod is still running)."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.states: dict[str, JobState] = {}
        self._pending: set[tuple[str, str]] = set()

    def enqueue(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        if key not in self._pending:
            self._pending.add(key)
            asyncio.get_running_loop().call_soon(self._sync, key)

    def _sync(self, key: tuple[str, str]) -> None:
        self._pending.discard(key)
        self.reconcile(*key)

    def forget(self, uid: str) -> None:
        state = self.states.pop(uid, None)
        if state is not None:
            for timer in (state.deadline_timer, state.retry_timer, state.ttl_timer):
                if timer is not None:
                    timer.cancel()

    def reconcile(self, namespace: str, name: str) -> None:
        store = self.cluster.store
        job = store.get(JOBS, namespace, name)
        if job is None:
            return
        md, spec = job["metadata"], job["spec"]
        uid = md["uid"]
        state = self.states.setdefault(uid, JobState())
        status = copy.deepcopy(job.get("status") or {})
        pods = [
            p for p in store.query(PODS, namespace) if (controller_of(p) or {}).get("uid") == uid
        ]
        present = {p["metadata"]["uid"] for p in pods}
        state.known |= present
        succeeded, failed = status.get("succeeded", 0), status.get("failed", 0)
        for pod in pods:
            phase = pod["status"].get("phase")
            if phase in TERMINAL and pod["metadata"]["uid"] not in state.counted:
                state.counted.add(pod["metadata"]["uid"])
                if phase == "Succeeded":
                    succeeded += 1
                else:
                    failed += 1
        for vanished in state.known - present - state.counted:
            state.counted.add(vanished)
            failed += 1
        running = [p for p in pods if p["status"].get("phase") not in TERMINAL]
        active = [p for p in running if not p["metadata"].get("deletionTimestamp")]
        terminating = [p for p in running if p["metadata"].get("deletionTimestamp")]
        conditions: list[Obj] = status.setdefault("conditions", [])
        finished = bool(_has(conditions, "Complete") or _has(conditions, "Failed"))
        deleting = bool(md.get("deletionTimestamp"))
        suspended = bool(spec.get("suspend"))
        if not suspended and not deleting and state.started is None:
            state.started = time.monotonic()
            status.setdefault("startTime", now())
        newly_finished = False
        if not finished and not deleting:
            deadline = spec.get("activeDeadlineSeconds")
            if not _has(conditions, "SuccessCriteriaMet") and not _has(conditions, "FailureTarget"):
                if succeeded >= spec.get("completions", 1):
                    conditions.append(
                        _condition(
                            "SuccessCriteriaMet",
                            "CompletionsReached",
                            "Reached expected number of succeeded pods",
                        )
                    )
                elif failed > spec.get("backoffLimit", 6):
                    conditions.append(
                        _condition(
                            "FailureTarget",
                            "BackoffLimitExceeded",
                            "Job has reached the specified backoff limit",
                        )
                    )
                elif (
                    deadline is not None
                    and state.started is not None
                    and time.monotonic() >= state.started + deadline
                ):
                    conditions.append(
                        _condition(
                            "FailureTarget",
                            "DeadlineExceeded",
                            "Job was active longer than specified deadline",
                        )
                    )
            target = _has(conditions, "FailureTarget")
            if target is not None:
                for pod in active:
                    runtime = self.cluster.kubelet.runtime_for(pod)
                    if runtime is not None:
                        reason = (
                            "DeadlineExceeded"
                            if target["reason"] == "DeadlineExceeded"
                            else "Killed"
                        )
                        grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
                        runtime.request_stop(reason, float(grace))
                if not running:
                    conditions.append(_condition("Failed", target["reason"], target["message"]))
                    newly_finished = True
            elif _has(conditions, "SuccessCriteriaMet"):
                if not running:
                    conditions.append(
                        _condition(
                            "Complete",
                            "CompletionsReached",
                            "Reached expected number of succeeded pods",
                        )
                    )
                    status["completionTime"] = now()
                    newly_finished = True
            elif not suspended and not running and state.retry_timer is None:
                if failed == 0:
                    self._create_pod(job)
                else:
                    state.retry_timer = asyncio.get_running_loop().call_later(
                        RETRY_BACKOFF_SECONDS, self._retry, namespace, name, uid
                    )
            if deadline is not None and state.started is not None and not newly_finished:
                if state.deadline_timer is not None:
                    state.deadline_timer.cancel()
                delay = max(0.0, state.started + deadline - time.monotonic())
                state.deadline_timer = asyncio.get_running_loop().call_later(
                    delay, self.enqueue, namespace, name
                )
        if newly_finished:
            ttl = spec.get("ttlSecondsAfterFinished")
            if ttl is not None:
                state.ttl_timer = asyncio.get_running_loop().call_later(
                    float(ttl), self._expire, namespace, name, uid
                )
        if not conditions:
            del status["conditions"]
        for key, value in (("active", len(active)), ("succeeded", succeeded), ("failed", failed)):
            if value:
                status[key] = value
            else:
                status.pop(key, None)
        status["ready"] = sum(1 for p in active if p["status"].get("phase") == "Running")
        status["terminating"] = len(terminating)
        status["uncountedTerminatedPods"] = {}

        def change(obj: Obj) -> None:
            obj["status"] = status

        store.modify(JOBS, namespace, name, change)

    def _retry(self, namespace: str, name: str, uid: str) -> None:
        state = self.states.get(uid)
        if state is not None:
            state.retry_timer = None
            job = self.cluster.store.get(JOBS, namespace, name)
            if job is not None and job["metadata"]["uid"] == uid:
                conditions = job.get("status", {}).get("conditions") or []
                if not any(_has(conditions, t) for t in ("FailureTarget", "SuccessCriteriaMet")):
                    self._create_pod(job)

    def _expire(self, namespace: str, name: str, uid: str) -> None:
        job = self.cluster.store.get(JOBS, namespace, name)
        if job is not None and job["metadata"]["uid"] == uid:
            with contextlib.suppress(ApiError):
                self.cluster.delete(JOBS, namespace, name, "Background", None)

    def _create_pod(self, job: Obj) -> None:
        md = job["metadata"]
        template = copy.deepcopy(job["spec"]["template"])
        tmeta = template.get("metadata") or {}
        pod: Obj = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": generated_name(f"{md['name']}-"),
                "generateName": f"{md['name']}-",
                "namespace": md["namespace"],
                "labels": tmeta.get("labels", {}),
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "Job",
                        "name": md["name"],
                        "uid": md["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": template.get("spec", {}),
        }
        if tmeta.get("annotations"):
            pod["metadata"]["annotations"] = tmeta["annotations"]
        for _ in range(5):
            try:
                self.cluster.create(PODS, md["namespace"], copy.deepcopy(pod))
                return
            except ApiError as exc:
                if exc.code != 409:
                    # Admission (PodSecurity, quota) refused the pod: the controller records it
                    # on the Job and tries again later, as the real one does.
                    record_event(
                        self.cluster.store,
                        {"kind": "Job", "apiVersion": "batch/v1", **job},
                        "FailedCreate",
                        f"Error creating: {exc.message}",
                        type_="Warning",
                        component="job-controller",
                    )
                    state = self.states.get(md["uid"])
                    if state is not None and state.retry_timer is None:
                        state.retry_timer = asyncio.get_running_loop().call_later(
                            1.0, self._retry, md["namespace"], md["name"], md["uid"]
                        )
                    return
                pod["metadata"]["name"] = generated_name(f"{md['name']}-")
