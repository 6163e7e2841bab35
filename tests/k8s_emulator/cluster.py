"""The emulated cluster: API semantics of create/delete/patch, the garbage collector, the Job
controller and the kubelet wired together over one Store."""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.k8s_emulator.errors import ApiError
from tests.k8s_emulator.jobs import TERMINAL, JobController, controller_of
from tests.k8s_emulator.kubelet import DEFAULT_LOG_ROTATE_BYTES, Kubelet
from tests.k8s_emulator.selectors import FieldRequirement, Requirement
from tests.k8s_emulator.store import JOBS, KINDS, PODS, Event, Kind, Store, meta, now
from tests.k8s_emulator.strict import Images, admit_pod_security
from tests.k8s_emulator.validation import Invalid, admit, check_labels

Obj = dict[str, Any]

POLICIES = ("Orphan", "Background", "Foreground")
GC_SWEEP_SECONDS = 0.5


@dataclass
class Toggles:
    missing_images: set[str] = field(default_factory=set)
    config_error_images: set[str] = field(default_factory=set)
    unschedulable: bool = False
    # None: allowed. Otherwise a filter; empty lists mean "everything".
    forbid: dict[str, list[str]] | None = None
    # Until this monotonic time the API answers 503 (an apiserver restarting); pods keep running.
    unavailable_until: float = 0.0

    def forbidden(self, verb: str, resource: str) -> bool:
        if self.forbid is None:
            return False
        verbs = self.forbid.get("verbs") or []
        resources = self.forbid.get("resources") or []
        return (not verbs or verb in verbs) and (not resources or resource in resources)


def success_status(kind: Kind, obj: Obj) -> Obj:
    md = obj["metadata"]
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": {
            "name": md["name"],
            "group": kind.group,
            "kind": kind.resource,
            "uid": md["uid"],
        },
    }


class Cluster:
    def __init__(self, state_dir: Path, port: int = 0) -> None:
        self.state_dir = state_dir
        self.port = port
        self.store = Store()
        self.toggles = Toggles()
        self.kubelet = Kubelet(self, state_dir / "pods")
        self.images = Images(self.kubelet.root)
        # Namespace labels set by tests (e.g. pod-security.kubernetes.io/enforce=restricted).
        self.namespace_labels: dict[str, dict[str, str]] = {}
        self.jobs = JobController(self)
        self.calls: list[Obj] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self.store.listeners.append(self._on_event)

    # -- housekeeping ----------------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def start(self) -> None:
        self.spawn(self._gc_loop())

    def shutdown(self) -> None:
        self.kubelet.shutdown()
        for task in list(self._tasks):
            task.cancel()

    def reset(self) -> None:
        """Back to an empty cluster: everything deleted at once, toggles and call log cleared."""
        self.toggles = Toggles()
        self.calls.clear()
        self.namespace_labels.clear()
        self.kubelet.log_rotate_bytes = DEFAULT_LOG_ROTATE_BYTES
        self.kubelet.pod_network = "auto"
        self.images.users.clear()
        self.images.commands.clear()
        for kind in KINDS.values():
            for obj in self.store.query(kind, None):
                md = obj["metadata"]
                if kind is PODS:
                    runtime = self.kubelet.runtime_for(obj)
                    if runtime is not None:
                        runtime.request_stop("deleted", 0)
                self._remove(kind, md["namespace"], md["name"])

    def _on_event(self, event: Event) -> None:
        md = event.obj["metadata"]
        if event.kind is PODS:
            if event.type == "ADDED":
                self.kubelet.pod_added(event.obj)
            owner = controller_of(event.obj)
            if owner and owner.get("kind") == "Job":
                self.jobs.enqueue(md["namespace"], owner["name"])
        elif event.kind is JOBS:
            if event.type == "DELETED":
                self.jobs.forget(md["uid"])
            else:
                self.jobs.enqueue(md["namespace"], md["name"])

    def pod_changed(self, namespace: str, name: str) -> None:
        pod = self.store.get(PODS, namespace, name)
        owner = controller_of(pod) if pod else None
        if owner:
            self.jobs.enqueue(namespace, owner["name"])

    # -- create / update -------------------------------------------------------------------

    def create(self, kind: Kind, namespace: str, body: Obj) -> Obj:
        obj = admit(kind, body, namespace)
        if kind is PODS:
            admit_pod_security(self.namespace_labels.get(namespace, {}), obj)
        return self.store.create(kind, obj)

    def patch(self, kind: Kind, namespace: str, name: str, patch: Any, json_patch: bool) -> Obj:
        current = self.store.require(kind, namespace, name)
        target = copy.deepcopy(current)
        new = apply_json_patch(target, patch) if json_patch else merge_patch(target, patch)
        return self._update(kind, current, new)

    def replace(self, kind: Kind, namespace: str, name: str, body: Obj) -> Obj:
        current = self.store.require(kind, namespace, name)
        wanted_rv = (body.get("metadata") or {}).get("resourceVersion")
        if wanted_rv and wanted_rv != current["metadata"]["resourceVersion"]:
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {kind.qualified} "{name}": the object has been '
                "modified; please apply your changes to the latest version and try again",
                {"name": name, "group": kind.group, "kind": kind.resource},
            )
        return self._update(kind, current, copy.deepcopy(body))

    def _update(self, kind: Kind, current: Obj, new: Obj) -> Obj:
        if not isinstance(new, dict) or not isinstance(new.get("metadata"), dict):
            raise ApiError.bad_request("the body of the request was in an unknown format")
        md, old_md = new["metadata"], current["metadata"]
        for key in ("uid", "name", "namespace", "creationTimestamp", "deletionTimestamp"):
            if key in old_md:
                md[key] = old_md[key]
        new["status"] = current.get("status", {})
        errors = Invalid(kind, old_md["name"])
        check_labels(errors, "metadata.labels", md.get("labels"))
        if kind is JOBS:
            for key in ("template", "selector", "completions"):
                if new.get("spec", {}).get(key) != current["spec"].get(key):
                    errors.add(f"spec.{key}", "field is immutable", "FieldValueInvalid")
        elif kind is PODS:
            changed = {
                k
                for k in set(new.get("spec", {})) | set(current["spec"])
                if new.get("spec", {}).get(k) != current["spec"].get(k)
            }
            if changed - {"activeDeadlineSeconds"}:
                errors.add(
                    "spec",
                    "Forbidden: pod updates may not change fields other than "
                    "`spec.containers[*].image`, `spec.activeDeadlineSeconds`",
                    "FieldValueForbidden",
                )
        errors.raise_if_any()

        def change(obj: Obj) -> None:
            obj.clear()
            obj.update(new)

        result = self.store.modify(kind, old_md["namespace"], old_md["name"], change)
        assert result is not None
        return result

    # -- delete and garbage collection -----------------------------------------------------

    def delete(
        self, kind: Kind, namespace: str, name: str, policy: str | None, grace: int | None
    ) -> Obj:
        obj = self.store.require(kind, namespace, name)
        if policy is not None and policy not in POLICIES:
            raise ApiError(
                422,
                "Invalid",
                f'propagationPolicy: Unsupported value: "{policy}": supported '
                'values: "Foreground", "Background", "Orphan"',
            )
        if kind is PODS:
            return self._delete_pod(obj, grace)
        # batch/v1 Jobs keep their pods unless told otherwise (the API's compatibility default).
        policy = policy or ("Orphan" if kind is JOBS else "Background")
        if policy == "Foreground":

            def mark(o: Obj) -> None:
                m = meta(o)
                m.setdefault("deletionTimestamp", now())
                m.setdefault("deletionGracePeriodSeconds", 0)
                finalizers = m.setdefault("finalizers", [])
                if "foregroundDeletion" not in finalizers:
                    finalizers.append("foregroundDeletion")

            marked = self.store.modify(kind, namespace, name, mark)
            assert marked is not None
            self._collect_dependents(marked, "Background")
            self._release_foreground(marked)
            return marked
        gone = self._remove(kind, namespace, name)
        assert gone is not None
        self._collect_dependents(gone, policy)
        return success_status(kind, obj)

    def delete_collection(
        self,
        kind: Kind,
        namespace: str,
        labels: list[Requirement],
        fields: list[FieldRequirement],
        policy: str | None,
        grace: int | None,
    ) -> list[Obj]:
        deleted = []
        for obj in self.store.query(kind, namespace, labels, fields):
            with contextlib.suppress(ApiError):
                self.delete(kind, namespace, obj["metadata"]["name"], policy, grace)
                deleted.append(obj)
        return deleted

    def _delete_pod(self, pod: Obj, grace: int | None) -> Obj:
        md = pod["metadata"]
        ns, name = md["namespace"], md["name"]
        if grace is None:
            grace = int(pod["spec"].get("terminationGracePeriodSeconds", 30))
        runtime = self.kubelet.runtime_for(pod)
        # The pod's worker is done once every container ended (the first one ending is not enough:
        # its service containers keep the pod running).
        worker_done = runtime is None or (runtime.task is not None and runtime.task.done())
        done = worker_done or pod["status"].get("phase") in TERMINAL
        if md.get("deletionTimestamp") and grace != 0 and not done:
            return pod

        def mark(o: Obj) -> None:
            meta(o).setdefault("deletionTimestamp", now())
            meta(o)["deletionGracePeriodSeconds"] = grace

        marked = self.store.modify(PODS, ns, name, mark)
        assert marked is not None
        if done or grace == 0:
            # Nothing to wait for (or a forced delete): gone from the API now; the kubelet still
            # kills whatever runs.
            if runtime is not None and not worker_done:
                runtime.request_stop("deleted", 0)
            self._remove(PODS, ns, name)
        elif runtime is not None:
            runtime.request_stop("deleted", float(grace))
        return marked

    async def pod_finished_terminating(self, namespace: str, name: str, uid: str) -> None:
        pod = self.store.get(PODS, namespace, name)
        if pod is not None and pod["metadata"]["uid"] == uid:
            self._remove(PODS, namespace, name)
        await self.kubelet.forget(uid)

    def _remove(self, kind: Kind, namespace: str, name: str) -> Obj | None:
        gone = self.store.remove(kind, namespace, name)
        if gone is None:
            return None
        if kind is PODS:
            runtime = self.kubelet.runtime_for(gone)
            if runtime is not None and runtime.task is not None and runtime.task.done():
                self.spawn(self.kubelet.forget(gone["metadata"]["uid"]))
        for ref in gone["metadata"].get("ownerReferences") or []:
            owner = self._find_uid(namespace, ref.get("uid", ""))
            if owner is not None:
                self._release_foreground(owner[1])
        return gone

    def _find_uid(self, namespace: str, uid: str) -> tuple[Kind, Obj] | None:
        for kind, obj in self.store.all_in_namespace(namespace):
            if obj["metadata"]["uid"] == uid:
                return kind, obj
        return None

    def _dependents(self, owner: Obj) -> list[tuple[Kind, Obj]]:
        md = owner["metadata"]
        return [
            (kind, obj)
            for kind, obj in self.store.all_in_namespace(md["namespace"])
            if any(r.get("uid") == md["uid"] for r in obj["metadata"].get("ownerReferences") or [])
        ]

    def _release_foreground(self, owner: Obj) -> None:
        md = owner["metadata"]
        if "foregroundDeletion" not in (md.get("finalizers") or []) or self._dependents(owner):
            return
        kind = KINDS[{"Job": "jobs", "Pod": "pods", "Secret": "secrets"}[owner["kind"]]]
        self._remove(kind, md["namespace"], md["name"])

    def _collect_dependents(self, owner: Obj, policy: str) -> None:
        owner_uid = owner["metadata"]["uid"]
        for kind, dep in self._dependents(owner):
            md = dep["metadata"]
            others = [r for r in md.get("ownerReferences") or [] if r.get("uid") != owner_uid]
            alive = [r for r in others if self._find_uid(md["namespace"], r.get("uid", ""))]
            if policy == "Orphan" or alive:

                def drop_ref(o: Obj, keep: list[Obj] = others) -> None:
                    if keep:
                        meta(o)["ownerReferences"] = keep
                    else:
                        meta(o).pop("ownerReferences", None)

                self.store.modify(kind, md["namespace"], md["name"], drop_ref)
            else:
                with contextlib.suppress(ApiError):
                    self.delete(kind, md["namespace"], md["name"], "Background", None)

    async def _gc_loop(self) -> None:
        """Delete objects whose owners all vanished (e.g. created pointing at a deleted Job)."""
        while True:
            await asyncio.sleep(GC_SWEEP_SECONDS)
            objects = [(k, o) for k in KINDS.values() for o in self.store.query(k, None)]
            uids = {o["metadata"]["uid"] for _, o in objects}
            for kind, obj in objects:
                md = obj["metadata"]
                refs = md.get("ownerReferences") or []
                if not refs or md.get("deletionTimestamp"):
                    continue
                if not any(r.get("uid") in uids for r in refs):
                    with contextlib.suppress(ApiError):
                        self.delete(kind, md["namespace"], md["name"], "Background", None)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (also used for strategic merge patches: close enough here)."""
    if not isinstance(patch, dict):
        return patch
    if not isinstance(target, dict):
        target = {}
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        else:
            target[key] = merge_patch(target.get(key), value)
    return target


def apply_json_patch(target: Obj, operations: Any) -> Obj:
    if not isinstance(operations, list):
        raise ApiError.bad_request("json patch must be a list of operations")
    for op in operations:
        parts = [
            p.replace("~1", "/").replace("~0", "~") for p in str(op.get("path", "")).split("/")[1:]
        ]
        if not parts:
            raise ApiError(422, "Invalid", "json patch path must not be empty")
        parent: Any = target
        for part in parts[:-1]:
            parent = parent[int(part)] if isinstance(parent, list) else parent.setdefault(part, {})
        last = parts[-1]
        kind = op.get("op")
        if kind in ("add", "replace"):
            if isinstance(parent, list):
                if last == "-":
                    parent.append(op.get("value"))
                elif kind == "add":
                    parent.insert(int(last), op.get("value"))
                else:
                    parent[int(last)] = op.get("value")
            else:
                parent[last] = op.get("value")
        elif kind == "remove":
            if isinstance(parent, list):
                parent.pop(int(last))
            else:
                parent.pop(last, None)
        elif kind != "test":
            raise ApiError(422, "Invalid", f"json patch operation {kind!r} not supported")
    return target
