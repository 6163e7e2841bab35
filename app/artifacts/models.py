"""Tables of artifacts and caches (migration `artifacts`)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Column, ForeignKey, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from app.models.types import BigIntPK, UTCDateTime, utcnow


class ArtifactStatus:
    uploading = "uploading"  # created; blob not complete
    uploaded = "uploaded"  # blob complete (sha256 known); FinalizeArtifact not called yet
    ready = "ready"  # finalized: listed and downloadable


class Artifact(SQLModel, table=True):
    """One named artifact of a build (upload-artifact@v4: unique by name within a run)."""

    __tablename__ = "artifacts"
    __table_args__ = (
        UniqueConstraint("build_id", "name"),
        Index("ix_artifacts_expires_at", "expires_at"),
    )

    id: int | None = Field(default=None, sa_column=Column(BigIntPK, primary_key=True))
    # Deleting a build deletes its rows; the sweeper then deletes the blobs nobody owns.
    build_id: int = Field(
        sa_column=Column(BigIntPK, ForeignKey("builds.id", ondelete="CASCADE"), nullable=False)
    )
    job_name: str = Field(max_length=255)
    name: str = Field(max_length=255)
    status: str = Field(default=ArtifactStatus.uploading, max_length=16)
    size: int = Field(default=0, sa_type=BigInteger)
    sha256: str | None = Field(default=None, max_length=64)
    mime_type: str = Field(default="application/zip", max_length=255)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    finalized_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime)


class CacheStatus:
    reserved = "reserved"  # an upload is in progress
    uploaded = "uploaded"  # archive complete; FinalizeCacheEntryUpload (or v1 commit) not done
    ready = "ready"


class CacheEntry(SQLModel, table=True):
    """One cache entry: immutable once ready, scoped to a pipeline and a branch."""

    __tablename__ = "action_caches"
    __table_args__ = (
        UniqueConstraint("pipeline_id", "scope", "key", "version"),
        Index("ix_action_caches_last_used_at", "last_used_at"),
    )

    id: int | None = Field(default=None, sa_column=Column(BigIntPK, primary_key=True))
    pipeline_id: str = Field(max_length=255)
    scope: str = Field(max_length=255)  # the branch the saving build ran on
    key: str = Field(max_length=512)
    version: str = Field(max_length=128)
    status: str = Field(default=CacheStatus.reserved, max_length=16)
    size: int = Field(default=0, sa_type=BigInteger)
    # The build that saved it; caches outlive their builds.
    build_id: int | None = Field(
        default=None,
        sa_column=Column(BigIntPK, ForeignKey("builds.id", ondelete="SET NULL"), nullable=True),
    )
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    last_used_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    note: str | None = Field(default=None, sa_type=Text)
