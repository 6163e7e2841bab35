"""app/serving.py against a real uvicorn on loopback and raw sockets: request bodies read
straight from the socket by a worker thread, and responses sent with sendfile. The hostile
cases are the point: pipelined requests after a body, clients that vanish or stall half-way, a
sink that refuses the bytes, a request cancelled while its thread reads."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import os
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from app import serving
from app.serving import FilesResponse, RequestBody, can_sendfile
from tests.support import uvicorn_server


@dataclass
class Seen:
    """What the test app saw, for the test to check."""

    executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="reader")
    )
    errors: list[BaseException] = field(default_factory=list)
    failed: asyncio.Event = field(default_factory=asyncio.Event)
    first_piece: asyncio.Event = field(default_factory=asyncio.Event)
    freed: asyncio.Event = field(default_factory=asyncio.Event)
    files: list[tuple[Path, int]] = field(default_factory=list)


def make_app(seen: Seen) -> Starlette:
    async def put(request: Request) -> Response:
        digest, size, threads = hashlib.sha256(), [0], set()
        refuse = request.query_params.get("refuse") == "1"
        loop = asyncio.get_running_loop()

        def sink(piece: memoryview) -> None:
            threads.add(threading.current_thread().name)
            if refuse:
                raise ValueError("refused")
            digest.update(piece)
            size[0] += len(piece)
            loop.call_soon_threadsafe(seen.first_piece.set)

        body = RequestBody(request)
        try:
            poured = await body.pour(sink, seen.executor, lambda: bytearray(64 * 1024))
            if not poured:
                async for chunk in body:
                    sink(memoryview(chunk))
        except (ValueError, ClientDisconnect) as exc:
            seen.errors.append(exc)
            seen.failed.set()
            return PlainTextResponse(str(exc), status_code=413)
        return JSONResponse(
            {"poured": poured, "sha256": digest.hexdigest(), "size": size[0], "threads": [*threads]}
        )

    async def cancelled(request: Request) -> Response:
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(
            RequestBody(request).pour(
                lambda _: loop.call_soon_threadsafe(seen.first_piece.set),
                seen.executor,
                lambda: bytearray(64 * 1024),
            )
        )
        await seen.first_piece.wait()
        task.cancel()
        try:
            await task
        except asyncio.CancelledError as exc:
            seen.errors.append(exc)
        # Runs only once the reader thread has stopped: the pool has one thread.
        await asyncio.wrap_future(seen.executor.submit(lambda: None))
        seen.freed.set()
        return PlainTextResponse("unreachable: the connection is closed")

    async def get(request: Request) -> Response:
        assert can_sendfile(request)
        headers = {"x-served": "sendfile"}
        response = FilesResponse(seen.files, headers, "application/octet-stream")

        async def guarded(scope, receive, send):  # type: ignore[no-untyped-def]
            try:
                await response(scope, receive, send)
            except (ClientDisconnect, OSError) as exc:
                seen.errors.append(exc)
                seen.failed.set()
                raise

        return guarded  # type: ignore[return-value]

    async def ping(_: Request) -> Response:
        return PlainTextResponse("pong")

    return Starlette(
        routes=[
            Route("/put", put, methods=["PUT"]),
            Route("/cancelled", cancelled, methods=["PUT"]),
            Route("/get", get),
            Route("/ping", ping),
        ]
    )


@pytest.fixture
async def served() -> AsyncIterator[tuple[str, Seen]]:
    seen = Seen()
    try:
        async with uvicorn_server(make_app(seen)) as url:
            yield url, seen
    finally:
        seen.executor.shutdown(wait=False, cancel_futures=True)


async def connect(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = url.removeprefix("http://").split(":")
    return await asyncio.open_connection(host, int(port))


def put_head(path: str, size: int, *extra: str) -> bytes:
    lines = [f"PUT {path} HTTP/1.1", "Host: t", f"Content-Length: {size}", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def send_part(
    url: str, path: str, size: int, sent: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A PUT announcing `size` bytes of body, of which only `sent` are sent (for now)."""
    reader, writer = await connect(url)
    writer.write(put_head(path, size) + os.urandom(sent))
    await writer.drain()
    return reader, writer


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    status = int(head[0].split()[1])
    headers = {}
    for line in head[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, body


async def test_a_body_is_poured_by_a_worker_thread_and_a_pipelined_request_survives(
    served: tuple[str, Seen],
) -> None:
    """The thread reads exactly Content-Length bytes: the request sent right behind the body
    (in the same write) is still answered on the same connection."""
    url, _ = served
    body = os.urandom(3 * 1024 * 1024 + 17)  # more than uvicorn's first read
    reader, writer = await connect(url)
    writer.write(put_head("/put", len(body)) + body + b"GET /ping HTTP/1.1\r\nHost: t\r\n\r\n")
    await writer.drain()
    status, _, answer = await read_response(reader)
    assert status == 200, answer
    result = httpx.Response(200, content=answer).json()
    assert result["poured"] is True
    assert result["size"] == len(body)
    assert result["sha256"] == hashlib.sha256(body).hexdigest()
    assert all(name.startswith("reader") for name in result["threads"])
    status, _, pong = await read_response(reader)
    assert (status, pong) == (200, b"pong")
    writer.close()


async def test_the_connection_carries_the_next_request_after_a_poured_body(
    served: tuple[str, Seen],
) -> None:
    url, _ = served
    reader, writer = await connect(url)
    for size in (2 * 1024 * 1024, 5 * 1024 * 1024 + 1):
        body = os.urandom(size)
        writer.write(put_head("/put", size) + body)
        await writer.drain()
        status, headers, answer = await read_response(reader)
        assert status == 200
        assert httpx.Response(200, content=answer).json()["size"] == size
        assert headers.get("connection") != "close"
    writer.close()


async def test_a_chunked_body_is_read_the_ordinary_way(served: tuple[str, Seen]) -> None:
    url, _ = served
    body = os.urandom(1024 * 1024)
    async with httpx.AsyncClient() as client:

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(body), 100_000):
                yield body[start : start + 100_000]

        answer = (await client.put(f"{url}/put", content=chunks())).json()
    assert answer["poured"] is False
    assert answer["sha256"] == hashlib.sha256(body).hexdigest()


async def test_expect_100_continue_is_answered_before_the_thread_reads(
    served: tuple[str, Seen],
) -> None:
    url, _ = served
    body = os.urandom(2 * 1024 * 1024)
    reader, writer = await connect(url)
    writer.write(put_head("/put", len(body), "Expect: 100-continue"))
    await writer.drain()
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 100 Continue")
    writer.write(body)
    await writer.drain()
    status, _, answer = await read_response(reader)
    assert status == 200
    assert httpx.Response(200, content=answer).json()["poured"] is True
    writer.close()


async def test_a_client_gone_half_way_is_a_disconnect_and_frees_the_thread(
    served: tuple[str, Seen],
) -> None:
    url, seen = served
    _, writer = await send_part(url, "/put", 4 * 1024 * 1024, 1024 * 1024)
    await seen.first_piece.wait()
    writer.close()
    await seen.failed.wait()
    assert isinstance(seen.errors[0], ClientDisconnect)
    assert "short" in str(seen.errors[0])
    # The pool's only thread is free again: a whole upload goes through.
    body = os.urandom(1024 * 1024)
    async with httpx.AsyncClient() as client:
        answer = (await client.put(f"{url}/put", content=body)).json()
    assert answer["poured"] is True
    assert answer["sha256"] == hashlib.sha256(body).hexdigest()


async def test_a_stalled_body_is_given_up_and_its_connection_closed(
    served: tuple[str, Seen], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(serving, "STALL_SECONDS", 0.3)
    url, seen = served
    reader, writer = await send_part(url, "/put", 4 * 1024 * 1024, 512 * 1024)
    await seen.failed.wait()
    assert isinstance(seen.errors[0], ClientDisconnect)
    assert "no body bytes" in str(seen.errors[0])
    assert await reader.read() == b""  # closed by the server, no answer on a broken request
    writer.close()


async def test_a_sink_that_refuses_gets_its_answer_out_and_the_connection_closes(
    served: tuple[str, Seen],
) -> None:
    url, seen = served
    reader, writer = await send_part(url, "/put?refuse=1", 8 * 1024 * 1024, 1024 * 1024)
    status, headers, answer = await read_response(reader)
    assert (status, answer) == (413, b"refused")
    assert headers["connection"] == "close"  # the rest of the body was never read
    try:
        rest = await reader.read()
    except ConnectionResetError:  # closed with the body's bytes unread: the kernel resets
        rest = b""
    assert rest == b""
    assert isinstance(seen.errors[0], ValueError)
    writer.close()


async def test_a_pour_cancelled_wakes_and_frees_its_thread(
    served: tuple[str, Seen], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client keeps the connection open and sends nothing more: only the wake-up on
    cancellation ends the thread's wait (the stall limit is set far past the test's timeout)."""
    monkeypatch.setattr(serving, "STALL_SECONDS", 3600.0)
    url, seen = served
    reader, writer = await send_part(url, "/cancelled", 4 * 1024 * 1024, 256 * 1024)
    await seen.first_piece.wait()
    # The connection is closed (its body was not read to the end): no answer comes.
    assert await reader.read() == b""
    await seen.freed.wait()
    writer.close()
    assert isinstance(seen.errors[0], asyncio.CancelledError)


async def test_files_are_sent_whole_and_in_order_with_sendfile(
    served: tuple[str, Seen], tmp_path: Path
) -> None:
    url, seen = served
    contents = [os.urandom(1024 * 1024 + 3), b"", os.urandom(5), os.urandom(2 * 1024 * 1024)]
    for index, data in enumerate(contents):
        path = tmp_path / f"part{index}"
        path.write_bytes(data)
        seen.files.append((path, len(data)))
    async with httpx.AsyncClient() as client:
        for _ in range(2):  # the same kept-alive connection serves the second
            answer = await client.get(f"{url}/get")
            assert answer.status_code == 200
            assert answer.headers["content-length"] == str(sum(map(len, contents)))
            assert answer.content == b"".join(contents)
        assert (await client.get(f"{url}/ping")).text == "pong"
    # Pipelined: the second request is parsed while the first one's files are being sent.
    reader, writer = await connect(url)
    writer.write(b"GET /get HTTP/1.1\r\nHost: t\r\n\r\n" * 2)
    await writer.drain()
    for _ in range(2):
        status, _, body = await read_response(reader)
        assert (status, body == b"".join(contents)) == (200, True)
    writer.close()


async def test_a_download_abandoned_half_way_is_a_disconnect(
    served: tuple[str, Seen], tmp_path: Path
) -> None:
    url, seen = served
    big = tmp_path / "big"
    with big.open("wb") as f:
        f.truncate(256 * 1024 * 1024)  # more than any socket buffer holds
    seen.files.append((big, big.stat().st_size))
    reader, writer = await connect(url)
    writer.write(b"GET /get HTTP/1.1\r\nHost: t\r\n\r\n")
    await writer.drain()
    await reader.readuntil(b"\r\n\r\n")
    await reader.readexactly(1024 * 1024)
    writer.close()
    await seen.failed.wait()
    assert isinstance(seen.errors[0], ClientDisconnect)
    async with httpx.AsyncClient() as client:  # the server goes on
        assert (await client.get(f"{url}/ping")).text == "pong"


def test_ci_executor_serve_uses_the_blob_protocol() -> None:
    assert serving.UVICORN_OPTIONS["http"] is serving.BlobProtocol


async def test_a_request_leaves_no_reference_cycle_for_the_collector(
    served: tuple[str, Seen],
) -> None:
    """The extension object in each scope holds its protocol and cycle weakly: with strong
    references every request was a cycle (scope -> extension -> cycle -> scope) that only the
    garbage collector frees, one per request (checked: 50 of 50)."""
    url, _ = served
    async with httpx.AsyncClient() as client:
        for _ in range(3):
            await client.get(f"{url}/ping")
        gc.collect()
        gc.set_debug(gc.DEBUG_SAVEALL)  # what a collection finds is kept in gc.garbage
        try:
            for _ in range(20):
                assert (await client.get(f"{url}/ping")).text == "pong"
            gc.collect()
            found = [o for o in gc.garbage if isinstance(o, RequestResponseCycle)]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
    assert found == []


async def test_a_file_shorter_than_its_size_ends_the_response_and_the_connection(
    served: tuple[str, Seen], tmp_path: Path
) -> None:
    """A part that lost bytes cannot be answered in full: the client gets a short body and a
    closed connection, never the next answer's bytes read as this one's."""
    url, seen = served
    data = os.urandom(300_000)
    (tmp_path / "short").write_bytes(data)
    seen.files.append((tmp_path / "short", len(data) + 1000))
    reader, writer = await connect(url)
    writer.write(b"GET /get HTTP/1.1\r\nHost: t\r\n\r\nGET /ping HTTP/1.1\r\nHost: t\r\n\r\n")
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    assert b"content-length: 301000" in head.lower()
    with pytest.raises(asyncio.IncompleteReadError) as short:
        await reader.readexactly(len(data) + 1000)
    assert short.value.partial == data  # and no "pong" after it
    await seen.failed.wait()
    assert "1000 bytes short" in str(seen.errors[0])
    writer.close()
