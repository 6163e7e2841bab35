"""Test controls under `/_emulator/<action>` (no auth): toggles that make the cluster fail the
way real ones do, and views of what it did (calls, processes). README.md lists them."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from tests.k8s_emulator.store import PODS, now
from tests.k8s_emulator.users import STRICT_USERS, STRICT_USERS_UNAVAILABLE

if TYPE_CHECKING:
    from tests.k8s_emulator.cluster import Cluster

Obj = dict[str, Any]


def json_response(body: Any, code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body, separators=(",", ":")),
        status_code=code,
        media_type="application/json",
        headers=headers,
    )


def control_endpoint(cluster: Cluster) -> Callable[[Request], Awaitable[Response]]:
    store = cluster.store

    async def control(request: Request) -> Response:
        action = request.path_params["action"]
        body: Obj = {}
        if request.method == "POST":
            raw = await request.body()
            body = json.loads(raw) if raw else {}
        toggles = cluster.toggles
        if action == "calls":
            if request.method == "POST":
                cluster.calls.clear()
            return json_response(cluster.calls)
        if action == "processes":
            return json_response(await asyncio.to_thread(cluster.kubelet.processes))
        if action == "info":
            return json_response(
                {
                    "strictUsers": STRICT_USERS,
                    "strictUsersUnavailable": STRICT_USERS_UNAVAILABLE,
                    "nodeRoot": str(cluster.kubelet.root),
                }
            )
        if request.method != "POST":
            return json_response({"error": f"POST /_emulator/{action}"}, 405)
        if action == "missing-images":
            toggles.missing_images = set(body.get("images", []))
        elif action == "create-config-error":
            toggles.config_error_images = set(body.get("images", []))
        elif action == "unschedulable":
            toggles.unschedulable = bool(body.get("value", True))
        elif action == "forbid":
            toggles.forbid = (
                {
                    "verbs": list(body.get("verbs") or []),
                    "resources": list(body.get("resources") or []),
                }
                if body.get("value", True)
                else None
            )
        elif action == "break-log-streams":
            return json_response({"broken": cluster.kubelet.break_log_streams()})
        elif action == "break-exec-streams":
            return json_response({"broken": cluster.kubelet.break_exec_streams()})
        elif action == "unavailable":
            # An apiserver restart: every open stream drops, requests fail for a while.
            toggles.unavailable_until = time.monotonic() + float(body.get("seconds", 2))
            cluster.kubelet.break_exec_streams()
            cluster.kubelet.break_log_streams()
            store.end_watches(True)
        elif action == "image-users":
            cluster.images.users.update(body.get("images") or {})
        elif action == "image-commands":
            cluster.images.commands.update(body.get("images") or {})
        elif action == "pod-network":
            if body.get("mode") not in ("auto", "host", "isolated"):
                return json_response({"error": "mode: auto, host or isolated"}, 422)
            cluster.kubelet.pod_network = str(body["mode"])
        elif action == "log-rotation":
            cluster.kubelet.log_rotate_bytes = int(body["bytes"])
        elif action == "namespace":
            cluster.namespace_labels[str(body["name"])] = dict(body.get("labels") or {})
        elif action == "oom":
            return evict({**body, "reason": "OOMKilled"})
        elif action == "break-watches":
            return json_response({"broken": store.end_watches(bool(body.get("abrupt", False)))})
        elif action == "compact":
            store.compact()
            return json_response({"compactedResourceVersion": str(store.compacted_rv)})
        elif action == "evict":
            return evict(body)
        elif action == "reset":
            cluster.reset()
        else:
            return json_response({"error": f"unknown control {action}"}, 404)
        return json_response({"ok": True})

    def evict(body: Obj) -> Response:
        name = body.get("pod")
        namespace = body.get("namespace")
        for pod in store.query(PODS, namespace):
            if pod["metadata"]["name"] == name:
                runtime = cluster.kubelet.runtime_for(pod)
                if runtime is not None:
                    runtime.request_stop(
                        body.get("reason", "Evicted"),
                        float(body.get("gracePeriodSeconds", 0)),
                        body.get("message"),
                    )
                return json_response({"ok": True, "at": now()})
        return json_response({"error": f"pod {name} not found"}, 404)

    return control
