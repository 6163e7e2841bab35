"""HTTP front of the emulator: the Kubernetes REST paths, plus test controls under /_emulator/."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute

from tests.k8s_emulator.cluster import Cluster
from tests.k8s_emulator.controls import control_endpoint, json_response
from tests.k8s_emulator.errors import ApiError
from tests.k8s_emulator.exec import exec_endpoint
from tests.k8s_emulator.runtime import LogStreamBroken
from tests.k8s_emulator.selectors import parse_field_selector, parse_label_selector
from tests.k8s_emulator.store import KINDS, PODS, Kind, WatchEnd

Obj = dict[str, Any]

TOKEN = "test"
USER = "system:serviceaccount:ci:ci-executor"
VERSION = {
    "major": "1",
    "minor": "33",
    "gitVersion": "v1.33.0-emulator",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.24.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}
RESOURCE_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
# (group, resource) pairs this server serves, with their discovery entries.
SERVED = {
    ("batch", "jobs"),
    ("", "pods"),
    ("", "secrets"),
    ("", "events"),
    ("", "namespaces"),
    ("authorization.k8s.io", "selfsubjectaccessreviews"),
    ("authorization.k8s.io", "selfsubjectrulesreviews"),
}


class StreamBroken(Exception):
    """Raised in a streaming body so the server drops the connection mid-response."""


def error_response(error: ApiError) -> Response:
    return json_response(error.status(), error.code)


@dataclass
class RequestInfo:
    method: str
    path: str
    group: str = ""
    version: str = ""
    namespace: str | None = None
    resource: str | None = None
    name: str | None = None
    subresource: str | None = None
    verb: str = "get"
    discovery: bool = False

    @property
    def full_resource(self) -> str:
        return f"{self.resource}/{self.subresource}" if self.subresource else str(self.resource)


def parse_request(request: Request) -> RequestInfo:
    method = request.method
    path = request.url.path
    info = RequestInfo(method=method, path=path)
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["api"] and len(parts) >= 2:
        info.version, rest = parts[1], parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        info.group, info.version, rest = parts[1], parts[2], parts[3:]
    else:
        info.discovery = True
        return info
    if not rest:
        info.discovery = True
        return info
    if rest[0] == "namespaces" and len(rest) >= 3:
        info.namespace, info.resource = rest[1], rest[2]
        info.name = rest[3] if len(rest) > 3 else None
        info.subresource = rest[4] if len(rest) > 4 else None
    elif rest[0] == "namespaces":
        info.resource, info.name = "namespaces", (rest[1] if len(rest) > 1 else None)
    else:
        info.resource = rest[0]
        info.name = rest[1] if len(rest) > 1 else None
    watch = request.query_params.get("watch", "").lower() in ("true", "1")
    info.verb = {
        "GET": "get" if info.name else ("watch" if watch else "list"),
        "POST": "create",
        "PUT": "update",
        "PATCH": "patch",
        "DELETE": "delete" if info.name else "deletecollection",
    }.get(method, method.lower())
    return info


def _flag(request: Request, name: str) -> bool:
    return request.query_params.get(name, "").lower() in ("true", "1")


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        raise ApiError.bad_request("the body of the request was in an unknown format") from None


def _list_body(kind: Kind, items: list[Obj], rv: int, cont: str | None, remaining: int) -> Obj:
    listing: Obj = {"resourceVersion": str(rv)}
    if cont:
        listing["continue"] = cont
        listing["remainingItemCount"] = remaining
    # The API server omits kind/apiVersion on the items of a typed list.
    stripped = [{k: v for k, v in o.items() if k not in ("kind", "apiVersion")} for o in items]
    return {
        "kind": f"{kind.kind}List",
        "apiVersion": kind.api_version,
        "metadata": listing,
        "items": stripped,
    }


def build_app(cluster: Cluster) -> Starlette:
    store = cluster.store

    def forbidden(info: RequestInfo) -> ApiError:
        group = info.group
        target = f"{info.resource}.{group}" if group else str(info.resource)
        subject = f'{target} "{info.name}"' if info.name else target
        where = (
            f' in the namespace "{info.namespace}"' if info.namespace else " at the cluster scope"
        )
        return ApiError(
            403,
            "Forbidden",
            f'{subject} is forbidden: User "{USER}" cannot {info.verb} resource '
            f'"{info.full_resource}" in API group "{group}"{where}',
            {"name": info.name or "", "group": group, "kind": str(info.resource)},
        )

    async def api(request: Request) -> Response:
        info = parse_request(request)
        call: Obj = {
            "verb": info.verb,
            "path": info.path,
            "method": info.method,
            "group": info.group,
            "resource": info.full_resource if info.resource else None,
            "namespace": info.namespace,
            "name": info.name,
        }
        cluster.calls.append(call)
        try:
            if time.monotonic() < cluster.toggles.unavailable_until:
                raise ApiError(503, "ServiceUnavailable", "apiserver is restarting")
            if request.headers.get("authorization") != f"Bearer {TOKEN}":
                raise ApiError(401, "Unauthorized", "Unauthorized")
            if info.discovery:
                response = discovery(info)
            else:
                if (info.group, info.resource) not in SERVED or info.version != "v1":
                    raise ApiError(
                        404, "NotFound", "the server could not find the requested resource"
                    )
                if not str(info.resource).startswith("selfsubject") and cluster.toggles.forbidden(
                    info.verb, info.full_resource
                ):
                    raise forbidden(info)
                response = await dispatch(info, request)
        except ApiError as error:
            response = error_response(error)
        call["code"] = response.status_code
        return response

    def discovery(info: RequestInfo) -> Response:
        path = info.path.rstrip("/")
        if path == "/version":
            return json_response(VERSION)
        if path == "/api":
            return json_response(
                {
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [
                        {"clientCIDR": "0.0.0.0/0", "serverAddress": f"127.0.0.1:{cluster.port}"}
                    ],
                }
            )
        if path == "/apis":
            groups = []
            for name in ("batch", "authorization.k8s.io"):
                version = {"groupVersion": f"{name}/v1", "version": "v1"}
                groups.append({"name": name, "versions": [version], "preferredVersion": version})
            return json_response({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})

        def resource(
            name: str, kind: str, namespaced: bool = True, verbs: list[str] | None = None
        ) -> Obj:
            return {
                "name": name,
                "singularName": "" if "/" in name else kind.lower(),
                "namespaced": namespaced,
                "kind": kind,
                "verbs": verbs or RESOURCE_VERBS,
            }

        if path == "/api/v1":
            resources = [
                resource("namespaces", "Namespace", False, ["get", "list"]),
                resource("pods", "Pod"),
                resource("pods/log", "Pod", verbs=["get"]),
                resource("pods/status", "Pod", verbs=["get"]),
                resource("pods/exec", "PodExecOptions", verbs=["create", "get"]),
                resource("secrets", "Secret"),
                resource("events", "Event"),
            ]
            return json_response(
                {"kind": "APIResourceList", "groupVersion": "v1", "resources": resources}
            )
        if path == "/apis/batch/v1":
            resources = [resource("jobs", "Job"), resource("jobs/status", "Job", verbs=["get"])]
            return json_response(
                {"kind": "APIResourceList", "groupVersion": "batch/v1", "resources": resources}
            )
        raise ApiError(404, "NotFound", "the server could not find the requested resource")

    async def dispatch(info: RequestInfo, request: Request) -> Response:
        if info.resource == "namespaces":
            return namespaces(info)
        if info.resource == "selfsubjectaccessreviews":
            return await access_review(info, request)
        if info.resource == "selfsubjectrulesreviews":
            return await rules_review(request)
        kind = KINDS[str(info.resource)]
        query = request.query_params
        if info.name is None:
            labels = parse_label_selector(query.get("labelSelector"))
            fields = parse_field_selector(kind.resource, query.get("fieldSelector"))
            if info.verb == "watch":
                return watch(kind, info.namespace, labels, fields, query)
            if info.verb == "list":
                return list_objects(kind, info.namespace, labels, fields, query)
            if info.namespace is None:
                raise ApiError(
                    405,
                    "MethodNotAllowed",
                    "the server does not allow this method on the requested resource",
                )
            if info.verb == "create":
                body = await _json_body(request)
                if not isinstance(body, dict):
                    raise ApiError.bad_request("the body of the request was in an unknown format")
                return json_response(cluster.create(kind, info.namespace, body), 201)
            if info.verb == "deletecollection":
                policy, grace = await delete_options(request)
                deleted = cluster.delete_collection(
                    kind, info.namespace, labels, fields, policy, grace
                )
                return json_response(_list_body(kind, deleted, store.rv, None, 0))
            raise ApiError(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
            )
        namespace = info.namespace or ""
        if info.subresource == "log" and kind is PODS and info.verb == "get":
            return await pod_log(namespace, info.name, request)
        if info.subresource not in (None, "status") or (info.subresource and info.verb != "get"):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if info.verb == "get":
            return json_response(store.require(kind, namespace, info.name))
        if info.verb == "delete":
            policy, grace = await delete_options(request, kind, namespace, info.name)
            result = cluster.delete(kind, namespace, info.name, policy, grace)
            code = 202 if result.get("kind") != "Status" and kind is not PODS else 200
            headers = None
            if kind.resource == "jobs" and policy is None:
                headers = {
                    "Warning": '299 - "child pods are preserved by default when jobs are '
                    "deleted; set propagationPolicy=Background to remove them or set "
                    'propagationPolicy=Orphan to suppress this warning"'
                }
            return json_response(result, code, headers)
        if info.verb == "patch":
            content_type = request.headers.get("content-type", "")
            if "apply-patch" in content_type:
                raise ApiError(
                    415, "UnsupportedMediaType", "apply patches are not supported by the emulator"
                )
            body = await _json_body(request)
            return json_response(
                cluster.patch(kind, namespace, info.name, body, "json-patch" in content_type)
            )
        if info.verb == "update":
            body = await _json_body(request)
            if not isinstance(body, dict):
                raise ApiError.bad_request("the body of the request was in an unknown format")
            return json_response(cluster.replace(kind, namespace, info.name, body))
        raise ApiError(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )

    async def delete_options(
        request: Request, kind: Kind | None = None, namespace: str = "", name: str | None = None
    ) -> tuple[str | None, int | None]:
        body = await _json_body(request) or {}
        query = request.query_params
        policy = query.get("propagationPolicy") or body.get("propagationPolicy")
        orphan = query.get("orphanDependents") or body.get("orphanDependents")
        if policy is None and orphan is not None:
            policy = "Orphan" if str(orphan).lower() == "true" else "Background"
        grace_raw = query.get("gracePeriodSeconds") or body.get("gracePeriodSeconds")
        grace = int(grace_raw) if grace_raw is not None else None
        preconditions = body.get("preconditions") or {}
        if kind is not None and name is not None and preconditions:
            current = store.require(kind, namespace, name)["metadata"]
            for field, key in (("uid", "uid"), ("resourceVersion", "resourceVersion")):
                wanted = preconditions.get(field)
                if wanted and wanted != current.get(key):
                    label = field[0].upper() + field[1:]
                    raise ApiError(
                        409,
                        "Conflict",
                        f"Precondition failed: {label} in precondition: {wanted}, "
                        f"{label} in object meta: {current.get(key)}",
                    )
        return policy, grace

    def list_objects(
        kind: Kind, namespace: str | None, labels: Any, fields: Any, query: Any
    ) -> Response:
        items = store.query(kind, namespace, labels, fields)
        rv = store.rv
        after = query.get("continue")
        if after:
            try:
                token = json.loads(base64.urlsafe_b64decode(after.encode()))
                rv = token["rv"]
                items = [
                    o
                    for o in items
                    if (o["metadata"]["namespace"], o["metadata"]["name"]) > tuple(token["after"])
                ]
            except (ValueError, KeyError, TypeError):
                raise ApiError(
                    410, "Expired", "The provided continue parameter is too old"
                ) from None
        limit = int(query.get("limit") or 0)
        cont = None
        remaining = 0
        if limit and len(items) > limit:
            last = items[limit - 1]["metadata"]
            cont = base64.urlsafe_b64encode(
                json.dumps({"rv": rv, "after": [last["namespace"], last["name"]]}).encode()
            ).decode()
            remaining = len(items) - limit
            items = items[:limit]
        return json_response(_list_body(kind, items, rv, cont, remaining))

    def watch(kind: Kind, namespace: str | None, labels: Any, fields: Any, query: Any) -> Response:
        watcher = store.watch(kind, namespace, labels, fields, query.get("resourceVersion"))
        timeout_raw = query.get("timeoutSeconds")
        timeout = float(timeout_raw) if timeout_raw else None

        async def events() -> AsyncIterator[bytes]:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout if timeout is not None else None
            try:
                while True:
                    remaining = None if deadline is None else deadline - loop.time()
                    if remaining is not None and remaining <= 0:
                        return
                    try:
                        item = await asyncio.wait_for(watcher.queue.get(), remaining)
                    except TimeoutError:
                        return
                    if isinstance(item, WatchEnd):
                        if item.abrupt:
                            raise StreamBroken("watch broken by the emulator")
                        return
                    kind_name, obj = item
                    yield (
                        json.dumps({"type": kind_name, "object": obj}, separators=(",", ":")) + "\n"
                    ).encode()
            finally:
                store.unwatch(watcher)

        return StreamingResponse(events(), media_type="application/json")

    def namespaces(info: RequestInfo) -> Response:
        if info.verb not in ("get", "list"):
            raise ApiError(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
            )

        def namespace(name: str) -> Obj:
            return {
                "kind": "Namespace",
                "apiVersion": "v1",
                "metadata": {
                    "name": name,
                    "uid": f"ns-{name}",
                    "resourceVersion": "1",
                    "creationTimestamp": "2026-01-01T00:00:00Z",
                    "labels": {
                        "kubernetes.io/metadata.name": name,
                        **cluster.namespace_labels.get(name, {}),
                    },
                },
                "spec": {"finalizers": ["kubernetes"]},
                "status": {"phase": "Active"},
            }

        if info.name:
            return json_response(namespace(info.name))
        names = sorted(
            {o["metadata"]["namespace"] for k in KINDS.values() for o in store.query(k, None)}
            | {"ci", "default"}
        )
        return json_response(
            {
                "kind": "NamespaceList",
                "apiVersion": "v1",
                "metadata": {"resourceVersion": str(store.rv)},
                "items": [namespace(n) for n in names],
            }
        )

    async def access_review(info: RequestInfo, request: Request) -> Response:
        if info.verb != "create":
            raise ApiError(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
            )
        body = await _json_body(request) or {}
        attributes = (body.get("spec") or {}).get("resourceAttributes") or {}
        resource = attributes.get("resource", "")
        if attributes.get("subresource"):
            resource = f"{resource}/{attributes['subresource']}"
        allowed = not cluster.toggles.forbidden(attributes.get("verb", ""), resource)
        status: Obj = {"allowed": allowed}
        if not allowed:
            status["denied"] = False
        return json_response(
            {
                "kind": "SelfSubjectAccessReview",
                "apiVersion": "authorization.k8s.io/v1",
                "metadata": {"creationTimestamp": None},
                "spec": body.get("spec") or {},
                "status": status,
            },
            201,
        )

    async def rules_review(request: Request) -> Response:
        body = await _json_body(request) or {}
        rules = []
        for group, resource in sorted(SERVED):
            if resource.startswith("selfsubject") or resource == "namespaces":
                continue
            for name in (resource, f"{resource}/log", f"{resource}/exec"):
                if "/" in name and resource != "pods":
                    continue
                verbs = [v for v in RESOURCE_VERBS if not cluster.toggles.forbidden(v, name)]
                if verbs:
                    rules.append({"verbs": verbs, "apiGroups": [group], "resources": [name]})
        return json_response(
            {
                "kind": "SelfSubjectRulesReview",
                "apiVersion": "authorization.k8s.io/v1",
                "metadata": {"creationTimestamp": None},
                "spec": body.get("spec") or {},
                "status": {"resourceRules": rules, "nonResourceRules": [], "incomplete": False},
            },
            201,
        )

    async def pod_log(namespace: str, name: str, request: Request) -> Response:
        pod = store.require(PODS, namespace, name)
        names = [c["name"] for c in pod["spec"]["containers"]]
        container = request.query_params.get("container")
        if container is None:
            if len(names) > 1:
                choices = " ".join(names)
                raise ApiError.bad_request(
                    f"a container name must be specified for pod {name}, choose one of: [{choices}]"
                )
            container = names[0]
        if container not in names:
            raise ApiError.bad_request(f"container {container} is not valid for pod {name}")
        runtime = cluster.kubelet.runtime_for(pod)
        if runtime is None or not runtime.started:
            reason = (runtime.waiting_reason() if runtime else None) or "ContainerCreating"
            if reason in ("ErrImagePull", "ImagePullBackOff"):
                reason = "trying and failing to pull image"
            raise ApiError.bad_request(
                f'container "{container}" in pod "{name}" is waiting to start: {reason}'
            )
        if container != names[0]:
            return Response(b"", media_type="text/plain")
        follow = _flag(request, "follow")
        stream = cluster.kubelet.read_log(
            runtime, follow=follow, timestamps=_flag(request, "timestamps")
        )
        if follow:

            async def body() -> AsyncIterator[bytes]:
                try:
                    async for chunk in stream:
                        yield chunk
                except LogStreamBroken as exc:
                    raise StreamBroken(str(exc)) from exc

            return StreamingResponse(body(), media_type="text/plain")
        data = b"".join([chunk async for chunk in stream])
        tail = request.query_params.get("tailLines")
        if tail is not None:
            lines = data.splitlines(keepends=True)
            data = b"".join(lines[-int(tail) :]) if int(tail) > 0 else b""
        limit = request.query_params.get("limitBytes")
        if limit is not None:
            data = data[: int(limit)]
        return Response(data, media_type="text/plain")

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
    return Starlette(
        routes=[
            WebSocketRoute(
                "/api/v1/namespaces/{namespace}/pods/{name}/exec", exec_endpoint(cluster)
            ),
            Route("/_emulator/{action}", control_endpoint(cluster), methods=["GET", "POST"]),
            Route("/{path:path}", api, methods=methods),
        ]
    )


__all__ = ["StreamBroken", "build_app"]
