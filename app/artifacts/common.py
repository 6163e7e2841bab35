"""What the artifact and cache services share: errors with Twirp codes, the authenticated caller,
input validation and the Azure block-list format."""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import secrets
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Literal

from sqlalchemy import bindparam
from sqlmodel import col, select
from sqlmodel.sql.expression import Select

from app.artifacts.chain import MAX_BLOCKS
from app.artifacts.models import Artifact, ArtifactStatus, CacheEntry, CacheStatus
from app.artifacts.tokens import RuntimeClaims
from app.config import Settings
from app.db import Database
from app.models import Build, BuildStatus

if TYPE_CHECKING:
    from app.artifacts.storage import Storage

log = logging.getLogger("app.artifacts")
BlobKind = Literal["artifact", "cache"]
ACTIVE = (BuildStatus.queued.value, BuildStatus.running.value)
MAX_BLOCKLIST_BYTES = 4 * 1024 * 1024
MAX_NAME = 255
MAX_KEY = 512
# Azure Blob Storage's limits for one block blob: a block list names at most 50,000 blocks,
# and at most 100,000 uncommitted blocks are staged at a time. Without them one upload could
# stage blocks without end: each is a file, and an entry in the upload's in-order hash.
MAX_LISTED_BLOCKS = MAX_BLOCKS
MAX_STAGED_BLOCKS = 100_000
# An upload nobody finished within this long is abandoned: its staged blocks are swept.
STALE_UPLOAD = timedelta(hours=6)


class ArtifactError(Exception):
    """A refusal with a Twirp error code (mapped to an HTTP status by the routes)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _not_found(message: str) -> ArtifactError:
    return ArtifactError("not_found", message)


_UPLOADABLE: dict[str, Select[str, str]] = {}


async def check_uploadable(db: Database, kind: BlobKind, object_id: int) -> None:
    """An upload may still take blobs: its row is not finalized and its build still runs. One
    statement with no ORM instances: a block upload (one per 8 MiB of an artifact) paid two
    ORM loads on the event loop for this check."""
    statement = _UPLOADABLE.get(kind)
    if statement is None:  # built once per kind (its construction showed in a block PUT profile)
        table = Artifact if kind == "artifact" else CacheEntry
        statement = _UPLOADABLE[kind] = (
            select(col(table.status), col(Build.status))
            .select_from(table)
            .outerjoin(Build, col(Build.id) == col(table.build_id))
            .where(col(table.id) == bindparam("object_id"))
        )
    async with db.read() as session:
        found = (await session.exec(statement, params={"object_id": object_id})).first()
    if found is None:
        raise _not_found(f"no such {kind} upload")
    status, build_status = found
    if status not in (ArtifactStatus.uploading, CacheStatus.reserved):
        raise ArtifactError("failed_precondition", f"this {kind} is already finalized")
    if build_status not in ACTIVE:  # None: the build was deleted
        raise ArtifactError("unauthenticated", "the build of this upload has finished")


def _invalid(message: str) -> ArtifactError:
    return ArtifactError("invalid_argument", message)


@dataclass(frozen=True)
class Caller:
    """An authenticated runtime token whose build is still active."""

    claims: RuntimeClaims
    pipeline_id: str
    branch: str


def resolve_secret(settings: Settings) -> str:
    """The HMAC secret for tokens and signed URLs. Without ACTIONS_TOKEN_SECRET (or
    K8S_MARKER_SECRET) a random one per process: fine for one replica, and tokens die on restart
    just as the local runner's processes do."""
    if settings.actions_token_secret:
        return settings.actions_token_secret
    if settings.k8s_marker_secret:
        return hashlib.sha256(b"actions-runtime:" + settings.k8s_marker_secret.encode()).hexdigest()
    return _PROCESS_SECRET  # the same for the service and the executor of this process


_PROCESS_SECRET = secrets.token_hex(32)


def validate_name(name: str) -> str:
    """upload-artifact's own rules (no path separators or characters invalid on some OS)."""
    bad = set('"<>:|*?\\/\r\n\x00')
    if not name or len(name) > MAX_NAME or any(c in bad for c in name):
        raise _invalid(
            f"invalid artifact name {name!r}: 1-{MAX_NAME} characters, none of "
            '" : < > | * ? \\ / CR LF NUL'
        )
    return name


def validate_cache_key(key: str) -> str:
    if not key or len(key) > MAX_KEY or "," in key or "\x00" in key:
        raise _invalid(f"invalid cache key: 1-{MAX_KEY} characters, no commas")
    return key


def _hashed(kind: BlobKind) -> bool:
    """Whether a blob of this kind gets a sha256: artifacts do (FinalizeArtifact compares the
    client's digest with it); caches do not (neither cache protocol carries a digest)."""
    return kind == "artifact"


def _block_name(block_id: str) -> str:
    # Azure block ids are base64 (with / + =): hashed into a safe storage key.
    return hashlib.sha256(block_id.encode()).hexdigest()


def _block_rank(block_id: str) -> bytes:
    """Where a block probably goes in its list: its decoded id (the Azure SDK's ids are base64
    of a common prefix and a zero-padded block number), or the id itself."""
    try:
        return base64.b64decode(block_id, validate=True)
    except ValueError:
        return block_id.encode()


def parse_block_list(body: bytes) -> list[str]:
    """The block ids of an Azure `Put Block List` body, in order."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise _invalid(f"invalid block list XML: {exc}") from None
    if root.tag != "BlockList":
        raise _invalid("invalid block list: the root element must be BlockList")
    ids = [
        (child.text or "").strip()
        for child in root
        if child.tag in ("Latest", "Committed", "Uncommitted")
    ]
    if not ids or any(not i for i in ids):
        raise _invalid("invalid block list: no block ids")
    if len(ids) > MAX_LISTED_BLOCKS:
        raise _invalid(f"invalid block list: more than {MAX_LISTED_BLOCKS} blocks")
    return ids


def staging_key(kind: BlobKind, object_id: int) -> str:
    """Where an upload's blocks are staged until its block list is committed."""
    return f"uploads/{kind}-{object_id}"


class StagedBlocks:
    """The uploads' staged blocks: counted as they arrive, dropped together.

    The count is of block PUTs per upload, retries included, up to `MAX_STAGED_BLOCKS`. It is
    kept in memory for the `uploads` most recently active uploads of this replica. An upload
    not counted here (its first block on this replica, or forgotten to make room for others)
    starts from the blocks it has stored, so opening other uploads does not reset it. Replicas
    still count apart after their first listing: an upload spread over n replicas at once can
    stage up to n times the limit."""

    def __init__(self, storage: Storage, uploads: int = 4096) -> None:
        self.storage = storage
        self._counts: dict[tuple[BlobKind, int], int] = {}
        self._uploads = uploads

    async def add(self, kind: BlobKind, object_id: int) -> None:
        key = (kind, object_id)
        count = self._counts.pop(key, None)
        if count is None:  # one listing per upload and replica, unless forgotten meanwhile
            count = len(await self.storage.list_children(staging_key(kind, object_id)))
            count = max(count, self._counts.pop(key, 0))  # counted during the listing
        count += 1
        # Re-inserted last (the dict is oldest first), and kept at the limit when refused too:
        # every later block of the upload is refused.
        self._counts[key] = min(count, MAX_STAGED_BLOCKS)
        if len(self._counts) > self._uploads:
            del self._counts[next(iter(self._counts))]
        if count > MAX_STAGED_BLOCKS:
            raise ArtifactError(
                "resource_exhausted",
                f"an upload stages at most {MAX_STAGED_BLOCKS} blocks before its block list",
            )

    async def drop(self, kind: BlobKind, object_id: int) -> None:
        """Delete an upload's staged blocks (committed, replaced or abandoned) and its count."""
        await self.storage.delete_prefix(staging_key(kind, object_id))
        self._counts.pop((kind, object_id), None)


def md5_header_hex(value: str | None) -> str | None:
    """The hex md5 of a `Content-MD5` header (base64), if one was sent."""
    if not value:
        return None
    try:
        return base64.b64decode(value, validate=True).hex()
    except (binascii.Error, ValueError):
        raise _invalid("Content-MD5 is not base64") from None
