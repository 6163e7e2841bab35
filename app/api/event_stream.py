"""A minimal Server-Sent Events response: the request's own task writes the frames.

Why not sse-starlette's EventSourceResponse (used until now; its `ServerSentEvent` still encodes
every frame, so the wire format is unchanged): it runs each stream in an anyio task group with a
stream task, a ping task, a shutdown listener and a disconnect listener, plus their cancel
scopes and events. Measured with tracemalloc around idle subscribers (bench/sse_idle.py,
bench/RESULTS.md) that was about 25 KiB of the 62 KiB each idle subscriber cost. Here the body
iterator sends its own keep-alive comments and notices a server shutdown on the wake-ups it
makes anyway to poll (app/logs/stream.py), and one small task per stream waits for the client
to disconnect (the ASGI server only reports that through `receive`).

And the stream does not run inside the route's call stack: `EventStreamHandoff`, wrapped around
the app's whole middleware stack (FastAPI's own error, telemetry and body-limit middleware
included, app/main.py), runs it after the route (validation, authentication) returned. An idle
stream then holds none of FastAPI's dependency and exception-handling frames, the middleware's
wrapped receive/send or the request objects (about 6 KiB per stream, measured the same way,
and 1 to 2 KiB more for FastAPI's own three). Outside that stack no exception handler catches
what the stream's check raises, so `stream` answers those errors itself, as the handlers do.
The route's database check (`check`, a 404 for an unknown build) runs here too, before any
header: it waits its turn for a read, and a thousand streams connecting at once would otherwise
each wait holding a whole request stack, leaving about 10 KiB per stream of freed but
fragmented memory in the process after the storm (RSS, bench/sse_idle.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from app.errors import answer

# The scope key where EventStreamHandoff waits for the route's stream (the router and
# FastAPI pass the same scope dict down to the route).
_HANDOFF = "ci_executor.event_stream"

# What EventSourceResponse sent: proxies must neither cache nor buffer the stream.
_HEADERS = [
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
    (b"connection", b"keep-alive"),
    (b"content-type", b"text/event-stream; charset=utf-8"),
]


class EventStream(Response):
    """Streams pre-encoded SSE frames until the iterator ends or the client goes away."""

    # No class-level media_type, as with EventSourceResponse: the route documents
    # text/event-stream itself, and the OpenAPI document (the web UI's types) stays as it was.
    # `status_code` is there for FastAPI's OpenAPI generator, which reads its default.
    def __init__(
        self,
        frames: AsyncIterator[bytes],
        status_code: int = 200,
        check: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        # Response.__init__ is not called: it renders a body, and this one has none up front.
        self.frames = frames
        # Run before the headers are sent, outside the route (see EventStreamHandoff): a
        # ServiceError it raises is answered as the app's handler would (`{"detail": ...}`).
        self.check = check
        self.status_code = status_code
        self.background = None
        self.raw_headers = list(_HEADERS)
        self._finishing = False  # the last (empty) body is being sent
        self._gone = False  # the client disconnected first

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        parked = scope.get(_HANDOFF)
        if parked is not None and not parked:
            parked.append(self)  # EventStreamHandoff runs it once the route's stack returned
            return
        await self.stream(scope, receive, send)

    async def stream(self, scope: Scope, receive: Receive, send: Send) -> None:
        check, self.check = self.check, None  # not held (with its closure) while streaming
        if check is not None:
            try:
                await check()
            except Exception as exc:  # answered as the app's exception handlers would
                status, detail = answer(exc, f"{scope.get('method')} {scope.get('path')}")
                await JSONResponse({"detail": detail}, status_code=status)(scope, receive, send)
                return
        start = {"type": "http.response.start", "status": self.status_code}
        await send({**start, "headers": self.raw_headers})
        if scope.get("method") == "HEAD":
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        task = asyncio.current_task()
        assert task is not None
        watcher = asyncio.create_task(self._watch_disconnect(receive, task))
        try:
            async for frame in self.frames:
                await send({"type": "http.response.body", "body": frame, "more_body": True})
            self._finishing = True
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not self._gone:
                raise
            task.uncancel()  # our own cancellation: the client left, which is a normal end
        except OSError:
            pass  # ASGI servers of spec 2.4 raise it on a send after the client left
        finally:
            watcher.cancel()
            aclose = getattr(self.frames, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()

    async def _watch_disconnect(self, receive: Receive, task: asyncio.Task[Any]) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        if not self._finishing:
            self._gone = True
            task.cancel()  # wakes the stream wherever it waits, so its cleanup runs now


class EventStreamHandoff:
    """Runs the EventStream a route whose path ends with `suffix` returned after the whole app
    stack below it has returned (see the module docstring). Wraps the app's whole middleware
    stack (app/main.py), so nothing else holds frames or wrappers while the stream is open."""

    def __init__(self, app: ASGIApp, suffix: str) -> None:
        self.app = app
        self.suffix = suffix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope.get("path", "")).endswith(self.suffix):
            await self.app(scope, receive, send)
            return
        parked: list[EventStream] = []
        # A copy, dropped when the route returns, with what the stack adds to it (FastAPI's
        # exit stacks, the route, path params); the stream needs only the server's scope.
        await self.app({**scope, _HANDOFF: parked}, receive, send)
        if parked:
            await parked[0].stream(scope, receive, send)
