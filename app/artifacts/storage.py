"""Blob storage for artifacts and caches, behind one interface.

Two backends:

- `DirectoryStorage` (the embedded default, `app.artifacts.directory`): files under a root
  directory. A write goes to a temp file in the same filesystem and is renamed into place only
  once it is complete and its checksums match, so readers (other replicas sharing the volume
  included) never see a partial object.
- `S3Storage` (production, `app.artifacts.s3storage`): any S3-compatible object store through
  aiobotocore. A write is a multipart upload completed only once the checksums match (aborted
  otherwise), so again no partial object is ever visible.

Both stream: a write consumes an async iterator of byte chunks (or, from the directory backend,
a body the server hands over: `Pourable`) and holds at most one part (S3) or two write buffers
(directory) in memory; a read yields chunks of `READ_CHUNK` bytes.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from app.config import Settings

READ_CHUNK = 1024 * 1024
_KEY = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")


class StorageError(Exception):
    """The storage backend failed (disk, network, object store): infrastructure, not the user."""


class ObjectNotFound(StorageError):
    pass


class ChecksumMismatch(StorageError):
    """The bytes received do not match the checksum the client announced; nothing was stored."""


class ObjectTooLarge(StorageError):
    pass


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    sha256: str | None  # None for staged parts (their digest would be wasted work)
    md5: str | None  # only computed when a Content-MD5 is to be checked


@dataclass
class Expect:
    """Checks applied to a write before it becomes visible."""

    sha256: str | None = None  # hex
    md5: str | None = None  # hex
    size: int | None = None
    max_bytes: int | None = None
    # A staged part of a bigger object: no sha256 of its own (the composed object is hashed).
    staging: bool = False
    # Whether the object gets a sha256 at all. Artifacts do (FinalizeArtifact checks the
    # client's digest against it); caches do not: neither cache protocol carries a digest, and
    # nothing would ever compare one (hashing 200 MB was a fifth of a cache save here).
    hashed: bool = True


def check_key(key: str) -> str:
    if not _KEY.match(key) or any(part in (".", "..") for part in key.split("/")):
        raise ValueError(f"invalid storage key {key!r}")
    return key


class _Digest:
    def __init__(self, expect: Expect | None) -> None:
        self.expect = expect or Expect()
        self.sha256 = hashlib.sha256() if self.expect.hashed and not self.expect.staging else None
        self.md5 = hashlib.md5(usedforsecurity=False) if self.expect.md5 else None
        self.size = 0

    def update(self, chunk: bytes | memoryview) -> None:
        self.count(len(chunk))
        if self.sha256 is not None:
            self.sha256.update(chunk)
        if self.md5 is not None:
            self.md5.update(chunk)

    def count(self, size: int) -> None:
        """`size` more bytes (read, or already stored and not read again)."""
        self.size += size
        if self.expect.max_bytes is not None and self.size > self.expect.max_bytes:
            raise ObjectTooLarge(f"object larger than {self.expect.max_bytes} bytes")

    def finish(self, key: str) -> StoredObject:
        result = StoredObject(
            key,
            self.size,
            self.sha256.hexdigest() if self.sha256 is not None else None,
            self.md5.hexdigest() if self.md5 is not None else None,
        )
        expect = self.expect
        if expect.size is not None and expect.size != result.size:
            raise ChecksumMismatch(f"expected {expect.size} bytes, received {result.size}")
        if expect.sha256 is not None and expect.sha256.lower() != (result.sha256 or ""):
            raise ChecksumMismatch(
                f"sha256 mismatch: expected {expect.sha256}, got {result.sha256}"
            )
        if expect.md5 is not None and expect.md5.lower() != (result.md5 or ""):
            raise ChecksumMismatch(f"md5 mismatch: expected {expect.md5}, got {result.md5}")
        return result


@runtime_checkable
class Pourable(Protocol):
    """A body that can hand all its bytes to a sink from a worker thread instead of being
    iterated (app.serving.RequestBody: the request's socket read by that thread)."""

    async def pour(
        self,
        sink: Callable[[memoryview], None],
        executor: Executor,
        buffer: Callable[[], bytearray],
    ) -> bool: ...


class Storage(Protocol):
    name: str

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def put(
        self, key: str, chunks: AsyncIterable[bytes], expect: Expect | None = None
    ) -> StoredObject:
        """Store the chunks under `key`, replacing any object there, atomically."""
        ...

    async def compose(
        self, key: str, parts: list[str], expect: Expect | None = None
    ) -> StoredObject:
        """Store the concatenation of the objects `parts` under `key` (atomically; hashed
        unless `expect.hashed` is false)."""
        ...

    def announce(self, key: str, rank: bytes) -> None:
        """A hint, given as a block upload arrives: the staged part `key` probably comes at
        `rank` in the final block list (blocks ranked lower come before it). Lets a backend
        hash the blocks while they arrive."""
        ...

    def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncGenerator[bytes, None]:
        """The object's bytes [start, end) in chunks; raises ObjectNotFound."""
        ...

    async def size(self, key: str) -> int | None:
        """The object's size, or None when it does not exist."""
        ...

    async def files(self, key: str) -> list[tuple[Path, int]] | None:
        """The local files whose concatenation is the object, with their sizes (served with
        sendfile); None when the backend keeps no local files. ObjectNotFound if missing."""
        ...

    async def delete(self, key: str) -> None: ...

    async def delete_prefix(self, prefix: str) -> None: ...

    async def list_children(self, prefix: str) -> list[str]:
        """The names directly below `prefix/` (like `ls`)."""
        ...


async def _rebatch(chunks: AsyncIterable[bytes], size: int) -> AsyncIterator[list[bytes]]:
    """Group small chunks (HTTP bodies arrive in 64-256 KiB pieces) into batches of at least
    `size` bytes (the last may be shorter), as lists: written with one `writev`, never joined
    (a join would copy every byte once more)."""
    pending: list[bytes] = []
    count = 0
    async for chunk in chunks:
        if not chunk:
            continue
        pending.append(chunk)
        count += len(chunk)
        if count >= size:
            yield pending
            pending, count = [], 0
    if pending:
        yield pending


def create_storage(settings: Settings) -> Storage:
    if settings.artifacts_storage == "s3":
        from app.artifacts.s3storage import S3Storage

        return S3Storage(
            settings.artifacts_s3_bucket,
            prefix=settings.artifacts_s3_prefix,
            endpoint_url=settings.artifacts_s3_endpoint_url,
            region=settings.artifacts_s3_region,
            access_key=settings.artifacts_s3_access_key_id,
            secret_key=settings.artifacts_s3_secret_access_key,
            create_bucket=settings.artifacts_s3_create_bucket,
        )
    from app.artifacts.directory import DirectoryStorage

    return DirectoryStorage(settings.artifacts_dir)
