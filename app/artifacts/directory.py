"""The `directory` backend of `app.artifacts.storage` (the embedded default): objects as files
under a root directory, written to a temp file on the same filesystem and renamed into place
once complete and checked, so readers (other replicas on a shared volume included) never see a
partial object. Block uploads are hashed in order as they arrive (`app.artifacts.chain`), and a
request body handed over by the server (`app.serving`) is written by the thread that reads it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import threading
import uuid
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

from app.artifacts.chain import MAX_BLOCKS, Chain
from app.artifacts.storage import (
    READ_CHUNK,
    Expect,
    ObjectNotFound,
    Pourable,
    StoredObject,
    _Digest,
    _rebatch,
    check_key,
)

# Directory writes are batched to this size so each thread hop carries real work.
WRITE_BUFFER = 1024 * 1024
_SEGMENTS = ".segments"
_IOV_MAX = 1024  # the POSIX minimum for writev's vector length
# Request bodies read straight from their sockets at once (app/serving.py); more wait their turn.
BODY_READERS = 16


def _write_all(fd: int, pieces: Sequence[bytes | memoryview]) -> None:
    """`writev` until every byte of `pieces` is written (a regular file may take fewer)."""
    views = [memoryview(piece) for piece in pieces]
    while views:
        written = os.writev(fd, views[:_IOV_MAX])
        while views and written >= len(views[0]):
            written -= len(views[0])
            views.pop(0)
        if views and written:
            views[0] = views[0][written:]


_MAX_CHAINS = 4096
# All the chains of one storage together track at most this many blocks. MAX_BLOCKS bounds one
# upload, but a build's token can open many uploads at once, each tracking up to MAX_BLOCKS
# (about 0.4 KiB of memory per block): 4,096 of them could hold gigabytes. Past it the oldest
# chains are dropped (their uploads are hashed at compose time instead, as for a broken chain).
MAX_TRACKED = 4 * MAX_BLOCKS


def _flush_and_sync(handle: BinaryIO) -> None:
    handle.flush()
    os.fsync(handle.fileno())


class DirectoryStorage:
    """Objects as files under `root`; temp files in `root/.tmp` (same filesystem: rename is
    atomic).

    A composed object (an upload that arrived as blocks) is stored as a directory of its parts,
    renamed into place, plus a `.segments` manifest: the parts are moved, not copied, so an
    upload writes its bytes to disk once (a copy would double the writes; see bench/artifacts.py).
    Readers see one object either way."""

    name = "directory"

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.tmp = self.root / ".tmp"
        self._chains: dict[str, Chain] = {}
        self._tracked = 0  # blocks placed in chains since last counted: at least what they hold
        self._body_readers: ThreadPoolExecutor | None = None  # request bodies read from sockets
        self._thread_buffers = threading.local()

    async def start(self) -> None:
        # Nothing to create yet: the directory appears with the first write, so an instance
        # that never stores anything leaves no trace.
        return None

    async def close(self) -> None:
        if self._body_readers is not None:
            self._body_readers.shutdown(wait=False, cancel_futures=True)
            self._body_readers = None

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    async def put(
        self, key: str, chunks: AsyncIterable[bytes], expect: Expect | None = None
    ) -> StoredObject:
        target = self._path(key)
        digest = _Digest(expect)
        hashed_later = digest.expect.staging and digest.expect.hashed
        chain = self._chain_for(key) if hashed_later else None
        stream = chain.stream(key) if chain is not None else None
        temp = self.tmp / f"{uuid.uuid4().hex}.part"
        handle = await asyncio.to_thread(self._open_temp, temp)

        def write(pieces: Sequence[bytes | memoryview]) -> None:
            for piece in pieces:
                digest.update(piece)
                if stream is not None:
                    stream.update(piece)
            _write_all(handle.fileno(), pieces)

        committing = False
        try:
            # A body read straight from its socket (app/serving.py) is written by the reading
            # thread as it arrives; any other is received here and written behind.
            if not (
                isinstance(chunks, Pourable)
                and await chunks.pour(lambda piece: write((piece,)), self._readers(), self._buffer)
            ):
                await self._write_behind(chunks, write)
            committing = True  # from here the commit closes the handle, whatever happens
            result = await asyncio.to_thread(self._commit, handle, digest, key, temp, target)
        except BaseException:
            if chain is not None:
                chain.broken = True
            await asyncio.to_thread(self._discard, None if committing else handle, temp)
            raise
        if chain is not None and not chain.broken:
            if stream is not None:
                chain.adopt(stream)  # no await since the checks: no other hashing interleaves
            chain.done.add(key)
            # Hashed in the background: the block's 201 does not wait for the digest, so the
            # client starts its next block at once (compose completes the chain before use).
            task = asyncio.ensure_future(self._advance(chain))
            chain.tasks.add(task)
            task.add_done_callback(chain.tasks.discard)
        return result

    @staticmethod
    async def _write_behind(
        chunks: AsyncIterable[bytes], write: Callable[[Sequence[bytes]], None]
    ) -> None:
        # One batch is hashed and written in a thread while the next one is received (waiting
        # for each write would stall the socket: uvicorn stops reading a request body once 64
        # KiB are waiting). At most two batches in memory.
        writing: asyncio.Future[None] | None = None
        try:
            async for block in _rebatch(chunks, WRITE_BUFFER):
                if writing is not None:
                    await writing
                writing = asyncio.ensure_future(asyncio.to_thread(write, block))
            if writing is not None:
                await writing
        finally:
            if writing is not None and not writing.done():
                await asyncio.wait([writing])  # never close under a running write

    def _readers(self) -> ThreadPoolExecutor:
        """The threads that read request bodies from their sockets: a pool of their own, as a
        slow client holds its thread for the whole body (the default executor's few threads
        also spawn steps and write logs)."""
        if self._body_readers is None:
            self._body_readers = ThreadPoolExecutor(BODY_READERS, thread_name_prefix="blob-body")
        return self._body_readers

    def _buffer(self) -> bytearray:
        """The calling reader thread's buffer, allocated once: a fresh 1 MiB per block is a
        new mapping, faulted in page by page."""
        buffer: bytearray | None = getattr(self._thread_buffers, "buffer", None)
        if buffer is None:
            buffer = self._thread_buffers.buffer = bytearray(WRITE_BUFFER)
        return buffer

    def announce(self, key: str, rank: bytes) -> None:
        chain = self._chain(key)
        if key in chain.ranks or (chain.hashed and rank < chain.ranks[chain.hashed[-1]]):
            chain.broken = True  # sent twice, or after a block it precedes was hashed
            return
        self._place(chain, key, rank)

    def _chain(self, key: str) -> Chain:
        """The in-order hash of the upload `key` is a block of (its parent prefix)."""
        parent = key.rpartition("/")[0]
        chain = self._chains.get(parent)
        if chain is None:
            if len(self._chains) >= _MAX_CHAINS:  # abandoned uploads: forget the oldest
                del self._chains[next(iter(self._chains))]
            chain = self._chains[parent] = Chain()
        return chain

    def _chain_for(self, key: str) -> Chain:
        chain = self._chain(key)
        if chain.broken:
            return chain  # tracks nothing more: its blocks are hashed at compose time
        if key in chain.started:
            chain.broken = True  # a block written twice: the order is no longer known
        chain.started.add(key)
        if key not in chain.ranks:  # not announced: in the order the writes start
            self._place(chain, key, len(chain.ranks).to_bytes(8, "big"))
        return chain

    def _place(self, chain: Chain, key: str, rank: bytes) -> None:
        chain.place(key, rank)
        self._tracked += 1
        if self._tracked <= MAX_TRACKED:
            return
        # Counted exactly only here (chains shrink and vanish in many places): rare, and the
        # oldest chains go until a quarter of the budget is free, so it stays rare.
        self._tracked = sum(len(c.ranks) for c in self._chains.values())
        for parent in list(self._chains):
            if self._tracked <= MAX_TRACKED * 3 // 4:
                break
            dropped = self._chains.pop(parent)
            self._tracked -= len(dropped.ranks)
            dropped.abandon()

    async def _advance(self, chain: Chain) -> None:
        """Hash the blocks that are next in order and complete (from the page cache)."""
        async with chain.lock:
            while not chain.broken and (key := chain.next()) is not None:
                if key not in chain.done:
                    break
                await asyncio.to_thread(chain.feed, self._path(key))
                chain.mark_hashed(key)

    def _open_temp(self, temp: Path) -> BinaryIO:
        self.tmp.mkdir(parents=True, exist_ok=True)
        return open(temp, "wb", buffering=0)

    def _commit(
        self, handle: BinaryIO, digest: _Digest, key: str, temp: Path, target: Path
    ) -> StoredObject:
        """The end of a write, in one thread hop (each hop costs the event loop a wake-up):
        durable before it becomes visible (a crash never leaves a short file; staged blocks
        too, so that the flush overlaps the upload of the other blocks), checked, installed."""
        try:
            _flush_and_sync(handle)
        finally:
            handle.close()
        result = digest.finish(key)
        self._install(temp, target)
        return result

    @staticmethod
    def _discard(handle: BinaryIO | None, temp: Path) -> None:
        try:
            if handle is not None:
                handle.close()
        finally:
            temp.unlink(missing_ok=True)

    def _install(self, temp: Path, target: Path) -> None:
        """Rename a finished file or segment directory into place, replacing what is there."""
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_dir() or temp.is_dir():
            self._remove(target)
        os.replace(temp, target)

    def _remove(self, path: Path) -> None:
        if path.is_dir():
            # Renamed aside first so a concurrent reader never walks a half-deleted tree.
            self.tmp.mkdir(parents=True, exist_ok=True)
            doomed = self.tmp / f"{uuid.uuid4().hex}.deleted"
            try:
                os.replace(path, doomed)
            except FileNotFoundError:
                return
            shutil.rmtree(doomed, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)

    async def compose(
        self, key: str, parts: list[str], expect: Expect | None = None
    ) -> StoredObject:
        """Move the parts into a segment directory (consumed on success, put back on failure),
        hash them in order (when the object is hashed), and rename the directory into place."""
        target = self._path(key)
        sources = [self._path(p) for p in parts]
        if len(set(sources)) != len(sources):
            # A block listed twice cannot be moved twice: store a real concatenation instead.
            async def chained() -> AsyncIterator[bytes]:
                for part in parts:
                    async for chunk in self.read(part):
                        yield chunk

            return await self.put(key, chained(), expect)
        digest = _Digest(expect)
        chain = self._chains.pop(parts[0].rpartition("/")[0], None) if parts else None
        # No pass over the bytes when there is nothing to compute (the parts were fsync'd when
        # staged), or when the chain hashed them in this order as they arrived.
        read = digest.sha256 is not None or digest.md5 is not None
        if read and chain is not None and len(chain.ranks) == len(parts) and digest.md5 is None:
            await self._advance(chain)  # the blocks not hashed yet, after any in progress
            async with chain.lock:
                if not chain.broken and chain.hashed == parts:
                    digest.sha256, read = chain.sha256, False

        def work() -> StoredObject:
            for source, name in zip(sources, parts, strict=True):
                if not source.is_file():
                    raise ObjectNotFound(name)
            self.tmp.mkdir(parents=True, exist_ok=True)
            staging = self.tmp / f"{uuid.uuid4().hex}.seg"
            staging.mkdir()
            moved: list[tuple[Path, Path]] = []
            try:
                sizes = []
                for index, source in enumerate(sources):
                    segment = staging / f"{index:06d}"
                    os.replace(source, segment)
                    moved.append((segment, source))
                    size = segment.stat().st_size
                    if read:
                        with segment.open("rb") as handle:
                            while chunk := handle.read(WRITE_BUFFER * 4):
                                digest.update(chunk)
                            os.fsync(handle.fileno())
                    else:
                        digest.count(size)
                    sizes.append(size)
                result = digest.finish(key)
                manifest = staging / _SEGMENTS
                manifest.write_text(json.dumps({"sizes": sizes}))
                self._install(staging, target)
                return result
            except BaseException:
                for segment, source in moved:  # give the parts back: the upload may retry
                    with contextlib.suppress(OSError):
                        os.replace(segment, source)
                shutil.rmtree(staging, ignore_errors=True)
                raise

        return await asyncio.to_thread(work)

    def _segments(self, path: Path) -> list[tuple[Path, int]] | None:
        """The parts of a segmented object, or None for a plain file."""
        if not path.is_dir():
            return None
        try:
            sizes = json.loads((path / _SEGMENTS).read_text())["sizes"]
        except FileNotFoundError:
            raise ObjectNotFound(str(path.relative_to(self.root))) from None
        return [(path / f"{i:06d}", int(size)) for i, size in enumerate(sizes)]

    def _files(self, key: str) -> list[tuple[Path, int]]:
        """The object's files (its parts, or itself) with their sizes; ObjectNotFound."""
        path = self._path(key)
        segments = self._segments(path)
        if segments is not None:
            return segments
        try:
            return [(path, path.stat().st_size)]
        except FileNotFoundError:
            raise ObjectNotFound(key) from None

    async def files(self, key: str) -> list[tuple[Path, int]]:
        return await asyncio.to_thread(self._files, key)

    async def read(
        self, key: str, start: int = 0, end: int | None = None
    ) -> AsyncGenerator[bytes, None]:
        path = self._path(key)
        segments = await asyncio.to_thread(self._segments, path)
        pieces = segments if segments is not None else [(path, -1)]
        offset = 0  # where the current piece starts within the object
        for piece, size in pieces:
            if size >= 0 and offset + size <= start:
                offset += size
                continue
            if end is not None and offset >= end:
                return
            local_start = max(0, start - offset)
            local_end = None if end is None else end - offset
            async with contextlib.aclosing(
                self._read_file(piece, key, local_start, local_end)
            ) as chunks:
                async for chunk in chunks:
                    yield chunk
            offset += size

    async def _read_file(
        self, path: Path, key: str, start: int, end: int | None
    ) -> AsyncGenerator[bytes, None]:
        # Opened and closed on the loop (metadata calls, no data): a handle opened in a worker
        # thread would leak if the reader were cancelled while waiting for it.
        try:
            handle = open(path, "rb")  # noqa: SIM115
        except FileNotFoundError:
            raise ObjectNotFound(key) from None
        # Read-ahead: the next chunk is read in a thread while this one is being sent, so the
        # socket never waits for the disk (at most two chunks in memory).
        ahead: asyncio.Future[bytes] | None = None
        try:
            if start:
                handle.seek(start)
            remaining = None if end is None else max(0, end - start)

            def read_next() -> asyncio.Future[bytes] | None:
                if remaining is not None and remaining <= 0:
                    return None
                want = READ_CHUNK if remaining is None else min(READ_CHUNK, remaining)
                return asyncio.ensure_future(asyncio.to_thread(handle.read, want))

            ahead = read_next()
            while ahead is not None:
                chunk = await ahead
                ahead = None
                if not chunk:
                    break
                if remaining is not None:
                    remaining -= len(chunk)
                ahead = read_next()
                yield chunk
        finally:
            try:
                if ahead is not None and not ahead.done():
                    await asyncio.wait([ahead])  # never close under a running read
            finally:
                handle.close()

    async def size(self, key: str) -> int | None:
        def total() -> int | None:
            try:
                return sum(size for _, size in self._files(key))
            except ObjectNotFound:
                return None

        return await asyncio.to_thread(total)

    async def delete(self, key: str) -> None:
        self._chains.pop(key, None)
        await asyncio.to_thread(self._remove, self._path(key))

    async def delete_prefix(self, prefix: str) -> None:
        self._chains.pop(prefix, None)
        await asyncio.to_thread(self._remove, self._path(prefix))

    async def list_children(self, prefix: str) -> list[str]:
        path = self._path(prefix)
        try:
            return sorted(await asyncio.to_thread(os.listdir, path))
        except (FileNotFoundError, NotADirectoryError):
            return []
