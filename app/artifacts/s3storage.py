"""The S3-compatible backend of `app.artifacts.storage` (AWS, MinIO, Ceph RGW, ...).

A write is a multipart upload completed only once the checksums match (aborted otherwise), so no
partial object is ever visible; it holds at most one part in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

from app.artifacts.storage import (
    READ_CHUNK,
    Expect,
    ObjectNotFound,
    StorageError,
    StoredObject,
    _Digest,
    _rebatch,
    check_key,
)

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

# S3 multipart parts: 8 MiB (S3's minimum is 5 MiB for every part but the last).
S3_PART_SIZE = 8 * 1024 * 1024


class S3Storage:
    """Objects in an S3 bucket (AWS, MinIO, Ceph RGW, ...) under an optional key prefix."""

    name = "s3"

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        create_bucket: bool = False,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url or None
        self.region = region or None
        self.access_key = access_key or None
        self.secret_key = secret_key or None
        self.create_bucket = create_bucket
        self._stack = AsyncExitStack()
        self._client: S3Client | None = None

    async def start(self) -> None:
        from aiobotocore.config import AioConfig
        from aiobotocore.session import get_session

        session = get_session()
        client: S3Client = await self._stack.enter_async_context(
            session.create_client(
                "s3",
                endpoint_url=self.endpoint_url,
                region_name=self.region,
                aws_access_key_id=self.access_key,
                aws_secret_access_key=self.secret_key,
                config=AioConfig(
                    s3={"addressing_style": "path"},
                    retries={"max_attempts": 5, "mode": "standard"},
                    max_pool_connections=32,
                ),
            )
        )
        self._client = client
        if self.create_bucket:
            from botocore.exceptions import ClientError

            try:
                await client.head_bucket(Bucket=self.bucket)
            except ClientError:
                await client.create_bucket(Bucket=self.bucket)

    async def close(self) -> None:
        await self._stack.aclose()
        self._client = None

    @property
    def client(self) -> S3Client:
        if self._client is None:
            raise StorageError("S3 storage used before start()")
        return self._client

    def _key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    async def put(
        self, key: str, chunks: AsyncIterable[bytes], expect: Expect | None = None
    ) -> StoredObject:
        from botocore.exceptions import BotoCoreError, ClientError

        s3_key = self._key(key)
        digest = _Digest(expect)
        upload_id: str | None = None
        parts: list[dict[str, Any]] = []
        try:
            async for pieces in _rebatch(chunks, S3_PART_SIZE):
                block = b"".join(pieces)
                digest.update(block)
                if upload_id is None:
                    created = await self.client.create_multipart_upload(
                        Bucket=self.bucket, Key=s3_key
                    )
                    upload_id = created["UploadId"]
                number = len(parts) + 1
                answer = await self.client.upload_part(
                    Bucket=self.bucket,
                    Key=s3_key,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=block,
                )
                parts.append({"PartNumber": number, "ETag": answer["ETag"]})
            result = digest.finish(key)
            if upload_id is None:  # empty object: multipart needs at least one part
                await self.client.put_object(Bucket=self.bucket, Key=s3_key, Body=b"")
            else:
                await self.client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=s3_key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},  # type: ignore[typeddict-item]
                )
                upload_id = None
            return result
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"S3 write of {key} failed: {exc}") from exc
        finally:
            if upload_id is not None:
                # Failed or refused (checksum): abort so no part lingers or becomes visible.
                await asyncio.shield(self._abort(s3_key, upload_id))

    async def compose(
        self, key: str, parts: list[str], expect: Expect | None = None
    ) -> StoredObject:
        # Streamed through this process so the digest covers the bytes stored (UploadPartCopy
        # would skip that, and needs every part but the last to be at least 5 MiB).
        async def chained() -> AsyncIterator[bytes]:
            for part in parts:
                async for chunk in self.read(part):
                    yield chunk

        return await self.put(key, chained(), expect)

    def announce(self, key: str, rank: bytes) -> None:
        """Nothing to prepare: S3 hashes the composed object while streaming it."""

    async def _abort(self, s3_key: str, upload_id: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        # If even the abort fails, a lifecycle rule on the bucket reaps abandoned uploads.
        with contextlib.suppress(BotoCoreError, ClientError):
            await self.client.abort_multipart_upload(
                Bucket=self.bucket, Key=s3_key, UploadId=upload_id
            )

    async def read(
        self, key: str, start: int = 0, end: int | None = None
    ) -> AsyncGenerator[bytes, None]:
        from botocore.exceptions import BotoCoreError, ClientError

        s3_key = self._key(key)
        if end is not None and end <= start:
            return
        kwargs: dict[str, Any] = {}
        if start or end is not None:
            kwargs["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        try:
            answer = await self.client.get_object(Bucket=self.bucket, Key=s3_key, **kwargs)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise ObjectNotFound(key) from None
            raise StorageError(f"S3 read of {key} failed: {exc}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"S3 read of {key} failed: {exc}") from exc
        body = answer["Body"]
        try:
            while True:
                chunk = await body.read(READ_CHUNK)
                if not chunk:
                    break
                yield chunk
        finally:
            body.close()

    async def size(self, key: str) -> int | None:
        from botocore.exceptions import ClientError

        try:
            head = await self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                return None
            raise StorageError(f"S3 head of {key} failed: {exc}") from exc
        return int(head["ContentLength"])

    async def files(self, key: str) -> None:  # noqa: ARG002
        return None  # objects live in the bucket: read() streams them

    async def delete(self, key: str) -> None:
        await self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    async def delete_prefix(self, prefix: str) -> None:
        full = self._key(prefix) + "/"
        paginator = self.client.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
            keys = [{"Key": item["Key"]} for item in page.get("Contents", []) if "Key" in item]
            if keys:
                await self.client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": keys, "Quiet": True},  # type: ignore[typeddict-item]
                )
        await self.client.delete_object(Bucket=self.bucket, Key=self._key(prefix))

    async def list_children(self, prefix: str) -> list[str]:
        full = self._key(prefix) + "/"
        names: set[str] = set()
        paginator = self.client.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=full, Delimiter="/"):
            for common in page.get("CommonPrefixes", []):
                names.add(common.get("Prefix", "")[len(full) :].rstrip("/"))
            for item in page.get("Contents", []):
                names.add(item.get("Key", "")[len(full) :])
        return sorted(n for n in names if n)
