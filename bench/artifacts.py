"""Artifacts and caches: a 1 GiB artifact uploaded and downloaded, a 200 MB cache saved and
restored, through the same calls the toolkit makes (Twirp + Azure-style block uploads of 8 MiB
blocks, 5 at a time, as @actions/artifact does; 64 MiB blocks, 8 at a time, as @actions/cache v2
does), against `cp` of the same file on the same disk. Also the serve process's peak RSS, which
must stay flat (it streams: no blob is ever held whole in memory).

The client side runs in this process; directory storage (the default) under the bench's temp
directory, so both sides use the same disk as `cp`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from app.artifacts.tokens import issue_runtime_token
from bench._common import Ctx, Result, client, create_build, free_port, serve, workflow

NAME = "artifacts"
BACKENDS = ("sqlite", "postgres")
SECRET = "bench-artifacts-secret"
ARTIFACTS = "/twirp/github.actions.results.api.v1.ArtifactService"
CACHES = "/twirp/github.actions.results.api.v1.CacheService"


def make_file(path: Path, size: int, *, random: bool = True) -> None:
    """`size` bytes written in 8 MiB pieces: random (incompressible), or zeros."""
    zeros = bytes(8 * 1024 * 1024)
    with path.open("wb") as out:
        left = size
        while left:
            piece = min(left, len(zeros))
            out.write(os.urandom(piece) if random else zeros[:piece])
            left -= piece


def cp_once(source: Path, dest: Path) -> None:
    """`cp` + `sync` of the same bytes on the same disk (as durable as our fsync'd writes)."""
    subprocess.run(["cp", str(source), str(dest)], check=True)
    subprocess.run(["sync", str(dest)], check=True)
    dest.unlink()


def warm_pages(scratch: Path, size: int) -> None:
    """Write `size` bytes to a scratch file, then delete it unsynced (no disk I/O).

    Why: this machine is a VM whose guest hands free memory back to the host (virtio-balloon
    free page reporting, here as soon as about 1 GiB is free: `min_free_ms=0`,
    `max_waiting_mib=1024`), and the first write to such a page faults in the host. Writing
    1 GiB into the page cache took 3.1-3.3 s on those pages and 0.3 s on pages freed a moment
    before (`dd`, measured): a 10x difference that lands on whichever timing happens to touch
    fresh memory first, `cp` or the transfer. Each timed operation here is preceded by this,
    so both find recently freed pages, and the ratio compares the software."""
    make_file(scratch, size, random=False)
    scratch.unlink()


async def timed(scratch: Path, size: int, operation: Callable[[], Awaitable[object]]) -> float:
    """Seconds `operation` takes, after `warm_pages` for its `size` bytes."""
    await asyncio.to_thread(warm_pages, scratch, size)
    started = time.perf_counter()
    await operation()
    return time.perf_counter() - started


def _read_head(sock: socket.socket, what: str) -> tuple[int, dict[str, str], bytes]:
    """An HTTP/1.1 answer's status and headers (names lowercased), and the body bytes read with
    them."""
    answer = b""
    while b"\r\n\r\n" not in answer:
        data = sock.recv(65536)
        if not data:
            raise RuntimeError(f"{what}: connection closed before the answer")
        answer += data
    head, _, rest = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split(" ", 2)[1]), headers, rest


class _BlockPutter:
    """A keep-alive HTTP/1.1 connection that PUTs file ranges with `socket.sendfile`.

    Why not httpx: the toolkit's Azure SDK runs in Node, whose socket writes are native code.
    httpx in this process spent 0.7 s of CPU per GiB sent (measured), on the same two cores as
    the server, and that is the client's cost, not the server's. sendfile leaves the client
    only the headers (as curl does for the downloads)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host = parts.netloc
        self.address = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.sock: socket.socket | None = None

    def put(self, target: str, path: Path, offset: int, length: int) -> None:
        if self.sock is None:
            self.sock = socket.create_connection(self.address)
        head = (
            f"PUT {target} HTTP/1.1\r\nHost: {self.host}\r\nContent-Length: {length}\r\n"
            "x-ms-blob-type: BlockBlob\r\n\r\n"
        )
        self.sock.sendall(head.encode())
        with path.open("rb") as f:
            self.sock.sendfile(f, offset, length)
        status, headers, body = _read_head(self.sock, "PUT block")
        if "transfer-encoding" in headers:
            raise RuntimeError("PUT block: a chunked answer (this client reads Content-Length)")
        size = int(headers.get("content-length", "0"))
        while len(body) < size:
            data = self.sock.recv(65536)
            if not data:
                break
            body += data
        if status >= 300:
            raise RuntimeError(f"PUT block: {status} {body[:300]!r}")

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()


async def put_blocks(
    http: httpx.AsyncClient, url: str, path: Path, block: int, concurrency: int
) -> None:
    """Put Block of `block`-byte blocks, `concurrency` at a time, then Put Block List: what
    the Azure SDK's uploadStream/uploadFile do for the toolkit."""
    size = path.stat().st_size
    offsets = list(range(0, size, block))
    ids = [base64.b64encode(f"block-{i:06d}".encode()).decode() for i in range(len(offsets))]
    pending = list(range(len(offsets)))
    parts = urlsplit(url)

    def worker() -> None:
        putter = _BlockPutter(url)
        try:
            while pending:
                i = pending.pop(0)
                # Appended, as the Azure SDK does: re-encoding the query would drop the signature.
                target = f"{parts.path}?{parts.query}&comp=block&blockid={quote(ids[i])}"
                putter.put(target, path, offsets[i], min(block, size - offsets[i]))
        finally:
            putter.close()

    await asyncio.gather(*(asyncio.to_thread(worker) for _ in range(concurrency)))
    body = "<?xml version='1.0'?><BlockList>" + "".join(f"<Latest>{i}</Latest>" for i in ids)
    answer = await http.put(f"{url}&comp=blocklist", content=body + "</BlockList>")
    answer.raise_for_status()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _get_once(url: str, dest: Path, piece: int) -> None:
    """GET `url` on a fresh HTTP/1.1 connection into `dest`, writing each read as it comes."""
    parts = urlsplit(url)
    target = f"{parts.path}?{parts.query}" if parts.query else parts.path
    with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80)) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\n\r\n".encode())
        status, headers, rest = _read_head(sock, "GET")
        if status != 200 or "content-length" not in headers:
            raise RuntimeError(f"GET: {status} {rest[:300]!r} (a Content-Length is expected)")
        length = int(headers["content-length"])
        view = memoryview(bytearray(piece))
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, rest)
            left = length - len(rest)
            while left:
                count = sock.recv_into(view, min(piece, left))
                if not count:
                    raise RuntimeError(f"GET: the body ended {left} bytes short")
                os.write(fd, view[:count])
                left -= count
            os.fsync(fd)  # as `cp` + `sync`
        finally:
            os.close(fd)


async def get_to_file(url: str, dest: Path) -> None:
    """One GET streamed to `dest`, then fsync'd (as `cp` + `sync`): what the toolkit's
    downloaders do (@actions/artifact pipes the response into its unzipper, @actions/cache's
    http-client into the archive file: one plain GET when the host is not Azure's).

    A raw socket in a thread, each read (up to 64 KiB, the size of a Node stream's socket
    reads) written to the file as it arrives, as Node's stream pipe does. Not curl: curl 7.88
    writes its output 8 KiB at a time (125,000 writes per GiB, strace), which alone took
    2.1-2.4 s for 1 GiB from a sendfile server here, more than `cp` twice over; not httpx,
    whose decoding took more CPU than the server spent sending (3.5 s against 0.5 s for
    1 GiB). The bytes are checked against the upload's sha256 by the caller, outside the
    timing (`cp` does not hash either)."""
    await asyncio.to_thread(_get_once, url, dest, 64 * 1024)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(8 * 1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


async def twirp(
    http: httpx.AsyncClient, service: str, method: str, token: str, body: dict[str, Any]
) -> dict[str, Any]:
    answer = await http.post(
        f"{service}/{method}", json=body, headers={"authorization": f"Bearer {token}"}
    )
    if answer.status_code != 200:
        raise RuntimeError(f"{method}: {answer.status_code} {answer.text}")
    result: dict[str, Any] = answer.json()
    return result


async def run(ctx: Ctx, backend: str) -> None:
    artifact_size = (256 if ctx.quick else 1024) * 1024 * 1024
    cache_size = (64 if ctx.quick else 200) * 1000 * 1000
    async with serve(backend) as (_db, _servers, _tmp):
        pass  # a cold start first, so imports and migrations are not in the figures
    # A store of its own (the default, ./artifact-store, is relative to the server's working
    # directory, which is the checkout when BENCH_APP_PATH runs a patched app/).
    store = Path(tempfile.mkdtemp(prefix="ci-bench-store-"))
    store_env = {
        "ACTIONS_TOKEN_SECRET": SECRET,
        "CACHE_MAX_BYTES": str(4 * 1024**3),
        "ARTIFACTS_DIR": str(store),
    }
    try:
        await _measure(ctx, backend, store_env, artifact_size, cache_size)
    finally:
        shutil.rmtree(store, ignore_errors=True)


async def _measure(
    ctx: Ctx, backend: str, store_env: dict[str, str], artifact_size: int, cache_size: int
) -> None:
    rounds = 1 if ctx.quick else 3
    async with serve(backend, **store_env) as (_db, servers, tmp):
        server = servers[0]
        source = tmp / "artifact.bin"
        cache_source = tmp / "cache.bin"
        for path, size in ((source, artifact_size), (cache_source, cache_size)):
            await asyncio.to_thread(make_file, path, size)
            await asyncio.to_thread(_fsync, path)  # on disk now, not written back in a timing
        started = time.perf_counter()
        expected = await asyncio.to_thread(sha256_of, source)
        hashing = time.perf_counter() - started
        cache_expected = await asyncio.to_thread(sha256_of, cache_source)
        rss_before = server.peak_rss_mb()
        scratch = tmp / "scratch.bin"
        label = f"{artifact_size // 1024**2} MiB"
        cache_label = f"{cache_size // 1000**2} MB"
        times: dict[str, list[float]] = {}

        def cp(path: Path) -> Callable[[], Awaitable[None]]:
            return lambda: asyncio.to_thread(cp_once, path, tmp / "cp.bin")

        async with client(server.base) as http:
            build = await create_build(http, workflow("true"), dispatch=False, branch="main")
            token = issue_runtime_token(SECRET, build["id"], "bench", 3600)

            async def upload(name: str) -> None:
                created = await twirp(http, ARTIFACTS, "CreateArtifact", token, {"name": name})
                await put_blocks(http, created["signed_upload_url"], source, 8 * 1024**2, 5)
                finished = {"name": name, "size": str(artifact_size), "hash": f"sha256:{expected}"}
                await twirp(http, ARTIFACTS, "FinalizeArtifact", token, finished)

            async def download(name: str) -> None:
                signed = await twirp(http, ARTIFACTS, "GetSignedArtifactURL", token, {"name": name})
                await get_to_file(signed["signed_url"], tmp / "down.bin")

            async def save(entry: dict[str, str]) -> None:
                created = await twirp(http, CACHES, "CreateCacheEntry", token, entry)
                await put_blocks(http, created["signed_upload_url"], cache_source, 64 * 1024**2, 8)
                finished = {**entry, "size_bytes": str(cache_size)}
                await twirp(http, CACHES, "FinalizeCacheEntryUpload", token, finished)

            async def restore(entry: dict[str, str]) -> None:
                found = await twirp(http, CACHES, "GetCacheEntryDownloadURL", token, entry)
                await get_to_file(found["signed_download_url"], tmp / "restored.bin")

            # Rounds, each transfer after its own `cp`: the disk's flush time drifts over a
            # run, and the median of each column is compared.
            for n in range(rounds):
                name, entry = f"big-{n}", {"key": f"bench-cache-{n}", "version": "v" * 64}
                steps: list[tuple[str, int, Callable[[], Awaitable[object]]]] = [
                    ("artifact cp", artifact_size, cp(source)),
                    ("artifact upload", artifact_size, partial(upload, name)),
                    ("artifact download", artifact_size, partial(download, name)),
                    ("cache cp", cache_size, cp(cache_source)),
                    ("cache save", cache_size, partial(save, entry)),
                    ("cache restore", cache_size, partial(restore, entry)),
                ]
                for metric, size, operation in steps:
                    times.setdefault(metric, []).append(await timed(scratch, size, operation))
                    if metric == "artifact download":  # checked outside the timing
                        await _check_and_remove(tmp / "down.bin", expected)
                        # Gone before the next round, as `cp` removes its copy: every round
                        # starts with the same bytes in the page cache.
                        await twirp(http, ARTIFACTS, "DeleteArtifact", token, {"name": name})
                    elif metric == "cache restore":
                        await _check_and_remove(tmp / "restored.bin", cache_expected)
        _report(ctx, backend, label, times, "artifact", ("upload", "download"))
        _report(ctx, backend, cache_label, times, "cache", ("save", "restore"))
        rss = server.peak_rss_mb()
        ctx.add(
            Result(
                NAME,
                backend,
                "serve peak RSS (VmHWM)",
                rss,
                "MB",
                baseline=rss_before,
                baseline_label="before the transfers",
                target="< +100 MB",
                passed=rss - rss_before < 100,
            )
        )
        artifact_cp = statistics.median(times["artifact cp"])
        ctx.add(
            Result(
                NAME,
                backend,
                f"sha256 of the artifact's {label} (hashlib, from the page cache)",
                hashing,
                "s",
                baseline=artifact_cp,
                baseline_label="cp",
                note="info: the hashing the server adds to the floor (on another core)",
            )
        )
        await _floor(
            ctx,
            backend,
            tmp,
            rounds,
            [
                (f"artifact {label}", source, 8 * 1024**2, 5, artifact_cp),
                (
                    f"cache {cache_label}",
                    cache_source,
                    64 * 1024**2,
                    8,
                    statistics.median(times["cache cp"]),
                ),
            ],
        )
    shutil.rmtree(tmp, ignore_errors=True)


async def _check_and_remove(path: Path, expected: str) -> None:
    if await asyncio.to_thread(sha256_of, path) != expected:
        raise RuntimeError(f"{path.name}: the bytes differ from what was uploaded")
    path.unlink()


# --- the floor: the same bytes through a bare uvicorn app ----------------------------------


async def floor_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A bare ASGI app under the same uvicorn as `ci-executor serve` (asyncio loop, httptools)
    that does nothing with the bytes: a PUT's body is received and dropped, a GET sends
    `?size=` bytes from one buffer in memory, 1 MiB at a time. No disk, no hashing, no database
    on the server side: what is left is uvicorn and the socket (and the client's own work), a
    lower bound for any app served this way, before it stores a byte."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["method"] == "PUT":
        more = True
        while more:
            more = (await receive()).get("more_body", False)
        headers = [(b"content-length", b"0")]
        await send({"type": "http.response.start", "status": 201, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
        return
    query = dict(p.partition("=")[::2] for p in scope["query_string"].decode().split("&"))
    left = int(query.get("size") or 0)
    headers = [(b"content-length", str(left).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    piece = bytes(1024 * 1024)
    while left > 0:
        chunk = piece if left >= len(piece) else piece[:left]
        left -= len(chunk)
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


@contextlib.asynccontextmanager
async def floor_server() -> AsyncIterator[str]:
    """`uvicorn bench.artifacts:floor_app`; yields its base URL."""
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "bench.artifacts:floor_app", "--loop", "asyncio"]
    argv += ["--port", str(port), "--log-level", "warning"]
    proc = subprocess.Popen(argv, cwd=Path(__file__).resolve().parent.parent)
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient() as http:
            for _ in range(300):
                with contextlib.suppress(httpx.HTTPError):
                    await http.get(f"{base}/ready", timeout=1)
                    break
                await asyncio.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        proc.wait()


FloorRun = tuple[str, Path, int, int, float]  # label, file, block size, concurrency, cp


async def _floor(ctx: Ctx, backend: str, tmp: Path, rounds: int, runs: list[FloorRun]) -> None:
    """Each transfer's floor, with the same client, the same warm-up and the same `cp`
    baseline as its row; the median of `rounds`."""
    scratch = tmp / "scratch.bin"
    async with floor_server() as base, client(base) as http:
        for label, source, block, concurrency, cp_time in runs:
            size = source.stat().st_size
            timings: dict[str, list[float]] = {"upload": [], "download": []}
            put = partial(put_blocks, http, f"{base}/put?sig=x", source, block, concurrency)
            get = partial(get_to_file, f"{base}/get?size={size}", tmp / "floor.bin")
            for _ in range(rounds):
                timings["upload"].append(await timed(scratch, size, put))
                timings["download"].append(await timed(scratch, size, get))
                (tmp / "floor.bin").unlink()
            for name, values in timings.items():
                ctx.add(
                    Result(
                        NAME,
                        backend,
                        f"floor: {label} {name}, same client, bare uvicorn app (no disk)",
                        statistics.median(values),
                        "s",
                        baseline=cp_time,
                        baseline_label="cp",
                        note="info: uvicorn + socket + the client, nothing stored; "
                        + _spread(values),
                    )
                )


def _spread(values: list[float]) -> str:
    return f"median of {len(values)}: " + " / ".join(f"{v:.2f}" for v in values) + " s"


def _report(
    ctx: Ctx,
    backend: str,
    label: str,
    times: dict[str, list[float]],
    kind: str,
    transfers: tuple[str, ...],
) -> None:
    """One row per transfer: its median against the median `cp` of the same bytes, both
    measured in the same rounds of the same run."""
    cp_times = times[f"{kind} cp"]
    cp_time = statistics.median(cp_times)
    for transfer in transfers:
        values = times[f"{kind} {transfer}"]
        value = statistics.median(values)
        ctx.add(
            Result(
                NAME,
                backend,
                f"{kind} {transfer} {label}",
                value,
                "s",
                baseline=cp_time,
                baseline_label="cp",
                target="<= 2x cp",
                passed=value <= 2 * cp_time,
                note=f"{_spread(values)}; cp {_spread(cp_times)}",
            )
        )
