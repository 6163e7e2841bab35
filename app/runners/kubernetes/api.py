"""The API boundary: every Kubernetes call the runner makes, as plain JSON dicts.

kubernetes_asyncio is untyped, so calls ask for the raw response (`_preload_content=False`), check
the status here and hand back dicts. A 404 is handled in one place: `_json(..., missing=True)`
returns None for it. Exec goes through the websocket channel protocol (`v4.channel.k8s.io`):
stdout/stderr arrive on channels 1/2 and the command's exit status as a `Status` on channel 3.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.stream import WsApiClient

Json = dict[str, Any]

# Every (API group, resource) -> verbs this runner calls; the Helm chart's Role must grant these
# and the runner checks them all at startup (tests check it calls nothing else).
REQUIRED_RBAC: dict[tuple[str, str], frozenset[str]] = {
    ("batch", "jobs"): frozenset({"create", "get", "list", "delete", "deletecollection"}),
    ("", "pods"): frozenset({"list"}),
    ("", "pods/exec"): frozenset({"create", "get"}),
    ("", "events"): frozenset({"list"}),
}
_STDIN, _STDOUT, _STDERR, _ERROR = 0, 1, 2, 3
_STDIN_CHUNK = 64 * 1024


class KubeError(Exception):
    def __init__(self, status: int, message: str, reason: str = "") -> None:
        super().__init__(f"{status} {reason}: {message}".strip())
        self.status = status
        self.message = message
        self.reason = reason


@dataclass(frozen=True)
class ExecResult:
    """How an exec ended: `exit_code` from the Status on the error channel (None: the stream
    broke before it came), or `error` when the command could not be started at all."""

    exit_code: int | None
    error: str | None = None


def _raise_for_status(status: int, body: bytes) -> None:
    if 200 <= status <= 299:
        return
    message, reason = body.decode("utf-8", "replace")[:500], ""
    with contextlib.suppress(ValueError, AttributeError):
        parsed = json.loads(body)
        message = str(parsed.get("message") or message)
        reason = str(parsed.get("reason") or "")
    raise KubeError(status, message, reason)


def exec_status(raw: bytes) -> ExecResult:
    """Decode the Status the kubelet sends on the error channel when the command ends."""
    try:
        status = json.loads(raw)
    except ValueError:
        return ExecResult(None, raw.decode("utf-8", "replace"))
    if status.get("status") == "Success":
        return ExecResult(0)
    for cause in (status.get("details") or {}).get("causes") or []:
        if cause.get("reason") == "ExitCode" and str(cause.get("message", "")).isdigit():
            return ExecResult(int(cause["message"]))
    return ExecResult(None, str(status.get("message") or "exec failed"))


class Kube:
    """Thin typed wrapper over the kubernetes_asyncio calls the runner makes."""

    def __init__(self, api_client: Any, ws_client: WsApiClient, namespace: str) -> None:
        # Typed as Any on purpose: bodies go in as plain dicts and responses come back raw.
        self._batch: Any = k8s_client.BatchV1Api(api_client)
        self._core: Any = k8s_client.CoreV1Api(api_client)
        self._auth: Any = k8s_client.AuthorizationV1Api(api_client)
        self._ws_core: Any = k8s_client.CoreV1Api(ws_client)
        self.ns = namespace

    @staticmethod
    async def _json(call: Awaitable[Any], *, missing: bool = False) -> Json | None:
        """The response body as JSON; with `missing`, None for a 404 instead of an error."""
        try:
            resp = await call
        except ApiException as exc:  # raised before a response exists (bad arguments)
            raise KubeError(int(exc.status or 0), str(exc.reason)) from exc
        try:
            body = await resp.read()
        finally:
            resp.release()
        if missing and resp.status == 404:
            return None
        _raise_for_status(resp.status, body)
        data = json.loads(body) if body else {}
        return data if isinstance(data, dict) else {}

    async def _must(self, call: Awaitable[Any]) -> Json:
        return await self._json(call) or {}

    async def create_job(self, body: Json) -> Json:
        return await self._must(
            self._batch.create_namespaced_job(self.ns, body, _preload_content=False)
        )

    async def read_job(self, name: str) -> Json | None:
        return await self._json(
            self._batch.read_namespaced_job(name, self.ns, _preload_content=False), missing=True
        )

    async def list_jobs(self, selector: str, limit: int | None = None) -> list[Json]:
        kwargs: dict[str, Any] = {"label_selector": selector, "_preload_content": False}
        if limit is not None:
            kwargs["limit"] = limit
        data = await self._must(self._batch.list_namespaced_job(self.ns, **kwargs))
        return list(data.get("items") or [])

    async def delete_job(self, name: str, grace: int | None = None) -> None:
        kwargs: dict[str, Any] = {"propagation_policy": "Background", "_preload_content": False}
        if grace is not None:
            kwargs["grace_period_seconds"] = grace
        await self._json(self._batch.delete_namespaced_job(name, self.ns, **kwargs), missing=True)

    async def delete_jobs(self, selector: str) -> None:
        await self._must(
            self._batch.delete_collection_namespaced_job(
                self.ns,
                label_selector=selector,
                propagation_policy="Background",
                _preload_content=False,
            )
        )

    async def list_pods(self, selector: str) -> list[Json]:
        data = await self._must(
            self._core.list_namespaced_pod(self.ns, label_selector=selector, _preload_content=False)
        )
        return list(data.get("items") or [])

    async def events_for(self, name: str) -> list[Json]:
        data = await self._must(
            self._core.list_namespaced_event(
                self.ns, field_selector=f"involvedObject.name={name}", _preload_content=False
            )
        )
        return list(data.get("items") or [])

    async def allowed(self, group: str, resource: str, verb: str) -> bool:
        name, _, sub = resource.partition("/")
        attributes: Json = {"namespace": self.ns, "verb": verb, "group": group, "resource": name}
        if sub:
            attributes["subresource"] = sub
        body = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": attributes},
        }
        review = await self._must(
            self._auth.create_self_subject_access_review(body, _preload_content=False)
        )
        return bool((review.get("status") or {}).get("allowed"))

    async def exec(
        self,
        pod: str,
        container: str,
        argv: list[str],
        stdin: bytes,
        on_output: Callable[[bytes], Awaitable[None]],
    ) -> ExecResult:
        """Run `argv` in the container, feeding `stdin`, passing stdout+stderr to `on_output`
        as it arrives. Raises KubeError when the connection cannot be upgraded (RBAC, no such
        pod/container); returns exit_code None when the stream broke before the status came."""
        try:
            connect = await self._ws_core.connect_get_namespaced_pod_exec(
                pod,
                self.ns,
                command=argv,
                container=container,
                stdin=True,
                stdout=True,
                stderr=True,
                tty=False,
                _preload_content=False,
            )
            async with connect as ws:
                for start in range(0, len(stdin), _STDIN_CHUNK):
                    chunk = stdin[start : start + _STDIN_CHUNK]
                    await ws.send_bytes(bytes([_STDIN]) + chunk)
                async for message in ws:
                    if message.type != aiohttp.WSMsgType.BINARY or not message.data:
                        continue
                    channel, data = message.data[0], bytes(message.data[1:])
                    if channel in (_STDOUT, _STDERR) and data:
                        await on_output(data)
                    elif channel == _ERROR and data:
                        return exec_status(data)
        except aiohttp.WSServerHandshakeError as exc:
            raise KubeError(exc.status, f"exec into pod {pod}: {exc.message}") from exc
        return ExecResult(None)
