"""`ci-executor serve` for what-if runs, used when BENCH_LOOP is set.

The benchmarks normally start the real `ci-executor serve`. This mirrors app/cli.py's serve with
two knobs, so a profile's suggested fix can be measured before app/ changes:
- BENCH_LOOP: uvicorn's event loop (`asyncio`, `uvloop`, `auto`);
- BENCH_APP_PATH: a directory holding a patched copy of `app/`, imported instead of ours;
- BENCH_PIDFD=1: asyncio's PidfdChildWatcher (Python 3.11 otherwise starts a thread per child).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys

if os.environ.get("BENCH_APP_PATH"):
    sys.path.insert(0, os.environ["BENCH_APP_PATH"])

import uvicorn

from app.config import Settings
from app.main import create_app


def main() -> None:
    settings = Settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        loop=sys.argv[1],
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
