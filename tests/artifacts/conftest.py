"""Fixtures for artifact/cache tests: both storage backends (a directory, and S3 on a real
moto server process)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from app.artifacts.directory import DirectoryStorage
from app.artifacts.s3storage import S3Storage
from app.artifacts.storage import Storage
from tests.artifacts.s3server import S3Server, run_s3_server

STORAGES = ["directory", "s3"]


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with run_s3_server(tmp_path_factory.mktemp("moto")) as server:
        yield server


def storage_settings(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> dict[str, Any]:
    """Settings overrides selecting one storage backend (a fresh bucket for S3)."""
    if kind == "directory":
        return {"artifacts_storage": "directory", "artifacts_dir": tmp_path / "store"}
    server: S3Server = request.getfixturevalue("s3_server")
    return {
        "artifacts_storage": "s3",
        "artifacts_s3_bucket": f"b-{uuid.uuid4().hex[:16]}",
        "artifacts_s3_prefix": "ci",
        "artifacts_s3_endpoint_url": server.url,
        "artifacts_s3_region": server.region,
        "artifacts_s3_access_key_id": server.access_key,
        "artifacts_s3_secret_access_key": server.secret_key,
        "artifacts_s3_create_bucket": True,
    }


@pytest.fixture(params=STORAGES)
def storage_kind(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


@pytest.fixture
async def storage(
    storage_kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Storage]:
    values = storage_settings(storage_kind, tmp_path, request)
    store: Storage
    if storage_kind == "directory":
        store = DirectoryStorage(values["artifacts_dir"])
    else:
        store = S3Storage(
            values["artifacts_s3_bucket"],
            prefix=values["artifacts_s3_prefix"],
            endpoint_url=values["artifacts_s3_endpoint_url"],
            region=values["artifacts_s3_region"],
            access_key=values["artifacts_s3_access_key_id"],
            secret_key=values["artifacts_s3_secret_access_key"],
            create_bucket=True,
        )
    await store.start()
    yield store
    await store.close()
