"""Request guard: authenticate before any body is read, and bound bodies as they arrive.

A plain ASGI middleware (a BaseHTTPMiddleware would add a task and a queue to every request, SSE
streams included). Two rules, both applied before the route reads anything:

- With API tokens configured, a request that carries a body to the API must present a valid
  bearer token, or it gets 401 at once: an anonymous client cannot make the service buffer and
  decode megabytes of JSON. Roles (read/write) are still checked by the route's dependency.
- A body is counted as it arrives, whether it has a Content-Length or is chunked: a declared
  length over the limit is refused up front, a chunked body as soon as it passes the limit (413).
"""

from __future__ import annotations

import hmac

from fastapi import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.config import Settings

_AUTH_HEADERS = [(b"www-authenticate", b'Bearer realm="ci-executor"')]


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def token_matches(settings: Settings, presented: bytes) -> bool:
    """Constant-time over every configured token (no early exit)."""
    found = False
    for token in settings.tokens:
        if hmac.compare_digest(token.token.encode(), presented):
            found = True
    return found


class RequestGuard:
    def __init__(self, app: ASGIApp, settings: Settings, api_prefix: str = "/api/") -> None:
        self.app = app
        self.settings = settings
        self.limit = settings.max_workflow_bytes * 2 + 64 * 1024
        self.api_prefix = api_prefix

    def _has_body(self, scope: Scope) -> bool:
        length = _header(scope, b"content-length")
        if length is not None:
            return length.strip() not in (b"", b"0")
        return _header(scope, b"transfer-encoding") is not None

    def _authorized(self, scope: Scope) -> bool:
        if not self.settings.tokens:
            return True
        scheme, _, presented = (_header(scope, b"authorization") or b"").partition(b" ")
        if scheme.lower() != b"bearer" or not presented:
            return False
        return token_matches(self.settings, presented.strip())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if (
            self._has_body(scope)
            and str(scope.get("path", "")).startswith(self.api_prefix)
            and not self._authorized(scope)
        ):
            response = JSONResponse(
                {"detail": "missing or invalid bearer token"},
                status_code=401,
                headers={k.decode(): v.decode() for k, v in _AUTH_HEADERS},
            )
            await response(scope, receive, send)
            return
        length = _header(scope, b"content-length")
        if length is not None and length.strip().isdigit() and int(length) > self.limit:
            await self._too_large(scope, receive, send)
            return
        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    # FastAPI re-raises HTTPExceptions met while reading the body as they are,
                    # so the client gets this 413 rather than a parse error.
                    raise HTTPException(413, self._message())
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except HTTPException as exc:
            # Raised from the body read outside FastAPI's handling (a plain Starlette route).
            if exc.status_code != 413 or started:
                raise
            await self._too_large(scope, receive, send)

    def _message(self) -> str:
        return f"request body larger than {self.limit} bytes"

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = JSONResponse({"detail": self._message()}, status_code=413)
        await response(scope, receive, send)
