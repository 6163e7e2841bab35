"""Container logs as the kubelet keeps them: stdout+stderr in one file (and a timestamped copy),
rotated at a size limit, the API serving only the current file; FallbackToLogsOnError."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
from collections.abc import AsyncIterator, Callable
from typing import BinaryIO

from tests.k8s_emulator.runtime import Follower, LogStreamBroken, PodRuntime

_LINE = re.compile(rb"[^\n]*\n|[^\n]+")
# The kubelet's container-log-max-size default.
DEFAULT_LOG_ROTATE_BYTES = 10 * 1024 * 1024
# FallbackToLogsOnError: the last lines/bytes of the log become the termination message.
_TERMINATION_LOG_BYTES = 2048
_TERMINATION_LOG_LINES = 80


def _log_timestamp() -> bytes:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
    return f"{stamp}000Z ".encode()


def log_tail(runtime: PodRuntime) -> str | None:
    """FallbackToLogsOnError: the tail of the log of a failed container."""
    try:
        data = runtime.log_path.read_bytes()[-_TERMINATION_LOG_BYTES:]
    except OSError:
        return None
    lines = data.splitlines(keepends=True)[-_TERMINATION_LOG_LINES:]
    return b"".join(lines).decode("utf-8", "replace") or None


async def pump(runtime: PodRuntime, read_fd: int, rotate_bytes: Callable[[], int]) -> None:
    """Copy the container's output into its log, rotating like the kubelet does."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    pipe = os.fdopen(read_fd, "rb", buffering=0)
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
    raw = open(runtime.log_path, "ab", buffering=0)  # noqa: SIM115 - reopened at rotation
    stamped = open(runtime.timestamped_log_path, "ab", buffering=0)  # noqa: SIM115
    try:
        while chunk := await reader.read(65536):
            while chunk:
                room = rotate_bytes() - raw.tell()
                if room <= 0:
                    # Like the kubelet's log rotation: the current file is moved aside and a
                    # new one started; the API only ever serves the current file.
                    raw.close()
                    stamped.close()
                    for path in (runtime.log_path, runtime.timestamped_log_path):
                        path.replace(path.with_suffix(path.suffix + ".1"))
                    raw = open(runtime.log_path, "ab", buffering=0)  # noqa: SIM115
                    stamped = open(runtime.timestamped_log_path, "ab", buffering=0)  # noqa: SIM115
                    runtime.log_generation += 1
                    continue
                _append(runtime, chunk[:room], raw, stamped)
                chunk = chunk[room:]
    finally:
        raw.close()
        stamped.close()
        transport.close()


def _append(runtime: PodRuntime, chunk: bytes, raw: BinaryIO, stamped: BinaryIO) -> None:
    raw.write(chunk)
    out = bytearray()
    stamp = _log_timestamp()
    for piece in _LINE.findall(chunk):
        if runtime.at_line_start:
            out += stamp
        out += piece
        runtime.at_line_start = piece.endswith(b"\n")
    stamped.write(bytes(out))
    runtime.notify()


# -- log reading -----------------------------------------------------------------------


async def read_log(runtime: PodRuntime, *, follow: bool, timestamps: bool) -> AsyncIterator[bytes]:
    path = runtime.timestamped_log_path if timestamps else runtime.log_path
    follower = Follower()
    runtime.followers.add(follower)
    generation = runtime.log_generation
    try:
        handle = open(path, "rb")  # noqa: SIM115 - reopened when the log rotates
        while True:
            follower.wake.clear()
            complete = runtime.log_complete
            data = handle.read(65536)
            if data:
                yield data
                continue
            if follow and generation != runtime.log_generation:
                # A follower goes on into the new file, as kubectl logs -f does.
                handle.close()
                generation = runtime.log_generation
                handle = open(path, "rb")  # noqa: SIM115
                continue
            if not follow or complete:
                return
            if follower.broken:
                raise LogStreamBroken(f"log stream of {runtime.name} broken by the emulator")
            await follower.wake.wait()
            if follower.broken:
                raise LogStreamBroken(f"log stream of {runtime.name} broken by the emulator")
    finally:
        handle.close()
        runtime.followers.discard(follower)
