"""`ci-executor serve` for what-if runs, used when BENCH_LOOP is set.

The benchmarks normally start the real `ci-executor serve`. This mirrors app/cli.py's serve with
two knobs, so a profile's suggested fix can be measured before app/ changes:
- BENCH_LOOP: uvicorn's event loop (`asyncio`, `uvloop`, `auto`);
- BENCH_APP_PATH: a directory holding a patched copy of `app/`, imported instead of ours;
- BENCH_PIDFD=1: asyncio's PidfdChildWatcher (Python 3.11 otherwise starts a thread per child).

`python -m bench._serve bare` serves `bare_stream` instead, under the same uvicorn settings as
`ci-executor serve`: the floor for what an idle streaming connection costs (bench/sse_idle.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys

if os.environ.get("BENCH_APP_PATH"):
    sys.path.insert(0, os.environ["BENCH_APP_PATH"])

import uvicorn
from starlette.types import Receive, Scope, Send

from app.config import Settings
from app.main import create_app

_STATUS = b'event: status\r\ndata: {"kind":"build"}\r\n\r\n'


async def bare_stream(scope: Scope, receive: Receive, send: Send) -> None:
    """An ASGI app holding every request open as an event stream, with nothing per request but
    the server's own task: one status frame, then wait for the client to leave. /healthz answers
    at once."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    headers = [(b"content-type", b"text/event-stream; charset=utf-8")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    if scope["path"] == "/healthz":
        await send({"type": "http.response.body", "body": b"ok"})
        return
    await send({"type": "http.response.body", "body": _STATUS, "more_body": True})
    while (await receive())["type"] != "http.disconnect":
        pass


def serve_bare() -> None:
    uvicorn.run(
        bare_stream,
        host=os.environ.get("HOST", "127.0.0.1"),
        port=int(os.environ["PORT"]),
        log_level="warning",
        loop="asyncio",
    )


def main() -> None:
    if sys.argv[1] == "bare":
        serve_bare()
        return
    settings = Settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:  # ci-executor serve's HTTP protocol
        from app.serving import UVICORN_OPTIONS

        http = UVICORN_OPTIONS["http"]
    except ImportError:  # an app/ from before app/serving.py: uvicorn's own
        http = "auto"
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        loop=sys.argv[1],
        http=http,
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds) + 15,
    )
    if os.environ.get("BENCH_PIDFD") != "1":
        uvicorn.Server(config).run()
        return

    async def serve() -> None:
        watcher = asyncio.PidfdChildWatcher()
        watcher.attach_loop(asyncio.get_running_loop())
        asyncio.set_child_watcher(watcher)
        await uvicorn.Server(config).serve()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
