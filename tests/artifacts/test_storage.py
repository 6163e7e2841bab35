"""The storage interface on both backends: streaming writes and reads, ranges, checksums verified
before anything becomes visible, atomic replacement, prefix deletion and listing."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app.artifacts.directory import DirectoryStorage
from app.artifacts.storage import (
    ChecksumMismatch,
    Expect,
    ObjectNotFound,
    ObjectTooLarge,
    Storage,
)


async def chunks(data: bytes, size: int = 300_000) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def read_all(storage: Storage, key: str, start: int = 0, end: int | None = None) -> bytes:
    return b"".join([c async for c in storage.read(key, start, end)])


async def test_roundtrip_multi_part(storage: Storage) -> None:
    # 19 MiB + a tail: three S3 parts, several directory write batches.
    data = os.urandom(19 * 1024 * 1024 + 12345)
    stored = await storage.put("artifacts/1/2", chunks(data))
    assert stored.size == len(data)
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert stored.md5 is None  # computed only when there is one to check
    assert await storage.size("artifacts/1/2") == len(data)
    assert await read_all(storage, "artifacts/1/2") == data
    assert await read_all(storage, "artifacts/1/2", 5, 5 + 1000) == data[5:1005]
    assert await read_all(storage, "artifacts/1/2", len(data) - 10) == data[-10:]


async def test_compose_concatenates_and_hashes(storage: Storage) -> None:
    parts = [os.urandom(6 * 1024 * 1024), b"", os.urandom(123), os.urandom(5 * 1024 * 1024)]
    for i, part in enumerate(parts):
        staged = await storage.put(f"uploads/x/{i}", chunks(part), Expect(staging=True))
        assert staged.size == len(part) and staged.sha256 is None
    whole = b"".join(parts)
    keys = [f"uploads/x/{i}" for i in (0, 1, 2, 3)]
    with pytest.raises(ChecksumMismatch):
        await storage.compose("final/obj", keys, Expect(sha256="0" * 64))
    assert await storage.size("final/obj") is None
    stored = await storage.compose("final/obj", keys, Expect(size=len(whole)))
    assert stored.sha256 == hashlib.sha256(whole).hexdigest()
    assert await read_all(storage, "final/obj") == whole
    assert await storage.size("final/obj") == len(whole)
    # Ranges that start, end and cross inside the parts (and the empty one).
    six = 6 * 1024 * 1024
    for start, end in ((0, 10), (six - 10, six + 50), (six + 100, None), (5, len(whole) - 5)):
        assert await read_all(storage, "final/obj", start, end) == whole[start:end]
    # Replaced by a plain write, then deleted: no trace of the parts remains.
    await storage.put("final/obj", chunks(b"plain"))
    assert await read_all(storage, "final/obj") == b"plain"
    await storage.compose("final/obj", [], Expect(size=0))
    assert await storage.size("final/obj") == 0
    await storage.delete("final/obj")
    assert await storage.size("final/obj") is None
    assert await storage.list_children("final") == []
    with pytest.raises(ObjectNotFound):
        await storage.compose("final/other", ["uploads/x/0", "uploads/x/9"])
    assert await storage.size("final/other") is None


async def test_compose_unhashed_counts_and_checks_without_a_digest(storage: Storage) -> None:
    """Caches: no sha256 anywhere, but the size and the size cap still hold."""
    parts = [os.urandom(3 * 1024 * 1024), os.urandom(777)]
    keys = [f"uploads/c/{i}" for i in range(len(parts))]
    for key, part in zip(keys, parts, strict=True):
        staged = await storage.put(key, chunks(part), Expect(staging=True, hashed=False))
        assert staged.size == len(part) and staged.sha256 is None
    whole = b"".join(parts)
    with pytest.raises(ObjectTooLarge):
        await storage.compose("caches/1", keys, Expect(max_bytes=len(whole) - 1, hashed=False))
    with pytest.raises(ChecksumMismatch):
        await storage.compose("caches/1", keys, Expect(size=len(whole) + 1, hashed=False))
    assert await storage.size("caches/1") is None
    stored = await storage.compose("caches/1", keys, Expect(size=len(whole), hashed=False))
    assert (stored.size, stored.sha256) == (len(whole), None)
    assert await read_all(storage, "caches/1") == whole
    whole_put = await storage.put("caches/2", chunks(whole), Expect(hashed=False))
    assert (whole_put.size, whole_put.sha256) == (len(whole), None)


async def test_compose_hash_follows_the_block_list_not_the_upload_order(
    storage: Storage,
) -> None:
    """Blocks are hashed while they arrive, in the order their uploads started; the composed
    object's digest must still be that of the block list's order, whatever happened meanwhile:
    concurrent uploads, a list in another order, a block uploaded twice, a checksum refusal."""
    blocks = [os.urandom(3 * 1024 * 1024 + i) for i in range(6)]

    async def stage(prefix: str, order: list[int]) -> None:
        await asyncio.gather(
            *(storage.put(f"{prefix}/{i}", chunks(blocks[i]), Expect(staging=True)) for i in order)
        )

    def keys(prefix: str, order: list[int]) -> list[str]:
        return [f"{prefix}/{i}" for i in order]

    def digest(order: list[int]) -> str:
        return hashlib.sha256(b"".join(blocks[i] for i in order)).hexdigest()

    # In order, concurrently: a wrong checksum is still refused, and nothing is visible.
    await stage("uploads/a", [0, 1, 2, 3, 4, 5])
    with pytest.raises(ChecksumMismatch):
        await storage.compose("final/a", keys("uploads/a", range(6)), Expect(sha256="0" * 64))
    assert await storage.size("final/a") is None
    stored = await storage.compose(
        "final/a", keys("uploads/a", range(6)), Expect(sha256=digest([0, 1, 2, 3, 4, 5]))
    )
    assert stored.size == sum(map(len, blocks))

    # Listed in another order than uploaded.
    await stage("uploads/b", [0, 1, 2, 3, 4, 5])
    order = [5, 0, 4, 1, 3, 2]
    stored = await storage.compose("final/b", keys("uploads/b", order))
    assert stored.sha256 == digest(order)
    assert await read_all(storage, "final/b") == b"".join(blocks[i] for i in order)

    # A block uploaded again with other bytes (a client retry): the last write counts.
    await stage("uploads/c", [0, 1, 2])
    blocks[1] = os.urandom(1000)
    await stage("uploads/c", [1])
    stored = await storage.compose("final/c", keys("uploads/c", [0, 1, 2]))
    assert stored.sha256 == digest([0, 1, 2])

    # Only some of the uploaded blocks listed.
    await stage("uploads/d", [0, 1, 2, 3])
    stored = await storage.compose("final/d", keys("uploads/d", [0, 1, 2]))
    assert stored.sha256 == digest([0, 1, 2])

    # Ranked on arrival (as the blob route does from the block ids), written in another order.
    for i in range(6):
        storage.announce(f"uploads/e/{i}", bytes([5 - i]))
    await stage("uploads/e", [0, 1, 2, 3, 4, 5])
    stored = await storage.compose("final/e", keys("uploads/e", [5, 4, 3, 2, 1, 0]))
    assert stored.sha256 == digest([5, 4, 3, 2, 1, 0])

    # Ranks that the block list then contradicts: the list's order still wins.
    for i in range(4):
        storage.announce(f"uploads/f/{i}", bytes([i]))
    await stage("uploads/f", [0, 1, 2, 3])
    stored = await storage.compose("final/f", keys("uploads/f", [1, 0, 2, 3]))
    assert stored.sha256 == digest([1, 0, 2, 3])


async def test_md5_is_checked_when_given(storage: Storage) -> None:
    data = b"content with an md5"
    stored = await storage.put("m/1", chunks(data), Expect(md5=hashlib.md5(data).hexdigest()))
    assert stored.md5 == hashlib.md5(data).hexdigest()


async def test_empty_object(storage: Storage) -> None:
    stored = await storage.put("caches/empty", chunks(b""))
    assert stored.size == 0
    assert await storage.size("caches/empty") == 0
    assert await read_all(storage, "caches/empty") == b""


async def test_checksum_mismatch_stores_nothing(storage: Storage) -> None:
    data = os.urandom(9 * 1024 * 1024)
    await storage.put("k/obj", chunks(b"old content"))
    wrong = hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(ChecksumMismatch):
        await storage.put("k/obj", chunks(data), Expect(sha256=wrong))
    with pytest.raises(ChecksumMismatch):
        await storage.put("k/obj", chunks(data), Expect(md5="0" * 32))
    with pytest.raises(ChecksumMismatch):
        await storage.put("k/obj", chunks(data), Expect(size=len(data) + 1))
    with pytest.raises(ObjectTooLarge):
        await storage.put("k/obj", chunks(data), Expect(max_bytes=1024))
    # The previous object is untouched: a refused write never becomes visible.
    assert await read_all(storage, "k/obj") == b"old content"
    ok = await storage.put(
        "k/obj", chunks(data), Expect(sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    )
    assert ok.size == len(data)
    assert await read_all(storage, "k/obj") == data


async def test_missing_object(storage: Storage) -> None:
    assert await storage.size("nope/x") is None
    with pytest.raises(ObjectNotFound):
        await read_all(storage, "nope/x")


async def test_delete_prefix_and_list(storage: Storage) -> None:
    for key in ("artifacts/7/1", "artifacts/7/2", "artifacts/8/1", "artifacts/80/1"):
        await storage.put(key, chunks(key.encode()))
    assert await storage.list_children("artifacts") == ["7", "8", "80"]
    assert await storage.list_children("artifacts/7") == ["1", "2"]
    await storage.delete_prefix("artifacts/8")
    assert await storage.list_children("artifacts") == ["7", "80"]
    assert await storage.size("artifacts/80/1") == len(b"artifacts/80/1")
    await storage.delete("artifacts/7/1")
    assert await storage.size("artifacts/7/1") is None
    assert await storage.list_children("artifacts/7") == ["2"]


async def test_rejects_unsafe_keys(storage: Storage) -> None:
    for key in ("../x", "a/../b", "/abs", "a//b", "a b"):
        with pytest.raises(ValueError, match="invalid storage key"):
            await storage.put(key, chunks(b"x"))


async def test_directory_write_is_invisible_until_complete(tmp_path: Path) -> None:
    store = DirectoryStorage(tmp_path / "store")
    await store.start()
    seen: list[int | None] = []

    async def slow() -> AsyncIterator[bytes]:
        yield b"a" * (2 * 1024 * 1024)
        # Mid-write: neither another reader nor a listing sees the object yet.
        seen.append(await store.size("x/y"))
        yield b"b" * 10

    stored = await store.put("x/y", slow())
    assert seen == [None]
    assert stored.size == 2 * 1024 * 1024 + 10
    assert list((tmp_path / "store" / ".tmp").iterdir()) == []


async def test_directory_hashes_the_next_block_as_it_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A block that is next in order when its write starts is hashed from memory as it is
    written, not read back from disk; one that only looked next (a block ranked before it
    arrived meanwhile) is read back instead, and the digest is the list's either way."""
    from app.artifacts.chain import Chain

    store = DirectoryStorage(tmp_path / "store")
    read_back: list[str] = []
    feed = Chain.feed

    def counting_feed(chain: Chain, path: Path) -> None:
        read_back.append(path.name)
        feed(chain, path)

    monkeypatch.setattr(Chain, "feed", counting_feed)
    blocks = [os.urandom(2 * 1024 * 1024 + i) for i in range(3)]
    digest = hashlib.sha256(b"".join(blocks)).hexdigest()

    # One after the other, in order: every block is next when it starts; nothing is re-read.
    for i, block in enumerate(blocks):
        store.announce(f"uploads/a/{i}", bytes([i]))
        await store.put(f"uploads/a/{i}", chunks(block), Expect(staging=True))
    stored = await store.compose("final/a", [f"uploads/a/{i}" for i in range(3)])
    assert (stored.sha256, read_back) == (digest, [])

    # Block 1 starts first (so it looks next), block 0 arrives and completes while block 1 is
    # still being written: block 1's in-memory digest started from the wrong state.
    halfway, resume = asyncio.Event(), asyncio.Event()

    async def gated(data: bytes) -> AsyncIterator[bytes]:
        yield data[: len(data) // 2]
        halfway.set()
        await resume.wait()
        yield data[len(data) // 2 :]

    store.announce("uploads/b/1", bytes([1]))
    late = asyncio.create_task(store.put("uploads/b/1", gated(blocks[1]), Expect(staging=True)))
    await halfway.wait()
    store.announce("uploads/b/0", bytes([0]))
    await store.put("uploads/b/0", chunks(blocks[0]), Expect(staging=True))
    resume.set()
    await late
    store.announce("uploads/b/2", bytes([2]))
    await store.put("uploads/b/2", chunks(blocks[2]), Expect(staging=True))
    stored = await store.compose("final/b", [f"uploads/b/{i}" for i in range(3)])
    # (Block 2 is read back too when it starts before block 1's read-back has run.)
    assert (stored.sha256, read_back[0], "0" in read_back) == (digest, "1", False)


async def test_directory_chain_hashes_hundreds_of_blocks_once_each_in_list_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A many-block upload as a client sends one: blocks announced in order, eight in flight,
    finishing in any order. The chain hashes each block exactly once, in list order, so the
    compose reads nothing back; a chain fed out of order would be refused (`broken`) and the
    digest recomputed, which this test would see."""
    from app.artifacts.chain import Chain

    store = DirectoryStorage(tmp_path / "store")
    count, wave = 400, 8
    blocks = [os.urandom(700 + i) for i in range(count)]
    keys = [f"uploads/m/{i:04d}" for i in range(count)]
    hashed: list[str] = []
    mark = Chain.mark_hashed

    def recording_mark(chain: Chain, key: str) -> None:
        hashed.append(key)
        mark(chain, key)

    monkeypatch.setattr(Chain, "mark_hashed", recording_mark)
    for start in range(0, count, wave):
        batch = range(start, min(start + wave, count))
        for i in batch:
            store.announce(keys[i], i.to_bytes(4, "big"))
        # Reversed: the last block of each wave starts (and usually ends) first.
        await asyncio.gather(
            *(
                store.put(keys[i], chunks(blocks[i], 256), Expect(staging=True))
                for i in reversed(batch)
            )
        )
    chain = store._chains["uploads/m"]
    stored = await store.compose("final/m", keys)
    assert stored.sha256 == hashlib.sha256(b"".join(blocks)).hexdigest()
    assert (chain.broken, chain.hashed, hashed) == (False, keys, keys)


async def test_directory_chain_past_the_block_list_limit_is_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An upload with more blocks than a list can name (MAX_BLOCKS, lowered here to 4) stops
    being tracked for the in-order hash and frees what it held; a compose of its blocks still
    gets the right digest, from the parts."""
    from app.artifacts import chain as chain_module

    monkeypatch.setattr(chain_module, "MAX_BLOCKS", 4)
    store = DirectoryStorage(tmp_path / "store")
    blocks = [os.urandom(1000 + i) for i in range(6)]
    keys = [f"uploads/n/{i}" for i in range(6)]
    for i, key in enumerate(keys):
        store.announce(key, bytes([i]))
        await store.put(key, chunks(blocks[i]), Expect(staging=True))
    chain = store._chains["uploads/n"]
    assert chain.broken and not (chain.ranks or chain.hashed or chain.started or chain.done)
    stored = await store.compose("final/n", keys[1:5])
    assert stored.sha256 == hashlib.sha256(b"".join(blocks[1:5])).hexdigest()


async def test_directory_chains_together_track_a_bounded_number_of_blocks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Many uploads at once (a build's token can open any number) track at most MAX_TRACKED
    blocks between them, lowered here to 6: past it the oldest uploads' chains are dropped and
    freed, and their composes still get the right digest, from the parts."""
    from app.artifacts import directory as storage_module

    monkeypatch.setattr(storage_module, "MAX_TRACKED", 6)
    store = DirectoryStorage(tmp_path / "store")
    blocks = {name: [os.urandom(900 + i) for i in range(3)] for name in "abc"}
    chains = {}
    for name, parts in blocks.items():
        for i, part in enumerate(parts):
            store.announce(f"uploads/{name}/{i}", bytes([i]))
            await store.put(f"uploads/{name}/{i}", chunks(part), Expect(staging=True))
            chains.setdefault(name, store._chains[f"uploads/{name}"])
    assert sorted(store._chains) == ["uploads/b", "uploads/c"]
    assert chains["a"].broken and not chains["a"].ranks
    assert sum(len(chain.ranks) for chain in store._chains.values()) <= 6
    for name, parts in blocks.items():
        stored = await store.compose(f"final/{name}", [f"uploads/{name}/{i}" for i in range(3)])
        assert stored.sha256 == hashlib.sha256(b"".join(parts)).hexdigest()


class Poured:
    """A body handed over as `app.serving.RequestBody` hands a socket's: `pour` calls the sink
    from a thread of the given executor, with views of that thread's reused buffer."""

    def __init__(self, data: bytes, piece: int = 700_000) -> None:
        self.data, self.piece = data, piece
        self.threads: set[str] = set()

    def __aiter__(self) -> AsyncIterator[bytes]:
        raise AssertionError("a poured body is not iterated")

    async def pour(self, sink, executor, buffer) -> bool:  # type: ignore[no-untyped-def]
        def run() -> None:
            self.threads.add(threading.current_thread().name)
            view = memoryview(buffer())
            for start in range(0, len(self.data), self.piece):
                piece = self.data[start : start + self.piece]
                view[: len(piece)] = piece
                sink(view[: len(piece)])

        await asyncio.get_running_loop().run_in_executor(executor, run)
        return True


async def test_directory_writes_a_poured_body_from_its_reader_threads(tmp_path: Path) -> None:
    """Blocks whose bodies are poured (read from the socket by a reader thread) are written and
    hashed in that thread, with the in-order chain as for received ones; one too large is
    refused from the thread and leaves nothing."""
    store = DirectoryStorage(tmp_path / "store")
    try:
        blocks = [os.urandom(3 * 1024 * 1024 + i) for i in range(4)]
        bodies = [Poured(block) for block in blocks]
        for i in range(4):
            store.announce(f"uploads/p/{i}", bytes([i]))
        await asyncio.gather(
            *(
                store.put(f"uploads/p/{i}", body, Expect(staging=True))
                for i, body in enumerate(bodies)
            )
        )
        assert all(t.startswith("blob-body") for b in bodies for t in b.threads)
        stored = await store.compose("final/p", [f"uploads/p/{i}" for i in range(4)])
        assert stored.sha256 == hashlib.sha256(b"".join(blocks)).hexdigest()
        assert await read_all(store, "final/p") == b"".join(blocks)

        with pytest.raises(ObjectTooLarge):
            await store.put("big", Poured(os.urandom(2_000_000)), Expect(max_bytes=1_000_000))
        assert await store.size("big") is None
        assert list((tmp_path / "store" / ".tmp").iterdir()) == []
    finally:
        await store.close()
