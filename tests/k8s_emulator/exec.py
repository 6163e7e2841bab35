"""`pods/{name}/exec` over a websocket, with the kubelet's channel protocol.

Subprotocols `v4.channel.k8s.io` and `v5.channel.k8s.io`: every binary message starts with its
channel byte: 0 stdin, 1 stdout, 2 stderr, 3 error (one `Status` JSON when the command ends),
4 resize. v5 adds 255 (close): `[255, 0]` closes the command's stdin. A dropped connection closes
stdin and the output pipes, as the container runtime does; the command itself keeps running.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.responses import JSONResponse
from starlette.websockets import WebSocket, WebSocketDisconnect

from tests.k8s_emulator.store import PODS

if TYPE_CHECKING:
    from tests.k8s_emulator.cluster import Cluster

PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255


@dataclass(eq=False)
class ExecSession:
    broken: asyncio.Event = field(default_factory=asyncio.Event)


def _status(
    code: int, message: str, reason: str, causes: list[dict[str, str]] | None = None
) -> bytes:
    body: dict[str, Any] = {"metadata": {}, "status": "Failure", "message": message}
    body["reason"] = reason
    if causes is not None:
        body["details"] = {"causes": causes}
    if code:
        body["code"] = code
    return json.dumps(body).encode()


def _exit_status(argv: list[str], returncode: int) -> bytes:
    if returncode == 0:
        return json.dumps({"metadata": {}, "status": "Success"}).encode()
    code = returncode if returncode > 0 else 128 - returncode
    return _status(
        0,
        f"command terminated with non-zero exit code: error executing command {argv}, exit code "
        f"{code}",
        "NonZeroExitCode",
        [{"reason": "ExitCode", "message": str(code)}],
    )


def exec_endpoint(cluster: Cluster) -> Callable[[WebSocket], Awaitable[None]]:
    from tests.k8s_emulator.server import TOKEN, USER

    async def deny(ws: WebSocket, code: int, reason: str, message: str) -> None:
        body = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        }
        await ws.send_denial_response(JSONResponse(body, status_code=code))

    async def endpoint(ws: WebSocket) -> None:
        namespace, name = ws.path_params["namespace"], ws.path_params["name"]
        call = {
            "verb": "create",
            "path": ws.url.path,
            "method": "GET",
            "group": "",
            "resource": "pods/exec",
            "namespace": namespace,
            "name": name,
        }
        cluster.calls.append(call)
        if ws.headers.get("authorization") != f"Bearer {TOKEN}":
            call["code"] = 401
            await deny(ws, 401, "Unauthorized", "Unauthorized")
            return
        if cluster.toggles.forbidden("create", "pods/exec"):
            call["code"] = 403
            await deny(
                ws,
                403,
                "Forbidden",
                f'pods "{name}" is forbidden: User "{USER}" cannot create resource "pods/exec" '
                f'in API group "" in the namespace "{namespace}"',
            )
            return
        pod = cluster.store.get(PODS, namespace, name)
        runtime = cluster.kubelet.runtime_for(pod) if pod else None
        if pod is None or runtime is None:
            call["code"] = 404
            await deny(ws, 404, "NotFound", f'pods "{name}" not found')
            return
        names = [c["name"] for c in pod["spec"]["containers"]]
        container = ws.query_params.get("container") or names[0]
        if container not in names:
            call["code"] = 400
            await deny(ws, 400, "BadRequest", f"container {container} is not valid for pod {name}")
            return
        if container != names[0] or "running" not in runtime.state:
            call["code"] = 400
            await deny(
                ws,
                400,
                "BadRequest",
                f'unable to upgrade connection: container not found ("{container}")',
            )
            return
        offered = [p.strip() for p in ws.headers.get("sec-websocket-protocol", "").split(",")]
        chosen = next((p for p in PROTOCOLS if p in offered), None)
        if chosen is None:
            call["code"] = 400
            await deny(ws, 400, "BadRequest", "no supported channel subprotocol was requested")
            return
        argv = ws.query_params.getlist("command")
        call["code"] = 101
        await ws.accept(subprotocol=chosen)
        session = ExecSession()
        runtime.exec_sessions.add(session)
        try:
            await _run(cluster, runtime, ws, argv, session, chosen.startswith("v5"))
        finally:
            runtime.exec_sessions.discard(session)

    return endpoint


async def _run(
    cluster: Cluster, runtime: Any, ws: WebSocket, argv: list[str], session: ExecSession, v5: bool
) -> None:
    try:
        proc = await cluster.kubelet.start_exec(runtime, argv)
    except OSError as exc:
        what = argv[0] if argv else ""
        message = (
            "OCI runtime exec failed: exec failed: unable to start container process: exec: "
            f'"{what}": executable file not found in $PATH: unknown'
            if exc.errno == 2
            else f"OCI runtime exec failed: {exc.strerror}: unknown"
        )
        with contextlib.suppress(Exception):
            await ws.send_bytes(bytes([ERROR]) + _status(500, message, "InternalError", []))
            await ws.close()
        return
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    send_lock = asyncio.Lock()
    connected = True

    async def send(channel: int, data: bytes) -> None:
        nonlocal connected
        if not connected:
            return
        try:
            async with send_lock:
                await ws.send_bytes(bytes([channel]) + data)
        except (WebSocketDisconnect, RuntimeError, OSError):
            connected = False

    async def pump(stream: asyncio.StreamReader, channel: int) -> None:
        while chunk := await stream.read(65536):
            await send(channel, chunk)
            if not connected:
                return

    async def receive() -> None:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("bytes") or (message.get("text") or "").encode()
            if not data:
                continue
            channel, payload = data[0], data[1:]
            if channel == STDIN and not proc.stdin.is_closing():
                proc.stdin.write(payload)
                with contextlib.suppress(ConnectionError):
                    await proc.stdin.drain()
            elif channel == CLOSE and v5 and payload[:1] == bytes([STDIN]):
                proc.stdin.close()

    outputs = asyncio.gather(pump(proc.stdout, STDOUT), pump(proc.stderr, STDERR))
    receiver = asyncio.create_task(receive())
    broken = asyncio.create_task(session.broken.wait())
    waiter = asyncio.create_task(proc.wait())
    done, _ = await asyncio.wait(
        {outputs, receiver, broken, waiter}, return_when=asyncio.FIRST_COMPLETED
    )
    if receiver in done or broken in done:
        # The client is gone (or the emulator cut the stream): stdin closes and nobody reads the
        # output any more, so the command gets SIGPIPE on its next write, like in a container.
        connected = False
        proc.stdin.close()
        outputs.cancel()
        for transport in (proc.stdout, proc.stderr):
            transport_obj = getattr(transport, "_transport", None)
            if transport_obj is not None:
                transport_obj.close()
        if broken in done:
            with contextlib.suppress(Exception):
                await ws.close(code=1011)
        for task in (receiver, broken):
            task.cancel()
        await asyncio.gather(outputs, return_exceptions=True)
        return
    await waiter
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await outputs
    await send(ERROR, _exit_status(argv, proc.returncode if proc.returncode is not None else -9))
    receiver.cancel()
    broken.cancel()
    with contextlib.suppress(Exception):
        await ws.close()


__all__ = ["ExecSession", "exec_endpoint"]
