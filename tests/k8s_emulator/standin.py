"""A service container's stand-in process: `standin.py [--delay S] PORT...`.

Listens on each TCP port (after `--delay` seconds, so readiness has something to wait for) and
answers every line it receives with `<port> <line>`; `PING` gets `+PONG` (enough for a step
to see it reached this service). Exits 0 on SIGTERM, like a well-behaved server. Standard
library only: it runs as the pod's user with the system Python.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys


async def _serve(port: int) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                text = line.decode(errors="replace").strip()
                reply = "+PONG" if text.upper() == "PING" else f"{port} {text}"
                writer.write(reply.encode() + b"\r\n")
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", port, reuse_address=True)


async def _main(ports: list[int], delay: float) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    if delay > 0:
        try:
            await asyncio.wait_for(stop.wait(), delay)
            return
        except TimeoutError:
            pass
    servers = [await _serve(port) for port in ports]
    sys.stdout.write(f"stand-in listening on {', '.join(map(str, ports)) or 'no port'}\n")
    sys.stdout.flush()
    await stop.wait()
    for server in servers:
        server.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("ports", type=int, nargs="*")
    args = parser.parse_args()
    asyncio.run(_main(args.ports, args.delay))


if __name__ == "__main__":
    main()
