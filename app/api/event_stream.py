"""A minimal Server-Sent Events response: the request's own task writes the frames.

Why not sse-starlette's EventSourceResponse (used until now; its `ServerSentEvent` still encodes
every frame, so the wire format is unchanged): it runs each stream in an anyio task group with a
stream task, a ping task, a shutdown listener and a disconnect listener, plus their cancel
scopes and events. Measured with tracemalloc around idle subscribers (bench/sse_idle.py,
bench/RESULTS.md) that was about 25 KiB of the 62 KiB each idle subscriber cost. Here the body
iterator sends its own keep-alive comments and notices a server shutdown on the wake-ups it
makes anyway to poll (app/logs/stream.py), and one small task per stream waits for the client
to disconnect (the ASGI server only reports that through `receive`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

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
    def __init__(self, frames: AsyncIterator[bytes], status_code: int = 200) -> None:
        # Response.__init__ is not called: it renders a body, and this one has none up front.
        self.frames = frames
        self.status_code = status_code
        self.background = None
        self.raw_headers = list(_HEADERS)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = {"type": "http.response.start", "status": self.status_code}
        await send({**start, "headers": self.raw_headers})
        if scope.get("method") == "HEAD":
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        task = asyncio.current_task()
        assert task is not None
        state = {"gone": False, "finishing": False}

        async def watch_disconnect() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            if not state["finishing"]:
                state["gone"] = True
                task.cancel()  # wakes the stream wherever it waits, so its cleanup runs now

        watcher = asyncio.create_task(watch_disconnect())
        try:
            async for frame in self.frames:
                await send({"type": "http.response.body", "body": frame, "more_body": True})
            state["finishing"] = True
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not state["gone"]:
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
