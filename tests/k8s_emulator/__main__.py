"""`python -m tests.k8s_emulator --port 0 --state-dir DIR`: run the emulator until SIGTERM.

Prints `LISTENING http://127.0.0.1:PORT` once ready and writes DIR/kubeconfig.yaml for it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Generator
from pathlib import Path

import uvicorn

from tests.k8s_emulator.cluster import Cluster
from tests.k8s_emulator.server import TOKEN, build_app
from tests.k8s_emulator.users import STRICT_USERS_UNAVAILABLE

NAMESPACE = "ci"


def kubeconfig_text(url: str, namespace: str = NAMESPACE) -> str:
    return f"""apiVersion: v1
kind: Config
clusters:
- name: emulator
  cluster:
    server: {url}
    insecure-skip-tls-verify: true
users:
- name: test
  user:
    token: {TOKEN}
contexts:
- name: emulator
  context:
    cluster: emulator
    user: test
    namespace: {namespace}
current-context: emulator
"""


class _Server(uvicorn.Server):
    # uvicorn re-raises a caught SIGTERM after serving, which would kill the process before the
    # pods are cleaned up; the emulator handles its signals itself.
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


async def _serve(host: str, port: int, state_dir: Path, exit_on_stdin_eof: bool) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    port = sock.getsockname()[1]
    url = f"http://{host}:{port}"
    cluster = Cluster(state_dir, port)
    config = uvicorn.Config(
        build_app(cluster),
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=1,
    )
    server = _Server(config)
    loop = asyncio.get_running_loop()

    def stop() -> None:
        # Pods first: their processes must die even if the HTTP shutdown hangs.
        cluster.shutdown()
        server.should_exit = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    if exit_on_stdin_eof:
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

        async def watch_stdin() -> None:
            while await reader.read(4096):
                pass
            stop()

        stdin_task = asyncio.create_task(watch_stdin())
    cluster.start()
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started and not serving.done():
        await asyncio.sleep(0.01)
    if serving.done():
        await serving
        return
    (state_dir / "kubeconfig.yaml").write_text(kubeconfig_text(url))
    sys.stdout.write(f"LISTENING {url}\n")
    sys.stdout.flush()
    # Nothing else goes to stdout: the parent may have stopped reading it.
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    await serving
    cluster.shutdown()
    if exit_on_stdin_eof:
        stdin_task.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.k8s_emulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument(
        "--exit-on-stdin-eof",
        action="store_true",
        help="stop when stdin closes (the parent test process died)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    if STRICT_USERS_UNAVAILABLE:
        # Tests that need pods to run as their users ask `GET /_emulator/info` and skip.
        logging.getLogger("k8s_emulator").warning("%s", STRICT_USERS_UNAVAILABLE)
    asyncio.run(_serve(args.host, args.port, args.state_dir, args.exit_on_stdin_eof))


if __name__ == "__main__":
    main()
