"""Bounded request parameters shared by the routers (security: every integer fits in 64 bits,
every string is text both databases accept), so no input reaches the database as a 500."""

from __future__ import annotations

import hashlib
import json
from typing import Annotated

from fastapi import Header, Path, Query
from pydantic import BaseModel

from app.models.types import INT64_MAX, INT64_MIN, PIPELINE_ID_PATTERN, ShortText

BuildIdPath = Annotated[int, Path(ge=INT64_MIN, le=INT64_MAX, description="The build id.")]
# (page - 1) * size is the SQL OFFSET: it must fit in 64 bits with the largest size (100).
PageQuery = Annotated[int, Query(ge=1, le=INT64_MAX // 100, description="1-based page number.")]
PipelineIdQuery = Annotated[
    str | None, Query(min_length=1, max_length=255, pattern=PIPELINE_ID_PATTERN)
]
ShortTextQuery = Annotated[ShortText | None, Query()]
IdempotencyKey = Annotated[
    str | None,
    Header(
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description="A repeat with the same key and body returns the first build.",
    ),
]


def request_sha256(body: BaseModel) -> str:
    """A stable digest of a create request, kept with the build so a reused Idempotency-Key
    with a different body is refused. Secrets are left out: a plain hash of a short secret
    could be brute-forced from the database."""
    canonical = body.model_dump(mode="json", exclude={"secrets"})
    data = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(data.encode()).hexdigest()
