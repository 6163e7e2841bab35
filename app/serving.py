"""The HTTP server's protocol: uvicorn's httptools protocol, plus one extension the blob routes
use to take a big request body straight from the socket.

Why: an upload's body normally reaches the app 64-256 KiB at a time through the event loop
(uvicorn's `receive`: a `recv`, two copies into and out of its body buffer, a pause and a resume
of the socket, a task wake-up per piece). For a 1 GiB artifact that was 1.3 s of the event
loop's CPU on this two-core machine, most of the upload's wall time (bench/RESULTS.md). With the
extension, the route hands the socket to a worker thread that reads the remaining `Content-Length`
bytes itself, hashing and writing them as they come; the loop sees nothing until the body is
complete. Nothing in ASGI or uvicorn offers this, hence our own protocol class (a subclass using
uvicorn's per-connection state, which is why `pyproject.toml` pins uvicorn's minor version).

Only a plain-HTTP connection, a request with a `Content-Length` (not chunked), and a body not
yet complete qualify; anything else is read the ordinary way. A body that fails half-way (the
client went away, stalled, or the app refused the bytes) closes the connection after the
response: the rest of the body was never read, so the connection cannot carry another request.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import weakref
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from pathlib import Path
from typing import Any, BinaryIO

import httptools
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

# The scope extension under which BlobProtocol offers each request a `BlobIO`.
BLOB_IO = "ci-executor.blob_io"
# A direct body that sends nothing for this long is given up (its worker thread is freed).
STALL_SECONDS = 60.0

Sink = Callable[[memoryview], None]


class BlobProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, offering `BLOB_IO` to every request it starts."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.body_seen = 0  # the current request's body bytes the parser has passed on

    def on_message_begin(self) -> None:
        self.body_seen = 0
        super().on_message_begin()

    def on_body(self, body: bytes) -> None:
        self.body_seen += len(body)
        super().on_body(body)

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        extensions: dict[str, Any] = cycle.scope.setdefault("extensions", {})
        extensions[BLOB_IO] = BlobIO(self, cycle)
        super()._start_asgi_task(cycle, app)

    def fresh_parser(self) -> None:
        """A new parser for the next request: the old one still expects the body the worker
        thread read past it."""
        self.parser = httptools.HttpRequestParser(self)
        with contextlib.suppress(AttributeError):  # httptools < 0.6.3, as uvicorn does
            self.parser.set_dangerous_leniencies(lenient_data_after_close=True)


class BlobIO:
    """What BlobProtocol offers one request: its body's socket, and sendfile for its response.

    It holds its protocol and cycle weakly: the scope holds it, and the cycle the scope, so
    strong references make every request a reference cycle that only the garbage collector
    frees (tests/test_serving.py counts them), and a collection pauses the event loop."""

    __slots__ = ("_cycle", "_protocol")

    def __init__(self, protocol: BlobProtocol, cycle: RequestResponseCycle) -> None:
        self._protocol = weakref.ref(protocol)
        self._cycle = weakref.ref(cycle)

    def take_body(self) -> _Socket | None:
        """The rest of the request's body as a socket to read, with the socket's reading
        paused; or None when it cannot be read directly (then it is read the ordinary way)."""
        protocol, cycle = self._protocol(), self._cycle()
        if (
            protocol is None
            or cycle is None
            or protocol.cycle is not cycle
            or protocol.parser is None
            or protocol.scheme != "http"
            or cycle.response_started
            or cycle.disconnected
            or not cycle.more_body
            or protocol.transport.is_closing()
        ):
            return None
        length = None
        for name, value in cycle.scope["headers"]:
            if name == b"transfer-encoding":
                return None
            if name == b"content-length":
                length = int(value)  # the parser accepted it: digits
        sock = protocol.transport.get_extra_info("socket")
        if length is None or sock is None or length <= protocol.body_seen:
            return None
        protocol.flow.pause_reading()
        if cycle.waiting_for_100_continue:
            protocol.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            cycle.waiting_for_100_continue = False
        prefix, cycle.body = bytes(cycle.body), bytearray()
        return _Socket(protocol, cycle, sock.fileno(), prefix, length - protocol.body_seen)

    async def sendfile(self, file: BinaryIO, offset: int, count: int) -> None:
        """`count` bytes of `file` from `offset` as part of the response body (started with a
        Content-Length), by sendfile(2): the bytes go from the page cache to the socket
        without passing through Python. A client gone away raises ClientDisconnect."""
        protocol, cycle = self._protocol(), self._cycle()
        if protocol is None or cycle is None:
            raise ClientDisconnect()
        # (Not `protocol.cycle is cycle`: a request pipelined behind this one may be parsed
        # already, and waits for this response to end.)
        if (
            not cycle.response_started
            or cycle.response_complete
            or cycle.chunked_encoding is not False
            or count > cycle.expected_content_length
        ):
            raise RuntimeError("sendfile outside a response body of known length")
        if cycle.disconnected or protocol.transport.is_closing():
            raise ClientDisconnect()
        try:
            # asyncio's own: waits for the transport's buffer to empty, pauses its reading,
            # and sends from the loop's thread as the socket drains (no worker thread).
            sent = await protocol.loop.sendfile(protocol.transport, file, offset, count)
        except (ConnectionError, OSError) as exc:
            protocol.transport.close()
            raise ClientDisconnect(str(exc)) from None
        if sent != count:
            # The file is shorter than it should be: the response can only end short, and the
            # connection with it (the client must not read the next answer as these bytes).
            protocol.transport.close()
            raise OSError(f"{file.name!r} ended {count - sent} bytes short of its size")
        cycle.expected_content_length -= count


class _Gone(Exception):
    """The client is gone, or as good as: the connection closed or reset before the body's
    end, no byte came for STALL_SECONDS, or the request was cancelled."""


class _Socket:
    """A request body's remaining bytes, read from the connection's socket in a worker thread."""

    def __init__(
        self, protocol: BlobProtocol, cycle: RequestResponseCycle, fd: int, prefix: bytes, left: int
    ) -> None:
        self.protocol, self.cycle, self.fd = protocol, cycle, fd
        self.prefix, self.left = prefix, left

    async def pour(self, sink: Sink, executor: Executor, buffer: Callable[[], bytearray]) -> None:
        loop = asyncio.get_running_loop()
        wake_read, wake_write = os.pipe()
        # The thread reads its own descriptor of the socket, and closes it and `wake_read`
        # itself: a descriptor closed under it could name another file by its next read.
        fd = os.dup(self.fd)
        try:
            future = loop.run_in_executor(executor, self._read, fd, sink, wake_read, buffer)
        except BaseException:
            for unused in (fd, wake_read, wake_write):
                os.close(unused)
            raise
        try:
            try:
                await asyncio.wait([future])
            except asyncio.CancelledError:
                os.write(wake_write, b"\0")  # the thread stops at its next wait for bytes
                await asyncio.wait([future])
                future.exception()  # its _Gone is this cancellation: retrieved, not logged
                raise
            future.result()
        except BaseException as exc:
            if future.done() and future.cancelled():  # never ran (the pool was shut down)
                os.close(fd)
                os.close(wake_read)
            # The body was not read to its end: the connection cannot carry another request.
            self.cycle.keep_alive = False
            if isinstance(exc, (_Gone, asyncio.CancelledError)):
                self.protocol.transport.close()
            if isinstance(exc, _Gone):
                raise ClientDisconnect(str(exc)) from None
            raise
        finally:
            os.close(wake_write)  # the thread, if still waiting, wakes to the closed pipe
        self.protocol.fresh_parser()
        self.cycle.more_body = False
        self.protocol.flow.resume_reading()

    def _read(self, fd: int, sink: Sink, wake: int, buffer: Callable[[], bytearray]) -> None:
        """In a worker thread: every remaining byte from `fd` to `sink`, through one buffer.
        Closes `fd` and `wake` when done."""
        try:
            self._read_all(fd, sink, wake, buffer)
        finally:
            os.close(fd)
            os.close(wake)

    def _read_all(self, fd: int, sink: Sink, wake: int, buffer: Callable[[], bytearray]) -> None:
        if self.prefix:
            sink(memoryview(self.prefix))
        left = self.left
        view = memoryview(buffer())
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        poller.register(wake, select.POLLIN)
        while left:
            try:
                count = os.readv(fd, [view[: min(len(view), left)]])
            except BlockingIOError:
                ready = poller.poll(STALL_SECONDS * 1000)
                if not ready:
                    raise _Gone(f"no body bytes for {STALL_SECONDS:.0f} s") from None
                if any(ready_fd == wake for ready_fd, _ in ready):
                    raise _Gone("the request was cancelled") from None
                continue
            except ConnectionError as exc:
                raise _Gone(f"the connection failed {left} bytes short: {exc}") from None
            if count == 0:
                raise _Gone(f"the client closed the connection {left} bytes short")
            sink(view[:count])
            left -= count


class RequestBody:
    """A blob route's request body: an async iterable of chunks (the ordinary way), or, with
    `pour`, the whole remaining body handed to a sink from a worker thread."""

    def __init__(self, request: Request) -> None:
        self._request = request
        self._io: BlobIO | None = request.scope.get("extensions", {}).get(BLOB_IO)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._request.stream()

    async def pour(self, sink: Sink, executor: Executor, buffer: Callable[[], bytearray]) -> bool:
        """Every remaining byte of the body to `sink`, called in a thread of `executor` with
        views of the bytearray `buffer()` gives that thread (so consumed before it returns).
        False, having read nothing, when the server cannot hand the socket over: iterate then.
        A client that goes away (or sends nothing for STALL_SECONDS) raises ClientDisconnect;
        an exception from `sink` is raised as it is. Either way the connection closes after
        the response."""
        body = self._io.take_body() if self._io is not None else None
        if body is None:
            return False
        await body.pour(sink, executor, buffer)
        return True


class FilesResponse(Response):
    """A response whose body is the concatenation of whole files, sent with sendfile(2): for a
    server that offers `BLOB_IO` only (see `can_sendfile`)."""

    def __init__(self, files: list[tuple[Path, int]], headers: dict[str, str], media_type: str):
        super().__init__(status_code=200, headers=headers, media_type=media_type)
        self.files = files
        self.headers["content-length"] = str(sum(size for _, size in files))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:  # noqa: ARG002
        io: BlobIO = scope["extensions"][BLOB_IO]
        start = {"type": "http.response.start", "status": 200, "headers": self.raw_headers}
        await send(start)
        for path, size in self.files:
            if not size:
                continue  # sendfile(2) of nothing is refused
            # Opened one at a time (a composed artifact has a part per 8 MiB block). A part
            # deleted meanwhile ends the response short: the client sees a broken transfer.
            with path.open("rb") as file:
                await io.sendfile(file, 0, size)
        await send({"type": "http.response.body", "body": b""})


def can_sendfile(request: Request) -> bool:
    return BLOB_IO in request.scope.get("extensions", {})


# How `ci-executor serve` runs uvicorn (and the tests' in-process servers, so they serve the
# same way). uvloop forks each step's process noticeably slower than asyncio's default loop does
# (measured by bench/step_overhead.py), and steps are what this service spawns all day.
UVICORN_OPTIONS: dict[str, Any] = {"loop": "asyncio", "http": BlobProtocol}
