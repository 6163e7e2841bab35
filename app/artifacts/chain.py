"""The in-order sha256 of an upload's staged blocks, computed while the blocks arrive
(`app.artifacts.directory`): each block hashed as it is written when it is next in order, else
read back once from the page cache after its write, so the composed object needs no second
pass."""

from __future__ import annotations

import asyncio
import hashlib
import heapq
from dataclasses import dataclass
from pathlib import Path

# Staged blocks not hashed as they were written are read back in pieces of this size.
READ_BACK = 4 * 1024 * 1024
# A block list names at most this many blocks (Azure's limit, refused above it by the service):
# a chain given more can never be used, and stops tracking them (its memory is bounded).
MAX_BLOCKS = 50_000


class Chain:
    """The sha256 of one upload's staged blocks, computed while the upload is still going on,
    in the order the blocks' writes started (the order clients send them in). Used at compose
    time only when the block list names exactly these blocks in exactly this order; anything
    else (a block rewritten or failed, another order, blocks that went to another replica)
    falls back to hashing the parts at compose time."""

    def __init__(self) -> None:
        self.ranks: dict[str, bytes] = {}  # block key -> its expected place in the list
        self.hashed: list[str] = []  # the blocks in `sha256`, in rank order
        # The blocks not hashed yet, lowest rank first: `next` is asked several times per
        # block, and a scan of every rank made a many-block upload quadratic (2,048 blocks
        # spent 6 % of the event loop's samples in it).
        self._pending: list[tuple[bytes, str]] = []
        self.started: set[str] = set()  # writes begun
        self.done: set[str] = set()  # written, fsync'd and renamed into place
        self.sha256 = hashlib.sha256()
        self.broken = False
        self.lock = asyncio.Lock()
        self.tasks: set[asyncio.Future[None]] = set()  # hashing in progress (kept referenced)
        self.buffer: bytearray | None = None  # feed's, allocated on first use (under `lock`)

    def feed(self, path: Path) -> None:
        try:
            # One buffer for the whole upload: a fresh one per read (or per block) is an
            # mmap'd allocation faulted in page by page (CPU). Reads of READ_BACK bytes: each
            # read and each update takes the GIL back once, and the event loop waits for it.
            if self.buffer is None:
                self.buffer = bytearray(READ_BACK)
            buffer = self.buffer
            view = memoryview(buffer)
            with path.open("rb", buffering=0) as handle:
                while count := handle.readinto(buffer):
                    self.sha256.update(view[:count])
        except OSError:
            self.broken = True

    def place(self, key: str, rank: bytes) -> None:
        """`key` is expected at `rank` in the block list (set once per block)."""
        if self.broken:
            return
        if len(self.ranks) >= MAX_BLOCKS:
            self.abandon()
            return
        self.ranks[key] = rank
        heapq.heappush(self._pending, (rank, key))

    def abandon(self) -> None:
        """Stop hashing in order (compose then hashes the parts) and free what was tracked."""
        self.broken = True
        for kept in (self.ranks, self._pending, self.hashed, self.started, self.done):
            kept.clear()

    def next(self) -> str | None:
        """The block to hash next: the lowest-ranked one not hashed yet."""
        return self._pending[0][1] if self._pending else None

    def mark_hashed(self, key: str) -> None:
        """`key`, the block `next` named, is now part of `sha256`."""
        if self.next() != key:
            # A block ranked before `key` was announced while `key` was being hashed: the
            # digest no longer follows the list's order.
            self.broken = True
            return
        heapq.heappop(self._pending)
        self.hashed.append(key)

    def stream(self, key: str) -> Stream | None:
        """When `key` is the next block as its write starts, it is hashed as it is written (no
        second read from disk), on a copy of the digest, adopted only if it is still next."""
        if self.broken or self.next() != key:
            return None
        return Stream(key, len(self.hashed), self.sha256.copy())

    def adopt(self, stream: Stream) -> None:
        if not self.broken and len(self.hashed) == stream.base and self.next() == stream.key:
            self.sha256 = stream.sha256
            self.mark_hashed(stream.key)


@dataclass
class Stream:
    key: str
    base: int  # how many blocks the chain had hashed when this one began
    sha256: hashlib._Hash

    def update(self, piece: bytes | memoryview) -> None:
        self.sha256.update(piece)
