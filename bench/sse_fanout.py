"""4. SSE fan-out: N concurrent SSE clients on one build printing 20k lines over a few seconds
(100 lines every 20 ms).
Every client must get every chunk exactly once, in order; report p50/p99 of (receive time -
chunk created_at). Baseline: one client on the same kind of build, same server.

The clients are raw asyncio sockets with a minimal chunked-encoding and SSE parser, because the
client shares the two cores with the server and must stay cheap."""

from __future__ import annotations

import asyncio
import time

import httpx

from bench._common import (
    Ctx,
    Result,
    Server,
    client,
    create_build,
    parse_ts,
    percentile,
    require_success,
    serve,
    wait_finished,
)

NAME = "sse_fanout"
BACKENDS = ("postgres", "sqlite")


def step(go: str, batches: int) -> str:
    # The step waits for the clients to be connected, so every chunk is delivered live.
    return (
        f"while [ ! -e {go} ]; do sleep 0.02; done\n"
        f"for b in $(seq 0 {batches - 1}); do\n"
        f'  seq -f "fan-out line %05g of the SSE benchmark" $((b*100+1)) $((b*100+100))\n'
        "  sleep 0.02\n"
        "done\n"
    )


class SseClient:
    def __init__(self, port: int, build_id: int) -> None:
        self.port = port
        self.build_id = build_id
        self.seqs: list[int] = []
        self.delays: list[float] = []
        self.ended = False
        self.connected = asyncio.Event()

    async def run(self) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port, limit=1 << 22)
        try:
            writer.write(
                f"GET /api/v1/builds/{self.build_id}/logs/stream HTTP/1.1\r\n"
                f"Host: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n".encode()
            )
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"SSE answered {head[:60]!r}")
            chunked = b"chunked" in head.lower()
            self.connected.set()
            buf = b""
            while not self.ended:
                if chunked:
                    size = int((await reader.readline()).split(b";")[0], 16)
                    if size == 0:
                        break
                    data = (await reader.readexactly(size + 2))[:-2]
                else:
                    data = await reader.read(1 << 16)
                    if not data:
                        break
                now = time.time()
                buf += data
                buf = self._events(buf, now)
        finally:
            writer.close()

    def _events(self, buf: bytes, now: float) -> bytes:
        buf = buf.replace(b"\r\n", b"\n") if b"\r" in buf else buf
        while (end := buf.find(b"\n\n")) >= 0:
            event, buf = buf[:end], buf[end + 2 :]
            if event.startswith(b"event: log") or b"\nevent: log" in event:
                seq = created = None
                for line in event.split(b"\n"):
                    if line.startswith(b"id:"):
                        seq = int(line[3:])
                    elif line.startswith(b"data:"):
                        at = line.find(b'"created_at":"')
                        if at >= 0:
                            at += 14
                            created = line[at : line.index(b'"', at)].decode()
                if seq is None or created is None:
                    raise RuntimeError(f"log event without id or created_at: {event[:200]!r}")
                self.seqs.append(seq)
                self.delays.append(now - parse_ts(created))
            elif event.startswith(b"event: end") or b"\nevent: end" in event:
                self.ended = True
        return buf


async def chunk_count(http: httpx.AsyncClient, build_id: int) -> int:
    offset = 0
    while True:
        page = (
            await http.get(
                f"/api/v1/builds/{build_id}/logs", params={"offset": offset, "limit": 1000}
            )
        ).json()
        if not page["items"]:
            return offset
        offset = page["next_offset"]


async def one_build(
    http: httpx.AsyncClient, server: Server, clients: int, batches: int
) -> tuple[list[float], int, list[str]]:
    yaml = "jobs:\n  bench:\n    steps:\n      - run: |\n" + "".join(
        f"          {line}\n" for line in step("../go", batches).splitlines()
    )
    build = await create_build(http, yaml)
    go = server.go_file(build["id"])
    sse = [SseClient(server.port, build["id"]) for _ in range(clients)]
    tasks = [asyncio.create_task(c.run()) for c in sse]
    waiting = asyncio.gather(*(c.connected.wait() for c in sse))
    done, _ = await asyncio.wait(
        [waiting, *tasks], timeout=120, return_when=asyncio.FIRST_COMPLETED
    )
    if waiting not in done:
        for task in done:
            task.result()
        raise RuntimeError("SSE clients did not connect")
    await asyncio.sleep(0.2)  # let the server finish subscribing the last streams
    go.touch()
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=300)
    finished = await wait_finished(http, build["id"])
    require_success(finished)
    total = await chunk_count(http, build["id"])
    problems = []
    expected = list(range(1, total + 1))
    for i, c in enumerate(sse):
        if c.seqs != expected:
            missing = len(set(expected) - set(c.seqs))
            problems.append(
                f"client {i}: {len(c.seqs)} events, {missing} missing, "
                f"{len(c.seqs) - len(set(c.seqs))} duplicated, ordered={c.seqs == sorted(c.seqs)}"
            )
    delays = [d for c in sse for d in c.delays]
    return delays, total, problems


async def run(ctx: Ctx, backend: str) -> None:
    clients, batches = (50, 50) if ctx.quick else (200, 200)
    async with serve(backend) as (_db, (server,), _tmp), client(server.base) as http:
        base, _, base_problems = await one_build(http, server, 1, batches)
        cpu = time.process_time()
        delays, total, problems = await one_build(http, server, clients, batches)
        cpu = time.process_time() - cpu
    for problem in (base_problems + problems)[:10]:
        print(f"  INTEGRITY: {problem}")
    ok = not problems and not base_problems
    note = f"{total} chunks x {clients} clients, client CPU {cpu:.1f} s, " + (
        "all complete, in order" if ok else f"{len(problems)} clients INCOMPLETE"
    )
    p50, p99 = percentile(delays, 50) * 1000, percentile(delays, 99) * 1000
    b50, b99 = percentile(base, 50) * 1000, percentile(base, 99) * 1000
    ctx.add(
        Result(
            NAME,
            backend,
            f"stored->received p50 ({clients} clients)",
            p50,
            "ms",
            b50,
            "1 client p50",
            note=note,
        )
    )
    ctx.add(
        Result(
            NAME,
            backend,
            f"stored->received p99 ({clients} clients)",
            p99,
            "ms",
            b99,
            "1 client p99",
            "<= 250 ms",
            p99 <= 250 and ok,
        )
    )
